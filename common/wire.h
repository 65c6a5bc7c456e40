/* The ihc wire protocol: MessagePack messages of DESIGN.md, topic framing for PUB/SUB,
 * identifier validation and optional HMAC-SHA256 signing (sign.h). Decoding is strict and
 * safe on hostile input: nothing is allocated before the bytes that back it have been seen. */
#ifndef IHC_WIRE_H
#define IHC_WIRE_H

#include "sign.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits enforced by the encoder and the decoder. */
#define IHC_WIRE_MAX_MSG   (4u * 1024u * 1024u) /* whole message, bytes */
#define IHC_WIRE_MAX_DEPTH 8                    /* nesting of maps/arrays */
#define IHC_WIRE_MAX_LIST  100000               /* entries of any list */
#define IHC_HW_MAX         128                  /* hardware_id bytes */
#define IHC_ID_MAX         128                  /* session ids, module and method names */
#define IHC_AGENT_ID_MAX   255                  /* agent ids ("host:pid") */
#define IHC_REASON_MAX     1024                 /* free text: reason, error */
#define IHC_DATA_MAX       (64u * 1024u)        /* session data (JSON text) */
#define IHC_JSON_MAX       (2u * 1024u * 1024u) /* JSON carried in control responses */
#define IHC_TOPIC_MAX      (3 + IHC_AGENT_ID_MAX + 1)

/* The message types; the X-macro gives the enum and the "type" strings. */
#define IHC_MSG_MAP(XX)                                                                            \
    XX(INTERRUPT, "interrupt")                                                                     \
    XX(REPORT, "report")                                                                           \
    XX(SESSION_BEGIN, "session_begin")                                                             \
    XX(SESSION_END, "session_end")                                                                 \
    XX(HELLO, "hello")                                                                             \
    XX(HEARTBEAT, "heartbeat")                                                                     \
    XX(SYNC, "sync")                                                                               \
    XX(RESULT, "result")                                                                           \
    XX(CONTROL_REQUEST, "control_request")                                                         \
    XX(CONTROL_RESPONSE, "control_response")

typedef enum {
    IHC_MSG_NONE = 0,
#define IHC__MSG_ENUM(name, str) IHC_MSG_##name,
    IHC_MSG_MAP(IHC__MSG_ENUM)
#undef IHC__MSG_ENUM
        IHC__MSG_COUNT
} ihc_msg_type;

/* "interrupt" on PUB, topic "hw:<hw>\0" (global "hw:*\0"): the first send, with no agents
 * listed, answered by the agents holding a session of hw. Re-sends go to each agent that has
 * not answered on its own topic "ag:<agent>\0", listing it. Agents act once per id. agents:
 * agents that must answer even when they hold no session of hw (empty = none). attempt: 0
 * first send, >0 re-sends. */
typedef struct {
    uint64_t id;
    char *hw;
    uint64_t epoch;
    char *reason;        /* may be "" */
    int64_t deadline_ms; /* wall clock ms by which the coordinator gives up */
    char **agents;
    size_t n_agents;
    uint32_t attempt;
    uint64_t term; /* the sending leader's term (0: a coordinator without standbys) */
} ihc_interrupt_msg;

typedef enum {
    IHC_MOD_OK = 0,    /* every method returned success in time */
    IHC_MOD_TIMED_OUT, /* a method did not return within the module timeout */
    IHC_MOD_FAILED,    /* a method returned an error */
    IHC_MOD_DISABLED   /* module disabled: nothing run (counts as ok) */
} ihc_mod_status;

/* Wire: {name, ok, time_ms, error, status}; ok == (status OK or DISABLED). */
typedef struct {
    char *name;
    ihc_mod_status status;
    double time_ms;
    char *error; /* NULL when none */
} ihc_module_result;

/* A session as agents describe it (session_begin, hello, report.begun). */
typedef struct {
    char *session_id;
    char *hw;
    uint64_t epoch;     /* hw epoch the session started in */
    uint64_t gepoch;    /* global ("*") epoch the session started in */
    int64_t created_ms; /* agent wall clock */
    char *module;       /* may be NULL */
    int32_t pid;        /* 0 when not a local-endpoint process */
    char *data;         /* JSON text or NULL */
} ihc_session_info;

