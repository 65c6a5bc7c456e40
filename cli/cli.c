/* The `ihc` command-line client: interrupts, queries and `watch` over libihc's public API,
 * and `ihc run` (cli/run.c). Human-readable output by default, the coordinator's JSON with
 * --json. */
#include "ihc/client.h"

#include "clock.h"
#include "config.h"
#include "defaults.h"
#include "err.h"
#include "run.h"
#include "tls.h"
#include "version.h"
#include "wire.h"

#include <errno.h>
#include <jansson.h>
#include <nng/nng.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { EXIT_OK = 0, EXIT_INCOMPLETE = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

#define MAX_POS      8
#define MAX_CFG_ARGS 32
/* Longest --timeout of the commands that wait for an answer (an interrupt's own limit is
 * IHC_INTERRUPT_TIMEOUT_MAX_MS): an hour; written as a literal for IHC_STR in the help. */
#define QUERY_WAIT_MAX_MS 3600000
/* Extra wait on top of the coordinator's INTERRUPT_TIMEOUT for interrupts without --timeout. */
#define INTERRUPT_MARGIN_MS 3000
/* watch: how long it waits quietly for the coordinator before saying it is waiting. */
#define WATCH_QUIET_MS 1000
/* watch: each wait for a result is this short, so Ctrl-C and a connection change are seen. */
#define WATCH_POLL_MS 200

typedef struct {
    const char *cmd;
    const char *pos[MAX_POS];
    int n_pos; /* may exceed MAX_POS: only the first MAX_POS are kept */
    bool json;
    const char *reason;
    const char *timeout_arg; /* --timeout as given; checked once the command is known */
    long timeout_ms;         /* 0 = not given */
    bool pub_given;          /* --pub on the command line (a setting: IHC_PUB_URL, config.c) */
    const char *first_opt;   /* the first option given, for `run` which takes none before it */
    char *cfg_argv[MAX_CFG_ARGS];
    int cfg_argc;
    ihc_config cfg;
} cli;

/* The help text, laid out as it prints. */
/* clang-format off */
static const char usage_text[] =
    "usage: ihc [OPTIONS] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  interrupt HW [--reason TEXT] [--timeout MS] [--json]\n"
    "                          stop every session of HW (\"*\": all hardware) and report\n"
    "  sessions [HW] [--json]  active sessions, all or of HW\n"
    "  agents [--json]         live agents, their modules and last heartbeat\n"
    "  flags [reset] [--json]  the global interrupt flag, or reset it\n"
    "  stats [--json]          interrupt counts, success rate and timings\n"
    "  watch [--json]          print each finished interrupt as it happens (Ctrl-C stops)\n"
    "  run --hw HW -- CMD ARGS...\n"
    "                          run CMD as a session of HW on this node's agent\n"
    "                          (ihc run --help lists its options)\n"
    "\n"
    "options:\n"
    "  --control URL      coordinator control endpoint (IHC_CONTROL_URL,\n"
    "                     default " IHC_DEFAULT_CONTROL_URL ")\n"
    "  --pub URL          coordinator broadcast endpoint, for watch (IHC_PUB_URL,\n"
    "                     default " IHC_DEFAULT_PUB_URL ")\n"
    "  --timeout MS       interrupt: its timeout, 1 to " IHC_STR(IHC_INTERRUPT_TIMEOUT_MAX_MS) "\n"
    "                     (default: the coordinator's INTERRUPT_TIMEOUT); sessions, agents,\n"
    "                     flags, stats: how long to wait for the answer, 1 to " IHC_STR(QUERY_WAIT_MAX_MS) "\n"
    "                     (default " IHC_STR(IHC_CLIENT_DEFAULT_TIMEOUT_MS) ")\n"
    "  --secret-file PATH shared secret signing messages (IHC_SECRET_FILE, or IHC_SECRET)\n"
    "  --json             print the coordinator's JSON document unchanged\n"
    "  -h, --help         this help\n"
    "  --version          print the version\n"
    "\n"
    "exit status: 0 success, 1 interrupt incomplete (an agent missing or a module timed out)\n"
    "or failed, 2 usage error or request refused, 3 coordinator unreachable\n";
