/* libFuzzer target for the agent's local endpoint as main has it (agent/local.c: nng REP on
 * ipc://, MessagePack local_request as `ihc run` sends it): hostile bytes sent to a real
 * endpoint of a real agent in this process, over a real ipc socket; every request must be
 * answered with a local_response (an error naming the problem, or the op's result). A "wait"
 * is not sent: it is answered only when an interrupt comes. */
#include "err.h"
#include "local.h"
#include "log.h"
#include "wire.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_local: check failed: %s (line %d)\n", #cond, __LINE__);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAX_INPUT (IHC_DATA_MAX + 8u * 1024u) /* below the endpoint's RECVMAXSZ */

static ihc_agent *agent;
static ihc_local *local;
static nng_socket req;
static char dir[] = "/tmp/ihc-fuzz-local-XXXXXX";

static void cleanup(void)
{
    nng_close(req);
    ihc_local_shutdown(local);
    ihc_agent_close(agent);
    ihc_local_close(local);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz_local: could not remove %s\n", dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    ihc_log_opts lo = {.level = IHC_LOG_ERROR, .fd = 2};
    ihc_log_setup(&lo);
    if (!mkdtemp(dir))
        abort();
    char url[128], err[512];
    snprintf(url, sizeof url, "ipc://%s/local.sock", dir);
    ihc_agent_opts o;
    ihc_agent_opts_init(&o);
    o.agent_id = "fuzz-local";
    o.pub_url = "inproc://ihc-fuzz-local-pub"; /* no coordinator: nothing listens there */
    o.report_url = "inproc://ihc-fuzz-local-report";
    o.max_active_sessions = 16;
    if (ihc_agent_open(&agent, &o) != IHC_OK ||
        ihc_local_open(&local, agent, url, 16, 100, err, sizeof err) != IHC_OK) {
        fprintf(stderr, "fuzz_local: cannot start the endpoint: %s\n", err);
        abort();
    }
    if (nng_req0_open(&req) != 0 || nng_socket_set_ms(req, NNG_OPT_RECVTIMEO, 10000) != 0 ||
        nng_socket_set_ms(req, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE) != 0 ||
        nng_dial(req, url, NULL, 0) != 0)
        abort();
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT)
        return 0;
    ihc_msg *m = NULL;
    if (ihc_wire_decode(data, size, NULL, &m, NULL, 0) == IHC_OK &&
        m->type == IHC_MSG_LOCAL_REQUEST && m->u.local_request.op &&
        strcmp(m->u.local_request.op, "wait") == 0) {
        ihc_msg_free(m);
        return 0;
    }
    ihc_msg_free(m);
    CHECK(nng_send(req, (void *)data, size, 0) == 0);
    void *buf = NULL;
    size_t len = 0;
    int rv = nng_recv(req, &buf, &len, NNG_FLAG_ALLOC);
    if (rv != 0)
        fprintf(stderr, "fuzz_local: no answer: %s\n", nng_strerror(rv));
    CHECK(rv == 0);
    m = NULL;
    char detail[160];
    int rc = ihc_wire_decode(buf, len, NULL, &m, detail, sizeof detail);
    CHECK(rc == IHC_OK && m->type == IHC_MSG_LOCAL_RESPONSE);
    const ihc_local_response *r = &m->u.local_response;
    CHECK(r->status >= 0 && r->status < IHC__ERR_COUNT);
    CHECK(r->status == IHC_OK || (r->error != NULL && r->error[0] != '\0'));
    ihc_msg_free(m);
    nng_free(buf, len);
    return 0;
}
