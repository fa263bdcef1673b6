/* The lifecycle of net_server and net_client: the one close rule
 * (docs/design.md) end to end. Close from inside every callback, twice,
 * from another thread, with connections and connect attempts in flight;
 * the server's per-I/O-loop hooks (an object made in thread_init and closed
 * in thread_exit ends before the server); all-zero options; the thread rule
 * of new; a drain that delivers queued output before the FIN, and one cut
 * at its deadline by a peer that does not read. Loopback only.
 *
 * What every close scenario checks: the first close returns 0 and the
 * others -EALREADY; done runs exactly once, on the object's loop, never
 * inside a close call (a thread-local flag is set around each call), after
 * every down and failure callback: each connection goes up, then down,
 * exactly once (its context marks where it is), and each connect request
 * ends once; nothing of the object runs after done.
 *
 * Server scenarios run with 0 I/O threads (everything on the base loop) and
 * with 2. Peers are blocking sockets with timeouts, on helper threads. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <net/loop.h>
#include <net/loop_thread.h>
#include <net/tcp_client.h>
#include <net/tcp_server.h>

#include "net_test_util.h"

#define WATCHDOG_MS SCALED(50000, 200000)
#define NCLIENTS 3
#define BIG (8 * MiB)         /* more than the kernel's buffers take at once */
#define DEADLINE_MS 300       /* a drain that a non-reading peer runs out */
#define LONG_DRAIN_MS 20000   /* a drain that is never the one to end things */
#define MAX_LOOPS 4

/* Set around every close call on this thread: a done that sees it ran
 * inside the call. */
static _Thread_local bool in_close;

/* Where the scenario closes the object. */
enum where {
    AT_MAIN,           /* the loop thread, from outside any callback */
    AT_OTHER_THREAD,   /* a helper thread */
    AT_UP,
    AT_DOWN,
    AT_MESSAGE,
    AT_WRITE_COMPLETE,
    AT_HIGH_WATER,
    AT_PEER_EOF,
    AT_FAILURE,        /* the client's failure callback */
    AT_THREAD_INIT,    /* the server's hooks */
    AT_THREAD_EXIT,
};

/* What the callbacks saw. */
struct tally {
    atomic_int ups, downs, messages, write_completes, high_waters, peer_eofs;
    atomic_int fails, finals, final_err;
    atomic_int closes_ok, closes_already;
    atomic_int dones;
    atomic_bool done_seen;
};

/* The part of a fixture the callbacks share: where the scenario closes the
 * object, what the callbacks saw, and how to close it. */
struct closing {
    enum where where;
    bool echo; /* on_message sends the input back (else it drops it) */
    struct tally t;
    void (*close_now)(void);
};

static void close_at(struct closing *x, enum where w)
{
    if (x->where == w)
        x->close_now();
}

static void tally_close(struct tally *t, int rc)
{
    if (rc == 0)
        atomic_fetch_add(&t->closes_ok, 1);
    else if (rc == -EALREADY)
        atomic_fetch_add(&t->closes_already, 1);
    else
        net_test_fail(__FILE__, __LINE__, "close returned %d", rc);
}

/* Marks a connection up (context NULL -> up) or down (up -> down), so that a
 * second up or down of the same connection fails. */
static const char mark_up[] = "up", mark_down[] = "down";

static void mark(struct tally *t, net_conn_t *conn)
{
    CHECK(!atomic_load(&t->done_seen)); /* nothing after done */
    if (net_conn_connected(conn)) {
        CHECK(net_conn_context(conn) == NULL);
        net_conn_set_context(conn, (void *)mark_up);
        atomic_fetch_add(&t->ups, 1);
    } else {
        CHECK(net_conn_context(conn) == mark_up);
        net_conn_set_context(conn, (void *)mark_down);
        atomic_fetch_add(&t->downs, 1);
    }
}

/* ---- byte streams -------------------------------------------------------------- */

static unsigned char pattern_byte(uint64_t i)
{
    return (unsigned char)((i * 2654435761u) >> 13);
}

static char *pattern_block(size_t n)
{
    char *p = malloc(n);
    CHECK(p != NULL);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)pattern_byte(i);
    return p;
}

/* Reads until EOF (true) or a reset (false), checking the pattern from
 * offset 0 when `check`. *got counts the bytes. */
static bool read_to_end(int fd, bool check, uint64_t *got)
{
    static _Thread_local char buf[64 * KiB];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0)
            return true;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ECONNRESET || errno == EPIPE)
                return false;
            net_test_fail(__FILE__, __LINE__, "recv: %s", strerror(errno));
        }
        for (ssize_t i = 0; check && i < n; i++)
            if ((unsigned char)buf[i] != pattern_byte(*got + (uint64_t)i))
                net_test_fail(__FILE__, __LINE__, "byte %llu differs",
                              (unsigned long long)(*got + (uint64_t)i));
        *got += (uint64_t)n;
    }
}

/* A blocking socket connected to addr, or -1 if the connect was refused
 * (the listener closed meanwhile). */
static int try_connect(const net_addr_t *addr)
{
    int fd = net_test_socket(net_addr_family(addr), 0, NET_TEST_IO_TIMEOUT_MS);
    if (connect(fd, net_addr_sockaddr(addr), net_addr_len(addr)) == 0)
        return fd;
    CHECK(errno == ECONNREFUSED || errno == ECONNRESET);
    close(fd);
    return -1;
}

static bool flag_set(void *flag)
{
    return atomic_load((atomic_bool *)flag);
}

/* ---- the callbacks both objects' connections share -------------------------- */

static void on_message(net_conn_t *conn, net_buf_t *in, uint64_t ms, void *arg)
{
    (void)ms;
    struct closing *x = arg;
    CHECK(!atomic_load(&x->t.done_seen));
    atomic_fetch_add(&x->t.messages, 1);
    if (!x->echo || net_conn_send_buf(conn, in) < 0)
        net_buf_retrieve_all(in);
    close_at(x, AT_MESSAGE);
}

static void on_write_complete(net_conn_t *conn, void *arg)
{
    (void)conn;
    struct closing *x = arg;
    CHECK(!atomic_load(&x->t.done_seen));
    atomic_fetch_add(&x->t.write_completes, 1);
    close_at(x, AT_WRITE_COMPLETE);
}

