/* Logging: one line per event on stderr — time, level, component, message and key=value
 * ids — as text, or as JSON lines when configured. Thread-safe; a line is written with
 * one write(2) so lines from several threads never interleave. */
#ifndef IHC_LOG_H
#define IHC_LOG_H

#include <stdbool.h>
#include <stdint.h>

typedef enum { IHC_LOG_DEBUG = 0, IHC_LOG_INFO, IHC_LOG_WARN, IHC_LOG_ERROR } ihc_log_level;

typedef struct {
    ihc_log_level level; /* lines below it are dropped */
    bool json;           /* JSON lines instead of text */
    bool interrupts;     /* LOG_INTERRUPTS: lines logged with ihc_log_interrupt */
    bool timing;         /* LOG_TIMING: see ihc_log_timing() */
    int fd;              /* where lines go; 2 (stderr) by default */
} ihc_log_opts;

/* Sets process-wide options. Call once at start-up, before threads log. NULL resets. */
void ihc_log_setup(const ihc_log_opts *o);

/* Logs one line. By convention fmt is "what happened key=value key=value…" — a message
 * followed by ids and timings; values with spaces are quoted ("reason=\"user stop\"").
 * Text:  2026-11-22T10:00:00.123Z INFO  coordinator interrupt done id=17 hw=dev-1
 * JSON:  {"ts":"…","level":"info","component":"coordinator","msg":"interrupt done",
 *         "id":"17","hw":"dev-1"} */
void ihc_log(ihc_log_level lvl, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like ihc_log at INFO, but only when LOG_INTERRUPTS is on. */
void ihc_log_interrupt(const char *component, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* True when ihc_log_interrupt writes lines (to skip building one). */
bool ihc_log_interrupts(void);

/* True when LOG_TIMING is on: callers add timing fields ("time_ms=0.42") only then. */
bool ihc_log_timing(void);

/* True when lvl would be written (to skip building expensive lines). */
bool ihc_log_enabled(ihc_log_level lvl);

/* At most one line per interval for a warning that may repeat (refusals, closures): the
 * events in between are counted and reported with the next line. Zero-initialise. Not
 * locked: the caller serialises the calls on one limiter. */
typedef struct {
    uint64_t last_ns;  /* when the last line was due, monotonic; 0: never */
    uint64_t unlogged; /* events since then; callers may add events that share one line */
} ihc_log_limit;

/* True when a line is due at now_ns (monotonic); *folded then receives the events folded
 * into it (unlogged since the last line). False counts this event for the next line. */
bool ihc_log_limit_due(ihc_log_limit *lim, uint64_t now_ns, uint64_t every_ns, uint64_t *folded);

/* Parses "debug|info|warn|error"; returns -1 when unknown. */
int ihc_log_level_parse(const char *s);

#endif
