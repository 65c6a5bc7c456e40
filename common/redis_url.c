/* The Redis URL parser of redis_url.h: redis:// and unix:// with percent-decoded user info,
 * strict about every part so that a typo is refused at start-up, not at the first connect. */
#include "redis_url.h"

#include "defaults.h"
#include "err.h"

#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FORMS                                                                                      \
    "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], unix://[[USER]:PASSWORD@]/PATH[?db=DB] or "       \
    "redis-sentinel://[[USER]:PASSWORD@]HOST[:PORT],HOST[:PORT]/MASTER[/DB]"

static int fail(char *why, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *why, size_t len, const char *fmt, ...)
{
    if (why && len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, len, fmt, ap);
        va_end(ap);
    }
    return IHC_EINVAL;
}

/* The pieces every form shares: scheme, then an authority that ends at the first '/', '?' or
 * '#', whose user info ends at its last '@'. The parser and the redaction split alike. */
typedef enum { FORM_TCP, FORM_UNIX, FORM_SENTINEL } url_form;

typedef struct {
    url_form form;
    const char *rest;     /* after "scheme://" */
    const char *auth_end; /* end of the authority */
    const char *at;       /* last '@' of the authority, or NULL */
} url_parts;

static int split(const char *url, url_parts *p, char *why, size_t wl)
{
    if (strncmp(url, "redis://", 8) == 0) {
        p->form = FORM_TCP;
        p->rest = url + 8;
    } else if (strncmp(url, "unix://", 7) == 0) {
        p->form = FORM_UNIX;
        p->rest = url + 7;
    } else if (strncmp(url, "redis-sentinel://", 17) == 0) {
        p->form = FORM_SENTINEL;
        p->rest = url + 17;
    } else if (strncmp(url, "rediss://", 9) == 0) {
        return fail(why, wl, "rediss:// (TLS) is not supported: hiredis 0.14 has no TLS");
    } else {
        return fail(why, wl, "expected " FORMS);
    }
    p->auth_end = p->rest + strcspn(p->rest, "/?#");
    p->at = NULL;
    for (const char *q = p->rest; q < p->auth_end; q++)
        if (*q == '@')
            p->at = q;
    return IHC_OK;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into a new string. %00 is refused: a NUL would cut the secret
 * short wherever it is handled as a C string. */
static int pct_decode(const char *s, size_t n, const char *what, char **out, char *why, size_t wl)
{
    char *d = malloc(n + 1);
    if (!d)
        return IHC_ENOMEM;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            d[j++] = s[i];
            continue;
        }
        int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
        int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            memset(d, 0, j);
            free(d);
            return fail(why, wl,
                        "bad %%-escape in the %s: expected %%XX with two hex digits, "
                        "not %%00",
                        what);
        }
        d[j++] = (char)(hi * 16 + lo);
        i += 2;
    }
    d[j] = '\0';
    *out = d;
    return IHC_OK;
}

/* "[USER]:PASSWORD" or, as redis-cli reads it, "PASSWORD". */
static int parse_userinfo(const char *s, size_t n, ihc_redis_url *u, char *why, size_t wl)
{
    const char *colon = memchr(s, ':', n);
    if (colon && colon > s) {
        int rc = pct_decode(s, (size_t)(colon - s), "user", &u->user, why, wl);
        if (rc != IHC_OK)
            return rc;
    }
    const char *pw = colon ? colon + 1 : s;
    size_t pwlen = n - (size_t)(pw - s);
    if (pwlen == 0)
        return fail(why, wl, "empty password before '@' (leave out the user info for none)");
    return pct_decode(pw, pwlen, "password", &u->password, why, wl);
}

/* A decimal number s[0..n) in [0, max]. */
static bool parse_uint(const char *s, size_t n, long max, long *v)
{
    if (n == 0 || n > 10)
        return false;
    long x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        x = x * 10 + (s[i] - '0');
    }
    if (x > max)
        return false;
    *v = x;
    return true;
}

static bool is_name_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '-' || ch == '_';
}

static bool is_v6_char(char ch)
{
    return hexval(ch) >= 0 || ch == ':' || ch == '.';
}

/* unix://[user info@]/PATH[?db=DB]: the authority may hold user info and nothing else. */
static int parse_unix(const url_parts *p, ihc_redis_url *u, char *why, size_t wl)
{
    const char *host = p->at ? p->at + 1 : p->rest;
    if (host != p->auth_end)
        return fail(why, wl,
                    "unix:// takes no host: the path follows it, as in "
                    "unix:///run/redis.sock (three slashes)");
    if (*p->auth_end != '/')
        return fail(why, wl, "missing unix socket path: expected unix:///PATH[?db=DB]");
    const char *path = p->auth_end;
    size_t plen = strcspn(path, "?#");
    if (plen < 2 || path[plen - 1] == '/')
        return fail(why, wl, "the unix socket path must name a file: unix:///PATH");
    if (plen > IHC_REDIS_URL_PATH_MAX)
        return fail(why, wl, "unix socket path of %zu bytes: at most %d fit in a socket address",
                    plen, IHC_REDIS_URL_PATH_MAX);
    const char *q = path + plen;
    if (*q == '#')
        return fail(why, wl, "unexpected '#' fragment in a unix:// URL");
    if (*q == '?') {
        long db;
        if (strncmp(q + 1, "db=", 3) != 0)
            return fail(why, wl, "the only query a unix:// URL takes is ?db=DB");
        if (!parse_uint(q + 4, strlen(q + 4), INT_MAX, &db))
            return fail(why, wl, "db must be a number in [0, %d]", INT_MAX);
        u->db = (int)db;
    }
    if (!(u->path = strndup(path, plen)))
        return IHC_ENOMEM;
    return IHC_OK;
}