static void on_high_water(net_conn_t *conn, size_t queued, void *arg)
{
    (void)conn, (void)queued;
    struct closing *x = arg;
    CHECK(!atomic_load(&x->t.done_seen));
    atomic_fetch_add(&x->t.high_waters, 1);
    close_at(x, AT_HIGH_WATER);
}

static void on_peer_eof(net_conn_t *conn, void *arg)
{
    (void)conn;
    struct closing *x = arg;
    CHECK(!atomic_load(&x->t.done_seen));
    atomic_fetch_add(&x->t.peer_eofs, 1);
    close_at(x, AT_PEER_EOF);
}

/* =========================================================================== */
/* The server                                                                   */
/* =========================================================================== */

struct loop_rec {
    _Atomic(net_loop_t *) loop;
    atomic_int inits, exits, live; /* live: the server's connections on it */
};

static struct server_fx {
    struct closing x; /* first: callbacks get &S.x */
    size_t io_threads;
    net_loop_t *base;
    net_server_t *server;
    net_addr_t addr;
    uint64_t drain_ms;
    char *big;
    struct loop_rec loops[MAX_LOOPS];
    atomic_int nloops;
} S;

static struct loop_rec *loop_rec(net_loop_t *loop)
{
    int n = atomic_load(&S.nloops);
    for (int i = 0; i < n; i++)
        if (atomic_load(&S.loops[i].loop) == loop)
            return &S.loops[i];
    net_test_fail(__FILE__, __LINE__, "a loop that thread_init did not see");
    return NULL;
}

static void server_done(net_server_t *server, void *arg)
{
    CHECK(arg == &S);
    CHECK(server == S.server);
    CHECK(net_loop_in_loop_thread(S.base));
    CHECK(!in_close);
    CHECK_EQ(atomic_load(&S.x.t.ups), atomic_load(&S.x.t.downs)); /* every down came first */
    struct net_server_stats st;
    net_server_stats(server, &st); /* still usable inside done */
    CHECK_EQ(st.connections, 0);
    CHECK(net_server_io_loop(server, 0) == NULL); /* the I/O threads are joined */
    for (int i = 0; i < atomic_load(&S.nloops); i++) {
        CHECK_EQ(atomic_load(&S.loops[i].inits), 1);
        CHECK_EQ(atomic_load(&S.loops[i].exits), 1);
    }
    atomic_store(&S.x.t.done_seen, true);
    atomic_fetch_add(&S.x.t.dones, 1);
}

static void server_close_now(void)
{
    in_close = true;
    tally_close(&S.x.t, net_server_close(S.server, S.drain_ms, server_done, &S));
    in_close = false;
}


static void thread_init(net_loop_t *loop, void *arg)
{
    CHECK(arg == &S);
    CHECK(net_loop_in_loop_thread(loop));
    CHECK((loop == S.base) == (S.io_threads == 0));
    int i = atomic_fetch_add(&S.nloops, 1);
    CHECK(i < MAX_LOOPS);
    atomic_store(&S.loops[i].loop, loop);
    atomic_fetch_add(&S.loops[i].inits, 1);
    close_at(&S.x, AT_THREAD_INIT);
}

static void thread_exit(net_loop_t *loop, void *arg)
{
    CHECK(arg == &S);
    CHECK(net_loop_in_loop_thread(loop));
    struct loop_rec *r = loop_rec(loop);
    CHECK_EQ(atomic_load(&r->inits), 1);
    CHECK_EQ(atomic_load(&r->live), 0); /* the server's connections here are gone */
    atomic_fetch_add(&r->exits, 1);
    close_at(&S.x, AT_THREAD_EXIT); /* closing already: -EALREADY */
}

static void srv_connection(net_conn_t *conn, void *arg)
{
    CHECK(arg == &S.x);
    struct loop_rec *r = loop_rec(net_conn_loop(conn)); /* thread_init ran first */
    mark(&S.x.t, conn);
    if (!net_conn_connected(conn)) {
        atomic_fetch_sub(&r->live, 1);
        close_at(&S.x, AT_DOWN);
        return;
    }
    atomic_fetch_add(&r->live, 1);
    if (S.x.where == AT_HIGH_WATER)
        CHECK_OK(net_conn_send(conn, S.big, BIG));
    close_at(&S.x, AT_UP);
}

static const struct net_conn_callbacks srv_cbs = {
    .on_connection = srv_connection, .on_message = on_message,
    .on_write_complete = on_write_complete, .on_high_water = on_high_water,
    .on_peer_eof = on_peer_eof, .arg = &S.x};

/* NCLIENTS peers: each connects (refused is fine once the server closes),
 * sends "ping" (half-closing after it for AT_PEER_EOF; the first one closes
 * at once for AT_DOWN), then reads until the server closes it. */
static void srv_peers(void *arg)
{
    (void)arg;
    int fds[NCLIENTS];
    for (int i = 0; i < NCLIENTS; i++)
        fds[i] = try_connect(&S.addr);
    for (int i = 0; i < NCLIENTS; i++) {
        if (fds[i] < 0 || !net_test_send_all(fds[i], "ping", 4))
            continue;
        if (S.x.where == AT_PEER_EOF)
            CHECK(shutdown(fds[i], SHUT_WR) == 0);
        if (S.x.where == AT_DOWN && i == 0) {
            close(fds[i]);
            fds[i] = -1;
        }
    }
    for (int i = 0; i < NCLIENTS; i++) {
        uint64_t got = 0;
        if (fds[i] >= 0) {
            read_to_end(fds[i], false, &got);
            close(fds[i]);
        }
    }
}

static bool all_up(void *arg)
{
    (void)arg;
    return atomic_load(&S.x.t.ups) == NCLIENTS;
}

static bool server_done_ran(void *arg)
{
    (void)arg;
    return atomic_load(&S.x.t.dones) > 0;
}

static void close_when_all_up(void *arg)
{
    (void)arg;
    WAIT_UNTIL(all_up(NULL));
    server_close_now();
}

static struct net_server_options hook_options(size_t io_threads)
{
    struct net_server_options opt;
    net_server_options_init(&opt);
    opt.io_threads = io_threads;
    opt.thread_init = thread_init;
    opt.thread_exit = thread_exit;
    opt.thread_arg = &S;
    return opt;
}

