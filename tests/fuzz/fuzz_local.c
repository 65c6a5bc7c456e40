/* libFuzzer target for the agent's local API bodies (agent/local_body.c): hostile bytes as the
 * body of POST /v1/sessions and of DELETE /v1/sessions/{id}. Every refusal must carry a
 * message; whatever parses must hold values within the wire's limits (valid hardware_id and
 * ids, known states and statuses, data and error sizes), and parse to the same again when
 * written back as JSON. */
#include "err.h"
#include "local_body.h"
#include "wire.h"

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
            fprintf(stderr, "fuzz_local: check failed: %s (line %d)\n", #cond, __LINE__);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool msg_ok(const char *m, size_t cap)
{
    return memchr(m, '\0', cap) != NULL && m[0] != '\0';
}

static void check_begin(const ihc_local_begin *b)
{
    CHECK(b->hw && ihc_hw_valid(b->hw, strlen(b->hw), false));
    CHECK(b->pid >= 0);
    CHECK(!b->module || ihc_id_valid(b->module, strlen(b->module)));
    CHECK(!b->session_id || ihc_id_valid(b->session_id, strlen(b->session_id)));
    CHECK(!b->data || strlen(b->data) <= IHC_DATA_MAX);
    /* written back, the same fields come out */
    json_t *o = json_pack("{s:s}", "hardware_id", b->hw);
    CHECK(o != NULL);
    if (b->pid)
        json_object_set_new(o, "pid", json_integer(b->pid));
    if (b->module)
        json_object_set_new(o, "module", json_string(b->module));
    if (b->session_id)
        json_object_set_new(o, "session_id", json_string(b->session_id));
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    CHECK(body != NULL);
    ihc_local_begin again;
    char err[256];
    CHECK(ihc_local_begin_parse(&again, body, strlen(body), err, sizeof err) == IHC_OK);
    CHECK(strcmp(again.hw, b->hw) == 0 && again.pid == b->pid);
    CHECK((again.module == NULL) == (b->module == NULL));
    CHECK(!b->module || strcmp(again.module, b->module) == 0);
    ihc_local_begin_fini(&again);
    free(body);
}

static void check_end(const ihc_local_end *e)
{
    CHECK(strcmp(e->state, "done") == 0 || strcmp(e->state, "interrupted") == 0 ||
          strcmp(e->state, "failed") == 0);
    CHECK(e->n_modules <= IHC_LOCAL_BODY_MODULES_MAX);
    for (size_t i = 0; i < e->n_modules; i++) {
        const ihc_module_result *m = &e->modules[i];
        CHECK(m->name && ihc_id_valid(m->name, strlen(m->name)));
        CHECK(m->status >= IHC_MOD_OK && m->status <= IHC_MOD_DISABLED);
        CHECK(m->time_ms >= 0);
        CHECK(!m->error || strlen(m->error) <= IHC_REASON_MAX);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    memset(err, 'x', sizeof err);
    ihc_local_begin b;
    int rc = ihc_local_begin_parse(&b, (const char *)data, size, err, sizeof err);
    if (rc == IHC_OK) {
        check_begin(&b);
        ihc_local_begin_fini(&b);
    } else {
        CHECK(rc == IHC_EINVAL || rc == IHC_EMISSING);
        CHECK(msg_ok(err, sizeof err));
        CHECK(b.hw == NULL && b.module == NULL && b.data == NULL);
    }
    memset(err, 'x', sizeof err);
    ihc_local_end e;
    rc = ihc_local_end_parse(&e, (const char *)data, size, err, sizeof err);
    if (rc == IHC_OK) {
        check_end(&e);
        ihc_local_end_fini(&e);
    } else {
        CHECK(rc == IHC_EINVAL || rc == IHC_EMISSING);
        CHECK(msg_ok(err, sizeof err));
        CHECK(e.modules == NULL && e.n_modules == 0);
    }
    return 0;
}
