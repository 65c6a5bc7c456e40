/* libFuzzer target for the HTTP API's request handling: hostile bytes as the body of
 * POST /v1/interrupt (and of a message on the Redis channel ihc:requests) through the parser
 * and the value checks the coordinator applies (coordinator/request.c). Whatever parses must
 * give a NUL-free hardware_id, a message on every refusal, and the same fields again when
 * written back as JSON and parsed once more. */
#include "err.h"
#include "request.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_request: check failed: %s (line %d)\n", #cond, __LINE__);        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool msg_ok(const char *m, size_t cap)
{
    return memchr(m, '\0', cap) != NULL && m[0] != '\0';
}

/* The parsed fields written back as a body parse to the same fields. */
static void check_round_trip(const ihc_request *q)
{
    json_t *o = json_object();
    CHECK(o != NULL);
    json_object_set_new(o, "hardware_id", json_string(q->hw));
    if (q->reason)
        json_object_set_new(o, "reason", json_string(q->reason));
    if (q->timeout_ms)
        json_object_set_new(o, "timeout_ms", json_integer(q->timeout_ms));
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    CHECK(body != NULL);
    ihc_request again;
    char err[256];
    CHECK(ihc_request_parse(&again, body, strlen(body), err, sizeof err) == IHC_OK);
    CHECK(strcmp(again.hw, q->hw) == 0);
    CHECK((again.reason == NULL) == (q->reason == NULL));
    CHECK(q->reason == NULL || strcmp(again.reason, q->reason) == 0);
    CHECK(again.timeout_ms == q->timeout_ms);
    ihc_request_fini(&again);
    free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ihc_request q;
    char err[256];
    memset(err, 'x', sizeof err);
    int rc = ihc_request_parse(&q, (const char *)data, size, err, sizeof err);
    if (rc != IHC_OK) {
        CHECK(rc == IHC_EINVAL);
        CHECK(msg_ok(err, sizeof err));
        CHECK(q.doc == NULL && q.hw == NULL);
        return 0;
    }
    CHECK(q.hw != NULL && q.doc != NULL && q.timeout_ms >= 0);
    char msg[400];
    memset(msg, 'x', sizeof msg);
    rc = ihc_request_check(q.hw, q.reason, q.timeout_ms, msg, sizeof msg);
    CHECK(rc == IHC_OK || rc == IHC_EINVAL);
    if (rc != IHC_OK)
        CHECK(msg_ok(msg, sizeof msg));
    else
        CHECK(strlen(q.hw) >= 1 && strlen(q.hw) <= 128);
    check_round_trip(&q);
    ihc_request_fini(&q);
    return 0;
}
