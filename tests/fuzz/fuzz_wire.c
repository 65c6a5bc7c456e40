/* libFuzzer target for the wire protocol: hostile bytes into ihc_wire_decode (with and
 * without auth) and ihc_wire_split; whatever decodes must re-encode to a stable form and
 * survive a signed round trip. */
#include "err.h"
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ihc_wire_auth *auth;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (ihc_wire_auth_new(&auth, "fuzz-secret", 11, 0) != IHC_OK)
        abort();
    return 0;
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_wire: check failed: %s (line %d)\n", #cond, __LINE__);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A decoded message re-encodes; decoding that gives the same encoding again; signing it
 * gives a message the auth context accepts once. */
static void check_accepted(ihc_msg *m)
{
    uint8_t *b1 = NULL, *b2 = NULL, *bs = NULL;
    size_t n1, n2, ns;
    ihc_msg *m2 = NULL, *ms = NULL;
    if (m->ts_ms == 0)
        m->ts_ms = 1; /* keep both encodings free of the wall clock */
    CHECK(ihc_wire_encode(m, NULL, &b1, &n1) == IHC_OK);
    CHECK(ihc_wire_decode(b1, n1, NULL, &m2, NULL, 0) == IHC_OK);
    CHECK(m2->type == m->type && m2->ts_ms == m->ts_ms);
    CHECK(ihc_wire_encode(m2, NULL, &b2, &n2) == IHC_OK);
    CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0);

    m->ts_ms = 0; /* now, so that the window accepts it */
    CHECK(ihc_wire_encode(m, auth, &bs, &ns) == IHC_OK);
    int rc = ihc_wire_decode(bs, ns, auth, &ms, NULL, 0);
    CHECK(rc == IHC_OK || rc == IHC_EREPLAY); /* EREPLAY: replay cache full */
    if (rc == IHC_OK) {
        ihc_msg_free(ms);
        CHECK(ihc_wire_decode(bs, ns, auth, &ms, NULL, 0) == IHC_EREPLAY);
        CHECK(ms == NULL);
    }

    uint8_t *bf = NULL;
    size_t nf;
    if (ihc_wire_encode_framed(m2, NULL, &bf, &nf) == IHC_OK) {
        const uint8_t *body;
        size_t bl;
        CHECK(ihc_wire_split(bf, nf, NULL, NULL, &body, &bl) == IHC_OK);
        CHECK(bl == n2 && memcmp(body, b2, bl) == 0);
        free(bf);
    }
    ihc_msg_free(m2);
    free(b1);
    free(b2);
    free(bs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char detail[160];
    ihc_msg *m = NULL;
    int rc = ihc_wire_decode(data, size, NULL, &m, detail, sizeof detail);
    if (rc == IHC_OK) {
        CHECK(m != NULL);
        check_accepted(m);
        ihc_msg_free(m);
    } else {
        CHECK(m == NULL && rc > 0 && rc < IHC__ERR_COUNT);
        CHECK(memchr(detail, '\0', sizeof detail) != NULL);
    }

    m = NULL;
    rc = ihc_wire_decode(data, size, auth, &m, detail, sizeof detail);
    CHECK((rc == IHC_OK) == (m != NULL));
    ihc_msg_free(m);

    const char *topic;
    size_t tl, bl;
    const uint8_t *body;
    if (ihc_wire_split(data, size, &topic, &tl, &body, &bl) == IHC_OK) {
        CHECK(tl < IHC_TOPIC_MAX && tl + 1 + bl == size);
        m = NULL;
        if (ihc_wire_decode(body, bl, NULL, &m, NULL, 0) == IHC_OK)
            ihc_msg_free(m);
    }
    return 0;
}
