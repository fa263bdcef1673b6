#include "harness.h"

#include <net/buffer.h>

#include "rpc/rpc_codec.h"

/* ---- Helpers ------------------------------------------------------------- */

static void fill_pattern(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 31 + seed) % 251);
}

/* A valid header's 24 bytes (version 1, magic included). */
static void make_header(uint8_t out[NET__RPC_HEADER_LEN], uint8_t type,
                        uint16_t method_len, uint64_t call_id, uint32_t status,
                        uint32_t body_len)
{
    struct net__rpc_header h = {
        .version = NET__RPC_VERSION,
        .type = type,
        .method_len = method_len,
        .call_id = call_id,
        .status = status,
        .body_len = body_len,
    };
    net__rpc_header_pack(out, &h);
}

/* Field by field: the struct has padding, so memcmp would compare junk. */
static int header_equal(const struct net__rpc_header *a, const struct net__rpc_header *b)
{
    return a->version == b->version && a->type == b->type &&
           a->method_len == b->method_len && a->call_id == b->call_id &&
           a->status == b->status && a->body_len == b->body_len;
}

/* Checks everything a decoded frame promises about itself and the buffer. */
static void check_frame_invariants(const net_buf_t *in, size_t max_frame,
                                   const struct net__rpc_frame *f)
{
    const struct net__rpc_header *h = &f->hdr;
    CHECK_EQ(h->version, NET__RPC_VERSION);
    if (h->type == NET__RPC_TYPE_REQUEST) {
        CHECK(h->method_len >= 1 && h->method_len <= NET__RPC_MAX_METHOD);
        CHECK_EQ(h->status, 0);
    } else {
        CHECK_EQ(h->type, NET__RPC_TYPE_RESPONSE);
        CHECK_EQ(h->method_len, 0);
        CHECK(h->status < NET__RPC_LOCAL_MIN);
    }
    CHECK_EQ(f->total, (uint64_t)NET__RPC_HEADER_LEN + h->method_len + h->body_len);
    CHECK_EQ(f->total, net__rpc_frame_size(h));
    CHECK(f->total <= max_frame);
    CHECK(f->total <= net_buf_readable(in));
    CHECK_MEM_EQ(net_buf_peek(in), NET__RPC_MAGIC, 4);
    CHECK(f->method == net_buf_peek(in) + NET__RPC_HEADER_LEN);
    CHECK(f->body == f->method + h->method_len);
    struct net__rpc_header again;
    CHECK_EQ(net__rpc_header_parse((const uint8_t *)net_buf_peek(in), max_frame,
                                   &again, NULL), 0);
    CHECK(header_equal(&again, h));
}

/* Decodes exactly one complete frame from the front of in and consumes it. */
static struct net__rpc_frame decode_one(net_buf_t *in, size_t max_frame)
{
    struct net__rpc_frame f;
    const char *reason = NULL;
    CHECK_EQ(net__rpc_decode(in, max_frame, &f, &reason), 1);
    CHECK(reason == NULL);
    check_frame_invariants(in, max_frame ? max_frame : NET__RPC_DEFAULT_MAX_FRAME, &f);
    return f;
}

/* The 24 bytes at hdr are refused with err and a non-empty reason, both by
 * net__rpc_header_parse() and by the streaming decoder, and the decoder
 * refuses them with no body present. */
static void expect_reject(const uint8_t hdr[NET__RPC_HEADER_LEN], size_t max_frame,
                          int err)
{
    struct net__rpc_header h;
    const char *reason = NULL;
    CHECK_EQ(net__rpc_header_parse(hdr, max_frame, &h, &reason), err);
    CHECK(reason != NULL && reason[0] != '\0');

    net_buf_t in = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&in, hdr, NET__RPC_HEADER_LEN));
    struct net__rpc_frame f;
    const char *reason2 = NULL;
    CHECK_EQ(net__rpc_decode(&in, max_frame, &f, &reason2), err);
    CHECK(reason2 != NULL && strcmp(reason, reason2) == 0);
    CHECK(header_equal(&f.hdr, &h));
    CHECK(f.method == NULL && f.body == NULL);
    CHECK_EQ(net_buf_readable(&in), NET__RPC_HEADER_LEN); /* nothing consumed */
    net_buf_destroy(&in);
}

static const char *reject_reason(const uint8_t hdr[NET__RPC_HEADER_LEN],
                                 size_t max_frame)
{
    struct net__rpc_header h;
    const char *reason = NULL;
    CHECK(net__rpc_header_parse(hdr, max_frame, &h, &reason) < 0);
    return reason;
}

/* ---- Round trips ---------------------------------------------------------- */

TEST(rpc_codec_round_trip_request)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net__rpc_encode_request(&b, 0x1122334455667788ull, "math.add", 8,
                                     "[1,2]", 5));
    CHECK_EQ(net_buf_readable(&b), 24 + 8 + 5);
    struct net__rpc_frame f = decode_one(&b, 0);
    CHECK_EQ(f.hdr.type, NET__RPC_TYPE_REQUEST);
    CHECK_EQ(f.hdr.call_id, 0x1122334455667788ull);
    CHECK_EQ(f.hdr.method_len, 8);
    CHECK_EQ(f.hdr.body_len, 5);
    CHECK_MEM_EQ(f.method, "math.add", 8);
    CHECK_MEM_EQ(f.body, "[1,2]", 5);
    CHECK_EQ(f.total, 37);
    CHECK_OK(net_buf_retrieve(&b, f.total));
    CHECK_EQ(net_buf_readable(&b), 0);
    net_buf_destroy(&b);
}

