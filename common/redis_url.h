/* Redis URLs (IHC_REDIS_URL): the one parser of their forms, used by the settings check and
 * every Redis connection of the coordinator (coordinator/redis_conn.h), so that all accept and
 * refuse the same URLs. */
#ifndef IHC_REDIS_URL_H
#define IHC_REDIS_URL_H

#include <stddef.h>

/* The longest unix socket path (sockaddr_un.sun_path holds 108 bytes with its NUL; hiredis
 * 0.14 would cut a longer path short without a word). */
#define IHC_REDIS_URL_PATH_MAX 107

#define IHC_REDIS_SENTINELS_MAX         16  /* sentinels one URL may name */
#define IHC_REDIS_MASTER_NAME_MAX       128 /* bytes of a sentinel master name */
#define IHC_DEFAULT_REDIS_SENTINEL_PORT 26379

/* A sentinel of a redis-sentinel:// URL. */
typedef struct {
    char *host; /* a name, IPv4, or IPv6 without its brackets */
    int port;   /* IHC_DEFAULT_REDIS_SENTINEL_PORT when not given */
} ihc_redis_sentinel;

/* A parsed Redis URL. Strings are owned (malloc'd) and released by ihc_redis_url_fini. */
typedef struct {
    char *host;     /* TCP host (an IPv6 address without its brackets); NULL for a socket or
                       sentinels */
    int port;       /* TCP port, IHC_DEFAULT_REDIS_PORT when not given; 0 for a socket or
                       sentinels */
    char *path;     /* unix socket path; NULL for TCP */
    int db;         /* database to SELECT, 0 when not given */
    char *user;     /* ACL user (percent-decoded), or NULL: AUTH with the password only */
    char *password; /* percent-decoded, or NULL: no AUTH */
    /* redis-sentinel://: the master's name and the sentinels that know where it is */
    char *master; /* NULL for the other forms */
    ihc_redis_sentinel sentinels[IHC_REDIS_SENTINELS_MAX];
    size_t n_sentinels;
} ihc_redis_url;

/* Parses one of
 *   redis://[[USER]:PASSWORD@|PASSWORD@]HOST[:PORT][/DB]   HOST a name, IPv4 or [IPv6]
 *   unix://[[USER]:PASSWORD@]/PATH[?db=DB]                 PATH absolute, taken as written
 *   redis-sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB]
 *       the master named MASTER, found through these sentinels (PORT default 26379); MASTER
 *       1-128 bytes of [A-Za-z0-9._-]; USER and PASSWORD are the master's (and the sentinels',
 *       when they ask for one)
 * USER and PASSWORD are percent-decoded (%00 is refused); the user info ends at the last '@'
 * before the first '/', so a '/' in a password must be written %2F. PORT 1-65535 (default
 * 6379), DB 0-2147483647 (default 0). Spaces and control characters must be percent-encoded.
 * On success fills *out (caller releases it with ihc_redis_url_fini) and returns IHC_OK.
 * Otherwise *out is left empty and IHC_EINVAL comes with why saying what is wrong (never
 * quoting the password), or IHC_ENOMEM. why may be NULL. */
int ihc_redis_url_parse(const char *url, ihc_redis_url *out, char *why, size_t why_len);

/* Releases the strings of u, wiping the password first; u is left empty. Accepts NULL and an
 * already released u. */
void ihc_redis_url_fini(ihc_redis_url *u);

/* Where u points, for messages, never with user or password: "127.0.0.1:6379/0",
 * "[::1]:6379/0", "unix:/run/redis.sock/0" or "sentinel:h1:26379,h2:26379/mymaster/0". */
void ihc_redis_url_where(const ihc_redis_url *u, char *out, size_t len);

/* url for display, with its user info (user and password) replaced by three asterisks, in
 * redis:// and unix:// URLs alike. A URL that does not parse is masked from after "://" to
 * its last '@', so that a password never shows even there. The result is cut to len - 1
 * bytes; strlen(url) + 4 always suffices. */
void ihc_redis_url_redact(const char *url, char *out, size_t len);

#endif
