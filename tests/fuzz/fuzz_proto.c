/* fuzz_proto.c — libFuzzer target for the guest control protocol codec:
 * lp_frame_parse over the whole input (with resync after errors, as the
 * agent does), lp_tlv_next and the typed value decoders over every frame's
 * payload. Checks the invariants the callers rely on. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        lp_frame_t f;
        size_t used = 0;
        int r = lp_frame_parse(data + off, size - off, &f, &used);
        if (r == 0)
            break;
        if (r < 0) {
            size_t skip = lp_resync_scan(data + off, size - off);
            assert(skip >= 1 && skip <= size - off);
            off += skip;
            continue;
        }
        assert(used >= LP_HDR_SIZE && used <= size - off && f.len <= LP_MAX_PAYLOAD);
        assert(f.payload >= data + off && f.payload + f.len <= data + off + used);
        lp_tlv_iter_t it;
        lp_tlv_init(&it, f.payload, f.len);
        uint16_t tag;
        const uint8_t *val;
        uint32_t len;
        int n = 0;
        while ((r = lp_tlv_next(&it, &tag, &val, &len)) == 1) {
            assert(val >= f.payload && val + len <= f.payload + f.len);
            uint32_t u32;
            int32_t i32;
            uint64_t u64;
            char s[64];
            (void)lp_val_u32(val, len, &u32);
            (void)lp_val_i32(val, len, &i32);
            (void)lp_val_u64(val, len, &u64);
            if (lp_val_str(val, len, s, sizeof(s)) == 0)
                assert(strlen(s) < sizeof(s));
            n++;
        }
        assert(r == 0 || r < 0);
        off += used;
    }
    return 0;
}
