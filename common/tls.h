/* TLS for ihc's nng sockets (tls+tcp://) and the HTTPS API: the certificate, key and CA files
 * of the IHC_TLS_* settings loaded and checked once; nng TLS configurations built from them for
 * dialers and listeners; a probe that says why a TLS connection fails (nng 1.5.2 itself only
 * says "Cryptographic error"); and watchers that log refused handshakes. mbedTLS 2.28 is the
 * library nng's own TLS runs on, so the probe sees what nng's handshake sees. */
#ifndef IHC_TLS_H
#define IHC_TLS_H

#include <nng/nng.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* nng's SP protocol numbers, as sent in its 8-byte connection header (1.5.2's pub0, sub0, push0
 * and pull0 headers do not define them). */
#define IHC_SP_PUB  0x20
#define IHC_SP_SUB  0x21
#define IHC_SP_REQ  0x30
#define IHC_SP_REP  0x31
#define IHC_SP_PUSH 0x50
#define IHC_SP_PULL 0x51

/* The files, as given (paths; NULL: not set). */
typedef struct {
    const char *cert;        /* PEM: this side's certificate (then its chain, if any) */
    const char *key;         /* PEM: its private key, unencrypted */
    const char *ca;          /* PEM: CA certificates trusted to have issued the peer's */
    const char *server_name; /* dialers: name expected in the coordinator's certificate;
                                NULL: the host of each URL */
} ihc_tls_files;

/* How the settings are called in messages ("IHC_TLS_CERT" for the programs, "tls_cert" for
 * the libraries' options). */
typedef struct {
    const char *cert, *key, *ca, *server_name;
} ihc_tls_names;

typedef struct ihc_tls ihc_tls;

/* True when url uses the tls+tcp:// transport. */
bool ihc_tls_url(const char *url);

/* Checks that the settings suit the URLs this side uses: a listener (server) on a tls+tcp://
 * URL needs cert and key; a dialer on one needs ca (to verify the coordinator); cert and key
 * go together; a server's ca (mutual TLS) needs its cert. n URLs, NULL entries skipped. On failure
 * writes into err what is missing, naming the URL and the settings (names NULL: the options'
 * names). */
bool ihc_tls_urls_ok(const ihc_tls_files *f, const ihc_tls_names *names, bool server,
                     const char *const *urls, size_t n, char *err, size_t err_len);

/* Reads and checks the files: readable, PEM, the key parses (unencrypted) and matches the
 * certificate, the CA file holds certificates. Problems that do not stop a connection by
 * themselves (a certificate expired or not yet valid — the peer decides; a CA file without a
 * CA certificate) go into warn (may be NULL; "" when none). Errors: IHC_ECONFIG (err names the
 * setting, the file and the problem), IHC_ENOMEM. Caller owns *out: ihc_tls_free. */
int ihc_tls_load(ihc_tls **out, const ihc_tls_files *f, const ihc_tls_names *names, char *err,
                 size_t err_len, char *warn, size_t warn_len);

/* Frees t (the key's bytes are wiped). Accepts NULL. */
void ihc_tls_free(ihc_tls *t);

/* The PEM texts loaded (NUL-terminated; NULL when that file was not given), valid while t
 * lives: for libmicrohttpd's HTTPS. */
const char *ihc_tls_cert_pem(const ihc_tls *t);
const char *ihc_tls_key_pem(const ihc_tls *t);
const char *ihc_tls_ca_pem(const ihc_tls *t);

/* A short description of this side's certificate ("CN=agent-1, expires 2027-01-31"), or
 * "no certificate". */
const char *ihc_tls_describe(const ihc_tls *t);

/* Creates and starts a dialer on s for url with flags as nng_dial. A tls+tcp:// URL gets t's
 * client configuration: the peer's certificate verified against the CA, its name against
 * server_name or the URL's host, and this side's certificate sent when there is one. Other
 * URLs are dialed as they are. Returns an nng error code (NNG_EINVAL for a tls+tcp:// URL
 * without t). dp may be NULL; *dp is set before the dialer starts, so that a pipe callback
 * running before this returns can recognise the dialer. */
