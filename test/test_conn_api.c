/* The connection's public API for 1.0 (include/net/tcp_conn.h): the thread
 * rules, the options (an all-zero struct is the defaults; NET_NO_TIMEOUT),
 * the thread-safe calls that hand work to the loop without memory (stop /
 * start read, shutdown, force_close; force_close_after's honest -ENOMEM),
 * net_conn_sendv (argument checks, never writing inside the call, and each
 * call's bytes contiguous from many threads), and the write-complete that
 * must not report a backlog still queued; and what an idle connection
 * keeps (no input storage; its addresses' net_addr_t forms made at the
 * first call, "no address" without memory).
 *
 * The server runs on a loop thread ("base", no I/O threads), so the
 * scenario's main thread is another thread for its connections. The peer
 * is a blocking socket with timeouts. To hand a call to the loop while it
 * cannot run, a scenario parks the loop inside a functor; to show that a
 * call needs no memory, it first fills the loop's functor queue until a
 * queued functor finds no memory (the test allocator fails every
 * allocation meanwhile), so a call that queued a functor would fail. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn_fixture.h"

static struct {
    atomic_size_t received; /* bytes on_message took */
    atomic_int high_waters, write_completes;
    atomic_size_t high_water_queued;
    atomic_bool wc_needs_empty; /* on_write_complete checks output_queued == 0 */
    atomic_bool keep_unfinished; /* on_message leaves what follows the last '\n' */
    _Atomic(net_buf_t *) in;     /* the input buffer on_message was handed */
} fx;

/* ---- the server ------------------------------------------------------------- */

static void on_message(net_conn_t *conn, net_buf_t *in, uint64_t receive_ms, void *arg)
{
    (void)conn, (void)receive_ms, (void)arg;
    atomic_store(&fx.in, in);
    size_t take = net_buf_readable(in);
    if (atomic_load(&fx.keep_unfinished))
        while (take && net_buf_peek(in)[take - 1] != '\n')
            take--;
    atomic_fetch_add(&fx.received, take);
    CHECK_OK(net_buf_retrieve(in, take));
}

static void on_high_water(net_conn_t *conn, size_t queued, void *arg)
{
    (void)conn, (void)arg;
    atomic_store(&fx.high_water_queued, queued);
    atomic_fetch_add(&fx.high_waters, 1);
}

/* Single-sender scenarios: never while a backlog is still queued (with
 * other threads sending, bytes they are queueing count too). */
static void on_write_complete(net_conn_t *conn, void *arg)
{
    (void)arg;
    struct net_conn_stats st;
    net_conn_stats(conn, &st);
    if (atomic_load(&fx.wc_needs_empty))
        CHECK_EQ(st.output_queued, 0);
    atomic_fetch_add(&fx.write_completes, 1);
}

/* The server's defaults (no I/O threads) with all-zero connection
 * options, and every callback. */
static void options(void)
{
    net_server_options_init(&conn_fx.opt);
    memset(&conn_fx.opt.conn, 0, sizeof conn_fx.opt.conn);
    conn_fx.cbs = (struct net_conn_callbacks){.on_message = on_message,
                                              .on_high_water = on_high_water,
                                              .on_write_complete = on_write_complete};
}

/* ---- a functor queue with no room ------------------------------------------ */

static void noop_cb(void *arg)
{
    (void)arg;
}

/* Parks the loop, then makes every allocation fail and queues functors
 * until the queue needs memory for one more: from here on any call that
 * hands the loop a functor fails. */
static void park_without_memory(net_conn_t *conn)
{
    conn_fx_park(conn);
    net_test_fail_allocs_from(1);
    int n = 0;
    while (net_loop_queue_in_loop(net_conn_loop(conn), noop_cb, NULL) == 0)
        CHECK(++n < 1000000);
    CHECK_EQ(net_loop_queue_in_loop(net_conn_loop(conn), noop_cb, NULL), -ENOMEM);
}

/* The test allocator first (before any other netloop call), then the
 * connection, then its loop parked with the functor queue full. */
static net_conn_t *start_parked_without_memory(void)
{
    net_test_fail_allocs_from(SIZE_MAX);
    options();
    net_conn_t *conn = conn_fx_start(0);
    park_without_memory(conn);
    return conn;
}

/* Gives memory back, lets the loop go and waits until it has run what it
 * was handed meanwhile (posted work runs before queued functors). */
