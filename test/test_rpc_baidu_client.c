/* net_rpc_client speaking baidu_std (opt.protocol = NET_RPC_BAIDU_STD)
 * against a fake brpc server built here from net_server and the codec:
 * pipelining from several threads with replies out of order, brpc's error
 * codes mapped to statuses, attachments both ways, malformed and oversize
 * responses, timeouts and late replies, and the argument checks.
 *
 * The fake server serves service "test.S" on its own loop thread; its
 * methods: Echo (payload and attachment back), Err (the payload is a
 * decimal error_code, answered with the text "text CODE"), Hold (kept
 * until the scenario releases it, then echoed; with hold_batch set, held
 * ones are answered in reverse order as soon as hold_batch of them are
 * held) and Bad (the payload names a malformed response to send). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <net/loop_thread.h>
#include <net/tcp_server.h>

#include "rpc/baidu_codec.h"
#include "rpc_fixture.h"

#define MAX_HELD 4096

struct held {
    net_conn_t *conn; /* a reference */
    uint64_t id;
    size_t body_len, att_len;
    char *data; /* body then attachment */
};

static struct {
    net_loop_thread_t *thread;
    net_loop_t *loop;
    net_server_t *server;
    net_addr_t addr;
    atomic_int ups, requests, held_now;
    atomic_int closed;
    int hold_batch; /* set before the calls; 0: hold until released */
    /* Server loop only. */
    struct held held[MAX_HELD];
    int n_held;
} F;

static struct net_test_rpc_client C;

/* ---- the fake server (its loop thread) --------------------------------------------- */

static void respond(net_conn_t *conn, uint64_t id, int32_t code, const char *text,
                    const void *body, size_t body_len, const void *att, size_t att_len)
{
    net_buf_t out = NET_BUF_INIT;
    CHECK_OK(net__baidu_encode_response(&out, id, code, text, text ? strlen(text) : 0, body_len,
                                        att_len));
    if (body_len)
        CHECK_OK(net_buf_append(&out, body, body_len));
    if (att_len)
        CHECK_OK(net_buf_append(&out, att, att_len));
    (void)net_conn_send_buf(conn, &out); /* the connection may be going: dropped */
    net_buf_destroy(&out);
}

static void answer_held(struct held *h)
{
    respond(h->conn, h->id, 0, NULL, h->data, h->body_len, h->data + h->body_len, h->att_len);
    net_conn_unref(h->conn);
    free(h->data);
    atomic_fetch_sub(&F.held_now, 1);
}

/* Newest first: the client must match by correlation_id, not by order. */
static void release_all(void *arg)
{
    (void)arg;
    while (F.n_held > 0)
        answer_held(&F.held[--F.n_held]);
}

static void hold(net_conn_t *conn, const struct net__baidu_frame *f)
{
    CHECK(F.n_held < MAX_HELD);
    struct held *h = &F.held[F.n_held++];
    *h = (struct held){.conn = net_conn_ref(conn), .id = f->meta.correlation_id,
                       .body_len = f->payload_len, .att_len = f->attachment_len,
                       .data = malloc(f->payload_len + f->attachment_len + 1)};
    CHECK(h->data != NULL);
    memcpy(h->data, f->payload, f->payload_len);
    if (f->attachment_len)
        memcpy(h->data + f->payload_len, f->attachment, f->attachment_len);
    atomic_fetch_add(&F.held_now, 1);
    if (F.hold_batch && F.n_held >= F.hold_batch)
        release_all(NULL);
}

static void send_bytes(net_conn_t *conn, const void *p, size_t n)
{
    (void)net_conn_send(conn, p, n);
}

