/* The coordinator's registry: agents, their active sessions and the epochs of every
 * hardware_id, in hash tables owned by the coordinator loop thread. */
#include "registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* ---- a small chained string hash map ---- */

typedef struct hent {
    struct hent *next;
    uint64_t h;
    char *key;
    void *val;
} hent;

typedef struct {
    hent **b;
    size_t nb; /* power of two, 0 before first use */
    size_t n;
} hmap;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static hent *hmap_find(const hmap *m, const char *key)
{
    if (m->nb == 0)
        return NULL;
    uint64_t h = hash_str(key);
    for (hent *e = m->b[h & (m->nb - 1)]; e; e = e->next)
        if (e->h == h && strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

static void *hmap_get(const hmap *m, const char *key)
{
    hent *e = hmap_find(m, key);
    return e ? e->val : NULL;
}

static int hmap_grow(hmap *m)
{
    size_t nb = m->nb ? m->nb * 2 : 64;
    hent **b = calloc(nb, sizeof(*b));
    if (!b)
        return IHC_ENOMEM;
    for (size_t i = 0; i < m->nb; i++) {
        hent *e = m->b[i];
        while (e) {
            hent *next = e->next;
            e->next = b[e->h & (nb - 1)];
            b[e->h & (nb - 1)] = e;
            e = next;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
    return IHC_OK;
}

/* Inserts key (copied), which must not be present. */
static int hmap_put(hmap *m, const char *key, void *val)
{
    if (m->n >= m->nb && hmap_grow(m) != IHC_OK)
        return IHC_ENOMEM;
    hent *e = malloc(sizeof(*e));
    if (!e)
        return IHC_ENOMEM;
    e->key = strdup(key);
    if (!e->key) {
        free(e);
        return IHC_ENOMEM;
    }
    e->h = hash_str(key);
    e->val = val;
    e->next = m->b[e->h & (m->nb - 1)];
    m->b[e->h & (m->nb - 1)] = e;
    m->n++;
    return IHC_OK;
}

/* Removes key; returns its value or NULL. */
static void *hmap_del(hmap *m, const char *key)
{
    if (m->nb == 0)
        return NULL;
    uint64_t h = hash_str(key);
    for (hent **pp = &m->b[h & (m->nb - 1)]; *pp; pp = &(*pp)->next) {
        hent *e = *pp;
        if (e->h == h && strcmp(e->key, key) == 0) {
            void *val = e->val;
            *pp = e->next;
            free(e->key);
            free(e);
            m->n--;
            return val;
        }
    }
    return NULL;
}

/* Frees the entries (not the values). */
static void hmap_fini(hmap *m)
{
    for (size_t i = 0; i < m->nb; i++) {
        hent *e = m->b[i];
        while (e) {
            hent *next = e->next;
            free(e->key);
            free(e);
            e = next;
        }
    }
    free(m->b);
    memset(m, 0, sizeof(*m));
}

#define HMAP_FOREACH(m, e)                                                                         \
    for (size_t hi_ = 0; hi_ < (m)->nb; hi_++)                                                     \
        for (hent *e = (m)->b[hi_]; e; e = e->next)

/* ---- registry ---- */

/* One agent holding active sessions of one hw: found by (hw, agent) in the registry's
 * hw_agents map, kept at agents[idx] of its hwrec for the hw's walks. A session begun or
 * ended costs one lookup, not a scan of the hw's agents (which, with every agent holding a
 * session of the same hw, made each interrupt quadratic in the agents). */
typedef struct {
    char *agent_id;
    size_t count; /* its active sessions of the hw */
    size_t idx;   /* in its hwrec's agents */
} hw_agent;

typedef struct {
    uint64_t epoch;
    int64_t set_ms;
    hw_agent **agents; /* agents holding active sessions of this hw (owned) */
    size_t n_agents, cap_agents;
} hwrec;

struct ihc_registry {
    ihc_registry_opts o;
    hmap agents;    /* agent_id -> ihc_reg_agent */
    hmap sessions;  /* agent_id "\x1f" session_id -> ihc_reg_session */
    hmap hws;       /* hw -> hwrec */
    hmap hw_agents; /* hw "\x1f" agent_id -> hw_agent (owned by the hwrec) */
};

static const char *state_static(const char *state)
{
    static const char *const known[] = {"active", "interrupted", "done", "expired"};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (state && strcmp(state, known[i]) == 0)
            return known[i];
    return "done";
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void modules_free(ihc_module_info *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(m[i].name);
        for (size_t j = 0; j < m[i].n_methods; j++)
            free(m[i].methods[j]);
        free(m[i].methods);
    }
    free(m);
}

static int modules_copy(ihc_module_info **out, const ihc_module_info *src, size_t n)
{
    *out = NULL;
    if (n == 0)
        return IHC_OK;
    ihc_module_info *m = calloc(n, sizeof(*m));
    if (!m)
        return IHC_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        m[i].timeout_ms = src[i].timeout_ms;
        m[i].enabled = src[i].enabled;
        if (!(m[i].name = xstrdup(src[i].name ? src[i].name : "")))
            goto fail;
        if (src[i].n_methods) {
            m[i].methods = calloc(src[i].n_methods, sizeof(char *));
            if (!m[i].methods)
                goto fail;
            for (size_t j = 0; j < src[i].n_methods; j++) {
                m[i].methods[j] = xstrdup(src[i].methods[j] ? src[i].methods[j] : "");
                if (!m[i].methods[j])
                    goto fail;
                m[i].n_methods = j + 1;
            }
        }
    }
    *out = m;
    return IHC_OK;
fail:
    modules_free(m, n);
    return IHC_ENOMEM;
}

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void agent_free(ihc_reg_agent *a)
{
    if (!a)
        return;
    free(a->agent_id);
    free(a->node);
    strv_free(a->sub_addrs, a->n_sub_addrs);
    modules_free(a->modules, a->n_modules);
    free(a);
}

static void session_free(ihc_reg_session *s)
{
    if (!s)
        return;
    free(s->session_id);
    free(s->hw);
    free(s->agent_id);
    free(s->module);
    free(s->data);
    free(s);
}

static void hwrec_free(hwrec *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n_agents; i++) {
        free(h->agents[i]->agent_id);
        free(h->agents[i]);
    }
    free(h->agents);
    free(h);
}

int ihc_registry_new(ihc_registry **out, const ihc_registry_opts *o)
{
    ihc_registry *r = calloc(1, sizeof(*r));
    if (!r)
        return IHC_ENOMEM;
    r->o = *o;
    if (r->o.max_sessions_per_agent == 0)
        r->o.max_sessions_per_agent = 100000;
    *out = r;
    return IHC_OK;
}

void ihc_registry_free(ihc_registry *r)
{
    if (!r)
        return;
    HMAP_FOREACH(&r->agents, e) agent_free(e->val);
    HMAP_FOREACH(&r->sessions, e) session_free(e->val);
    HMAP_FOREACH(&r->hws, e) hwrec_free(e->val);
    hmap_fini(&r->agents);
    hmap_fini(&r->sessions);
    hmap_fini(&r->hws);
    hmap_fini(&r->hw_agents);
    free(r);
}

static hwrec *hw_get_or_add(ihc_registry *r, const char *hw)
{
    hwrec *h = hmap_get(&r->hws, hw);
    if (h)
        return h;
    h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    if (hmap_put(&r->hws, hw, h) != IHC_OK) {
        free(h);
        return NULL;
    }
    return h;
}

/* A key of two parts: "a" "\x1f" "b" (sessions: agent, session id; hw_agents: hw, agent). */
static int pair_key(char *buf, size_t cap, const char *a, const char *b)
{
    int n = snprintf(buf, cap, "%s\x1f%s", a, b);
    return (n < 0 || (size_t)n >= cap) ? IHC_ETOOBIG : IHC_OK;
}

#define HAKEY_MAX (IHC_HW_MAX + IHC_AGENT_ID_MAX + 2)

/* Counts one more active session of hw (record h) held by agent_id. */
static int hw_agent_add(ihc_registry *r, hwrec *h, const char *hw, const char *agent_id)
{
    char key[HAKEY_MAX];
    if (pair_key(key, sizeof(key), hw, agent_id) != IHC_OK)
        return IHC_EINVAL;
    hw_agent *ha = hmap_get(&r->hw_agents, key);
    if (ha) {
        ha->count++;
        return IHC_OK;
    }
    if (h->n_agents == h->cap_agents) {
        size_t cap = h->cap_agents ? h->cap_agents * 2 : 4;
        hw_agent **na = realloc(h->agents, cap * sizeof(*na));
        if (!na)
            return IHC_ENOMEM;
        h->agents = na;
        h->cap_agents = cap;
    }
    ha = calloc(1, sizeof(*ha));
    if (!ha || !(ha->agent_id = strdup(agent_id)) || hmap_put(&r->hw_agents, key, ha) != IHC_OK) {
        if (ha)
            free(ha->agent_id);
        free(ha);
        return IHC_ENOMEM;
    }
    ha->count = 1;
    ha->idx = h->n_agents;
    h->agents[h->n_agents++] = ha;
    return IHC_OK;
}

/* Counts one active session of hw (record h) held by agent_id less. */
static void hw_agent_remove(ihc_registry *r, hwrec *h, const char *hw, const char *agent_id)
{
    char key[HAKEY_MAX];
    if (pair_key(key, sizeof(key), hw, agent_id) != IHC_OK)
        return;
    hw_agent *ha = hmap_get(&r->hw_agents, key);
    if (!ha || --ha->count > 0)
        return;
    hmap_del(&r->hw_agents, key);
    hw_agent *last = h->agents[--h->n_agents];
    h->agents[ha->idx] = last;
    last->idx = ha->idx;
    free(ha->agent_id);
    free(ha);
}

#define SKEY_MAX (IHC_AGENT_ID_MAX + IHC_ID_MAX + 2)

static ihc_reg_agent *agent_add(ihc_registry *r, const char *agent_id)
{
    ihc_reg_agent *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->agent_id = strdup(agent_id);
    a->node = strdup("");
    if (!a->agent_id || !a->node || hmap_put(&r->agents, agent_id, a) != IHC_OK) {
        agent_free(a);
        return NULL;
    }
    return a;
}

ihc_reg_agent *ihc_registry_touch(ihc_registry *r, const char *agent_id, uint64_t now_ns,
                                  int64_t now_ms)
{
    ihc_reg_agent *a = hmap_get(&r->agents, agent_id);
    if (!a && !(a = agent_add(r, agent_id)))
        return NULL;
    bool up = a->state != IHC_AGENT_CONNECTED;
    a->state = IHC_AGENT_CONNECTED;
    a->last_seen_ns = now_ns;
    a->last_seen_ms = now_ms;
    if (up && r->o.on_agent)
        r->o.on_agent(r->o.arg, a, true);
    return a;
}

const ihc_reg_agent *ihc_registry_agent(const ihc_registry *r, const char *agent_id)
{
    return hmap_get(&r->agents, agent_id);
}

int ihc_registry_agent_load(ihc_registry *r, const char *agent_id, const char *node, int32_t pid,
                            int64_t started_ms, int64_t last_seen_ms, const ihc_module_info *mods,
                            size_t n_mods, uint64_t now_ns)
{
    ihc_reg_agent *a = hmap_get(&r->agents, agent_id);
    if (!a && !(a = agent_add(r, agent_id)))
        return IHC_ENOMEM;
    if (node) {
        char *n = strdup(node);
        if (!n)
            return IHC_ENOMEM;
        free(a->node);
        a->node = n;
    }
    ihc_module_info *m = NULL;
    if (mods && modules_copy(&m, mods, n_mods) != IHC_OK)
        return IHC_ENOMEM;
    if (mods) {
        modules_free(a->modules, a->n_modules);
        a->modules = m;
        a->n_modules = n_mods;
    }
    a->pid = pid;
    a->started_ms = started_ms;
    a->last_seen_ms = last_seen_ms;
    a->last_seen_ns = now_ns;
    a->state = IHC_AGENT_PENDING;
    return IHC_OK;
}

static void emit(ihc_registry *r, ihc_reg_event ev, const ihc_reg_session *s)
{
    if (r->o.on_event)
        r->o.on_event(r->o.arg, ev, s);
}

/* Unlinks s from every index, emits ENDED with state, frees it. */
static void session_remove(ihc_registry *r, ihc_reg_session *s, const char *state, int64_t now_ms)
{
    char key[SKEY_MAX];
    if (pair_key(key, sizeof(key), s->agent_id, s->session_id) == IHC_OK)
        hmap_del(&r->sessions, key);
    hwrec *h = hmap_get(&r->hws, s->hw);
    if (h)
        hw_agent_remove(r, h, s->hw, s->agent_id);
    ihc_reg_agent *a = hmap_get(&r->agents, s->agent_id);
    if (a && a->n_sessions > 0) {
        a->n_sessions--;
        a->session_changes++;
    }
    if (s->a_prev)
        s->a_prev->a_next = s->a_next;
    else if (a && a->sessions == s)
        a->sessions = s->a_next;
    if (s->a_next)
        s->a_next->a_prev = s->a_prev;
    s->state = state_static(state);
    s->updated_ms = now_ms;
    emit(r, IHC_REG_SESSION_ENDED, s);
    session_free(s);
}

int ihc_registry_epoch_raise(ihc_registry *r, const char *hw, uint64_t epoch, int64_t set_ms)
{
    hwrec *h = hw_get_or_add(r, hw);
    if (!h)
        return IHC_ENOMEM;
    if (epoch > h->epoch) {
        h->epoch = epoch;
        if (set_ms > h->set_ms)
            h->set_ms = set_ms;
    }
    return IHC_OK;
}

uint64_t ihc_registry_epoch(const ihc_registry *r, const char *hw, int64_t *set_ms)
{
    hwrec *h = hmap_get(&r->hws, hw);
    if (set_ms)
        *set_ms = h ? h->set_ms : 0;
    return h ? h->epoch : 0;
}

void ihc_registry_foreach_epoch(const ihc_registry *r,
                                void (*fn)(void *arg, const char *hw, uint64_t epoch,
                                           int64_t set_ms),
                                void *arg)
{
    HMAP_FOREACH(&r->hws, e)
    {
        const hwrec *h = e->val;
        if (h->epoch > 0)
            fn(arg, e->key, h->epoch, h->set_ms);
    }
}

uint64_t ihc_registry_epoch_bump(ihc_registry *r, const char *hw, int64_t now_ms)
{
    hwrec *h = hw_get_or_add(r, hw);
    if (!h)
        return 0;
    h->epoch++;
    h->set_ms = now_ms;
    return h->epoch;
}

/* Inserts or refreshes one session of agent a. */
static int session_upsert(ihc_registry *r, ihc_reg_agent *a, const ihc_session_info *si,
                          int64_t now_ms, bool count_limit)
{
    char key[SKEY_MAX];
    if (!si->session_id || !si->hw || pair_key(key, sizeof(key), a->agent_id, si->session_id))
        return IHC_EINVAL;
    ihc_reg_session *old = hmap_get(&r->sessions, key);
    if (old && strcmp(old->hw, si->hw) != 0) {
        /* the same id now names a session of another hw: the old one is over */
        session_remove(r, old, "done", now_ms);
        old = NULL;
    }
    if (!old && count_limit && a->n_sessions >= r->o.max_sessions_per_agent)
        return IHC_ELIMIT;
    bool raises = si->epoch > ihc_registry_epoch(r, si->hw, NULL);
    if (ihc_registry_epoch_raise(r, si->hw, si->epoch, 0) != IHC_OK ||
        ihc_registry_epoch_raise(r, "*", si->gepoch, 0) != IHC_OK)
        return IHC_ENOMEM;

    ihc_reg_session *s = old ? old : calloc(1, sizeof(*s));
    if (!s)
        return IHC_ENOMEM;
    char *module = xstrdup(si->module), *data = xstrdup(si->data);
    if ((si->module && !module) || (si->data && !data)) {
        free(module);
        free(data);
        if (!old)
            free(s);
        return IHC_ENOMEM;
    }
    free(s->module);
    free(s->data);
    s->module = module;
    s->data = data;
    s->state = "active";
    s->epoch = si->epoch;
    s->gepoch = si->gepoch;
    s->created_ms = si->created_ms ? si->created_ms : now_ms;
    s->updated_ms = now_ms;
    s->pid = si->pid;
    if (old) {
        emit(r, IHC_REG_SESSION_UPDATED, s);
        if (raises)
            emit(r, IHC_REG_EPOCH_RAISED, s);
        return IHC_OK;
    }
    s->session_id = strdup(si->session_id);
    s->hw = strdup(si->hw);
    s->agent_id = strdup(a->agent_id);
    hwrec *h = hw_get_or_add(r, si->hw);
    if (!s->session_id || !s->hw || !s->agent_id || !h)
        goto nomem;
    if (hw_agent_add(r, h, s->hw, a->agent_id) != IHC_OK)
        goto nomem;
    if (hmap_put(&r->sessions, key, s) != IHC_OK) {
        hw_agent_remove(r, h, s->hw, a->agent_id);
        goto nomem;
    }
    a->n_sessions++;
    a->session_changes++;
    s->a_prev = NULL;
    s->a_next = a->sessions;
    if (a->sessions)
        a->sessions->a_prev = s;
    a->sessions = s;
    emit(r, IHC_REG_SESSION_ADDED, s);
    if (raises)
        emit(r, IHC_REG_EPOCH_RAISED, s);
    return IHC_OK;
nomem:
    session_free(s);
    return IHC_ENOMEM;
}

int ihc_registry_hello(ihc_registry *r, const ihc_hello_msg *h, uint64_t now_ns, int64_t now_ms)
{
    ihc_reg_agent *a = ihc_registry_touch(r, h->agent, now_ns, now_ms);
    if (!a)
        return IHC_ENOMEM;
    char *node = strdup(h->node ? h->node : "");
    ihc_module_info *mods = NULL;
    char **addrs = h->n_sub_addrs ? calloc(h->n_sub_addrs, sizeof(*addrs)) : NULL;
    bool ok = node && (addrs || !h->n_sub_addrs);
    for (size_t i = 0; ok && i < h->n_sub_addrs; i++)
        ok = (addrs[i] = strdup(h->sub_addrs[i] ? h->sub_addrs[i] : "")) != NULL;
    if (!ok || modules_copy(&mods, h->modules, h->n_modules) != IHC_OK) {
        free(node);
        strv_free(addrs, h->n_sub_addrs);
        return IHC_ENOMEM;
    }
    strv_free(a->sub_addrs, a->n_sub_addrs);
    a->sub_addrs = addrs;
    a->n_sub_addrs = h->n_sub_addrs;
    free(a->node);
    a->node = node;
    modules_free(a->modules, a->n_modules);
    a->modules = mods;
    a->n_modules = h->n_modules;
    a->pid = h->pid;
    a->started_ms = h->started_ms;

    /* sessions the registry had for this agent but the hello does not list are over */
    hmap keep = {0};
    int rc = IHC_OK;
    for (size_t i = 0; i < h->n_sessions && rc == IHC_OK; i++)
        if (h->sessions[i].session_id && !hmap_find(&keep, h->sessions[i].session_id))
            rc = hmap_put(&keep, h->sessions[i].session_id, (void *)&h->sessions[i]);
    if (rc != IHC_OK)
        goto out;
    size_t n_gone = 0, cap_gone = 0;
    ihc_reg_session **gone = NULL;
    for (ihc_reg_session *s = a->sessions; s; s = s->a_next) {
        if (hmap_find(&keep, s->session_id))
            continue;
        if (n_gone == cap_gone) {
            cap_gone = cap_gone ? cap_gone * 2 : 16;
            ihc_reg_session **ng = realloc(gone, cap_gone * sizeof(*ng));
            if (!ng) {
                free(gone);
                rc = IHC_ENOMEM;
                goto out;
            }
            gone = ng;
        }
        gone[n_gone++] = s;
    }
    for (size_t i = 0; i < n_gone; i++)
        session_remove(r, gone[i], "done", now_ms);
    free(gone);

    for (size_t i = 0; i < h->n_sessions; i++) {
        int src = session_upsert(r, a, &h->sessions[i], now_ms, true);
        if (src == IHC_ENOMEM) {
            rc = src;
            break;
        }
    }
out:
    hmap_fini(&keep);
    return rc;
}

int ihc_registry_session_begin(ihc_registry *r, const char *agent_id, const ihc_session_info *s,
                               uint64_t now_ns, int64_t now_ms)
{
    ihc_reg_agent *a = ihc_registry_touch(r, agent_id, now_ns, now_ms);
    if (!a)
        return IHC_ENOMEM;
    return session_upsert(r, a, s, now_ms, true);
}

int ihc_registry_session_end(ihc_registry *r, const char *agent_id, const char *session_id,
                             const char *state, int64_t now_ms)
{
    char key[SKEY_MAX];
    if (pair_key(key, sizeof(key), agent_id, session_id) != IHC_OK)
        return IHC_ENOENT;
    ihc_reg_session *s = hmap_get(&r->sessions, key);
    if (!s)
        return IHC_ENOENT;
    session_remove(r, s, state, now_ms);
    return IHC_OK;
}

int ihc_registry_session_load(ihc_registry *r, const ihc_store_session_rec *s, uint64_t now_ns)
{
    if (!s->agent_id || !s->session_id || !s->hw)
        return IHC_EINVAL;
    ihc_reg_agent *a = hmap_get(&r->agents, s->agent_id);
    if (!a) {
        int rc = ihc_registry_agent_load(r, s->agent_id, NULL, 0, 0, 0, NULL, 0, now_ns);
        if (rc != IHC_OK)
            return rc;
        a = hmap_get(&r->agents, s->agent_id);
    }
    ihc_session_info si = {
        .session_id = s->session_id,
        .hw = s->hw,
        .epoch = s->epoch,
        .created_ms = s->created_ms,
        .data = s->data,
    };
    ihc_reg_event_fn fn = r->o.on_event;
    r->o.on_event = NULL; /* state that came from Redis is not written back */
    int rc = session_upsert(r, a, &si, s->updated_ms, false);
    r->o.on_event = fn;
    return rc;
}

size_t ihc_registry_session_count(const ihc_registry *r)
{
    return r->sessions.n;
}

void ihc_registry_foreach_session(const ihc_registry *r, const char *hw,
                                  void (*fn)(void *arg, const ihc_reg_session *s), void *arg)
{
    HMAP_FOREACH(&r->sessions, e)
    {
        const ihc_reg_session *s = e->val;
        if (!hw || strcmp(hw, s->hw) == 0)
            fn(arg, s);
    }
}

void ihc_registry_foreach_agent_session(const ihc_registry *r, const char *agent_id,
                                        void (*fn)(void *arg, const ihc_reg_session *s), void *arg)
{
    const ihc_reg_agent *a = hmap_get(&r->agents, agent_id);
    for (const ihc_reg_session *s = a ? a->sessions : NULL; s; s = s->a_next)
        fn(arg, s);
}

void ihc_registry_foreach_hw_agent(const ihc_registry *r,
                                   void (*fn)(void *arg, const char *hw, const char *agent_id),
                                   void *arg)
{
    HMAP_FOREACH(&r->hws, e)
    {
        const hwrec *h = e->val;
        for (size_t i = 0; i < h->n_agents; i++)
            fn(arg, e->key, h->agents[i]->agent_id);
    }
}

void ihc_registry_foreach_agent(const ihc_registry *r,
                                void (*fn)(void *arg, const ihc_reg_agent *a), void *arg)
{
    HMAP_FOREACH(&r->agents, e) fn(arg, e->val);
}

size_t ihc_registry_live_agents(const ihc_registry *r)
{
    size_t n = 0;
    HMAP_FOREACH(&r->agents, e)
    {
        const ihc_reg_agent *a = e->val;
        n += a->state != IHC_AGENT_GONE;
    }
    return n;
}

size_t ihc_registry_module_count(const ihc_registry *r)
{
    hmap names = {0};
    HMAP_FOREACH(&r->agents, e)
    {
        const ihc_reg_agent *a = e->val;
        if (a->state == IHC_AGENT_GONE)
            continue;
        for (size_t i = 0; i < a->n_modules; i++)
            if (!hmap_find(&names, a->modules[i].name))
                (void)hmap_put(&names, a->modules[i].name, NULL);
    }
    size_t n = names.n;
    hmap_fini(&names);
    return n;
}

size_t ihc_registry_expire(ihc_registry *r, uint64_t now_ns)
{
    size_t n_new = 0, n_list = 0;
    ihc_reg_agent **list = NULL;
    if (r->agents.n)
        list = malloc(r->agents.n * sizeof(*list));
    if (!list)
        return 0;
    HMAP_FOREACH(&r->agents, e)
    {
        ihc_reg_agent *a = e->val;
        uint64_t idle = now_ns > a->last_seen_ns ? now_ns - a->last_seen_ns : 0;
        if (a->state != IHC_AGENT_GONE && idle > r->o.agent_ttl_ns)
            list[n_list++] = a;
        else if (a->state == IHC_AGENT_GONE && idle > 3 * r->o.agent_ttl_ns && a->n_sessions == 0)
            list[n_list++] = a;
    }
    for (size_t i = 0; i < n_list; i++) {
        ihc_reg_agent *a = list[i];
        if (a->state == IHC_AGENT_GONE) {
            hmap_del(&r->agents, a->agent_id);
            agent_free(a);
            continue;
        }
        a->state = IHC_AGENT_GONE;
        n_new++;
        if (r->o.on_agent)
            r->o.on_agent(r->o.arg, a, false);
        if (a->n_sessions == 0)
            continue;
        /* its sessions can no longer be stopped through us: they are expired */
        ihc_reg_session **ss = malloc(a->n_sessions * sizeof(*ss));
        if (!ss)
            continue;
        size_t k = 0;
        for (ihc_reg_session *s = a->sessions; s && k < a->n_sessions; s = s->a_next)
            ss[k++] = s;
        for (size_t j = 0; j < k; j++)
            session_remove(r, ss[j], "expired", a->last_seen_ms);
        free(ss);
    }
    free(list);
    return n_new;
}

static int strcmp_p(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int ihc_registry_expected(const ihc_registry *r, const char *hw, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    size_t cap = 0, k = 0;
    char **v = NULL;
    bool global = strcmp(hw, "*") == 0;
    if (global) {
        cap = r->agents.n;
    } else {
        const hwrec *h = hmap_get(&r->hws, hw);
        cap = h ? h->n_agents : 0;
    }
    if (cap == 0)
        return IHC_OK;
    v = calloc(cap, sizeof(*v));
    if (!v)
        return IHC_ENOMEM;
    if (global) {
        HMAP_FOREACH(&r->agents, e)
        {
            const ihc_reg_agent *a = e->val;
            if (a->state != IHC_AGENT_GONE && !(v[k++] = strdup(a->agent_id)))
                goto nomem;
        }
    } else {
        const hwrec *h = hmap_get(&r->hws, hw);
        for (size_t i = 0; i < h->n_agents; i++) {
            const ihc_reg_agent *a = hmap_get(&r->agents, h->agents[i]->agent_id);
            if (a && a->state != IHC_AGENT_GONE && !(v[k++] = strdup(a->agent_id)))
                goto nomem;
        }
    }
    qsort(v, k, sizeof(*v), strcmp_p);
    *out = v;
    *n = k;
    return IHC_OK;
nomem:
    ihc_registry_strv_free(v, k);
    return IHC_ENOMEM;
}

void ihc_registry_strv_free(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

int ihc_registry_pending(const ihc_registry *r, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    size_t k = 0;
    HMAP_FOREACH(&r->agents, e)
    {
        const ihc_reg_agent *a = e->val;
        k += a->state == IHC_AGENT_PENDING;
    }
    if (k == 0)
        return IHC_OK;
    char **v = calloc(k, sizeof(*v));
    if (!v)
        return IHC_ENOMEM;
    size_t i = 0;
    HMAP_FOREACH(&r->agents, e)
    {
        const ihc_reg_agent *a = e->val;
        if (a->state == IHC_AGENT_PENDING && i < k && !(v[i++] = strdup(a->agent_id))) {
            ihc_registry_strv_free(v, i - 1);
            return IHC_ENOMEM;
        }
    }
    qsort(v, i, sizeof(*v), strcmp_p);
    *out = v;
    *n = i;
    return IHC_OK;
}