static void unpark_with_memory(net_conn_t *conn)
{
    net_test_fail_allocs_from(SIZE_MAX);
    conn_fx_unpark();
    net_test_on_loop(net_conn_loop(conn), noop_cb, NULL);
}

/* ---- looking at the socket behind a connection ----------------------------- */

static bool same_addr(const struct sockaddr_storage *ss, socklen_t len, const net_addr_t *a)
{
    return len == net_addr_len(a) && memcmp(ss, net_addr_sockaddr(a), len) == 0;
}

/* The descriptor of this process whose addresses are the connection's. */
static int fd_of(const net_conn_t *conn)
{
    for (int fd = 0; fd < 1024; fd++) {
        struct sockaddr_storage l, p;
        socklen_t ll = sizeof l, pl = sizeof p;
        if (getsockname(fd, (struct sockaddr *)&l, &ll) == 0 &&
            getpeername(fd, (struct sockaddr *)&p, &pl) == 0 &&
            same_addr(&l, ll, net_conn_local_addr(conn)) &&
            same_addr(&p, pl, net_conn_peer_addr(conn)))
            return fd;
    }
    net_test_fail(__FILE__, __LINE__, "no descriptor has the connection's addresses");
}

static int int_opt(int fd, int level, int name)
{
    int v = -1;
    socklen_t len = sizeof v;
    CHECK(getsockopt(fd, level, name, &v, &len) == 0);
    return v;
}

/* ---- thread rules ---------------------------------------------------------- */

struct opt_call {
    net_conn_t *conn;
    int nodelay_off_rc, nodelay_on_rc, keepalive_rc;
    int nodelay_after_off, nodelay_after_on, keepalive_after;
};

static void opt_call_fn(void *arg)
{
    struct opt_call *c = arg;
    int fd = fd_of(c->conn);
    c->nodelay_off_rc = net_conn_set_tcp_nodelay(c->conn, false);
    c->nodelay_after_off = int_opt(fd, IPPROTO_TCP, TCP_NODELAY);
    c->nodelay_on_rc = net_conn_set_tcp_nodelay(c->conn, true);
    c->nodelay_after_on = int_opt(fd, IPPROTO_TCP, TCP_NODELAY);
    c->keepalive_rc = net_conn_set_keepalive(c->conn, true);
    c->keepalive_after = int_opt(fd, SOL_SOCKET, SO_KEEPALIVE);
}

/* From another thread the socket options are refused (the fd might already
 * belong to someone else) and change nothing; on the loop they apply. */
TEST(conn_socket_options_off_loop_ewrongthread)
{
    options();
    net_conn_t *conn = conn_fx_start(0);
    int fd = fd_of(conn);
    CHECK_EQ(int_opt(fd, IPPROTO_TCP, TCP_NODELAY), 1); /* the default */
    CHECK_EQ(int_opt(fd, SOL_SOCKET, SO_KEEPALIVE), 0);
    CHECK_EQ(net_conn_set_tcp_nodelay(conn, false), NET_EWRONGTHREAD);
    CHECK_EQ(net_conn_set_keepalive(conn, true), NET_EWRONGTHREAD);
    CHECK_EQ(int_opt(fd, IPPROTO_TCP, TCP_NODELAY), 1);
    CHECK_EQ(int_opt(fd, SOL_SOCKET, SO_KEEPALIVE), 0);
    CHECK_EQ(net_conn_set_tcp_nodelay(NULL, true), -EINVAL);
    CHECK_EQ(net_conn_set_keepalive(NULL, true), -EINVAL);

    struct opt_call c = {.conn = conn};
    net_test_on_loop(net_conn_loop(conn), opt_call_fn, &c);
    CHECK_EQ(c.nodelay_off_rc, 0);
    CHECK_EQ(c.nodelay_after_off, 0);
    CHECK_EQ(c.nodelay_on_rc, 0);
    CHECK_EQ(c.nodelay_after_on, 1);
    CHECK_EQ(c.keepalive_rc, 0);
    CHECK_EQ(c.keepalive_after, 1);
    conn_fx_finish(conn);
}

/* ---- options ------------------------------------------------------------------ */

/* All-zero connection options are the defaults: TCP_NODELAY on (above),
 * the high-water mark at 64 MiB (0 no longer turns it off), and no
 * max_output (64 MiB queued without a refusal). */