/* "report" on PUSH: what one agent did for one interrupt. */
typedef struct {
    uint64_t id;
    char *agent;
    char *hw;
    ihc_module_result *modules;
    size_t n_modules;
    char **sessions; /* session ids cancelled/cleaned */
    size_t n_sessions;
    double time_ms; /* agent's total handling time */
    uint64_t term;  /* the term of the interrupt it answers (0: none) */
    /* sessions begun while the interrupt was handled (in its on_cancel callbacks), announced
     * here instead of in session_begin messages of their own; only to a coordinator whose
     * sync said report_begun */
    ihc_session_info *begun;
    size_t n_begun;
} ihc_report_msg;

typedef struct {
    char *agent;
    ihc_session_info session;
} ihc_session_begin_msg;

typedef struct {
    char *agent;
    char *session_id;
    char *hw;
    char *state; /* "done", "interrupted", "expired" */
} ihc_session_end_msg;

typedef struct {
    char *name;
    char **methods;
    size_t n_methods;
    uint32_t timeout_ms;
    bool enabled;
} ihc_module_info;

/* "hello" on PUSH at every (re)connection: everything the coordinator should know. */
typedef struct {
    char *agent;
    char *node;
    int32_t pid;
    int64_t started_ms;
    ihc_module_info *modules;
    size_t n_modules;
    ihc_session_info *sessions;
    size_t n_sessions;
    /* local endpoints ("ip:port", sockaddr.h) of the agent's SUB connections: the coordinator
     * learns which of its PUB connections are agents' (it publishes results only when some
     * other connection may want them) */
    char **sub_addrs;
    size_t n_sub_addrs;
} ihc_hello_msg;

/* "heartbeat" on PUSH, periodically: liveness plus the hws of active sessions. */
typedef struct {
    char *agent;
    uint32_t n_sessions;
    char **hws;
    size_t n_hws;
    char **modules; /* module names */
    size_t n_modules;
} ihc_heartbeat_msg;

typedef struct {
    char *hw;
    uint64_t epoch;
    int64_t set_ms; /* coordinator wall clock of the last bump, 0 if unknown */
} ihc_epoch_info;

/* "sync" on PUB, topic "ag:<agent>\0": the coordinator's answer to hello; with hello set
 * (and no epochs), its request for one: it had given the agent up and forgotten its
 * sessions, and the agent's link never dropped, so nothing else would make it say hello. */
typedef struct {
    char *agent;
    ihc_epoch_info *epochs; /* includes "*" for the global epoch */
    size_t n_epochs;
    bool hello;
    uint64_t term;     /* the sending leader's term (0: a coordinator without standbys) */
    bool report_begun; /* this coordinator reads a report's begun sessions */
} ihc_sync_msg;

/* "result" on PUB, topic "ev:\0": a finished interrupt, for `ihc watch`. */
typedef struct {
    char *json;
} ihc_result_msg;

/* Control socket (REQ/REP), used by libihc and the CLI. ops: "interrupt", "sessions",
 * "agents", "flags", "flags_reset", "stats". */
typedef struct {
    char *op;
    char *hw;           /* interrupt: required; sessions: optional filter */
    char *reason;       /* may be NULL */
    int64_t timeout_ms; /* 0 = coordinator default */
} ihc_control_request;

/* status: HTTP-like code (200, 400, 404, 503…); json: the same body the HTTP API returns. */
typedef struct {
    int32_t status;
    char *json;
} ihc_control_response;

/* One decoded or to-be-encoded message. Decoded messages own every pointer inside and are
 * freed with ihc_msg_free; for encoding, the caller owns what it points to. */