TEST(rpc_codec_round_trip_response)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net__rpc_encode_response(&b, UINT64_MAX, NET__RPC_OK, "3", 1));
    struct net__rpc_frame f = decode_one(&b, 0);
    CHECK_EQ(f.hdr.type, NET__RPC_TYPE_RESPONSE);
    CHECK(f.hdr.call_id == UINT64_MAX);
    CHECK_EQ(f.hdr.status, NET__RPC_OK);
    CHECK_EQ(f.hdr.method_len, 0);
    CHECK_EQ(f.hdr.body_len, 1);
    CHECK_MEM_EQ(f.body, "3", 1);
    CHECK_EQ(f.total, 25);
    net_buf_destroy(&b);
}

TEST(rpc_codec_round_trip_error_response_with_message)
{
    net_buf_t b = NET_BUF_INIT;
    const char msg[] = "no method \"nope\"";
    CHECK_OK(net__rpc_encode_response(&b, 9, NET__RPC_UNKNOWN_METHOD, msg, strlen(msg)));
    CHECK_OK(net__rpc_encode_response(&b, 10, NET__RPC_APP_BASE + 7, "x", 1));
    CHECK_OK(net__rpc_encode_response(&b, 11, NET__RPC_LOCAL_MIN - 1, NULL, 0));
    struct net__rpc_frame f = decode_one(&b, 0);
    CHECK_EQ(f.hdr.status, NET__RPC_UNKNOWN_METHOD);
    CHECK_EQ(f.hdr.body_len, strlen(msg));
    CHECK_MEM_EQ(f.body, msg, strlen(msg));
    CHECK_OK(net_buf_retrieve(&b, f.total));
    f = decode_one(&b, 0);
    CHECK_EQ(f.hdr.status, 107);
    CHECK_OK(net_buf_retrieve(&b, f.total));
    f = decode_one(&b, 0);
    CHECK_EQ(f.hdr.status, NET__RPC_LOCAL_MIN - 1);
    CHECK_OK(net_buf_retrieve(&b, f.total));
    CHECK_EQ(net_buf_readable(&b), 0);
    net_buf_destroy(&b);
}

TEST(rpc_codec_round_trip_empty_body)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net__rpc_encode_request(&b, 0, "ping", 4, NULL, 0));
    CHECK_OK(net__rpc_encode_response(&b, 0, NET__RPC_OK, NULL, 0));
    CHECK_EQ(net_buf_readable(&b), 28 + 24);
    struct net__rpc_frame f = decode_one(&b, 0);
    CHECK_EQ(f.hdr.call_id, 0);
    CHECK_EQ(f.hdr.body_len, 0);
    CHECK_EQ(f.total, 28);
    CHECK(f.body == net_buf_peek(&b) + 28);
    CHECK_OK(net_buf_retrieve(&b, f.total));
    f = decode_one(&b, 0);
    CHECK_EQ(f.hdr.type, NET__RPC_TYPE_RESPONSE);
    CHECK_EQ(f.hdr.body_len, 0);
    CHECK_EQ(f.total, 24);
    CHECK(f.method == f.body);
    CHECK_OK(net_buf_retrieve(&b, f.total));
    CHECK_EQ(net_buf_readable(&b), 0);
    net_buf_destroy(&b);
}

TEST(rpc_codec_round_trip_255_byte_method)
{
    char method[NET__RPC_MAX_METHOD];
    fill_pattern((unsigned char *)method, sizeof method, 3);
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net__rpc_encode_request(&b, 42, method, sizeof method, "b", 1));
    struct net__rpc_frame f = decode_one(&b, 0);
    CHECK_EQ(f.hdr.method_len, 255);
    CHECK_MEM_EQ(f.method, method, sizeof method);
    CHECK_MEM_EQ(f.body, "b", 1);
    CHECK_EQ(f.total, 24 + 255 + 1);
    net_buf_destroy(&b);
}

TEST(rpc_codec_round_trip_8mib_body)
{
    size_t n = (size_t)8 << 20;
    unsigned char *body = malloc(n);
    CHECK(body != NULL);
    fill_pattern(body, n, 11);
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net__rpc_encode_request(&b, 7, "blob.put", 8, body, n));
    CHECK_OK(net__rpc_encode_response(&b, 7, NET__RPC_OK, body, n));
    struct net__rpc_frame f = decode_one(&b, 0);
    CHECK_EQ(f.hdr.body_len, n);
    CHECK_MEM_EQ(f.body, body, n);
    CHECK_OK(net_buf_retrieve(&b, f.total));
    f = decode_one(&b, 0);
    CHECK_EQ(f.hdr.body_len, n);
    CHECK_MEM_EQ(f.body, body, n);
    CHECK_OK(net_buf_retrieve(&b, f.total));
    CHECK_EQ(net_buf_readable(&b), 0);
    net_buf_destroy(&b);
    free(body);
}

/* ---- Exact bytes ------------------------------------------------------------ */

/* The worked example of docs/protocol.md, byte for byte. */
static const uint8_t doc_request[] = {
    0x4E, 0x52, 0x50, 0x43, 0x01, 0x01, 0x00, 0x04, /* "NRPC" v1 request, 4 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, /* call_id 1 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, /* status 0, body_len 2 */
    0x65, 0x63, 0x68, 0x6F,                         /* "echo" */
    0x68, 0x69,                                     /* "hi" */
};
static const uint8_t doc_response[] = {
    0x4E, 0x52, 0x50, 0x43, 0x01, 0x02, 0x00, 0x00, /* "NRPC" v1 response, 0 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, /* call_id 1 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, /* status OK, body_len 2 */
    0x68, 0x69,                                     /* "hi" */
};
static const uint8_t doc_error_request[] = {
    0x4E, 0x52, 0x50, 0x43, 0x01, 0x01, 0x00, 0x04, /* "NRPC" v1 request, 4 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, /* call_id 2 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* status 0, body_len 0 */
    0x6E, 0x6F, 0x70, 0x65,                         /* "nope" */
};
static const uint8_t doc_error_response[] = {
    0x4E, 0x52, 0x50, 0x43, 0x01, 0x02, 0x00, 0x00, /* "NRPC" v1 response, 0 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, /* call_id 2 */
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0E, /* UNKNOWN_METHOD, 14 */
    0x75, 0x6E, 0x6B, 0x6E, 0x6F, 0x77, 0x6E, 0x20, /* "unknown " */
    0x6D, 0x65, 0x74, 0x68, 0x6F, 0x64,             /* "method" */
};

