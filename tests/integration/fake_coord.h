/* A fake coordinator for agent integration tests: listens with nng PUB and PULL on free
 * ports (or given ones), decodes what agents send and publishes syncs and interrupts. */
#ifndef IHC_TEST_FAKE_COORD_H
#define IHC_TEST_FAKE_COORD_H

#include <nng/nng.h>
#include <stdbool.h>
#include <stdint.h>

#include "wire.h"

typedef struct {
    nng_socket pub, pull;
    bool open;
    int pub_port, report_port;
    char pub_url[64], report_url[64]; /* what agents dial: tcp://127.0.0.1:<port> */
} fake_coord;

/* Picks free ports for both sockets (listening only later, with fc_listen). */
void fc_pick_ports(fake_coord *fc);

/* Listens on fc's ports (picking them first when zero). Returns 0 or an nng error. */
int fc_listen(fake_coord *fc);

void fc_close(fake_coord *fc);

/* Receives the next message from agents within timeout_ms; NULL on timeout or a message
 * that does not decode. Caller frees with ihc_msg_free. */
ihc_msg *fc_recv(fake_coord *fc, int timeout_ms);

/* Receives until a message of type t arrives (dropping others); NULL at the deadline. */
ihc_msg *fc_recv_type(fake_coord *fc, ihc_msg_type t, int timeout_ms);

/* Publishes a sync for agent: epoch 0 for "*" and for each of the n hws. */
int fc_send_sync(fake_coord *fc, const char *agent, const char *const *hws, size_t n);

/* Publishes an interrupt (topic "hw:<hw>\0"). */
int fc_send_interrupt(fake_coord *fc, uint64_t id, const char *hw, uint64_t epoch);

/* Publishes the interrupt every 200 ms until the report for id arrives (other messages are
 * dropped), or timeout_ms passes. Caller frees the report. */
ihc_msg *fc_interrupt_until_report(fake_coord *fc, uint64_t id, const char *hw, uint64_t epoch,
                                   int timeout_ms);

/* Log file helpers: the whole file as a string (caller frees; "" when missing), and whether
 * it contains needle at or after byte offset from. */
char *fc_slurp(const char *path);
bool fc_log_has(const char *path, const char *needle, size_t from);
size_t fc_file_size(const char *path);

#endif
