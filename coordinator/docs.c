/* The coordinator's documents (docs.h): JSON through jansson, Prometheus text by hand. */
#include "docs.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonbuf.h"
#include "version.h"

static char *dump(json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(o);
    return s;
}

char *ihc_doc_error(const char *msg)
{
    return dump(json_pack("{s:s}", "error", msg));
}

char *ihc_doc_health(bool redis_up)
{
    return dump(json_pack("{s:s, s:s, s:s}", "status", "ok", "redis",
                          redis_up ? "reachable" : "unreachable", "version", IHC_VERSION));
}

static json_t *str_or_null(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

char *ihc_doc_health_role(bool redis_up, const char *self, const ihc_leader_view *v)
{
    return dump(json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:I}", "status", "ok", "redis",
                          redis_up ? "reachable" : "unreachable", "version", IHC_VERSION, "id",
                          self ? self : "", "role", v->leader ? "leader" : "standby", "leader",
                          str_or_null(v->leader_id), "term", (json_int_t)v->term));
}

char *ihc_doc_not_leader(const char *self, const ihc_leader_view *v)
{
    char msg[512];
    if (v->leader_id[0] && strcmp(v->leader_id, self ? self : "") != 0)
        snprintf(msg, sizeof(msg),
                 "not the leader: this coordinator is a standby; the leader is %s", v->leader_id);
    else
        snprintf(msg, sizeof(msg), "not the leader: no coordinator leads now (election under way)");
    bool other = v->leader_id[0] && strcmp(v->leader_id, self ? self : "") != 0;
    return dump(json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:I}", "error", msg, "code",
                          "IHC_ENOTLEADER", "role", "standby", "id", self ? self : "", "leader",
                          other ? json_string(v->leader_id) : json_null(), "leader_control",
                          str_or_null(other ? v->leader_control : NULL), "leader_http",
                          str_or_null(other ? v->leader_http : NULL), "term", (json_int_t)v->term));
}

json_t *ihc_doc_modules_json(const ihc_module_info *m, size_t n)
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

