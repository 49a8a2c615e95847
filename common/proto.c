/* proto.c — codec for the lanes control protocol (see proto.h).
 *
 * Pure functions over caller buffers: no allocation, no I/O, no globals, so
 * the same object links into the static guest agent, lanesd and the fuzzers.
 */
#include "proto.h"

#include <errno.h>
#include <string.h>

int lp_hdr_encode(uint8_t *out, uint8_t type, uint32_t stream, uint32_t len)
{
    if (len > LP_MAX_PAYLOAD)
        return -EMSGSIZE;
    lp_put_le16(out, LP_MAGIC);
    out[2] = LP_VERSION;
    out[3] = type;
    lp_put_le32(out + 4, stream);
    lp_put_le32(out + 8, len);
    return 0;
}

int lp_frame_parse(const uint8_t *buf, size_t avail, lp_frame_t *f, size_t *consumed)
{
    if (avail < 2)
        return 0;
    if (lp_get_le16(buf) != LP_MAGIC)
        return -EPROTO;
    if (avail < 3)
        return 0;
    if (buf[2] != LP_VERSION)
        return -EPROTO;
    if (avail < LP_HDR_SIZE) {
        if (avail >= 4 && (buf[3] == 0 || buf[3] > LP_TYPE_MAX))
            return -EPROTO;
        return 0;
    }
    uint8_t type = buf[3];
    if (type == 0 || type > LP_TYPE_MAX)
        return -EPROTO;
    uint32_t len = lp_get_le32(buf + 8);
    if (len > LP_MAX_PAYLOAD)
        return -EMSGSIZE;
    if (avail - LP_HDR_SIZE < len)
        return 0;
    f->type = type;
    f->stream = lp_get_le32(buf + 4);
    f->len = len;
    f->payload = buf + LP_HDR_SIZE;
    *consumed = LP_HDR_SIZE + (size_t)len;
    return 1;
}

size_t lp_resync_scan(const uint8_t *buf, size_t avail)
{
    for (size_t i = 1; i < avail; i++) {
        if (buf[i] != (LP_MAGIC & 0xff))
            continue;
        if (i + 1 < avail && buf[i + 1] != (LP_MAGIC >> 8))
            continue;
        if (i + 2 < avail && buf[i + 2] != LP_VERSION)
            continue;
        return i;
    }
    return avail;
}

void lp_msg_init(lp_msg_t *m, uint8_t *buf, size_t cap)
{
    m->buf = buf;
    m->cap = cap;
    m->len = 0;
    m->err = 0;
}

int lp_msg_put(lp_msg_t *m, uint16_t tag, const void *val, uint32_t len)
{
    if (m->err)
        return m->err;
    if (m->cap - m->len < 6 || m->cap - m->len - 6 < len) {
        m->err = -EMSGSIZE;
        return m->err;
    }
    uint8_t *p = m->buf + m->len;
    lp_put_le16(p, tag);
    lp_put_le32(p + 2, len);
    if (len)
        memcpy(p + 6, val, len);
    m->len += 6 + (size_t)len;
    return 0;
}

int lp_msg_put_str(lp_msg_t *m, uint16_t tag, const char *s)
{
    size_t n = strlen(s);
    if (n > UINT32_MAX) {
        m->err = -EMSGSIZE;
        return m->err;
    }
    return lp_msg_put(m, tag, s, (uint32_t)n);
}

int lp_msg_put_u32(lp_msg_t *m, uint16_t tag, uint32_t v)
{
    uint8_t b[4];
    lp_put_le32(b, v);
    return lp_msg_put(m, tag, b, 4);
}

int lp_msg_put_i32(lp_msg_t *m, uint16_t tag, int32_t v)
{
    return lp_msg_put_u32(m, tag, (uint32_t)v);
}

int lp_msg_put_u64(lp_msg_t *m, uint16_t tag, uint64_t v)
{
    uint8_t b[8];
    lp_put_le32(b, (uint32_t)v);
    lp_put_le32(b + 4, (uint32_t)(v >> 32));
    return lp_msg_put(m, tag, b, 8);
}

void lp_tlv_init(lp_tlv_iter_t *it, const uint8_t *payload, size_t len)
{
    it->p = payload;
    it->left = len;
}

int lp_tlv_next(lp_tlv_iter_t *it, uint16_t *tag, const uint8_t **val, uint32_t *len)
{
    if (it->left == 0)
        return 0;
    if (it->left < 6)
        return -EBADMSG;
    uint16_t t = lp_get_le16(it->p);
    uint32_t l = lp_get_le32(it->p + 2);
    if (it->left - 6 < l)
        return -EBADMSG;
    *tag = t;
    *len = l;
    *val = it->p + 6;
    it->p += 6 + (size_t)l;
    it->left -= 6 + (size_t)l;
    return 1;
}

int lp_val_u32(const uint8_t *val, uint32_t len, uint32_t *out)
{
    if (len != 4)
        return -EBADMSG;
    *out = lp_get_le32(val);
    return 0;
}

int lp_val_i32(const uint8_t *val, uint32_t len, int32_t *out)
{
    uint32_t u;
    int r = lp_val_u32(val, len, &u);
    if (r < 0)
        return r;
    *out = (int32_t)u;
    return 0;
}

int lp_val_u64(const uint8_t *val, uint32_t len, uint64_t *out)
{
    if (len != 8)
        return -EBADMSG;
    *out = (uint64_t)lp_get_le32(val) | ((uint64_t)lp_get_le32(val + 4) << 32);
    return 0;
}

int lp_val_str(const uint8_t *val, uint32_t len, char *out, size_t cap)
{
    if (memchr(val, '\0', len))
        return -EBADMSG;
    if ((size_t)len + 1 > cap)
        return -ENAMETOOLONG;
    memcpy(out, val, len);
    out[len] = '\0';
    return 0;
}

const char *lp_type_name(uint8_t type)
{
    static const char *const names[] = {
        [LP_HELLO] = "HELLO",         [LP_HELLO_ACK] = "HELLO_ACK", [LP_EXEC] = "EXEC",
        [LP_EXEC_STARTED] = "EXEC_STARTED", [LP_STDIN] = "STDIN",   [LP_STDOUT] = "STDOUT",
        [LP_STDERR] = "STDERR",       [LP_WINDOW] = "WINDOW",       [LP_RESIZE] = "RESIZE",
        [LP_SIGNAL] = "SIGNAL",       [LP_EXIT] = "EXIT",           [LP_ERROR] = "ERROR",
        [LP_FILE_PUT] = "FILE_PUT",   [LP_FILE_GET] = "FILE_GET",   [LP_FILE_INFO] = "FILE_INFO",
        [LP_DATA] = "DATA",           [LP_OK] = "OK",               [LP_SYNC] = "SYNC",
        [LP_SHUTDOWN] = "SHUTDOWN",   [LP_PING] = "PING",           [LP_PONG] = "PONG",
        [LP_CANCEL] = "CANCEL",       [LP_FREEZE] = "FREEZE",       [LP_THAW] = "THAW",
        [LP_CONFIGURE] = "CONFIGURE",
    };
    if (type == 0 || type > LP_TYPE_MAX)
        return "UNKNOWN";
    return names[type];
}
