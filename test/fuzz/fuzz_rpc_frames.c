/* Fuzz target: the NRPC/1 frame codec (lib/rpc_codec.c).
 *
 * The first input byte picks one of two tests.
 *
 * Even: a byte stream, split at fuzzer-chosen points.
 *   [0]        mode
 *   [1..2]     max_frame, big-endian; 0 selects the default (64 MiB)
 *   [3]        K = low 4 bits: the number of chunk sizes that follow
 *   [4..4+K)   chunk sizes, used in turn and repeated; 0 appends nothing
 *   rest       the stream
 * The stream (driver: fuzz_stream.h) is decoded twice the way rpc_server.c and rpc_client.c do it
 * (decode after every append, retrieve each frame, stop at the first
 * error): once appended whole, once chunk by chunk. Every decode result is
 * compared with an independent reading of docs/protocol.md section 3, and
 * the two runs must see the same frames and end the same way. After an
 * error, more bytes and more decode calls must give the same error again.
 *
 * Odd: frames to encode, one spec after another until the input ends:
 *   flags(1)   bit 0 response, bit 1 NULL body, bit 2 NULL method,
 *              bit 3 method_len + 256 (too long)
 *   call_id(8), then method_len(1) for a request or status(4) for a
 *   response, then body_len(2), then the method and body bytes (zeros once
 *   the input runs out).
 * Each encode must accept exactly the valid specs, append the bytes the
 * protocol defines (or nothing on error), and decoding the result must give
 * the specs back. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include <net/buffer.h>

#include "fuzz.h"
#include "fuzz_stream.h"
#include "rpc/rpc_codec.h"

#define HDR NET__RPC_HEADER_LEN
#define LOCAL_MIN 0xFFFFFF00u
#define MAX_SPECS 32

static uint64_t be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* ---- The protocol, read straight from docs/protocol.md ----------------- */

/* Rules 1-8 of section 3, in table order, on the first `have` bytes of a
 * header (have <= 24): a rule whose bytes have not all arrived is not
 * checked yet. Returns 0, -EPROTO or -EMSGSIZE. */
static int spec_check_header(const uint8_t *p, size_t have, uint64_t max_frame)
{
    static const uint8_t magic[4] = { 0x4E, 0x52, 0x50, 0x43 };
    for (size_t i = 0; i < 4 && i < have; i++)
        if (p[i] != magic[i])
            return -EPROTO;
    if (have >= 5 && p[4] != 1)
        return -EPROTO;
    if (have >= 6 && p[5] != 1 && p[5] != 2)
        return -EPROTO;
    if (have < 8)
        return 0;
    bool request = p[5] == 1;
    uint64_t method_len = be(p + 6, 2);
    if (request ? method_len < 1 || method_len > 255 : method_len != 0)
        return -EPROTO;
    if (have < 20)
        return 0;
    uint64_t status = be(p + 16, 4);
    if (request ? status != 0 : status >= LOCAL_MIN)
        return -EPROTO;
    if (have < 24)
        return 0;
    if (24 + method_len + be(p + 20, 4) > max_frame)
        return -EMSGSIZE;
    return 0;
}

/* What decoding `have` bytes at p must give: 1 (a whole frame, *total set),
 * 0 (need more) or the error. */
static int spec_decode(const uint8_t *p, size_t have, uint64_t max_frame, uint64_t *total)
{
    size_t hlen = have < HDR ? have : HDR;
    int rc = spec_check_header(p, hlen, max_frame);
    *total = 0;
    if (rc < 0 || hlen < HDR)
        return rc;
    *total = 24 + be(p + 6, 2) + be(p + 20, 4);
    return have >= *total;
}

/* ---- Stream mode ----------------------------------------------------------- */

static void check_header_fields(const struct net__rpc_header *h, const uint8_t *p, size_t have)
{
    uint8_t raw[HDR] = { 0 };
    memcpy(raw, p, have < HDR ? have : HDR);
    FUZZ_CHECK(h->version == raw[4]);
    FUZZ_CHECK(h->type == raw[5]);
    FUZZ_CHECK(h->method_len == be(raw + 6, 2));
    FUZZ_CHECK(h->call_id == be(raw + 8, 8));
    FUZZ_CHECK(h->status == be(raw + 16, 4));
    FUZZ_CHECK(h->body_len == be(raw + 20, 4));
}

/* A complete header must parse on its own exactly as the decoder saw it. */
static void check_header_parse(const struct fuzz_stream *t, const uint8_t *p, int want)
{
    struct net__rpc_header h;
    const char *reason = NULL;
    int rc = net__rpc_header_parse(p, t->max_frame, &h, &reason);
    FUZZ_CHECK(rc == (want < 0 ? want : 0));
    FUZZ_CHECK(rc == 0 || reason != NULL);
    check_header_fields(&h, p, HDR);
}

