/* Bounded MessagePack: the reader that validates untrusted bytes and the writer's bounded
 * buffer behind msgpack-c's packer (see pack.h for why the reader is not msgpack-c's). */
#include "pack.h"

#include "err.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------
 * Reader
 * ---------------------------------------------------------------------------------------- */

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

/* The big-endian value of n (0, 1, 2, 4 or 8) bytes. */
static inline uint64_t be(const uint8_t *p, size_t n)
{
    switch (n) {
    case 1:
        return p[0];
    case 2:
        return be16(p);
    case 4:
        return be32(p);
    case 8:
        return be64(p);
    default:
        return 0;
    }
}

static int rd_fail(ihc__mp_reader *r, const char *why)
{
    r->why = why;
    return IHC_EPROTO;
}

/* A str or bin whose hdr header bytes give a payload of len bytes. */
static inline int rd_payload(ihc__mp_reader *r, ihc__mp_obj *o, size_t hdr, uint64_t len)
{
    if (len > (size_t)(r->end - r->p) - hdr)
        return rd_fail(r, "string or binary longer than the message");
    o->n = (uint32_t)len;
    o->s = r->p + hdr;
    r->p += hdr + len;
    return 0;
}

/* A signed integer: non-negative values are one kind whatever their encoding. */
static inline void set_int(ihc__mp_obj *o, int64_t i)
{
    if (i >= 0) {
        o->kind = IHC__MP_UINT;
        o->v.u = (uint64_t)i;
    } else {
        o->kind = IHC__MP_INT;
        o->v.i = i;
    }
}

/* Header bytes, type byte included, of the types 0xc0..0xdf; 1 for ext (refused). */
static const uint8_t typed_hdr_len[32] = {
    /* c0 */ 1, 1, 1, 1, 2, 3, 5, 1,
    /* c8 */ 1, 1, 5, 9, 2, 3, 5, 9,
    /* d0 */ 2, 3, 5, 9, 1, 1, 1, 1,
    /* d8 */ 1, 2, 3, 5, 3, 5, 3, 5,
};

/* The types 0xc0..0xdf: a type byte, then a fixed-size value, length or count. */
static int read_typed(ihc__mp_reader *r, ihc__mp_obj *o)
{
    const uint8_t *p = r->p;
    uint8_t t = p[0];
    size_t hdr = typed_hdr_len[t - 0xc0];
    if ((size_t)(r->end - p) < hdr)
        return rd_fail(r, "truncated");
    uint64_t v = be(p + 1, hdr - 1);
    switch (t) {
    case 0xc0:
        o->kind = IHC__MP_NIL;
        break;
    case 0xc1:
        return rd_fail(r, "reserved type byte 0xc1");
    case 0xc2:
    case 0xc3:
        o->kind = IHC__MP_BOOL;
        o->v.b = t == 0xc3;
        break;
    case 0xc4:
    case 0xc5:
    case 0xc6:
        o->kind = IHC__MP_BIN;
        return rd_payload(r, o, hdr, v);
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
        uint32_t bits = (uint32_t)v;
        float f;
        memcpy(&f, &bits, sizeof f);
        o->kind = IHC__MP_FLOAT;
        o->v.d = f;
        break;
    }
    case 0xcb:
        o->kind = IHC__MP_FLOAT;
        memcpy(&o->v.d, &v, sizeof o->v.d);
        break;
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
        o->kind = IHC__MP_UINT;
        o->v.u = v;
        break;
    case 0xd0:
        set_int(o, (int8_t)v);
        break;
    case 0xd1:
        set_int(o, (int16_t)v);
        break;
    case 0xd2:
        set_int(o, (int32_t)v);
        break;
    case 0xd3:
        set_int(o, (int64_t)v);
        break;
    case 0xd9:
    case 0xda:
    case 0xdb:
        o->kind = IHC__MP_STR;
        return rd_payload(r, o, hdr, v);
    case 0xdc:
    case 0xdd:
        o->kind = IHC__MP_ARRAY;
        o->n = (uint32_t)v;
        break;
    default: /* 0xde, 0xdf */
        o->kind = IHC__MP_MAP;
        o->n = (uint32_t)v;
        break;
    }
    r->p = p + hdr;
    return 0;
}

int ihc__mp_read_more(ihc__mp_reader *r, ihc__mp_obj *o)
{
    if (r->p == r->end)
        return rd_fail(r, "truncated");
    uint8_t t = r->p[0];
    if (t >= 0xa0 && t <= 0xbf) {
        o->kind = IHC__MP_STR;
        return rd_payload(r, o, 1, t & 0x1f);
    }
    if (t >= 0xc0 && t <= 0xdf)
        return read_typed(r, o);
    return ihc__mp_read(r, o); /* the one-byte forms */
}

int ihc__mp_check_count(ihc__mp_reader *r, const ihc__mp_obj *o, uint32_t max_count)
{
    uint64_t items = o->kind == IHC__MP_MAP ? 2 * (uint64_t)o->n : o->n;
    if (items > (uint64_t)(r->end - r->p))
        return rd_fail(r, "declared count larger than the message");
    if (o->n > max_count) {
        r->why = "list longer than the limit";
        return IHC_ETOOBIG;
    }
    return 0;
}