/* The malformed responses the client must refuse. */
static void bad(net_conn_t *conn, const struct net__baidu_frame *f)
{
    const char *what = (const char *)f->payload;
    size_t n = f->payload_len;
    if (n == 5 && memcmp(what, "magic", 5) == 0) {
        send_bytes(conn, "PRPX\0\0\0\0\0\0\0\0", 12);
    } else if (n == 7 && memcmp(what, "request", 7) == 0) {
        net_buf_t out = NET_BUF_INIT;
        CHECK_OK(net__baidu_encode_request(&out, "a", 1, "b", 1, f->meta.correlation_id, 0, 0));
        send_bytes(conn, net_buf_peek(&out), net_buf_readable(&out));
        net_buf_destroy(&out);
    } else if (n == 6 && memcmp(what, "varint", 6) == 0) {
        /* meta: correlation_id (field 3, varint) whose varint never ends */
        static const uint8_t frame[] = {'P', 'R', 'P', 'C', 0, 0, 0, 2, 0, 0, 0, 2, 0x18, 0x80};
        send_bytes(conn, frame, sizeof frame);
    } else if (n == 3 && memcmp(what, "big", 3) == 0) {
        /* Only the header, announcing 1 MiB: refused before any body. */
        static const uint8_t frame[] = {'P', 'R', 'P', 'C', 0, 0x10, 0, 0, 0, 0, 0, 4};
        send_bytes(conn, frame, sizeof frame);
    } else {
        CHECK(!"unknown Bad kind");
    }
}

static bool method_is(const struct net__baidu_frame *f, const char *m)
{
    return f->meta.method_len == strlen(m) && memcmp(f->meta.method, m, strlen(m)) == 0;
}

static void error_reply(net_conn_t *conn, const struct net__baidu_frame *f)
{
    char num[32], text[64];
    CHECK(f->payload_len > 0 && f->payload_len < sizeof num);
    memcpy(num, f->payload, f->payload_len);
    num[f->payload_len] = '\0';
    snprintf(text, sizeof text, "text %s", num);
    respond(conn, f->meta.correlation_id, (int32_t)strtol(num, NULL, 10), text, NULL, 0, NULL,
            0);
}

/* A response with payload "zz" and the meta fields extra[0..n) after its
 * empty response {}, by hand: for what the encoder never writes. */
static void raw_reply(net_conn_t *conn, uint64_t id, const uint8_t *extra, size_t n)
{
    uint8_t frame[64] = {'P', 'R', 'P', 'C'};
    uint8_t *m = frame + 12, *p = m;
    CHECK(n <= 32);
    *p++ = 0x12; *p++ = 0; /* response {} */
    memcpy(p, extra, n);
    p += n;
    *p++ = 0x20;           /* correlation_id */
    for (uint64_t v = id; ; v >>= 7) {
        *p++ = (uint8_t)(v > 0x7f ? (v & 0x7f) | 0x80 : v);
        if (v <= 0x7f)
            break;
    }
    uint32_t meta = (uint32_t)(p - m), body = meta + 2;
    *p++ = 'z'; *p++ = 'z';
    for (int i = 0; i < 4; i++) {
        frame[4 + i] = (uint8_t)(body >> (24 - 8 * i));
        frame[8 + i] = (uint8_t)(meta >> (24 - 8 * i));
    }
    send_bytes(conn, frame, (size_t)(p - frame));
}

/* Compressed with snappy (compress_type 1): the encoder never compresses. */
static void zipped_reply(net_conn_t *conn, const struct net__baidu_frame *f)
{
    static const uint8_t snappy[] = {0x18, 1};
    raw_reply(conn, f->meta.correlation_id, snappy, sizeof snappy);
}

/* "zz" with a checksum: a right CRC32C for the body "good", a wrong one
 * for "bad", checksum_type 2 for anything else. 0xfaf0c6fe is brpc's
 * masked CRC-32C of "zz" (computed independently of lib/rpc/crc32c.c). */
static void summed_reply(net_conn_t *conn, const struct net__baidu_frame *f)
{
    uint8_t sum[] = {0x58, 1, 0x62, 4, 0xfa, 0xf0, 0xc6, 0xfe};
    if (f->payload_len == 3 && memcmp(f->payload, "bad", 3) == 0)
        sum[7] ^= 1;
    else if (f->payload_len != 4 || memcmp(f->payload, "good", 4) != 0)
        sum[1] = 2;
    raw_reply(conn, f->meta.correlation_id, sum, sizeof sum);
}

