/* The JSON bodies of ihc-agent's local API (POST and DELETE /v1/sessions): parsed and checked
 * apart from the HTTP server, so that a fuzzer can drive them (tests/fuzz/fuzz_local.c). */
#ifndef IHC_LOCAL_BODY_H
#define IHC_LOCAL_BODY_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

#define IHC_LOCAL_BODY_MODULES_MAX 64 /* module results one DELETE may carry */

/* POST /v1/sessions: {"hardware_id", "pid"?, "module"?, "data"?, "session_id"?}. Strings are
 * owned by the struct (ihc_local_begin_fini); absent ones are NULL, pid 0. */
typedef struct {
    char *hw;
    int32_t pid;
    char *module;
    char *data; /* an object as compact JSON text, a string as it is */
    char *session_id;
} ihc_local_begin;

/* DELETE /v1/sessions/{id}: {"state"?, "modules"?: [{"name","status","time_ms","error"?}]}.
 * state is a static string ("done" when absent); modules are owned (ihc_local_end_fini). */
typedef struct {
    const char *state;
    ihc_module_result *modules;
    size_t n_modules;
} ihc_local_end;

/* Parses body (len bytes, need not be NUL-terminated). On error, err names the problem (the
 * field, what it must be) and nothing is left to free. Errors: IHC_EINVAL, IHC_EMISSING,
 * IHC_ENOMEM. */
int ihc_local_begin_parse(ihc_local_begin *out, const char *body, size_t len, char *err,
                          size_t err_len);
void ihc_local_begin_fini(ihc_local_begin *b);

/* An empty body is {}. Errors as ihc_local_begin_parse. */
int ihc_local_end_parse(ihc_local_end *out, const char *body, size_t len, char *err,
                        size_t err_len);
void ihc_local_end_fini(ihc_local_end *e);

#endif
