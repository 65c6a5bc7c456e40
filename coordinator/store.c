/* The Redis store of common/store.h over hiredis 0.14: the DESIGN.md key layout, reconnect
 * with backoff, pipelining, and small Lua scripts that keep epochs and sequences monotonic. */

/*
 * Connection. st->c is NULL whenever the connection is absent or known dead: a NULL reply,
 * a failed write or a failed setup frees the context at once. A call that finds no context
 * tries one (re)connect if the backoff allows (50 ms doubling to 2 s, reset on success; the
 * first retry after losing a live connection is immediate) and otherwise fails at once with
 * IHC_ENOTCONN. Every connect redoes the command timeout, keepalive, AUTH, SELECT, CLIENT
 * SETNAME and SCRIPT LOAD in one round trip, so a reconnect costs at most the connect timeout
 * plus one command timeout. A setup failure (wrong password, bad db) counts as "not
 * connected" and ihc_store_errstr says why. A timed-out read (hiredis: REDIS_ERR_IO with
 * EAGAIN) gives IHC_ETIMEDOUT; every other connection failure IHC_ENOTCONN.
 *
 * Commands are built as argument vectors and formatted by hiredis (redisFormatCommandArgv),
 * one whole command at a time, into one reusable batch buffer that redisAppendFormattedCommand
 * takes in one piece: an operation made of several commands (session_put: HSET, EXPIRE, SADD)
 * is queued entirely or not at all, and its replies are read in one round trip. Keys and
 * numbers are composed in a reusable scratch buffer, so that building them allocates nothing
 * of ours in the steady state (hiredis allocates one temporary per command it formats).
 *
 * Pipelines. pipeline_begin opens a pipeline: write calls then only queue (IHC_OK) and reads
 * fail with IHC_EINVAL. If the connection is down at begin, begin returns IHC_ENOTCONN and
 * leaves a "dead" pipeline open: write calls return IHC_ENOTCONN without touching the
 * network, exec closes it returning IHC_ENOTCONN, and begin may be called again to retry.
 * exec reads every reply even after error replies and returns the first error, except that
 * a lost connection wins (commands after it may not have run; all writes are idempotent,
 * so the caller repeats the batch).
 *
 * Scripts are loaded by SCRIPT LOAD at connect and called with EVALSHA; a NOSCRIPT answer
 * (SCRIPT FLUSH) falls back to EVAL, which caches the script again. Inside a pipeline a
 * NOSCRIPT can only be seen at exec: it is returned as IHC_EREDIS and the next call uses EVAL.
 *
 * Details the header leaves open: a session's NULL data is stored as "" and read back as NULL;
 * sessions_list returns only hashes whose state is "active" (the set can lag a state written
 * by another tool); session_state with "active" re-adds the id to the set; agent_touch of an
 * expired agent is a no-op (IHC_OK) rather than a hash holding only last_seen_ms; flags_reset
 * is one HSET of empty values (atomic).
 *
 * SIGPIPE: hiredis writes with write(2). Unless the process already ignores SIGPIPE, writes
 * run with SIGPIPE blocked in the calling thread and a SIGPIPE they raise is consumed, so a
 * Redis that vanished mid-write never kills the process.
 */
#include "store.h"

#include "clock.h"
#include "err.h"
#include "log.h"
#include "redis_conn.h"
#include "redis_url.h"

#include <errno.h>
#include <hiredis.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define DEF_TIMEOUT_MS    500u
#define DEF_SESSION_TTL_S 300u
#define DEF_AGENT_TTL_S   10u
#define DEF_LOG_MAX       100000u
#define BACKOFF_MIN_MS    50u
#define BACKOFF_MAX_MS    2000u

enum {
    SCRIPT_RAISE,
    SCRIPT_STATE,
    SCRIPT_TOUCH,
    SCRIPT_LOG,
    SCRIPT_PUT,
    SCRIPT_BATCH,
    SCRIPT_ACQUIRE,
    SCRIPT_RENEW,
    SCRIPT_RESIGN,
    SCRIPT_RESERVE,
    SCRIPT_COUNT
};

/* The bodies of the scripts that a write call may run are written once, as macros, so that
 * the fenced batch script (below) can embed each as a function of (KEYS, ARGV). */

/* Raises KEYS[1] (string key, or hash field ARGV[2]) to ARGV[1]. Values are canonical
 * decimal strings compared by length then bytes, exact for the whole uint64 range. */
#define BODY_RAISE                                                                                 \
    "local cur\n"                                                                                  \
    "if ARGV[2] then cur = redis.call('HGET', KEYS[1], ARGV[2])\n"                                 \
    "else cur = redis.call('GET', KEYS[1]) end\n"                                                  \
    "local v = ARGV[1]\n"                                                                          \
    "if cur and string.match(cur, '^%d+$') and (#cur > #v or (#cur == #v and cur >= v)) then\n"    \
    "  return cur\n"                                                                               \
    "end\n"                                                                                        \
    "if ARGV[2] then redis.call('HSET', KEYS[1], ARGV[2], v)\n"                                    \
    "else redis.call('SET', KEYS[1], v) end\n"                                                     \
    "return v\n"

/* KEYS: session hash, hw set. ARGV: state, updated_ms, session id. The hash is never
 * recreated (it would have no expiry): when HSET added both fields, there was none, and the
 * one it made goes again (one call where an EXISTS first costs two, in the common case of a
 * live session; for a hash already gone it is a write and a delete where it was a read). The
 * set follows the state. */
#define BODY_STATE                                                                                 \
    "local live = redis.call('HSET', KEYS[1], 'state', ARGV[1], 'updated_ms', ARGV[2]) < 2\n"      \
    "if not live then redis.call('DEL', KEYS[1]) end\n"                                            \
    "if live and ARGV[1] == 'active' then redis.call('SADD', KEYS[2], ARGV[3])\n"                  \
    "else redis.call('SREM', KEYS[2], ARGV[3]) end\n"                                              \
    "return 0\n"

/* KEYS: agent hash. ARGV: last_seen_ms, ttl. A touch never creates a partial agent hash
 * (EXPIRE answers 0 for a key that does not exist). */
#define BODY_TOUCH                                                                                 \
    "if redis.call('EXPIRE', KEYS[1], ARGV[2]) == 0 then return 0 end\n"                           \
    "redis.call('HSET', KEYS[1], 'last_seen_ms', ARGV[1])\n"                                       \
    "return 1\n"

/* One interrupt's log entry and its statistics, once per interrupt id: a bit per id (in
 * bitmaps of 2^20 ids that expire after a week) says it was written, so a batch repeated
 * after a timeout (Redis ran it, the answer was lost) adds nothing. KEYS: marker bitmap,
 * ihc:interrupts, ihc:stats. ARGV: bit, success (1/0), then XADD's arguments from MAXLEN. */
#define BODY_LOG                                                                                   \
    "if redis.call('SETBIT', KEYS[1], ARGV[1], 1) == 1 then return 0 end\n"                        \
    "redis.call('EXPIRE', KEYS[1], 604800)\n"                                                      \
    "redis.call('XADD', KEYS[2], unpack(ARGV, 3))\n"                                               \
    "redis.call('HINCRBY', KEYS[3], 'total_interrupts', 1)\n"                                      \
    "redis.call('HINCRBY', KEYS[3], ARGV[2] == '1' and 'successful_interrupts' or "                \
    "'failed_interrupts', 1)\n"                                                                    \
    "return 1\n"

/* A session's hash (with its expiry) and its hardware_id's set. KEYS: session hash, hw set,
 * ihc:stats. ARGV: ttl, new (1/0), active (1/0), then the hash's values in the order of its
 * fields below (the names are written here, not sent: a third fewer arguments). A new session
 * is counted once: when HSET added every field, the hash did not exist (a repeated write finds
 * it); COUNT is the statement that counts it. */
#define BODY_PUT(COUNT)                                                                            \
    "local added = redis.call('HSET', KEYS[1], 'session_id', ARGV[4], 'hardware_id', ARGV[5],\n"   \
    "  'agent_id', ARGV[6], 'state', ARGV[7], 'epoch', ARGV[8], 'created_ms', ARGV[9],\n"          \
    "  'updated_ms', ARGV[10], 'data', ARGV[11])\n"                                                \
    "if ARGV[2] == '1' and added == 8 then " COUNT " end\n"                                        \
    "redis.call('EXPIRE', KEYS[1], ARGV[1])\n"                                                     \
    "redis.call(ARGV[3] == '1' and 'SADD' or 'SREM', KEYS[2], ARGV[4])\n"                          \
    "return 0\n"

static const char script_raise[] = BODY_RAISE;
static const char script_state[] = BODY_STATE;
static const char script_touch[] = BODY_TOUCH;
static const char script_log[] = BODY_LOG;
static const char script_put[] = BODY_PUT("redis.call('HINCRBY', KEYS[3], 'sessions_created', 1)");
/* in the fenced batch, its new sessions are counted with one HINCRBY at its end */
#define BODY_PUT_BATCH BODY_PUT("news = news + 1; stats = KEYS[3]")

/* The fenced batch: every write of a leader's batch in one script that first checks that
 * ihc:term still holds the leader's term (the fencing token), so a leader that was paused
 * or cut off and replaced cannot write over its successor. ARGV: term, then each operation
 * as its argument count and arguments: a Redis command, or "@x", numkeys, keys, args for
 * the embedded script x. Errors of single operations are counted (as a pipeline's would
 * be) and do not stop the batch. Answers {errors, first error}, or the error replies
 * NOTERM (no ihc:term: Redis lost its data; retried once the lease restores it) and
 * FENCED (another term holds the lease). */
static const char script_batch[] =
    "local S = {}\n"
    "S['@r'] = function(KEYS, ARGV)\n" BODY_RAISE "end\n"
    "S['@s'] = function(KEYS, ARGV)\n" BODY_STATE "end\n"
    "S['@t'] = function(KEYS, ARGV)\n" BODY_TOUCH "end\n"
    "S['@l'] = function(KEYS, ARGV)\n" BODY_LOG "end\n"
    "local news, stats = 0, nil\n"
    "S['@p'] = function(KEYS, ARGV)\n" BODY_PUT_BATCH "end\n"
    "local cur = redis.call('GET', 'ihc:term')\n"
    "if not cur then return redis.error_reply('NOTERM ihc:term is missing') end\n"
    "if cur ~= ARGV[1] then return redis.error_reply('FENCED ihc:term is ' .. cur) end\n"
    "local i, n, nerr, first = 2, #ARGV, 0, ''\n"
    /* K and A are reused (cleared past what each operation fills): a table made per
     * operation costs more than the operation (measured: 512 operations went from 46 to
     * a few ms) */
    "local K, A, nK, nA = {}, {}, 0, 0\n"
    "while i <= n do\n"
    "  local c = tonumber(ARGV[i])\n"
    "  local ok, r = true, nil\n"
    "  local f = S[ARGV[i + 1]]\n"
    "  if f then\n"
    "    local nk = tonumber(ARGV[i + 2])\n"
    "    for k = 1, nk do K[k] = ARGV[i + 2 + k] end\n"
    "    for k = nk + 1, nK do K[k] = nil end\n"
    "    local na = c - 2 - nk\n"
    "    for k = 1, na do A[k] = ARGV[i + 2 + nk + k] end\n"
    "    for k = na + 1, nA do A[k] = nil end\n"
    "    nK, nA = nk, na\n"
    "    ok, r = pcall(f, K, A)\n"
    "  else\n"
    "    r = redis.pcall(unpack(ARGV, i + 1, i + c))\n"
    "  end\n"
    "  i = i + c + 1\n"
    "  local e = (not ok) and tostring(r) or (type(r) == 'table' and r.err)\n"
    "  if e then nerr = nerr + 1; if first == '' then first = e end end\n"
    "end\n"
    "if news > 0 then\n"
    "  local r = redis.pcall('HINCRBY', stats, 'sessions_created', news)\n"
    "  if type(r) == 'table' and r.err then nerr = nerr + 1; if first == '' then first = r.err end "
    "end\n"
    "end\n"
    "return {nerr, first}\n";

