/* The RPC layer end to end over loopback: round trips, malformed and
 * fragmented frames, pipelining, ordering, timeouts and late replies,
 * disconnects, cancellation, limits on both sides, blocking handlers,
 * graceful close, and replies that outlive their connection or server.
 * (test_lifecycle_rpc.c covers the close rule itself.)
 *
 * The server runs on one loop thread and the client on another; the main
 * thread (and a few plain pthreads) make the calls, which are thread-safe.
 * Raw sockets speak NRPC/1 through the internal codec to send what a real
 * client never would. Every wait is bounded, and a watchdog (SIGALRM, taken
 * by the main thread since loop threads block signals) fails a scenario that
 * hangs instead of letting it run into the runner's timeout. */
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "rpc/rpc_codec.h"
#include "rpc_fixture.h"

#define MAX_SLEEPERS 256 /* "sleep" requests the test server keeps at once */

/* A deterministic generator: a failing run can be replayed. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

/* The byte at position i of the body numbered seed: bodies are checked
 * against this, without keeping a copy. */
static char pattern_byte(uint32_t seed, size_t i)
{
    uint32_t x = (uint32_t)i * 2654435761u ^ seed * 40503u;
    return (char)(x >> 13 ^ x);
}

static void pattern_fill(char *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = pattern_byte(seed, i);
}

static bool pattern_matches(const char *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != pattern_byte(seed, i))
            return false;
    return true;
}

/* ---- the server under test: a loop thread and its methods ------------------------ */

static struct net_test_rpc_server srv;

/* What the methods saw and keep. */
static struct {
    atomic_int echoes;
    atomic_ullong echo_conn;   /* connection id of the last echo */

    struct net_test_held held; /* "hold" requests */
    pthread_mutex_t mu;        /* guards sleepers[] */
    struct {
        net_rpc_req_t *req;
        net_timer_id_t timer;
    } sleepers[MAX_SLEEPERS];
    atomic_int sleeping;       /* "sleep" requests received */

    atomic_int blocking_started;
    atomic_bool echo_seen_by_client; /* lets a blocking handler return */
} S = {.held = NET_TEST_HELD_INIT, .mu = PTHREAD_MUTEX_INITIALIZER};

static void echo_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    atomic_store(&S.echo_conn, net_conn_id(net_rpc_req_conn(req)));
    atomic_fetch_add(&S.echoes, 1);
    CHECK_OK(net_rpc_reply(req, NET_RPC_OK, body, len));
}

static void sleep_wake(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    int i = (int)(intptr_t)arg;
    pthread_mutex_lock(&S.mu);
    net_rpc_req_t *req = S.sleepers[i].req;
    S.sleepers[i].req = NULL;
    pthread_mutex_unlock(&S.mu);
    CHECK(req != NULL);
    CHECK_OK(net_rpc_reply(req, NET_RPC_OK, NULL, 0));
}

/* "sleep": the body is a decimal count of milliseconds; the reply (empty)
 * comes from a timer on the server's base loop, so the loop is not blocked.
 * Timers still pending at teardown are cut short by sleepers_flush(). */
static void sleep_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    const char *p = body;
    uint64_t ms = 0;
    CHECK(len > 0 && len < 9);
    for (size_t i = 0; i < len; i++) {
        CHECK(p[i] >= '0' && p[i] <= '9');
        ms = ms * 10 + (uint64_t)(p[i] - '0');
    }
    pthread_mutex_lock(&S.mu);
    int i = 0;
    while (i < MAX_SLEEPERS && S.sleepers[i].req)
        i++;
    CHECK(i < MAX_SLEEPERS);
    S.sleepers[i].req = req;
    S.sleepers[i].timer = net_loop_run_after(srv.loop, ms, sleep_wake, (void *)(intptr_t)i);
    CHECK(S.sleepers[i].timer > 0);
    pthread_mutex_unlock(&S.mu);
    atomic_fetch_add(&S.sleeping, 1);
}

static void sleepers_flush_in_loop(void *arg)
{
    (void)arg;
    for (int i = 0; i < MAX_SLEEPERS; i++) {
        pthread_mutex_lock(&S.mu);
        net_rpc_req_t *req = S.sleepers[i].req;
        if (req && net_timer_cancel(srv.loop, S.sleepers[i].timer) == 0)
            S.sleepers[i].req = NULL;
        else
            req = NULL;
        pthread_mutex_unlock(&S.mu);
        if (req) /* the server or its connection may be gone: still 0 */
            CHECK_OK(net_rpc_reply(req, NET_RPC_INTERNAL, "cut short", 9));
    }
}

/* "hold": keeps the request until the test answers it. */
static void hold_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)body, (void)len, (void)arg;
    net_test_hold(&S.held, req);
}

static int held_release(uint32_t status, const char *text)
{
    return net_test_held_release(&S.held, status, text);
}

/* "block" (registered blocking, runs on a worker): sleeps 50 ms at a time
 * until the client has seen an echo answered meanwhile (at most 2 s), then
 * echoes its body. */
static void block_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    CHECK(net_loop_current() == NULL); /* a worker thread, not a loop */
    atomic_fetch_add(&S.blocking_started, 1);
    for (int i = 0; i < 40; i++) {
        net_test_sleep_ms(50);
        if (atomic_load(&S.echo_seen_by_client))
            break;
    }
    CHECK_OK(net_rpc_reply(req, NET_RPC_OK, body, len));
}

/* "handoff": the request goes to another thread, which answers with the
 * body reversed. */
static struct {
    struct net_test_handoff_queue q;
    pthread_t thread;
    atomic_int replied;
} H = {.q = NET_TEST_HANDOFF_QUEUE_INIT};

static void handoff_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    net_test_handoff_push(&H.q, req, body, len);
}

static void *handoff_main(void *arg)
{
    (void)arg;
    for (struct net_test_handoff *h; (h = net_test_handoff_pop(&H.q));) {
        for (size_t i = 0; i < h->len / 2; i++) {
            char t = h->body[i];
            h->body[i] = h->body[h->len - 1 - i];
            h->body[h->len - 1 - i] = t;
        }
        CHECK_OK(net_rpc_reply(h->req, NET_RPC_OK, h->body, h->len));
        atomic_fetch_add(&H.replied, 1);
        free(h);
    }
    return NULL;
}

/* "status": the body is a decimal status to answer with, and the message.
 * A local-only status is refused by net_rpc_reply, which keeps req. */
static void status_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    const char *p = body;
    uint64_t v = 0;
    CHECK(len > 0 && len <= 10);
    for (size_t i = 0; i < len; i++)
        v = v * 10 + (uint64_t)(p[i] - '0');
    CHECK(v <= UINT32_MAX);
    CHECK_EQ(net_rpc_reply(req, NET_RPC_TIMEOUT, NULL, 0), -EINVAL);
    CHECK_EQ(net_rpc_reply(req, NET_RPC_OK, NULL, 1), -EINVAL);
    CHECK_OK(net_rpc_reply(req, (uint32_t)v, "message", 7));
}

static void add_methods(net_rpc_server_t *server)
{
    CHECK_OK(net_rpc_server_register(server, "echo", echo_method, NULL, false));
    CHECK_OK(net_rpc_server_register(server, "sleep", sleep_method, NULL, false));
    CHECK_OK(net_rpc_server_register(server, "hold", hold_method, NULL, false));
    CHECK_OK(net_rpc_server_register(server, "handoff", handoff_method, NULL, false));
    CHECK_OK(net_rpc_server_register(server, "status", status_method, NULL, false));
    CHECK_EQ(net_rpc_server_register(server, "echo", echo_method, NULL, false), -EEXIST);
    if (srv.opt.worker_threads)
        CHECK_OK(net_rpc_server_register(server, "block", block_method, NULL, true));
    else
        CHECK_EQ(net_rpc_server_register(server, "block", block_method, NULL, true), -EINVAL);
}