/* HOST[:PORT] in [host, end): a name, IPv4 or [IPv6]; *h is malloc'd (IPv6 without its
 * brackets). */
static int parse_hostport(const char *host, const char *end, int def_port, char **h, int *port,
                          char *why, size_t wl)
{
    const char *host_end, *port_s = NULL;
    bool v6 = host < end && *host == '[';
    if (v6) {
        const char *close = memchr(host, ']', (size_t)(end - host));
        if (!close)
            return fail(why, wl, "unterminated [IPv6] host: expected ']'");
        host_end = close + 1;
        if (host_end < end && *host_end != ':')
            return fail(why, wl, "unexpected characters after the [IPv6] host");
        if (host_end < end)
            port_s = host_end + 1;
        bool ok = close - host > 2 && memchr(host + 1, ':', (size_t)(close - host - 1));
        for (const char *c = host + 1; ok && c < close; c++)
            ok = is_v6_char(*c);
        if (!ok)
            return fail(why, wl, "bad [IPv6] host: expected hex digits, ':' and '.' in []");
        host++;
        host_end = close;
    } else {
        const char *colon = memchr(host, ':', (size_t)(end - host));
        host_end = colon ? colon : end;
        if (colon)
            port_s = colon + 1;
        if (host_end == host)
            return fail(why, wl, "missing host: expected " FORMS);
        for (const char *c = host; c < host_end; c++)
            if (!is_name_char(*c))
                return fail(why, wl,
                            "bad host: expected a name or IPv4 address of "
                            "[A-Za-z0-9.-_], or an [IPv6] address");
    }
    *port = def_port;
    if (port_s) {
        long pv;
        if (!parse_uint(port_s, (size_t)(end - port_s), 65535, &pv) || pv == 0)
            return fail(why, wl, "port must be a number in [1, 65535]");
        *port = (int)pv;
    }
    if (!(*h = strndup(host, (size_t)(host_end - host))))
        return IHC_ENOMEM;
    return IHC_OK;
}

/* redis://[user info@]HOST[:PORT][/DB] */
static int parse_tcp(const url_parts *p, ihc_redis_url *u, char *why, size_t wl)
{
    const char *host = p->at ? p->at + 1 : p->rest, *end = p->auth_end;
    int rc = parse_hostport(host, end, IHC_DEFAULT_REDIS_PORT, &u->host, &u->port, why, wl);
    if (rc != IHC_OK)
        return rc;
    if (*end == '/') {
        const char *dbs = end + 1;
        size_t dlen = strlen(dbs);
        long db = 0;
        if (dlen > 0 && !parse_uint(dbs, dlen, INT_MAX, &db))
            return fail(why, wl, "db must be a number in [0, %d] (redis://HOST:PORT/DB)", INT_MAX);
        u->db = (int)db;
    } else if (*end != '\0') {
        return fail(why, wl,
                    "unexpected '%c' in a redis:// URL: the db goes in the path, "
                    "as in redis://HOST:PORT/DB",
                    *end);
    }
    return IHC_OK;
}

