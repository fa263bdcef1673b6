/* The RPC server speaking baidu_std (brpc's protocol) next to NRPC/1 on one
 * port, loopback only: raw sockets send frames built with the internal
 * codec, so every byte of the answers is checked, while net_rpc_client
 * speaks NRPC/1 to the same server. Covers sniffing (garbage closes only
 * its connection), malformed frames (each closes only its connection, the
 * requests before answered), brpc's error codes (ENOSERVICE, ENOMETHOD,
 * EREQUEST for compression, error_text on an error reply), attachments
 * both ways, the in-flight limit and a blocking handler. Every wait is
 * bounded; a watchdog fails a scenario that hangs. */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "faults_common.h"
#include "rpc/baidu_codec.h"
#include "rpc/rpc_codec.h"
#include "rpc_fixture.h"

static struct net_test_rpc_server srv;
static struct net_test_held held = NET_TEST_HELD_INIT;

/* Echoes the body and the attachment. */
static void echo_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    size_t alen;
    const void *att = net_rpc_req_attachment(req, &alen);
    CHECK(net_rpc_req_protocol(req) == NET_RPC_BAIDU_STD || alen == 0);
    CHECK_OK(net_rpc_reply_with_attachment(req, NET_RPC_OK, body, len, att, alen));
}

/* Fails with application status 123, its body as the text, and an
 * attachment "A". */
static void fail_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    CHECK_OK(net_rpc_reply_with_attachment(req, 123, body, len, "A", 1));
}

static void hold_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)body, (void)len, (void)arg;
    net_test_hold(&held, req);
}

static void add_methods(net_rpc_server_t *server)
{
    CHECK_OK(net_rpc_server_register(server, "echo", echo_method, NULL, false));
    CHECK_OK(net_rpc_server_register(server, "t.Svc.Echo", echo_method, NULL, false));
    CHECK_OK(net_rpc_server_register(server, "t.Svc.Fail", fail_method, NULL, false));
    CHECK_OK(net_rpc_server_register(server, "t.Svc.Hold", hold_method, NULL, false));
    if (srv.opt.worker_threads)
        CHECK_OK(net_rpc_server_register(server, "t.Svc.Work", echo_method, NULL, true));
}

static void server_up(void)
{
    net_test_rpc_server_up(&srv);
}

static struct net_rpc_server_stats stats(void)
{
    struct net_rpc_server_stats st;
    net_rpc_server_stats(srv.server, &st);
    return st;
}

/* ---- raw baidu_std ---------------------------------------------------------------- */

static void add_call(net_buf_t *out, uint64_t id, const char *service, const char *method,
                     const void *payload, size_t plen, const void *att, size_t alen)
{
    CHECK_OK(net__baidu_encode_request(out, service, strlen(service), method, strlen(method),
                                       id, plen, alen));
    CHECK_OK(net_buf_append(out, payload, plen));
    if (alen)
        CHECK_OK(net_buf_append(out, att, alen));
}

static void send_buf(int fd, net_buf_t *b)
{
    CHECK(net_test_send_all(fd, net_buf_peek(b), net_buf_readable(b)));
    net_buf_destroy(b);
}

struct response {
    uint8_t bytes[1 << 16];
    struct net__baidu_frame f;
};

/* Reads one whole frame, which must be a valid response. */
static void read_response(int fd, struct response *r)
{
    net_test_recv_exact(fd, r->bytes, NET__BAIDU_HEADER_LEN);
    size_t need = 0;
    CHECK_EQ(net__baidu_decode(r->bytes, NET__BAIDU_HEADER_LEN, 0, &r->f, &need), 0);
    CHECK(need <= sizeof r->bytes);
    net_test_recv_exact(fd, r->bytes + NET__BAIDU_HEADER_LEN, need - NET__BAIDU_HEADER_LEN);
    CHECK_EQ(net__baidu_decode(r->bytes, need, 0, &r->f, &need), 1);
    CHECK(r->f.meta.has_response);
}

/* The next response is for id with this error code, payload (or error
 * text when code != 0) and attachment. */
