/* NRPC/1 frame codec (see lib/rpc/rpc_codec.h and docs/protocol.md).
 *
 * Validation is one ordered list of checks, each needing the header bytes up
 * to some offset, and that offset never decreases along the list. Running
 * the checks whose bytes have arrived therefore gives, on any prefix, either
 * "need more" or exactly the error the full header would give: the result
 * cannot depend on how the peer's bytes were split into reads. */
#include <errno.h>
#include <string.h>

#include "rpc/rpc_codec.h"

#define MAGIC_LEN 4

/* ---- Big-endian helpers --------------------------------------------------- */

static void put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* ---- Status names ------------------------------------------------------- */

static const char *const wire_names[] = {
    "OK", "UNKNOWN_METHOD", "BAD_REQUEST", "INTERNAL", "OVERLOADED", "SHUTTING_DOWN",
};

static const char *const local_names[] = {
    NULL, "TIMEOUT", "DISCONNECTED", "CANCELLED", "PROTOCOL_ERROR",
};

const char *net__rpc_status_name(uint32_t status)
{
    if (status < sizeof wire_names / sizeof wire_names[0])
        return wire_names[status];
    if (status >= NET__RPC_LOCAL_MIN) {
        uint32_t i = status - NET__RPC_LOCAL_MIN;
        if (i < sizeof local_names / sizeof local_names[0] && local_names[i])
            return local_names[i];
        return "RESERVED";
    }
    return status >= NET__RPC_APP_BASE ? "APPLICATION" : "RESERVED";
}

/* ---- Header --------------------------------------------------------------- */

uint64_t net__rpc_frame_size(const struct net__rpc_header *h)
{
    return (uint64_t)NET__RPC_HEADER_LEN + h->method_len + h->body_len;
}

void net__rpc_header_pack(uint8_t out[NET__RPC_HEADER_LEN],
                          const struct net__rpc_header *h)
{
    memcpy(out, NET__RPC_MAGIC, MAGIC_LEN);
    out[4] = h->version;
    out[5] = h->type;
    put_be(out + 6, h->method_len, 2);
    put_be(out + 8, h->call_id, 8);
    put_be(out + 16, h->status, 4);
    put_be(out + 20, h->body_len, 4);
}

static void header_unpack(const uint8_t p[NET__RPC_HEADER_LEN],
                          struct net__rpc_header *h)
{
    h->version = p[4];
    h->type = p[5];
    h->method_len = (uint16_t)get_be(p + 6, 2);
    h->call_id = get_be(p + 8, 8);
    h->status = (uint32_t)get_be(p + 16, 4);
    h->body_len = (uint32_t)get_be(p + 20, 4);
}

static int fail(const char **reason, const char *text, int err)
{
    if (reason)
        *reason = text;
    return err;
}

/* Rules on the method_len field (needs bytes up to offset 8). */
static int check_method_len(const struct net__rpc_header *h, const char **reason)
{
    if (h->type == NET__RPC_TYPE_REQUEST && h->method_len == 0)
        return fail(reason, "request with method_len 0", -EPROTO);
    if (h->type == NET__RPC_TYPE_REQUEST && h->method_len > NET__RPC_MAX_METHOD)
        return fail(reason, "request with method_len over 255", -EPROTO);
    if (h->type == NET__RPC_TYPE_RESPONSE && h->method_len != 0)
        return fail(reason, "response with non-zero method_len", -EPROTO);
    return 0;
}

/* Rules on the status field (needs bytes up to offset 20). */
static int check_status(const struct net__rpc_header *h, const char **reason)
{
    if (h->type == NET__RPC_TYPE_REQUEST && h->status != 0)
        return fail(reason, "request with non-zero status", -EPROTO);
    if (h->status >= NET__RPC_LOCAL_MIN)
        return fail(reason, "response with a reserved local-only status", -EPROTO);
    return 0;
}

/* Runs every check whose bytes lie within the first `have` bytes of p (the
 * rest of p reads as zero). Returns 0 if all of those passed. */
static int check_prefix(const uint8_t *p, size_t have, size_t max_frame,
                        const struct net__rpc_header *h, const char **reason)
{
    size_t m = have < MAGIC_LEN ? have : MAGIC_LEN;
    if (memcmp(p, NET__RPC_MAGIC, m) != 0)
        return fail(reason, "bad magic", -EPROTO);
    if (have >= 5 && h->version != NET__RPC_VERSION)
        return fail(reason, "unknown version", -EPROTO);
    if (have >= 6 && h->type != NET__RPC_TYPE_REQUEST &&
        h->type != NET__RPC_TYPE_RESPONSE)
        return fail(reason, "unknown frame type", -EPROTO);
    int rc = have >= 8 ? check_method_len(h, reason) : 0;
    if (rc == 0 && have >= 20)
        rc = check_status(h, reason);
    if (rc == 0 && have >= NET__RPC_HEADER_LEN && net__rpc_frame_size(h) > max_frame)
        rc = fail(reason, "frame exceeds the maximum frame size", -EMSGSIZE);
    return rc;
}

