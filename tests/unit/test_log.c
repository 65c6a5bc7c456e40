/* Unit tests of common/log: text and JSON lines, key=value splitting, escaping, filtering,
 * truncation, log injection, and whole lines from concurrent threads. */
#include "harness.h"

#include "err.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int pipe_fd[2] = {-1, -1};
static char captured[256 * 1024];

/* Sends log lines into a fresh non-blocking pipe with the given options. */
static void capture(ihc_log_level level, bool json, bool interrupts, bool timing)
{
    if (pipe_fd[0] >= 0) {
        close(pipe_fd[0]);
        close(pipe_fd[1]);
    }
    assert_int_equal(pipe2(pipe_fd, O_CLOEXEC), 0);
    assert_int_equal(fcntl(pipe_fd[0], F_SETFL, O_NONBLOCK), 0);
    ihc_log_opts o = {
        .level = level, .json = json, .interrupts = interrupts, .timing = timing, .fd = pipe_fd[1]};
    ihc_log_setup(&o);
}

/* Everything written since the last call, NUL-terminated. */
static const char *take(void)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = read(pipe_fd[0], captured + n, sizeof captured - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    captured[n] = '\0';
    return captured;
}

static int teardown(void **state)
{
    (void)state;
    ihc_log_setup(NULL);
    if (pipe_fd[0] >= 0) {
        close(pipe_fd[0]);
        close(pipe_fd[1]);
        pipe_fd[0] = pipe_fd[1] = -1;
    }
    return 0;
}

static size_t count_char(const char *s, char c)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == c;
    return n;
}

#define TS_RE "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z"

static void assert_matches(const char *s, const char *re)
{
    regex_t rx;
    assert_int_equal(regcomp(&rx, re, REG_EXTENDED | REG_NOSUB), 0);
    int m = regexec(&rx, s, 0, NULL, 0);
    regfree(&rx);
    if (m != 0)
        fail_msg("'%s' does not match /%s/", s, re);
}

/* The JSON line after its "ts" value: {"ts":"<24 chars>",REST. */
static const char *json_after_ts(const char *line)
{
    assert_true(strncmp(line, "{\"ts\":\"", 7) == 0);
    char ts[25];
    memcpy(ts, line + 7, 24);
    ts[24] = '\0';
    assert_matches(ts, "^" TS_RE "$");
    assert_true(strncmp(line + 31, "\",", 2) == 0);
    return line + 33;
}

/* ---- a minimal strict JSON checker for one line: objects, strings, true/false ---------- */

static const char *js_ws(const char *p)
{
    while (*p == ' ')
        p++;
    return p;
}

static const char *js_string(const char *p)
{
    if (*p != '"')
        return NULL;
    for (p++; *p != '"'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20)
            return NULL;
        if (c == '\\') {
            p++;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", p[i]) || p[i] == '\0')
                        return NULL;
                p += 4;
            } else if (*p == '\0' || !strchr("\"\\/bfnrt", *p)) {
                return NULL;
            }
        }
    }
    return p + 1;
}

static bool json_line_ok(const char *line)
{
    const char *p = js_ws(line);
    if (*p++ != '{')
        return false;
    for (;;) {
        p = js_string(js_ws(p));
        if (p == NULL)
            return false;
        p = js_ws(p);
        if (*p++ != ':')
            return false;
        p = js_ws(p);
        if (*p == '"')
            p = js_string(p);
        else if (strncmp(p, "true", 4) == 0)
            p += 4;
        else
            return false;
        if (p == NULL)
            return false;
        p = js_ws(p);
        if (*p == '}')
            return strcmp(p, "}\n") == 0;
        if (*p++ != ',')
            return false;
    }
}

/* ---- cases ---------------------------------------------------------------------------- */

static void test_log_text_format(void **state)
{
    (void)state;
    capture(IHC_LOG_DEBUG, false, true, true);
    ihc_log(IHC_LOG_INFO, "coordinator", "interrupt done id=%d hw=%s", 17, "dev-1");
    assert_matches(take(), "^" TS_RE " INFO  coordinator interrupt done id=17 hw=dev-1\n$");
    ihc_log(IHC_LOG_DEBUG, "agent", "x");
    assert_matches(take(), "^" TS_RE " DEBUG agent x\n$");
    ihc_log(IHC_LOG_WARN, "agent", "y");
    assert_matches(take(), "^" TS_RE " WARN  agent y\n$");
    ihc_log(IHC_LOG_ERROR, NULL, "z reason=\"user stop\"");
    assert_matches(take(), "^" TS_RE " ERROR - z reason=\"user stop\"\n$");
}

