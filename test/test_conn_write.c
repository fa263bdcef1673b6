/* The connection's output (lib/tcp/conn_output.c): the wait-free write queue
 * seen from the public API. Many senders share one wakeup, bytes are counted
 * when a send accepts them (high water, output_queued, max_output), and
 * per-thread order holds. The end-to-end order and shutdown cases of the
 * cross-thread path are in test_tcp.c (tcp_cross_thread_send_*).
 *
 * The server runs on a loop thread with one I/O thread, so the scenario's
 * main thread is "another thread" for the connection. The peer is a blocking
 * socket with receive timeouts. To look at the queue while the loop cannot
 * drain it, a scenario parks the connection's loop inside a functor. */
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "conn_fixture.h"
#include "loop/loop_internal.h" /* net__loop_eventfd_writes */

#define SENDERS 4

static struct {
    atomic_int write_completes, high_waters;
    atomic_size_t high_water_queued;
} fx;

static void on_write_complete(net_conn_t *conn, void *arg)
{
    (void)conn;
    (void)arg;
    atomic_fetch_add(&fx.write_completes, 1);
}

static void on_high_water(net_conn_t *conn, size_t queued, void *arg)
{
    (void)conn;
    (void)arg;
    atomic_store(&fx.high_water_queued, queued);
    atomic_fetch_add(&fx.high_waters, 1);
}

/* The server with one I/O thread, counting the notifications. */
static void options(void)
{
    net_server_options_init(&conn_fx.opt);
    conn_fx.opt.io_threads = 1;
    conn_fx.cbs = (struct net_conn_callbacks){.on_write_complete = on_write_complete,
                                              .on_high_water = on_high_water};
}

/* ---- messages: (sender, seq) headers, checked per sender -------------------- */

#define MSG_LEN 100

static void encode(unsigned sender, uint32_t seq, unsigned char *m)
{
    m[0] = (unsigned char)sender;
    memcpy(m + 1, &seq, sizeof seq);
    for (size_t i = 5; i < MSG_LEN; i++)
        m[i] = (unsigned char)(seq * 13u + sender + i);
}

struct sender {
    pthread_t tid;
    net_conn_t *conn;
    unsigned id;
    uint32_t count;
};

static void *sender_main(void *arg)
{
    struct sender *s = arg;
    unsigned char m[MSG_LEN];
    for (uint32_t seq = 0; seq < s->count; seq++) {
        encode(s->id, seq, m);
        CHECK_OK(net_conn_send(s->conn, m, sizeof m));
        if (seq % 256 == 0)
            sched_yield(); /* vary the interleaving */
    }
    return NULL;
}

static void run_senders(net_conn_t *conn, uint32_t per_sender)
{
    struct sender s[SENDERS];
    for (unsigned i = 0; i < SENDERS; i++) {
        s[i] = (struct sender){.conn = conn, .id = i, .count = per_sender};
        CHECK_EQ(pthread_create(&s[i].tid, NULL, sender_main, &s[i]), 0);
    }
    for (unsigned i = 0; i < SENDERS; i++)
        CHECK_EQ(pthread_join(s[i].tid, NULL), 0);
}

/* Reads SENDERS x per_sender messages: each sender's in order, all intact. */
static void recv_messages(int fd, uint32_t per_sender)
{
    uint32_t next[SENDERS] = {0};
    unsigned char m[MSG_LEN], want[MSG_LEN];
    for (uint64_t i = 0; i < (uint64_t)SENDERS * per_sender; i++) {
        net_test_recv_exact(fd, m, sizeof m);
        unsigned id = m[0];
        CHECK(id < SENDERS);
        encode(id, next[id]++, want);
        CHECK_MEM_EQ(m, want, sizeof m);
    }
    for (unsigned id = 0; id < SENDERS; id++)
        CHECK_EQ(next[id], per_sender);
}

static size_t queued(net_conn_t *conn)
{
    struct net_conn_stats st;
    net_conn_stats(conn, &st);
    return st.output_queued;
}

/* ---- scenarios --------------------------------------------------------------- */

/* 4 threads x 1000 sends while the loop cannot run: one posted flush task,
 * no functor and at most one eventfd write for all of them (a functor per
 * send would be 4000), and every byte counted as queued at once. */
TEST(xsend_senders_share_one_wakeup)
{
    options();
    net_conn_t *conn = conn_fx_start(0);
    net_loop_t *loop = net_conn_loop(conn);
    conn_fx_park(conn);
    unsigned long long ev0 = net__loop_eventfd_writes(loop);
    run_senders(conn, 1000);
    CHECK(net__loop_eventfd_writes(loop) - ev0 <= 1);
    CHECK_EQ(net__loop_posted_count(loop), 1); /* the connection's flush task */
    CHECK_EQ(net_loop_queue_size(loop), 0);
    CHECK_EQ(queued(conn), (size_t)SENDERS * 1000 * MSG_LEN);
    conn_fx_unpark();
    recv_messages(conn_fx.fd, 1000);
    WAIT_UNTIL(queued(conn) == 0);
    WAIT_UNTIL(atomic_load(&fx.write_completes) >= 1);
    conn_fx_finish(conn);
}

