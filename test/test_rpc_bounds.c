/* The RPC server's bounds against hostile or careless peers, loopback only:
 * a client that pipelines without reading, the in-flight limit (a pause,
 * not OVERLOADED), half-close and protocol errors that still answer what
 * was read, frame and idle deadlines, the memory budget against many
 * unfinished large frames, memory given back after a large call, blocking
 * bodies bounded by the budget, and the user's context slot.
 *
 * The server runs on a loop thread (rpc_fixture.h); most peers are raw
 * sockets speaking NRPC/1 through the internal codec, so every byte and id
 * can be checked; the honest clients are net_rpc_client. Request bodies are
 * a function of their id (stream_fill), so each reply is checked byte for
 * byte without a copy. Counts scale down in sanitized builds; every wait is
 * bounded and a watchdog fails a scenario that hangs. No timing is asserted
 * beyond "not before the deadline". */
#include <poll.h>
#include <stdatomic.h>

#include "faults_common.h"
#include "rpc/rpc_codec.h"
#include "rpc_fixture.h"

/* ---- the server under test ----------------------------------------------------------- */

static struct net_test_rpc_server srv;

static struct {
    _Atomic(net_conn_t *) first_conn; /* the first echo's connection, with a reference */
    struct net_test_held held;        /* "hold" requests */
    atomic_int sleeps, slept;         /* "sleep" requests received, answered */
    atomic_int busy, busy_max;        /* "handoff" and "work" being handled now, at most */
    atomic_bool gate;                 /* lets "gated" requests go on */
    atomic_int work_started;
} S = {.held = NET_TEST_HELD_INIT};

static void echo_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    net_conn_t *none = NULL, *conn = net_rpc_req_conn(req);
    if (atomic_compare_exchange_strong(&S.first_conn, &none, conn))
        net_conn_ref(conn);
    CHECK_OK(net_rpc_reply(req, NET_RPC_OK, body, len));
}

struct sleeper {
    net_rpc_req_t *req;
    size_t len;
    char body[16];
};

static void sleep_wake(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    struct sleeper *z = arg;
    CHECK_OK(net_rpc_reply(z->req, NET_RPC_OK, z->body, z->len));
    free(z);
    atomic_fetch_add(&S.slept, 1);
}

/* "sleep": the body is a decimal count of milliseconds; the reply (the same
 * body) comes from a timer on the server's loop. */
static void sleep_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    struct sleeper *z = malloc(sizeof *z);
    CHECK(z != NULL && len > 0 && len < sizeof z->body);
    *z = (struct sleeper){.req = req, .len = len};
    memcpy(z->body, body, len);
    z->body[len] = '\0';
    atomic_fetch_add(&S.sleeps, 1);
    CHECK(net_loop_run_after(srv.loop, strtoull(z->body, NULL, 10), sleep_wake, z) > 0);
}

static void hold_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)body, (void)len, (void)arg;
    net_test_hold(&S.held, req);
}

/* "handoff" and "work" count how many are being handled at once; the
 * count falls before the reply, so it never exceeds the server's. */
static void busy_enter(void)
{
    int now = atomic_fetch_add(&S.busy, 1) + 1;
    for (int max = atomic_load(&S.busy_max); now > max;)
        if (atomic_compare_exchange_weak(&S.busy_max, &max, now))
            break;
}

static void busy_reply(net_rpc_req_t *req, const void *body, size_t len)
{
    atomic_fetch_sub(&S.busy, 1);
    CHECK_OK(net_rpc_reply(req, NET_RPC_OK, body, len));
}

/* "work" runs on the worker pool and echoes. */
static void work_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    busy_enter();
    busy_reply(req, body, len);
}

/* "gated" (worker pool too) waits for the gate, then echoes. */
static void gated_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    atomic_fetch_add(&S.work_started, 1);
    WAIT_UNTIL(atomic_load(&S.gate));
    CHECK_OK(net_rpc_reply(req, NET_RPC_OK, body, len));
}

/* "handoff" goes to our replier threads, which echo after a short pause. */
#define REPLIERS 2

static struct {
    struct net_test_handoff_queue q;
    pthread_t threads[REPLIERS];
} H = {.q = NET_TEST_HANDOFF_QUEUE_INIT};