TEST(rpc_codec_encode_matches_protocol_doc_example)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net__rpc_encode_request(&b, 1, "echo", 4, "hi", 2));
    CHECK_EQ(net_buf_readable(&b), sizeof doc_request);
    CHECK_MEM_EQ(net_buf_peek(&b), doc_request, sizeof doc_request);
    net_buf_retrieve_all(&b);
    CHECK_OK(net__rpc_encode_response(&b, 1, NET__RPC_OK, "hi", 2));
    CHECK_EQ(net_buf_readable(&b), sizeof doc_response);
    CHECK_MEM_EQ(net_buf_peek(&b), doc_response, sizeof doc_response);
    net_buf_retrieve_all(&b);
    CHECK_OK(net__rpc_encode_request(&b, 2, "nope", 4, NULL, 0));
    CHECK_EQ(net_buf_readable(&b), sizeof doc_error_request);
    CHECK_MEM_EQ(net_buf_peek(&b), doc_error_request, sizeof doc_error_request);
    net_buf_retrieve_all(&b);
    CHECK_OK(net__rpc_encode_response(&b, 2, NET__RPC_UNKNOWN_METHOD, "unknown method", 14));
    CHECK_EQ(net_buf_readable(&b), sizeof doc_error_response);
    CHECK_MEM_EQ(net_buf_peek(&b), doc_error_response, sizeof doc_error_response);
    net_buf_destroy(&b);
}

/* Every field distinct per byte, so a swapped or misplaced byte shows. */
TEST(rpc_codec_encode_golden_vector_byte_order)
{
    static const uint8_t want[] = {
        'N',  'R',  'P',  'C',  0x01, 0x02, 0x00, 0x00,
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
        0x0A, 0x0B, 0x0C, 0x0D, 0x00, 0x00, 0x00, 0x03,
        'a',  'b',  'c',
    };
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net__rpc_encode_response(&b, 0x1122334455667788ull, 0x0A0B0C0Du, "abc", 3));
    CHECK_EQ(net_buf_readable(&b), sizeof want);
    CHECK_MEM_EQ(net_buf_peek(&b), want, sizeof want);
    net_buf_destroy(&b);
}

TEST(rpc_codec_header_pack_golden_vector)
{
    static const uint8_t want[NET__RPC_HEADER_LEN] = {
        0x4E, 0x52, 0x50, 0x43, 0x01, 0x01, 0x00, 0xFF,
        0xF1, 0xE2, 0xD3, 0xC4, 0xB5, 0xA6, 0x97, 0x88,
        0x00, 0x00, 0x00, 0x00, 0xDE, 0xAD, 0xBE, 0xEF,
    };
    struct net__rpc_header h = {
        .version = 1, .type = 1, .method_len = 255,
        .call_id = 0xF1E2D3C4B5A69788ull, .status = 0, .body_len = 0xDEADBEEFu,
    };
    uint8_t got[NET__RPC_HEADER_LEN];
    memset(got, 0x5A, sizeof got);
    net__rpc_header_pack(got, &h);
    CHECK_MEM_EQ(got, want, sizeof want);

    struct net__rpc_header back;
    CHECK_EQ(net__rpc_header_parse(got, SIZE_MAX, &back, NULL), 0);
    CHECK(header_equal(&back, &h));
    CHECK(net__rpc_frame_size(&back) == 24ull + 255 + 0xDEADBEEFull);
}

/* ---- Malformed frames -------------------------------------------------------- */

TEST(rpc_codec_rejects_bad_magic)
{
    uint8_t hdr[NET__RPC_HEADER_LEN];
    for (int i = 0; i < 4; i++) {
        make_header(hdr, NET__RPC_TYPE_REQUEST, 4, 1, 0, 2);
        hdr[i] ^= 0x20; /* "nRPC", "NrPC", ... */
        expect_reject(hdr, 0, -EPROTO);
        CHECK(strcmp(reject_reason(hdr, 0), "bad magic") == 0);
    }
}

/* A peer speaking another protocol ("GET / HTTP/1.1") is refused at its first
 * byte instead of idling until 24 bytes arrive. */
TEST(rpc_codec_rejects_bad_magic_at_first_byte)
{
    net_buf_t in = NET_BUF_INIT;
    struct net__rpc_frame f;
    const char *reason = NULL;
    CHECK_EQ(net__rpc_decode(&in, 0, &f, &reason), 0);
    CHECK_EQ(f.total, 0);
    CHECK_OK(net_buf_append(&in, "G", 1));
    CHECK_EQ(net__rpc_decode(&in, 0, &f, &reason), -EPROTO);
    CHECK(reason != NULL && strcmp(reason, "bad magic") == 0);
    net_buf_retrieve_all(&in);
    CHECK_OK(net_buf_append(&in, "NRP", 3));
    reason = NULL;
    CHECK_EQ(net__rpc_decode(&in, 0, &f, &reason), 0);
    CHECK(reason == NULL);
    CHECK_OK(net_buf_append(&in, "X", 1));
    CHECK_EQ(net__rpc_decode(&in, 0, &f, &reason), -EPROTO);
    CHECK(strcmp(reason, "bad magic") == 0);
    net_buf_destroy(&in);
}

