/* Fault injection against the TCP layer (lib/tcp/tcp_conn.c, lib/tcp/tcp_server.c),
 * loopback only: a peer that resets in the middle of a large write, and a
 * reader that never reads. The storms and descriptor exhaustion are in
 * test_faults_storm.c.
 *
 * The server runs on the scenario's main-thread loop (its base loop) with
 * I/O threads; the misbehaving peers are raw sockets in helper threads.
 * Every loop of the scenarios is bounded in count and in time, and a
 * watchdog fails a scenario that hangs. Sanitized builds scale the counts
 * down (see SCALED in net_test_util.h). */
#include <stdatomic.h>

#include "faults_tcp_common.h"

/* =========================================================================== */
/* A reset in the middle of a large write                                       */
/* =========================================================================== */

/* The server answers "BIG!" with one 32 MiB message; the client reads a
 * little of it and resets. The connection must close exactly once, with the
 * rest of its queue dropped and freed. Rounds alternate between a send on
 * the connection's loop and one from another thread (the base loop), read
 * more or less before the reset, and in the last two the server half-closes
 * right after the send, so the reset meets a shutdown still waiting for its
 * output to drain. */
#define BIG_LEN (32u * MiB)
#define RW_ROUNDS 6

static const size_t rw_read_before_reset[RW_ROUNDS] = {1, 64 * KiB, MiB, 4 * MiB, 1, MiB};

static struct {
    net_loop_t *base;
    char *big;
    bool cross_thread;       /* this round: send from the base loop */
    bool then_shutdown;      /* this round: half-close after the send (output pending) */
    atomic_int ups, downs, big_downs, big_sends;
    atomic_ullong big_id;    /* the connection asked for the big message */
    _Atomic(net_conn_t *) big_conn; /* a reference to it */
} rw;

static void rw_connection(net_conn_t *conn, void *arg)
{
    (void)arg;
    if (net_conn_connected(conn)) {
        atomic_fetch_add(&rw.ups, 1);
        return;
    }
    atomic_fetch_add(&rw.downs, 1);
    if (net_conn_id(conn) == atomic_load(&rw.big_id))
        atomic_fetch_add(&rw.big_downs, 1);
}

static void rw_send_big(net_conn_t *conn)
{
    int rc = net_conn_send(conn, rw.big, BIG_LEN);
    /* The peer may already be gone; anything else is a failure. */
    CHECK(rc == 0 || rc == -ENOTCONN || rc == -ECONNRESET || rc == -EPIPE);
    if (rw.then_shutdown) {
        /* The RST may close the connection between the send and here. */
        int src = net_conn_shutdown(conn);
        CHECK(src == 0 || src == -ENOTCONN);
    }
    atomic_fetch_add(&rw.big_sends, 1);
}

static void rw_send_from_base(void *arg)
{
    CHECK(net_loop_in_loop_thread(rw.base));
    rw_send_big(arg);
}

static void rw_message(net_conn_t *conn, net_buf_t *in, uint64_t receive_ms, void *arg)
{
    (void)receive_ms, (void)arg;
    if (net_buf_readable(in) < 4 || memcmp(net_buf_peek(in), "BIG!", 4) != 0) {
        echo_message(conn, in, receive_ms, arg);
        return;
    }
    net_buf_retrieve_all(in);
    atomic_store(&rw.big_id, net_conn_id(conn));
    atomic_store(&rw.big_conn, net_conn_ref(conn));
    if (rw.cross_thread)
        CHECK_OK(net_loop_queue_in_loop(rw.base, rw_send_from_base, conn));
    else
        rw_send_big(conn);
}

struct rw_client_arg {
    net_addr_t addr;
    size_t read_first;
};

static void rw_client(void *arg)
{
    struct rw_client_arg *a = arg;
    int fd = net_test_connect(&a->addr, 64 * KiB); /* a small window: most stays queued */
    CHECK(net_test_send_all(fd, "BIG!", 4));
    char *buf = malloc(a->read_first);
    CHECK(buf != NULL);
    net_test_recv_exact(fd, buf, a->read_first);
    CHECK(stream_matches(buf, 0, a->read_first));
    free(buf);
    net_test_close_reset(fd);
}