char *ihc_doc_modules_text(const ihc_module_info *m, size_t n)
{
    json_t *a = ihc_doc_modules_json(m, n);
    char *s = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    return s;
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

char *ihc_doc_sessions(const ihc_registry *r, const char *hw)
{
    json_t *arr = json_array();
    if (arr)
        ihc_registry_foreach_session(r, hw, add_session, arr);
    return dump(json_pack("{s:I, s:o}", "count", (json_int_t)json_array_size(arr), "sessions",
                          arr ? arr : json_array()));
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
    json_object_set_new(o, "modules", ihc_doc_modules_json(a->modules, a->n_modules));
    json_array_append_new(x->arr, o);
}

char *ihc_doc_agents(const ihc_registry *r)
{
    agents_ctx x = {.arr = json_array(), .hws = json_object()};
    if (x.arr && x.hws) {
        ihc_registry_foreach_hw_agent(r, add_hw_of_agent, x.hws);
        ihc_registry_foreach_agent(r, add_agent, &x);
    }
    json_decref(x.hws);
    return dump(json_pack("{s:I, s:o}", "count", (json_int_t)json_array_size(x.arr), "agents",
                          x.arr ? x.arr : json_array()));
}

char *ihc_doc_flags(const ihc_flags_view *f)
{
    json_t *o = json_object();
    if (o) {
        json_object_set_new(o, "global_interrupt_flag", json_boolean(f->set));
        json_object_set_new(o, "interrupt_hardware_id", f->set ? json_string(f->hw) : json_null());
        json_object_set_new(o, "set_ms", json_integer(f->set ? f->set_ms : 0));
        json_object_set_new(o, "reason", f->set ? json_string(f->reason) : json_null());
    }
    return dump(o);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Quantiles over the window of recent interrupts; q[] in, v[] out. */
static void quantiles(const ihc_stats_view *c, const double *q, double *v, size_t nq)
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

char *ihc_doc_stats(const ihc_stats_view *c)
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
        json_object_set_new(o, "active_sessions", json_integer((json_int_t)c->active_sessions));
        json_object_set_new(o, "registered_modules",
                            json_integer((json_int_t)c->registered_modules));
        json_object_set_new(o, "agents", json_integer((json_int_t)c->agents));
        json_object_set_new(o, "inflight", json_integer((json_int_t)c->inflight));
        json_object_set_new(o, "rejected_messages", json_integer((json_int_t)c->rejected));
        json_object_set_new(o, "sessions_created", json_integer((json_int_t)c->sessions_created));
        json_object_set_new(o, "persist_backlog", json_integer((json_int_t)c->persist_backlog));
        json_object_set_new(o, "persist_dropped", json_integer((json_int_t)c->persist_dropped));
        json_object_set_new(o, "redis_connected", json_boolean(c->redis_up));
        json_object_set_new(o, "uptime_s", json_real(c->uptime_s));
    }
    return dump(o);
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

/* A label value in the text format: backslash, double quote and line feed escaped. */
static void label_escape(char *out, size_t cap, const char *in)
{
    size_t n = 0;
    for (; *in && n + 3 < cap; in++) {
        if (*in == '\\' || *in == '"') {
            out[n++] = '\\';
            out[n++] = *in;
        } else if (*in == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else {
            out[n++] = *in;
        }
    }
    out[n] = '\0';
}

/* One histogram's series; labels is "" or 'module="x",' (with the trailing comma). */
static void emit_hist(char **b, size_t *len, const char *name, const char *labels,
                      const ihc_hist *h)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < IHC_HIST_N; i++) {
        cum += h->counts[i];
        emitf(b, len, "%s_bucket{%sle=\"%g\"} %" PRIu64 "\n", name, labels, ihc_hist_bounds[i],
              cum);
    }
    cum += h->counts[IHC_HIST_N];
    emitf(b, len, "%s_bucket{%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, cum);
    size_t ll = strlen(labels);
    if (ll > 0) { /* {module="x"} without the trailing comma */
        emitf(b, len, "%s_sum{%.*s} %.9g\n", name, (int)(ll - 1), labels, h->sum);
        emitf(b, len, "%s_count{%.*s} %" PRIu64 "\n", name, (int)(ll - 1), labels, h->count);
    } else {
        emitf(b, len, "%s_sum %.9g\n%s_count %" PRIu64 "\n", name, h->sum, name, h->count);
    }
}

char *ihc_doc_metrics(const ihc_stats_view *c)
{
    static const ihc_hist empty;
    size_t len = 0;
    char *b = calloc(1, 1);
    emitf(&b, &len,
          "# HELP ihc_build_info The coordinator's version.\n# TYPE ihc_build_info gauge\n"
          "ihc_build_info{version=\"%s\"} 1\n",
          IHC_VERSION);
    emitf(&b, &len,
          "# HELP ihc_interrupts_total Interrupts finished, by result.\n"
          "# TYPE ihc_interrupts_total counter\n");
    emitf(&b, &len, "ihc_interrupts_total{result=\"success\"} %" PRIu64 "\n", c->succeeded);
    emitf(&b, &len, "ihc_interrupts_total{result=\"failure\"} %" PRIu64 "\n", c->failed);
    emitf(&b, &len,
          "# HELP ihc_interrupt_duration_seconds Time from an interrupt request to "
          "its result, interrupts finished by this process.\n"
          "# TYPE ihc_interrupt_duration_seconds histogram\n");
    emit_hist(&b, &len, "ihc_interrupt_duration_seconds", "", c->latency ? c->latency : &empty);
    emitf(&b, &len,
          "# HELP ihc_module_duration_seconds Time a module took to stop, as its agent reported "
          "it, by module name (at most %zu names; later ones as module=\"" IHC_HIST_OTHER "\").\n"
          "# TYPE ihc_module_duration_seconds histogram\n",
          c->module_latency ? c->module_latency->max : 0);
    const ihc_hist_family *mf = c->module_latency;
    for (size_t i = 0; mf && i < mf->n; i++) {
        char esc[2 * IHC_ID_MAX + 1], labels[2 * IHC_ID_MAX + 16];
        label_escape(esc, sizeof(esc), mf->s[i].label);
        snprintf(labels, sizeof(labels), "module=\"%s\",", esc);
        emit_hist(&b, &len, "ihc_module_duration_seconds", labels, &mf->s[i].h);
    }
    if (mf && mf->other_used)
        emit_hist(&b, &len, "ihc_module_duration_seconds", "module=\"" IHC_HIST_OTHER "\",",
                  &mf->other);
    emitf(&b, &len,
          "# HELP ihc_active_sessions Active sessions known to the coordinator.\n"
          "# TYPE ihc_active_sessions gauge\nihc_active_sessions %zu\n",
          c->active_sessions);
    emitf(&b, &len,
          "# HELP ihc_agents Agents that are connected or expected back.\n"
          "# TYPE ihc_agents gauge\nihc_agents %zu\n",
          c->agents);
    emitf(&b, &len,
          "# HELP ihc_inflight_interrupts Interrupts waiting for agents' reports.\n"
          "# TYPE ihc_inflight_interrupts gauge\nihc_inflight_interrupts %zu\n",
          c->inflight);
    emitf(&b, &len,
          "# HELP ihc_rejected_messages_total Bad messages and refused requests.\n"
          "# TYPE ihc_rejected_messages_total counter\nihc_rejected_messages_total %" PRIu64 "\n",
          c->rejected);
    emitf(&b, &len,
          "# HELP ihc_persist_backlog Redis writes waiting.\n"
          "# TYPE ihc_persist_backlog gauge\nihc_persist_backlog %zu\n",
          c->persist_backlog);
    emitf(&b, &len,
          "# HELP ihc_persist_dropped_total Redis writes dropped because the backlog was full.\n"
          "# TYPE ihc_persist_dropped_total counter\nihc_persist_dropped_total %" PRIu64 "\n",
          c->persist_dropped);
    emitf(&b, &len,
          "# HELP ihc_redis_up Whether Redis answered the coordinator's last command.\n"
          "# TYPE ihc_redis_up gauge\nihc_redis_up %d\n",
          c->redis_up ? 1 : 0);
    emitf(&b, &len,
          "# HELP ihc_uptime_seconds Seconds since the coordinator started.\n"
          "# TYPE ihc_uptime_seconds gauge\nihc_uptime_seconds %.3f\n",
          c->uptime_s);
    return b;
}

char *ihc_doc_metrics_http(const ihc_http_stats_view *h)
{
    size_t len = 0;
    char *b = calloc(1, 1);
    emitf(&b, &len,
          "# HELP ihc_http_connections HTTP connections open, by kind.\n"
          "# TYPE ihc_http_connections gauge\n"
          "ihc_http_connections{kind=\"request\"} %zu\nihc_http_connections{kind=\"stream\"} %zu\n",
          h->conns >= h->streams ? h->conns - h->streams : 0, h->streams);
    emitf(&b, &len,
          "# HELP ihc_http_refused_total HTTP connections or streams refused at a limit.\n"
          "# TYPE ihc_http_refused_total counter\n"
          "ihc_http_refused_total{limit=\"max_conns\"} %" PRIu64 "\n"
          "ihc_http_refused_total{limit=\"max_conns_per_ip\"} %" PRIu64 "\n"
          "ihc_http_refused_total{limit=\"max_streams\"} %" PRIu64 "\n",
          h->refused_max_conns, h->refused_per_ip, h->refused_streams);
    emitf(&b, &len,
          "# HELP ihc_http_request_deadline_closed_total Connections closed because a whole "
          "request did not arrive within IHC_HTTP_REQUEST_DEADLINE.\n"
          "# TYPE ihc_http_request_deadline_closed_total counter\n"
          "ihc_http_request_deadline_closed_total %" PRIu64 "\n",
          h->deadline_closed);
    emitf(&b, &len,
          "# HELP ihc_events_total Live events emitted (GET /v1/events).\n"
          "# TYPE ihc_events_total counter\nihc_events_total %" PRIu64 "\n",
          h->events_emitted);
    emitf(&b, &len,
          "# HELP ihc_events_held Events held for Last-Event-ID resume.\n"
          "# TYPE ihc_events_held gauge\nihc_events_held %zu\n",
          h->events_held);
    emitf(&b, &len,
          "# HELP ihc_event_streams_overflowed_total Event stream clients dropped because they "
          "fell further behind than IHC_EVENTS_HISTORY.\n"
          "# TYPE ihc_event_streams_overflowed_total counter\n"
          "ihc_event_streams_overflowed_total %" PRIu64 "\n",
          h->streams_overflowed);
    return b;
}

/* ---- live events ---- */

/* The events of every interrupt and of every session begun and ended are written directly:
 * per interrupt, jansson's tree of values cost the coordinator's loop more than their text. */
char *ihc_doc_interrupt_event(const ihc_inflight *f, int64_t ts_ms)
{
    ihc_jbuf b = {0};
    ihc_jbuf_reserve(&b, 160 + f->n_expected * 48);
    ihc_jbuf_fmt(&b, "{\"interrupt_id\":%" PRIu64 ",\"hardware_id\":", f->id);
    ihc_jbuf_str(&b, f->hw);
    ihc_jbuf_fmt(&b, ",\"epoch\":%" PRIu64 ",\"reason\":", f->epoch);
    ihc_jbuf_str(&b, f->reason ? f->reason : "");
    IHC_JBUF_LIT(&b, ",\"expected\":[");
    for (size_t i = 0; i < f->n_expected; i++) {
        if (i)
            IHC_JBUF_LIT(&b, ",");
        ihc_jbuf_str(&b, f->expected[i].agent);
    }
    IHC_JBUF_LIT(&b, "],\"ts_ms\":");
    ihc_jbuf_int(&b, ts_ms);
    IHC_JBUF_LIT(&b, "}");
    return ihc_jbuf_take(&b);
}

char *ihc_doc_session_event(const ihc_reg_session *s, bool begin)
{
    ihc_jbuf b = {0};
    ihc_jbuf_reserve(&b, 192);
    IHC_JBUF_LIT(&b, "{\"session_id\":");
    ihc_jbuf_str(&b, s->session_id);
    IHC_JBUF_LIT(&b, ",\"hardware_id\":");
    ihc_jbuf_str(&b, s->hw);
    IHC_JBUF_LIT(&b, ",\"agent_id\":");
    ihc_jbuf_str(&b, s->agent_id);
    if (begin) {
        IHC_JBUF_LIT(&b, ",\"module\":");
        ihc_jbuf_str_or_null(&b, s->module);
        ihc_jbuf_fmt(&b, ",\"epoch\":%" PRIu64 ",\"created_ms\":%" PRId64 "}", s->epoch,
                     s->created_ms);
    } else {
        IHC_JBUF_LIT(&b, ",\"state\":");
        ihc_jbuf_str(&b, s->state ? s->state : "done");
        ihc_jbuf_fmt(&b, ",\"ts_ms\":%" PRId64 "}", s->updated_ms);
    }
    return ihc_jbuf_take(&b);
}

char *ihc_doc_agent_event(const ihc_reg_agent *a, int64_t ts_ms)
{
    return dump(json_pack("{s:s, s:s, s:i, s:I, s:I}", "agent_id", a->agent_id, "node",
                          a->node ? a->node : "", "pid", (int)a->pid, "sessions",
                          (json_int_t)a->n_sessions, "ts_ms", (json_int_t)ts_ms));
}

char *ihc_doc_redis_event(size_t backlog, int64_t ts_ms)
{
    return dump(
        json_pack("{s:I, s:I}", "backlog", (json_int_t)backlog, "ts_ms", (json_int_t)ts_ms));
}
