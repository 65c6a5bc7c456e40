/* Message signing: HMAC-SHA256 over the map without "sig", the time window, and a bounded
 * cache of the nonces seen so that each signed message is accepted once. */
#include "sign.h"

#include "clock.h"
#include "err.h"
#include "pack.h"

#include <errno.h>
#include <mbedtls/md.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define RC_NIL         UINT32_MAX
#define RC_INITIAL_CAP 1024u
#define RC_MAX_CAP     (1u << 21) /* ~2M nonces (at most ~64 MB): ~17k signed msgs/s at a 60 s span */

typedef struct {
    uint64_t nonce;
    int64_t expire_ms; /* monotonic */
    uint32_t next;     /* next entry in the same bucket */
} rc_entry;

struct ihc_wire_auth {
    unsigned char *key;
    size_t key_len;
    uint32_t window_ms;
    const mbedtls_md_info_t *md;
    pthread_mutex_t mu;
    /* Nonces seen, in arrival order (a ring), indexed by a chained hash table. An entry
     * lives 2 × window after arrival: by then the message's ts_ms is outside the window and
     * the staleness check rejects any replay on its own. */
    rc_entry *ring;
    uint32_t cap, head, count;
    uint32_t *bucket; /* 2 × cap buckets */
};

static void set_detail(char *detail, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_detail(char *detail, size_t len, const char *fmt, ...)
{
    if (detail == NULL || len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, len, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------------------------
 * Auth context
 * ---------------------------------------------------------------------------------------- */

int ihc_wire_auth_new(ihc_wire_auth **out, const void *secret, size_t len, uint32_t window_ms)
{
    if (out == NULL)
        return IHC_EINVAL;
    *out = NULL;
    if (secret == NULL || len == 0)
        return IHC_EINVAL;
    ihc_wire_auth *a = calloc(1, sizeof *a);
    if (a == NULL)
        return IHC_ENOMEM;
    a->md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    a->key = malloc(len);
    a->cap = RC_INITIAL_CAP;
    a->ring = malloc(a->cap * sizeof *a->ring);
    a->bucket = malloc(2 * a->cap * sizeof *a->bucket);
    if (a->md == NULL || a->key == NULL || a->ring == NULL || a->bucket == NULL) {
        int rc = a->md == NULL ? IHC_EINTERNAL : IHC_ENOMEM;
        free(a->key);
        free(a->ring);
        free(a->bucket);
        free(a);
        return rc;
    }
    memcpy(a->key, secret, len);
    a->key_len = len;
    a->window_ms = window_ms ? window_ms : 30000;
    for (uint32_t i = 0; i < 2 * a->cap; i++)
        a->bucket[i] = RC_NIL;
    pthread_mutex_init(&a->mu, NULL);
    *out = a;
    return IHC_OK;
}

void ihc_wire_auth_free(ihc_wire_auth *a)
{
    if (a == NULL)
        return;
    pthread_mutex_destroy(&a->mu);
    if (a->key != NULL) {
        volatile unsigned char *k = a->key;
        for (size_t i = 0; i < a->key_len; i++)
            k[i] = 0;
        free(a->key);
    }
    free(a->ring);
    free(a->bucket);
    free(a);
}

/* ------------------------------------------------------------------------------------------
 * Signatures
 * ---------------------------------------------------------------------------------------- */

int ihc__sign_map(const ihc_wire_auth *a, uint32_t n, const uint8_t *entries, size_t len,
                  uint8_t mac[IHC_SIG_LEN])
{
    uint8_t h[5];
    size_t hn = ihc__mp_map_header(h, n);
    mbedtls_md_context_t ctx;
    mbedtls_md_init(&ctx);
    int bad = mbedtls_md_setup(&ctx, a->md, 1) ||
              mbedtls_md_hmac_starts(&ctx, a->key, a->key_len) ||
              mbedtls_md_hmac_update(&ctx, h, hn) ||
              (len > 0 && mbedtls_md_hmac_update(&ctx, entries, len)) ||
              mbedtls_md_hmac_finish(&ctx, mac);
    mbedtls_md_free(&ctx);
    return bad ? IHC_ENOMEM : IHC_OK;
}

int ihc__sign_nonce(uint64_t *nonce)
{
    ssize_t got;
    while ((got = getrandom(nonce, sizeof *nonce, 0)) < 0 && errno == EINTR)
        ;
    return got == (ssize_t)sizeof *nonce ? IHC_OK : IHC_EINTERNAL;
}

static bool ct_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    volatile uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= a[i] ^ b[i];
    return d == 0;
}

/* The "sig" entry is present, last, 32 bytes of binary, and matches the entries before it. */
static int check_sig(const ihc_wire_auth *a, const ihc__signed_map *m, char *detail, size_t dlen)
{
    if (m->sig == NULL) {
        set_detail(detail, dlen, "field 'sig': message is not signed");
        return IHC_EBADSIG;
    }
    if (!m->sig_last) {
        set_detail(detail, dlen, "field 'sig': must be the last entry");
        return IHC_EBADSIG;
    }
    ihc__mp_reader r = {m->sig, m->end, NULL};
    ihc__mp_obj o = {0};
    if (ihc__mp_read(&r, &o) != 0 || o.kind != IHC__MP_BIN || o.n != IHC_SIG_LEN) {
        set_detail(detail, dlen, "field 'sig': expected %d bytes of binary", IHC_SIG_LEN);
        return IHC_EBADSIG;
    }
    uint8_t mac[IHC_SIG_LEN];
    int rc = ihc__sign_map(a, m->n - 1, m->entries, (size_t)(m->sig_key - m->entries), mac);
    if (rc)
        return rc;
    if (!ct_equal(mac, o.s, IHC_SIG_LEN)) {
        set_detail(detail, dlen, "field 'sig': signature does not match");
        return IHC_EBADSIG;
    }
    return IHC_OK;
}

/* ------------------------------------------------------------------------------------------
 * Replay cache
 * ---------------------------------------------------------------------------------------- */

static inline uint32_t rc_hash(uint64_t x, uint32_t nbucket)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return (uint32_t)x & (nbucket - 1);
}

static void rc_unlink(ihc_wire_auth *a, uint32_t idx)
{
    uint32_t *pp = &a->bucket[rc_hash(a->ring[idx].nonce, 2 * a->cap)];
    while (*pp != idx)
        pp = &a->ring[*pp].next;
    *pp = a->ring[idx].next;
}

static int rc_grow(ihc_wire_auth *a)
{
    uint32_t cap = a->cap * 2;
    rc_entry *ring = malloc(cap * sizeof *ring);
    uint32_t *bucket = malloc(2 * (size_t)cap * sizeof *bucket);
    if (ring == NULL || bucket == NULL) {
        free(ring);
        free(bucket);
        return IHC_ENOMEM;
    }
    for (uint32_t i = 0; i < 2 * cap; i++)
        bucket[i] = RC_NIL;
    for (uint32_t i = 0; i < a->count; i++) {
        ring[i] = a->ring[(a->head + i) & (a->cap - 1)];
        uint32_t h = rc_hash(ring[i].nonce, 2 * cap);
        ring[i].next = bucket[h];
        bucket[h] = i;
    }
    free(a->ring);
    free(a->bucket);
    a->ring = ring;
    a->bucket = bucket;
    a->cap = cap;
    a->head = 0;
    return IHC_OK;
}

/* Records nonce; IHC_EREPLAY when it was seen within its lifetime or the cache is full. */
static int rc_check(ihc_wire_auth *a, uint64_t nonce, const char **why)
{
    int rc = IHC_OK;
    pthread_mutex_lock(&a->mu);
    int64_t now = (int64_t)(ihc_mono_ns() / 1000000u);
    while (a->count > 0 && a->ring[a->head].expire_ms <= now) {
        rc_unlink(a, a->head);
        a->head = (a->head + 1) & (a->cap - 1);
        a->count--;
    }
    uint32_t h = rc_hash(nonce, 2 * a->cap);
    for (uint32_t i = a->bucket[h]; i != RC_NIL; i = a->ring[i].next) {
        if (a->ring[i].nonce == nonce) {
            *why = "nonce already seen";
            rc = IHC_EREPLAY;
            goto out;
        }
    }
    if (a->count == a->cap) {
        if (a->cap >= RC_MAX_CAP) {
            *why = "replay cache full";
            rc = IHC_EREPLAY;
            goto out;
        }
        if ((rc = rc_grow(a)) != 0) {
            *why = "out of memory";
            goto out;
        }
        h = rc_hash(nonce, 2 * a->cap);
    }
    uint32_t idx = (a->head + a->count) & (a->cap - 1);
    a->ring[idx].nonce = nonce;
    /* The margin covers the difference between the wall clock of the window check and the
     * monotonic clock of expiry. */
    int64_t margin = a->window_ms < 1000 ? a->window_ms : 1000;
    a->ring[idx].expire_ms = now + 2 * (int64_t)a->window_ms + margin;
    a->ring[idx].next = a->bucket[h];
    a->bucket[h] = idx;
    a->count++;
out:
    pthread_mutex_unlock(&a->mu);
    return rc;
}

/* ts_ms within the window and a nonce not seen before (then recorded). */
static int check_fresh(ihc_wire_auth *a, const ihc__signed_map *m, char *detail, size_t dlen)
{
    if (!m->has_ts_ms || !m->has_nonce) {
        set_detail(detail, dlen, "field '%s': signed messages need it",
                   m->has_ts_ms ? "nonce" : "ts_ms");
        return IHC_EREPLAY;
    }
    int64_t now = ihc_now_ms();
    if (m->ts_ms < now - (int64_t)a->window_ms || m->ts_ms > now + (int64_t)a->window_ms) {
        set_detail(detail, dlen, "field 'ts_ms': outside the %u ms window", a->window_ms);
        return IHC_EREPLAY;
    }
    const char *why = NULL;
    int rc = rc_check(a, m->nonce, &why);
    if (rc)
        set_detail(detail, dlen, "field 'nonce': %s", why);
    return rc;
}

int ihc__sign_verify(const ihc_wire_auth *a, const ihc__signed_map *m, char *detail,
                     size_t detail_len)
{
    int rc = check_sig(a, m, detail, detail_len);
    if (rc)
        return rc;
    /* The replay cache is behind a->mu: a shared auth context is safe to use. */
    return check_fresh((ihc_wire_auth *)(uintptr_t)a, m, detail, detail_len);
}
