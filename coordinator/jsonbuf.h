/* A JSON text written in order into one growing buffer. The coordinator's documents on its
 * hot path (an interrupt's result, the live events of every session begun and ended) are
 * built this way: no tree of values to allocate, fill, walk and free, as with jansson, whose
 * documents elsewhere are not per interrupt. Out of memory is remembered, not reported per
 * call: the text is checked once, at ihc_jbuf_take. */
#ifndef IHC_COORD_JSONBUF_H
#define IHC_COORD_JSONBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Zero-initialise ({0}); the text is NUL-terminated once anything was written. */
typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} ihc_jbuf;

/* Makes room for more bytes (a hint: writes grow the buffer as they need). */
void ihc_jbuf_reserve(ihc_jbuf *b, size_t more);

/* Raw text, written as it is (n bytes). */
void ihc_jbuf_put(ihc_jbuf *b, const char *s, size_t n);
#define IHC_JBUF_LIT(b, lit) ihc_jbuf_put(b, lit, sizeof(lit) - 1)

/* Raw text from a format. */
void ihc_jbuf_fmt(ihc_jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A JSON string, quoted and escaped. Bytes that are not UTF-8 (agents' texts may hold any)
 * are each written as U+FFFD, so the document stays valid JSON. */
void ihc_jbuf_str(ihc_jbuf *b, const char *s);

/* A JSON string, or null when s is NULL. */
void ihc_jbuf_str_or_null(ihc_jbuf *b, const char *s);

/* An integer. */
void ihc_jbuf_int(ihc_jbuf *b, int64_t v);

/* A real as jansson writes it with JSON_REAL_PRECISION(9) ("%.9g", ".0" added to what looks
 * like an integer, the exponent without '+' or leading zeros), so documents read the same
 * whichever way they were built. */
void ihc_jbuf_real(ihc_jbuf *b, double v);

/* The text (caller frees), or NULL when memory ran out on the way (b's buffer is then freed).
 * b is empty afterwards. */
char *ihc_jbuf_take(ihc_jbuf *b);

#endif
