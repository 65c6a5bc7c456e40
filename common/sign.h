/* Message signing: HMAC-SHA256 (mbedTLS) over a MessagePack map, and the bounded replay cache
 * that lets each signed message through once. The wire encoder and decoder call it. */
#ifndef IHC_SIGN_H
#define IHC_SIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Message signing. With a secret, the encoder adds "nonce" and a final "sig" entry
 * (HMAC-SHA256 over the map encoded without "sig"); the decoder refuses messages without a
 * valid sig (IHC_EBADSIG) and those it has seen or that are older than the window
 * (IHC_EREPLAY). An ihc_wire_auth is safe to share between threads. */
typedef struct ihc_wire_auth ihc_wire_auth;

/* Creates an auth context; copies the secret. window_ms bounds accepted clock skew and
 * message age (0 = 30000). Caller owns *out; free with ihc_wire_auth_free. */
int ihc_wire_auth_new(ihc_wire_auth **out, const void *secret, size_t len, uint32_t window_ms);

/* Wipes the secret and frees everything; accepts NULL. */
void ihc_wire_auth_free(ihc_wire_auth *a);

#define IHC_SIG_LEN 32 /* bytes of an HMAC-SHA256 */

/* The signature of a map of n entries whose bytes are entries[0..len): HMAC-SHA256 over the
 * map header for n entries followed by those bytes — exactly what any standard packer writes
 * for the map without "sig". "sig" then goes last, so nothing signed moves when it is
 * appended (only the header's count changes). Errors: IHC_ENOMEM. */
int ihc__sign_map(const ihc_wire_auth *a, uint32_t n, const uint8_t *entries, size_t len,
                  uint8_t mac[IHC_SIG_LEN]);

/* A random nonce for a message about to be signed. Errors: IHC_EINTERNAL (no randomness). */
int ihc__sign_nonce(uint64_t *nonce);

/* A received top-level map as the decoder located it, with the envelope values the replay
 * check needs. Pointers are into the message. */
typedef struct {
    uint32_t n;             /* entries, "sig" included */
    const uint8_t *entries; /* the first entry */
    const uint8_t *end;     /* the end of the message */
    const uint8_t *sig_key; /* where the "sig" entry starts; NULL when there is none */
    const uint8_t *sig;     /* the value of "sig" */
    bool sig_last;          /* "sig" is the last entry */
    bool has_ts_ms;         /* ts_ms present (an integer) */
    bool has_nonce;         /* nonce present (an unsigned integer) */
    int64_t ts_ms;
    uint64_t nonce;
} ihc__signed_map;

/* Lets a signed message through once: a matching signature, ts_ms within the window, a nonce
 * not seen before (recorded only when all else holds). Errors: IHC_EBADSIG (not signed,
 * "sig" not last, not IHC_SIG_LEN bytes of binary, no match), IHC_EREPLAY (no ts_ms or
 * nonce, ts_ms outside the window, nonce seen, replay cache full), IHC_ENOMEM. On error,
 * detail (if not NULL) gets a short text naming the field ("field 'sig': …"). */
int ihc__sign_verify(const ihc_wire_auth *a, const ihc__signed_map *m, char *detail,
                     size_t detail_len);

#endif
