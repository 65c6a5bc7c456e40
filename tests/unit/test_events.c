/* Unit tests of the live events history (coordinator/events.c): ids, Server-Sent Events text,
 * cursors that resume, fall behind or read in small pieces, and emitters on other threads. */
#include "harness.h"

#include "err.h"
#include "events.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Everything a cursor can read now, in pieces of at most piece bytes, as one string. */
static char *read_all(ihc_events *ev, ihc_events_cursor *cur, size_t piece, ssize_t *last)
{
    size_t cap = 1 << 20, n = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    for (;;) {
        ssize_t k = ihc_events_read(ev, cur, out + n, piece < cap - n - 1 ? piece : cap - n - 1);
        *last = k;
        if (k <= 0)
            break;
        n += (size_t)k;
    }
    out[n] = '\0';
    return out;
}

static uint64_t seq_of(const char *id)
{
    const char *dash = strchr(id, '-');
    assert_non_null(dash);
    return strtoull(dash + 1, NULL, 10);
}

static void test_events_frames(void **state)
{
    (void)state;
    ihc_events *ev;
    TH_PASS(ihc_events_new(&ev, 8, 0));
    ihc_events_cursor cur;
    bool gap = true;
    TH_PASS(ihc_events_cursor_init(ev, NULL, &cur, &gap));
    assert_false(gap);
    assert_false(ihc_events_pending(ev, &cur));
    ihc_events_emit(ev, "result", "{\"interrupt_id\":7}");
    ihc_events_emit(ev, "multi", "line one\nline two");
    ihc_events_emit(ev, "skipped", NULL); /* a builder out of memory: nothing */
    ihc_events_emit_take(ev, "taken", strdup("{}"));
    assert_true(ihc_events_pending(ev, &cur));
    ssize_t last;
    char *text = read_all(ev, &cur, 1 << 16, &last);
    assert_int_equal(last, 0);
    char id1[IHC_EVENTS_ID_MAX], id2[IHC_EVENTS_ID_MAX], id3[IHC_EVENTS_ID_MAX];
    ihc_events_id(ev, 1, id1);
    ihc_events_id(ev, 2, id2);
    ihc_events_id(ev, 3, id3);
    char want[512];
    snprintf(want, sizeof want,
             "id: %s\nevent: result\ndata: {\"interrupt_id\":7}\n\n"
             "id: %s\nevent: multi\ndata: line one\ndata: line two\n\n"
             "id: %s\nevent: taken\ndata: {}\n\n",
             id1, id2, id3);
    assert_string_equal(text, want);
    free(text);
    ihc_events_stats st;
    ihc_events_stats_get(ev, &st);
    assert_int_equal(st.emitted, 3);
    assert_int_equal(st.oldest, 1);
    assert_int_equal(st.newest, 3);
    assert_int_equal(st.held, 3);
    ihc_events_cursor_fini(ev, &cur);
    ihc_events_free(ev);
    ihc_events_free(NULL);
}

/* A reader's buffer smaller than an event: every split gives the same text. */
static void test_events_small_pieces(void **state)
{
    (void)state;
    ihc_events *ev;
    TH_PASS(ihc_events_new(&ev, 4, 0));
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ihc_events_cursor whole, bits;
    bool gap;
    TH_PASS(ihc_events_cursor_init(ev, "0", &whole, &gap));
    TH_PASS(ihc_events_cursor_init(ev, "0", &bits, &gap));
    ihc_events_emit(ev, "a", big);
    ihc_events_emit(ev, "b", "{}");
    ssize_t last;
    char *w = read_all(ev, &whole, 1 << 16, &last);
    for (size_t piece = 1; piece < 40; piece += 7) {
        ihc_events_cursor c;
        TH_PASS(ihc_events_cursor_init(ev, "0", &c, &gap));
        char *b = read_all(ev, &c, piece, &last);
        assert_string_equal(b, w);
        free(b);
        ihc_events_cursor_fini(ev, &c);
    }
    /* half of the big event read, then it leaves the history: the reader still finishes it,
     * then finds itself behind */
    char buf[100];
    assert_int_equal(ihc_events_read(ev, &bits, buf, sizeof buf), (ssize_t)sizeof buf);
    for (int i = 0; i < 6; i++)
        ihc_events_emit(ev, "c", "{}");
    char *rest = read_all(ev, &bits, 512, &last);
    size_t frame_a = (size_t)(strstr(w, "\n\n") - w) + 2; /* big holds no line break */
    assert_int_equal(strlen(rest) + sizeof buf, frame_a);
    assert_memory_equal(rest, w + sizeof buf, strlen(rest));
    assert_int_equal(last, -1);
    assert_true(ihc_events_behind(ev, &bits));
    assert_true(ihc_events_pending(ev, &bits));
    free(rest);
    free(w);
    ihc_events_cursor_fini(ev, &whole);
    ihc_events_cursor_fini(ev, &bits);
    ihc_events_free(ev);
}