static size_t effective_max(size_t max_frame)
{
    return max_frame ? max_frame : NET__RPC_DEFAULT_MAX_FRAME;
}

size_t net__rpc_input_need(size_t max_frame)
{
    size_t need = max_frame + NET__RPC_HEADER_LEN + 64 * 1024;
    return need < max_frame ? SIZE_MAX : need;
}

int net__rpc_header_parse(const uint8_t *p, size_t max_frame,
                          struct net__rpc_header *out, const char **reason)
{
    if (!p || !out)
        return fail(reason, "invalid argument", -EINVAL);
    header_unpack(p, out);
    return check_prefix(p, NET__RPC_HEADER_LEN, effective_max(max_frame), out, reason);
}

/* ---- Encoding ------------------------------------------------------------- */

/* Appends header + method + body in one step, so a failure appends nothing. */
static int encode_frame(net_buf_t *out, const struct net__rpc_header *h,
                        const char *method, const void *body)
{
    uint64_t total = net__rpc_frame_size(h);
    if (total > SIZE_MAX)
        return -ENOMEM; /* only reachable with a 32-bit size_t */
    int rc = net_buf_ensure_writable(out, (size_t)total);
    if (rc < 0)
        return rc;
    uint8_t *w = (uint8_t *)net_buf_begin_write(out);
    net__rpc_header_pack(w, h);
    if (h->method_len)
        memcpy(w + NET__RPC_HEADER_LEN, method, h->method_len);
    if (h->body_len)
        memcpy(w + NET__RPC_HEADER_LEN + h->method_len, body, h->body_len);
    return net_buf_has_written(out, (size_t)total);
}

static int body_valid(const void *body, size_t body_len)
{
    return (body || body_len == 0) && (uint64_t)body_len <= UINT32_MAX;
}

int net__rpc_encode_request(net_buf_t *out, uint64_t call_id, const char *method,
                            size_t method_len, const void *body, size_t body_len)
{
    if (!out || !method || method_len == 0 || method_len > NET__RPC_MAX_METHOD ||
        !body_valid(body, body_len))
        return -EINVAL;
    struct net__rpc_header h = {
        .version = NET__RPC_VERSION,
        .type = NET__RPC_TYPE_REQUEST,
        .method_len = (uint16_t)method_len,
        .call_id = call_id,
        .status = NET__RPC_OK,
        .body_len = (uint32_t)body_len,
    };
    return encode_frame(out, &h, method, body);
}

int net__rpc_encode_response(net_buf_t *out, uint64_t call_id, uint32_t status,
                             const void *body, size_t body_len)
{
    if (!out || status >= NET__RPC_LOCAL_MIN || !body_valid(body, body_len))
        return -EINVAL;
    struct net__rpc_header h = {
        .version = NET__RPC_VERSION,
        .type = NET__RPC_TYPE_RESPONSE,
        .method_len = 0,
        .call_id = call_id,
        .status = status,
        .body_len = (uint32_t)body_len,
    };
    return encode_frame(out, &h, "", body); /* "" not NULL: -O3 cannot prove method_len == 0 */
}

/* ---- Decoding ------------------------------------------------------------- */

int net__rpc_decode(const net_buf_t *in, size_t max_frame,
                    struct net__rpc_frame *frame, const char **reason)
{
    if (!in || !frame)
        return fail(reason, "invalid argument", -EINVAL);
    size_t have = net_buf_readable(in);
    const uint8_t *p = (const uint8_t *)net_buf_peek(in);
    /* A zero-padded copy lets one unpack + one check list serve every
     * prefix length; 24 bytes are cheap to copy. */
    uint8_t raw[NET__RPC_HEADER_LEN] = { 0 };
    size_t hlen = have < NET__RPC_HEADER_LEN ? have : NET__RPC_HEADER_LEN;
    memcpy(raw, p, hlen);
    header_unpack(raw, &frame->hdr);
    frame->method = NULL;
    frame->body = NULL;
    frame->total = 0;
    int rc = check_prefix(raw, hlen, effective_max(max_frame), &frame->hdr, reason);
    if (rc < 0 || hlen < NET__RPC_HEADER_LEN)
        return rc;
    /* <= max_frame, which is a size_t: the cast is exact. */
    frame->total = (size_t)net__rpc_frame_size(&frame->hdr);
    if (have < frame->total)
        return 0;
    frame->method = (const char *)p + NET__RPC_HEADER_LEN;
    frame->body = frame->method + frame->hdr.method_len;
    return 1;
}
