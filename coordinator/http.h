/* The coordinator's HTTP/JSON API (DESIGN.md, HTTP API) on libmicrohttpd: routes, request
 * parsing and limits; every answer comes from api.h. */
#ifndef IHC_COORD_HTTP_H
#define IHC_COORD_HTTP_H

#include "api.h"
#include "config.h"

typedef struct ihc_http ihc_http;

/* Listens on cfg->http_addr ("host:port"; port 0 picks a free port) and serves requests
 * through c. Limits: cfg->http_max_body, cfg->http_max_conns, an idle timeout; bearer token
 * cfg->http_token when set. Errors: IHC_EINVAL (bad address), IHC_EIO (cannot listen).
 * Caller owns *out: ihc_http_close. */
int ihc_http_open(ihc_http **out, ihc_coord *c, const ihc_config *cfg);

/* The port actually bound (useful with port 0). */
int ihc_http_port(const ihc_http *h);

/* Stops accepting, finishes or aborts pending requests, frees. Accepts NULL. */
void ihc_http_close(ihc_http *h);

#endif