/* Milliseconds of Redis' clock (TIME), for the standbys' expiry scores. */
#define LUA_NOW_MS                                                                                 \
    "local tm = redis.call('TIME')\n"                                                              \
    "local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)\n"

/* Takes the lease when it is free (or already ours: a leader that lost track of it takes a
 * new term), with a new term above ARGV[3] (terms never go back, even after Redis lost its
 * data), the leader's addresses, and a block of interrupt ids above ARGV[5] - 1. Otherwise
 * records the caller as a standby until 3 TTLs from now. KEYS: ihc:leader, ihc:term,
 * ihc:leader:info, ihc:standbys, ihc:seq. ARGV: id, ttl_ms, min_term, id_block, min_next_id,
 * control, http, pub, report. Answers {1, term, id, standbys, ids_hi} or
 * {0, term, holder, 0, 0, holder's control, holder's http, holder's pub}. */
static const char script_acquire[] = LUA_NOW_MS
    "local holder = redis.call('GET', KEYS[1])\n"
    "if holder == false or holder == ARGV[1] then\n"
    "  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "  local term = redis.call('INCR', KEYS[2])\n"
    "  if term <= tonumber(ARGV[3]) then\n"
    "    term = tonumber(ARGV[3]) + 1\n"
    "    redis.call('SET', KEYS[2], string.format('%.0f', term))\n"
    "  end\n"
    "  redis.call('DEL', KEYS[3])\n"
    "  redis.call('HSET', KEYS[3], 'id', ARGV[1], 'term', string.format('%.0f', term),\n"
    "             'control', ARGV[6], 'http', ARGV[7], 'pub', ARGV[8], 'report', ARGV[9],\n"
    "             'since_ms', string.format('%.0f', now))\n"
    "  redis.call('ZREM', KEYS[4], ARGV[1])\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)\n"
    "  local hi = tonumber(redis.call('HGET', KEYS[5], 'interrupt_id') or '0') or 0\n"
    "  if hi < tonumber(ARGV[5]) - 1 then hi = tonumber(ARGV[5]) - 1 end\n"
    "  hi = hi + tonumber(ARGV[4])\n"
    "  redis.call('HSET', KEYS[5], 'interrupt_id', string.format('%.0f', hi))\n"
    "  return {1, term, ARGV[1], redis.call('ZCARD', KEYS[4]), hi}\n"
    "end\n"
    "redis.call('ZADD', KEYS[4], now + 3 * tonumber(ARGV[2]), ARGV[1])\n"
    "local info = redis.call('HMGET', KEYS[3], 'control', 'http', 'pub')\n"
    "return {0, tonumber(redis.call('GET', KEYS[2]) or '0'), holder, 0, 0, info[1] or '',\n"
    "        info[2] or '', info[3] or ''}\n";

/* Extends the lease of the holder of term ARGV[3]; when the lease is gone and no later term
 * was taken (Redis lost its data, or the lease lapsed with nobody taking it), takes it back
 * with the same term. KEYS: ihc:leader, ihc:term, ihc:standbys, ihc:leader:info. ARGV: id,
 * ttl_ms, term, control, http, pub, report. Answers {1, term, id, standbys} or
 * {0, term, holder}. */
static const char script_renew[] = LUA_NOW_MS
    "local holder = redis.call('GET', KEYS[1])\n"
    "local cur = redis.call('GET', KEYS[2])\n"
    "local mine = holder == ARGV[1] and cur == ARGV[3]\n"
    "local free = holder == false and (cur == false or tonumber(cur) <= tonumber(ARGV[3]))\n"
    "if not mine and not free then\n"
    "  return {0, tonumber(cur or '0'), holder or ''}\n"
    "end\n"
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "if free then\n"
    "  redis.call('SET', KEYS[2], ARGV[3])\n"
    "  redis.call('HSET', KEYS[4], 'id', ARGV[1], 'term', ARGV[3], 'control', ARGV[4],\n"
    "             'http', ARGV[5], 'pub', ARGV[6], 'report', ARGV[7])\n"
    "end\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)\n"
    "return {1, tonumber(ARGV[3]), ARGV[1], redis.call('ZCARD', KEYS[3])}\n";