TEST(conn_options_all_zero_are_the_defaults)
{
    options();
    net_conn_t *conn = conn_fx_start(0);
    static char chunk[MiB];
    conn_fx_park(conn); /* nothing drains: the crossing comes at exactly 64 MiB */
    for (int i = 0; i < 64; i++)
        CHECK_OK(net_conn_send(conn, chunk, sizeof chunk));
    conn_fx_unpark();
    WAIT_UNTIL(atomic_load(&fx.high_waters) == 1);
    CHECK_EQ(atomic_load(&fx.high_water_queued), 64 * MiB);
    CHECK_OK(net_conn_force_close(conn));
    conn_fx_finish(conn);
}

static void nagle_options(void)
{
    options();
    conn_fx.opt.conn.nagle = true;
}

/* nagle = true leaves Nagle's algorithm on. */
TEST(conn_option_nagle_leaves_nodelay_off)
{
    nagle_options();
    net_conn_t *conn = conn_fx_start(0);
    CHECK_EQ(int_opt(fd_of(conn), IPPROTO_TCP, TCP_NODELAY), 0);
    conn_fx_finish(conn);
}

/* NET_NO_TIMEOUT is off, like 0: no idle timer is made for the connection
 * (a timer with a UINT32_MAX interval would be one). */
TEST(conn_idle_timeout_no_timeout_adds_no_timer)
{
    options();
    conn_fx.opt.conn.idle_timeout_ms = NET_NO_TIMEOUT;
    net_conn_t *conn = conn_fx_start(0);
    net_loop_t *loop = net_conn_loop(conn);
    size_t with_conn = net_loop_timer_count(loop);
    int fd2 = net_test_connect(net_server_addr(conn_fx.server), 0);
    WAIT_UNTIL(atomic_load(&conn_fx.keeper.ups) == 2);
    CHECK_EQ(net_loop_timer_count(loop), with_conn);
    close(fd2);
    WAIT_UNTIL(atomic_load(&conn_fx.keeper.downs) == 1);
    atomic_store(&conn_fx.keeper.downs, 0);
    net_conn_unref(atomic_exchange(&conn_fx.keeper.conn, NULL));
    conn_fx_finish(conn);
}

/* ---- handing work to the loop without memory --------------------------------- */

/* stop_read and start_read from another thread with the functor queue full
 * and no memory: both return 0, and the last of many wins. */
TEST(conn_stop_start_read_from_thread_without_memory)
{
    net_conn_t *conn = start_parked_without_memory();
    for (int i = 0; i < 100; i++) {
        CHECK_OK(net_conn_stop_read(conn));
        CHECK_OK(net_conn_start_read(conn));
    }
    CHECK_OK(net_conn_stop_read(conn));
    unpark_with_memory(conn);
    CHECK(net_test_send_all(conn_fx.fd, "ping", 4));
    net_test_sleep_ms(100);
    CHECK_EQ(atomic_load(&fx.received), 0); /* reading stopped */

    park_without_memory(conn);
    CHECK_OK(net_conn_start_read(conn));
    unpark_with_memory(conn);
    WAIT_UNTIL(atomic_load(&fx.received) == 4);
    conn_fx_finish(conn);
}

/* shutdown from another thread without memory: the peer reads EOF. */
TEST(conn_shutdown_from_thread_without_memory)
{
    net_conn_t *conn = start_parked_without_memory();
    CHECK_OK(net_conn_shutdown(conn));
    CHECK_EQ(net_conn_state(conn), NET_CONN_DISCONNECTING);
    CHECK_EQ(net_conn_shutdown(conn), -ENOTCONN);
    unpark_with_memory(conn);
    char c;
    CHECK_EQ(recv(conn_fx.fd, &c, 1, 0), 0); /* EOF (the socket's timeout bounds the wait) */
    conn_fx_finish(conn);
}

/* force_close from another thread without memory: the connection goes
 * down and the peer sees the close. */
TEST(conn_force_close_from_thread_without_memory)
{
    net_conn_t *conn = start_parked_without_memory();
    CHECK_OK(net_conn_force_close(conn));
    CHECK_EQ(net_conn_force_close(conn), -ENOTCONN);
    unpark_with_memory(conn);
    WAIT_UNTIL(atomic_load(&conn_fx.keeper.downs) == 1);
    char c;
    CHECK(recv(conn_fx.fd, &c, 1, 0) <= 0); /* EOF or a reset */
    CHECK_EQ(net_conn_stop_read(conn), -ENOTCONN);
    CHECK_EQ(net_conn_start_read(conn), -ENOTCONN);
    CHECK_EQ(net_conn_force_close_after(conn, 1), -ENOTCONN);
    conn_fx_finish(conn);
}