/* clang-format on */

/* Every usage error: one line naming the problem, one hint, exit 2. */
static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ihc: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\nTry 'ihc --help'.\n", stderr);
    va_end(ap);
    return EXIT_USAGE;
}

/* Maps a libihc failure to a message and an exit status. */
static int client_fail(ihc_client *c, const char *what, int rc)
{
    const char *detail = ihc_client_last_error(c);
    if (detail[0] == '\0')
        detail = ihc_client_strerror(rc);
    switch (rc) {
    case IHC_CLIENT_ENOTCONN:
    case IHC_CLIENT_ETIMEDOUT:
    case IHC_CLIENT_ENOTLEADER: /* only standbys answered: a failover is under way */
        /* libihc's text names the URL and what happened */
        fprintf(stderr, "ihc: %s: %s\n", what, detail);
        return EXIT_UNREACHABLE;
    case IHC_CLIENT_EINVAL:
    case IHC_CLIENT_EBADHW:
    case IHC_CLIENT_ENOENT:
    case IHC_CLIENT_ETOOBIG:
    case IHC_CLIENT_EDISABLED:
    case IHC_CLIENT_EBADSIG: /* refused: our secret is not the coordinator's */
        fprintf(stderr, "ihc: %s: %s\n", what, detail);
        return EXIT_USAGE;
    default:
        fprintf(stderr, "ihc: %s failed: %s\n", what, detail);
        return EXIT_INCOMPLETE;
    }
}

static void print_doc(const char *json)
{
    size_t n = strlen(json);
    fputs(json, stdout);
    if (n == 0 || json[n - 1] != '\n')
        fputc('\n', stdout);
}

static const char *jstr(json_t *o, const char *key, const char *dflt)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : dflt;
}

static long long jint(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (json_is_integer(v))
        return json_integer_value(v);
    if (json_is_real(v))
        return (long long)json_real_value(v);
    return 0;
}