TEST(rpc_codec_rejects_unknown_version)
{
    static const uint8_t versions[] = { 0, 2, 255 };
    uint8_t hdr[NET__RPC_HEADER_LEN];
    for (size_t i = 0; i < sizeof versions; i++) {
        make_header(hdr, NET__RPC_TYPE_REQUEST, 4, 1, 0, 2);
        hdr[4] = versions[i];
        expect_reject(hdr, 0, -EPROTO);
        CHECK(strcmp(reject_reason(hdr, 0), "unknown version") == 0);
    }
}

TEST(rpc_codec_rejects_unknown_type)
{
    static const uint8_t types[] = { 0, 3, 255 };
    uint8_t hdr[NET__RPC_HEADER_LEN];
    for (size_t i = 0; i < sizeof types; i++) {
        make_header(hdr, types[i], 0, 1, 0, 0);
        expect_reject(hdr, 0, -EPROTO);
        CHECK(strcmp(reject_reason(hdr, 0), "unknown frame type") == 0);
    }
}

TEST(rpc_codec_rejects_request_with_method_len_0)
{
    uint8_t hdr[NET__RPC_HEADER_LEN];
    make_header(hdr, NET__RPC_TYPE_REQUEST, 0, 1, 0, 2);
    expect_reject(hdr, 0, -EPROTO);
    CHECK(strcmp(reject_reason(hdr, 0), "request with method_len 0") == 0);
}

TEST(rpc_codec_rejects_request_with_method_len_over_255)
{
    static const uint16_t lens[] = { 256, 0x1234, 0xFFFF };
    uint8_t hdr[NET__RPC_HEADER_LEN];
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        make_header(hdr, NET__RPC_TYPE_REQUEST, lens[i], 1, 0, 0);
        expect_reject(hdr, 0, -EPROTO);
        CHECK(strcmp(reject_reason(hdr, 0), "request with method_len over 255") == 0);
    }
}

TEST(rpc_codec_rejects_response_with_method_len)
{
    static const uint16_t lens[] = { 1, 4, 255, 0xFFFF };
    uint8_t hdr[NET__RPC_HEADER_LEN];
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        make_header(hdr, NET__RPC_TYPE_RESPONSE, lens[i], 1, 0, 0);
        expect_reject(hdr, 0, -EPROTO);
        CHECK(strcmp(reject_reason(hdr, 0), "response with non-zero method_len") == 0);
    }
}

TEST(rpc_codec_rejects_request_with_nonzero_status)
{
    static const uint32_t statuses[] = { 1, 100, 0x80000000u, UINT32_MAX };
    uint8_t hdr[NET__RPC_HEADER_LEN];
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        make_header(hdr, NET__RPC_TYPE_REQUEST, 4, 1, statuses[i], 0);
        expect_reject(hdr, 0, -EPROTO);
        CHECK(strcmp(reject_reason(hdr, 0), "request with non-zero status") == 0);
    }
}

/* A peer cannot make a call look as if it had timed out or been cancelled. */
TEST(rpc_codec_rejects_response_with_local_only_status)
{
    static const uint32_t statuses[] = {
        NET__RPC_LOCAL_MIN, NET__RPC_TIMEOUT, NET__RPC_DISCONNECTED,
        NET__RPC_CANCELLED, NET__RPC_PROTOCOL_ERROR, UINT32_MAX,
    };
    uint8_t hdr[NET__RPC_HEADER_LEN];
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        make_header(hdr, NET__RPC_TYPE_RESPONSE, 0, 1, statuses[i], 0);
        expect_reject(hdr, 0, -EPROTO);
        CHECK(strcmp(reject_reason(hdr, 0),
                     "response with a reserved local-only status") == 0);
    }
}

/* Only the header is present; the limit is enforced before any body. */
TEST(rpc_codec_rejects_oversize_frame_from_header_alone)
{
    uint8_t hdr[NET__RPC_HEADER_LEN];
    make_header(hdr, NET__RPC_TYPE_REQUEST, 4, 1, 0, 1000);
    expect_reject(hdr, 1000, -EMSGSIZE);
    CHECK(strcmp(reject_reason(hdr, 1000), "frame exceeds the maximum frame size") == 0);
    /* max_frame below the header size refuses everything. */
    make_header(hdr, NET__RPC_TYPE_RESPONSE, 0, 1, 0, 0);
    expect_reject(hdr, 23, -EMSGSIZE);
}

TEST(rpc_codec_default_max_frame_is_64mib)
{
    CHECK_EQ(NET__RPC_DEFAULT_MAX_FRAME, 64u * 1024 * 1024);
    uint8_t hdr[NET__RPC_HEADER_LEN];
    uint32_t at_max = (uint32_t)(NET__RPC_DEFAULT_MAX_FRAME - 24 - 3);
    make_header(hdr, NET__RPC_TYPE_REQUEST, 3, 5, 0, at_max);
    net_buf_t in = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&in, hdr, sizeof hdr));
    struct net__rpc_frame f;
    CHECK_EQ(net__rpc_decode(&in, 0, &f, NULL), 0); /* valid, waits for more */
    CHECK_EQ(f.total, NET__RPC_DEFAULT_MAX_FRAME);
    net_buf_destroy(&in);
    make_header(hdr, NET__RPC_TYPE_REQUEST, 3, 5, 0, at_max + 1);
    expect_reject(hdr, 0, -EMSGSIZE);
    expect_reject(hdr, NET__RPC_DEFAULT_MAX_FRAME, -EMSGSIZE);
}