static void serve(net_conn_t *conn, const struct net__baidu_frame *f)
{
    atomic_fetch_add(&F.requests, 1);
    CHECK(f->meta.has_request);
    /* "test.S.Echo" is split at its last '.'. */
    CHECK(f->meta.service_len == 6 && memcmp(f->meta.service, "test.S", 6) == 0);
    if (method_is(f, "Echo"))
        respond(conn, f->meta.correlation_id, 0, NULL, f->payload, f->payload_len,
                f->attachment, f->attachment_len);
    else if (method_is(f, "Err"))
        error_reply(conn, f);
    else if (method_is(f, "Hold"))
        hold(conn, f);
    else if (method_is(f, "Bad"))
        bad(conn, f);
    else if (method_is(f, "Zip"))
        zipped_reply(conn, f);
    else if (method_is(f, "Sum"))
        summed_reply(conn, f);
    else
        CHECK(!"unknown method");
}

static void fake_on_message(net_conn_t *conn, net_buf_t *in, uint64_t receive_ms, void *arg)
{
    (void)receive_ms;
    (void)arg;
    struct net__baidu_frame f;
    size_t need;
    int rc;
    while ((rc = net__baidu_decode((const uint8_t *)net_buf_peek(in), net_buf_readable(in), 0,
                                   &f, &need)) > 0) {
        serve(conn, &f);
        net_buf_retrieve(in, f.frame_len);
    }
    CHECK_EQ(rc, 0); /* the client only sends valid frames */
}

/* Held requests of a connection that went are dropped. */
static void fake_on_connection(net_conn_t *conn, void *arg)
{
    (void)arg;
    if (net_conn_connected(conn)) {
        atomic_fetch_add(&F.ups, 1);
        return;
    }
    for (int i = 0; i < F.n_held;) {
        if (F.held[i].conn != conn) {
            i++;
            continue;
        }
        net_conn_unref(F.held[i].conn);
        free(F.held[i].data);
        atomic_fetch_sub(&F.held_now, 1);
        F.held[i] = F.held[--F.n_held];
    }
}

static void fake_create(void *arg)
{
    (void)arg;
    net_addr_t any;
    CHECK_OK(net_addr_parse(&any, "127.0.0.1:0"));
    struct net_conn_callbacks cbs = {.on_connection = fake_on_connection,
                                     .on_message = fake_on_message};
    CHECK_OK(net_server_new(F.loop, &any, NULL, &cbs, &F.server));
    CHECK_OK(net_server_start(F.server));
    F.addr = *net_server_addr(F.server);
}

static void fake_up(void)
{
    CHECK_OK(net_loop_thread_start("fake-brpc", NULL, NULL, &F.thread));
    F.loop = net_loop_thread_loop(F.thread);
    net_test_on_loop(F.loop, fake_create, NULL);
}

static void fake_closed(net_server_t *server, void *arg)
{
    (void)server;
    (void)arg;
    atomic_fetch_add(&F.closed, 1);
}

static void fake_close(void *arg)
{
    (void)arg;
    release_all(NULL);
    CHECK_OK(net_server_close(F.server, 0, fake_closed, NULL));
}

static void fake_down(void)
{
    net_test_on_loop(F.loop, fake_close, NULL);
    WAIT_UNTIL(atomic_load(&F.closed) == 1);
    CHECK_OK(net_loop_thread_join(F.thread));
}

/* ---- the client ---------------------------------------------------------------------- */

static void client_up(size_t max_frame)
{
    net_test_rpc_client_init(&C);
    C.opt.protocol = NET_RPC_BAIDU_STD;
    C.opt.client.retry_initial_ms = 10;
    if (max_frame)
        C.opt.max_frame = max_frame;
    net_test_rpc_client_up(&C, &F.addr);
}

static struct net_rpc_client_stats client_stats(void)
{
    struct net_rpc_client_stats st;
    net_rpc_client_stats(C.rpc, &st);
    return st;
}