static void expect(int fd, uint64_t id, int32_t code, const char *body, size_t blen,
                   const char *att, size_t alen)
{
    static struct response r;
    read_response(fd, &r);
    CHECK_EQ(r.f.meta.correlation_id, id);
    CHECK_EQ(r.f.meta.error_code, code);
    if (code) {
        CHECK_EQ(r.f.payload_len, 0);
        CHECK_EQ(r.f.meta.error_text_len, blen);
        CHECK_MEM_EQ(r.f.meta.error_text, body, blen);
    } else {
        CHECK_EQ(r.f.payload_len, blen);
        CHECK_MEM_EQ(r.f.payload, body, blen);
    }
    CHECK_EQ(r.f.attachment_len, alen);
    if (alen) /* att may be NULL: memcmp's arguments are nonnull */
        CHECK_MEM_EQ(r.f.attachment, att, alen);
}

/* An error response for id whose text contains `part`. */
static void expect_error(int fd, uint64_t id, int32_t code, const char *part)
{
    static struct response r;
    read_response(fd, &r);
    CHECK_EQ(r.f.meta.correlation_id, id);
    CHECK_EQ(r.f.meta.error_code, code);
    char text[512];
    size_t n = r.f.meta.error_text_len < sizeof text - 1 ? r.f.meta.error_text_len
                                                         : sizeof text - 1;
    memcpy(text, r.f.meta.error_text, n);
    text[n] = '\0';
    if (!strstr(text, part))
        net_test_fail(__FILE__, __LINE__, "error text \"%s\" lacks \"%s\"", text, part);
}

static void expect_eof(int fd)
{
    char c;
    ssize_t n = recv(fd, &c, 1, 0);
    if (n != 0)
        net_test_fail(__FILE__, __LINE__, "expected EOF, got %zd (%s)", n,
                      n < 0 ? strerror(errno) : "a byte");
}

/* A fresh connection still gets an echo right. */
static void still_serving(void)
{
    int fd = net_test_connect(&srv.addr, 0);
    net_buf_t out = NET_BUF_INIT;
    add_call(&out, 77, "t.Svc", "Echo", "ok", 2, "att", 3);
    send_buf(fd, &out);
    expect(fd, 77, 0, "ok", 2, "att", 3);
    close(fd);
}

/* ---- scenarios ---------------------------------------------------------------------- */

struct nrpc_caller {
    struct net_test_rpc_client c;
    atomic_int ok;
};

static void nrpc_calls(void *arg)
{
    struct nrpc_caller *k = arg;
    for (int i = 0; i < 200; i++) {
        char body[32];
        int n = snprintf(body, sizeof body, "nrpc %d", i);
        uint32_t status;
        void *got = NULL;
        size_t len = 0;
        CHECK_OK(net_rpc_call_sync(k->c.rpc, "echo", body, (size_t)n, 5000, &status, &got,
                                   &len));
        CHECK_EQ(status, NET_RPC_OK);
        CHECK_EQ(len, (size_t)n);
        CHECK_MEM_EQ(got, body, len);
        free(got);
        atomic_fetch_add(&k->ok, 1);
    }
}

TEST(rpc_baidu_and_nrpc_on_one_port)
{
    net_test_watchdog_start();
    net_test_rpc_server_init(&srv, add_methods);
    srv.opt.server.io_threads = 2;
    server_up();
    struct nrpc_caller k = {.ok = 0};
    net_test_rpc_client_init(&k.c);
    net_test_rpc_client_up(&k.c, &srv.addr);
    struct net_test_job job;
    net_test_job_start(&job, nrpc_calls, &k);

    int fds[3];
    for (int c = 0; c < 3; c++)
        fds[c] = net_test_connect(&srv.addr, 0);
    for (int round = 0; round < 50; round++) {
        for (int c = 0; c < 3; c++) {
            net_buf_t out = NET_BUF_INIT;
            char p[32], a[32];
            int pl = snprintf(p, sizeof p, "payload %d/%d", c, round);
            memcpy(a, "att\x01\x00", 5); /* bytes a string would stop at */
            int al = 5 + snprintf(a + 5, sizeof a - 5, "%d", round);
            for (uint64_t i = 0; i < 4; i++) /* pipelined: one read, one batch */
                add_call(&out, (uint64_t)round * 4 + i, "t.Svc", "Echo", p, (size_t)pl, a,
                         (size_t)al);
            send_buf(fds[c], &out);
            for (uint64_t i = 0; i < 4; i++)
                expect(fds[c], (uint64_t)round * 4 + i, 0, p, (size_t)pl, a, (size_t)al);
        }
    }
    for (int c = 0; c < 3; c++)
        close(fds[c]);
    net_test_job_join(&job);
    CHECK_EQ(atomic_load(&k.ok), 200);
    net_test_rpc_client_down(&k.c);
    CHECK_EQ(stats().protocol_errors, 0);
    net_test_rpc_server_down(&srv, 1000);
}

