/* Backpressure and the memory budget: a connection stops reading when its
 * output backs up, when the server's buffers are over budget, or when the
 * user says so, each reason on its own; nothing a peer sent is lost while
 * reading is paused, whatever the peer or the socket does meanwhile. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <net/tcp_server.h>

#include "faults_tcp_common.h"
#include "net_test_util.h"

/* ---- helpers ------------------------------------------------------------------ */

static unsigned char pattern_at(size_t i)
{
    return (unsigned char)((i * 7 + i / 251) & 0xff);
}

static void pattern_fill(unsigned char *p, size_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = pattern_at(off + i);
}

static bool pattern_check(const unsigned char *p, size_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != pattern_at(off + i))
            return false;
    return true;
}

/* Sends the pattern without blocking until `max` bytes went or the socket
 * took nothing for stall_ms (the peer stopped reading). Returns bytes sent. */
static size_t send_until_stall(int fd, size_t max, unsigned stall_ms)
{
    unsigned char chunk[64 * 1024];
    size_t sent = 0;
    uint64_t last = net_test_now_ms();
    while (sent < max && net_test_now_ms() - last < stall_ms) {
        size_t n = max - sent < sizeof chunk ? max - sent : sizeof chunk;
        pattern_fill(chunk, sent, n);
        ssize_t w = send(fd, chunk, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
            last = net_test_now_ms();
        } else if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) {
            break; /* the server closed us */
        } else {
            CHECK(w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            poll(&p, 1, 10);
        }
    }
    return sent;
}

/* Reads until EOF, checking the pattern from offset 0; returns the count. */
static size_t recv_pattern_until_eof(int fd)
{
    unsigned char buf[64 * 1024];
    size_t got = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        CHECK(n >= 0);
        if (n == 0)
            return got;
        CHECK(pattern_check(buf, got, (size_t)n));
        got += (size_t)n;
    }
}

static net_server_t *start_with(net_loop_t *loop, const struct net_server_options *base,
                                const struct net_conn_callbacks *cbs)
{
    struct net_server_options opt = *base;
    net_addr_t addr;
    CHECK_OK(net_addr_parse(&addr, "127.0.0.1:0"));
    net_server_t *server;
    CHECK_OK(net_server_new(loop, &addr, &opt, cbs, &server));
    CHECK_OK(net_server_start(server));
    return server;
}

/* Peaks of what the server holds, sampled on its loop every millisecond. */
static struct {
    struct net_test_conn_keeper keeper;
    net_server_t *server;
    size_t peak_queued, peak_used;
} S;

static void sample(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    net_conn_t *conn = atomic_load(&S.keeper.conn);
    if (conn) {
        struct net_conn_stats st;
        net_conn_stats(conn, &st);
        if (st.output_queued > S.peak_queued)
            S.peak_queued = st.output_queued;
    }
    struct net_server_stats ss;
    net_server_stats(S.server, &ss);
    if (ss.memory_used > S.peak_used)
        S.peak_used = ss.memory_used;
}

static void echo_keep(net_conn_t *conn, void *arg)
{
    net_test_keep_conn(conn, arg);
}

static void drop_kept(void)
{
    net_conn_unref(atomic_exchange(&S.keeper.conn, NULL));
}

static void stop_and_free(net_loop_t *loop, net_server_t *server)
{
    server_close(loop, server);
    net_loop_free(loop);
}

/* ---- output backpressure --------------------------------------------------------- */

struct noread_client {
    net_addr_t addr;
    size_t max;
    size_t sent, echoed;
};

/* Sends until the server stops taking bytes, then half-closes and reads
 * every echoed byte. */
static void noread_client(void *arg)
{
    struct noread_client *c = arg;
    int fd = net_test_connect(&c->addr, 64 * 1024);
    c->sent = send_until_stall(fd, c->max, 1500);
    CHECK_EQ(shutdown(fd, SHUT_WR), 0);
    c->echoed = recv_pattern_until_eof(fd);
    close(fd);
}