static void server_up(enum where w, size_t io_threads, const struct net_server_options *opt)
{
    S = (struct server_fx){.x = {.where = w, .echo = true, .close_now = server_close_now}, .io_threads = io_threads, .drain_ms = 2000, .big = S.big};
    S.base = net_test_new_loop(WATCHDOG_MS);
    net_addr_t any;
    CHECK_OK(net_addr_parse(&any, "127.0.0.1:0"));
    CHECK_OK(net_server_new(S.base, &any, opt, &srv_cbs, &S.server));
    CHECK_OK(net_server_start(S.server));
    S.addr = *net_server_addr(S.server);
}

/* Runs the loop until done, a little longer (a late callback or a second
 * done would show), and checks the close rule. */
static void server_wait_done(void)
{
    net_test_run_until(S.base, server_done_ran, NULL);
    net_test_run_for(S.base, 50);
    CHECK_EQ(atomic_load(&S.x.t.dones), 1);
    CHECK_EQ(atomic_load(&S.x.t.closes_ok), 1);
    CHECK_EQ(atomic_load(&S.x.t.ups), atomic_load(&S.x.t.downs));
    CHECK_EQ(atomic_load(&S.nloops), (int)(S.io_threads ? S.io_threads : 1));
}

static void server_scenario(enum where w, size_t io_threads)
{
    struct net_server_options opt = hook_options(io_threads);
    opt.conn.half_close = w == AT_PEER_EOF;
    if (w == AT_HIGH_WATER)
        opt.conn.high_water_mark = 64 * KiB;
    server_up(w, io_threads, &opt);
    struct net_test_job peers, closer;
    if (w != AT_THREAD_INIT)
        net_test_job_start(&peers, srv_peers, NULL);
    if (w == AT_OTHER_THREAD)
        net_test_job_start(&closer, close_when_all_up, NULL);
    if (w == AT_MAIN || w == AT_THREAD_EXIT) {
        net_test_run_until(S.base, all_up, NULL);
        server_close_now();
        server_close_now(); /* -EALREADY, and its done is not kept */
        CHECK_EQ(atomic_load(&S.x.t.dones), 0); /* not inside close */
    }
    server_wait_done();
    if (w == AT_OTHER_THREAD)
        net_test_job_join(&closer);
    if (w != AT_THREAD_INIT)
        net_test_job_join(&peers);
    net_loop_free(S.base);
}

/* Each scenario with everything on the base loop, then with 2 I/O threads. */
static void server_scenarios(enum where w)
{
    net_test_watchdog_start();
    S.big = pattern_block(BIG);
    server_scenario(w, 0);
    CHECK(atomic_load(&S.x.t.ups) > 0 || w == AT_THREAD_INIT);
    server_scenario(w, 2);
    free(S.big);
}

TEST(lifecycle_server_close_twice_with_connections)
{
    server_scenarios(AT_MAIN);
    CHECK_EQ(atomic_load(&S.x.t.ups), NCLIENTS);
    CHECK(atomic_load(&S.x.t.closes_already) >= 1);
}

TEST(lifecycle_server_close_from_other_thread)
{
    server_scenarios(AT_OTHER_THREAD);
    CHECK_EQ(atomic_load(&S.x.t.ups), NCLIENTS);
}

TEST(lifecycle_server_close_inside_up)
{
    server_scenarios(AT_UP);
}

TEST(lifecycle_server_close_inside_down)
{
    server_scenarios(AT_DOWN);
}

TEST(lifecycle_server_close_inside_message)
{
    server_scenarios(AT_MESSAGE);
    CHECK(atomic_load(&S.x.t.messages) >= 1);
}

TEST(lifecycle_server_close_inside_write_complete)
{
    server_scenarios(AT_WRITE_COMPLETE);
    CHECK(atomic_load(&S.x.t.write_completes) >= 1);
}

TEST(lifecycle_server_close_inside_high_water)
{
    server_scenarios(AT_HIGH_WATER);
    CHECK(atomic_load(&S.x.t.high_waters) >= 1);
}

TEST(lifecycle_server_close_inside_peer_eof)
{
    server_scenarios(AT_PEER_EOF);
    CHECK(atomic_load(&S.x.t.peer_eofs) >= 1);
}

TEST(lifecycle_server_close_inside_thread_init)
{
    server_scenarios(AT_THREAD_INIT);
}

TEST(lifecycle_server_close_again_inside_thread_exit)
{
    server_scenarios(AT_THREAD_EXIT);
    CHECK_EQ(atomic_load(&S.x.t.closes_already), 1 + 2); /* main's second, each exit */
}

/* ---- connections in flight ------------------------------------------------------- */

static atomic_bool storm_stop;

/* Connects, sends, and closes or resets, until told to stop; refusals
 * (the listener is closed) are expected once the close began. */
static void storm_peer(void *arg)
{
    (void)arg;
    for (int j = 0; !atomic_load(&storm_stop); j++) {
        int fd = try_connect(&S.addr);
        if (fd < 0) {
            net_test_sleep_ms(1);
            continue;
        }
        net_test_send_all(fd, "ping", 4);
        if (j % 2)
            close(fd);
        else
            net_test_close_reset(fd);
    }
}

/* Connections arrive on every loop while the close runs: each one that came
 * up goes down once, and done is last. */
TEST(lifecycle_server_close_during_connect_storm)
{
    net_test_watchdog_start();
    for (size_t io = 0; io <= 2; io += 2) {
        struct net_server_options opt = hook_options(io);
        server_up(AT_MAIN, io, &opt);
        S.drain_ms = 200;
        atomic_store(&storm_stop, false);
        struct net_test_job jobs[4];
        for (int i = 0; i < 4; i++)
            net_test_job_start(&jobs[i], storm_peer, NULL);
        net_test_run_for(S.base, 100);
        CHECK(atomic_load(&S.x.t.ups) > 0);
        server_close_now();
        server_wait_done();
        atomic_store(&storm_stop, true);
        for (int i = 0; i < 4; i++)
            net_test_job_join(&jobs[i]);
        net_loop_free(S.base);
    }
}

/* ---- thread_init / thread_exit with a client living on each I/O loop --------- */

static struct hook_fx {
    net_addr_t side; /* a listener that never accepts */
    atomic_int seq;  /* orders the done callbacks */
    atomic_int n, ups, server_done_seq;
    struct hook_client {
        _Atomic(net_loop_t *) loop;
        net_client_t *client;
        atomic_int ups, downs, dones, done_seq;
    } c[MAX_LOOPS];
} H;

