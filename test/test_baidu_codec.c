/* The baidu_std codec (lib/rpc/baidu_codec.c) and its protobuf wire layer
 * (lib/rpc/pb.c), against frames captured from brpc's own binaries and
 * against hand-built malformed metas. Every decode runs on an exactly sized
 * heap copy of its input, so ASan catches a read past len. */
#include "harness.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <net/buffer.h>

#include "rpc/baidu_codec.h"
#include "rpc/crc32c.h"
#include "rpc/pb.h"
#include "rpc/rpc_codec.h"

/* ---- Vectors captured from brpc (/work/shared/interop/brpc/bin) ------------ */

/* What brpc 1.17's echo_client sent (-attachment=abc -connection_type=single),
 * captured on loopback: meta with service, method, log_id 0, compress_type 0,
 * correlation_id 0x100000002, attachment_size 3, content_type 0, checksum_type
 * 0, an empty checksum_value; payload EchoRequest "hello world"; "abc". */
static const uint8_t brpc_request[] = {
    0x50, 0x52, 0x50, 0x43, 0x00, 0x00, 0x00, 0x3f, 0x00, 0x00, 0x00, 0x2f,
    0x0a, 0x1d, 0x0a, 0x13, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e,
    0x45, 0x63, 0x68, 0x6f, 0x53, 0x65, 0x72, 0x76, 0x69, 0x63, 0x65, 0x12,
    0x04, 0x45, 0x63, 0x68, 0x6f, 0x18, 0x00, 0x18, 0x00, 0x20, 0x82, 0x80,
    0x80, 0x80, 0x10, 0x28, 0x03, 0x50, 0x00, 0x58, 0x00, 0x62, 0x00, 0x0a,
    0x0b, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x77, 0x6f, 0x72, 0x6c, 0x64,
    0x61, 0x62, 0x63,
};

/* brpc 1.17's echo_client -enable_checksum=true -attachment=xyz, captured
 * on loopback: as brpc_request, with checksum_type 1 (CRC32C) and a 4-byte
 * checksum_value d3 8c ab 46 (brpc's masked CRC-32C of the payload only,
 * big-endian); payload EchoRequest "hello world"; attachment "xyz". */
static const uint8_t brpc_checksummed[] = {
    0x50, 0x52, 0x50, 0x43, 0x00, 0x00, 0x00, 0x43, 0x00, 0x00, 0x00, 0x33,
    0x0a, 0x1d, 0x0a, 0x13, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e,
    0x45, 0x63, 0x68, 0x6f, 0x53, 0x65, 0x72, 0x76, 0x69, 0x63, 0x65, 0x12,
    0x04, 0x45, 0x63, 0x68, 0x6f, 0x18, 0x00, 0x18, 0x00, 0x20, 0x82, 0x80,
    0x80, 0x80, 0x10, 0x28, 0x03, 0x50, 0x00, 0x58, 0x01, 0x62, 0x04, 0xd3,
    0x8c, 0xab, 0x46, 0x0a, 0x0b, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x77,
    0x6f, 0x72, 0x6c, 0x64, 0x78, 0x79, 0x7a,
};

/* net__baidu_encode_request("example.EchoService", "Echo", 0x1234567, 4, 3)
 * followed by EchoRequest "hi" and "abc": brpc's echo_server answered it
 * (brpc_response below). */
static const uint8_t own_request[] = {
    0x50, 0x52, 0x50, 0x43, 0x00, 0x00, 0x00, 0x2b, 0x00, 0x00, 0x00, 0x24,
    0x0a, 0x1b, 0x0a, 0x13, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e,
    0x45, 0x63, 0x68, 0x6f, 0x53, 0x65, 0x72, 0x76, 0x69, 0x63, 0x65, 0x12,
    0x04, 0x45, 0x63, 0x68, 0x6f, 0x20, 0xe7, 0x8a, 0x8d, 0x09, 0x28, 0x03,
    0x0a, 0x02, 0x68, 0x69, 0x61, 0x62, 0x63,
};

/* echo_server's answer to own_request: response {error_code 0}, compress 0,
 * correlation_id 0x1234567, attachment_size 3, content/checksum fields;
 * EchoResponse "hi"; "abc". */
static const uint8_t brpc_response[] = {
    0x50, 0x52, 0x50, 0x43, 0x00, 0x00, 0x00, 0x1a, 0x00, 0x00, 0x00, 0x13,
    0x12, 0x02, 0x08, 0x00, 0x18, 0x00, 0x20, 0xe7, 0x8a, 0x8d, 0x09, 0x28,
    0x03, 0x50, 0x00, 0x58, 0x00, 0x62, 0x00, 0x0a, 0x02, 0x68, 0x69, 0x61,
    0x62, 0x63,
};

/* echo_server's answer to own_request with method "Nope": error_code 1002
 * (ENOMETHOD) and its text, no payload. */
