/* Fault injection against the RPC layer (lib/rpc/rpc_server.c, lib/rpc/rpc_client.c
 * over lib/tcp_*.c), loopback only: a peer that resets in the middle of a
 * frame, peers that reset while the server replies from other threads, and
 * a server stopped in the middle of a load from 8 threads.
 *
 * The server runs on a loop thread, clients on their own loop threads; the
 * misbehaving peers are raw sockets speaking NRPC/1 through the internal
 * codec. The open connections of the server are watched through this
 * process's descriptors (/proc/self/fd): the RPC server has no counter of
 * its own, and a connection it has closed no longer holds one. Every loop
 * is bounded in count and in time; a watchdog fails a scenario that hangs.
 * Sanitized builds scale the counts down (SCALED in net_test_util.h). */
#include <stdatomic.h>

#include "faults_common.h"
#include "rpc_fixture.h"
#include "rpc/rpc_codec.h"


/* ---- the server under test --------------------------------------------------------- */

static struct net_test_rpc_server srv;

/* What the methods saw. */
static struct {
    atomic_int echoes;
    atomic_int dispatched, replied; /* "handoff" and "work" requests */
    struct net_test_held held;      /* "hold" requests */
} S = {.held = NET_TEST_HELD_INIT};

static void echo_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    atomic_fetch_add(&S.echoes, 1);
    CHECK_OK(net_rpc_reply(req, NET_RPC_OK, body, len));
}

static void later_reply(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    CHECK_OK(net_rpc_reply(arg, NET_RPC_OK, "later", 5));
}

/* "later": answered from a timer on the server's loop after body[0] % 8 ms,
 * so requests are in flight when the server stops (the drain lets every one
 * of them finish). */
static void later_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    unsigned ms = len ? (unsigned char)((const char *)body)[0] % 8 : 0;
    CHECK(net_loop_run_after(srv.loop, ms, later_reply, req) > 0);
}

/* "hold": kept until the scenario answers it, after its connection is gone. */
static void hold_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)body, (void)len, (void)arg;
    net_test_hold(&S.held, req);
}

/* ---- "handoff" and "work": replies from other threads ------------------------------ */

/* The reply body is the first `size` bytes of a shared read-only stream; the
 * request's body is the size, 4 bytes big-endian. */
#define REPLY_MAX (2u * MiB)
static char reply_stream[REPLY_MAX];

static uint32_t requested_size(const void *body, size_t len)
{
    CHECK_EQ(len, 4);
    const unsigned char *p = body;
    uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    CHECK(n <= REPLY_MAX);
    return n;
}

static void reply_sized(net_rpc_req_t *req, uint32_t size)
{
    CHECK_OK(net_rpc_reply(req, NET_RPC_OK, reply_stream, size)); /* 0 even if the peer is gone */
    atomic_fetch_add(&S.replied, 1);
}

/* "work" is registered blocking: it runs on the server's worker pool. */
static void work_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    atomic_fetch_add(&S.dispatched, 1);
    uint32_t size = requested_size(body, len);
    usleep((useconds_t)(size % 300)); /* a little work, varying */
    reply_sized(req, size);
}

/* "handoff" queues the request to our own replier threads. */
#define REPLIERS 2

static struct {
    struct net_test_handoff_queue q;
    pthread_t threads[REPLIERS];
} H = {.q = NET_TEST_HANDOFF_QUEUE_INIT};

static void handoff_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    atomic_fetch_add(&S.dispatched, 1);
    requested_size(body, len); /* checked here, on the loop */
    net_test_handoff_push(&H.q, req, body, len);
}

static void *replier_main(void *arg)
{
    uint64_t rng = 0x2545F4914F6CDD1Dull ^ (uintptr_t)arg;
    for (struct net_test_handoff *h; (h = net_test_handoff_pop(&H.q));) {
        usleep((useconds_t)(rng_next(&rng) % 500)); /* land anywhere in the peer's life */
        reply_sized(h->req, requested_size(h->body, h->len));
        free(h);
    }
    return NULL;
}

