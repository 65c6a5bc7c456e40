/* TLS for ihc's nng sockets and HTTPS: files loaded and checked with mbedTLS (the library under
 * nng's tls+tcp transport), nng TLS configurations, the probe that explains failed handshakes,
 * and the two watcher threads (a dialer's doctor, a listener's refusal counter). */
#include "tls.h"

#include "clock.h"
#include "err.h"
#include "log.h"
#include "thread.h"

#include <errno.h>
#include <fcntl.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <netdb.h>
#include <nng/supplemental/tls/tls.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define TLS_SCHEME    "tls+tcp://"
#define PEM_FILE_MAX  (1024 * 1024) /* a certificate chain or CA bundle is far smaller */
#define IO_SLICE_MS   100           /* a probe checks for cancellation this often */
#define SP_HEADER_LEN 8

/* The doctor: when a link has been down this long it is probed, then again after PROBE_FIRST,
 * doubling up to PROBE_MAX; an unchanged finding is logged again after REPEAT. */
#define DOCTOR_TICK_MS     250
#define DOCTOR_GRACE_NS    1000000000ull
#define DOCTOR_PROBE_MS    2000
#define DOCTOR_FIRST_NS    2000000000ull
#define DOCTOR_MAX_NS      60000000000ull
#define DOCTOR_REPEAT_NS   60000000000ull
#define DOCTOR_WHY_MAX     512
#define REFUSALS_QUIET     10 /* at most one line per listener every 10 intervals */
#define REFUSALS_LISTENERS 16

struct ihc_tls {
    char *cert_pem, *key_pem, *ca_pem; /* NUL-terminated file contents, or NULL */
    size_t key_len;
    char *server_name;
    char about[300]; /* ihc_tls_describe */
    /* this side's certificate, for explaining why the coordinator refused it */
    char issuer[160];
    bool expired, not_yet;
    bool foreign;       /* not issued by the CA this side trusts (then the peer may not trust it) */
    char ca_about[200]; /* the subject of the first certificate in the CA file */
};

static const ihc_tls_names option_names = {"tls_cert", "tls_key", "tls_ca", "tls_server_name"};