static const uint8_t brpc_error[] = {
    0x50, 0x52, 0x50, 0x43, 0x00, 0x00, 0x00, 0x58, 0x00, 0x00, 0x00, 0x58,
    0x12, 0x49, 0x08, 0xea, 0x07, 0x12, 0x44, 0x5b, 0x31, 0x32, 0x37, 0x2e,
    0x30, 0x2e, 0x30, 0x2e, 0x31, 0x3a, 0x31, 0x38, 0x37, 0x36, 0x36, 0x5d,
    0x5b, 0x45, 0x31, 0x30, 0x30, 0x32, 0x5d, 0x46, 0x61, 0x69, 0x6c, 0x20,
    0x74, 0x6f, 0x20, 0x66, 0x69, 0x6e, 0x64, 0x20, 0x6d, 0x65, 0x74, 0x68,
    0x6f, 0x64, 0x3d, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x45,
    0x63, 0x68, 0x6f, 0x53, 0x65, 0x72, 0x76, 0x69, 0x63, 0x65, 0x2f, 0x4e,
    0x6f, 0x70, 0x65, 0x18, 0x00, 0x20, 0xe7, 0x8a, 0x8d, 0x09, 0x50, 0x00,
    0x58, 0x00, 0x62, 0x00,
};

/* ---- Helpers ----------------------------------------------------------------- */

#define LIT(s) (s), (sizeof(s) - 1)

/* Decodes buf[0..len) from an exactly sized heap copy. */
static int decode_exact(const uint8_t *buf, size_t len, size_t max_frame,
                        struct net__baidu_frame *f, size_t *need)
{
    uint8_t *copy = malloc(len ? len : 1);
    CHECK(copy != NULL);
    if (len)
        memcpy(copy, buf, len);
    int rc = net__baidu_decode(copy, len, max_frame, f, need);
    /* Pointers into the copy would dangle: rebase them onto buf. */
    if (rc == 1) {
        f->payload = buf + (f->payload - copy);
        f->attachment = buf + (f->attachment - copy);
        if (f->meta.service && f->meta.service_len)
            f->meta.service = (const char *)buf + ((const uint8_t *)f->meta.service - copy);
        if (f->meta.method && f->meta.method_len)
            f->meta.method = (const char *)buf + ((const uint8_t *)f->meta.method - copy);
        if (f->meta.error_text && f->meta.error_text_len)
            f->meta.error_text = (const char *)buf + ((const uint8_t *)f->meta.error_text - copy);
        if (f->meta.checksum_value && f->meta.checksum_value_len)
            f->meta.checksum_value = buf + (f->meta.checksum_value - copy);
    }
    free(copy);
    return rc;
}

static int decode_all(const uint8_t *buf, size_t len, struct net__baidu_frame *f)
{
    size_t need = 0;
    return decode_exact(buf, len, 0, f, &need);
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* A frame around meta: header, meta, payload_len bytes 'p', att_len 'a'.
 * Returns its length; out has room for 512 bytes. */
static size_t frame_of(uint8_t *out, const void *meta, size_t meta_len, size_t payload_len,
                       size_t att_len)
{
    memcpy(out, "PRPC", 4);
    put_be32(out + 4, (uint32_t)(meta_len + payload_len + att_len));
    put_be32(out + 8, (uint32_t)meta_len);
    memcpy(out + 12, meta, meta_len);
    memset(out + 12 + meta_len, 'p', payload_len);
    memset(out + 12 + meta_len + payload_len, 'a', att_len);
    return 12 + meta_len + payload_len + att_len;
}

static int decode_meta(const void *meta, size_t meta_len, struct net__baidu_frame *f)
{
    /* Static: *f points into it after the call (until the next one). */
    static uint8_t buf[512];
    return decode_all(buf, frame_of(buf, meta, meta_len, 0, 0), f);
}

/* A minimal valid request meta: request { service "s" method "m" }. */
#define MIN_REQ "\x0a\x06\x0a\x01s\x12\x01m"

static int decode_min_req_plus(const void *extra, size_t extra_len, struct net__baidu_frame *f)
{
    uint8_t meta[256];
    memcpy(meta, MIN_REQ, 8);
    memcpy(meta + 8, extra, extra_len);
    return decode_meta(meta, 8 + extra_len, f);
}

static bool str_is(const char *s, size_t len, const char *want)
{
    return s && len == strlen(want) && memcmp(s, want, len) == 0;
}

/* ---- Captured frames ---------------------------------------------------------- */

TEST(baidu_decode_brpc_request)
{
    struct net__baidu_frame f;
    CHECK_EQ(decode_all(brpc_request, sizeof brpc_request, &f), 1);
    CHECK(f.meta.has_request && !f.meta.has_response && !f.meta.unsupported);
    CHECK(str_is(f.meta.service, f.meta.service_len, "example.EchoService"));
    CHECK(str_is(f.meta.method, f.meta.method_len, "Echo"));
    CHECK_EQ(f.meta.log_id, 0);
    CHECK_EQ(f.meta.compress_type, 0);
    CHECK(f.meta.correlation_id == 0x100000002ull);
    CHECK_EQ(f.meta.attachment_size, 3);
    CHECK_EQ(f.payload_len, 13);
    CHECK_MEM_EQ(f.payload, "\x0a\x0bhello world", 13);
    CHECK_EQ(f.attachment_len, 3);
    CHECK_MEM_EQ(f.attachment, "abc", 3);
    CHECK_EQ(f.frame_len, sizeof brpc_request);
}

TEST(baidu_decode_brpc_response)
{
    struct net__baidu_frame f;
    CHECK_EQ(decode_all(brpc_response, sizeof brpc_response, &f), 1);
    CHECK(f.meta.has_response && !f.meta.has_request && !f.meta.unsupported);
    CHECK_EQ(f.meta.error_code, 0);
    CHECK(f.meta.error_text == NULL);
    CHECK(f.meta.correlation_id == 0x1234567u); /* the id own_request sent */
    CHECK_EQ(f.payload_len, 4);
    CHECK_MEM_EQ(f.payload, "\x0a\x02hi", 4);
    CHECK_EQ(f.attachment_len, 3);
    CHECK_MEM_EQ(f.attachment, "abc", 3);
    CHECK_EQ(f.frame_len, sizeof brpc_response);
}

TEST(baidu_decode_brpc_error)
{
    struct net__baidu_frame f;
    static const char text[] = "[127.0.0.1:18766][E1002]Fail to find method=example.EchoService/Nope";
    CHECK_EQ(decode_all(brpc_error, sizeof brpc_error, &f), 1);
    CHECK(f.meta.has_response);
    CHECK_EQ(f.meta.error_code, NET__BAIDU_ENOMETHOD);
    CHECK(str_is(f.meta.error_text, f.meta.error_text_len, text));
    CHECK(f.meta.correlation_id == 0x1234567u);
    CHECK_EQ(f.payload_len, 0);
    CHECK_EQ(f.attachment_len, 0);
}

/* The bytes brpc's server accepted are exactly what the encoder writes. */
TEST(baidu_encode_request_as_brpc_accepted)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net__baidu_encode_request(&b, LIT("example.EchoService"), LIT("Echo"), 0x1234567u,
                                       4, 3));
    CHECK_EQ(net_buf_readable(&b), sizeof own_request - 7);
    CHECK_MEM_EQ(net_buf_peek(&b), own_request, sizeof own_request - 7);
    net_buf_destroy(&b);
}

