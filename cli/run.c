/* `ihc run`: starts a command in its own process group, registers it with the local agent's
 * HTTP API (libcurl on the Unix socket) as a session with its pid, follows the session's
 * event stream and stops the command (SIGTERM to the group) on `event: stop`; the agent
 * escalates to SIGKILL after its grace period. DELETE reports how the command ended. */
#include "run.h"

#include <errno.h>
#include <fcntl.h>
#include <curl/curl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "defaults.h"
#include "err.h"
#include "wire.h"

#define PFX             "ihc run: "
#define CALL_TIMEOUT_MS 5000
#define RECV_MAX        (64u * 1024u)
#define DATA_MAX        1024

#define EXIT_REFUSED     1
#define EXIT_USAGE       2
#define EXIT_UNREACHABLE 3

typedef struct {
    const char *hw;
    const char *session;
    const char *module;
    const char *url;
    char **cmd;
} run_args;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: ihc run --hw HW [--session ID] [--module NAME] [--local URL] -- CMD [ARG...]\n"
            "\n"
            "Runs CMD as a session of hardware_id HW through the local ihc-agent. When HW is\n"
            "interrupted, CMD's process group gets SIGTERM; the agent sends SIGKILL if it has not\n"
            "ended after the module timeout and grace period (FORCE_CLEANUP, IHC_KILL_GRACE).\n"
            "SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to ihc run are forwarded to CMD.\n"
            "\n"
            "  --hw HW        hardware_id the command works for (1-128 bytes of [A-Za-z0-9._:@-])\n"
            "  --session ID   session id (default: chosen by the agent)\n"
            "  --module NAME  module the session belongs to\n"
            "  --local URL    the agent's local API socket (env IHC_LOCAL_URL, default %s)\n"
            "\n"
            "Exit status: CMD's status, 128+N when CMD died of signal N, 1 when the agent refused\n"
            "the session, 2 usage error, 3 agent unreachable.\n",
            IHC_DEFAULT_LOCAL_URL);
}

/* Returns 0 to run, 1 for --help, -1 on a usage error (its one line already printed). */
static int parse_args(int argc, char **argv, run_args *ra)
{
    int i;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            return 1;
        if (a[0] != '-')
            break; /* the command starts here */
        static const struct {
            const char *name;
            const char *metavar;
            size_t off;
        } opts[] = {
            {"--hw", "HW", offsetof(run_args, hw)},
            {"--session", "ID", offsetof(run_args, session)},
            {"--module", "NAME", offsetof(run_args, module)},
            {"--local", "URL", offsetof(run_args, url)},
        };
        bool known = false;
        for (size_t k = 0; k < sizeof(opts) / sizeof(opts[0]) && !known; k++) {
            size_t n = strlen(opts[k].name);
            if (strncmp(a, opts[k].name, n) != 0 || (a[n] != '\0' && a[n] != '='))
                continue;
            known = true;
            const char *v = a[n] == '=' ? a + n + 1 : NULL;
            if (!v) {
                if (i + 1 >= argc) {
                    fprintf(stderr, PFX "option '%s' requires a value (%s)\n", opts[k].name,
                            opts[k].metavar);
                    return -1;
                }
                v = argv[++i];
            }
            *(const char **)(void *)((char *)ra + opts[k].off) = v;
        }
        if (!known) {
            fprintf(stderr, PFX "unknown option '%s'\n", a);
            return -1;
        }
    }
    if (i >= argc) {
        fprintf(stderr, PFX "no command given\n");
        return -1;
    }
    ra->cmd = argv + i;
    if (!ra->hw) {
        fprintf(stderr, PFX "--hw HW is required\n");
        return -1;
    }
    if (!ihc_hw_valid(ra->hw, strlen(ra->hw), false)) {
        fprintf(stderr, PFX "--hw '%s': invalid hardware_id (1-128 bytes of [A-Za-z0-9._:@-])\n",
                ra->hw);
        return -1;
    }
    if (ra->session && !ihc_id_valid(ra->session, strlen(ra->session))) {
        fprintf(stderr, PFX "--session '%s': invalid id (1-128 bytes of [A-Za-z0-9._:@-])\n",
                ra->session);
        return -1;
    }
    if (ra->module && !ihc_id_valid(ra->module, strlen(ra->module))) {
        fprintf(stderr, PFX "--module '%s': invalid name (1-128 bytes of [A-Za-z0-9._:@-])\n",
                ra->module);
        return -1;
    }
    if (ra->url && !ra->url[0]) {
        fprintf(stderr, PFX "--local: empty URL\n");
        return -1;
    }
    return 0;
}

