/* Unit tests of common/sign: HMAC-SHA256 signatures (also made by another MessagePack
 * implementation), tampering, the time window and the replay cache, alone and shared by
 * threads. */
#include "harness.h"

#include "clock.h"
#include "err.h"
#include "pack.h"
#include "sign.h"
#include "wire.h"

#include <mbedtls/md.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *fx_agents[] = {"n1:42", "node-b:7", "h:1"};

/* An interrupt stamped now (ts_ms 0), with a reason to edit. */
static void make_interrupt(ihc_msg *m)
{
    memset(m, 0, sizeof *m);
    m->type = IHC_MSG_INTERRUPT;
    m->u.interrupt =
        (ihc_interrupt_msg){17, "dev-1", 4, "user stop", ihc_now_ms() + 5000, fx_agents, 3, 2, 9};
}

static void make_heartbeat(ihc_msg *m)
{
    memset(m, 0, sizeof *m);
    m->type = IHC_MSG_HEARTBEAT;
    m->u.heartbeat.agent = "a:1";
}

static void enc(const ihc_msg *m, const ihc_wire_auth *auth, uint8_t **buf, size_t *len)
{
    TH_PASS(ihc_wire_encode(m, auth, buf, len));
    assert_non_null(*buf);
}

static ihc_msg *dec_ok(const uint8_t *buf, size_t len, const ihc_wire_auth *auth)
{
    ihc_msg *m = NULL;
    char detail[256];
    int rc = ihc_wire_decode(buf, len, auth, &m, detail, sizeof detail);
    if (rc != IHC_OK)
        fail_msg("decode: %s (%s): %s", ihc_err_name(rc), ihc_strerror(rc), detail);
    assert_non_null(m);
    return m;
}

/* Decodes and expects rc; returns the detail text in a static buffer. */
static const char *dec_fail(const uint8_t *buf, size_t len, const ihc_wire_auth *auth, int want)
{
    static char detail[256];
    ihc_msg *m = (ihc_msg *)(uintptr_t)1;
    int rc = ihc_wire_decode(buf, len, auth, &m, detail, sizeof detail);
    if (rc != want)
        fail_msg("decode: got %s, want %s (%s)", ihc_err_name(rc), ihc_err_name(want), detail);
    assert_null(m);
    assert_true(detail[0] != '\0');
    return detail;
}

static msgpack_object mo_uint(uint64_t v)
{
    msgpack_object o = {.type = MSGPACK_OBJECT_POSITIVE_INTEGER};
    o.via.u64 = v;
    return o;
}

static msgpack_object mo_int(int64_t v)
{
    msgpack_object o = {.type = MSGPACK_OBJECT_NEGATIVE_INTEGER};
    o.via.i64 = v;
    return o;
}

static msgpack_object mo_str(const char *s, size_t n)
{
    msgpack_object o = {.type = MSGPACK_OBJECT_STR};
    o.via.str.ptr = s;
    o.via.str.size = (uint32_t)n;
    return o;
}

static ihc_wire_auth *auth_new(const char *secret, uint32_t window)
{
    ihc_wire_auth *a = NULL;
    TH_PASS(ihc_wire_auth_new(&a, secret, strlen(secret), window));
    assert_non_null(a);
    return a;
}

static void test_sign_auth_args(void **state)
{
    (void)state;
    ihc_wire_auth *a = (ihc_wire_auth *)1;
    TH_FAIL(ihc_wire_auth_new(&a, "k", 0, 0), IHC_EINVAL);
    assert_null(a);
    TH_FAIL(ihc_wire_auth_new(&a, NULL, 3, 0), IHC_EINVAL);
    TH_FAIL(ihc_wire_auth_new(NULL, "k", 1, 0), IHC_EINVAL);
    ihc_wire_auth_free(NULL);
}

/* A signed interrupt: every flipped byte is refused, a text edit is EBADSIG, unsigned and
 * stale or future messages are refused; framing keeps the signature valid. */
