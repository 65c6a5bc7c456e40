/* The ihc wire protocol: a bounded MessagePack walker that validates untrusted bytes before
 * anything is allocated, table-driven decoding/encoding of the structs of wire.h, topic
 * framing, and HMAC-SHA256 signing with a bounded replay cache. */
#include "wire.h"

#include "clock.h"
#include "err.h"

#include <errno.h>
#include <math.h>
#include <mbedtls/md.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define IHC_WIRE_VERSION 1
#define SIG_LEN          32

/* ------------------------------------------------------------------------------------------
 * Identifiers
 * ---------------------------------------------------------------------------------------- */

static inline bool id_char(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == ':' || ch == '@' || ch == '-';
}

static bool id_chars_valid(const char *s, size_t len, size_t max)
{
    if (s == NULL || len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!id_char((unsigned char)s[i]))
            return false;
    return true;
}

bool ihc_hw_valid(const char *hw, size_t len, bool allow_global)
{
    if (hw != NULL && len == 1 && hw[0] == '*')
        return allow_global;
    return id_chars_valid(hw, len, IHC_HW_MAX);
}

bool ihc_id_valid(const char *id, size_t len)
{
    return id_chars_valid(id, len, IHC_ID_MAX);
}

bool ihc_agent_id_valid(const char *id, size_t len)
{
    if (id == NULL || len == 0 || len > IHC_AGENT_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)id[i];
        if (ch <= 0x20 || ch >= 0x7f)
            return false;
    }
    return true;
}

/* ------------------------------------------------------------------------------------------
 * Message types
 * ---------------------------------------------------------------------------------------- */

static const char *const type_names[IHC__MSG_COUNT] = {
#define IHC__MSG_NAME(name, str) [IHC_MSG_##name] = str,
    IHC_MSG_MAP(IHC__MSG_NAME)
#undef IHC__MSG_NAME
};

const char *ihc_msg_type_name(ihc_msg_type t)
{
    if (t <= IHC_MSG_NONE || t >= IHC__MSG_COUNT)
        return "unknown";
    return type_names[t];
}

static const uint8_t type_lens[IHC__MSG_COUNT] = {
#define IHC__MSG_LEN(name, str) [IHC_MSG_##name] = sizeof(str) - 1,
    IHC_MSG_MAP(IHC__MSG_LEN)
#undef IHC__MSG_LEN
};

static ihc_msg_type type_lookup(const uint8_t *s, size_t n)
{
    for (int t = IHC_MSG_NONE + 1; t < IHC__MSG_COUNT; t++)
        if (type_lens[t] == n && memcmp(type_names[t], s, n) == 0)
            return (ihc_msg_type)t;
    return IHC_MSG_NONE;
}

/* ------------------------------------------------------------------------------------------
 * Schemas: one table per message type (and per nested object) drives both the decoder and
 * the encoder. A field is required (F_REQ), optional (absent = zero/NULL), or optional with a
 * default (F_DEF_EMPTY: "" when absent; F_DEF_TRUE: true when absent). The encoder emits
 * optional scalars only when non-zero, optional strings only when non-NULL and optional lists
 * only when non-empty; bools and module statuses are always emitted.
 * ---------------------------------------------------------------------------------------- */

typedef enum {
    K_U64,       /* uint64_t; negative → ETYPE */
    K_U32,       /* uint32_t */
    K_I64,       /* int64_t */
    K_I64_POS,   /* int64_t >= 0 */
    K_I32,       /* int32_t */
    K_DOUBLE,    /* double; float32/float64/int on the wire, finite */
    K_BOOL,      /* bool */
    K_HW,        /* char *, hardware_id, "*" not allowed */
    K_HW_ANY,    /* char *, hardware_id, "*" allowed */
    K_ID,        /* char *, session id / module / method / op */
    K_AGENT,     /* char *, agent id (also node names) */
    K_TEXT,      /* char *, free text up to max bytes, no NUL */
    K_ENUM,      /* char *, one of aux (NULL-terminated list of strings) */
    K_MODSTATUS, /* ihc_mod_status; wire string */
    K_MODOK,     /* wire bool "ok" derived from the ihc_mod_status at off */
    K_LIST,      /* char ** at off, size_t count at n_off; elements of kind elem */
    K_OBJS       /* struct array at off, size_t count at n_off; elements per aux schema */
} wire_kind;

enum { F_REQ = 1, F_DEF_EMPTY = 2, F_DEF_TRUE = 4 };

typedef struct wire_field {
    const char *key;
    uint8_t klen;
    uint8_t kind;
    uint8_t elem; /* K_LIST element kind */
    uint8_t flags;
    uint32_t max; /* K_TEXT maximum length in bytes */
    uint16_t off;
    uint16_t n_off;
    const void *aux;
} wire_field;

struct dctx;
typedef struct wire_schema {
    const wire_field *fields;
    uint32_t n_fields;
    uint32_t size; /* struct size of one element (nested schemas) */
    int (*post)(struct dctx *c, char *base, uint32_t present);
} wire_schema;

#define FLD(k, kind, flags, T, m)                                                                  \
    {                                                                                              \
        k, sizeof(k) - 1, kind, 0, flags, 0, offsetof(T, m), 0, NULL                               \
    }
#define TXT(k, flags, max, T, m)                                                                   \
    {                                                                                              \
        k, sizeof(k) - 1, K_TEXT, 0, flags, max, offsetof(T, m), 0, NULL                           \
    }
#define ENM(k, flags, values, T, m)                                                                \
    {                                                                                              \
        k, sizeof(k) - 1, K_ENUM, 0, flags, 0, offsetof(T, m), 0, values                           \
    }
#define LST(k, elem, flags, T, m, n)                                                               \
    {                                                                                              \
        k, sizeof(k) - 1, K_LIST, elem, flags, 0, offsetof(T, m), offsetof(T, n), NULL             \
    }
#define OBJ(k, schema, flags, T, m, n)                                                             \
    {                                                                                              \
        k, sizeof(k) - 1, K_OBJS, 0, flags, 0, offsetof(T, m), offsetof(T, n), &schema             \
    }
#define SCHEMA(fields, T, post)                                                                    \
    {                                                                                              \
        fields, sizeof(fields) / sizeof(fields[0]), sizeof(T), post                                \
    }

static const char *const session_end_states[] = {"done", "interrupted", "expired", NULL};

/* report.modules[] — "ok" and "status" are two views of one value; see module_result_post. */
enum { MR_NAME, MR_OK, MR_TIME, MR_ERROR, MR_STATUS };
static const wire_field module_result_fields[] = {
    [MR_NAME] = FLD("name", K_ID, F_REQ, ihc_module_result, name),
    [MR_OK] = FLD("ok", K_MODOK, 0, ihc_module_result, status),
    [MR_TIME] = FLD("time_ms", K_DOUBLE, 0, ihc_module_result, time_ms),
    [MR_ERROR] = TXT("error", 0, IHC_REASON_MAX, ihc_module_result, error),
    [MR_STATUS] = FLD("status", K_MODSTATUS, 0, ihc_module_result, status),
};
static int module_result_post(struct dctx *c, char *base, uint32_t present);
static const wire_schema module_result_schema =
    SCHEMA(module_result_fields, ihc_module_result, module_result_post);

/* hello.modules[] */
static const wire_field module_info_fields[] = {
    FLD("name", K_ID, F_REQ, ihc_module_info, name),
    LST("methods", K_ID, 0, ihc_module_info, methods, n_methods),
    FLD("timeout_ms", K_U32, 0, ihc_module_info, timeout_ms),
    FLD("enabled", K_BOOL, F_DEF_TRUE, ihc_module_info, enabled),
};
static const wire_schema module_info_schema = SCHEMA(module_info_fields, ihc_module_info, NULL);

/* A session (hello.sessions[] and, flattened, session_begin). P is "" or "session.". */
#define SESSION_FIELDS(T, P)                                                                       \
    FLD("session_id", K_ID, F_REQ, T, P session_id), FLD("hw", K_HW, F_REQ, T, P hw),              \
        FLD("epoch", K_U64, F_REQ, T, P epoch), FLD("gepoch", K_U64, 0, T, P gepoch),              \
        FLD("created_ms", K_I64, F_REQ, T, P created_ms), FLD("module", K_ID, 0, T, P module),     \
        FLD("pid", K_I32, 0, T, P pid), TXT("data", 0, IHC_DATA_MAX, T, P data)

static const wire_field session_info_fields[] = {SESSION_FIELDS(ihc_session_info, )};
static const wire_schema session_info_schema = SCHEMA(session_info_fields, ihc_session_info, NULL);

