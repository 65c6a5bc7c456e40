/* RLIMIT_NOFILE for servers with many connections (fdlimit.h). */
#include "fdlimit.h"

#include <sys/resource.h>

#include "log.h"

bool ihc_fd_limit_raise(size_t conns, const char *comp, const char *setting)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)(conns + IHC_FD_RESERVE);
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
        return true;
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        rl.rlim_cur = was;
    if (rl.rlim_cur < need) {
        ihc_log(IHC_LOG_WARN, comp,
                "open files limit %llu is below the %llu connections may need: raise it "
                "(ulimit -n, LimitNOFILE=) or lower %s",
                (unsigned long long)rl.rlim_cur, (unsigned long long)need, setting);
        return false;
    }
    ihc_log(IHC_LOG_DEBUG, comp, "open files limit raised from %llu to %llu",
            (unsigned long long)was, (unsigned long long)rl.rlim_cur);
    return true;
}