static void test_sign_tamper(void **state)
{
    (void)state;
    ihc_wire_auth *a = auth_new("s3cret", 0);
    /* Every single flipped byte is refused. */
    ihc_msg m;
    uint8_t *b;
    size_t n;
    make_interrupt(&m);
    enc(&m, a, &b, &n);
    for (size_t i = 0; i < n; i++) {
        b[i] ^= 0x01;
        ihc_msg *d = (ihc_msg *)(uintptr_t)1;
        int rc = ihc_wire_decode(b, n, a, &d, NULL, 0);
        if (rc == IHC_OK)
            fail_msg("flipped byte %zu of %zu accepted", i, n);
        assert_null(d);
        b[i] ^= 0x01;
    }
    /* A flip inside the reason text leaves a well-formed message: exactly EBADSIG. */
    uint8_t *r = memmem(b, n, "user stop", 9);
    assert_non_null(r);
    r[0] = 'U';
    dec_fail(b, n, a, IHC_EBADSIG);
    r[0] = 'u';
    /* Unflipped, it is still fresh: none of the attempts above consumed its nonce. */
    ihc_msg_free(dec_ok(b, n, a));
    free(b);

    /* Unsigned message with auth set. */
    enc(&m, NULL, &b, &n);
    assert_string_equal(dec_fail(b, n, a, IHC_EBADSIG), "field 'sig': message is not signed");
    free(b);

    /* Stale and future timestamps. */
    m.ts_ms = ihc_now_ms() - 31000;
    enc(&m, a, &b, &n);
    dec_fail(b, n, a, IHC_EREPLAY);
    free(b);
    m.ts_ms = ihc_now_ms() + 31000;
    enc(&m, a, &b, &n);
    dec_fail(b, n, a, IHC_EREPLAY);
    free(b);
    m.ts_ms = ihc_now_ms() - 29000;
    enc(&m, a, &b, &n);
    ihc_msg_free(dec_ok(b, n, a));
    free(b);

    /* A framed, signed interrupt. */
    m.ts_ms = 0;
    TH_PASS(ihc_wire_encode_framed(&m, a, &b, &n));
    const uint8_t *body;
    size_t bl;
    TH_PASS(ihc_wire_split(b, n, NULL, NULL, &body, &bl));
    ihc_msg_free(dec_ok(body, bl, a));
    free(b);

    ihc_wire_auth_free(a);
}

static void test_sign_window(void **state)
{
    (void)state;
    ihc_wire_auth *a = auth_new("k", 10000); /* wide: a loaded machine may stall us */
    ihc_msg m;
    uint8_t *b;
    size_t n;
    make_heartbeat(&m);
    m.ts_ms = ihc_now_ms() - 20000;
    enc(&m, a, &b, &n);
    dec_fail(b, n, a, IHC_EREPLAY);
    free(b);
    m.ts_ms = 0;
    enc(&m, a, &b, &n);
    ihc_msg_free(dec_ok(b, n, a));
    free(b);
    ihc_wire_auth_free(a);
}

static void hmac(const char *key, const void *p, size_t n, uint8_t out[32])
{
    assert_int_equal(mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256),
                                     (const unsigned char *)key, strlen(key), p, n, out),
                     0);
}

/* The documented scheme with another MessagePack implementation: pack the map without "sig"
 * with a standard packer, HMAC those bytes, re-pack with "sig" appended. Also with a
 * map16 header (more than 15 entries after the signature is appended). */
