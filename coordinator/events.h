/* The coordinator's live events (GET /v1/events): a bounded in-memory history of the last N
 * events, each with an id, that any number of Server-Sent Events readers follow with their
 * own cursor. Emitting never waits for a reader: readers share the history instead of having
 * queues filled by the emitter, so a reader's backlog is the distance from its cursor to the
 * newest event, bounded by the history; a reader that falls out of it has overflowed.
 * Thread-safe. */
#ifndef IHC_COORD_EVENTS_H
#define IHC_COORD_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct ihc_events ihc_events;
typedef struct ihc_events_frame ihc_events_frame;

/* Longest event id text ("<boot>-<seq>") with its NUL. */
#define IHC_EVENTS_ID_MAX 48

/* Where one reader is: the next event to send and the part of a frame already sent. Owned by
 * the reader; initialised by ihc_events_cursor_init and released by ihc_events_cursor_fini. */
typedef struct {
    uint64_t next;           /* seq of the next event to start */
    ihc_events_frame *frame; /* the event being sent (held), NULL between events */
    size_t off;              /* bytes of frame already sent */
} ihc_events_cursor;

typedef struct {
    uint64_t emitted; /* events emitted since start */
    uint64_t oldest;  /* seq of the oldest event held (0: none yet) */
    uint64_t newest;  /* seq of the newest event (0: none yet) */
    size_t held;      /* events held */
    size_t bytes;     /* their text */
} ihc_events_stats;

/* history: events kept (>= 1); max_bytes: their text at most (0: 64 MiB), the oldest go
 * first. Ids are "<boot>-<seq>": boot is this process's start (wall ms), seq counts from 1,
 * so an id from an earlier coordinator process is recognised as such. Caller owns *out
 * (ihc_events_free). Errors: IHC_EINVAL, IHC_ENOMEM. */
int ihc_events_new(ihc_events **out, size_t history, size_t max_bytes);

/* Frees ev; every cursor must have been released. Accepts NULL. */
void ihc_events_free(ihc_events *ev);

/* Appends one event: type (a token such as "result") and data (one JSON document, copied).
 * NULL ev or data: nothing (data is NULL when its builder ran out of memory). Costs one
 * allocation and copy of data; never waits for readers beyond a short lock. */
void ihc_events_emit(ihc_events *ev, const char *type, const char *data);

/* ihc_events_emit, then frees data (malloc'd; may be NULL). */
void ihc_events_emit_take(ihc_events *ev, const char *type, char *data);

/* Positions cur for a reader that last saw last_id (a Last-Event-ID): NULL or "" for only
 * new events; "0" for every event held; an id of this process for the events after it; an
 * id of another coordinator process for every event held. *gap is set when events the
 * reader has not seen are no longer held (or may never have been: another process).
 * Errors: IHC_EINVAL (last_id is not of the form "<boot>-<seq>" nor "0"; cur is then
 * initialised for new events). */
int ihc_events_cursor_init(ihc_events *ev, const char *last_id, ihc_events_cursor *cur, bool *gap);

/* Releases what cur holds. */
void ihc_events_cursor_fini(ihc_events *ev, ihc_events_cursor *cur);

/* Copies the Server-Sent Events text of the events at cur into buf (at most cap bytes;
 * events may be split across calls) and advances cur. Returns the bytes copied, 0 when
 * nothing new, -1 when cur fell behind the history (events it had not sent were dropped:
 * the reader has overflowed). */
ssize_t ihc_events_read(ihc_events *ev, ihc_events_cursor *cur, char *buf, size_t cap);

/* True when ihc_events_read would not return 0 (something to send, or overflowed). */
bool ihc_events_pending(ihc_events *ev, const ihc_events_cursor *cur);

/* True when cur fell behind the history (see ihc_events_read). */
bool ihc_events_behind(ihc_events *ev, const ihc_events_cursor *cur);

/* Waits until an event newer than *seen is emitted, ihc_events_kick is called, or
 * timeout_ms passes; then sets *seen to the newest seq. */
void ihc_events_wait(ihc_events *ev, uint64_t *seen, int timeout_ms);

/* Wakes every ihc_events_wait. */
void ihc_events_kick(ihc_events *ev);

void ihc_events_stats_get(ihc_events *ev, ihc_events_stats *st);

/* The id text of seq ("<boot>-<seq>") into buf of IHC_EVENTS_ID_MAX bytes; returns buf. */
char *ihc_events_id(const ihc_events *ev, uint64_t seq, char *buf);

#endif
