/* libFuzzer target for the agent's module-override file (IHC_AGENT_CONFIG, INI): hostile file
 * contents through the parser of agent/module.c, read from a memory file as the agent reads
 * its file; whatever it accepts must be usable (each override's timeout readable). */
#include "err.h"
#include "module.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_ini: check failed: %s (line %d)\n", #cond, __LINE__);            \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int fd = -1;
static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fd = memfd_create("ihc-agent.ini", 0);
    if (fd < 0)
        abort();
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        abort();
    ihc__modules ms;
    CHECK(ihc__modules_init(&ms, false, NULL, NULL) == IHC_OK);
    char err[512];
    memset(err, 'x', sizeof err);
    int rc = ihc__modules_load_config(&ms, path, err, sizeof err);
    CHECK(rc == IHC_OK || rc == IHC_ECONFIG);
    if (rc != IHC_OK) {
        CHECK(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0');
    } else {
        for (size_t i = 0; i < ms.n_ovr; i++) {
            const ihc__override *o = &ms.ovr[i];
            CHECK(o->name[0] != '\0' && strlen(o->name) <= IHC_ID_MAX);
            CHECK(!o->has_timeout || o->timeout > 0);
            double t = ihc__modules_timeout(&ms, o->name, 1.0);
            CHECK(t > 0);
            for (size_t k = 0; k < o->n_methods; k++)
                CHECK(o->methods[k][0] != '\0');
        }
    }
    ihc__modules_fini(&ms);
    return 0;
}
