/* fuzz/frame_stream.c: the streaming frame decoder over arbitrarily split input.
 *
 * Reaches et_frame_reader_init/space/commit/feed/next/set_max, et_frame_decode, et_msg_parse
 * (every payload parser) and et_frame_format. The first two input bytes choose the piece sizes
 * the rest is fed in and the negotiated max payload, so the fuzzer explores splits as well as
 * contents. Deterministic: no clock, no randomness. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "et/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t piece = (size_t)(data[0] % 64) + 1;
    uint32_t max = data[1] & 1 ? ET_FRAME_MAX_DEFAULT : ET_FRAME_MAX_MIN;
    data += 2;
    size -= 2;

    et_frame_reader r;
    if (et_frame_reader_init(&r, ET_FRAME_MAX_DEFAULT, piece) != ET_OK)
        abort();
    if (et_frame_reader_set_max(&r, max) != ET_OK)
        abort();
    size_t off = 0, total = 0;
    int done = 0;
    while (!done) {
        size_t n = size - off < piece ? size - off : piece;
        size_t avail;
        uint8_t *dst = et_frame_reader_space(&r, &avail);
        if (dst != NULL && n > 0) {
            if (n > avail)
                n = avail;
            memcpy(dst, data + off, n);
            et_frame_reader_commit(&r, n);
            off += n;
        }
        for (;;) {
            et_frame f;
            int rv = et_frame_reader_next(&r, &f);
            if (rv < 0) {
                done = 1;
                break;
            }
            if (rv == ET_FRAME_NEED_MORE)
                break;
            if (f.length > max)
                abort(); /* the decoder let an oversized frame through */
            total += ET_FRAME_HEADER_LEN + f.length;
            et_msg m;
            if (et_msg_parse(&f, &m) == ET_OK) {
                char text[512];
                et_frame_format(text, sizeof(text), &f, &m);
            }
        }
        if (off == size)
            done = 1;
    }
    if (total + et_frame_reader_buffered(&r) > size)
        abort(); /* frames out of nothing */
    et_frame_reader_cleanup(&r);
    return 0;
}
