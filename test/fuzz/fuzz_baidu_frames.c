/* Fuzz target: the baidu_std frame codec (lib/rpc/baidu_codec.c, on
 * lib/rpc/pb.c).
 *
 * The first input byte picks one of two tests.
 *
 * Even: a byte stream, split at fuzzer-chosen points.
 *   [0]        mode
 *   [1..2]     max_frame, big-endian; 0 selects the default (64 MiB)
 *   [3]        K = low 4 bits: the number of chunk sizes that follow
 *   [4..4+K)   chunk sizes, used in turn and repeated; 0 appends nothing
 *   rest       the stream
 * The stream (driver: fuzz_stream.h) is decoded twice the way a connection would (decode after
 * every append, retrieve each frame, stop at the first error): once
 * appended whole, once chunk by chunk. Each result is checked against the
 * header's own promises (sizes, need, limit), and the two runs must see the
 * same frames and end the same way. After an error, more bytes must give
 * the same error again.
 *
 * Odd: frames to encode, one spec after another until the input ends:
 *   flags(1)   bit 0 response, bit 1 attachment
 *   correlation_id(8), then service_len(1) and method_len(1) for a request
 *   or error_code(4) and text_len(1) for a response, then payload_len(1),
 *   attachment_len(1) if flag bit 1, then the string bytes (zeros once the
 *   input runs out).
 * Each encode must accept exactly the valid specs (append nothing
 * otherwise), and decoding the result, with payload and attachment appended
 * after each header, must give the specs back. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include <net/buffer.h>

#include "fuzz.h"
#include "fuzz_stream.h"
#include "rpc/baidu_codec.h"

#define HDR NET__BAIDU_HEADER_LEN
#define MAX_SPECS 32

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- Stream mode ----------------------------------------------------------- */

/* What the header alone says about `have` bytes at p: -EPROTO, -EMSGSIZE,
 * or 0 with *total the frame's size (12 until the header is complete). */
static int header_verdict(const uint8_t *p, size_t have, uint64_t max, uint64_t *total)
{
    *total = HDR;
    if (memcmp(p, "PRPC", have < 4 ? have : 4) != 0)
        return -EPROTO;
    if (have < HDR)
        return 0;
    if (be32(p + 8) > be32(p + 4))
        return -EPROTO;
    *total = HDR + (uint64_t)be32(p + 4);
    return *total > max ? -EMSGSIZE : 0;
}

static void check_frame(const uint8_t *p, const struct net__baidu_frame *f, uint64_t total)
{
    uint32_t meta = be32(p + 8);
    FUZZ_CHECK(f->frame_len == total);
    FUZZ_CHECK(f->payload == p + HDR + meta);
    FUZZ_CHECK(f->attachment == f->payload + f->payload_len);
    FUZZ_CHECK(f->attachment_len == f->meta.attachment_size);
    FUZZ_CHECK(HDR + meta + f->payload_len + f->attachment_len == total);
    FUZZ_CHECK(f->meta.has_request != f->meta.has_response);
    FUZZ_CHECK(!f->meta.has_request || (f->meta.service && f->meta.method));
    const uint8_t *m = p + HDR, *mend = m + meta;
    if (f->meta.service_len)
        FUZZ_CHECK((const uint8_t *)f->meta.service >= m &&
                   (const uint8_t *)f->meta.service + f->meta.service_len <= mend);
    if (f->meta.error_text_len)
        FUZZ_CHECK((const uint8_t *)f->meta.error_text >= m &&
                   (const uint8_t *)f->meta.error_text + f->meta.error_text_len <= mend);
    if (f->meta.checksum_value_len)
        FUZZ_CHECK(f->meta.checksum_value >= m &&
                   f->meta.checksum_value + f->meta.checksum_value_len <= mend);
    /* Reads only the payload, attachment and value (ASan says if not). */
    bool ok = net__baidu_checksum_ok(f);
    FUZZ_CHECK(ok || f->meta.checksum_type != NET__BAIDU_CHECKSUM_NONE);
}

/* One decode's result against the header; a meta error (-EPROTO where the
 * header is fine) needs the whole meta to have arrived. */
static void check_decode(const struct fuzz_stream *t, const uint8_t *p, size_t have, int rc,
                         const struct net__baidu_frame *f, size_t need)
{
    uint64_t total;
    int want = header_verdict(p, have, t->max_effective, &total);
    if (want < 0) {
        FUZZ_CHECK(rc == want);
        return;
    }
    if (rc == 0) {
        FUZZ_CHECK(need == total && need > have);
        return;
    }
    FUZZ_CHECK(have >= HDR && have >= HDR + (uint64_t)be32(p + 8));
    if (rc == 1) {
        FUZZ_CHECK(have >= total);
        check_frame(p, f, total);
    } else {
        FUZZ_CHECK(rc == -EPROTO);
    }
}

static void decode_available(const struct fuzz_stream *t, net_buf_t *in, struct fuzz_run *r)
{
    for (;;) {
        struct net__baidu_frame f;
        size_t need = 0;
        const uint8_t *p = (const uint8_t *)net_buf_peek(in);
        size_t have = net_buf_readable(in);
        if (!p)
            p = (const uint8_t *)""; /* an empty buffer: memcmp wants nonnull */
        int rc = net__baidu_decode(p, have, t->max_frame, &f, &need);
        check_decode(t, p, have, rc, &f, need);
        if (rc <= 0) {
            r->rc = rc;
            return;
        }
        fuzz_run_frame(r, f.frame_len);
        FUZZ_CHECK(net_buf_retrieve(in, f.frame_len) == 0);
    }
}

