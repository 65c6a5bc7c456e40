/* The coordinator's live events (events.h): a ring of finished Server-Sent Events frames
 * ("id: …\nevent: …\ndata: …\n\n") that readers copy from with their own cursor. */
#include "events.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "err.h"
#include "thread.h"

#define DEFAULT_MAX_BYTES (64u * 1024u * 1024u)
#define ID_PREFIX_MAX     (4 + IHC_EVENTS_ID_MAX) /* "id: " + id + "\n" */

/* One event's SSE text. The ring holds one reference and a reader in the middle of sending
 * it another, so an event dropped from the ring can still be finished. Under ev->mu. */
struct ihc_events_frame {
    int refs;
    size_t len;
    char *text; /* into buf: the id line is written in front of the body once seq is known */
    char buf[];
};

struct ihc_events {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ihc_events_frame **ring; /* cap slots; ring[(head + i) % cap] has seq oldest + i */
    size_t cap, head, n;
    size_t bytes, max_bytes;
    uint64_t oldest, newest; /* 0 while empty / none yet */
    uint64_t emitted;
    unsigned waiters;
    unsigned kicks;
    int64_t boot_ms;
};

static void frame_unref(ihc_events_frame *f)
{
    if (f && --f->refs == 0)
        free(f);
}

int ihc_events_new(ihc_events **out, size_t history, size_t max_bytes)
{
    if (!out || history == 0)
        return IHC_EINVAL;
    ihc_events *ev = calloc(1, sizeof(*ev));
    if (!ev)
        return IHC_ENOMEM;
    ev->ring = calloc(history, sizeof(*ev->ring));
    if (!ev->ring || ihc_cond_init_mono(&ev->cv) != 0) {
        free(ev->ring);
        free(ev);
        return IHC_ENOMEM;
    }
    pthread_mutex_init(&ev->mu, NULL);
    ev->cap = history;
    ev->max_bytes = max_bytes ? max_bytes : DEFAULT_MAX_BYTES;
    ev->boot_ms = ihc_now_ms();
    *out = ev;
    return IHC_OK;
}

void ihc_events_free(ihc_events *ev)
{
    if (!ev)
        return;
    for (size_t i = 0; i < ev->n; i++)
        frame_unref(ev->ring[(ev->head + i) % ev->cap]);
    free(ev->ring);
    pthread_cond_destroy(&ev->cv);
    pthread_mutex_destroy(&ev->mu);
    free(ev);
}

char *ihc_events_id(const ihc_events *ev, uint64_t seq, char *buf)
{
    snprintf(buf, IHC_EVENTS_ID_MAX, "%" PRId64 "-%" PRIu64, ev->boot_ms, seq);
    return buf;
}

/* Drops the oldest event. Under ev->mu. */
static void drop_oldest(ihc_events *ev)
{
    ihc_events_frame *f = ev->ring[ev->head];
    ev->ring[ev->head] = NULL;
    ev->head = (ev->head + 1) % ev->cap;
    ev->n--;
    ev->bytes -= f->len;
    ev->oldest++;
    frame_unref(f);
}

/* Bytes of data once every line break is turned into a new "data:" line (the SSE form of a
 * multi-line value); JSON documents from jansson have none. */
static size_t data_size(const char *data, size_t len, size_t *breaks)
{
    size_t n = 0;
    for (const char *p = data; (p = memchr(p, '\n', len - (size_t)(p - data))) != NULL; p++)
        n++;
    *breaks = n;
    return len + n * strlen("data: ");
}

void ihc_events_emit(ihc_events *ev, const char *type, const char *data)
{
    if (!ev || !data || !type)
        return;
    size_t dlen = strlen(data), breaks = 0;
    size_t body =
        strlen("event: ") + strlen(type) + strlen("\ndata: ") + data_size(data, dlen, &breaks) + 2;
    /* built outside the lock; only the id line is written under it */
    ihc_events_frame *f = malloc(sizeof(*f) + ID_PREFIX_MAX + body + 1);
    if (!f)
        return;
    char *p = f->buf + ID_PREFIX_MAX;
    p += sprintf(p, "event: %s\ndata: ", type);
    if (breaks == 0) {
        memcpy(p, data, dlen);
        p += dlen;
    } else {
        for (const char *s = data; *s; s++) {
            *p++ = *s;
            if (*s == '\n')
                p += sprintf(p, "data: ");
        }
    }
    memcpy(p, "\n\n", 3);
    f->refs = 1;

    pthread_mutex_lock(&ev->mu);
    uint64_t seq = ++ev->newest;
    char id[IHC_EVENTS_ID_MAX];
    char line[ID_PREFIX_MAX + 1];
    int il = snprintf(line, sizeof(line), "id: %s\n", ihc_events_id(ev, seq, id));
    f->text = f->buf + ID_PREFIX_MAX - il;
    memcpy(f->text, line, (size_t)il);
    f->len = (size_t)il + body;
    if (ev->n == ev->cap)
        drop_oldest(ev);
    if (ev->n == 0)
        ev->oldest = seq;
    ev->ring[(ev->head + ev->n) % ev->cap] = f;
    ev->n++;
    ev->bytes += f->len;
    while (ev->n > 1 && ev->bytes > ev->max_bytes)
        drop_oldest(ev);
    ev->emitted++;
    if (ev->waiters)
        pthread_cond_broadcast(&ev->cv);
    pthread_mutex_unlock(&ev->mu);
}