/* ---- Round trips ---------------------------------------------------------------- */

static void roundtrip_request(uint64_t id, size_t payload, size_t att)
{
    net_buf_t b = NET_BUF_INIT;
    struct net__baidu_frame f;
    CHECK_OK(net__baidu_encode_request(&b, LIT("svc.Name"), LIT("Method"), id, payload, att));
    for (size_t i = 0; i < payload + att; i++)
        CHECK_OK(net_buf_append_u8(&b, (uint8_t)i));
    CHECK_EQ(decode_all((const uint8_t *)net_buf_peek(&b), net_buf_readable(&b), &f), 1);
    CHECK(f.meta.has_request && !f.meta.has_response);
    CHECK(str_is(f.meta.service, f.meta.service_len, "svc.Name"));
    CHECK(str_is(f.meta.method, f.meta.method_len, "Method"));
    CHECK(f.meta.correlation_id == id);
    CHECK_EQ(f.payload_len, payload);
    CHECK_EQ(f.attachment_len, att);
    CHECK_EQ(f.frame_len, net_buf_readable(&b));
    for (size_t i = 0; i < payload; i++)
        CHECK_EQ(f.payload[i], (uint8_t)i);
    net_buf_destroy(&b);
}

TEST(baidu_roundtrip_request)
{
    static const uint64_t ids[] = { 0, 1, 127, 128, 0x100000002ull, UINT64_MAX };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        roundtrip_request(ids[i], 0, 0);
        roundtrip_request(ids[i], 5, 0);
        roundtrip_request(ids[i], 0, 200);
        roundtrip_request(ids[i], 17, 3);
    }
}

static void roundtrip_response(int32_t code, const char *text, size_t att)
{
    net_buf_t b = NET_BUF_INIT;
    struct net__baidu_frame f;
    size_t tlen = text ? strlen(text) : 0;
    CHECK_OK(net__baidu_encode_response(&b, 42, code, text, tlen, 2, att));
    for (size_t i = 0; i < 2 + att; i++)
        CHECK_OK(net_buf_append_u8(&b, 'x'));
    CHECK_EQ(decode_all((const uint8_t *)net_buf_peek(&b), net_buf_readable(&b), &f), 1);
    CHECK(f.meta.has_response && !f.meta.has_request);
    CHECK_EQ(f.meta.error_code, code);
    CHECK_EQ(f.meta.error_text_len, tlen);
    CHECK(tlen == 0 || memcmp(f.meta.error_text, text, tlen) == 0);
    CHECK_EQ(f.meta.correlation_id, 42);
    CHECK_EQ(f.payload_len, 2);
    CHECK_EQ(f.attachment_len, att);
    net_buf_destroy(&b);
}

TEST(baidu_roundtrip_response)
{
    roundtrip_response(0, NULL, 0);
    roundtrip_response(0, "", 3);
    roundtrip_response(NET__BAIDU_ENOSERVICE, "no such service", 0);
    roundtrip_response(NET__BAIDU_ECLOSE, "closing", 1);
    roundtrip_response(-1, "negative codes take 10 bytes", 0);
    roundtrip_response(INT32_MIN, NULL, 0);
    roundtrip_response(INT32_MAX, NULL, 0);
}

/* proto3-compatible output: no error_code 0, no attachment_size 0, no
 * compress_type at all. */