static void handoff_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    busy_enter();
    net_test_handoff_push(&H.q, req, body, len);
}

static void *replier_main(void *arg)
{
    uint64_t rng = 0x9E3779B97F4A7C15ull ^ (uintptr_t)arg;
    for (struct net_test_handoff *h; (h = net_test_handoff_pop(&H.q));) {
        usleep((useconds_t)(rng_next(&rng) % 200));
        busy_reply(h->req, h->body, h->len);
        free(h);
    }
    return NULL;
}

/* "context": the handler uses the connection's user slot, which the server
 * used to keep its session in. */
static void context_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    net_conn_t *conn = net_rpc_req_conn(req);
    void *mine = (void *)(uintptr_t)0x5EED;
    CHECK(net_conn_context(conn) == NULL || net_conn_context(conn) == mine);
    net_conn_set_context(conn, mine);
    CHECK_OK(net_rpc_reply(req, NET_RPC_OK, body, len));
}

static void add_methods(net_rpc_server_t *server)
{
    CHECK_OK(net_rpc_server_register(server, "echo", echo_method, NULL, false));
    CHECK_OK(net_rpc_server_register(server, "sleep", sleep_method, NULL, false));
    CHECK_OK(net_rpc_server_register(server, "hold", hold_method, NULL, false));
    CHECK_OK(net_rpc_server_register(server, "handoff", handoff_method, NULL, false));
    CHECK_OK(net_rpc_server_register(server, "context", context_method, NULL, false));
    if (srv.opt.worker_threads) {
        CHECK_OK(net_rpc_server_register(server, "work", work_method, NULL, true));
        CHECK_OK(net_rpc_server_register(server, "gated", gated_method, NULL, true));
    }
}

/* Options for the scenario to change before server_up(). */
static void server_options(void)
{
    net_test_rpc_server_init(&srv, add_methods);
}

static void server_up(void)
{
    for (uintptr_t i = 0; i < REPLIERS; i++)
        CHECK_EQ(pthread_create(&H.threads[i], NULL, replier_main, (void *)i), 0);
    net_test_rpc_server_up(&srv);
}

static void server_down(void)
{
    CHECK_EQ(atomic_load(&S.slept), atomic_load(&S.sleeps)); /* no timer left behind */
    CHECK_EQ(S.held.n, 0);
    net_test_handoff_quit(&H.q);
    for (int i = 0; i < REPLIERS; i++)
        CHECK_EQ(pthread_join(H.threads[i], NULL), 0);
    net_conn_unref(atomic_exchange(&S.first_conn, NULL));
    net_test_rpc_server_down(&srv, 1000);
}

static struct net_rpc_server_stats stats(void)
{
    struct net_rpc_server_stats st;
    net_rpc_server_stats(srv.server, &st);
    return st;
}

/* ---- raw NRPC/1 ------------------------------------------------------------------------ */

/* The body of request `id`: a function of the id, so it is checked without
 * a copy. */
static void body_fill(char *p, uint64_t id, size_t len)
{
    stream_fill(p, id << 24, len);
}

static void add_request(net_buf_t *out, uint64_t id, const char *method, const void *body,
                        size_t len)
{
    CHECK_OK(net__rpc_encode_request(out, id, method, strlen(method), body, len));
}

/* An echo request whose body is body_fill(id, len). */
static void add_echo(net_buf_t *out, uint64_t id, size_t len)
{
    char body[4096];
    CHECK(len <= sizeof body);
    body_fill(body, id, len);
    add_request(out, id, "echo", body, len);
}

static void send_buf(int fd, net_buf_t *b)
{
    CHECK(net_test_send_all(fd, net_buf_peek(b), net_buf_readable(b)));
    net_buf_destroy(b);
}

struct reply {
    struct net__rpc_header hdr;
    char *body; /* malloc'd, hdr.body_len bytes */
};

/* Reads one response (its header checked by the codec); false at a clean
 * EOF before its first byte. */