static void register_after_start_in_loop(void *arg)
{
    (void)arg;
    CHECK_EQ(net_rpc_server_register(srv.server, "late", echo_method, NULL, false), -EBUSY);
}

/* Defaults; a scenario changes srv.opt between this and server_up(). */
static void server_options(void)
{
    net_test_rpc_server_init(&srv, add_methods);
}

static void server_up(void)
{
    net_test_rpc_server_up(&srv);
    net_test_on_loop(srv.loop, register_after_start_in_loop, NULL);
}

/* Closes the server if it is open, ends the sleeps still pending (their
 * replies go nowhere) and the loop thread. */
static void server_down(void)
{
    net_test_rpc_server_gone(&srv, 0);
    net_test_on_loop(srv.loop, sleepers_flush_in_loop, NULL);
    CHECK_EQ(S.held.n, 0); /* the scenario answered what it held */
    net_loop_thread_join(srv.thread);
    srv.thread = NULL;
    srv.loop = NULL;
}

/* ---- the client under test ------------------------------------------------------ */

static struct net_test_rpc_client C;
static bool in_api; /* client loop: inside a call that must not run callbacks */

/* Defaults; a scenario changes C.opt between this and client_up(). */
static void client_options(void)
{
    net_test_rpc_client_init(&C);
}

static void client_up(const net_addr_t *addr)
{
    net_test_rpc_client_up(&C, addr);
}

static void client_down(void)
{
    net_test_rpc_client_down(&C);
}

/* The server and a client with default options. */
static void both_up(void)
{
    server_options();
    server_up();
    client_options();
    client_up(&srv.addr);
}

static struct net_rpc_client_stats client_stats(void)
{
    struct net_rpc_client_stats st;
    net_rpc_client_stats(C.rpc, &st);
    return st;
}

/* ---- calls and their outcomes ------------------------------------------------------ */

/* One async call's outcome. The callback fails the scenario if it runs a
 * second time, so "exactly once" is checked for every call. */
struct outcome {
    atomic_int ran;
    uint32_t status;
    size_t len;
    char *body;
    int order; /* 1, 2, ... in the order the calls completed */
};

static atomic_int completion_order;

static void outcome_done(net_rpc_client_t *client, uint32_t status, const void *body, size_t len,
                         void *arg)
{
    struct outcome *o = arg;
    CHECK(client == C.rpc);
    CHECK(net_loop_in_loop_thread(C.loop));
    CHECK(!in_api);
    CHECK_EQ(atomic_load(&o->ran), 0);
    o->status = status;
    o->len = len;
    o->body = len ? malloc(len) : NULL;
    CHECK(len == 0 || o->body != NULL);
    if (len)
        memcpy(o->body, body, len);
    o->order = atomic_fetch_add(&completion_order, 1) + 1;
    atomic_store(&o->ran, 1);
}

static void call_async(struct outcome *o, const char *method, const void *body, size_t len,
                       uint64_t timeout_ms)
{
    CHECK_OK(net_rpc_call(C.rpc, method, body, len, timeout_ms, outcome_done, o));
}

static void call_text(struct outcome *o, const char *method, const char *text)
{
    call_async(o, method, text, strlen(text), 0);
}

static void outcome_wait(struct outcome *o)
{
    WAIT_UNTIL(atomic_load(&o->ran) == 1);
}

/* Waits for the outcome and checks it byte for byte, then forgets the body. */
static void outcome_expect(struct outcome *o, uint32_t status, const char *text)
{
    outcome_wait(o);
    if (o->status != status)
        net_test_fail(__FILE__, __LINE__, "status %s, expected %s",
                      net_rpc_status_name(o->status), net_rpc_status_name(status));
    CHECK_EQ(o->len, strlen(text));
    if (o->len)
        CHECK_MEM_EQ(o->body, text, o->len);
    free(o->body);
    o->body = NULL;
}

static void sync_expect(const char *method, const void *body, size_t len, uint32_t status,
                        const void *want, size_t want_len)
{
    uint32_t st = 0xDEAD;
    void *out = (void *)&st;
    size_t n = 12345;
    CHECK_OK(net_rpc_call_sync(C.rpc, method, body, len, 0, &st, &out, &n));
    if (st != status)
        net_test_fail(__FILE__, __LINE__, "status %s, expected %s", net_rpc_status_name(st),
                      net_rpc_status_name(status));
    CHECK_EQ(n, want_len);
    if (want_len)
        CHECK_MEM_EQ(out, want, n);
    else
        CHECK(out == NULL);
    free(out);
}

static void sync_echo(const char *text)
{
    sync_expect("echo", text, strlen(text), NET_RPC_OK, text, strlen(text));
}

/* ---- raw sockets ---------------------------------------------------------------- */

static int raw_connect(void)
{
    return net_test_connect(&srv.addr, 0);
}

/* Reads until the peer closes (EOF or reset); returns the bytes that came
 * before. A read timeout fails the scenario. */
static size_t raw_drain_until_closed(int fd)
{
    size_t total = 0;
    for (;;) {
        char buf[4096];
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r == 0 || (r < 0 && errno == ECONNRESET))
            return total;
        if (r < 0)
            net_test_fail(__FILE__, __LINE__, "the server did not close: %s", strerror(errno));
        total += (size_t)r;
        CHECK(total < ((size_t)64 << 20));
    }
}

/* A request through the codec, and the byte-exact response expected. */
static void raw_round_trip(int fd, uint64_t id, const char *text)
{
    net_buf_t req = NET_BUF_INIT, want = NET_BUF_INIT;
    CHECK_OK(net__rpc_encode_request(&req, id, "echo", 4, text, strlen(text)));
    CHECK_OK(net__rpc_encode_response(&want, id, NET_RPC_OK, text, strlen(text)));
    CHECK(net_test_send_all(fd, net_buf_peek(&req), net_buf_readable(&req)));
    char got[512];
    size_t n = net_buf_readable(&want);
    CHECK(n <= sizeof got);
    net_test_recv_exact(fd, got, n);
    CHECK_MEM_EQ(got, net_buf_peek(&want), n);
    net_buf_destroy(&req);
    net_buf_destroy(&want);
}

/* A TCP socket bound to a free loopback port (addr gets it), not yet
 * listening. */