static void hook_client_connection(net_conn_t *conn, void *arg)
{
    struct hook_client *hc = arg;
    CHECK(net_loop_in_loop_thread(atomic_load(&hc->loop)));
    atomic_fetch_add(net_conn_connected(conn) ? &hc->ups : &hc->downs, 1);
    if (net_conn_connected(conn))
        atomic_fetch_add(&H.ups, 1);
}

static void hook_client_done(net_client_t *client, void *arg)
{
    struct hook_client *hc = arg;
    CHECK(client == hc->client);
    CHECK(net_loop_in_loop_thread(atomic_load(&hc->loop)));
    CHECK_EQ(atomic_load(&hc->downs), 1); /* its connection went first */
    atomic_fetch_add(&hc->dones, 1);
    atomic_store(&hc->done_seq, atomic_fetch_add(&H.seq, 1) + 1);
}

static void hook_init(net_loop_t *loop, void *arg)
{
    CHECK(arg == &H);
    int i = atomic_fetch_add(&H.n, 1);
    CHECK(i < MAX_LOOPS);
    struct hook_client *hc = &H.c[i];
    atomic_store(&hc->loop, loop);
    struct net_conn_callbacks cbs = {.on_connection = hook_client_connection, .arg = hc};
    CHECK_OK(net_client_new(loop, &H.side, NULL, &cbs, NULL, NULL, &hc->client));
    CHECK_OK(net_client_connect(hc->client));
}

static void hook_exit(net_loop_t *loop, void *arg)
{
    CHECK(arg == &H);
    for (int i = 0; i < atomic_load(&H.n); i++)
        if (atomic_load(&H.c[i].loop) == loop)
            CHECK_OK(net_client_close(H.c[i].client, 0, hook_client_done, &H.c[i]));
}

static void hook_server_done(net_server_t *server, void *arg)
{
    (void)server, (void)arg;
    atomic_store(&H.server_done_seq, atomic_fetch_add(&H.seq, 1) + 1);
}

static bool hook_clients_up(void *arg)
{
    return atomic_load(&H.ups) == *(int *)arg;
}

static bool hook_server_done_ran(void *arg)
{
    (void)arg;
    return atomic_load(&H.server_done_seq) > 0;
}

/* A client made on each I/O loop in thread_init and closed in thread_exit
 * with drain 0 ends (down, then its done) before the server's done. */
TEST(lifecycle_server_thread_exit_closes_client_before_done)
{
    net_test_watchdog_start();
    for (size_t io = 0; io <= 2; io += 2) {
        H = (struct hook_fx){0};
        int lfd = net_test_listen(&H.side);
        net_loop_t *loop = net_test_new_loop(WATCHDOG_MS);
        struct net_server_options opt;
        net_server_options_init(&opt);
        opt.io_threads = io;
        opt.thread_init = hook_init;
        opt.thread_exit = hook_exit;
        opt.thread_arg = &H;
        net_addr_t any;
        CHECK_OK(net_addr_parse(&any, "127.0.0.1:0"));
        net_server_t *server;
        CHECK_OK(net_server_new(loop, &any, &opt, NULL, &server));
        CHECK_OK(net_server_start(server));
        int loops = io ? (int)io : 1;
        net_test_run_until(loop, hook_clients_up, &loops);
        CHECK_OK(net_server_close(server, 0, hook_server_done, NULL));
        net_test_run_until(loop, hook_server_done_ran, NULL);
        CHECK_EQ(atomic_load(&H.n), loops);
        for (int i = 0; i < loops; i++) {
            CHECK_EQ(atomic_load(&H.c[i].dones), 1);
            CHECK(atomic_load(&H.c[i].done_seq) < atomic_load(&H.server_done_seq));
        }
        net_loop_free(loop);
        close(lfd);
    }
}

/* ---- options: all zero ------------------------------------------------------------ */

static void echo_only(net_conn_t *conn, net_buf_t *in, uint64_t ms, void *arg)
{
    (void)ms, (void)arg;
    if (net_conn_send_buf(conn, in) < 0)
        net_buf_retrieve_all(in);
}

/* A struct nobody initialised but to zero means the defaults: the server
 * serves (max_connections 0 is not "none"), with the default budget. So
 * does NET_UNLIMITED connections. */
TEST(lifecycle_server_all_zero_options)
{
    net_test_watchdog_start();
    net_loop_t *loop = net_test_new_loop(WATCHDOG_MS);
    struct net_conn_callbacks cbs = {.on_message = echo_only};
    net_addr_t any;
    CHECK_OK(net_addr_parse(&any, "127.0.0.1:0"));
    for (int unlimited = 0; unlimited < 2; unlimited++) {
        struct net_server_options zero;
        memset(&zero, 0, sizeof zero);
        if (unlimited)
            zero.max_connections = NET_UNLIMITED;
        net_server_t *server;
        CHECK_OK(net_server_new(loop, &any, &zero, &cbs, &server));
        CHECK_OK(net_server_start(server));
        struct net_test_echo e = {*net_server_addr(server), "zero means default"};
        net_test_run_with_client(loop, net_test_echo_client, &e);
        struct net_server_stats st = net_test_server_stats(server);
        CHECK_EQ(st.accepted, 1);
        CHECK_EQ(st.refused, 0);
        CHECK_EQ(st.memory_budget, 256 * MiB);
        CHECK(net_server_io_loop(server, 0) == loop); /* io_threads 0: the base loop */
        CHECK(net_server_io_loop(server, 1) == NULL);
        net_test_server_close(loop, server, 0);
    }
    net_loop_free(loop);
}

/* ---- drain: queued output before the FIN, or cut at the deadline ---------------- */

#define DRAIN_BYTES (32 * MiB) /* more than loopback's socket buffers hold */

static struct drain_fx {
    int (*close)(uint64_t drain_ms); /* closes the object under test */
    char *data;
    _Atomic(net_conn_t *) conn; /* the server's side, with a reference */
    atomic_bool go_read;        /* the peer may start reading */
    atomic_bool done;
    bool eof;
    uint64_t got;
} D;

static void drain_on_connection(net_conn_t *conn, void *arg)
{
    (void)arg;
    if (!net_conn_connected(conn))
        return;
    atomic_store(&D.conn, net_conn_ref(conn));
    CHECK_OK(net_conn_send(conn, D.data, DRAIN_BYTES));
}

/* The peer's side of a drain: waits for go_read, then reads to the end. */
static void drain_read(int fd)
{
    WAIT_UNTIL(atomic_load(&D.go_read));
    D.eof = read_to_end(fd, true, &D.got);
    close(fd);
}