/* redis-sentinel://[user info@]HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB] */
static int parse_sentinel(const url_parts *p, ihc_redis_url *u, char *why, size_t wl)
{
    const char *h = p->at ? p->at + 1 : p->rest, *end = p->auth_end;
    if (h == end)
        return fail(why, wl, "no sentinel: expected redis-sentinel://HOST[:PORT],.../MASTER[/DB]");
    while (h <= end) {
        const char *comma = memchr(h, ',', (size_t)(end - h));
        const char *item_end = comma ? comma : end;
        if (item_end == h)
            return fail(why, wl, "empty sentinel %zu in the list", u->n_sentinels + 1);
        if (u->n_sentinels == IHC_REDIS_SENTINELS_MAX)
            return fail(why, wl, "more than %d sentinels", IHC_REDIS_SENTINELS_MAX);
        ihc_redis_sentinel *sn = &u->sentinels[u->n_sentinels];
        char inner[200];
        int rc = parse_hostport(h, item_end, IHC_DEFAULT_REDIS_SENTINEL_PORT, &sn->host, &sn->port,
                                inner, sizeof(inner));
        if (rc == IHC_ENOMEM)
            return rc;
        if (rc != IHC_OK)
            return fail(why, wl, "sentinel %zu '%.*s': %s", u->n_sentinels + 1,
                        (int)(item_end - h > 80 ? 80 : item_end - h), h, inner);
        u->n_sentinels++;
        if (!comma)
            break;
        h = comma + 1;
    }
    if (*end != '/')
        return fail(why, wl,
                    "missing master name: expected redis-sentinel://HOST[:PORT],.../MASTER[/DB]");
    const char *name = end + 1;
    size_t nlen = strcspn(name, "/");
    if (nlen == 0 || nlen > IHC_REDIS_MASTER_NAME_MAX)
        return fail(why, wl, "the master name must be 1-%d characters of [A-Za-z0-9._-]",
                    IHC_REDIS_MASTER_NAME_MAX);
    for (size_t i = 0; i < nlen; i++)
        if (!is_name_char(name[i]))
            return fail(why, wl, "bad master name: expected 1-%d characters of [A-Za-z0-9._-]",
                        IHC_REDIS_MASTER_NAME_MAX);
    if (name[nlen] == '/') {
        const char *dbs = name + nlen + 1;
        size_t dlen = strlen(dbs);
        long db = 0;
        if (dlen > 0 && !parse_uint(dbs, dlen, INT_MAX, &db))
            return fail(why, wl, "db must be a number in [0, %d] (.../MASTER/DB)", INT_MAX);
        u->db = (int)db;
    }
    if (!(u->master = strndup(name, nlen)))
        return IHC_ENOMEM;
    return IHC_OK;
}

int ihc_redis_url_parse(const char *url, ihc_redis_url *out, char *why, size_t why_len)
{
    if (!out)
        return IHC_EINVAL;
    memset(out, 0, sizeof(*out));
    if (why && why_len)
        why[0] = '\0';
    if (!url || !*url)
        return fail(why, why_len, "empty: expected " FORMS);
    for (const char *c = url; *c; c++)
        if ((unsigned char)*c <= ' ' || (unsigned char)*c == 0x7f)
            return fail(why, why_len,
                        "spaces and control characters must be percent-encoded (a space is %%20)");
    url_parts p;
    int rc = split(url, &p, why, why_len);
    if (rc == IHC_OK && p.at)
        rc = parse_userinfo(p.rest, (size_t)(p.at - p.rest), out, why, why_len);
    if (rc == IHC_OK)
        rc = p.form == FORM_UNIX       ? parse_unix(&p, out, why, why_len)
             : p.form == FORM_SENTINEL ? parse_sentinel(&p, out, why, why_len)
                                       : parse_tcp(&p, out, why, why_len);
    if (rc != IHC_OK)
        ihc_redis_url_fini(out);
    return rc;
}

void ihc_redis_url_fini(ihc_redis_url *u)
{
    if (!u)
        return;
    if (u->password) {
        /* volatile: the wipe of memory about to be freed must not be optimised away */
        for (volatile char *c = u->password; *c; c++)
            *c = '\0';
    }
    free(u->password);
    free(u->user);
    free(u->host);
    free(u->path);
    free(u->master);
    for (size_t i = 0; i < u->n_sentinels; i++)
        free(u->sentinels[i].host);
    memset(u, 0, sizeof(*u));
}

void ihc_redis_url_where(const ihc_redis_url *u, char *out, size_t len)
{
    if (!len)
        return;
    if (u->master) {
        size_t k = (size_t)snprintf(out, len, "sentinel:");
        for (size_t i = 0; i < u->n_sentinels && k < len; i++) {
            const char *h = u->sentinels[i].host;
            k += (size_t)snprintf(out + k, len - k, strchr(h, ':') ? "%s[%s]:%d" : "%s%s:%d",
                                  i ? "," : "", h, u->sentinels[i].port);
        }
        if (k < len)
            snprintf(out + k, len - k, "/%s/%d", u->master, u->db);
    } else if (u->path)
        snprintf(out, len, "unix:%s/%d", u->path, u->db);
    else if (u->host && strchr(u->host, ':'))
        snprintf(out, len, "[%s]:%d/%d", u->host, u->port, u->db);
    else
        snprintf(out, len, "%s:%d/%d", u->host ? u->host : "?", u->port, u->db);
}

void ihc_redis_url_redact(const char *url, char *out, size_t len)
{
    if (!len)
        return;
    out[0] = '\0';
    if (!url)
        return;
    const char *from = NULL, *to = NULL; /* the span replaced by "***" */
    ihc_redis_url u;
    url_parts p;
    if (ihc_redis_url_parse(url, &u, NULL, 0) == IHC_OK) {
        ihc_redis_url_fini(&u);
        if (split(url, &p, NULL, 0) == IHC_OK && p.at) {
            from = p.rest;
            to = p.at;
        }
    } else {
        const char *sep = strstr(url, "://");
        const char *at = strrchr(url, '@');
        from = sep ? sep + 3 : url;
        if (at && at >= from)
            to = at;
        else
            from = NULL;
    }
    if (!from) {
        snprintf(out, len, "%s", url);
        return;
    }
    snprintf(out, len, "%.*s***%s", (int)(from - url), url, to);
}