TEST(baidu_encode_response_minimal_meta)
{
    net_buf_t b = NET_BUF_INIT;
    static const uint8_t want[] = { 'P', 'R', 'P', 'C', 0, 0, 0, 4, 0, 0, 0, 4,
                                    0x12, 0x00, 0x20, 0x07 };
    CHECK_OK(net__baidu_encode_response(&b, 7, 0, NULL, 0, 0, 0));
    CHECK_EQ(net_buf_readable(&b), sizeof want);
    CHECK_MEM_EQ(net_buf_peek(&b), want, sizeof want);
    net_buf_destroy(&b);
}

TEST(baidu_encode_rejects_bad_arguments)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_EQ(net__baidu_encode_request(NULL, LIT("s"), LIT("m"), 1, 0, 0), -EINVAL);
    CHECK_EQ(net__baidu_encode_request(&b, "", 0, LIT("m"), 1, 0, 0), -EINVAL);
    CHECK_EQ(net__baidu_encode_request(&b, NULL, 1, LIT("m"), 1, 0, 0), -EINVAL);
    CHECK_EQ(net__baidu_encode_request(&b, LIT("s"), "", 0, 1, 0, 0), -EINVAL);
    CHECK_EQ(net__baidu_encode_request(&b, LIT("s"), NULL, 1, 1, 0, 0), -EINVAL);
    CHECK_EQ(net__baidu_encode_request(&b, LIT("s"), LIT("m"), 1, UINT32_MAX, 0), -EINVAL);
    CHECK_EQ(net__baidu_encode_request(&b, LIT("s"), LIT("m"), 1, 0, (size_t)INT32_MAX + 1),
             -EINVAL);
    CHECK_EQ(net__baidu_encode_request(&b, LIT("s"), LIT("m"), 1, UINT32_MAX / 2,
                                       UINT32_MAX / 2 + 1), -EINVAL);
    CHECK_EQ(net__baidu_encode_response(&b, 1, 0, NULL, 1, 0, 0), -EINVAL);
    CHECK_EQ(net__baidu_encode_response(&b, 1, 0, "x", (size_t)UINT32_MAX + 1, 0, 0), -EINVAL);
    CHECK_EQ(net_buf_readable(&b), 0); /* nothing appended by any of them */
    /* The largest body that fits is accepted. */
    CHECK_OK(net__baidu_encode_request(&b, LIT("s"), LIT("m"), 1, UINT32_MAX - 8 - 2, 0));
    uint8_t body[4];
    memcpy(body, net_buf_peek(&b) + 4, 4);
    CHECK(body[0] == 0xff && body[1] == 0xff && body[2] == 0xff && body[3] == 0xff);
    net_buf_destroy(&b);
}

/* ---- Need more, sizes, magic ------------------------------------------------------ */

static void check_every_prefix(const uint8_t *buf, size_t len)
{
    for (size_t n = 0; n < len; n++) {
        struct net__baidu_frame f;
        size_t need = 0;
        CHECK_EQ(decode_exact(buf, n, 0, &f, &need), 0);
        CHECK_EQ(need, n < NET__BAIDU_HEADER_LEN ? NET__BAIDU_HEADER_LEN : len);
    }
}

TEST(baidu_need_more_every_prefix)
{
    check_every_prefix(brpc_request, sizeof brpc_request);
    check_every_prefix(brpc_response, sizeof brpc_response);
    check_every_prefix(brpc_error, sizeof brpc_error);
}

/* A frame followed by the start of the next: the first decodes alone. */
TEST(baidu_decode_ignores_bytes_after_frame)
{
    uint8_t two[sizeof brpc_response + 5];
    struct net__baidu_frame f;
    memcpy(two, brpc_response, sizeof brpc_response);
    memcpy(two + sizeof brpc_response, "PRPC\xff", 5);
    CHECK_EQ(decode_all(two, sizeof two, &f), 1);
    CHECK_EQ(f.frame_len, sizeof brpc_response);
}

TEST(baidu_oversize_from_header_alone)
{
    struct net__baidu_frame f;
    size_t need = 0;
    size_t total = sizeof brpc_request;
    /* Only the 12 header bytes are there. */
    CHECK_EQ(decode_exact(brpc_request, 12, total - 1, &f, &need), -EMSGSIZE);
    CHECK_EQ(decode_exact(brpc_request, 12, total, &f, &need), 0);
    CHECK_EQ(need, total);
    CHECK_EQ(decode_exact(brpc_request, total, total, &f, &need), 1); /* inclusive */
    /* meta_size 16: with no meta bytes here, only the header is judged. */
    static const uint8_t huge[12] = { 'P', 'R', 'P', 'C', 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 16 };
    CHECK_EQ(decode_exact(huge, 12, 0, &f, &need), -EMSGSIZE); /* over the default */
    CHECK_EQ(decode_exact(huge, 12, SIZE_MAX, &f, &need), 0);
    CHECK_EQ(need, (size_t)UINT32_MAX + 12);
}

TEST(baidu_bad_magic)
{
    for (size_t i = 0; i < 4; i++) {
        uint8_t bad[sizeof brpc_request];
        struct net__baidu_frame f;
        size_t need = 0;
        memcpy(bad, brpc_request, sizeof bad);
        bad[i] ^= 0x20; /* "prpc" in any position is wrong too */
        CHECK(!net__baidu_sniff(bad, i + 1));
        CHECK(net__baidu_sniff(bad, i));
        CHECK_EQ(decode_exact(bad, i + 1, 0, &f, &need), -EPROTO);
        CHECK_EQ(decode_exact(bad, sizeof bad, 0, &f, &need), -EPROTO);
    }
    CHECK(net__baidu_sniff((const uint8_t *)"PRPC", 4));
    CHECK(!net__baidu_sniff((const uint8_t *)"NRPC", 4));
    CHECK(!net__baidu_sniff((const uint8_t *)"GET ", 4));
}