static void test_log_json_format(void **state)
{
    (void)state;
    capture(IHC_LOG_DEBUG, true, true, true);
    ihc_log(IHC_LOG_INFO, "coordinator", "interrupt done id=%d hw=%s", 17, "dev-1");
    const char *l = take();
    assert_true(json_line_ok(l));
    assert_string_equal(json_after_ts(l), "\"level\":\"info\",\"component\":\"coordinator\","
                                          "\"msg\":\"interrupt done\",\"id\":\"17\","
                                          "\"hw\":\"dev-1\"}\n");
    ihc_log(IHC_LOG_ERROR, "c", "plain message");
    l = take();
    assert_true(json_line_ok(l));
    assert_string_equal(json_after_ts(l),
                        "\"level\":\"error\",\"component\":\"c\",\"msg\":\"plain message\"}\n");
}

static void test_log_json_split(void **state)
{
    (void)state;
    capture(IHC_LOG_DEBUG, true, true, true);
    /* quoted values with escapes, an empty value, dotted keys */
    ihc_log(IHC_LOG_WARN, "a",
            "agent gone reason=\"user \\\"big\\\" stop\" path=\"C:\\\\x\" e= t.ms=0.42");
    const char *l = take();
    assert_true(json_line_ok(l));
    assert_string_equal(json_after_ts(l),
                        "\"level\":\"warn\",\"component\":\"a\",\"msg\":\"agent gone\","
                        "\"reason\":\"user \\\"big\\\" stop\",\"path\":\"C:\\\\x\",\"e\":\"\","
                        "\"t.ms\":\"0.42\"}\n");
    /* a pair followed by words stays in the message; only the trailing pairs split */
    ihc_log(IHC_LOG_INFO, "a", "set a=1 then  more k=v");
    l = take();
    assert_string_equal(json_after_ts(l), "\"level\":\"info\",\"component\":\"a\","
                                          "\"msg\":\"set a=1 then  more\",\"k\":\"v\"}\n");
    /* only pairs: empty msg; a key colliding with the line's own keys is prefixed */
    ihc_log(IHC_LOG_INFO, "a", "x=1 msg=hi level=9");
    l = take();
    assert_string_equal(json_after_ts(l), "\"level\":\"info\",\"component\":\"a\",\"msg\":\"\","
                                          "\"x\":\"1\",\"_msg\":\"hi\",\"_level\":\"9\"}\n");
    /* an unterminated quote is not a pair */
    ihc_log(IHC_LOG_INFO, "a", "oops k=\"open value");
    l = take();
    assert_true(json_line_ok(l));
    assert_string_equal(json_after_ts(l), "\"level\":\"info\",\"component\":\"a\","
                                          "\"msg\":\"oops k=\\\"open value\"}\n");
    /* a quoted word with spaces is one message token */
    ihc_log(IHC_LOG_INFO, "a", "said \"a b=c\" n=1");
    l = take();
    assert_string_equal(json_after_ts(l), "\"level\":\"info\",\"component\":\"a\","
                                          "\"msg\":\"said \\\"a b=c\\\"\",\"n\":\"1\"}\n");
}

static void test_log_json_escaping(void **state)
{
    (void)state;
    capture(IHC_LOG_DEBUG, true, true, true);
    ihc_log(IHC_LOG_INFO, "c\"omp",
            "ctl \x01\x1f\x7f tab\there back\\slash \xc3\xa9 bad \xff\xc3 end");
    const char *l = take();
    assert_true(json_line_ok(l));
    assert_string_equal(json_after_ts(l),
                        "\"level\":\"info\",\"component\":\"c\\\"omp\",\"msg\":\"ctl "
                        "\\u0001\\u001f\\u007f tab\\there back\\\\slash \xc3\xa9 bad "
                        "\\ufffd\\ufffd end\"}\n");
    /* a quoted value's \n escape becomes a JSON \n, never a raw newline */
    ihc_log(IHC_LOG_INFO, "c", "m v=\"a\\nb\"");
    l = take();
    assert_true(json_line_ok(l));
    assert_non_null(strstr(l, "\"v\":\"a\\nb\""));
}

