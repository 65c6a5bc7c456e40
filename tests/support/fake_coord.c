/* A fake coordinator for agent tests (see fake_coord.h). */
#include "fake_coord.h"

#include "harness.h"

#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pubsub0/pub.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "err.h"

struct th_fc_item {
    ihc_msg *m;
    struct th_fc_item *next;
};

/* Receive slice of th_fc_recv_type: short, so that the deadline is checked often. */
#define RECV_SLICE_MS 20

void th_fc_pick_ports(th_fc *fc)
{
    fc->pub_port = th_free_port();
    do
        fc->report_port = th_free_port();
    while (fc->report_port == fc->pub_port);
    snprintf(fc->pub_url, sizeof(fc->pub_url), "tcp://127.0.0.1:%d", fc->pub_port);
    snprintf(fc->report_url, sizeof(fc->report_url), "tcp://127.0.0.1:%d", fc->report_port);
}

int th_fc_listen(th_fc *fc)
{
    if (fc->pub_port == 0)
        th_fc_pick_ports(fc);
    int rv = nng_pub0_open(&fc->pub);
    if (rv != 0)
        return rv;
    if ((rv = nng_pull0_open(&fc->pull)) != 0) {
        nng_close(fc->pub);
        return rv;
    }
    nng_socket_set_size(fc->pull, NNG_OPT_RECVMAXSZ, IHC_WIRE_MAX_MSG);
    if ((rv = nng_listen(fc->pub, fc->pub_url, NULL, 0)) != 0 ||
        (rv = nng_listen(fc->pull, fc->report_url, NULL, 0)) != 0) {
        nng_close(fc->pub);
        nng_close(fc->pull);
        return rv;
    }
    fc->open = true;
    return 0;
}

void th_fc_close(th_fc *fc)
{
    while (fc->queue) {
        th_fc_item *it = fc->queue;
        fc->queue = it->next;
        ihc_msg_free(it->m);
        free(it);
    }
    if (!fc->open)
        return;
    nng_close(fc->pub);
    nng_close(fc->pull);
    fc->open = false;
}

int th_fc_publish(th_fc *fc, const ihc_msg *m)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = ihc_wire_encode_framed(m, NULL, &buf, &len);
    if (rc != IHC_OK)
        return rc;
    int rv = nng_send(fc->pub, buf, len, 0);
    free(buf);
    return rv == 0 ? IHC_OK : ihc_err_from_nng(rv);
}

int th_fc_send_sync(th_fc *fc, const char *agent, const char *const *hws, size_t n)
{
    ihc_epoch_info *ep = calloc(n + 1, sizeof(*ep));
    if (!ep)
        return IHC_ENOMEM;
    ep[0].hw = "*";
    for (size_t i = 0; i < n; i++)
        ep[i + 1].hw = (char *)hws[i];
    ihc_msg m = {.type = IHC_MSG_SYNC};
    m.u.sync.agent = (char *)agent;
    m.u.sync.epochs = ep;
    m.u.sync.n_epochs = n + 1;
    m.u.sync.report_begun = fc->report_begun;
    int rc = th_fc_publish(fc, &m);
    free(ep);
    return rc;
}

/* An interrupt naming an agent goes on that agent's own topic, as the coordinator's
 * re-sends do (agents subscribe only to the hardware_ids they hold sessions of). */
int th_fc_send_interrupt(th_fc *fc, uint64_t id, const char *hw, uint64_t epoch, const char *agent,
                         uint32_t attempt)
{
    char *agents[1] = {(char *)agent};
    ihc_msg m = {.type = IHC_MSG_INTERRUPT};
    m.u.interrupt = (ihc_interrupt_msg){.id = id,
                                        .hw = (char *)hw,
                                        .epoch = epoch,
                                        .reason = "test",
                                        .deadline_ms = ihc_now_ms() + 5000,
                                        .agents = agent ? agents : NULL,
                                        .n_agents = agent ? 1 : 0,
                                        .attempt = attempt};
    if (!agent)
        return th_fc_publish(fc, &m);
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = ihc_wire_encode_to(&m, NULL, agent, &buf, &len);
    if (rc != IHC_OK)
        return rc;
    int rv = nng_send(fc->pub, buf, len, 0);
    free(buf);
    return rv == 0 ? IHC_OK : ihc_err_from_nng(rv);
}

/* One message from the PULL socket within timeout_ms. IHC_OK and *out; otherwise nothing
 * arrived, or (*undecodable set, detail filled) what arrived did not decode. */