static void drain_peer(void *arg)
{
    int fd = try_connect(arg);
    CHECK(fd >= 0);
    drain_read(fd);
}

static void drain_done(net_server_t *server, void *arg)
{
    (void)server, (void)arg;
    atomic_store(&D.done, true);
}

static bool drain_queued(void *arg)
{
    (void)arg;
    net_conn_t *conn = atomic_load(&D.conn);
    struct net_conn_stats st = {0};
    if (conn)
        net_conn_stats(conn, &st);
    return st.output_queued > MiB;
}

/* Closes the object with drain_ms, lets the peer read at once (read_at 0)
 * or once done ran (1), waits for done and the peer. Returns how long the
 * close took. */
static uint64_t drain_close(net_loop_t *loop, uint64_t drain_ms, int read_at,
                            struct net_test_job *peer)
{
    uint64_t t0 = net_now_ms();
    CHECK_OK(D.close(drain_ms));
    if (read_at == 0)
        atomic_store(&D.go_read, true);
    net_test_run_until(loop, flag_set, &D.done);
    uint64_t took = net_now_ms() - t0;
    atomic_store(&D.go_read, true);
    net_test_job_join(peer);
    return took;
}

/* The peer read everything: all of it arrived, then the FIN, and the close
 * ended as soon as that was done, long before its deadline. */
static void check_drain_delivered(uint64_t took)
{
    CHECK(D.eof);
    CHECK_EQ(D.got, DRAIN_BYTES);
    CHECK(took < LONG_DRAIN_MS / 2);
}

/* The peer read nothing until the close was done: at the deadline the
 * connection was force-closed and what was still queued was dropped. */
static void check_drain_cut(uint64_t took)
{
    CHECK(took >= DEADLINE_MS - 5);
    CHECK(took < DEADLINE_MS + SCALED(5000, 20000));
    CHECK(D.got < DRAIN_BYTES);
}

static net_server_t *drain_server;

static int drain_server_close(uint64_t drain_ms)
{
    return net_server_close(drain_server, drain_ms, drain_done, NULL);
}

/* Runs a server whose connection queues DRAIN_BYTES to a peer that reads
 * only from `read_at` on (0: once close was called, 1: once done ran), and
 * closes it with drain_ms. Returns how long the close took. */
static uint64_t drain_scenario(uint64_t drain_ms, int read_at)
{
    net_test_watchdog_start();
    D = (struct drain_fx){.close = drain_server_close, .data = pattern_block(DRAIN_BYTES)};
    net_loop_t *loop = net_test_new_loop(WATCHDOG_MS);
    struct net_server_options opt;
    net_server_options_init(&opt);
    opt.io_threads = 1;
    struct net_conn_callbacks cbs = {.on_connection = drain_on_connection};
    net_addr_t any;
    CHECK_OK(net_addr_parse(&any, "127.0.0.1:0"));
    CHECK_OK(net_server_new(loop, &any, &opt, &cbs, &drain_server));
    CHECK_OK(net_server_start(drain_server));
    net_addr_t addr = *net_server_addr(drain_server);
    struct net_test_job peer;
    net_test_job_start(&peer, drain_peer, &addr);
    net_test_run_until(loop, drain_queued, NULL); /* our own queue holds bytes */
    uint64_t took = drain_close(loop, drain_ms, read_at, &peer);
    net_conn_unref(atomic_load(&D.conn));
    net_loop_free(loop);
    free(D.data);
    return took;
}

TEST(lifecycle_server_drain_delivers_queued_output)
{
    check_drain_delivered(drain_scenario(LONG_DRAIN_MS, 0));
}

TEST(lifecycle_server_drain_deadline_force_closes)
{
    check_drain_cut(drain_scenario(DEADLINE_MS, 1));
}

/* =========================================================================== */
/* The client                                                                   */
/* =========================================================================== */

static struct client_fx {
    struct closing x; /* first: callbacks get &C.x */
    net_loop_t *loop;
    net_client_t *client;
    net_addr_t peer;
    uint64_t drain_ms;
    char *big;
    bool many_requests; /* finals may be more than one */
    uint64_t fail_ms[2]; /* when the first two failures were reported */
} C;

static void client_done(net_client_t *client, void *arg)
{
    CHECK(arg == &C);
    CHECK(client == C.client);
    CHECK(net_loop_in_loop_thread(C.loop));
    CHECK(!in_close);
    CHECK_EQ(atomic_load(&C.x.t.ups), atomic_load(&C.x.t.downs)); /* the down came first */
    CHECK(C.many_requests || atomic_load(&C.x.t.finals) <= 1);
    (void)net_client_attempts(client); /* still usable inside done */
    atomic_store(&C.x.t.done_seen, true);
    atomic_fetch_add(&C.x.t.dones, 1);
}

static void client_close_now(void)
{
    in_close = true;
    tally_close(&C.x.t, net_client_close(C.client, C.drain_ms, client_done, &C));
    in_close = false;
}


static void cli_connection(net_conn_t *conn, void *arg)
{
    CHECK(arg == &C.x);
    CHECK(net_loop_in_loop_thread(C.loop));
    mark(&C.x.t, conn);
    if (!net_conn_connected(conn)) {
        close_at(&C.x, AT_DOWN);
        return;
    }
    if (C.x.where == AT_HIGH_WATER)
        CHECK_OK(net_conn_send(conn, C.big, BIG));
    else
        CHECK_OK(net_conn_send(conn, "ping", 4));
    close_at(&C.x, AT_UP);
}

static void cli_failed(net_client_t *client, int err, bool will_retry, void *arg)
{
    CHECK(arg == &C);
    CHECK(client == C.client);
    CHECK(net_loop_in_loop_thread(C.loop));
    CHECK(!atomic_load(&C.x.t.done_seen));
    int n = atomic_fetch_add(&C.x.t.fails, 1);
    if (n < 2)
        C.fail_ms[n] = net_now_ms();
    if (!will_retry) {
        atomic_fetch_add(&C.x.t.finals, 1);
        atomic_store(&C.x.t.final_err, err);
    }
    close_at(&C.x, AT_FAILURE);
}

static const struct net_conn_callbacks cli_cbs = {
    .on_connection = cli_connection, .on_message = on_message,
    .on_write_complete = on_write_complete, .on_high_water = on_high_water,
    .on_peer_eof = on_peer_eof, .arg = &C.x};