TEST(rpc_codec_frame_exactly_at_max_size_accepted)
{
    size_t max = 24 + 5 + 100;
    unsigned char body[200];
    fill_pattern(body, sizeof body, 5);
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net__rpc_encode_request(&b, 1, "fetch", 5, body, 100));
    CHECK_EQ(net_buf_readable(&b), max);
    struct net__rpc_frame f = decode_one(&b, max);
    CHECK_EQ(f.total, max);
    CHECK_MEM_EQ(f.body, body, 100);
    net_buf_retrieve_all(&b);
    CHECK_OK(net__rpc_encode_response(&b, 1, 0, body, max - 24));
    f = decode_one(&b, max);
    CHECK_EQ(f.total, max);
    net_buf_destroy(&b);
}

TEST(rpc_codec_frame_one_byte_over_max_rejected)
{
    size_t max = 24 + 5 + 100;
    unsigned char body[200];
    fill_pattern(body, sizeof body, 5);
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net__rpc_encode_request(&b, 1, "fetch", 5, body, 101));
    struct net__rpc_frame f;
    const char *reason = NULL;
    CHECK_EQ(net__rpc_decode(&b, max, &f, &reason), -EMSGSIZE);
    CHECK(reason != NULL);
    CHECK_EQ(net__rpc_frame_size(&f.hdr), max + 1); /* raw fields for the log */
    net_buf_retrieve_all(&b);
    CHECK_OK(net__rpc_encode_response(&b, 1, 0, body, max - 24 + 1));
    CHECK_EQ(net__rpc_decode(&b, max, &f, &reason), -EMSGSIZE);
    net_buf_destroy(&b);
}

/* 24 + 255 + 0xFFFFFFFF wraps a 32-bit size; sums must be done in 64 bits. */
TEST(rpc_codec_body_len_overflow_attempts_rejected)
{
    static const uint32_t bodies[] = {
        UINT32_MAX, UINT32_MAX - 23, UINT32_MAX - 24 - 255 + 1, 0x80000000u,
    };
    uint8_t hdr[NET__RPC_HEADER_LEN];
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        make_header(hdr, NET__RPC_TYPE_REQUEST, 255, 1, 0, bodies[i]);
        expect_reject(hdr, 1024, -EMSGSIZE);
        expect_reject(hdr, 0, -EMSGSIZE);
        make_header(hdr, NET__RPC_TYPE_RESPONSE, 0, 1, 0, bodies[i]);
        expect_reject(hdr, 1024, -EMSGSIZE);
    }
    /* With no practical limit the largest frame is valid: the decoder waits
     * for it without allocating anything. */
    make_header(hdr, NET__RPC_TYPE_REQUEST, 255, 1, 0, UINT32_MAX);
    net_buf_t in = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&in, hdr, sizeof hdr));
    size_t cap = net_buf_capacity(&in);
    struct net__rpc_frame f;
    CHECK_EQ(net__rpc_decode(&in, SIZE_MAX, &f, NULL), 0);
    CHECK(f.total == 24ull + 255 + UINT32_MAX);
    CHECK_EQ(net_buf_capacity(&in), cap);
    net_buf_destroy(&in);
}

/* Each violation is reported when the byte that reveals it arrives, never
 * earlier or later, whatever the split. */
TEST(rpc_codec_header_errors_detected_at_the_revealing_byte)
{
    struct {
        uint8_t type;
        uint16_t method_len;
        uint32_t status, body_len;
        size_t max;
        int bad_byte; /* -1: use the fields; else offset to corrupt */
        size_t revealed_at; /* bytes needed to see the error */
        int err;
    } cases[] = {
        { 1, 4, 0, 0, 0, 2, 3, -EPROTO },                 /* magic[2] */
        { 1, 4, 0, 0, 0, 4, 5, -EPROTO },                 /* version */
        { 9, 4, 0, 0, 0, -1, 6, -EPROTO },                /* type */
        { 1, 0, 0, 0, 0, -1, 8, -EPROTO },                /* method_len 0 */
        { 2, 1, 0, 0, 0, -1, 8, -EPROTO },                /* response method */
        { 1, 4, 7, 0, 0, -1, 20, -EPROTO },               /* request status */
        { 2, 0, NET__RPC_TIMEOUT, 0, 0, -1, 20, -EPROTO }, /* local status */
        { 1, 4, 0, 100, 127, -1, 24, -EMSGSIZE },         /* size */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint8_t hdr[NET__RPC_HEADER_LEN];
        make_header(hdr, cases[c].type, cases[c].method_len, 77, cases[c].status,
                    cases[c].body_len);
        if (cases[c].bad_byte >= 0)
            hdr[cases[c].bad_byte] ^= 0xFF;
        net_buf_t in = NET_BUF_INIT;
        for (size_t n = 1; n <= NET__RPC_HEADER_LEN; n++) {
            CHECK_OK(net_buf_append(&in, hdr + n - 1, 1));
            struct net__rpc_frame f;
            const char *reason = NULL;
            int rc = net__rpc_decode(&in, cases[c].max, &f, &reason);
            if (n < cases[c].revealed_at) {
                CHECK_EQ(rc, 0);
                continue;
            }
            CHECK_EQ(rc, cases[c].err);
            CHECK(reason != NULL);
            break;
        }
        net_buf_destroy(&in);
    }
}

/* ---- Streaming ---------------------------------------------------------------- */

/* Three frames of different kinds, encoded back to back into *src. */
static void encode_sample_stream(net_buf_t *src, size_t ends[3])
{
    CHECK_OK(net__rpc_encode_request(src, 1, "echo", 4, "hello", 5));
    ends[0] = net_buf_readable(src);
    CHECK_OK(net__rpc_encode_response(src, 1, NET__RPC_OK, NULL, 0));
    ends[1] = net_buf_readable(src);
    CHECK_OK(net__rpc_encode_response(src, 2, NET__RPC_OVERLOADED, "busy", 4));
    ends[2] = net_buf_readable(src);
}

