/* ihc error codes: one table, one enum, one strerror. Every ihc function that can fail
 * returns one of these as an int (IHC_OK == 0). Public: installed as <ihc/err.h> with
 * libihc-agent, which exports ihc_strerror and ihc_err_name. */
#ifndef IHC_ERR_H
#define IHC_ERR_H

#include "ihc/export.h"

#ifdef __cplusplus
extern "C" {
#endif

#define IHC_ERR_MAP(XX)                                                                            \
    XX(OK, "success")                                                                              \
    XX(EINVAL, "invalid argument")                                                                 \
    XX(ENOMEM, "out of memory")                                                                    \
    XX(EPROTO, "malformed message")                                                                \
    XX(ETOOBIG, "message or field too large")                                                      \
    XX(EVERSION, "unsupported protocol version")                                                   \
    XX(EBADHW, "invalid hardware_id")                                                              \
    XX(EBADID, "invalid identifier")                                                               \
    XX(EMISSING, "required field missing")                                                         \
    XX(ETYPE, "field has the wrong type")                                                          \
    XX(EBADSIG, "missing or bad signature")                                                        \
    XX(EREPLAY, "replayed or stale message")                                                       \
    XX(ECONFIG, "invalid configuration")                                                           \
    XX(EREDIS, "redis command failed")                                                             \
    XX(ENOTCONN, "not connected")                                                                  \
    XX(ETIMEDOUT, "timed out")                                                                     \
    XX(ELIMIT, "limit reached")                                                                    \
    XX(ENOENT, "not found")                                                                        \
    XX(EEXIST, "already exists")                                                                   \
    XX(ETRANSPORT, "transport error")                                                              \
    XX(ECLOSED, "object is closed")                                                                \
    XX(ECANCELED, "cancelled")                                                                     \
    XX(EDISABLED, "disabled by configuration")                                                     \
    XX(EIO, "I/O error")                                                                           \
    XX(EINTERNAL, "internal error")                                                                \
    XX(ENOTLEADER, "not the leader coordinator")

typedef enum {
#define IHC__ERR_ENUM(name, text) IHC_##name,
    IHC_ERR_MAP(IHC__ERR_ENUM)
#undef IHC__ERR_ENUM
        IHC__ERR_COUNT
} ihc_err;

/* Human-readable text for rc; never NULL, also for unknown codes. */
IHC_API const char *ihc_strerror(int rc);

/* Symbolic name for rc ("IHC_ETIMEDOUT"); never NULL. */
IHC_API const char *ihc_err_name(int rc);

#ifdef __cplusplus
}
#endif

#endif