/* The client's peer, on a helper thread: accepts one connection and echoes
 * until EOF; for AT_DOWN it echoes the first piece and closes, for
 * AT_PEER_EOF it half-closes after the first piece. */
static void cli_peer(void *arg)
{
    int fd = net_test_accept(*(int *)arg);
    static char buf[64 * KiB];
    bool first = true;
    /* Not a byte read before the high-water callback: a peer reading along
     * lets loopback take all of BIG in one write, and the mark is never
     * crossed (seen once under ASan: no callback, no close, the peer waited
     * out its receive timeout). */
    if (C.x.where == AT_HIGH_WATER)
        WAIT_UNTIL(atomic_load(&C.x.t.high_waters) >= 1);
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) {
            CHECK(n == 0 || errno == ECONNRESET);
            break;
        }
        if (!net_test_send_all(fd, buf, (size_t)n))
            break;
        if (first && C.x.where == AT_DOWN)
            break;
        if (first && C.x.where == AT_PEER_EOF)
            CHECK(shutdown(fd, SHUT_WR) == 0);
        first = false;
    }
    close(fd);
}

static bool client_up(void *arg)
{
    (void)arg;
    return atomic_load(&C.x.t.ups) == 1;
}

static bool client_failed_once(void *arg)
{
    (void)arg;
    return atomic_load(&C.x.t.fails) >= 1;
}

static bool client_done_ran(void *arg)
{
    (void)arg;
    return atomic_load(&C.x.t.dones) > 0;
}

struct wait_for {
    bool (*cond)(void *arg);
};

/* On a helper thread: closes the client once cond holds. */
static void close_when(void *arg)
{
    struct wait_for *w = arg;
    WAIT_UNTIL(w->cond(NULL));
    client_close_now();
}

/* Runs the loop until done, a little longer, and checks the close rule and
 * that the one connect request ended once (up, or a final failure). */
static void client_wait_done(void)
{
    net_test_run_until(C.loop, client_done_ran, NULL);
    net_test_run_for(C.loop, 50);
    CHECK_EQ(atomic_load(&C.x.t.dones), 1);
    CHECK_EQ(atomic_load(&C.x.t.closes_ok), 1);
    CHECK_EQ(atomic_load(&C.x.t.ups), atomic_load(&C.x.t.downs));
    CHECK_EQ(atomic_load(&C.x.t.ups) + atomic_load(&C.x.t.finals), 1);
}

static void client_scenario(enum where w, bool refused)
{
    net_test_watchdog_start();
    C = (struct client_fx){.x = {.where = w, .close_now = client_close_now}, .drain_ms = 2000, .big = pattern_block(BIG)};
    C.loop = net_test_new_loop(WATCHDOG_MS);
    int lfd = net_test_listen(&C.peer);
    if (refused) { /* bound and not listening: refused */
        close(lfd);
        lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(lfd >= 0);
        CHECK(bind(lfd, net_addr_sockaddr(&C.peer), net_addr_len(&C.peer)) == 0);
    }
    struct net_client_options opt;
    net_client_options_init(&opt);
    opt.retry = refused;
    opt.retry_initial_ms = w == AT_OTHER_THREAD ? 5000 : 10; /* other thread: in the backoff */
    opt.conn.half_close = w == AT_PEER_EOF;
    if (w == AT_HIGH_WATER)
        opt.conn.high_water_mark = 64 * KiB;
    CHECK_OK(net_client_new(C.loop, &C.peer, &opt, &cli_cbs, cli_failed, &C, &C.client));
    struct net_test_job peer, closer;
    struct wait_for until = {refused ? client_failed_once : client_up};
    if (!refused)
        net_test_job_start(&peer, cli_peer, &lfd);
    if (w == AT_OTHER_THREAD)
        net_test_job_start(&closer, close_when, &until);
    CHECK_OK(net_client_connect(C.client));
    if (w == AT_MAIN) {
        net_test_run_until(C.loop, client_up, NULL);
        client_close_now();
        client_close_now(); /* -EALREADY */
        CHECK_EQ(atomic_load(&C.x.t.dones), 0);
    }
    client_wait_done();
    if (w == AT_OTHER_THREAD)
        net_test_job_join(&closer);
    if (!refused)
        net_test_job_join(&peer);
    close(lfd);
    net_loop_free(C.loop);
    free(C.big);
}

TEST(lifecycle_client_close_twice_connected)
{
    client_scenario(AT_MAIN, false);
    CHECK_EQ(atomic_load(&C.x.t.closes_already), 1);
}

TEST(lifecycle_client_close_from_other_thread_connected)
{
    client_scenario(AT_OTHER_THREAD, false);
    CHECK_EQ(atomic_load(&C.x.t.ups), 1);
}

/* A connect attempt in flight: failed once, waiting for its retry. */
TEST(lifecycle_client_close_from_other_thread_during_backoff)
{
    client_scenario(AT_OTHER_THREAD, true);
    CHECK_EQ(atomic_load(&C.x.t.fails), 2);
    CHECK_EQ(atomic_load(&C.x.t.final_err), NET_ECANCELLED);
}

TEST(lifecycle_client_close_inside_up)
{
    client_scenario(AT_UP, false);
}

TEST(lifecycle_client_close_inside_down)
{
    client_scenario(AT_DOWN, false);
}

TEST(lifecycle_client_close_inside_message)
{
    client_scenario(AT_MESSAGE, false);
    CHECK(atomic_load(&C.x.t.messages) >= 1);
}

TEST(lifecycle_client_close_inside_write_complete)
{
    client_scenario(AT_WRITE_COMPLETE, false);
    CHECK(atomic_load(&C.x.t.write_completes) >= 1);
}

TEST(lifecycle_client_close_inside_high_water)
{
    client_scenario(AT_HIGH_WATER, false);
    CHECK(atomic_load(&C.x.t.high_waters) >= 1);
}

TEST(lifecycle_client_close_inside_peer_eof)
{
    client_scenario(AT_PEER_EOF, false);
    CHECK(atomic_load(&C.x.t.peer_eofs) >= 1);
}

/* Inside the report of a failed attempt that armed a retry: the retry is
 * cancelled, reported once more (will_retry false), then done. */
TEST(lifecycle_client_close_inside_failure)
{
    client_scenario(AT_FAILURE, true);
    CHECK_EQ(atomic_load(&C.x.t.fails), 2);
    CHECK_EQ(atomic_load(&C.x.t.final_err), NET_ECANCELLED);
    CHECK(atomic_load(&C.x.t.closes_already) >= 1); /* the cancel report closed again */
}

