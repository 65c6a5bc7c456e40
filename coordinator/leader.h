/* Leadership among coordinators sharing one Redis: a lease on ihc:leader (SET NX PX
 * IHC_LEASE_TTL, renewed every ttl/3 by compare-and-extend) and a term (INCR ihc:term, the
 * fencing token of every write the leader makes), kept by one thread with its own Redis
 * connection. Standbys poll every ttl/5 and take the lease when it lapses. A leader that
 * cannot renew may publish until its lease would have ended by its own monotonic clock
 * (counted from when the last successful renew was sent), then steps down; a leader that
 * knew of no standby at its last renew keeps serving alone while Redis is away (nobody can
 * take over), as a single coordinator always did; so does one that finds Redis unreachable
 * when it starts (a provisional term, without a lease, until Redis answers). */
#ifndef IHC_COORD_LEADER_H
#define IHC_COORD_LEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

typedef struct ihc_leader ihc_leader;

/* Interrupt ids reserved per block (with the lease, then whenever half a block is left). */
#define IHC_LEADER_ID_BLOCK 10000

typedef struct {
    ihc_store_opts store; /* Redis (copied; client_name defaults to "ihc-coordinator-lease") */
    const char *id;       /* IHC_COORDINATOR_ID (copied) */
    double ttl_s;         /* IHC_LEASE_TTL */
    uint64_t first_id;    /* the next interrupt id the coordinator would hand out */
    /* addresses written next to the lease for standbys' 503 answers (copied, may be NULL) */
    const char *control, *http, *pub, *report;
    /* Leader thread, right after the lease was taken with term and before the view says
     * leader: read what the new leader needs from Redis with st (the leader's connection).
     * May be NULL. */
    void (*on_elected)(void *arg, ihc_store *st, uint64_t term, uint64_t ids_hi);
    /* Leader thread: the view changed (elected, stepped down, leader seen, ids granted). May
     * be NULL. Must not block. */
    void (*on_change)(void *arg);
    void *arg;
} ihc_leader_opts;

/* What this coordinator knows of the leadership (ihc_leader_view_get). */
typedef struct {
    bool leader;              /* this coordinator holds the lease */
    bool solo;                /* leader, and no standby polled within 3 TTLs */
    bool provisional;         /* leading alone without a lease: Redis was unreachable
                               * when this coordinator started (as ihc always served);
                               * it takes the lease, or steps down, once Redis answers */
    uint64_t term;            /* leader: its term; standby: the last term seen */
    char leader_id[256];      /* "" when unknown or nobody */
    char leader_control[512]; /* the leader's advertised control URL ("" when unknown) */
    char leader_http[512];    /* the leader's advertised HTTP base URL */
    char leader_pub[512];     /* the leader's advertised PUB URL (standbys watch it) */
} ihc_leader_view;

/* Starts the leadership thread (it tries to take the lease at once). Errors: IHC_EINVAL (bad
 * URL, ttl below 0.5 s), IHC_ENOMEM, IHC_EINTERNAL. Caller owns *out (ihc_leader_close). */
int ihc_leader_open(ihc_leader **out, const ihc_leader_opts *o);

/* Waits up to timeout_ms for the thread's first attempt at the lease (so that a
 * coordinator starting alone leads before it answers its first request). */
void ihc_leader_wait_first(ihc_leader *l, uint32_t timeout_ms);

/* Stops the thread and, when leading, gives the lease up (standbys take over at once).
 * Accepts NULL. */
void ihc_leader_close(ihc_leader *l);

/* Thread-safe snapshot of the view. */
void ihc_leader_view_get(ihc_leader *l, ihc_leader_view *v);

/* The term this coordinator may publish and write with now, 0 when it may not: it leads
 * and its lease has not ended by its own clock (or it leads alone). Thread-safe, no lock. */
uint64_t ihc_leader_term(ihc_leader *l);

/* A write fenced with term was refused (ihc:term moved): when term is still this
 * coordinator's, it steps down (logged once). Thread-safe. */
void ihc_leader_fenced(ihc_leader *l, uint64_t term);

/* Interrupt ids: the highest id reserved in Redis for this leader (0: none). The loop says
 * which id it hands out next; when fewer than half a block are left the thread reserves
 * the next block (fenced by the term). Thread-safe. */
uint64_t ihc_leader_ids_hi(ihc_leader *l);
void ihc_leader_ids_next(ihc_leader *l, uint64_t next_id);

#endif