/* ---- talking to the agent (HTTP on its Unix socket, libcurl) ---- */

typedef struct {
    char *buf;
    size_t len;
} membuf;

static size_t mem_write(char *ptr, size_t size, size_t n, void *arg)
{
    membuf *m = arg;
    size_t k = size * n;
    if (m->len + k > RECV_MAX)
        return 0; /* an agent does not answer this much: abort */
    char *nb = realloc(m->buf, m->len + k + 1);
    if (!nb)
        return 0;
    memcpy(nb + m->len, ptr, k);
    m->buf = nb;
    m->len += k;
    m->buf[m->len] = '\0';
    return k;
}

static CURL *easy_for(const char *sock, const char *path)
{
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    char url[IHC_ID_MAX + 64];
    snprintf(url, sizeof url, "http://localhost%s", path);
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, sock);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)CALL_TIMEOUT_MS);
    return c;
}

/* One request: method on path with an optional JSON body. On IHC_OK, *status is the HTTP
 * status and *out (caller owns; may be NULL when the body is not JSON) the answer. On
 * IHC_ETRANSPORT the agent could not be reached or did not answer: err says why. */
static int local_call(const char *sock, const char *method, const char *path, json_t *body,
                      long *status, json_t **out, char *err, size_t err_len)
{
    *out = NULL;
    *status = 0;
    CURL *c = easy_for(sock, path);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (!c || (body && !text)) {
        curl_easy_cleanup(c);
        free(text);
        snprintf(err, err_len, "out of memory");
        return IHC_ENOMEM;
    }
    membuf m = {0};
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)CALL_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, mem_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &m);
    if (text) {
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
    }
    CURLcode cc = curl_easy_perform(c);
    int rc = IHC_OK;
    if (cc != CURLE_OK) {
        snprintf(err, err_len, "%s", curl_easy_strerror(cc));
        rc = IHC_ETRANSPORT;
    } else {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
        *out = m.buf ? json_loadb(m.buf, m.len, 0, NULL) : NULL;
        const char *e = json_string_value(json_object_get(*out, "error"));
        snprintf(err, err_len, "%s", e ? e : "no error message");
    }
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    free(text);
    free(m.buf);
    return rc;
}

/* ---- waiting for the stop in a thread (the session's event stream) ---- */

typedef enum { WAIT_PENDING, WAIT_INTERRUPTED, WAIT_DONE, WAIT_ERROR, WAIT_CLOSED } wait_result;

typedef struct {
    const char *sock;
    const char *sid;
    int notify_fd;
    CURLM *multi;
    atomic_bool stop;  /* ihc run is finishing: end the stream */
    atomic_int result; /* a wait_result, set before notify_fd is written */
    char line[512];    /* the line being read */
    size_t line_len;
    char event[32]; /* the current event's name */
    char err[512];
} waiter;

/* One line of the stream: "event: NAME", "data: …", a comment, or the blank line that ends
 * an event. Returns false when the wait is decided. */
static bool sse_line(waiter *w, const char *line)
{
    if (strncmp(line, "event:", 6) == 0) {
        const char *v = line + 6;
        while (*v == ' ')
            v++;
        snprintf(w->event, sizeof w->event, "%s", v);
        return true;
    }
    if (line[0] != '\0')
        return true; /* data, comments, keepalives */
    if (strcmp(w->event, "stop") == 0) {
        atomic_store(&w->result, WAIT_INTERRUPTED);
        return false;
    }
    if (strcmp(w->event, "end") == 0) {
        atomic_store(&w->result, WAIT_DONE);
        return false;
    }
    w->event[0] = '\0';
    return true;
}

static size_t sse_write(char *ptr, size_t size, size_t n, void *arg)
{
    waiter *w = arg;
    size_t k = size * n;
    for (size_t i = 0; i < k; i++) {
        char ch = ptr[i];
        if (ch == '\r')
            continue;
        if (ch != '\n') {
            if (w->line_len + 1 < sizeof w->line)
                w->line[w->line_len++] = ch;
            continue;
        }
        w->line[w->line_len] = '\0';
        w->line_len = 0;
        if (!sse_line(w, w->line))
            return 0; /* decided: abort the transfer */
    }
    return k;
}

