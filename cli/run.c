/* `ihc run`: starts a command in its own process group, registers it with the local agent
 * as a session with its pid, and stops it (SIGTERM to the group) when the agent says the
 * session was interrupted; the agent escalates to SIGKILL after its grace period. */
#include "run.h"

#include <errno.h>
#include <fcntl.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
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
            "  --local URL    the agent's local endpoint (env IHC_LOCAL_URL, default %s)\n"
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

/* ---- talking to the agent ---- */

static int local_open(const char *url, nng_duration recv_timeout, nng_socket *s, char *err,
                      size_t err_len)
{
    int rv = nng_req0_open(s);
    if (rv != 0) {
        snprintf(err, err_len, "%s", nng_strerror(rv));
        return IHC_ETRANSPORT;
    }
    nng_socket_set_ms(*s, NNG_OPT_RECVTIMEO, recv_timeout);
    nng_socket_set_ms(*s, NNG_OPT_SENDTIMEO, CALL_TIMEOUT_MS);
    nng_socket_set_size(*s, NNG_OPT_RECVMAXSZ, RECV_MAX);
    if ((rv = nng_dial(*s, url, NULL, 0)) != 0) {
        snprintf(err, err_len, "%s", nng_strerror(rv));
        nng_close(*s);
        return IHC_ETRANSPORT;
    }
    return IHC_OK;
}

/* One request/response. On IHC_ETRANSPORT *nng_rv holds nng's error; on IHC_OK the caller
 * owns *out (a local_response). */
static int local_call(nng_socket s, const ihc_local_request *q, ihc_msg **out, int *nng_rv,
                      char *err, size_t err_len)
{
    ihc_msg m = {.type = IHC_MSG_LOCAL_REQUEST};
    m.u.local_request = *q;
    uint8_t *buf = NULL;
    size_t len = 0;
    char *rbuf = NULL;
    size_t rlen = 0;
    *out = NULL;
    *nng_rv = 0;
    int rc = ihc_wire_encode(&m, NULL, &buf, &len);
    if (rc != IHC_OK) {
        snprintf(err, err_len, "cannot encode the request: %s", ihc_strerror(rc));
        return rc;
    }
    int rv = nng_send(s, buf, len, 0);
    free(buf);
    if (rv == 0)
        rv = nng_recv(s, &rbuf, &rlen, NNG_FLAG_ALLOC);
    if (rv != 0) {
        *nng_rv = rv;
        snprintf(err, err_len, "%s", nng_strerror(rv));
        return IHC_ETRANSPORT;
    }
    char detail[256] = "";
    rc = ihc_wire_decode((const uint8_t *)rbuf, rlen, NULL, out, detail, sizeof(detail));
    nng_free(rbuf, rlen);
    if (rc != IHC_OK) {
        snprintf(err, err_len, "bad response: %s", detail[0] ? detail : ihc_strerror(rc));
        return rc;
    }
    if ((*out)->type != IHC_MSG_LOCAL_RESPONSE) {
        snprintf(err, err_len, "bad response: unexpected '%s' message",
                 ihc_msg_type_name((*out)->type));
        ihc_msg_free(*out);
        *out = NULL;
        return IHC_EPROTO;
    }
    return IHC_OK;
}

/* ---- waiting for the stop in a thread ---- */

typedef enum { WAIT_PENDING, WAIT_INTERRUPTED, WAIT_DONE, WAIT_ERROR, WAIT_CLOSED } wait_result;

typedef struct {
    nng_socket s;
    const char *sid;
    int notify_fd;
    atomic_int result; /* a wait_result, set before notify_fd is written */
    char err[512];
} waiter;