/* One call's outcome, written by done on the client's loop. */
struct outcome {
    atomic_int calls;
    uint32_t status;
    char body[256];
    size_t len;
    char att[256];
    size_t att_len;
};

static void copy_out(char *dst, size_t cap, size_t *len, const void *src, size_t n)
{
    CHECK(n <= cap);
    if (n)
        memcpy(dst, src, n);
    *len = n;
}

static void outcome_done(net_rpc_client_t *client, uint32_t status, const void *body,
                         size_t len, void *arg)
{
    struct outcome *o = arg;
    size_t alen;
    const void *att = net_rpc_response_attachment(client, &alen);
    CHECK((att == NULL) == (alen == 0));
    o->status = status;
    copy_out(o->body, sizeof o->body, &o->len, body, len);
    copy_out(o->att, sizeof o->att, &o->att_len, att, alen);
    atomic_fetch_add(&o->calls, 1);
}

static void call_att(struct outcome *o, const char *method, const char *body, const void *att,
                     size_t att_len, uint64_t timeout_ms)
{
    CHECK_OK(net_rpc_call_with_attachment(C.rpc, method, body, strlen(body), att, att_len,
                                          timeout_ms, outcome_done, o));
}

static void call_text(struct outcome *o, const char *method, const char *body,
                      uint64_t timeout_ms)
{
    call_att(o, method, body, NULL, 0, timeout_ms);
}

/* Waits for the one outcome and checks it (and, a moment later, that no
 * second one came). */
static void expect(struct outcome *o, uint32_t status, const char *body)
{
    WAIT_UNTIL(atomic_load(&o->calls) >= 1);
    net_test_sleep_ms(2);
    CHECK_EQ(atomic_load(&o->calls), 1);
    CHECK_EQ(o->status, status);
    CHECK_EQ(o->len, strlen(body));
    CHECK_MEM_EQ(o->body, body, o->len);
}

static void sync_expect(const char *method, const char *body, uint32_t status,
                        const char *reply)
{
    uint32_t st = 0;
    void *out = NULL;
    size_t n = 0;
    CHECK_OK(net_rpc_call_sync(C.rpc, method, body, strlen(body), 0, &st, &out, &n));
    CHECK_EQ(st, status);
    CHECK_EQ(n, strlen(reply));
    CHECK(n == 0 || memcmp(out, reply, n) == 0);
    free(out);
}

/* ---- scenarios ------------------------------------------------------------------------ */

TEST(baidu_client_echo_and_sync)
{
    net_test_watchdog_start();
    fake_up();
    client_up(0);
    struct outcome o = {0};
    call_text(&o, "test.S.Echo", "hello", 0);
    expect(&o, NET_RPC_OK, "hello");
    CHECK_EQ(o.att_len, 0);
    sync_expect("test.S.Echo", "sync works", NET_RPC_OK, "sync works");
    sync_expect("test.S.Echo", "", NET_RPC_OK, "");
    CHECK_EQ(atomic_load(&F.requests), 3);
    net_test_rpc_client_down(&C);
    fake_down();
}

/* Every brpc code class: the mapped status, brpc's error_text as body. */
TEST(baidu_client_error_codes_mapped)
{
    net_test_watchdog_start();
    fake_up();
    client_up(0);
    sync_expect("test.S.Err", "1002", NET_RPC_UNKNOWN_METHOD, "text 1002"); /* ENOMETHOD */
    sync_expect("test.S.Err", "1001", NET_RPC_UNKNOWN_METHOD, "text 1001"); /* ENOSERVICE */
    sync_expect("test.S.Err", "2004", NET_RPC_OVERLOADED, "text 2004");     /* ELIMIT */
    sync_expect("test.S.Err", "1003", NET_RPC_BAD_REQUEST, "text 1003");    /* EREQUEST */
    sync_expect("test.S.Err", "2003", NET_RPC_SHUTTING_DOWN, "text 2003");  /* ELOGOFF */
    sync_expect("test.S.Err", "4242", 4242, "text 4242");                   /* an app's */
    sync_expect("test.S.Err", "-5", NET_RPC_INTERNAL, "text -5");
    sync_expect("test.S.Err", "22", NET_RPC_INTERNAL, "text 22"); /* an errno */
    net_test_rpc_client_down(&C);
    fake_down();
}

