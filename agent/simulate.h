/* The ihc-agent simulated workload (--simulate HW,…): one session per hardware_id whose
 * generators run in every built-in module until interrupted, then a new session. */
#ifndef IHC_SIMULATE_H
#define IHC_SIMULATE_H

#include <stddef.h>

#include "ihc/agent.h"

/* The built-in modules a simulated session has generators in. */
typedef enum {
    IHC_SIM_TEXT = 0, /* text_processing: tokens every ~50 ms into a bounded buffer */
    IHC_SIM_AUDIO,    /* audio_generation: 20 ms audio chunks into a bounded buffer */
    IHC_SIM_STATE,    /* session_management: a heartbeat counter */
    IHC_SIM__COUNT
} ihc_sim_kind;

#define IHC_MODULE_TEXT  "text_processing"
#define IHC_MODULE_AUDIO "audio_generation"
#define IHC_MODULE_STATE "session_management"

/* Module name of kind. */
const char *ihc_simulate_module(ihc_sim_kind kind);

typedef struct ihc_simulate ihc_simulate;

/* Starts the workload: for each of the n_hws hardware_ids (validated by the caller) begins a
 * session on a and spawns its generators; after a session is interrupted a new one begins
 * restart_pause_ms later. hws are copied. Caller owns *out: ihc_simulate_stop, then (after
 * ihc_agent_close) ihc_simulate_free. Errors: IHC_EINVAL, IHC_ENOMEM, IHC_EINTERNAL. */
int ihc_simulate_open(ihc_simulate **out, ihc_agent *a, const char *const *hws, size_t n_hws,
                      unsigned restart_pause_ms);

/* Stops the generators and ends the sessions; later module methods do nothing. Accepts NULL. */
void ihc_simulate_stop(ihc_simulate *s);

/* Frees s; call after ihc_agent_close so that no method can still be running. Accepts NULL. */
void ihc_simulate_free(ihc_simulate *s);

/* Module methods: act on the simulated sessions of hw ("*": all) whose token is cancelled.
 * stop_module waits (up to timeout_ms) until their generators of kind have returned
 * (IHC_ETIMEDOUT otherwise); clear_buffers drops what they produced; cleanup ends them now and
 * schedules their replacement. s may be NULL (no simulation): IHC_OK. */
int ihc_simulate_stop_module(ihc_simulate *s, const char *hw, ihc_sim_kind kind, int timeout_ms);
int ihc_simulate_clear_buffers(ihc_simulate *s, const char *hw, ihc_sim_kind kind);
int ihc_simulate_cleanup(ihc_simulate *s, const char *hw);

#endif
