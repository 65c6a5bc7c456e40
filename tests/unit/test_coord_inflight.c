/* Unit tests of coordinator/inflight: expected/answered/missing, success rules, reports from
 * unexpected agents, repeated reports, the deadline, the re-send schedule and the result
 * document. No sockets, time is passed in. */
#include "harness.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "inflight.h"

#define MS (1000000ull)

static ihc_inflight *make(char *const *expected, size_t n)
{
    ihc_inflight_params p = {.id = 17,
                             .hw = "dev-1",
                             .epoch = 4,
                             .reason = "user stop",
                             .expected = expected,
                             .n_expected = n,
                             .t0_ns = 1000 * MS,
                             .timeout_ns = 5000 * MS,
                             .resend_ns = 20 * MS,
                             .resend_max_ns = 500 * MS,
                             .deadline_ms = 123456};
    ihc_inflight *f = NULL;
    TH_PASS(ihc_inflight_new(&f, &p));
    return f;
}

static ihc_report_msg report(const char *agent, ihc_module_result *mods, size_t n_mods,
                             char **sessions, size_t n_sessions)
{
    ihc_report_msg r = {.id = 17,
                        .agent = (char *)agent,
                        .hw = "dev-1",
                        .modules = mods,
                        .n_modules = n_mods,
                        .sessions = sessions,
                        .n_sessions = n_sessions,
                        .time_ms = 0.3};
    return r;
}

static json_t *result(const ihc_inflight *f)
{
    char *s = ihc_inflight_result_json(f);
    assert_non_null(s);
    json_t *j = json_loads(s, 0, NULL);
    free(s);
    assert_non_null(j);
    return j;
}

static const char *joined(json_t *arr)
{
    static char buf[512];
    buf[0] = '\0';
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        size_t len = strlen(buf);
        snprintf(buf + len, sizeof(buf) - len, "%s%s", i ? "," : "", json_string_value(v));
    }
    return buf;
}

static void test_coord_inflight_all_answer(void **state)
{
    (void)state;
    char *exp[] = {"n1:1", "n2:2"};
    ihc_inflight *f = make(exp, 2);
    ihc_module_result m1[] = {{.name = "text_processing", .status = IHC_MOD_OK, .time_ms = 0.2},
                              {.name = "audio_generation", .status = IHC_MOD_DISABLED}};
    char *s1[] = {"s-1", "s-2"};
    ihc_report_msg r1 = report("n1:1", m1, 2, s1, 2);
    TH_PASS(ihc_inflight_report(f, &r1));
    assert_false(ihc_inflight_complete(f));
    const char **missing = NULL;
    size_t n = 0;
    TH_PASS(ihc_inflight_missing(f, &missing, &n));
    assert_int_equal(n, 1);
    assert_string_equal(missing[0], "n2:2");
    free(missing);

    ihc_module_result m2[] = {{.name = "text_processing", .status = IHC_MOD_OK, .time_ms = 0.1}};
    char *s2[] = {"s-2", "s-3"};
    ihc_report_msg r2 = report("n2:2", m2, 1, s2, 2);
    TH_PASS(ihc_inflight_report(f, &r2));
    assert_true(ihc_inflight_complete(f));
    TH_PASS(ihc_inflight_finish(f, 1003 * MS, true));
    assert_true(f->success);
    assert_null(f->error);
    assert_true(f->total_time_ms > 2.99 && f->total_time_ms < 3.01);

    json_t *j = result(f);
    assert_true(json_is_true(json_object_get(j, "success")));
    assert_int_equal(json_integer_value(json_object_get(j, "interrupt_id")), 17);
    assert_int_equal(json_integer_value(json_object_get(j, "epoch")), 4);
    assert_string_equal(json_string_value(json_object_get(j, "hardware_id")), "dev-1");
    /* disabled modules did not run; names and sessions are unions */
    assert_string_equal(joined(json_object_get(j, "interrupted_modules")), "text_processing");
    assert_string_equal(joined(json_object_get(j, "cleaned_sessions")), "s-1,s-2,s-3");
    json_t *ag = json_object_get(j, "agents");
    assert_string_equal(joined(json_object_get(ag, "expected")), "n1:1,n2:2");
    assert_string_equal(joined(json_object_get(ag, "answered")), "n1:1,n2:2");
    assert_string_equal(joined(json_object_get(ag, "missing")), "");
    assert_int_equal(json_array_size(json_object_get(j, "modules")), 3);
    assert_true(json_is_true(json_object_get(j, "persisted")));
    assert_string_equal(json_string_value(json_object_get(j, "reason")), "user stop");
    assert_null(json_object_get(j, "error"));
    json_decref(j);

    char *mods, *sess, *miss;
    TH_PASS(ihc_inflight_log_fields(f, &mods, &sess, &miss));
    assert_string_equal(mods, "[\"text_processing\"]");
    assert_string_equal(sess, "[\"s-1\",\"s-2\",\"s-3\"]");
    assert_string_equal(miss, "[]");
    free(mods);
    free(sess);
    free(miss);
    ihc_inflight_free(f);
}

