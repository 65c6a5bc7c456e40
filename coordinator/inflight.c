/* Aggregation of one interrupt: which agents answered, what their modules did, when to
 * re-send, and the result document. No I/O here; the coordinator loop drives it. */
#include "inflight.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "err.h"

static char *xstrdup(const char *s)
{
    return strdup(s ? s : "");
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
        f->expected = calloc(p->n_expected, sizeof(char *));
        f->answered = calloc(p->n_expected, sizeof(bool));
        if (!f->expected || !f->answered)
            goto nomem;
        for (size_t i = 0; i < p->n_expected; i++) {
            if (!(f->expected[i] = xstrdup(p->expected[i])))
                goto nomem;
            f->n_expected = i + 1;
        }
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
    for (size_t i = 0; i < f->n_expected; i++)
        free(f->expected[i]);
    free(f->expected);
    free(f->answered);
    for (size_t i = 0; i < f->n_extra; i++)
        free(f->extra[i]);
    free(f->extra);
    for (size_t i = 0; i < f->n_modules; i++) {
        free(f->modules[i].agent);
        free(f->modules[i].name);
        free(f->modules[i].error);
    }
    free(f->modules);
    for (size_t i = 0; i < f->n_sessions; i++) {
        free(f->sessions[i].agent);
        free(f->sessions[i].session_id);
    }
    free(f->sessions);
    free(f->hw);
    free(f->reason);
    free(f->error);
    free(f);
}

int ihc_inflight_report(ihc_inflight *f, const ihc_report_msg *r)
{
    if (f->finished)
        return IHC_ECLOSED;
    if (!r->agent)
        return IHC_EINVAL;
    ssize_t slot = -1;
    for (size_t i = 0; i < f->n_expected; i++)
        if (strcmp(f->expected[i], r->agent) == 0) {
            if (f->answered[i])
                return IHC_EEXIST;
            slot = (ssize_t)i;
            break;
        }
    if (slot < 0)
        for (size_t i = 0; i < f->n_extra; i++)
            if (strcmp(f->extra[i], r->agent) == 0)
                return IHC_EEXIST;

    /* grow everything first so that a failure leaves f unchanged */
    ihc_ifl_module *mods = realloc(f->modules, (f->n_modules + r->n_modules + 1) * sizeof(*mods));
    if (!mods)
        return IHC_ENOMEM;
    f->modules = mods;
    ihc_ifl_session *ss = realloc(f->sessions, (f->n_sessions + r->n_sessions + 1) * sizeof(*ss));
    if (!ss)
        return IHC_ENOMEM;
    f->sessions = ss;
    char *extra_id = NULL;
    if (slot < 0) {
        char **ne = realloc(f->extra, (f->n_extra + 1) * sizeof(*ne));
        if (!ne)
            return IHC_ENOMEM;
        f->extra = ne;
        if (!(extra_id = strdup(r->agent)))
            return IHC_ENOMEM;
    }

    size_t nm = f->n_modules, ns = f->n_sessions;
    for (size_t i = 0; i < r->n_modules; i++) {
        const ihc_module_result *m = &r->modules[i];
        ihc_ifl_module *d = &f->modules[nm];
        d->agent = strdup(r->agent);
        d->name = xstrdup(m->name);
        d->error = m->error ? strdup(m->error) : NULL;
        d->status = m->status;
        d->time_ms = m->time_ms;
        nm++;
        if (!d->agent || !d->name || (m->error && !d->error))
            goto nomem;
    }
    for (size_t i = 0; i < r->n_sessions; i++) {
        ihc_ifl_session *d = &f->sessions[ns];
        d->agent = strdup(r->agent);
        d->session_id = xstrdup(r->sessions[i]);
        ns++;
        if (!d->agent || !d->session_id)
            goto nomem;
    }
    f->n_modules = nm;
    f->n_sessions = ns;
    if (slot >= 0) {
        f->answered[slot] = true;
        f->n_answered++;
    } else {
        f->extra[f->n_extra++] = extra_id;
    }
    return IHC_OK;
nomem:
    for (size_t i = f->n_modules; i < nm; i++) {
        free(f->modules[i].agent);
        free(f->modules[i].name);
        free(f->modules[i].error);
    }
    for (size_t i = f->n_sessions; i < ns; i++) {
        free(f->sessions[i].agent);
        free(f->sessions[i].session_id);
    }
    free(extra_id);
    return IHC_ENOMEM;
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
        if (!f->answered[i])
            v[j++] = f->expected[i];
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
            if (f->answered[i])
                continue;
            size_t len = strlen(part);
            snprintf(part + len, sizeof(part) - len, "%s%s", first ? "" : ", ", f->expected[i]);
            first = false;
        }
        err_append(buf, sizeof(buf), part);
    }
    for (size_t i = 0; i < f->n_modules; i++) {
        const ihc_ifl_module *m = &f->modules[i];
        if (m->status == IHC_MOD_OK || m->status == IHC_MOD_DISABLED)
            continue;
        char part[512];
        if (m->status == IHC_MOD_TIMED_OUT)
            snprintf(part, sizeof(part), "module %s timed out on %s", m->name, m->agent);
        else
            snprintf(part, sizeof(part), "module %s failed on %s%s%.200s", m->name, m->agent,
                     m->error ? ": " : "", m->error ? m->error : "");
        err_append(buf, sizeof(buf), part);
    }
    f->success = buf[0] == '\0';
    if (!f->success && !(f->error = strdup(buf)))
        return IHC_ENOMEM;
    return IHC_OK;
}

