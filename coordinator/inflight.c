/* Aggregation of one interrupt: which agents answered (their decoded reports are kept as they
 * came, nothing copied), when to re-send, and the result document, written in one pass. No
 * I/O here; the coordinator loop drives it. */
#include "inflight.h"
#include "jsonbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

static char *xstrdup(const char *s)
{
    return strdup(s ? s : "");
}

static int by_agent(const void *a, const void *b)
{
    return strcmp((*(ihc_ifl_agent *const *)a)->agent, (*(ihc_ifl_agent *const *)b)->agent);
}

int ihc_inflight_new(ihc_inflight **out, const ihc_inflight_params *p)
{
    ihc_inflight *f = calloc(1, sizeof(*f));
    if (!f)
        return IHC_ENOMEM;
    f->id = p->id;
    f->epoch = p->epoch;
    f->t0_ns = p->t0_ns;
    f->deadline_ns = p->t0_ns + p->timeout_ns;
    f->deadline_ms = p->deadline_ms;
    f->backoff_ns = p->resend_ns ? p->resend_ns : 1;
    f->backoff_max_ns = p->resend_max_ns > f->backoff_ns ? p->resend_max_ns : f->backoff_ns;
    f->next_resend_ns = p->t0_ns + f->backoff_ns;
    f->hw = xstrdup(p->hw);
    f->reason = xstrdup(p->reason);
    if (!f->hw || !f->reason)
        goto nomem;
    if (p->n_expected) {
        f->expected = calloc(p->n_expected, sizeof(*f->expected));
        f->by_id = calloc(p->n_expected, sizeof(*f->by_id));
        if (!f->expected || !f->by_id)
            goto nomem;
        for (size_t i = 0; i < p->n_expected; i++) {
            if (!(f->expected[i].agent = xstrdup(p->expected[i])))
                goto nomem;
            f->by_id[i] = &f->expected[i];
            f->n_expected = i + 1;
        }
        qsort(f->by_id, f->n_expected, sizeof(*f->by_id), by_agent);
    }
    *out = f;
    return IHC_OK;
nomem:
    ihc_inflight_free(f);
    return IHC_ENOMEM;
}

void ihc_inflight_free(ihc_inflight *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n_expected; i++) {
        free(f->expected[i].agent);
        ihc_msg_free(f->expected[i].report);
    }
    free(f->expected);
    free(f->by_id);
    for (size_t i = 0; i < f->n_extra; i++)
        ihc_msg_free(f->extra[i]);
    free(f->extra);
    free(f->hw);
    free(f->reason);
    free(f->error);
    free(f);
}