static int recv_one(th_fc *fc, int timeout_ms, ihc_msg **out, bool *undecodable, char *detail,
                    size_t cap)
{
    *out = NULL;
    *undecodable = false;
    nng_socket_set_ms(fc->pull, NNG_OPT_RECVTIMEO, timeout_ms > 0 ? timeout_ms : 1);
    nng_msg *msg = NULL;
    int rv = nng_recvmsg(fc->pull, &msg, 0);
    if (rv != 0)
        return ihc_err_from_nng(rv);
    int rc = ihc_wire_decode(nng_msg_body(msg), nng_msg_len(msg), NULL, out, detail, cap);
    nng_msg_free(msg);
    if (rc != IHC_OK)
        *undecodable = true;
    return rc;
}

/* Unlinks and returns the oldest queued message of type t (any type when t is negative). */
static ihc_msg *queue_take(th_fc *fc, int t)
{
    for (th_fc_item **pp = &fc->queue; *pp; pp = &(*pp)->next) {
        if (t < 0 || (int)(*pp)->m->type == t) {
            th_fc_item *it = *pp;
            *pp = it->next;
            ihc_msg *m = it->m;
            free(it);
            return m;
        }
    }
    return NULL;
}

static void queue_append(th_fc *fc, ihc_msg *m)
{
    th_fc_item *it = calloc(1, sizeof(*it));
    if (!it)
        fail_msg("fake coordinator: out of memory");
    it->m = m;
    th_fc_item **tail = &fc->queue;
    while (*tail)
        tail = &(*tail)->next;
    *tail = it;
}

ihc_msg *th_fc_recv(th_fc *fc, int timeout_ms)
{
    ihc_msg *m = queue_take(fc, -1);
    if (m)
        return m;
    bool bad = false;
    char detail[256] = "";
    int rc = recv_one(fc, timeout_ms, &m, &bad, detail, sizeof(detail));
    if (bad)
        fprintf(stderr, "fake coordinator: undecodable message: %s (%s)\n", ihc_strerror(rc),
                detail);
    return rc == IHC_OK ? m : NULL;
}

ihc_msg *th_fc_recv_type(th_fc *fc, ihc_msg_type t, int timeout_ms)
{
    ihc_msg *m = queue_take(fc, (int)t);
    if (m)
        return m;
    uint64_t end = th_now_ms_() + (uint64_t)timeout_ms;
    while (th_now_ms_() < end) {
        bool bad = false;
        char detail[256] = "";
        int rc = recv_one(fc, RECV_SLICE_MS, &m, &bad, detail, sizeof(detail));
        if (bad)
            fail_msg("agent sent an undecodable message: %s (%s)", ihc_strerror(rc), detail);
        if (rc != IHC_OK)
            continue;
        if (m->type == t)
            return m;
        queue_append(fc, m);
    }
    return NULL;
}

void th_fc_unget(th_fc *fc, ihc_msg *m)
{
    th_fc_item *it = calloc(1, sizeof(*it));
    if (!it)
        fail_msg("fake coordinator: out of memory");
    it->m = m;
    it->next = fc->queue;
    fc->queue = it;
}

ihc_msg *th_fc_recv_type_drop(th_fc *fc, ihc_msg_type t, int timeout_ms)
{
    uint64_t end = th_now_ms_() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now = th_now_ms_();
        if (now >= end)
            return NULL;
        ihc_msg *m = th_fc_recv(fc, (int)(end - now));
        if (m && m->type == t)
            return m;
        ihc_msg_free(m);
    }
}

void th_fc_connect(th_fc *fc, const struct ihc_agent *a, const char *agent_id,
                   bool (*connected)(const struct ihc_agent *a))
{
    uint64_t end = th_now_ms_() + 10000;
    while (!connected(a)) {
        if (th_now_ms_() > end)
            fail_msg("agent did not connect");
        ihc_msg *h = th_fc_recv_type(fc, IHC_MSG_HELLO, 100);
        if (!h)
            continue;
        ihc_msg_free(h);
        TH_PASS(th_fc_send_sync(fc, agent_id, NULL, 0));
        TH_WAIT(connected(a), 300);
    }
    ihc_msg *m;
    while ((m = th_fc_recv_type(fc, IHC_MSG_HELLO, 0)))
        ihc_msg_free(m);
}

ihc_msg *th_fc_interrupt_until_report(th_fc *fc, uint64_t id, const char *hw, uint64_t epoch,
                                      int timeout_ms)
{
    uint64_t end = th_now_ms_() + (uint64_t)timeout_ms;
    uint32_t attempt = 0;
    while (th_now_ms_() < end) {
        if (th_fc_send_interrupt(fc, id, hw, epoch, NULL, attempt++) != IHC_OK)
            return NULL;
        uint64_t next = th_now_ms_() + 200;
        while (th_now_ms_() < next) {
            ihc_msg *r = th_fc_recv(fc, (int)(next - th_now_ms_()));
            if (r && r->type == IHC_MSG_REPORT && r->u.report.id == id)
                return r;
            ihc_msg_free(r);
        }
    }
    return NULL;
}
