/* tunnel_internal.h: what cancel.c shares with stream.c and nothing else. */
#ifndef ET_TUNNEL_INTERNAL_H
#define ET_TUNNEL_INTERNAL_H

#include "et/tunnel.h"

typedef struct et_watch et_watch;

/* et_registry_open adds |s| to the registry: ET_OK, or ET_E_CLOSED when its key is taken (a
 * CANCEL that overtook the OPEN left a tombstone) or ET_E_NOMEM. */
ET_MUST_USE int et_registry_open(et_stream *s);

/* et_registry_claim_cancel marks |s| cancelled; returns true if it was not already (so the
 * caller is the one to send a CANCEL). */
bool et_registry_claim_cancel(et_stream *s);

/* et_registry_cancelled returns whether a CANCEL went or came for |s|. */
bool et_registry_cancelled(et_stream *s);

/* et_registry_close turns |s|'s entry into a tombstone; call before closing its fd. */
void et_registry_close(et_stream *s);

/* et_watch_start makes the control worker watch |s|'s fd for a reset. */
ET_MUST_USE int et_watch_start(et_stream *s);

/* et_watch_stop removes the watch (before the fd is closed); the control worker frees it. */
void et_watch_stop(et_stream *s);

#endif
