/* NRPC/1 frame codec: encodes request and response frames into a net_buf_t
 * and decodes them from a connection's input buffer. The wire format is
 * specified in docs/protocol.md; this header only names its pieces.
 *
 * A frame is a 24-byte header, then the method name (requests only), then
 * the body. The codec does no I/O, no logging and no allocation of its own
 * (encoding grows the caller's buffer): it is a set of pure functions over
 * bytes, so every function is thread-safe as long as each buffer is used by
 * one thread at a time (normally the connection's loop thread).
 *
 * Errors: 0 (or 1 where stated) or a negative errno. Protocol violations are
 * -EPROTO (a malformed header) or -EMSGSIZE (a frame larger than the
 * receiver's maximum); -EINVAL is a caller mistake. */
#ifndef NET__RPC_CODEC_H
#define NET__RPC_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include <net/buffer.h>

/* ---- Constants ---------------------------------------------------------- */

#define NET__RPC_HEADER_LEN 24
#define NET__RPC_MAX_METHOD 255
#define NET__RPC_VERSION 1
#define NET__RPC_TYPE_REQUEST 1
#define NET__RPC_TYPE_RESPONSE 2
/* The four magic bytes 'N' 'R' 'P' 'C', as a string without its NUL. */
#define NET__RPC_MAGIC "NRPC"
/* Largest frame (header + method + body) a receiver accepts unless
 * configured otherwise. Passing max_frame 0 to the decoder selects it. */
#define NET__RPC_DEFAULT_MAX_FRAME ((size_t)64 << 20)

/* ---- Status codes --------------------------------------------------------
 *
 * Kept under internal NET__ names so the public RPC header can define its own
 * NET_RPC_* names (e.g. `#define NET_RPC_TIMEOUT NET__RPC_TIMEOUT`) without a
 * clash. They are macros of type unsigned int, not an enum: the local-only
 * values do not fit in an int, which is what C11 requires of enum constants.
 *
 * Wire codes travel in a response's status field. Local-only codes complete a
 * call on the caller's side and are never sent: they lie in the reserved
 * range NET__RPC_LOCAL_MIN..UINT32_MAX, which the decoder refuses to accept
 * from a peer (and the encoder refuses to send), so a call that ends with one
 * of them really ended locally. */
#define NET__RPC_OK 0u
#define NET__RPC_UNKNOWN_METHOD 1u
#define NET__RPC_BAD_REQUEST 2u
#define NET__RPC_INTERNAL 3u
#define NET__RPC_OVERLOADED 4u
#define NET__RPC_SHUTTING_DOWN 5u
/* 6..99 are reserved for future library codes; applications use 100 and up
 * (below NET__RPC_LOCAL_MIN). */
#define NET__RPC_APP_BASE 100u

#define NET__RPC_LOCAL_MIN 0xFFFFFF00u
#define NET__RPC_TIMEOUT 0xFFFFFF01u
#define NET__RPC_DISCONNECTED 0xFFFFFF02u
#define NET__RPC_CANCELLED 0xFFFFFF03u
#define NET__RPC_PROTOCOL_ERROR 0xFFFFFF04u

/* A short constant name for a status, for log lines: "OK", "UNKNOWN_METHOD",
 * ..., "TIMEOUT", ...; "APPLICATION" for codes from NET__RPC_APP_BASE up to
 * the local range, "RESERVED" for unassigned codes. Never NULL; static text.
 * Thread-safe. */
const char *net__rpc_status_name(uint32_t status);

/* What a connection's input limit must allow for frames up to max_frame:
 * a largest frame plus one read beyond it (the start of the next frame),
 * SIZE_MAX when that does not fit. Thread-safe. */
size_t net__rpc_input_need(size_t max_frame);

/* ---- Header --------------------------------------------------------------- */

/* The header fields in host byte order (the magic is implied). */
struct net__rpc_header {
    uint8_t version;     /* NET__RPC_VERSION */
    uint8_t type;        /* NET__RPC_TYPE_REQUEST or NET__RPC_TYPE_RESPONSE */
    uint16_t method_len; /* request: 1..255; response: 0 */
    uint64_t call_id;
    uint32_t status;   /* request: 0; response: a wire status code */
    uint32_t body_len; /* bytes of body after the method name */
};

