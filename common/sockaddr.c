/* Text forms of nng socket addresses (see sockaddr.h). */
#include "sockaddr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

size_t ihc_sockaddr_str(const nng_sockaddr *sa, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN];
    int n = 0;
    if (sa->s_family == NNG_AF_INET) {
        struct in_addr a = {.s_addr = sa->s_in.sa_addr};
        if (!inet_ntop(AF_INET, &a, host, sizeof(host)))
            return 0;
        n = snprintf(out, cap, "%s:%u", host, (unsigned)ntohs(sa->s_in.sa_port));
    } else if (sa->s_family == NNG_AF_INET6) {
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        const uint8_t *b = sa->s_in6.sa_addr;
        if (memcmp(b, mapped, sizeof(mapped)) == 0) {
            struct in_addr a;
            memcpy(&a.s_addr, b + 12, 4);
            if (!inet_ntop(AF_INET, &a, host, sizeof(host)))
                return 0;
            n = snprintf(out, cap, "%s:%u", host, (unsigned)ntohs(sa->s_in6.sa_port));
        } else {
            if (!inet_ntop(AF_INET6, b, host, sizeof(host)))
                return 0;
            n = snprintf(out, cap, "[%s]:%u", host, (unsigned)ntohs(sa->s_in6.sa_port));
        }
    } else {
        return 0;
    }
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

size_t ihc_pipe_addr_str(nng_pipe p, bool local, char *out, size_t cap)
{
    nng_sockaddr sa;
    if (nng_pipe_get_addr(p, local ? NNG_OPT_LOCADDR : NNG_OPT_REMADDR, &sa) != 0)
        return 0;
    return ihc_sockaddr_str(&sa, out, cap);
}