static bool rw_big_closed(void *arg)
{
    (void)arg;
    return atomic_load(&rw.big_downs) >= 1;
}

TEST(fault_tcp_rst_mid_large_write)
{
    net_test_watchdog_start();
    net_loop_t *loop;
    CHECK_OK(net_loop_new(&loop));
    rw.base = loop;
    rw.big = malloc(BIG_LEN);
    CHECK(rw.big != NULL);
    stream_fill(rw.big, 0, BIG_LEN);
    struct net_conn_callbacks cbs = {.on_connection = rw_connection, .on_message = rw_message};
    net_server_t *server = server_start(loop, 1, &cbs, NULL);
    int fd0 = net_test_count_open_fds();

    for (int round = 0; round < RW_ROUNDS; round++) {
        rw.cross_thread = round % 2 == 1;
        rw.then_shutdown = round >= 4;
        atomic_store(&rw.big_downs, 0);
        atomic_store(&rw.big_sends, 0);
        struct rw_client_arg a = {*net_server_addr(server), rw_read_before_reset[round]};
        net_test_run_with_client(loop, rw_client, &a);
        net_test_run_until(loop, rw_big_closed, NULL);
        net_test_run_for(loop, 100); /* a second close would show up here */
        CHECK_EQ(atomic_load(&rw.big_downs), 1);
        CHECK_EQ(atomic_load(&rw.big_sends), 1);
        net_conn_t *conn = atomic_exchange(&rw.big_conn, NULL);
        CHECK(conn != NULL);
        struct net_conn_stats st;
        net_conn_stats(conn, &st);
        CHECK_EQ(net_conn_state(conn), NET_CONN_DISCONNECTED);
        CHECK(st.bytes_sent >= a.read_first);
        CHECK(st.bytes_sent < BIG_LEN); /* the reset did cut the write short */
        CHECK_EQ(st.output_queued, 0);  /* the rest was dropped */
        CHECK_EQ(net_conn_send(conn, "x", 1), -ENOTCONN);
        CHECK_EQ(net_conn_force_close(conn), -ENOTCONN);
        net_conn_unref(conn);
    }

    check_still_serves(loop, server, "still serving after resets");
    net_test_run_until(loop, no_connections, server);
    CHECK_EQ(atomic_load(&rw.ups), RW_ROUNDS + 1);
    CHECK_EQ(atomic_load(&rw.downs), RW_ROUNDS + 1);
    run_until_fds(loop, fd0);
    server_close(loop, server);
    net_loop_free(loop);
    free(rw.big);
}

/* =========================================================================== */
/* A reader that never reads                                                    */
/* =========================================================================== */

/* The server pumps 16 KiB chunks from a timer on the connection's loop, as
 * a well-behaved producer: it stops when the high-water callback fires. The
 * peer set a tiny receive buffer and never reads. The queue must stay where
 * the producer left it, and force_close must free it. */
#define NR_MARK (256u * KiB)
#define NR_CHUNK (16u * KiB)
#define NR_BATCH 8                    /* chunks per timer tick */
#define NR_LIMIT (128ull * MiB)       /* the kernel's buffers never take this much */

static struct {
    net_conn_t *conn;                 /* a reference, taken on the loop */
    _Atomic(net_conn_t *) shared;     /* the same, published to the main thread */
    net_timer_id_t pump;
    atomic_ullong sent;
    atomic_int ups, downs, high_waters;
    atomic_size_t hw_queued;
    bool pumping;
    char chunk[NR_CHUNK];
} nr;

static void nr_pump(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    for (int i = 0; i < NR_BATCH && nr.pumping; i++) {
        CHECK(atomic_load(&nr.sent) < NR_LIMIT);
        CHECK_OK(net_conn_send(nr.conn, nr.chunk, NR_CHUNK));
        atomic_fetch_add(&nr.sent, NR_CHUNK);
    }
}