/* Without the parked loop: senders race the flusher, which takes and
 * releases the token many times. Nothing lost, duplicated or reordered. */
TEST(xsend_4_threads_race_the_flusher)
{
    options();
    net_conn_t *conn = conn_fx_start(0);
    struct sender s[SENDERS];
    for (unsigned i = 0; i < SENDERS; i++) {
        s[i] = (struct sender){.conn = conn, .id = i, .count = 20000};
        CHECK_EQ(pthread_create(&s[i].tid, NULL, sender_main, &s[i]), 0);
    }
    recv_messages(conn_fx.fd, 20000); /* reads while they send: the socket never fills for long */
    for (unsigned i = 0; i < SENDERS; i++)
        CHECK_EQ(pthread_join(s[i].tid, NULL), 0);
    WAIT_UNTIL(queued(conn) == 0);
    struct pollfd p = {.fd = conn_fx.fd, .events = POLLIN};
    CHECK_EQ(poll(&p, 1, 50), 0); /* nothing after the last message */
    conn_fx_finish(conn);
}

/* The high-water mark sees bytes when send accepts them, before the loop has
 * written (or even looked at) any: brpc's #1107 counted at write time. */
TEST(xsend_high_water_counts_at_enqueue)
{
    options();
    conn_fx.opt.conn.high_water_mark = 10 * KiB;
    net_conn_t *conn = conn_fx_start(0);
    conn_fx_park(conn);
    unsigned char chunk[4 * KiB];
    memset(chunk, 'h', sizeof chunk);
    for (int i = 0; i < 3; i++)
        CHECK_OK(net_conn_send(conn, chunk, sizeof chunk));
    CHECK_EQ(queued(conn), 12 * KiB);
    CHECK_EQ(atomic_load(&fx.high_waters), 0); /* runs on the loop, which is parked */
    conn_fx_unpark();
    WAIT_UNTIL(atomic_load(&fx.high_waters) == 1);
    CHECK_EQ(atomic_load(&fx.high_water_queued), 12 * KiB);
    unsigned char got[12 * KiB];
    net_test_recv_exact(conn_fx.fd, got, sizeof got);
    for (size_t i = 0; i < sizeof got; i++)
        CHECK_EQ(got[i], 'h');
    WAIT_UNTIL(queued(conn) == 0);
    CHECK_EQ(atomic_load(&fx.high_waters), 1); /* once per upward crossing */
    conn_fx_finish(conn);
}

/* The max_output option: a send that would pass it fails with -ENOBUFS and
 * queues nothing, so what arrives is exactly the accepted sends, whole. */
#define MO_LIMIT (64 * KiB)
#define MO_CHUNK (16 * KiB)

struct loop_send {
    net_conn_t *conn;
    size_t len;
    int rc;
};

static void loop_send_fn(void *arg)
{
    struct loop_send *ls = arg;
    static unsigned char big[MO_LIMIT + 1];
    ls->rc = net_conn_send(ls->conn, big, ls->len);
}

TEST(xsend_max_output_enobufs_queues_nothing)
{
    options();
    conn_fx.opt.conn.max_output = MO_LIMIT;
    net_conn_t *conn = conn_fx_start(0);
    conn_fx_park(conn); /* nothing drains: the limit is reached deterministically */
    unsigned char chunk[MO_CHUNK];
    int accepted = 0, rc;
    while ((rc = net_conn_send(conn, chunk, sizeof chunk)) == 0) {
        accepted++;
        CHECK(accepted <= (int)(MO_LIMIT / MO_CHUNK));
    }
    CHECK_EQ(rc, -ENOBUFS);
    CHECK_EQ(accepted, MO_LIMIT / MO_CHUNK);
    CHECK_EQ(queued(conn), MO_LIMIT);
    conn_fx_unpark();

    /* On the loop thread, a send larger than the limit fails the same way. */
    struct loop_send ls = {.conn = conn, .len = MO_LIMIT + 1};
    net_test_on_loop(net_conn_loop(conn), loop_send_fn, &ls); /* returns when it ran */
    CHECK_EQ(ls.rc, -ENOBUFS);

    unsigned char *all = malloc(MO_LIMIT);
    CHECK(all);
    net_test_recv_exact(conn_fx.fd, all, MO_LIMIT);
    free(all);
    WAIT_UNTIL(queued(conn) == 0);
    CHECK_OK(net_conn_send(conn, chunk, sizeof chunk)); /* room again */
    unsigned char again[MO_CHUNK];
    net_test_recv_exact(conn_fx.fd, again, sizeof again);
    struct pollfd p = {.fd = conn_fx.fd, .events = POLLIN};
    CHECK_EQ(poll(&p, 1, 50), 0); /* the refused sends left nothing behind */
    conn_fx_finish(conn);
}
