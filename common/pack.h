/* Bounded MessagePack for the wire protocol: a reader that checks untrusted bytes before
 * anything is allocated for them, and a writer into a buffer with a size cap. */
#ifndef IHC_PACK_H
#define IHC_PACK_H

#include <msgpack/pack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------------------------
 * Reader. Hand-written on purpose: msgpack-c 4.0's unpacker allocates an array's or map's
 * declared count before it has seen a single entry, so the 5 bytes `dd 08 00 00 00` ask it
 * for ~3 GB (see PITFALLS.md). This reader allocates nothing. Every read is bounds-checked
 * (a length or count is never trusted), and ihc__mp_check validates a whole object — depth,
 * declared counts against the bytes that remain, count limits, string map keys — so that a
 * decoder may size its allocations from counts it has checked.
 * ---------------------------------------------------------------------------------------- */

typedef enum {
    IHC__MP_NIL,
    IHC__MP_BOOL,
    IHC__MP_UINT, /* every non-negative integer, however it was encoded (as msgpack-c does) */
    IHC__MP_INT,  /* negative integers only */
    IHC__MP_FLOAT,
    IHC__MP_STR,
    IHC__MP_BIN,
    IHC__MP_ARRAY,
    IHC__MP_MAP
} ihc__mp_kind;

/* One object header. Strings and binaries point into the reader's buffer (no NUL); arrays
 * and maps give only their count: the entries follow in the buffer. */
typedef struct {
    ihc__mp_kind kind;
    uint32_t n;       /* str/bin length, array/map count */
    const uint8_t *s; /* str/bin payload */
    union {
        bool b;
        uint64_t u; /* IHC__MP_UINT */
        int64_t i;  /* IHC__MP_INT */
        double d;   /* IHC__MP_FLOAT (float32 widened) */
    } v;
} ihc__mp_obj;

/* A position in [p, end). why names the problem after a failed call (a static string). */
typedef struct {
    const uint8_t *p, *end;
    const char *why;
} ihc__mp_reader;

/* Reads one object header and, for strings and binaries, their payload. Refuses ext types,
 * the reserved byte 0xc1, truncation and payloads longer than what remains. Errors:
 * IHC_EPROTO (r->why says why; r->p is then unchanged). Defined below, inline: it reads the
 * one-byte forms most of a message is made of and hands the rest to ihc__mp_read_more. */
static inline int ihc__mp_read(ihc__mp_reader *r, ihc__mp_obj *o);

/* The same as ihc__mp_read, out of line: the end of the input, strings and 0xc0..0xdf. */
int ihc__mp_read_more(ihc__mp_reader *r, ihc__mp_obj *o);

/* Checks the count of the array or map o just read: each entry needs at least one byte, so
 * a count larger than the bytes that remain is refused (IHC_EPROTO) before anyone sizes an
 * allocation from it; a count over max_count is IHC_ETOOBIG. */
int ihc__mp_check_count(ihc__mp_reader *r, const ihc__mp_obj *o, uint32_t max_count);

/* Validates one object and everything below it without allocating: containers may nest
 * `levels` more deep (0: this object must not be an array or map), every count is checked
 * as by ihc__mp_check_count, map keys must be strings. *kind gets the object's kind.
 * Errors: IHC_EPROTO, IHC_ETOOBIG; r->why says why. */
int ihc__mp_check(ihc__mp_reader *r, int levels, uint32_t max_count, ihc__mp_kind *kind);

/* Skips one object (and everything below it) that ihc__mp_check has accepted. */
int ihc__mp_skip(ihc__mp_reader *r);

/* "string", "integer", … for error texts. */
const char *ihc__mp_kind_name(ihc__mp_kind kind);

static inline int ihc__mp_read(ihc__mp_reader *r, ihc__mp_obj *o)
{
    const uint8_t *p = r->p;
    if (p == r->end)
        return ihc__mp_read_more(r, o);
    uint8_t t = p[0];
    if (t <= 0x7f) {
        o->kind = IHC__MP_UINT;
        o->v.u = t;
    } else if (t >= 0xe0) {
        o->kind = IHC__MP_INT;
        o->v.i = (int8_t)t;
    } else if (t <= 0x9f) {
        o->kind = t <= 0x8f ? IHC__MP_MAP : IHC__MP_ARRAY;
        o->n = t & 0x0f;
    } else if (t <= 0xbf && (size_t)(t & 0x1f) < (size_t)(r->end - p)) {
        o->kind = IHC__MP_STR; /* fixstr, with its payload in the input */
        o->n = t & 0x1f;
        o->s = p + 1;
        r->p = p + 1 + o->n;
        return 0;
    } else {
        return ihc__mp_read_more(r, o);
    }
    r->p = p + 1;
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Writer: msgpack-c's packer writing into a growable buffer with a hard size cap. Only the
 * packer's inline functions of <msgpack/pack.h> are used, so nothing of libmsgpackc is
 * linked. It replaced a hand-written writer after two checks: the bytes are the same (both
 * take the shortest form of every value; compared on boundary values of every type, the fuzz
 * corpus and 300k mutated messages) and encoding costs fewer instructions (callgrind,
 * 3000 encodes: 21.9M before, 20.7M after). The buffer keeps its first error and drops every
 * later write, so an encoder packs a whole message and checks err once at the end.
 * ---------------------------------------------------------------------------------------- */

typedef struct {
    uint8_t *b; /* malloc'd; owned by whoever owns the ihc__wbuf */
    size_t len, cap;
    size_t max;        /* len never exceeds it */
    int err;           /* first error: IHC_ETOOBIG (over max) or IHC_ENOMEM */
    msgpack_packer pk; /* msgpack_pack_*(&w->pk, …) appends to b */
} ihc__wbuf;

/* An empty buffer that will hold at most max bytes. Nothing is allocated yet; w->pk points
 * at w, so w must stay where it is while it is in use. */
void ihc__wbuf_init(ihc__wbuf *w, size_t max);

/* Makes room for add more bytes after len; false (and w->err set) when that would pass max
 * or memory runs out, or when an earlier write failed. */
bool ihc__wbuf_reserve(ihc__wbuf *w, size_t add);

/* Frees the buffer; the ihc__wbuf may be initialised again. */
void ihc__wbuf_fini(ihc__wbuf *w);

/* Writes the map header for n entries (the shortest form, as msgpack_pack_map writes it)
 * into h and returns its length (1, 3 or 5). */
size_t ihc__mp_map_header(uint8_t h[5], uint32_t n);

#endif
