/* frame_internal.h: what frame.c shares with frame_msg.c and nothing else. */
#ifndef ET_FRAME_INTERNAL_H
#define ET_FRAME_INTERNAL_H

#include "et/frame.h"

/* et_frame_check_header returns ET_OK if header |h| (length included) fits the action table,
 * else ET_E_USAGE: the encoder's guard against producing a frame the decoder would refuse. */
ET_MUST_USE int et_frame_check_header(const et_frame *h);

#endif
