/* The ihc-agent simulated workload: per hardware_id one session with a token generator, an
 * audio generator and a state keeper, a supervisor that logs progress and restarts
 * interrupted sessions, and the actions of the built-in modules' interrupt methods. */
#include "simulate.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "err.h"
#include "log.h"
#include "thread.h"
#include "wire.h"

#define COMP "simulate"

#define TEXT_INTERVAL_MS  50
#define AUDIO_INTERVAL_MS 20
#define STATE_INTERVAL_MS 100
#define TEXT_RING         256 /* tokens kept per session */
#define TOKEN_MAX         16
#define AUDIO_RING        50  /* one second of 20 ms chunks */
#define AUDIO_SAMPLES     320 /* 20 ms at 16 kHz */
#define PROGRESS_NS       1000000000ull
#define TICK_NS           100000000ull
#define STOP_WAIT_MS      5000

typedef struct sim_session sim_session;

typedef struct {
    sim_session *ss;
    ihc_sim_kind kind;
    bool running; /* ihc_simulate.mtx */
} sim_gen;

struct sim_session {
    sim_session *next;
    ihc_simulate *s;
    size_t slot;
    char sid[IHC_ID_MAX + 1];
    ihc_token *tok;
    sim_gen gens[IHC_SIM__COUNT];
    int n_running; /* ihc_simulate.mtx */
    atomic_uint_fast64_t tokens, chunks, beats;
    /* what the generators produce; buf_mtx */
    pthread_mutex_t buf_mtx;
    char text[TEXT_RING][TOKEN_MAX];
    size_t text_head, text_len;
    int16_t audio[AUDIO_RING][AUDIO_SAMPLES];
    size_t audio_head, audio_len;
    uint64_t state_counter;
    int64_t last_beat_ms;
};

typedef struct {
    char hw[IHC_HW_MAX + 1];
    sim_session *cur;       /* the slot's session, NULL between sessions */
    uint64_t restart_at_ns; /* when to begin the next one (mono), when cur is NULL */
} sim_slot;

struct ihc_simulate {
    ihc_agent *a;
    pthread_mutex_t mtx;
    pthread_cond_t cond;
    sim_session *sessions; /* live ones, including interrupted ones not yet ended */
    sim_slot *slots;
    size_t n_slots;
    unsigned pause_ms;
    bool stopping;
    bool sup_started;
    pthread_t sup;
};

static const char *const module_names[IHC_SIM__COUNT] = {
    [IHC_SIM_TEXT] = IHC_MODULE_TEXT,
    [IHC_SIM_AUDIO] = IHC_MODULE_AUDIO,
    [IHC_SIM_STATE] = IHC_MODULE_STATE,
};

const char *ihc_simulate_module(ihc_sim_kind kind)
{
    return (unsigned)kind < IHC_SIM__COUNT ? module_names[kind] : "unknown";
}

static bool hw_match(const char *pattern, const char *hw)
{
    return strcmp(pattern, "*") == 0 || strcmp(pattern, hw) == 0;
}

static void abs_deadline(struct timespec *ts, uint64_t mono_ns)
{
    ts->tv_sec = (time_t)(mono_ns / 1000000000ull);
    ts->tv_nsec = (long)(mono_ns % 1000000000ull);
}

/* ---- generators (run on threads started by ihc_agent_spawn) ---- */

/* Marks g finished; after this the generator must not touch its session. */
static void gen_finish(sim_gen *g)
{
    ihc_simulate *s = g->ss->s;
    pthread_mutex_lock(&s->mtx);
    g->running = false;
    g->ss->n_running--;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mtx);
}

/* Sleeps one period; true when the token was cancelled meanwhile. */
static bool gen_pause(ihc_token *tok, int ms)
{
    int rc = ihc_token_wait(tok, ms);
    if (rc == IHC_OK)
        return true;
    if (rc != IHC_ETIMEDOUT)
        ihc_sleep_ms((uint32_t)ms); /* never spin on a failing wait */
    return ihc_token_cancelled(tok);
}

