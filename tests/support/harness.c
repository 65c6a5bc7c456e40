/* Test harness implementation: processes, ports, redis-server, deadlines. */
#include "harness.h"

#include "err.h"
#include "sockclose.h"
#include "wire.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

uint64_t th_now_ms_(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void th_sleep_ms_(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Ports come from below the kernel's ephemeral range: a port the kernel picks for bind(0)
 * is also what it hands to outgoing connect()s, so between our pick and the daemon's bind
 * any test's client socket could take it. Tests run in parallel (ctest -j), so each pick is
 * also reserved across processes with a flock on /tmp/ihc-test-ports/<port>; the lock
 * lives as long as this process (the fd is close-on-exec and never closed), and the kernel
 * drops it when the process dies: the empty files stay, a stale lock cannot. */
static int th_port_range(int *lo, int *hi)
{
    int eph_lo = 32768;
    FILE *fp = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (fp) {
        int a, b;
        if (fscanf(fp, "%d %d", &a, &b) == 2 && a > 2048)
            eph_lo = a;
        fclose(fp);
    }
    *lo = eph_lo > 12000 ? 10000 : 1025;
    *hi = eph_lo - 1;
    return *hi > *lo ? 0 : -1;
}

static bool th_port_bindable(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

/* Takes the cross-process reservation of port; returns the fd that holds it, or -1. */
static int th_port_reserve(int port)
{
    const char *dir = "/tmp/ihc-test-ports";
    if (mkdir(dir, 01777) == 0)
        chmod(dir, 01777); /* umask would narrow it; other users' tests share the dir */
    char path[64];
    snprintf(path, sizeof(path), "%s/%d", dir, port);
    int fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0666); /* flock needs no write */
    if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

int th_free_port(void)
{
    int lo, hi;
    if (th_port_range(&lo, &hi) != 0)
        return -1;
    static unsigned seed;
    if (!seed)
        seed = (unsigned)getpid() ^ (unsigned)th_now_ms_();
    for (int tries = 0; tries < 1000; tries++) {
        int port = lo + (int)(rand_r(&seed) % (unsigned)(hi - lo + 1));
        int fd = th_port_reserve(port);
        if (fd < 0)
            continue;
        if (th_port_bindable(port))
            return port; /* fd stays open: the reservation is ours until we exit */
        close(fd);
    }
    return -1;
}

const char *th_bin(const char *name)
{
    static __thread char path[4096];
    const char *dir = getenv("IHC_BIN_DIR");
    snprintf(path, sizeof(path), "%s/%s", dir ? dir : IHC_BIN_DIR, name);
    return path;
}

char *th_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof(tmpl), "%s/ihc-%s-XXXXXX", base ? base : "/tmp", tag);
    if (!mkdtemp(tmpl))
        return NULL;
    return strdup(tmpl);
}

int th_make_certs(const char *dir, const char *args)
{
    char cmd[8192];
    snprintf(cmd, sizeof(cmd), "bash '%s/deploy/make-certs.sh' %s '%s' >'%s/make-certs.log' 2>&1",
             IHC_SOURCE_DIR, args ? args : "", dir, dir);
    char mk[4200];
    snprintf(mk, sizeof(mk), "mkdir -p '%s'", dir);
    if (system(mk) != 0 || system(cmd) != 0) {
        snprintf(mk, sizeof(mk), "%s/make-certs.log", dir);
        th_log_tail(mk, 20);
        return -1;
    }
    return 0;
}

pid_t th_spawn(char *const argv[], const char *logfile, char *const env[])
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    if (logfile) {
        int fd = open(logfile, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
    }
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) {
        dup2(devnull, 0);
        close(devnull);
    }
    for (size_t i = 0; env && env[i]; i++)
        putenv(env[i]);
    execvp(argv[0], argv);
    fprintf(stderr, "th_spawn: exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

int th_wait_exit(pid_t pid, int timeout_ms)
{
    uint64_t end = th_now_ms_() + (uint64_t)timeout_ms;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (r < 0 && errno != EINTR)
            return -1;
        if (th_now_ms_() >= end)
            return -1;
        th_sleep_ms_(5);
    }
}

int th_stop(pid_t pid, int sig, int timeout_ms)
{
    if (pid <= 0)
        return -1;
    kill(pid, sig);
    int st = th_wait_exit(pid, timeout_ms);
    if (st == -1) {
        kill(pid, SIGKILL);
        int raw;
        if (waitpid(pid, &raw, 0) == pid)
            return raw;
        return -1;
    }
    return st;
}

bool th_wait_until(bool (*cond)(void *arg), void *arg, int timeout_ms)
{
    return TH_WAIT(cond(arg), timeout_ms);
}

char *th_slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return strdup("");
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1024 + 1 > cap)
            buf = realloc(buf, cap *= 2);
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

