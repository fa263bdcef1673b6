/* baidu_std frame codec (see lib/rpc/baidu_codec.h).
 *
 * Decoding runs its checks in the order of the bytes they need (magic,
 * header sizes, meta, then the rest of the body): on any prefix of a stream
 * the result is "need more" or the error the whole frame would give. */
#include <errno.h>
#include <string.h>

#include "rpc/baidu_codec.h"
#include "rpc/crc32c.h"
#include "rpc/pb.h"
#include "rpc/rpc_codec.h"

/* RpcMeta field numbers (baidu_rpc_meta.proto). */
enum {
    META_REQUEST = 1, META_RESPONSE = 2, META_COMPRESS = 3, META_CORRELATION = 4,
    META_ATTACHMENT = 5, META_CHUNK_INFO = 6, META_STREAM = 8, META_CONTENT_TYPE = 10,
    META_CHECKSUM_TYPE = 11, META_CHECKSUM_VALUE = 12, META_CHECKSUM_WITH_ATT = 13,
};
enum { REQ_SERVICE = 1, REQ_METHOD = 2, REQ_LOG_ID = 3 };
enum { RESP_ERROR_CODE = 1, RESP_ERROR_TEXT = 2 };

#define MAGIC_LEN 4

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

bool net__baidu_sniff(const uint8_t *buf, size_t len)
{
    size_t n = len < MAGIC_LEN ? len : MAGIC_LEN;
    return memcmp(buf, NET__BAIDU_MAGIC, n) == 0;
}

/* ---- Meta ------------------------------------------------------------------ */

/* A known field must have its declared wire type: protobuf would file a
 * mismatch as an unknown field, but no brpc sends one, and a peer that does
 * is better refused than half understood. */
static int want_wire(const struct net__pb_field *f, unsigned wire)
{
    return f->wire == wire ? 0 : -EPROTO;
}

static int string_field(const struct net__pb_field *f, const char **s, size_t *len)
{
    if (want_wire(f, NET__PB_LEN) < 0)
        return -EPROTO;
    /* An empty string still says "present": point at a valid byte. */
    *s = f->len ? (const char *)f->data : "";
    *len = f->len;
    return 0;
}

static int int_field(const struct net__pb_field *f, uint64_t *v)
{
    if (want_wire(f, NET__PB_VARINT) < 0)
        return -EPROTO;
    *v = f->value;
    return 0;
}

static int request_field(struct net__baidu_meta *m, const struct net__pb_field *f)
{
    uint64_t v;
    switch (f->number) {
    case REQ_SERVICE: return string_field(f, &m->service, &m->service_len);
    case REQ_METHOD: return string_field(f, &m->method, &m->method_len);
    case REQ_LOG_ID:
        if (int_field(f, &v) < 0)
            return -EPROTO;
        m->log_id = (int64_t)v;
        return 0;
    default: return 0;
    }
}

static int response_field(struct net__baidu_meta *m, const struct net__pb_field *f)
{
    uint64_t v;
    switch (f->number) {
    case RESP_ERROR_CODE:
        if (int_field(f, &v) < 0)
            return -EPROTO;
        m->error_code = (int32_t)(uint32_t)v; /* int32: the low 32 bits */
        return 0;
    case RESP_ERROR_TEXT: return string_field(f, &m->error_text, &m->error_text_len);
    default: return 0;
    }
}

typedef int (*field_fn)(struct net__baidu_meta *m, const struct net__pb_field *f);

/* Walks a message, handing each field to fn; unknown ones fn ignores. A
 * submessage that appears twice is merged, as protobuf does. */
static int walk(struct net__baidu_meta *m, const uint8_t *p, size_t len, field_fn fn)
{
    struct net__pb_reader r = { p, p + len };
    struct net__pb_field f;
    int rc;
    while ((rc = net__pb_read_field(&r, &f)) == 1)
        if (fn(m, &f) < 0)
            return -EPROTO;
    return rc;
}