static void repliers_start(void)
{
    stream_fill(reply_stream, 0, REPLY_MAX);
    for (uintptr_t i = 0; i < REPLIERS; i++)
        CHECK_EQ(pthread_create(&H.threads[i], NULL, replier_main, (void *)i), 0);
}

/* Answers what is still queued, then ends the threads. */
static void repliers_stop(void)
{
    net_test_handoff_quit(&H.q);
    for (int i = 0; i < REPLIERS; i++)
        CHECK_EQ(pthread_join(H.threads[i], NULL), 0);
}

/* ---- server life --------------------------------------------------------------------- */

static void add_methods(net_rpc_server_t *server)
{
    CHECK_OK(net_rpc_server_register(server, "echo", echo_method, NULL, false));
    CHECK_OK(net_rpc_server_register(server, "later", later_method, NULL, false));
    CHECK_OK(net_rpc_server_register(server, "hold", hold_method, NULL, false));
    CHECK_OK(net_rpc_server_register(server, "handoff", handoff_method, NULL, false));
    if (srv.opt.worker_threads)
        CHECK_OK(net_rpc_server_register(server, "work", work_method, NULL, true));
}

static void server_up(size_t io_threads, size_t worker_threads)
{
    net_test_rpc_server_init(&srv, add_methods);
    srv.opt.server.io_threads = io_threads;
    srv.opt.worker_threads = worker_threads;
    net_test_rpc_server_up(&srv);
}

/* ---- clients ---------------------------------------------------------------------------- */

/* A client with the default options, connected. */
static void client_up(struct net_test_rpc_client *c)
{
    net_test_rpc_client_init(c);
    net_test_rpc_client_up(c, &srv.addr);
    WAIT_UNTIL(net_rpc_client_connected(c->rpc));
}

/* A real call, the way users make them: the server serves. */
static void sync_echo(struct net_test_rpc_client *c, const char *text)
{
    uint32_t status = 0xDEAD;
    void *body = NULL;
    size_t len = 0;
    CHECK_OK(net_rpc_call_sync(c->rpc, "echo", text, strlen(text), 0, &status, &body, &len));
    if (status != NET_RPC_OK)
        net_test_fail(__FILE__, __LINE__, "echo: %s", net_rpc_status_name(status));
    CHECK_EQ(len, strlen(text));
    CHECK_MEM_EQ(body, text, len);
    free(body);
}

/* =========================================================================== */
/* A reset in the middle of a frame                                             */
/* =========================================================================== */

/* A raw client sends the first `split` bytes of a request and resets. The
 * partial frame must be dropped (never dispatched), the connection closed
 * (its descriptor goes), and the server must serve a real client. Then
 * one whole frame and half of the next (exactly the whole one is
 * dispatched), and half of an 8 MiB frame (the 4 MiB buffered are freed:
 * ASan's leak check). */
static const size_t mid_frame_splits[] = {1, 4, 5, 6, 8, 16, 20, 23, 24, 25, 27, 28, 29,
                                          100, 200, 327};
#define N_SPLITS (sizeof mid_frame_splits / sizeof *mid_frame_splits)

static void encode_echo_request(net_buf_t *out, uint64_t id)
{
    char body[300];
    stream_fill(body, id, sizeof body);
    CHECK_OK(net__rpc_encode_request(out, id, "echo", 4, body, sizeof body));
}

/* Connects, waits until the server holds the connection, sends n bytes of
 * data and resets. */
static void send_part_and_reset(const char *data, size_t n, int fd0)
{
    int fd = net_test_connect(&srv.addr, 0);
    WAIT_UNTIL(net_test_count_open_fds() == fd0 + 2); /* ours and the server's */
    CHECK(net_test_send_all(fd, data, n));
    net_test_sleep_ms(5); /* usually read (and buffered) by the server before the reset */
    net_test_close_reset(fd);
    WAIT_UNTIL(net_test_count_open_fds() == fd0);     /* the server closed its end */
}