TEST(rpc_codec_decode_frames_delivered_one_byte_at_a_time)
{
    net_buf_t src = NET_BUF_INIT, in = NET_BUF_INIT;
    size_t ends[3];
    encode_sample_stream(&src, ends);
    const char *p = net_buf_peek(&src);
    size_t consumed = 0;
    int next = 0;
    for (size_t fed = 1; fed <= ends[2]; fed++) {
        CHECK_OK(net_buf_append(&in, p + fed - 1, 1));
        struct net__rpc_frame f;
        const char *reason = NULL;
        int rc = net__rpc_decode(&in, 0, &f, &reason);
        if (fed < ends[next]) {
            CHECK_EQ(rc, 0);
            size_t header_end = consumed + NET__RPC_HEADER_LEN;
            CHECK_EQ(f.total, fed < header_end ? 0 : ends[next] - consumed);
            continue;
        }
        CHECK_EQ(rc, 1);
        check_frame_invariants(&in, NET__RPC_DEFAULT_MAX_FRAME, &f);
        CHECK_EQ(f.total, ends[next] - consumed);
        CHECK_MEM_EQ(net_buf_peek(&in), p + consumed, f.total);
        CHECK_OK(net_buf_retrieve(&in, f.total));
        CHECK_EQ(net__rpc_decode(&in, 0, &f, &reason), 0);
        consumed = ends[next++];
    }
    CHECK_EQ(next, 3);
    CHECK_EQ(net_buf_readable(&in), 0);
    net_buf_destroy(&src);
    net_buf_destroy(&in);
}

TEST(rpc_codec_decode_many_frames_in_one_buffer)
{
    enum { N = 1000 };
    net_buf_t b = NET_BUF_INIT;
    char body[64];
    for (uint64_t i = 0; i < N; i++) {
        int len = snprintf(body, sizeof body, "call %" PRIu64, i);
        if (i % 2 == 0)
            CHECK_OK(net__rpc_encode_request(&b, i, "m", 1, body, (size_t)len));
        else
            CHECK_OK(net__rpc_encode_response(&b, i, (uint32_t)(i % 6), body, (size_t)len));
    }
    for (uint64_t i = 0; i < N; i++) {
        struct net__rpc_frame f = decode_one(&b, 0);
        int len = snprintf(body, sizeof body, "call %" PRIu64, i);
        CHECK_EQ(f.hdr.call_id, i);
        CHECK_EQ(f.hdr.type, i % 2 == 0 ? NET__RPC_TYPE_REQUEST : NET__RPC_TYPE_RESPONSE);
        CHECK_EQ(f.hdr.body_len, len);
        CHECK_MEM_EQ(f.body, body, (size_t)len);
        CHECK_OK(net_buf_retrieve(&b, f.total));
    }
    struct net__rpc_frame f;
    CHECK_EQ(net__rpc_decode(&b, 0, &f, NULL), 0);
    CHECK_EQ(f.total, 0);
    net_buf_destroy(&b);
}

/* A valid frame followed by garbage: the frame is delivered, then the error. */
TEST(rpc_codec_decode_valid_frame_then_garbage)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net__rpc_encode_request(&b, 3, "echo", 4, "x", 1));
    CHECK_OK(net_buf_append(&b, "HTTP/1.1 200 OK\r\n", 17));
    struct net__rpc_frame f = decode_one(&b, 0);
    CHECK_OK(net_buf_retrieve(&b, f.total));
    const char *reason = NULL;
    CHECK_EQ(net__rpc_decode(&b, 0, &f, &reason), -EPROTO);
    CHECK(strcmp(reason, "bad magic") == 0);
    net_buf_destroy(&b);
}

/* ---- Random input ---------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64*: tiny, deterministic, good enough to pick test inputs. */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

static uint32_t rng_below(uint64_t *s, uint32_t n)
{
    return (uint32_t)(rng_next(s) >> 32) % n;
}

/* What decoding a stream produced: the frames, concatenated, and how it ended. */
struct decode_log {
    net_buf_t frames;
    size_t count;
    int end_rc; /* 0: waiting for more; < 0: the error */
    const char *reason;
};

/* Decodes whatever is complete at the front of in, consuming each frame.
 * Returns the last result (0 or negative). */
static int drain(net_buf_t *in, size_t max, struct decode_log *log)
{
    for (;;) {
        struct net__rpc_frame f;
        const char *reason = NULL;
        int rc = net__rpc_decode(in, max, &f, &reason);
        CHECK(rc == 1 || rc == 0 || rc == -EPROTO || rc == -EMSGSIZE);
        if (rc < 0) {
            CHECK(reason != NULL && reason[0] != '\0');
            log->end_rc = rc;
            log->reason = reason;
            return rc;
        }
        CHECK(reason == NULL);
        if (rc == 0) {
            CHECK(f.method == NULL && f.body == NULL);
            CHECK(f.total == 0 || f.total > net_buf_readable(in));
            CHECK(f.total <= max);
            log->end_rc = 0;
            return 0;
        }
        check_frame_invariants(in, max, &f);
        CHECK_OK(net_buf_append(&log->frames, net_buf_peek(in), f.total));
        log->count++;
        CHECK_OK(net_buf_retrieve(in, f.total));
    }
}

/* Feeds `len` bytes to a fresh buffer in random chunks, draining after each
 * chunk, and stops at the first error as a connection would. */
