/* Unit tests of common/pack: the bounded MessagePack reader on every format and on hostile
 * bytes, and the writer (msgpack-c's packer into a capped buffer), checked against msgpack-c. */
#include "harness.h"

#include "err.h"
#include "pack.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEVELS 7 /* what the wire decoder allows below its top-level map */
#define MAX_N  100000

static int check(const uint8_t *b, size_t n, int levels, uint32_t max_count, const char **why,
                 size_t *at)
{
    ihc__mp_reader r = {b, b + n, NULL};
    ihc__mp_kind kind;
    int rc = ihc__mp_check(&r, levels, max_count, &kind);
    if (why != NULL)
        *why = r.why;
    if (at != NULL)
        *at = (size_t)(r.p - b);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * Reader
 * ---------------------------------------------------------------------------------------- */

static void test_pack_read_formats(void **state)
{
    (void)state;
    static const uint8_t s31[32] = {0xbf, 'a'}; /* fixstr of 31 (the rest zeros) */
    static const struct {
        uint8_t b[10];
        size_t len;
        ihc__mp_kind kind;
        uint64_t u; /* UINT value, n for STR/BIN/ARRAY/MAP, 1/0 for BOOL */
        int64_t i;  /* INT value */
        double d;   /* FLOAT value */
    } cases[] = {
        {{0x00}, 1, IHC__MP_UINT, 0, 0, 0},
        {{0x7f}, 1, IHC__MP_UINT, 127, 0, 0},
        {{0xe0}, 1, IHC__MP_INT, 0, -32, 0},
        {{0xff}, 1, IHC__MP_INT, 0, -1, 0},
        {{0x80}, 1, IHC__MP_MAP, 0, 0, 0},
        {{0x8f}, 1, IHC__MP_MAP, 15, 0, 0},
        {{0x90}, 1, IHC__MP_ARRAY, 0, 0, 0},
        {{0x9f}, 1, IHC__MP_ARRAY, 15, 0, 0},
        {{0xa0}, 1, IHC__MP_STR, 0, 0, 0},
        {{0xa2, 'h', 'i'}, 3, IHC__MP_STR, 2, 0, 0},
        {{0xc0}, 1, IHC__MP_NIL, 0, 0, 0},
        {{0xc2}, 1, IHC__MP_BOOL, 0, 0, 0},
        {{0xc3}, 1, IHC__MP_BOOL, 1, 0, 0},
        {{0xc4, 0x01, 0x00}, 3, IHC__MP_BIN, 1, 0, 0},
        {{0xc5, 0x00, 0x01, 0x00}, 4, IHC__MP_BIN, 1, 0, 0},
        {{0xc6, 0x00, 0x00, 0x00, 0x00}, 5, IHC__MP_BIN, 0, 0, 0},
        {{0xca, 0x40, 0x20, 0x00, 0x00}, 5, IHC__MP_FLOAT, 0, 0, 2.5},
        {{0xcb, 0xc0, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18},
         9,
         IHC__MP_FLOAT,
         0,
         0,
         -3.141592653589793},
        {{0xcc, 0xff}, 2, IHC__MP_UINT, 255, 0, 0},
        {{0xcd, 0x12, 0x34}, 3, IHC__MP_UINT, 0x1234, 0, 0},
        {{0xce, 0x12, 0x34, 0x56, 0x78}, 5, IHC__MP_UINT, 0x12345678, 0, 0},
        {{0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9, IHC__MP_UINT, UINT64_MAX, 0, 0},
        {{0xd0, 0x80}, 2, IHC__MP_INT, 0, -128, 0},
        {{0xd0, 0x05}, 2, IHC__MP_UINT, 5, 0, 0}, /* non-negative: UINT whatever the encoding */
        {{0xd1, 0x80, 0x00}, 3, IHC__MP_INT, 0, INT16_MIN, 0},
        {{0xd2, 0x80, 0x00, 0x00, 0x00}, 5, IHC__MP_INT, 0, INT32_MIN, 0},
        {{0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0}, 9, IHC__MP_INT, 0, INT64_MIN, 0},
        {{0xd3, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9, IHC__MP_UINT, INT64_MAX, 0, 0},
        {{0xd9, 0x01, 'x'}, 3, IHC__MP_STR, 1, 0, 0},
        {{0xda, 0x00, 0x01, 'x'}, 4, IHC__MP_STR, 1, 0, 0},
        {{0xdb, 0x00, 0x00, 0x00, 0x01, 'x'}, 6, IHC__MP_STR, 1, 0, 0},
        {{0xdc, 0xff, 0xff}, 3, IHC__MP_ARRAY, 65535, 0, 0},
        {{0xdd, 0x08, 0x00, 0x00, 0x00}, 5, IHC__MP_ARRAY, 1u << 27, 0, 0},
        {{0xde, 0x00, 0x10}, 3, IHC__MP_MAP, 16, 0, 0},
        {{0xdf, 0xff, 0xff, 0xff, 0xff}, 5, IHC__MP_MAP, UINT32_MAX, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ihc__mp_reader r = {cases[i].b, cases[i].b + cases[i].len, NULL};
        ihc__mp_obj o;
        if (ihc__mp_read(&r, &o) != 0)
            fail_msg("case %zu (0x%02x): %s", i, cases[i].b[0], r.why);
        if (o.kind != cases[i].kind || r.p != cases[i].b + cases[i].len)
            fail_msg("case %zu (0x%02x): kind %s, consumed %td", i, cases[i].b[0],
                     ihc__mp_kind_name(o.kind), r.p - cases[i].b);
        switch (o.kind) {
        case IHC__MP_UINT:
            assert_true(o.v.u == cases[i].u);
            break;
        case IHC__MP_INT:
            assert_true(o.v.i == cases[i].i);
            break;
        case IHC__MP_BOOL:
            assert_int_equal(o.v.b, cases[i].u);
            break;
        case IHC__MP_FLOAT:
            assert_true(o.v.d == cases[i].d);
            break;
        case IHC__MP_STR:
        case IHC__MP_BIN:
            assert_int_equal(o.n, cases[i].u);
            assert_ptr_equal(o.s, cases[i].b + cases[i].len - o.n);
            break;
        case IHC__MP_ARRAY:
        case IHC__MP_MAP:
            assert_int_equal(o.n, cases[i].u);
            break;
        case IHC__MP_NIL:
            break;
        }
    }
    /* A fixstr of 31 bytes; the same with one byte missing. */
    ihc__mp_reader r = {s31, s31 + sizeof s31, NULL};
    ihc__mp_obj o;
    TH_PASS(ihc__mp_read(&r, &o));
    assert_int_equal(o.n, 31);
    assert_ptr_equal(r.p, r.end);
    r = (ihc__mp_reader){s31, s31 + sizeof s31 - 1, NULL};
    TH_FAIL(ihc__mp_read(&r, &o), IHC_EPROTO);
    assert_string_equal(r.why, "string or binary longer than the message");
    assert_ptr_equal(r.p, s31);
}

/* Reserved and ext types, truncated headers and payloads: IHC_EPROTO, nothing consumed. */
static void test_pack_read_refused(void **state)
{
    (void)state;
    uint8_t b[16] = {0};
    ihc__mp_obj o;
    ihc__mp_reader r = {b, b, NULL};
    TH_FAIL(ihc__mp_read(&r, &o), IHC_EPROTO);
    assert_string_equal(r.why, "truncated");

    static const uint8_t ext[] = {0xc7, 0xc8, 0xc9, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8};
    for (size_t i = 0; i < sizeof ext; i++) {
        memset(b, 0x01, sizeof b);
        b[0] = ext[i];
        r = (ihc__mp_reader){b, b + sizeof b, NULL};
        TH_FAIL(ihc__mp_read(&r, &o), IHC_EPROTO);
        assert_string_equal(r.why, "ext types are not allowed");
        assert_ptr_equal(r.p, b);
    }
    b[0] = 0xc1;
    r = (ihc__mp_reader){b, b + sizeof b, NULL};
    TH_FAIL(ihc__mp_read(&r, &o), IHC_EPROTO);
    assert_string_equal(r.why, "reserved type byte 0xc1");

    /* Every header with a fixed-size part, cut short by one byte or more. */
    static const struct {
        uint8_t t;
        size_t hdr;
    } fixed[] = {{0xc4, 2}, {0xc5, 3}, {0xc6, 5}, {0xca, 5}, {0xcb, 9}, {0xcc, 2}, {0xcd, 3},
                 {0xce, 5}, {0xcf, 9}, {0xd0, 2}, {0xd1, 3}, {0xd2, 5}, {0xd3, 9}, {0xd9, 2},
                 {0xda, 3}, {0xdb, 5}, {0xdc, 3}, {0xdd, 5}, {0xde, 3}, {0xdf, 5}};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        memset(b, 0, sizeof b);
        b[0] = fixed[i].t;
        for (size_t cut = 1; cut < fixed[i].hdr; cut++) {
            uint8_t *c = malloc(cut); /* exactly sized: ASan sees any read past the end */
            assert_non_null(c);
            memcpy(c, b, cut);
            r = (ihc__mp_reader){c, c + cut, NULL};
            if (ihc__mp_read(&r, &o) != IHC_EPROTO || strcmp(r.why, "truncated") != 0)
                fail_msg("0x%02x cut at %zu accepted", fixed[i].t, cut);
            assert_ptr_equal(r.p, c);
            free(c);
        }
    }
    /* Payloads longer than what remains, at every width. */
    static const uint8_t longer[][6] = {
        {0xa5, 'a'},
        {0xd9, 0x05, 'a'},
        {0xda, 0x00, 0x05, 'a'},
        {0xdb, 0x00, 0x00, 0x00, 0x05, 'a'},
        {0xc4, 0x05, 'a'},
        {0xc5, 0x00, 0x05, 'a'},
        {0xc6, 0x00, 0x00, 0x00, 0x05, 'a'},
    };
    static const size_t longer_len[] = {2, 3, 4, 6, 3, 4, 6};
    for (size_t i = 0; i < sizeof longer / sizeof longer[0]; i++) {
        r = (ihc__mp_reader){longer[i], longer[i] + longer_len[i], NULL};
        TH_FAIL(ihc__mp_read(&r, &o), IHC_EPROTO);
        assert_string_equal(r.why, "string or binary longer than the message");
    }
    /* 4 GB declared by a str32 in a 5-byte input. */
    static const uint8_t huge[] = {0xdb, 0xff, 0xff, 0xff, 0xff};
    r = (ihc__mp_reader){huge, huge + sizeof huge, NULL};
    TH_FAIL(ihc__mp_read(&r, &o), IHC_EPROTO);
}

/* Declared counts are checked against the bytes that remain before anything trusts them. */
static void test_pack_check_counts(void **state)
{
    (void)state;
    static const struct {
        uint8_t bytes[9];
        size_t len;
        const char *why;
    } cases[] = {
        {{0xdd, 0x08, 0x00, 0x00, 0x00}, 5, "declared count larger than the message"}, /* 2^27 */
        {{0xdf, 0x08, 0x00, 0x00, 0x00}, 5, "declared count larger than the message"},
        {{0xdf, 0xff, 0xff, 0xff, 0xff}, 5, "declared count larger than the message"},
        {{0xdc, 0xff, 0xff}, 3, "declared count larger than the message"},
        {{0xde, 0xff, 0xff}, 3, "declared count larger than the message"},
        {{0x82, 0xa1, 'x', 0xc0}, 4, "declared count larger than the message"}, /* 2 entries */
        {{0x81, 0xa1, 'x', 0xdd, 0x7f, 0xff, 0xff, 0xff},
         8,
         "declared count larger than the message"},
        {{0xdb, 0xff, 0xff, 0xff, 0xff}, 5, "string or binary longer than the message"},
        {{0xc6, 0xff, 0xff, 0xff, 0xff}, 5, "string or binary longer than the message"},
        {{0x81, 0xa1, 'x', 0xdb, 0x00, 0x00, 0x00, 0x09},
         8,
         "string or binary longer than the message"},
        {{0x81, 0xa1, 'x', 0xc7, 0x01, 0x05, 0x00}, 7, "ext types are not allowed"},
        {{0x81, 0xa1, 'x', 0xd4, 0x01, 0x00}, 6, "ext types are not allowed"},
        {{0x81, 0xa1, 'x', 0xc1}, 4, "reserved type byte 0xc1"},
        {{0x81, 0x01, 0x01}, 3, "map key is not a string"},
        {{0x81, 0x91, 0xa1, 'k', 0x01}, 5, "map key is not a string"},
        {{0x81, 0xc4, 0x01, 'k', 0x01}, 5, "map key is not a string"}, /* bin is not a string */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *why = NULL;
        int rc = check(cases[i].bytes, cases[i].len, LEVELS, MAX_N, &why, NULL);
        if (rc != IHC_EPROTO || why == NULL || strcmp(why, cases[i].why) != 0)
            fail_msg("case %zu: %s (%s)", i, ihc_err_name(rc), why ? why : "-");
    }
    /* A key that is a container is walked before it is refused as a key: its own problems
     * come first. */
    static const uint8_t deep_key[] = {0x81, 0x91, 0xc1, 0x01};
    const char *why;
    TH_FAIL(check(deep_key, sizeof deep_key, LEVELS, MAX_N, &why, NULL), IHC_EPROTO);
    assert_string_equal(why, "reserved type byte 0xc1");

    /* Over the count limit with every byte present: IHC_ETOOBIG; at the limit: fine. */
    for (uint32_t cnt = MAX_N; cnt <= MAX_N + 1; cnt++) {
        size_t len = 5 + cnt;
        uint8_t *b = malloc(len);
        assert_non_null(b);
        b[0] = 0xdd;
        b[1] = (uint8_t)(cnt >> 24);
        b[2] = (uint8_t)(cnt >> 16);
        b[3] = (uint8_t)(cnt >> 8);
        b[4] = (uint8_t)cnt;
        memset(b + 5, 0xc0, cnt);
        size_t at;
        int rc = check(b, len, LEVELS, MAX_N, &why, &at);
        if (cnt == MAX_N) {
            TH_PASS(rc);
            assert_int_equal(at, len);
        } else {
            TH_FAIL(rc, IHC_ETOOBIG);
            assert_string_equal(why, "list longer than the limit");
        }
        free(b);
    }
    /* ihc__mp_check_count on its own, after the header is read. */
    static const uint8_t m3[] = {0x83, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0};
    ihc__mp_reader r = {m3, m3 + sizeof m3, NULL};
    ihc__mp_obj o;
    TH_PASS(ihc__mp_read(&r, &o));
    TH_FAIL(ihc__mp_check_count(&r, &o, MAX_N), IHC_EPROTO); /* 6 items in 5 bytes */
    static const uint8_t a3[] = {0x93, 0xc0, 0xc0, 0xc0};
    r = (ihc__mp_reader){a3, a3 + sizeof a3, NULL};
    TH_PASS(ihc__mp_read(&r, &o));
    TH_PASS(ihc__mp_check_count(&r, &o, 3));
    TH_FAIL(ihc__mp_check_count(&r, &o, 2), IHC_ETOOBIG);
}

/* levels containers may nest; the failure is reported where it happens. */
static void test_pack_check_depth(void **state)
{
    (void)state;
    enum { DEEP = 1000 };
    uint8_t *b = malloc(DEEP);
    assert_non_null(b);
    for (int k = 1; k <= 10; k++) {
        memset(b, 0x91, (size_t)k - 1); /* k nested arrays, the innermost empty */
        b[k - 1] = 0x90;
        TH_PASS(check(b, (size_t)k, k, MAX_N, NULL, NULL));
        const char *why;
        size_t at;
        TH_FAIL(check(b, (size_t)k, k - 1, MAX_N, &why, &at), IHC_EPROTO);
        assert_string_equal(why, "nested too deeply");
        assert_int_equal(at, k); /* just after the header that was one too many */
    }
    /* Maps count alike. */
    static const uint8_t maps[] = {0x81, 0xa1, 'k', 0x81, 0xa1, 'k', 0x80};
    TH_PASS(check(maps, sizeof maps, 3, MAX_N, NULL, NULL));
    TH_FAIL(check(maps, sizeof maps, 2, MAX_N, NULL, NULL), IHC_EPROTO);
    /* Scalars need no level. */
    static const uint8_t one[] = {0x01};
    TH_PASS(check(one, 1, 0, MAX_N, NULL, NULL));
    /* Deep hostile input fails fast, without deep recursion. */
    memset(b, 0x91, DEEP - 1);
    b[DEEP - 1] = 0x90;
    TH_FAIL(check(b, DEEP, LEVELS, MAX_N, NULL, NULL), IHC_EPROTO);
    free(b);
}

static void test_pack_skip(void **state)
{
    (void)state;
    /* {"a": [1, {"b": nil}, "xyz"], "c": 2.5} then a trailing 0x07. */
    static const uint8_t b[] = {0x82, 0xa1, 'a', 0x93, 0x01, 0x81, 0xa1, 'b',  0xc0,
                                0xa3, 'x',  'y', 'z',  0xa1, 'c',  0xcb, 0x40, 0x04,
                                0,    0,    0,   0,    0,    0,    0x07};
    ihc__mp_reader r = {b, b + sizeof b, NULL};
    TH_PASS(ihc__mp_skip(&r));
    assert_int_equal(r.p - b, sizeof b - 1);
    ihc__mp_obj o;
    TH_PASS(ihc__mp_read(&r, &o));
    assert_int_equal(o.v.u, 7);
    /* Skipping a truncated object fails. */
    r = (ihc__mp_reader){b, b + 10, NULL};
    TH_FAIL(ihc__mp_skip(&r), IHC_EPROTO);
}

/* Whatever msgpack-c packs, the reader walks to its exact end. */
static void pack_random(msgpack_packer *pk, uint64_t *rng, int depth)
{
    *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
    uint32_t x = (uint32_t)(*rng >> 33);
    char s[300];
    memset(s, 's', sizeof s);
    switch (depth >= 4 ? x % 7 : x % 9) {
    case 0:
        msgpack_pack_nil(pk);
        break;
    case 1:
        msgpack_pack_uint64(pk, (uint64_t)x << (x % 33));
        break;
    case 2:
        msgpack_pack_int64(pk, -(int64_t)((uint64_t)x << (x % 31)));
        break;
    case 3:
        msgpack_pack_double(pk, (double)x / 7.0);
        break;
    case 4:
        msgpack_pack_float(pk, (float)x);
        break;
    case 5:
        msgpack_pack_str_with_body(pk, s, x % sizeof s);
        break;
    case 6:
        msgpack_pack_bin_with_body(pk, s, x % 40);
        break;
    case 7: {
        uint32_t n = x % 20;
        msgpack_pack_array(pk, n);
        for (uint32_t i = 0; i < n; i++)
            pack_random(pk, rng, depth + 1);
        break;
    }
    default: {
        uint32_t n = x % 20;
        msgpack_pack_map(pk, n);
        for (uint32_t i = 0; i < n; i++) {
            msgpack_pack_str_with_body(pk, s, i);
            pack_random(pk, rng, depth + 1);
        }
        break;
    }
    }
}

static void test_pack_read_msgpack_c(void **state)
{
    (void)state;
    uint64_t rng = 3;
    for (int i = 0; i < 2000; i++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        pack_random(&pk, &rng, 0);
        const uint8_t *b = (const uint8_t *)sb.data;
        size_t at;
        const char *why = NULL;
        int rc = check(b, sb.size, LEVELS, MAX_N, &why, &at);
        if (rc != 0)
            fail_msg("object %d: %s", i, why);
        assert_int_equal(at, sb.size);
        ihc__mp_reader r = {b, b + sb.size, NULL};
        TH_PASS(ihc__mp_skip(&r));
        assert_ptr_equal(r.p, r.end);
        msgpack_sbuffer_destroy(&sb);
    }
}

/* ------------------------------------------------------------------------------------------
 * Writer
 * ---------------------------------------------------------------------------------------- */

typedef enum { W_UINT, W_INT, W_STR, W_BIN, W_ARRAY, W_MAP, W_DOUBLE, W_BOOL } wkind;

/* Writes one value with the packer into a fresh ihc__wbuf and compares the bytes with want
 * (the first want_len bytes: the header of a long string). */
static void expect_bytes(wkind k, uint64_t v, const char *want, size_t want_len)
{
    static char body[70000];
    ihc__wbuf w;
    ihc__wbuf_init(&w, 1u << 20);
    switch (k) {
    case W_UINT:
        msgpack_pack_uint64(&w.pk, v);
        break;
    case W_INT:
        msgpack_pack_int64(&w.pk, (int64_t)v);
        break;
    case W_STR:
        msgpack_pack_str_with_body(&w.pk, body, v);
        break;
    case W_BIN:
        msgpack_pack_bin_with_body(&w.pk, body, v);
        break;
    case W_ARRAY:
        msgpack_pack_array(&w.pk, v);
        break;
    case W_MAP:
        msgpack_pack_map(&w.pk, v);
        break;
    case W_DOUBLE: {
        double d;
        memcpy(&d, &v, sizeof d);
        msgpack_pack_double(&w.pk, d);
        break;
    }
    case W_BOOL:
        if (v)
            msgpack_pack_true(&w.pk);
        else
            msgpack_pack_false(&w.pk);
        break;
    }
    TH_PASS(w.err);
    assert_true(w.len >= want_len);
    if (memcmp(w.b, want, want_len) != 0)
        fail_msg("kind %d value %llu: got %02x %02x %02x", k, (unsigned long long)v, w.b[0],
                 w.len > 1 ? w.b[1] : 0, w.len > 2 ? w.b[2] : 0);
    if (k == W_STR || k == W_BIN)
        assert_int_equal(w.len, want_len + v);
    else
        assert_int_equal(w.len, want_len);
    ihc__wbuf_fini(&w);
}

/* The shortest form at every boundary: the bytes the wire has always carried. */
static void test_pack_write_formats(void **state)
{
    (void)state;
#define X(k, v, bytes) expect_bytes(k, (uint64_t)(v), bytes, sizeof bytes - 1)
    X(W_UINT, 0, "\x00");
    X(W_UINT, 127, "\x7f");
    X(W_UINT, 128, "\xcc\x80");
    X(W_UINT, 255, "\xcc\xff");
    X(W_UINT, 256, "\xcd\x01\x00");
    X(W_UINT, 65535, "\xcd\xff\xff");
    X(W_UINT, 65536, "\xce\x00\x01\x00\x00");
    X(W_UINT, 0xffffffffu, "\xce\xff\xff\xff\xff");
    X(W_UINT, 0x100000000ull, "\xcf\x00\x00\x00\x01\x00\x00\x00\x00");
    X(W_UINT, UINT64_MAX, "\xcf\xff\xff\xff\xff\xff\xff\xff\xff");
    X(W_INT, 5, "\x05");
    X(W_INT, 200, "\xcc\xc8"); /* non-negative signed values take the unsigned forms */
    X(W_INT, INT64_MAX, "\xcf\x7f\xff\xff\xff\xff\xff\xff\xff");
    X(W_INT, -1, "\xff");
    X(W_INT, -32, "\xe0");
    X(W_INT, -33, "\xd0\xdf");
    X(W_INT, -128, "\xd0\x80");
    X(W_INT, -129, "\xd1\xff\x7f");
    X(W_INT, -32768, "\xd1\x80\x00");
    X(W_INT, -32769, "\xd2\xff\xff\x7f\xff");
    X(W_INT, INT32_MIN, "\xd2\x80\x00\x00\x00");
    X(W_INT, (int64_t)INT32_MIN - 1, "\xd3\xff\xff\xff\xff\x7f\xff\xff\xff");
    X(W_INT, INT64_MIN, "\xd3\x80\x00\x00\x00\x00\x00\x00\x00");
    X(W_STR, 0, "\xa0");
    X(W_STR, 31, "\xbf");
    X(W_STR, 32, "\xd9\x20");
    X(W_STR, 255, "\xd9\xff");
    X(W_STR, 256, "\xda\x01\x00");
    X(W_STR, 65535, "\xda\xff\xff");
    X(W_STR, 65536, "\xdb\x00\x01\x00\x00");
    X(W_BIN, 32, "\xc4\x20"); /* the signature */
    X(W_BIN, 256, "\xc5\x01\x00");
    X(W_ARRAY, 15, "\x9f");
    X(W_ARRAY, 16, "\xdc\x00\x10");
    X(W_ARRAY, 65535, "\xdc\xff\xff");
    X(W_ARRAY, 65536, "\xdd\x00\x01\x00\x00");
    X(W_MAP, 0, "\x80");
    X(W_MAP, 15, "\x8f");
    X(W_MAP, 16, "\xde\x00\x10");
    X(W_MAP, 65536, "\xdf\x00\x01\x00\x00");
    X(W_DOUBLE, 0x4004000000000000ull, "\xcb\x40\x04\x00\x00\x00\x00\x00\x00"); /* 2.5 */
    X(W_BOOL, 1, "\xc3");
    X(W_BOOL, 0, "\xc2");
#undef X
}

/* ihc__mp_map_header gives the header msgpack_pack_map writes (the encoder patches it in
 * front of the entries, and the signature covers it). */
static void test_pack_map_header(void **state)
{
    (void)state;
    static const uint32_t ns[] = {0, 1, 15, 16, 17, 65535, 65536, UINT32_MAX};
    static const size_t lens[] = {1, 1, 1, 3, 3, 3, 5, 5};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        uint8_t h[5];
        size_t hn = ihc__mp_map_header(h, ns[i]);
        assert_int_equal(hn, lens[i]);
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, ns[i]);
        assert_int_equal(sb.size, hn);
        assert_memory_equal(sb.data, h, hn);
        ihc__mp_reader r = {h, h + hn, NULL};
        ihc__mp_obj o;
        TH_PASS(ihc__mp_read(&r, &o));
        assert_int_equal(o.kind, IHC__MP_MAP);
        assert_int_equal(o.n, ns[i]);
        msgpack_sbuffer_destroy(&sb);
    }
}

/* The cap holds: a write that would pass it fails, the error sticks and later writes (even
 * ones that would fit) are dropped. */
static void test_pack_wbuf_limit(void **state)
{
    (void)state;
    ihc__wbuf w;
    ihc__wbuf_init(&w, 10);
    assert_int_equal(msgpack_pack_str_with_body(&w.pk, "abcdefgh", 8), 0); /* 9 bytes */
    assert_int_equal(w.len, 9);
    assert_int_not_equal(msgpack_pack_uint64(&w.pk, 1000), 0); /* 3 more: over 10 */
    assert_int_equal(w.err, IHC_ETOOBIG);
    assert_int_equal(w.len, 9);
    assert_int_not_equal(msgpack_pack_nil(&w.pk), 0); /* would fit: still dropped */
    assert_int_equal(w.len, 9);
    assert_false(ihc__wbuf_reserve(&w, 1));
    ihc__wbuf_fini(&w);
    assert_null(w.b);

    /* Exactly at the cap is fine; growth keeps the bytes. */
    ihc__wbuf_init(&w, 1000);
    for (int i = 0; i < 1000; i++)
        msgpack_pack_uint64(&w.pk, (uint64_t)i % 128);
    TH_PASS(w.err);
    assert_int_equal(w.len, 1000);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(w.b[i], i % 128);
    TH_FAIL(msgpack_pack_nil(&w.pk) ? w.err : 0, IHC_ETOOBIG);
    ihc__wbuf_fini(&w);

    /* Nothing written: nothing allocated; fini is safe. */
    ihc__wbuf_init(&w, 0);
    assert_null(w.b);
    assert_false(ihc__wbuf_reserve(&w, 1));
    assert_int_equal(w.err, IHC_ETOOBIG);
    ihc__wbuf_fini(&w);
}

/* What the writer writes, msgpack-c's unpacker reads back, and so does our reader. */
static void test_pack_write_read(void **state)
{
    (void)state;
    ihc__wbuf w;
    ihc__wbuf_init(&w, 1u << 16);
    msgpack_pack_map(&w.pk, 3);
    msgpack_pack_str_with_body(&w.pk, "id", 2);
    msgpack_pack_uint64(&w.pk, 1234567890123ull);
    msgpack_pack_str_with_body(&w.pk, "t", 1);
    msgpack_pack_int64(&w.pk, -70000);
    msgpack_pack_str_with_body(&w.pk, "l", 1);
    msgpack_pack_array(&w.pk, 2);
    msgpack_pack_double(&w.pk, 0.25);
    msgpack_pack_bin_with_body(&w.pk, "\x00\x01", 2);
    TH_PASS(w.err);

    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&u, (const char *)w.b, w.len, &off),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, w.len);
    const msgpack_object_map *m = &u.data.via.map;
    assert_int_equal(m->size, 3);
    assert_true(m->ptr[0].val.via.u64 == 1234567890123ull);
    assert_int_equal(m->ptr[1].val.via.i64, -70000);
    assert_true(m->ptr[2].val.via.array.ptr[0].via.f64 == 0.25);
    assert_int_equal(m->ptr[2].val.via.array.ptr[1].via.bin.size, 2);
    msgpack_unpacked_destroy(&u);

    size_t at;
    TH_PASS(check(w.b, w.len, LEVELS, MAX_N, NULL, &at));
    assert_int_equal(at, w.len);
    ihc__wbuf_fini(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_read_formats),  cmocka_unit_test(test_pack_read_refused),
        cmocka_unit_test(test_pack_check_counts),  cmocka_unit_test(test_pack_check_depth),
        cmocka_unit_test(test_pack_skip),          cmocka_unit_test(test_pack_read_msgpack_c),
        cmocka_unit_test(test_pack_write_formats), cmocka_unit_test(test_pack_map_header),
        cmocka_unit_test(test_pack_wbuf_limit),    cmocka_unit_test(test_pack_write_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