static bool read_reply(int fd, struct reply *r)
{
    uint8_t h[NET__RPC_HEADER_LEN];
    ssize_t n = recv(fd, h, 1, 0);
    if (n == 0)
        return false;
    if (n != 1)
        net_test_fail(__FILE__, __LINE__, "recv: %s", n < 0 ? strerror(errno) : "short");
    net_test_recv_exact(fd, h + 1, sizeof h - 1);
    CHECK_OK(net__rpc_header_parse(h, 0, &r->hdr, NULL));
    CHECK_EQ(r->hdr.type, NET__RPC_TYPE_RESPONSE);
    r->body = malloc(r->hdr.body_len + 1u);
    CHECK(r->body != NULL);
    net_test_recv_exact(fd, r->body, r->hdr.body_len);
    return true;
}

/* The next reply must be OK for call `id` with exactly this body. */
static void expect_reply(int fd, uint64_t id, const void *body, size_t len)
{
    struct reply r;
    CHECK(read_reply(fd, &r));
    CHECK_EQ(r.hdr.call_id, id);
    CHECK_EQ(r.hdr.status, NET_RPC_OK);
    CHECK_EQ(r.hdr.body_len, len);
    CHECK_MEM_EQ(r.body, body, len);
    free(r.body);
}

static void expect_eof(int fd)
{
    char c;
    ssize_t n = recv(fd, &c, 1, 0);
    if (n != 0)
        net_test_fail(__FILE__, __LINE__, "expected EOF, got %zd (%s)", n,
                      n < 0 ? strerror(errno) : "a byte");
}

/* Which ids came back, each exactly once. */
struct seen {
    uint8_t *ids;
    size_t n, count;
};

static void seen_init(struct seen *s, size_t n)
{
    *s = (struct seen){.ids = calloc(n, 1), .n = n};
    CHECK(s->ids != NULL);
}

static void seen_mark(struct seen *s, uint64_t id)
{
    CHECK(id < s->n);
    if (s->ids[id]++)
        net_test_fail(__FILE__, __LINE__, "id %" PRIu64 " answered twice", id);
    s->count++;
}

/* Reads n echo replies in any order; each must carry its own body. */
static void read_echo_replies(int fd, size_t n, size_t len)
{
    struct seen s;
    seen_init(&s, n);
    char *want = malloc(len + 1);
    CHECK(want != NULL);
    for (size_t i = 0; i < n; i++) {
        struct reply r;
        CHECK(read_reply(fd, &r));
        CHECK_EQ(r.hdr.status, NET_RPC_OK);
        CHECK_EQ(r.hdr.body_len, len);
        seen_mark(&s, r.hdr.call_id);
        body_fill(want, r.hdr.call_id, len);
        CHECK_MEM_EQ(r.body, want, len);
        free(r.body);
    }
    CHECK_EQ(s.count, n);
    free(want);
    free(s.ids);
}

/* A writer thread for requests the server may take slowly. */
struct writer {
    int fd;
    size_t n, len;          /* echo requests 0..n-1 of len bytes */
    atomic_size_t sent;     /* requests sent so far */
    struct net_test_job job;
};

static void writer_main(void *arg)
{
    struct writer *w = arg;
    for (size_t i = 0; i < w->n;) {
        net_buf_t out = NET_BUF_INIT;
        size_t end = i + 64 < w->n ? i + 64 : w->n;
        for (; i < end; i++)
            add_echo(&out, i, w->len);
        send_buf(w->fd, &out);
        atomic_store(&w->sent, end);
    }
}

/* ======================================================================== */
/* A client that pipelines and does not read                                 */
/* ======================================================================== */

#define PIPE_N SCALED(200000, 20000)
#define PIPE_LEN 1024
#define PIPE_SLACK (1 * MiB)

/* Waits until the writer has made no progress for 300 ms (the server
 * stopped reading), watching the server's memory and the connection's
 * queued replies meanwhile; returns the most memory it saw. */
static size_t wait_writer_stuck(struct writer *w, net_conn_t **conn)
{
    size_t most = 0, most_queued = 0, last = SIZE_MAX;
    uint64_t since = net_test_now_ms(), deadline = since + NET_TEST_WAIT_MS;
    while (net_test_now_ms() - since < 300) {
        CHECK(net_test_now_ms() < deadline);
        struct net_rpc_server_stats st = stats();
        most = st.tcp.memory_used > most ? st.tcp.memory_used : most;
        if ((*conn = atomic_load(&S.first_conn))) {
            struct net_conn_stats cs;
            net_conn_stats(*conn, &cs);
            if (cs.output_queued > 4 * MiB + PIPE_SLACK)
                net_test_fail(__FILE__, __LINE__, "%zu bytes of replies queued",
                              cs.output_queued);
            most_queued = cs.output_queued > most_queued ? cs.output_queued : most_queued;
        }
        size_t sent = atomic_load(&w->sent);
        if (sent != last)
            since = net_test_now_ms();
        last = sent;
        net_test_sleep_ms(5);
    }
    printf("not reading: at most %zu bytes held, %zu replies queued; %zu of %zu requests sent\n",
           most, most_queued, atomic_load(&w->sent), w->n);
    return most;
}

