#!/bin/sh
# Prints a Redis ACL file from the environment: the default user (administration, redis-cli)
# with REDIS_PASSWORD, and user ihc with IHC_REDIS_PASSWORD limited by ihc-user.acl (next to
# this script). Passwords are written as SHA-256 hashes, never in clear.
#   REDIS_PASSWORD=… IHC_REDIS_PASSWORD=… sh deploy/redis/acl.sh > users.acl
#   redis-server --aclfile users.acl
set -eu
: "${REDIS_PASSWORD:?set REDIS_PASSWORD (the default user's password), e.g. openssl rand -hex 24}"
: "${IHC_REDIS_PASSWORD:?set IHC_REDIS_PASSWORD (user ihc's password), e.g. openssl rand -hex 24}"
dir=$(cd "$(dirname "$0")" && pwd)
hash() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
rules=$(grep -v '^#' "$dir/ihc-user.acl" | tr '\n' ' ')
echo "user default on #$(hash "$REDIS_PASSWORD") ~* &* +@all"
echo "user ihc on #$(hash "$IHC_REDIS_PASSWORD") $rules"
