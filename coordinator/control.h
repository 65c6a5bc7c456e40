/* The control socket: nng REP on cfg->control_url, where libihc and the ihc CLI send
 * control_request messages and get control_response messages whose json is exactly the
 * body api.h returns for the op. Requests are served concurrently (one nng context each). */
#ifndef IHC_COORD_CONTROL_H
#define IHC_COORD_CONTROL_H

#include "api.h"
#include "config.h"

typedef struct ihc_control ihc_control;

/* Listens on cfg->control_url and serves requests through c. cfg must outlive it.
 * Errors: IHC_ETRANSPORT (cannot listen; logged with the URL), IHC_ENOMEM. Caller owns
 * *out: ihc_control_close. */
int ihc_control_open(ihc_control **out, ihc_coord *c, const ihc_config *cfg);

/* Sends the answers still pending (briefly), closes the socket, frees. Call after
 * ihc_coord_stop, so that no answer can arrive afterwards. Accepts NULL. */
void ihc_control_close(ihc_control *ctl);

#endif
