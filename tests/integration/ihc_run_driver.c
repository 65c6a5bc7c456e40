/* Test driver for `ihc run` when the ihc CLI is not built: `ihc-run-driver run ARGS…` calls
 * ihc_run_main exactly as the CLI does (argv[0] = "run"). */
#include <stdio.h>
#include <string.h>

#include "run.h"

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "run") != 0) {
        fprintf(stderr, "usage: ihc-run-driver run --hw HW -- CMD [ARG...]\n");
        return 2;
    }
    return ihc_run_main(argc - 1, argv + 1);
}