static void decode_in_chunks(const uint8_t *data, size_t len, size_t max,
                             uint64_t *rng, struct decode_log *log)
{
    net_buf_t in = NET_BUF_INIT;
    size_t off = 0;
    while (off < len) {
        size_t n = 1 + rng_below(rng, 40);
        if (n > len - off)
            n = len - off;
        CHECK_OK(net_buf_append(&in, data + off, n));
        off += n;
        if (drain(&in, max, log) < 0)
            break;
    }
    if (len == 0)
        drain(&in, max, log);
    net_buf_destroy(&in);
}

/* Random bytes, mostly behind a plausible header so the deeper checks run. */
static size_t random_input(uint64_t *rng, uint8_t *out, size_t cap)
{
    size_t len = rng_below(rng, (uint32_t)cap + 1);
    for (size_t i = 0; i < len; i++)
        out[i] = (uint8_t)rng_next(rng);
    uint32_t shape = rng_below(rng, 4);
    if (shape >= 1 && len >= 4)
        memcpy(out, NET__RPC_MAGIC, 4);
    if (shape >= 2 && len >= 8) {
        out[4] = 1;
        out[5] = (uint8_t)(1 + rng_below(rng, 2));
        out[6] = 0;
        out[7] = out[5] == 1 ? (uint8_t)rng_below(rng, 8) : 0;
    }
    if (shape >= 3 && len >= 24) {
        memset(out + 16, 0, 7); /* status 0, small body_len */
        out[23] = (uint8_t)rng_below(rng, 16);
    }
    return len;
}

/* Bounded by an iteration count (fixed seed: reproducible) and, on a slow
 * sanitizer build, by about one second. */
TEST(rpc_codec_decode_random_bytes_fuzz)
{
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    uint8_t data[160];
    uint64_t deadline = net_test_now_ms() + 1000;
    long frames = 0, errors = 0;
    int iter;
    for (iter = 0; iter < 200000 && net_test_now_ms() < deadline; iter++) {
        size_t len = random_input(&rng, data, sizeof data);
        size_t max = rng_below(&rng, 2) ? 64 : NET__RPC_DEFAULT_MAX_FRAME;
        struct decode_log log = { NET_BUF_INIT, 0, 0, NULL };
        decode_in_chunks(data, len, max, &rng, &log);
        frames += (long)log.count;
        errors += log.end_rc < 0;
        net_buf_destroy(&log.frames);
    }
    printf("%d inputs, %ld frames, %ld protocol errors\n", iter, frames, errors);
    /* The generator must reach both outcomes, or the test proves little. */
    CHECK(frames > 0);
    CHECK(errors > 0);
}

/* Appends 1..6 random valid frames to out. */
static void random_valid_stream(uint64_t *rng, net_buf_t *out)
{
    uint8_t bytes[300];
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (uint8_t)rng_next(rng);
    uint32_t n = 1 + rng_below(rng, 6);
    for (uint32_t i = 0; i < n; i++) {
        size_t body_len = rng_below(rng, 40);
        if (rng_below(rng, 2))
            CHECK_OK(net__rpc_encode_request(out, rng_next(rng), (const char *)bytes,
                                             1 + rng_below(rng, 20), bytes + 40, body_len));
        else
            CHECK_OK(net__rpc_encode_response(out, rng_next(rng), rng_below(rng, 200),
                                              bytes + 40, body_len));
    }
}

/* Valid streams with a few corrupted bytes, decoded whole and in random
 * chunks: both must give the same frames and end the same way, and an
 * uncorrupted stream must come back exactly as it was encoded. */
TEST(rpc_codec_decode_corrupted_streams_split_independent)
{
    uint64_t rng = 0xD1B54A32D192ED03ull;
    uint64_t deadline = net_test_now_ms() + 1000;
    long clean = 0, errors = 0;
    int iter;
    for (iter = 0; iter < 50000 && net_test_now_ms() < deadline; iter++) {
        net_buf_t stream = NET_BUF_INIT;
        random_valid_stream(&rng, &stream);
        size_t len = net_buf_readable(&stream);
        uint8_t *data = (uint8_t *)net_buf_peek(&stream);
        uint32_t flips = rng_below(&rng, 4);
        for (uint32_t i = 0; i < flips; i++)
            data[rng_below(&rng, (uint32_t)len)] ^= (uint8_t)(1u << rng_below(&rng, 8));
        size_t max = rng_below(&rng, 2) ? 24 + 20 + 40 : 60;

        struct decode_log whole = { NET_BUF_INIT, 0, 0, NULL };
        struct decode_log split = { NET_BUF_INIT, 0, 0, NULL };
        net_buf_t all = NET_BUF_INIT;
        CHECK_OK(net_buf_append(&all, data, len));
        drain(&all, max, &whole);
        net_buf_destroy(&all);
        decode_in_chunks(data, len, max, &rng, &split);

        CHECK_EQ(whole.count, split.count);
        CHECK_EQ(whole.end_rc, split.end_rc);
        CHECK(whole.reason == split.reason);
        CHECK_EQ(net_buf_readable(&whole.frames), net_buf_readable(&split.frames));
        CHECK_MEM_EQ(net_buf_peek(&whole.frames), net_buf_peek(&split.frames),
                     net_buf_readable(&whole.frames));
        if (flips == 0 && max >= 24 + 20 + 40) {
            CHECK_EQ(whole.end_rc, 0);
            CHECK_EQ(net_buf_readable(&whole.frames), len);
            CHECK_MEM_EQ(net_buf_peek(&whole.frames), data, len);
        }
        clean += whole.end_rc == 0;
        errors += whole.end_rc < 0;
        net_buf_destroy(&whole.frames);
        net_buf_destroy(&split.frames);
        net_buf_destroy(&stream);
    }
    printf("%d streams, %ld decoded clean, %ld ended in an error\n", iter, clean, errors);
    CHECK(clean > 0);
    CHECK(errors > 0);
}

/* ---- Arguments and names ---------------------------------------------------------- */

