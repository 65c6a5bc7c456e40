/* JSON written in order into one growing buffer (jsonbuf.h). */
#include "jsonbuf.h"

#include "utf8.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ihc_jbuf_reserve(ihc_jbuf *b, size_t more)
{
    if (b->oom || b->len + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return;
    }
    b->p = p;
    b->cap = cap;
}

void ihc_jbuf_put(ihc_jbuf *b, const char *s, size_t n)
{
    ihc_jbuf_reserve(b, n);
    if (b->oom)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void ihc_jbuf_fmt(ihc_jbuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof(tmp)) {
        ihc_jbuf_put(b, tmp, (size_t)n);
    } else if (n > 0) { /* longer: written in place, never cut */
        ihc_jbuf_reserve(b, (size_t)n);
        if (!b->oom) {
            vsnprintf(b->p + b->len, (size_t)n + 1, fmt, again);
            b->len += (size_t)n;
        }
    }
    va_end(again);
}

void ihc_jbuf_str(ihc_jbuf *b, const char *s)
{
    size_t left = strlen(s);
    ihc_jbuf_reserve(b, left + 2);
    IHC_JBUF_LIT(b, "\"");
    const char *run = s;
    for (; *s; s++, left--) {
        unsigned char ch = (unsigned char)*s;
        if (ch >= 0x80) {
            size_t l = ihc_utf8_len((const unsigned char *)s, left);
            if (l > 0) {
                s += l - 1;
                left -= l - 1;
                continue;
            }
            ihc_jbuf_put(b, run, (size_t)(s - run));
            IHC_JBUF_LIT(b, "\\ufffd");
            run = s + 1;
            continue;
        }
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        ihc_jbuf_put(b, run, (size_t)(s - run));
        if (ch == '"')
            IHC_JBUF_LIT(b, "\\\"");
        else if (ch == '\\')
            IHC_JBUF_LIT(b, "\\\\");
        else if (ch == '\n')
            IHC_JBUF_LIT(b, "\\n");
        else if (ch == '\t')
            IHC_JBUF_LIT(b, "\\t");
        else if (ch == '\r')
            IHC_JBUF_LIT(b, "\\r");
        else
            ihc_jbuf_fmt(b, "\\u%04x", ch);
        run = s + 1;
    }
    ihc_jbuf_put(b, run, (size_t)(s - run));
    IHC_JBUF_LIT(b, "\"");
}

void ihc_jbuf_str_or_null(ihc_jbuf *b, const char *s)
{
    if (s)
        ihc_jbuf_str(b, s);
    else
        IHC_JBUF_LIT(b, "null");
}

void ihc_jbuf_int(ihc_jbuf *b, int64_t v)
{
    ihc_jbuf_fmt(b, "%" PRId64, v);
}

void ihc_jbuf_real(ihc_jbuf *b, double v)
{
    char tmp[40];
    int n = snprintf(tmp, sizeof(tmp), "%.9g", v);
    if (n <= 0 || (size_t)n >= sizeof(tmp) - 2) {
        IHC_JBUF_LIT(b, "0.0");
        return;
    }
    if (!strpbrk(tmp, ".eEn")) { /* n: inf, nan never come (callers write finite values) */
        tmp[n++] = '.';
        tmp[n++] = '0';
        tmp[n] = '\0';
    }
    /* the exponent as jansson writes it: no '+', no leading zeros ("1e-07" is "1e-7") */
    char *e = strchr(tmp, 'e');
    if (e) {
        char *digits = e + 1 + (e[1] == '-' || e[1] == '+');
        char *from = digits;
        while (*from == '0' && from[1])
            from++;
        char *to = e[1] == '+' ? e + 1 : digits;
        memmove(to, from, strlen(from) + 1);
        n = (int)strlen(tmp);
    }
    ihc_jbuf_put(b, tmp, (size_t)n);
}

char *ihc_jbuf_take(ihc_jbuf *b)
{
    char *p = b->oom ? NULL : b->p;
    if (b->oom)
        free(b->p);
    *b = (ihc_jbuf){0};
    return p;
}
