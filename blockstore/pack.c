/* lanes block store — pack file format helpers (see pack.h).
 *
 * Pure encoding/decoding plus a read-only scan; callers own the fds and
 * their locking.  Thread-safe (no shared state).
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "pack.h"

uint32_t pack_crc32c(const void *buf, size_t len)
{
  /* Bitwise CRC-32C (Castagnoli): only ever run over 40-byte headers. */
  const uint8_t *p = buf;
  uint32_t crc = 0xffffffffu;
  while (len--) {
    crc ^= *p++;
    for (int k = 0; k < 8; k++)
      crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1)));
  }
  return ~crc;
}

static void put_le32(uint8_t *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

void pack_file_header(uint8_t hdr[PACK_FILE_HDR], uint64_t pack_id)
{
  memcpy(hdr, PACK_FILE_MAGIC, 8);
  for (int i = 0; i < 8; i++)
    hdr[8 + i] = (uint8_t)(pack_id >> (8 * i));
}

int pack_file_header_check(const uint8_t hdr[PACK_FILE_HDR],
                           uint64_t *pack_id)
{
  if (memcmp(hdr, PACK_FILE_MAGIC, 8) != 0)
    return -EBADMSG;
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v |= (uint64_t)hdr[8 + i] << (8 * i);
  *pack_id = v;
  return 0;
}

void pack_record_header(uint8_t hdr[PACK_REC_HDR], const store_id_t *id,
                        uint32_t len)
{
  memcpy(hdr, PACK_REC_MAGIC, 4);
  put_le32(hdr + 4, len);
  memcpy(hdr + 8, id->b, STORE_ID_LEN);
  put_le32(hdr + 40, pack_crc32c(hdr, 40));
  memset(hdr + 44, 0, 4);
}

int pack_record_header_check(const uint8_t hdr[PACK_REC_HDR], store_id_t *id,
                             uint32_t *len)
{
  if (memcmp(hdr, PACK_REC_MAGIC, 4) != 0 ||
      get_le32(hdr + 40) != pack_crc32c(hdr, 40))
    return -EBADMSG;
  uint32_t n = get_le32(hdr + 4);
  if (n > PACK_REC_MAX_LEN)
    return -EBADMSG;
  memcpy(id->b, hdr + 8, STORE_ID_LEN);
  *len = n;
  return 0;
}

static int pread_all(int fd, void *buf, size_t len, uint64_t off)
{
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, (char *)buf + done, len - done,
                      (off_t)(off + done));
    if (n == -1) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (n == 0)
      return -ENODATA;
    done += (size_t)n;
  }
  return 0;
}

int pack_scan(int fd, uint64_t size,
              int (*cb)(const store_id_t *id, uint64_t off, uint32_t len,
                        void *ud),
              void *ud, uint64_t *end)
{
  uint8_t fh[PACK_FILE_HDR], rh[PACK_REC_HDR];
  uint64_t pid;
  int r;
  if (size < PACK_FILE_HDR)
    return -EBADMSG;
  if ((r = pread_all(fd, fh, sizeof fh, 0)) < 0)
    return r == -ENODATA ? -EBADMSG : r;
  if (pack_file_header_check(fh, &pid) < 0)
    return -EBADMSG;
  uint64_t pos = PACK_FILE_HDR;
  while (pos + PACK_REC_HDR <= size) {
    store_id_t id;
    uint32_t len;
    if ((r = pread_all(fd, rh, sizeof rh, pos)) < 0) {
      if (r == -ENODATA)
        break;
      return r;
    }
    if (pack_record_header_check(rh, &id, &len) < 0 ||
        pos + PACK_REC_HDR + len > size)
      break;
    if (cb && cb(&id, pos + PACK_REC_HDR, len, ud)) {
      pos += PACK_REC_HDR + len;
      break;
    }
    pos += PACK_REC_HDR + len;
  }
  *end = pos;
  return 0;
}