TEST(rpc_pipeline_unread_bounded_then_all_replies)
{
    net_test_watchdog_start();
    server_options();
    server_up();
    struct writer w = {.fd = net_test_connect(&srv.addr, 0), .n = PIPE_N, .len = PIPE_LEN};
    net_test_job_start(&w.job, writer_main, &w);

    net_conn_t *conn = NULL;
    size_t most = wait_writer_stuck(&w, &conn);
    CHECK(conn != NULL);
    CHECK(atomic_load(&w.sent) < PIPE_N); /* TCP holds the client back */
    CHECK(most <= 4 * MiB + PIPE_SLACK);  /* backpressure_mark (default) + one read */
    CHECK_EQ(stats().paused, 0);          /* echo never fills max_in_flight */
    CHECK(stats().output_pauses > 0);

    read_echo_replies(w.fd, PIPE_N, PIPE_LEN);
    net_test_job_join(&w.job);
    shutdown(w.fd, SHUT_WR);
    expect_eof(w.fd);
    close(w.fd);
    struct net_rpc_server_stats st = stats();
    CHECK_EQ(st.in_flight, 0);
    CHECK_EQ(st.protocol_errors, 0);
    server_down();
}

/* ======================================================================== */
/* The in-flight limit: a pause, never OVERLOADED                           */
/* ======================================================================== */

#define LIMIT_N SCALED(5000, 1000)
#define LIMIT 8

/* Requests alternate "handoff" (replier threads), "work" (the worker pool)
 * and "echo" (the loop); every body is body_fill(id, 100). */
static void limit_requests(net_buf_t *out)
{
    static const char *const methods[] = {"handoff", "work", "echo"};
    char body[100];
    for (uint64_t id = 0; id < LIMIT_N; id++) {
        body_fill(body, id, sizeof body);
        add_request(out, id, methods[id % 3], body, sizeof body);
    }
}

TEST(rpc_in_flight_limit_pauses_not_overloaded)
{
    net_test_watchdog_start();
    server_options();
    srv.opt.max_in_flight = LIMIT;
    srv.opt.worker_threads = 2;
    server_up();
    int fd = net_test_connect(&srv.addr, 0);
    net_buf_t out = NET_BUF_INIT;
    limit_requests(&out);
    CHECK(net_test_send_all(fd, net_buf_peek(&out), net_buf_readable(&out)));
    net_buf_destroy(&out);

    read_echo_replies(fd, LIMIT_N, 100); /* all OK, each id once, its own body */
    CHECK(atomic_load(&S.busy_max) <= LIMIT);
    /* A replier thread counts its request answered just after the reply is
     * queued (before, the loop could end a connection under it): the last
     * reply may arrive here first. */
    WAIT_UNTIL(stats().in_flight == 0);
    struct net_rpc_server_stats st = stats();
    CHECK(st.in_flight_pauses > 0);
    CHECK_EQ(st.paused, 0);
    CHECK_EQ(st.worker_refusals, 0);
    shutdown(fd, SHUT_WR);
    expect_eof(fd);
    close(fd);
    server_down();
}

/* ======================================================================== */
/* Half-close and protocol errors: what was read is answered               */
/* ======================================================================== */

#define HALF_N 1000

