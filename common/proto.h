/* proto.h — the lanes control protocol, version 1.
 *
 * lanesd (host) and lane-init (guest, PID 1) talk over one virtio-serial
 * port ("org.lanes.ctl.0") using this framed binary protocol. docs/protocol.md
 * is the prose description; this header is the wire contract.
 *
 * Wire format: every frame is a 12-byte header followed by `len` payload bytes.
 *
 *   offset size  field
 *   0      2     magic    0x4C4E ("LN"), little-endian
 *   2      1     version  LP_VERSION
 *   3      1     type     enum lp_type
 *   4      4     stream   stream id (LE); 0 = connection-level frame
 *   8      4     len      payload length (LE), <= LP_MAX_PAYLOAD
 *
 * Payloads of control frames are a sequence of TLV fields:
 *   u16 tag (LE), u32 len (LE), len bytes of value.
 * Unknown tags are ignored (forward compatibility); a field whose length runs
 * past the payload end makes the frame malformed. Integers inside values are
 * little-endian of the size the tag documents. Strings are NOT NUL-terminated
 * on the wire; a string containing a NUL byte is malformed.
 *
 * Data frames (LP_STDIN, LP_STDOUT, LP_STDERR, LP_DATA) carry raw bytes; a
 * data frame with len 0 means end of that data direction (EOF).
 *
 * Streams: the host allocates stream ids (odd numbers, never reused within a
 * connection). A stream begins with LP_EXEC, LP_FILE_PUT, LP_FILE_GET,
 * LP_SYNC, LP_SHUTDOWN, LP_FREEZE, LP_THAW or LP_CONFIGURE and ends with exactly one terminal frame from the
 * guest: LP_EXIT (exec), LP_OK or LP_ERROR (anything).
 *
 * Flow control: per stream and per direction, the sender may have at most
 * `window` data bytes outstanding. The window starts at LP_WINDOW_INITIAL and
 * grows when the receiver sends LP_WINDOW (u32 increment) after consuming
 * data. Control frames are not counted. A peer that overruns a window is in
 * violation and the stream is failed.
 *
 * Resync: after connecting (and whenever it lost sync) the host sends
 * LP_HELLO with a fresh nonce. The guest drops every stream it had (kills
 * running execs), resets its decoder, and answers LP_HELLO_ACK with the same
 * nonce. The host discards incoming bytes until it finds a well-formed
 * LP_HELLO_ACK carrying its nonce.
 *
 * Both sides must treat every received byte as hostile: lp_frame_parse() and
 * lp_tlv_next() check every length before touching memory.
 */
#ifndef LANES_PROTO_H
#define LANES_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define LP_MAGIC 0x4C4Eu
#define LP_VERSION 1
#define LP_HDR_SIZE 12
#define LP_MAX_PAYLOAD (64u * 1024u)
#define LP_WINDOW_INITIAL (256u * 1024u)
#define LP_PORT_NAME "org.lanes.ctl.0"

enum lp_type {
    LP_HELLO = 1,       /* h->g  TLV: NONCE(u64), VERSION(u32) */
    LP_HELLO_ACK = 2,   /* g->h  TLV: NONCE, VERSION, HOSTNAME, KERNEL, BOOT_MS(u64: ms since kernel start) */
    LP_EXEC = 3,        /* h->g  TLV: ARG*, ENV*, CWD, USER, TTY_ROWS/TTY_COLS (PTY if present),
                                      TIMEOUT_MS(u64), STDIN(u32 bool: host will send stdin) */
    LP_EXEC_STARTED = 4,/* g->h  TLV: PID(u32) */
    LP_STDIN = 5,       /* h->g  data; len 0 = EOF */
    LP_STDOUT = 6,      /* g->h  data (PTY output comes here too) */
    LP_STDERR = 7,      /* g->h  data */
    LP_WINDOW = 8,      /* both  TLV: INCREMENT(u32) */
    LP_RESIZE = 9,      /* h->g  TLV: TTY_ROWS(u32), TTY_COLS(u32) */
    LP_SIGNAL = 10,     /* h->g  TLV: SIGNO(u32) — sent to the exec's process group */
    LP_EXIT = 11,       /* g->h  TLV: EXIT_CODE(i32) or TERM_SIGNAL(u32), TIMED_OUT(u32 bool) */
    LP_ERROR = 12,      /* g->h  TLV: ERRNO(u32), MESSAGE — terminal for any stream */
    LP_FILE_PUT = 13,   /* h->g  TLV: PATH, MODE(u32), optional UID/GID(u32); then LP_DATA frames, LP_DATA len 0 ends;
                                 guest writes to a temp file, fsyncs, renames, answers LP_OK */
    LP_FILE_GET = 14,   /* h->g  TLV: PATH */
    LP_FILE_INFO = 15,  /* g->h  TLV: SIZE(u64), MODE(u32) — then LP_DATA frames, LP_DATA len 0, LP_OK */
    LP_DATA = 16,       /* both  file data; len 0 = EOF */
    LP_OK = 17,         /* g->h  terminal success; TLV optional */
    LP_SYNC = 18,       /* h->g  sync(2) all filesystems; LP_OK */
    LP_SHUTDOWN = 19,   /* h->g  TLV: SHUTDOWN_MODE(u32: 0 poweroff, 1 reboot); LP_OK, then the guest
                                 kills processes, syncs, unmounts and powers off */
    LP_PING = 20,       /* both  stream 0, any payload; answered with LP_PONG echoing it */
    LP_PONG = 21,
    LP_CANCEL = 22,     /* h->g  abandon a stream: execs are killed (SIGKILL to group), transfers aborted;
                                 the guest still sends the terminal frame */
    LP_FREEZE = 23,     /* h->g  FIFREEZE the root filesystem (flushes it and the disk cache); LP_OK */
    LP_THAW = 24,       /* h->g  FITHAW the root filesystem; LP_OK also when it was not frozen */
    LP_CONFIGURE = 25,  /* h->g  lane settings, idempotent (sent after every HELLO_ACK): TLV NET_ADDR
                                 ("10.0.2.2/30"), NET_GW, DNS*, CA_PEM (the lane CA: installed into a
                                 tmpfs bundle bind-mounted over the system one and exported as
                                 SSL_CERT_FILE etc.), DEFAULT_ENV* ("K=V" for every later exec,
                                 before the exec's own ENV). LP_OK or LP_ERROR */
    LP_TYPE_MAX = 25,
};

