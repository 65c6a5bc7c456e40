/* The coordinator's request API (api.h): validation of interrupt requests, which are then
 * handed to the loop, and the JSON documents of the queries, built on the loop thread. */
#include "api.h"

#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "coordinator.h"
#include "defaults.h"
#include "docs.h"
#include "err.h"
#include "log.h"
#include "request.h"

#define COMPONENT "api"

static void refuse(ihc_api_done_fn done, void *arg, int status, const char *msg)
{
    char *s = ihc_doc_error(msg);
    done(status, s ? s : strdup("{\"error\":\"out of memory\"}"), arg);
}

/* A printable, bounded copy of untrusted text for error messages. */
static void printable(char *out, size_t cap, const char *in, size_t len)
{
    size_t k = 0;
    for (size_t i = 0; i < len && k + 4 < cap; i++) {
        unsigned char ch = (unsigned char)in[i];
        out[k++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    if (len > 0 && k + 4 >= cap) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = '\0';
}

void ihc_api_interrupt(ihc_coord *c, const char *hw, const char *reason, int64_t timeout_ms,
                       ihc_api_done_fn done, void *arg)
{
    uint64_t t0 = ihc_mono_ns();
    char msg[400];
    if (ihc_request_check(hw, reason, timeout_ms, msg, sizeof(msg)) != IHC_OK)
        goto bad;
    const ihc_config *cfg = ihc__coord_config(c);
    if (!ihc__coord_leading(c)) { /* the loop checks again before it publishes */
        char *s = ihc__coord_not_leader(c);
        done(503, s ? s : strdup("{\"error\":\"out of memory\"}"), arg);
        return;
    }
    if (strcmp(hw, "*") == 0 && !cfg->global_interrupt_enabled) {
        ihc_api_count_rejected(c);
        refuse(done, arg, 403, "global interrupt disabled (GLOBAL_INTERRUPT_ENABLED=false)");
        return;
    }
    int rc = ihc__coord_submit_interrupt(c, hw, reason, timeout_ms, t0, done, arg);
    switch (rc) {
    case IHC_OK:
        return;
    case IHC_ELIMIT:
        snprintf(msg, sizeof(msg), "too many interrupts in flight (IHC_MAX_INFLIGHT=%d)",
                 cfg->max_inflight);
        break;
    case IHC_ECLOSED:
        snprintf(msg, sizeof(msg), "coordinator shutting down");
        break;
    default:
        snprintf(msg, sizeof(msg), "cannot take the request: %s", ihc_strerror(rc));
        break;
    }
    ihc_log(IHC_LOG_WARN, COMPONENT, "interrupt refused hw=%s error=\"%s\"", hw, msg);
    refuse(done, arg, 503, msg);
    return;
bad:
    ihc_api_count_rejected(c);
    refuse(done, arg, 400, msg);
}

void ihc_api_count_rejected(ihc_coord *c)
{
    ihc__coord_count_rejected(c);
}

struct ihc_events *ihc_api_events(ihc_coord *c)
{
    return ihc__coord_events(c);
}

/* ---- queries ---- */

static bool bad_hw_filter(const char *op, const char *hw, char *msg, size_t cap)
{
    if (!hw)
        return false;
    if (strcmp(op, "sessions") == 0 && ihc_hw_valid(hw, strlen(hw), false))
        return false;
    char shown[80];
    printable(shown, sizeof(shown), hw, strlen(hw));
    if (strcmp(op, "sessions") == 0)
        snprintf(msg, cap,
                 "hardware_id: invalid hardware_id '%s' (1-128 bytes of [A-Za-z0-9._:@-])", shown);
    else
        snprintf(msg, cap, "hardware_id: not accepted by '%s'", op);
    return true;
}

void ihc_api_query_async(ihc_coord *c, const char *op, const char *hw, ihc_api_done_fn done,
                         void *arg)
{
    char msg[256];
    if (!op) {
        refuse(done, arg, 400, "missing op");
        return;
    }
    if (strcmp(op, "health") == 0) { /* answered even when the loop is busy or stopping */
        char *body = ihc__coord_health(c);
        done(body ? 200 : 500, body ? body : strdup("{\"error\":\"out of memory\"}"), arg);
        return;
    }
    if (bad_hw_filter(op, hw, msg, sizeof(msg))) {
        ihc_api_count_rejected(c);
        refuse(done, arg, 400, msg);
        return;
    }
    int rc = ihc__coord_submit_query(c, op, hw, done, arg);
    if (rc == IHC_OK)
        return;
    if (rc == IHC_EINVAL) {
        char shown[40];
        printable(shown, sizeof(shown), op, strlen(op));
        snprintf(msg, sizeof(msg), "unknown request '%s'", shown);
        refuse(done, arg, 404, msg);
    } else {
        refuse(done, arg, 503, rc == IHC_ECLOSED ? "coordinator shutting down" : ihc_strerror(rc));
    }
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int status;
    char *body;
} waiter;

static void waiter_done(int status, char *json, void *arg)
{
    waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    w->status = status;
    w->body = json;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int ihc_api_query(ihc_coord *c, const char *op, const char *hw, char **body)
{
    waiter w = {.done = false};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    ihc_api_query_async(c, op, hw, waiter_done, &w);
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    *body = w.body;
    return w.status;
}