static int bound_socket(net_addr_t *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    CHECK_OK(net_addr_parse(addr, "127.0.0.1:0"));
    CHECK_EQ(bind(fd, net_addr_sockaddr(addr), net_addr_len(addr)), 0);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    CHECK_EQ(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    CHECK_OK(net_addr_from_sockaddr(addr, (struct sockaddr *)&ss, len));
    return fd;
}

static size_t pack_header(uint8_t *out, uint8_t version, uint8_t type, uint16_t method_len,
                          uint64_t id, uint32_t status, uint32_t body_len)
{
    struct net__rpc_header h = {.version = version, .type = type, .method_len = method_len,
                                .call_id = id, .status = status, .body_len = body_len};
    net__rpc_header_pack(out, &h);
    return NET__RPC_HEADER_LEN;
}

/* ======================================================================== */

TEST(rpc_echo_round_trip)
{
    net_test_watchdog_start();
    both_up();

    struct outcome o = {0};
    call_text(&o, "echo", "hello, rpc");
    outcome_expect(&o, NET_RPC_OK, "hello, rpc");

    sync_echo("world");
    sync_expect("echo", NULL, 0, NET_RPC_OK, NULL, 0); /* empty body: NULL, 0 */
    static const char binary[] = {0, 1, 2, '\n', (char)0xFF, 0};
    sync_expect("echo", binary, sizeof binary, NET_RPC_OK, binary, sizeof binary);

    struct net_rpc_client_stats st = client_stats();
    CHECK_EQ(st.calls, 4);
    CHECK_EQ(st.completed, 4);
    CHECK_EQ(st.outstanding, 0);
    CHECK_EQ(st.timeouts + st.disconnected + st.late_replies, 0);
    CHECK(net_rpc_client_connected(C.rpc));

    client_down();
    server_down();
}

TEST(rpc_unknown_method_keeps_connection)
{
    net_test_watchdog_start();
    both_up();

    sync_echo("before");
    uint64_t conn = atomic_load(&S.echo_conn);
    sync_expect("nope", NULL, 0, NET_RPC_UNKNOWN_METHOD, "unknown method", 14);
    struct outcome o = {0};
    call_text(&o, "Echo", "x"); /* names are case-sensitive */
    outcome_expect(&o, NET_RPC_UNKNOWN_METHOD, "unknown method");
    sync_echo("after");
    CHECK_EQ(atomic_load(&S.echo_conn), conn); /* the same connection */
    CHECK_EQ(client_stats().disconnected, 0);

    client_down();
    server_down();
}

TEST(rpc_statuses_pass_unchanged)
{
    net_test_watchdog_start();
    both_up();

    /* Library codes, a reserved one, application codes up to the last one
     * below the local-only range: each arrives as sent, with its message. */
    static const char *const codes[] = {"2", "3", "4", "5", "6", "99", "100", "4294967039"};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        uint32_t want = (uint32_t)strtoul(codes[i], NULL, 10);
        sync_expect("status", codes[i], strlen(codes[i]), want, "message", 7);
    }
    sync_expect("status", "0", 1, NET_RPC_OK, "message", 7);
    CHECK_EQ(strcmp(net_rpc_status_name(NET_RPC_OVERLOADED), "OVERLOADED"), 0);
    CHECK_EQ(strcmp(net_rpc_status_name(NET_RPC_DISCONNECTED), "DISCONNECTED"), 0);
    CHECK_EQ(strcmp(net_rpc_status_name(NET_RPC_APP_BASE + 7), "APPLICATION"), 0);

    client_down();
    server_down();
}

TEST(rpc_invalid_arguments_rejected)
{
    net_test_watchdog_start();
    both_up();

    char long_name[300];
    memset(long_name, 'm', sizeof long_name);
    long_name[256] = '\0';
    struct outcome never = {0};
    CHECK_EQ(net_rpc_call(NULL, "echo", NULL, 0, 0, outcome_done, &never), -EINVAL);
    CHECK_EQ(net_rpc_call(C.rpc, NULL, NULL, 0, 0, outcome_done, &never), -EINVAL);
    CHECK_EQ(net_rpc_call(C.rpc, "", NULL, 0, 0, outcome_done, &never), -EINVAL);
    CHECK_EQ(net_rpc_call(C.rpc, long_name, NULL, 0, 0, outcome_done, &never), -EINVAL);
    CHECK_EQ(net_rpc_call(C.rpc, "echo", NULL, 1, 0, outcome_done, &never), -EINVAL);
    CHECK_EQ(net_rpc_call(C.rpc, "echo", NULL, 0, 0, NULL, NULL), -EINVAL);
    uint32_t st;
    CHECK_EQ(net_rpc_call_sync(C.rpc, "echo", NULL, 0, 0, NULL, NULL, NULL), -EINVAL);
    CHECK_EQ(net_rpc_call_sync(C.rpc, "", NULL, 0, 0, &st, NULL, NULL), -EINVAL);
    CHECK_EQ(net_rpc_reply(NULL, NET_RPC_OK, NULL, 0), -EINVAL);
    /* The longest name is fine (and unknown to the server). */
    long_name[255] = '\0';
    sync_expect(long_name, NULL, 0, NET_RPC_UNKNOWN_METHOD, "unknown method", 14);
    net_test_sleep_ms(20);
    CHECK_EQ(atomic_load(&never.ran), 0);
    CHECK_EQ(client_stats().calls, 1);

    client_down();
    server_down();
}

/* ---- protocol errors close only the offending connection -------------------------- */

#define SMALL_MAX_FRAME 1024

struct bad_frame {
    const char *rule;
    uint8_t bytes[128];
    size_t len;
};

static size_t valid_request(uint8_t *out, const char *method, const char *body)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net__rpc_encode_request(&b, 42, method, strlen(method), body, strlen(body)));
    size_t n = net_buf_readable(&b);
    memcpy(out, net_buf_peek(&b), n);
    net_buf_destroy(&b);
    return n;
}

/* Each rule of docs/protocol.md section 3 broken once, plus the role check. */
static int bad_frames(struct bad_frame *f)
{
    struct bad_frame *b = f;
    b->rule = "bad magic";
    b->len = valid_request(b->bytes, "echo", "x");
    b->bytes[0] = 'X';
    b++;
    b->rule = "unknown version";
    b->len = valid_request(b->bytes, "echo", "x");
    b->bytes[4] = 2;
    b++;
    b->rule = "unknown type";
    b->len = valid_request(b->bytes, "echo", "x");
    b->bytes[5] = 3;
    b++;
    b->rule = "request with method_len 0";
    b->len = pack_header(b->bytes, 1, NET__RPC_TYPE_REQUEST, 0, 1, 0, 1);
    b->bytes[b->len++] = 'x';
    b++;
    b->rule = "request with method_len 256";
    b->len = pack_header(b->bytes, 1, NET__RPC_TYPE_REQUEST, 256, 1, 0, 0);
    b++;
    b->rule = "request with non-zero status";
    b->len = valid_request(b->bytes, "echo", "x");
    b->bytes[19] = 1;
    b++;
    b->rule = "request with a local-only status";
    b->len = valid_request(b->bytes, "echo", "x");
    memset(b->bytes + 16, 0xFF, 4);
    b++;
    /* Only the header: the server must refuse it before any body arrives. */
    b->rule = "frame larger than max_frame";
    b->len = pack_header(b->bytes, 1, NET__RPC_TYPE_REQUEST, 4, 1, 0,
                         SMALL_MAX_FRAME - 24 - 4 + 1);
    b++;
    b->rule = "body_len 0xFFFFFFFF";
    b->len = pack_header(b->bytes, 1, NET__RPC_TYPE_REQUEST, 4, 1, 0, 0xFFFFFFFFu);
    b++;
    b->rule = "response sent to a server";
    net_buf_t resp = NET_BUF_INIT;
    CHECK_OK(net__rpc_encode_response(&resp, 42, NET_RPC_OK, "x", 1));
    b->len = net_buf_readable(&resp);
    memcpy(b->bytes, net_buf_peek(&resp), b->len);
    net_buf_destroy(&resp);
    b++;
    b->rule = "an HTTP request";
    b->len = strlen("GET / HTTP/1.1\r\n\r\n");
    memcpy(b->bytes, "GET / HTTP/1.1\r\n\r\n", b->len);
    b++;
    return (int)(b - f);
}

