/* Unit tests of coordinator/jsonbuf (JSON written in order into one buffer) and of the live
 * events written with it (docs.c): each text must parse (jansson) to the value jansson
 * itself would have written for the same data, which is what these documents were before
 * and what readers of /v1/events parse. */
#include "harness.h"

#include <jansson.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "docs.h"
#include "err.h"
#include "inflight.h"
#include "jsonbuf.h"
#include "registry.h"

/* got (freed here) parses to a value equal to want (released here), members in want's order
 * when both are objects. */
static void assert_json(char *got, json_t *want)
{
    assert_non_null(got);
    assert_non_null(want);
    json_error_t err;
    json_t *g = json_loads(got, JSON_DECODE_ANY, &err);
    if (!g)
        fail_msg("not JSON (%s): %s", err.text, got);
    if (!json_equal(g, want)) {
        char *w = json_dumps(want, JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
        fail_msg("got  %s\nwant %s", got, w);
    }
    if (json_is_object(want)) { /* the same members in the same order */
        const char *k;
        json_t *v;
        const char *p = got;
        json_object_foreach(want, k, v)
        {
            (void)v;
            char key[80];
            snprintf(key, sizeof key, "\"%s\":", k);
            const char *at = strstr(p, key);
            if (!at)
                fail_msg("member %s missing or out of order in %s", k, got);
            p = at + strlen(key);
        }
    }
    json_decref(g);
    json_decref(want);
    free(got);
}

static char *str_text(const char *s)
{
    ihc_jbuf b = {0};
    ihc_jbuf_str(&b, s);
    return ihc_jbuf_take(&b);
}

static void test_jsonbuf_strings(void **state)
{
    (void)state;
    static const char *const texts[] = {"", "plain", "quote \" backslash \\ slash /",
                                        "nl\ntab\tcr\rbell\a bs\b ff\f \x01\x1f\x7f",
                                        "UTF-8: \xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80"};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        assert_json(str_text(texts[i]), json_string(texts[i]));
    /* bytes that are not UTF-8: each one U+FFFD, the rest kept */
    assert_json(str_text("a\xff"
                         "b\xc3(c\xe6\x97"),
                json_string("a\xef\xbf\xbd"
                            "b\xef\xbf\xbd(c"
                            "\xef\xbf\xbd\xef\xbf\xbd"));
    ihc_jbuf b = {0};
    ihc_jbuf_str_or_null(&b, NULL);
    assert_json(ihc_jbuf_take(&b), json_null());
}

static void test_jsonbuf_numbers(void **state)
{
    (void)state;
    static const int64_t ints[] = {0, -1, 42, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        ihc_jbuf b = {0};
        ihc_jbuf_int(&b, ints[i]);
        assert_json(ihc_jbuf_take(&b), json_integer(ints[i]));
    }
    static const double reals[] = {0.0,  1.0,    -2.0,   0.557171, 1234567.25,
                                   1e-7, 1.8e-5, 3.5e20, 1e100,    2.5e-300};
    for (size_t i = 0; i < sizeof(reals) / sizeof(reals[0]); i++) {
        ihc_jbuf b = {0};
        ihc_jbuf_real(&b, reals[i]);
        char *got = ihc_jbuf_take(&b);
        /* the text jansson writes with JSON_REAL_PRECISION(9): a real, never an integer */
        json_t *r = json_real(reals[i]);
        char *want = json_dumps(r, JSON_ENCODE_ANY | JSON_REAL_PRECISION(9));
        assert_string_equal(got, want);
        json_decref(r);
        free(want);
        free(got);
    }
}

static void test_jsonbuf_take(void **state)
{
    {
        /* a format longer than any small buffer is written whole */
        static const char long_s[] =
            "0123456789012345678901234567890123456789012345678901234567890123456789";
        ihc_jbuf f = {0};
        ihc_jbuf_fmt(&f, "{\"a\":%" PRIu64 ",\"b\":%" PRId64 ",\"c\":\"%s\"}", UINT64_MAX,
                     INT64_MIN, long_s);
        char want[256];
        snprintf(want, sizeof want,
                 "{\"a\":18446744073709551615,\"b\":-9223372036854775808,"
                 "\"c\":\"%s\"}",
                 long_s);
        char *got = ihc_jbuf_take(&f);
        assert_non_null(got);
        assert_string_equal(got, want);
        free(got);
    }
    (void)state;
    ihc_jbuf b = {0};
    assert_null(ihc_jbuf_take(&b)); /* nothing written */
    for (int i = 0; i < 1000; i++)  /* grows past its first allocation */
        IHC_JBUF_LIT(&b, "0123456789");
    char *t = ihc_jbuf_take(&b);
    assert_non_null(t);
    assert_int_equal(strlen(t), 10000);
    free(t);
    assert_null(b.p);
    assert_int_equal(b.len, 0);
}

static void test_jsonbuf_session_events(void **state)
{
    (void)state;
    ihc_reg_session s = {.session_id = "s-\"1\"",
                         .hw = "dev-1",
                         .agent_id = "node-a:42",
                         .module = "text_processing",
                         .state = "interrupted",
                         .epoch = 7,
                         .created_ms = 1764700000123,
                         .updated_ms = 1764700000456};
    assert_json(ihc_doc_session_event(&s, true),
                json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "session_id", s.session_id,
                          "hardware_id", s.hw, "agent_id", s.agent_id, "module", s.module, "epoch",
                          (json_int_t)7, "created_ms", (json_int_t)s.created_ms));
    s.module = NULL;
    assert_json(ihc_doc_session_event(&s, true),
                json_pack("{s:s, s:s, s:s, s:n, s:I, s:I}", "session_id", s.session_id,
                          "hardware_id", s.hw, "agent_id", s.agent_id, "module", "epoch",
                          (json_int_t)7, "created_ms", (json_int_t)s.created_ms));
    assert_json(ihc_doc_session_event(&s, false),
                json_pack("{s:s, s:s, s:s, s:s, s:I}", "session_id", s.session_id, "hardware_id",
                          s.hw, "agent_id", s.agent_id, "state", "interrupted", "ts_ms",
                          (json_int_t)s.updated_ms));
    s.state = NULL;
    assert_json(ihc_doc_session_event(&s, false),
                json_pack("{s:s, s:s, s:s, s:s, s:I}", "session_id", s.session_id, "hardware_id",
                          s.hw, "agent_id", s.agent_id, "state", "done", "ts_ms",
                          (json_int_t)s.updated_ms));
}