static void nr_connection(net_conn_t *conn, void *arg)
{
    (void)arg;
    if (!net_conn_connected(conn)) {
        atomic_fetch_add(&nr.downs, 1);
        return;
    }
    if (atomic_fetch_add(&nr.ups, 1) > 0)
        return; /* the scenario's last client only checks that we serve */
    nr.conn = net_conn_ref(conn);
    nr.pumping = true;
    nr.pump = net_loop_run_every(net_conn_loop(conn), 1, nr_pump, NULL);
    CHECK(nr.pump > 0);
    atomic_store(&nr.shared, nr.conn);
}

static void nr_high_water(net_conn_t *conn, size_t queued, void *arg)
{
    (void)arg;
    CHECK(conn == nr.conn);
    atomic_store(&nr.hw_queued, queued);
    atomic_fetch_add(&nr.high_waters, 1);
    if (nr.pumping) {
        nr.pumping = false;
        CHECK_OK(net_timer_cancel(net_conn_loop(conn), nr.pump));
    }
}

static bool nr_high_water_seen(void *arg)
{
    (void)arg;
    return atomic_load(&nr.high_waters) >= 1;
}

static bool nr_down(void *arg)
{
    (void)arg;
    return atomic_load(&nr.downs) >= 1;
}

TEST(fault_tcp_never_reading_reader)
{
    net_test_watchdog_start();
    net_loop_t *loop;
    CHECK_OK(net_loop_new(&loop));
    stream_fill(nr.chunk, 0, NR_CHUNK);
    struct net_conn_options copt;
    net_conn_options_init(&copt);
    copt.high_water_mark = NR_MARK;
    struct net_conn_callbacks cbs = {.on_connection = nr_connection,
                                     .on_message = echo_message,
                                     .on_high_water = nr_high_water};
    net_server_t *server = server_start(loop, 1, &cbs, &copt);
    int fd0 = net_test_count_open_fds();

    int fd = net_test_connect(net_server_addr(server), 1); /* the kernel's minimum */
    net_test_run_until(loop, nr_high_water_seen, NULL);
    net_conn_t *conn = atomic_load(&nr.shared);
    CHECK(conn != NULL);

    /* The producer stopped; the queue must not grow, and every byte it
     * handed over is either on the wire or in the queue. */
    net_test_run_for(loop, 100);
    struct net_conn_stats s1, s2;
    net_conn_stats(conn, &s1);
    net_test_run_for(loop, 300);
    net_conn_stats(conn, &s2);
    uint64_t sent = atomic_load(&nr.sent);
    fprintf(stderr, "never-reading: high water at %zu queued; %llu handed over, %llu on the wire, "
            "%zu then %zu queued\n", atomic_load(&nr.hw_queued), (unsigned long long)sent,
            (unsigned long long)s2.bytes_sent, s1.output_queued, s2.output_queued);
    CHECK_EQ(atomic_load(&nr.high_waters), 1);
    CHECK(atomic_load(&nr.hw_queued) >= NR_MARK);
    CHECK(s1.output_queued >= NR_MARK);
    CHECK(s1.output_queued <= NR_MARK + NR_BATCH * NR_CHUNK);
    CHECK(s2.output_queued <= s1.output_queued);
    CHECK_EQ(s2.bytes_sent + s2.output_queued, sent);
    CHECK_EQ(s2.bytes_received, 0);

    CHECK_OK(net_conn_force_close(conn));
    CHECK_EQ(net_conn_force_close(conn), -ENOTCONN);
    net_test_run_until(loop, nr_down, NULL);
    net_test_run_for(loop, 50);
    CHECK_EQ(atomic_load(&nr.downs), 1); /* once */
    CHECK_EQ(net_conn_state(conn), NET_CONN_DISCONNECTED);
    net_conn_stats(conn, &s2);
    CHECK_EQ(s2.output_queued, 0); /* the queue was freed, not kept */
    CHECK_EQ(net_conn_send(conn, nr.chunk, NR_CHUNK), -ENOTCONN);
    net_conn_unref(conn);
    CHECK(close(fd) == 0);
    net_test_run_until(loop, no_connections, server);
    run_until_fds(loop, fd0);
    check_still_serves(loop, server, "served after a stuck reader");
    server_close(loop, server);
    net_loop_free(loop);
}