static void test_sign_interop(void **state)
{
    (void)state;
    const char *key = "interop-key";
    ihc_wire_auth *a = auth_new(key, 0);
    static const int extras[] = {0, 14, 70000}; /* fixmap, map16, map32 headers */
    for (size_t e = 0; e < sizeof extras / sizeof extras[0]; e++) {
        int extra = extras[e];
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        uint32_t n = 6 + (uint32_t)extra;
#define PSTR(s) (msgpack_pack_str(&pk, strlen(s)), msgpack_pack_str_body(&pk, s, strlen(s)))
        msgpack_pack_map(&pk, n);
        PSTR("v");
        msgpack_pack_int(&pk, 1);
        PSTR("type");
        PSTR("heartbeat");
        PSTR("ts_ms");
        msgpack_pack_int64(&pk, ihc_now_ms());
        PSTR("nonce");
        msgpack_pack_uint64(&pk, 0x1234567890abcdefull + (uint64_t)extra);
        PSTR("agent");
        PSTR("py:1");
        PSTR("sessions");
        msgpack_pack_int(&pk, 3);
        for (int i = 0; i < extra; i++) {
            char k[12];
            snprintf(k, sizeof k, "x%d", i);
            PSTR(k);
            msgpack_pack_nil(&pk);
        }
        uint8_t mac[32];
        hmac(key, sb.data, sb.size, mac);
        /* Same entries, header for n + 1, then sig. */
        msgpack_sbuffer s2;
        msgpack_packer p2;
        msgpack_sbuffer_init(&s2);
        msgpack_packer_init(&p2, &s2, msgpack_sbuffer_write);
        msgpack_pack_map(&p2, n + 1);
        size_t old_hdr = n <= 15 ? 1 : n <= 0xffff ? 3 : 5;
        msgpack_sbuffer_write(&s2, sb.data + old_hdr, sb.size - old_hdr);
        msgpack_pack_str(&p2, 3);
        msgpack_pack_str_body(&p2, "sig", 3);
        msgpack_pack_bin(&p2, 32);
        msgpack_pack_bin_body(&p2, mac, 32);
        ihc_msg *m = dec_ok((uint8_t *)s2.data, s2.size, a);
        assert_string_equal(m->u.heartbeat.agent, "py:1");
        assert_int_equal(m->u.heartbeat.n_sessions, 3);
        ihc_msg_free(m);
        /* sig not last → refused. */
        msgpack_sbuffer s3;
        msgpack_packer p3;
        msgpack_sbuffer_init(&s3);
        msgpack_packer_init(&p3, &s3, msgpack_sbuffer_write);
        msgpack_pack_map(&p3, n + 2);
        msgpack_sbuffer_write(&s3, sb.data + old_hdr, sb.size - old_hdr);
        msgpack_pack_str(&p3, 3);
        msgpack_pack_str_body(&p3, "sig", 3);
        msgpack_pack_bin(&p3, 32);
        msgpack_pack_bin_body(&p3, mac, 32);
        msgpack_pack_str(&p3, 2);
        msgpack_pack_str_body(&p3, "zz", 2);
        msgpack_pack_nil(&p3);
        const char *det = dec_fail((uint8_t *)s3.data, s3.size, a, IHC_EBADSIG);
        assert_string_equal(det, "field 'sig': must be the last entry");
        /* A sig of the wrong size. */
        msgpack_sbuffer_clear(&s3);
        msgpack_pack_map(&p3, n + 1);
        msgpack_sbuffer_write(&s3, sb.data + old_hdr, sb.size - old_hdr);
        msgpack_pack_str(&p3, 3);
        msgpack_pack_str_body(&p3, "sig", 3);
        msgpack_pack_bin(&p3, 31);
        msgpack_pack_bin_body(&p3, mac, 31);
        dec_fail((uint8_t *)s3.data, s3.size, a, IHC_EBADSIG);
        msgpack_sbuffer_destroy(&s3);
        msgpack_sbuffer_destroy(&s2);
        msgpack_sbuffer_destroy(&sb);
#undef PSTR
    }
    ihc_wire_auth_free(a);
}

/* Signs the map given as (key, value) pairs the documented way; caller destroys out. */
static void sign_pairs(const char *key, const msgpack_object_kv *kv, uint32_t n,
                       msgpack_sbuffer *out)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, n);
    for (uint32_t i = 0; i < n; i++) {
        msgpack_pack_object(&pk, kv[i].key);
        msgpack_pack_object(&pk, kv[i].val);
    }
    uint8_t mac[32];
    hmac(key, sb.data, sb.size, mac);
    msgpack_sbuffer_init(out);
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, n + 1);
    msgpack_sbuffer_write(out, sb.data + 1, sb.size - 1); /* n < 15: fixmap */
    msgpack_pack_str(&pk, 3);
    msgpack_pack_str_body(&pk, "sig", 3);
    msgpack_pack_bin(&pk, 32);
    msgpack_pack_bin_body(&pk, mac, 32);
    msgpack_sbuffer_destroy(&sb);
}

