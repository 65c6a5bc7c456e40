#!/bin/sh
# A Redis Sentinel of deploy/docker-compose.ha.yml: writes its configuration (the sentinel
# rewrites the file as it learns, so it lives in the writable data directory) and runs
# redis-server in sentinel mode. It watches the master named IHC_SENTINEL_MASTER (default ihc)
# at IHC_SENTINEL_MONITOR ("host port quorum", default "redis-primary 6379 2"), authenticating
# as the default user with REDIS_PASSWORD; IHC_SENTINEL_DOWN_MS and IHC_SENTINEL_FAILOVER_MS
# set how soon it acts.
set -eu
: "${REDIS_PASSWORD:?set REDIS_PASSWORD (the default user's password)}"
name=${IHC_SENTINEL_MASTER:-ihc}
conf=/data/sentinel.conf
umask 077
if [ ! -s "$conf" ]; then
  cat >"$conf" <<EOC
port 26379
protected-mode no
sentinel resolve-hostnames yes
sentinel monitor $name ${IHC_SENTINEL_MONITOR:-redis-primary 6379 2}
sentinel auth-user $name default
sentinel auth-pass $name $REDIS_PASSWORD
sentinel down-after-milliseconds $name ${IHC_SENTINEL_DOWN_MS:-1000}
sentinel failover-timeout $name ${IHC_SENTINEL_FAILOVER_MS:-5000}
sentinel parallel-syncs $name 1
EOC
fi
exec redis-server "$conf" --sentinel