/* A compressed response is not handed over as if it were plain: the call
 * ends INTERNAL, and the connection serves on. */
TEST(baidu_client_compressed_response_ends_internal)
{
    net_test_watchdog_start();
    fake_up();
    client_up(0);
    sync_expect("test.S.Zip", "", NET_RPC_INTERNAL,
                "response compressed (compress_type 1): netloop implements no compression");
    sync_expect("test.S.Echo", "still here", NET_RPC_OK, "still here");
    net_test_rpc_client_down(&C);
    fake_down();
}

/* A response's CRC32C checksum is verified: a right one delivers, a wrong
 * one or a type netloop cannot verify ends the call INTERNAL, and the
 * connection serves on. */
TEST(baidu_client_response_checksum_verified)
{
    net_test_watchdog_start();
    fake_up();
    client_up(0);
    sync_expect("test.S.Sum", "good", NET_RPC_OK, "zz");
    sync_expect("test.S.Sum", "bad", NET_RPC_INTERNAL, "response checksum (crc32c) does not match");
    sync_expect("test.S.Sum", "other", NET_RPC_INTERNAL,
                "response checksum_type 2: netloop verifies crc32c (1) only");
    sync_expect("test.S.Echo", "still here", NET_RPC_OK, "still here");
    net_test_rpc_client_down(&C);
    fake_down();
}

TEST(baidu_client_attachment_both_ways)
{
    net_test_watchdog_start();
    fake_up();
    client_up(0);
    static const char att[] = {'a', 0, 'b', (char)0xff, 0, '\n', 'z'};
    struct outcome o = {0};
    call_att(&o, "test.S.Echo", "body part", att, sizeof att, 0);
    expect(&o, NET_RPC_OK, "body part");
    CHECK_EQ(o.att_len, sizeof att);
    CHECK_MEM_EQ(o.att, att, sizeof att);
    /* An attachment with an empty body, and none on the next call. */
    struct outcome e = {0}, none = {0};
    call_att(&e, "test.S.Echo", "", "only", 4, 0);
    call_text(&none, "test.S.Echo", "x", 0);
    expect(&e, NET_RPC_OK, "");
    CHECK(e.att_len == 4 && memcmp(e.att, "only", 4) == 0);
    expect(&none, NET_RPC_OK, "x");
    CHECK_EQ(none.att_len, 0);
    net_test_rpc_client_down(&C);
    fake_down();
}

/* The sync call with attachments: both ways, none back for none sent,
 * an error's text and attachment, and the wrong-thread and argument
 * refusals, which leave *reply untouched. */