static void test_coord_inflight_missing_agent(void **state)
{
    (void)state;
    char *exp[] = {"n1:1", "n2:2"};
    ihc_inflight *f = make(exp, 2);
    ihc_report_msg r1 = report("n1:1", NULL, 0, NULL, 0);
    TH_PASS(ihc_inflight_report(f, &r1));
    assert_false(ihc_inflight_expired(f, 5999 * MS));
    assert_true(ihc_inflight_expired(f, 6000 * MS));
    TH_PASS(ihc_inflight_finish(f, 6000 * MS, false));
    assert_false(f->success);
    assert_string_equal(f->error, "agents missing: n2:2");
    json_t *j = result(f);
    assert_true(json_is_false(json_object_get(j, "success")));
    assert_true(json_is_false(json_object_get(j, "persisted")));
    assert_string_equal(joined(json_object_get(json_object_get(j, "agents"), "missing")), "n2:2");
    assert_string_equal(json_string_value(json_object_get(j, "error")), "agents missing: n2:2");
    json_decref(j);
    /* a report after the end is refused */
    ihc_report_msg late = report("n2:2", NULL, 0, NULL, 0);
    TH_FAIL(ihc_inflight_report(f, &late), IHC_ECLOSED);
    ihc_inflight_free(f);
}

static void test_coord_inflight_module_failures(void **state)
{
    (void)state;
    char *exp[] = {"n1:1"};
    ihc_inflight *f = make(exp, 1);
    ihc_module_result m[] = {
        {.name = "text_processing", .status = IHC_MOD_OK},
        {.name = "audio_generation", .status = IHC_MOD_TIMED_OUT, .time_ms = 500},
        {.name = "session_management", .status = IHC_MOD_FAILED, .error = "boom"}};
    ihc_report_msg r = report("n1:1", m, 3, NULL, 0);
    TH_PASS(ihc_inflight_report(f, &r));
    assert_true(ihc_inflight_complete(f));
    TH_PASS(ihc_inflight_finish(f, 1001 * MS, true));
    assert_false(f->success);
    assert_string_equal(f->error, "module audio_generation timed out on n1:1; "
                                  "module session_management failed on n1:1: boom");
    json_t *j = result(f);
    json_t *mods = json_object_get(j, "modules");
    assert_string_equal(json_string_value(json_object_get(json_array_get(mods, 1), "status")),
                        "timed_out");
    assert_string_equal(json_string_value(json_object_get(json_array_get(mods, 2), "error")),
                        "boom");
    assert_true(json_is_null(json_object_get(json_array_get(mods, 0), "error")));
    assert_string_equal(joined(json_object_get(j, "interrupted_modules")), "text_processing");
    json_decref(j);
    ihc_inflight_free(f);
}

/* An error text an agent sent that is not valid UTF-8 still makes a valid JSON document: each
 * byte that is not part of a valid sequence becomes U+FFFD, valid multi-byte characters stay
 * as they are. */