TEST(rpc_malformed_frames_close_only_that_connection)
{
    net_test_watchdog_start();
    server_options();
    srv.opt.max_frame = SMALL_MAX_FRAME;
    server_up();
    client_options();
    client_up(&srv.addr);
    sync_echo("good client");

    struct bad_frame frames[16];
    int n = bad_frames(frames);
    for (int i = 0; i < n; i++) {
        int fd = raw_connect();
        raw_round_trip(fd, 1000 + (uint64_t)i, frames[i].rule); /* a good frame first */
        CHECK(net_test_send_all(fd, frames[i].bytes, frames[i].len));
        size_t got = raw_drain_until_closed(fd);
        if (got != 0)
            net_test_fail(__FILE__, __LINE__, "%s: %zu bytes sent before closing",
                          frames[i].rule, got);
        close(fd);
        sync_echo(frames[i].rule); /* the well-behaved client is still served */
    }
    /* Exactly the maximum is accepted. */
    int fd = raw_connect();
    size_t body_len = SMALL_MAX_FRAME - 24 - 4;
    char *body = malloc(body_len);
    CHECK(body != NULL);
    pattern_fill(body, body_len, 7);
    net_buf_t req = NET_BUF_INIT;
    CHECK_OK(net__rpc_encode_request(&req, 9, "echo", 4, body, body_len));
    CHECK_EQ(net_buf_readable(&req), SMALL_MAX_FRAME);
    CHECK(net_test_send_all(fd, net_buf_peek(&req), net_buf_readable(&req)));
    char resp[SMALL_MAX_FRAME];
    net_test_recv_exact(fd, resp, 24 + body_len);
    CHECK_EQ(resp[5], NET__RPC_TYPE_RESPONSE);
    CHECK(pattern_matches(resp + 24, body_len, 7));
    close(fd);
    net_buf_destroy(&req);
    free(body);

    CHECK_EQ(client_stats().disconnected, 0);
    CHECK(net_rpc_client_connected(C.rpc));
    client_down();
    server_down();
}

TEST(rpc_frames_one_byte_at_a_time)
{
    net_test_watchdog_start();
    server_options();
    server_up();

    static const char text[] = "one byte at a time";
    uint64_t id = 0x0102030405060708ull;
    net_buf_t req = NET_BUF_INIT, want = NET_BUF_INIT;
    CHECK_OK(net__rpc_encode_request(&req, id, "echo", 4, text, strlen(text)));
    CHECK_OK(net__rpc_encode_response(&want, id, NET_RPC_OK, text, strlen(text)));
    int fd = raw_connect();
    const char *p = net_buf_peek(&req);
    for (size_t i = 0; i < net_buf_readable(&req); i++) {
        CHECK(net_test_send_all(fd, p + i, 1));
        net_test_sleep_ms(1);
    }
    char got[128];
    net_test_recv_exact(fd, got, net_buf_readable(&want));
    CHECK_MEM_EQ(got, net_buf_peek(&want), net_buf_readable(&want));

    /* And the other way round: three frames in one write, split oddly. */
    net_buf_t three = NET_BUF_INIT, want3 = NET_BUF_INIT;
    for (uint64_t k = 0; k < 3; k++) {
        CHECK_OK(net__rpc_encode_request(&three, k, "echo", 4, text, k * 5));
        CHECK_OK(net__rpc_encode_response(&want3, k, NET_RPC_OK, text, k * 5));
    }
    size_t cut = 37; /* in the middle of the second header */
    CHECK(net_test_send_all(fd, net_buf_peek(&three), cut));
    net_test_sleep_ms(5);
    CHECK(net_test_send_all(fd, net_buf_peek(&three) + cut, net_buf_readable(&three) - cut));
    net_test_recv_exact(fd, got, net_buf_readable(&want3));
    CHECK_MEM_EQ(got, net_buf_peek(&want3), net_buf_readable(&want3));

    close(fd);
    net_buf_destroy(&req);
    net_buf_destroy(&want);
    net_buf_destroy(&three);
    net_buf_destroy(&want3);
    server_down();
}

TEST(rpc_random_bytes_at_server_bounded)
{
    net_test_watchdog_start();
    both_up();

    for (int i = 0; i < 150; i++) {
        uint8_t junk[4096];
        size_t n = 1 + rng() % sizeof junk;
        for (size_t k = 0; k < n; k++)
            junk[k] = (uint8_t)rng();
        /* Often a plausible header prefix, to get past the first checks. */
        if (i % 3 != 0) {
            uint8_t h[24];
            uint32_t blen = (uint32_t)(rng() % 3 == 0 ? rng() : rng() % 64);
            pack_header(h, 1, (uint8_t)(1 + rng() % 2), (uint16_t)(rng() % 300), rng(),
                        rng() % 4 == 0 ? (uint32_t)rng() : 0, blen);
            size_t keep = 4 + rng() % 21;
            memcpy(junk, h, keep < n ? keep : n);
        }
        int fd = raw_connect();
        net_test_send_all(fd, junk, n); /* the server may close before taking it all */
        if (i % 2 == 0) {
            shutdown(fd, SHUT_WR); /* a frame left half-sent ends at EOF */
            raw_drain_until_closed(fd);
        }
        close(fd);
        if (i % 10 == 0)
            sync_echo("still here");
    }
    sync_echo("at the end");
    CHECK_EQ(client_stats().disconnected, 0);
    client_down();
    server_down();
}

/* ---- pipelining and ordering ---------------------------------------------------------- */

#define PIPE_CALLS 1000
#define PIPE_MAX_BODY 65536

static struct {
    size_t len[PIPE_CALLS];
    int ran[PIPE_CALLS]; /* client loop only */
    atomic_int done;
} P;

static void pipe_done(net_rpc_client_t *client, uint32_t status, const void *body, size_t len,
                      void *arg)
{
    (void)client;
    uintptr_t i = (uintptr_t)arg;
    CHECK(i < PIPE_CALLS);
    CHECK_EQ(P.ran[i]++, 0);
    CHECK_EQ(status, NET_RPC_OK);
    CHECK_EQ(len, P.len[i]);
    CHECK(pattern_matches(body, len, (uint32_t)i));
    atomic_fetch_add(&P.done, 1);
}

TEST(rpc_1000_pipelined_random_sizes)
{
    net_test_watchdog_start();
    server_options();
    srv.opt.server.io_threads = 2;
    server_up();
    client_options();
    client_up(&srv.addr);

    char *body = malloc(PIPE_MAX_BODY);
    CHECK(body != NULL);
    for (uintptr_t i = 0; i < PIPE_CALLS; i++) {
        size_t len = i == 0 ? 0 : i == 1 ? PIPE_MAX_BODY : rng() % (PIPE_MAX_BODY + 1);
        P.len[i] = len;
        pattern_fill(body, len, (uint32_t)i);
        CHECK_OK(net_rpc_call(C.rpc, "echo", body, len, 0, pipe_done, (void *)i));
    }
    free(body);
    WAIT_UNTIL(atomic_load(&P.done) == PIPE_CALLS);
    net_test_sleep_ms(20);
    CHECK_EQ(atomic_load(&P.done), PIPE_CALLS);
    struct net_rpc_client_stats st = client_stats();
    CHECK_EQ(st.completed, PIPE_CALLS);
    CHECK_EQ(st.outstanding, 0);
    client_down();
    for (int i = 0; i < PIPE_CALLS; i++)
        CHECK_EQ(P.ran[i], 1);
    server_down();
}

TEST(rpc_out_of_order_replies)
{
    net_test_watchdog_start();
    both_up();

    struct outcome slow = {0}, fast = {0};
    call_text(&slow, "sleep", "200");
    call_text(&fast, "echo", "overtakes");
    outcome_expect(&fast, NET_RPC_OK, "overtakes");
    outcome_expect(&slow, NET_RPC_OK, "");
    CHECK(fast.order < slow.order);

    client_down();
    server_down();
}