TEST(rpc_half_close_answers_async)
{
    net_test_watchdog_start();
    server_options();
    server_up();
    int fd = net_test_connect(&srv.addr, 0);
    net_buf_t out = NET_BUF_INIT;
    for (uint64_t id = 0; id < HALF_N; id++) {
        if (id % 100 == 50)
            add_request(&out, id, "sleep", "200", 3);
        else
            add_echo(&out, id, id % 300);
    }
    send_buf(fd, &out);
    CHECK_EQ(shutdown(fd, SHUT_WR), 0);

    struct seen s;
    seen_init(&s, HALF_N);
    char want[300];
    for (int i = 0; i < HALF_N; i++) {
        struct reply r;
        CHECK(read_reply(fd, &r));
        uint64_t id = r.hdr.call_id;
        seen_mark(&s, id);
        CHECK_EQ(r.hdr.status, NET_RPC_OK);
        size_t len = id % 100 == 50 ? 3 : id % 300;
        CHECK_EQ(r.hdr.body_len, len);
        if (id % 100 == 50)
            memcpy(want, "200", 3);
        else
            body_fill(want, id, len);
        CHECK_MEM_EQ(r.body, want, len);
        free(r.body);
    }
    expect_eof(fd); /* then the server's FIN, nothing more */
    close(fd);
    CHECK_EQ(s.count, HALF_N);
    CHECK_EQ(atomic_load(&S.slept), 10);
    free(s.ids);
    WAIT_UNTIL(stats().tcp.connections == 0);
    server_down();
}

static const char garbage[] = "GET / HTTP/1.1\r\n\r\n";

TEST(rpc_good_then_bad_frame_one_write)
{
    net_test_watchdog_start();
    server_options();
    server_up();

    /* A loop-thread reply batched in the same read as the bad frame. */
    int fd = net_test_connect(&srv.addr, 0);
    net_buf_t out = NET_BUF_INIT, want = NET_BUF_INIT;
    add_echo(&out, 1, 5);
    CHECK_OK(net_buf_append(&out, garbage, sizeof garbage - 1));
    char body[5];
    body_fill(body, 1, 5);
    CHECK_OK(net__rpc_encode_response(&want, 1, NET_RPC_OK, body, 5));
    send_buf(fd, &out);
    char got[64];
    net_test_recv_exact(fd, got, net_buf_readable(&want));
    CHECK_MEM_EQ(got, net_buf_peek(&want), net_buf_readable(&want)); /* byte-exact */
    net_buf_destroy(&want);
    expect_eof(fd);
    close(fd);

    /* An async reply still owed when the bad frame comes: it comes first. */
    fd = net_test_connect(&srv.addr, 0);
    add_request(&out, 2, "sleep", "200", 3);
    add_echo(&out, 3, 40);
    CHECK_OK(net_buf_append(&out, garbage, sizeof garbage - 1));
    add_echo(&out, 4, 40); /* after the bad frame: never read as a request */
    send_buf(fd, &out);
    char echo[40];
    body_fill(echo, 3, sizeof echo);
    expect_reply(fd, 3, echo, sizeof echo);
    expect_reply(fd, 2, "200", 3);
    expect_eof(fd);
    close(fd);

    struct net_rpc_server_stats st = stats();
    CHECK_EQ(st.protocol_errors, 2);
    CHECK_EQ(st.in_flight, 0);
    WAIT_UNTIL(stats().tcp.connections == 0);
    server_down();
}

/* A frame announced over max_frame, or over the memory budget, is refused
 * on its header: the server closes without waiting for the body. */
TEST(rpc_oversized_frames_refused_on_header)
{
    net_test_watchdog_start();
    server_options();
    srv.opt.max_frame = 4 * MiB;
    srv.opt.server.memory_budget = 2 * MiB;
    server_up();
    static const uint32_t bodies[] = {4 * MiB, 3 * MiB}; /* over max_frame, over the budget */
    for (int i = 0; i < 2; i++) {
        int fd = net_test_connect(&srv.addr, 0);
        net_buf_t out = NET_BUF_INIT;
        add_echo(&out, 1, 10);
        uint8_t h[NET__RPC_HEADER_LEN];
        struct net__rpc_header hdr = {.version = NET__RPC_VERSION, .type = NET__RPC_TYPE_REQUEST,
                                      .method_len = 4, .call_id = 2, .body_len = bodies[i]};
        net__rpc_header_pack(h, &hdr);
        CHECK_OK(net_buf_append(&out, h, sizeof h));
        CHECK_OK(net_buf_append(&out, "echo", 4)); /* and none of the body */
        send_buf(fd, &out);
        char body[10];
        body_fill(body, 1, sizeof body);
        expect_reply(fd, 1, body, sizeof body);
        expect_eof(fd);
        close(fd);
    }
    CHECK_EQ(stats().protocol_errors, 2);
    server_down();
}