static void set_msg(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_msg(char *buf, size_t len, const char *fmt, ...)
{
    if (buf == NULL || len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

/* Appends to a message already in buf. */
static void add_msg(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_msg(char *buf, size_t len, const char *fmt, ...)
{
    if (buf == NULL || len == 0)
        return;
    size_t used = strnlen(buf, len);
    if (used + 1 >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + used, len - used, fmt, ap);
    va_end(ap);
}

static const char *mbed_err(int rc, char *buf, size_t len)
{
    mbedtls_strerror(rc, buf, len);
    return buf;
}

bool ihc_tls_url(const char *url)
{
    return url != NULL && strncmp(url, TLS_SCHEME, strlen(TLS_SCHEME)) == 0;
}

/* ---- settings against URLs ---- */

bool ihc_tls_urls_ok(const ihc_tls_files *f, const ihc_tls_names *names, bool server,
                     const char *const *urls, size_t n, char *err, size_t err_len)
{
    if (names == NULL)
        names = &option_names;
    if ((f->cert != NULL) != (f->key != NULL)) {
        set_msg(err, err_len, "%s is set without %s: a certificate needs its private key",
                f->cert ? names->cert : names->key, f->cert ? names->key : names->cert);
        return false;
    }
    if (server && f->ca != NULL && f->cert == NULL) {
        set_msg(err, err_len,
                "%s is set but %s is not: mutual TLS needs the coordinator's own certificate and "
                "key too",
                names->ca, names->cert);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!ihc_tls_url(urls[i]))
            continue;
        if (server && f->cert == NULL) {
            set_msg(err, err_len,
                    "%s is a tls+tcp:// URL but %s and %s are not set: the coordinator needs "
                    "its certificate and key to listen with TLS",
                    urls[i], names->cert, names->key);
            return false;
        }
        if (!server && f->ca == NULL) {
            set_msg(err, err_len,
                    "%s is a tls+tcp:// URL but %s is not set: the coordinator's certificate "
                    "is verified against that CA file",
                    urls[i], names->ca);
            return false;
        }
    }
    return true;
}

/* ---- loading ---- */

/* Reads a whole PEM file (at most PEM_FILE_MAX bytes) into a NUL-terminated buffer. */
static char *read_pem(const char *label, const char *path, size_t *len_out, char *err,
                      size_t err_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        set_msg(err, err_len, "%s=%s: cannot read the file: %s", label, path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(PEM_FILE_MAX + 1);
    size_t n = 0;
    if (buf == NULL) {
        close(fd);
        set_msg(err, err_len, "%s=%s: out of memory", label, path);
        return NULL;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, PEM_FILE_MAX + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            set_msg(err, err_len, "%s=%s: cannot read the file: %s", label, path, strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > PEM_FILE_MAX) {
            set_msg(err, err_len, "%s=%s: larger than %d bytes: not a PEM file", label, path,
                    PEM_FILE_MAX);
            goto fail;
        }
    }
    close(fd);
    buf[n] = '\0';
    char *fit = realloc(buf, n + 1); /* the file, not the largest file */
    if (fit != NULL)
        buf = fit;
    if (memchr(buf, '\0', n) != NULL || strstr(buf, "-----BEGIN ") == NULL) {
        set_msg(err, err_len, "%s=%s: not a PEM file (no \"-----BEGIN\" line)", label, path);
        explicit_bzero(buf, n);
        free(buf);
        return NULL;
    }
    *len_out = n;
    return buf;
fail:
    close(fd);
    explicit_bzero(buf, n);
    free(buf);
    return NULL;
}

static void fmt_time(char *out, size_t len, const mbedtls_x509_time *t)
{
    snprintf(out, len, "%04d-%02d-%02d %02d:%02d:%02d UTC", t->year, t->mon, t->day, t->hour,
             t->min, t->sec);
}

/* "CN=…, valid 2026-01-01 00:00:00 UTC to 2027-01-01 00:00:00 UTC" */
static void describe_crt(char *out, size_t len, const mbedtls_x509_crt *c)
{
    char dn[160], from[32], to[32];
    if (mbedtls_x509_dn_gets(dn, sizeof dn, &c->subject) < 0)
        snprintf(dn, sizeof dn, "(unreadable subject)");
    fmt_time(from, sizeof from, &c->valid_from);
    fmt_time(to, sizeof to, &c->valid_to);
    snprintf(out, len, "subject \"%s\", valid %s to %s", dn, from, to);
}

/* Parses a PEM chain; every block must be a certificate. */
static int parse_chain(mbedtls_x509_crt *crt, const char *label, const char *path, const char *pem,
                       size_t len, char *err, size_t err_len)
{
    char m[128];
    int rc = mbedtls_x509_crt_parse(crt, (const unsigned char *)pem, len + 1);
    if (rc < 0) {
        set_msg(err, err_len, "%s=%s: not a PEM certificate (%s)", label, path,
                mbed_err(rc, m, sizeof m));
        return IHC_ECONFIG;
    }
    if (rc > 0) {
        set_msg(err, err_len, "%s=%s: %d of its PEM blocks are not certificates", label, path, rc);
        return IHC_ECONFIG;
    }
    return IHC_OK;
}

static int check_cert_key(ihc_tls *t, const ihc_tls_files *f, const ihc_tls_names *nm, char *err,
                          size_t err_len, char *warn, size_t warn_len)
{
    mbedtls_x509_crt crt;
    mbedtls_pk_context pk;
    char m[128];
    mbedtls_x509_crt_init(&crt);
    mbedtls_pk_init(&pk);
    int rc = parse_chain(&crt, nm->cert, f->cert, t->cert_pem, strlen(t->cert_pem), err, err_len);
    if (rc != IHC_OK)
        goto out;
    rc = IHC_ECONFIG;
    int mrc = mbedtls_pk_parse_key(&pk, (const unsigned char *)t->key_pem, t->key_len + 1, NULL, 0);
    if (mrc == MBEDTLS_ERR_PK_PASSWORD_REQUIRED || mrc == MBEDTLS_ERR_PK_PASSWORD_MISMATCH) {
        set_msg(err, err_len,
                "%s=%s: the private key is encrypted; give it unencrypted (e.g. openssl pkey -in "
                "KEY -out KEY.plain) and protect the file instead (mode 0600)",
                nm->key, f->key);
        goto out;
    }
    if (mrc != 0) {
        set_msg(err, err_len, "%s=%s: not a PEM private key (%s)", nm->key, f->key,
                mbed_err(mrc, m, sizeof m));
        goto out;
    }
    char about[300];
    describe_crt(about, sizeof about, &crt);
    if (mbedtls_pk_check_pair(&crt.pk, &pk) != 0) {
        set_msg(err, err_len,
                "%s=%s does not match the certificate in %s=%s (%s): give the key that "
                "certificate was issued for",
                nm->key, f->key, nm->cert, f->cert, about);
        goto out;
    }
    char dn[160], to[32];
    if (mbedtls_x509_dn_gets(dn, sizeof dn, &crt.subject) < 0)
        snprintf(dn, sizeof dn, "?");
    fmt_time(to, sizeof to, &crt.valid_to);
    snprintf(t->about, sizeof t->about, "%s, expires %s", dn, to);
    if (mbedtls_x509_dn_gets(t->issuer, sizeof t->issuer, &crt.issuer) < 0)
        snprintf(t->issuer, sizeof t->issuer, "?");
    t->expired = mbedtls_x509_time_is_past(&crt.valid_to);
    t->not_yet = mbedtls_x509_time_is_future(&crt.valid_from);
    if (t->expired)
        add_msg(warn, warn_len, "%s%s=%s has expired (%s): peers will refuse it",
                warn && warn[0] ? "; " : "", nm->cert, f->cert, about);
    else if (t->not_yet)
        add_msg(warn, warn_len, "%s%s=%s is not valid yet (%s): peers will refuse it",
                warn && warn[0] ? "; " : "", nm->cert, f->cert, about);
    rc = IHC_OK;
out:
    mbedtls_pk_free(&pk);
    mbedtls_x509_crt_free(&crt);
    return rc;
}

static int check_ca(ihc_tls *t, const ihc_tls_files *f, const ihc_tls_names *nm, char *err,
                    size_t err_len, char *warn, size_t warn_len)
{
    mbedtls_x509_crt ca;
    mbedtls_x509_crt_init(&ca);
    int rc = parse_chain(&ca, nm->ca, f->ca, t->ca_pem, strlen(t->ca_pem), err, err_len);
    if (rc == IHC_OK) {
        bool any_ca = false, any_valid = false;
        char dn[160];
        if (mbedtls_x509_dn_gets(dn, sizeof dn, &ca.subject) < 0)
            snprintf(dn, sizeof dn, "?");
        snprintf(t->ca_about, sizeof t->ca_about, "\"%s\"%s", dn,
                 ca.next && ca.next->raw.len ? " and others" : "");
        for (const mbedtls_x509_crt *c = &ca; c != NULL && c->raw.len > 0; c = c->next) {
            any_ca = any_ca || c->ca_istrue;
            any_valid = any_valid || (!mbedtls_x509_time_is_past(&c->valid_to) &&
                                      !mbedtls_x509_time_is_future(&c->valid_from));
        }
        if (!any_ca)
            add_msg(warn, warn_len,
                    "%s%s=%s holds no CA certificate (basicConstraints CA:TRUE): peers' "
                    "certificates will not verify against it",
                    warn && warn[0] ? "; " : "", nm->ca, f->ca);
        else if (!any_valid)
            add_msg(warn, warn_len,
                    "%s%s=%s: every certificate in it has expired or is not valid yet",
                    warn && warn[0] ? "; " : "", nm->ca, f->ca);
    }
    mbedtls_x509_crt_free(&ca);
    return rc;
}

/* Whether this side's certificate chains up to its own CA file (in most deployments one CA
 * issues every certificate, so a certificate it did not issue is one the peer will refuse). */
static bool issued_by_ca(const ihc_tls *t)
{
    mbedtls_x509_crt crt, ca;
    mbedtls_x509_crt_init(&crt);
    mbedtls_x509_crt_init(&ca);
    uint32_t flags = 0;
    bool ok = false;
    if (mbedtls_x509_crt_parse(&crt, (const unsigned char *)t->cert_pem, strlen(t->cert_pem) + 1) ==
            0 &&
        mbedtls_x509_crt_parse(&ca, (const unsigned char *)t->ca_pem, strlen(t->ca_pem) + 1) == 0) {
        mbedtls_x509_crt_verify(&crt, &ca, NULL, NULL, &flags, NULL, NULL);
        ok = (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED) == 0;
    }
    mbedtls_x509_crt_free(&crt);
    mbedtls_x509_crt_free(&ca);
    return ok;
}

int ihc_tls_load(ihc_tls **out, const ihc_tls_files *f, const ihc_tls_names *names, char *err,
                 size_t err_len, char *warn, size_t warn_len)
{
    if (names == NULL)
        names = &option_names;
    *out = NULL;
    if (warn != NULL && warn_len > 0)
        warn[0] = '\0';
    if ((f->cert != NULL) != (f->key != NULL)) {
        set_msg(err, err_len, "%s is set without %s: a certificate needs its private key",
                f->cert ? names->cert : names->key, f->cert ? names->key : names->cert);
        return IHC_ECONFIG;
    }
    if (f->server_name != NULL && (f->server_name[0] == '\0' || strlen(f->server_name) > 255 ||
                                   strpbrk(f->server_name, " \t\r\n/") != NULL)) {
        set_msg(err, err_len, "%s=%s: expected a host name (1-255 characters, no spaces)",
                names->server_name, f->server_name);
        return IHC_ECONFIG;
    }
    ihc_tls *t = calloc(1, sizeof *t);
    if (t == NULL) {
        set_msg(err, err_len, "out of memory");
        return IHC_ENOMEM;
    }
    snprintf(t->about, sizeof t->about, "no certificate");
    int rc = IHC_ECONFIG;
    size_t len = 0;
    if (f->server_name != NULL && (t->server_name = strdup(f->server_name)) == NULL) {
        rc = IHC_ENOMEM;
        goto fail;
    }
    if (f->cert != NULL) {
        if ((t->cert_pem = read_pem(names->cert, f->cert, &len, err, err_len)) == NULL ||
            (t->key_pem = read_pem(names->key, f->key, &t->key_len, err, err_len)) == NULL)
            goto fail;
        if ((rc = check_cert_key(t, f, names, err, err_len, warn, warn_len)) != IHC_OK)
            goto fail;
    }
    if (f->ca != NULL) {
        rc = IHC_ECONFIG;
        if ((t->ca_pem = read_pem(names->ca, f->ca, &len, err, err_len)) == NULL)
            goto fail;
        if ((rc = check_ca(t, f, names, err, err_len, warn, warn_len)) != IHC_OK)
            goto fail;
    }
    if (t->cert_pem != NULL && t->ca_pem != NULL)
        t->foreign = !issued_by_ca(t);
    *out = t;
    return IHC_OK;
fail:
    ihc_tls_free(t);
    return rc;
}

void ihc_tls_free(ihc_tls *t)
{
    if (t == NULL)
        return;
    if (t->key_pem != NULL)
        explicit_bzero(t->key_pem, t->key_len);
    free(t->key_pem);
    free(t->cert_pem);
    free(t->ca_pem);
    free(t->server_name);
    free(t);
}

const char *ihc_tls_cert_pem(const ihc_tls *t)
{
    return t != NULL ? t->cert_pem : NULL;
}

const char *ihc_tls_key_pem(const ihc_tls *t)
{
    return t != NULL ? t->key_pem : NULL;
}

const char *ihc_tls_ca_pem(const ihc_tls *t)
{
    return t != NULL ? t->ca_pem : NULL;
}

const char *ihc_tls_describe(const ihc_tls *t)
{
    return t != NULL ? t->about : "no certificate";
}

bool ihc_tls_mutual(const ihc_tls *t)
{
    return t != NULL && t->ca_pem != NULL;
}

/* ---- nng ---- */

/* Splits "tls+tcp://HOST:PORT" (HOST may be "[v6]") into host and port. */
static bool url_host_port(const char *url, char *host, size_t hlen, char *port, size_t plen)
{
    const char *h = strstr(url, "://");
    if (h == NULL)
        return false;
    h += 3;
    const char *colon = strrchr(h, ':');
    if (colon == NULL || colon == h || colon[1] == '\0')
        return false;
    const char *hs = h, *he = colon;
    if (*hs == '[') {
        if (he[-1] != ']')
            return false;
        hs++;
        he--;
    }
    size_t n = (size_t)(he - hs);
    if (n == 0 || n >= hlen || strlen(colon + 1) >= plen)
        return false;
    memcpy(host, hs, n);
    host[n] = '\0';
    snprintf(port, plen, "%s", colon + 1);
    return true;
}

static int config_for(const ihc_tls *t, bool server, const char *url, nng_tls_config **out)
{
    nng_tls_config *cfg = NULL;
    int rv = nng_tls_config_alloc(&cfg, server ? NNG_TLS_MODE_SERVER : NNG_TLS_MODE_CLIENT);
    if (rv != 0)
        return rv;
    if (t->cert_pem != NULL &&
        (rv = nng_tls_config_own_cert(cfg, t->cert_pem, t->key_pem, NULL)) != 0)
        goto fail;
    if (t->ca_pem != NULL && (rv = nng_tls_config_ca_chain(cfg, t->ca_pem, NULL)) != 0)
        goto fail;
    if (server) {
        /* nng's servers do not ask for client certificates unless told to */
        rv = nng_tls_config_auth_mode(cfg, t->ca_pem != NULL ? NNG_TLS_AUTH_MODE_REQUIRED
                                                             : NNG_TLS_AUTH_MODE_NONE);
    } else {
        char host[256], port[16];
        const char *name = t->server_name;
        if (name == NULL && url_host_port(url, host, sizeof host, port, sizeof port))
            name = host;
        if (t->ca_pem == NULL) {
            rv = NNG_EINVAL; /* never dial TLS without verifying the peer */
            goto fail;
        }
        if ((rv = nng_tls_config_auth_mode(cfg, NNG_TLS_AUTH_MODE_REQUIRED)) == 0 && name != NULL)
            rv = nng_tls_config_server_name(cfg, name);
    }
    if (rv != 0)
        goto fail;
    *out = cfg;
    return 0;
fail:
    nng_tls_config_free(cfg);
    return rv;
}

int ihc_tls_dial(nng_socket s, const char *url, const ihc_tls *t, nng_dialer *dp, int flags)
{
    nng_dialer d;
    int rv = nng_dialer_create(&d, s, url);
    if (rv != 0)
        return rv;
    if (ihc_tls_url(url)) {
        nng_tls_config *cfg = NULL;
        if (t == NULL) {
            rv = NNG_EINVAL;
        } else if ((rv = config_for(t, false, url, &cfg)) == 0) {
            rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cfg);
            nng_tls_config_free(cfg); /* the dialer holds its own reference */
        }
        if (rv != 0) {
            nng_dialer_close(d);
            return rv;
        }
    }
    /* before the start: a pipe callback may run before nng_dialer_start returns, and the
     * caller may need to recognise the dialer there */
    if (dp != NULL)
        *dp = d;
    if ((rv = nng_dialer_start(d, flags)) != 0) {
        nng_dialer_close(d);
        return rv;
    }
    return 0;
}

int ihc_tls_listen(nng_socket s, const char *url, const ihc_tls *t, nng_listener *lp)
{
    nng_listener l;
    int rv = nng_listener_create(&l, s, url);
    if (rv != 0)
        return rv;
    if (ihc_tls_url(url)) {
        nng_tls_config *cfg = NULL;
        if (t == NULL || t->cert_pem == NULL) {
            rv = NNG_EINVAL;
        } else if ((rv = config_for(t, true, url, &cfg)) == 0) {
            rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, cfg);
            nng_tls_config_free(cfg);
        }
        if (rv != 0) {
            nng_listener_close(l);
            return rv;
        }
    }
    if ((rv = nng_listener_start(l, 0)) != 0) {
        nng_listener_close(l);
        return rv;
    }
    if (lp != NULL)
        *lp = l;
    return 0;
}

/* ---- the probe ---- */

typedef struct {
    int fd;
    uint64_t deadline_ns;
    const atomic_bool *cancel;
    unsigned char first[4]; /* the peer's first bytes: an SP header means plain tcp:// */
    size_t n_first;
    bool timed_out;
    /* the coordinator's certificate, from the verify callback */
    bool have_leaf;
    char leaf[300], leaf_issuer[160];
} probe;

/* Waits until fd is ready for ev, the deadline passes or the probe is cancelled. */
static int wait_fd(probe *p, short ev)
{
    for (;;) {
        if (p->cancel != NULL && atomic_load(p->cancel))
            return -1;
        uint64_t now = ihc_mono_ns();
        if (now >= p->deadline_ns) {
            p->timed_out = true;
            return -1;
        }
        uint64_t left_ms = (p->deadline_ns - now) / 1000000u + 1;
        struct pollfd pfd = {.fd = p->fd, .events = ev};
        int r = poll(&pfd, 1, left_ms < IO_SLICE_MS ? (int)left_ms : IO_SLICE_MS);
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

static int probe_send(void *ctx, const unsigned char *buf, size_t len)
{
    probe *p = ctx;
    for (;;) {
        ssize_t n = send(p->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0)
            return (int)n;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return errno == EPIPE || errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET
                                                         : MBEDTLS_ERR_NET_SEND_FAILED;
        if (wait_fd(p, POLLOUT) != 0)
            return MBEDTLS_ERR_SSL_TIMEOUT;
    }
}

static int probe_recv(void *ctx, unsigned char *buf, size_t len)
{
    probe *p = ctx;
    for (;;) {
        ssize_t n = recv(p->fd, buf, len, MSG_DONTWAIT);
        if (n > 0) {
            for (ssize_t i = 0; i < n && p->n_first < sizeof p->first; i++)
                p->first[p->n_first++] = buf[i];
            return (int)n;
        }
        if (n == 0)
            return MBEDTLS_ERR_SSL_CONN_EOF;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_RECV_FAILED;
        if (wait_fd(p, POLLIN) != 0)
            return MBEDTLS_ERR_SSL_TIMEOUT;
    }
}

static int on_verify(void *ctx, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
    (void)flags;
    probe *p = ctx;
    if (depth == 0) {
        p->have_leaf = true;
        describe_crt(p->leaf, sizeof p->leaf, crt);
        if (mbedtls_x509_dn_gets(p->leaf_issuer, sizeof p->leaf_issuer, &crt->issuer) < 0)
            snprintf(p->leaf_issuer, sizeof p->leaf_issuer, "?");
    }
    return 0; /* the flags decide */
}

/* A non-blocking TCP connection to host:port within the probe's deadline. */
static int tcp_connect(probe *p, const char *host, const char *port, char *why, size_t wl)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        set_msg(why, wl, "cannot resolve %s: %s", host, gai_strerror(gai));
        return IHC_ENOTCONN;
    }
    int last = 0;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        int fd =
            socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        p->fd = fd;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
            last = errno;
        } else if (wait_fd(p, POLLOUT) != 0) {
            last = ETIMEDOUT;
        } else {
            socklen_t sl = sizeof last;
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &last, &sl) != 0)
                last = errno;
            if (last == 0) {
                freeaddrinfo(res);
                return IHC_OK;
            }
        }
        close(fd);
        p->fd = -1;
        if (p->timed_out || (p->cancel != NULL && atomic_load(p->cancel)))
            break;
    }
    freeaddrinfo(res);
    set_msg(why, wl, "cannot connect to %s port %s: %s", host, port,
            p->timed_out ? "timed out" : strerror(last ? last : ECONNREFUSED));
    return IHC_ENOTCONN;
}