static void text_work(ihc_token *tok, void *arg)
{
    static const char *const words[] = {"the",  "quick", "brown", "fox",   "jumps", "over",
                                        "lazy", "dog",   "and",   "keeps", "going", "on"};
    sim_gen *g = arg;
    sim_session *ss = g->ss;
    uint64_t n = 0;
    for (;;) {
        IHC_CHECKPOINT(tok, break);
        pthread_mutex_lock(&ss->buf_mtx);
        size_t at = (ss->text_head + ss->text_len) % TEXT_RING;
        snprintf(ss->text[at], TOKEN_MAX, "%s", words[n % (sizeof(words) / sizeof(words[0]))]);
        if (ss->text_len < TEXT_RING)
            ss->text_len++;
        else
            ss->text_head = (ss->text_head + 1) % TEXT_RING; /* bounded: drop the oldest */
        pthread_mutex_unlock(&ss->buf_mtx);
        n++;
        atomic_fetch_add(&ss->tokens, 1);
        if (gen_pause(tok, TEXT_INTERVAL_MS))
            break;
    }
    ihc_log(IHC_LOG_INFO, COMP, "stopped session=%s hw=%s module=%s after tokens=%" PRIu64, ss->sid,
            ss->s->slots[ss->slot].hw, IHC_MODULE_TEXT, n);
    gen_finish(g);
}

static void audio_work(ihc_token *tok, void *arg)
{
    sim_gen *g = arg;
    sim_session *ss = g->ss;
    uint64_t n = 0;
    uint32_t phase = 0;
    for (;;) {
        IHC_CHECKPOINT(tok, break);
        pthread_mutex_lock(&ss->buf_mtx);
        size_t at = (ss->audio_head + ss->audio_len) % AUDIO_RING;
        for (size_t i = 0; i < AUDIO_SAMPLES; i++) {
            /* a 400 Hz triangle wave at 16 kHz: 40 samples per period */
            uint32_t p = phase++ % 40u;
            int32_t v = p < 20u ? (int32_t)p * 1600 - 16000 : (int32_t)(40u - p) * 1600 - 16000;
            ss->audio[at][i] = (int16_t)v;
        }
        if (ss->audio_len < AUDIO_RING)
            ss->audio_len++;
        else
            ss->audio_head = (ss->audio_head + 1) % AUDIO_RING;
        pthread_mutex_unlock(&ss->buf_mtx);
        n++;
        atomic_fetch_add(&ss->chunks, 1);
        if (gen_pause(tok, AUDIO_INTERVAL_MS))
            break;
    }
    ihc_log(IHC_LOG_INFO, COMP, "stopped session=%s hw=%s module=%s after audio_chunks=%" PRIu64,
            ss->sid, ss->s->slots[ss->slot].hw, IHC_MODULE_AUDIO, n);
    gen_finish(g);
}

static void state_work(ihc_token *tok, void *arg)
{
    sim_gen *g = arg;
    sim_session *ss = g->ss;
    uint64_t n = 0;
    for (;;) {
        IHC_CHECKPOINT(tok, break);
        pthread_mutex_lock(&ss->buf_mtx);
        ss->state_counter++;
        ss->last_beat_ms = ihc_now_ms();
        pthread_mutex_unlock(&ss->buf_mtx);
        n++;
        atomic_fetch_add(&ss->beats, 1);
        if (gen_pause(tok, STATE_INTERVAL_MS))
            break;
    }
    ihc_log(IHC_LOG_INFO, COMP, "stopped session=%s hw=%s module=%s after beats=%" PRIu64, ss->sid,
            ss->s->slots[ss->slot].hw, IHC_MODULE_STATE, n);
    gen_finish(g);
}

static const ihc_work_fn work_fns[IHC_SIM__COUNT] = {
    [IHC_SIM_TEXT] = text_work,
    [IHC_SIM_AUDIO] = audio_work,
    [IHC_SIM_STATE] = state_work,
};

/* ---- sessions ---- */

static void session_free(sim_session *ss)
{
    if (!ss)
        return;
    ihc_token_release(ss->tok);
    pthread_mutex_destroy(&ss->buf_mtx);
    free(ss);
}