/* Gives the lease up when it is the caller's. KEYS: ihc:leader. ARGV: id. */
static const char script_resign[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                    "  redis.call('DEL', KEYS[1])\n"
                                    "  return 1\n"
                                    "end\n"
                                    "return 0\n";

/* Reserves the next block of interrupt ids, fenced by the term. KEYS: ihc:term, ihc:seq.
 * ARGV: term, block, min_next_id. Answers the new high-water mark. */
static const char script_reserve[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if not cur then return redis.error_reply('NOTERM ihc:term is missing') end\n"
    "if cur ~= ARGV[1] then return redis.error_reply('FENCED ihc:term is ' .. cur) end\n"
    "local hi = tonumber(redis.call('HGET', KEYS[2], 'interrupt_id') or '0') or 0\n"
    "if hi < tonumber(ARGV[3]) - 1 then hi = tonumber(ARGV[3]) - 1 end\n"
    "hi = hi + tonumber(ARGV[2])\n"
    "redis.call('HSET', KEYS[2], 'interrupt_id', string.format('%.0f', hi))\n"
    "return hi\n";

static const char *const script_body[SCRIPT_COUNT] = {
    script_raise, script_state,   script_touch, script_log,    script_put,
    script_batch, script_acquire, script_renew, script_resign, script_reserve};

/* In a fenced batch, the embedded scripts by name (NULL: not embedded). */
static const char *const script_op[SCRIPT_COUNT] = {"@r", "@s", "@t", "@l", "@p"};

/* The longest command has ARGS_MAX arguments (XADD of an interrupt has 24); longer lists
 * (SREM of many members) are split over several commands. */
#define ARGS_MAX 32

/* One argument of the command being built: len bytes at p, or, when p is NULL, at off in
 * st->scratch (which may move while the command grows). */
typedef struct {
    const char *p;
    size_t off, len;
} cmd_arg;

struct ihc_store {
    /* where and how to connect (from the URL and options) */
    ihc_redis_url url;
    char *client_name;
    char where[300]; /* host:port/db for messages, never the password */
    uint32_t timeout_ms, session_ttl_s, agent_ttl_s, log_max;
    char session_ttl[16], agent_ttl[16], log_max_s[16];

    /* connection */
    redisContext *c;
    uint64_t retry_at_ns;
    uint32_t backoff_ms;
    bool down_logged;
    bool guard_sigpipe;
    char sha[SCRIPT_COUNT][41];
    bool loaded[SCRIPT_COUNT];
    bool noscript; /* the last error reply was NOSCRIPT */

    /* pipeline */
    bool in_pipe, pipe_dead;
    size_t pipe_n;
    /* fenced pipeline: the operations of the batch script, each as its argument count and
     * arguments, every argument stored as a size_t length and its bytes */
    bool fenced;
    char fterm[24];
    char *fbuf;
    size_t flen, fcap, fargs;
    bool foom;

    /* command builder: the command being built in args[], then the batch of whole RESP
     * commands in buf[0..len) */
    cmd_arg args[ARGS_MAX];
    int argc, argc_want; /* arguments given, and expected (0: no command open) */
    char *scratch;       /* keys and numbers of the open command */
    size_t scratch_len, scratch_cap;
    char *buf;
    size_t len, cap;
    size_t ncmd; /* commands in the batch */
    bool oom;
    size_t queued; /* commands queued by the current call outside a pipeline */

    char err[512];
};

/* ---------------------------------------------------------------- errors ---- */

static void set_err(ihc_store *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(ihc_store *st, const char *fmt, ...)
{
    if (st->err[0])
        return; /* keep the first error of a call: it is the cause */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->err, sizeof(st->err), fmt, ap);
    va_end(ap);
}

static void call_start(ihc_store *st)
{
    st->err[0] = '\0';
    st->noscript = false;
    st->queued = 0;
    if (st->cap > (1u << 20)) {
        /* a large listing grew the builder; give the memory back */
        char *p = realloc(st->buf, 4096);
        if (p) {
            st->buf = p;
            st->cap = 4096;
        }
    }
    if (st->scratch_cap > (1u << 20)) {
        free(st->scratch);
        st->scratch = NULL;
        st->scratch_cap = st->scratch_len = 0;
    }
}

/* ------------------------------------------------------------- builder ---- */

/* A command is opened by cmd() with its exact argument count, filled by the arg_*() calls,
 * and formatted onto the batch when the next command opens or the batch is queued. The
 * arguments point at the caller's strings, which must live until then. */

static bool grow(char **p, size_t *cap, size_t need, bool *oom)
{
    if (*oom)
        return false;
    if (need <= *cap)
        return true;
    size_t c = *cap ? *cap : 512;
    while (c < need)
        c *= 2;
    char *np = realloc(*p, c);
    if (!np) {
        *oom = true;
        return false;
    }
    *p = np;
    *cap = c;
    return true;
}

static bool buf_reserve(ihc_store *st, size_t more)
{
    return grow(&st->buf, &st->cap, st->len + more, &st->oom);
}

static void batch_reset(ihc_store *st)
{
    st->len = 0;
    st->ncmd = 0;
    st->argc_want = 0;
    st->oom = false;
}

/* Appends one operation (a command, or "@x" and an embedded script's keys and arguments)
 * to the fenced batch. */
static void fenced_arg(ihc_store *st, const char *p, size_t n)
{
    if (!grow(&st->fbuf, &st->fcap, st->flen + sizeof(size_t) + n, &st->foom))
        return;
    memcpy(st->fbuf + st->flen, &n, sizeof(size_t));
    memcpy(st->fbuf + st->flen + sizeof(size_t), p, n);
    st->flen += sizeof(size_t) + n;
    st->fargs++;
}

static void fenced_add(ihc_store *st, int argc, const char *const *v, const size_t *l)
{
    char num[16];
    int n = snprintf(num, sizeof(num), "%d", argc);
    fenced_arg(st, num, (size_t)n);
    for (int i = 0; i < argc; i++)
        fenced_arg(st, v[i], l[i]);
}

/* Formats the open command, if any, onto the end of the batch. */
static void cmd_close(ihc_store *st)
{
    if (st->argc_want == 0)
        return;
    IHC_ASSERT(st->argc == st->argc_want);
    st->argc_want = 0;
    if (st->oom)
        return;
    const char *v[ARGS_MAX];
    size_t l[ARGS_MAX];
    for (int i = 0; i < st->argc; i++) {
        v[i] = st->args[i].p ? st->args[i].p : st->scratch + st->args[i].off;
        l[i] = st->args[i].len;
    }
    if (st->in_pipe && st->fenced) {
        fenced_add(st, st->argc, v, l);
        return;
    }
    char *resp = NULL;
    int n = redisFormatCommandArgv(&resp, st->argc, v, l);
    if (n < 0) {
        st->oom = true;
        return;
    }
    if (buf_reserve(st, (size_t)n)) {
        memcpy(st->buf + st->len, resp, (size_t)n);
        st->len += (size_t)n;
    }
    redisFreeCommand(resp);
}

/* Opens a command of exactly argc arguments in the batch. */
static void cmd(ihc_store *st, int argc)
{
    cmd_close(st);
    IHC_ASSERT(argc > 0 && argc <= ARGS_MAX);
    st->argc = 0;
    st->argc_want = argc;
    st->scratch_len = 0;
    st->ncmd++;
}

static void arg_bin(ihc_store *st, const void *p, size_t n)
{
    IHC_ASSERT(st->argc < st->argc_want);
    st->args[st->argc++] = (cmd_arg){.p = p ? p : "", .len = n};
}

static void arg(ihc_store *st, const char *s)
{
    arg_bin(st, s ? s : "", s ? strlen(s) : 0);
}

/* One argument made of the concatenation of n byte strings, composed in the scratch (keys
 * are built this way). */
static void arg_parts(ihc_store *st, size_t n, const char *const *p, const size_t *l)
{
    IHC_ASSERT(st->argc < st->argc_want);
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += l[i];
    cmd_arg a = {.p = "", .len = 0}; /* out of memory: st->oom fails the batch */
    if (grow(&st->scratch, &st->scratch_cap, st->scratch_len + total, &st->oom)) {
        a = (cmd_arg){.p = NULL, .off = st->scratch_len, .len = total};
        for (size_t i = 0; i < n; i++) {
            memcpy(st->scratch + st->scratch_len, p[i], l[i]);
            st->scratch_len += l[i];
        }
    }
    st->args[st->argc++] = a;
}

/* Writes the decimal digits of v backwards, ending at end; returns where they start. */
static char *u64_digits(char *end, uint64_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

static void arg_u64(ihc_store *st, uint64_t v)
{
    char num[24];
    const char *p = u64_digits(num + sizeof(num), v);
    size_t n = (size_t)(num + sizeof(num) - p);
    arg_parts(st, 1, &p, &n);
}

static void arg_i64(ihc_store *st, int64_t v)
{
    char num[24];
    char *p = u64_digits(num + sizeof(num), v < 0 ? 0 - (uint64_t)v : (uint64_t)v);
    if (v < 0)
        *--p = '-';
    const char *cp = p;
    size_t n = (size_t)(num + sizeof(num) - p);
    arg_parts(st, 1, &cp, &n);
}

/* a + b (+ c (+ d)): "ihc:session:{" hw "}:" sid */
static void arg_key(ihc_store *st, const char *a, const char *b, const char *c, const char *d)
{
    const char *p[4] = {a, b, c, d};
    size_t l[4];
    size_t n = d ? 4 : c ? 3 : 2;
    for (size_t i = 0; i < n; i++)
        l[i] = strlen(p[i]);
    arg_parts(st, n, p, l);
}

/* Hands the batch to hiredis (no I/O yet). On failure nothing was queued. */
static int batch_queue(ihc_store *st)
{
    cmd_close(st);
    if (st->oom || (st->fenced && st->foom)) {
        set_err(st, "out of memory formatting a redis command");
        return IHC_ENOMEM;
    }
    if (st->in_pipe && st->fenced)
        return IHC_OK; /* held in fbuf until exec */
    if (redisAppendFormattedCommand(st->c, st->buf, st->len) != REDIS_OK) {
        set_err(st, "out of memory queueing a redis command");
        return IHC_ENOMEM;
    }
    if (st->in_pipe)
        st->pipe_n += st->ncmd;
    else
        st->queued += st->ncmd;
    return IHC_OK;
}

/* ---------------------------------------------------------- connection ---- */

static void st_drop(ihc_store *st)
{
    if (st->c) {
        redisFree(st->c);
        st->c = NULL;
    }
    st->queued = 0;
    for (int i = 0; i < SCRIPT_COUNT; i++)
        st->loaded[i] = false;
}

static bool is_timeout(const redisContext *c, int saved_errno)
{
    if (c->err != REDIS_ERR_IO)
        return false;
    return saved_errno == EAGAIN || saved_errno == EWOULDBLOCK || saved_errno == ETIMEDOUT ||
           strstr(c->errstr, "temporarily unavailable") || strstr(c->errstr, "timed out");
}

/* The context failed (NULL reply or failed write): it is dead. */
static int st_lost(ihc_store *st, int saved_errno)
{
    int rc = is_timeout(st->c, saved_errno) ? IHC_ETIMEDOUT : IHC_ENOTCONN;
    set_err(st, "redis %s: %s", st->where,
            rc == IHC_ETIMEDOUT ? "command timed out" : st->c->errstr);
    if (!st->down_logged)
        ihc_log(IHC_LOG_WARN, "store", "redis connection lost where=%s err=\"%s\"", st->where,
                st->err);
    st->down_logged = true;
    st_drop(st);
    st->retry_at_ns = ihc_mono_ns(); /* one immediate retry, then backoff */
    return rc;
}

typedef struct {
    bool active, was_pending;
    sigset_t old;
} pipe_guard;

static void guard_on(const ihc_store *st, pipe_guard *g)
{
    g->active = st->guard_sigpipe;
    if (!g->active)
        return;
    sigset_t s, pend;
    sigemptyset(&s);
    sigaddset(&s, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &s, &g->old);
    sigpending(&pend);
    g->was_pending = sigismember(&pend, SIGPIPE) == 1;
}

static void guard_off(pipe_guard *g, bool failed)
{
    if (!g->active)
        return;
    if (failed && !g->was_pending) {
        sigset_t s, pend;
        sigemptyset(&s);
        sigaddset(&s, SIGPIPE);
        sigpending(&pend);
        if (sigismember(&pend, SIGPIPE) == 1) {
            struct timespec zero = {0, 0};
            while (sigtimedwait(&s, NULL, &zero) < 0 && errno == EINTR)
                ;
        }
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* Writes everything queued; replies are read with st_get. */
static int st_flush(ihc_store *st)
{
    pipe_guard g;
    guard_on(st, &g);
    int done = 0, failed = 0, saved = 0;
    do {
        if (redisBufferWrite(st->c, &done) != REDIS_OK) {
            saved = errno;
            failed = 1;
            break;
        }
    } while (!done);
    guard_off(&g, failed);
    return failed ? st_lost(st, saved) : IHC_OK;
}

/* Reads the next reply. IHC_OK: *out is a non-error reply the caller frees. IHC_EREDIS: an
 * error reply (text in st->err, reply freed); more replies may follow. IHC_ENOTCONN or
 * IHC_ETIMEDOUT: the connection is gone and nothing more can be read. */
static int st_get(ihc_store *st, redisReply **out)
{
    *out = NULL;
    void *r = NULL;
    if (redisGetReply(st->c, &r) != REDIS_OK || !r) {
        int saved = errno;
        if (r)
            freeReplyObject(r);
        return st_lost(st, saved);
    }
    if (st->queued)
        st->queued--;
    redisReply *rep = r;
    if (rep->type == REDIS_REPLY_ERROR) {
        if (rep->len >= 8 && memcmp(rep->str, "NOSCRIPT", 8) == 0) {
            st->noscript = true;
            for (int k = 0; k < SCRIPT_COUNT; k++)
                st->loaded[k] = false;
        }
        set_err(st, "%.*s", (int)rep->len, rep->str);
        freeReplyObject(rep);
        return IHC_EREDIS;
    }
    *out = rep;
    return IHC_OK;
}

/* Reads n replies, discarding them; the first error wins, a lost connection over all. */
static int st_drain(ihc_store *st, size_t n)
{
    int first = IHC_OK;
    for (size_t i = 0; i < n; i++) {
        redisReply *rep;
        int rc = st_get(st, &rep);
        if (rep)
            freeReplyObject(rep);
        if (rc == IHC_EREDIS) {
            if (first == IHC_OK)
                first = rc;
        } else if (rc != IHC_OK) {
            return rc;
        }
    }
    return first;
}

static struct timeval ms_tv(uint32_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

static int connect_fail(ihc_store *st, int rc)
{
    if (!st->down_logged)
        ihc_log(IHC_LOG_WARN, "store", "redis unavailable where=%s err=\"%s\"", st->where, st->err);
    st->down_logged = true;
    st_drop(st);
    return rc;
}

/* One connection attempt with the whole setup in one round trip. */
static int st_connect(ihc_store *st)
{
    struct timeval tv = ms_tv(st->timeout_ms);
    redisContext *c = NULL;
    char why[512];
    /* direct or through the sentinels, resolved again on every reconnect */
    int crc = ihc_redis_connect(&st->url, tv, &c, why, sizeof(why));
    if (crc == IHC_ENOMEM) {
        set_err(st, "redis %s: out of memory", st->where);
        return IHC_ENOMEM;
    }
    if (crc != IHC_OK) {
        set_err(st, "redis connect %s: %s", st->where, why);
        return connect_fail(st, crc);
    }
    st->c = c;
    if (redisSetTimeout(c, tv) != REDIS_OK ||
        (!st->url.path && redisEnableKeepAlive(c) != REDIS_OK)) {
        set_err(st, "redis %s: socket options: %s", st->where, c->errstr);
        return connect_fail(st, IHC_ENOTCONN);
    }
    batch_reset(st);
    size_t nsetup = 0;
    const char *what[3];
    if (st->url.password) {
        cmd(st, st->url.user ? 3 : 2);
        arg(st, "AUTH");
        if (st->url.user)
            arg(st, st->url.user);
        arg(st, st->url.password);
        what[nsetup++] = "AUTH";
    }
    if (st->url.db != 0) {
        cmd(st, 2);
        arg(st, "SELECT");
        arg_i64(st, st->url.db);
        what[nsetup++] = "SELECT";
    }
    if (st->client_name) {
        cmd(st, 3);
        arg(st, "CLIENT");
        arg(st, "SETNAME");
        arg(st, st->client_name);
        what[nsetup++] = "CLIENT SETNAME";
    }
    for (int i = 0; i < SCRIPT_COUNT; i++) {
        cmd(st, 3);
        arg(st, "SCRIPT");
        arg(st, "LOAD");
        arg(st, script_body[i]);
    }
    int rc = batch_queue(st);
    if (rc != IHC_OK)
        return connect_fail(st, rc);
    if ((rc = st_flush(st)) != IHC_OK)
        return connect_fail(st, rc);
    int setup_rc = IHC_OK;
    for (size_t i = 0; i < nsetup + SCRIPT_COUNT; i++) {
        redisReply *rep;
        char prev[sizeof(st->err)];
        memcpy(prev, st->err, sizeof(prev));
        rc = st_get(st, &rep);
        if (rc != IHC_OK && rc != IHC_EREDIS)
            return connect_fail(st, rc);
        if (i < nsetup) {
            if (rc == IHC_EREDIS && setup_rc == IHC_OK) {
                char msg[sizeof(st->err)];
                memcpy(msg, st->err, sizeof(msg));
                st->err[0] = '\0';
                set_err(st, "redis %s: %s: %s%s", st->where, what[i], msg,
                        strcmp(what[i], "AUTH") == 0 ? " (check the user and password in the URL)"
                                                     : "");
                setup_rc = IHC_ENOTCONN;
            }
        } else if (rc == IHC_OK && rep->type == REDIS_REPLY_STRING && rep->len == 40) {
            int k = (int)(i - nsetup);
            memcpy(st->sha[k], rep->str, 40);
            st->sha[k][40] = '\0';
            st->loaded[k] = true;
        } else if (rc == IHC_EREDIS) {
            /* Scripting refused (ACL?): calls use EVAL and report its error then. */
            memcpy(st->err, prev, sizeof(prev));
        }
        if (rep)
            freeReplyObject(rep);
    }
    batch_reset(st); /* the caller's command is built after this */
    if (setup_rc != IHC_OK)
        return connect_fail(st, setup_rc);
    st->queued = 0;
    if (st->down_logged)
        ihc_log(IHC_LOG_INFO, "store", "redis connected where=%s", st->where);
    st->down_logged = false;
    return IHC_OK;
}

/* Makes sure there is a connection, trying one (re)connect when the backoff allows. */
static int st_ready(ihc_store *st)
{
    if (st->c)
        return IHC_OK;
    uint64_t now = ihc_mono_ns();
    if (now < st->retry_at_ns) {
        set_err(st, "redis %s: not connected (next attempt in %llu ms)", st->where,
                (unsigned long long)((st->retry_at_ns - now) / 1000000u + 1));
        return IHC_ENOTCONN;
    }
    int rc = st_connect(st);
    if (rc != IHC_OK) {
        st->retry_at_ns = ihc_mono_ns() + (uint64_t)st->backoff_ms * 1000000u;
        st->backoff_ms = st->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : st->backoff_ms * 2;
        return rc;
    }
    st->backoff_ms = BACKOFF_MIN_MS;
    return IHC_OK;
}

/* Starts a write call; the caller then builds its commands into a fresh batch. */
static int w_begin(ihc_store *st)
{
    call_start(st);
    batch_reset(st);
    if (st->in_pipe) {
        if (st->pipe_dead) {
            set_err(st, "redis %s: not connected (pipeline opened without a connection)",
                    st->where);
            return IHC_ENOTCONN;
        }
        return IHC_OK;
    }
    return st_ready(st);
}

/* Queues the batch and, outside a pipeline, runs it in one round trip. */
static int w_end(ihc_store *st)
{
    int rc = batch_queue(st);
    if (rc != IHC_OK || st->in_pipe)
        return rc;
    size_t n = st->queued;
    if ((rc = st_flush(st)) != IHC_OK)
        return rc;
    return st_drain(st, n);
}

/* Starts a read call. */
static int r_begin(ihc_store *st)
{
    call_start(st);
    batch_reset(st);
    if (st->in_pipe) {
        set_err(st, "reads are not allowed inside a pipeline");
        return IHC_EINVAL;
    }
    return st_ready(st);
}

/* Sends the batch (one command) and reads its reply. */
static int roundtrip(ihc_store *st, redisReply **out)
{
    *out = NULL;
    int rc = batch_queue(st);
    if (rc != IHC_OK)
        return rc; /* nothing was queued */
    if ((rc = st_flush(st)) != IHC_OK)
        return rc;
    return st_get(st, out);
}

/* ------------------------------------------------------------- scripts ---- */

/* Starts a fresh batch with "EVALSHA sha" or "EVAL body" followed by nrest arguments
 * (numkeys, keys, args) that the caller adds. */
static void script_head(ihc_store *st, int which, int nrest)
{
    batch_reset(st);
    if (st->in_pipe && st->fenced && script_op[which]) {
        cmd(st, 1 + nrest);
        arg(st, script_op[which]);
        return;
    }
    cmd(st, 2 + nrest);
    if (st->loaded[which]) {
        arg(st, "EVALSHA");
        arg(st, st->sha[which]);
    } else {
        arg(st, "EVAL");
        arg(st, script_body[which]);
        if (st->sha[which][0])
            st->loaded[which] = true; /* EVAL caches it under its sha */
    }
}

/* Queues (pipeline) or runs the script command built after script_head. Outside a pipeline
 * a NOSCRIPT answer is retried once with EVAL. */
static int script_run(ihc_store *st, int which)
{
    if (st->in_pipe)
        return batch_queue(st);
    redisReply *rep;
    int rc = roundtrip(st, &rep);
    if (rc == IHC_EREDIS && st->noscript) {
        /* The command's arguments are still in args[] and the scratch: open it again with
         * EVAL in place of EVALSHA (EVAL caches the script again). */
        batch_reset(st);
        st->ncmd = 1;
        st->argc_want = st->argc;
        st->args[0] = (cmd_arg){.p = "EVAL", .len = 4};
        st->args[1] = (cmd_arg){.p = script_body[which], .len = strlen(script_body[which])};
        st->loaded[which] = st->sha[which][0] != '\0';
        st->err[0] = '\0';
        st->noscript = false;
        rc = roundtrip(st, &rep);
    }
    if (rep)
        freeReplyObject(rep);
    return rc;
}

/* ------------------------------------------------------------ lifetime ---- */

static bool valid_client_name(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 127)
            return false; /* CLIENT SETNAME refuses spaces and special characters */
    return true;
}

int ihc_store_open(ihc_store **out, const ihc_store_opts *o)
{
    if (!out || !o)
        return IHC_EINVAL;
    *out = NULL;
    if (o->client_name && !valid_client_name(o->client_name)) {
        ihc_log(IHC_LOG_ERROR, "store",
                "bad redis client name reason=\"empty, or has spaces or control characters\"");
        return IHC_EINVAL;
    }
    ihc_store *st = calloc(1, sizeof(*st));
    if (!st)
        return IHC_ENOMEM;
    char why[256];
    int rc = ihc_redis_url_parse(o->url, &st->url, why, sizeof(why));
    if (rc != IHC_OK) {
        if (rc == IHC_EINVAL) /* the reason only: the URL may hold a password */
            ihc_log(IHC_LOG_ERROR, "store", "bad redis url reason=\"%s\"", why);
        ihc_store_close(st);
        return rc;
    }
    ihc_redis_url_where(&st->url, st->where, sizeof(st->where));
    if (o->client_name && !(st->client_name = strdup(o->client_name))) {
        ihc_store_close(st);
        return IHC_ENOMEM;
    }
    st->timeout_ms = o->timeout_ms ? o->timeout_ms : DEF_TIMEOUT_MS;
    st->session_ttl_s = o->session_ttl_s ? o->session_ttl_s : DEF_SESSION_TTL_S;
    st->agent_ttl_s = o->agent_ttl_s ? o->agent_ttl_s : DEF_AGENT_TTL_S;
    st->log_max = o->log_max ? o->log_max : DEF_LOG_MAX;
    snprintf(st->session_ttl, sizeof(st->session_ttl), "%u", st->session_ttl_s);
    snprintf(st->agent_ttl, sizeof(st->agent_ttl), "%u", st->agent_ttl_s);
    snprintf(st->log_max_s, sizeof(st->log_max_s), "%u", st->log_max);
    st->backoff_ms = BACKOFF_MIN_MS;
    struct sigaction sa;
    st->guard_sigpipe = !(sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN);
    if (!buf_reserve(st, 4096)) {
        ihc_store_close(st);
        return IHC_ENOMEM;
    }
    call_start(st);
    rc = st_ready(st);
    if (rc == IHC_ENOMEM) {
        ihc_store_close(st);
        return rc;
    }
    *out = st; /* a Redis that is down now is retried by later calls */
    return IHC_OK;
}

void ihc_store_close(ihc_store *st)
{
    if (!st)
        return;
    if (st->c)
        redisFree(st->c);
    ihc_redis_url_fini(&st->url); /* wipes the password */
    free(st->client_name);
    free(st->buf);
    free(st->scratch);
    free(st->fbuf);
    free(st);
}

bool ihc_store_connected(const ihc_store *st)
{
    return st && st->c != NULL;
}

const char *ihc_store_errstr(const ihc_store *st)
{
    return st ? st->err : "";
}

int ihc_store_ping(ihc_store *st)
{
    if (!st)
        return IHC_EINVAL;
    int rc = r_begin(st);
    if (rc != IHC_OK)
        return rc;
    cmd(st, 1);
    arg(st, "PING");
    redisReply *rep;
    rc = roundtrip(st, &rep);
    if (rep)
        freeReplyObject(rep);
    return rc;
}

int ihc_store_pipeline_begin(ihc_store *st)
{
    if (!st)
        return IHC_EINVAL;
    call_start(st);
    if (st->in_pipe && !st->pipe_dead) {
        set_err(st, "a pipeline is already open");
        return IHC_EINVAL;
    }
    st->in_pipe = false;
    st->pipe_n = 0;
    int rc = st_ready(st);
    st->in_pipe = true;
    st->pipe_dead = rc != IHC_OK;
    if (rc != IHC_OK)
        return rc == IHC_ENOMEM ? rc : IHC_ENOTCONN;
    return IHC_OK;
}

int ihc_store_pipeline_begin_fenced(ihc_store *st, uint64_t term)
{
    if (!st || term == 0)
        return IHC_EINVAL;
    st->fenced = false;
    int rc = ihc_store_pipeline_begin(st);
    if (rc == IHC_EINVAL)
        return rc;
    st->fenced = true;
    snprintf(st->fterm, sizeof(st->fterm), "%" PRIu64, term);
    st->flen = st->fargs = 0;
    st->foom = false;
    return rc;
}

/* Sends the fenced batch as one script call (EVAL when the script is not cached) and reads
 * its answer. */
static int fenced_exec(ihc_store *st)
{
    if (st->foom) {
        set_err(st, "out of memory building a fenced batch");
        return IHC_ENOMEM;
    }
    if (st->fargs == 0)
        return IHC_OK;
    size_t argc = st->fargs + 4;
    const char **v = malloc(argc * sizeof(*v));
    size_t *l = malloc(argc * sizeof(*l));
    if (!v || !l) {
        free(v);
        free(l);
        set_err(st, "out of memory building a fenced batch");
        return IHC_ENOMEM;
    }
    v[2] = "0";
    l[2] = 1;
    v[3] = st->fterm;
    l[3] = strlen(st->fterm);
    size_t k = 4;
    for (size_t off = 0; off < st->flen; k++) {
        memcpy(&l[k], st->fbuf + off, sizeof(size_t));
        v[k] = st->fbuf + off + sizeof(size_t);
        off += sizeof(size_t) + l[k];
    }
    int rc = IHC_OK;
    redisReply *rep = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        bool sha = st->loaded[SCRIPT_BATCH] && attempt == 0;
        v[0] = sha ? "EVALSHA" : "EVAL";
        v[1] = sha ? st->sha[SCRIPT_BATCH] : script_batch;
        l[0] = strlen(v[0]);
        l[1] = strlen(v[1]);
        if (redisAppendCommandArgv(st->c, (int)argc, v, l) != REDIS_OK) {
            set_err(st, "out of memory queueing a redis command");
            rc = IHC_ENOMEM;
            break;
        }
        if ((rc = st_flush(st)) != IHC_OK)
            break;
        rc = st_get(st, &rep);
        if (rc == IHC_EREDIS && st->noscript && attempt == 0) {
            st->err[0] = '\0';
            st->noscript = false;
            continue;
        }
        break;
    }
    if (!st->loaded[SCRIPT_BATCH] && st->sha[SCRIPT_BATCH][0] && st->c)
        st->loaded[SCRIPT_BATCH] = true; /* EVAL cached it */
    free(v);
    free(l);
    if (rc == IHC_EREDIS && strncmp(st->err, "FENCED", 6) == 0)
        return IHC_ENOTLEADER;
    if (rc == IHC_EREDIS && strncmp(st->err, "NOTERM", 6) == 0)
        return IHC_ENOENT;
    if (rc != IHC_OK)
        return rc;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[0]->type == REDIS_REPLY_INTEGER && rep->element[0]->integer > 0) {
        const redisReply *e = rep->element[1];
        set_err(st, "%lld operations refused, first: %.*s", rep->element[0]->integer,
                e->type == REDIS_REPLY_STRING ? (int)e->len : 0,
                e->type == REDIS_REPLY_STRING ? e->str : "");
        rc = IHC_EREDIS;
    }
    freeReplyObject(rep);
    return rc;
}

int ihc_store_pipeline_exec(ihc_store *st)
{
    if (!st)
        return IHC_EINVAL;
    call_start(st);
    if (!st->in_pipe) {
        set_err(st, "no pipeline is open");
        return IHC_EINVAL;
    }
    size_t n = st->pipe_n;
    bool dead = st->pipe_dead, fenced = st->fenced;
    st->in_pipe = st->pipe_dead = st->fenced = false;
    st->pipe_n = 0;
    if (dead) {
        set_err(st, "redis %s: not connected (pipeline opened without a connection)", st->where);
        return IHC_ENOTCONN;
    }
    if (fenced) {
        if (!st->c) {
            set_err(st, "redis %s: not connected", st->where);
            return IHC_ENOTCONN;
        }
        return fenced_exec(st);
    }
    if (n == 0)
        return IHC_OK;
    if (!st->c) { /* cannot happen: nothing does I/O inside a live pipeline */
        set_err(st, "redis %s: not connected", st->where);
        return IHC_ENOTCONN;
    }
    int rc = st_flush(st);
    if (rc != IHC_OK)
        return rc;
    return st_drain(st, n);
}

/* ------------------------------------------------------------ helpers ---- */

static bool nonempty(const char *s)
{
    return s && *s;
}

static char *dup_bin(const char *p, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

static bool to_u64(const char *s, size_t len, uint64_t *out)
{
    if (len == 0 || len > 20)
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return false;
        x = x * 10 + d;
    }
    *out = x;
    return true;
}

static bool to_i64(const char *s, size_t len, int64_t *out)
{
    char num[24];
    if (len == 0 || len >= sizeof(num))
        return false;
    memcpy(num, s, len);
    num[len] = '\0';
    char *end;
    errno = 0;
    long long x = strtoll(num, &end, 10);
    if (*end || errno)
        return false;
    *out = x;
    return true;
}

/* A field value written by us; anything unparsable reads as 0. */
static int64_t field_i64(const redisReply *v)
{
    int64_t x = 0;
    if (v && v->type == REDIS_REPLY_STRING && !to_i64(v->str, v->len, &x))
        x = 0;
    return x;
}

static bool field_is(const redisReply *f, const char *name)
{
    size_t n = strlen(name);
    return f->type == REDIS_REPLY_STRING && f->len == n && memcmp(f->str, name, n) == 0;
}

/* A GET/HGET reply holding a uint64 (nil gives 0). */
static int reply_u64(ihc_store *st, const redisReply *rep, uint64_t *v)
{
    *v = 0;
    if (rep->type == REDIS_REPLY_NIL)
        return IHC_OK;
    if (rep->type == REDIS_REPLY_STRING && to_u64(rep->str, rep->len, v))
        return IHC_OK;
    if (rep->type == REDIS_REPLY_INTEGER && rep->integer >= 0) {
        *v = (uint64_t)rep->integer;
        return IHC_OK;
    }
    set_err(st, "stored value is not an unsigned integer");
    return IHC_EREDIS;
}

/* Growable array of records. */
typedef struct {
    void *v;
    size_t n, cap, size;
} vec;

static void *vec_push(vec *a)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 8;
        void *p = realloc(a->v, cap * a->size);
        if (!p)
            return NULL;
        a->v = p;
        a->cap = cap;
    }
    void *slot = (char *)a->v + a->n * a->size;
    memset(slot, 0, a->size);
    a->n++;
    return slot;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_strs(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

/* SCAN MATCH pattern; collects the part of each key between prefix and suffix, sorted and
 * without duplicates (SCAN may return a key twice). Caller frees with free_strs. */
static int scan_names(ihc_store *st, const char *pattern, const char *prefix, const char *suffix,
                      char ***names, size_t *count)
{
    vec a = {.size = sizeof(char *)};
    char cursor[24] = "0";
    size_t pl = strlen(prefix), sl = strlen(suffix);
    int rc;
    do {
        batch_reset(st);
        cmd(st, 6);
        arg(st, "SCAN");
        arg(st, cursor);
        arg(st, "MATCH");
        arg(st, pattern);
        arg(st, "COUNT");
        arg(st, "1000");
        redisReply *rep;
        if ((rc = roundtrip(st, &rep)) != IHC_OK)
            goto fail;
        if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
            rep->element[0]->type != REDIS_REPLY_STRING || rep->element[0]->len >= 24 ||
            rep->element[1]->type != REDIS_REPLY_ARRAY) {
            set_err(st, "SCAN: unexpected reply");
            freeReplyObject(rep);
            rc = IHC_EREDIS;
            goto fail;
        }
        memcpy(cursor, rep->element[0]->str, rep->element[0]->len);
        cursor[rep->element[0]->len] = '\0';
        const redisReply *keys = rep->element[1];
        for (size_t i = 0; i < keys->elements; i++) {
            const redisReply *k = keys->element[i];
            if (k->type != REDIS_REPLY_STRING || k->len <= pl + sl ||
                memcmp(k->str, prefix, pl) != 0 || memcmp(k->str + k->len - sl, suffix, sl) != 0 ||
                memchr(k->str, '\0', k->len))
                continue;
            char *name = dup_bin(k->str + pl, k->len - pl - sl);
            char **slot = name ? vec_push(&a) : NULL;
            if (!slot) {
                free(name);
                freeReplyObject(rep);
                rc = IHC_ENOMEM;
                goto fail;
            }
            *slot = name;
        }
        freeReplyObject(rep);
    } while (strcmp(cursor, "0") != 0);
    char **v = a.v;
    if (a.n > 1) {
        qsort(v, a.n, sizeof(char *), cmp_str);
        size_t j = 1;
        for (size_t i = 1; i < a.n; i++) {
            if (strcmp(v[i], v[j - 1]) == 0)
                free(v[i]);
            else
                v[j++] = v[i];
        }
        a.n = j;
    }
    *names = v;
    *count = a.n;
    return IHC_OK;
fail:
    free_strs(a.v, a.n);
    return rc;
}

/* Index sets whose members name hashes (a hardware_id's sessions, the agents), read LIST_CHUNK
 * sets at a time in three round trips: SMEMBERS of each set, HGETALL of every member, one
 * SREM per set of the members whose hash is gone (expired). Reading set after set took two
 * round trips per set: 17 s for 100,000 hardware_ids with a session each, measured, which a
 * coordinator starting or taking over spent before it could lead. */
typedef struct {
    void (*set_key)(ihc_store *st, const char *ctx);
    void (*member_key)(ihc_store *st, const char *ctx, const redisReply *member);
    /* Stores one record: 1 stored, 0 skipped, -1 out of memory. */
    int (*fill)(vec *out, const char *ctx, const redisReply *member, const redisReply *hash);
} index_ops;

#define LIST_CHUNK 256

/* SREM of the members of sets[0..k) marked in gone (in the order the HGETALLs went), ARGS_MAX -
 * 2 per command, in one round trip. */
static int forget_gone(ihc_store *st, const index_ops *ops, const char *const *ctxs,
                       redisReply *const *sets, size_t k, const bool *gone)
{
    batch_reset(st);
    size_t g = 0, ncmd = 0;
    for (size_t c = 0; c < k; c++) {
        size_t room = 0, left = 0;
        for (size_t i = 0; sets[c] && i < sets[c]->elements; i++)
            left += gone[g + i];
        for (size_t i = 0; sets[c] && i < sets[c]->elements; i++, g++) {
            if (!gone[g])
                continue;
            if (room == 0) {
                room = left < ARGS_MAX - 2 ? left : ARGS_MAX - 2;
                left -= room;
                cmd(st, 2 + (int)room);
                arg(st, "SREM");
                ops->set_key(st, ctxs[c]);
                ncmd++;
            }
            arg_bin(st, sets[c]->element[i]->str, sets[c]->element[i]->len);
            room--;
        }
    }
    int rc = batch_queue(st);
    if (rc == IHC_OK)
        rc = st_flush(st);
    if (rc == IHC_OK)
        rc = st_drain(st, ncmd);
    return rc;
}

/* The HGETALL of every member of sets[0..k), one round trip; marks in gone the members whose
 * hash no longer exists. Every reply is read even after an error; the first error is returned,
 * a lost connection over all. */
static int read_members(ihc_store *st, const index_ops *ops, const char *const *ctxs,
                        redisReply *const *sets, size_t k, vec *out, bool *gone, size_t *ngone)
{
    batch_reset(st);
    for (size_t c = 0; c < k; c++)
        for (size_t i = 0; sets[c] && i < sets[c]->elements; i++) {
            cmd(st, 2);
            arg(st, "HGETALL");
            ops->member_key(st, ctxs[c], sets[c]->element[i]);
        }
    int rc = batch_queue(st);
    if (rc != IHC_OK || (rc = st_flush(st)) != IHC_OK)
        return rc;
    int first = IHC_OK;
    size_t g = 0;
    for (size_t c = 0; c < k; c++)
        for (size_t i = 0; sets[c] && i < sets[c]->elements; i++, g++) {
            redisReply *h;
            int r = st_get(st, &h);
            if (r != IHC_OK && r != IHC_EREDIS)
                return r; /* connection gone: nothing more to read */
            if (r == IHC_EREDIS) {
                first = first ? first : r;
                continue;
            }
            if (h->type == REDIS_REPLY_ARRAY && h->elements == 0) {
                gone[g] = true;
                (*ngone)++;
            } else if (h->type == REDIS_REPLY_ARRAY && first == IHC_OK &&
                       ops->fill(out, ctxs[c], sets[c]->element[i], h) < 0) {
                first = IHC_ENOMEM; /* keep reading: the replies must be drained */
            }
            freeReplyObject(h);
        }
    return first;
}

/* Sets ctxs[0..k), k <= LIST_CHUNK. */
static int list_chunk(ihc_store *st, const index_ops *ops, const char *const *ctxs, size_t k,
                      vec *out)
{
    redisReply *sets[LIST_CHUNK] = {0};
    bool *gone = NULL;
    batch_reset(st);
    for (size_t c = 0; c < k; c++) {
        cmd(st, 2);
        arg(st, "SMEMBERS");
        ops->set_key(st, ctxs[c]);
    }
    int rc = batch_queue(st);
    if (rc != IHC_OK || (rc = st_flush(st)) != IHC_OK)
        return rc;
    int first = IHC_OK;
    size_t total = 0;
    for (size_t c = 0; c < k; c++) {
        int r = st_get(st, &sets[c]);
        if (r != IHC_OK && r != IHC_EREDIS) {
            rc = r; /* connection gone: nothing more to read */
            goto out;
        }
        if (r == IHC_OK && sets[c]->type != REDIS_REPLY_ARRAY) {
            set_err(st, "SMEMBERS: unexpected reply type %d", sets[c]->type);
            freeReplyObject(sets[c]);
            sets[c] = NULL;
            r = IHC_EREDIS;
        }
        if (r == IHC_EREDIS)
            first = first ? first : r;
        else
            total += sets[c]->elements;
    }
    if ((rc = first) != IHC_OK || total == 0)
        goto out;
    if (!(gone = calloc(total, sizeof(*gone)))) {
        rc = IHC_ENOMEM;
        goto out;
    }
    size_t ngone = 0;
    rc = read_members(st, ops, ctxs, sets, k, out, gone, &ngone);
    if (ngone > 0 && (rc == IHC_OK || rc == IHC_EREDIS || rc == IHC_ENOMEM)) {
        int r = forget_gone(st, ops, ctxs, sets, k, gone);
        if (r != IHC_OK && (rc == IHC_OK || r != IHC_EREDIS))
            rc = r; /* a lost connection wins */
    }
out:
    free(gone);
    for (size_t c = 0; c < k; c++)
        freeReplyObject(sets[c]);
    return rc;
}

/* The records of the index sets of ctxs[0..n) into out. */
static int list_indexes(ihc_store *st, const index_ops *ops, const char *const *ctxs, size_t n,
                        vec *out)
{
    for (size_t at = 0; at < n; at += LIST_CHUNK) {
        int rc = list_chunk(st, ops, ctxs + at, n - at < LIST_CHUNK ? n - at : LIST_CHUNK, out);
        if (rc != IHC_OK)
            return rc;
    }
    return IHC_OK;
}

/* ------------------------------------------------------------ sessions ---- */

static void key_session(ihc_store *st, const char *hw, const char *sid)
{
    arg_key(st, "ihc:session:{", hw, "}:", sid);
}

static void key_hw_set(ihc_store *st, const char *hw)
{
    arg_key(st, "ihc:hw:{", hw, "}:sessions", NULL);
}

int ihc_store_session_put(ihc_store *st, const ihc_store_session *s)
{
    if (!st || !s || !nonempty(s->session_id) || !nonempty(s->hw) || !nonempty(s->state))
        return IHC_EINVAL;
    int rc = w_begin(st);
    if (rc != IHC_OK)
        return rc;
    script_head(st, SCRIPT_PUT, 15);
    arg(st, "3");
    key_session(st, s->hw, s->session_id);
    key_hw_set(st, s->hw);
    arg(st, "ihc:stats");
    arg(st, st->session_ttl);
    arg(st, s->is_new ? "1" : "0");
    arg(st, strcmp(s->state, "active") == 0 ? "1" : "0");
    arg(st, s->session_id);
    arg(st, s->hw);
    arg(st, s->agent_id);
    arg(st, s->state);
    arg_u64(st, s->epoch);
    arg_i64(st, s->created_ms);
    arg_i64(st, s->updated_ms);
    arg(st, s->data); /* NULL is stored as "" and read back as NULL */
    return script_run(st, SCRIPT_PUT);
}

int ihc_store_session_state(ihc_store *st, const char *hw, const char *session_id,
                            const char *state, int64_t updated_ms)
{
    if (!st || !nonempty(hw) || !nonempty(session_id) || !nonempty(state))
        return IHC_EINVAL;
    int rc = w_begin(st);
    if (rc != IHC_OK)
        return rc;
    script_head(st, SCRIPT_STATE, 6);
    arg(st, "2");
    key_session(st, hw, session_id);
    key_hw_set(st, hw);
    arg(st, state);
    arg_i64(st, updated_ms);
    arg(st, session_id);
    return script_run(st, SCRIPT_STATE);
}

static void session_rec_fini(ihc_store_session_rec *r)
{
    free(r->session_id);
    free(r->hw);
    free(r->agent_id);
    free(r->state);
    free(r->data);
}

static void session_set_key(ihc_store *st, const char *hw)
{
    key_hw_set(st, hw);
}

static void session_member_key(ihc_store *st, const char *hw, const redisReply *m)
{
    const char *p[4] = {"ihc:session:{", hw, "}:", m->str};
    size_t l[4] = {13, strlen(hw), 2, m->len};
    arg_parts(st, 4, p, l);
}

static int session_fill(vec *out, const char *hw, const redisReply *m, const redisReply *h)
{
    ihc_store_session_rec r = {0};
    const redisReply *agent = NULL, *state = NULL, *data = NULL;
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
        const redisReply *f = h->element[i], *v = h->element[i + 1];
        if (v->type != REDIS_REPLY_STRING)
            continue;
        if (field_is(f, "agent_id"))
            agent = v;
        else if (field_is(f, "state"))
            state = v;
        else if (field_is(f, "data"))
            data = v;
        else if (field_is(f, "epoch") && !to_u64(v->str, v->len, &r.epoch))
            r.epoch = 0;
        else if (field_is(f, "created_ms"))
            r.created_ms = field_i64(v);
        else if (field_is(f, "updated_ms"))
            r.updated_ms = field_i64(v);
    }
    /* The set can lag a state written without the store: only active sessions are listed. */
    if (!state || state->len != 6 || memcmp(state->str, "active", 6) != 0)
        return 0;
    r.session_id = dup_bin(m->str, m->len);
    r.hw = strdup(hw);
    r.agent_id = agent ? dup_bin(agent->str, agent->len) : strdup("");
    r.state = strdup("active");
    bool data_ok = true;
    if (data && data->len > 0)
        data_ok = (r.data = dup_bin(data->str, data->len)) != NULL;
    ihc_store_session_rec *slot = NULL;
    if (!r.session_id || !r.hw || !r.agent_id || !r.state || !data_ok || !(slot = vec_push(out))) {
        session_rec_fini(&r);
        return -1;
    }
    *slot = r;
    return 1;
}

static const index_ops session_index = {session_set_key, session_member_key, session_fill};

int ihc_store_sessions_list(ihc_store *st, const char *hw, ihc_store_session_rec **out, size_t *n)
{
    if (!st || !out || !n || (hw && !*hw))
        return IHC_EINVAL;
    *out = NULL;
    *n = 0;
    int rc = r_begin(st);
    if (rc != IHC_OK)
        return rc;
    vec a = {.size = sizeof(ihc_store_session_rec)};
    if (hw) {
        rc = list_indexes(st, &session_index, &hw, 1, &a);
    } else {
        char **hws = NULL;
        size_t nhw = 0;
        rc = scan_names(st, "ihc:hw:*:sessions", "ihc:hw:{", "}:sessions", &hws, &nhw);
        if (rc == IHC_OK)
            rc = list_indexes(st, &session_index, (const char *const *)hws, nhw, &a);
        free_strs(hws, nhw);
    }
    if (rc != IHC_OK) {
        ihc_store_sessions_free(a.v, a.n);
        return rc;
    }
    *out = a.v;
    *n = a.n;
    return IHC_OK;
}

void ihc_store_sessions_free(ihc_store_session_rec *recs, size_t n)
{
    if (!recs)
        return;
    for (size_t i = 0; i < n; i++)
        session_rec_fini(&recs[i]);
    free(recs);
}

/* -------------------------------------------------------------- epochs ---- */

static void key_epoch(ihc_store *st, const char *hw)
{
    arg_key(st, "ihc:hw:{", hw, "}:epoch", NULL);
}

int ihc_store_epoch_raise(ihc_store *st, const char *hw, uint64_t epoch)
{
    if (!st || !nonempty(hw))
        return IHC_EINVAL;
    int rc = w_begin(st);
    if (rc != IHC_OK)
        return rc;
    script_head(st, SCRIPT_RAISE, 3);
    arg(st, "1");
    key_epoch(st, hw);
    arg_u64(st, epoch);
    return script_run(st, SCRIPT_RAISE);
}

int ihc_store_epoch_get(ihc_store *st, const char *hw, uint64_t *epoch)
{
    if (!st || !nonempty(hw) || !epoch)
        return IHC_EINVAL;
    *epoch = 0;
    int rc = r_begin(st);
    if (rc != IHC_OK)
        return rc;
    cmd(st, 2);
    arg(st, "GET");
    key_epoch(st, hw);
    redisReply *rep;
    if ((rc = roundtrip(st, &rep)) != IHC_OK)
        return rc;
    rc = reply_u64(st, rep, epoch);
    freeReplyObject(rep);
    return rc;
}

int ihc_store_epochs_list(ihc_store *st, ihc_store_epoch_rec **out, size_t *n)
{
    if (!st || !out || !n)
        return IHC_EINVAL;
    *out = NULL;
    *n = 0;
    int rc = r_begin(st);
    if (rc != IHC_OK)
        return rc;
    char **hws = NULL;
    size_t nhw = 0;
    if ((rc = scan_names(st, "ihc:hw:*:epoch", "ihc:hw:{", "}:epoch", &hws, &nhw)) != IHC_OK)
        return rc;
    ihc_store_epoch_rec *recs = calloc(nhw ? nhw : 1, sizeof(*recs));
    if (!recs) {
        free_strs(hws, nhw);
        return IHC_ENOMEM;
    }
    size_t m = 0;
    int first = IHC_OK;
    if (nhw > 0) {
        batch_reset(st);
        for (size_t i = 0; i < nhw; i++) {
            cmd(st, 2);
            arg(st, "GET");
            key_epoch(st, hws[i]);
        }
        if ((rc = batch_queue(st)) == IHC_OK)
            rc = st_flush(st);
    }
    for (size_t i = 0; rc == IHC_OK && i < nhw; i++) {
        redisReply *rep;
        int r = st_get(st, &rep);
        if (r != IHC_OK && r != IHC_EREDIS) {
            rc = r;
            break;
        }
        if (r == IHC_EREDIS) {
            first = first ? first : r;
            continue;
        }
        uint64_t v;
        /* A key deleted since the SCAN is skipped, as is one holding foreign data. */
        if (rep->type == REDIS_REPLY_STRING && to_u64(rep->str, rep->len, &v)) {
            recs[m].hw = hws[i];
            recs[m].epoch = v;
            hws[i] = NULL;
            m++;
        }
        freeReplyObject(rep);
    }
    if (rc == IHC_OK)
        rc = first;
    free_strs(hws, nhw);
    if (rc != IHC_OK) {
        ihc_store_epochs_free(recs, m);
        return rc;
    }
    *out = recs;
    *n = m;
    return IHC_OK;
}

void ihc_store_epochs_free(ihc_store_epoch_rec *recs, size_t n)
{
    if (!recs)
        return;
    for (size_t i = 0; i < n; i++)
        free(recs[i].hw);
    free(recs);
}

/* --------------------------------------------------------------- flags ---- */

int ihc_store_flags_set(ihc_store *st, const ihc_store_flags *f)
{
    if (!st || !f)
        return IHC_EINVAL;
    int rc = w_begin(st);
    if (rc != IHC_OK)
        return rc;
    cmd(st, 10);
    arg(st, "HSET");
    arg(st, "ihc:flags");
    arg(st, "global_interrupt_flag");
    arg(st, f->global_interrupt_flag ? "1" : "0");
    arg(st, "interrupt_hardware_id");
    arg_bin(st, f->interrupt_hardware_id,
            strnlen(f->interrupt_hardware_id, sizeof(f->interrupt_hardware_id)));
    arg(st, "set_ms");
    arg_i64(st, f->set_ms);
    arg(st, "reason");
    arg_bin(st, f->reason, strnlen(f->reason, sizeof(f->reason)));
    return w_end(st);
}

static void copy_field(char *dst, size_t cap, const redisReply *v)
{
    dst[0] = '\0';
    if (v->type != REDIS_REPLY_STRING)
        return;
    size_t n = v->len < cap - 1 ? v->len : cap - 1;
    memcpy(dst, v->str, n);
    dst[n] = '\0';
}

int ihc_store_flags_get(ihc_store *st, ihc_store_flags *f)
{
    if (!st || !f)
        return IHC_EINVAL;
    memset(f, 0, sizeof(*f));
    int rc = r_begin(st);
    if (rc != IHC_OK)
        return rc;
    cmd(st, 6);
    arg(st, "HMGET");
    arg(st, "ihc:flags");
    arg(st, "global_interrupt_flag");
    arg(st, "interrupt_hardware_id");
    arg(st, "set_ms");
    arg(st, "reason");
    redisReply *rep;
    if ((rc = roundtrip(st, &rep)) != IHC_OK)
        return rc;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 4) {
        set_err(st, "HMGET ihc:flags: unexpected reply");
        freeReplyObject(rep);
        return IHC_EREDIS;
    }
    f->global_interrupt_flag = field_i64(rep->element[0]) != 0;
    copy_field(f->interrupt_hardware_id, sizeof(f->interrupt_hardware_id), rep->element[1]);
    f->set_ms = field_i64(rep->element[2]);
    copy_field(f->reason, sizeof(f->reason), rep->element[3]);
    freeReplyObject(rep);
    return IHC_OK;
}