static const char *alert_name(int a)
{
    switch (a) {
    case MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE:
        return "handshake_failure";
    case MBEDTLS_SSL_ALERT_MSG_NO_CERT:
        return "no_certificate";
    case MBEDTLS_SSL_ALERT_MSG_BAD_CERT:
        return "bad_certificate";
    case MBEDTLS_SSL_ALERT_MSG_UNSUPPORTED_CERT:
        return "unsupported_certificate";
    case MBEDTLS_SSL_ALERT_MSG_CERT_REVOKED:
        return "certificate_revoked";
    case MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED:
        return "certificate_expired";
    case MBEDTLS_SSL_ALERT_MSG_CERT_UNKNOWN:
        return "certificate_unknown";
    case MBEDTLS_SSL_ALERT_MSG_UNKNOWN_CA:
        return "unknown_ca";
    case MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED:
        return "access_denied";
    case MBEDTLS_SSL_ALERT_MSG_PROTOCOL_VERSION:
        return "protocol_version";
    case MBEDTLS_SSL_ALERT_MSG_INSUFFICIENT_SECURITY:
        return "insufficient_security";
    case MBEDTLS_SSL_ALERT_MSG_DECODE_ERROR:
        return "decode_error";
    default:
        return "other";
    }
}

/* mbedtls_x509_crt_verify_info's lines joined with "; ". */
static void verify_reasons(char *out, size_t len, uint32_t flags)
{
    char buf[512];
    if (mbedtls_x509_crt_verify_info(buf, sizeof buf, "", flags) < 0)
        snprintf(buf, sizeof buf, "verification flags 0x%x", (unsigned)flags);
    size_t n = strlen(buf);
    while (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    for (char *c = buf; *c; c++)
        if (*c == '\n')
            *c = ';';
    snprintf(out, len, "%s", buf);
}

/* Appends why the coordinator most likely refused this side (mutual TLS). */
static void refused_cert(const ihc_tls *t, char *why, size_t wl)
{
    if (t->cert_pem == NULL)
        add_msg(why, wl, ": it requires a client certificate (mutual TLS) and none is configured");
    else if (t->expired || t->not_yet)
        add_msg(why, wl, ": it refused this side's certificate, which %s (%s)",
                t->expired ? "has expired" : "is not valid yet", t->about);
    else if (t->foreign)
        add_msg(why, wl,
                ": it refused this side's certificate (%s, issuer \"%s\"), which is not issued by "
                "the CA this side trusts either; it must be issued by the coordinator's IHC_TLS_CA",
                t->about, t->issuer);
    else
        add_msg(why, wl,
                ": it most likely does not trust this side's certificate (%s, issuer \"%s\"); it "
                "must be issued by the coordinator's IHC_TLS_CA (nng's server sends no TLS alert "
                "saying why)",
                t->about, t->issuer);
}

/* Explains a failed handshake (rc from mbedtls_ssl_handshake). */
static void explain(const ihc_tls *t, probe *p, mbedtls_ssl_context *ssl, int rc, const char *name,
                    char *why, size_t wl)
{
    char m[128];
    if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        char reasons[400];
        verify_reasons(reasons, sizeof reasons, mbedtls_ssl_get_verify_result(ssl));
        set_msg(why, wl, "the coordinator's certificate failed verification: %s", reasons);
        if (p->have_leaf)
            add_msg(why, wl, " (its %s, issuer \"%s\"; expected name \"%s\"; trusted CA %s)",
                    p->leaf, p->leaf_issuer, name, t->ca_about);
        return;
    }
    if (rc == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE) {
        /* mbedTLS 2.28 keeps the alert's description in the record it just read */
        int alert = ssl->in_msg != NULL ? ssl->in_msg[1] : -1;
        set_msg(why, wl, "the coordinator refused the handshake with TLS alert %s (%d)",
                alert_name(alert), alert);
        refused_cert(t, why, wl);
        return;
    }
    if (p->n_first >= 4 && memcmp(p->first, "\0SP\0", 4) == 0) {
        set_msg(why, wl,
                "the peer does not speak TLS: it sent nng's plain SP header, so it listens on "
                "tcp://, not tls+tcp://");
        return;
    }
    if (rc == MBEDTLS_ERR_SSL_INVALID_RECORD || rc == MBEDTLS_ERR_SSL_BAD_HS_SERVER_HELLO ||
        rc == MBEDTLS_ERR_SSL_UNEXPECTED_MESSAGE || rc == MBEDTLS_ERR_SSL_BAD_INPUT_DATA) {
        set_msg(why, wl, "the peer does not speak TLS 1.2 (%s)", mbed_err(rc, m, sizeof m));
        return;
    }
    if (rc == MBEDTLS_ERR_SSL_CONN_EOF || rc == MBEDTLS_ERR_NET_CONN_RESET ||
        rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
        /* nng 1.5.2's server closes without sending its alert */
        set_msg(why, wl, "the coordinator closed the connection during the TLS handshake");
        refused_cert(t, why, wl);
        return;
    }
    if (rc == MBEDTLS_ERR_SSL_TIMEOUT) {
        set_msg(why, wl, "no TLS answer from the peer in time");
        return;
    }
    set_msg(why, wl, "TLS handshake failed: %s", mbed_err(rc, m, sizeof m));
}