/* force_close_after needs a timer, and says so: -ENOMEM without memory
 * (nothing scheduled); with memory the latest call's deadline wins. */
TEST(conn_force_close_after_enomem_then_latest_wins)
{
    net_test_fail_allocs_from(SIZE_MAX);
    options();
    net_conn_t *conn = conn_fx_start(0);
    net_test_fail_allocs_from(1);
    CHECK_EQ(net_conn_force_close_after(conn, 1), -ENOMEM);
    net_test_fail_allocs_from(SIZE_MAX);
    net_test_sleep_ms(50);
    CHECK(net_conn_connected(conn));
    CHECK_OK(net_conn_force_close_after(conn, 60000));
    uint64_t t0 = net_test_now_ms();
    CHECK_OK(net_conn_force_close_after(conn, 20));
    WAIT_UNTIL(atomic_load(&conn_fx.keeper.downs) == 1);
    CHECK(net_test_now_ms() - t0 < NET_TEST_WAIT_MS);
    conn_fx_finish(conn);
}

/* The calls refuse NULL. */
TEST(conn_calls_refuse_null)
{
    struct iovec iov = {"x", 1};
    CHECK_EQ(net_conn_send(NULL, "x", 1), -EINVAL);
    CHECK_EQ(net_conn_sendv(NULL, &iov, 1), -EINVAL);
    CHECK_EQ(net_conn_send_buf(NULL, NULL), -EINVAL);
    CHECK_EQ(net_conn_shutdown(NULL), -EINVAL);
    CHECK_EQ(net_conn_force_close(NULL), -EINVAL);
    CHECK_EQ(net_conn_force_close_after(NULL, 1), -EINVAL);
    CHECK_EQ(net_conn_stop_read(NULL), -EINVAL);
    CHECK_EQ(net_conn_start_read(NULL), -EINVAL);
}

/* ---- write-complete after high water ------------------------------------------ */

#define BIG (8 * MiB) /* more than the kernel's send buffer takes */

static void small_then_big_fn(void *arg)
{
    net_conn_t *conn = arg;
    static char big[BIG];
    CHECK_OK(net_conn_send(conn, "0123456789", 10)); /* written at once: complete */
    CHECK_OK(net_conn_send(conn, big, sizeof big));   /* backs up past the mark */
}

/* The first send's write-complete is due when the second backs up past the
 * high-water mark: it must not run while that backlog is queued (a user
 * resuming on it would overrun), and one runs once the peer drained it
 * (on_write_complete checks output_queued == 0 each time). */
TEST(conn_write_complete_not_reported_while_backlog_queued)
{
    options();
    conn_fx.opt.conn.high_water_mark = 64 * KiB;
    atomic_store(&fx.wc_needs_empty, true);
    net_conn_t *conn = conn_fx_start(4 * KiB);
    net_test_on_loop(net_conn_loop(conn), small_then_big_fn, conn);
    WAIT_UNTIL(atomic_load(&fx.high_waters) == 1);
    net_test_sleep_ms(50); /* room for a stale write-complete to show up */
    CHECK_EQ(atomic_load(&fx.write_completes), 0);
    static char got[10 + BIG];
    net_test_recv_exact(conn_fx.fd, got, sizeof got);
    CHECK_MEM_EQ(got, "0123456789", 10);
    WAIT_UNTIL(atomic_load(&fx.write_completes) >= 1);
    conn_fx_finish(conn);
}

/* ---- net_conn_sendv ------------------------------------------------------------- */

struct sendv_call {
    net_conn_t *conn;
    int rc;
    size_t queued_after;
};

static void sendv_on_loop_fn(void *arg)
{
    struct sendv_call *c = arg;
    struct iovec iov[2] = {{"ab", 2}, {"cd", 2}};
    c->rc = net_conn_sendv(c->conn, iov, 2);
    struct net_conn_stats st;
    net_conn_stats(c->conn, &st);
    c->queued_after = st.output_queued;
}

/* Bad arguments are refused; nothing to send is a no-op; on the loop thread
 * the bytes are queued, not written inside the call, and arrive once. */