/* The expected slot of agent, or NULL. */
static ihc_ifl_agent *slot_of(const ihc_inflight *f, const char *agent)
{
    size_t lo = 0, hi = f->n_expected;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->by_id[mid]->agent, agent);
        if (c == 0)
            return f->by_id[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const ihc_report_msg *ihc_inflight_report_of(const ihc_inflight *f, const char *agent)
{
    ihc_ifl_agent *s = slot_of(f, agent);
    if (s)
        return s->report ? &s->report->u.report : NULL;
    for (size_t i = 0; i < f->n_extra; i++)
        if (strcmp(f->extra[i]->u.report.agent, agent) == 0)
            return &f->extra[i]->u.report;
    return NULL;
}

int ihc_inflight_report_take(ihc_inflight *f, ihc_msg **m)
{
    if (f->finished)
        return IHC_ECLOSED;
    if (!*m || (*m)->type != IHC_MSG_REPORT || !(*m)->u.report.agent)
        return IHC_EINVAL;
    const ihc_report_msg *r = &(*m)->u.report;
    ihc_ifl_agent *s = slot_of(f, r->agent);
    if (s) {
        if (s->report)
            return IHC_EEXIST;
        s->report = *m;
        f->n_answered++;
    } else {
        for (size_t i = 0; i < f->n_extra; i++)
            if (strcmp(f->extra[i]->u.report.agent, r->agent) == 0)
                return IHC_EEXIST;
        if (f->n_extra == f->cap_extra) {
            size_t cap = f->cap_extra ? f->cap_extra * 2 : 4;
            ihc_msg **ne = realloc(f->extra, cap * sizeof(*ne));
            if (!ne)
                return IHC_ENOMEM;
            f->extra = ne;
            f->cap_extra = cap;
        }
        f->extra[f->n_extra++] = *m;
    }
    f->n_modules += r->n_modules;
    f->n_sessions += r->n_sessions;
    *m = NULL;
    return IHC_OK;
}

int ihc_inflight_report(ihc_inflight *f, const ihc_report_msg *r)
{
    if (f->finished)
        return IHC_ECLOSED;
    if (!r->agent)
        return IHC_EINVAL;
    /* a copy that owns everything, the same as a report decoded off the wire */
    ihc_msg in = {.type = IHC_MSG_REPORT, .ts_ms = 1};
    in.u.report = *r;
    uint8_t *buf = NULL;
    size_t len = 0;
    ihc_msg *m = NULL;
    int rc = ihc_wire_encode(&in, NULL, &buf, &len);
    if (rc == IHC_OK)
        rc = ihc_wire_decode(buf, len, NULL, &m, NULL, 0);
    free(buf);
    if (rc != IHC_OK)
        return rc == IHC_ENOMEM ? IHC_ENOMEM : IHC_EINVAL;
    rc = ihc_inflight_report_take(f, &m);
    ihc_msg_free(m);
    return rc;
}

bool ihc_inflight_complete(const ihc_inflight *f)
{
    return f->n_answered == f->n_expected;
}

int ihc_inflight_missing(const ihc_inflight *f, const char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    size_t k = f->n_expected - f->n_answered;
    if (k == 0)
        return IHC_OK;
    const char **v = malloc(k * sizeof(*v));
    if (!v)
        return IHC_ENOMEM;
    size_t j = 0;
    for (size_t i = 0; i < f->n_expected; i++)
        if (!f->expected[i].report)
            v[j++] = f->expected[i].agent;
    *out = v;
    *n = j;
    return IHC_OK;
}

bool ihc_inflight_resend_due(const ihc_inflight *f, uint64_t now_ns)
{
    return !f->finished && !ihc_inflight_complete(f) && now_ns >= f->next_resend_ns;
}

uint32_t ihc_inflight_resent(ihc_inflight *f, uint64_t now_ns)
{
    f->attempt++;
    f->backoff_ns *= 2;
    if (f->backoff_ns > f->backoff_max_ns)
        f->backoff_ns = f->backoff_max_ns;
    f->next_resend_ns = now_ns + f->backoff_ns;
    return f->attempt;
}

bool ihc_inflight_expired(const ihc_inflight *f, uint64_t now_ns)
{
    return now_ns >= f->deadline_ns;
}

uint64_t ihc_inflight_next_ns(const ihc_inflight *f)
{
    if (ihc_inflight_complete(f))
        return f->t0_ns;
    return f->next_resend_ns < f->deadline_ns ? f->next_resend_ns : f->deadline_ns;
}

const char *ihc_inflight_status_name(ihc_mod_status s)
{
    switch (s) {
    case IHC_MOD_OK:
        return "ok";
    case IHC_MOD_TIMED_OUT:
        return "timed_out";
    case IHC_MOD_FAILED:
        return "failed";
    case IHC_MOD_DISABLED:
        return "disabled";
    }
    return "failed";
}

const ihc_report_msg *ihc_inflight_report_at(const ihc_inflight *f, size_t i)
{
    if (i < f->n_expected)
        return f->expected[i].report ? &f->expected[i].report->u.report : NULL;
    return &f->extra[i - f->n_expected]->u.report;
}

/* Appends "; " + text to buf (bounded by IHC_REASON_MAX). */
static void err_append(char *buf, size_t cap, const char *text)
{
    size_t len = strlen(buf);
    if (len + 1 >= cap)
        return;
    snprintf(buf + len, cap - len, "%s%s", len ? "; " : "", text);
}

int ihc_inflight_finish(ihc_inflight *f, uint64_t now_ns, bool persisted)
{
    if (f->finished)
        return IHC_OK;
    f->finished = true;
    f->persisted = persisted;
    f->total_time_ms = now_ns > f->t0_ns ? (double)(now_ns - f->t0_ns) / 1e6 : 0.0;
    char buf[IHC_REASON_MAX + 1] = "";
    if (!ihc_inflight_complete(f)) {
        char part[IHC_REASON_MAX + 1] = "agents missing: ";
        bool first = true;
        for (size_t i = 0; i < f->n_expected; i++) {
            if (f->expected[i].report)
                continue;
            size_t len = strlen(part);
            snprintf(part + len, sizeof(part) - len, "%s%s", first ? "" : ", ",
                     f->expected[i].agent);
            first = false;
        }
        err_append(buf, sizeof(buf), part);
    }
    for (size_t k = 0; k < f->n_expected + f->n_extra; k++) {
        const ihc_report_msg *r = ihc_inflight_report_at(f, k);
        for (size_t i = 0; r && i < r->n_modules; i++) {
            const ihc_module_result *m = &r->modules[i];
            if (m->status == IHC_MOD_OK || m->status == IHC_MOD_DISABLED)
                continue;
            char part[512];
            if (m->status == IHC_MOD_TIMED_OUT)
                snprintf(part, sizeof(part), "module %s timed out on %s", m->name, r->agent);
            else
                snprintf(part, sizeof(part), "module %s failed on %s%s%.200s", m->name, r->agent,
                         m->error ? ": " : "", m->error ? m->error : "");
            err_append(buf, sizeof(buf), part);
        }
    }
    f->success = buf[0] == '\0';
    if (!f->success && !(f->error = strdup(buf)))
        return IHC_ENOMEM;
    return IHC_OK;
}

/* ---- the result document: one growing buffer, written in order (jsonbuf.h) ---- */

/* A set of strings seen so far (open addressing over pointers), for unions without repeats
 * in one pass. */
typedef struct {
    const char **v;
    size_t cap;
} strset;

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* True when s was new (and is now in the set). */
static bool strset_add(strset *set, const char *s)
{
    if (set->cap == 0)
        return true;
    size_t i = (size_t)str_hash(s) & (set->cap - 1);
    while (set->v[i]) {
        if (strcmp(set->v[i], s) == 0)
            return false;
        i = (i + 1) & (set->cap - 1);
    }
    set->v[i] = s;
    return true;
}

static bool strset_init(strset *set, size_t n)
{
    set->cap = 0;
    set->v = NULL;
    if (n == 0)
        return true;
    size_t cap = 8;
    while (cap < n * 2)
        cap *= 2;
    set->v = calloc(cap, sizeof(*set->v));
    if (!set->v)
        return false;
    set->cap = cap;
    return true;
}

int ihc_inflight_result(const ihc_inflight *f, ihc_ifl_result *out)
{
    memset(out, 0, sizeof(*out));
    size_t n_rep = f->n_expected + f->n_extra;
    strset names, sids;
    if (!strset_init(&names, f->n_modules))
        return IHC_ENOMEM;
    if (!strset_init(&sids, f->n_sessions)) {
        free(names.v);
        return IHC_ENOMEM;
    }
    ihc_jbuf b = {0};
    ihc_jbuf_reserve(&b, 512 + f->n_modules * 96 + f->n_sessions * 48 + f->n_expected * 80);
    IHC_JBUF_LIT(&b, "{\"success\":");
    if (f->success)
        IHC_JBUF_LIT(&b, "true");
    else
        IHC_JBUF_LIT(&b, "false");
    ihc_jbuf_fmt(&b, ",\"interrupt_id\":%llu,\"hardware_id\":", (unsigned long long)f->id);
    ihc_jbuf_str(&b, f->hw);
    ihc_jbuf_fmt(&b, ",\"epoch\":%llu,\"interrupted_modules\":", (unsigned long long)f->epoch);
    out->modules.off = b.len;
    IHC_JBUF_LIT(&b, "[");
    bool first = true;
    for (size_t k = 0; k < n_rep; k++) {
        const ihc_report_msg *r = ihc_inflight_report_at(f, k);
        for (size_t i = 0; r && i < r->n_modules; i++)
            if (r->modules[i].status == IHC_MOD_OK && strset_add(&names, r->modules[i].name)) {
                if (!first)
                    IHC_JBUF_LIT(&b, ",");
                ihc_jbuf_str(&b, r->modules[i].name);
                first = false;
            }
    }
    IHC_JBUF_LIT(&b, "]");
    out->modules.len = b.len - out->modules.off;
    IHC_JBUF_LIT(&b, ",\"cleaned_sessions\":");
    out->sessions.off = b.len;
    IHC_JBUF_LIT(&b, "[");
    first = true;
    for (size_t k = 0; k < n_rep; k++) {
        const ihc_report_msg *r = ihc_inflight_report_at(f, k);
        for (size_t i = 0; r && i < r->n_sessions; i++)
            if (strset_add(&sids, r->sessions[i])) {
                if (!first)
                    IHC_JBUF_LIT(&b, ",");
                ihc_jbuf_str(&b, r->sessions[i]);
                first = false;
            }
    }
    IHC_JBUF_LIT(&b, "]");
    out->sessions.len = b.len - out->sessions.off;
    IHC_JBUF_LIT(&b, ",\"modules\":[");
    first = true;
    for (size_t k = 0; k < n_rep; k++) {
        const ihc_report_msg *r = ihc_inflight_report_at(f, k);
        for (size_t i = 0; r && i < r->n_modules; i++) {
            const ihc_module_result *m = &r->modules[i];
            if (!first)
                IHC_JBUF_LIT(&b, ",");
            IHC_JBUF_LIT(&b, "{\"agent\":");
            first = false;
            ihc_jbuf_str(&b, r->agent);
            IHC_JBUF_LIT(&b, ",\"name\":");
            ihc_jbuf_str(&b, m->name);
            IHC_JBUF_LIT(&b, ",\"status\":");
            ihc_jbuf_str(&b, ihc_inflight_status_name(m->status));
            IHC_JBUF_LIT(&b, ",\"time_ms\":");
            ihc_jbuf_real(&b, m->time_ms);
            IHC_JBUF_LIT(&b, ",\"error\":");
            if (m->error)
                ihc_jbuf_str(&b, m->error);
            else
                IHC_JBUF_LIT(&b, "null");
            IHC_JBUF_LIT(&b, "}");
        }
    }
    IHC_JBUF_LIT(&b, "],\"agents\":{\"expected\":[");
    for (size_t i = 0; i < f->n_expected; i++) {
        if (i)
            IHC_JBUF_LIT(&b, ",");
        ihc_jbuf_str(&b, f->expected[i].agent);
    }
    IHC_JBUF_LIT(&b, "],\"answered\":[");
    first = true;
    for (size_t i = 0; i < n_rep; i++) {
        const ihc_report_msg *r = ihc_inflight_report_at(f, i);
        if (!r)
            continue;
        if (!first)
            IHC_JBUF_LIT(&b, ",");
        ihc_jbuf_str(&b, r->agent);
        first = false;
    }
    IHC_JBUF_LIT(&b, "],\"missing\":");
    out->missing.off = b.len;
    IHC_JBUF_LIT(&b, "[");
    first = true;
    for (size_t i = 0; i < f->n_expected; i++) {
        if (f->expected[i].report)
            continue;
        if (!first)
            IHC_JBUF_LIT(&b, ",");
        ihc_jbuf_str(&b, f->expected[i].agent);
        first = false;
    }
    IHC_JBUF_LIT(&b, "]");
    out->missing.len = b.len - out->missing.off;
    IHC_JBUF_LIT(&b, "},\"reason\":");
    ihc_jbuf_str(&b, f->reason);
    IHC_JBUF_LIT(&b, ",\"total_time_ms\":");
    ihc_jbuf_real(&b, f->total_time_ms);
    IHC_JBUF_LIT(&b, ",\"persisted\":");
    if (f->persisted)
        IHC_JBUF_LIT(&b, "true");
    else
        IHC_JBUF_LIT(&b, "false");
    if (f->error) {
        IHC_JBUF_LIT(&b, ",\"error\":");
        ihc_jbuf_str(&b, f->error);
    }
    IHC_JBUF_LIT(&b, "}");
    free(names.v);
    free(sids.v);
    size_t len = b.len;
    if (!(out->json = ihc_jbuf_take(&b)))
        return IHC_ENOMEM;
    out->len = len;
    return IHC_OK;
}

char *ihc_inflight_result_json(const ihc_inflight *f)
{
    ihc_ifl_result r;
    return ihc_inflight_result(f, &r) == IHC_OK ? r.json : NULL;
}

int ihc_inflight_log_fields(const ihc_inflight *f, char **modules, char **sessions, char **missing)
{
    ihc_ifl_result r;
    *modules = *sessions = *missing = NULL;
    if (ihc_inflight_result(f, &r) != IHC_OK)
        return IHC_ENOMEM;
    *modules = strndup(r.json + r.modules.off, r.modules.len);
    *sessions = strndup(r.json + r.sessions.off, r.sessions.len);
    *missing = strndup(r.json + r.missing.off, r.missing.len);
    free(r.json);
    if (!*modules || !*sessions || !*missing) {
        free(*modules);
        free(*sessions);
        free(*missing);
        *modules = *sessions = *missing = NULL;
        return IHC_ENOMEM;
    }
    return IHC_OK;
}