static int probe_run(const ihc_tls *t, const char *url, uint16_t sp_self, uint16_t sp_peer,
                     int timeout_ms, const atomic_bool *cancel, char *why, size_t wl)
{
    char host[256], port[16];
    set_msg(why, wl, "%s", "");
    if (t == NULL || t->ca_pem == NULL) {
        set_msg(why, wl, "no CA to verify the coordinator with");
        return IHC_ETRANSPORT;
    }
    if (!url_host_port(url, host, sizeof host, port, sizeof port)) {
        set_msg(why, wl, "cannot read host and port from %s", url);
        return IHC_ENOTCONN;
    }
    const char *name = t->server_name != NULL ? t->server_name : host;
    probe p = {.fd = -1,
               .deadline_ns =
                   ihc_mono_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 1) * 1000000u,
               .cancel = cancel};
    int rc = tcp_connect(&p, host, port, why, wl);
    if (rc != IHC_OK)
        return rc;

    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_ssl_config conf;
    mbedtls_ssl_context ssl;
    mbedtls_x509_crt ca, own;
    mbedtls_pk_context key;
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    mbedtls_ssl_config_init(&conf);
    mbedtls_ssl_init(&ssl);
    mbedtls_x509_crt_init(&ca);
    mbedtls_x509_crt_init(&own);
    mbedtls_pk_init(&key);
    char m[128];
    int mrc;
    rc = IHC_ETRANSPORT;
    static const unsigned char pers[] = "ihc-tls-probe";
    if ((mrc = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, pers,
                                     sizeof pers - 1)) != 0 ||
        (mrc =
             mbedtls_ssl_config_defaults(&conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                         MBEDTLS_SSL_PRESET_DEFAULT)) != 0 ||
        (mrc = mbedtls_x509_crt_parse(&ca, (const unsigned char *)t->ca_pem,
                                      strlen(t->ca_pem) + 1)) < 0) {
        set_msg(why, wl, "cannot set up the probe: %s", mbed_err(mrc, m, sizeof m));
        goto out;
    }
    /* as nng's own configuration: TLS 1.2, the peer verified, our certificate if any */
    mbedtls_ssl_conf_min_version(&conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &drbg);
    mbedtls_ssl_conf_authmode(&conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&conf, &ca, NULL);
    mbedtls_ssl_conf_verify(&conf, on_verify, &p);
    if (t->cert_pem != NULL) {
        if ((mrc = mbedtls_x509_crt_parse(&own, (const unsigned char *)t->cert_pem,
                                          strlen(t->cert_pem) + 1)) < 0 ||
            (mrc = mbedtls_pk_parse_key(&key, (const unsigned char *)t->key_pem, t->key_len + 1,
                                        NULL, 0)) != 0 ||
            (mrc = mbedtls_ssl_conf_own_cert(&conf, &own, &key)) != 0) {
            set_msg(why, wl, "cannot set up the probe: %s", mbed_err(mrc, m, sizeof m));
            goto out;
        }
    }
    if ((mrc = mbedtls_ssl_setup(&ssl, &conf)) != 0 ||
        (mrc = mbedtls_ssl_set_hostname(&ssl, name)) != 0) {
        set_msg(why, wl, "cannot set up the probe: %s", mbed_err(mrc, m, sizeof m));
        goto out;
    }
    mbedtls_ssl_set_bio(&ssl, &p, probe_send, probe_recv, NULL);
    do
        mrc = mbedtls_ssl_handshake(&ssl);
    while (mrc == MBEDTLS_ERR_SSL_WANT_READ || mrc == MBEDTLS_ERR_SSL_WANT_WRITE);
    if (mrc != 0) {
        if (cancel != NULL && atomic_load(cancel))
            set_msg(why, wl, "cancelled");
        else
            explain(t, &p, &ssl, mrc, name, why, wl);
        goto out;
    }

    /* TLS is fine. nng's SP header both ways, so that the listener sees a whole connection. */
    unsigned char hdr[SP_HEADER_LEN] = {
        0, 'S', 'P', 0, (unsigned char)(sp_self >> 8), (unsigned char)sp_self, 0, 0};
    unsigned char got[SP_HEADER_LEN];
    size_t n = 0;
    while ((mrc = mbedtls_ssl_write(&ssl, hdr, sizeof hdr)) == MBEDTLS_ERR_SSL_WANT_WRITE)
        ;
    while (mrc >= 0 && n < sizeof got) {
        mrc = mbedtls_ssl_read(&ssl, got + n, sizeof got - n);
        if (mrc > 0)
            n += (size_t)mrc;
        else if (mrc == 0)
            mrc = MBEDTLS_ERR_SSL_CONN_EOF;
        else if (mrc == MBEDTLS_ERR_SSL_WANT_READ)
            mrc = 0;
    }
    if (n < sizeof got) {
        set_msg(why, wl,
                "TLS handshake succeeded (coordinator %s) but the connection ended before nng's "
                "SP header (%s)",
                p.have_leaf ? p.leaf : "?", mbed_err(mrc, m, sizeof m));
        goto out;
    }
    uint16_t proto = (uint16_t)(got[4] << 8 | got[5]);
    if (memcmp(got, "\0SP\0", 4) != 0) {
        set_msg(why, wl, "TLS handshake succeeded but the peer is not an nng socket");
    } else if (sp_peer != 0 && proto != sp_peer) {
        set_msg(why, wl,
                "TLS handshake succeeded but the peer speaks SP protocol %u, not %u (URLs "
                "swapped?)",
                (unsigned)proto, (unsigned)sp_peer);
    } else {
        set_msg(why, wl, "TLS handshake and SP negotiation succeeded (coordinator %s)",
                p.have_leaf ? p.leaf : "?");
        rc = IHC_OK;
    }
    mbedtls_ssl_close_notify(&ssl);
