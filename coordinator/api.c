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
#include "err.h"
#include "log.h"
#include "version.h"

#define COMPONENT      "api"
#define TIMEOUT_MAX_MS IHC_INTERRUPT_TIMEOUT_MAX_MS

static char *dump(json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(o);
    return s;
}

static char *error_doc(const char *msg)
{
    return dump(json_pack("{s:s}", "error", msg));
}

static void refuse(ihc_api_done_fn done, void *arg, int status, const char *msg)
{
    char *s = error_doc(msg);
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

static bool utf8_valid(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    bool ok = j != NULL;
    json_decref(j);
    return ok;
}

void ihc_api_interrupt(ihc_coord *c, const char *hw, const char *reason, int64_t timeout_ms,
                       ihc_api_done_fn done, void *arg)
{
    uint64_t t0 = ihc_mono_ns();
    char msg[400];
    if (!hw || !ihc_hw_valid(hw, strlen(hw), true)) {
        char shown[80];
        printable(shown, sizeof(shown), hw ? hw : "", hw ? strlen(hw) : 0);
        snprintf(msg, sizeof(msg),
                 "hardware_id: invalid hardware_id '%s' (1-128 bytes of [A-Za-z0-9._:@-])", shown);
        goto bad;
    }
    if (strcmp(hw, "*") == 0 && !c->cfg->global_interrupt_enabled) {
        ihc_api_count_rejected(c);
        refuse(done, arg, 403, "global interrupt disabled (GLOBAL_INTERRUPT_ENABLED=false)");
        return;
    }
    size_t rlen = reason ? strlen(reason) : 0;
    if (rlen > IHC_REASON_MAX) {
        snprintf(msg, sizeof(msg), "reason: too long (%zu bytes, at most %u)", rlen,
                 (unsigned)IHC_REASON_MAX);
        goto bad;
    }
    if (reason && !utf8_valid(reason, rlen)) {
        snprintf(msg, sizeof(msg), "reason: not valid UTF-8");
        goto bad;
    }
    if (timeout_ms < 0 || timeout_ms > TIMEOUT_MAX_MS) {
        snprintf(msg, sizeof(msg),
                 "timeout_ms: %" PRId64 " out of range [0, %d] (0: INTERRUPT_TIMEOUT)", timeout_ms,
                 TIMEOUT_MAX_MS);
        goto bad;
    }
    int rc = ihc__coord_submit_interrupt(c, hw, reason, timeout_ms, t0, done, arg);
    switch (rc) {
    case IHC_OK:
        return;
    case IHC_ELIMIT:
        snprintf(msg, sizeof(msg), "too many interrupts in flight (IHC_MAX_INFLIGHT=%d)",
                 c->cfg->max_inflight);
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
    atomic_fetch_add(&c->rejected, 1);
}

/* ---- synchronous queries ---- */

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

static char *health_doc(ihc_coord *c)
{
    bool up = ihc_persist_connected(c->persist);
    return dump(json_pack("{s:s, s:s, s:s}", "status", "ok", "redis",
                          up ? "reachable" : "unreachable", "version", IHC_VERSION));
}

int ihc_api_query(ihc_coord *c, const char *op, const char *hw, char **body)
{
    *body = NULL;
    if (!op) {
        *body = error_doc("missing op");
        return 400;
    }
    if (strcmp(op, "health") == 0) { /* answered even when the loop is busy or stopping */
        *body = health_doc(c);
        return *body ? 200 : 500;
    }
    waiter w = {.done = false};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    int status;
    int rc = ihc__coord_submit_query(c, op, hw, waiter_done, &w);
    if (rc == IHC_OK) {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        status = w.status;
        *body = w.body;
    } else if (rc == IHC_EINVAL) {
        status = 404;
        *body = error_doc("unknown request");
    } else {
        status = 503;
        *body = error_doc(rc == IHC_ECLOSED ? "coordinator shutting down" : ihc_strerror(rc));
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return status;
}

/* ---- documents (loop thread) ---- */

json_t *ihc__api_modules_json(const ihc_module_info *m, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        json_t *meths = json_array();
        for (size_t j = 0; meths && j < m[i].n_methods; j++)
            json_array_append_new(meths, json_string(m[i].methods[j]));
        json_array_append_new(a, json_pack("{s:s, s:o, s:I, s:b}", "name", m[i].name, "methods",
                                           meths ? meths : json_array(), "timeout_ms",
                                           (json_int_t)m[i].timeout_ms, "enabled", m[i].enabled));
    }
    return a;
}

static json_t *data_json(const char *data)
{
    if (!data)
        return json_null();
    json_t *j = json_loads(data, JSON_DECODE_ANY, NULL);
    if (j)
        return j;
    j = json_string(data);
    return j ? j : json_null();
}

static void add_session(void *arg, const ihc_reg_session *s)
{
    json_t *arr = arg;
    json_t *o = json_object();
    if (!o)
        return;
    json_object_set_new(o, "session_id", json_string(s->session_id));
    json_object_set_new(o, "hardware_id", json_string(s->hw));
    json_object_set_new(o, "agent_id", json_string(s->agent_id));
    json_object_set_new(o, "state", json_string(s->state));
    json_object_set_new(o, "epoch", json_integer((json_int_t)s->epoch));
    json_object_set_new(o, "created_ms", json_integer(s->created_ms));
    json_object_set_new(o, "updated_ms", json_integer(s->updated_ms));
    json_object_set_new(o, "module", s->module ? json_string(s->module) : json_null());
    json_object_set_new(o, "pid", json_integer(s->pid));
    json_object_set_new(o, "data", data_json(s->data));
    json_array_append_new(arr, o);
}

static int sessions_doc(ihc_coord *c, const char *hw, char **body)
{
    if (hw && !ihc_hw_valid(hw, strlen(hw), false)) {
        char shown[80], msg[200];
        printable(shown, sizeof(shown), hw, strlen(hw));
        snprintf(msg, sizeof(msg),
                 "hardware_id: invalid hardware_id '%s' (1-128 bytes of [A-Za-z0-9._:@-])", shown);
        *body = error_doc(msg);
        return 400;
    }
    json_t *arr = json_array();
    if (arr)
        ihc_registry_foreach_session(c->reg, hw, add_session, arr);
    *body = dump(json_pack("{s:I, s:o}", "count", (json_int_t)json_array_size(arr), "sessions",
                           arr ? arr : json_array()));
    return 200;
}

static void add_hw_of_agent(void *arg, const char *hw, const char *agent_id)
{
    json_t *by_agent = arg;
    json_t *a = json_object_get(by_agent, agent_id);
    if (!a) {
        a = json_array();
        json_object_set_new(by_agent, agent_id, a);
    }
    json_array_append_new(a, json_string(hw));
}

typedef struct {
    json_t *arr;
    json_t *hws;
} agents_ctx;

static void add_agent(void *arg, const ihc_reg_agent *a)
{
    agents_ctx *x = arg;
    if (a->state == IHC_AGENT_GONE)
        return; /* the contract lists live agents; a gone one is kept only to be purged */
    json_t *hws = json_object_get(x->hws, a->agent_id);
    json_t *o = json_object();
    if (!o)
        return;
    json_object_set_new(o, "agent_id", json_string(a->agent_id));
    json_object_set_new(o, "node", json_string(a->node ? a->node : ""));
    json_object_set_new(o, "pid", json_integer(a->pid));
    json_object_set_new(o, "connected", json_boolean(a->state == IHC_AGENT_CONNECTED));
    json_object_set_new(o, "state",
                        json_string(a->state == IHC_AGENT_CONNECTED ? "connected" : "pending"));
    json_object_set_new(o, "started_ms", json_integer(a->started_ms));
    json_object_set_new(o, "last_seen_ms", json_integer(a->last_seen_ms));
    json_object_set_new(o, "sessions", json_integer((json_int_t)a->n_sessions));
    json_object_set_new(o, "hardware_ids", hws ? json_incref(hws) : json_array());
    json_object_set_new(o, "modules", ihc__api_modules_json(a->modules, a->n_modules));
    json_array_append_new(x->arr, o);
}

static int agents_doc(ihc_coord *c, char **body)
{
    agents_ctx x = {.arr = json_array(), .hws = json_object()};
    if (x.arr && x.hws) {
        ihc_registry_foreach_hw_agent(c->reg, add_hw_of_agent, x.hws);
        ihc_registry_foreach_agent(c->reg, add_agent, &x);
    }
    json_decref(x.hws);
    *body = dump(json_pack("{s:I, s:o}", "count", (json_int_t)json_array_size(x.arr), "agents",
                           x.arr ? x.arr : json_array()));
    return 200;
}

static int flags_doc(ihc_coord *c, char **body)
{
    json_t *o = json_object();
    if (o) {
        json_object_set_new(o, "global_interrupt_flag", json_boolean(c->flag));
        json_object_set_new(o, "interrupt_hardware_id",
                            c->flag ? json_string(c->flag_hw) : json_null());
        json_object_set_new(o, "set_ms", json_integer(c->flag ? c->flag_set_ms : 0));
        json_object_set_new(o, "reason", c->flag ? json_string(c->flag_reason) : json_null());
    }
    *body = dump(o);
    return 200;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Quantiles over the window of recent interrupts; q[] in, v[] out. */
static void quantiles(const ihc_coord *c, const double *q, double *v, size_t nq)
{
    for (size_t i = 0; i < nq; i++)
        v[i] = 0.0;
    if (c->win_n == 0)
        return;
    double *s = malloc(c->win_n * sizeof(*s));
    if (!s)
        return;
    memcpy(s, c->window, c->win_n * sizeof(*s));
    qsort(s, c->win_n, sizeof(*s), cmp_double);
    for (size_t i = 0; i < nq; i++) {
        size_t idx = (size_t)(q[i] * (double)(c->win_n - 1) + 0.5);
        v[i] = s[idx < c->win_n ? idx : c->win_n - 1];
    }
    free(s);
}

static int stats_doc(ihc_coord *c, char **body)
{
    static const double q[] = {0.5, 0.99};
    double v[2];
    quantiles(c, q, v, 2);
    double rate = c->total ? (double)c->succeeded / (double)c->total : 1.0;
    json_t *o = json_object();
    if (o) {
        json_object_set_new(o, "total_interrupts", json_integer((json_int_t)c->total));
        json_object_set_new(o, "successful_interrupts", json_integer((json_int_t)c->succeeded));
        json_object_set_new(o, "failed_interrupts", json_integer((json_int_t)c->failed));
        json_object_set_new(o, "success_rate", json_real(rate));
        json_object_set_new(o, "avg_time_ms",
                            json_real(c->timed ? c->sum_ms / (double)c->timed : 0.0));
        json_object_set_new(o, "p50_time_ms", json_real(v[0]));
        json_object_set_new(o, "p99_time_ms", json_real(v[1]));
        json_object_set_new(o, "active_sessions",
                            json_integer((json_int_t)ihc_registry_session_count(c->reg)));
        json_object_set_new(o, "registered_modules",
                            json_integer((json_int_t)ihc_registry_module_count(c->reg)));
        json_object_set_new(o, "agents",
                            json_integer((json_int_t)ihc_registry_live_agents(c->reg)));
        json_object_set_new(o, "inflight", json_integer((json_int_t)c->n_fl));
        json_object_set_new(o, "rejected_messages",
                            json_integer((json_int_t)atomic_load(&c->rejected)));
        json_object_set_new(o, "sessions_created", json_integer((json_int_t)c->sessions_created));
        json_object_set_new(o, "persist_backlog",
                            json_integer((json_int_t)ihc_persist_backlog(c->persist)));
        json_object_set_new(o, "persist_dropped",
                            json_integer((json_int_t)ihc_persist_dropped(c->persist)));
        json_object_set_new(o, "redis_connected", json_boolean(ihc_persist_connected(c->persist)));
        json_object_set_new(o, "uptime_s", json_real((double)(ihc_mono_ns() - c->start_ns) / 1e9));
    }
    *body = dump(o);
    return 200;
}

/* Appends printf output to a growing buffer; on ENOMEM the buffer is freed and NULL. */
static void __attribute__((format(printf, 3, 4)))
emitf(char **buf, size_t *len, const char *fmt, ...)
{
    if (!*buf)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line))
        n = sizeof(line) - 1;
    char *nb = realloc(*buf, *len + (size_t)n + 1);
    if (!nb) {
        free(*buf);
        *buf = NULL;
        return;
    }
    memcpy(nb + *len, line, (size_t)n + 1);
    *buf = nb;
    *len += (size_t)n;
}

static int metrics_doc(ihc_coord *c, char **body)
{
    static const double q[] = {0.5, 0.9, 0.99};
    double v[3];
    quantiles(c, q, v, 3);
    size_t len = 0;
    char *b = calloc(1, 1);
    emitf(&b, &len,
          "# HELP ihc_interrupts_total Interrupts finished, by result.\n"
          "# TYPE ihc_interrupts_total counter\n");
    emitf(&b, &len, "ihc_interrupts_total{result=\"success\"} %" PRIu64 "\n", c->succeeded);
    emitf(&b, &len, "ihc_interrupts_total{result=\"failure\"} %" PRIu64 "\n", c->failed);
    emitf(&b, &len,
          "# HELP ihc_interrupt_duration_ms Time from request to result (quantiles "
          "over the last %d interrupts).\n"
          "# TYPE ihc_interrupt_duration_ms summary\n",
          IHC__STATS_WINDOW);
    for (int i = 0; i < 3; i++)
        emitf(&b, &len, "ihc_interrupt_duration_ms{quantile=\"%g\"} %.6f\n", q[i], v[i]);
    emitf(&b, &len, "ihc_interrupt_duration_ms_sum %.6f\n", c->sum_ms);
    emitf(&b, &len, "ihc_interrupt_duration_ms_count %" PRIu64 "\n", c->timed);
    emitf(&b, &len,
          "# HELP ihc_active_sessions Active sessions known to the coordinator.\n"
          "# TYPE ihc_active_sessions gauge\nihc_active_sessions %zu\n",
          ihc_registry_session_count(c->reg));
    emitf(&b, &len,
          "# HELP ihc_agents Agents that are connected or expected back.\n"
          "# TYPE ihc_agents gauge\nihc_agents %zu\n",
          ihc_registry_live_agents(c->reg));
    emitf(&b, &len,
          "# HELP ihc_inflight Interrupts in flight.\n# TYPE ihc_inflight gauge\n"
          "ihc_inflight %zu\n",
          c->n_fl);
    emitf(&b, &len,
          "# HELP ihc_rejected_messages_total Bad messages and refused requests.\n"
          "# TYPE ihc_rejected_messages_total counter\nihc_rejected_messages_total %" PRIu64 "\n",
          (uint64_t)atomic_load(&c->rejected));
    emitf(&b, &len,
          "# HELP ihc_persist_backlog Redis writes waiting.\n"
          "# TYPE ihc_persist_backlog gauge\nihc_persist_backlog %zu\n",
          ihc_persist_backlog(c->persist));
    emitf(&b, &len,
          "# HELP ihc_persist_dropped_total Redis writes dropped because the backlog was full.\n"
          "# TYPE ihc_persist_dropped_total counter\nihc_persist_dropped_total %" PRIu64 "\n",
          ihc_persist_dropped(c->persist));
    emitf(&b, &len,
          "# HELP ihc_redis_up Whether Redis answered the coordinator's last command.\n"
          "# TYPE ihc_redis_up gauge\nihc_redis_up %d\n",
          ihc_persist_connected(c->persist) ? 1 : 0);
    emitf(&b, &len,
          "# HELP ihc_uptime_seconds Seconds since the coordinator started.\n"
          "# TYPE ihc_uptime_seconds gauge\nihc_uptime_seconds %.3f\n",
          (double)(ihc_mono_ns() - c->start_ns) / 1e9);
    *body = b;
    return 200;
}

int ihc__api_build(ihc_coord *c, const char *op, const char *hw, char **body)
{
    *body = NULL;
    if (strcmp(op, "sessions") == 0)
        return sessions_doc(c, hw, body);
    if (strcmp(op, "agents") == 0)
        return agents_doc(c, body);
    if (strcmp(op, "flags") == 0)
        return flags_doc(c, body);
    if (strcmp(op, "flags_reset") == 0) {
        ihc__coord_flags_reset(c);
        ihc_log(IHC_LOG_INFO, COMPONENT, "flags reset on request");
        return flags_doc(c, body);
    }
    if (strcmp(op, "stats") == 0)
        return stats_doc(c, body);
    if (strcmp(op, "health") == 0) {
        *body = health_doc(c);
        return 200;
    }
    if (strcmp(op, "metrics") == 0)
        return metrics_doc(c, body);
    char msg[96], shown[40];
    printable(shown, sizeof(shown), op, strlen(op));
    snprintf(msg, sizeof(msg), "unknown request '%s'", shown);
    *body = error_doc(msg);
    return 404;
}