typedef struct ihc_msg {
    ihc_msg_type type;
    int64_t ts_ms;  /* sender wall clock; the encoder fills it when 0 */
    uint64_t nonce; /* signed messages only; the encoder fills it */
    union {
        ihc_interrupt_msg interrupt;
        ihc_report_msg report;
        ihc_session_begin_msg session_begin;
        ihc_session_end_msg session_end;
        ihc_hello_msg hello;
        ihc_heartbeat_msg heartbeat;
        ihc_sync_msg sync;
        ihc_result_msg result;
        ihc_control_request control_request;
        ihc_control_response control_response;
    } u;
} ihc_msg;

/* Name of a type ("report"), or "unknown". */
const char *ihc_msg_type_name(ihc_msg_type t);

/* Encodes m (without topic). auth (sign.h) may be NULL: unsigned. On success *buf is malloc'd,
 * caller frees. Errors: IHC_EINVAL (missing required field, invalid hw/id), IHC_ETOOBIG,
 * IHC_ENOMEM. */
int ihc_wire_encode(const ihc_msg *m, const ihc_wire_auth *auth, uint8_t **buf, size_t *len);

/* Like ihc_wire_encode, but prefixes the topic: "hw:<hw>\0" for interrupts, "ag:<agent>\0"
 * for sync, "ev:\0" for results. Other types: IHC_EINVAL. */
int ihc_wire_encode_framed(const ihc_msg *m, const ihc_wire_auth *auth, uint8_t **buf, size_t *len);

/* Like ihc_wire_encode_framed, but on one agent's own topic "ag:<agent>\0": an interrupt
 * re-sent to the agent that has not answered (only it receives it), or a sync. Other types:
 * IHC_EINVAL. */
int ihc_wire_encode_to(const ihc_msg *m, const ihc_wire_auth *auth, const char *agent,
                       uint8_t **buf, size_t *len);

/* Decodes one message of exactly len bytes. auth may be NULL (no signature check; a "sig"
 * present is then ignored). Caller owns *out (ihc_msg_free). Errors: IHC_ETOOBIG,
 * IHC_EPROTO (not msgpack, trailing bytes, too deep), IHC_EVERSION, IHC_EMISSING,
 * IHC_ETYPE, IHC_EBADHW, IHC_EBADID, IHC_EBADSIG, IHC_EREPLAY, IHC_ENOMEM. Unknown fields
 * are ignored; an unknown "type" is IHC_EPROTO. On error *out is NULL and, if detail is not
 * NULL, it receives a short text naming the field (e.g. "field 'hw': invalid hardware_id"). */
int ihc_wire_decode(const uint8_t *buf, size_t len, const ihc_wire_auth *auth, ihc_msg **out,
                    char *detail, size_t detail_len);

/* Splits a framed message into topic (without the NUL) and body. Errors: IHC_EPROTO when
 * there is no NUL within IHC_TOPIC_MAX bytes. */
int ihc_wire_split(const uint8_t *buf, size_t len, const char **topic, size_t *topic_len,
                   const uint8_t **body, size_t *body_len);

/* Writes the NUL-terminated subscription topic for hw ("hw:dev-1\0") into out; returns the
 * number of bytes including the NUL, or 0 when cap is too small or hw is invalid. */
size_t ihc_wire_topic_hw(char *out, size_t cap, const char *hw);
size_t ihc_wire_topic_agent(char *out, size_t cap, const char *agent);
#define IHC_TOPIC_EVENTS "ev:" /* + NUL */

/* Frees a decoded message and everything it owns; accepts NULL. */
void ihc_msg_free(ihc_msg *m);

/* hardware_id: 1..128 bytes of [A-Za-z0-9._:@-]; "*" is the global id (allowed only where
 * allow_global). len is the byte length (strlen for C strings). */
bool ihc_hw_valid(const char *hw, size_t len, bool allow_global);

/* Session ids, module and method names: 1..128 bytes of [A-Za-z0-9._:@-]. */
bool ihc_id_valid(const char *id, size_t len);

/* Agent ids: 1..255 printable ASCII bytes, no spaces. */
bool ihc_agent_id_valid(const char *id, size_t len);

#endif