/* The entries of the array or map o just read, and everything below them. Scalars are read
 * here, so that only containers cost a recursion. */
static int check_entries(ihc__mp_reader *r, const ihc__mp_obj *o, int levels, uint32_t max_count)
{
    if (levels < 1)
        return rd_fail(r, "nested too deeply");
    int rc = ihc__mp_check_count(r, o, max_count);
    if (rc)
        return rc;
    uint64_t items = o->kind == IHC__MP_MAP ? 2 * (uint64_t)o->n : o->n;
    for (uint64_t i = 0; i < items; i++) {
        ihc__mp_obj e;
        if ((rc = ihc__mp_read(r, &e)) != 0)
            return rc;
        if ((e.kind == IHC__MP_ARRAY || e.kind == IHC__MP_MAP) &&
            (rc = check_entries(r, &e, levels - 1, max_count)) != 0)
            return rc;
        if (o->kind == IHC__MP_MAP && (i & 1) == 0 && e.kind != IHC__MP_STR)
            return rd_fail(r, "map key is not a string");
    }
    return 0;
}

int ihc__mp_check(ihc__mp_reader *r, int levels, uint32_t max_count, ihc__mp_kind *kind)
{
    ihc__mp_obj o;
    int rc = ihc__mp_read(r, &o);
    if (rc)
        return rc;
    *kind = o.kind;
    if (o.kind != IHC__MP_ARRAY && o.kind != IHC__MP_MAP)
        return 0;
    return check_entries(r, &o, levels, max_count);
}

int ihc__mp_skip(ihc__mp_reader *r)
{
    ihc__mp_obj o;
    int rc = ihc__mp_read(r, &o);
    if (rc)
        return rc;
    if (o.kind == IHC__MP_ARRAY || o.kind == IHC__MP_MAP) {
        uint64_t items = o.kind == IHC__MP_MAP ? 2 * (uint64_t)o.n : o.n;
        for (uint64_t i = 0; i < items; i++)
            if ((rc = ihc__mp_skip(r)) != 0)
                return rc;
    }
    return 0;
}

const char *ihc__mp_kind_name(ihc__mp_kind kind)
{
    static const char *const names[] = {
        [IHC__MP_NIL] = "nil",     [IHC__MP_BOOL] = "bool",   [IHC__MP_UINT] = "integer",
        [IHC__MP_INT] = "integer", [IHC__MP_FLOAT] = "float", [IHC__MP_STR] = "string",
        [IHC__MP_BIN] = "binary",  [IHC__MP_ARRAY] = "array", [IHC__MP_MAP] = "map",
    };
    return (unsigned)kind < sizeof names / sizeof names[0] ? names[kind] : "unknown";
}

/* ------------------------------------------------------------------------------------------
 * Writer
 * ---------------------------------------------------------------------------------------- */

/* msgpack_packer's write callback: most writes are a 1-byte header or a short string. */
static int wbuf_write(void *data, const char *buf, size_t len)
{
    ihc__wbuf *w = data;
    if ((w->err || len > w->cap - w->len) && !ihc__wbuf_reserve(w, len))
        return -1;
    if (len == 1)
        w->b[w->len] = (uint8_t)buf[0];
    else
        memcpy(w->b + w->len, buf, len);
    w->len += len;
    return 0;
}

void ihc__wbuf_init(ihc__wbuf *w, size_t max)
{
    *w = (ihc__wbuf){.max = max};
    msgpack_packer_init(&w->pk, w, wbuf_write);
}

bool ihc__wbuf_reserve(ihc__wbuf *w, size_t add)
{
    if (w->err)
        return false;
    if (add <= w->cap - w->len)
        return true;
    if (add > w->max - w->len) {
        w->err = IHC_ETOOBIG;
        return false;
    }
    size_t need = w->len + add;
    size_t cap = w->cap ? w->cap : 256;
    while (cap < need)
        cap *= 2;
    if (cap > w->max)
        cap = w->max; /* need <= max: what fits in cap never passes max */
    uint8_t *b = realloc(w->b, cap);
    if (b == NULL) {
        w->err = IHC_ENOMEM;
        return false;
    }
    w->b = b;
    w->cap = cap;
    return true;
}

void ihc__wbuf_fini(ihc__wbuf *w)
{
    free(w->b);
    w->b = NULL;
    w->len = w->cap = 0;
}

/* The sink of ihc__mp_map_header: at most 5 bytes. */
typedef struct {
    uint8_t *h;
    size_t len;
} hdr_sink;

static int hdr_write(void *data, const char *buf, size_t len)
{
    hdr_sink *s = data;
    if (len > 5 - s->len)
        return -1;
    memcpy(s->h + s->len, buf, len);
    s->len += len;
    return 0;
}

size_t ihc__mp_map_header(uint8_t h[5], uint32_t n)
{
    hdr_sink s = {h, 0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &s, hdr_write);
    msgpack_pack_map(&pk, n);
    return s.len;
}