TEST(rpc_timeout_then_late_reply_dropped_and_counted)
{
    net_test_watchdog_start();
    both_up();
    sync_echo("connected");

    struct outcome o = {0};
    uint64_t t0 = net_test_now_ms();
    call_async(&o, "sleep", "300", 3, 50);
    outcome_expect(&o, NET_RPC_TIMEOUT, "");
    CHECK(net_test_now_ms() - t0 >= 50); /* not before its deadline */
    CHECK_EQ(client_stats().timeouts, 1);

    WAIT_UNTIL(client_stats().late_replies == 1); /* dropped, counted, once */
    struct net_rpc_client_stats st = client_stats();
    CHECK_EQ(st.timeouts, 1);
    CHECK_EQ(st.disconnected, 0);
    CHECK_EQ(st.outstanding, 0);
    sync_echo("still usable");
    CHECK_EQ(client_stats().late_replies, 1);

    client_down();
    server_down();
}

/* ---- connections ending under calls ------------------------------------------------- */

#define IN_FLIGHT 5

TEST(rpc_server_killed_calls_fail_disconnected)
{
    net_test_watchdog_start();
    both_up();

    struct outcome o[IN_FLIGHT] = {0};
    for (int i = 0; i < IN_FLIGHT; i++)
        call_text(&o[i], "sleep", "5000");
    WAIT_UNTIL(atomic_load(&S.sleeping) == IN_FLIGHT); /* all on the server */
    net_test_rpc_server_close(&srv, 0); /* no drain: abrupt */
    for (int i = 0; i < IN_FLIGHT; i++)
        outcome_expect(&o[i], NET_RPC_DISCONNECTED, "");
    net_test_sleep_ms(20);
    struct net_rpc_client_stats st = client_stats();
    CHECK_EQ(st.disconnected, IN_FLIGHT);
    CHECK_EQ(st.completed, IN_FLIGHT);
    CHECK_EQ(st.outstanding, 0);

    client_down();
    server_down(); /* the sleeps answer a closed server: safe no-ops */
}

static atomic_int client_closes;

static void client_closed(net_rpc_client_t *client, void *arg)
{
    (void)arg;
    CHECK(client == C.rpc);
    CHECK(net_loop_in_loop_thread(C.loop));
    CHECK(!in_api);
    CHECK_EQ(client_stats().outstanding, 0);
    atomic_fetch_add(&client_closes, 1);
}

/* Waits for the close's done (once), after which the handle is gone. */
static void client_closed_wait(void)
{
    WAIT_UNTIL(atomic_load(&client_closes) == 1);
    net_test_sleep_ms(20);
    CHECK_EQ(atomic_load(&client_closes), 1);
    C.rpc = NULL;
}

TEST(rpc_client_close_cancels_in_flight)
{
    net_test_watchdog_start();
    both_up();

    struct outcome o[IN_FLIGHT] = {0};
    for (int i = 0; i < IN_FLIGHT; i++)
        call_text(&o[i], "sleep", "5000");
    WAIT_UNTIL(atomic_load(&S.sleeping) == IN_FLIGHT);
    /* From this thread (a second close here could race the done and the
     * free: test_lifecycle_rpc.c checks -EALREADY where that cannot be). */
    CHECK_OK(net_rpc_client_close(C.rpc, 0, client_closed, NULL));
    for (int i = 0; i < IN_FLIGHT; i++)
        outcome_expect(&o[i], NET_RPC_CANCELLED, "");
    client_closed_wait();

    client_down();
    server_down();
}

/* During the drain new calls are refused and the calls in flight get
 * their real outcome; done comes as soon as the last one has, long before
 * the drain time. */
TEST(rpc_client_close_drain_refuses_new_calls)
{
    net_test_watchdog_start();
    both_up();

    struct outcome o[IN_FLIGHT] = {0};
    for (int i = 0; i < IN_FLIGHT; i++)
        call_text(&o[i], "hold", "h");
    WAIT_UNTIL(atomic_load(&S.held.total) == IN_FLIGHT);
    CHECK_OK(net_rpc_client_close(C.rpc, 60000, client_closed, NULL));
    struct outcome never = {0};
    CHECK_EQ(net_rpc_call(C.rpc, "echo", "x", 1, 0, outcome_done, &never), -ESHUTDOWN);
    uint32_t st;
    CHECK_EQ(net_rpc_call_sync(C.rpc, "echo", "x", 1, 0, &st, NULL, NULL), -ESHUTDOWN);
    net_test_sleep_ms(50);
    CHECK_EQ(atomic_load(&client_closes), 0); /* draining */
    uint64_t t0 = net_test_now_ms();
    CHECK_EQ(held_release(NET_RPC_OK, "answered"), IN_FLIGHT);
    for (int i = 0; i < IN_FLIGHT; i++)
        outcome_expect(&o[i], NET_RPC_OK, "answered");
    client_closed_wait();
    CHECK(net_test_now_ms() - t0 < 5000);
    CHECK_EQ(atomic_load(&never.ran), 0);

    client_down();
    server_down();
}

static struct outcome close_on_loop[IN_FLIGHT];

static void close_on_loop_thread(void *arg)
{
    (void)arg;
    in_api = true;
    CHECK_OK(net_rpc_client_close(C.rpc, 0, client_closed, NULL));
    in_api = false;
    for (int i = 0; i < IN_FLIGHT; i++)
        CHECK_EQ(atomic_load(&close_on_loop[i].ran), 0); /* later, not inside */
    CHECK_EQ(atomic_load(&client_closes), 0);
}

TEST(rpc_client_close_on_loop_thread_completes_later)
{
    net_test_watchdog_start();
    both_up();

    for (int i = 0; i < IN_FLIGHT; i++)
        call_text(&close_on_loop[i], "sleep", "5000");
    WAIT_UNTIL(atomic_load(&S.sleeping) == IN_FLIGHT);
    net_test_on_loop(C.loop, close_on_loop_thread, NULL);
    for (int i = 0; i < IN_FLIGHT; i++)
        outcome_expect(&close_on_loop[i], NET_RPC_CANCELLED, "");
    client_closed_wait();

    client_down();
    server_down();
}

/* ---- many threads, one client ----------------------------------------------------------- */

#define MT_THREADS 8
#define MT_CALLS 10000
#define MT_WINDOW 64
#define MT_SYNC_EVERY 16

struct mt_worker {
    uint32_t index;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int in_flight;
    uint8_t async_ran[MT_CALLS]; /* client loop only, read after the end */
    uint8_t sync_ran[MT_CALLS];  /* this worker only */
};

static struct mt_worker mt[MT_THREADS];