/* Begins a session for slot and starts its generators. Called without s->mtx. */
static void session_start(ihc_simulate *s, size_t slot)
{
    const char *hw = s->slots[slot].hw;
    sim_session *ss = calloc(1, sizeof(*ss));
    if (!ss) {
        ihc_log(IHC_LOG_ERROR, COMP, "cannot begin session hw=%s error=\"%s\"", hw,
                ihc_strerror(IHC_ENOMEM));
        goto retry;
    }
    ss->s = s;
    ss->slot = slot;
    pthread_mutex_init(&ss->buf_mtx, NULL);
    ihc_session_opts o = {.hw = hw, .data = "{\"simulated\":true}"};
    int rc = ihc_agent_session_begin(s->a, &o, &ss->tok, ss->sid, sizeof(ss->sid));
    if (rc != IHC_OK) {
        ihc_log(IHC_LOG_WARN, COMP, "cannot begin session hw=%s error=\"%s\" retry_ms=%u", hw,
                ihc_strerror(rc), s->pause_ms);
        session_free(ss);
        goto retry;
    }

    pthread_mutex_lock(&s->mtx);
    ss->next = s->sessions;
    s->sessions = ss;
    s->slots[slot].cur = ss;
    for (int k = 0; k < IHC_SIM__COUNT; k++) {
        ss->gens[k].ss = ss;
        ss->gens[k].kind = (ihc_sim_kind)k;
        ss->gens[k].running = true;
    }
    ss->n_running = IHC_SIM__COUNT; /* before the threads start: they may finish at once */
    pthread_mutex_unlock(&s->mtx);

    ihc_log(IHC_LOG_INFO, COMP, "started session=%s hw=%s", ss->sid, hw);
    bool failed = false;
    for (int k = 0; k < IHC_SIM__COUNT; k++) {
        rc = ihc_agent_spawn(s->a, ss->sid, module_names[k], work_fns[k], &ss->gens[k]);
        if (rc != IHC_OK) {
            /* ENOENT: the session was interrupted and cleaned up before its work began */
            if (rc != IHC_ENOENT)
                ihc_log(IHC_LOG_ERROR, COMP,
                        "cannot start generator session=%s module=%s error=\"%s\"", ss->sid,
                        module_names[k], ihc_strerror(rc));
            failed = failed || rc != IHC_ENOENT;
            gen_finish(&ss->gens[k]);
        }
    }
    if (failed) /* a session missing generators is recycled rather than left half-alive */
        ihc_token_cancel(ss->tok);
    return;

retry:
    pthread_mutex_lock(&s->mtx);
    s->slots[slot].restart_at_ns = ihc_mono_ns() + (uint64_t)s->pause_ms * 1000000ull;
    pthread_mutex_unlock(&s->mtx);
}

/* Ends a finished session in the agent and frees it. Called without s->mtx. */
static void session_finish(ihc_simulate *s, sim_session *ss, bool restart)
{
    int rc = ihc_agent_session_end(s->a, ss->sid);
    /* ENOENT: the agent already cleaned it up after the interrupt (CLEANUP_ON_INTERRUPT) */
    if (rc != IHC_OK && rc != IHC_ENOENT)
        ihc_log(IHC_LOG_WARN, COMP, "cannot end session=%s error=\"%s\"", ss->sid,
                ihc_strerror(rc));
    if (restart)
        ihc_log(IHC_LOG_INFO, COMP,
                "session ended session=%s hw=%s tokens=%" PRIu64 " audio_chunks=%" PRIu64
                " beats=%" PRIu64 " next_session_in_ms=%u",
                ss->sid, s->slots[ss->slot].hw, (uint64_t)atomic_load(&ss->tokens),
                (uint64_t)atomic_load(&ss->chunks), (uint64_t)atomic_load(&ss->beats), s->pause_ms);
    session_free(ss);
}

/* ---- supervisor: ends interrupted sessions, begins new ones, logs progress ---- */

static void log_progress(ihc_simulate *s)
{
    for (sim_session *ss = s->sessions; ss; ss = ss->next) {
        if (ihc_token_cancelled(ss->tok))
            continue;
        ihc_log(IHC_LOG_INFO, COMP,
                "progress session=%s hw=%s tokens=%" PRIu64 " audio_chunks=%" PRIu64
                " beats=%" PRIu64,
                ss->sid, s->slots[ss->slot].hw, (uint64_t)atomic_load(&ss->tokens),
                (uint64_t)atomic_load(&ss->chunks), (uint64_t)atomic_load(&ss->beats));
    }
}

