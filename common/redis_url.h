/* Redis URLs (IHC_REDIS_URL): the one parser of their forms, used by the settings check, the
 * Redis store and the request channel, so that all three accept and refuse the same URLs. */
#ifndef IHC_REDIS_URL_H
#define IHC_REDIS_URL_H

#include <stddef.h>

/* The longest unix socket path (sockaddr_un.sun_path holds 108 bytes with its NUL; hiredis
 * 0.14 would cut a longer path short without a word). */
#define IHC_REDIS_URL_PATH_MAX 107

/* A parsed Redis URL. Strings are owned (malloc'd) and released by ihc_redis_url_fini. */
typedef struct {
    char *host;     /* TCP host (an IPv6 address without its brackets); NULL for a socket */
    int port;       /* TCP port, IHC_DEFAULT_REDIS_PORT when not given; 0 for a socket */
    char *path;     /* unix socket path; NULL for TCP */
    int db;         /* database to SELECT, 0 when not given */
    char *user;     /* ACL user (percent-decoded), or NULL: AUTH with the password only */
    char *password; /* percent-decoded, or NULL: no AUTH */
} ihc_redis_url;

/* Parses one of
 *   redis://[[USER]:PASSWORD@|PASSWORD@]HOST[:PORT][/DB]   HOST a name, IPv4 or [IPv6]
 *   unix://[[USER]:PASSWORD@]/PATH[?db=DB]                 PATH absolute, taken as written
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
 * "[::1]:6379/0" or "unix:/run/redis.sock/0". */
void ihc_redis_url_where(const ihc_redis_url *u, char *out, size_t len);

/* url for display, with its user info (user and password) replaced by three asterisks, in
 * redis:// and unix:// URLs alike. A URL that does not parse is masked from after "://" to
 * its last '@', so that a password never shows even there. The result is cut to len - 1
 * bytes; strlen(url) + 4 always suffices. */
void ihc_redis_url_redact(const char *url, char *out, size_t len);

#endif
