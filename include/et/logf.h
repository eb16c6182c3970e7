/* logf.h: printf-style logging on top of log.h, for call sites that log many ids at once.
 *
 * et_logf(lvl, "event", "k1=%u k2=%s k3=\"%s\"", ...) formats the text, splits it into
 * key=value pairs (a value may be double-quoted to hold spaces) and emits them through
 * et_log_emit, so text and JSON output are escaped the same way as et_log's. Keys must be
 * [a-z0-9_]; a piece that is not key=value is logged under "msg". */
#ifndef ET_LOGF_H
#define ET_LOGF_H

#include "et/log.h"

__attribute__((format(printf, 3, 4))) void et_logf(et_log_level lvl, const char *event,
                                                   const char *fmt, ...);

#endif