TEST(fault_rpc_rst_mid_frame)
{
    net_test_watchdog_start();
    server_up(1, 0);
    struct net_test_rpc_client c;
    client_up(&c);
    sync_echo(&c, "before");
    int fd0 = net_test_count_open_fds();

    net_buf_t frame = NET_BUF_INIT;
    encode_echo_request(&frame, 7);
    CHECK_EQ(net_buf_readable(&frame), 24 + 4 + 300);
    for (size_t i = 0; i < N_SPLITS; i++) {
        int echoes = atomic_load(&S.echoes);
        send_part_and_reset(net_buf_peek(&frame), mid_frame_splits[i], fd0);
        CHECK_EQ(atomic_load(&S.echoes), echoes); /* a partial frame is never dispatched */
        char text[32];
        snprintf(text, sizeof text, "after split %zu", mid_frame_splits[i]);
        sync_echo(&c, text);
        CHECK_EQ(atomic_load(&S.echoes), echoes + 1);
    }

    /* One whole frame, then half of the next. */
    int echoes = atomic_load(&S.echoes);
    net_buf_t two = NET_BUF_INIT;
    encode_echo_request(&two, 8);
    encode_echo_request(&two, 9);
    send_part_and_reset(net_buf_peek(&two), net_buf_readable(&frame) * 3 / 2, fd0);
    WAIT_UNTIL(atomic_load(&S.echoes) == echoes + 1);
    sync_echo(&c, "after a whole frame and a half");
    net_test_sleep_ms(50);
    CHECK_EQ(atomic_load(&S.echoes), echoes + 2);
    net_buf_destroy(&two);
    net_buf_destroy(&frame);

    /* Half of a large frame: the server buffers 4 MiB of an 8 MiB body. */
    net_buf_t big = NET_BUF_INIT;
    char *body = calloc(1, 8 * MiB);
    CHECK(body != NULL);
    CHECK_OK(net__rpc_encode_request(&big, 10, "echo", 4, body, 8 * MiB));
    free(body);
    echoes = atomic_load(&S.echoes);
    send_part_and_reset(net_buf_peek(&big), net_buf_readable(&big) / 2, fd0);
    net_buf_destroy(&big);
    sync_echo(&c, "after half of a large frame");
    CHECK_EQ(atomic_load(&S.echoes), echoes + 1);

    net_test_rpc_client_down(&c);
    net_test_rpc_server_down(&srv, 1000);
}

/* =========================================================================== */
/* Resets while the server replies from other threads                           */
/* =========================================================================== */

/* Each round a raw client pipelines 1-8 requests, each either "handoff"
 * (answered by our replier threads) or "work" (a blocking handler on the
 * server's worker pool), asking for replies of 0 bytes to 2 MiB, and then
 * resets: at once, after reading part of the replies, or after a short
 * pause. Replies thus race with the close at every stage. Every request
 * dispatched must be answered with net_rpc_reply() returning 0, every
 * connection must close, and the server must go on serving; ASan's leak
 * check at exit shows that every request handle was freed. */
#define RR_ROUNDS SCALED(300, 150)
#define RR_MAX_CALLS 8

static const uint32_t rr_sizes[] = {0, 100, 16 * KiB, 256 * KiB, 2 * MiB};

static void rr_encode(net_buf_t *out, uint64_t id, uint64_t r)
{
    const char *method = r & 1 ? "work" : "handoff";
    uint32_t size = rr_sizes[(r >> 1) % (sizeof rr_sizes / sizeof *rr_sizes)];
    unsigned char body[4] = {(unsigned char)(size >> 24), (unsigned char)(size >> 16),
                             (unsigned char)(size >> 8), (unsigned char)size};
    CHECK_OK(net__rpc_encode_request(out, id, method, strlen(method), body, sizeof body));
}

/* Reads what has arrived, for at most ms milliseconds or max bytes. */
static void rr_read_some(int fd, size_t max, unsigned ms)
{
    static char buf[64 * KiB];
    size_t got = 0;
    uint64_t end = net_test_now_ms() + ms;
    while (got < max && net_test_now_ms() <= end) {
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0)
            got += (size_t)n;
        else if (n == 0 || (errno != EAGAIN && errno != EINTR))
            break;
        else
            usleep(100);
    }
}

static int rr_sent;