static void run_noread(size_t mark, size_t max, struct noread_client *c)
{
    net_loop_t *loop = net_test_new_loop(NET_TEST_WATCHDOG_S * 1000);
    struct net_server_options opt;
    net_server_options_init(&opt);
    opt.conn.backpressure_mark = mark;
    struct net_conn_callbacks cbs = {.on_connection = echo_keep, .on_message = echo_message,
                                     .arg = &S.keeper};
    S.server = start_with(loop, &opt, &cbs);
    net_timer_id_t t = net_loop_run_every(loop, 1, sample, NULL);
    CHECK(t > 0);
    c->addr = *net_server_addr(S.server);
    c->max = max;
    net_test_run_with_client(loop, noread_client, c);
    net_test_run_until(loop, no_connections, S.server);
    net_timer_cancel(loop, t);
    drop_kept();
    stop_and_free(loop, S.server);
}

TEST(backpressure_never_reading_peer_bounded)
{
    struct noread_client c;
    run_noread(0, 256 * MiB, &c);
    fprintf(stderr, "sent %zu before the server stopped reading; peak queued %zu, peak used %zu\n",
            c.sent, S.peak_queued, S.peak_used);
    /* The default mark (4 MiB) plus one read's worth; the peer was slowed by
     * TCP long before its 256 MiB. */
    CHECK(S.peak_queued <= 4 * MiB + 512 * KiB);
    CHECK(S.peak_used <= 4 * MiB + 1 * MiB);
    CHECK(c.sent < 64 * MiB);
    CHECK_EQ(c.echoed, c.sent); /* and every byte came back, in order */
}

TEST(backpressure_unlimited_reads_on)
{
    struct noread_client c;
    run_noread(NET_UNLIMITED, 24 * MiB, &c);
    CHECK_EQ(c.sent, 24 * MiB); /* nothing paused the server */
    CHECK(S.peak_queued > 8 * MiB);
    CHECK_EQ(c.echoed, c.sent);
}

/* ---- backpressure and stop_read are independent ----------------------------------- */

static struct {
    int fd;
    size_t sent;
    atomic_bool sent_all, drained;
} U;

static bool queued_at_least(void *arg)
{
    struct net_conn_stats st;
    net_conn_stats(atomic_load(&S.keeper.conn), &st);
    return st.output_queued >= (size_t)(uintptr_t)arg;
}

static bool queue_empty(void *arg)
{
    (void)arg;
    struct net_conn_stats st;
    net_conn_stats(atomic_load(&S.keeper.conn), &st);
    return st.output_queued == 0;
}

static uint64_t bytes_received(void)
{
    struct net_conn_stats st;
    net_conn_stats(atomic_load(&S.keeper.conn), &st);
    return st.bytes_received;
}

static void drain_echo(void *arg)
{
    size_t *want = arg;
    unsigned char buf[64 * 1024];
    size_t got = 0;
    while (got < *want) {
        ssize_t n = recv(U.fd, buf, sizeof buf, 0);
        CHECK(n > 0);
        CHECK(pattern_check(buf, got, (size_t)n));
        got += (size_t)n;
    }
}

static void keep_sending(void *arg)
{
    (void)arg;
    U.sent = send_until_stall(U.fd, 8 * MiB, 800);
    atomic_store(&U.sent_all, true);
}

TEST(backpressure_and_stop_read_compose)
{
    net_loop_t *loop = net_test_new_loop(NET_TEST_WATCHDOG_S * 1000);
    struct net_server_options opt;
    net_server_options_init(&opt);
    opt.conn.backpressure_mark = 256 * KiB;
    struct net_conn_callbacks cbs = {.on_connection = echo_keep, .on_message = echo_message,
                                     .arg = &S.keeper};
    S.server = start_with(loop, &opt, &cbs);
    U.fd = net_test_connect(net_server_addr(S.server), 64 * 1024);
    struct net_test_job sender;
    net_test_job_start(&sender, keep_sending, NULL);
    net_test_run_until(loop, net_test_job_done, &sender); /* the server paused: output */
    net_test_job_join(&sender);
    net_conn_t *conn = atomic_load(&S.keeper.conn);
    CHECK(queued_at_least((void *)(uintptr_t)(256 * KiB)));
    CHECK_OK(net_conn_stop_read(conn)); /* and now the user's reason too */
    uint64_t before = bytes_received();
    size_t echoed = (size_t)before;
    /* The peer reads everything echoed so far: output drains, but the user's
     * pause holds. */
    struct net_test_job reader;
    net_test_job_start(&reader, drain_echo, &echoed);
    net_test_run_until(loop, net_test_job_done, &reader);
    net_test_job_join(&reader);
    net_test_run_until(loop, queue_empty, NULL);
    net_test_run_for(loop, 300);
    CHECK_EQ(bytes_received(), before);
    /* Resume: the rest of what the peer sent comes in and back. */
    CHECK_OK(net_conn_start_read(conn));
    size_t rest = U.sent;
    CHECK_EQ(shutdown(U.fd, SHUT_WR), 0);
    unsigned char buf[64 * 1024];
    size_t got = echoed;
    while (got < rest) {
        net_test_run_for(loop, 1);
        ssize_t n = recv(U.fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && errno == EAGAIN)
            continue;
        CHECK(n > 0);
        CHECK(pattern_check(buf, got, (size_t)n));
        got += (size_t)n;
    }
    CHECK_EQ(got, U.sent);
    close(U.fd);
    net_test_run_until(loop, no_connections, S.server);
    drop_kept();
    stop_and_free(loop, S.server);
}