/* Correctly signed messages without ts_ms or nonce cannot be checked for replay. */
static void test_sign_envelope(void **state)
{
    (void)state;
    ihc_wire_auth *a = auth_new("k", 0);
    msgpack_object_kv kv[] = {
        {mo_str("v", 1), mo_uint(1)},
        {mo_str("type", 4), mo_str("heartbeat", 9)},
        {mo_str("agent", 5), mo_str("a:1", 3)},
        {mo_str("ts_ms", 5), mo_uint((uint64_t)ihc_now_ms())},
        {mo_str("nonce", 5), mo_uint(99)},
    };
    msgpack_sbuffer sb;
    sign_pairs("k", kv, 4, &sb); /* no nonce */
    assert_string_equal(dec_fail((uint8_t *)sb.data, sb.size, a, IHC_EREPLAY),
                        "field 'nonce': signed messages need it");
    msgpack_sbuffer_destroy(&sb);
    kv[3] = kv[4];
    sign_pairs("k", kv, 4, &sb); /* no ts_ms */
    assert_string_equal(dec_fail((uint8_t *)sb.data, sb.size, a, IHC_EREPLAY),
                        "field 'ts_ms': signed messages need it");
    msgpack_sbuffer_destroy(&sb);
    kv[3] = (msgpack_object_kv){mo_str("ts_ms", 5), mo_uint((uint64_t)ihc_now_ms())};
    kv[4].val = mo_int(-99);
    sign_pairs("k", kv, 5, &sb); /* negative nonce */
    dec_fail((uint8_t *)sb.data, sb.size, a, IHC_EREPLAY);
    msgpack_sbuffer_destroy(&sb);
    kv[4].val = mo_uint(99);
    sign_pairs("k", kv, 5, &sb);
    ihc_msg *m = dec_ok((uint8_t *)sb.data, sb.size, a);
    assert_int_equal(m->nonce, 99);
    ihc_msg_free(m);
    msgpack_sbuffer_destroy(&sb);
    ihc_wire_auth_free(a);
}

/* With a short window, nonces expire from the cache while new ones arrive; the ones still
 * inside the window stay found. */
static void test_sign_replay_expiry(void **state)
{
    (void)state;
    ihc_wire_auth *a = auth_new("k", 40); /* entries live 2 x 40 + 40 ms */
    ihc_msg m;
    make_heartbeat(&m);
    m.ts_ms = 0;
    uint8_t *prev = NULL;
    size_t prev_n = 0;
    int fresh = 0;
    uint64_t end = ihc_mono_ns() + 400u * 1000000u;
    while (ihc_mono_ns() < end) {
        uint8_t *b;
        size_t n;
        uint64_t t0 = ihc_mono_ns();
        enc(&m, a, &b, &n);
        ihc_msg *d = NULL;
        char det[128];
        int rc = ihc_wire_decode(b, n, a, &d, det, sizeof det);
        ihc_msg_free(d);
        /* A fresh message passes unless this thread was stalled past the window between
         * encoding and decoding (a loaded machine): then it is stale, and refused as such. */
        if (rc == IHC_OK)
            fresh++;
        else if (rc != IHC_EREPLAY || ihc_mono_ns() - t0 < 20u * 1000000u)
            fail_msg("fresh message refused: %s: %s", ihc_err_name(rc), det);
        if (prev != NULL) { /* seen before, or by now older than the window: never accepted */
            rc = ihc_wire_decode(prev, prev_n, a, &d, det, sizeof det);
            assert_int_equal(rc, IHC_EREPLAY);
            free(prev);
        }
        prev = b;
        prev_n = n;
    }
    free(prev);
    assert_true(fresh > 10);
    ihc_wire_auth_free(a);
}

/* The replay cache grows past its initial size and still remembers every nonce. */
static void test_sign_replay_cache(void **state)
{
    (void)state;
    ihc_wire_auth *a = auth_new("k", 0);
    enum { N = 5000 };
    uint8_t **bufs = calloc(N, sizeof *bufs);
    size_t *lens = calloc(N, sizeof *lens);
    assert_non_null(bufs);
    assert_non_null(lens);
    ihc_msg m;
    make_heartbeat(&m);
    m.ts_ms = 0;
    for (int i = 0; i < N; i++) {
        enc(&m, a, &bufs[i], &lens[i]);
        ihc_msg_free(dec_ok(bufs[i], lens[i], a));
    }
    for (int i = 0; i < N; i += 97)
        dec_fail(bufs[i], lens[i], a, IHC_EREPLAY);
    dec_fail(bufs[N - 1], lens[N - 1], a, IHC_EREPLAY);
    for (int i = 0; i < N; i++)
        free(bufs[i]);
    free(bufs);
    free(lens);
    ihc_wire_auth_free(a);
}