int ihc_store_flags_reset(ihc_store *st)
{
    static const ihc_store_flags cleared; /* one HSET: atomic and idempotent */
    return ihc_store_flags_set(st, &cleared);
}

/* -------------------------------------------------------------- agents ---- */

static void key_agent(ihc_store *st, const char *id)
{
    arg_key(st, "ihc:agent:", id, NULL, NULL);
}

int ihc_store_agent_put(ihc_store *st, const ihc_store_agent *a)
{
    if (!st || !a || !nonempty(a->agent_id))
        return IHC_EINVAL;
    int rc = w_begin(st);
    if (rc != IHC_OK)
        return rc;
    cmd(st, 14);
    arg(st, "HSET");
    key_agent(st, a->agent_id);
    arg(st, "node");
    arg(st, a->node);
    arg(st, "pid");
    arg_i64(st, a->pid);
    arg(st, "modules");
    arg(st, a->modules ? a->modules : "[]");
    arg(st, "sessions");
    arg(st, a->sessions ? a->sessions : "[]");
    arg(st, "started_ms");
    arg_i64(st, a->started_ms);
    arg(st, "last_seen_ms");
    arg_i64(st, a->last_seen_ms);
    cmd(st, 3);
    arg(st, "EXPIRE");
    key_agent(st, a->agent_id);
    arg(st, st->agent_ttl);
    cmd(st, 3);
    arg(st, "SADD");
    arg(st, "ihc:agents");
    arg(st, a->agent_id);
    return w_end(st);
}