/* sync.epochs[] */
static const wire_field epoch_info_fields[] = {
    FLD("hw", K_HW_ANY, F_REQ, ihc_epoch_info, hw),
    FLD("epoch", K_U64, F_REQ, ihc_epoch_info, epoch),
    FLD("set_ms", K_I64, 0, ihc_epoch_info, set_ms),
};
static const wire_schema epoch_info_schema = SCHEMA(epoch_info_fields, ihc_epoch_info, NULL);

/* Top-level messages; offsets are relative to ihc_msg.u. */
static const wire_field interrupt_fields[] = {
    FLD("id", K_U64, F_REQ, ihc_interrupt_msg, id),
    FLD("hw", K_HW_ANY, F_REQ, ihc_interrupt_msg, hw),
    FLD("epoch", K_U64, F_REQ, ihc_interrupt_msg, epoch),
    TXT("reason", F_DEF_EMPTY, IHC_REASON_MAX, ihc_interrupt_msg, reason),
    FLD("deadline_ms", K_I64, F_REQ, ihc_interrupt_msg, deadline_ms),
    LST("agents", K_AGENT, 0, ihc_interrupt_msg, agents, n_agents),
    FLD("attempt", K_U32, 0, ihc_interrupt_msg, attempt),
};
static const wire_field report_fields[] = {
    FLD("id", K_U64, F_REQ, ihc_report_msg, id),
    FLD("agent", K_AGENT, F_REQ, ihc_report_msg, agent),
    FLD("hw", K_HW_ANY, F_REQ, ihc_report_msg, hw),
    OBJ("modules", module_result_schema, 0, ihc_report_msg, modules, n_modules),
    LST("sessions", K_ID, 0, ihc_report_msg, sessions, n_sessions),
    FLD("time_ms", K_DOUBLE, 0, ihc_report_msg, time_ms),
};
static const wire_field session_begin_fields[] = {
    FLD("agent", K_AGENT, F_REQ, ihc_session_begin_msg, agent),
    SESSION_FIELDS(ihc_session_begin_msg, session.),
};
static const wire_field session_end_fields[] = {
    FLD("agent", K_AGENT, F_REQ, ihc_session_end_msg, agent),
    FLD("session_id", K_ID, F_REQ, ihc_session_end_msg, session_id),
    FLD("hw", K_HW, F_REQ, ihc_session_end_msg, hw),
    ENM("state", F_REQ, session_end_states, ihc_session_end_msg, state),
};
static const wire_field hello_fields[] = {
    FLD("agent", K_AGENT, F_REQ, ihc_hello_msg, agent),
    FLD("node", K_AGENT, F_REQ, ihc_hello_msg, node),
    FLD("pid", K_I32, F_REQ, ihc_hello_msg, pid),
    FLD("started_ms", K_I64, F_REQ, ihc_hello_msg, started_ms),
    OBJ("modules", module_info_schema, 0, ihc_hello_msg, modules, n_modules),
    OBJ("sessions", session_info_schema, 0, ihc_hello_msg, sessions, n_sessions),
};
static const wire_field heartbeat_fields[] = {
    FLD("agent", K_AGENT, F_REQ, ihc_heartbeat_msg, agent),
    FLD("sessions", K_U32, 0, ihc_heartbeat_msg, n_sessions),
    LST("hws", K_HW, 0, ihc_heartbeat_msg, hws, n_hws),
    LST("modules", K_ID, 0, ihc_heartbeat_msg, modules, n_modules),
};
static const wire_field sync_fields[] = {
    FLD("agent", K_AGENT, F_REQ, ihc_sync_msg, agent),
    OBJ("epochs", epoch_info_schema, 0, ihc_sync_msg, epochs, n_epochs),
    FLD("hello", K_BOOL, 0, ihc_sync_msg, hello),
};
static const wire_field result_fields[] = {
    TXT("json", F_REQ, IHC_JSON_MAX, ihc_result_msg, json),
};
static const wire_field control_request_fields[] = {
    FLD("op", K_ID, F_REQ, ihc_control_request, op),
    FLD("hw", K_HW_ANY, 0, ihc_control_request, hw),
    TXT("reason", 0, IHC_REASON_MAX, ihc_control_request, reason),
    FLD("timeout_ms", K_I64_POS, 0, ihc_control_request, timeout_ms),
};
static const wire_field control_response_fields[] = {
    FLD("status", K_I32, F_REQ, ihc_control_response, status),
    TXT("json", F_REQ, IHC_JSON_MAX, ihc_control_response, json),
};
static const wire_field local_request_fields[] = {
    FLD("op", K_ID, F_REQ, ihc_local_request, op),
    FLD("pid", K_I32, 0, ihc_local_request, pid),
    FLD("hw", K_HW, 0, ihc_local_request, hw),
    FLD("session_id", K_ID, 0, ihc_local_request, session_id),
    FLD("module", K_ID, 0, ihc_local_request, module),
    TXT("data", 0, IHC_DATA_MAX, ihc_local_request, data),
};
static const wire_field local_response_fields[] = {
    FLD("status", K_I32, F_REQ, ihc_local_response, status),
    FLD("session_id", K_ID, 0, ihc_local_response, session_id),
    FLD("state", K_ID, 0, ihc_local_response, state),
    TXT("error", 0, IHC_REASON_MAX, ihc_local_response, error),
};

static const wire_schema msg_schemas[IHC__MSG_COUNT] = {
    [IHC_MSG_INTERRUPT] = SCHEMA(interrupt_fields, ihc_interrupt_msg, NULL),
    [IHC_MSG_REPORT] = SCHEMA(report_fields, ihc_report_msg, NULL),
    [IHC_MSG_SESSION_BEGIN] = SCHEMA(session_begin_fields, ihc_session_begin_msg, NULL),
    [IHC_MSG_SESSION_END] = SCHEMA(session_end_fields, ihc_session_end_msg, NULL),
    [IHC_MSG_HELLO] = SCHEMA(hello_fields, ihc_hello_msg, NULL),
    [IHC_MSG_HEARTBEAT] = SCHEMA(heartbeat_fields, ihc_heartbeat_msg, NULL),
    [IHC_MSG_SYNC] = SCHEMA(sync_fields, ihc_sync_msg, NULL),
    [IHC_MSG_RESULT] = SCHEMA(result_fields, ihc_result_msg, NULL),
    [IHC_MSG_CONTROL_REQUEST] = SCHEMA(control_request_fields, ihc_control_request, NULL),
    [IHC_MSG_CONTROL_RESPONSE] = SCHEMA(control_response_fields, ihc_control_response, NULL),
    [IHC_MSG_LOCAL_REQUEST] = SCHEMA(local_request_fields, ihc_local_request, NULL),
    [IHC_MSG_LOCAL_RESPONSE] = SCHEMA(local_response_fields, ihc_local_response, NULL),
};

/* The decoder tracks seen fields in a 32-bit mask. */
_Static_assert(sizeof(session_begin_fields) / sizeof(session_begin_fields[0]) <= 32,
               "too many fields for the seen mask");

static const char *const mod_status_names[] = {
    [IHC_MOD_OK] = "ok",
    [IHC_MOD_TIMED_OUT] = "timed_out",
    [IHC_MOD_FAILED] = "failed",
    [IHC_MOD_DISABLED] = "disabled",
};
#define MOD_STATUS_COUNT (sizeof(mod_status_names) / sizeof(mod_status_names[0]))

/* ------------------------------------------------------------------------------------------
 * MessagePack reader. Every read is bounds-checked, so the decoder is safe even if it were
 * handed bytes the validator did not see; the validator adds the global limits.
 * ---------------------------------------------------------------------------------------- */

enum { MP_NIL, MP_BOOL, MP_UINT, MP_INT, MP_FLOAT, MP_STR, MP_BIN, MP_ARRAY, MP_MAP };

typedef struct {
    int kind;
    uint32_t n;       /* str/bin length, array/map count */
    const uint8_t *s; /* str/bin payload */
    union {
        bool b;
        uint64_t u; /* MP_UINT: every non-negative integer */
        int64_t i;  /* MP_INT: negative integers only */
        double d;
    } v;
} mp_obj;

typedef struct {
    const uint8_t *p, *end, *start;
    const char *why; /* reason of the last failure */
} mp_rd;

static inline uint16_t be16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

static inline uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t be64(const uint8_t *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}

static int rd_fail(mp_rd *r, const char *why)
{
    r->why = why;
    return IHC_EPROTO;
}