/* 24 + method_len + body_len, computed in 64 bits (cannot overflow).
 * Thread-safe. */
uint64_t net__rpc_frame_size(const struct net__rpc_header *h);

/* Writes the 24 header bytes for *h into out, magic included. Packs the
 * fields exactly as given, without validating them (the caller sets version
 * to NET__RPC_VERSION); for building a frame from pieces, e.g. with writev.
 * Thread-safe. */
void net__rpc_header_pack(uint8_t out[NET__RPC_HEADER_LEN],
                          const struct net__rpc_header *h);

/* Decodes and validates the 24 header bytes at p against every rule of
 * docs/protocol.md, with max_frame the largest acceptable frame size
 * (0 selects NET__RPC_DEFAULT_MAX_FRAME). Returns 0, -EPROTO (malformed) or
 * -EMSGSIZE (24 + method_len + body_len > max_frame). *out receives the raw
 * fields even on error, so a log line can show them. On error *reason (if
 * reason is not NULL) is set to a short static text such as "bad magic";
 * it is left alone on success. -EINVAL for a NULL p or out.
 * Thread-safe. */
int net__rpc_header_parse(const uint8_t *p, size_t max_frame,
                          struct net__rpc_header *out, const char **reason);

/* ---- Encoding ------------------------------------------------------------- */

/* Append one complete frame (header, method, body) to out. Either the whole
 * frame is appended or nothing is. method and body are copied; they must not
 * point into out itself (the buffer may move when it grows). body may be NULL
 * when body_len is 0.
 * Returns 0, -ENOMEM, or -EINVAL for: a NULL out; a NULL method; method_len
 * 0 or > NET__RPC_MAX_METHOD; a NULL body with body_len > 0; body_len >
 * UINT32_MAX; a response status in the local-only range.
 * The sender does not know the peer's maximum frame size: it is up to the
 * caller to stay under it (a peer closes the connection on a larger frame).
 * Not thread-safe for the same out: one thread at a time. */
int net__rpc_encode_request(net_buf_t *out, uint64_t call_id, const char *method,
                            size_t method_len, const void *body, size_t body_len);
int net__rpc_encode_response(net_buf_t *out, uint64_t call_id, uint32_t status,
                             const void *body, size_t body_len);

/* ---- Decoding ------------------------------------------------------------- */

/* One decoded frame. method and body point into the input buffer and stay
 * valid until that buffer is next modified. */
struct net__rpc_frame {
    struct net__rpc_header hdr;
    const char *method; /* hdr.method_len bytes, not NUL-terminated */
    const char *body;   /* hdr.body_len bytes; == method + hdr.method_len */
    size_t total;       /* bytes of the whole frame: 24 + method + body */
};

/* Looks at the front of in, without consuming anything:
 *  1  a complete, valid frame is there: *frame describes it. Handle it, then
 *     net_buf_retrieve(in, frame->total), and call again: several frames may
 *     be waiting.
 *  0  more bytes are needed. If the header is complete (and valid),
 *     frame->hdr and frame->total are set, so the caller can reserve room
 *     for the rest; otherwise frame->total is 0. method and body are NULL.
 *  <0 a protocol error: -EPROTO or -EMSGSIZE as for net__rpc_header_parse(),
 *     with *reason set; frame->hdr holds the raw header bytes that have
 *     arrived (missing ones read as 0). The caller logs one line and closes
 *     the connection. -EINVAL for a NULL in or frame.
 * Each rule is checked as soon as the bytes it looks at have arrived: a bad
 * magic is refused after its first wrong byte, and the size limit with the
 * 24th header byte, before any of the body is buffered; the outcome does not
 * depend on how the bytes were split into reads. So call this after every
 * read. max_frame 0 selects NET__RPC_DEFAULT_MAX_FRAME.
 * Not thread-safe for the same buffer: one thread at a time. */
int net__rpc_decode(const net_buf_t *in, size_t max_frame,
                    struct net__rpc_frame *frame, const char **reason);

#endif