static int sub_field(struct net__baidu_meta *m, const struct net__pb_field *f, bool *has,
                     field_fn fn)
{
    if (want_wire(f, NET__PB_LEN) < 0)
        return -EPROTO;
    *has = true;
    return walk(m, f->data, f->len, fn);
}

static int scalar_meta_field(struct net__baidu_meta *m, const struct net__pb_field *f)
{
    uint64_t v;
    if (int_field(f, &v) < 0)
        return -EPROTO;
    if (f->number == META_COMPRESS)
        m->compress_type = (int32_t)(uint32_t)v;
    else if (f->number == META_CORRELATION)
        m->correlation_id = v;
    else if ((int32_t)(uint32_t)v < 0) /* attachment_size, an int32 */
        return -EPROTO;
    else
        m->attachment_size = (uint32_t)v;
    return 0;
}

static int checksum_field(struct net__baidu_meta *m, const struct net__pb_field *f)
{
    uint64_t v;
    if (f->number == META_CHECKSUM_VALUE) {
        if (want_wire(f, NET__PB_LEN) < 0)
            return -EPROTO;
        m->checksum_value = f->data;
        m->checksum_value_len = f->len;
        return 0;
    }
    if (int_field(f, &v) < 0)
        return -EPROTO;
    if (f->number == META_CHECKSUM_TYPE)
        m->checksum_type = (int32_t)(uint32_t)v;
    else
        m->checksum_with_attachment = v != 0;
    return 0;
}

static int meta_field(struct net__baidu_meta *m, const struct net__pb_field *f)
{
    switch (f->number) {
    case META_REQUEST: return sub_field(m, f, &m->has_request, request_field);
    case META_RESPONSE: return sub_field(m, f, &m->has_response, response_field);
    case META_COMPRESS:
    case META_CORRELATION:
    case META_ATTACHMENT: return scalar_meta_field(m, f);
    case META_CHUNK_INFO:
    case META_STREAM: m->unsupported = true; return 0;
    case META_CONTENT_TYPE:
        /* Any wire type was skipped fine; only a non-protobuf type matters. */
        m->unsupported |= f->wire != NET__PB_VARINT || f->value != 0;
        return 0;
    case META_CHECKSUM_TYPE:
    case META_CHECKSUM_VALUE:
    case META_CHECKSUM_WITH_ATT: return checksum_field(m, f);
    default: return 0;
    }
}

static int decode_meta(const uint8_t *p, size_t len, struct net__baidu_meta *m)
{
    memset(m, 0, sizeof *m);
    if (walk(m, p, len, meta_field) < 0 || m->has_request == m->has_response)
        return -EPROTO;
    if (m->has_request && (!m->service || !m->method))
        return -EPROTO; /* both are required in RpcRequestMeta */
    return 0;
}

/* ---- Decoding -------------------------------------------------------------- */

static int need_more(size_t *need, size_t n)
{
    *need = n;
    return 0;
}

static void fill_frame(struct net__baidu_frame *f, const uint8_t *body, uint32_t body_size,
                       uint32_t meta_size)
{
    size_t att = f->meta.attachment_size;
    f->payload = body + meta_size;
    f->payload_len = body_size - meta_size - att;
    f->attachment = f->payload + f->payload_len;
    f->attachment_len = att;
    f->frame_len = NET__BAIDU_HEADER_LEN + (size_t)body_size;
}

int net__baidu_decode(const uint8_t *buf, size_t len, size_t max_frame,
                      struct net__baidu_frame *f, size_t *need)
{
    if (!net__baidu_sniff(buf, len))
        return -EPROTO;
    if (len < NET__BAIDU_HEADER_LEN)
        return need_more(need, NET__BAIDU_HEADER_LEN);
    uint32_t body_size = get_be32(buf + 4), meta_size = get_be32(buf + 8);
    uint64_t total = (uint64_t)NET__BAIDU_HEADER_LEN + body_size;
    if (meta_size > body_size)
        return -EPROTO;
    if (total > (max_frame ? max_frame : NET__BAIDU_DEFAULT_MAX_FRAME))
        return -EMSGSIZE;
    const uint8_t *body = buf + NET__BAIDU_HEADER_LEN;
    size_t have = len - NET__BAIDU_HEADER_LEN;
    if (have < meta_size)
        return need_more(need, (size_t)total);
    struct net__baidu_meta m;
    if (decode_meta(body, meta_size, &m) < 0 || m.attachment_size > body_size - meta_size)
        return -EPROTO;
    if (have < body_size)
        return need_more(need, (size_t)total);
    f->meta = m;
    fill_frame(f, body, body_size, meta_size);
    return 1;
}

