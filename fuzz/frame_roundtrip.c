/* fuzz/frame_roundtrip.c: decode -> encode -> decode must change nothing.
 *
 * Reaches et_frame_decode, et_msg_parse, et_frame_encode, et_frame_header_encode and
 * et_frame_format. For every input that decodes to a valid frame: encoding the parsed message
 * must give back exactly the bytes consumed, and decoding those again must give the same frame
 * (same canonical text). Aborts otherwise. Deterministic. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "et/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t again[ET_FRAME_HEADER_LEN + ET_FRAME_MAX_DEFAULT];
    static char text1[8192], text2[8192];
    et_frame f;
    size_t used;
    if (et_frame_decode(data, size, ET_FRAME_MAX_DEFAULT, &f, &used) != ET_FRAME_COMPLETE)
        return 0;
    if (used > size)
        abort();
    et_msg m;
    if (et_msg_parse(&f, &m) != ET_OK)
        return 0;
    et_frame_format(text1, sizeof(text1), &f, &m);

    int n = et_frame_encode(again, sizeof(again), &f, &m);
    if (n < 0 || (size_t)n != used || memcmp(again, data, used) != 0)
        abort();

    et_frame f2;
    size_t used2;
    et_msg m2;
    if (et_frame_decode(again, (size_t)n, ET_FRAME_MAX_DEFAULT, &f2, &used2) != ET_FRAME_COMPLETE ||
        used2 != used || et_msg_parse(&f2, &m2) != ET_OK)
        abort();
    et_frame_format(text2, sizeof(text2), &f2, &m2);
    if (strcmp(text1, text2) != 0)
        abort();
    return 0;
}