TEST(rpc_codec_encode_rejects_bad_arguments)
{
    net_buf_t b = NET_BUF_INIT;
    char method[NET__RPC_MAX_METHOD + 1];
    memset(method, 'm', sizeof method);
    CHECK_EQ(net__rpc_encode_request(NULL, 1, "m", 1, NULL, 0), -EINVAL);
    CHECK_EQ(net__rpc_encode_request(&b, 1, NULL, 1, NULL, 0), -EINVAL);
    CHECK_EQ(net__rpc_encode_request(&b, 1, "m", 0, NULL, 0), -EINVAL);
    CHECK_EQ(net__rpc_encode_request(&b, 1, method, 256, NULL, 0), -EINVAL);
    CHECK_EQ(net__rpc_encode_request(&b, 1, method, SIZE_MAX, NULL, 0), -EINVAL);
    CHECK_EQ(net__rpc_encode_request(&b, 1, "m", 1, NULL, 1), -EINVAL);
    CHECK_EQ(net__rpc_encode_request(&b, 1, "m", 1, "x", (size_t)UINT32_MAX + 1), -EINVAL);
    CHECK_EQ(net__rpc_encode_request(&b, 1, "m", 1, "x", SIZE_MAX), -EINVAL);
    CHECK_EQ(net__rpc_encode_response(NULL, 1, 0, NULL, 0), -EINVAL);
    CHECK_EQ(net__rpc_encode_response(&b, 1, 0, NULL, 5), -EINVAL);
    CHECK_EQ(net__rpc_encode_response(&b, 1, 0, "x", (size_t)UINT32_MAX + 1), -EINVAL);
    CHECK_EQ(net__rpc_encode_response(&b, 1, NET__RPC_TIMEOUT, NULL, 0), -EINVAL);
    CHECK_EQ(net__rpc_encode_response(&b, 1, NET__RPC_LOCAL_MIN, NULL, 0), -EINVAL);
    CHECK_EQ(net__rpc_encode_response(&b, 1, UINT32_MAX, NULL, 0), -EINVAL);
    /* A refused frame leaves the buffer untouched. */
    CHECK_EQ(net_buf_readable(&b), 0);
    CHECK_EQ(net_buf_capacity(&b), 0);
    CHECK_OK(net__rpc_encode_request(&b, 1, method, 255, NULL, 0));
    net_buf_destroy(&b);
}

/* Encoding appends after whatever the buffer already holds. */
TEST(rpc_codec_encode_appends_after_existing_bytes)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&b, "prefix", 6));
    CHECK_OK(net__rpc_encode_request(&b, 1, "echo", 4, "hi", 2));
    CHECK_EQ(net_buf_readable(&b), 6 + sizeof doc_request);
    CHECK_MEM_EQ(net_buf_peek(&b), "prefix", 6);
    CHECK_MEM_EQ(net_buf_peek(&b) + 6, doc_request, sizeof doc_request);
    net_buf_destroy(&b);
}

TEST(rpc_codec_decode_rejects_null_arguments)
{
    net_buf_t b = NET_BUF_INIT;
    struct net__rpc_frame f;
    struct net__rpc_header h;
    const char *reason = NULL;
    CHECK_EQ(net__rpc_decode(NULL, 0, &f, &reason), -EINVAL);
    CHECK(reason != NULL);
    CHECK_EQ(net__rpc_decode(&b, 0, NULL, NULL), -EINVAL);
    CHECK_EQ(net__rpc_header_parse(NULL, 0, &h, NULL), -EINVAL);
    CHECK_EQ(net__rpc_header_parse(doc_request, 0, NULL, NULL), -EINVAL);
    CHECK_EQ(net__rpc_header_parse(doc_request, 0, &h, NULL), 0);
}

TEST(rpc_codec_status_names)
{
    CHECK(strcmp(net__rpc_status_name(NET__RPC_OK), "OK") == 0);
    CHECK(strcmp(net__rpc_status_name(NET__RPC_UNKNOWN_METHOD), "UNKNOWN_METHOD") == 0);
    CHECK(strcmp(net__rpc_status_name(NET__RPC_BAD_REQUEST), "BAD_REQUEST") == 0);
    CHECK(strcmp(net__rpc_status_name(NET__RPC_INTERNAL), "INTERNAL") == 0);
    CHECK(strcmp(net__rpc_status_name(NET__RPC_OVERLOADED), "OVERLOADED") == 0);
    CHECK(strcmp(net__rpc_status_name(NET__RPC_SHUTTING_DOWN), "SHUTTING_DOWN") == 0);
    CHECK(strcmp(net__rpc_status_name(6), "RESERVED") == 0);
    CHECK(strcmp(net__rpc_status_name(99), "RESERVED") == 0);
    CHECK(strcmp(net__rpc_status_name(NET__RPC_APP_BASE), "APPLICATION") == 0);
    CHECK(strcmp(net__rpc_status_name(NET__RPC_LOCAL_MIN - 1), "APPLICATION") == 0);
    CHECK(strcmp(net__rpc_status_name(NET__RPC_LOCAL_MIN), "RESERVED") == 0);
    CHECK(strcmp(net__rpc_status_name(NET__RPC_TIMEOUT), "TIMEOUT") == 0);
    CHECK(strcmp(net__rpc_status_name(NET__RPC_DISCONNECTED), "DISCONNECTED") == 0);
    CHECK(strcmp(net__rpc_status_name(NET__RPC_CANCELLED), "CANCELLED") == 0);
    CHECK(strcmp(net__rpc_status_name(NET__RPC_PROTOCOL_ERROR), "PROTOCOL_ERROR") == 0);
    CHECK(strcmp(net__rpc_status_name(UINT32_MAX), "RESERVED") == 0);
}
