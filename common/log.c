/* Logging: formats one event into a stack buffer (text or JSON line) and writes it with a
 * single write(2), so concurrent lines never interleave and the hot path takes no lock. */
#include "log.h"
#include "utf8.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* A whole line, newline included, fits in PIPE_BUF so a write to a pipe is atomic. */
#define LOG_LINE_MAX 4096
/* Room kept at the end of a line for the truncation marker and the closing of a JSON line. */
#define LOG_TAIL 48
#define LOG_MARK "\xe2\x80\xa6" /* "…" */

enum { OPT_JSON = 1, OPT_INTERRUPTS = 2, OPT_TIMING = 4 };

/* Options are atomics so that a late ihc_log_setup is not a data race; loads are relaxed. */
static atomic_int g_level = IHC_LOG_INFO;
static atomic_int g_flags = OPT_INTERRUPTS | OPT_TIMING;
static atomic_int g_fd = 2;

void ihc_log_setup(const ihc_log_opts *o)
{
    if (o == NULL) {
        atomic_store_explicit(&g_level, IHC_LOG_INFO, memory_order_relaxed);
        atomic_store_explicit(&g_flags, OPT_INTERRUPTS | OPT_TIMING, memory_order_relaxed);
        atomic_store_explicit(&g_fd, 2, memory_order_relaxed);
        return;
    }
    int lvl = (int)o->level;
    if (lvl < IHC_LOG_DEBUG)
        lvl = IHC_LOG_DEBUG;
    if (lvl > IHC_LOG_ERROR)
        lvl = IHC_LOG_ERROR;
    int flags = (o->json ? OPT_JSON : 0) | (o->interrupts ? OPT_INTERRUPTS : 0) |
                (o->timing ? OPT_TIMING : 0);
    atomic_store_explicit(&g_level, lvl, memory_order_relaxed);
    atomic_store_explicit(&g_flags, flags, memory_order_relaxed);
    /* fd 0 is what an initializer that leaves .fd out gives: logging to stdin is never meant */
    atomic_store_explicit(&g_fd, o->fd > 0 ? o->fd : 2, memory_order_relaxed);
}

bool ihc_log_enabled(ihc_log_level lvl)
{
    return (int)lvl >= atomic_load_explicit(&g_level, memory_order_relaxed);
}

bool ihc_log_timing(void)
{
    return (atomic_load_explicit(&g_flags, memory_order_relaxed) & OPT_TIMING) != 0;
}

int ihc_log_level_parse(const char *s)
{
    if (s == NULL)
        return -1;
    if (strcasecmp(s, "debug") == 0)
        return IHC_LOG_DEBUG;
    if (strcasecmp(s, "info") == 0)
        return IHC_LOG_INFO;
    if (strcasecmp(s, "warn") == 0 || strcasecmp(s, "warning") == 0)
        return IHC_LOG_WARN;
    if (strcasecmp(s, "error") == 0)
        return IHC_LOG_ERROR;
    return -1;
}

/* ---- line buffer ---------------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t len;
    size_t lim; /* content limit; the tail after it is reserved for closing the line */
    bool full;  /* something did not fit */
} lbuf;

static bool lb_put(lbuf *b, const char *s, size_t n)
{
    if (b->full || b->len + n > b->lim) {
        b->full = true;
        return false;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return true;
}

static bool lb_str(lbuf *b, const char *s)
{
    return lb_put(b, s, strlen(s));
}

/* Appends past the limit, into the reserved tail (for closing the line). */
static void lb_tail(lbuf *b, const char *s)
{
    size_t n = strlen(s);
    if (b->len + n > LOG_LINE_MAX)
        n = LOG_LINE_MAX - b->len;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* Appends s[0..n) escaped: JSON string escaping when json, else control characters and
 * invalid UTF-8 as \n, \r, \t, \xHH so a line never contains a raw newline. Stops at the
 * limit without splitting an escape or a character. */
static bool lb_esc(lbuf *b, const char *s, size_t n, bool json)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = u[i];
        char tmp[8];
        const char *out = tmp;
        size_t olen, step = 1;
        if (c == '\n') {
            out = "\\n";
            olen = 2;
        } else if (c == '\r') {
            out = "\\r";
            olen = 2;
        } else if (c == '\t') {
            out = "\\t";
            olen = 2;
        } else if (json && c == '"') {
            out = "\\\"";
            olen = 2;
        } else if (json && c == '\\') {
            out = "\\\\";
            olen = 2;
        } else if (c < 0x20 || c == 0x7f) {
            olen = (size_t)snprintf(tmp, sizeof tmp, json ? "\\u%04x" : "\\x%02x", c);
        } else if (c < 0x80) {
            out = (const char *)u + i;
            olen = 1;
        } else {
            size_t l = ihc_utf8_len(u + i, n - i);
            if (l > 0) {
                out = (const char *)u + i;
                olen = step = l;
            } else if (json) {
                out = "\\ufffd";
                olen = 6;
            } else {
                olen = (size_t)snprintf(tmp, sizeof tmp, "\\x%02x", c);
            }
        }
        if (!lb_put(b, out, olen))
            return false;
        i += step;
    }
    return true;
}