/* brpc's CRC32C checksum_value: the masked CRC, big-endian, over the
 * payload and, when the meta says so, the attachment after it. */
bool net__baidu_checksum_ok(const struct net__baidu_frame *f)
{
    const struct net__baidu_meta *m = &f->meta;
    if (m->checksum_type == NET__BAIDU_CHECKSUM_NONE)
        return true;
    if (m->checksum_type != NET__BAIDU_CHECKSUM_CRC32C || m->checksum_value_len != 4)
        return false;
    uint32_t crc = net__crc32c(0, f->payload, f->payload_len);
    if (m->checksum_with_attachment)
        crc = net__crc32c(crc, f->attachment, f->attachment_len);
    return get_be32(m->checksum_value) == net__crc32c_mask(crc);
}

/* ---- Encoding -------------------------------------------------------------- */

/* What one encode writes after the header: the meta's fields in order. */
struct meta_out {
    bool request;
    const char *service; size_t service_len;
    const char *method; size_t method_len;
    int32_t error_code;
    const char *error_text; size_t error_text_len;
    uint64_t correlation_id;
    size_t attachment_len;
};

/* Length of the request or response submessage's contents. */
static size_t inner_len(const struct meta_out *o)
{
    if (o->request)
        return net__pb_len_field_len(REQ_SERVICE, o->service_len) +
               net__pb_len_field_len(REQ_METHOD, o->method_len);
    size_t n = 0;
    if (o->error_code != 0) /* sign-extended, as protobuf encodes an int32 */
        n += net__pb_varint_field_len(RESP_ERROR_CODE, (uint64_t)(int64_t)o->error_code);
    if (o->error_text_len > 0)
        n += net__pb_len_field_len(RESP_ERROR_TEXT, o->error_text_len);
    return n;
}

static size_t meta_len(const struct meta_out *o)
{
    size_t n = net__pb_len_field_len(o->request ? META_REQUEST : META_RESPONSE, inner_len(o));
    n += net__pb_varint_field_len(META_CORRELATION, o->correlation_id);
    if (o->attachment_len > 0)
        n += net__pb_varint_field_len(META_ATTACHMENT, o->attachment_len);
    return n;
}

static uint8_t *put_inner(uint8_t *p, const struct meta_out *o)
{
    if (o->request) {
        p = net__pb_put_len_field(p, REQ_SERVICE, o->service, o->service_len);
        return net__pb_put_len_field(p, REQ_METHOD, o->method, o->method_len);
    }
    if (o->error_code != 0)
        p = net__pb_put_varint_field(p, RESP_ERROR_CODE, (uint64_t)(int64_t)o->error_code);
    if (o->error_text_len > 0)
        p = net__pb_put_len_field(p, RESP_ERROR_TEXT, o->error_text, o->error_text_len);
    return p;
}

static void put_meta(uint8_t *p, const struct meta_out *o)
{
    p = net__pb_put_len_prefix(p, o->request ? META_REQUEST : META_RESPONSE, inner_len(o));
    p = put_inner(p, o);
    p = net__pb_put_varint_field(p, META_CORRELATION, o->correlation_id);
    if (o->attachment_len > 0)
        net__pb_put_varint_field(p, META_ATTACHMENT, o->attachment_len);
}

/* A bound on each string that keeps meta_len() from wrapping even with a
 * 32-bit size_t; a meta that large would be refused by any peer anyway. */
