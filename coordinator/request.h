/* Interrupt requests as JSON, {"hardware_id": "dev-1", "reason": "…", "timeout_ms": 500}: the
 * one parser the HTTP API and the Redis channel share, and the checks of the values every entry
 * point applies (api.c). Neither needs a connection: tests/fuzz/fuzz_request.c drives both. */
#ifndef IHC_COORD_REQUEST_H
#define IHC_COORD_REQUEST_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *hw;     /* "hardware_id"; points into doc */
    const char *reason; /* "reason"; NULL when absent or null; points into doc */
    int64_t timeout_ms; /* "timeout_ms"; 0 (the coordinator's INTERRUPT_TIMEOUT) when absent or
                           null */
    json_t *doc;
} ihc_request;

/* Parses a request body of len bytes (not NUL-terminated): a JSON object with hardware_id (a
 * string), optionally reason (a string or null) and timeout_ms (a non-negative integer or null),
 * no other field and no field twice. Returns IHC_OK (release r with ihc_request_fini) or
 * IHC_EINVAL with err naming the problem ("malformed JSON at line 1 column 9: …", "unknown field
 * 'x' (accepted: hardware_id, reason, timeout_ms)", "hardware_id: required field missing"…);
 * then r holds nothing. */
int ihc_request_parse(ihc_request *r, const char *body, size_t len, char *err, size_t err_len);

/* Releases what ihc_request_parse kept. Accepts a zeroed r. */
void ihc_request_fini(ihc_request *r);

/* The values' checks: hw a valid hardware_id or "*", reason at most IHC_REASON_MAX bytes of
 * UTF-8 (NULL: none), timeout_ms in [0, IHC_INTERRUPT_TIMEOUT_MAX_MS]. Returns IHC_OK or
 * IHC_EINVAL with msg naming the field and what it accepts. */
int ihc_request_check(const char *hw, const char *reason, int64_t timeout_ms, char *msg,
                      size_t cap);

#endif