typedef struct {
    ihc_wire_auth *auth;
    const uint8_t *shared;
    size_t shared_len;
    int shared_ok;
    int own_ok;
} race_arg;

static void *race_thread(void *p)
{
    race_arg *r = p;
    ihc_msg m;
    make_heartbeat(&m);
    m.ts_ms = 0;
    for (int i = 0; i < 500; i++) {
        uint8_t *b;
        size_t n;
        if (ihc_wire_encode(&m, r->auth, &b, &n) != IHC_OK)
            continue;
        ihc_msg *d;
        if (ihc_wire_decode(b, n, r->auth, &d, NULL, 0) == IHC_OK) {
            r->own_ok++;
            ihc_msg_free(d);
        }
        free(b);
        if (ihc_wire_decode(r->shared, r->shared_len, r->auth, &d, NULL, 0) == IHC_OK) {
            r->shared_ok++;
            ihc_msg_free(d);
        }
    }
    return NULL;
}

/* Threads sharing one auth: each own message is accepted once, the shared one exactly once. */
static void test_sign_auth_threads(void **state)
{
    (void)state;
    ihc_wire_auth *a = auth_new("k", 0);
    ihc_msg m;
    uint8_t *b;
    size_t n;
    make_heartbeat(&m);
    m.ts_ms = 0;
    enc(&m, a, &b, &n);
    enum { T = 4 };
    pthread_t th[T];
    race_arg args[T];
    for (int i = 0; i < T; i++) {
        args[i] = (race_arg){a, b, n, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, race_thread, &args[i]), 0);
    }
    int shared = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].own_ok, 500);
        shared += args[i].shared_ok;
    }
    assert_int_equal(shared, 1);
    free(b);
    ihc_wire_auth_free(a);
}

/* ihc__sign_map signs the map header for n entries followed by the entries: the same MAC as
 * an HMAC over what msgpack-c packs for the whole map. */
static void test_sign_map(void **state)
{
    (void)state;
    ihc_wire_auth *a = auth_new("map-key", 0);
    static const uint32_t ns[] = {0, 1, 15, 16, 40};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        msgpack_sbuffer whole, entries;
        msgpack_packer pw, pe;
        msgpack_sbuffer_init(&whole);
        msgpack_sbuffer_init(&entries);
        msgpack_packer_init(&pw, &whole, msgpack_sbuffer_write);
        msgpack_packer_init(&pe, &entries, msgpack_sbuffer_write);
        msgpack_pack_map(&pw, ns[t]);
        for (uint32_t i = 0; i < ns[t]; i++) {
            char k[8];
            int kl = snprintf(k, sizeof k, "k%u", i);
            msgpack_packer *both[] = {&pw, &pe};
            for (int j = 0; j < 2; j++) {
                msgpack_pack_str_with_body(both[j], k, (size_t)kl);
                msgpack_pack_uint64(both[j], 1000u * i);
            }
        }
        uint8_t want[IHC_SIG_LEN], got[IHC_SIG_LEN];
        hmac("map-key", whole.data, whole.size, want);
        TH_PASS(ihc__sign_map(a, ns[t], (const uint8_t *)entries.data, entries.size, got));
        assert_memory_equal(got, want, IHC_SIG_LEN);
        msgpack_sbuffer_destroy(&whole);
        msgpack_sbuffer_destroy(&entries);
    }
    ihc_wire_auth_free(a);
}

