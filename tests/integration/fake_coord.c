/* A fake coordinator for agent integration tests (see fake_coord.h). */
#include "fake_coord.h"

#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pubsub0/pub.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clock.h"
#include "err.h"
#include "harness.h"

void fc_pick_ports(fake_coord *fc)
{
    fc->pub_port = th_free_port();
    do
        fc->report_port = th_free_port();
    while (fc->report_port == fc->pub_port);
    snprintf(fc->pub_url, sizeof(fc->pub_url), "tcp://127.0.0.1:%d", fc->pub_port);
    snprintf(fc->report_url, sizeof(fc->report_url), "tcp://127.0.0.1:%d", fc->report_port);
}

int fc_listen(fake_coord *fc)
{
    if (fc->pub_port == 0)
        fc_pick_ports(fc);
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

void fc_close(fake_coord *fc)
{
    if (!fc->open)
        return;
    nng_close(fc->pub);
    nng_close(fc->pull);
    fc->open = false;
}

ihc_msg *fc_recv(fake_coord *fc, int timeout_ms)
{
    nng_socket_set_ms(fc->pull, NNG_OPT_RECVTIMEO, timeout_ms > 0 ? timeout_ms : 1);
    nng_msg *msg = NULL;
    if (nng_recvmsg(fc->pull, &msg, 0) != 0)
        return NULL;
    ihc_msg *m = NULL;
    char detail[256] = "";
    int rc = ihc_wire_decode(nng_msg_body(msg), nng_msg_len(msg), NULL, &m, detail, sizeof(detail));
    nng_msg_free(msg);
    if (rc != IHC_OK) {
        fprintf(stderr, "fake coordinator: undecodable message: %s (%s)\n", ihc_strerror(rc),
                detail);
        return NULL;
    }
    return m;
}

ihc_msg *fc_recv_type(fake_coord *fc, ihc_msg_type t, int timeout_ms)
{
    uint64_t end = th_now_ms_() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now = th_now_ms_();
        if (now >= end)
            return NULL;
        ihc_msg *m = fc_recv(fc, (int)(end - now));
        if (m && m->type == t)
            return m;
        ihc_msg_free(m);
    }
}

static int publish(fake_coord *fc, const ihc_msg *m)
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

int fc_send_sync(fake_coord *fc, const char *agent, const char *const *hws, size_t n)
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
    int rc = publish(fc, &m);
    free(ep);
    return rc;
}

int fc_send_interrupt(fake_coord *fc, uint64_t id, const char *hw, uint64_t epoch)
{
    ihc_msg m = {.type = IHC_MSG_INTERRUPT};
    m.u.interrupt.id = id;
    m.u.interrupt.hw = (char *)hw;
    m.u.interrupt.epoch = epoch;
    m.u.interrupt.reason = "integration test";
    m.u.interrupt.deadline_ms = ihc_now_ms() + 5000;
    return publish(fc, &m);
}

ihc_msg *fc_interrupt_until_report(fake_coord *fc, uint64_t id, const char *hw, uint64_t epoch,
                                   int timeout_ms)
{
    uint64_t end = th_now_ms_() + (uint64_t)timeout_ms;
    uint32_t attempt = 0;
    while (th_now_ms_() < end) {
        ihc_msg m = {.type = IHC_MSG_INTERRUPT};
        m.u.interrupt.id = id;
        m.u.interrupt.hw = (char *)hw;
        m.u.interrupt.epoch = epoch;
        m.u.interrupt.reason = "integration test";
        m.u.interrupt.deadline_ms = ihc_now_ms() + 5000;
        m.u.interrupt.attempt = attempt++;
        if (publish(fc, &m) != IHC_OK)
            return NULL;
        uint64_t next = th_now_ms_() + 200;
        while (th_now_ms_() < next) {
            ihc_msg *r = fc_recv(fc, (int)(next - th_now_ms_()));
            if (r && r->type == IHC_MSG_REPORT && r->u.report.id == id)
                return r;
            ihc_msg_free(r);
        }
    }
    return NULL;
}

char *fc_slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return strdup("");
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1024 + 1 > cap)
            buf = realloc(buf, cap *= 2);
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

bool fc_log_has(const char *path, const char *needle, size_t from)
{
    char *s = fc_slurp(path);
    bool found = strlen(s) >= from && strstr(s + from, needle) != NULL;
    free(s);
    return found;
}

size_t fc_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (size_t)st.st_size : 0;
}
