/* A pipe that a test hands to a logger (ihc_agent_log_setup) and fills: a line the logger
 * writes while the pipe is full waits there, so a test can hold a thread at a known log line
 * (e.g. an agent's "hello sent", between the hello's snapshot and its send) and read on. */
#ifndef IHC_TEST_LOGPIPE_H
#define IHC_TEST_LOGPIPE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct {
    int rd, wr; /* the pipe; the logger writes to wr (blocking) */
    int fill;   /* wr opened again, non-blocking: fills the pipe up to the last byte */
    char tail[128];
    size_t n_tail;
    pthread_t drainer; /* reads what is logged while the logger's owner closes */
} th_logpipe;

/* Opens the pipe, of size bytes where the kernel allows (less to fill; 0: the kernel's
 * default). Hand lp->wr to the logger. */
void th_logpipe_open(th_logpipe *lp, int size);
/* Reads until needle was seen in the logged lines (the filler's bytes are NULs); false after
 * timeout_ms. */
bool th_logpipe_until(th_logpipe *lp, const char *needle, int timeout_ms);
/* Reads everything logged so far, without waiting. */
void th_logpipe_skip(th_logpipe *lp);
/* Fills the pipe: the next line logged waits until the test reads. Byte by byte at the end,
 * as a line (up to PIPE_BUF) is written whole or not at all. */
void th_logpipe_fill(th_logpipe *lp);
/* Reads (and discards) everything from now on, on a thread of its own. */
void th_logpipe_start_drain(th_logpipe *lp);
/* After the logger was pointed elsewhere: closes the pipe and joins the drainer. */
void th_logpipe_close(th_logpipe *lp);

#endif