static void test_coord_inflight_invalid_utf8(void **state)
{
    (void)state;
    char *exp[] = {"n1:1"};
    ihc_inflight *f = make(exp, 1);
    ihc_module_result m[] = {{.name = "text_processing",
                              .status = IHC_MOD_FAILED,
                              .error = "caf\xc3\xa9 \xff \xc3( \xed\xa0\x80"}};
    ihc_report_msg r = report("n1:1", m, 1, NULL, 0);
    TH_PASS(ihc_inflight_report(f, &r));
    TH_PASS(ihc_inflight_finish(f, 1001 * MS, true));
    json_t *j = result(f);
    json_t *mod = json_array_get(json_object_get(j, "modules"), 0);
    assert_string_equal(json_string_value(json_object_get(mod, "error")),
                        "caf\xc3\xa9 \xef\xbf\xbd \xef\xbf\xbd( "
                        "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    json_decref(j);
    ihc_inflight_free(f);
}

static void test_coord_inflight_unexpected_and_repeated(void **state)
{
    (void)state;
    char *exp[] = {"n1:1"};
    ihc_inflight *f = make(exp, 1);
    ihc_report_msg stranger = report("n9:9", NULL, 0, NULL, 0);
    TH_PASS(ihc_inflight_report(f, &stranger));
    TH_FAIL(ihc_inflight_report(f, &stranger), IHC_EEXIST);
    assert_false(ihc_inflight_complete(f)); /* the expected one is still missing */
    char *s[] = {"s-1"};
    ihc_report_msg r = report("n1:1", NULL, 0, s, 1);
    TH_PASS(ihc_inflight_report(f, &r));
    TH_FAIL(ihc_inflight_report(f, &r), IHC_EEXIST);
    assert_int_equal(f->n_sessions, 1); /* the repeat added nothing */
    assert_true(ihc_inflight_complete(f));
    TH_PASS(ihc_inflight_finish(f, 1002 * MS, true));
    assert_true(f->success);
    json_t *j = result(f);
    json_t *ag = json_object_get(j, "agents");
    assert_string_equal(joined(json_object_get(ag, "expected")), "n1:1");
    assert_string_equal(joined(json_object_get(ag, "answered")), "n1:1,n9:9");
    json_decref(j);
    ihc_inflight_free(f);
}

static void test_coord_inflight_nobody_expected(void **state)
{
    (void)state;
    ihc_inflight *f = make(NULL, 0);
    assert_true(ihc_inflight_complete(f));
    assert_false(ihc_inflight_resend_due(f, 5000 * MS));
    TH_PASS(ihc_inflight_finish(f, 1000 * MS, true));
    assert_true(f->success);
    json_t *j = result(f);
    assert_true(json_is_true(json_object_get(j, "success")));
    assert_int_equal(json_array_size(json_object_get(j, "cleaned_sessions")), 0);
    assert_int_equal(json_array_size(json_object_get(json_object_get(j, "agents"), "expected")), 0);
    json_decref(j);
    ihc_inflight_free(f);
}

static void test_coord_inflight_resend_schedule(void **state)
{
    (void)state;
    char *exp[] = {"n1:1"};
    ihc_inflight *f = make(exp, 1);
    /* first re-send 20 ms after t0, then 40, 80, 160, 320, 500, 500 … */
    assert_false(ihc_inflight_resend_due(f, 1019 * MS));
    assert_true(ihc_inflight_resend_due(f, 1020 * MS));
    assert_int_equal(ihc_inflight_next_ns(f), 1020 * MS);
    uint64_t now = 1020 * MS;
    const uint64_t gaps[] = {40, 80, 160, 320, 500, 500};
    for (size_t i = 0; i < sizeof(gaps) / sizeof(gaps[0]); i++) {
        assert_int_equal(ihc_inflight_resent(f, now), i + 1);
        assert_false(ihc_inflight_resend_due(f, now + gaps[i] * MS - 1));
        assert_true(ihc_inflight_resend_due(f, now + gaps[i] * MS));
        now += gaps[i] * MS;
    }
    /* the deadline caps the next wake-up */
    ihc_inflight_resent(f, 5900 * MS);
    assert_int_equal(ihc_inflight_next_ns(f), 6000 * MS);
    /* once everyone answered nothing is re-sent */
    ihc_report_msg r = report("n1:1", NULL, 0, NULL, 0);
    TH_PASS(ihc_inflight_report(f, &r));
    assert_false(ihc_inflight_resend_due(f, 7000 * MS));
    ihc_inflight_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_coord_inflight_all_answer),
        cmocka_unit_test(test_coord_inflight_missing_agent),
        cmocka_unit_test(test_coord_inflight_module_failures),
        cmocka_unit_test(test_coord_inflight_invalid_utf8),
        cmocka_unit_test(test_coord_inflight_unexpected_and_repeated),
        cmocka_unit_test(test_coord_inflight_nobody_expected),
        cmocka_unit_test(test_coord_inflight_resend_schedule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