static void rr_round(uint64_t *rng, int round)
{
    int fd = net_test_connect(&srv.addr, 64 * KiB);
    net_buf_t out = NET_BUF_INIT;
    int calls = 1 + (int)(rng_next(rng) % RR_MAX_CALLS);
    for (int i = 0; i < calls; i++)
        rr_encode(&out, (uint64_t)round * RR_MAX_CALLS + (uint64_t)i, rng_next(rng));
    CHECK(net_test_send_all(fd, net_buf_peek(&out), net_buf_readable(&out)));
    rr_sent += calls;
    net_buf_destroy(&out);
    switch (rng_next(rng) % 3) {
    case 0:
        break;
    case 1:
        rr_read_some(fd, rng_next(rng) % (512 * KiB), 2);
        break;
    default:
        usleep((useconds_t)(rng_next(rng) % 2000));
        break;
    }
    net_test_close_reset(fd);
}

TEST(fault_rpc_rst_while_replying_from_threads)
{
    net_test_watchdog_start();
    server_up(1, 2);
    repliers_start();
    struct net_test_rpc_client c;
    client_up(&c);
    sync_echo(&c, "before");
    int fd0 = net_test_count_open_fds();

    uint64_t rng = 0x9E3779B97F4A7C15ull;
    for (int round = 0; round < RR_ROUNDS; round++)
        rr_round(&rng, round);
    /* Every request that got in is answered, and every connection closes. */
    WAIT_UNTIL(atomic_load(&S.replied) == atomic_load(&S.dispatched) &&
               net_test_count_open_fds() == fd0);
    net_test_sleep_ms(50);
    WAIT_UNTIL(atomic_load(&S.replied) == atomic_load(&S.dispatched) &&
               net_test_count_open_fds() == fd0);
    fprintf(stderr, "%d rounds: %d requests sent, %d dispatched and answered\n", RR_ROUNDS,
            rr_sent, atomic_load(&S.dispatched));
    CHECK(atomic_load(&S.dispatched) <= rr_sent);
    CHECK(atomic_load(&S.dispatched) >= RR_ROUNDS / 2); /* most rounds got a request in */
    sync_echo(&c, "still serving");

    net_test_rpc_client_down(&c);
    net_test_rpc_server_down(&srv, 1000);
    repliers_stop();
    CHECK_EQ(atomic_load(&S.replied), atomic_load(&S.dispatched));
}

/* =========================================================================== */
/* Server stop in the middle of a load from 8 threads                           */
/* =========================================================================== */

/* 8 threads call through 2 clients: 6 asynchronously (at most SL_WINDOW
 * outstanding each), 2 with call_sync, methods "echo" (60%), "later" (25%,
 * answered from a timer), "work" (10%, a blocking handler on the worker
 * pool) and "hold" (5%, up to NET_TEST_MAX_HELD / 2 of them: never
 * answered before the connection closes). After SL_BEFORE_MS the server stops with a drain of
 * SL_DRAIN_MS; the threads go on for SL_AFTER_MS after it has stopped
 * (and until they made SL_THREADS calls between them). No
 * call has a timeout: every call must end exactly once with OK,
 * SHUTTING_DOWN or DISCONNECTED; a "hold" call never with OK; a call made
 * after the stop completed only with DISCONNECTED; and nothing hangs. */
#define SL_THREADS 8
#define SL_MAX_CALLS SCALED(40000, 8000) /* per thread */
#define SL_RESERVE SCALED(1000, 200)     /* of them, kept for after the stop */
#define SL_WINDOW 32
#define SL_BEFORE_MS SCALED(500, 1000)
#define SL_DRAIN_MS 300
#define SL_AFTER_MS 100

enum sl_kind { SL_ECHO, SL_LATER, SL_WORK, SL_HOLD };

struct sl_call {
    atomic_int done;
    uint32_t status;
    enum sl_kind kind;
    bool after_stop;
};

static struct {
    struct net_test_rpc_client clients[2];
    atomic_bool stop_done, quit;
    atomic_int holds, issued_after_stop;
    atomic_int issued[SL_THREADS], completed[SL_THREADS];
    struct sl_call calls[SL_THREADS][SL_MAX_CALLS];
} sl;