static void test_log_newline_injection(void **state)
{
    (void)state;
    const char *evil = "alice\n2026-01-01T00:00:00.000Z ERROR coordinator FAKE\r\x1b[31m";
    capture(IHC_LOG_DEBUG, false, true, true);
    ihc_log(IHC_LOG_INFO, "http\ncomp", "login user=%s", evil);
    const char *l = take();
    assert_int_equal(count_char(l, '\n'), 1);
    assert_null(strchr(l, '\r'));
    assert_null(strchr(l, '\x1b'));
    assert_non_null(strstr(l, "http\\ncomp login user=alice\\n2026-01-01T00:00:00.000Z ERROR "
                              "coordinator FAKE\\r\\x1b[31m\n"));
    capture(IHC_LOG_DEBUG, true, true, true);
    ihc_log(IHC_LOG_INFO, "c", "login user=%s", evil);
    l = take();
    assert_int_equal(count_char(l, '\n'), 1);
    assert_true(json_line_ok(l));
}

static void test_log_level_filter(void **state)
{
    (void)state;
    capture(IHC_LOG_WARN, false, true, true);
    assert_false(ihc_log_enabled(IHC_LOG_DEBUG));
    assert_false(ihc_log_enabled(IHC_LOG_INFO));
    assert_true(ihc_log_enabled(IHC_LOG_WARN));
    assert_true(ihc_log_enabled(IHC_LOG_ERROR));
    ihc_log(IHC_LOG_DEBUG, "c", "d");
    ihc_log(IHC_LOG_INFO, "c", "i");
    ihc_log_interrupt("c", "interrupt below level");
    assert_string_equal(take(), "");
    ihc_log(IHC_LOG_WARN, "c", "w");
    ihc_log(IHC_LOG_ERROR, "c", "e");
    const char *l = take();
    assert_int_equal(count_char(l, '\n'), 2);
    assert_non_null(strstr(l, " WARN  c w\n"));
    assert_non_null(strstr(l, " ERROR c e\n"));

    capture(IHC_LOG_ERROR, false, true, true);
    ihc_log(IHC_LOG_WARN, "c", "w");
    assert_string_equal(take(), "");
    ihc_log_setup(NULL); /* defaults: info */
    assert_false(ihc_log_enabled(IHC_LOG_DEBUG));
    assert_true(ihc_log_enabled(IHC_LOG_INFO));
}

static void test_log_interrupts_and_timing(void **state)
{
    (void)state;
    capture(IHC_LOG_INFO, false, false, false);
    ihc_log_interrupt("agent", "interrupt id=%d", 3);
    assert_string_equal(take(), "");
    assert_false(ihc_log_timing());
    ihc_log(IHC_LOG_INFO, "agent", "still logs");
    assert_non_null(strstr(take(), " INFO  agent still logs\n"));

    capture(IHC_LOG_INFO, false, true, true);
    ihc_log_interrupt("agent", "interrupt id=%d", 3);
    assert_matches(take(), "^" TS_RE " INFO  agent interrupt id=3\n$");
    assert_true(ihc_log_timing());
}

static void test_log_level_parse(void **state)
{
    (void)state;
    assert_int_equal(ihc_log_level_parse("debug"), IHC_LOG_DEBUG);
    assert_int_equal(ihc_log_level_parse("INFO"), IHC_LOG_INFO);
    assert_int_equal(ihc_log_level_parse("warn"), IHC_LOG_WARN);
    assert_int_equal(ihc_log_level_parse("warning"), IHC_LOG_WARN);
    assert_int_equal(ihc_log_level_parse("Error"), IHC_LOG_ERROR);
    assert_int_equal(ihc_log_level_parse("trace"), -1);
    assert_int_equal(ihc_log_level_parse(""), -1);
    assert_int_equal(ihc_log_level_parse(NULL), -1);
}