/* Adds s to arr unless present. */
static void json_add_unique(json_t *arr, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) if (strcmp(json_string_value(v), s) == 0) return;
    json_array_append_new(arr, json_string(s));
}

static json_t *modules_ok(const ihc_inflight *f)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < f->n_modules; i++)
        if (f->modules[i].status == IHC_MOD_OK)
            json_add_unique(a, f->modules[i].name);
    return a;
}

static json_t *sessions_cleaned(const ihc_inflight *f)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < f->n_sessions; i++)
        json_add_unique(a, f->sessions[i].session_id);
    return a;
}

static json_t *agents_missing(const ihc_inflight *f)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < f->n_expected; i++)
        if (!f->answered[i])
            json_array_append_new(a, json_string(f->expected[i]));
    return a;
}

char *ihc_inflight_result_json(const ihc_inflight *f)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "success", json_boolean(f->success));
    json_object_set_new(o, "interrupt_id", json_integer((json_int_t)f->id));
    json_object_set_new(o, "hardware_id", json_string(f->hw));
    json_object_set_new(o, "epoch", json_integer((json_int_t)f->epoch));
    json_object_set_new(o, "interrupted_modules", modules_ok(f));
    json_object_set_new(o, "cleaned_sessions", sessions_cleaned(f));
    json_t *mods = json_array();
    for (size_t i = 0; mods && i < f->n_modules; i++) {
        const ihc_ifl_module *m = &f->modules[i];
        json_array_append_new(
            mods, json_pack("{s:s, s:s, s:s, s:f, s:o}", "agent", m->agent, "name", m->name,
                            "status", ihc_inflight_status_name(m->status), "time_ms", m->time_ms,
                            "error", m->error ? json_string(m->error) : json_null()));
    }
    json_object_set_new(o, "modules", mods);
    json_t *exp = json_array(), *ans = json_array();
    for (size_t i = 0; exp && ans && i < f->n_expected; i++) {
        json_array_append_new(exp, json_string(f->expected[i]));
        if (f->answered[i])
            json_array_append_new(ans, json_string(f->expected[i]));
    }
    for (size_t i = 0; ans && i < f->n_extra; i++)
        json_array_append_new(ans, json_string(f->extra[i]));
    json_object_set_new(o, "agents",
                        json_pack("{s:o, s:o, s:o}", "expected", exp ? exp : json_array(),
                                  "answered", ans ? ans : json_array(), "missing",
                                  agents_missing(f)));
    json_object_set_new(o, "reason", json_string(f->reason));
    json_object_set_new(o, "total_time_ms", json_real(f->total_time_ms));
    json_object_set_new(o, "persisted", json_boolean(f->persisted));
    if (f->error)
        json_object_set_new(o, "error", json_string(f->error));
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(o);
    return s;
}

int ihc_inflight_log_fields(const ihc_inflight *f, char **modules, char **sessions, char **missing)
{
    json_t *m = modules_ok(f), *s = sessions_cleaned(f), *x = agents_missing(f);
    *modules = m ? json_dumps(m, JSON_COMPACT) : NULL;
    *sessions = s ? json_dumps(s, JSON_COMPACT) : NULL;
    *missing = x ? json_dumps(x, JSON_COMPACT) : NULL;
    json_decref(m);
    json_decref(s);
    json_decref(x);
    if (!*modules || !*sessions || !*missing) {
        free(*modules);
        free(*sessions);
        free(*missing);
        *modules = *sessions = *missing = NULL;
        return IHC_ENOMEM;
    }
    return IHC_OK;
}