/* ---- redelivery of buffered input ---------------------------------------------------- */

static struct {
    int calls;
    char seen[2][16];
} R;

static void leave_then_take(net_conn_t *conn, net_buf_t *in, uint64_t when, void *arg)
{
    (void)when, (void)arg;
    size_t n = net_buf_readable(in) < 15 ? net_buf_readable(in) : 15;
    if (R.calls < 2)
        memcpy(R.seen[R.calls], net_buf_peek(in), n);
    if (R.calls++ == 0) {
        CHECK_OK(net_conn_stop_read(conn)); /* leave the bytes for later */
        return;
    }
    net_buf_retrieve_all(in);
}

static bool calls_at_least(void *n)
{
    return R.calls >= (int)(uintptr_t)n;
}

TEST(stop_read_redelivers_buffered_input)
{
    net_loop_t *loop = net_test_new_loop(NET_TEST_WATCHDOG_S * 1000);
    struct net_server_options opt;
    net_server_options_init(&opt);
    struct net_conn_callbacks cbs = {.on_connection = echo_keep, .on_message = leave_then_take,
                                     .arg = &S.keeper};
    S.server = start_with(loop, &opt, &cbs);
    int fd = net_test_connect(net_server_addr(S.server), 0);
    CHECK(net_test_send_all(fd, "abcdef", 6));
    net_test_run_until(loop, calls_at_least, (void *)1);
    net_test_run_for(loop, 100);
    CHECK_EQ(R.calls, 1);
    CHECK_OK(net_conn_start_read(atomic_load(&S.keeper.conn)));
    net_test_run_until(loop, calls_at_least, (void *)2); /* no new byte was sent */
    CHECK_EQ(memcmp(R.seen[1], "abcdef", 7), 0);
    net_test_run_for(loop, 100);
    CHECK_EQ(R.calls, 2);
    close(fd);
    net_test_run_until(loop, no_connections, S.server);
    drop_kept();
    stop_and_free(loop, S.server);
}

/* ---- paused reading and hang-ups: the matrix --------------------------------------- */

#define MATRIX_BYTES (48 * KiB) /* fits the peer's initial window: it all arrives */

static struct {
    bool pause, local_shutdown;
    net_buf_t got;
    atomic_int ups, downs, eofs;
    net_conn_t *conn;
} M;

static void m_connection(net_conn_t *conn, void *arg)
{
    (void)arg;
    if (!net_conn_connected(conn)) {
        atomic_fetch_add(&M.downs, 1);
        return;
    }
    M.conn = net_conn_ref(conn);
    atomic_fetch_add(&M.ups, 1);
    if (M.pause)
        CHECK_OK(net_conn_stop_read(conn));
    if (M.local_shutdown)
        CHECK_OK(net_conn_shutdown(conn));
}

static void m_message(net_conn_t *conn, net_buf_t *in, uint64_t when, void *arg)
{
    (void)conn, (void)when, (void)arg;
    CHECK_OK(net_buf_append(&M.got, net_buf_peek(in), net_buf_readable(in)));
    net_buf_retrieve_all(in);
}

static void m_peer_eof(net_conn_t *conn, void *arg)
{
    (void)conn, (void)arg;
    atomic_fetch_add(&M.eofs, 1);
}

static bool m_down(void *arg)
{
    (void)arg;
    return atomic_load(&M.downs) > 0;
}

static bool m_up(void *arg)
{
    (void)arg;
    return atomic_load(&M.ups) > 0;
}

static bool m_eof(void *arg)
{
    (void)arg;
    return atomic_load(&M.eofs) > 0;
}

