/* `ihc run --hw HW [--session ID] [--module NAME] [--local URL] -- CMD ARGS…`: runs a command
 * as a session of the local ihc-agent, so that an interrupt of HW stops it. */
#ifndef IHC_RUN_H
#define IHC_RUN_H

/* Entry point of `ihc run`; argv[0] is "run". Returns the process exit status: the
 * command's exit status, 128+N when it died of signal N, 2 on a usage error, 3 when the
 * agent cannot be reached, 1 when the agent refused the session. Installs no signal
 * handlers: it blocks SIGINT, SIGTERM, SIGHUP, SIGQUIT and SIGCHLD while it runs, and
 * forwards the first four to the command's process group. */
int ihc_run_main(int argc, char **argv);

#endif
