/* The Redis request channel: a thread SUBSCRIBEd to ihc:requests on its own connection
 * (reconnecting with backoff). Each message is JSON {"hardware_id":…, "reason":…,
 * "timeout_ms":…} and runs through ihc_api_interrupt; the result lands in the
 * ihc:interrupts stream through the normal persist path. */
#ifndef IHC_COORD_REQCHAN_H
#define IHC_COORD_REQCHAN_H

#include "api.h"
#include "config.h"

#define IHC_REQUESTS_CHANNEL "ihc:requests"

typedef struct ihc_reqchan ihc_reqchan;

/* Starts the subscriber thread on cfg->redis_url; Redis need not be up. cfg must outlive
 * it. Errors: IHC_EINVAL (bad URL), IHC_ENOMEM, IHC_EINTERNAL. Caller owns *out. */
int ihc_reqchan_open(ihc_reqchan **out, ihc_coord *c, const ihc_config *cfg);

/* Stops the thread and frees. Call after ihc_coord_stop. Accepts NULL. */
void ihc_reqchan_close(ihc_reqchan *rq);

#endif