/* ---- message splitting (JSON mode) ---------------------------------------------------- */

typedef struct {
    const char *s; /* token start */
    size_t n;      /* token length */
    size_t klen;   /* key length when the token is key=value, else 0 */
} tok;

static bool key_char(char c, bool first)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_')
        return true;
    return !first && ((c >= '0' && c <= '9') || c == '.' || c == '-');
}

/* A key=value token: key of [A-Za-z_][A-Za-z0-9_.-]*, value unquoted (no quote in it) or one
 * complete double-quoted string. Returns the key length, 0 when the token is not a pair. */
static size_t kv_key(const char *s, size_t n)
{
    size_t k = 0;
    while (k < n && key_char(s[k], k == 0))
        k++;
    if (k == 0 || k == n || s[k] != '=')
        return 0;
    const char *v = s + k + 1;
    size_t vn = n - k - 1;
    if (vn > 0 && v[0] == '"') {
        if (vn < 2)
            return 0;
        size_t i = 1;
        while (i < vn && v[i] != '"')
            i += (v[i] == '\\' && i + 1 < vn) ? 2 : 1;
        return (i == vn - 1) ? k : 0;
    }
    return memchr(v, '"', vn) == NULL ? k : 0;
}

/* Next space-separated token of msg[0..n) from *pos; a double quote protects spaces up to
 * its closing quote (backslash escapes inside). Returns false at the end. */
static bool next_tok(const char *msg, size_t n, size_t *pos, tok *t)
{
    size_t i = *pos;
    while (i < n && msg[i] == ' ')
        i++;
    if (i == n)
        return false;
    size_t st = i;
    bool q = false;
    while (i < n && (q || msg[i] != ' ')) {
        if (q && msg[i] == '\\' && i + 1 < n)
            i++;
        else if (msg[i] == '"')
            q = !q;
        i++;
    }
    t->s = msg + st;
    t->n = i - st;
    t->klen = kv_key(t->s, t->n);
    *pos = i;
    return true;
}

/* Appends a quoted value's content unescaped, then JSON-escaped. */
static bool lb_unquote_json(lbuf *b, const char *v, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && v[j] != '\\')
            j++;
        if (!lb_esc(b, v + i, j - i, true))
            return false;
        if (j + 1 >= n)
            break;
        char c = v[j + 1];
        const char *rep = c == 'n' ? "\n" : c == 't' ? "\t" : c == 'r' ? "\r" : NULL;
        if (!(rep ? lb_esc(b, rep, 1, true) : lb_esc(b, &v[j + 1], 1, true)))
            return false;
        i = j + 2;
    }
    return true;
}