/* ======================================================================== */
/* Deadlines                                                                */
/* ======================================================================== */

/* Sends one byte if the socket takes it; reads what came into *got (up to
 * cap). Returns true once the server's EOF was read. */
static bool trickle_step(int fd, const char *byte, char *got, size_t *have, size_t cap)
{
    send(fd, byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL); /* may fail once the server closed */
    for (;;) {
        ssize_t n = recv(fd, got + *have, cap - *have, MSG_DONTWAIT);
        if (n == 0)
            return true;
        if (n < 0) {
            CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
            return false;
        }
        *have += (size_t)n;
        CHECK(*have < cap);
    }
}

TEST(rpc_frame_timeout_closes_partial)
{
    net_test_watchdog_start();
    server_options();
    srv.opt.frame_timeout_ms = 300;
    server_up();

    /* A frame finished in pieces within the timeout is served. */
    int fd = net_test_connect(&srv.addr, 0);
    net_buf_t out = NET_BUF_INIT;
    add_echo(&out, 1, 60);
    for (size_t off = 0, n = net_buf_readable(&out); off < n; off += 30) {
        CHECK(net_test_send_all(fd, (const char *)net_buf_peek(&out) + off, n - off < 30 ? n - off : 30));
        net_test_sleep_ms(40);
    }
    net_buf_destroy(&out);
    char body[60];
    body_fill(body, 1, sizeof body);
    expect_reply(fd, 1, body, sizeof body);

    /* A request in flight, then a frame trickled a byte at a time: the
     * trickle does not extend the deadline; the request is still answered. */
    add_request(&out, 2, "sleep", "500", 3);
    add_echo(&out, 3, 60);
    size_t whole = net_buf_readable(&out);
    const char *p = net_buf_peek(&out);
    CHECK(net_test_send_all(fd, p, whole - 50)); /* the sleep, and 38 bytes of the echo */
    uint64_t start = net_test_now_ms();
    char got[256];
    size_t have = 0;
    while (!trickle_step(fd, p + whole - 50, got, &have, sizeof got)) {
        CHECK(net_test_now_ms() - start < NET_TEST_WAIT_MS);
        net_test_sleep_ms(20);
    }
    CHECK(net_test_now_ms() - start >= 300);
    net_buf_t want = NET_BUF_INIT;
    CHECK_OK(net__rpc_encode_response(&want, 2, NET_RPC_OK, "500", 3));
    CHECK_EQ(have, net_buf_readable(&want)); /* only the sleep's reply, byte-exact */
    CHECK_MEM_EQ(got, net_buf_peek(&want), have);
    net_buf_destroy(&want);
    net_buf_destroy(&out);
    close(fd);
    CHECK_EQ(stats().frame_timeouts, 1);
    CHECK_EQ(stats().idle_closes, 0);
    server_down();
}

/* Reads until EOF with nothing before it; returns when it came. */
static uint64_t wait_eof(int fd)
{
    expect_eof(fd);
    return net_test_now_ms();
}

TEST(rpc_idle_timeout_spares_in_flight)
{
    net_test_watchdog_start();
    server_options();
    srv.opt.idle_timeout_ms = 200;
    server_up();
    struct net_test_rpc_client c;
    net_test_rpc_client_init(&c);
    net_test_rpc_client_up(&c, &srv.addr);

    int quiet = net_test_connect(&srv.addr, 0), slow = net_test_connect(&srv.addr, 0);
    net_buf_t out = NET_BUF_INIT;
    add_request(&out, 7, "sleep", "1000", 4);
    send_buf(slow, &out);
    uint64_t t0 = net_test_now_ms();
    /* The client calls every 50 ms meanwhile: never idle. */
    for (int i = 0; i < 16; i++) {
        uint32_t st;
        void *body;
        size_t len;
        CHECK_OK(net_rpc_call_sync(c.rpc, "echo", "busy", 4, 0, &st, &body, &len));
        CHECK_EQ(st, NET_RPC_OK);
        CHECK(len == 4 && memcmp(body, "busy", 4) == 0);
        free(body);
        net_test_sleep_ms(50);
    }
    CHECK_EQ(stats().tcp.accepted, 3); /* the client was not closed while it called */
    expect_reply(slow, 7, "1000", 4); /* in flight for 1 s: not closed meanwhile */
    uint64_t answered = net_test_now_ms();
    CHECK(answered - t0 >= 1000);
    expect_eof(quiet);
    CHECK(wait_eof(slow) - answered >= 200 - 10); /* idle from the reply on */
    close(quiet);
    close(slow);
    WAIT_UNTIL(stats().idle_closes >= 3); /* the client's too, once it stopped calling */
    net_test_rpc_client_down(&c);
    server_down();
}

