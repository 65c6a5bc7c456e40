/* One interrupt in flight: the agents it waits for, the reports collected, the re-send
 * schedule, the deadline and the aggregated result. Pure logic (time is passed in), owned
 * by the coordinator loop thread. */
#ifndef IHC_COORD_INFLIGHT_H
#define IHC_COORD_INFLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api.h"
#include "wire.h"

/* One module outcome as an agent reported it. */
typedef struct {
    char *agent;
    char *name;
    ihc_mod_status status;
    double time_ms;
    char *error; /* NULL when none */
} ihc_ifl_module;

/* One session an agent reported as cancelled/cleaned. */
typedef struct {
    char *agent;
    char *session_id;
} ihc_ifl_session;

typedef struct {
    uint64_t id;
    const char *hw;
    uint64_t epoch;
    const char *reason;    /* NULL = "" */
    char *const *expected; /* copied */
    size_t n_expected;
    uint64_t t0_ns;         /* monotonic: when the request was accepted */
    uint64_t timeout_ns;    /* deadline = t0 + timeout */
    uint64_t resend_ns;     /* first re-send after this; doubles */
    uint64_t resend_max_ns; /* cap of the re-send interval */
    int64_t deadline_ms;    /* wall clock deadline told to agents */
} ihc_inflight_params;

/* Every field is owned by the inflight and read-only for others. */
typedef struct ihc_inflight {
    uint64_t id;
    char *hw;
    uint64_t epoch;
    char *reason;
    uint64_t t0_ns, deadline_ns;
    int64_t deadline_ms;
    char **expected; /* sorted as given */
    bool *answered;  /* answered[i]: expected[i] reported */
    size_t n_expected, n_answered;
    char **extra; /* agents that reported without being expected */
    size_t n_extra;
    ihc_ifl_module *modules;
    size_t n_modules;
    ihc_ifl_session *sessions;
    size_t n_sessions;
    uint32_t attempt; /* sends so far minus one */
    uint64_t next_resend_ns, backoff_ns, backoff_max_ns;
    /* result, valid after ihc_inflight_finish */
    bool finished, success, persisted;
    double total_time_ms;
    char *error; /* NULL on success */
    /* who waits for the result */
    ihc_api_done_fn done;
    void *arg;
} ihc_inflight;

/* Caller owns *out (ihc_inflight_free). Errors: IHC_ENOMEM. */
int ihc_inflight_new(ihc_inflight **out, const ihc_inflight_params *p);
void ihc_inflight_free(ihc_inflight *f);

/* Adds one agent's report (an agent not expected is added to the answered). Errors:
 * IHC_EEXIST when that agent already reported (the repeat is ignored), IHC_ECLOSED after
 * finish, IHC_ENOMEM. */
int ihc_inflight_report(ihc_inflight *f, const ihc_report_msg *r);

/* True when every expected agent answered. */
bool ihc_inflight_complete(const ihc_inflight *f);

/* Expected agents that have not answered yet, in order. *out is a malloc'd array of
 * pointers into f (free only the array). Errors: IHC_ENOMEM. */
int ihc_inflight_missing(const ihc_inflight *f, const char ***out, size_t *n);

/* True when a re-send is due at now_ns (someone is missing and the interval passed). */
bool ihc_inflight_resend_due(const ihc_inflight *f, uint64_t now_ns);

/* Records a re-send at now_ns: attempt + 1, the interval doubles up to the cap. Returns
 * the new attempt number. */
uint32_t ihc_inflight_resent(ihc_inflight *f, uint64_t now_ns);

/* True when the deadline passed. */
bool ihc_inflight_expired(const ihc_inflight *f, uint64_t now_ns);

/* The next moment something is due (re-send or deadline). */
uint64_t ihc_inflight_next_ns(const ihc_inflight *f);

/* Fixes the result: success, error text, total time from t0 to now_ns, persisted. */
int ihc_inflight_finish(ihc_inflight *f, uint64_t now_ns, bool persisted);

/* The result document of api.h (after finish). Caller frees; NULL on ENOMEM. */
char *ihc_inflight_result_json(const ihc_inflight *f);

/* JSON arrays for the interrupt log (after finish): names of modules that ran ok, cleaned
 * session ids, missing agents. Caller frees the three strings. Errors: IHC_ENOMEM. */
int ihc_inflight_log_fields(const ihc_inflight *f, char **modules, char **sessions, char **missing);

/* Name of a module status in results: "ok", "timed_out", "failed", "disabled". */
const char *ihc_inflight_status_name(ihc_mod_status s);

#endif