TEST(baidu_client_sync_with_attachment)
{
    net_test_watchdog_start();
    fake_up();
    client_up(0);
    static const char att[] = {'a', 0, 'b', (char)0xff};
    struct net_rpc_sync_reply r;
    CHECK_OK(net_rpc_call_sync_with_attachment(C.rpc, "test.S.Echo", "body", 4, att, sizeof att,
                                               0, &r));
    CHECK_EQ(r.status, NET_RPC_OK);
    CHECK(r.body_len == 4 && memcmp(r.body, "body", 4) == 0);
    CHECK(r.attachment_len == sizeof att && memcmp(r.attachment, att, sizeof att) == 0);
    free(r.body);
    free(r.attachment);
    CHECK_OK(net_rpc_call_sync_with_attachment(C.rpc, "test.S.Echo", "", 0, NULL, 0, 0, &r));
    CHECK(r.status == NET_RPC_OK && r.body == NULL && r.body_len == 0);
    CHECK(r.attachment == NULL && r.attachment_len == 0);
    CHECK_OK(net_rpc_call_sync_with_attachment(C.rpc, "test.S.Err", "4242", 4, "x", 1, 0, &r));
    CHECK_EQ(r.status, 4242);
    CHECK(r.body_len == 9 && memcmp(r.body, "text 4242", 9) == 0);
    CHECK(r.attachment == NULL && r.attachment_len == 0);
    free(r.body);
    struct net_rpc_sync_reply untouched = {.status = 77}, before = untouched;
    CHECK_EQ(net_rpc_call_sync_with_attachment(C.rpc, "test.S.Echo", "b", 1, NULL, 3, 0,
                                               &untouched), -EINVAL);
    CHECK_EQ(net_rpc_call_sync_with_attachment(C.rpc, "noservice", "b", 1, "a", 1, 0,
                                               &untouched), -EINVAL);
    CHECK_EQ(net_rpc_call_sync_with_attachment(C.rpc, "test.S.Echo", "b", 1, NULL, 0, 0, NULL),
             -EINVAL);
    CHECK_MEM_EQ(&untouched, &before, sizeof before);
    net_test_rpc_client_down(&C);
    fake_down();
}

static void check_no_attachment_outside_done(void *arg)
{
    size_t len = 99;
    CHECK(net_rpc_response_attachment(arg, &len) == NULL);
    CHECK_EQ(len, 0);
}

TEST(baidu_client_response_attachment_outside_done_is_null)
{
    net_test_watchdog_start();
    fake_up();
    client_up(0);
    struct outcome o = {0};
    call_att(&o, "test.S.Echo", "b", "att", 3, 0);
    expect(&o, NET_RPC_OK, "b");
    CHECK_EQ(o.att_len, 3);
    net_test_on_loop(C.loop, check_no_attachment_outside_done, C.rpc);
    net_test_rpc_client_down(&C);
    fake_down();
}

/* ---- many calls from several threads, answered out of order -------------------------- */

#define THREADS 4
#define PER_THREAD 400
#define BATCH 16

static atomic_int seen[THREADS * PER_THREAD];
static atomic_int finished;

static void fill(char *p, size_t n, int seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (char)(seed * 31 + (int)i * 7);
}

static void pipelined_done(net_rpc_client_t *client, uint32_t status, const void *body,
                           size_t len, void *arg)
{
    int i = (int)(intptr_t)arg;
    char want[64];
    size_t alen;
    const char *att = net_rpc_response_attachment(client, &alen);
    CHECK_EQ(status, NET_RPC_OK);
    CHECK_EQ(len, (size_t)(i % 50));
    fill(want, len, i);
    CHECK(len == 0 || memcmp(body, want, len) == 0);
    CHECK_EQ(alen, (size_t)(i % 7));
    fill(want, alen, i + 1);
    CHECK(alen == 0 || memcmp(att, want, alen) == 0);
    atomic_fetch_add(&seen[i], 1);
    atomic_fetch_add(&finished, 1);
}

static void caller(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int j = 0; j < PER_THREAD; j++) {
        int i = t * PER_THREAD + j;
        char body[64], att[64];
        fill(body, (size_t)(i % 50), i);
        fill(att, (size_t)(i % 7), i + 1);
        CHECK_OK(net_rpc_call_with_attachment(C.rpc, "test.S.Hold", body, (size_t)(i % 50),
                                              att, (size_t)(i % 7), 0, pipelined_done,
                                              (void *)(intptr_t)i));
    }
}

TEST(baidu_client_pipelined_threads_out_of_order)
{
    net_test_watchdog_start();
    F.hold_batch = BATCH; /* every 16 held are answered newest first */
    fake_up();
    client_up(0);
    struct net_test_job jobs[THREADS];
    for (int t = 0; t < THREADS; t++)
        net_test_job_start(&jobs[t], caller, (void *)(intptr_t)t);
    for (int t = 0; t < THREADS; t++)
        net_test_job_join(&jobs[t]);
    WAIT_UNTIL(atomic_load(&finished) == THREADS * PER_THREAD);
    for (int i = 0; i < THREADS * PER_THREAD; i++)
        CHECK_EQ(atomic_load(&seen[i]), 1);
    CHECK_EQ(atomic_load(&F.ups), 1); /* all on the one connection */
    struct net_rpc_client_stats st = client_stats();
    CHECK_EQ(st.completed, THREADS * PER_THREAD);
    CHECK_EQ(st.outstanding, 0);
    CHECK_EQ(st.late_replies, 0);
    net_test_rpc_client_down(&C);
    fake_down();
}