bool th_log_has(const char *path, const char *needle, size_t from)
{
    char *s = th_slurp(path);
    bool found = strlen(s) >= from && strstr(s + from, needle) != NULL;
    free(s);
    return found;
}

void th_tmpdir_remove(const char *dir)
{
    if (!dir)
        return;
    if (getenv("IHC_KEEP_LOGS") || getenv("IHC_KEEP_TMP") || getenv("IHC_TEST_KEEP")) {
        fprintf(stderr, "logs kept in %s\n", dir);
        return;
    }
    char cmd[4300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

void th_log_tail(const char *path, int lines)
{
    char *text = th_slurp(path);
    if (!text)
        return;
    size_t len = strlen(text);
    const char *from = text + len;
    for (int n = 0; from > text && n <= lines;)
        if (*--from == '\n' && from + 1 < text + len)
            n++;
    if (*from == '\n')
        from++;
    fprintf(stderr, "--- last %d lines of %s ---\n%s%s--- end of %s ---\n", lines, path, from,
            len && text[len - 1] != '\n' ? "\n" : "", path);
    free(text);
}

size_t th_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (size_t)st.st_size : 0;
}

static bool redis_answers(void *arg)
{
    th_redis *r = arg;
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    bool ok = false;
    if (c && !c->err && r->password) {
        redisReply *auth = redisCommand(c, "AUTH %s", r->password);
        if (auth)
            freeReplyObject(auth);
    }
    if (c && !c->err) {
        redisReply *rep = redisCommand(c, "PING");
        ok = rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0;
        if (rep)
            freeReplyObject(rep);
    }
    if (c)
        redisFree(c);
    return ok;
}

char *th_pct_encode(const char *s, char *out, size_t len)
{
    size_t o = 0;
    for (; *s && o + 4 < len; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("._~-", c))
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, len - o, "%%%02X", c);
    }
    if (len)
        out[o < len ? o : len - 1] = '\0';
    return out;
}