int ihc_tls_dial(nng_socket s, const char *url, const ihc_tls *t, nng_dialer *dp, int flags);

/* Creates and starts a listener on s for url. A tls+tcp:// URL gets t's server configuration:
 * its certificate, and, when t has a CA, client certificates required and verified against it
 * (mutual TLS). Returns an nng error code. lp may be NULL. */
int ihc_tls_listen(nng_socket s, const char *url, const ihc_tls *t, nng_listener *lp);

/* True when the coordinator requires client certificates (t has a CA). */
bool ihc_tls_mutual(const ihc_tls *t);

/* Connects to url's host and port as a client of t, runs a TLS handshake with the same checks
 * as ihc_tls_dial, then exchanges nng's 8-byte SP headers as protocol sp_self (so the listener
 * sees a whole connection, not one dropped mid-handshake) and checks the peer speaks sp_peer.
 * Bounded by timeout_ms. Returns IHC_OK when all of it works, IHC_ENOTCONN when no TCP
 * connection could be made, IHC_ETRANSPORT when TLS or the SP exchange failed; why receives
 * what was found, most specific first: the certificate that failed verification with its
 * subject, issuer, validity and mbedTLS's reasons; the TLS alert the coordinator sent when it
 * refused this side's certificate; a peer that does not speak TLS. */
int ihc_tls_probe(const ihc_tls *t, const char *url, uint16_t sp_self, uint16_t sp_peer,
                  int timeout_ms, char *why, size_t why_len);

/* ---- watchers (threads that only read and log) ---- */

/* One connection a dialer keeps up, for ihc_tls_doctor. */
typedef struct {
    const char *name; /* in log lines: "pub", "report" */
    const char *url;  /* copied */
    uint16_t sp_self, sp_peer;
} ihc_tls_link;

/* Whether link i is connected now (any thread; must not block). */
typedef bool (*ihc_tls_link_up_fn)(void *arg, size_t i);

typedef struct ihc_tls_doctor ihc_tls_doctor;

/* Starts a thread that watches n links of a dialing side (tls+tcp:// ones; others are left
 * alone): while one stays down it probes it (ihc_tls_probe; after 1 s down, then backing off
 * to once a minute) and logs at WARN under component what it found whenever that changes, and
 * once a minute while it lasts; nng keeps redialing meanwhile. t must outlive the doctor and
 * up(arg, i) must work until ihc_tls_doctor_stop returns. Errors: IHC_ENOMEM. Caller owns
 * *out. */
int ihc_tls_doctor_start(ihc_tls_doctor **out, const ihc_tls *t, const ihc_tls_link *links,
                         size_t n, ihc_tls_link_up_fn up, void *arg, const char *component);

/* Stops and frees the doctor (a probe in progress ends within its timeout). Accepts NULL. */
void ihc_tls_doctor_stop(ihc_tls_doctor *d);

typedef struct ihc_tls_refusals ihc_tls_refusals;

/* Starts a thread that, every interval_ms, reads nng's statistics of this process's tls+tcp://
 * listeners and logs at WARN under component how many handshakes each refused since the last
 * line (the first refusal at once, then at most one line per listener every 10 intervals) (nng
 * counts them as "auth" errors: a client certificate missing, expired or from another CA, a client
 * that does not trust this certificate, a plain tcp:// client). nng 1.5.2 does not tell which peer
 * or why. Errors: IHC_ENOMEM. Caller owns *out. */
int ihc_tls_refusals_start(ihc_tls_refusals **out, int interval_ms, const char *component);

/* Stops and frees it. Accepts NULL. */
void ihc_tls_refusals_stop(ihc_tls_refusals *r);

#endif
