/* A fake coordinator for agent tests (in-process agents and real ihc-agent processes): nng PUB
 * and PULL listening on free (or fixed) ports; publishes syncs and interrupts, decodes what
 * agents send and hands out messages by type, keeping the others queued for later calls. */
#ifndef IHC_TEST_FAKE_COORD_H
#define IHC_TEST_FAKE_COORD_H

#include <nng/nng.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

struct ihc_agent;
typedef struct th_fc_item th_fc_item;

/* Zero-initialise, then th_fc_listen (or th_fc_pick_ports first, to give agents the URLs
 * before anything listens). The fake owns its sockets and its queue of received messages
 * (both released by th_fc_close). */
typedef struct {
    nng_socket pub, pull;
    bool open;
    int pub_port, report_port;
    char pub_url[64], report_url[64]; /* what agents dial: tcp://127.0.0.1:<port> */
    th_fc_item *queue;                /* received, not yet asked for (oldest first) */
    bool report_begun;                /* its syncs say it reads a report's begun sessions */
} th_fc;

/* Picks two distinct free ports and fills in the URLs; nothing listens yet. */
void th_fc_pick_ports(th_fc *fc);

/* Listens on fc's ports (picking them first when zero; after th_fc_close the same ports
 * again). Returns 0 or an nng error. */
int th_fc_listen(th_fc *fc);

/* Closes both sockets (agents see the coordinator go away) and frees the queue; the ports
 * are kept. Safe to call twice. */
void th_fc_close(th_fc *fc);

/* Publishes m, framed with its topic. Returns an ihc code. m stays the caller's. */
int th_fc_publish(th_fc *fc, const ihc_msg *m);

/* Publishes a sync for agent: epoch 0 for "*" and for each of the n hws (hws may be NULL
 * when n is 0), and fc->report_begun. Returns an ihc code. */
int th_fc_send_sync(th_fc *fc, const char *agent, const char *const *hws, size_t n);

/* Publishes an interrupt (topic "hw:<hw>\0") naming agent as the one waited for (NULL: no
 * list); attempt 0 is the first send, more is a re-send. Returns an ihc code. */
int th_fc_send_interrupt(th_fc *fc, uint64_t id, const char *hw, uint64_t epoch, const char *agent,
                         uint32_t attempt);

/* The next message of any type (queued ones first) within timeout_ms; NULL on timeout or on
 * a message that does not decode (reported on stderr). Caller frees with ihc_msg_free. */
ihc_msg *th_fc_recv(th_fc *fc, int timeout_ms);

/* The next message of type t; messages of other types are kept queued for later calls. An
 * undecodable message fails the test (fail_msg). NULL at the deadline (timeout_ms 0: only
 * what is already queued). Caller frees. */
ihc_msg *th_fc_recv_type(th_fc *fc, ihc_msg_type t, int timeout_ms);

/* Puts m (the caller's no more) back at the front of the queue: the next receive of its type
 * returns it first. */
void th_fc_unget(th_fc *fc, ihc_msg *m);

/* The next message of type t, dropping every other message on the way (queued ones too);
 * undecodable ones are reported on stderr and skipped. NULL at the deadline. Caller frees. */
ihc_msg *th_fc_recv_type_drop(th_fc *fc, ihc_msg_type t, int timeout_ms);

/* Answers hellos with a sync (epoch 0 for "*") addressed to agent_id until connected(a)
 * holds, then drops the hellos still queued; fails the test after 10 s. connected is
 * ihc_agent_connected (passed in so that this library does not link libihc-agent). */
void th_fc_connect(th_fc *fc, const struct ihc_agent *a, const char *agent_id,
                   bool (*connected)(const struct ihc_agent *a));

/* Publishes the interrupt (no agent list) every 200 ms, attempt 0, 1, …, until the report
 * for id arrives or timeout_ms passes; every other message is dropped (queued ones too).
 * NULL at the deadline or when publishing fails. Caller frees the report. */
ihc_msg *th_fc_interrupt_until_report(th_fc *fc, uint64_t id, const char *hw, uint64_t epoch,
                                      int timeout_ms);

#endif