int th_redis_start(th_redis *r)
{
    if (!r->dir && !(r->dir = th_tmpdir("redis")))
        return -1;
    bool fixed = r->port > 0; /* a restart keeps its port */
    for (int attempt = 0; attempt < 5; attempt++) {
        if (!fixed)
            r->port = th_free_port();
        char port[16], log[4200];
        snprintf(port, sizeof(port), "%d", r->port);
        snprintf(log, sizeof(log), "%s/redis.log", r->dir);
        char *argv[] = {"redis-server", "--port", port,    "--bind", "127.0.0.1",   "--save", "",
                        "--appendonly", "no",     "--dir", r->dir,   "--daemonize", "no",     NULL,
                        NULL,           NULL,     NULL,    NULL,     NULL,          NULL,     NULL};
        int argc = 13;
        if (r->aclfile) {
            argv[argc++] = "--aclfile";
            argv[argc++] = (char *)r->aclfile;
        } else if (r->password) {
            argv[argc++] = "--requirepass";
            argv[argc++] = (char *)r->password;
        }
        r->sock[0] = '\0';
        if (r->unix_socket) {
            if ((size_t)snprintf(r->sock, sizeof(r->sock), "%s/redis.sock", r->dir) >=
                sizeof(r->sock)) {
                fprintf(stderr, "th_redis_start: socket path under %s is too long\n", r->dir);
                return -1;
            }
            argv[argc++] = "--unixsocket";
            argv[argc++] = r->sock;
            argv[argc++] = "--unixsocketperm";
            argv[argc++] = "700";
        }
        r->pid = th_spawn(argv, log, NULL);
        if (r->pid < 0)
            return -1;
        if (r->password) {
            char enc[128];
            snprintf(r->url, sizeof(r->url), "redis://:%s@127.0.0.1:%d/0",
                     th_pct_encode(r->password, enc, sizeof(enc)), r->port);
        } else {
            snprintf(r->url, sizeof(r->url), "redis://127.0.0.1:%d/0", r->port);
        }
        if (th_wait_until(redis_answers, r, 10000))
            return 0;
        th_stop(r->pid, SIGKILL, 1000);
        r->pid = 0;
        if (fixed)
            break;
    }
    return -1;
}

void th_redis_kill(th_redis *r)
{
    if (r->pid > 0)
        th_stop(r->pid, SIGKILL, 5000);
    r->pid = 0;
}

void th_redis_stop(th_redis *r)
{
    th_redis_kill(r);
    if (r->dir) {
        char cmd[4200];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "th_redis_stop: could not remove %s\n", r->dir);
        free(r->dir);
        r->dir = NULL;
    }
}

static void reply_append(char **out, size_t *len, const char *s, size_t n)
{
    char *p = realloc(*out, *len + n + 2);
    if (!p)
        return;
    if (*len)
        p[(*len)++] = '\n';
    memcpy(p + *len, s, n);
    *len += n;
    p[*len] = '\0';
    *out = p;
}

static void reply_render(const redisReply *rep, char **out, size_t *len)
{
    char num[32];
    switch (rep->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        reply_append(out, len, rep->str, rep->len);
        break;
    case REDIS_REPLY_INTEGER:
        snprintf(num, sizeof(num), "%lld", rep->integer);
        reply_append(out, len, num, strlen(num));
        break;
    case REDIS_REPLY_NIL:
        reply_append(out, len, "(nil)", 5);
        break;
    case REDIS_REPLY_ARRAY:
        for (size_t i = 0; i < rep->elements; i++)
            reply_render(rep->element[i], out, len);
        if (rep->elements == 0 && !*out)
            reply_append(out, len, "", 0);
        break;
    }
}

char *th_redis_cmd(const th_redis *r, const char *fmt, ...)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (r->password) {
        redisReply *auth = redisCommand(c, "AUTH %s", r->password);
        if (auth)
            freeReplyObject(auth);
    }
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    char *out = NULL;
    size_t len = 0;
    if (rep) {
        reply_render(rep, &out, &len);
        if (!out)
            out = strdup("");
        freeReplyObject(rep);
    }
    redisFree(c);
    return out;
}