/* "3.2s", "4m05s", "2h10m", "3d4h": how long ago ms was. */
static void fmt_age(char *out, size_t cap, int64_t ms)
{
    if (ms <= 0) {
        snprintf(out, cap, "-");
        return;
    }
    double s = (double)(ihc_now_ms() - ms) / 1000.0;
    if (s < 0)
        s = 0;
    if (s < 60)
        snprintf(out, cap, "%.1fs", s);
    else if (s < 3600)
        snprintf(out, cap, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else if (s < 86400)
        snprintf(out, cap, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else
        snprintf(out, cap, "%dd%dh", (int)(s / 86400), (int)(s / 3600) % 24);
}

static void fmt_time(char *out, size_t cap, int64_t ms, bool with_date)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    char b[32];
    strftime(b, sizeof b, with_date ? "%Y-%m-%d %H:%M:%S" : "%H:%M:%S", &tm);
    snprintf(out, cap, "%s.%03d", b, (int)(ms % 1000));
}

/* A table of strings printed with aligned columns. */
typedef struct {
    int ncol;
    size_t nrow, cap;
    char **cells; /* nrow * ncol, owned */
} table;

static void table_add(table *t, const char *const *row)
{
    if (t->nrow == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **nc = realloc(t->cells, cap * (size_t)t->ncol * sizeof *nc);
        if (nc == NULL)
            return;
        t->cells = nc;
        t->cap = cap;
    }
    for (int i = 0; i < t->ncol; i++) {
        /* a cell that cannot be copied prints as "-" */
        t->cells[t->nrow * (size_t)t->ncol + (size_t)i] = strdup(row[i] != NULL ? row[i] : "-");
    }
    t->nrow++;
}

static void table_print(table *t)
{
    size_t w[16] = {0};
    for (size_t r = 0; r < t->nrow; r++)
        for (int c = 0; c < t->ncol; c++) {
            const char *s = t->cells[r * (size_t)t->ncol + (size_t)c];
            size_t n = s != NULL ? strlen(s) : 1;
            if (n > w[c])
                w[c] = n;
        }
    for (size_t r = 0; r < t->nrow; r++) {
        for (int c = 0; c < t->ncol; c++) {
            const char *s = t->cells[r * (size_t)t->ncol + (size_t)c];
            if (c == t->ncol - 1)
                printf("%s\n", s != NULL ? s : "-");
            else
                printf("%-*s  ", (int)w[c], s != NULL ? s : "-");
        }
    }
}

static void table_free(table *t)
{
    for (size_t i = 0; i < t->nrow * (size_t)t->ncol; i++)
        free(t->cells[i]);
    free(t->cells);
}

static json_t *parse_doc(const char *json)
{
    json_error_t e;
    json_t *d = json_loads(json, 0, &e);
    if (d == NULL)
        fprintf(stderr, "ihc: the coordinator's answer is not JSON (line %d: %s)\n", e.line,
                e.text);
    return d;
}

static int show_sessions(const char *json)
{
    json_t *d = parse_doc(json);
    if (d == NULL)
        return EXIT_INCOMPLETE;
    json_t *arr = json_object_get(d, "sessions");
    if (!json_is_array(arr) || json_array_size(arr) == 0) {
        printf("no active sessions\n");
        json_decref(d);
        return EXIT_OK;
    }
    table t = {.ncol = 8};
    const char *head[] = {"SESSION", "HARDWARE_ID", "AGENT",  "STATE",
                          "EPOCH",   "AGE",         "MODULE", "PID"};
    table_add(&t, head);
    size_t i;
    json_t *s;
    json_array_foreach(arr, i, s)
    {
        char epoch[24], age[24], pid[24];
        snprintf(epoch, sizeof epoch, "%lld", jint(s, "epoch"));
        fmt_age(age, sizeof age, jint(s, "created_ms"));
        long long p = jint(s, "pid");
        snprintf(pid, sizeof pid, p > 0 ? "%lld" : "-", p);
        const char *row[] = {jstr(s, "session_id", "?"),
                             jstr(s, "hardware_id", "?"),
                             jstr(s, "agent_id", "?"),
                             jstr(s, "state", "?"),
                             epoch,
                             age,
                             jstr(s, "module", "-"),
                             pid};
        table_add(&t, row);
    }
    table_print(&t);
    table_free(&t);
    json_decref(d);
    return EXIT_OK;
}

static int show_agents(const char *json)
{
    json_t *d = parse_doc(json);
    if (d == NULL)
        return EXIT_INCOMPLETE;
    json_t *arr = json_object_get(d, "agents");
    if (!json_is_array(arr) || json_array_size(arr) == 0) {
        printf("no agents\n");
        json_decref(d);
        return EXIT_OK;
    }
    table t = {.ncol = 7};
    const char *head[] = {"AGENT", "NODE", "PID", "CONNECTED", "SESSIONS", "LAST_SEEN", "MODULES"};
    table_add(&t, head);
    size_t i;
    json_t *a;
    json_array_foreach(arr, i, a)
    {
        char pid[24], sess[24], seen[32], mods[512] = "";
        snprintf(pid, sizeof pid, "%lld", jint(a, "pid"));
        snprintf(sess, sizeof sess, "%lld", jint(a, "sessions"));
        fmt_age(seen, sizeof seen, jint(a, "last_seen_ms"));
        if (strcmp(seen, "-") != 0)
            strncat(seen, " ago", sizeof seen - strlen(seen) - 1);
        size_t j;
        json_t *m;
        json_array_foreach(json_object_get(a, "modules"), j, m)
        {
            const char *name = json_is_string(m) ? json_string_value(m) : jstr(m, "name", "?");
            size_t used = strlen(mods);
            snprintf(mods + used, sizeof mods - used, "%s%s", used ? "," : "", name);
        }
        json_t *conn = json_object_get(a, "connected");
        const char *row[] = {jstr(a, "agent_id", "?"),
                             jstr(a, "node", "-"),
                             pid,
                             json_is_boolean(conn) ? (json_is_true(conn) ? "yes" : "no") : "-",
                             sess,
                             seen,
                             mods[0] ? mods : "-"};
        table_add(&t, row);
    }
    table_print(&t);
    table_free(&t);
    json_decref(d);
    return EXIT_OK;
}

/* Scalar as text for key/value listings. */
static void fmt_scalar(char *out, size_t cap, json_t *v)
{
    if (json_is_string(v))
        snprintf(out, cap, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(out, cap, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(out, cap, "%.3f", json_real_value(v));
    else if (json_is_true(v))
        snprintf(out, cap, "true");
    else if (json_is_false(v))
        snprintf(out, cap, "false");
    else if (json_is_null(v) || v == NULL)
        snprintf(out, cap, "-");
    else {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        snprintf(out, cap, "%s", s != NULL ? s : "?");
        free(s);
    }
}

static int show_keyvals(const char *json)
{
    json_t *d = parse_doc(json);
    if (d == NULL)
        return EXIT_INCOMPLETE;
    table t = {.ncol = 2};
    const char *key;
    json_t *v;
    json_object_foreach(d, key, v)
    {
        char val[512];
        if (strcmp(key, "set_ms") == 0 && json_is_integer(v) && json_integer_value(v) > 0) {
            char when[40], age[24];
            fmt_time(when, sizeof when, json_integer_value(v), true);
            fmt_age(age, sizeof age, json_integer_value(v));
            snprintf(val, sizeof val, "%s (%s ago)", when, age);
        } else {
            fmt_scalar(val, sizeof val, v);
        }
        const char *row[] = {key, val};
        table_add(&t, row);
    }
    table_print(&t);
    table_free(&t);
    json_decref(d);
    return EXIT_OK;
}

/* Durations: one decimal, more for sub-0.1 ms ones so they do not print as 0.0. */
static const char *fmt_ms(char *out, size_t cap, double ms)
{
    snprintf(out, cap, ms >= 0.1 || ms == 0.0 ? "%.1f" : "%.3f", ms);
    return out;
}

static void list_join(char *out, size_t cap, const char *const *v, size_t n)
{
    out[0] = '\0';
    if (n == 0) {
        snprintf(out, cap, "none");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        size_t used = strlen(out);
        snprintf(out + used, cap - used, "%s%s", i ? ", " : "", v[i]);
    }
}

static void show_result(const ihc_result *r, const char *hw)
{
    char mods[2048] = "", missing[1024];
    for (size_t i = 0; i < r->n_modules; i++) {
        const ihc_module_outcome *m = &r->modules[i];
        size_t used = strlen(mods);
        char t[32];
        snprintf(mods + used, sizeof mods - used, "%s%s%s%s %s %s ms%s%s", i ? ", " : "",
                 r->n_agents_answered > 1 && m->agent ? m->agent : "",
                 r->n_agents_answered > 1 && m->agent ? "/" : "", m->name ? m->name : "?",
                 m->status ? m->status : "?", fmt_ms(t, sizeof t, m->time_ms), m->error ? ": " : "",
                 m->error ? m->error : "");
    }
    if (r->n_modules == 0)
        list_join(mods, sizeof mods, r->interrupted_modules, r->n_interrupted_modules);
    list_join(missing, sizeof missing, r->agents_missing, r->n_agents_missing);
    const char *h = r->hardware_id ? r->hardware_id : hw;
    size_t ns = r->n_cleaned_sessions, na = r->n_agents_answered;
    char total[32];
    fmt_ms(total, sizeof total, r->total_time_ms);
    if (r->success)
        printf("interrupted %s (id %llu, epoch %llu) in %s ms: ", h,
               (unsigned long long)r->interrupt_id, (unsigned long long)r->epoch, total);
    else
        printf("interrupt of %s INCOMPLETE (id %llu, epoch %llu) after %s ms: ", h,
               (unsigned long long)r->interrupt_id, (unsigned long long)r->epoch, total);
    printf("%zu session%s on %zu agent%s", ns, ns == 1 ? "" : "s", na, na == 1 ? "" : "s");
    if (r->n_agents_expected != na)
        printf(" of %zu expected", r->n_agents_expected);
    printf("; modules: %s; missing: %s", mods[0] ? mods : "none", missing);
    if (!r->persisted)
        printf("; not yet persisted (Redis unreachable, written later)");
    if (r->error != NULL)
        printf("; error: %s", r->error);
    printf("\n");
}

static int cmd_interrupt(cli *o, ihc_client *c)
{
    const char *hw = o->pos[0];
    ihc_result *r = NULL;
    int rc = ihc_client_interrupt(c, hw, o->reason, (int)o->timeout_ms, &r);
    if (rc != IHC_CLIENT_OK)
        return client_fail(c, "interrupt", rc);
    if (o->json)
        print_doc(ihc_result_json(r));
    else
        show_result(r, hw);
    int ex = r->success ? EXIT_OK : EXIT_INCOMPLETE;
    if (!r->success && !o->json)
        fprintf(stderr, "ihc: interrupt of %s incomplete%s%s\n", hw, r->error ? ": " : "",
                r->error ? r->error : "");
    ihc_result_free(r);
    return ex;
}

static int run_query(cli *o, ihc_client *c, const char *op, const char *hw,
                     int (*show)(const char *))
{
    char *json = NULL;
    int rc = ihc_client_query(c, op, hw, &json);
    if (rc != IHC_CLIENT_OK)
        return client_fail(c, op, rc);
    int ex = EXIT_OK;
    if (o->json)
        print_doc(json);
    else if (show != NULL)
        ex = show(json);
    else
        printf("flags reset\n");
    free(json);
    return ex;
}

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void watch_line(const ihc_result *r, bool raw)
{
    if (raw) {
        print_doc(ihc_result_json(r));
        fflush(stdout);
        return;
    }
    char when[40], t[32];
    fmt_time(when, sizeof when, r->sent_ms > 0 ? r->sent_ms : ihc_now_ms(), false);
    printf("%s  #%llu  %s  %s  %s ms  agents %zu/%zu  sessions %zu", when,
           (unsigned long long)r->interrupt_id, r->hardware_id != NULL ? r->hardware_id : "?",
           r->success ? "ok" : "INCOMPLETE", fmt_ms(t, sizeof t, r->total_time_ms),
           r->n_agents_answered, r->n_agents_expected, r->n_cleaned_sessions);
    if (r->error != NULL)
        printf("  error: %s", r->error);
    printf("\n");
    fflush(stdout);
}

static int cmd_watch(cli *o)
{
    ihc_watch_opts wo = {.pub_url = o->cfg.pub_url,
                         .secret = o->cfg.secret,
                         .secret_len = o->cfg.secret_len,
                         .tls_ca = o->cfg.tls_ca,
                         .tls_cert = o->cfg.tls_cert,
                         .tls_key = o->cfg.tls_key,
                         .tls_server_name = o->cfg.tls_server_name};
    ihc_watch *w = NULL;
    int rc = ihc_watch_open(&w, &wo);
    if (rc == IHC_CLIENT_ETRANSPORT || rc == IHC_CLIENT_EINVAL)
        return usage_error("watch: %s", ihc_client_last_error(NULL));
    if (rc != IHC_CLIENT_OK) {
        fprintf(stderr, "ihc: watch: %s\n", ihc_client_last_error(NULL));
        return EXIT_INCOMPLETE;
    }
    const char *url = ihc_watch_url(w);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    fprintf(stderr, "ihc: watching interrupts from %s (Ctrl-C to stop)\n", url);
    uint64_t t0 = ihc_mono_ns();
    bool warned = false, was = false;
    uint64_t dropped = 0;
    int ex = EXIT_OK;
    while (!g_stop) {
        bool now = ihc_watch_connected(w);
        if (!now && !warned && ihc_mono_ns() - t0 > (uint64_t)WATCH_QUIET_MS * 1000000u) {
            char why[512] = "";
            /* libihc's watch does not say why a TLS connection fails: ask */
            if (ihc_tls_url(url) && ihc_tls_probe(o->cfg.tls, url, IHC_SP_SUB, IHC_SP_PUB,
                                                  WATCH_POLL_MS, why, sizeof why) != IHC_ETRANSPORT)
                why[0] = '\0';
            fprintf(stderr, "ihc: watch: waiting for the coordinator at %s...%s%s\n", url,
                    why[0] ? " TLS: " : "", why);
            warned = true;
        }
        if (now && !was && warned)
            fprintf(stderr, "ihc: watch: connected to %s\n", url);
        was = now;
        ihc_result *r = NULL;
        rc = ihc_watch_next(w, WATCH_POLL_MS, &r);
        uint64_t d = ihc_watch_dropped(w);
        if (d == dropped + 1)
            fprintf(stderr, "ihc: watch: bad event skipped: %s\n", ihc_watch_last_error(w));
        else if (d > dropped)
            fprintf(stderr, "ihc: watch: %llu bad events skipped; the last: %s\n",
                    (unsigned long long)(d - dropped), ihc_watch_last_error(w));
        dropped = d;
        if (rc == IHC_CLIENT_OK) {
            watch_line(r, o->json);
            ihc_result_free(r);
        } else if (rc != IHC_CLIENT_ETIMEDOUT && !g_stop) {
            fprintf(stderr, "ihc: watch: %s\n", ihc_watch_last_error(w));
            ex = EXIT_INCOMPLETE;
            break;
        }
    }
    ihc_watch_close(w);
    return ex;
}

/* Options of the command line itself; every other long option is a setting of config.c. */
static const struct {
    const char *name;
    const char *metavar;
    size_t off; /* of the const char * in cli */
} own_opts[] = {
    {"--reason", "TEXT", offsetof(cli, reason)},
    {"--timeout", "MS", offsetof(cli, timeout_arg)},
};

/* Splits argv into the command, its arguments, our own options and the settings left for
 * ihc_config_load (which names an unknown option or a bad value). Returns -1 to go on, else
 * an exit status. */
static int parse_args(cli *o, int argc, char **argv, int *run_at)
{
    bool opts_done = false;
    o->cfg_argv[o->cfg_argc++] = argv[0];
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (opts_done || a[0] != '-' || a[1] == '\0') {
            if (o->cmd == NULL) {
                o->cmd = a;
                if (strcmp(a, "run") == 0) {
                    *run_at = i;
                    return -1;
                }
            } else {
                if (o->n_pos < MAX_POS)
                    o->pos[o->n_pos] = a;
                o->n_pos++;
            }
            continue;
        }
        if (strcmp(a, "--") == 0) {
            opts_done = true;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage_text, stdout);
            return EXIT_OK;
        }
        if (strcmp(a, "--version") == 0) {
            printf("ihc %s\n", IHC_VERSION);
            return EXIT_OK;
        }
        if (o->first_opt == NULL)
            o->first_opt = a;
        if (strcmp(a, "--json") == 0) {
            o->json = true;
            continue;
        }
        if (a[1] != '-')
            return usage_error("unknown option '%s'", a);
        const char *eq = strchr(a, '=');
        size_t nl = eq != NULL ? (size_t)(eq - a) : strlen(a);
        /* as ihc_config_load reads it: the next argument is the value unless it is an option */
        const char *next = i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0 ? argv[i + 1] : NULL;
        const char *val = eq != NULL ? eq + 1 : next;
        bool ours = false;
        for (size_t k = 0; k < sizeof own_opts / sizeof own_opts[0] && !ours; k++) {
            if (strlen(own_opts[k].name) != nl || strncmp(a, own_opts[k].name, nl) != 0)
                continue;
            ours = true;
            if (val == NULL)
                return usage_error("option '%s' requires a value (%s)", own_opts[k].name,
                                   own_opts[k].metavar);
            if (eq == NULL)
                i++;
            *(const char **)(void *)((char *)o + own_opts[k].off) = val;
        }
        if (ours)
            continue;
        /* A setting of config.c (--control, --pub, --secret-file, --log-level…) or an unknown
         * option: forwarded with its value for ihc_config_load to judge. */
        o->pub_given = o->pub_given || (nl == 5 && strncmp(a, "--pub", 5) == 0);
        if (o->cfg_argc + 2 > MAX_CFG_ARGS)
            return usage_error("too many options");
        o->cfg_argv[o->cfg_argc++] = a;
        if (eq == NULL && next != NULL && strcmp(a, "--print-config") != 0)
            o->cfg_argv[o->cfg_argc++] = argv[++i];
    }
    return -1;
}

/* Checks --timeout against the command's limit and stores it. Returns -1 when fine. */
static int check_timeout(cli *o, bool interrupt)
{
    if (o->timeout_arg == NULL)
        return -1;
    long max = interrupt ? IHC_INTERRUPT_TIMEOUT_MAX_MS : QUERY_WAIT_MAX_MS;
    char *end = NULL;
    errno = 0;
    long v = strtol(o->timeout_arg, &end, 10);
    if (end == o->timeout_arg || *end != '\0' || errno == ERANGE || v < 1 || v > max) {
        if (interrupt)
            return usage_error("--timeout %s: an interrupt's timeout is 1 to %ld ms",
                               o->timeout_arg, max);
        return usage_error("--timeout %s: the wait for an answer is 1 to %ld ms", o->timeout_arg,
                           max);
    }
    o->timeout_ms = v;
    return -1;
}

/* Checks the command and its arguments before anything is connected. Returns -1 when fine,
 * else the exit status of a usage error. */
static int check_command(cli *o)
{
    static const char *const cmds[] = {"interrupt", "sessions", "agents",
                                       "flags",     "stats",    "watch"};
    const char *cmd = o->cmd;
    if (cmd == NULL)
        return usage_error("missing COMMAND (interrupt, sessions, agents, flags, stats, watch "
                           "or run)");
    bool known = false;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        known = known || strcmp(cmd, cmds[i]) == 0;
    if (!known)
        return usage_error("unknown command '%s'", cmd);
    bool interrupt = strcmp(cmd, "interrupt") == 0;
    bool watch = strcmp(cmd, "watch") == 0;
    if (o->reason != NULL && !interrupt)
        return usage_error("--reason is only for interrupt");
    if (o->pub_given && !watch)
        return usage_error("--pub is only for watch");
    if (o->timeout_arg != NULL && watch)
        return usage_error("--timeout is not for watch (it runs until Ctrl-C)");
    int ex = check_timeout(o, interrupt);
    if (ex >= 0)
        return ex;
    if (interrupt) {
        if (o->n_pos == 0)
            return usage_error("interrupt: missing HW (the hardware_id to stop)");
        if (o->n_pos > 1)
            return usage_error("interrupt: takes one HW, got %d arguments", o->n_pos);
        if (!ihc_hw_valid(o->pos[0], strlen(o->pos[0]), true))
            return usage_error("interrupt: invalid hardware_id '%.140s' (1-128 bytes of "
                               "[A-Za-z0-9._:@-], or * for all)",
                               o->pos[0]);
        return -1;
    }
    if (strcmp(cmd, "sessions") == 0) {
        if (o->n_pos > 1)
            return usage_error("sessions: takes at most one HW, got %d arguments", o->n_pos);
        if (o->n_pos == 1 && !ihc_hw_valid(o->pos[0], strlen(o->pos[0]), false))
            return usage_error("sessions: invalid hardware_id '%.140s' (1-128 bytes of "
                               "[A-Za-z0-9._:@-])",
                               o->pos[0]);
        return -1;
    }
    if (strcmp(cmd, "flags") == 0) {
        if (o->n_pos > 1 || (o->n_pos == 1 && strcmp(o->pos[0], "reset") != 0))
            return usage_error("flags: the only argument is 'reset'");
        return -1;
    }
    if (o->n_pos > 0)
        return usage_error("%s: takes no arguments", cmd);
    return -1;
}

static int cli_main(int argc, char **argv)
{
    cli o = {0};
    int run_at = -1;
    int ex = parse_args(&o, argc, argv, &run_at);
    if (ex >= 0)
        return ex;
    if (run_at >= 0) {
        if (o.first_opt != NULL)
            return usage_error("'%s' is not an option of run (put run's options after 'run')",
                               o.first_opt);
        return ihc_run_main(argc - run_at, argv + run_at);
    }

    char err[512];
    o.cfg_argv[o.cfg_argc] = NULL;
    if (ihc_config_load(&o.cfg, IHC_ROLE_CLI, o.cfg_argc, o.cfg_argv, NULL, NULL, err,
                        sizeof err) != IHC_OK) {
        ihc_config_fini(&o.cfg);
        return usage_error("%s", err);
    }
    if (o.cfg.want_print_config) {
        ihc_config_dump(stdout, &o.cfg, IHC_ROLE_CLI);
        ihc_config_fini(&o.cfg);
        return EXIT_OK;
    }
    ex = check_command(&o);
    if (ex >= 0) {
        ihc_config_fini(&o.cfg);
        return ex;
    }
    const char *cmd = o.cmd;
    bool is_interrupt = strcmp(cmd, "interrupt") == 0;
    if (strcmp(cmd, "watch") == 0) {
        ex = cmd_watch(&o);
        ihc_config_fini(&o.cfg);
        return ex;
    }

    ihc_client_opts co = {
        .control_url = o.cfg.control_url,
        .secret = o.cfg.secret,
        .secret_len = o.cfg.secret_len,
        .tls_ca = o.cfg.tls_ca,
        .tls_cert = o.cfg.tls_cert,
        .tls_key = o.cfg.tls_key,
        .tls_server_name = o.cfg.tls_server_name,
    };
    if (is_interrupt)
        co.timeout_ms = (int)(o.cfg.interrupt_timeout * 1000.0) + INTERRUPT_MARGIN_MS;
    else
        co.timeout_ms = (int)o.timeout_ms; /* 0: libihc's default */
    ihc_client *c = NULL;
    int rc = ihc_client_open(&c, &co);
    if (rc != IHC_CLIENT_OK) {
        if (rc == IHC_CLIENT_ETRANSPORT || rc == IHC_CLIENT_EINVAL) {
            ex = usage_error("%s", ihc_client_last_error(NULL));
        } else {
            fprintf(stderr, "ihc: %s\n", ihc_client_last_error(NULL));
            ex = EXIT_INCOMPLETE;
        }
        ihc_config_fini(&o.cfg);
        return ex;
    }
    if (is_interrupt)
        ex = cmd_interrupt(&o, c);
    else if (strcmp(cmd, "sessions") == 0)
        ex = run_query(&o, c, "sessions", o.n_pos ? o.pos[0] : NULL, show_sessions);
    else if (strcmp(cmd, "flags") == 0 && o.n_pos == 1)
        ex = run_query(&o, c, "flags_reset", NULL, NULL);
    else if (strcmp(cmd, "flags") == 0)
        ex = run_query(&o, c, "flags", NULL, show_keyvals);
    else if (strcmp(cmd, "agents") == 0)
        ex = run_query(&o, c, "agents", NULL, show_agents);
    else
        ex = run_query(&o, c, "stats", NULL, show_keyvals);
    ihc_client_close(c);
    ihc_config_fini(&o.cfg);
    return ex;
}

int main(int argc, char **argv)
{
    int ex = cli_main(argc, argv);
    nng_fini(); /* joins nng's threads: a clean exit for leak checkers */
    return ex;
}
