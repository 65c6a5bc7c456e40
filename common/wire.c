/* The ihc wire protocol: the message schemas, table-driven decoding into the structs of
 * wire.h and encoding from them, topic framing and identifier rules. The MessagePack
 * reader and writer are in pack.c, signing and replay protection in sign.c. */
#include "wire.h"

#include "clock.h"
#include "err.h"
#include "pack.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IHC_WIRE_VERSION 1

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
    FLD("term", K_U64, 0, ihc_interrupt_msg, term),
};
static const wire_field report_fields[] = {
    FLD("id", K_U64, F_REQ, ihc_report_msg, id),
    FLD("agent", K_AGENT, F_REQ, ihc_report_msg, agent),
    FLD("hw", K_HW_ANY, F_REQ, ihc_report_msg, hw),
    OBJ("modules", module_result_schema, 0, ihc_report_msg, modules, n_modules),
    LST("sessions", K_ID, 0, ihc_report_msg, sessions, n_sessions),
    FLD("time_ms", K_DOUBLE, 0, ihc_report_msg, time_ms),
    FLD("term", K_U64, 0, ihc_report_msg, term),
    OBJ("begun", session_info_schema, 0, ihc_report_msg, begun, n_begun),
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
    LST("sub_addrs", K_AGENT, 0, ihc_hello_msg, sub_addrs, n_sub_addrs),
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
    FLD("term", K_U64, 0, ihc_sync_msg, term),
    FLD("report_begun", K_BOOL, 0, ihc_sync_msg, report_begun),
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
static int dec_string(dctx *c, const wire_field *f, int k, long elem, const ihc__mp_obj *o,
                      char **dst)
{
    if (o->kind != IHC__MP_STR)
        return fail(c, IHC_ETYPE, f->key, elem, "expected string, got %s",
                    ihc__mp_kind_name(o->kind));
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

/* K_U64, K_U32, K_I64, K_I64_POS, K_I32: range-checked into dst. */
static int dec_int(dctx *c, const wire_field *f, const ihc__mp_obj *o, void *dst)
{
    if (o->kind != IHC__MP_UINT && o->kind != IHC__MP_INT)
        return fail(c, IHC_ETYPE, f->key, -1, "expected integer, got %s",
                    ihc__mp_kind_name(o->kind));
    bool neg = o->kind == IHC__MP_INT;
    if (neg && (f->kind == K_U64 || f->kind == K_U32 || f->kind == K_I64_POS))
        return fail(c, IHC_ETYPE, f->key, -1, "must not be negative");
    if (f->kind == K_U64) {
        *(uint64_t *)dst = o->v.u;
    } else if (f->kind == K_U32) {
        if (o->v.u > UINT32_MAX)
            return fail(c, IHC_ETYPE, f->key, -1, "out of range");
        *(uint32_t *)dst = (uint32_t)o->v.u;
    } else if (f->kind == K_I32) {
        if (neg ? o->v.i < INT32_MIN : o->v.u > INT32_MAX)
            return fail(c, IHC_ETYPE, f->key, -1, "out of range");
        *(int32_t *)dst = neg ? (int32_t)o->v.i : (int32_t)o->v.u;
    } else {
        if (!neg && o->v.u > INT64_MAX)
            return fail(c, IHC_ETYPE, f->key, -1, "out of range");
        *(int64_t *)dst = neg ? o->v.i : (int64_t)o->v.u;
    }
    return 0;
}

/* K_DOUBLE: a float or an integer, finite. */
static int dec_double(dctx *c, const wire_field *f, const ihc__mp_obj *o, double *dst)
{
    double d;
    if (o->kind == IHC__MP_FLOAT)
        d = o->v.d;
    else if (o->kind == IHC__MP_UINT)
        d = (double)o->v.u;
    else if (o->kind == IHC__MP_INT)
        d = (double)o->v.i;
    else
        return fail(c, IHC_ETYPE, f->key, -1, "expected number, got %s",
                    ihc__mp_kind_name(o->kind));
    if (!isfinite(d))
        return fail(c, IHC_ETYPE, f->key, -1, "not a finite number");
    *dst = d;
    return 0;
}

/* K_MODSTATUS: one of mod_status_names. */
static int dec_mod_status(dctx *c, const wire_field *f, const ihc__mp_obj *o, ihc_mod_status *dst)
{
    if (o->kind != IHC__MP_STR)
        return fail(c, IHC_ETYPE, f->key, -1, "expected string, got %s",
                    ihc__mp_kind_name(o->kind));
    for (size_t i = 0; i < MOD_STATUS_COUNT; i++) {
        if (strlen(mod_status_names[i]) == o->n && memcmp(mod_status_names[i], o->s, o->n) == 0) {
            *dst = (ihc_mod_status)i;
            return 0;
        }
    }
    return fail(c, IHC_EPROTO, f->key, -1, "unknown status (ok|timed_out|failed|disabled)");
}

/* K_LIST: the array o of strings of kind f->elem. */
static int dec_list(dctx *c, const wire_field *f, char *base, ihc__mp_reader *r,
                    const ihc__mp_obj *o)
{
    if (o->kind != IHC__MP_ARRAY)
        return fail(c, IHC_ETYPE, f->key, -1, "expected array, got %s", ihc__mp_kind_name(o->kind));
    char **v = NULL;
    if (o->n > 0 && (v = ar_alloc(&c->ar, o->n * sizeof *v, sizeof(void *))) == NULL)
        return fail(c, IHC_ENOMEM, f->key, -1, "out of memory");
    for (uint32_t i = 0; i < o->n; i++) {
        ihc__mp_obj e;
        int rc = ihc__mp_read(r, &e);
        if (rc)
            return fail(c, rc, f->key, (long)i, "%s", r->why);
        if ((rc = dec_string(c, f, f->elem, (long)i, &e, &v[i])) != 0)
            return rc;
    }
    *(char ***)(void *)(base + f->off) = v;
    *(size_t *)(void *)(base + f->n_off) = o->n;
    return 0;
}

static int dec_obj(dctx *c, const wire_schema *s, char *base, ihc__mp_reader *r, uint32_t n);

/* K_OBJS: the array o of maps, each decoded per the schema f->aux. */
static int dec_objs(dctx *c, const wire_field *f, char *base, ihc__mp_reader *r,
                    const ihc__mp_obj *o)
{
    const wire_schema *sub = f->aux;
    if (o->kind != IHC__MP_ARRAY)
        return fail(c, IHC_ETYPE, f->key, -1, "expected array, got %s", ihc__mp_kind_name(o->kind));
    char *v = NULL;
    if (o->n > 0) {
        if ((v = ar_alloc(&c->ar, (size_t)o->n * sub->size, 16)) == NULL)
            return fail(c, IHC_ENOMEM, f->key, -1, "out of memory");
        memset(v, 0, (size_t)o->n * sub->size);
    }
    for (uint32_t i = 0; i < o->n; i++) {
        ihc__mp_obj e;
        int rc = ihc__mp_read(r, &e);
        if (rc)
            return fail(c, rc, f->key, (long)i, "%s", r->why);
        if (e.kind != IHC__MP_MAP)
            return fail(c, IHC_ETYPE, f->key, (long)i, "expected map, got %s",
                        ihc__mp_kind_name(e.kind));
        c->parent = f->key;
        c->parent_idx = i;
        rc = dec_obj(c, sub, v + (size_t)i * sub->size, r, e.n);
        c->parent = NULL;
        if (rc)
            return rc;
    }
    *(void **)(void *)(base + f->off) = v;
    *(size_t *)(void *)(base + f->n_off) = o->n;
    return 0;
}

/* Decodes the value of field f into base. *present is false when the value is nil. */
static int dec_field(dctx *c, const wire_field *f, char *base, ihc__mp_reader *r, bool *present)
{
    ihc__mp_obj o;
    int rc = ihc__mp_read(r, &o);
    if (rc)
        return fail(c, rc, f->key, -1, "%s", r->why);
    *present = o.kind != IHC__MP_NIL;
    if (!*present)
        return 0;
    void *dst = base + f->off;

    switch ((wire_kind)f->kind) {
    case K_U64:
    case K_U32:
    case K_I64:
    case K_I64_POS:
    case K_I32:
        return dec_int(c, f, &o, dst);
    case K_DOUBLE:
        return dec_double(c, f, &o, dst);
    case K_BOOL:
    case K_MODOK:
        if (o.kind != IHC__MP_BOOL)
            return fail(c, IHC_ETYPE, f->key, -1, "expected bool, got %s",
                        ihc__mp_kind_name(o.kind));
        if (f->kind == K_BOOL)
            *(bool *)dst = o.v.b;
        else
            c->ok = o.v.b;
        return 0;
    case K_MODSTATUS:
        return dec_mod_status(c, f, &o, dst);
    case K_HW:
    case K_HW_ANY:
    case K_ID:
    case K_AGENT:
    case K_TEXT:
    case K_ENUM:
        return dec_string(c, f, f->kind, -1, &o, dst);
    case K_LIST:
        return dec_list(c, f, base, r, &o);
    case K_OBJS:
        return dec_objs(c, f, base, r, &o);
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
static int dec_obj(dctx *c, const wire_schema *s, char *base, ihc__mp_reader *r, uint32_t n)
{
    uint32_t seen = 0, present = 0;
    int rc;
    for (uint32_t i = 0; i < n; i++) {
        ihc__mp_obj k;
        if ((rc = ihc__mp_read(r, &k)) != 0)
            return fail(c, rc, "?", -1, "%s", r->why);
        if (k.kind != IHC__MP_STR)
            return fail(c, IHC_EPROTO, "?", -1, "map key is not a string");
        const wire_field *f = find_field(s, k.s, k.n);
        if (f == NULL) {
            if ((rc = ihc__mp_skip(r)) != 0)
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
            (*(char **)(void *)(base + f->off) = ar_strdup(c, (const uint8_t *)"", 0)) == NULL)
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

/* ------------------------------------------------------------------------------------------
 * Envelope: the entries every message shares, located by scan_top before any allocation.
 * ---------------------------------------------------------------------------------------- */

enum { C_V, C_TYPE, C_TS, C_NONCE, C_SIG, C__COUNT };
static const char *const common_keys[C__COUNT] = {"v", "type", "ts_ms", "nonce", "sig"};

typedef struct {
    uint32_t n;                   /* entries of the top-level map */
    const uint8_t *body;          /* first entry */
    const uint8_t *end;           /* end of the message */
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

/* The top-level map's header: a map whose count the message can hold. */
static int scan_map_header(ihc__mp_reader *r, top_scan *ts)
{
    ihc__mp_obj o;
    int rc = ihc__mp_read(r, &o);
    if (rc == 0 && o.kind != IHC__MP_MAP) {
        r->why = "message is not a MessagePack map";
        rc = IHC_EPROTO;
    }
    if (rc == 0)
        rc = ihc__mp_check_count(r, &o, IHC_WIRE_MAX_LIST);
    if (rc == 0) {
        ts->n = o.n;
        ts->body = r->p;
    }
    return rc;
}

/* Validates the whole message (ihc__mp_check: one bounded walk over every byte, nothing
 * allocated) and, in the same walk, locates the common entries of the top-level map. */
static int scan_top(const uint8_t *buf, size_t len, top_scan *ts, char *detail, size_t dlen)
{
    ihc__mp_reader r = {buf, buf + len, NULL};
    memset(ts, 0, sizeof *ts);
    ts->end = buf + len;
    int rc = scan_map_header(&r, ts);
    for (uint32_t i = 0; rc == 0 && i < ts->n; i++) {
        const uint8_t *kstart = r.p;
        ihc__mp_obj k;
        if ((rc = ihc__mp_read(&r, &k)) != 0)
            break;
        if (k.kind != IHC__MP_STR) {
            r.why = "map key is not a string";
            rc = IHC_EPROTO;
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
                ts->sig_last = i + 1 == ts->n;
            }
        }
        ihc__mp_kind kind;
        rc = ihc__mp_check(&r, IHC_WIRE_MAX_DEPTH - 1, IHC_WIRE_MAX_LIST, &kind);
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
    ihc__mp_reader r = {at, end, NULL};
    ihc__mp_obj o;
    if (ihc__mp_read(&r, &o) != 0)
        return IHC_EPROTO;
    if (o.kind == IHC__MP_NIL)
        return -1;
    if (o.kind == IHC__MP_UINT) {
        if (u)
            *u = o.v.u;
        if (i) {
            if (o.v.u > INT64_MAX)
                return IHC_ETYPE;
            *i = (int64_t)o.v.u;
        }
        return 0;
    }
    if (o.kind == IHC__MP_INT && neg_ok && i) {
        *i = o.v.i;
        return 0;
    }
    return IHC_ETYPE;
}

typedef struct {
    ihc_msg_type type;
    int64_t ts_ms;  /* 0 when absent */
    uint64_t nonce; /* 0 when absent */
    bool has_ts_ms, has_nonce;
    bool bad_nonce; /* present but not an unsigned integer */
} envelope;

/* "v" and "type", both required. */
static int dec_version_type(const top_scan *ts, ihc_msg_type *type, char *detail, size_t dlen)
{
    uint64_t v = 0;
    int rc = common_int(ts->val[C_V], ts->end, false, &v, NULL);
    if (rc < 0) {
        set_detail(detail, dlen, "field 'v': required field missing");
        return IHC_EMISSING;
    }
    if (rc > 0) {
        set_detail(detail, dlen, "field 'v': expected unsigned integer");
        return IHC_ETYPE;
    }
    if (v != IHC_WIRE_VERSION) {
        set_detail(detail, dlen, "field 'v': unsupported version %llu (want %d)",
                   (unsigned long long)v, IHC_WIRE_VERSION);
        return IHC_EVERSION;
    }
    ihc__mp_obj to = {.kind = IHC__MP_NIL}; /* absent reads as nil */
    ihc__mp_reader tr = {ts->val[C_TYPE], ts->end, NULL};
    rc = tr.p != NULL ? ihc__mp_read(&tr, &to) : 0;
    if (rc == 0 && to.kind == IHC__MP_NIL) {
        set_detail(detail, dlen, "field 'type': required field missing");
        return IHC_EMISSING;
    }
    if (rc != 0 || to.kind != IHC__MP_STR) {
        set_detail(detail, dlen, "field 'type': expected string");
        return IHC_ETYPE;
    }
    if ((*type = type_lookup(to.s, to.n)) == IHC_MSG_NONE) {
        set_detail(detail, dlen, "field 'type': unknown message type");
        return IHC_EPROTO;
    }
    return 0;
}

/* The envelope: "v" and "type" (required), "ts_ms" and "nonce" (optional integers; a nonce
 * of another type matters only to the signature check). */
static int dec_envelope(const top_scan *ts, envelope *env, char *detail, size_t dlen)
{
    memset(env, 0, sizeof *env);
    int rc = dec_version_type(ts, &env->type, detail, dlen);
    if (rc)
        return rc;
    rc = common_int(ts->val[C_TS], ts->end, true, NULL, &env->ts_ms);
    if (rc > 0) {
        set_detail(detail, dlen, "field 'ts_ms': expected integer");
        return IHC_ETYPE;
    }
    env->has_ts_ms = rc == 0;
    rc = common_int(ts->val[C_NONCE], ts->end, false, &env->nonce, NULL);
    env->has_nonce = rc == 0;
    env->bad_nonce = rc > 0;
    return 0;
}

/* The signature and replay checks of sign.c, on the map scan_top located. */
static int verify(const ihc_wire_auth *auth, const top_scan *ts, const envelope *env, char *detail,
                  size_t dlen)
{
    if (env->bad_nonce) {
        set_detail(detail, dlen, "field 'nonce': expected unsigned integer");
        return IHC_EREPLAY;
    }
    ihc__signed_map sm = {
        .n = ts->n,
        .entries = ts->body,
        .end = ts->end,
        .sig_key = ts->sig_key,
        .sig = ts->val[C_SIG],
        .sig_last = ts->sig_last,
        .has_ts_ms = env->has_ts_ms,
        .has_nonce = env->has_nonce,
        .ts_ms = env->ts_ms,
        .nonce = env->nonce,
    };
    return ihc__sign_verify(auth, &sm, detail, dlen);
}

/* The fields, into one arena sized for the common case; *out is its first allocation. */
static int dec_body(const top_scan *ts, const envelope *env, size_t len, ihc_msg **out,
                    char *detail, size_t dlen)
{
    dctx c = {.detail = detail, .detail_len = dlen};
    size_t cap = sizeof(ihc_msg) + 2 * len + 64;
    c.ar.first = c.ar.cur = chunk_new(cap);
    if (c.ar.first == NULL)
        return IHC_ENOMEM;
    ihc_msg *m = ar_alloc(&c.ar, sizeof *m, 16);
    memset(m, 0, sizeof *m);
    m->type = env->type;
    m->ts_ms = env->ts_ms;
    m->nonce = env->nonce;
    ihc__mp_reader br = {ts->body, ts->end, NULL};
    int rc = dec_obj(&c, &msg_schemas[env->type], (char *)&m->u, &br, ts->n);
    if (rc) {
        arena_free(c.ar.first);
        return rc;
    }
    *out = m;
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
    /* Structure first (nothing allocated), then the envelope, the signature, the fields. */
    top_scan ts;
    envelope env;
    int rc = scan_top(buf, len, &ts, detail, detail_len);
    if (rc == 0)
        rc = dec_envelope(&ts, &env, detail, detail_len);
    if (rc == 0 && auth != NULL)
        rc = verify(auth, &ts, &env, detail, detail_len);
    if (rc == 0)
        rc = dec_body(&ts, &env, len, out, detail, detail_len);
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * Encoder: msgpack-c's packer writing into a bounded ihc__wbuf (pack.h).
 * ---------------------------------------------------------------------------------------- */

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
        return *(const size_t *)(const void *)(base + f->n_off) != 0;
    }
    return false;
}

static void pack_bool(msgpack_packer *pk, bool b)
{
    if (b)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

static int enc_string(msgpack_packer *pk, const wire_field *f, int k, const char *s)
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
    msgpack_pack_str_with_body(pk, s, n);
    return IHC_OK;
}

static int enc_obj(msgpack_packer *pk, const wire_schema *s, const char *base);

/* K_LIST or K_OBJS: the array of n elements at v (checked against the list limit). */
static int enc_array(msgpack_packer *pk, const wire_field *f, const void *v, size_t n)
{
    if (n > IHC_WIRE_MAX_LIST)
        return IHC_ETOOBIG;
    if (n > 0 && v == NULL)
        return IHC_EINVAL;
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) {
        int rc;
        if (f->kind == K_LIST) {
            rc = enc_string(pk, f, f->elem, ((char *const *)v)[i]);
        } else {
            const wire_schema *sub = f->aux;
            rc = enc_obj(pk, sub, (const char *)v + i * sub->size);
        }
        if (rc)
            return rc;
    }
    return 0;
}

static int enc_field(msgpack_packer *pk, const wire_field *f, const char *base)
{
    const void *p = base + f->off;
    msgpack_pack_str_with_body(pk, f->key, f->klen);
    switch ((wire_kind)f->kind) {
    case K_U64:
        msgpack_pack_uint64(pk, *(const uint64_t *)p);
        return 0;
    case K_U32:
        msgpack_pack_uint64(pk, *(const uint32_t *)p);
        return 0;
    case K_I64_POS:
        if (*(const int64_t *)p < 0)
            return IHC_EINVAL;
        msgpack_pack_int64(pk, *(const int64_t *)p);
        return 0;
    case K_I64:
        msgpack_pack_int64(pk, *(const int64_t *)p);
        return 0;
    case K_I32:
        msgpack_pack_int64(pk, *(const int32_t *)p);
        return 0;
    case K_DOUBLE:
        if (!isfinite(*(const double *)p))
            return IHC_EINVAL;
        msgpack_pack_double(pk, *(const double *)p);
        return 0;
    case K_BOOL:
        pack_bool(pk, *(const bool *)p);
        return 0;
    case K_MODSTATUS:
    case K_MODOK: {
        ihc_mod_status st = *(const ihc_mod_status *)p;
        if ((unsigned)st >= MOD_STATUS_COUNT)
            return IHC_EINVAL;
        if (f->kind == K_MODOK)
            pack_bool(pk, st == IHC_MOD_OK || st == IHC_MOD_DISABLED);
        else
            msgpack_pack_str_with_body(pk, mod_status_names[st], strlen(mod_status_names[st]));
        return 0;
    }
    case K_HW:
    case K_HW_ANY:
    case K_ID:
    case K_AGENT:
    case K_TEXT:
    case K_ENUM:
        return enc_string(pk, f, f->kind, *(char *const *)p);
    case K_LIST:
    case K_OBJS:
        return enc_array(pk, f, *(const void *const *)p,
                         *(const size_t *)(const void *)(base + f->n_off));
    }
    return IHC_EINTERNAL;
}

/* How many fields of base schema s emits. */
static uint32_t enc_count(const wire_schema *s, const char *base)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->n_fields; i++)
        n += enc_present(&s->fields[i], base);
    return n;
}

/* The fields of base that schema s emits, without a map header. */
static int enc_fields(msgpack_packer *pk, const wire_schema *s, const char *base)
{
    for (uint32_t i = 0; i < s->n_fields; i++) {
        if (!enc_present(&s->fields[i], base))
            continue;
        int rc = enc_field(pk, &s->fields[i], base);
        if (rc)
            return rc;
    }
    return 0;
}

static int enc_obj(msgpack_packer *pk, const wire_schema *s, const char *base)
{
    msgpack_pack_map(pk, enc_count(s, base));
    return enc_fields(pk, s, base);
}

static inline void pack_common_key(msgpack_packer *pk, int key)
{
    msgpack_pack_str_with_body(pk, common_keys[key], strlen(common_keys[key]));
}

/* The entries every message starts with: v, type, ts_ms and, when signing, nonce. */
static int enc_envelope(msgpack_packer *pk, const ihc_msg *m, bool sign, uint32_t *n)
{
    pack_common_key(pk, C_V);
    msgpack_pack_uint64(pk, IHC_WIRE_VERSION);
    pack_common_key(pk, C_TYPE);
    msgpack_pack_str_with_body(pk, type_names[m->type], type_lens[m->type]);
    pack_common_key(pk, C_TS);
    msgpack_pack_int64(pk, m->ts_ms != 0 ? m->ts_ms : ihc_now_ms());
    *n += 3;
    if (sign) {
        uint64_t nonce;
        int rc = ihc__sign_nonce(&nonce);
        if (rc)
            return rc;
        pack_common_key(pk, C_NONCE);
        msgpack_pack_uint64(pk, nonce);
        (*n)++;
    }
    return IHC_OK;
}

/* Appends "sig": the signature of the n entries written from offset body on. */
static int enc_sig(ihc__wbuf *w, const ihc_wire_auth *auth, size_t body, uint32_t n)
{
    uint8_t mac[IHC_SIG_LEN];
    int rc = ihc__sign_map(auth, n, w->b + body, w->len - body, mac);
    if (rc)
        return rc;
    pack_common_key(&w->pk, C_SIG);
    msgpack_pack_bin_with_body(&w->pk, mac, IHC_SIG_LEN);
    return w->err;
}

/* The map's entries were written after a 5-byte gap that follows the topic (tl bytes): the
 * header for n entries, known only now, goes at the end of the gap and header and entries
 * slide down onto the topic. */
static int enc_close(ihc__wbuf *w, size_t tl, size_t gap, uint32_t n)
{
    uint8_t h[5];
    size_t hn = ihc__mp_map_header(h, n);
    memcpy(w->b + gap - hn, h, hn);
    memmove(w->b + tl, w->b + gap - hn, w->len - (gap - hn));
    w->len -= gap - hn - tl;
    return w->len - tl > IHC_WIRE_MAX_MSG ? IHC_ETOOBIG : IHC_OK;
}

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
    const size_t gap = tl + 5;
    ihc__wbuf w;
    ihc__wbuf_init(&w, IHC_WIRE_MAX_MSG + IHC_TOPIC_MAX + 64);
    if (!ihc__wbuf_reserve(&w, gap + 256))
        return w.err;
    memcpy(w.b, topic, tl);
    w.len = gap;

    const wire_schema *s = &msg_schemas[m->type];
    const char *base = (const char *)&m->u;
    uint32_t n = 0;
    int rc = enc_envelope(&w.pk, m, auth != NULL, &n);
    if (rc == 0) {
        n += enc_count(s, base);
        rc = enc_fields(&w.pk, s, base);
    }
    if (rc == 0)
        rc = w.err;
    if (rc == 0 && auth != NULL && (rc = enc_sig(&w, auth, gap, n)) == 0)
        n++;
    if (rc == 0)
        rc = enc_close(&w, tl, gap, n);
    if (rc) {
        ihc__wbuf_fini(&w);
        return rc;
    }
    *buf = w.b;
    *len = w.len;
    return IHC_OK;
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

int ihc_wire_encode_to(const ihc_msg *m, const ihc_wire_auth *auth, const char *agent,
                       uint8_t **buf, size_t *len)
{
    char topic[IHC_TOPIC_MAX + 1];
    if (buf != NULL)
        *buf = NULL;
    if (len != NULL)
        *len = 0;
    if (m == NULL || (m->type != IHC_MSG_INTERRUPT && m->type != IHC_MSG_SYNC) || agent == NULL)
        return IHC_EINVAL;
    size_t tl = ihc_wire_topic_agent(topic, sizeof topic, agent);
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