/* Bytes that start neither "NRPC" nor "PRPC", also split so that the
 * decision waits for the fourth byte. */
TEST(rpc_baidu_garbage_closes_only_its_connection)
{
    net_test_watchdog_start();
    net_test_rpc_server_init(&srv, add_methods);
    server_up();
    int keep = net_test_connect(&srv.addr, 0);
    static const char *const garbage[] = {"GET / HTTP/1.1\r\n\r\n", "NRPX....", "PRPX...."};
    for (size_t i = 0; i < 3; i++) {
        int fd = net_test_connect(&srv.addr, 0);
        CHECK(net_test_send_all(fd, garbage[i], 3)); /* a prefix of a magic, or not */
        net_test_sleep_ms(20);
        CHECK(net_test_send_all(fd, garbage[i] + 3, strlen(garbage[i]) - 3));
        expect_eof(fd);
        close(fd);
    }
    WAIT_UNTIL(stats().protocol_errors == 3);
    net_buf_t out = NET_BUF_INIT;
    add_call(&out, 5, "t.Svc", "Echo", "x", 1, NULL, 0);
    send_buf(keep, &out);
    expect(keep, 5, 0, "x", 1, NULL, 0);
    close(keep);
    net_test_rpc_server_down(&srv, 1000);
}

/* A header (12 bytes) and a meta written by hand. */
static void add_raw(net_buf_t *out, const char *magic, uint32_t body, uint32_t meta,
                    const void *bytes, size_t n)
{
    uint8_t h[12];
    memcpy(h, magic, 4);
    for (int i = 0; i < 4; i++) {
        h[4 + i] = (uint8_t)(body >> (24 - 8 * i));
        h[8 + i] = (uint8_t)(meta >> (24 - 8 * i));
    }
    CHECK_OK(net_buf_append(out, h, sizeof h));
    CHECK_OK(net_buf_append(out, bytes, n));
}

/* Each bad frame comes after a good one on its own connection: the good
 * one is answered, then the connection ends; the server keeps serving. */
TEST(rpc_baidu_malformed_frames_close_only_their_connection)
{
    net_test_watchdog_start();
    net_test_rpc_server_init(&srv, add_methods);
    srv.opt.max_frame = 4096;
    server_up();
    /* A meta whose request submessage ends inside a varint. */
    static const uint8_t trunc_varint[] = {0x0a, 0x03, 0x1a, 0xff, 0xff};
    /* A meta of request {service "t.Svc", method "Echo"}, attachment_size 9,
     * in a body of meta only. */
    static const uint8_t big_att[] = {0x0a, 0x0d, 0x0a, 0x05, 't', '.', 'S', 'v', 'c', 0x12,
                                      0x04, 'E', 'c', 'h', 'o', 0x28, 0x09};
    int cases = 0;
    for (int c = 0; c < 6; c++, cases++) {
        int fd = net_test_connect(&srv.addr, 0);
        net_buf_t out = NET_BUF_INIT;
        add_call(&out, 1, "t.Svc", "Echo", "good", 4, "g", 1);
        if (c == 0)
            add_raw(&out, "PRPQ", 0, 0, NULL, 0); /* bad magic after a good frame */
        else if (c == 1)
            add_raw(&out, "PRPC", 4, 8, "abcd", 4); /* meta_size > body_size */
        else if (c == 2)
            add_raw(&out, "PRPC", sizeof big_att, sizeof big_att, big_att, sizeof big_att);
        else if (c == 3)
            add_raw(&out, "PRPC", sizeof trunc_varint, sizeof trunc_varint, trunc_varint,
                    sizeof trunc_varint);
        else if (c == 4) /* a response sent to the server */
            CHECK_OK(net__baidu_encode_response(&out, 2, 0, NULL, 0, 0, 0));
        else /* over max_frame: the header alone, the body never sent */
            add_raw(&out, "PRPC", 1u << 20, 10, NULL, 0);
        send_buf(fd, &out);
        expect(fd, 1, 0, "good", 4, "g", 1);
        expect_eof(fd);
        close(fd);
        WAIT_UNTIL(stats().protocol_errors == (uint64_t)cases + 1);
        still_serving();
    }
    net_test_rpc_server_down(&srv, 1000);
}

