/* The agent's connections to its coordinators (private): one SUB socket dialing every
 * coordinator's PUB, one PUSH socket per coordinator for reports and events (PUSH on one
 * socket would round-robin between them), the receive thread, and the queues of messages
 * waiting to be sent. It knows nothing of the agent: it calls back through the ops it is
 * given. Coordinator i is the i-th URL of both lists. */
#ifndef IHC_AGENT_TRANSPORT_H
#define IHC_AGENT_TRANSPORT_H

#include <nng/nng.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nbio.h"
#include "sockaddr.h"
#include "urllist.h"

/* What the transport calls; ctx is passed back to each. */
typedef struct {
    /* Receive thread: one framed message (topic, NUL, body) as received from coordinator
     * link (index in the URL lists); t0_ns (monotonic) is when its batch arrived. The frame is
     * only valid during the call. Returns false when the calling thread lost the receive role
     * during the call (another thread goes on with ihc__transport_rx_resume): the transport
     * then returns at once, touching nothing. */
    bool (*on_frame)(void *ctx, const uint8_t *frame, size_t len, uint64_t t0_ns, int link);
    /* Receive thread, before every wait: runs what is due at now_ns and returns the monotonic
     * time of the next thing due (the thread sleeps until then, or a message, or a wake). */
    uint64_t (*on_timers)(void *ctx, uint64_t now_ns);
    /* nng's thread: a connection (SUB when sub, else PUSH) came up or went down; the pipe
     * counts (ihc__transport_links) already include it. Must not block. */
    void (*on_link)(void *ctx, bool sub, bool up);
    void *ctx;
} ihc__transport_ops;

#define IHC__SUB_ADDRS_MAX 16 /* SUB connections whose endpoint the hello names */
#define IHC__RX_BATCH      64 /* messages taken from SUB at once */

/* A message waiting to be sent (the transport's own queue, in order). */
typedef struct ihc__txq ihc__txq;

typedef struct ihc__transport ihc__transport;

/* One coordinator's sending side: its PUSH socket, one aio in flight at a time, the rest in
 * the link's queue (guarded by the transport's tx_mu). */
typedef struct {
    ihc__transport *t;
    int index;
    nng_socket push;
    bool push_open;
    nng_dialer sub_dialer; /* this coordinator's dialer on the shared SUB socket */
    atomic_int sub_pipes, push_pipes;
    /* its sync said it reads a report's begun sessions; cleared when a connection drops (the
     * coordinator behind it may be another one, or another version, when it comes back) */
    atomic_bool report_begun;
    nng_aio *aio;
    bool busy;
    ihc__txq *head, *tail;
    size_t n, reports;
} ihc__txlink;

struct ihc__transport {
    ihc__transport_ops ops;
    bool interrupts_first; /* a batch's "hw:" frames before the others (INTERRUPT_PRIORITY) */
    bool high_priority;    /* the receive thread's priority (ihc_thread_priority) */
    /* for tls+tcp:// URLs (common/tls.h); NULL: none */
    const struct ihc_tls *tls;
    nng_socket sub;
    bool sub_open;
    atomic_int sub_pipes, push_pipes; /* over every coordinator */
    ihc__txlink links[IHC_URL_LIST_MAX];
    size_t n_links;
    /* the receive thread waits in poll() on wake_fd (an eventfd) while waiter's receive is
     * pending on SUB (common/nbio.h: its callback writes wake_fd); what came meanwhile is then
     * taken without blocking on rx_aio */
    int wake_fd;
    ihc_nb_waiter waiter;
    nng_aio *rx_aio;
    pthread_mutex_t wake_mu; /* a wake's write against wake_fd's close; rx, rx_done */
    pthread_cond_t rx_cv;    /* rx_done set */
    pthread_t rx;            /* the receive thread (it may be handed on: rx_resume) */
    bool rx_started, rx_done;
    atomic_bool stopping;
    /* the batch being delivered: here, not on the stack, so that a thread taking the receive
     * role over delivers the rest (receive thread only) */
    nng_msg *batch[IHC__RX_BATCH];
    size_t bn, bi;
    uint64_t bt0;
    bool more; /* the last batch was full: look again before waiting */

    /* sending: per link (above); the queues are the transport's, so that nothing sits in
     * nng's queues when a socket closes */
    pthread_mutex_t tx_mu;
    pthread_cond_t tx_cv; /* signalled when a queue runs empty */
    nng_aio *now_aio;     /* send_now's, under tx_mu */
    bool tx_init, tx_stop;
    atomic_uint_fast64_t n_drops;