static void *wait_main(void *arg)
{
    waiter *w = arg;
    ihc_local_request q = {.op = "wait", .session_id = (char *)w->sid};
    ihc_msg *resp = NULL;
    int nng_rv = 0;
    int rc = local_call(w->s, &q, &resp, &nng_rv, w->err, sizeof(w->err));
    wait_result result;
    if (rc == IHC_ETRANSPORT && nng_rv == NNG_ECLOSED)
        result = WAIT_CLOSED; /* ihc run is finishing */
    else if (rc != IHC_OK)
        result = WAIT_ERROR;
    else if (resp->u.local_response.status != IHC_OK) {
        result = WAIT_ERROR;
        snprintf(w->err, sizeof(w->err), "%s",
                 resp->u.local_response.error ? resp->u.local_response.error
                                              : ihc_strerror(resp->u.local_response.status));
    } else if (resp->u.local_response.state &&
               strcmp(resp->u.local_response.state, "interrupted") == 0)
        result = WAIT_INTERRUPTED;
    else
        result = WAIT_DONE;
    ihc_msg_free(resp);
    atomic_store(&w->result, (int)result);
    char c = 1;
    while (write(w->notify_fd, &c, 1) < 0 && errno == EINTR)
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

    int status = 1;
    char err[512] = "";
    nng_socket cs = NNG_SOCKET_INITIALIZER, ws = NNG_SOCKET_INITIALIZER;
    bool cs_open = false, ws_open = false, thread_started = false;
    int gate[2] = {-1, -1}, errp[2] = {-1, -1}, notify[2] = {-1, -1}, sfd = -1;
    pid_t child = -1, pgid = -1;
    ihc_msg *resp = NULL;
    int nng_rv;
    waiter w = {.notify_fd = -1};
    atomic_init(&w.result, WAIT_PENDING);
    pthread_t wt;
    char sid[IHC_ID_MAX + 1] = "";

    /* signals are read from a signalfd; block them before any thread (nng's) exists */
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

    /* reach the agent before starting anything */
    if (local_open(ra.url, CALL_TIMEOUT_MS, &cs, err, sizeof(err)) != IHC_OK)
        goto unreachable;
    cs_open = true;
    ihc_local_request ping = {.op = "ping"};
    if (local_call(cs, &ping, &resp, &nng_rv, err, sizeof(err)) != IHC_OK)
        goto unreachable;
    ihc_msg_free(resp);
    resp = NULL;
    if (local_open(ra.url, NNG_DURATION_INFINITE, &ws, err, sizeof(err)) != IHC_OK)
        goto unreachable;
    ws_open = true;

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
    ihc_local_request begin = {.op = "begin",
                               .pid = (int32_t)child,
                               .hw = (char *)ra.hw,
                               .session_id = (char *)ra.session,
                               .module = (char *)ra.module,
                               .data = data};
    int rc = local_call(cs, &begin, &resp, &nng_rv, err, sizeof(err));
    if (rc != IHC_OK || resp->u.local_response.status != IHC_OK ||
        !resp->u.local_response.session_id) {
        if (rc == IHC_ETRANSPORT) {
            fprintf(stderr, PFX "lost the ihc agent at %s: %s\n", ra.url, err);
            status = EXIT_UNREACHABLE;
        } else if (rc != IHC_OK) {
            fprintf(stderr, PFX "the agent at %s answered badly: %s\n", ra.url, err);
        } else {
            const ihc_local_response *r = &resp->u.local_response;
            fprintf(stderr, PFX "the agent refused the session: %s\n",
                    r->error              ? r->error
                    : r->status != IHC_OK ? ihc_strerror(r->status)
                                          : "no session id");
            status = EXIT_REFUSED;
        }
        kill(child, SIGKILL); /* it has not exec'd yet: it waits on the gate */
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
            ;
        child = -1;
        goto out;
    }
    snprintf(sid, sizeof(sid), "%s", resp->u.local_response.session_id);
    bool interrupted =
        resp->u.local_response.state && strcmp(resp->u.local_response.state, "interrupted") == 0;
    ihc_msg_free(resp);
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

    w.s = ws;
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

    /* the session ends with the command ("done"); after an interrupt the agent may already
     * have cleaned it up */
    ihc_local_request end = {.op = "end", .session_id = sid};
    rc = local_call(cs, &end, &resp, &nng_rv, err, sizeof(err));
    if (rc != IHC_OK)
        fprintf(stderr, PFX "warning: could not end session %s: %s\n", sid, err);
    else if (resp->u.local_response.status != IHC_OK && resp->u.local_response.status != IHC_ENOENT)
        fprintf(stderr, PFX "warning: could not end session %s: %s\n", sid,
                resp->u.local_response.error ? resp->u.local_response.error
                                             : ihc_strerror(resp->u.local_response.status));
    /* the agent answers the pending wait when the session ends: let it, rather than close
     * the socket under a request in flight */
    if (waiting) {
        struct pollfd pf = {.fd = notify[0], .events = POLLIN};
        if (poll(&pf, 1, rc == IHC_OK ? CALL_TIMEOUT_MS : 0) == 1)
            waiting = false;
    }
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
    ihc_msg_free(resp);
    if (ws_open)
        nng_close(ws); /* ends the thread's wait with NNG_ECLOSED */
    if (thread_started)
        pthread_join(wt, NULL);
    if (cs_open)
        nng_close(cs);
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