/* ---- malformed responses ---------------------------------------------------------------- */

#define HELD_CALLS 3

/* Calls held by the server, then a Bad one: all end PROTOCOL_ERROR exactly
 * once, and the client reconnects for the next call. */
static void malformed_ends_all(const char *kind, size_t max_frame)
{
    net_test_watchdog_start();
    fake_up();
    client_up(max_frame);
    sync_expect("test.S.Echo", "up", NET_RPC_OK, "up");
    struct outcome held[HELD_CALLS] = {0}, b = {0};
    for (int i = 0; i < HELD_CALLS; i++)
        call_text(&held[i], "test.S.Hold", "h", 0);
    WAIT_UNTIL(atomic_load(&F.held_now) == HELD_CALLS);
    call_text(&b, "test.S.Bad", kind, 0);
    expect(&b, NET_RPC_PROTOCOL_ERROR, "");
    for (int i = 0; i < HELD_CALLS; i++)
        expect(&held[i], NET_RPC_PROTOCOL_ERROR, "");
    WAIT_UNTIL(atomic_load(&F.held_now) == 0); /* the server saw the connection go */
    /* A call made while the old connection is still closing may end
     * DISCONNECTED; once the new one is up, calls succeed. */
    uint32_t st = NET_RPC_DISCONNECTED;
    for (int i = 0; i < 200 && st == NET_RPC_DISCONNECTED; i++) {
        void *out = NULL;
        CHECK_OK(net_rpc_call_sync(C.rpc, "test.S.Echo", "again", 5, 0, &st, &out, NULL));
        free(out);
        if (st == NET_RPC_DISCONNECTED)
            net_test_sleep_ms(5);
    }
    CHECK_EQ(st, NET_RPC_OK);
    CHECK_EQ(atomic_load(&F.ups), 2);
    CHECK_EQ(client_stats().outstanding, 0);
    net_test_rpc_client_down(&C);
    fake_down();
}

TEST(baidu_client_bad_magic_protocol_error_reconnects)
{
    malformed_ends_all("magic", 0);
}

TEST(baidu_client_request_frame_protocol_error_reconnects)
{
    malformed_ends_all("request", 0);
}

TEST(baidu_client_truncated_meta_varint_protocol_error_reconnects)
{
    malformed_ends_all("varint", 0);
}

/* Only the 12-byte header is sent: a client that waited for the body
 * would hang; the limit is applied to the header. */
TEST(baidu_client_oversize_response_refused_at_header)
{
    malformed_ends_all("big", 4096);
}

/* ---- time ------------------------------------------------------------------------------------ */

static void release_held(void)
{
    net_test_on_loop(F.loop, release_all, NULL);
}

TEST(baidu_client_timeout_then_late_reply_counted)
{
    net_test_watchdog_start();
    fake_up();
    client_up(0);
    struct outcome o = {0};
    uint64_t t0 = net_test_now_ms();
    call_text(&o, "test.S.Hold", "late", 50);
    expect(&o, NET_RPC_TIMEOUT, "");
    CHECK(net_test_now_ms() - t0 >= 50);
    CHECK_EQ(client_stats().timeouts, 1);
    WAIT_UNTIL(atomic_load(&F.held_now) == 1);
    release_held();
    WAIT_UNTIL(client_stats().late_replies == 1);
    sync_expect("test.S.Echo", "still usable", NET_RPC_OK, "still usable");
    struct net_rpc_client_stats st = client_stats();
    CHECK_EQ(st.late_replies, 1);
    CHECK_EQ(st.timeouts, 1);
    CHECK_EQ(st.outstanding, 0);
    CHECK_EQ(atomic_load(&F.ups), 1);
    net_test_rpc_client_down(&C);
    fake_down();
}