/* One decode call's result against the protocol and the header's promises. */
static void check_decode(const struct fuzz_stream *t, const net_buf_t *in, size_t offset,
                         int rc, const struct net__rpc_frame *f, const char *reason)
{
    size_t have = net_buf_readable(in);
    const uint8_t *p = (const uint8_t *)net_buf_peek(in);
    uint64_t total;
    int want = spec_decode(t->bytes + offset, have, t->max_effective, &total);
    /* The header bytes here, the frame below, the rest at the end of the run:
     * comparing all of `have` on every call would be quadratic. */
    FUZZ_CHECK(memcmp(p, t->bytes + offset, have < HDR ? have : HDR) == 0);
    FUZZ_CHECK(rc == want);
    check_header_fields(&f->hdr, p, have);
    if (have >= HDR)
        check_header_parse(t, p, want);
    if (rc < 0) {
        FUZZ_CHECK(reason != NULL);
        FUZZ_CHECK(f->method == NULL && f->body == NULL);
        return;
    }
    FUZZ_CHECK(f->total == total);
    if (rc == 0) {
        FUZZ_CHECK(f->method == NULL && f->body == NULL);
        FUZZ_CHECK(have < HDR || f->total > have);
        return;
    }
    FUZZ_CHECK(f->total <= t->max_effective && f->total <= have);
    FUZZ_CHECK(memcmp(p, t->bytes + offset, f->total) == 0);
    FUZZ_CHECK(f->total == net__rpc_frame_size(&f->hdr));
    FUZZ_CHECK(f->method == (const char *)p + HDR);
    FUZZ_CHECK(f->body == f->method + f->hdr.method_len);
}

/* Decodes what the buffer holds the way the server and client do. */
static void decode_available(const struct fuzz_stream *t, net_buf_t *in, struct fuzz_run *r)
{
    for (;;) {
        struct net__rpc_frame f;
        const char *reason = NULL;
        int rc = net__rpc_decode(in, t->max_frame, &f, &reason);
        check_decode(t, in, r->consumed, rc, &f, reason);
        if (rc <= 0) {
            r->rc = rc;
            r->reason = reason;
            return;
        }
        fuzz_run_frame(r, f.total);
        FUZZ_CHECK(net_buf_retrieve(in, f.total) == 0);
    }
}

/* A protocol error is final: the rules look only at bytes already seen, so
 * neither asking again nor more bytes may change the verdict. */
static void check_error_sticks(const struct fuzz_stream *t, net_buf_t *in,
                               const struct fuzz_run *r, size_t more)
{
    struct net__rpc_frame f;
    const char *reason = NULL;
    FUZZ_CHECK(net__rpc_decode(in, t->max_frame, &f, &reason) == r->rc);
    FUZZ_CHECK(strcmp(reason, r->reason) == 0);
    FUZZ_CHECK(net_buf_append(in, t->bytes + r->appended, more) == 0);
    reason = NULL;
    FUZZ_CHECK(net__rpc_decode(in, t->max_frame, &f, &reason) == r->rc);
    FUZZ_CHECK(strcmp(reason, r->reason) == 0);
}

static void stream_mode(struct fuzz_input *in)
{
    struct fuzz_stream t = { .decode = decode_available, .error_sticks = check_error_sticks };
    fuzz_stream_mode(in, &t, NET__RPC_DEFAULT_MAX_FRAME);
}

/* ---- Round-trip mode --------------------------------------------------------- */

struct spec {
    bool response;
    bool null_body, null_method;
    uint64_t call_id;
    size_t method_len; /* may be out of range on purpose */
    uint32_t status;
    size_t body_len;
    size_t offset;     /* where its bytes start in the reference stream */
};

/* The reference encoder: the bytes section 2 defines for a spec. */
static size_t spec_encode(uint8_t *out, const struct spec *s, const uint8_t *method,
                          const uint8_t *body)
{
    uint8_t *o = out;
    memcpy(o, "NRPC", 4);
    o[4] = 1;
    o[5] = s->response ? 2 : 1;
    size_t mlen = s->response ? 0 : s->method_len;
    uint64_t fields[4][2] = {
        { mlen, 2 }, { s->call_id, 8 }, { s->response ? s->status : 0, 4 }, { s->body_len, 4 },
    };
    o += 6;
    for (int f = 0; f < 4; f++)
        for (uint64_t i = fields[f][1]; i-- > 0; )
            *o++ = (uint8_t)(fields[f][0] >> (8 * i));
    memcpy(o, method, mlen);
    memcpy(o + mlen, body, s->body_len);
    return HDR + mlen + s->body_len;
}

static bool spec_valid(const struct spec *s)
{
    if (s->null_body && s->body_len > 0)
        return false;
    if (s->response)
        return s->status < LOCAL_MIN;
    return !s->null_method && s->method_len >= 1 && s->method_len <= 255;
}

