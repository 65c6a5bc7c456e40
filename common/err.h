/* Internal side of the error table: the public codes of <ihc/err.h>, the conversion of
 * nng codes at the boundary, and IHC_ASSERT for programmer errors. Never installed. */
#ifndef IHC_COMMON_ERR_H
#define IHC_COMMON_ERR_H

#include "ihc/err.h"

/* Converts an nng error code (0 = success) into an ihc code. */
int ihc_err_from_nng(int nng_rv);

/* Programmer errors only; never for input from the network, Redis or configuration. */
#define IHC_ASSERT(cond)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ihc__assert_fail(#cond, __FILE__, __LINE__);                                           \
    } while (0)
_Noreturn void ihc__assert_fail(const char *expr, const char *file, int line);

#endif