/* ======================================================================== */
/* Memory                                                                   */
/* ======================================================================== */

#define BUDGET (16 * MiB)
#define HOSTILE SCALED(20, 10)
#define HOSTILE_FRAME (8 * MiB)

/* One hostile peer: the header of an 8 MiB frame and as much of its body
 * (never all) as the server takes. */
struct hostile {
    int fd;
    size_t sent, total;
};

static void hostile_push(struct hostile *h, const char *chunk, size_t len)
{
    if (h->sent >= h->total)
        return;
    size_t n = h->total - h->sent < len ? h->total - h->sent : len;
    ssize_t w = send(h->fd, chunk, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w > 0)
        h->sent += (size_t)w;
    else
        CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
}

static void hostile_open(struct hostile *h)
{
    h->fd = net_test_connect(&srv.addr, 0);
    uint8_t hdr[NET__RPC_HEADER_LEN + 4];
    struct net__rpc_header rh = {.version = NET__RPC_VERSION, .type = NET__RPC_TYPE_REQUEST,
                                 .method_len = 4, .call_id = 1,
                                 .body_len = HOSTILE_FRAME - NET__RPC_HEADER_LEN - 4};
    net__rpc_header_pack(hdr, &rh);
    memcpy(hdr + NET__RPC_HEADER_LEN, "echo", 4);
    CHECK(net_test_send_all(h->fd, hdr, sizeof hdr));
    h->sent = sizeof hdr;
    h->total = HOSTILE_FRAME - 1; /* one byte short of the whole frame */
}

/* The honest client: sync echo calls from a helper thread. */
struct honest {
    struct net_test_rpc_client *c;
    atomic_int ok;
};

static void honest_main(void *arg)
{
    struct honest *h = arg;
    char body[1024];
    for (uint64_t i = 0; i < 50; i++) {
        body_fill(body, i, sizeof body);
        uint32_t st;
        void *out;
        size_t len;
        CHECK_OK(net_rpc_call_sync(h->c->rpc, "echo", body, sizeof body, 0, &st, &out, &len));
        CHECK_EQ(st, NET_RPC_OK);
        CHECK(len == sizeof body && memcmp(out, body, len) == 0);
        free(out);
        atomic_fetch_add(&h->ok, 1);
        net_test_sleep_ms(10);
    }
}

TEST(rpc_budget_partial_frames_honest_client_served)
{
    net_test_watchdog_start();
    server_options();
    srv.opt.server.memory_budget = BUDGET;
    srv.opt.frame_timeout_ms = SCALED(3000, 12000); /* ends the peers at the end */
    server_up();
    struct net_test_rpc_client c;
    net_test_rpc_client_init(&c);
    net_test_rpc_client_up(&c, &srv.addr);
    static struct hostile peers[HOSTILE];
    for (int i = 0; i < HOSTILE; i++)
        hostile_open(&peers[i]);
    static char chunk[256 * KiB];
    stream_fill(chunk, 0, sizeof chunk);

    struct honest honest = {.c = &c};
    struct net_test_job job;
    net_test_job_start(&job, honest_main, &honest);
    size_t most = 0;
    while (!net_test_job_done(&job)) {
        for (int i = 0; i < HOSTILE; i++)
            hostile_push(&peers[i], chunk, sizeof chunk);
        struct net_rpc_server_stats st = stats();
        most = st.tcp.memory_used > most ? st.tcp.memory_used : most;
        net_test_sleep_ms(1);
    }
    net_test_job_join(&job);
    printf("budget %u: at most %zu bytes held by %d peers and the client\n", BUDGET, most,
           HOSTILE);
    CHECK_EQ(atomic_load(&honest.ok), 50);
    struct net_rpc_server_stats st = stats();
    CHECK(st.tcp.budget_pauses > 0);
    /* Sanitized, reads are slower than the peers and come bigger. */
    CHECK(most <= BUDGET + SCALED(BUDGET / 10, BUDGET / 4));
    CHECK(most >= BUDGET / 2); /* the peers did fill it */
    /* Paused for the budget, the server does not see these peers close; the
     * frame timeout ends them and gives their memory back. */
    for (int i = 0; i < HOSTILE; i++)
        close(peers[i].fd);
    WAIT_UNTIL(stats().tcp.connections == 1);
    CHECK(stats().frame_timeouts > 0 && stats().frame_timeouts <= HOSTILE);
    WAIT_UNTIL(stats().tcp.memory_used <= 64 * KiB);
    net_test_rpc_client_down(&c);
    server_down();
}