static void *wait_main(void *arg)
{
    waiter *w = arg;
    char path[IHC_ID_MAX + 32];
    snprintf(path, sizeof path, "/v1/sessions/%s/events", w->sid);
    CURL *c = easy_for(w->sock, path);
    if (c) {
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sse_write);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, w);
        curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
        curl_multi_add_handle(w->multi, c);
    }
    int running = c != NULL;
    CURLcode done = CURLE_OK;
    while (running && !atomic_load(&w->stop)) {
        curl_multi_perform(w->multi, &running);
        int left;
        CURLMsg *msg;
        while ((msg = curl_multi_info_read(w->multi, &left)))
            if (msg->msg == CURLMSG_DONE)
                done = msg->data.result;
        if (running)
            curl_multi_poll(w->multi, NULL, 0, 1000, NULL);
    }
    int result = atomic_load(&w->result);
    if (atomic_load(&w->stop) && result == WAIT_PENDING) {
        result = WAIT_CLOSED;
    } else if (result == WAIT_PENDING) {
        result = WAIT_ERROR;
        snprintf(w->err, sizeof w->err, "the event stream ended: %s",
                 !c                 ? "out of memory"
                 : done != CURLE_OK ? curl_easy_strerror(done)
                                    : "closed");
    }
    if (c) {
        curl_multi_remove_handle(w->multi, c);
        curl_easy_cleanup(c);
    }
    atomic_store(&w->result, result);
    char ch = 1;
    while (write(w->notify_fd, &ch, 1) < 0 && errno == EINTR)
        ;
    return NULL;
}

/* ---- the command ---- */

/* {"cmd":"…"}: the command line, JSON-escaped and cut to fit. */
static void cmd_json(char *out, size_t cap, char **cmd)
{
    size_t o = 0;
    o += (size_t)snprintf(out, cap, "{\"cmd\":\"");
    for (size_t i = 0; cmd[i] && o + 16 < cap; i++) {
        if (i > 0)
            out[o++] = ' ';
        for (const unsigned char *p = (const unsigned char *)cmd[i]; *p && o + 16 < cap; p++) {
            if (*p == '"' || *p == '\\') {
                out[o++] = '\\';
                out[o++] = (char)*p;
            } else if (*p < 0x20) {
                o += (size_t)snprintf(out + o, cap - o, "\\u%04x", *p);
            } else {
                out[o++] = (char)*p;
            }
        }
    }
    snprintf(out + o, cap - o, "\"}");
}

/* Child side of fork: only async-signal-safe calls until exec. Waits for the go byte on
 * gate (the session is registered), then execs; on failure sends errno on errp. */
static _Noreturn void child_exec(char **cmd, const sigset_t *oldmask, int gate, int errp)
{
    setpgid(0, 0);
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGPIPE};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        signal(sigs[i], SIG_DFL);
    sigprocmask(SIG_SETMASK, oldmask, NULL);
    char go;
    ssize_t n;
    while ((n = read(gate, &go, 1)) < 0 && errno == EINTR)
        ;
    if (n != 1)
        _exit(125); /* not registered: never run */
    close(gate);
    execvp(cmd[0], cmd);
    int e = errno;
    while (write(errp, &e, sizeof(e)) < 0 && errno == EINTR)
        ;
    _exit(e == ENOENT ? 127 : 126);
}

static int exit_status(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return 1;
}