TEST(conn_sendv_arguments_and_loop_thread)
{
    options();
    net_conn_t *conn = conn_fx_start(0);
    struct iovec iov[2] = {{"ab", 2}, {NULL, 0}};
    CHECK_EQ(net_conn_sendv(conn, iov, -1), -EINVAL);
    CHECK_EQ(net_conn_sendv(conn, NULL, 1), -EINVAL);
    struct iovec nullbase = {NULL, 1};
    CHECK_EQ(net_conn_sendv(conn, &nullbase, 1), -EINVAL);
    struct iovec huge[2] = {{"a", SIZE_MAX / 2 + 1}, {"b", SIZE_MAX / 2 + 1}};
    CHECK_EQ(net_conn_sendv(conn, huge, 2), -EINVAL);
    CHECK_OK(net_conn_sendv(conn, NULL, 0));
    CHECK_OK(net_conn_sendv(conn, &iov[1], 1)); /* no bytes */

    struct sendv_call c = {.conn = conn};
    net_test_on_loop(net_conn_loop(conn), sendv_on_loop_fn, &c);
    CHECK_EQ(c.rc, 0);
    CHECK_EQ(c.queued_after, 4);
    char got[4];
    net_test_recv_exact(conn_fx.fd, got, sizeof got);
    CHECK_MEM_EQ(got, "abcd", 4);
    struct pollfd p = {.fd = conn_fx.fd, .events = POLLIN};
    CHECK_EQ(poll(&p, 1, 50), 0); /* the empty sends left nothing */
    CHECK_OK(net_conn_force_close(conn));
    WAIT_UNTIL(atomic_load(&conn_fx.keeper.downs) == 1);
    CHECK_EQ(net_conn_sendv(conn, iov, 1), -ENOTCONN);
    conn_fx_finish(conn);
}

/* Many threads, each message in pieces of varied sizes (an empty one
 * among them): a header (sender, seq, length), then a body that is a
 * function of (sender, seq, offset). A message split by another's bytes
 * breaks the parse or the body check. */
#define SENDERS 4
#define HDR 12

static unsigned char body_byte(uint32_t id, uint32_t seq, size_t off)
{
    return (unsigned char)(id * 131u + seq * 7u + off);
}

struct sender {
    pthread_t tid;
    net_conn_t *conn;
    uint32_t id, count;
};

static void *sendv_sender(void *arg)
{
    struct sender *s = arg;
    unsigned char hdr[HDR], body[700];
    for (uint32_t seq = 0; seq < s->count; seq++) {
        size_t a = (seq * 37u + s->id) % 400, b = (seq * 11u) % 300;
        uint32_t len = (uint32_t)(HDR + a + b);
        memcpy(hdr, &s->id, 4);
        memcpy(hdr + 4, &seq, 4);
        memcpy(hdr + 8, &len, 4);
        for (size_t i = 0; i < a + b; i++)
            body[i] = body_byte(s->id, seq, i);
        struct iovec iov[4] = {{hdr, HDR}, {body, a}, {NULL, 0}, {body + a, b}};
        CHECK_OK(net_conn_sendv(s->conn, iov, 4));
        if (seq % 128 == 0)
            sched_yield(); /* vary the interleaving */
    }
    return NULL;
}

static void recv_sendv_messages(int fd, uint32_t per_sender)
{
    uint32_t next[SENDERS] = {0};
    unsigned char hdr[HDR], body[700];
    for (uint64_t n = 0; n < (uint64_t)SENDERS * per_sender; n++) {
        uint32_t id, seq, len;
        net_test_recv_exact(fd, hdr, HDR);
        memcpy(&id, hdr, 4);
        memcpy(&seq, hdr + 4, 4);
        memcpy(&len, hdr + 8, 4);
        CHECK(id < SENDERS);
        CHECK_EQ(seq, next[id]++);
        CHECK(len >= HDR && len - HDR <= sizeof body);
        net_test_recv_exact(fd, body, len - HDR);
        for (size_t i = 0; i < len - HDR; i++)
            CHECK_EQ(body[i], body_byte(id, seq, i));
    }
}

TEST(conn_sendv_many_threads_each_call_contiguous)
{
    options();
    net_conn_t *conn = conn_fx_start(0);
    uint32_t per_sender = SCALED(5000, 1000);
    struct sender s[SENDERS];
    for (uint32_t i = 0; i < SENDERS; i++) {
        s[i] = (struct sender){.conn = conn, .id = i, .count = per_sender};
        CHECK_EQ(pthread_create(&s[i].tid, NULL, sendv_sender, &s[i]), 0);
    }
    recv_sendv_messages(conn_fx.fd, per_sender); /* while they send */
    for (int i = 0; i < SENDERS; i++)
        CHECK_EQ(pthread_join(s[i].tid, NULL), 0);
    struct pollfd p = {.fd = conn_fx.fd, .events = POLLIN};
    CHECK_EQ(poll(&p, 1, 50), 0); /* nothing after the last message */
    conn_fx_finish(conn);
}