TEST(rpc_idle_after_large_memory_small)
{
    net_test_watchdog_start();
    server_options();
    server_up();
    struct net_test_rpc_client c;
    net_test_rpc_client_init(&c);
    net_test_rpc_client_up(&c, &srv.addr);
    size_t len = 16 * MiB;
    char *body = malloc(len);
    CHECK(body != NULL);
    body_fill(body, 99, len);
    uint32_t st;
    void *out;
    size_t n;
    CHECK_OK(net_rpc_call_sync(c.rpc, "echo", body, len, 0, &st, &out, &n));
    CHECK_EQ(st, NET_RPC_OK);
    CHECK(n == len && memcmp(out, body, len) == 0);
    free(out);
    free(body);
    /* The reply batch, the input buffer and the output queue are all given
     * back once the call is done (each keeps at most 64 KiB). */
    WAIT_UNTIL(stats().batch_bytes <= 64 * KiB && stats().tcp.memory_used <= 64 * KiB);
    CHECK_EQ(stats().tcp.connections, 1);
    net_test_rpc_client_down(&c);
    server_down();
}

/* Blocking requests wait for a worker with a copy of their body; those
 * copies together stay within the memory budget: beyond it OVERLOADED. */
TEST(rpc_blocking_bodies_bounded_overloaded)
{
    net_test_watchdog_start();
    server_options();
    srv.opt.server.memory_budget = 1 * MiB;
    srv.opt.worker_threads = 1;
    server_up();
    int fd = net_test_connect(&srv.addr, 0);
    static char big[400 * KiB];
    memset(big, 'G', sizeof big);
    for (uint64_t id = 1; id <= 3; id++) {
        net_buf_t out = NET_BUF_INIT;
        add_request(&out, id, "gated", big, sizeof big);
        send_buf(fd, &out);
        if (id == 1)
            WAIT_UNTIL(atomic_load(&S.work_started) == 1);
    }
    struct reply r;
    CHECK(read_reply(fd, &r)); /* the third: 1.2 MiB of bodies would be held */
    CHECK_EQ(r.hdr.call_id, 3);
    CHECK_EQ(r.hdr.status, NET_RPC_OVERLOADED);
    CHECK(r.hdr.body_len == 17 && memcmp(r.body, "worker queue full", 17) == 0);
    free(r.body);
    CHECK_EQ(stats().worker_bytes, 2 * sizeof big);
    atomic_store(&S.gate, true);
    expect_reply(fd, 1, big, sizeof big);
    expect_reply(fd, 2, big, sizeof big);
    CHECK_EQ(stats().worker_refusals, 1);
    WAIT_UNTIL(stats().worker_bytes == 0); /* the request is freed just after its reply */
    close(fd);
    server_down();
}

/* The server kept its session in the connection's user context: a handler
 * that set it there crashed the server (regression). */
TEST(rpc_set_context_on_req_conn_crashed_reg)
{
    net_test_watchdog_start();
    server_options();
    server_up();
    int fd = net_test_connect(&srv.addr, 0);
    for (uint64_t id = 1; id <= 3; id++) {
        net_buf_t out = NET_BUF_INIT;
        add_request(&out, id, "context", "ctx", 3);
        add_echo(&out, id + 100, 10);
        send_buf(fd, &out);
        expect_reply(fd, id, "ctx", 3);
        char body[10];
        body_fill(body, id + 100, sizeof body);
        expect_reply(fd, id + 100, body, sizeof body);
    }
    close(fd);
    server_down();
}