/* One cell: the peer sends MATRIX_BYTES and then a FIN or a reset while the
 * server is (or is not) paused; after a while the server resumes. Every byte
 * must arrive, then the end in the way the options say. */
static void matrix_cell(bool pause, bool local_shutdown, bool half_close, bool reset)
{
    memset(&M, 0, sizeof M);
    net_buf_init(&M.got);
    M.pause = pause, M.local_shutdown = local_shutdown;
    net_loop_t *loop = net_test_new_loop(NET_TEST_WATCHDOG_S * 1000);
    struct net_server_options opt;
    net_server_options_init(&opt);
    opt.conn.half_close = half_close;
    struct net_conn_callbacks cbs = {.on_connection = m_connection, .on_message = m_message,
                                     .on_peer_eof = m_peer_eof};
    net_server_t *server = start_with(loop, &opt, &cbs);
    int fd = net_test_connect(net_server_addr(server), 0);
    net_test_run_until(loop, m_up, NULL);
    unsigned char *data = malloc(MATRIX_BYTES);
    pattern_fill(data, 0, MATRIX_BYTES);
    CHECK(net_test_send_all(fd, data, MATRIX_BYTES));
    free(data);
    net_test_run_for(loop, 50); /* on the wire before the reset */
    if (reset)
        net_test_close_reset(fd);
    else
        CHECK_EQ(shutdown(fd, SHUT_WR), 0);
    net_test_run_for(loop, 200); /* the hang-up is reported meanwhile */
    if (pause) {
        CHECK_EQ(net_buf_readable(&M.got), 0);
        CHECK_EQ(atomic_load(&M.downs), 0); /* held open for the unread bytes */
        CHECK_OK(net_conn_start_read(M.conn));
    }
    bool stays_open = half_close && !local_shutdown && !reset;
    if (stays_open) {
        net_test_run_until(loop, m_eof, NULL);
        CHECK(net_conn_connected(M.conn)); /* still open for writing */
        CHECK_OK(net_conn_send(M.conn, "bye", 3));
        CHECK_OK(net_conn_shutdown(M.conn));
    }
    net_test_run_until(loop, m_down, NULL);
    CHECK_EQ(net_buf_readable(&M.got), MATRIX_BYTES);
    CHECK(pattern_check((const unsigned char *)net_buf_peek(&M.got), 0, MATRIX_BYTES));
    CHECK_EQ(atomic_load(&M.eofs), stays_open ? 1 : 0);
    if (stays_open) {
        char bye[4] = {0};
        net_test_recv_exact(fd, bye, 3);
        CHECK_EQ(memcmp(bye, "bye", 3), 0);
    }
    net_test_run_for(loop, 50);
    CHECK_EQ(atomic_load(&M.downs), 1);
    if (!reset)
        close(fd);
    net_conn_unref(M.conn);
    net_buf_destroy(&M.got);
    net_test_run_until(loop, no_connections, server);
    stop_and_free(loop, server);
}

static void matrix(bool pause, bool reset)
{
    for (int local = 0; local < 2; local++)
        for (int half = 0; half < 2; half++)
            matrix_cell(pause, local, half, reset);
}

TEST(paused_read_peer_fin_keeps_bytes) { matrix(true, false); }
TEST(paused_read_peer_rst_keeps_bytes) { matrix(true, true); }
TEST(reading_peer_fin_keeps_bytes) { matrix(false, false); }
TEST(reading_peer_rst_keeps_bytes) { matrix(false, true); }

/* ---- input limit and the memory budget ------------------------------------------------ */

static void keep_all(net_conn_t *conn, net_buf_t *in, uint64_t when, void *arg)
{
    (void)conn, (void)in, (void)when, (void)arg; /* a message that never completes */
}

static bool kept_down(void *arg)
{
    (void)arg;
    return atomic_load(&S.keeper.downs) > 0;
}