    /* the SUB connections (one per coordinator): their link, and their local endpoints for
     * the hello */
    pthread_mutex_t addr_mu;
    struct {
        uint32_t pipe;
        int link;                        /* coordinator index, -1: unknown */
        char addr[IHC_SOCKADDR_STR_MAX]; /* "" when unknown */
    } sub_addr[IHC__SUB_ADDRS_MAX];
    size_t n_sub_addr;
};

#define IHC__TX_QUEUE_MAX 1024 /* messages queued; beyond it events are dropped */
#define IHC__PENDING_MAX  1024 /* reports queued; beyond it the oldest report is dropped */

/* Opens the sockets on t (zero-initialised; ops, flags and tls set) with their options and pipe
 * notifications, subscribes to "hw:*\0" (global interrupts) and to topic (tlen bytes, the
 * agent's own "ag:…\0"; hardware_ids come with ihc__transport_subscribe), and dials every URL
 * of pub_url and report_url (comma-separated lists of the same length, one item per
 * coordinator) without waiting (nng redials until the coordinator is there). Errors:
 * IHC_EINVAL (lists of different lengths, or a URL nng refuses; logged naming it),
 * IHC_ETRANSPORT, IHC_ENOMEM. On error call ihc__transport_fini. */
int ihc__transport_open(ihc__transport *t, const char *pub_url, const char *report_url,
                        const char *topic, size_t tlen);

/* Starts the receive thread. Errors: IHC_ENOMEM. */
int ihc__transport_start(ihc__transport *t);

/* The calling thread takes the receive role over from one that lost it inside on_frame (it is
 * detached and left to return on its own) and runs the receive loop until the transport
 * stops. Returns at once when it is already stopping. */
void ihc__transport_rx_resume(ihc__transport *t);

/* Whether coordinator link reads a report's begun sessions (false for an unknown link). */
bool ihc__transport_report_begun(ihc__transport *t, int link);
/* Receive thread: link's coordinator said (in a sync) whether it reads them. */
void ihc__transport_set_report_begun(ihc__transport *t, int link, bool on);

/* Any thread: the receive thread runs on_timers now instead of when its wait ends. */
void ihc__transport_wake(ihc__transport *t);

/* Stops and joins the receive thread (no callbacks from it after this). */
void ihc__transport_stop_rx(ihc__transport *t);

/* Sends buf (an event: hello, heartbeat, session_begin/end) to every coordinator without
 * blocking, queueing it behind what waits; dropped and counted when IHC__TX_QUEUE_MAX
 * messages wait for that coordinator. what names it in the log. Takes ownership of buf
 * (malloc'd). */
void ihc__transport_send(ihc__transport *t, uint8_t *buf, size_t len, const char *what);

/* As ihc__transport_send, to every coordinator but except (-1: none excepted). */
void ihc__transport_send_except(ihc__transport *t, uint8_t *buf, size_t len, const char *what,
                                int except);

/* Sends an encoded report to coordinator link (the one the interrupt came from) without
 * blocking (every coordinator when link is -1, unknown): queued (a copy) when it cannot go
 * now, kept until it can; beyond IHC__PENDING_MAX queued reports the oldest is dropped. buf
 * stays the caller's. */
void ihc__transport_send_report(ihc__transport *t, const uint8_t *buf, size_t len, int link);

/* Pipes up now, over every coordinator (either pointer may be NULL). */
void ihc__transport_links(ihc__transport *t, int *sub, int *push);

/* Pipes up now to coordinator link (either pointer may be NULL). */
void ihc__transport_link(ihc__transport *t, size_t link, int *sub, int *push);

/* Starts (on) or stops receiving the broadcasts of hardware_id hw (topic "hw:<hw>\0"): an
 * agent subscribes to the hardware_ids it holds sessions of, so nng drops every other
 * interrupt before it wakes the receive thread. Any thread; does nothing before open. */
void ihc__transport_subscribe(ihc__transport *t, const char *hw, bool on);

/* Copies the local endpoints of the SUB connections up now (at most max) into out; returns
 * how many. */
size_t ihc__transport_sub_addrs(ihc__transport *t, char (*out)[IHC_SOCKADDR_STR_MAX], size_t max);

/* Messages dropped so far (queue full, out of memory, left unsent at close). */
uint64_t ihc__transport_drops(ihc__transport *t);

/* At close, after the last send: waits up to timeout_ms for the queues to go out while their
 * PUSH connections are up (not at all for one that is down), then stops sending, takes back
 * and frees what is left, and closes the sockets. Accepts a transport that was never opened or
 * only partly. */
void ihc__transport_fini(ihc__transport *t, int timeout_ms);

#endif
