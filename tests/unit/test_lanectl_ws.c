/* test_lanectl_ws.c — lanectl's WebSocket frame decoder (ws_client_parse):
 * whole and split frames, 16/64-bit lengths, fragmentation with control
 * frames in between, and the protocol errors it must refuse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ws_client.h"

typedef struct {
    int ops[16];
    size_t lens[16];
    uint8_t first[16];
    int n;
} seen_t;

static void on_frame(int op, const uint8_t *data, size_t len, void *ud)
{
    seen_t *s = ud;
    assert_true(s->n < 16);
    s->ops[s->n] = op;
    s->lens[s->n] = len;
    s->first[s->n] = len ? data[0] : 0;
    s->n++;
}

/* Server frame (unmasked) into out; returns its length. */
static size_t frame(uint8_t *out, int fin, int op, const uint8_t *data, size_t len)
{
    size_t n = 0;
    out[n++] = (uint8_t)((fin ? 0x80 : 0) | op);
    if (len < 126) {
        out[n++] = (uint8_t)len;
    } else if (len <= 0xffff) {
        out[n++] = 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = 127;
        for (int i = 7; i >= 0; i--)
            out[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    memcpy(out + n, data, len);
    return n + len;
}

static void test_ws_parse_whole_and_split(void **state)
{
    (void)state;
    static uint8_t payload[70000], buf[80000];
    memset(payload, 'p', sizeof(payload));
    size_t n = frame(buf, 1, 1, (const uint8_t *)"hi", 2);
    n += frame(buf + n, 1, 2, payload, 300);
    n += frame(buf + n, 1, 2, payload, sizeof(payload));
    /* Feed it in every split position class: 1 byte at a time at the start. */
    ws_client_parser_t p = {0};
    seen_t s = {0};
    size_t off = 0, have = 0;
    while (have < n) {
        have += have < 20 ? 1 : 4096;
        if (have > n)
            have = n;
        long used = ws_client_parse(&p, buf + off, have - off, on_frame, &s);
        assert_true(used >= 0);
        off += (size_t)used;
    }
    assert_int_equal(off, n);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.ops[0], 1);
    assert_int_equal(s.lens[0], 2);
    assert_int_equal(s.lens[1], 300);
    assert_int_equal(s.lens[2], sizeof(payload));
    free(p.msg);
}

static void test_ws_parse_fragments(void **state)
{
    (void)state;
    uint8_t buf[256];
    size_t n = frame(buf, 0, 2, (const uint8_t *)"ab", 2);
    n += frame(buf + n, 1, 9, (const uint8_t *)"P", 1); /* ping between fragments */
    n += frame(buf + n, 0, 0, (const uint8_t *)"cd", 2);
    n += frame(buf + n, 1, 0, (const uint8_t *)"e", 1);
    n += frame(buf + n, 1, 8, (const uint8_t *)"\x03\xe8", 2);
    ws_client_parser_t p = {0};
    seen_t s = {0};
    assert_int_equal(ws_client_parse(&p, buf, n, on_frame, &s), (long)n);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.ops[0], 9);
    assert_int_equal(s.ops[1], 2);
    assert_int_equal(s.lens[1], 5);
    assert_memory_equal(p.msg, "abcde", 5);
    assert_int_equal(s.ops[2], 8);
    free(p.msg);
}

static void test_ws_parse_errors(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        uint8_t bytes[8];
        size_t len;
    } bad[] = {
        {"masked server frame", {0x81, 0x81, 1, 2, 3, 4, 'x'}, 7},
        {"reserved bits", {0xc1, 0x01, 'x'}, 3},
        {"unknown opcode", {0x83, 0x01, 'x'}, 3},
        {"continuation without message", {0x80, 0x01, 'x'}, 3},
        {"fragmented control frame", {0x09, 0x01, 'x'}, 3},
        {"over the size cap", {0x82, 0x7e, 0x01, 0x00}, 4},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        print_message("%s\n", bad[i].what);
        ws_client_parser_t p = {.max_message = 100};
        seen_t s = {0};
        assert_int_equal(ws_client_parse(&p, bad[i].bytes, bad[i].len, on_frame, &s), -1);
        free(p.msg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ws_parse_whole_and_split),
        cmocka_unit_test(test_ws_parse_fragments),
        cmocka_unit_test(test_ws_parse_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
