/* ihc error table: strerror, names, and conversion of nng codes at the boundary. */
#include "err.h"

#include <nng/nng.h>
#include <stdio.h>
#include <stdlib.h>

static const char *const err_text[] = {
#define IHC__ERR_TEXT(name, text) [IHC_##name] = text,
    IHC_ERR_MAP(IHC__ERR_TEXT)
#undef IHC__ERR_TEXT
};

static const char *const err_names[] = {
#define IHC__ERR_NAME(name, text) [IHC_##name] = "IHC_" #name,
    IHC_ERR_MAP(IHC__ERR_NAME)
#undef IHC__ERR_NAME
};

const char *ihc_strerror(int rc)
{
    if (rc < 0 || rc >= IHC__ERR_COUNT)
        return "unknown error";
    return err_text[rc];
}

const char *ihc_err_name(int rc)
{
    if (rc < 0 || rc >= IHC__ERR_COUNT)
        return "IHC_EUNKNOWN";
    return err_names[rc];
}

int ihc_err_from_nng(int nng_rv)
{
    switch (nng_rv) {
    case 0:
        return IHC_OK;
    case NNG_ENOMEM:
        return IHC_ENOMEM;
    case NNG_EINVAL:
    case NNG_EADDRINVAL:
        return IHC_EINVAL;
    case NNG_ETIMEDOUT:
        return IHC_ETIMEDOUT;
    case NNG_ECLOSED:
        return IHC_ECLOSED;
    case NNG_ECANCELED:
        return IHC_ECANCELED;
    case NNG_EMSGSIZE:
        return IHC_ETOOBIG;
    case NNG_ECONNREFUSED:
    case NNG_ECONNRESET:
    case NNG_ECONNSHUT:
        return IHC_ENOTCONN;
    default:
        return IHC_ETRANSPORT;
    }
}

void ihc__assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "ihc: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}