/* A frame under max_frame but over the server's memory budget is refused
 * on its 12-byte header, as NRPC's: the frame before it is answered, the
 * connection ends without the server waiting for (or buffering) the body. */
TEST(rpc_baidu_frame_over_budget_refused_on_header)
{
    net_test_watchdog_start();
    net_test_rpc_server_init(&srv, add_methods);
    srv.opt.max_frame = 4u << 20;
    srv.opt.server.memory_budget = 2u << 20;
    server_up();
    int fd = net_test_connect(&srv.addr, 0);
    net_buf_t out = NET_BUF_INIT;
    add_call(&out, 1, "t.Svc", "Echo", "good", 4, "g", 1);
    add_raw(&out, "PRPC", 3u << 20, 10, NULL, 0); /* 3 MiB: the header alone */
    send_buf(fd, &out);
    expect(fd, 1, 0, "good", 4, "g", 1);
    expect_eof(fd);
    close(fd);
    WAIT_UNTIL(stats().protocol_errors == 1);
    still_serving();
    net_test_rpc_server_down(&srv, 1000);
}

/* A t.Svc.Echo call with `extra` (n bytes of meta fields) appended to its
 * meta. */
static void add_call_with_meta(net_buf_t *out, uint64_t id, const uint8_t *extra, size_t n)
{
    net_buf_t one = NET_BUF_INIT;
    add_call(&one, id, "t.Svc", "Echo", "p", 1, NULL, 0);
    const uint8_t *b = (const uint8_t *)net_buf_peek(&one);
    size_t len = net_buf_readable(&one), meta = b[11]; /* meta_size < 256 here */
    uint8_t frame[128];
    CHECK(len + n <= sizeof frame && b[7] + n < 256 && meta + n < 256);
    memcpy(frame, b, 12 + meta);
    memcpy(frame + 12 + meta, extra, n);
    memcpy(frame + 12 + meta + n, b + 12 + meta, len - 12 - meta);
    frame[7] = (uint8_t)(frame[7] + n), frame[11] = (uint8_t)(frame[11] + n);
    CHECK_OK(net_buf_append(out, frame, len + n));
    net_buf_destroy(&one);
}

TEST(rpc_baidu_error_answers_keep_serving)
{
    net_test_watchdog_start();
    net_test_rpc_server_init(&srv, add_methods);
    server_up();
    int fd = net_test_connect(&srv.addr, 0);
    net_buf_t out = NET_BUF_INIT;
    add_call(&out, 1, "no.Such", "Echo", "p", 1, NULL, 0);
    add_call(&out, 2, "t.Svc", "Nope", "p", 1, NULL, 0);
    static const uint8_t snappy[] = {0x18, 0x01};       /* compress_type 1 */
    static const uint8_t json[] = {0x50, 0x01};         /* content_type 1 */
    add_call_with_meta(&out, 3, snappy, sizeof snappy);
    add_call_with_meta(&out, 6, json, sizeof json);
    add_call(&out, 4, "t.Svc", "Fail", "it failed", 9, "ignored", 7);
    add_call(&out, 5, "t.Svc", "Echo", "fine", 4, "\0\1\2\3", 4);
    send_buf(fd, &out);
    expect_error(fd, 1, NET__BAIDU_ENOSERVICE, "no.Such");
    expect_error(fd, 2, NET__BAIDU_ENOMETHOD, "Nope");
    expect_error(fd, 3, NET__BAIDU_EREQUEST, "compress_type 1");
    expect_error(fd, 6, NET__BAIDU_EREQUEST, "not supported");
    expect(fd, 4, 123, "it failed", 9, "A", 1);
    expect(fd, 5, 0, "fine", 4, "\0\1\2\3", 4);
    close(fd);
    CHECK_EQ(stats().protocol_errors, 0);
    net_test_rpc_server_down(&srv, 1000);
}