static void test_events_resume(void **state)
{
    (void)state;
    ihc_events *ev;
    TH_PASS(ihc_events_new(&ev, 4, 0));
    for (int i = 0; i < 3; i++)
        ihc_events_emit(ev, "e", "{}");
    char id[IHC_EVENTS_ID_MAX];
    ihc_events_cursor cur;
    bool gap;
    ssize_t last;

    /* after event 2: event 3 only */
    TH_PASS(ihc_events_cursor_init(ev, ihc_events_id(ev, 2, id), &cur, &gap));
    assert_false(gap);
    char *t = read_all(ev, &cur, 4096, &last);
    assert_non_null(strstr(t, ihc_events_id(ev, 3, id)));
    assert_null(strstr(t, ihc_events_id(ev, 2, id)));
    free(t);
    ihc_events_cursor_fini(ev, &cur);

    /* "0": all held; no gap while event 1 is still held */
    TH_PASS(ihc_events_cursor_init(ev, "0", &cur, &gap));
    assert_false(gap);
    assert_int_equal(cur.next, 1);
    ihc_events_cursor_fini(ev, &cur);

    /* the newest id, or one not handed out yet: only new events */
    TH_PASS(ihc_events_cursor_init(ev, ihc_events_id(ev, 3, id), &cur, &gap));
    assert_false(gap);
    assert_false(ihc_events_pending(ev, &cur));
    TH_PASS(ihc_events_cursor_init(ev, ihc_events_id(ev, 99, id), &cur, &gap));
    assert_false(gap);
    assert_int_equal(cur.next, 4);

    /* events 1-3 dropped from the history: resuming after 1 is a gap, from the oldest */
    for (int i = 0; i < 4; i++)
        ihc_events_emit(ev, "e", "{}");
    TH_PASS(ihc_events_cursor_init(ev, ihc_events_id(ev, 1, id), &cur, &gap));
    assert_true(gap);
    assert_int_equal(cur.next, 4);
    TH_PASS(ihc_events_cursor_init(ev, "0", &cur, &gap));
    assert_true(gap);
    assert_int_equal(cur.next, 4);

    /* another process's id: everything held, flagged */
    TH_PASS(ihc_events_cursor_init(ev, "12345-2", &cur, &gap));
    assert_true(gap);
    assert_int_equal(cur.next, 4);

    /* not an id */
    const char *bad[] = {"abc", "12-", "-3", "1-2-3", "1 -2", "x-1", "1-x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        TH_FAIL(ihc_events_cursor_init(ev, bad[i], &cur, &gap), IHC_EINVAL);
        assert_int_equal(cur.next, 8); /* new events only */
    }
    TH_PASS(ihc_events_cursor_init(ev, "", &cur, &gap));
    assert_int_equal(cur.next, 8);
    ihc_events_free(ev);
}