static void sl_done(net_rpc_client_t *client, uint32_t status, const void *body, size_t len,
                    void *arg)
{
    (void)client, (void)body, (void)len;
    struct sl_call *c = arg;
    c->status = status;
    if (atomic_fetch_add(&c->done, 1) != 0)
        net_test_fail(__FILE__, __LINE__, "a call completed twice");
    int t = (int)((c - &sl.calls[0][0]) / SL_MAX_CALLS);
    atomic_fetch_add(&sl.completed[t], 1);
}

static enum sl_kind sl_pick(uint64_t r)
{
    unsigned p = (unsigned)(r % 100);
    return p < 60 ? SL_ECHO : p < 85 ? SL_LATER : p < 95 ? SL_WORK : SL_HOLD;
}

static const char *const sl_methods[] = {"echo", "later", "work", "hold"};

static void sl_wait_window(int t)
{
    uint64_t deadline = net_test_now_ms() + NET_TEST_WAIT_MS;
    while (atomic_load(&sl.issued[t]) - atomic_load(&sl.completed[t]) >= SL_WINDOW) {
        if (net_test_now_ms() > deadline)
            net_test_fail(__FILE__, __LINE__, "thread %d: calls do not complete", t);
        usleep(200);
    }
}

static void sl_call_sync(struct sl_call *c, net_rpc_client_t *rpc, const char *method,
                         const char *body, size_t len, int t)
{
    uint32_t status = 0xDEAD;
    void *out = NULL;
    size_t out_len = 0;
    CHECK_OK(net_rpc_call_sync(rpc, method, body, len, 0, &status, &out, &out_len));
    free(out);
    c->status = status;
    CHECK_EQ(atomic_fetch_add(&c->done, 1), 0);
    atomic_fetch_add(&sl.completed[t], 1);
}

static void *sl_caller(void *arg)
{
    int t = (int)(intptr_t)arg;
    bool sync = t % 4 == 3;
    net_rpc_client_t *rpc = sl.clients[t % 2].rpc;
    uint64_t rng = 0xD1B54A32D192ED03ull * (uint64_t)(t + 1);
    for (int i = 0; i < SL_MAX_CALLS && !atomic_load(&sl.quit); i++) {
        while (i >= SL_MAX_CALLS - SL_RESERVE && !atomic_load(&sl.stop_done))
            usleep(1000); /* main stops the server after at most SL_BEFORE_MS */
        struct sl_call *c = &sl.calls[t][i];
        c->kind = sl_pick(rng_next(&rng));
        c->after_stop = atomic_load(&sl.stop_done);
        if (c->after_stop)
            atomic_fetch_add(&sl.issued_after_stop, 1);
        char body[32];
        int len = snprintf(body, sizeof body, "%c%d:%d", (char)rng_next(&rng), t, i);
        if (c->kind == SL_WORK) { /* a reply of up to 64 KiB, from the worker pool */
            uint32_t size = (uint32_t)(rng_next(&rng) % (64 * KiB));
            unsigned char b[4] = {0, (unsigned char)(size >> 16), (unsigned char)(size >> 8),
                                  (unsigned char)size};
            memcpy(body, b, sizeof b);
            len = sizeof b;
        }
        const char *method = sl_methods[c->kind];
        if (c->kind == SL_HOLD && atomic_fetch_add(&sl.holds, 1) >= NET_TEST_MAX_HELD / 2)
            method = sl_methods[c->kind = SL_ECHO]; /* keep the held ones few */
        atomic_fetch_add(&sl.issued[t], 1);
        if (sync) {
            sl_call_sync(c, rpc, method, body, (size_t)len, t);
        } else {
            sl_wait_window(t);
            CHECK_OK(net_rpc_call(rpc, method, body, (size_t)len, 0, sl_done, c));
        }
    }
    return NULL;
}

static bool sl_all_completed(void)
{
    for (int t = 0; t < SL_THREADS; t++)
        if (atomic_load(&sl.completed[t]) != atomic_load(&sl.issued[t]))
            return false;
    return true;
}