enum lp_tag {
    LP_T_NONCE = 1,
    LP_T_VERSION = 2,
    LP_T_HOSTNAME = 3,
    LP_T_KERNEL = 4,
    LP_T_BOOT_MS = 5,
    LP_T_ARG = 10,        /* repeated, in order */
    LP_T_ENV = 11,        /* repeated "KEY=VALUE" */
    LP_T_CWD = 12,
    LP_T_USER = 13,       /* name or numeric uid[:gid] */
    LP_T_TTY_ROWS = 14,
    LP_T_TTY_COLS = 15,
    LP_T_TIMEOUT_MS = 16,
    LP_T_STDIN = 17,
    LP_T_PID = 20,
    LP_T_INCREMENT = 21,
    LP_T_SIGNO = 22,
    LP_T_EXIT_CODE = 23,
    LP_T_TERM_SIGNAL = 24,
    LP_T_TIMED_OUT = 25,
    LP_T_ERRNO = 26,
    LP_T_MESSAGE = 27,
    LP_T_PATH = 30,
    LP_T_MODE = 31,
    LP_T_SIZE = 32,
    LP_T_UID = 33,
    LP_T_GID = 34,
    LP_T_SHUTDOWN_MODE = 35,
    LP_T_NET_ADDR = 40,
    LP_T_NET_GW = 41,
    LP_T_DNS = 42,
    LP_T_CA_PEM = 43,
    LP_T_DEFAULT_ENV = 44,
};

typedef struct {
    uint8_t type;
    uint32_t stream;
    uint32_t len;
    const uint8_t *payload; /* points into the parsed buffer */
} lp_frame_t;

/* Encode a header into out[LP_HDR_SIZE]. Returns 0, or -EMSGSIZE if len is
 * over LP_MAX_PAYLOAD. */
int lp_hdr_encode(uint8_t *out, uint8_t type, uint32_t stream, uint32_t len);

/* Try to parse one frame from buf[0..avail). Returns 1 and fills *f and
 * *consumed when a whole frame is present; 0 when more bytes are needed;
 * -EPROTO on bad magic/version/type, -EMSGSIZE on an oversized length.
 * Never reads past avail. */
int lp_frame_parse(const uint8_t *buf, size_t avail, lp_frame_t *f, size_t *consumed);

/* Find the offset of the next possible frame start (magic + version) at or
 * after buf+1, for resynchronisation; returns avail if none. */
size_t lp_resync_scan(const uint8_t *buf, size_t avail);

/* TLV builder over a caller-owned buffer of capacity cap (normally
 * LP_MAX_PAYLOAD). Functions return 0 or -EMSGSIZE (builder then stays
 * unusable: every later put fails too). */
typedef struct {
    uint8_t *buf;
    size_t cap;
    size_t len;
    int err;
} lp_msg_t;

void lp_msg_init(lp_msg_t *m, uint8_t *buf, size_t cap);
int lp_msg_put(lp_msg_t *m, uint16_t tag, const void *val, uint32_t len);
int lp_msg_put_str(lp_msg_t *m, uint16_t tag, const char *s);
int lp_msg_put_u32(lp_msg_t *m, uint16_t tag, uint32_t v);
int lp_msg_put_i32(lp_msg_t *m, uint16_t tag, int32_t v);
int lp_msg_put_u64(lp_msg_t *m, uint16_t tag, uint64_t v);

/* TLV reader. lp_tlv_next returns 1 with *tag, *val and *len set, 0 at the clean
 * end, -EBADMSG if a field overruns the payload. */
typedef struct {
    const uint8_t *p;
    size_t left;
} lp_tlv_iter_t;

void lp_tlv_init(lp_tlv_iter_t *it, const uint8_t *payload, size_t len);
int lp_tlv_next(lp_tlv_iter_t *it, uint16_t *tag, const uint8_t **val, uint32_t *len);

/* Typed value decoders: return 0, or -EBADMSG on wrong size / embedded NUL.
 * lp_val_str copies into out (cap bytes incl. NUL) and fails with
 * -ENAMETOOLONG if it does not fit. */
int lp_val_u32(const uint8_t *val, uint32_t len, uint32_t *out);
int lp_val_i32(const uint8_t *val, uint32_t len, int32_t *out);
int lp_val_u64(const uint8_t *val, uint32_t len, uint64_t *out);
int lp_val_str(const uint8_t *val, uint32_t len, char *out, size_t cap);

/* Little-endian helpers. */
static inline void lp_put_le16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void lp_put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline uint16_t lp_get_le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t lp_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

const char *lp_type_name(uint8_t type);

#endif