out:
    mbedtls_ssl_free(&ssl);
    mbedtls_ssl_config_free(&conf);
    mbedtls_x509_crt_free(&ca);
    mbedtls_x509_crt_free(&own);
    mbedtls_pk_free(&key);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);
    if (p.fd >= 0)
        close(p.fd);
    return rc;
}

int ihc_tls_probe(const ihc_tls *t, const char *url, uint16_t sp_self, uint16_t sp_peer,
                  int timeout_ms, char *why, size_t why_len)
{
    return probe_run(t, url, sp_self, sp_peer, timeout_ms, NULL, why, why_len);
}

/* ---- the doctor ---- */

typedef struct {
    ihc_tls_link l;
    uint64_t down_since, next_probe, backoff, logged_ns;
    bool complained;
    char last[DOCTOR_WHY_MAX];
} doctor_link;

struct ihc_tls_doctor {
    const ihc_tls *t;
    doctor_link *links;
    size_t n;
    ihc_tls_link_up_fn up;
    void *arg;
    char component[32];
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    atomic_bool cancel;
};

static void doctor_check(ihc_tls_doctor *d, doctor_link *k, size_t i)
{
    uint64_t now = ihc_mono_ns();
    if (d->up(d->arg, i)) {
        if (k->complained)
            ihc_log(IHC_LOG_INFO, d->component, "TLS connection up link=%s url=%s", k->l.name,
                    k->l.url);
        k->down_since = 0;
        k->complained = false;
        k->last[0] = '\0';
        k->backoff = DOCTOR_FIRST_NS;
        return;
    }
    if (k->down_since == 0) {
        k->down_since = now;
        k->next_probe = now + DOCTOR_GRACE_NS;
    }
    if (now < k->next_probe)
        return;
    char why[DOCTOR_WHY_MAX];
    int rc = probe_run(d->t, k->l.url, k->l.sp_self, k->l.sp_peer, DOCTOR_PROBE_MS, &d->cancel, why,
                       sizeof why);
    now = ihc_mono_ns();
    k->next_probe = now + k->backoff;
    if (k->backoff < DOCTOR_MAX_NS)
        k->backoff = k->backoff * 2 < DOCTOR_MAX_NS ? k->backoff * 2 : DOCTOR_MAX_NS;
    if (atomic_load(&d->cancel) || d->up(d->arg, i))
        return;
    if (rc != IHC_ETRANSPORT) {
        /* not reachable (the coordinator is down: the agent says so itself), or TLS works
         * and the link is simply not up yet */
        ihc_log(IHC_LOG_DEBUG, d->component, "TLS probe link=%s url=%s result=\"%s\"", k->l.name,
                k->l.url, why);
        return;
    }
    if (strcmp(why, k->last) != 0 || now - k->logged_ns >= DOCTOR_REPEAT_NS) {
        ihc_log(IHC_LOG_WARN, d->component,
                "TLS connection to the coordinator failed link=%s url=%s reason=\"%s\"; still "
                "retrying",
                k->l.name, k->l.url, why);
        snprintf(k->last, sizeof k->last, "%s", why);
        k->logged_ns = now;
        k->complained = true;
    }
}

