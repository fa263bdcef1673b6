/* baidu_std frame codec: brpc's default protocol, for talking to brpc
 * clients and servers. A frame is a 12-byte header ('P' 'R' 'P' 'C',
 * body_size and meta_size as big-endian uint32), then meta_size bytes of
 * meta (a protobuf RpcMeta, see /work/shared/interop/brpc/baidu_rpc_meta.proto
 * for the field numbers), then the payload (opaque here: the application's
 * protobuf message), then the attachment (the meta's attachment_size bytes
 * at the end of the body).
 *
 * Like rpc_codec.h, pure functions over bytes: no I/O, no logging, no
 * allocation of its own (encoding grows the caller's buffer). Every function
 * is thread-safe as long as each buffer is used by one thread at a time. */
#ifndef NET__BAIDU_CODEC_H
#define NET__BAIDU_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <net/buffer.h>

#define NET__BAIDU_HEADER_LEN 12
#define NET__BAIDU_MAGIC "PRPC"
/* The largest frame accepted when the decoder is passed max_frame 0. */
#define NET__BAIDU_DEFAULT_MAX_FRAME ((size_t)64 << 20)

/* brpc's error codes (brpc/errno.proto), for a response's error_code. */
#define NET__BAIDU_ENOSERVICE 1001
#define NET__BAIDU_ENOMETHOD 1002
#define NET__BAIDU_EREQUEST 1003
#define NET__BAIDU_ERPCTIMEDOUT 1008
#define NET__BAIDU_EOVERCROWDED 1011
#define NET__BAIDU_EINTERNAL 2001
#define NET__BAIDU_ERESPONSE 2002
#define NET__BAIDU_ELOGOFF 2003
#define NET__BAIDU_ELIMIT 2004
#define NET__BAIDU_ECLOSE 2005

/* NRPC statuses and brpc error codes, both ways (the table is in
 * docs/protocol.md, "baidu_std").
 *
 * net__baidu_error_code: the error_code a netloop server sends for status:
 * OK 0, UNKNOWN_METHOD ENOMETHOD, BAD_REQUEST EREQUEST, INTERNAL EINTERNAL,
 * OVERLOADED ELIMIT, SHUTTING_DOWN ELOGOFF; an application status (100 up
 * to INT32_MAX) as itself; anything else EINTERNAL (local statuses are
 * never sent, see rpc.h).
 *
 * net__baidu_status: the status a netloop client delivers for a received
 * error_code: 0 OK, ENOSERVICE and ENOMETHOD UNKNOWN_METHOD, EREQUEST
 * BAD_REQUEST, EINTERNAL and ERESPONSE INTERNAL, ELIMIT and EOVERCROWDED
 * OVERLOADED, ELOGOFF SHUTTING_DOWN; any other code from 100 up as itself
 * (an application's, or brpc's own, e.g. ERPCTIMEDOUT 1008); a negative
 * code or one in 1..99 (an errno, which would collide with the protocol's
 * statuses) INTERNAL. Both thread-safe. */
int32_t net__baidu_error_code(uint32_t status);
uint32_t net__baidu_status(int32_t error_code);

/* The parts of RpcMeta netloop uses. Strings point into the decoded bytes
 * (not NUL-terminated) and stay valid as long as those bytes do; NULL when
 * the field was absent. Fields not listed (trace/span ids, request_id,
 * timeout_ms, authentication_data, user_fields) are skipped. */
struct net__baidu_meta {
    bool has_request, has_response;
    const char *service; size_t service_len;
    const char *method; size_t method_len;
    int64_t log_id;
    int32_t error_code; const char *error_text; size_t error_text_len;
    int32_t compress_type; /* 0 none; netloop does not decompress */
    uint64_t correlation_id;
    uint32_t attachment_size;
    /* checksum_type (11): NET__BAIDU_CHECKSUM_*, 0 when absent; the value
     * (12) points into the bytes like the strings; with_attachment (13). */
    int32_t checksum_type;
    const uint8_t *checksum_value; size_t checksum_value_len;
    bool checksum_with_attachment;
    /* Set when the meta asks for something netloop does not implement and
     * must answer with an error instead of serving: chunk_info (6),
     * stream_settings (8), a content_type (10) other than 0 (protobuf). */
    bool unsupported;
};

struct net__baidu_frame {
    struct net__baidu_meta meta;
    const uint8_t *payload; size_t payload_len;
    const uint8_t *attachment; size_t attachment_len;
    size_t frame_len; /* header + body: what to retrieve */
};

/* brpc's checksum types (brpc/options.proto, ChecksumType). */
#define NET__BAIDU_CHECKSUM_NONE 0
#define NET__BAIDU_CHECKSUM_CRC32C 1

/* Whether a decoded frame's checksum holds: true without one
 * (checksum_type 0); for CRC32C, true when checksum_value is 4 bytes,
 * big-endian, equal to brpc's masked CRC-32C (net__crc32c_mask) of the
 * payload, followed by the attachment when checksum_with_attachment is
 * set; false for any other checksum_type (one netloop cannot verify).
 * Thread-safe. */
bool net__baidu_checksum_ok(const struct net__baidu_frame *f);