void ihc_events_emit_take(ihc_events *ev, const char *type, char *data)
{
    ihc_events_emit(ev, type, data);
    free(data);
}

/* "<boot>-<seq>" with both parts decimal. */
static bool parse_id(const char *s, int64_t *boot, uint64_t *seq)
{
    char *end = NULL;
    if (*s < '0' || *s > '9')
        return false;
    long long b = strtoll(s, &end, 10);
    if (*end != '-' || end[1] < '0' || end[1] > '9')
        return false;
    const char *q = end + 1;
    unsigned long long n = strtoull(q, &end, 10);
    if (*end != '\0')
        return false;
    *boot = b;
    *seq = n;
    return true;
}

int ihc_events_cursor_init(ihc_events *ev, const char *last_id, ihc_events_cursor *cur, bool *gap)
{
    memset(cur, 0, sizeof(*cur));
    *gap = false;
    int64_t boot = 0;
    uint64_t seq = 0;
    bool all = last_id && strcmp(last_id, "0") == 0;
    bool given = last_id && last_id[0] && !all;
    bool ok = !given || parse_id(last_id, &boot, &seq);
    pthread_mutex_lock(&ev->mu);
    uint64_t first = ev->n ? ev->oldest : ev->newest + 1;
    if (!ok || !(given || all)) {
        cur->next = ev->newest + 1;
    } else if (all) {
        cur->next = first;
        *gap = first > 1; /* events since start were dropped */
    } else if (boot != ev->boot_ms) {
        cur->next = first; /* another process: what it missed is unknown */
        *gap = true;
    } else if (seq >= ev->newest) {
        cur->next = ev->newest + 1; /* up to date (or an id not handed out yet) */
    } else if (seq + 1 < first) {
        cur->next = first;
        *gap = true;
    } else {
        cur->next = seq + 1;
    }
    pthread_mutex_unlock(&ev->mu);
    return ok ? IHC_OK : IHC_EINVAL;
}

void ihc_events_cursor_fini(ihc_events *ev, ihc_events_cursor *cur)
{
    if (!cur->frame)
        return;
    pthread_mutex_lock(&ev->mu);
    frame_unref(cur->frame);
    pthread_mutex_unlock(&ev->mu);
    cur->frame = NULL;
}

/* Under ev->mu. */
static bool behind(const ihc_events *ev, const ihc_events_cursor *cur)
{
    return !cur->frame && cur->next <= ev->newest && (ev->n == 0 || cur->next < ev->oldest);
}

ssize_t ihc_events_read(ihc_events *ev, ihc_events_cursor *cur, char *buf, size_t cap)
{
    size_t n = 0;
    bool lost = false;
    pthread_mutex_lock(&ev->mu);
    while (n < cap) {
        if (!cur->frame) {
            if (cur->next > ev->newest)
                break;
            if (behind(ev, cur)) {
                lost = true;
                break;
            }
            cur->frame = ev->ring[(ev->head + (cur->next - ev->oldest)) % ev->cap];
            cur->frame->refs++;
            cur->off = 0;
            cur->next++;
        }
        size_t k = cur->frame->len - cur->off;
        if (k > cap - n)
            k = cap - n;
        memcpy(buf + n, cur->frame->text + cur->off, k);
        n += k;
        cur->off += k;
        if (cur->off == cur->frame->len) {
            frame_unref(cur->frame);
            cur->frame = NULL;
            cur->off = 0;
        }
    }
    pthread_mutex_unlock(&ev->mu);
    return n == 0 && lost ? -1 : (ssize_t)n;
}

bool ihc_events_pending(ihc_events *ev, const ihc_events_cursor *cur)
{
    pthread_mutex_lock(&ev->mu);
    bool p = cur->frame || cur->next <= ev->newest;
    pthread_mutex_unlock(&ev->mu);
    return p;
}

bool ihc_events_behind(ihc_events *ev, const ihc_events_cursor *cur)
{
    pthread_mutex_lock(&ev->mu);
    bool b = behind(ev, cur);
    pthread_mutex_unlock(&ev->mu);
    return b;
}

void ihc_events_wait(ihc_events *ev, uint64_t *seen, int timeout_ms)
{
    pthread_mutex_lock(&ev->mu);
    if (ev->newest == *seen && timeout_ms > 0) {
        struct timespec until = ihc_mono_abstime(ihc_mono_ns() + (uint64_t)timeout_ms * 1000000ull);
        unsigned kicks = ev->kicks;
        ev->waiters++;
        while (ev->newest == *seen && ev->kicks == kicks &&
               pthread_cond_timedwait(&ev->cv, &ev->mu, &until) == 0)
            ;
        ev->waiters--;
    }
    *seen = ev->newest;
    pthread_mutex_unlock(&ev->mu);
}

void ihc_events_kick(ihc_events *ev)
{
    pthread_mutex_lock(&ev->mu);
    ev->kicks++;
    pthread_cond_broadcast(&ev->cv);
    pthread_mutex_unlock(&ev->mu);
}

void ihc_events_stats_get(ihc_events *ev, ihc_events_stats *st)
{
    pthread_mutex_lock(&ev->mu);
    *st = (ihc_events_stats){.emitted = ev->emitted,
                             .oldest = ev->n ? ev->oldest : 0,
                             .newest = ev->newest,
                             .held = ev->n,
                             .bytes = ev->bytes};
    pthread_mutex_unlock(&ev->mu);
}
