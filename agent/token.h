/* Cancellation tokens (private): an atomic flag checked inline by hot loops plus an eventfd
 * for blocked waits, shared by the agent, the session owner and its generators. */
#ifndef IHC_AGENT_TOKEN_H
#define IHC_AGENT_TOKEN_H

#include "ihc/agent.h"

#include <stdatomic.h>
#include "wire.h"

struct ihc_token {
    struct ihc_token_head head; /* must stay first: ihc_token_cancelled reads it */
    atomic_int refs;
    int efd; /* readable once cancelled; never read, so every poller wakes */
    char sid[IHC_ID_MAX + 1];
};

/* Creates a token with one reference for session sid (truncated to IHC_ID_MAX). Caller owns
 * *out (ihc_token_release). Errors: IHC_ENOMEM, IHC_EIO (no eventfd, errno logged). */
int ihc__token_new(ihc_token **out, const char *sid);

#endif