int th_http_read_answer(int fd, char **body)
{
    if (body)
        *body = NULL;
    char *buf = NULL;
    size_t len = 0, bcap = 0;
    for (;;) {
        if (len + 4096 + 1 > bcap) {
            bcap = bcap ? bcap * 2 : 8192;
            buf = realloc(buf, bcap);
        }
        ssize_t r = read(fd, buf + len, bcap - len - 1);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    int status = -1;
    if (buf) {
        buf[len] = '\0';
        if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
            status = -1;
        char *hdr_end = strstr(buf, "\r\n\r\n");
        if (body && hdr_end)
            *body = strdup(hdr_end + 4);
        free(buf);
    }
    return status;
}

/* Sends one request on fd; close_after adds Connection: close. Returns false when the peer
 * took it not all. */
static bool send_request(int fd, const char *method, const char *path, const char *headers,
                         const char *body, bool close_after)
{
    size_t blen = body ? strlen(body) : 0;
    size_t cap = strlen(method) + strlen(path) + (headers ? strlen(headers) : 0) + blen + 256;
    char *req = malloc(cap);
    int n =
        snprintf(req, cap,
                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s%s"
                 "Content-Length: %zu\r\n\r\n",
                 method, path, close_after ? "Connection: close\r\n" : "", headers ? headers : "",
                 body ? "Content-Type: application/json\r\n" : "", blen);
    if (body)
        memcpy(req + n, body, blen);
    size_t total = (size_t)n + blen, off = 0;
    while (off < total) {
        ssize_t w = send(fd, req + off, total - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    free(req);
    return off == total;
}

int th_http(int port, const char *method, const char *path, const char *headers, const char *body,
            char **resp)
{
    if (resp)
        *resp = NULL;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    send_request(fd, method, path, headers, body, true);
    return th_http_read_answer(fd, resp);
}

int th_unix_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return -1;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int th_unix_http(const char *sock, const char *method, const char *path, const char *body,
                 char **resp)
{
    if (resp)
        *resp = NULL;
    int fd = th_unix_connect(sock);
    if (fd < 0)
        return -1;
    send_request(fd, method, path, NULL, body, true);
    return th_http_read_answer(fd, resp);
}

int th_http_send(int fd, const char *method, const char *path, const char *body)
{
    return send_request(fd, method, path, NULL, body, false) ? 0 : -1;
}

int th_http_read_one(int fd, char **body)
{
    if (body)
        *body = NULL;
    char buf[65536];
    size_t len = 0;
    char *end = NULL;
    while (!end && len + 1 < sizeof buf) {
        ssize_t r = read(fd, buf + len, 1); /* byte by byte: never past this answer */
        if (r <= 0)
            return -1;
        len++;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    int status = -1;
    if (!end || sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    size_t clen = 0;
    for (char *p = buf; (p = strchr(p, '\n')) != NULL && p < end; p++)
        if (strncasecmp(p + 1, "Content-Length:", 15) == 0)
            clen = strtoull(p + 16, NULL, 10);
    char *b = malloc(clen + 1);
    size_t got = 0;
    while (got < clen) {
        ssize_t r = read(fd, b + got, clen - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    b[got] = '\0';
    if (body)
        *body = b;
    else
        free(b);
    return status;
}

bool th_fd_read_until(int fd, const char *needle, int timeout_ms, char **seen)
{
    uint64_t end = th_now_ms_() + (uint64_t)timeout_ms;
    size_t len = 0, cap = 4096;
    char *acc = malloc(cap);
    acc[0] = '\0';
    bool found = false;
    while (!found) {
        uint64_t now = th_now_ms_();
        if (now >= end)
            break;
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, (int)(end - now)) <= 0)
            break;
        if (len + 2048 + 1 > cap)
            acc = realloc(acc, cap *= 2);
        ssize_t r = recv(fd, acc + len, 2048, MSG_DONTWAIT);
        if (r == 0)
            break;
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            break;
        }
        len += (size_t)r;
        acc[len] = '\0';
        found = strstr(acc, needle) != NULL;
    }
    if (seen)
        *seen = acc;
    else
        free(acc);
    return found;
}

int th_control(const char *url, const char *op, const char *hw, const char *reason,
               int64_t timeout_ms, char **json)
{
    *json = NULL;
    nng_socket s;
    if (nng_req0_open(&s) != 0)
        return -1;
    int status = -1;
    uint8_t *buf = NULL;
    size_t len = 0;
    void *rbuf = NULL;
    size_t rlen = 0;
    ihc_msg req = {.type = IHC_MSG_CONTROL_REQUEST};
    req.u.control_request.op = (char *)op;
    req.u.control_request.hw = (char *)hw;
    req.u.control_request.reason = (char *)reason;
    req.u.control_request.timeout_ms = timeout_ms;
    /* The coordinator answers within the interrupt's deadline; give it that plus slack. */
    int wait_ms = (int)(timeout_ms > 0 ? timeout_ms : 5000) + 5000;
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, wait_ms);
    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, 5000);
    if (nng_dial(s, url, NULL, NNG_FLAG_NONBLOCK) != 0)
        goto out;
    if (ihc_wire_encode(&req, NULL, &buf, &len) != IHC_OK)
        goto out;
    if (nng_send(s, buf, len, 0) != 0)
        goto out;
    if (nng_recv(s, &rbuf, &rlen, NNG_FLAG_ALLOC) != 0)
        goto out;
    ihc_msg *resp = NULL;
    if (ihc_wire_decode(rbuf, rlen, NULL, &resp, NULL, 0) == IHC_OK &&
        resp->type == IHC_MSG_CONTROL_RESPONSE) {
        status = resp->u.control_response.status;
        *json = strdup(resp->u.control_response.json ? resp->u.control_response.json : "");
    }
    ihc_msg_free(resp);
out:
    free(buf);
    if (rbuf)
        nng_free(rbuf, rlen);
    th_close(nng_socket_id(s));
    return status;
}

void th_close(int sock_id)
{
    /* once one close has wedged, nng's reaper is stuck and every later close in this process
     * wedges too: waiting 5 s for each would only run the test into its ctest timeout */
    static atomic_bool wedged;
    nng_socket s = {.id = (uint32_t)sock_id};
    if (ihc_sock_close(s, atomic_load(&wedged) ? 100 : 5000, "test", "test") == IHC_ETIMEDOUT)
        atomic_store(&wedged, true);
}

/* ---- a coordinator ---- */

void th_coord_ports(th_coord *c, const char *dir, const char *name)
{
    c->pub = th_free_port();
    c->rep = th_free_port();
    c->ctl = th_free_port();
    c->http = th_free_port();
    snprintf(c->pub_url, sizeof c->pub_url, "tcp://127.0.0.1:%d", c->pub);
    snprintf(c->rep_url, sizeof c->rep_url, "tcp://127.0.0.1:%d", c->rep);
    snprintf(c->ctl_url, sizeof c->ctl_url, "tcp://127.0.0.1:%d", c->ctl);
    snprintf(c->http_addr, sizeof c->http_addr, "127.0.0.1:%d", c->http);
    snprintf(c->log, sizeof c->log, "%s/%s.log", dir, name);
}

void th_coord_start(th_coord *c, const char *redis_url, const char *id, const char *const *env)
{
    char *argv[] = {(char *)th_bin("ihc-coordinator"),
                    "--pub",
                    c->pub_url,
                    "--report",
                    c->rep_url,
                    "--control",
                    c->ctl_url,
                    "--http",
                    c->http_addr,
                    "--redis",
                    (char *)redis_url,
                    NULL};
    char idenv[96];
    snprintf(idenv, sizeof idenv, "IHC_COORDINATOR_ID=%s", id);
    char *all[16];
    size_t n = 0;
    for (; env && env[n]; n++) {
        assert_true(n < 14);
        all[n] = (char *)env[n];
    }
    all[n++] = idenv;
    all[n] = NULL;
    c->pid = th_spawn(argv, c->log, all);
    assert_true(c->pid > 0);
    if (!TH_WAIT(th_http(c->http, "GET", "/healthz", NULL, NULL, NULL) == 200, 10000)) {
        th_log_tail(c->log, 30);
        fail_msg("coordinator did not answer GET /healthz (log %s)", c->log);
    }
}

bool th_coord_leads(const th_coord *c)
{
    char *body = NULL;
    bool ok = th_http(c->http, "GET", "/healthz", NULL, NULL, &body) == 200 && body &&
              strstr(body, "\"role\":\"leader\"") != NULL;
    free(body);
    return ok;
}
