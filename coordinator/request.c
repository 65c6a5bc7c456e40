/* Interrupt requests as JSON: parsing (jansson, duplicates refused) and the checks of the
 * values, with messages that name the field and what it accepts. */
#include "request.h"

#include "defaults.h"
#include "err.h"
#include "utf8.h"
#include "wire.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define NAME_MAX_SHOWN 64 /* longest field name quoted in an error */

/* A printable, bounded copy of untrusted text for error messages. */
static void printable(char *out, size_t cap, const char *in, size_t len)
{
    size_t k = 0;
    for (size_t i = 0; i < len && k + 4 < cap; i++) {
        unsigned char ch = (unsigned char)in[i];
        out[k++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    if (len > 0 && k + 4 >= cap) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = '\0';
}

int ihc_request_parse(ihc_request *r, const char *body, size_t len, char *err, size_t err_len)
{
    memset(r, 0, sizeof *r);
    if (len == 0) {
        snprintf(err, err_len, "request body is empty; expected a JSON object with hardware_id");
        return IHC_EINVAL;
    }
    json_error_t jerr;
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (o == NULL) {
        snprintf(err, err_len, "malformed JSON at line %d column %d: %s", jerr.line, jerr.column,
                 jerr.text);
        return IHC_EINVAL;
    }
    if (!json_is_object(o)) {
        snprintf(err, err_len, "request body must be a JSON object");
        goto fail;
    }
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        if (strcmp(key, "hardware_id") != 0 && strcmp(key, "reason") != 0 &&
            strcmp(key, "timeout_ms") != 0) {
            char name[NAME_MAX_SHOWN + 4];
            printable(name, sizeof name, key, strlen(key));
            snprintf(err, err_len, "unknown field '%s' (accepted: hardware_id, reason, timeout_ms)",
                     name);
            goto fail;
        }
    }
    json_t *jhw = json_object_get(o, "hardware_id");
    if (jhw == NULL) {
        snprintf(err, err_len, "hardware_id: required field missing");
        goto fail;
    }
    if (!json_is_string(jhw)) {
        snprintf(err, err_len, "hardware_id: must be a string");
        goto fail;
    }
    json_t *jr = json_object_get(o, "reason");
    if (jr != NULL && !json_is_null(jr) && !json_is_string(jr)) {
        snprintf(err, err_len, "reason: must be a string");
        goto fail;
    }
    json_t *jt = json_object_get(o, "timeout_ms");
    if (jt != NULL && !json_is_null(jt) && (!json_is_integer(jt) || json_integer_value(jt) < 0)) {
        snprintf(err, err_len,
                 "timeout_ms: must be a non-negative integer (milliseconds; 0 = default)");
        goto fail;
    }
    r->doc = o;
    r->hw = json_string_value(jhw);
    r->reason = json_is_string(jr) ? json_string_value(jr) : NULL;
    r->timeout_ms = json_is_integer(jt) ? (int64_t)json_integer_value(jt) : 0;
    return IHC_OK;
fail:
    json_decref(o);
    return IHC_EINVAL;
}

void ihc_request_fini(ihc_request *r)
{
    json_decref(r->doc);
    memset(r, 0, sizeof *r);
}

int ihc_request_check(const char *hw, const char *reason, int64_t timeout_ms, char *msg, size_t cap)
{
    if (hw == NULL || !ihc_hw_valid(hw, strlen(hw), true)) {
        char shown[80];
        printable(shown, sizeof shown, hw ? hw : "", hw ? strlen(hw) : 0);
        snprintf(msg, cap,
                 "hardware_id: invalid hardware_id '%s' (1-128 bytes of [A-Za-z0-9._:@-])", shown);
        return IHC_EINVAL;
    }
    size_t rlen = reason ? strlen(reason) : 0;
    if (rlen > IHC_REASON_MAX) {
        snprintf(msg, cap, "reason: too long (%zu bytes, at most %u)", rlen,
                 (unsigned)IHC_REASON_MAX);
        return IHC_EINVAL;
    }
    if (reason && !ihc_utf8_valid(reason, rlen)) {
        snprintf(msg, cap, "reason: not valid UTF-8");
        return IHC_EINVAL;
    }
    if (timeout_ms < 0 || timeout_ms > IHC_INTERRUPT_TIMEOUT_MAX_MS) {
        snprintf(msg, cap, "timeout_ms: %" PRId64 " out of range [0, %d] (0: INTERRUPT_TIMEOUT)",
                 timeout_ms, IHC_INTERRUPT_TIMEOUT_MAX_MS);
        return IHC_EINVAL;
    }
    return IHC_OK;
}