int ihc_store_agent_touch(ihc_store *st, const char *agent_id, int64_t last_seen_ms)
{
    if (!st || !nonempty(agent_id))
        return IHC_EINVAL;
    int rc = w_begin(st);
    if (rc != IHC_OK)
        return rc;
    /* Touching an agent whose hash expired is a no-op (IHC_OK): it must not leave a hash
     * holding only last_seen_ms; the next agent_put writes the whole record again. */
    script_head(st, SCRIPT_TOUCH, 4);
    arg(st, "1");
    key_agent(st, agent_id);
    arg_i64(st, last_seen_ms);
    arg(st, st->agent_ttl);
    return script_run(st, SCRIPT_TOUCH);
}

int ihc_store_agent_del(ihc_store *st, const char *agent_id)
{
    if (!st || !nonempty(agent_id))
        return IHC_EINVAL;
    int rc = w_begin(st);
    if (rc != IHC_OK)
        return rc;
    cmd(st, 2);
    arg(st, "DEL");
    key_agent(st, agent_id);
    cmd(st, 3);
    arg(st, "SREM");
    arg(st, "ihc:agents");
    arg(st, agent_id);
    return w_end(st);
}

static void agent_set_key(ihc_store *st, const char *unused)
{
    (void)unused;
    arg(st, "ihc:agents");
}