TEST(baidu_client_close_cancels_held_calls)
{
    net_test_watchdog_start();
    fake_up();
    client_up(0);
    struct outcome o[2] = {0};
    call_text(&o[0], "test.S.Hold", "a", 0);
    call_text(&o[1], "test.S.Hold", "b", 0);
    WAIT_UNTIL(atomic_load(&F.held_now) == 2);
    net_test_rpc_client_close(&C, 0);
    expect(&o[0], NET_RPC_CANCELLED, "");
    expect(&o[1], NET_RPC_CANCELLED, "");
    net_test_rpc_client_down(&C);
    fake_down();
}

/* ---- arguments -------------------------------------------------------------------------------- */

static void ignore_done(net_rpc_client_t *client, uint32_t status, const void *body, size_t len,
                        void *arg)
{
    (void)client;
    (void)status;
    (void)body;
    (void)len;
    (void)arg;
    CHECK(!"a refused call's done must not run");
}

TEST(baidu_client_bad_method_names_rejected)
{
    net_test_watchdog_start();
    fake_up();
    client_up(0);
    static const char *const bad_names[] = {"Echo", ".Echo", "test.S.", ".", "", "a..", NULL};
    for (int i = 0; bad_names[i]; i++) {
        CHECK_EQ(net_rpc_call(C.rpc, bad_names[i], "x", 1, 0, ignore_done, NULL), -EINVAL);
        uint32_t st;
        CHECK_EQ(net_rpc_call_sync(C.rpc, bad_names[i], "x", 1, 0, &st, NULL, NULL), -EINVAL);
    }
    char longname[300];
    memset(longname, 'a', sizeof longname);
    longname[1] = '.';
    longname[256] = '\0'; /* 256 bytes: one over the limit */
    CHECK_EQ(net_rpc_call(C.rpc, longname, NULL, 0, 0, ignore_done, NULL), -EINVAL);
    CHECK_EQ(net_rpc_call_with_attachment(C.rpc, "a.b", NULL, 0, NULL, 1, 0, ignore_done, NULL),
             -EINVAL);
    CHECK_EQ(net_rpc_call_with_attachment(C.rpc, "a.b", NULL, 0, "x", (size_t)INT32_MAX + 1, 0,
                                          ignore_done, NULL),
             -EINVAL);
    CHECK_EQ(client_stats().calls, 0); /* nothing started */
    sync_expect("test.S.Echo", "fine", NET_RPC_OK, "fine");
    CHECK_EQ(atomic_load(&F.requests), 1);
    net_test_rpc_client_down(&C);
    fake_down();
}

TEST(nrpc_client_attachment_rejected)
{
    net_test_watchdog_start();
    fake_up();
    net_test_rpc_client_init(&C);
    net_test_rpc_client_up(&C, &F.addr); /* NRPC: never called here */
    CHECK_EQ(net_rpc_call_with_attachment(C.rpc, "echo", "b", 1, "a", 1, 0, ignore_done, NULL),
             -EINVAL);
    CHECK_EQ(client_stats().calls, 0);
    net_test_rpc_client_down(&C);
    fake_down();
}

static void new_with_bad_protocol(void *arg)
{
    (void)arg;
    struct net_rpc_client_options opt;
    net_rpc_client_options_init(&opt);
    opt.protocol = (enum net_rpc_protocol)7;
    net_rpc_client_t *c = NULL;
    CHECK_EQ(net_rpc_client_new(F.loop, &F.addr, &opt, &c), -EINVAL);
    CHECK(c == NULL);
}

TEST(rpc_client_unknown_protocol_rejected)
{
    net_test_watchdog_start();
    fake_up();
    net_test_on_loop(F.loop, new_with_bad_protocol, NULL);
    fake_down();
}