static inline __attribute__((always_inline)) int mp_read(mp_rd *r, mp_obj *o)
{
    const uint8_t *p = r->p;
    size_t rem = (size_t)(r->end - p);
    size_t hdr = 1;   /* header bytes consumed */
    uint64_t pay = 0; /* str/bin payload length */

    if (rem == 0)
        return rd_fail(r, "truncated");
    uint8_t t = p[0];
    if (t <= 0x7f) {
        o->kind = MP_UINT;
        o->v.u = t;
        r->p = p + 1;
        return 0;
    }
    if (t >= 0xe0) {
        o->kind = MP_INT;
        o->v.i = (int8_t)t;
        r->p = p + 1;
        return 0;
    }
    if (t <= 0x8f) {
        o->kind = MP_MAP;
        o->n = t & 0x0f;
        r->p = p + 1;
        return 0;
    }
    if (t <= 0x9f) {
        o->kind = MP_ARRAY;
        o->n = t & 0x0f;
        r->p = p + 1;
        return 0;
    }
    if (t <= 0xbf) {
        o->kind = MP_STR;
        pay = t & 0x1f;
        goto payload;
    }

    static const uint8_t hdr_len[32] = {
        /* c0 */ 1, 1, 1, 1, 2, 3, 5, 1,
        1,          1, 5, 9, 2, 3, 5, 9,
        /* d0 */ 2, 3, 5, 9, 1, 1, 1, 1,
        1,          2, 3, 5, 3, 5, 3, 5, /* ext: 1, refused below */
    };
    hdr = hdr_len[t - 0xc0];
    if (rem < hdr)
        return rd_fail(r, "truncated");
    switch (t) {
    case 0xc0:
        o->kind = MP_NIL;
        break;
    case 0xc1:
        return rd_fail(r, "reserved type byte 0xc1");
    case 0xc2:
    case 0xc3:
        o->kind = MP_BOOL;
        o->v.b = t == 0xc3;
        break;
    case 0xc4:
        o->kind = MP_BIN;
        pay = p[1];
        goto payload;
    case 0xc5:
        o->kind = MP_BIN;
        pay = be16(p + 1);
        goto payload;
    case 0xc6:
        o->kind = MP_BIN;
        pay = be32(p + 1);
        goto payload;
    case 0xc7:
    case 0xc8:
    case 0xc9:
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        return rd_fail(r, "ext types are not allowed");
    case 0xca: {
        uint32_t bits = be32(p + 1);
        float f;
        memcpy(&f, &bits, sizeof f);
        o->kind = MP_FLOAT;
        o->v.d = f;
        break;
    }
    case 0xcb: {
        uint64_t bits = be64(p + 1);
        memcpy(&o->v.d, &bits, sizeof o->v.d);
        o->kind = MP_FLOAT;
        break;
    }
    case 0xcc:
        o->kind = MP_UINT;
        o->v.u = p[1];
        break;
    case 0xcd:
        o->kind = MP_UINT;
        o->v.u = be16(p + 1);
        break;
    case 0xce:
        o->kind = MP_UINT;
        o->v.u = be32(p + 1);
        break;
    case 0xcf:
        o->kind = MP_UINT;
        o->v.u = be64(p + 1);
        break;
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
        int64_t i;
        if (t == 0xd0)
            i = (int8_t)p[1];
        else if (t == 0xd1)
            i = (int16_t)be16(p + 1);
        else if (t == 0xd2)
            i = (int32_t)be32(p + 1);
        else
            i = (int64_t)be64(p + 1);
        /* Non-negative values are one kind whatever their encoding (as in msgpack-c). */
        if (i >= 0) {
            o->kind = MP_UINT;
            o->v.u = (uint64_t)i;
        } else {
            o->kind = MP_INT;
            o->v.i = i;
        }
        break;
    }
    case 0xd9:
        o->kind = MP_STR;
        pay = p[1];
        goto payload;
    case 0xda:
        o->kind = MP_STR;
        pay = be16(p + 1);
        goto payload;
    case 0xdb:
        o->kind = MP_STR;
        pay = be32(p + 1);
        goto payload;
    case 0xdc:
        o->kind = MP_ARRAY;
        o->n = be16(p + 1);
        break;
    case 0xdd:
        o->kind = MP_ARRAY;
        o->n = be32(p + 1);
        break;
    case 0xde:
        o->kind = MP_MAP;
        o->n = be16(p + 1);
        break;
    default: /* 0xdf */
        o->kind = MP_MAP;
        o->n = be32(p + 1);
        break;
    }
    r->p = p + hdr;
    return 0;

payload:
    if (pay > rem - hdr)
        return rd_fail(r, "string or binary longer than the message");
    o->n = (uint32_t)pay;
    o->s = p + hdr;
    r->p = p + hdr + pay;
    return 0;
}

/* Validates one object and everything below it: depth, declared counts against the limit and
 * against the bytes that remain (each entry needs at least one byte), string map keys. */
static int mp_check(mp_rd *r, int depth, int *kind)
{
    mp_obj o;
    int rc = mp_read(r, &o);
    if (rc)
        return rc;
    *kind = o.kind;
    if (o.kind != MP_ARRAY && o.kind != MP_MAP)
        return 0;
    if (depth + 1 > IHC_WIRE_MAX_DEPTH)
        return rd_fail(r, "nested too deeply");
    uint64_t items = o.kind == MP_MAP ? 2 * (uint64_t)o.n : o.n;
    if (items > (uint64_t)(r->end - r->p))
        return rd_fail(r, "declared count larger than the message");
    if (o.n > IHC_WIRE_MAX_LIST) {
        r->why = "list longer than the limit";
        return IHC_ETOOBIG;
    }
    for (uint64_t i = 0; i < items; i++) {
        int k;
        if ((rc = mp_check(r, depth + 1, &k)) != 0)
            return rc;
        if (o.kind == MP_MAP && (i & 1) == 0 && k != MP_STR)
            return rd_fail(r, "map key is not a string");
    }
    return 0;
}