/* ---- an echo server on its own loop thread, as a peer --------------------------- */

static struct peer_fx {
    net_loop_thread_t *thread;
    net_server_t *server;
    net_addr_t addr;
    atomic_bool closed;
} P;

static void peer_server_init(net_loop_t *loop, void *arg)
{
    (void)arg;
    static const struct net_conn_callbacks cbs = {.on_message = echo_only};
    net_addr_t any;
    CHECK_OK(net_addr_parse(&any, "127.0.0.1:0"));
    CHECK_OK(net_server_new(loop, &any, NULL, &cbs, &P.server));
    CHECK_OK(net_server_start(P.server));
    P.addr = *net_server_addr(P.server);
}

static void peer_server_up(void)
{
    P = (struct peer_fx){0};
    CHECK_OK(net_loop_thread_start("peer", peer_server_init, NULL, &P.thread));
}

static void peer_server_closed(net_server_t *server, void *arg)
{
    (void)server, (void)arg;
    atomic_store(&P.closed, true);
}

static void peer_server_down(void)
{
    CHECK_OK(net_server_close(P.server, 0, peer_server_closed, NULL)); /* thread-safe */
    WAIT_UNTIL(atomic_load(&P.closed));
    CHECK_OK(net_loop_thread_join(P.thread));
}

/* ---- connect and disconnect from other threads, racing the close -------------- */

/* Connects and disconnects until the client says -ESHUTDOWN. */
static void race_caller(void *arg)
{
    for (unsigned i = (unsigned)(uintptr_t)arg;; i++) {
        int rc = i % 3 ? net_client_connect(C.client) : net_client_disconnect(C.client);
        if (rc == -ESHUTDOWN)
            return;
        CHECK_OK(rc);
        if (i % 64 == 0)
            net_test_sleep_ms(1);
    }
}

/* Three threads connect and disconnect while the loop applies it (and
 * reconnects), then while a close comes in. The loop is parked from the
 * close until the callers are gone: a call may race with the close, but not
 * with the memory going away after done (the caller's part of the rule). */
TEST(lifecycle_client_connect_disconnect_racing_close)
{
    net_test_watchdog_start();
    peer_server_up();
    C = (struct client_fx){.x = {.where = AT_MAIN, .close_now = client_close_now}, .drain_ms = 100, .peer = P.addr,
                           .many_requests = true};
    C.loop = net_test_new_loop(WATCHDOG_MS);
    struct net_client_options opt;
    net_client_options_init(&opt);
    opt.reconnect = true;
    opt.retry = true;
    opt.retry_initial_ms = 1;
    CHECK_OK(net_client_new(C.loop, &C.peer, &opt, &cli_cbs, cli_failed, &C, &C.client));
    struct net_test_job callers[3];
    for (int i = 0; i < 3; i++)
        net_test_job_start(&callers[i], race_caller, (void *)(uintptr_t)i);
    net_test_run_for(C.loop, SCALED(300, 600));
    client_close_now();
    for (int i = 0; i < 3; i++)
        net_test_job_join(&callers[i]);
    net_test_run_until(C.loop, client_done_ran, NULL);
    net_test_run_for(C.loop, 50);
    CHECK_EQ(atomic_load(&C.x.t.dones), 1);
    CHECK_EQ(atomic_load(&C.x.t.closes_ok), 1);
    CHECK(atomic_load(&C.x.t.ups) > 0);
    CHECK_EQ(atomic_load(&C.x.t.ups), atomic_load(&C.x.t.downs));
    net_loop_free(C.loop);
    peer_server_down();
}

/* ---- options, threads, disconnect ------------------------------------------------ */

/* An all-zero struct means the defaults (connect timeout 5000, backoff 100
 * to 10000, backpressure off); NET_NO_TIMEOUT leaves the timeout to the
 * kernel. Either client connects and echoes. */
TEST(lifecycle_client_all_zero_options)
{
    net_test_watchdog_start();
    peer_server_up();
    for (int no_timeout = 0; no_timeout < 2; no_timeout++) {
        C = (struct client_fx){.x = {.where = AT_MESSAGE, .close_now = client_close_now}, .drain_ms = 0, .peer = P.addr};
        C.loop = net_test_new_loop(WATCHDOG_MS);
        struct net_client_options zero;
        memset(&zero, 0, sizeof zero);
        if (no_timeout)
            zero.connect_timeout_ms = NET_NO_TIMEOUT;
        CHECK_OK(net_client_new(C.loop, &C.peer, &zero, &cli_cbs, cli_failed, &C, &C.client));
        CHECK_OK(net_client_connect(C.client));
        client_wait_done(); /* closed once the echo of "ping" came back */
        CHECK(atomic_load(&C.x.t.messages) >= 1);
        CHECK_EQ(atomic_load(&C.x.t.fails), 0);
        net_loop_free(C.loop);
    }
    peer_server_down();
}

static bool client_failed_twice(void *arg)
{
    (void)arg;
    return atomic_load(&C.x.t.fails) >= 2;
}

/* Zero backoff options mean 100 ms first and a 10 s cap: a refused attempt
 * is retried after about 100 ms (taken as 0 ms, either would retry at once). */
TEST(lifecycle_client_zero_backoff_means_default_delay)
{
    net_test_watchdog_start();
    C = (struct client_fx){.x = {.where = AT_MAIN, .close_now = client_close_now}};
    C.loop = net_test_new_loop(WATCHDOG_MS);
    int lfd = net_test_listen(&C.peer);
    close(lfd);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); /* bound, not listening */
    CHECK(lfd >= 0);
    CHECK(bind(lfd, net_addr_sockaddr(&C.peer), net_addr_len(&C.peer)) == 0);
    struct net_client_options zero;
    memset(&zero, 0, sizeof zero);
    zero.retry = true;
    CHECK_OK(net_client_new(C.loop, &C.peer, &zero, &cli_cbs, cli_failed, &C, &C.client));
    CHECK_OK(net_client_connect(C.client));
    net_test_run_until(C.loop, client_failed_twice, NULL);
    client_close_now();
    client_wait_done();
    CHECK_EQ(atomic_load(&C.x.t.final_err), NET_ECANCELLED);
    uint64_t gap = C.fail_ms[1] - C.fail_ms[0];
    CHECK(gap >= 90);
    CHECK(gap < 100 + SCALED(1000, 4000));
    close(lfd);
    net_loop_free(C.loop);
}