/* The history is bounded in bytes as well as in events. */
static void test_events_bytes_bound(void **state)
{
    (void)state;
    ihc_events *ev;
    TH_PASS(ihc_events_new(&ev, 1000, 4096));
    char big[1000];
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    for (int i = 0; i < 20; i++)
        ihc_events_emit(ev, "big", big);
    ihc_events_stats st;
    ihc_events_stats_get(ev, &st);
    assert_true(st.bytes <= 4096);
    assert_true(st.held >= 3 && st.held <= 4);
    assert_int_equal(st.newest, 20);
    assert_int_equal(st.oldest, 20 - st.held + 1);
    /* one event larger than the bound is still held, alone */
    char *huge = malloc(10000);
    memset(huge, 'z', 9999);
    huge[9999] = '\0';
    ihc_events_emit_take(ev, "huge", huge);
    ihc_events_stats_get(ev, &st);
    assert_int_equal(st.held, 1);
    assert_int_equal(st.oldest, 21);
    ihc_events *none = NULL;
    TH_FAIL(ihc_events_new(&none, 0, 0), IHC_EINVAL);
    assert_null(none);
    ihc_events_free(ev);
}

typedef struct {
    ihc_events *ev;
    int n;
} emitter_arg;

static void *emitter(void *p)
{
    emitter_arg *a = p;
    char data[64];
    for (int i = 0; i < a->n; i++) {
        snprintf(data, sizeof data, "{\"i\":%d}", i);
        ihc_events_emit(a->ev, "t", data);
    }
    return NULL;
}

/* Emitters on several threads, a reader following with waits: every event once, in id
 * order, none lost while the reader keeps up. */
static void test_events_threads(void **state)
{
    (void)state;
    enum { THREADS = 4, PER = 5000 };
    ihc_events *ev;
    TH_PASS(ihc_events_new(&ev, THREADS * PER, 0));
    ihc_events_cursor cur;
    bool gap;
    TH_PASS(ihc_events_cursor_init(ev, NULL, &cur, &gap));
    pthread_t t[THREADS];
    emitter_arg a = {ev, PER};
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, emitter, &a), 0);
    uint64_t seen = 0, expect = 1;
    char *buf = malloc(1 << 16);
    char line[64];
    size_t ll = 0;
    uint64_t deadline = th_now_ms_() + 20000;
    while (expect <= THREADS * PER && th_now_ms_() < deadline) {
        ihc_events_wait(ev, &seen, 100);
        ssize_t k;
        while ((k = ihc_events_read(ev, &cur, buf, 1 << 16)) > 0) {
            for (ssize_t i = 0; i < k; i++) { /* check each "id: " line */
                if (buf[i] != '\n') {
                    if (ll < sizeof line - 1)
                        line[ll++] = buf[i];
                    continue;
                }
                line[ll] = '\0';
                ll = 0;
                if (strncmp(line, "id: ", 4) == 0)
                    assert_int_equal(seq_of(line + 4), expect++);
            }
        }
        assert_true(k == 0);
    }
    assert_int_equal(expect, THREADS * PER + 1);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    free(buf);
    ihc_events_cursor_fini(ev, &cur);
    ihc_events_free(ev);
}

/* ihc_events_wait returns on a new event, on a kick, or at its timeout. */
static void *kicker(void *p)
{
    th_sleep_ms_(50);
    ihc_events_kick(p);
    return NULL;
}

static void test_events_wait(void **state)
{
    (void)state;
    ihc_events *ev;
    TH_PASS(ihc_events_new(&ev, 4, 0));
    uint64_t seen = 0, t0 = th_now_ms_();
    ihc_events_wait(ev, &seen, 50);
    assert_true(th_now_ms_() - t0 >= 45);
    assert_int_equal(seen, 0);
    ihc_events_emit(ev, "e", "{}");
    t0 = th_now_ms_();
    ihc_events_wait(ev, &seen, 5000); /* already newer: at once */
    assert_int_equal(seen, 1);
    assert_true(th_now_ms_() - t0 < 1000);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, kicker, ev), 0);
    t0 = th_now_ms_();
    ihc_events_wait(ev, &seen, 10000);
    assert_true(th_now_ms_() - t0 < 5000);
    pthread_join(t, NULL);
    ihc_events_free(ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_events_frames),  cmocka_unit_test(test_events_small_pieces),
        cmocka_unit_test(test_events_resume),  cmocka_unit_test(test_events_bytes_bound),
        cmocka_unit_test(test_events_threads), cmocka_unit_test(test_events_wait),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