/* Skips one (validated) object. */
static int mp_skip(mp_rd *r)
{
    mp_obj o;
    int rc = mp_read(r, &o);
    if (rc)
        return rc;
    if (o.kind == MP_ARRAY || o.kind == MP_MAP) {
        uint64_t items = o.kind == MP_MAP ? 2 * (uint64_t)o.n : o.n;
        for (uint64_t i = 0; i < items; i++)
            if ((rc = mp_skip(r)) != 0)
                return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Arena: a decoded message lives in a few malloc'd chunks; the first one starts with a chunk
 * header followed by the ihc_msg itself, so ihc_msg_free finds the chain from the message.
 * ---------------------------------------------------------------------------------------- */

typedef struct wire_chunk {
    struct wire_chunk *next;
    size_t cap;
    size_t used;
} wire_chunk;

#define CHUNK_HDR ((sizeof(wire_chunk) + 15u) & ~(size_t)15u)

typedef struct {
    wire_chunk *first, *cur;
} wire_arena;

static wire_chunk *chunk_new(size_t cap)
{
    wire_chunk *c = malloc(CHUNK_HDR + cap);
    if (c == NULL)
        return NULL;
    c->next = NULL;
    c->cap = cap;
    c->used = 0;
    return c;
}

static void *ar_alloc(wire_arena *a, size_t size, size_t align)
{
    wire_chunk *c = a->cur;
    size_t off = (c->used + align - 1) & ~(align - 1);
    if (off > c->cap || size > c->cap - off) {
        size_t cap = c->cap * 2;
        if (cap < size + align)
            cap = size + align;
        wire_chunk *n = chunk_new(cap);
        if (n == NULL)
            return NULL;
        c->next = n;
        a->cur = c = n;
        off = 0;
    }
    c->used = off + size;
    return (char *)c + CHUNK_HDR + off;
}

static void arena_free(wire_chunk *c)
{
    while (c != NULL) {
        wire_chunk *n = c->next;
        free(c);
        c = n;
    }
}

void ihc_msg_free(ihc_msg *m)
{
    if (m == NULL)
        return;
    arena_free((wire_chunk *)(void *)((char *)m - CHUNK_HDR));
}

/* ------------------------------------------------------------------------------------------
 * Decoder
 * ---------------------------------------------------------------------------------------- */

typedef struct dctx {
    wire_arena ar;
    char *detail;
    size_t detail_len;
    const char *parent; /* key of the object list being decoded, or NULL */
    size_t parent_idx;
    bool ok; /* last "ok" of a module result */
} dctx;

__attribute__((format(printf, 5, 6))) static int fail(dctx *c, int rc, const char *key, long elem,
                                                      const char *fmt, ...)
{
    if (c->detail == NULL || c->detail_len == 0)
        return rc;
    char path[96], idx[24] = "";
    if (elem >= 0)
        snprintf(idx, sizeof idx, "[%ld]", elem);
    if (c->parent != NULL)
        snprintf(path, sizeof path, "%s[%zu].%s%s", c->parent, c->parent_idx, key, idx);
    else
        snprintf(path, sizeof path, "%s%s", key, idx);
    int n = snprintf(c->detail, c->detail_len, "field '%s': ", path);
    if (n >= 0 && (size_t)n < c->detail_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->detail + n, c->detail_len - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static void set_detail(char *detail, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_detail(char *detail, size_t len, const char *fmt, ...)
{
    if (detail == NULL || len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, len, fmt, ap);
    va_end(ap);
}

static const char *kind_name(int kind)
{
    static const char *const names[] = {"nil",    "bool",   "integer", "integer", "float",
                                        "string", "binary", "array",   "map"};
    return names[kind];
}

static char *ar_strdup(dctx *c, const uint8_t *s, size_t n)
{
    char *d = ar_alloc(&c->ar, n + 1, 1);
    if (d == NULL)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* Validates and copies a string of kind k (key/elem name the field for detail). */
static int dec_string(dctx *c, const wire_field *f, int k, long elem, const mp_obj *o, char **dst)
{
    if (o->kind != MP_STR)
        return fail(c, IHC_ETYPE, f->key, elem, "expected string, got %s", kind_name(o->kind));
    const char *s = (const char *)o->s;
    size_t n = o->n;
    if (memchr(s, '\0', n) != NULL)
        return fail(c, IHC_ETYPE, f->key, elem, "string contains a NUL byte");
    bool ok = true;
    int bad_rc = IHC_EBADID;
    const char *what = "invalid identifier";
    switch (k) {
    case K_HW:
    case K_HW_ANY:
        ok = ihc_hw_valid(s, n, k == K_HW_ANY);
        bad_rc = IHC_EBADHW;
        what = (n == 1 && s[0] == '*') ? "the global hardware_id \"*\" is not allowed here"
                                       : "invalid hardware_id";
        break;
    case K_ID:
        ok = ihc_id_valid(s, n);
        break;
    case K_AGENT:
        ok = ihc_agent_id_valid(s, n);
        what = "invalid agent id";
        break;
    case K_TEXT:
        if (n > f->max)
            return fail(c, IHC_ETOOBIG, f->key, elem, "too long (%zu bytes, max %u)", n, f->max);
        break;
    case K_ENUM: {
        const char *const *v = f->aux;
        for (; *v != NULL; v++)
            if (strlen(*v) == n && memcmp(*v, s, n) == 0)
                break;
        if (*v == NULL)
            return fail(c, IHC_EPROTO, f->key, elem, "unknown value");
        break;
    }
    default:
        break;
    }
    if (!ok)
        return fail(c, bad_rc, f->key, elem, "%s", what);
    if ((*dst = ar_strdup(c, o->s, n)) == NULL)
        return fail(c, IHC_ENOMEM, f->key, elem, "out of memory");
    return 0;
}

static int dec_obj(dctx *c, const wire_schema *s, char *base, mp_rd *r, uint32_t n);

/* Decodes the value of field f into base. *present is false when the value is nil. */
static int dec_field(dctx *c, const wire_field *f, char *base, mp_rd *r, bool *present)
{
    mp_obj o;
    int rc = mp_read(r, &o);
    if (rc)
        return fail(c, rc, f->key, -1, "%s", r->why);
    *present = o.kind != MP_NIL;
    if (!*present)
        return 0;
    void *dst = base + f->off;

    switch ((wire_kind)f->kind) {
    case K_U64:
    case K_U32:
    case K_I64:
    case K_I64_POS:
    case K_I32: {
        if (o.kind != MP_UINT && o.kind != MP_INT)
            return fail(c, IHC_ETYPE, f->key, -1, "expected integer, got %s", kind_name(o.kind));
        bool neg = o.kind == MP_INT;
        if (neg && (f->kind == K_U64 || f->kind == K_U32 || f->kind == K_I64_POS))
            return fail(c, IHC_ETYPE, f->key, -1, "must not be negative");
        if (f->kind == K_U64) {
            *(uint64_t *)dst = o.v.u;
        } else if (f->kind == K_U32) {
            if (o.v.u > UINT32_MAX)
                return fail(c, IHC_ETYPE, f->key, -1, "out of range");
            *(uint32_t *)dst = (uint32_t)o.v.u;
        } else if (f->kind == K_I32) {
            if (neg ? o.v.i < INT32_MIN : o.v.u > INT32_MAX)
                return fail(c, IHC_ETYPE, f->key, -1, "out of range");
            *(int32_t *)dst = neg ? (int32_t)o.v.i : (int32_t)o.v.u;
        } else {
            if (!neg && o.v.u > INT64_MAX)
                return fail(c, IHC_ETYPE, f->key, -1, "out of range");
            *(int64_t *)dst = neg ? o.v.i : (int64_t)o.v.u;
        }
        return 0;
    }
    case K_DOUBLE: {
        double d;
        if (o.kind == MP_FLOAT)
            d = o.v.d;
        else if (o.kind == MP_UINT)
            d = (double)o.v.u;
        else if (o.kind == MP_INT)
            d = (double)o.v.i;
        else
            return fail(c, IHC_ETYPE, f->key, -1, "expected number, got %s", kind_name(o.kind));
        if (!isfinite(d))
            return fail(c, IHC_ETYPE, f->key, -1, "not a finite number");
        *(double *)dst = d;
        return 0;
    }
    case K_BOOL:
    case K_MODOK:
        if (o.kind != MP_BOOL)
            return fail(c, IHC_ETYPE, f->key, -1, "expected bool, got %s", kind_name(o.kind));
        if (f->kind == K_BOOL)
            *(bool *)dst = o.v.b;
        else
            c->ok = o.v.b;
        return 0;
    case K_MODSTATUS:
        if (o.kind != MP_STR)
            return fail(c, IHC_ETYPE, f->key, -1, "expected string, got %s", kind_name(o.kind));
        for (size_t i = 0; i < MOD_STATUS_COUNT; i++) {
            if (strlen(mod_status_names[i]) == o.n && memcmp(mod_status_names[i], o.s, o.n) == 0) {
                *(ihc_mod_status *)dst = (ihc_mod_status)i;
                return 0;
            }
        }
        return fail(c, IHC_EPROTO, f->key, -1, "unknown status (ok|timed_out|failed|disabled)");
    case K_HW:
    case K_HW_ANY:
    case K_ID:
    case K_AGENT:
    case K_TEXT:
    case K_ENUM:
        return dec_string(c, f, f->kind, -1, &o, (char **)dst);
    case K_LIST: {
        if (o.kind != MP_ARRAY)
            return fail(c, IHC_ETYPE, f->key, -1, "expected array, got %s", kind_name(o.kind));
        char **v = NULL;
        if (o.n > 0 && (v = ar_alloc(&c->ar, o.n * sizeof *v, sizeof(void *))) == NULL)
            return fail(c, IHC_ENOMEM, f->key, -1, "out of memory");
        for (uint32_t i = 0; i < o.n; i++) {
            mp_obj e;
            if ((rc = mp_read(r, &e)) != 0)
                return fail(c, rc, f->key, (long)i, "%s", r->why);
            if ((rc = dec_string(c, f, f->elem, (long)i, &e, &v[i])) != 0)
                return rc;
        }
        *(char ***)dst = v;
        *(size_t *)(base + f->n_off) = o.n;
        return 0;
    }
    case K_OBJS: {
        const wire_schema *sub = f->aux;
        if (o.kind != MP_ARRAY)
            return fail(c, IHC_ETYPE, f->key, -1, "expected array, got %s", kind_name(o.kind));
        char *v = NULL;
        if (o.n > 0) {
            if ((v = ar_alloc(&c->ar, (size_t)o.n * sub->size, 16)) == NULL)
                return fail(c, IHC_ENOMEM, f->key, -1, "out of memory");
            memset(v, 0, (size_t)o.n * sub->size);
        }
        for (uint32_t i = 0; i < o.n; i++) {
            mp_obj e;
            if ((rc = mp_read(r, &e)) != 0)
                return fail(c, rc, f->key, (long)i, "%s", r->why);
            if (e.kind != MP_MAP)
                return fail(c, IHC_ETYPE, f->key, (long)i, "expected map, got %s",
                            kind_name(e.kind));
            c->parent = f->key;
            c->parent_idx = i;
            rc = dec_obj(c, sub, v + (size_t)i * sub->size, r, e.n);
            c->parent = NULL;
            if (rc)
                return rc;
        }
        *(void **)dst = v;
        *(size_t *)(base + f->n_off) = o.n;
        return 0;
    }
    }
    return fail(c, IHC_EINTERNAL, f->key, -1, "bad schema");
}

static const wire_field *find_field(const wire_schema *s, const uint8_t *key, uint32_t n)
{
    for (uint32_t i = 0; i < s->n_fields; i++) {
        const wire_field *f = &s->fields[i];
        if (f->klen == n && f->key[0] == (char)key[0] && memcmp(f->key, key, n) == 0)
            return f;
    }
    return NULL;
}

/* Decodes the n entries of a map into base per schema s. Known keys may appear once. */
static int dec_obj(dctx *c, const wire_schema *s, char *base, mp_rd *r, uint32_t n)
{
    uint32_t seen = 0, present = 0;
    int rc;
    for (uint32_t i = 0; i < n; i++) {
        mp_obj k;
        if ((rc = mp_read(r, &k)) != 0)
            return fail(c, rc, "?", -1, "%s", r->why);
        if (k.kind != MP_STR)
            return fail(c, IHC_EPROTO, "?", -1, "map key is not a string");
        const wire_field *f = find_field(s, k.s, k.n);
        if (f == NULL) {
            if ((rc = mp_skip(r)) != 0)
                return fail(c, rc, "?", -1, "%s", r->why);
            continue;
        }
        uint32_t bit = 1u << (f - s->fields);
        if (seen & bit)
            return fail(c, IHC_EPROTO, f->key, -1, "duplicate key");
        seen |= bit;
        bool here = false;
        if ((rc = dec_field(c, f, base, r, &here)) != 0)
            return rc;
        if (here)
            present |= bit;
    }
    for (uint32_t i = 0; i < s->n_fields; i++) {
        const wire_field *f = &s->fields[i];
        if (present & (1u << i))
            continue;
        if (f->flags & F_REQ)
            return fail(c, IHC_EMISSING, f->key, -1, "required field missing");
        if (f->flags & F_DEF_TRUE)
            *(bool *)(base + f->off) = true;
        if ((f->flags & F_DEF_EMPTY) &&
            (*(char **)(base + f->off) = ar_strdup(c, (const uint8_t *)"", 0)) == NULL)
            return fail(c, IHC_ENOMEM, f->key, -1, "out of memory");
    }
    return s->post ? s->post(c, base, present) : 0;
}

/* "status" wins when both are present; old senders give only "ok". */
static int module_result_post(dctx *c, char *base, uint32_t present)
{
    ihc_module_result *mr = (ihc_module_result *)(void *)base;
    if (present & (1u << MR_STATUS))
        return 0;
    if (!(present & (1u << MR_OK)))
        return fail(c, IHC_EMISSING, "status", -1, "neither 'status' nor 'ok' present");
    mr->status = c->ok ? IHC_MOD_OK : IHC_MOD_FAILED;
    return 0;
}

/* The entries every message shares; located by scan_top before any allocation. */
enum { C_V, C_TYPE, C_TS, C_NONCE, C_SIG, C__COUNT };
static const char *const common_keys[C__COUNT] = {"v", "type", "ts_ms", "nonce", "sig"};

typedef struct {
    uint32_t n;                   /* entries of the top-level map */
    const uint8_t *body;          /* first entry */
    const uint8_t *val[C__COUNT]; /* value of each common key, or NULL */
    const uint8_t *sig_key;       /* where the "sig" entry starts */
    bool sig_last;                /* "sig" is the last entry */
} top_scan;

static int common_key(const uint8_t *k, uint32_t n)
{
    switch (n) {
    case 1:
        return k[0] == 'v' ? C_V : -1;
    case 3:
        return memcmp(k, "sig", 3) == 0 ? C_SIG : -1;
    case 4:
        return memcmp(k, "type", 4) == 0 ? C_TYPE : -1;
    case 5:
        return memcmp(k, "ts_ms", 5) == 0 ? C_TS : memcmp(k, "nonce", 5) == 0 ? C_NONCE : -1;
    default:
        return -1;
    }
}

/* Validates the whole message (see mp_check) and, in the same walk, locates the common
 * entries of the top-level map. */
static int scan_top(const uint8_t *buf, size_t len, top_scan *ts, char *detail, size_t dlen)
{
    mp_rd r = {buf, buf + len, buf, NULL};
    mp_obj o;
    memset(ts, 0, sizeof *ts);
    int rc = mp_read(&r, &o);
    if (rc == 0 && o.kind != MP_MAP)
        rc = rd_fail(&r, "message is not a MessagePack map");
    if (rc == 0 && 2 * (uint64_t)o.n > (uint64_t)(r.end - r.p))
        rc = rd_fail(&r, "declared count larger than the message");
    if (rc == 0 && o.n > IHC_WIRE_MAX_LIST) {
        r.why = "list longer than the limit";
        rc = IHC_ETOOBIG;
    }
    if (rc == 0) {
        ts->n = o.n;
        ts->body = r.p;
    }
    for (uint32_t i = 0; rc == 0 && i < o.n; i++) {
        const uint8_t *kstart = r.p;
        mp_obj k;
        if ((rc = mp_read(&r, &k)) != 0)
            break;
        if (k.kind != MP_STR) {
            rc = rd_fail(&r, "map key is not a string");
            break;
        }
        int j = common_key(k.s, k.n);
        if (j >= 0) {
            if (ts->val[j] != NULL) {
                set_detail(detail, dlen, "field '%s': duplicate key", common_keys[j]);
                return IHC_EPROTO;
            }
            ts->val[j] = r.p;
            if (j == C_SIG) {
                ts->sig_key = kstart;
                ts->sig_last = i + 1 == o.n;
            }
        }
        int kind;
        rc = mp_check(&r, 1, &kind);
    }
    if (rc) {
        set_detail(detail, dlen, "at byte %zu: %s", (size_t)(r.p - buf), r.why);
        return rc;
    }
    if (r.p != r.end) {
        set_detail(detail, dlen, "%zu trailing bytes", (size_t)(r.end - r.p));
        return IHC_EPROTO;
    }
    return 0;
}

/* Reads an integer common field; -1 = absent (or nil), 0 = ok, else an error code. */
static int common_int(const uint8_t *at, const uint8_t *end, bool neg_ok, uint64_t *u, int64_t *i)
{
    if (at == NULL)
        return -1;
    mp_rd r = {at, end, at, NULL};
    mp_obj o;
    if (mp_read(&r, &o) != 0)
        return IHC_EPROTO;
    if (o.kind == MP_NIL)
        return -1;
    if (o.kind == MP_UINT) {
        if (u)
            *u = o.v.u;
        if (i) {
            if (o.v.u > INT64_MAX)
                return IHC_ETYPE;
            *i = (int64_t)o.v.u;
        }
        return 0;
    }
    if (o.kind == MP_INT && neg_ok && i) {
        *i = o.v.i;
        return 0;
    }
    return IHC_ETYPE;
}

/* ------------------------------------------------------------------------------------------
 * Signing and replay protection
 * ---------------------------------------------------------------------------------------- */

#define RC_NIL         UINT32_MAX
#define RC_INITIAL_CAP 1024u
#define RC_MAX_CAP     (1u << 21) /* ~2M nonces (at most ~64 MB): ~17k signed msgs/s at a 60 s span */

typedef struct {
    uint64_t nonce;
    int64_t expire_ms; /* monotonic */
    uint32_t next;     /* next entry in the same bucket */
} rc_entry;

struct ihc_wire_auth {
    unsigned char *key;
    size_t key_len;
    uint32_t window_ms;
    const mbedtls_md_info_t *md;
    pthread_mutex_t mu;
    /* Nonces seen, in arrival order (a ring), indexed by a chained hash table. An entry
     * lives 2 × window after arrival: by then the message's ts_ms is outside the window and
     * the staleness check rejects any replay on its own. */
    rc_entry *ring;
    uint32_t cap, head, count;
    uint32_t *bucket; /* 2 × cap buckets */
};

static inline uint32_t rc_hash(uint64_t x, uint32_t nbucket)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return (uint32_t)x & (nbucket - 1);
}

int ihc_wire_auth_new(ihc_wire_auth **out, const void *secret, size_t len, uint32_t window_ms)
{
    if (out == NULL)
        return IHC_EINVAL;
    *out = NULL;
    if (secret == NULL || len == 0)
        return IHC_EINVAL;
    ihc_wire_auth *a = calloc(1, sizeof *a);
    if (a == NULL)
        return IHC_ENOMEM;
    a->md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    a->key = malloc(len);
    a->cap = RC_INITIAL_CAP;
    a->ring = malloc(a->cap * sizeof *a->ring);
    a->bucket = malloc(2 * a->cap * sizeof *a->bucket);
    if (a->md == NULL || a->key == NULL || a->ring == NULL || a->bucket == NULL) {
        int rc = a->md == NULL ? IHC_EINTERNAL : IHC_ENOMEM;
        free(a->key);
        free(a->ring);
        free(a->bucket);
        free(a);
        return rc;
    }
    memcpy(a->key, secret, len);
    a->key_len = len;
    a->window_ms = window_ms ? window_ms : 30000;
    for (uint32_t i = 0; i < 2 * a->cap; i++)
        a->bucket[i] = RC_NIL;
    pthread_mutex_init(&a->mu, NULL);
    *out = a;
    return IHC_OK;
}

void ihc_wire_auth_free(ihc_wire_auth *a)
{
    if (a == NULL)
        return;
    pthread_mutex_destroy(&a->mu);
    if (a->key != NULL) {
        volatile unsigned char *k = a->key;
        for (size_t i = 0; i < a->key_len; i++)
            k[i] = 0;
        free(a->key);
    }
    free(a->ring);
    free(a->bucket);
    free(a);
}

static int hmac2(const ihc_wire_auth *a, const uint8_t *p1, size_t n1, const uint8_t *p2, size_t n2,
                 uint8_t mac[SIG_LEN])
{
    mbedtls_md_context_t ctx;
    mbedtls_md_init(&ctx);
    int bad = mbedtls_md_setup(&ctx, a->md, 1) ||
              mbedtls_md_hmac_starts(&ctx, a->key, a->key_len) ||
              mbedtls_md_hmac_update(&ctx, p1, n1) ||
              (n2 > 0 && mbedtls_md_hmac_update(&ctx, p2, n2)) || mbedtls_md_hmac_finish(&ctx, mac);
    mbedtls_md_free(&ctx);
    return bad ? IHC_ENOMEM : IHC_OK;
}

static bool ct_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    volatile uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= a[i] ^ b[i];
    return d == 0;
}

static void rc_unlink(ihc_wire_auth *a, uint32_t idx)
{
    uint32_t *pp = &a->bucket[rc_hash(a->ring[idx].nonce, 2 * a->cap)];
    while (*pp != idx)
        pp = &a->ring[*pp].next;
    *pp = a->ring[idx].next;
}

static int rc_grow(ihc_wire_auth *a)
{
    uint32_t cap = a->cap * 2;
    rc_entry *ring = malloc(cap * sizeof *ring);
    uint32_t *bucket = malloc(2 * (size_t)cap * sizeof *bucket);
    if (ring == NULL || bucket == NULL) {
        free(ring);
        free(bucket);
        return IHC_ENOMEM;
    }
    for (uint32_t i = 0; i < 2 * cap; i++)
        bucket[i] = RC_NIL;
    for (uint32_t i = 0; i < a->count; i++) {
        ring[i] = a->ring[(a->head + i) & (a->cap - 1)];
        uint32_t h = rc_hash(ring[i].nonce, 2 * cap);
        ring[i].next = bucket[h];
        bucket[h] = i;
    }
    free(a->ring);
    free(a->bucket);
    a->ring = ring;
    a->bucket = bucket;
    a->cap = cap;
    a->head = 0;
    return IHC_OK;
}

/* Records nonce; IHC_EREPLAY when it was seen within its lifetime or the cache is full. */
static int rc_check(ihc_wire_auth *a, uint64_t nonce, const char **why)
{
    int rc = IHC_OK;
    pthread_mutex_lock(&a->mu);
    int64_t now = (int64_t)(ihc_mono_ns() / 1000000u);
    while (a->count > 0 && a->ring[a->head].expire_ms <= now) {
        rc_unlink(a, a->head);
        a->head = (a->head + 1) & (a->cap - 1);
        a->count--;
    }
    uint32_t h = rc_hash(nonce, 2 * a->cap);
    for (uint32_t i = a->bucket[h]; i != RC_NIL; i = a->ring[i].next) {
        if (a->ring[i].nonce == nonce) {
            *why = "nonce already seen";
            rc = IHC_EREPLAY;
            goto out;
        }
    }
    if (a->count == a->cap) {
        if (a->cap >= RC_MAX_CAP) {
            *why = "replay cache full";
            rc = IHC_EREPLAY;
            goto out;
        }
        if ((rc = rc_grow(a)) != 0) {
            *why = "out of memory";
            goto out;
        }
        h = rc_hash(nonce, 2 * a->cap);
    }
    uint32_t idx = (a->head + a->count) & (a->cap - 1);
    a->ring[idx].nonce = nonce;
    /* The margin covers the difference between the wall clock of the window check and the
     * monotonic clock of expiry. */
    int64_t margin = a->window_ms < 1000 ? a->window_ms : 1000;
    a->ring[idx].expire_ms = now + 2 * (int64_t)a->window_ms + margin;
    a->ring[idx].next = a->bucket[h];
    a->bucket[h] = idx;
    a->count++;
out:
    pthread_mutex_unlock(&a->mu);
    return rc;
}

/* Smallest MessagePack map header for n entries; returns its length. The signature covers
 * this header for the entry count without "sig", so that any standard packer encoding the
 * map without "sig" produces exactly the signed bytes. */
static size_t map_hdr(uint8_t h[5], uint32_t n)
{
    if (n <= 15) {
        h[0] = (uint8_t)(0x80 | n);
        return 1;
    }
    if (n <= 0xffff) {
        h[0] = 0xde;
        h[1] = (uint8_t)(n >> 8);
        h[2] = (uint8_t)n;
        return 3;
    }
    h[0] = 0xdf;
    h[1] = (uint8_t)(n >> 24);
    h[2] = (uint8_t)(n >> 16);
    h[3] = (uint8_t)(n >> 8);
    h[4] = (uint8_t)n;
    return 5;
}

static int verify(const ihc_wire_auth *auth, const uint8_t *buf, size_t len, const top_scan *ts,
                  int64_t ts_ms, bool has_ts, uint64_t nonce, bool has_nonce, char *detail,
                  size_t dlen)
{
    ihc_wire_auth *a = (ihc_wire_auth *)auth; /* the replay cache is behind a->mu */
    if (ts->val[C_SIG] == NULL) {
        set_detail(detail, dlen, "field 'sig': message is not signed");
        return IHC_EBADSIG;
    }
    if (!ts->sig_last) {
        set_detail(detail, dlen, "field 'sig': must be the last entry");
        return IHC_EBADSIG;
    }
    mp_rd r = {ts->val[C_SIG], buf + len, buf, NULL};
    mp_obj o = {0};
    if (mp_read(&r, &o) != 0 || o.kind != MP_BIN || o.n != SIG_LEN) {
        set_detail(detail, dlen, "field 'sig': expected %d bytes of binary", SIG_LEN);
        return IHC_EBADSIG;
    }
    uint8_t h[5], mac[SIG_LEN];
    size_t hn = map_hdr(h, ts->n - 1);
    int rc = hmac2(a, h, hn, ts->body, (size_t)(ts->sig_key - ts->body), mac);
    if (rc)
        return rc;
    if (!ct_equal(mac, o.s, SIG_LEN)) {
        set_detail(detail, dlen, "field 'sig': signature does not match");
        return IHC_EBADSIG;
    }
    if (!has_ts || !has_nonce) {
        set_detail(detail, dlen, "field '%s': signed messages need it", has_ts ? "nonce" : "ts_ms");
        return IHC_EREPLAY;
    }
    int64_t now = ihc_now_ms();
    if (ts_ms < now - (int64_t)a->window_ms || ts_ms > now + (int64_t)a->window_ms) {
        set_detail(detail, dlen, "field 'ts_ms': outside the %u ms window", a->window_ms);
        return IHC_EREPLAY;
    }
    const char *why = NULL;
    if ((rc = rc_check(a, nonce, &why)) != 0) {
        set_detail(detail, dlen, "field 'nonce': %s", why);
        return rc;
    }
    return IHC_OK;
}

int ihc_wire_decode(const uint8_t *buf, size_t len, const ihc_wire_auth *auth, ihc_msg **out,
                    char *detail, size_t detail_len)
{
    if (detail != NULL && detail_len > 0)
        detail[0] = '\0';
    if (out == NULL || (buf == NULL && len > 0))
        return IHC_EINVAL;
    *out = NULL;
    if (len > IHC_WIRE_MAX_MSG) {
        set_detail(detail, detail_len, "message of %zu bytes exceeds %u", len, IHC_WIRE_MAX_MSG);
        return IHC_ETOOBIG;
    }
    if (len == 0) {
        set_detail(detail, detail_len, "empty message");
        return IHC_EPROTO;
    }

    /* 1. Structure: one bounded walk over every byte, nothing allocated; it also locates
     * the envelope entries: v, type, ts_ms, nonce, sig. */
    top_scan ts;
    int rc = scan_top(buf, len, &ts, detail, detail_len);
    if (rc)
        return rc;

    /* 2. Envelope. */
    uint64_t v = 0;
    rc = common_int(ts.val[C_V], buf + len, false, &v, NULL);
    if (rc < 0) {
        set_detail(detail, detail_len, "field 'v': required field missing");
        return IHC_EMISSING;
    }
    if (rc > 0) {
        set_detail(detail, detail_len, "field 'v': expected unsigned integer");
        return IHC_ETYPE;
    }
    if (v != IHC_WIRE_VERSION) {
        set_detail(detail, detail_len, "field 'v': unsupported version %llu (want %d)",
                   (unsigned long long)v, IHC_WIRE_VERSION);
        return IHC_EVERSION;
    }
    if (ts.val[C_TYPE] == NULL) {
        set_detail(detail, detail_len, "field 'type': required field missing");
        return IHC_EMISSING;
    }
    mp_rd tr = {ts.val[C_TYPE], buf + len, buf, NULL};
    mp_obj to;
    if ((rc = mp_read(&tr, &to)) == 0 && to.kind == MP_NIL) {
        set_detail(detail, detail_len, "field 'type': required field missing");
        return IHC_EMISSING;
    }
    if (rc != 0 || to.kind != MP_STR) {
        set_detail(detail, detail_len, "field 'type': expected string");
        return IHC_ETYPE;
    }
    ihc_msg_type type = type_lookup(to.s, to.n);
    if (type == IHC_MSG_NONE) {
        set_detail(detail, detail_len, "field 'type': unknown message type");
        return IHC_EPROTO;
    }
    int64_t ts_ms = 0;
    rc = common_int(ts.val[C_TS], buf + len, true, NULL, &ts_ms);
    bool has_ts = rc == 0;
    if (rc > 0) {
        set_detail(detail, detail_len, "field 'ts_ms': expected integer");
        return IHC_ETYPE;
    }
    uint64_t nonce = 0;
    rc = common_int(ts.val[C_NONCE], buf + len, false, &nonce, NULL);
    bool has_nonce = rc == 0;
    if (!has_nonce)
        nonce = 0;
    if (auth != NULL) {
        if (rc > 0) {
            set_detail(detail, detail_len, "field 'nonce': expected unsigned integer");
            return IHC_EREPLAY;
        }
        rc = verify(auth, buf, len, &ts, ts_ms, has_ts, nonce, has_nonce, detail, detail_len);
        if (rc)
            return rc;
    }

    /* 3. Fields, into one arena sized for the common case. */
    dctx c = {.detail = detail, .detail_len = detail_len};
    size_t cap = sizeof(ihc_msg) + 2 * len + 64;
    c.ar.first = c.ar.cur = chunk_new(cap);
    if (c.ar.first == NULL)
        return IHC_ENOMEM;
    ihc_msg *m = ar_alloc(&c.ar, sizeof *m, 16);
    memset(m, 0, sizeof *m);
    m->type = type;
    m->ts_ms = ts_ms;
    m->nonce = nonce;
    mp_rd br = {ts.body, buf + len, buf, NULL};
    rc = dec_obj(&c, &msg_schemas[type], (char *)&m->u, &br, ts.n);
    if (rc) {
        arena_free(c.ar.first);
        return rc;
    }
    *out = m;
    return IHC_OK;
}

/* ------------------------------------------------------------------------------------------
 * Encoder
 * ---------------------------------------------------------------------------------------- */

typedef struct {
    uint8_t *b;
    size_t len, cap;
    int err;
} wbuf;

static bool w_need(wbuf *w, size_t add)
{
    if (w->err)
        return false;
    if (add <= w->cap - w->len)
        return true;
    size_t need = w->len + add;
    if (need > IHC_WIRE_MAX_MSG + IHC_TOPIC_MAX + 64) {
        w->err = IHC_ETOOBIG;
        return false;
    }
    size_t cap = w->cap ? w->cap : 256;
    while (cap < need)
        cap *= 2;
    uint8_t *b = realloc(w->b, cap);
    if (b == NULL) {
        w->err = IHC_ENOMEM;
        return false;
    }
    w->b = b;
    w->cap = cap;
    return true;
}

static void w_bytes(wbuf *w, const void *p, size_t n)
{
    if (w_need(w, n)) {
        memcpy(w->b + w->len, p, n);
        w->len += n;
    }
}

static void w_be(wbuf *w, uint8_t tag, uint64_t v, int nbytes)
{
    uint8_t t[9];
    t[0] = tag;
    for (int i = 0; i < nbytes; i++)
        t[1 + i] = (uint8_t)(v >> (8 * (nbytes - 1 - i)));
    w_bytes(w, t, 1 + (size_t)nbytes);
}

static void w_array(wbuf *w, uint32_t n)
{
    if (n <= 15)
        w_be(w, (uint8_t)(0x90 | n), 0, 0);
    else if (n <= 0xffff)
        w_be(w, 0xdc, n, 2);
    else
        w_be(w, 0xdd, n, 4);
}

static void w_map(wbuf *w, uint32_t n)
{
    uint8_t h[5];
    w_bytes(w, h, map_hdr(h, n));
}

static void w_str(wbuf *w, const char *s, size_t n)
{
    if (n <= 31)
        w_be(w, (uint8_t)(0xa0 | n), 0, 0);
    else if (n <= 0xff)
        w_be(w, 0xd9, n, 1);
    else if (n <= 0xffff)
        w_be(w, 0xda, n, 2);
    else
        w_be(w, 0xdb, n, 4);
    w_bytes(w, s, n);
}

static void w_uint(wbuf *w, uint64_t v)
{
    if (v <= 0x7f)
        w_be(w, (uint8_t)v, 0, 0);
    else if (v <= 0xff)
        w_be(w, 0xcc, v, 1);
    else if (v <= 0xffff)
        w_be(w, 0xcd, v, 2);
    else if (v <= 0xffffffffu)
        w_be(w, 0xce, v, 4);
    else
        w_be(w, 0xcf, v, 8);
}

static void w_int(wbuf *w, int64_t v)
{
    if (v >= 0)
        w_uint(w, (uint64_t)v);
    else if (v >= -32)
        w_be(w, (uint8_t)(int8_t)v, 0, 0);
    else if (v >= INT8_MIN)
        w_be(w, 0xd0, (uint8_t)(int8_t)v, 1);
    else if (v >= INT16_MIN)
        w_be(w, 0xd1, (uint16_t)(int16_t)v, 2);
    else if (v >= INT32_MIN)
        w_be(w, 0xd2, (uint32_t)(int32_t)v, 4);
    else
        w_be(w, 0xd3, (uint64_t)v, 8);
}

static void w_double(wbuf *w, double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    w_be(w, 0xcb, bits, 8);
}

static void w_key(wbuf *w, const char *k, size_t n)
{
    w_str(w, k, n);
}

/* Whether the encoder emits field f of base (see the schema comment). */
static bool enc_present(const wire_field *f, const char *base)
{
    const void *p = base + f->off;
    if (f->flags & (F_REQ | F_DEF_EMPTY))
        return true;
    switch ((wire_kind)f->kind) {
    case K_U64:
        return *(const uint64_t *)p != 0;
    case K_U32:
        return *(const uint32_t *)p != 0;
    case K_I64:
    case K_I64_POS:
        return *(const int64_t *)p != 0;
    case K_I32:
        return *(const int32_t *)p != 0;
    case K_DOUBLE:
        return *(const double *)p != 0.0;
    case K_BOOL:
    case K_MODSTATUS:
    case K_MODOK:
        return true;
    case K_HW:
    case K_HW_ANY:
    case K_ID:
    case K_AGENT:
    case K_TEXT:
    case K_ENUM:
        return *(char *const *)p != NULL;
    case K_LIST:
    case K_OBJS:
        return *(const size_t *)(base + f->n_off) != 0;
    }
    return false;
}

static int enc_string(wbuf *w, const wire_field *f, int k, const char *s)
{
    if (s == NULL) {
        if (!(f->flags & F_DEF_EMPTY))
            return IHC_EINVAL;
        s = "";
    }
    size_t n = strlen(s);
    switch (k) {
    case K_HW:
    case K_HW_ANY:
        if (!ihc_hw_valid(s, n, k == K_HW_ANY))
            return IHC_EINVAL;
        break;
    case K_ID:
        if (!ihc_id_valid(s, n))
            return IHC_EINVAL;
        break;
    case K_AGENT:
        if (!ihc_agent_id_valid(s, n))
            return IHC_EINVAL;
        break;
    case K_TEXT:
        if (n > f->max)
            return IHC_ETOOBIG;
        break;
    case K_ENUM: {
        const char *const *v = f->aux;
        while (*v != NULL && strcmp(*v, s) != 0)
            v++;
        if (*v == NULL)
            return IHC_EINVAL;
        break;
    }
    default:
        return IHC_EINTERNAL;
    }
    w_str(w, s, n);
    return IHC_OK;
}

static int enc_obj(wbuf *w, const wire_schema *s, const char *base);

static int enc_field(wbuf *w, const wire_field *f, const char *base)
{
    const void *p = base + f->off;
    w_key(w, f->key, f->klen);
    switch ((wire_kind)f->kind) {
    case K_U64:
        w_uint(w, *(const uint64_t *)p);
        return 0;
    case K_U32:
        w_uint(w, *(const uint32_t *)p);
        return 0;
    case K_I64_POS:
        if (*(const int64_t *)p < 0)
            return IHC_EINVAL;
        w_int(w, *(const int64_t *)p);
        return 0;
    case K_I64:
        w_int(w, *(const int64_t *)p);
        return 0;
    case K_I32:
        w_int(w, *(const int32_t *)p);
        return 0;
    case K_DOUBLE:
        if (!isfinite(*(const double *)p))
            return IHC_EINVAL;
        w_double(w, *(const double *)p);
        return 0;
    case K_BOOL:
        w_be(w, *(const bool *)p ? 0xc3 : 0xc2, 0, 0);
        return 0;
    case K_MODSTATUS:
    case K_MODOK: {
        ihc_mod_status st = *(const ihc_mod_status *)p;
        if ((unsigned)st >= MOD_STATUS_COUNT)
            return IHC_EINVAL;
        if (f->kind == K_MODOK)
            w_be(w, (st == IHC_MOD_OK || st == IHC_MOD_DISABLED) ? 0xc3 : 0xc2, 0, 0);
        else
            w_str(w, mod_status_names[st], strlen(mod_status_names[st]));
        return 0;
    }
    case K_HW:
    case K_HW_ANY:
    case K_ID:
    case K_AGENT:
    case K_TEXT:
    case K_ENUM:
        return enc_string(w, f, f->kind, *(char *const *)p);
    case K_LIST: {
        char *const *v = *(char *const *const *)p;
        size_t n = *(const size_t *)(base + f->n_off);
        if (n > IHC_WIRE_MAX_LIST)
            return IHC_ETOOBIG;
        if (n > 0 && v == NULL)
            return IHC_EINVAL;
        w_array(w, (uint32_t)n);
        for (size_t i = 0; i < n; i++) {
            int rc = enc_string(w, f, f->elem, v[i]);
            if (rc)
                return rc;
        }
        return 0;
    }
    case K_OBJS: {
        const wire_schema *sub = f->aux;
        const char *v = *(const char *const *)p;
        size_t n = *(const size_t *)(base + f->n_off);
        if (n > IHC_WIRE_MAX_LIST)
            return IHC_ETOOBIG;
        if (n > 0 && v == NULL)
            return IHC_EINVAL;
        w_array(w, (uint32_t)n);
        for (size_t i = 0; i < n; i++) {
            int rc = enc_obj(w, sub, v + i * sub->size);
            if (rc)
                return rc;
        }
        return 0;
    }
    }
    return IHC_EINTERNAL;
}

static int enc_obj(wbuf *w, const wire_schema *s, const char *base)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->n_fields; i++)
        n += enc_present(&s->fields[i], base);
    w_map(w, n);
    for (uint32_t i = 0; i < s->n_fields; i++) {
        if (!enc_present(&s->fields[i], base))
            continue;
        int rc = enc_field(w, &s->fields[i], base);
        if (rc)
            return rc;
    }
    return 0;
}

/* The body is written after a 5-byte gap so that the map header, whose entry count is known
 * only at the end (and changes when "sig" is appended), can be put in front without moving
 * the entries; the topic (if any) precedes the gap and the body is slid down onto it. */
static int encode(const ihc_msg *m, const ihc_wire_auth *auth, const char *topic, size_t tl,
                  uint8_t **buf, size_t *len)
{
    if (buf != NULL)
        *buf = NULL;
    if (len != NULL)
        *len = 0;
    if (m == NULL || buf == NULL || len == NULL || m->type <= IHC_MSG_NONE ||
        m->type >= IHC__MSG_COUNT)
        return IHC_EINVAL;
    const wire_schema *s = &msg_schemas[m->type];
    const char *base = (const char *)&m->u;
    const size_t gap = tl + 5;
    wbuf w = {0};
    int rc = IHC_OK;
    uint32_t n = 0;

    if (!w_need(&w, gap + 256))
        return w.err;
    memcpy(w.b, topic, tl);
    w.len = gap;

    w_key(&w, "v", 1);
    w_uint(&w, IHC_WIRE_VERSION);
    w_key(&w, "type", 4);
    w_str(&w, type_names[m->type], strlen(type_names[m->type]));
    w_key(&w, "ts_ms", 5);
    w_int(&w, m->ts_ms != 0 ? m->ts_ms : ihc_now_ms());
    n = 3;
    if (auth != NULL) {
        uint64_t nonce;
        ssize_t got;
        while ((got = getrandom(&nonce, sizeof nonce, 0)) < 0 && errno == EINTR)
            ;
        if (got != (ssize_t)sizeof nonce) {
            rc = IHC_EINTERNAL;
            goto fail;
        }
        w_key(&w, "nonce", 5);
        w_uint(&w, nonce);
        n++;
    }
    for (uint32_t i = 0; i < s->n_fields; i++) {
        if (!enc_present(&s->fields[i], base))
            continue;
        if ((rc = enc_field(&w, &s->fields[i], base)) != 0)
            goto fail;
        n++;
    }
    if (w.err) {
        rc = w.err;
        goto fail;
    }

    uint8_t h[5];
    size_t hn;
    if (auth != NULL) {
        uint8_t mac[SIG_LEN];
        hn = map_hdr(h, n);
        memcpy(w.b + gap - hn, h, hn);
        if ((rc = hmac2(auth, w.b + gap - hn, w.len - gap + hn, NULL, 0, mac)) != 0)
            goto fail;
        w_key(&w, "sig", 3);
        w_be(&w, 0xc4, SIG_LEN, 1);
        w_bytes(&w, mac, SIG_LEN);
        n++;
        if (w.err) {
            rc = w.err;
            goto fail;
        }
    }
    hn = map_hdr(h, n);
    memcpy(w.b + gap - hn, h, hn);
    memmove(w.b + tl, w.b + gap - hn, w.len - (gap - hn));
    w.len -= gap - hn - tl;
    if (w.len - tl > IHC_WIRE_MAX_MSG) {
        rc = IHC_ETOOBIG;
        goto fail;
    }
    *buf = w.b;
    *len = w.len;
    return IHC_OK;
fail:
    free(w.b);
    return rc;
}

int ihc_wire_encode(const ihc_msg *m, const ihc_wire_auth *auth, uint8_t **buf, size_t *len)
{
    return encode(m, auth, "", 0, buf, len);
}

int ihc_wire_encode_framed(const ihc_msg *m, const ihc_wire_auth *auth, uint8_t **buf, size_t *len)
{
    char topic[IHC_TOPIC_MAX];
    size_t tl = 0;
    if (buf != NULL)
        *buf = NULL;
    if (len != NULL)
        *len = 0;
    if (m == NULL)
        return IHC_EINVAL;
    switch (m->type) {
    case IHC_MSG_INTERRUPT:
        tl = ihc_wire_topic_hw(topic, sizeof topic, m->u.interrupt.hw);
        break;
    case IHC_MSG_SYNC:
        tl = ihc_wire_topic_agent(topic, sizeof topic, m->u.sync.agent);
        break;
    case IHC_MSG_RESULT:
        memcpy(topic, IHC_TOPIC_EVENTS, sizeof IHC_TOPIC_EVENTS);
        tl = sizeof IHC_TOPIC_EVENTS;
        break;
    default:
        break;
    }
    if (tl == 0)
        return IHC_EINVAL;
    return encode(m, auth, topic, tl, buf, len);
}

/* ------------------------------------------------------------------------------------------
 * Framing
 * ---------------------------------------------------------------------------------------- */

int ihc_wire_split(const uint8_t *buf, size_t len, const char **topic, size_t *topic_len,
                   const uint8_t **body, size_t *body_len)
{
    if (buf == NULL)
        return IHC_EPROTO;
    const uint8_t *nul = memchr(buf, '\0', len < IHC_TOPIC_MAX ? len : IHC_TOPIC_MAX);
    if (nul == NULL)
        return IHC_EPROTO;
    size_t tl = (size_t)(nul - buf);
    if (topic != NULL)
        *topic = (const char *)buf;
    if (topic_len != NULL)
        *topic_len = tl;
    if (body != NULL)
        *body = nul + 1;
    if (body_len != NULL)
        *body_len = len - tl - 1;
    return IHC_OK;
}

static size_t topic_make(char *out, size_t cap, const char *prefix, const char *id, size_t n)
{
    size_t pl = strlen(prefix);
    if (out == NULL || cap < pl + n + 1)
        return 0;
    memcpy(out, prefix, pl);
    memcpy(out + pl, id, n);
    out[pl + n] = '\0';
    return pl + n + 1;
}

size_t ihc_wire_topic_hw(char *out, size_t cap, const char *hw)
{
    size_t n = hw ? strnlen(hw, IHC_HW_MAX + 1) : 0;
    if (!ihc_hw_valid(hw, n, true))
        return 0;
    return topic_make(out, cap, "hw:", hw, n);
}

size_t ihc_wire_topic_agent(char *out, size_t cap, const char *agent)
{
    size_t n = agent ? strnlen(agent, IHC_AGENT_ID_MAX + 1) : 0;
    if (!ihc_agent_id_valid(agent, n))
        return 0;
    return topic_make(out, cap, "ag:", agent, n);
}
