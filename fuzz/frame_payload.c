/* fuzz/frame_payload.c: each payload parser directly, without a header in the way.
 *
 * The first input byte picks the action (any byte value; unknown actions must be refused), the
 * rest is the payload. Reaches et_msg_parse for every action, et_frame_format, and on success
 * et_frame_encode, which must reproduce the payload byte for byte (the parsers are canonical).
 * Deterministic. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "et/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t out[ET_FRAME_HEADER_LEN + 8192];
    if (size < 1 || size - 1 > 8192)
        return 0;
    const et_action_info *info = et_action_lookup(data[0]);
    et_frame f = {(uint32_t)(size - 1), 0, 0, data[0], 0, data + 1};
    if (info != NULL && (info->scope == ET_SCOPE_STREAM || info->scope == ET_SCOPE_CANCEL)) {
        f.user_channel = 1;
        f.stream_id = 1;
    }
    et_msg m;
    int rv = et_msg_parse(&f, &m);
    if (rv != ET_OK) {
        if (rv != ET_E_PROTO(ET_WE_BAD_PAYLOAD))
            abort();
        return 0;
    }
    if (info == NULL)
        abort(); /* an unknown action parsed */
    char text[512];
    et_frame_format(text, sizeof(text), &f, &m);
    if (f.length < info->min_payload || f.length > info->max_payload)
        return 0; /* the decoder's static bounds would have refused it before parsing */
    int n = et_frame_encode(out, sizeof(out), &f, &m);
    if (n < 0 || (size_t)n != ET_FRAME_HEADER_LEN + f.length ||
        memcmp(out + ET_FRAME_HEADER_LEN, f.payload, f.length) != 0)
        abort(); /* parse accepted what encode cannot reproduce */
    return 0;
}