static bool reserved_key(const char *k, size_t n)
{
    static const char *const keys[] = {"ts", "level", "component", "msg", "truncated"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (strlen(keys[i]) == n && memcmp(keys[i], k, n) == 0)
            return true;
    return false;
}

/* The message is split into "msg" (words up to the last one that is not key=value) and one
 * string field per trailing key=value pair. A line that does not fit is cut without breaking
 * the JSON: an open string is closed with "…" and "truncated":true is added. */
static void build_json(lbuf *b, const char *ts, const char *lvl, const char *comp, const char *msg,
                       size_t mlen, bool cut)
{
    size_t pos = 0, words_start = mlen, words_end = 0, pairs_at = 0;
    tok t;
    while (next_tok(msg, mlen, &pos, &t)) {
        if (t.klen > 0)
            continue;
        if (words_start == mlen)
            words_start = (size_t)(t.s - msg);
        words_end = pos;
        pairs_at = pos;
    }

    lb_str(b, "{\"ts\":\"");
    lb_str(b, ts);
    lb_str(b, "\",\"level\":\"");
    lb_str(b, lvl);
    lb_str(b, "\",\"component\":\"");
    lb_esc(b, comp, strlen(comp), true);
    lb_str(b, "\",\"msg\":\"");
    bool open = true; /* inside a string that must be closed */
    if (words_end > words_start)
        lb_esc(b, msg + words_start, words_end - words_start, true);
    if (lb_str(b, "\""))
        open = false;
    pos = pairs_at;
    while (!b->full && next_tok(msg, mlen, &pos, &t)) {
        size_t save = b->len;
        const char *v = t.s + t.klen + 1;
        size_t vn = t.n - t.klen - 1;
        bool ok = lb_str(b, ",\"") && (!reserved_key(t.s, t.klen) || lb_str(b, "_")) &&
                  lb_put(b, t.s, t.klen) && lb_str(b, "\":\"");
        if (!ok) {
            b->len = save; /* not even the key fits: drop the pair */
            break;
        }
        open = true;
        if (vn >= 2 && v[0] == '"')
            lb_unquote_json(b, v + 1, vn - 2);
        else
            lb_esc(b, v, vn, true);
        if (lb_str(b, "\""))
            open = false;
    }
    if (open)
        lb_tail(b, LOG_MARK "\"");
    if (b->full || cut)
        lb_tail(b, ",\"truncated\":true");
    lb_tail(b, "}\n");
}

static void build_text(lbuf *b, const char *ts, const char *lvl, const char *comp, const char *msg,
                       size_t mlen, bool cut)
{
    lb_str(b, ts);
    lb_str(b, " ");
    lb_str(b, lvl);
    lb_str(b, " ");
    lb_esc(b, comp, strlen(comp), false);
    lb_str(b, " ");
    lb_esc(b, msg, mlen, false);
    if (b->full || cut)
        lb_tail(b, LOG_MARK);
    lb_tail(b, "\n");
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report a logging failure */
        }
        p += w;
        n -= (size_t)w;
    }
}

__attribute__((format(printf, 3, 0))) static void log_v(ihc_log_level lvl, const char *component,
                                                        const char *fmt, va_list ap)
{
    static const char *const text_names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    static const char *const json_names[] = {"debug", "info", "warn", "error"};
    int saved_errno = errno;
    int flags = atomic_load_explicit(&g_flags, memory_order_relaxed);
    bool json = (flags & OPT_JSON) != 0;
    int li = (int)lvl < IHC_LOG_DEBUG   ? IHC_LOG_DEBUG
             : (int)lvl > IHC_LOG_ERROR ? IHC_LOG_ERROR
                                        : (int)lvl;
    char msg[LOG_LINE_MAX];
    int mn = fmt != NULL ? vsnprintf(msg, sizeof msg, fmt, ap) : 0;
    if (mn < 0)
        mn = 0;
    bool cut = (size_t)mn >= sizeof msg;
    size_t mlen = cut ? sizeof msg - 1 : (size_t)mn;

    struct timespec now;
    struct tm tm;
    char ts[96];
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(now.tv_nsec / 1000000));

    char line[LOG_LINE_MAX];
    lbuf b = {.p = line, .len = 0, .lim = LOG_LINE_MAX - LOG_TAIL, .full = false};
    const char *comp = component ? component : "-";
    if (json)
        build_json(&b, ts, json_names[li], comp, msg, mlen, cut);
    else
        build_text(&b, ts, text_names[li], comp, msg, mlen, cut);
    write_all(atomic_load_explicit(&g_fd, memory_order_relaxed), line, b.len);
    errno = saved_errno;
}

void ihc_log(ihc_log_level lvl, const char *component, const char *fmt, ...)
{
    if (!ihc_log_enabled(lvl))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_v(lvl, component, fmt, ap);
    va_end(ap);
}

bool ihc_log_interrupts(void)
{
    return (atomic_load_explicit(&g_flags, memory_order_relaxed) & OPT_INTERRUPTS) &&
           ihc_log_enabled(IHC_LOG_INFO);
}

void ihc_log_interrupt(const char *component, const char *fmt, ...)
{
    if (!ihc_log_interrupts())
        return;
    va_list ap;
    va_start(ap, fmt);
    log_v(IHC_LOG_INFO, component, fmt, ap);
    va_end(ap);
}

bool ihc_log_limit_due(ihc_log_limit *lim, uint64_t now_ns, uint64_t every_ns, uint64_t *folded)
{
    if (lim->last_ns != 0 && now_ns - lim->last_ns < every_ns) {
        lim->unlogged++;
        return false;
    }
    lim->last_ns = now_ns;
    *folded = lim->unlogged;
    lim->unlogged = 0;
    return true;
}