static void *doctor_main(void *arg)
{
    ihc_tls_doctor *d = arg;
    pthread_mutex_lock(&d->mu);
    while (!d->stop) {
        pthread_mutex_unlock(&d->mu);
        for (size_t i = 0; i < d->n && !atomic_load(&d->cancel); i++)
            if (ihc_tls_url(d->links[i].l.url))
                doctor_check(d, &d->links[i], i);
        pthread_mutex_lock(&d->mu);
        struct timespec ts = ihc_mono_abstime(ihc_mono_ns() + DOCTOR_TICK_MS * 1000000ull);
        if (!d->stop)
            pthread_cond_timedwait(&d->cv, &d->mu, &ts);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

static void doctor_free(ihc_tls_doctor *d)
{
    for (size_t i = 0; d->links != NULL && i < d->n; i++) {
        free((char *)d->links[i].l.url);
        free((char *)d->links[i].l.name);
    }
    free(d->links);
    free(d);
}

int ihc_tls_doctor_start(ihc_tls_doctor **out, const ihc_tls *t, const ihc_tls_link *links,
                         size_t n, ihc_tls_link_up_fn up, void *arg, const char *component)
{
    *out = NULL;
    ihc_tls_doctor *d = calloc(1, sizeof *d);
    if (d == NULL)
        return IHC_ENOMEM;
    d->t = t;
    d->up = up;
    d->arg = arg;
    snprintf(d->component, sizeof d->component, "%s", component ? component : "tls");
    atomic_init(&d->cancel, false);
    if ((d->links = calloc(n ? n : 1, sizeof *d->links)) == NULL)
        goto fail;
    d->n = n;
    for (size_t i = 0; i < n; i++) {
        d->links[i].l = links[i];
        d->links[i].l.url = strdup(links[i].url ? links[i].url : "");
        d->links[i].l.name = strdup(links[i].name ? links[i].name : "link");
        d->links[i].backoff = DOCTOR_FIRST_NS;
        if (d->links[i].l.url == NULL || d->links[i].l.name == NULL)
            goto fail;
    }
    if (pthread_mutex_init(&d->mu, NULL) != 0)
        goto fail;
    if (ihc_cond_init_mono(&d->cv) != 0) {
        pthread_mutex_destroy(&d->mu);
        goto fail;
    }
    if (pthread_create(&d->th, NULL, doctor_main, d) != 0) {
        pthread_cond_destroy(&d->cv);
        pthread_mutex_destroy(&d->mu);
        goto fail;
    }
    *out = d;
    return IHC_OK;
fail:
    doctor_free(d);
    return IHC_ENOMEM;
}

void ihc_tls_doctor_stop(ihc_tls_doctor *d)
{
    if (d == NULL)
        return;
    atomic_store(&d->cancel, true);
    pthread_mutex_lock(&d->mu);
    d->stop = true;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    pthread_join(d->th, NULL);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
    doctor_free(d);
}

/* ---- refused handshakes on listeners ---- */

typedef struct {
    uint64_t id;
    uint64_t seen;     /* "auth" errors counted so far */
    uint64_t reported; /* up to here logged */
    uint64_t logged_ns;
} listener_count;

struct ihc_tls_refusals {
    int interval_ms;
    char component[32];
    listener_count ls[REFUSALS_LISTENERS];
    size_t n;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
};

static listener_count *refusals_slot(ihc_tls_refusals *r, uint64_t id)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->ls[i].id == id)
            return &r->ls[i];
    if (r->n == REFUSALS_LISTENERS)
        return NULL;
    listener_count *c = &r->ls[r->n++];
    memset(c, 0, sizeof *c);
    c->id = id;
    return c;
}