static void agent_member_key(ihc_store *st, const char *unused, const redisReply *m)
{
    (void)unused;
    const char *p[2] = {"ihc:agent:", m->str};
    size_t l[2] = {10, m->len};
    arg_parts(st, 2, p, l);
}

static void agent_rec_fini(ihc_store_agent_rec *r)
{
    free(r->agent_id);
    free(r->node);
    free(r->modules);
    free(r->sessions);
}

static int agent_fill(vec *out, const char *unused, const redisReply *m, const redisReply *h)
{
    (void)unused;
    ihc_store_agent_rec r = {0};
    const redisReply *node = NULL, *modules = NULL, *sessions = NULL;
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
        const redisReply *f = h->element[i], *v = h->element[i + 1];
        if (v->type != REDIS_REPLY_STRING)
            continue;
        if (field_is(f, "node"))
            node = v;
        else if (field_is(f, "modules"))
            modules = v;
        else if (field_is(f, "sessions"))
            sessions = v;
        else if (field_is(f, "pid"))
            r.pid = (int32_t)field_i64(v);
        else if (field_is(f, "started_ms"))
            r.started_ms = field_i64(v);
        else if (field_is(f, "last_seen_ms"))
            r.last_seen_ms = field_i64(v);
    }
    r.agent_id = dup_bin(m->str, m->len);
    r.node = node ? dup_bin(node->str, node->len) : strdup("");
    r.modules = modules ? dup_bin(modules->str, modules->len) : strdup("[]");
    r.sessions = sessions ? dup_bin(sessions->str, sessions->len) : strdup("[]");
    ihc_store_agent_rec *slot = NULL;
    if (!r.agent_id || !r.node || !r.modules || !r.sessions || !(slot = vec_push(out))) {
        agent_rec_fini(&r);
        return -1;
    }
    *slot = r;
    return 1;
}