static void mt_done(net_rpc_client_t *client, uint32_t status, const void *body, size_t len,
                    void *arg)
{
    (void)client;
    struct mt_worker *w = arg;
    CHECK_EQ(status, NET_RPC_OK);
    CHECK_EQ(len, 8);
    uint32_t v[2];
    memcpy(v, body, sizeof v);
    CHECK_EQ(v[0], w->index);
    CHECK(v[1] < MT_CALLS);
    CHECK_EQ(w->async_ran[v[1]]++, 0);
    pthread_mutex_lock(&w->mu);
    w->in_flight--;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

static void *mt_main(void *arg)
{
    struct mt_worker *w = arg;
    for (uint32_t seq = 0; seq < MT_CALLS; seq++) {
        uint32_t v[2] = {w->index, seq};
        if (seq % MT_SYNC_EVERY == 0) {
            uint32_t st;
            void *out;
            size_t n;
            CHECK_OK(net_rpc_call_sync(C.rpc, "echo", v, sizeof v, 0, &st, &out, &n));
            CHECK_EQ(st, NET_RPC_OK);
            CHECK_EQ(n, sizeof v);
            CHECK_MEM_EQ(out, v, n);
            free(out);
            w->sync_ran[seq]++;
            continue;
        }
        pthread_mutex_lock(&w->mu);
        while (w->in_flight >= MT_WINDOW)
            pthread_cond_wait(&w->cond, &w->mu);
        w->in_flight++;
        pthread_mutex_unlock(&w->mu);
        CHECK_OK(net_rpc_call(C.rpc, "echo", v, sizeof v, 0, mt_done, w));
    }
    pthread_mutex_lock(&w->mu);
    while (w->in_flight > 0)
        pthread_cond_wait(&w->cond, &w->mu);
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

TEST(rpc_8_threads_10k_calls_one_client)
{
    net_test_watchdog_start();
    server_options();
    srv.opt.server.io_threads = 1;
    server_up();
    client_options();
    client_up(&srv.addr);

    for (uint32_t i = 0; i < MT_THREADS; i++) {
        mt[i].index = i;
        pthread_mutex_init(&mt[i].mu, NULL);
        pthread_cond_init(&mt[i].cond, NULL);
        CHECK_EQ(pthread_create(&mt[i].thread, NULL, mt_main, &mt[i]), 0);
    }
    for (int i = 0; i < MT_THREADS; i++)
        pthread_join(mt[i].thread, NULL);
    for (int i = 0; i < MT_THREADS; i++) {
        for (int seq = 0; seq < MT_CALLS; seq++) {
            if (seq % MT_SYNC_EVERY == 0)
                CHECK_EQ(mt[i].sync_ran[seq] + mt[i].async_ran[seq], 1);
            else
                CHECK(mt[i].sync_ran[seq] == 0 && mt[i].async_ran[seq] == 1);
        }
        pthread_cond_destroy(&mt[i].cond);
        pthread_mutex_destroy(&mt[i].mu);
    }
    struct net_rpc_client_stats st = client_stats();
    CHECK_EQ(st.calls, MT_THREADS * MT_CALLS);
    CHECK_EQ(st.completed, MT_THREADS * MT_CALLS);
    CHECK_EQ(st.outstanding, 0);
    CHECK_EQ(atomic_load(&S.echoes), MT_THREADS * MT_CALLS);

    client_down();
    server_down();
}

TEST(rpc_8mib_bodies)
{
    net_test_watchdog_start();
    both_up();

    size_t len = (size_t)8 << 20;
    char *body = malloc(len);
    CHECK(body != NULL);
    struct outcome o[2] = {0};
    for (int i = 0; i < 2; i++) {
        pattern_fill(body, len, 100u + (uint32_t)i);
        call_async(&o[i], "echo", body, len, 0);
    }
    pattern_fill(body, len, 200);
    uint32_t st;
    void *out;
    size_t n;
    CHECK_OK(net_rpc_call_sync(C.rpc, "echo", body, len, 0, &st, &out, &n));
    CHECK_EQ(st, NET_RPC_OK);
    CHECK_EQ(n, len);
    CHECK(pattern_matches(out, n, 200));
    free(out);
    for (int i = 0; i < 2; i++) {
        outcome_wait(&o[i]);
        CHECK_EQ(o[i].status, NET_RPC_OK);
        CHECK_EQ(o[i].len, len);
        CHECK(pattern_matches(o[i].body, len, 100u + (uint32_t)i));
        free(o[i].body);
    }
    free(body);
    client_down();
    server_down();
}

/* ---- replies from elsewhere, and limits -------------------------------------------- */

#define HANDOFF_CALLS 200

TEST(rpc_reply_from_other_thread)
{
    net_test_watchdog_start();
    CHECK_EQ(pthread_create(&H.thread, NULL, handoff_main, NULL), 0);
    server_options();
    server_up();
    client_options();
    client_up(&srv.addr);

    static struct outcome o[HANDOFF_CALLS];
    char text[32], reversed[32];
    for (int i = 0; i < HANDOFF_CALLS; i++) {
        snprintf(text, sizeof text, "message %d", i);
        call_text(&o[i], "handoff", text);
        if (i % 50 == 0)
            sync_echo("mixed in"); /* loop-thread replies meanwhile */
    }
    for (int i = 0; i < HANDOFF_CALLS; i++) {
        snprintf(text, sizeof text, "message %d", i);
        size_t n = strlen(text);
        for (size_t k = 0; k < n; k++)
            reversed[k] = text[n - 1 - k];
        reversed[n] = '\0';
        outcome_expect(&o[i], NET_RPC_OK, reversed);
    }
    sync_expect("handoff", "abc", 3, NET_RPC_OK, "cba", 3);
    WAIT_UNTIL(atomic_load(&H.replied) == HANDOFF_CALLS + 1);

    client_down();
    server_down();
    net_test_handoff_quit(&H.q);
    pthread_join(H.thread, NULL);
}

static struct net_rpc_server_stats server_stats(void)
{
    struct net_rpc_server_stats st;
    net_rpc_server_stats(srv.server, &st);
    return st;
}

/* At max_in_flight the server stops reading the connection instead of
 * refusing: the 5th call waits in TCP until an earlier one is answered,
 * then it is served; nothing ends OVERLOADED. */
TEST(rpc_in_flight_limit_waits_for_room)
{
    net_test_watchdog_start();
    server_options();
    srv.opt.max_in_flight = 4;
    server_up();
    client_options();
    client_up(&srv.addr);

    struct outcome held[4] = {0}, fifth = {0}, echo = {0};
    for (int i = 0; i < 4; i++)
        call_text(&held[i], "hold", "wait");
    WAIT_UNTIL(atomic_load(&S.held.total) == 4);
    call_text(&fifth, "hold", "one more");
    call_text(&echo, "echo", "waits too");
    WAIT_UNTIL(server_stats().paused == 1);
    net_test_sleep_ms(50);
    CHECK_EQ(atomic_load(&S.held.total), 4); /* not decoded yet */
    CHECK(!atomic_load(&fifth.ran) && !atomic_load(&echo.ran));

    net_rpc_req_t *reqs[NET_TEST_MAX_HELD];
    CHECK_EQ(net_test_held_take(&S.held, reqs), 4);
    CHECK_OK(net_rpc_reply(reqs[0], NET_RPC_OK, "first", 5)); /* room for the 5th */
    outcome_expect(&held[0], NET_RPC_OK, "first");
    WAIT_UNTIL(atomic_load(&S.held.total) == 5);
    net_test_sleep_ms(50);
    CHECK(!atomic_load(&echo.ran)); /* 4 in flight again: the echo waits */
    for (int i = 1; i < 4; i++)
        CHECK_OK(net_rpc_reply(reqs[i], NET_RPC_OK, "released", 8));
    outcome_expect(&echo, NET_RPC_OK, "waits too");
    CHECK_EQ(held_release(NET_RPC_OK, "released"), 1);
    for (int i = 1; i < 4; i++)
        outcome_expect(&held[i], NET_RPC_OK, "released");
    outcome_expect(&fifth, NET_RPC_OK, "released");
    sync_echo("room again");
    struct net_rpc_server_stats st = server_stats();
    CHECK_EQ(st.paused, 0);
    CHECK(st.in_flight_pauses >= 1);
    CHECK_EQ(st.in_flight, 0);
    CHECK_EQ(client_stats().disconnected, 0);

    client_down();
    server_down();
}

TEST(rpc_blocking_handler_on_worker)
{
    net_test_watchdog_start();
    server_options();
    srv.opt.worker_threads = 2;
    server_up();
    client_options();
    client_up(&srv.addr);

    struct outcome block[2] = {0}, echo = {0};
    call_text(&block[0], "block", "first");
    call_text(&block[1], "block", "second");
    WAIT_UNTIL(atomic_load(&S.blocking_started) == 2); /* both workers busy */
    call_text(&echo, "echo", "responsive");
    outcome_expect(&echo, NET_RPC_OK, "responsive");
    atomic_store(&S.echo_seen_by_client, true);
    outcome_expect(&block[0], NET_RPC_OK, "first");
    outcome_expect(&block[1], NET_RPC_OK, "second");
    CHECK(echo.order < block[0].order && echo.order < block[1].order);

    client_down();
    server_down();
}

TEST(rpc_server_graceful_close)
{
    net_test_watchdog_start();
    both_up();

    struct outcome slow[3] = {0}, late = {0};
    for (int i = 0; i < 3; i++)
        call_text(&slow[i], "sleep", "200");
    WAIT_UNTIL(atomic_load(&S.sleeping) == 3);
    net_test_rpc_server_close_begin(&srv, 5000);
    call_text(&late, "echo", "too late");
    outcome_wait(&late);
    if (late.status == NET_RPC_SHUTTING_DOWN)
        outcome_expect(&late, NET_RPC_SHUTTING_DOWN, "server is shutting down");
    else
        outcome_expect(&late, NET_RPC_DISCONNECTED, "");
    for (int i = 0; i < 3; i++)
        outcome_expect(&slow[i], NET_RPC_OK, ""); /* in flight: answered */
    net_test_rpc_server_close_wait(&srv);
    net_test_sleep_ms(50);
    CHECK_EQ(atomic_load(&srv.closed), 1); /* once */
    CHECK_EQ(atomic_load(&S.echoes), 0);

    client_down();
    server_down();
}

/* A sync caller blocked in a call whose client is closed under it. */
static void *sync_sleep_call(void *arg)
{
    uint32_t *status = arg;
    void *body = (void *)1;
    size_t len = 1;
    CHECK_OK(net_rpc_call_sync(C.rpc, "sleep", "5000", 4, 0, status, &body, &len));
    CHECK(body == NULL && len == 0);
    return NULL;
}

#define SYNC_WAITERS 4

static void close_client_on_loop(void *arg)
{
    (void)arg;
    CHECK_OK(net_rpc_client_close(C.rpc, 0, client_closed, NULL));
}

/* The sync callers sleep in the client's waitset: closing the client must
 * wake them with CANCELLED, and done must wait until they have left (ASan
 * sees a use after free otherwise). */
TEST(rpc_client_close_wakes_sync_callers)
{
    net_test_watchdog_start();
    both_up();

    pthread_t t[SYNC_WAITERS];
    uint32_t status[SYNC_WAITERS];
    for (int i = 0; i < SYNC_WAITERS; i++) {
        status[i] = NET_RPC_OK;
        CHECK_EQ(pthread_create(&t[i], NULL, sync_sleep_call, &status[i]), 0);
    }
    WAIT_UNTIL(atomic_load(&S.sleeping) == SYNC_WAITERS);
    net_test_on_loop(C.loop, close_client_on_loop, NULL);
    for (int i = 0; i < SYNC_WAITERS; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ(status[i], NET_RPC_CANCELLED);
    }
    client_closed_wait();
    client_down(); /* the loop thread only: the client is gone */
    server_down();
}

static void call_sync_on_loop(void *arg)
{
    (void)arg;
    uint32_t st = 0;
    in_api = true;
    CHECK_EQ(net_rpc_call_sync(C.rpc, "echo", "x", 1, 0, &st, NULL, NULL), NET_EWRONGTHREAD);
    struct net_rpc_sync_reply r;
    CHECK_EQ(net_rpc_call_sync_with_attachment(C.rpc, "echo", "x", 1, NULL, 0, 0, &r),
             NET_EWRONGTHREAD);
    in_api = false;
}

TEST(rpc_call_sync_on_loop_thread_rejected)
{
    net_test_watchdog_start();
    both_up();

    net_test_on_loop(C.loop, call_sync_on_loop, NULL);
    CHECK_EQ(client_stats().calls, 0);
    sync_echo("fine from here");
    /* NRPC/1 has no attachment; without one the call is net_rpc_call_sync. */
    struct net_rpc_sync_reply r;
    CHECK_EQ(net_rpc_call_sync_with_attachment(C.rpc, "echo", "x", 1, "a", 1, 0, &r), -EINVAL);
    CHECK_OK(net_rpc_call_sync_with_attachment(C.rpc, "echo", "xy", 2, NULL, 0, 0, &r));
    CHECK(r.status == NET_RPC_OK && r.body_len == 2 && memcmp(r.body, "xy", 2) == 0);
    CHECK(r.attachment == NULL && r.attachment_len == 0);
    free(r.body);

    client_down();
    server_down();
}

#define LIMIT 8
#define LIMIT_CALLS 2000

TEST(rpc_client_outstanding_limit)
{
    net_test_watchdog_start();
    server_options();
    server_up();
    client_options();
    C.opt.max_outstanding = LIMIT;
    client_up(&srv.addr);

    static struct outcome o[LIMIT_CALLS];
    for (int i = 0; i < LIMIT_CALLS; i++)
        call_text(&o[i], "hold", "h");
    /* The first LIMIT were admitted and stay held; every later one was
     * refused while they were outstanding (never encoded nor sent). */
    for (int i = LIMIT; i < LIMIT_CALLS; i++)
        outcome_expect(&o[i], NET_RPC_OVERLOADED, "");
    WAIT_UNTIL(atomic_load(&S.held.total) == LIMIT);
    CHECK_EQ(client_stats().outstanding, LIMIT);
    CHECK_EQ(client_stats().calls, LIMIT_CALLS);
    for (int i = 0; i < LIMIT; i++)
        CHECK_EQ(atomic_load(&o[i].ran), 0);

    CHECK_EQ(held_release(NET_RPC_OK, "done"), LIMIT);
    for (int i = 0; i < LIMIT; i++)
        outcome_expect(&o[i], NET_RPC_OK, "done");
    CHECK_EQ(client_stats().outstanding, 0);
    sync_echo("admitted again");
    CHECK_EQ(atomic_load(&S.held.total), LIMIT);

    client_down();
    server_down();
}

/* ---- connecting ---------------------------------------------------------------------- */

static struct outcome early;

static void create_and_call_at_once(void *arg)
{
    (void)arg;
    CHECK_OK(net_rpc_client_new(C.loop, &C.addr, &C.opt, &C.rpc));
    CHECK(!net_rpc_client_connected(C.rpc));
    in_api = true;
    call_text(&early, "echo", "early bird");
    in_api = false;
}

TEST(rpc_call_before_connected_waits)
{
    net_test_watchdog_start();
    server_options();
    server_up();
    client_options();
    net_test_rpc_client_start_thread(&C, &srv.addr);
    net_test_on_loop(C.loop, create_and_call_at_once, NULL);
    outcome_expect(&early, NET_RPC_OK, "early bird");
    CHECK(net_rpc_client_connected(C.rpc));
    CHECK_EQ(client_stats().disconnected, 0);

    client_down();
    server_down();
}

/* fail_fast: a call made while not connected ends with the next failed
 * attempt (the backoff retries at once, then after 100 ms). */
TEST(rpc_connect_refused_fails_disconnected)
{
    net_test_watchdog_start();
    /* A bound port that does not listen refuses connects, and nobody else
     * can take it meanwhile. */
    net_addr_t addr;
    int fd = bound_socket(&addr);

    client_options();
    C.opt.fail_fast = true;
    client_up(&addr);
    struct outcome o[2] = {0};
    uint64_t t0 = net_test_now_ms();
    call_text(&o[0], "echo", "nobody");
    outcome_expect(&o[0], NET_RPC_DISCONNECTED, "");
    /* Promptly: long before the 5 s connect timeout could have ended it. */
    CHECK(net_test_now_ms() - t0 < 4000);
    call_text(&o[1], "echo", "still nobody"); /* the next attempt fails again */
    outcome_expect(&o[1], NET_RPC_DISCONNECTED, "");
    net_test_sleep_ms(50);
    struct net_rpc_client_stats st = client_stats();
    CHECK_EQ(st.disconnected, 2);
    CHECK_EQ(st.completed, 2);
    CHECK_EQ(st.outstanding, 0);
    CHECK(!net_rpc_client_connected(C.rpc));

    client_down();
    close(fd);
}

/* ---- replies that outlive their connection or server ---------------------------------- */

static net_rpc_req_t *held_first(void)
{
    net_rpc_req_t *reqs[NET_TEST_MAX_HELD];
    CHECK_EQ(net_test_held_take(&S.held, reqs), 1);
    return reqs[0];
}

/* A client that closes (FIN) with a call held is still answered: to the
 * server a close looks like a half-close, and every request read gets its
 * reply before the server closes (the client has gone: the bytes are
 * dropped). A peer that resets is gone at once, and a reply after that is
 * a safe no-op. */
TEST(rpc_reply_after_connection_closed_is_safe)
{
    net_test_watchdog_start();
    both_up();

    struct outcome o = {0};
    call_text(&o, "hold", "keep me");
    WAIT_UNTIL(atomic_load(&S.held.total) == 1);
    net_rpc_req_t *req = held_first();
    CHECK_EQ(strcmp(net_rpc_req_method(req), "hold"), 0);
    net_conn_t *conn = net_conn_ref(net_rpc_req_conn(req));
    client_down(); /* the call ends CANCELLED before the close's done */
    CHECK_EQ(atomic_load(&o.ran), 1);
    CHECK_EQ(o.status, NET_RPC_CANCELLED);
    net_test_sleep_ms(50);
    CHECK(net_conn_state(conn) != NET_CONN_DISCONNECTED); /* waits for its answer */
    CHECK_EQ(net_rpc_reply(req, NET_RPC_OK, "nobody listens", 14), 0);
    WAIT_UNTIL(net_conn_state(conn) == NET_CONN_DISCONNECTED);
    net_conn_unref(conn);

    int fd = raw_connect();
    net_buf_t frame = NET_BUF_INIT;
    CHECK_OK(net__rpc_encode_request(&frame, 1, "hold", 4, "raw", 3));
    CHECK(net_test_send_all(fd, net_buf_peek(&frame), net_buf_readable(&frame)));
    net_buf_destroy(&frame);
    WAIT_UNTIL(atomic_load(&S.held.total) == 2);
    req = held_first();
    conn = net_conn_ref(net_rpc_req_conn(req));
    net_test_close_reset(fd);
    WAIT_UNTIL(net_conn_state(conn) == NET_CONN_DISCONNECTED);
    CHECK_EQ(net_rpc_reply(req, NET_RPC_OK, "nobody listens", 14), 0);
    net_conn_unref(conn);

    server_down();
}

TEST(rpc_reply_after_server_close_is_safe)
{
    net_test_watchdog_start();
    server_options();
    srv.opt.server.io_threads = 1; /* the connection's loop goes with the server */
    server_up();
    client_options();
    client_up(&srv.addr);

    struct outcome o = {0};
    call_text(&o, "hold", "keep me");
    WAIT_UNTIL(atomic_load(&S.held.total) == 1);
    net_rpc_req_t *req = held_first();
    net_test_rpc_server_close(&srv, 0);
    outcome_expect(&o, NET_RPC_DISCONNECTED, "");
    CHECK_EQ(net_rpc_reply(req, NET_RPC_OK, "into the void", 13), 0);

    client_down();
    server_down();
}

/* ---- a server that breaks the protocol ------------------------------------------------ */

TEST(rpc_client_max_frame_protocol_error_then_reconnects)
{
    net_test_watchdog_start();
    server_options();
    server_up();
    client_options();
    C.opt.max_frame = 1024;
    C.opt.client.retry_initial_ms = 10;
    client_up(&srv.addr);

    sync_echo("small");
    uint64_t first_conn = atomic_load(&S.echo_conn);
    /* The request fits the server; the echoed response is over the
     * client's limit, which refuses it from its header. */
    char big[1024];
    pattern_fill(big, sizeof big, 3);
    struct outcome o = {0};
    call_async(&o, "echo", big, sizeof big, 0);
    outcome_expect(&o, NET_RPC_PROTOCOL_ERROR, "");
    /* Reconnect is on. A call made while the old connection is still
     * closing may end DISCONNECTED (it was made while disconnected); once
     * the new one is up, calls succeed. */
    uint32_t st = NET_RPC_DISCONNECTED;
    for (int i = 0; i < 200 && st == NET_RPC_DISCONNECTED; i++) {
        void *out = NULL;
        size_t n = 0;
        CHECK_OK(net_rpc_call_sync(C.rpc, "echo", "again", 5, 0, &st, &out, &n));
        if (st == NET_RPC_OK)
            CHECK(n == 5 && memcmp(out, "again", 5) == 0);
        else
            net_test_sleep_ms(5);
        free(out);
    }
    CHECK_EQ(st, NET_RPC_OK);
    CHECK(atomic_load(&S.echo_conn) != first_conn);
    size_t fits = 1024 - 24;
    sync_expect("echo", big, fits, NET_RPC_OK, big, fits); /* exactly the maximum */

    client_down();
    server_down();
}


TEST(rpc_client_protocol_error_fails_calls)
{
    net_test_watchdog_start();
    net_addr_t addr;
    int lfd = bound_socket(&addr);
    CHECK_EQ(listen(lfd, 4), 0);

    client_options();
    client_up(&addr);
    struct outcome good = {0}, bad[2] = {0};
    call_text(&good, "echo", "a");
    call_text(&bad[0], "echo", "b");
    call_text(&bad[1], "echo", "c");
    int fd = accept(lfd, NULL, NULL);
    CHECK(fd >= 0);
    struct timeval tv = {.tv_sec = 10};
    CHECK_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    char req[3 * 29];
    net_test_recv_exact(fd, req, sizeof req); /* three requests of 24 + 4 + 1 */
    uint64_t first_id = 0;
    for (int i = 0; i < 8; i++)
        first_id = first_id << 8 | (uint8_t)req[8 + i];
    /* An answer to the first call, a stray answer, then a request. */
    net_buf_t out = NET_BUF_INIT;
    CHECK_OK(net__rpc_encode_response(&out, first_id, NET_RPC_OK, "a", 1));
    CHECK_OK(net__rpc_encode_response(&out, 987654321, NET_RPC_OK, "stray", 5));
    CHECK_OK(net__rpc_encode_request(&out, 1, "echo", 4, NULL, 0));
    CHECK(net_test_send_all(fd, net_buf_peek(&out), net_buf_readable(&out)));
    net_buf_destroy(&out);
    outcome_expect(&good, NET_RPC_OK, "a");
    outcome_expect(&bad[0], NET_RPC_PROTOCOL_ERROR, "");
    outcome_expect(&bad[1], NET_RPC_PROTOCOL_ERROR, "");
    CHECK_EQ(raw_drain_until_closed(fd), 0); /* the client closed it */
    close(fd);
    struct net_rpc_client_stats st = client_stats();
    CHECK_EQ(st.late_replies, 1);
    CHECK_EQ(st.outstanding, 0);

    client_down();
    close(lfd);
}