static void test_log_truncation(void **state)
{
    (void)state;
    static char big[10000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';

    capture(IHC_LOG_DEBUG, false, true, true);
    ihc_log(IHC_LOG_INFO, "c", "long %s", big);
    const char *l = take();
    size_t n = strlen(l);
    assert_true(n <= 4096);
    assert_true(n > 3000);
    assert_int_equal(count_char(l, '\n'), 1);
    assert_string_equal(l + n - 4, "\xe2\x80\xa6\n");

    /* escapes are never split at the cut: 6-byte \u0001 in JSON, 4-byte \x01 in text */
    static char ctl[3000];
    memset(ctl, 1, sizeof ctl - 1);
    ctl[sizeof ctl - 1] = '\0';
    ihc_log(IHC_LOG_INFO, "c", "m %s", ctl);
    l = take();
    n = strlen(l);
    assert_true(n <= 4096);
    assert_string_equal(l + n - 8, "\\x01\xe2\x80\xa6\n");

    capture(IHC_LOG_DEBUG, true, true, true);
    ihc_log(IHC_LOG_INFO, "c", "m %s", ctl);
    l = take();
    n = strlen(l);
    assert_true(n <= 4096);
    assert_true(json_line_ok(l));
    assert_non_null(strstr(l, "\\u0001\xe2\x80\xa6\",\"truncated\":true}\n"));

    /* a long value: the key is kept, the value is cut and closed */
    ihc_log(IHC_LOG_INFO, "c", "m id=1 v=%s", big);
    l = take();
    n = strlen(l);
    assert_true(n <= 4096);
    assert_true(json_line_ok(l));
    assert_non_null(strstr(l, "\"msg\":\"m\",\"id\":\"1\",\"v\":\"xxx"));
    assert_non_null(strstr(l, "x\xe2\x80\xa6\",\"truncated\":true}\n"));

    /* a long quoted value: cut inside the string, still valid */
    ihc_log(IHC_LOG_INFO, "c", "m v=\"%.3000s\\\"%.3000s\"", big, big);
    l = take();
    assert_true(json_line_ok(l));
    assert_true(strlen(l) <= 4096);

    /* many short pairs that fit as text but not as JSON: the line is cut between or inside
     * pairs and stays valid */
    char many[3500];
    size_t o = 0;
    o += (size_t)snprintf(many, sizeof many, "m");
    for (int i = 0; o + 16 < sizeof many; i++)
        o += (size_t)snprintf(many + o, sizeof many - o, " k%d=%d", i, i);
    ihc_log(IHC_LOG_INFO, "c", "%s", many);
    l = take();
    assert_true(strlen(l) <= 4096);
    assert_true(json_line_ok(l));
    assert_non_null(strstr(l, "\"msg\":\"m\",\"k0\":\"0\",\"k1\":\"1\","));
    assert_non_null(strstr(l, ",\"truncated\":true}\n"));
}

static void test_log_preserves_errno(void **state)
{
    (void)state;
    capture(IHC_LOG_DEBUG, false, true, true);
    errno = EAGAIN;
    ihc_log(IHC_LOG_INFO, "c", "x");
    assert_int_equal(errno, EAGAIN);
    take();
}

/* ---- concurrency ---------------------------------------------------------------------- */

#define THREADS 4
#define LINES   1500

typedef struct {
    int fd;
    char *buf;
    size_t len, cap;
} reader;

static void *reader_main(void *arg)
{
    reader *r = arg;
    for (;;) {
        if (r->cap - r->len < 65536) {
            r->cap *= 2;
            r->buf = realloc(r->buf, r->cap);
            if (r->buf == NULL)
                return NULL;
        }
        ssize_t n = read(r->fd, r->buf + r->len, r->cap - r->len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        r->len += (size_t)n;
    }
    r->buf[r->len] = '\0';
    return NULL;
}

static void *writer_main(void *arg)
{
    int t = (int)(intptr_t)arg;
    char pad[600];
    memset(pad, 'a' + t, sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int i = 0; i < LINES; i++)
        ihc_log(IHC_LOG_INFO, "w", "line t=%d i=%d pad=%.*s end=%d", t, i, 100 + (i % 500), pad, t);
    return NULL;
}

static void test_log_concurrent_whole_lines(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
    ihc_log_opts o = {
        .level = IHC_LOG_INFO, .json = false, .interrupts = true, .timing = true, .fd = fds[1]};
    ihc_log_setup(&o);
    reader r = {.fd = fds[0], .buf = malloc(1 << 20), .len = 0, .cap = 1 << 20};
    assert_non_null(r.buf);
    pthread_t rt, wt[THREADS];
    assert_int_equal(pthread_create(&rt, NULL, reader_main, &r), 0);
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&wt[t], NULL, writer_main, (void *)(intptr_t)t), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(wt[t], NULL);
    ihc_log_setup(NULL);
    close(fds[1]);
    pthread_join(rt, NULL);
    close(fds[0]);
    assert_non_null(r.buf);

    assert_true(r.len > 0);
    assert_int_equal(r.buf[r.len - 1], '\n');
    assert_int_equal(count_char(r.buf, '\n'), THREADS * LINES);

    static bool seen[THREADS][LINES];
    memset(seen, 0, sizeof seen);
    regex_t rx;
    assert_int_equal(regcomp(&rx,
                             "^" TS_RE " INFO  w line t=([0-3]) i=([0-9]+) pad=([a-d]+) "
                             "end=([0-3])$",
                             REG_EXTENDED),
                     0);
    size_t lines = 0;
    char *save = NULL;
    for (char *line = strtok_r(r.buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        regmatch_t m[5];
        if (regexec(&rx, line, 5, m, 0) != 0)
            fail_msg("torn or malformed line: '%.200s'", line);
        int t = line[m[1].rm_so] - '0';
        int i = atoi(line + m[2].rm_so);
        assert_int_equal(line[m[4].rm_so] - '0', t);
        int padlen = (int)(m[3].rm_eo - m[3].rm_so);
        assert_int_equal(padlen, 100 + (i % 500));
        assert_int_equal(line[m[3].rm_so], 'a' + t);
        assert_true(i >= 0 && i < LINES);
        assert_false(seen[t][i]);
        seen[t][i] = true;
        lines++;
    }
    regfree(&rx);
    assert_int_equal(lines, THREADS * LINES);
    free(r.buf);
}

/* ihc_log_limit: the first event is logged, the ones within the interval are folded into
 * the next line due, which reports them (with what callers added to unlogged). */
static void test_log_limit(void **state)
{
    (void)state;
    const uint64_t sec = 1000000000ull;
    ihc_log_limit lim = {0};
    uint64_t folded = 99;
    assert_true(ihc_log_limit_due(&lim, 5 * sec, sec, &folded));
    assert_int_equal(folded, 0);
    assert_false(ihc_log_limit_due(&lim, 5 * sec + 1, sec, &folded));
    assert_false(ihc_log_limit_due(&lim, 6 * sec - 1, sec, &folded));
    lim.unlogged += 3; /* three more events sharing one line */
    assert_true(ihc_log_limit_due(&lim, 6 * sec, sec, &folded));
    assert_int_equal(folded, 5);
    assert_false(ihc_log_limit_due(&lim, 6 * sec + 1, sec, &folded));
    assert_true(ihc_log_limit_due(&lim, 60 * sec, sec, &folded));
    assert_int_equal(folded, 1);
    /* a clock at 0 still logs the first event */
    ihc_log_limit z = {0};
    assert_true(ihc_log_limit_due(&z, 0, sec, &folded));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_log_text_format, teardown),
        cmocka_unit_test_teardown(test_log_json_format, teardown),
        cmocka_unit_test_teardown(test_log_json_split, teardown),
        cmocka_unit_test_teardown(test_log_json_escaping, teardown),
        cmocka_unit_test_teardown(test_log_newline_injection, teardown),
        cmocka_unit_test_teardown(test_log_level_filter, teardown),
        cmocka_unit_test_teardown(test_log_interrupts_and_timing, teardown),
        cmocka_unit_test_teardown(test_log_level_parse, teardown),
        cmocka_unit_test_teardown(test_log_truncation, teardown),
        cmocka_unit_test_teardown(test_log_preserves_errno, teardown),
        cmocka_unit_test_teardown(test_log_concurrent_whole_lines, teardown),
        cmocka_unit_test_teardown(test_log_limit, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
