/* The open-files limit of a server: every connection is a file descriptor, so the soft limit
 * is raised towards the hard one when the configured connections would not fit. Shared by
 * the coordinator's HTTP API and the agent's local API. */
#ifndef IHC_FDLIMIT_H
#define IHC_FDLIMIT_H

#include <stdbool.h>
#include <stddef.h>

#define IHC_FD_RESERVE 128 /* descriptors a process needs beside its connections */

/* Raises RLIMIT_NOFILE's soft limit to conns + IHC_FD_RESERVE when it is lower (up to the
 * hard limit). When it still does not fit, logs a warning for component comp naming setting
 * (the setting to lower) and returns false. */
bool ihc_fd_limit_raise(size_t conns, const char *comp, const char *setting);

#endif