/* True when the first 4 bytes (or as many as len has; true for len 0) match
 * "PRPC": for sniffing a connection's protocol. Thread-safe. */
bool net__baidu_sniff(const uint8_t *buf, size_t len);

/* Decodes the frame at the start of buf[0..len), max_frame the largest
 * acceptable frame, header included (0 selects NET__BAIDU_DEFAULT_MAX_FRAME).
 * Returns:
 *  1  *f describes a whole valid frame; retrieve f->frame_len bytes.
 *  0  more bytes are needed: *need is the whole frame's length once the
 *     header is complete, else 12.
 *  -EPROTO  a bad magic (after its first wrong byte), meta_size >
 *     body_size, a malformed meta, attachment_size > body - meta, neither or
 *     both of request and response, a request without service or method.
 *  -EMSGSIZE  12 + body_size > max_frame: decided from the header alone,
 *     before any of the body is buffered.
 * The meta is checked as soon as it has all arrived, before the payload:
 * like the header checks, so the outcome does not depend on how the bytes
 * were split into reads. Never reads past len. f and need must not be
 * NULL; *f is set on 1 only, *need on 0 only. Thread-safe. */
int net__baidu_decode(const uint8_t *buf, size_t len, size_t max_frame,
                      struct net__baidu_frame *f, size_t *need);

/* Append the 12-byte header and the meta of a request (service and method
 * names, correlation_id, attachment_size when > 0) or of a response
 * (error_code when not 0, error_text when not empty, correlation_id,
 * attachment_size when > 0); the caller sends payload_len bytes of payload
 * and then attachment_len bytes of attachment after them (e.g. by iovec).
 * Either all of header and meta are appended or nothing is.
 * Returns 0; -EINVAL for a NULL out, an empty or NULL service or method, a
 * string over UINT32_MAX / 4 bytes, a NULL error_text with error_text_len >
 * 0, an attachment over INT32_MAX or a body (meta + payload + attachment)
 * over UINT32_MAX; -ENOMEM (nothing appended). Not thread-safe for the same
 * out. */
int net__baidu_encode_request(net_buf_t *out, const char *service, size_t service_len,
                              const char *method, size_t method_len,
                              uint64_t correlation_id, size_t payload_len,
                              size_t attachment_len);
int net__baidu_encode_response(net_buf_t *out, uint64_t correlation_id, int32_t error_code,
                               const char *error_text, size_t error_text_len,
                               size_t payload_len, size_t attachment_len);

/* ---- Responses without a buffer (the server's reply paths) ---------------------
 *
 * A response as header + meta in a small array the caller owns, with the
 * error text as the meta's last bytes: the caller sends the head, then the
 * error text, then the payload, then the attachment (e.g. as four iovecs),
 * so no piece is copied into a buffer of ours. The meta's fields come in
 * the order correlation_id, attachment_size, response { error_code,
 * error_text } (protobuf accepts fields in any order). */
#define NET__BAIDU_RESPONSE_HEAD_MAX 64

/* Writes the head into out and returns its length (at most
 * NET__BAIDU_RESPONSE_HEAD_MAX), or 0 when the frame cannot be encoded: an
 * attachment over INT32_MAX, an error text over UINT32_MAX / 4, or a body
 * (meta + payload + attachment) over UINT32_MAX. Thread-safe. */
size_t net__baidu_response_head(uint8_t out[NET__BAIDU_RESPONSE_HEAD_MAX],
                                uint64_t correlation_id, int32_t error_code,
                                size_t error_text_len, size_t payload_len,
                                size_t attachment_len);

/* ---- Request side (the client) ------------------------------------------
 *
 * net__baidu_split_method: splits a method name "Service.Method" of len
 * bytes (not NUL-terminated) at its last '.': the service is
 * name[0..*service_len), the method *method (*method_len bytes). Returns 0,
 * or -EINVAL when there is no '.' or the service or the method would be
 * empty. Thread-safe.
 *
 * net__baidu_pack_request: writes the header and meta of a request, the
 * same bytes as net__baidu_encode_request, into out (room for
 * NET__BAIDU_REQUEST_HEAD_MAX bytes) and returns their length; the
 * payload and the attachment follow. -EINVAL for an empty or NULL service
 * or method, service_len + method_len over NET__BAIDU_MAX_NAMES, an
 * attachment over INT32_MAX or a body (meta + payload + attachment) over
 * UINT32_MAX. Thread-safe. */
/* Names up to 255 bytes together (what an NRPC method allows), a 10-byte
 * correlation_id and attachment_size, and the keys and lengths. */
#define NET__BAIDU_MAX_NAMES 255
#define NET__BAIDU_REQUEST_HEAD_MAX (NET__BAIDU_HEADER_LEN + NET__BAIDU_MAX_NAMES + 48)
int net__baidu_split_method(const char *name, size_t len, size_t *service_len,
                            const char **method, size_t *method_len);
int net__baidu_pack_request(uint8_t out[NET__BAIDU_REQUEST_HEAD_MAX], const char *service,
                            size_t service_len, const char *method, size_t method_len,
                            uint64_t correlation_id, size_t payload_len,
                            size_t attachment_len);

#endif