static void refusals_scan(ihc_tls_refusals *r, bool final)
{
    nng_stat *all = NULL;
    if (nng_stats_get(&all) != 0)
        return;
    uint64_t now = ihc_mono_ns();
    for (nng_stat *s = nng_stat_child(all); s != NULL; s = nng_stat_next(s)) {
        if (nng_stat_type(s) != NNG_STAT_SCOPE || strcmp(nng_stat_name(s), "listener") != 0)
            continue;
        nng_stat *url = nng_stat_find(s, "url");
        nng_stat *id = nng_stat_find(s, "id");
        nng_stat *auth = nng_stat_find(s, "auth");
        if (url == NULL || id == NULL || auth == NULL || !ihc_tls_url(nng_stat_string(url)))
            continue;
        listener_count *c = refusals_slot(r, nng_stat_value(id));
        if (c == NULL)
            continue;
        c->seen = nng_stat_value(auth);
        uint64_t quiet_ns = (uint64_t)r->interval_ms * REFUSALS_QUIET * 1000000ull;
        if (c->seen > c->reported &&
            (final || c->logged_ns == 0 || now - c->logged_ns >= quiet_ns)) {
            ihc_log(IHC_LOG_WARN, r->component,
                    "TLS handshakes refused url=%s count=%llu total=%llu: a client certificate "
                    "missing, expired or not issued by IHC_TLS_CA, a client that does not trust "
                    "this certificate, or a plain tcp:// client (nng 1.5.2 does not say which "
                    "peer)",
                    nng_stat_string(url), (unsigned long long)(c->seen - c->reported),
                    (unsigned long long)c->seen);
            c->reported = c->seen;
            c->logged_ns = now;
        }
    }
    nng_stats_free(all);
}

static void *refusals_main(void *arg)
{
    ihc_tls_refusals *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        struct timespec ts =
            ihc_mono_abstime(ihc_mono_ns() + (uint64_t)r->interval_ms * 1000000ull);
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        bool final = r->stop;
        pthread_mutex_unlock(&r->mu);
        refusals_scan(r, final);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

int ihc_tls_refusals_start(ihc_tls_refusals **out, int interval_ms, const char *component)
{
    *out = NULL;
    ihc_tls_refusals *r = calloc(1, sizeof *r);
    if (r == NULL)
        return IHC_ENOMEM;
    r->interval_ms = interval_ms > 0 ? interval_ms : 1000;
    snprintf(r->component, sizeof r->component, "%s", component ? component : "tls");
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r);
        return IHC_ENOMEM;
    }
    if (ihc_cond_init_mono(&r->cv) != 0) {
        pthread_mutex_destroy(&r->mu);
        free(r);
        return IHC_ENOMEM;
    }
    if (pthread_create(&r->th, NULL, refusals_main, r) != 0) {
        pthread_cond_destroy(&r->cv);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return IHC_ENOMEM;
    }
    *out = r;
    return IHC_OK;
}

void ihc_tls_refusals_stop(ihc_tls_refusals *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->th, NULL);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