static const index_ops agent_index = {agent_set_key, agent_member_key, agent_fill};

int ihc_store_agents_list(ihc_store *st, ihc_store_agent_rec **out, size_t *n)
{
    if (!st || !out || !n)
        return IHC_EINVAL;
    *out = NULL;
    *n = 0;
    int rc = r_begin(st);
    if (rc != IHC_OK)
        return rc;
    vec a = {.size = sizeof(ihc_store_agent_rec)};
    const char *none = NULL; /* the agents' set has no context */
    rc = list_indexes(st, &agent_index, &none, 1, &a);
    if (rc != IHC_OK) {
        ihc_store_agents_free(a.v, a.n);
        return rc;
    }
    *out = a.v;
    *n = a.n;
    return IHC_OK;
}

void ihc_store_agents_free(ihc_store_agent_rec *recs, size_t n)
{
    if (!recs)
        return;
    for (size_t i = 0; i < n; i++)
        agent_rec_fini(&recs[i]);
    free(recs);
}

/* ----------------------------------------------------------------- log ---- */

int ihc_store_log_append(ihc_store *st, const ihc_store_log_entry *e)
{
    if (!st || !e || !nonempty(e->hw))
        return IHC_EINVAL;
    if (!isfinite(e->total_time_ms)) {
        call_start(st);
        set_err(st, "total_time_ms is not a finite number");
        return IHC_EINVAL;
    }
    int rc = w_begin(st);
    if (rc != IHC_OK)
        return rc;
    char t[64];
    int tl = snprintf(t, sizeof(t), "%.3f", e->total_time_ms);
    char mkey[48];
    snprintf(mkey, sizeof(mkey), "ihc:logged:%" PRIu64, e->id >> 20);
    /* numkeys, 3 keys, bit, success, then XADD's 22 arguments from MAXLEN */
    script_head(st, SCRIPT_LOG, 28);
    arg(st, "3");
    arg(st, mkey);
    arg(st, "ihc:interrupts");
    arg(st, "ihc:stats");
    arg_u64(st, e->id & 0xFFFFFu);
    arg(st, e->success ? "1" : "0");
    arg(st, "MAXLEN");
    arg(st, "~");
    arg(st, st->log_max_s);
    arg(st, "*");
    arg(st, "id");
    arg_u64(st, e->id);
    arg(st, "hardware_id");
    arg(st, e->hw);
    arg(st, "success");
    arg(st, e->success ? "1" : "0");
    arg(st, "total_time_ms");
    arg_bin(st, t, (size_t)tl);
    arg(st, "modules");
    arg(st, e->modules ? e->modules : "[]");
    arg(st, "sessions");
    arg(st, e->sessions ? e->sessions : "[]");
    arg(st, "agents_missing");
    arg(st, e->agents_missing ? e->agents_missing : "[]");
    arg(st, "reason");
    arg(st, e->reason);
    arg(st, "ts_ms");
    arg_i64(st, e->ts_ms);
    return script_run(st, SCRIPT_LOG);
}

