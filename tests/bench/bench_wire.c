/* The wire codec alone: encode and decode of an interrupt and of a report (three modules, one
 * session), unsigned and signed, in ns per operation. Speed belongs here, not in test_wire.
 * Usage: bench_wire [--ops N] */
#include "bench_util.h"

#include "wire.h"

typedef struct {
    const char *name;
    ihc_msg m;
    const ihc_wire_auth *auth;
} wcase;

static double ns_per(uint64_t t0, long ops)
{
    return (double)(bench_ns() - t0) / (double)ops;
}

int main(int argc, char **argv)
{
    long ops = 200000;
    if (argc == 3 && !strcmp(argv[1], "--ops"))
        ops = atol(argv[2]);
    if (ops < 1) {
        fprintf(stderr, "usage: bench_wire [--ops N]\n");
        return 2;
    }
    ihc_wire_auth *auth = NULL;
    static const uint8_t secret[] = "bench-secret-bench-secret-32byte";
    if (ihc_wire_auth_new(&auth, secret, sizeof(secret) - 1, 0) != 0) {
        fprintf(stderr, "bench_wire: cannot set up signing\n");
        return 1;
    }
    ihc_module_result mods[3] = {
        {.name = "text_processing", .status = IHC_MOD_OK, .time_ms = 0.031},
        {.name = "audio_generation", .status = IHC_MOD_OK, .time_ms = 0.042},
        {.name = "session_management", .status = IHC_MOD_OK, .time_ms = 0.05}};
    char *sids[1] = {"bench-3b1dcff9-17"};
    ihc_msg in = {.type = IHC_MSG_INTERRUPT};
    in.u.interrupt = (ihc_interrupt_msg){.id = 123456,
                                         .hw = "dev-1",
                                         .epoch = 42,
                                         .reason = "user stop",
                                         .deadline_ms = 1700000000000};
    ihc_msg rep = {.type = IHC_MSG_REPORT};
    rep.u.report = (ihc_report_msg){.id = 123456,
                                    .agent = "node-a:4242",
                                    .hw = "dev-1",
                                    .modules = mods,
                                    .n_modules = 3,
                                    .sessions = sids,
                                    .n_sessions = 1,
                                    .time_ms = 0.12};
    wcase cases[] = {{"interrupt", in, NULL},
                     {"report", rep, NULL},
                     {"interrupt_signed", in, auth},
                     {"report_signed", rep, auth}};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        uint8_t *buf = NULL;
        size_t len = 0;
        /* warm-up, and one message to decode */
        if (ihc_wire_encode(&cases[c].m, cases[c].auth, &buf, &len) != 0) {
            fprintf(stderr, "bench_wire: cannot encode %s\n", cases[c].name);
            return 1;
        }
        uint64_t t0 = bench_ns();
        for (long i = 0; i < ops; i++) {
            uint8_t *b = NULL;
            size_t l = 0;
            ihc_wire_encode(&cases[c].m, cases[c].auth, &b, &l);
            free(b);
        }
        double enc = ns_per(t0, ops);
        double dec;
        if (!cases[c].auth) {
            t0 = bench_ns();
            for (long i = 0; i < ops; i++) {
                ihc_msg *m = NULL;
                if (ihc_wire_decode(buf, len, NULL, &m, NULL, 0) != 0) {
                    fprintf(stderr, "bench_wire: cannot decode %s\n", cases[c].name);
                    return 1;
                }
                ihc_msg_free(m);
            }
            dec = ns_per(t0, ops);
        } else {
            /* a nonce is accepted once: as many messages as decodes, each checked */
            long k = ops < 20000 ? ops : 20000;
            uint8_t **v = calloc((size_t)k, sizeof(*v));
            size_t *vl = calloc((size_t)k, sizeof(*vl));
            for (long i = 0; i < k; i++)
                ihc_wire_encode(&cases[c].m, cases[c].auth, &v[i], &vl[i]);
            t0 = bench_ns();
            for (long i = 0; i < k; i++) {
                ihc_msg *m = NULL;
                if (ihc_wire_decode(v[i], vl[i], cases[c].auth, &m, NULL, 0) != 0) {
                    fprintf(stderr, "bench_wire: cannot decode %s\n", cases[c].name);
                    return 1;
                }
                ihc_msg_free(m);
            }
            dec = ns_per(t0, k);
            for (long i = 0; i < k; i++)
                free(v[i]);
            free(v);
            free(vl);
        }
        printf("{\"name\":\"wire_%s\",\"bytes\":%zu,\"encode_ns\":%.0f,\"decode_ns\":%.0f,"
               "\"ops\":%ld}\n",
               cases[c].name, len, enc, dec, ops);
        free(buf);
    }
    ihc_wire_auth_free(auth);
    return 0;
}