int ihc_run_main(int argc, char **argv)
{
    run_args ra = {0};
    int pr = parse_args(argc, argv, &ra);
    if (pr > 0) {
        usage(stdout);
        return 0;
    }
    if (pr < 0) {
        fputs("Try 'ihc run --help'.\n", stderr);
        return EXIT_USAGE;
    }
    if (!ra.url)
        ra.url = getenv("IHC_LOCAL_URL");
    if (!ra.url || !ra.url[0])
        ra.url = IHC_DEFAULT_LOCAL_URL;
    bool legacy = false;
    const char *sock = ihc_config_local_path(ra.url, &legacy);
    if (!sock || strlen(sock) >= IHC_LOCAL_PATH_MAX) {
        fprintf(stderr,
                PFX "local API URL '%s' (--local or IHC_LOCAL_URL): expected "
                    "unix:///ABSOLUTE/PATH\nTry 'ihc run --help'.\n",
                ra.url);
        return EXIT_USAGE;
    }
    if (legacy)
        fprintf(stderr, PFX "warning: %s: the old ipc:// form, read as unix://%s\n", ra.url, sock);

    int status = 1;
    char err[512] = "";
    bool thread_started = false, curl_up = false;
    int gate[2] = {-1, -1}, errp[2] = {-1, -1}, notify[2] = {-1, -1}, sfd = -1;
    pid_t child = -1, pgid = -1;
    json_t *resp = NULL, *req = NULL;
    long http = 0;
    waiter w = {.notify_fd = -1, .sock = sock};
    atomic_init(&w.result, WAIT_PENDING);
    atomic_init(&w.stop, false);
    pthread_t wt;
    char sid[IHC_ID_MAX + 1] = "";

    /* signals are read from a signalfd; block them before any thread exists */
    sigset_t sigs, oldmask;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGQUIT);
    sigaddset(&sigs, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &sigs, &oldmask);
    if ((sfd = signalfd(-1, &sigs, SFD_CLOEXEC)) < 0 || pipe2(gate, O_CLOEXEC) != 0 ||
        pipe2(errp, O_CLOEXEC) != 0 || pipe2(notify, O_CLOEXEC) != 0) {
        fprintf(stderr, PFX "%s\n", strerror(errno));
        goto out;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(w.multi = curl_multi_init())) {
        fprintf(stderr, PFX "cannot initialise libcurl\n");
        goto out;
    }
    curl_up = true;

    /* reach the agent before starting anything */
    if (local_call(sock, "GET", "/healthz", NULL, &http, &resp, err, sizeof(err)) != IHC_OK)
        goto unreachable;
    if (http != 200) {
        snprintf(err, sizeof err, "GET /healthz answered %ld", http);
        goto unreachable;
    }
    json_decref(resp);
    resp = NULL;

    child = fork();
    if (child < 0) {
        fprintf(stderr, PFX "fork: %s\n", strerror(errno));
        goto out;
    }
    if (child == 0) {
        close(gate[1]);
        close(errp[0]);
        child_exec(ra.cmd, &oldmask, gate[0], errp[1]);
    }
    pgid = child;
    setpgid(child, pgid); /* also in the child: whichever runs first */
    close(gate[0]);
    close(errp[1]);
    gate[0] = errp[1] = -1;

    char data[DATA_MAX];
    cmd_json(data, sizeof(data), ra.cmd);
    req = json_pack("{s:s,s:i,s:o}", "hardware_id", ra.hw, "pid", (int)child, "data",
                    json_loads(data, 0, NULL));
    if (req && ra.session)
        json_object_set_new(req, "session_id", json_string(ra.session));
    if (req && ra.module)
        json_object_set_new(req, "module", json_string(ra.module));
    int rc = req ? local_call(sock, "POST", "/v1/sessions", req, &http, &resp, err, sizeof(err))
                 : IHC_ENOMEM;
    const char *got_sid = json_string_value(json_object_get(resp, "session_id"));
    if (rc != IHC_OK || http != 201 || !got_sid) {
        if (rc == IHC_ETRANSPORT) {
            fprintf(stderr, PFX "lost the ihc agent at %s: %s\n", ra.url, err);
            status = EXIT_UNREACHABLE;
        } else if (rc != IHC_OK) {
            fprintf(stderr, PFX "cannot register the session: %s\n", ihc_strerror(rc));
        } else {
            fprintf(stderr, PFX "the agent refused the session: %s (HTTP %ld)\n", err, http);
            status = EXIT_REFUSED;
        }
        kill(child, SIGKILL); /* it has not exec'd yet: it waits on the gate */
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
            ;
        child = -1;
        goto out;
    }
    snprintf(sid, sizeof(sid), "%s", got_sid);
    const char *state = json_string_value(json_object_get(resp, "state"));
    bool interrupted = state && strcmp(state, "interrupted") == 0;
    json_decref(resp);
    resp = NULL;

    /* registered: let the command run */
    char go = 1;
    while (write(gate[1], &go, 1) < 0 && errno == EINTR)
        ;
    close(gate[1]);
    gate[1] = -1;
    int exec_errno = 0;
    ssize_t n;
    while ((n = read(errp[0], &exec_errno, sizeof(exec_errno))) < 0 && errno == EINTR)
        ;
    if (n == (ssize_t)sizeof(exec_errno))
        fprintf(stderr, PFX "cannot run %s: %s\n", ra.cmd[0], strerror(exec_errno));

    w.sid = sid;
    w.notify_fd = notify[1];
    if (!interrupted) {
        if (pthread_create(&wt, NULL, wait_main, &w) != 0) {
            fprintf(stderr, PFX "cannot start a thread; %s runs without interrupt supervision\n",
                    ra.cmd[0]);
        } else {
            thread_started = true;
        }
    }

    int st = 0;
    bool reaped = false, waiting = thread_started;
    if (interrupted) {
        kill(-child, SIGTERM);
        fprintf(stderr, PFX "interrupted (hardware_id %s, session %s): sent SIGTERM\n", ra.hw, sid);
    }
    while (!reaped) {
        struct pollfd pf[2] = {{.fd = sfd, .events = POLLIN}, {.fd = notify[0], .events = POLLIN}};
        int prv = poll(pf, waiting ? 2 : 1, -1);
        if (prv < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, PFX "poll: %s\n", strerror(errno));
            break;
        }
        if (pf[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si) && si.ssi_signo != SIGCHLD)
                kill(-child, (int)si.ssi_signo); /* forwarded to the command */
            pid_t r;
            while ((r = waitpid(child, &st, WNOHANG)) < 0 && errno == EINTR)
                ;
            if (r == child)
                reaped = true;
        }
        if (!reaped && (pf[1].revents & POLLIN)) {
            char c;
            if (read(notify[0], &c, 1) == 1) {
                waiting = false;
                int result = atomic_load(&w.result);
                if (result == WAIT_INTERRUPTED) {
                    interrupted = true;
                    kill(-child, SIGTERM);
                    fprintf(stderr, PFX "interrupted (hardware_id %s, session %s): sent SIGTERM\n",
                            ra.hw, sid);
                } else if (result == WAIT_DONE) {
                    fprintf(stderr,
                            PFX "warning: the agent ended session %s; %s runs on without "
                                "interrupt supervision\n",
                            sid, ra.cmd[0]);
                } else if (result == WAIT_ERROR) {
                    fprintf(stderr,
                            PFX "warning: lost session %s (%s); %s runs on without interrupt "
                                "supervision\n",
                            sid, w.err, ra.cmd[0]);
                }
            }
        }
    }
    if (!reaped)
        goto out;
    child = -1;
    status = exit_status(st);
    if (interrupted) {
        /* members of the group that ignored SIGTERM go with the command */
        kill(-pgid, SIGKILL);
        if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)
            fprintf(stderr, PFX "%s killed by SIGKILL after the grace period\n", ra.cmd[0]);
        else if (WIFSIGNALED(st))
            fprintf(stderr, PFX "%s stopped by interrupt (signal %d)\n", ra.cmd[0], WTERMSIG(st));
        else
            fprintf(stderr, PFX "%s exited with status %d after the interrupt\n", ra.cmd[0],
                    status);
    }

    /* the session ends with the command, with its state; after an interrupt the agent may
     * already have cleaned it up (404) */
    char path[IHC_ID_MAX + 16];
    snprintf(path, sizeof path, "/v1/sessions/%s", sid);
    json_decref(req);
    req = json_pack("{s:s}", "state",
                    interrupted   ? "interrupted"
                    : status == 0 ? "done"
                                  : "failed");
    rc = req ? local_call(sock, "DELETE", path, req, &http, &resp, err, sizeof(err)) : IHC_ENOMEM;
    if (rc != IHC_OK)
        fprintf(stderr, PFX "warning: could not end session %s: %s\n", sid,
                rc == IHC_ETRANSPORT ? err : ihc_strerror(rc));
    else if (http != 200 && http != 404)
        fprintf(stderr, PFX "warning: could not end session %s: %s (HTTP %ld)\n", sid, err, http);
    goto out;

unreachable:
    fprintf(stderr,
            PFX "cannot reach the ihc agent at %s: %s (is ihc-agent running? set IHC_LOCAL_URL "
                "or --local)\n",
            ra.url, err);
    status = EXIT_UNREACHABLE;

out:
    if (child > 0) {
        kill(-child, SIGKILL);
        kill(child, SIGKILL);
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    json_decref(resp);
    json_decref(req);
    if (thread_started) {
        atomic_store(&w.stop, true);
        curl_multi_wakeup(w.multi);
        pthread_join(wt, NULL);
    }
    if (w.multi)
        curl_multi_cleanup(w.multi);
    if (curl_up)
        curl_global_cleanup();
    int fds[] = {gate[0], gate[1], errp[0], errp[1], notify[0], notify[1], sfd};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    /* consume what is pending so that restoring the mask delivers nothing stale */
    struct timespec zero = {0, 0};
    while (sigtimedwait(&sigs, NULL, &zero) > 0)
        ;
    pthread_sigmask(SIG_SETMASK, &oldmask, NULL);
    return status;
}