TEST(baidu_meta_size_over_body_size)
{
    uint8_t h[12] = { 'P', 'R', 'P', 'C', 0, 0, 0, 8, 0, 0, 0, 9 };
    struct net__baidu_frame f;
    size_t need = 0;
    CHECK_EQ(decode_exact(h, 12, 0, &f, &need), -EPROTO);
    h[11] = 8; /* equal is fine: a meta and nothing else */
    CHECK_EQ(decode_exact(h, 12, 0, &f, &need), 0);
    CHECK_EQ(need, 20);
}

TEST(baidu_attachment_over_rest)
{
    uint8_t buf[512];
    struct net__baidu_frame f;
    size_t need = 0;
    /* attachment_size 3 with 2 bytes after the meta. */
    size_t n = frame_of(buf, MIN_REQ "\x28\x03", 10, 2, 0);
    CHECK_EQ(decode_exact(buf, n, 0, &f, &need), -EPROTO);
    /* Refused as soon as the meta is in, before the rest of the body. */
    CHECK_EQ(decode_exact(buf, 12 + 10, 0, &f, &need), -EPROTO);
    n = frame_of(buf, MIN_REQ "\x28\x03", 10, 0, 3); /* exactly the rest: all attachment */
    CHECK_EQ(decode_exact(buf, n, 0, &f, &need), 1);
    CHECK_EQ(f.payload_len, 0);
    CHECK_EQ(f.attachment_len, 3);
    /* A negative int32 attachment_size. */
    CHECK_EQ(decode_min_req_plus("\x28\xff\xff\xff\xff\x0f", 6, &f), -EPROTO);
}

/* ---- Malformed metas ---------------------------------------------------------------- */

/* Every cut of the captured request's meta: where a field ends, what is left
 * is a valid (shorter) meta; anywhere else a varint, a length or a
 * submessage is truncated. */
TEST(baidu_meta_cut_everywhere)
{
    static const size_t ends[] = { 31, 33, 39, 41, 43, 45, 47 };
    const uint8_t *meta = brpc_request + 12;
    size_t meta_len = 47, e = 0;
    CHECK_EQ(brpc_request[11], meta_len);
    for (size_t cut = 0; cut <= meta_len; cut++) {
        uint8_t buf[512];
        struct net__baidu_frame f;
        bool boundary = e < sizeof ends / sizeof ends[0] && ends[e] == cut;
        /* 3 bytes of body after the meta: payload, or the attachment once
         * the cut keeps attachment_size (it ends at 41). */
        size_t n = frame_of(buf, meta, cut, 3, 0);
        CHECK_EQ(decode_all(buf, n, &f), boundary ? 1 : -EPROTO);
        if (boundary)
            CHECK_EQ(f.attachment_len, cut >= 41 ? 3 : 0);
        e += boundary;
    }
    CHECK_EQ(e, 7);
}

TEST(baidu_meta_groups_and_bad_wire_types)
{
    struct net__baidu_frame f;
    static const unsigned bad[] = { 3, 4, 6, 7 };
    for (size_t i = 0; i < 4; i++) {
        uint8_t top[2] = { (uint8_t)(20 << 3 | bad[i]), 0 };
        uint8_t in_req[10] = { 0x0a, 0x08, 0x0a, 0x01, 's', 0x12, 0x01, 'm',
                               (uint8_t)(15 << 3 | bad[i]), 0 };
        CHECK_EQ(decode_min_req_plus(top, 2, &f), -EPROTO);
        CHECK_EQ(decode_meta(in_req, sizeof in_req, &f), -EPROTO);
    }
    /* A known field with the wrong wire type, and field number 0. */
    CHECK_EQ(decode_min_req_plus("\x21\0\0\0\0\0\0\0\0", 9, &f), -EPROTO);
    CHECK_EQ(decode_min_req_plus("\x00\x00", 2, &f), -EPROTO);
}

TEST(baidu_meta_string_past_end)
{
    struct net__baidu_frame f;
    /* service says 100 bytes inside a 6-byte request. */
    CHECK_EQ(decode_meta("\x0a\x06\x0a\x64s\x12\x01m", 8, &f), -EPROTO);
    /* The request says 20 bytes; the meta has 6 left. */
    CHECK_EQ(decode_meta("\x0a\x14\x0a\x01s\x12\x01m", 8, &f), -EPROTO);
    /* An unknown length-delimited field past the end. */
    CHECK_EQ(decode_min_req_plus("\xa2\x01\x05xx", 5, &f), -EPROTO);
}