static void read_spec(struct fuzz_input *in, struct spec *s, uint8_t *method, uint8_t *body)
{
    unsigned flags = (unsigned)fuzz_take(in, 1);
    memset(s, 0, sizeof *s);
    s->response = flags & 1;
    s->null_body = flags & 2;
    s->null_method = flags & 4;
    s->call_id = fuzz_take(in, 8);
    if (s->response)
        s->status = (uint32_t)fuzz_take(in, 4);
    else
        s->method_len = fuzz_take(in, 1) + (flags & 8 ? 256 : 0);
    s->body_len = fuzz_take(in, 2);
    fuzz_take_bytes(in, method, s->response ? 0 : s->method_len);
    fuzz_take_bytes(in, body, s->body_len);
}

static int encode_spec(net_buf_t *out, const struct spec *s, const uint8_t *method,
                       const uint8_t *body)
{
    const void *b = s->null_body ? NULL : body;
    if (s->response)
        return net__rpc_encode_response(out, s->call_id, s->status, b, s->body_len);
    return net__rpc_encode_request(out, s->call_id, s->null_method ? NULL : (const char *)method,
                                   s->method_len, b, s->body_len);
}

/* Encodes one spec; returns whether it was (rightly) accepted. */
static bool encode_and_compare(net_buf_t *out, struct spec *s, const uint8_t *method,
                               const uint8_t *body, uint8_t *ref)
{
    size_t before = net_buf_readable(out);
    int rc = encode_spec(out, s, method, body);
    if (!spec_valid(s)) {
        FUZZ_CHECK(rc == -EINVAL);
        FUZZ_CHECK(net_buf_readable(out) == before);
        return false;
    }
    FUZZ_CHECK(rc == 0);
    size_t n = spec_encode(ref, s, method, body);
    FUZZ_CHECK(net_buf_readable(out) == before + n);
    FUZZ_CHECK(memcmp(net_buf_peek(out) + before, ref, n) == 0);
    s->offset = before;
    return true;
}

/* The size limit is inclusive: a frame of exactly max_frame passes. */
static void check_limit_edges(const net_buf_t *in, size_t total)
{
    struct net__rpc_frame f;
    const char *reason = NULL;
    FUZZ_CHECK(net__rpc_decode(in, total, &f, &reason) == 1);
    FUZZ_CHECK(net__rpc_decode(in, total - 1, &f, &reason) == -EMSGSIZE);
}

static void decode_and_compare(net_buf_t *in, const struct spec *specs, size_t n,
                               const uint8_t *stream)
{
    for (size_t i = 0; i < n; i++) {
        const struct spec *s = &specs[i];
        struct net__rpc_frame f;
        const char *reason = NULL;
        FUZZ_CHECK(net__rpc_decode(in, 0, &f, &reason) == 1);
        FUZZ_CHECK(f.hdr.type == (s->response ? 2 : 1) && f.hdr.call_id == s->call_id);
        FUZZ_CHECK(f.hdr.method_len == (s->response ? 0 : s->method_len));
        FUZZ_CHECK(f.hdr.status == (s->response ? s->status : 0));
        FUZZ_CHECK(f.hdr.body_len == s->body_len);
        FUZZ_CHECK(memcmp(f.method, stream + s->offset + HDR, f.hdr.method_len) == 0);
        FUZZ_CHECK(memcmp(f.body, stream + s->offset + HDR + f.hdr.method_len, s->body_len) == 0);
        check_limit_edges(in, f.total);
        FUZZ_CHECK(net_buf_retrieve(in, f.total) == 0);
    }
    struct net__rpc_frame f;
    FUZZ_CHECK(net_buf_readable(in) == 0);
    FUZZ_CHECK(net__rpc_decode(in, 0, &f, NULL) == 0 && f.total == 0);
}

static void roundtrip_mode(struct fuzz_input *in)
{
    static uint8_t method[512], body[65536], ref[HDR + 512 + 65536];
    struct spec specs[MAX_SPECS];
    net_buf_t out = NET_BUF_INIT;
    size_t n = 0;
    for (int i = 0; i < MAX_SPECS && in->left > 0; i++) {
        read_spec(in, &specs[n], method, body);
        if (encode_and_compare(&out, &specs[n], method, body, ref))
            n++;
    }
    /* The buffer itself now holds what was accepted; copy it to compare
     * against while decoding consumes it. */
    size_t len = net_buf_readable(&out);
    uint8_t *stream = malloc(len ? len : 1);
    FUZZ_CHECK(stream != NULL);
    memcpy(stream, net_buf_peek(&out), len);
    decode_and_compare(&out, specs, n, stream);
    free(stream);
    net_buf_destroy(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_input in = { data, size };
    if (fuzz_take(&in, 1) & 1)
        roundtrip_mode(&in);
    else
        stream_mode(&in);
    return 0;
}
