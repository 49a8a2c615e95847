/* lanes block store — pack file format (used by the local object backend).
 *
 * A pack is an append-only file of object records:
 *   file header (16 bytes): "LNSPACK1", pack id (u64 little endian)
 *   records, back to back:
 *     header (48 bytes): "LPR1", data length (u32 LE), object id (32 bytes,
 *                        the SHA-256 of the data), CRC-32C of the previous
 *                        40 bytes (u32 LE), 4 zero bytes
 *     data (length bytes)
 * The header CRC lets a scan tell a complete header from a torn or foreign
 * one without hashing the data; the data itself is verified by its SHA-256
 * on every read.  Nothing here does I/O locking: see objects-local.c.
 */
#ifndef LANES_BLOCKSTORE_PACK_H
#define LANES_BLOCKSTORE_PACK_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define PACK_FILE_MAGIC "LNSPACK1"
#define PACK_FILE_HDR 16u
#define PACK_REC_MAGIC "LPR1"
#define PACK_REC_HDR 48u
#define PACK_REC_MAX_LEN (64u * 1024 * 1024)

uint32_t pack_crc32c(const void *buf, size_t len);

void pack_file_header(uint8_t hdr[PACK_FILE_HDR], uint64_t pack_id);
/* 0 if hdr is a pack file header (pack id stored in *pack_id), else
 * -EBADMSG. */
int pack_file_header_check(const uint8_t hdr[PACK_FILE_HDR],
                           uint64_t *pack_id);

void pack_record_header(uint8_t hdr[PACK_REC_HDR], const store_id_t *id,
                        uint32_t len);
/* 0 if hdr is an intact record header (id and length stored), else
 * -EBADMSG. */
int pack_record_header_check(const uint8_t hdr[PACK_REC_HDR], store_id_t *id,
                             uint32_t *len);

/* Walk the records of the pack open on fd (file size size): cb is called
 * for each record whose header is intact and whose data lies within the
 * file (data offset, length); a nonzero return stops the walk.  *end is
 * set to the end of the last such record: the file's valid prefix (a torn
 * tail starts there).  Returns 0 or a negative errno (-EBADMSG: not a
 * pack). */
int pack_scan(int fd, uint64_t size,
              int (*cb)(const store_id_t *id, uint64_t off, uint32_t len,
                        void *ud),
              void *ud, uint64_t *end);

#endif