TEST(baidu_meta_needs_exactly_one_of_request_response)
{
    struct net__baidu_frame f;
    CHECK_EQ(decode_meta("\x20\x01", 2, &f), -EPROTO);            /* neither */
    CHECK_EQ(decode_meta("", 0, &f), -EPROTO);                    /* empty meta */
    CHECK_EQ(decode_min_req_plus("\x12\x00", 2, &f), -EPROTO);    /* both */
    CHECK_EQ(decode_meta("\x12\x00", 2, &f), 1);                  /* an empty response */
    CHECK_EQ(decode_meta("\x0a\x03\x0a\x01s", 5, &f), -EPROTO);   /* no method */
    CHECK_EQ(decode_meta("\x0a\x03\x12\x01m", 5, &f), -EPROTO);   /* no service */
    /* A request given in two pieces is merged, as protobuf does. */
    CHECK_EQ(decode_meta("\x0a\x03\x0a\x01s\x0a\x03\x12\x01m", 10, &f), 1);
    CHECK(str_is(f.meta.service, f.meta.service_len, "s"));
    CHECK(str_is(f.meta.method, f.meta.method_len, "m"));
}

TEST(baidu_meta_skips_unknown_fields)
{
    struct net__baidu_frame f;
    /* Field 20 as varint, fixed64, length-delimited and fixed32 at the top;
     * then the same for field 15 inside the request. */
    static const uint8_t meta[] = {
        0xa0, 0x01, 0x96, 0x01,                                  /* 20 varint */
        0xa1, 0x01, 1, 2, 3, 4, 5, 6, 7, 8,                      /* 20 fixed64 */
        0xa2, 0x01, 0x03, 'x', 'y', 'z',                         /* 20 bytes */
        0xa5, 0x01, 1, 2, 3, 4,                                  /* 20 fixed32 */
        0x0a, 0x1b, 0x78, 0x05, 0x79, 9, 9, 9, 9, 9, 9, 9, 9,  /* 15 varint, fixed64 */
        0x7a, 0x01, 'q', 0x7d, 1, 2, 3, 4,                      /* 15 bytes, fixed32 */
        0x0a, 0x01, 's', 0x12, 0x01, 'm', 0x18, 0x07,           /* service, method, log_id */
        0x20, 0x09, 0x4a, 0x02, 0x0a, 0x00,                     /* id 9; user_fields */
    };
    CHECK_EQ(decode_meta(meta, sizeof meta, &f), 1);
    CHECK(str_is(f.meta.service, f.meta.service_len, "s"));
    CHECK(str_is(f.meta.method, f.meta.method_len, "m"));
    CHECK_EQ(f.meta.log_id, 7);
    CHECK_EQ(f.meta.correlation_id, 9);
    CHECK(!f.meta.unsupported);
}

TEST(baidu_meta_unsupported_features)
{
    struct net__baidu_frame f;
    CHECK_EQ(decode_min_req_plus("\x32\x00", 2, &f), 1); /* chunk_info */
    CHECK(f.meta.unsupported);
    CHECK_EQ(decode_min_req_plus("\x42\x00", 2, &f), 1); /* stream_settings */
    CHECK(f.meta.unsupported);
    CHECK_EQ(decode_min_req_plus("\x50\x01", 2, &f), 1); /* content_type json */
    CHECK(f.meta.unsupported);
    CHECK_EQ(decode_min_req_plus("\x50\x00\x18\x02", 4, &f), 1); /* pb; snappy */
    CHECK(!f.meta.unsupported);
    CHECK_EQ(f.meta.compress_type, 2);
}

/* ---- Checksums -------------------------------------------------------------------- */

TEST(crc32c_check_value_and_chunks)
{
    CHECK_EQ(net__crc32c(0, "123456789", 9), 0xe3069283u); /* the standard check value */
    CHECK_EQ(net__crc32c(0, NULL, 0), 0);
    CHECK_EQ(net__crc32c(net__crc32c(0, "1234", 4), "56789", 5), 0xe3069283u);
    /* 32 zero bytes: RFC 3720 (iSCSI), B.4. */
    static const uint8_t zeros[32];
    CHECK_EQ(net__crc32c(0, zeros, sizeof zeros), 0x8a9136aau);
    CHECK_EQ(net__crc32c_mask(0), 0xa282ead8u);
    CHECK_EQ(net__crc32c_portable(0, "123456789", 9), 0xe3069283u);
    CHECK_EQ(net__crc32c_portable(0, zeros, sizeof zeros), 0x8a9136aau);
}

/* The fast path (SSE4.2 where the CPU has it) and the portable loop agree
 * on every length and alignment around the 8-byte steps, and chained. */
TEST(crc32c_fast_and_portable_agree)
{
    uint8_t b[80];
    uint32_t seed = 12345;
    for (size_t i = 0; i < sizeof b; i++)
        b[i] = (uint8_t)((seed = seed * 1103515245u + 12345u) >> 16);
    for (size_t off = 0; off < 8; off++)
        for (size_t len = 0; off + len <= sizeof b; len++) {
            uint32_t fast = net__crc32c(0, b + off, len);
            CHECK_EQ(fast, net__crc32c_portable(0, b + off, len));
            CHECK_EQ(net__crc32c(fast, b, 13), net__crc32c_portable(fast, b, 13));
        }
}