static void *supervisor_main(void *arg)
{
    ihc_simulate *s = arg;
    uint64_t next_progress = ihc_mono_ns() + PROGRESS_NS;
    size_t *to_start = calloc(s->n_slots, sizeof(*to_start));

    pthread_mutex_lock(&s->mtx);
    while (!s->stopping) {
        uint64_t now = ihc_mono_ns();
        sim_session *finished = NULL;
        for (sim_session **pp = &s->sessions; *pp;) {
            sim_session *ss = *pp;
            if (ss->n_running == 0 && ihc_token_cancelled(ss->tok)) {
                *pp = ss->next;
                ss->next = finished;
                finished = ss;
                s->slots[ss->slot].cur = NULL;
                s->slots[ss->slot].restart_at_ns = now + (uint64_t)s->pause_ms * 1000000ull;
            } else {
                pp = &ss->next;
            }
        }
        size_t n_start = 0;
        uint64_t wake = now + TICK_NS;
        for (size_t i = 0; i < s->n_slots; i++) {
            if (s->slots[i].cur)
                continue;
            if (s->slots[i].restart_at_ns <= now && to_start)
                to_start[n_start++] = i;
            else if (s->slots[i].restart_at_ns < wake)
                wake = s->slots[i].restart_at_ns;
        }
        if (now >= next_progress) {
            log_progress(s);
            next_progress = now + PROGRESS_NS;
        }
        pthread_mutex_unlock(&s->mtx);

        while (finished) {
            sim_session *ss = finished;
            finished = ss->next;
            session_finish(s, ss, true);
        }
        for (size_t i = 0; i < n_start; i++) {
            /* mark the slot busy-until-begun so a slow begin is not retried meanwhile */
            pthread_mutex_lock(&s->mtx);
            bool stopping = s->stopping;
            s->slots[to_start[i]].restart_at_ns = UINT64_MAX;
            pthread_mutex_unlock(&s->mtx);
            if (!stopping)
                session_start(s, to_start[i]);
        }

        pthread_mutex_lock(&s->mtx);
        if (n_start == 0 && !finished && !s->stopping) {
            if (next_progress < wake)
                wake = next_progress;
            struct timespec ts;
            abs_deadline(&ts, wake);
            pthread_cond_timedwait(&s->cond, &s->mtx, &ts);
        }
    }
    pthread_mutex_unlock(&s->mtx);
    free(to_start);
    return NULL;
}

/* ---- lifecycle ---- */

int ihc_simulate_open(ihc_simulate **out, ihc_agent *a, const char *const *hws, size_t n_hws,
                      unsigned restart_pause_ms)
{
    *out = NULL;
    if (!a || !hws || n_hws == 0)
        return IHC_EINVAL;
    for (size_t i = 0; i < n_hws; i++)
        if (!hws[i] || !ihc_hw_valid(hws[i], strlen(hws[i]), false))
            return IHC_EBADHW;

    ihc_simulate *s = calloc(1, sizeof(*s));
    if (!s)
        return IHC_ENOMEM;
    s->slots = calloc(n_hws, sizeof(*s->slots));
    if (!s->slots) {
        free(s);
        return IHC_ENOMEM;
    }
    s->a = a;
    s->n_slots = n_hws;
    s->pause_ms = restart_pause_ms;
    for (size_t i = 0; i < n_hws; i++)
        snprintf(s->slots[i].hw, sizeof(s->slots[i].hw), "%s", hws[i]);
    pthread_mutex_init(&s->mtx, NULL);
    ihc_cond_init_mono(&s->cond);

    /* the first sessions begin before open returns, so the first hello can list them */
    for (size_t i = 0; i < n_hws; i++)
        session_start(s, i);

    if (pthread_create(&s->sup, NULL, supervisor_main, s) != 0) {
        ihc_simulate_stop(s);
        ihc_simulate_free(s);
        return IHC_EINTERNAL;
    }
    s->sup_started = true;
    *out = s;
    return IHC_OK;
}