#define MAX_STRING (UINT32_MAX / 4)

/* Whether a frame of these parts can be encoded: an attachment fits its
 * int32 field and the body its uint32. Each term is checked alone first,
 * so the sum cannot wrap. */
static bool frame_fits(uint64_t meta, size_t payload_len, size_t attachment_len)
{
    return attachment_len <= INT32_MAX && payload_len <= UINT32_MAX && meta <= UINT32_MAX &&
           meta + payload_len + attachment_len <= UINT32_MAX;
}

static void put_header(uint8_t *p, uint64_t meta, size_t payload_len, size_t attachment_len)
{
    memcpy(p, NET__BAIDU_MAGIC, MAGIC_LEN);
    put_be32(p + 4, (uint32_t)(meta + payload_len + attachment_len));
    put_be32(p + 8, (uint32_t)meta);
}

/* Header and meta into p (room for NET__BAIDU_HEADER_LEN + meta bytes). */
static size_t pack(uint8_t *p, const struct meta_out *o, size_t meta, size_t payload_len)
{
    put_header(p, meta, payload_len, o->attachment_len);
    put_meta(p + NET__BAIDU_HEADER_LEN, o);
    return NET__BAIDU_HEADER_LEN + meta;
}

static int encode(net_buf_t *out, const struct meta_out *o, size_t payload_len)
{
    if (o->service_len > MAX_STRING || o->method_len > MAX_STRING ||
        o->error_text_len > MAX_STRING)
        return -EINVAL;
    size_t meta = meta_len(o);
    if (!frame_fits(meta, payload_len, o->attachment_len))
        return -EINVAL;
    if (net_buf_ensure_writable(out, NET__BAIDU_HEADER_LEN + meta) < 0)
        return -ENOMEM;
    size_t n = pack((uint8_t *)net_buf_begin_write(out), o, meta, payload_len);
    return net_buf_has_written(out, n);
}

int net__baidu_encode_request(net_buf_t *out, const char *service, size_t service_len,
                              const char *method, size_t method_len,
                              uint64_t correlation_id, size_t payload_len,
                              size_t attachment_len)
{
    if (!out || !service || !service_len || !method || !method_len)
        return -EINVAL;
    struct meta_out o = {
        .request = true, .service = service, .service_len = service_len,
        .method = method, .method_len = method_len,
        .correlation_id = correlation_id, .attachment_len = attachment_len,
    };
    return encode(out, &o, payload_len);
}

int net__baidu_encode_response(net_buf_t *out, uint64_t correlation_id, int32_t error_code,
                               const char *error_text, size_t error_text_len,
                               size_t payload_len, size_t attachment_len)
{
    if (!out || (!error_text && error_text_len > 0))
        return -EINVAL;
    struct meta_out o = {
        .error_code = error_code, .error_text = error_text,
        .error_text_len = error_text_len,
        .correlation_id = correlation_id, .attachment_len = attachment_len,
    };
    return encode(out, &o, payload_len);
}

/* ---- Status mapping ------------------------------------------------------ */

int32_t net__baidu_error_code(uint32_t status)
{
    switch (status) {
    case NET__RPC_OK: return 0;
    case NET__RPC_UNKNOWN_METHOD: return NET__BAIDU_ENOMETHOD;
    case NET__RPC_BAD_REQUEST: return NET__BAIDU_EREQUEST;
    case NET__RPC_OVERLOADED: return NET__BAIDU_ELIMIT;
    case NET__RPC_SHUTTING_DOWN: return NET__BAIDU_ELOGOFF;
    default: break;
    }
    if (status >= NET__RPC_APP_BASE && status <= INT32_MAX)
        return (int32_t)status;
    return NET__BAIDU_EINTERNAL; /* INTERNAL, the reserved 6..99, local codes */
}