/* ihc__sign_verify on a map laid out by hand: each refusal names its field. */
static void test_sign_verify_details(void **state)
{
    (void)state;
    ihc_wire_auth *a = auth_new("k", 0);
    int64_t now = ihc_now_ms();
    uint8_t buf[128];
    ihc__wbuf w;
    ihc__wbuf_init(&w, sizeof buf);
    msgpack_pack_str_with_body(&w.pk, "ts_ms", 5);
    msgpack_pack_int64(&w.pk, now);
    msgpack_pack_str_with_body(&w.pk, "nonce", 5);
    msgpack_pack_uint64(&w.pk, 42);
    size_t entries_len = w.len;
    uint8_t mac[IHC_SIG_LEN];
    TH_PASS(ihc__sign_map(a, 2, w.b, entries_len, mac));
    msgpack_pack_str_with_body(&w.pk, "sig", 3);
    size_t sig_at = w.len;
    msgpack_pack_bin_with_body(&w.pk, mac, IHC_SIG_LEN);
    TH_PASS(w.err);
    memcpy(buf, w.b, w.len);
    const ihc__signed_map good = {
        .n = 3,
        .entries = buf,
        .end = buf + w.len,
        .sig_key = buf + entries_len,
        .sig = buf + sig_at,
        .sig_last = true,
        .has_ts_ms = true,
        .has_nonce = true,
        .ts_ms = now,
        .nonce = 42,
    };
    ihc__wbuf_fini(&w);

    char d[128];
    ihc__signed_map m = good;
    m.sig = NULL;
    TH_FAIL(ihc__sign_verify(a, &m, d, sizeof d), IHC_EBADSIG);
    assert_string_equal(d, "field 'sig': message is not signed");
    m = good;
    m.sig_last = false;
    TH_FAIL(ihc__sign_verify(a, &m, d, sizeof d), IHC_EBADSIG);
    assert_string_equal(d, "field 'sig': must be the last entry");
    m = good;
    m.sig = buf; /* the string "ts_ms" */
    TH_FAIL(ihc__sign_verify(a, &m, d, sizeof d), IHC_EBADSIG);
    assert_string_equal(d, "field 'sig': expected 32 bytes of binary");
    m = good;
    m.n = 4; /* the MAC covers the header's count */
    TH_FAIL(ihc__sign_verify(a, &m, d, sizeof d), IHC_EBADSIG);
    assert_string_equal(d, "field 'sig': signature does not match");
    m = good;
    m.has_nonce = false;
    TH_FAIL(ihc__sign_verify(a, &m, d, sizeof d), IHC_EREPLAY);
    assert_string_equal(d, "field 'nonce': signed messages need it");
    m = good;
    m.has_ts_ms = false;
    TH_FAIL(ihc__sign_verify(a, &m, d, sizeof d), IHC_EREPLAY);
    assert_string_equal(d, "field 'ts_ms': signed messages need it");
    m = good;
    m.ts_ms = now - 60000;
    TH_FAIL(ihc__sign_verify(a, &m, d, sizeof d), IHC_EREPLAY);
    assert_string_equal(d, "field 'ts_ms': outside the 30000 ms window");
    /* None of the refusals recorded the nonce: the good one passes once. */
    TH_PASS(ihc__sign_verify(a, &good, d, sizeof d));
    TH_FAIL(ihc__sign_verify(a, &good, d, sizeof d), IHC_EREPLAY);
    assert_string_equal(d, "field 'nonce': nonce already seen");
    TH_FAIL(ihc__sign_verify(a, &good, NULL, 0), IHC_EREPLAY);
    ihc_wire_auth_free(a);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_sign_nonce(void **state)
{
    (void)state;
    enum { N = 4096 };
    static uint64_t v[N];
    for (int i = 0; i < N; i++)
        TH_PASS(ihc__sign_nonce(&v[i]));
    qsort(v, N, sizeof v[0], cmp_u64);
    for (int i = 1; i < N; i++)
        assert_true(v[i] != v[i - 1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_auth_args),      cmocka_unit_test(test_sign_map),
        cmocka_unit_test(test_sign_verify_details), cmocka_unit_test(test_sign_nonce),
        cmocka_unit_test(test_sign_tamper),         cmocka_unit_test(test_sign_window),
        cmocka_unit_test(test_sign_interop),        cmocka_unit_test(test_sign_envelope),
        cmocka_unit_test(test_sign_replay_expiry),  cmocka_unit_test(test_sign_replay_cache),
        cmocka_unit_test(test_sign_auth_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