void ihc_simulate_stop(ihc_simulate *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mtx);
    bool already = s->stopping;
    s->stopping = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mtx);
    if (already)
        return;
    if (s->sup_started)
        pthread_join(s->sup, NULL);

    /* with the supervisor gone nothing else changes the list; cancel outside the lock, as
     * cancelling calls into the agent */
    for (sim_session *ss = s->sessions; ss; ss = ss->next)
        ihc_token_cancel(ss->tok);
    pthread_mutex_lock(&s->mtx);
    uint64_t deadline = ihc_mono_ns() + (uint64_t)STOP_WAIT_MS * 1000000ull;
    for (;;) {
        bool running = false;
        for (sim_session *ss = s->sessions; ss; ss = ss->next)
            running = running || ss->n_running > 0;
        if (!running)
            break;
        struct timespec ts;
        abs_deadline(&ts, deadline);
        if (pthread_cond_timedwait(&s->cond, &s->mtx, &ts) != 0 && ihc_mono_ns() >= deadline) {
            ihc_log(IHC_LOG_ERROR, COMP, "generators did not stop within %d ms", STOP_WAIT_MS);
            break;
        }
    }
    /* sessions whose generators have returned end now; any straggler stays for free() */
    sim_session *finished = NULL;
    for (sim_session **pp = &s->sessions; *pp;) {
        sim_session *ss = *pp;
        if (ss->n_running == 0) {
            *pp = ss->next;
            ss->next = finished;
            finished = ss;
            s->slots[ss->slot].cur = NULL;
        } else {
            pp = &ss->next;
        }
    }
    pthread_mutex_unlock(&s->mtx);
    while (finished) {
        sim_session *ss = finished;
        finished = ss->next;
        session_finish(s, ss, false);
    }
}

void ihc_simulate_free(ihc_simulate *s)
{
    if (!s)
        return;
    ihc_simulate_stop(s);
    for (sim_session *ss = s->sessions, *next; ss; ss = next) {
        next = ss->next;
        if (ss->n_running == 0)
            session_free(ss);
        else /* a generator thread still holds it: leaking beats a use-after-free */
            ihc_log(IHC_LOG_ERROR, COMP, "session=%s still running at exit", ss->sid);
    }
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mtx);
    free(s->slots);
    free(s);
}

/* ---- module methods ---- */

int ihc_simulate_stop_module(ihc_simulate *s, const char *hw, ihc_sim_kind kind, int timeout_ms)
{
    if (!s)
        return IHC_OK;
    if (!hw || (unsigned)kind >= IHC_SIM__COUNT)
        return IHC_EINVAL;
    uint64_t deadline = ihc_mono_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ull;
    int rc = IHC_OK;
    pthread_mutex_lock(&s->mtx);
    for (;;) {
        bool pending = false;
        for (sim_session *ss = s->sessions; ss && !pending; ss = ss->next)
            pending = hw_match(hw, s->slots[ss->slot].hw) && ihc_token_cancelled(ss->tok) &&
                      ss->gens[kind].running;
        if (!pending)
            break;
        if (ihc_mono_ns() >= deadline) {
            rc = IHC_ETIMEDOUT;
            break;
        }
        struct timespec ts;
        abs_deadline(&ts, deadline);
        pthread_cond_timedwait(&s->cond, &s->mtx, &ts);
    }
    pthread_mutex_unlock(&s->mtx);
    return rc;
}

int ihc_simulate_clear_buffers(ihc_simulate *s, const char *hw, ihc_sim_kind kind)
{
    if (!s)
        return IHC_OK;
    if (!hw || (unsigned)kind >= IHC_SIM__COUNT)
        return IHC_EINVAL;
    pthread_mutex_lock(&s->mtx);
    for (sim_session *ss = s->sessions; ss; ss = ss->next) {
        if (!hw_match(hw, s->slots[ss->slot].hw) || !ihc_token_cancelled(ss->tok))
            continue;
        size_t dropped = 0;
        pthread_mutex_lock(&ss->buf_mtx);
        switch (kind) {
        case IHC_SIM_TEXT:
            dropped = ss->text_len;
            ss->text_len = ss->text_head = 0;
            break;
        case IHC_SIM_AUDIO:
            dropped = ss->audio_len;
            ss->audio_len = ss->audio_head = 0;
            break;
        default:
            dropped = ss->state_counter > 0;
            ss->state_counter = 0;
            ss->last_beat_ms = 0;
            break;
        }
        pthread_mutex_unlock(&ss->buf_mtx);
        ihc_log(IHC_LOG_INFO, COMP, "buffers cleared session=%s hw=%s module=%s dropped=%zu",
                ss->sid, s->slots[ss->slot].hw, module_names[kind], dropped);
    }
    pthread_mutex_unlock(&s->mtx);
    return IHC_OK;
}

int ihc_simulate_cleanup(ihc_simulate *s, const char *hw)
{
    if (!s)
        return IHC_OK;
    if (!hw)
        return IHC_EINVAL;
    /* the supervisor ends every interrupted session whose generators have returned; wake it
     * now instead of at its next tick */
    pthread_mutex_lock(&s->mtx);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mtx);
    return IHC_OK;
}
