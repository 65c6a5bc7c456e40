/* Test harness: free ports, child processes that die with the test, a real redis-server
 * per test, and waiting for conditions with deadlines instead of sleeping. */
#ifndef IHC_TEST_HARNESS_H
#define IHC_TEST_HARNESS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdbool.h>
#include <sys/types.h>
#include <cmocka.h>

/* Fails the test with ihc_strerror(rc) when rc != IHC_OK. */
#define TH_PASS(expr)                                                                              \
    do {                                                                                           \
        int th_rc_ = (expr);                                                                       \
        if (th_rc_ != 0)                                                                           \
            fail_msg("%s: %s (%s)", #expr, ihc_strerror(th_rc_), ihc_err_name(th_rc_));            \
    } while (0)

/* Fails unless expr gives exactly the ihc code want. */
#define TH_FAIL(expr, want)                                                                        \
    do {                                                                                           \
        int th_rc_ = (expr);                                                                       \
        if (th_rc_ != (want))                                                                      \
            fail_msg("%s: got %s, want %s", #expr, ihc_err_name(th_rc_), ihc_err_name(want));      \
    } while (0)

/* A TCP port on 127.0.0.1, free when picked, outside the kernel's ephemeral range (so no
 * client socket takes it) and reserved for this process against other test processes. */
int th_free_port(void);

/* Path of a built program ("ihc-agent") in the build's bin directory; static buffer. */
const char *th_bin(const char *name);

/* A fresh temporary directory (mkdtemp under $TMPDIR or /tmp); static buffer per call is
 * NOT kept: the result is malloc'd, caller frees. */
char *th_tmpdir(const char *tag);
/* Removes a directory made by th_tmpdir and all in it (NULL: nothing), unless IHC_KEEP_LOGS
 * is set (or the older IHC_KEEP_TMP / IHC_TEST_KEEP): then it says where the logs are. */
void th_tmpdir_remove(const char *dir);

/* Makes test certificates with deploy/make-certs.sh into dir (created when missing): ca.pem,
 * coordinator.pem/.key (names coordinator, localhost, 127.0.0.1, ::1), agent-1..3 and client;
 * args (may be NULL) are more options for the script ("--expired --agents old"). Returns 0 or
 * -1 (the script's output is printed). */
int th_make_certs(const char *dir, const char *args);

/* Starts argv[0] with argv, stdout/stderr appended to logfile (NULL: inherit), extra
 * environment entries env ("K=V", NULL-terminated, may be NULL). The child gets
 * PR_SET_PDEATHSIG SIGKILL, so it never outlives the test. Returns the pid, or -1. */
pid_t th_spawn(char *const argv[], const char *logfile, char *const env[]);

/* Sends sig to pid and waits up to timeout_ms for it to exit, then SIGKILLs it. Returns the
 * wait status (as from waitpid), or -1 if pid was not a child. */
int th_stop(pid_t pid, int sig, int timeout_ms);

/* Waits up to timeout_ms for pid to exit on its own; returns the wait status or -1 on
 * timeout (the process is left running). */
int th_wait_exit(pid_t pid, int timeout_ms);

/* Polls cond(arg) every few ms until it holds or timeout_ms passes. */
bool th_wait_until(bool (*cond)(void *arg), void *arg, int timeout_ms);

/* Same, for an expression: TH_WAIT(expr, timeout_ms) evaluates to true when expr held. */
#define TH_WAIT(expr, timeout_ms)                                                                  \
    ({                                                                                             \
        uint64_t th_end_ = th_now_ms_() + (uint64_t)(timeout_ms);                                  \
        bool th_ok_ = false;                                                                       \
        for (;;) {                                                                                 \
            if ((expr)) {                                                                          \
                th_ok_ = true;                                                                     \
                break;                                                                             \
            }                                                                                      \
            if (th_now_ms_() >= th_end_)                                                           \
                break;                                                                             \
            th_sleep_ms_(5);                                                                       \
        }                                                                                          \
        th_ok_;                                                                                    \
    })
uint64_t th_now_ms_(void);
void th_sleep_ms_(unsigned ms);

/* Log files of started processes: the whole file as a malloc'd string (caller frees; ""
 * when missing), whether it contains needle at or after byte offset from, and its size. */
char *th_slurp(const char *path);
bool th_log_has(const char *path, const char *needle, size_t from);
size_t th_file_size(const char *path);
/* Prints the last lines of a log to stderr, so that a failure seen only in CI's output
 * still shows what the process said (its temporary directory is gone by then). */
void th_log_tail(const char *path, int lines);

/* A real redis-server on 127.0.0.1:port, data in its own temporary directory. */
typedef struct {
    pid_t pid;
    int port;
    char *dir;
    char url[192];        /* "redis://127.0.0.1:<port>/0" ("redis://:<password>@…" with one,
                           * the password percent-encoded) */
    const char *password; /* optional, set before th_redis_start: --requirepass; the harness
                           * itself (readiness, th_redis_cmd) then authenticates */
    bool unix_socket;     /* optional, set before th_redis_start: also listen on sock */
    const char *aclfile;  /* optional, set before th_redis_start: --aclfile instead of
                           * --requirepass; password is then the default user's */
    char sock[108];       /* "<dir>/redis.sock" with unix_socket, else "" (a socket address
                           * holds 107 bytes of path) */
} th_redis;

/* Percent-encodes s for the user info of a URL (everything but [A-Za-z0-9._~-]) into out;
 * returns out. */
char *th_pct_encode(const char *s, char *out, size_t len);

/* Starts redis-server on a free port (or r->port when non-zero, for restarts) and waits
 * until it answers PING (10 s deadline). Returns 0 or -1. */
int th_redis_start(th_redis *r);
/* Kills it (SIGKILL, as a crash would) and waits; the port stays in r->port. */
void th_redis_kill(th_redis *r);
/* Stops it and removes its directory. Safe to call twice. */
void th_redis_stop(th_redis *r);
/* Runs one command on it (printf-like, hiredis syntax); returns the reply as a malloc'd
 * string ("(nil)" for nil, integers in decimal, arrays joined by '\n'), NULL on error. */
char *th_redis_cmd(const th_redis *r, const char *fmt, ...);

/* One HTTP/1.1 request to 127.0.0.1:port (Connection: close). headers: extra header lines
 * ("Authorization: Bearer x\r\n"), may be NULL; body may be NULL. Returns the status code
 * (or -1 on connection failure) and, when resp is not NULL, the malloc'd response body. */
int th_http(int port, const char *method, const char *path, const char *headers, const char *body,
            char **resp);

/* Reads an HTTP answer from fd until the peer closes, then closes fd. Returns the status
 * (-1 when no status line came) and, when body is not NULL, the malloc'd body (NULL when
 * there was none). */
int th_http_read_answer(int fd, char **body);

/* Closes an nng socket (its id), waiting at most 5 s: nng 1.5.2's nng_close can hang
 * (sockclose.h); a test then goes on, with a warning, instead of hanging until its timeout. */
void th_close(int sock_id);

/* The agent's local API (HTTP on a Unix socket) with raw sockets. th_unix_connect: a
 * connected socket (10 s receive timeout) or -1. th_unix_http: one request with
 * Connection: close, as th_http. th_http_send: a request on fd that keeps it alive (0 or -1);
 * th_http_read_one: one answer on fd (by Content-Length), its status (-1: none) and body
 * (malloc'd). th_fd_read_until: reads fd until needle was seen (true) or timeout_ms passed
 * or the peer closed; *seen (may be NULL) gets everything read (malloc'd). */
int th_unix_connect(const char *path);
int th_unix_http(const char *sock, const char *method, const char *path, const char *body,
                 char **resp);
int th_http_send(int fd, const char *method, const char *path, const char *body);
int th_http_read_one(int fd, char **body);
bool th_fd_read_until(int fd, const char *needle, int timeout_ms, char **seen);

/* A control request to the coordinator's REP socket at url (op "interrupt", "sessions"…);
 * returns the response status (or -1 when unreachable within timeout_ms) and the JSON body
 * in *json (malloc'd). hw and reason may be NULL. */
int th_control(const char *url, const char *op, const char *hw, const char *reason,
               int64_t timeout_ms, char **json);

/* An ihc-coordinator started by a test on free ports, its log in a file. */
typedef struct {
    int pub, rep, ctl, http;
    char pub_url[64], rep_url[64], ctl_url[64], http_addr[64], log[4300];
    pid_t pid;
} th_coord;

/* Picks c's free ports (URLs on 127.0.0.1) and its log file dir/name.log. */
void th_coord_ports(th_coord *c, const char *dir, const char *name);
/* Starts ihc-coordinator on c's ports against redis_url, as IHC_COORDINATOR_ID=id, with the
 * settings env ("KEY=value", NULL-terminated, at most 14; NULL: none), and waits for its
 * GET /healthz (the test fails with the log's tail when it does not answer in 10 s). */
void th_coord_start(th_coord *c, const char *redis_url, const char *id, const char *const *env);
/* True when c says (GET /healthz) it leads. */
bool th_coord_leads(const th_coord *c);

#endif