struct wrong_thread {
    net_loop_t *loop;
    net_addr_t addr;
    int server_rc, client_rc;
    net_server_t *server;
    net_client_t *client;
};

static void new_elsewhere(void *arg)
{
    struct wrong_thread *w = arg;
    w->server_rc = net_server_new(w->loop, &w->addr, NULL, NULL, &w->server);
    w->client_rc = net_client_new(w->loop, &w->addr, NULL, NULL, NULL, NULL, &w->client);
}

/* new is the loop thread's only: from another thread it says so and makes
 * nothing. The other calls are thread-safe (the scenarios above). */
TEST(lifecycle_new_from_wrong_thread)
{
    net_test_watchdog_start();
    struct wrong_thread w = {.loop = net_test_new_loop(WATCHDOG_MS)};
    CHECK_OK(net_addr_parse(&w.addr, "127.0.0.1:0"));
    struct net_test_job j;
    net_test_job_start(&j, new_elsewhere, &w);
    net_test_job_join(&j);
    CHECK_EQ(w.server_rc, NET_EWRONGTHREAD);
    CHECK_EQ(w.client_rc, NET_EWRONGTHREAD);
    CHECK(w.server == NULL);
    CHECK(w.client == NULL);
    CHECK_EQ(net_server_close(NULL, 0, NULL, NULL), -EINVAL);
    CHECK_EQ(net_server_start(NULL), -EINVAL);
    CHECK(net_server_io_loop(NULL, 0) == NULL);
    net_loop_free(w.loop);
}

static bool client_down(void *arg)
{
    (void)arg;
    return atomic_load(&C.x.t.downs) == 1;
}

static bool client_final(void *arg)
{
    return atomic_load(&C.x.t.finals) == *(int *)arg;
}

/* disconnect returns 0 whatever the state (idle, a connect not yet applied,
 * connected), -ESHUTDOWN once close was called, -EINVAL for NULL. */
TEST(lifecycle_client_disconnect_returns)
{
    net_test_watchdog_start();
    C = (struct client_fx){.x = {.where = AT_MAIN, .close_now = client_close_now}, .many_requests = true};
    C.loop = net_test_new_loop(WATCHDOG_MS);
    int lfd = net_test_listen(&C.peer);
    CHECK_OK(net_client_new(C.loop, &C.peer, NULL, &cli_cbs, cli_failed, &C, &C.client));
    CHECK_OK(net_client_disconnect(C.client)); /* idle: nothing to do */
    CHECK_OK(net_client_connect(C.client));
    CHECK_OK(net_client_disconnect(C.client)); /* applied after the connect: cancels it */
    int one = 1;
    net_test_run_until(C.loop, client_final, &one);
    CHECK_EQ(atomic_load(&C.x.t.final_err), NET_ECANCELLED);
    CHECK_OK(net_client_connect(C.client));
    net_test_run_until(C.loop, client_up, NULL);
    CHECK_OK(net_client_disconnect(C.client)); /* graceful; the backlog peer never closes */
    CHECK_OK(net_client_disconnect(C.client));
    client_close_now(); /* so the close forces it (drain 0) */
    CHECK_EQ(net_client_disconnect(C.client), -ESHUTDOWN);
    CHECK_EQ(net_client_connect(C.client), -ESHUTDOWN);
    CHECK_EQ(net_client_disconnect(NULL), -EINVAL);
    net_test_run_until(C.loop, client_down, NULL);
    net_test_run_until(C.loop, client_done_ran, NULL);
    CHECK_EQ(atomic_load(&C.x.t.dones), 1);
    CHECK_EQ(atomic_load(&C.x.t.finals), 1);
    close(lfd);
    net_loop_free(C.loop);
}

/* ---- drain: queued output before the FIN, or cut at the deadline ---------------- */

static void cli_drain_connection(net_conn_t *conn, void *arg)
{
    (void)arg;
    if (net_conn_connected(conn))
        CHECK_OK(net_conn_send(conn, D.data, DRAIN_BYTES));
    else
        atomic_fetch_add(&C.x.t.downs, 1);
}

static void cli_drain_peer(void *arg)
{
    drain_read(net_test_accept(*(int *)arg));
}

static void cli_drain_done(net_client_t *client, void *arg)
{
    (void)client, (void)arg;
    CHECK_EQ(atomic_load(&C.x.t.downs), 1);
    atomic_store(&D.done, true);
}

static bool cli_drain_queued(void *arg)
{
    (void)arg;
    net_conn_t *conn = net_client_conn_ref(C.client);
    struct net_conn_stats st = {0};
    if (conn)
        net_conn_stats(conn, &st);
    net_conn_unref(conn);
    return st.output_queued > MiB;
}

static int drain_client_close(uint64_t drain_ms)
{
    return net_client_close(C.client, drain_ms, cli_drain_done, NULL);
}

/* As drain_scenario, for a client whose connection queues DRAIN_BYTES; its
 * peer closes once it read the FIN, which ends the client's connection. */
static uint64_t cli_drain_scenario(uint64_t drain_ms, int read_at)
{
    net_test_watchdog_start();
    D = (struct drain_fx){.close = drain_client_close, .data = pattern_block(DRAIN_BYTES)};
    C = (struct client_fx){.x = {.where = AT_MAIN, .close_now = client_close_now}};
    C.loop = net_test_new_loop(WATCHDOG_MS);
    int lfd = net_test_listen(&C.peer);
    struct net_conn_callbacks cbs = {.on_connection = cli_drain_connection};
    CHECK_OK(net_client_new(C.loop, &C.peer, NULL, &cbs, NULL, NULL, &C.client));
    struct net_test_job peer;
    net_test_job_start(&peer, cli_drain_peer, &lfd);
    CHECK_OK(net_client_connect(C.client));
    net_test_run_until(C.loop, cli_drain_queued, NULL);
    uint64_t took = drain_close(C.loop, drain_ms, read_at, &peer);
    close(lfd);
    net_loop_free(C.loop);
    free(D.data);
    return took;
}

TEST(lifecycle_client_drain_delivers_queued_output)
{
    check_drain_delivered(cli_drain_scenario(LONG_DRAIN_MS, 0));
}

TEST(lifecycle_client_drain_deadline_force_closes)
{
    check_drain_cut(cli_drain_scenario(DEADLINE_MS, 1));
}
