#!/bin/sh
# The compose file's Redis: writes the ACL file (acl.sh: the default user with REDIS_PASSWORD,
# user ihc with IHC_REDIS_PASSWORD) and starts redis-server through the image's own entry point
# with it and the given flags.
set -eu
umask 077
acl=/tmp/ihc-users.acl
sh "$(dirname "$0")/acl.sh" >"$acl"
# the official image starts Redis as user redis: it must read the file
chown redis "$acl" 2>/dev/null || true
exec docker-entrypoint.sh redis-server --aclfile "$acl" "$@"