static void test_jsonbuf_interrupt_event(void **state)
{
    (void)state;
    char *expected[] = {"node-a:1", "node-b:2"};
    for (size_t n = 0; n <= 2; n++) {
        ihc_inflight_params p = {.id = 10001,
                                 .hw = "dev-1",
                                 .epoch = 3,
                                 .reason = "user \"stop\"",
                                 .expected = expected,
                                 .n_expected = n,
                                 .timeout_ns = 1000000000ull,
                                 .resend_ns = 20000000ull,
                                 .resend_max_ns = 500000000ull};
        ihc_inflight *f = NULL;
        TH_PASS(ihc_inflight_new(&f, &p));
        json_t *exp = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(exp, json_string(expected[i]));
        assert_json(ihc_doc_interrupt_event(f, 1764700000789),
                    json_pack("{s:I, s:s, s:I, s:s, s:o, s:I}", "interrupt_id", (json_int_t)10001,
                              "hardware_id", "dev-1", "epoch", (json_int_t)3, "reason",
                              "user \"stop\"", "expected", exp, "ts_ms",
                              (json_int_t)1764700000789));
        ihc_inflight_free(f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jsonbuf_strings),
        cmocka_unit_test(test_jsonbuf_numbers),
        cmocka_unit_test(test_jsonbuf_take),
        cmocka_unit_test(test_jsonbuf_session_events),
        cmocka_unit_test(test_jsonbuf_interrupt_event),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