/* Request checksums as brpc's clients send them (-enable_checksum): a
 * right CRC32C is served, a wrong one or a type netloop cannot verify is
 * refused with EREQUEST, as brpc's server refuses one, and the connection
 * serves on. 0xb13b32a2 is brpc's masked CRC-32C of the payload "p"
 * (computed outside lib/). */
TEST(rpc_baidu_request_checksums_verified)
{
    net_test_watchdog_start();
    net_test_rpc_server_init(&srv, add_methods);
    server_up();
    int fd = net_test_connect(&srv.addr, 0);
    net_buf_t out = NET_BUF_INIT;
    uint8_t sum[] = {0x58, 1, 0x62, 4, 0xb1, 0x3b, 0x32, 0xa2};
    add_call_with_meta(&out, 1, sum, sizeof sum);
    sum[7] ^= 0x80;
    add_call_with_meta(&out, 2, sum, sizeof sum);
    sum[1] = 2;
    add_call_with_meta(&out, 3, sum, sizeof sum);
    static const uint8_t none[] = {0x58, 0, 0x62, 0}; /* what brpc sends without */
    add_call_with_meta(&out, 4, none, sizeof none);
    send_buf(fd, &out);
    expect(fd, 1, 0, "p", 1, NULL, 0);
    expect_error(fd, 2, NET__BAIDU_EREQUEST, "request checksum (crc32c) does not match");
    expect_error(fd, 3, NET__BAIDU_EREQUEST, "checksum_type 2 is not supported");
    expect(fd, 4, 0, "p", 1, NULL, 0);
    close(fd);
    CHECK_EQ(stats().protocol_errors, 0);
    still_serving();
    net_test_rpc_server_down(&srv, 1000);
}

/* A large attachment comes back byte for byte, through a blocking handler
 * (its copy) and a loop one; the in-flight limit holds baidu requests. */
TEST(rpc_baidu_attachment_blocking_and_in_flight_limit)
{
    net_test_watchdog_start();
    net_test_rpc_server_init(&srv, add_methods);
    srv.opt.worker_threads = 2;
    srv.opt.max_in_flight = 3;
    server_up();
    int fd = net_test_connect(&srv.addr, 0);
    static char att[40000];
    stream_fill(att, 7, sizeof att);
    net_buf_t out = NET_BUF_INIT;
    add_call(&out, 1, "t.Svc", "Work", "w", 1, att, sizeof att);
    add_call(&out, 2, "t.Svc", "Echo", "e", 1, att, sizeof att);
    send_buf(fd, &out);
    static struct response r;
    for (uint64_t want = 0; want < 2; want++) { /* the worker's may come second */
        read_response(fd, &r);
        CHECK(r.f.meta.correlation_id == 1 || r.f.meta.correlation_id == 2);
        CHECK_EQ(r.f.meta.error_code, 0);
        CHECK_EQ(r.f.attachment_len, sizeof att);
        CHECK(stream_matches((const char *)r.f.attachment, 7, sizeof att));
    }
    for (uint64_t i = 0; i < 6; i++)
        add_call(&out, 10 + i, "t.Svc", "Hold", "h", 1, NULL, 0);
    send_buf(fd, &out);
    WAIT_UNTIL(atomic_load(&held.total) == 3);
    net_test_sleep_ms(50);
    CHECK_EQ(atomic_load(&held.total), 3); /* paused, not refused */
    CHECK_EQ(stats().in_flight, 3);
    CHECK_EQ(stats().paused, 1);
    WAIT_UNTIL((net_test_held_release(&held, NET_RPC_OK, "r"), atomic_load(&held.total) == 6 &&
                held.n == 0));
    net_test_held_release(&held, NET_RPC_OK, "r");
    for (int i = 0; i < 6; i++) {
        read_response(fd, &r);
        CHECK(r.f.meta.correlation_id >= 10 && r.f.meta.correlation_id < 16);
        CHECK_EQ(r.f.payload_len, 1);
    }
    close(fd);
    net_test_rpc_server_down(&srv, 1000);
}
