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

/* An expected agent and its report (NULL while it is missing). */
typedef struct {
    char *agent;
    ihc_msg *report; /* a decoded IHC_MSG_REPORT, owned */
} ihc_ifl_agent;

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
    ihc_ifl_agent *expected; /* in the order given */
    ihc_ifl_agent **by_id;   /* expected, sorted by agent id (lookups) */
    size_t n_expected, n_answered;
    ihc_msg **extra; /* reports of agents that were not expected, in arrival order */
    size_t n_extra, cap_extra;
    size_t n_modules, n_sessions; /* over every report */
    uint32_t attempt;             /* sends so far minus one */
    uint64_t next_resend_ns, backoff_ns, backoff_max_ns;
    /* result, valid after ihc_inflight_finish */
    bool finished, success, persisted;
    double total_time_ms;
    char *error; /* NULL on success */
    /* who waits for the result */
    ihc_api_done_fn done;
    void *arg;
} ihc_inflight;

/* The result document, built in one pass, with where its arrays for the interrupt log are. */
typedef struct {
    char *json; /* caller frees */
    size_t len;
    struct {
        size_t off, len;
    } modules, sessions, missing; /* "interrupted_modules", "cleaned_sessions", "missing" */
} ihc_ifl_result;

/* Caller owns *out (ihc_inflight_free). Errors: IHC_ENOMEM. */
int ihc_inflight_new(ihc_inflight **out, const ihc_inflight_params *p);
void ihc_inflight_free(ihc_inflight *f);

/* Adds one agent's report, taking the decoded message *m (an IHC_MSG_REPORT) without
 * copying anything: on IHC_OK *m is NULL and f owns it. An agent not expected is added to
 * the answered. O(log n) in the expected agents. Errors: IHC_EEXIST when that agent already
 * reported (the repeat is ignored), IHC_ECLOSED after finish, IHC_EINVAL, IHC_ENOMEM; on
 * error *m stays the caller's. */
int ihc_inflight_report_take(ihc_inflight *f, ihc_msg **m);

/* The same for a report the caller keeps (copied). */
int ihc_inflight_report(ihc_inflight *f, const ihc_report_msg *r);

/* The i-th report (i < n_expected + n_extra) in result order: the expected agents' as
 * given, NULL for one that has not answered, then the others'. */
const ihc_report_msg *ihc_inflight_report_at(const ihc_inflight *f, size_t i);

/* The report of agent, NULL when it has not answered. */
const ihc_report_msg *ihc_inflight_report_of(const ihc_inflight *f, const char *agent);

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

/* The result document of api.h (after finish), built once: names of modules that ran ok and
 * cleaned session ids without repeats, every module outcome, the agents. Errors:
 * IHC_ENOMEM. */
int ihc_inflight_result(const ihc_inflight *f, ihc_ifl_result *out);

/* The result document alone. Caller frees; NULL on ENOMEM. */
char *ihc_inflight_result_json(const ihc_inflight *f);

/* JSON arrays for the interrupt log (after finish): names of modules that ran ok, cleaned
 * session ids, missing agents (the arrays of the result document). Caller frees the three
 * strings. Errors: IHC_ENOMEM. */
int ihc_inflight_log_fields(const ihc_inflight *f, char **modules, char **sessions, char **missing);

/* Name of a module status in results: "ok", "timed_out", "failed", "disabled". */
const char *ihc_inflight_status_name(ihc_mod_status s);

#endif