/* ---- what an idle connection keeps ---------------------------------------- */

struct input_look {
    net_buf_t *in;
    size_t readable, capacity;
};

static void input_look_fn(void *arg)
{
    struct input_look *l = arg;
    l->readable = net_buf_readable(l->in);
    l->capacity = net_buf_capacity(l->in);
}

/* The connection's input buffer as its loop sees it between reads. */
static struct input_look look_at_input(net_conn_t *conn)
{
    struct input_look l = {.in = atomic_load(&fx.in)};
    CHECK(l.in != NULL);
    net_test_on_loop(net_conn_loop(conn), input_look_fn, &l);
    return l;
}

/* Input that on_message took whole leaves the buffer holding no storage,
 * small or large (the block waits as the thread's spare, not in the
 * connection). */
TEST(conn_idle_input_holds_no_storage)
{
    options();
    net_conn_t *conn = conn_fx_start(0);
    CHECK(net_test_send_all(conn_fx.fd, "ping\n", 5));
    WAIT_UNTIL(atomic_load(&fx.received) == 5);
    struct input_look l = look_at_input(conn);
    CHECK_EQ(l.readable, 0);
    CHECK_EQ(l.capacity, 0);
    static char big[60000];
    memset(big, 'b', sizeof big);
    big[sizeof big - 1] = '\n';
    CHECK(net_test_send_all(conn_fx.fd, big, sizeof big));
    WAIT_UNTIL(atomic_load(&fx.received) == 5 + sizeof big);
    l = look_at_input(conn);
    CHECK_EQ(l.capacity, 0);
    conn_fx_finish(conn);
}

/* A few bytes of an unfinished message after a large one keep a block of
 * their size, not the large one's (a peer that sends a byte and stops
 * must not pin a read's worth per connection); the message then completes
 * intact. */
TEST(conn_unfinished_input_keeps_small_block)
{
    options();
    atomic_store(&fx.keep_unfinished, true);
    net_conn_t *conn = conn_fx_start(0);
    static char big[60000];
    memset(big, 'b', sizeof big);
    big[sizeof big - 1] = '\n';
    CHECK(net_test_send_all(conn_fx.fd, big, sizeof big));
    WAIT_UNTIL(atomic_load(&fx.received) == sizeof big);
    CHECK(net_test_send_all(conn_fx.fd, "x", 1));
    struct input_look l;
    for (int i = 0; i < 1000 && (l = look_at_input(conn)).readable == 0; i++)
        net_test_sleep_ms(1);
    CHECK_EQ(l.readable, 1);
    CHECK(l.capacity > 0 && l.capacity < 4096);
    CHECK(net_test_send_all(conn_fx.fd, "yz\n", 3));
    WAIT_UNTIL(atomic_load(&fx.received) == sizeof big + 4);
    l = look_at_input(conn);
    CHECK_EQ(l.capacity, 0);
    atomic_store(&fx.keep_unfinished, false);
    conn_fx_finish(conn);
}

/* The address accessors make their net_addr_t forms at the first call:
 * without memory that call returns "no address" (AF_UNSPEC), and a later
 * one with memory the real addresses, the same pointer from then on. */
TEST(conn_addr_without_memory_is_no_address)
{
    net_test_fail_allocs_from(SIZE_MAX);
    options();
    net_conn_t *conn = conn_fx_start(0);
    net_test_fail_allocs_from(1);
    CHECK_EQ(net_addr_family(net_conn_peer_addr(conn)), AF_UNSPEC);
    CHECK_EQ(net_addr_family(net_conn_local_addr(conn)), AF_UNSPEC);
    net_test_fail_allocs_from(SIZE_MAX);
    const net_addr_t *peer = net_conn_peer_addr(conn);
    CHECK_EQ(net_addr_family(peer), AF_INET);
    CHECK(net_conn_peer_addr(conn) == peer);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    CHECK(getsockname(conn_fx.fd, (struct sockaddr *)&ss, &len) == 0);
    CHECK(same_addr(&ss, len, peer));
    CHECK(net_addr_equal(net_conn_local_addr(conn), net_server_addr(conn_fx.server)));
    conn_fx_finish(conn);
}