int ihc_store_log_len(ihc_store *st, uint64_t *n)
{
    if (!st || !n)
        return IHC_EINVAL;
    *n = 0;
    int rc = r_begin(st);
    if (rc != IHC_OK)
        return rc;
    cmd(st, 2);
    arg(st, "XLEN");
    arg(st, "ihc:interrupts");
    redisReply *rep;
    if ((rc = roundtrip(st, &rep)) != IHC_OK)
        return rc;
    rc = reply_u64(st, rep, n);
    freeReplyObject(rep);
    return rc;
}

/* ------------------------------------------------------ stats and seq ---- */

int ihc_store_stats_incr(ihc_store *st, const char *field, int64_t by)
{
    if (!st || !nonempty(field))
        return IHC_EINVAL;
    int rc = w_begin(st);
    if (rc != IHC_OK)
        return rc;
    cmd(st, 4);
    arg(st, "HINCRBY");
    arg(st, "ihc:stats");
    arg(st, field);
    arg_i64(st, by);
    return w_end(st);
}

int ihc_store_stats_get(ihc_store *st, const char *field, int64_t *value)
{
    if (!st || !nonempty(field) || !value)
        return IHC_EINVAL;
    *value = 0;
    int rc = r_begin(st);
    if (rc != IHC_OK)
        return rc;
    cmd(st, 3);
    arg(st, "HGET");
    arg(st, "ihc:stats");
    arg(st, field);
    redisReply *rep;
    if ((rc = roundtrip(st, &rep)) != IHC_OK)
        return rc;
    if (rep->type == REDIS_REPLY_STRING && !to_i64(rep->str, rep->len, value)) {
        *value = 0;
        set_err(st, "ihc:stats %s is not an integer", field);
        rc = IHC_EREDIS;
    }
    freeReplyObject(rep);
    return rc;
}

int ihc_store_seq_raise(ihc_store *st, uint64_t v)
{
    if (!st)
        return IHC_EINVAL;
    int rc = w_begin(st);
    if (rc != IHC_OK)
        return rc;
    script_head(st, SCRIPT_RAISE, 4);
    arg(st, "1");
    arg(st, "ihc:seq");
    arg_u64(st, v);
    arg(st, "interrupt_id");
    return script_run(st, SCRIPT_RAISE);
}

int ihc_store_seq_get(ihc_store *st, uint64_t *v)
{
    if (!st || !v)
        return IHC_EINVAL;
    *v = 0;
    int rc = r_begin(st);
    if (rc != IHC_OK)
        return rc;
    cmd(st, 3);
    arg(st, "HGET");
    arg(st, "ihc:seq");
    arg(st, "interrupt_id");
    redisReply *rep;
    if ((rc = roundtrip(st, &rep)) != IHC_OK)
        return rc;
    rc = reply_u64(st, rep, v);
    freeReplyObject(rep);
    return rc;
}

int ihc_store_stats_set(ihc_store *st, const ihc_store_stats *v)
{
    if (!st || !v)
        return IHC_EINVAL;
    int rc = w_begin(st);
    if (rc != IHC_OK)
        return rc;
    cmd(st, 10);
    arg(st, "HSET");
    arg(st, "ihc:stats");
    arg(st, "total_interrupts");
    arg_u64(st, v->total);
    arg(st, "successful_interrupts");
    arg_u64(st, v->succeeded);
    arg(st, "failed_interrupts");
    arg_u64(st, v->failed);
    arg(st, "sessions_created");
    arg_u64(st, v->sessions_created);
    return w_end(st);
}

/* ------------------------------------------------------------ the lease ---- */

/* Runs the script built after script_head outside a pipeline and returns its reply (NOSCRIPT
 * retried once with EVAL). */
static int script_call(ihc_store *st, int which, redisReply **out)
{
    int rc = roundtrip(st, out);
    if (rc == IHC_EREDIS && st->noscript) {
        batch_reset(st);
        st->ncmd = 1;
        st->argc_want = st->argc;
        st->args[0] = (cmd_arg){.p = "EVAL", .len = 4};
        st->args[1] = (cmd_arg){.p = script_body[which], .len = strlen(script_body[which])};
        st->loaded[which] = st->sha[which][0] != '\0';
        st->err[0] = '\0';
        st->noscript = false;
        rc = roundtrip(st, out);
    }
    return rc;
}

static uint64_t el_u64(const redisReply *r, size_t i)
{
    if (i >= r->elements)
        return 0;
    const redisReply *e = r->element[i];
    if (e->type == REDIS_REPLY_INTEGER)
        return e->integer > 0 ? (uint64_t)e->integer : 0;
    uint64_t v = 0;
    if (e->type == REDIS_REPLY_STRING && to_u64(e->str, e->len, &v))
        return v;
    return 0;
}

static void el_str(const redisReply *r, size_t i, char *out, size_t cap)
{
    out[0] = '\0';
    if (i < r->elements)
        copy_field(out, cap, r->element[i]);
}

static void lease_addrs(ihc_store *st, const ihc_store_lease_req *q)
{
    arg(st, q->control ? q->control : "");
    arg(st, q->http ? q->http : "");
    arg(st, q->pub ? q->pub : "");
    arg(st, q->report ? q->report : "");
}

static int lease_answer(ihc_store *st, redisReply *rep, ihc_store_lease *out)
{
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 3) {
        set_err(st, "lease script: unexpected reply");
        return IHC_EREDIS;
    }
    out->held = el_u64(rep, 0) == 1;
    out->term = el_u64(rep, 1);
    el_str(rep, 2, out->holder, sizeof(out->holder));
    out->standbys = el_u64(rep, 3);
    out->ids_hi = el_u64(rep, 4);
    el_str(rep, 5, out->holder_control, sizeof(out->holder_control));
    el_str(rep, 6, out->holder_http, sizeof(out->holder_http));
    el_str(rep, 7, out->holder_pub, sizeof(out->holder_pub));
    return IHC_OK;
}

int ihc_store_lease_acquire(ihc_store *st, const ihc_store_lease_req *q, ihc_store_lease *out)
{
    if (!st || !q || !out || !nonempty(q->id) || q->ttl_ms == 0)
        return IHC_EINVAL;
    memset(out, 0, sizeof(*out));
    int rc = r_begin(st);
    if (rc != IHC_OK)
        return rc;
    script_head(st, SCRIPT_ACQUIRE, 15);
    arg(st, "5");
    arg(st, "ihc:leader");
    arg(st, "ihc:term");
    arg(st, "ihc:leader:info");
    arg(st, "ihc:standbys");
    arg(st, "ihc:seq");
    arg(st, q->id);
    arg_u64(st, q->ttl_ms);
    arg_u64(st, q->min_term);
    arg_u64(st, q->id_block);
    arg_u64(st, q->min_next_id);
    lease_addrs(st, q);
    redisReply *rep;
    if ((rc = script_call(st, SCRIPT_ACQUIRE, &rep)) != IHC_OK)
        return rc;
    rc = lease_answer(st, rep, out);
    freeReplyObject(rep);
    return rc;
}

int ihc_store_lease_renew(ihc_store *st, const ihc_store_lease_req *q, uint64_t term,
                          ihc_store_lease *out)
{
    if (!st || !q || !out || !nonempty(q->id) || q->ttl_ms == 0 || term == 0)
        return IHC_EINVAL;
    memset(out, 0, sizeof(*out));
    int rc = r_begin(st);
    if (rc != IHC_OK)
        return rc;
    script_head(st, SCRIPT_RENEW, 12);
    arg(st, "4");
    arg(st, "ihc:leader");
    arg(st, "ihc:term");
    arg(st, "ihc:standbys");
    arg(st, "ihc:leader:info");
    arg(st, q->id);
    arg_u64(st, q->ttl_ms);
    arg_u64(st, term);
    lease_addrs(st, q);
    redisReply *rep;
    if ((rc = script_call(st, SCRIPT_RENEW, &rep)) != IHC_OK)
        return rc;
    rc = lease_answer(st, rep, out);
    freeReplyObject(rep);
    return rc;
}

int ihc_store_lease_resign(ihc_store *st, const char *id)
{
    if (!st || !nonempty(id))
        return IHC_EINVAL;
    int rc = r_begin(st);
    if (rc != IHC_OK)
        return rc;
    script_head(st, SCRIPT_RESIGN, 3);
    arg(st, "1");
    arg(st, "ihc:leader");
    arg(st, id);
    redisReply *rep;
    if ((rc = script_call(st, SCRIPT_RESIGN, &rep)) != IHC_OK)
        return rc;
    freeReplyObject(rep);
    return IHC_OK;
}

int ihc_store_ids_reserve(ihc_store *st, uint64_t term, uint64_t block, uint64_t min_next_id,
                          uint64_t *hi)
{
    if (!st || !hi || term == 0 || block == 0)
        return IHC_EINVAL;
    *hi = 0;
    int rc = r_begin(st);
    if (rc != IHC_OK)
        return rc;
    script_head(st, SCRIPT_RESERVE, 6);
    arg(st, "2");
    arg(st, "ihc:term");
    arg(st, "ihc:seq");
    arg_u64(st, term);
    arg_u64(st, block);
    arg_u64(st, min_next_id);
    redisReply *rep;
    rc = script_call(st, SCRIPT_RESERVE, &rep);
    if (rc == IHC_EREDIS && strncmp(st->err, "FENCED", 6) == 0)
        return IHC_ENOTLEADER;
    if (rc == IHC_EREDIS && strncmp(st->err, "NOTERM", 6) == 0)
        return IHC_ENOENT;
    if (rc != IHC_OK)
        return rc;
    if (rep->type == REDIS_REPLY_INTEGER && rep->integer > 0)
        *hi = (uint64_t)rep->integer;
    else
        rc = IHC_EREDIS;
    freeReplyObject(rep);
    return rc;
}

int ihc_store_term_get(ihc_store *st, uint64_t *term)
{
    if (!st || !term)
        return IHC_EINVAL;
    *term = 0;
    int rc = r_begin(st);
    if (rc != IHC_OK)
        return rc;
    cmd(st, 2);
    arg(st, "GET");
    arg(st, "ihc:term");
    redisReply *rep;
    if ((rc = roundtrip(st, &rep)) != IHC_OK)
        return rc;
    rc = reply_u64(st, rep, term);
    freeReplyObject(rep);
    return rc;
}