TEST(baidu_checksum_brpc_request)
{
    struct net__baidu_frame f;
    CHECK_EQ(decode_all(brpc_checksummed, sizeof brpc_checksummed, &f), 1);
    CHECK(!f.meta.unsupported);
    CHECK_EQ(f.meta.checksum_type, NET__BAIDU_CHECKSUM_CRC32C);
    CHECK_EQ(f.meta.checksum_value_len, 4);
    CHECK_MEM_EQ(f.meta.checksum_value, "\xd3\x8c\xab\x46", 4);
    CHECK(!f.meta.checksum_with_attachment);
    CHECK(net__baidu_checksum_ok(&f));
    /* The attachment is not covered; every payload byte is. */
    uint8_t copy[sizeof brpc_checksummed];
    memcpy(copy, brpc_checksummed, sizeof copy);
    copy[sizeof copy - 1] ^= 1;
    CHECK_EQ(decode_all(copy, sizeof copy, &f), 1);
    CHECK(net__baidu_checksum_ok(&f));
    for (size_t i = sizeof copy - 16; i < sizeof copy - 3; i++) {
        memcpy(copy, brpc_checksummed, sizeof copy);
        copy[i] ^= 0x20;
        CHECK_EQ(decode_all(copy, sizeof copy, &f), 1);
        CHECK(!net__baidu_checksum_ok(&f));
    }
    /* brpc_request: checksum_type 0 and an empty value, nothing to check. */
    CHECK_EQ(decode_all(brpc_request, sizeof brpc_request, &f), 1);
    CHECK_EQ(f.meta.checksum_type, 0);
    CHECK(net__baidu_checksum_ok(&f));
}

/* A frame with payload "ppp", attachment "aa" and the given checksum
 * fields after MIN_REQ. */
static int decode_summed(const uint8_t *fields, size_t n, struct net__baidu_frame *f)
{
    static uint8_t buf[512];
    uint8_t meta[64];
    memcpy(meta, MIN_REQ "\x28\x02", 10); /* attachment_size 2 */
    memcpy(meta + 10, fields, n);
    return decode_all(buf, frame_of(buf, meta, 10 + n, 3, 2), f);
}

static void put_sum(uint8_t *p, uint32_t crc)
{
    put_be32(p, net__crc32c_mask(crc));
}

TEST(baidu_checksum_attachment_types_and_lengths)
{
    struct net__baidu_frame f;
    uint8_t sum[] = {0x58, 1, 0x62, 4, 0, 0, 0, 0, 0x68, 1}; /* type 1, value, with_att */
    uint32_t payload = net__crc32c(0, "ppp", 3);
    put_sum(sum + 4, net__crc32c(payload, "aa", 2));
    CHECK_EQ(decode_summed(sum, sizeof sum, &f), 1);
    CHECK(f.meta.checksum_with_attachment);
    CHECK(net__baidu_checksum_ok(&f));
    CHECK_EQ(decode_summed(sum, 8, &f), 1); /* the same value, payload only: wrong */
    CHECK(!net__baidu_checksum_ok(&f));
    put_sum(sum + 4, payload);
    CHECK_EQ(decode_summed(sum, 8, &f), 1);
    CHECK(net__baidu_checksum_ok(&f));
    CHECK_EQ(decode_summed(sum, sizeof sum, &f), 1); /* with_att, value of payload only */
    CHECK(!net__baidu_checksum_ok(&f));
    sum[1] = 2; /* a type netloop cannot verify */
    CHECK_EQ(decode_summed(sum, 8, &f), 1);
    CHECK_EQ(f.meta.checksum_type, 2);
    CHECK(!net__baidu_checksum_ok(&f));
    sum[1] = 0; /* none: whatever the value says */
    CHECK_EQ(decode_summed(sum, 8, &f), 1);
    CHECK(net__baidu_checksum_ok(&f));
    static const uint8_t short_value[] = {0x58, 1, 0x62, 3, 1, 2, 3};
    CHECK_EQ(decode_summed(short_value, sizeof short_value, &f), 1);
    CHECK(!net__baidu_checksum_ok(&f));
    static const uint8_t no_value[] = {0x58, 1};
    CHECK_EQ(decode_summed(no_value, sizeof no_value, &f), 1);
    CHECK(!net__baidu_checksum_ok(&f));
    /* Wrong wire types are malformed, as for every known field. */
    static const uint8_t type_as_bytes[] = {0x5a, 0};
    CHECK_EQ(decode_summed(type_as_bytes, sizeof type_as_bytes, &f), -EPROTO);
    static const uint8_t value_as_varint[] = {0x60, 1};
    CHECK_EQ(decode_summed(value_as_varint, sizeof value_as_varint, &f), -EPROTO);
}

/* ---- The protobuf layer ------------------------------------------------------------- */

static int varint_of(const uint8_t *p, size_t len, uint64_t *v)
{
    uint8_t *copy = malloc(len ? len : 1);
    CHECK(copy != NULL);
    memcpy(copy, p, len);
    struct net__pb_reader r = { copy, copy + len };
    int rc = net__pb_read_varint(&r, v);
    CHECK(rc < 0 ? r.p == copy : r.p <= copy + len);
    free(copy);
    return rc;
}

TEST(pb_varint_limits)
{
    static const uint8_t max[10] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 };
    uint8_t buf[11];
    uint64_t v;
    CHECK_EQ(varint_of(max, 10, &v), 0);
    CHECK(v == UINT64_MAX);
    for (size_t cut = 0; cut < 10; cut++)
        CHECK_EQ(varint_of(max, cut, &v), -EPROTO); /* truncated */
    memcpy(buf, max, 10);
    buf[9] = 0x02; /* bit 64 */
    CHECK_EQ(varint_of(buf, 10, &v), -EPROTO);
    buf[9] = 0x81; /* an 11th byte */
    buf[10] = 0x00;
    CHECK_EQ(varint_of(buf, 11, &v), -EPROTO);
    /* Non-minimal encodings are legal: 0 in 10 bytes. */
    memset(buf, 0x80, 9);
    buf[9] = 0;
    CHECK_EQ(varint_of(buf, 10, &v), 0);
    CHECK(v == 0);
}