TEST(max_input_closes_connection)
{
    net_loop_t *loop = net_test_new_loop(NET_TEST_WATCHDOG_S * 1000);
    struct net_server_options opt;
    net_server_options_init(&opt);
    opt.conn.max_input = 1 * MiB;
    struct net_conn_callbacks cbs = {.on_connection = echo_keep, .on_message = keep_all,
                                     .arg = &S.keeper};
    S.server = start_with(loop, &opt, &cbs);
    int fd = net_test_connect(net_server_addr(S.server), 0);
    struct net_test_job j;
    U.fd = fd;
    net_test_job_start(&j, keep_sending, NULL);
    net_test_run_until(loop, kept_down, NULL);
    net_test_run_until(loop, net_test_job_done, &j);
    net_test_job_join(&j);
    net_conn_t *conn = atomic_load(&S.keeper.conn);
    struct net_conn_stats st;
    net_conn_stats(conn, &st);
    CHECK(st.bytes_received > 1 * MiB);
    CHECK(st.bytes_received < 4 * MiB); /* closed soon after the limit */
    CHECK(U.sent < 8 * MiB);
    close(fd);
    drop_kept();
    stop_and_free(loop, S.server);
}

/* Framed messages: a 4-byte length, then the body; a complete message is
 * answered with one byte. */
static void framed(net_conn_t *conn, net_buf_t *in, uint64_t when, void *arg)
{
    (void)when, (void)arg;
    uint32_t len;
    while (net_buf_peek_u32(in, &len) == 0 && net_buf_readable(in) >= 4 + (size_t)len) {
        net_buf_retrieve(in, 4 + (size_t)len);
        CHECK_OK(net_conn_send(conn, "k", 1));
    }
}

#define HOGS 12
#define BUDGET (16 * MiB)

struct honest {
    net_addr_t addr;
    int answered;
};

static void honest_client(void *arg)
{
    struct honest *h = arg;
    int fd = net_test_connect(&h->addr, 0);
    for (int i = 0; i < 20; i++) {
        unsigned char msg[4 + 10] = {0, 0, 0, 10};
        CHECK(net_test_send_all(fd, msg, sizeof msg));
        char k;
        net_test_recv_exact(fd, &k, 1);
        CHECK_EQ(k, 'k');
        h->answered++;
        net_test_sleep_ms(20);
    }
    close(fd);
}

static void hogs_send(void *arg)
{
    int *fds = arg;
    /* Each announces a 64 MiB message and sends part of it, round robin, so
     * that they grow together. */
    for (int i = 0; i < HOGS; i++) {
        unsigned char hdr[4] = {4, 0, 0, 0};
        CHECK(net_test_send_all(fds[i], hdr, 4));
    }
    size_t sent[HOGS] = {0};
    uint64_t end = net_test_now_ms() + 3000;
    while (net_test_now_ms() < end)
        for (int i = 0; i < HOGS; i++)
            sent[i] += send_until_stall(fds[i], 256 * KiB, 5);
}

TEST(budget_pauses_big_holders_honest_served)
{
    net_loop_t *loop = net_test_new_loop(NET_TEST_WATCHDOG_S * 1000);
    struct net_server_options opt;
    net_server_options_init(&opt);
    opt.memory_budget = BUDGET;
    /* Paused for the budget, a hog does not read, so it does not see its
     * peer go either: the idle timeout is what ends such connections
     * (include/net/tcp_server.h says so). */
    opt.conn.idle_timeout_ms = 1000;
    struct net_conn_callbacks cbs = {.on_message = framed};
    S.server = start_with(loop, &opt, &cbs);
    net_timer_id_t t = net_loop_run_every(loop, 1, sample, NULL);
    int fds[HOGS];
    for (int i = 0; i < HOGS; i++)
        fds[i] = net_test_connect(net_server_addr(S.server), 0);
    struct net_test_job hogs;
    net_test_job_start(&hogs, hogs_send, fds);
    net_test_run_for(loop, 500);
    struct honest h = {*net_server_addr(S.server), 0};
    net_test_run_with_client(loop, honest_client, &h);
    net_test_run_until(loop, net_test_job_done, &hogs);
    net_test_job_join(&hogs);
    struct net_server_stats st;
    net_server_stats(S.server, &st);
    fprintf(stderr, "peak used %zu of %zu; %llu pauses\n", S.peak_used, st.memory_budget,
            (unsigned long long)st.budget_pauses);
    CHECK_EQ(h.answered, 20);
    CHECK(st.budget_pauses > 0);
    CHECK(S.peak_used >= BUDGET); /* the hogs did reach it */
    CHECK(S.peak_used <= BUDGET + BUDGET / 4);
    for (int i = 0; i < HOGS; i++)
        close(fds[i]);
    net_test_run_until(loop, no_connections, S.server);
    net_server_stats(S.server, &st);
    CHECK_EQ(st.memory_used, 0);
    net_timer_cancel(loop, t);
    stop_and_free(loop, S.server);
}