/* An error is final: neither asking again nor more bytes may change it. */
static void check_error_sticks(const struct fuzz_stream *t, net_buf_t *in,
                               const struct fuzz_run *r, size_t more)
{
    struct net__baidu_frame f;
    size_t need;
    FUZZ_CHECK(net_buf_append(in, t->bytes + r->appended, more) == 0);
    FUZZ_CHECK(net__baidu_decode((const uint8_t *)net_buf_peek(in), net_buf_readable(in),
                                 t->max_frame, &f, &need) == r->rc);
}

static void stream_mode(struct fuzz_input *in)
{
    struct fuzz_stream t = { .decode = decode_available, .error_sticks = check_error_sticks };
    fuzz_stream_mode(in, &t, NET__BAIDU_DEFAULT_MAX_FRAME);
}

/* ---- Round-trip mode --------------------------------------------------------- */

struct spec {
    bool response;
    uint64_t id;
    size_t service_len, method_len, text_len, payload_len, att_len;
    int32_t code;
    uint8_t strings[3][256]; /* service, method (or error text), payload */
};

static void read_spec(struct fuzz_input *in, struct spec *s)
{
    unsigned flags = (unsigned)fuzz_take(in, 1);
    s->response = flags & 1;
    s->id = fuzz_take(in, 8);
    s->service_len = s->method_len = s->text_len = 0;
    s->code = 0;
    if (s->response) {
        s->code = (int32_t)(uint32_t)fuzz_take(in, 4);
        s->text_len = fuzz_take(in, 1);
    } else {
        s->service_len = fuzz_take(in, 1);
        s->method_len = fuzz_take(in, 1);
    }
    s->payload_len = fuzz_take(in, 1);
    s->att_len = flags & 2 ? fuzz_take(in, 1) : 0;
    fuzz_take_bytes(in, s->strings[0], s->service_len);
    fuzz_take_bytes(in, s->strings[1], s->response ? s->text_len : s->method_len);
    fuzz_take_bytes(in, s->strings[2], s->payload_len + s->att_len > 255 ? 255 : s->payload_len + s->att_len);
}

/* Encodes one spec and appends its payload and attachment; returns whether
 * it was (rightly) accepted. */
static bool encode_spec(net_buf_t *out, const struct spec *s)
{
    size_t before = net_buf_readable(out);
    const char *a = (const char *)s->strings[0], *b = (const char *)s->strings[1];
    int rc = s->response
        ? net__baidu_encode_response(out, s->id, s->code, b, s->text_len, s->payload_len,
                                     s->att_len)
        : net__baidu_encode_request(out, a, s->service_len, b, s->method_len, s->id,
                                    s->payload_len, s->att_len);
    if (!s->response && (s->service_len == 0 || s->method_len == 0)) {
        FUZZ_CHECK(rc == -EINVAL && net_buf_readable(out) == before);
        return false;
    }
    FUZZ_CHECK(rc == 0);
    for (size_t i = 0; i < s->payload_len + s->att_len; i++)
        FUZZ_CHECK(net_buf_append_u8(out, (uint8_t)(i < 255 ? s->strings[2][i] : i)) == 0);
    return true;
}

static bool same(const char *p, size_t len, const uint8_t *want, size_t want_len)
{
    return len == want_len && (len == 0 || memcmp(p, want, len) == 0);
}

static void check_spec(const struct net__baidu_frame *f, const struct spec *s)
{
    const struct net__baidu_meta *m = &f->meta;
    FUZZ_CHECK(m->has_response == s->response && m->has_request == !s->response);
    FUZZ_CHECK(m->correlation_id == s->id && !m->unsupported && m->compress_type == 0);
    FUZZ_CHECK(f->payload_len == s->payload_len && f->attachment_len == s->att_len);
    if (s->response) {
        FUZZ_CHECK(m->error_code == s->code);
        FUZZ_CHECK(same(m->error_text, m->error_text_len, s->strings[1], s->text_len));
    } else {
        FUZZ_CHECK(same(m->service, m->service_len, s->strings[0], s->service_len));
        FUZZ_CHECK(same(m->method, m->method_len, s->strings[1], s->method_len));
    }
    size_t n = s->payload_len + s->att_len;
    FUZZ_CHECK(memcmp(f->payload, s->strings[2], n < 255 ? n : 255) == 0);
}

static void roundtrip_mode(struct fuzz_input *in)
{
    static struct spec specs[MAX_SPECS];
    net_buf_t out = NET_BUF_INIT;
    size_t n = 0;
    for (int i = 0; i < MAX_SPECS && in->left > 0; i++) {
        read_spec(in, &specs[n]);
        n += encode_spec(&out, &specs[n]);
    }
    for (size_t i = 0; i < n; i++) {
        struct net__baidu_frame f;
        size_t need;
        size_t have = net_buf_readable(&out);
        FUZZ_CHECK(net__baidu_decode((const uint8_t *)net_buf_peek(&out), have, 0, &f,
                                     &need) == 1);
        check_spec(&f, &specs[i]);
        FUZZ_CHECK(net_buf_retrieve(&out, f.frame_len) == 0);
    }
    FUZZ_CHECK(net_buf_readable(&out) == 0);
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