struct sl_tally {
    int by_status[3]; /* OK, SHUTTING_DOWN, DISCONNECTED */
    int total, after;
};

static int sl_status_index(uint32_t status)
{
    switch (status) {
    case NET_RPC_OK:
        return 0;
    case NET_RPC_SHUTTING_DOWN:
        return 1;
    case NET_RPC_DISCONNECTED:
        return 2;
    default:
        return -1;
    }
}

/* Every call issued ended once, with an allowed status for its kind and
 * time. */
static struct sl_tally sl_check_outcomes(void)
{
    struct sl_tally tally = {0};
    for (int t = 0; t < SL_THREADS; t++) {
        for (int i = 0; i < atomic_load(&sl.issued[t]); i++) {
            struct sl_call *c = &sl.calls[t][i];
            CHECK_EQ(atomic_load(&c->done), 1);
            int k = sl_status_index(c->status);
            if (k < 0)
                net_test_fail(__FILE__, __LINE__, "call %d:%d ended with %s", t, i,
                              net_rpc_status_name(c->status));
            if (c->kind == SL_HOLD && k == 0)
                net_test_fail(__FILE__, __LINE__, "held call %d:%d answered OK", t, i);
            if (c->after_stop && k != 2)
                net_test_fail(__FILE__, __LINE__, "call %d:%d after the stop ended with %s", t, i,
                              net_rpc_status_name(c->status));
            tally.by_status[k]++;
            tally.after += c->after_stop;
            tally.total++;
        }
    }
    return tally;
}

TEST(fault_rpc_stop_under_load_8_threads)
{
    net_test_watchdog_start();
    server_up(2, 2);
    stream_fill(reply_stream, 0, REPLY_MAX);
    /* fail_fast: calls made once the server is gone end with the next
     * failed attempt instead of waiting for a server that never comes. */
    for (int i = 0; i < 2; i++) {
        net_test_rpc_client_init(&sl.clients[i]);
        sl.clients[i].opt.fail_fast = true;
        net_test_rpc_client_up(&sl.clients[i], &srv.addr);
        WAIT_UNTIL(net_rpc_client_connected(sl.clients[i].rpc));
    }

    pthread_t threads[SL_THREADS];
    for (intptr_t t = 0; t < SL_THREADS; t++)
        CHECK_EQ(pthread_create(&threads[t], NULL, sl_caller, (void *)t), 0);
    net_test_sleep_ms(SL_BEFORE_MS);
    net_test_rpc_server_close(&srv, SL_DRAIN_MS);
    atomic_store(&sl.stop_done, true);
    /* A thread whose window is full waits until the client's next connect
     * attempt fails its calls (the retry backoff starts at 100 ms): wait
     * for some calls after the stop rather than for a fixed time only. */
    net_test_sleep_ms(SL_AFTER_MS);
    WAIT_UNTIL(atomic_load(&sl.issued_after_stop) >= SL_THREADS);
    atomic_store(&sl.quit, true);
    for (int t = 0; t < SL_THREADS; t++)
        CHECK_EQ(pthread_join(threads[t], NULL), 0);
    WAIT_UNTIL(sl_all_completed());
    net_test_sleep_ms(50); /* a second completion would show up here */

    struct sl_tally tally = sl_check_outcomes();
    fprintf(stderr, "%d calls: %d OK, %d SHUTTING_DOWN, %d DISCONNECTED (%d made after the "
            "stop)\n", tally.total, tally.by_status[0], tally.by_status[1], tally.by_status[2],
            tally.after);
    CHECK(tally.by_status[0] > 0);
    CHECK(tally.after > 0);
    CHECK(tally.by_status[2] >= tally.after);

    net_test_rpc_client_down(&sl.clients[0]);
    net_test_rpc_client_down(&sl.clients[1]);
    /* After the close's done: the requests are freed all the same. */
    CHECK(net_test_held_release(&S.held, NET_RPC_OK, "late") <= atomic_load(&sl.holds));
    net_test_rpc_server_down(&srv, 0);
}