uint32_t net__baidu_status(int32_t error_code)
{
    switch (error_code) {
    case 0: return NET__RPC_OK;
    case NET__BAIDU_ENOSERVICE:
    case NET__BAIDU_ENOMETHOD: return NET__RPC_UNKNOWN_METHOD;
    case NET__BAIDU_EREQUEST: return NET__RPC_BAD_REQUEST;
    case NET__BAIDU_EINTERNAL:
    case NET__BAIDU_ERESPONSE: return NET__RPC_INTERNAL;
    case NET__BAIDU_ELIMIT:
    case NET__BAIDU_EOVERCROWDED: return NET__RPC_OVERLOADED;
    case NET__BAIDU_ELOGOFF: return NET__RPC_SHUTTING_DOWN;
    default: break;
    }
    /* Below 100 a code is an errno (brpc passes them through) and would be
     * read as one of our protocol statuses. */
    return error_code >= (int32_t)NET__RPC_APP_BASE ? (uint32_t)error_code : NET__RPC_INTERNAL;
}

/* ---- Response heads (the server's reply paths) ---------------------------- */

/* The meta up to the error text's bytes, which the caller sends next. */
static uint8_t *put_head_meta(uint8_t *p, const struct meta_out *o)
{
    p = net__pb_put_varint_field(p, META_CORRELATION, o->correlation_id);
    if (o->attachment_len > 0)
        p = net__pb_put_varint_field(p, META_ATTACHMENT, o->attachment_len);
    p = net__pb_put_len_prefix(p, META_RESPONSE, inner_len(o));
    if (o->error_code != 0)
        p = net__pb_put_varint_field(p, RESP_ERROR_CODE, (uint64_t)(int64_t)o->error_code);
    if (o->error_text_len > 0)
        p = net__pb_put_len_prefix(p, RESP_ERROR_TEXT, o->error_text_len);
    return p;
}

size_t net__baidu_response_head(uint8_t out[NET__BAIDU_RESPONSE_HEAD_MAX],
                                uint64_t correlation_id, int32_t error_code,
                                size_t error_text_len, size_t payload_len,
                                size_t attachment_len)
{
    if (error_text_len > MAX_STRING)
        return 0;
    struct meta_out o = {.error_code = error_code, .error_text_len = error_text_len,
                         .correlation_id = correlation_id, .attachment_len = attachment_len};
    size_t head = (size_t)(put_head_meta(out + NET__BAIDU_HEADER_LEN, &o) - out);
    uint64_t meta = (uint64_t)(head - NET__BAIDU_HEADER_LEN) + error_text_len;
    if (!frame_fits(meta, payload_len, attachment_len))
        return 0;
    put_header(out, meta, payload_len, attachment_len);
    return head;
}

/* ---- Request side (the client) --------------------------------------------- */

int net__baidu_split_method(const char *name, size_t len, size_t *service_len,
                            const char **method, size_t *method_len)
{
    const char *dot = NULL;
    for (size_t i = 0; i < len; i++)
        if (name[i] == '.')
            dot = name + i;
    if (!dot || dot == name || dot == name + len - 1)
        return -EINVAL;
    *service_len = (size_t)(dot - name);
    *method = dot + 1;
    *method_len = len - *service_len - 1;
    return 0;
}

/* The same bytes as net__baidu_encode_request, into a caller's array: a
 * client builds each call's head on its stack, with no allocation. */
int net__baidu_pack_request(uint8_t out[NET__BAIDU_REQUEST_HEAD_MAX], const char *service,
                            size_t service_len, const char *method, size_t method_len,
                            uint64_t correlation_id, size_t payload_len,
                            size_t attachment_len)
{
    if (!service || !service_len || !method || !method_len ||
        service_len + method_len > NET__BAIDU_MAX_NAMES)
        return -EINVAL;
    struct meta_out o = {
        .request = true, .service = service, .service_len = service_len,
        .method = method, .method_len = method_len,
        .correlation_id = correlation_id, .attachment_len = attachment_len,
    };
    size_t meta = meta_len(&o);
    if (!frame_fits(meta, payload_len, attachment_len))
        return -EINVAL;
    return (int)pack(out, &o, meta, payload_len);
}