TEST(pb_write_read_roundtrip)
{
    static const uint64_t vals[] = { 0, 1, 127, 128, 16383, 16384, UINT32_MAX, UINT64_MAX };
    uint8_t buf[64];
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        uint8_t *end = net__pb_put_varint_field(buf, NET__PB_MAX_FIELD, vals[i]);
        CHECK_EQ(end - buf, net__pb_varint_field_len(NET__PB_MAX_FIELD, vals[i]));
        struct net__pb_reader r = { buf, end };
        struct net__pb_field f;
        CHECK_EQ(net__pb_read_field(&r, &f), 1);
        CHECK(f.number == NET__PB_MAX_FIELD && f.wire == NET__PB_VARINT && f.value == vals[i]);
        CHECK_EQ(net__pb_read_field(&r, &f), 0);
    }
    uint8_t *end = net__pb_put_len_field(buf, 3, "abc", 3);
    CHECK_EQ(end - buf, net__pb_len_field_len(3, 3));
    struct net__pb_reader r = { buf, end };
    struct net__pb_field f;
    CHECK_EQ(net__pb_read_field(&r, &f), 1);
    CHECK(f.number == 3 && f.wire == NET__PB_LEN && f.len == 3 && memcmp(f.data, "abc", 3) == 0);
    /* Field number 2^29 (one past the largest) is malformed. */
    end = net__pb_put_varint_field(buf, 0, 0);
    end = net__pb_put_varint(buf, (uint64_t)(NET__PB_MAX_FIELD + 1) << 3);
    *end++ = 0;
    r = (struct net__pb_reader){ buf, end };
    CHECK_EQ(net__pb_read_field(&r, &f), -EPROTO);
    CHECK(r.p == buf);
}

TEST(pb_fixed_little_endian)
{
    static const uint8_t in[] = { 0x0d, 1, 2, 3, 4, 0x11, 1, 2, 3, 4, 5, 6, 7, 8 };
    struct net__pb_reader r = { in, in + sizeof in };
    struct net__pb_field f;
    CHECK_EQ(net__pb_read_field(&r, &f), 1);
    CHECK(f.wire == NET__PB_FIXED32 && f.value == 0x04030201u);
    CHECK_EQ(net__pb_read_field(&r, &f), 1);
    CHECK(f.wire == NET__PB_FIXED64 && f.value == 0x0807060504030201ull);
    r = (struct net__pb_reader){ in, in + 4 }; /* fixed32 short by one */
    CHECK_EQ(net__pb_read_field(&r, &f), -EPROTO);
}

TEST(baidu_status_mapping_both_ways)
{
    static const struct { uint32_t status; int32_t code; } both[] = {
        { NET__RPC_OK, 0 },
        { NET__RPC_UNKNOWN_METHOD, NET__BAIDU_ENOMETHOD },
        { NET__RPC_BAD_REQUEST, NET__BAIDU_EREQUEST },
        { NET__RPC_INTERNAL, NET__BAIDU_EINTERNAL },
        { NET__RPC_OVERLOADED, NET__BAIDU_ELIMIT },
        { NET__RPC_SHUTTING_DOWN, NET__BAIDU_ELOGOFF },
        { 100, 100 },
        { 4242, 4242 },
        { INT32_MAX, INT32_MAX },
    };
    for (size_t i = 0; i < sizeof both / sizeof both[0]; i++) {
        CHECK_EQ(net__baidu_error_code(both[i].status), both[i].code);
        CHECK_EQ(net__baidu_status(both[i].code), both[i].status);
    }
    /* One way only. */
    CHECK_EQ(net__baidu_status(NET__BAIDU_ENOSERVICE), NET__RPC_UNKNOWN_METHOD);
    CHECK_EQ(net__baidu_status(NET__BAIDU_ERESPONSE), NET__RPC_INTERNAL);
    CHECK_EQ(net__baidu_status(NET__BAIDU_EOVERCROWDED), NET__RPC_OVERLOADED);
    CHECK_EQ(net__baidu_status(NET__BAIDU_ERPCTIMEDOUT), NET__BAIDU_ERPCTIMEDOUT);
    CHECK_EQ(net__baidu_status(11), NET__RPC_INTERNAL);   /* an errno: EAGAIN */
    CHECK_EQ(net__baidu_status(-1), NET__RPC_INTERNAL);
    CHECK_EQ(net__baidu_status(INT32_MIN), NET__RPC_INTERNAL);
    CHECK_EQ(net__baidu_error_code(6), NET__BAIDU_EINTERNAL);   /* reserved */
    CHECK_EQ(net__baidu_error_code(99), NET__BAIDU_EINTERNAL);
    CHECK_EQ(net__baidu_error_code((uint32_t)INT32_MAX + 1), NET__BAIDU_EINTERNAL);
    CHECK_EQ(net__baidu_error_code(NET__RPC_TIMEOUT), NET__BAIDU_EINTERNAL);
}
