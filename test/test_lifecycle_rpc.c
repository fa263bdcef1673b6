/* The one close rule for the RPC server and client (include/net/rpc.h),
 * and the client's connection waiting.
 *
 * For both objects: close from inside every callback (a handler, a
 * blocking handler on a worker, a call's done, on_connected up and down),
 * twice (-EALREADY, the refused close's done never runs), from another
 * thread, with work in flight; done runs exactly once, on the object's
 * loop, never inside the close call, after every outstanding call ended
 * exactly once and every sync caller returned; the getters still work in
 * done. Under ASan the teardowns show no leak, under TSan no race. Also:
 * all-zero options structs, NET_EWRONGTHREAD for new and register off the
 * loop thread, and what a call made while not connected does (waits for a
 * server that comes 300 ms later; with fail_fast ends DISCONNECTED; ends
 * with its timeout; ends with a round of attempts that gives up).
 *
 * The server and client each run on a loop thread (rpc_fixture.h); the
 * main thread drives. A watchdog bounds every scenario. */
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rpc_fixture.h"

/* ---- the server and its methods ---------------------------------------------------- */

static struct net_test_rpc_server srv;
static struct net_test_held held = NET_TEST_HELD_INIT;

/* One close's done, for either object. */
struct done_probe {
    atomic_int dones;
    atomic_bool in_call;  /* set around a close made on the object's loop */
    atomic_uint_fast64_t at_ms;
};

static struct done_probe sdone, cdone;

static void probe_enter(struct done_probe *p)
{
    atomic_store(&p->in_call, true);
}

static void probe_leave(struct done_probe *p)
{
    atomic_store(&p->in_call, false);
}

/* Every done: once, on the loop, not inside the close call. */
static void probe_hit(struct done_probe *p, net_loop_t *loop)
{
    CHECK(net_loop_in_loop_thread(loop));
    CHECK(!atomic_load(&p->in_call));
    atomic_store(&p->at_ms, net_test_now_ms());
    CHECK_EQ(atomic_fetch_add(&p->dones, 1), 0);
}

/* Waits for the done (once): a second would show up in the pause. */
static void probe_wait(struct done_probe *p)
{
    WAIT_UNTIL(atomic_load(&p->dones) == 1);
    net_test_sleep_ms(30);
    CHECK_EQ(atomic_load(&p->dones), 1);
}

static void server_done(net_rpc_server_t *server, void *arg)
{
    (void)arg;
    CHECK(server == srv.server);
    struct net_rpc_server_stats st;
    net_rpc_server_stats(server, &st); /* the getters still work in done */
    CHECK(net_addr_equal(net_rpc_server_addr(server), &srv.addr));
    probe_hit(&sdone, srv.loop);
}

static void server_done_never(net_rpc_server_t *server, void *arg)
{
    (void)server, (void)arg;
    net_test_fail(__FILE__, __LINE__, "the done of a refused server close ran");
}

/* Closes the server from this thread (any thread). */
static void server_close_here(uint64_t drain_ms)
{
    CHECK_OK(net_rpc_server_close(srv.server, drain_ms, server_done, NULL));
}

/* A second close is refused. Only where the server is known to be there
 * still: on its loop, or while the drain waits for a request the scenario
 * holds (from another thread, done might have come and gone). */
static void server_close_again(void)
{
    CHECK_EQ(net_rpc_server_close(srv.server, 0, server_done_never, NULL), -EALREADY);
}

/* Waits for the server's done; the handle is gone after it. */
static void server_done_wait(void)
{
    probe_wait(&sdone);
    srv.server = NULL;
}

static void echo_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    CHECK_OK(net_rpc_reply(req, NET_RPC_OK, body, len));
}

static void hold_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)body, (void)len, (void)arg;
    net_test_hold(&held, req);
}

#define HANDLER_DRAIN_MS 10000

/* "close_me": closes the server from inside the handler, then answers. */
static void close_me_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)body, (void)len, (void)arg;
    probe_enter(&sdone);
    CHECK_OK(net_rpc_server_close(srv.server, HANDLER_DRAIN_MS, server_done, NULL));
    CHECK_EQ(net_rpc_server_close(srv.server, 0, server_done_never, NULL), -EALREADY);
    probe_leave(&sdone);
    CHECK_EQ(atomic_load(&sdone.dones), 0);
    CHECK_OK(net_rpc_reply(req, NET_RPC_OK, "closing", 7));
}

static void add_methods(net_rpc_server_t *server)
{
    CHECK_OK(net_rpc_server_register(server, "echo", echo_method, NULL, false));
    CHECK_OK(net_rpc_server_register(server, "hold", hold_method, NULL, false));
    CHECK_OK(net_rpc_server_register(server, "close_me", close_me_method, NULL, false));
    if (srv.opt.worker_threads)
        CHECK_OK(net_rpc_server_register(server, "bclose", close_me_method, NULL, true));
}

/* At bind (NULL: a free port), with the options tweak changes. */
static void server_up_at(const net_addr_t *bind, void (*tweak)(struct net_rpc_server_options *opt))
{
    net_test_rpc_server_init(&srv, add_methods);
    srv.bind = bind;
    if (tweak)
        tweak(&srv.opt);
    net_test_rpc_server_up(&srv);
}

static void server_up_with(void (*tweak)(struct net_rpc_server_options *opt))
{
    server_up_at(NULL, tweak);
}

static void server_create_unstarted(void *arg)
{
    (void)arg;
    net_addr_t any;
    CHECK_OK(net_addr_parse(&any, "127.0.0.1:0"));
    CHECK_OK(net_rpc_server_new(srv.loop, &any, &srv.opt, &srv.server));
    add_methods(srv.server);
    srv.addr = *net_rpc_server_addr(srv.server);
}

/* The server (if any) and its loop thread; every held request answered
 * first (a reply after done is a safe no-op). */
static void server_down(void)
{
    net_test_held_release(&held, NET_RPC_OK, "late");
    net_test_rpc_server_down(&srv, 0);
}

/* ---- the client --------------------------------------------------------------------- */

static struct net_test_rpc_client C;

/* The connection events on_connected saw, in order: 'u' or 'd'. */
static struct {
    char seen[16];
    atomic_int n;
    void (*then)(bool up); /* a scenario's extra step, on the loop */
} conn_events;

static void on_connected(net_rpc_client_t *client, bool up, void *arg)
{
    CHECK(arg == &conn_events);
    CHECK(client == C.rpc);
    CHECK(net_loop_in_loop_thread(C.loop));
    CHECK_EQ(net_rpc_client_connected(client), up);
    int n = atomic_load(&conn_events.n);
    CHECK(n < (int)sizeof conn_events.seen);
    CHECK(n == 0 ? up : conn_events.seen[n - 1] == (up ? 'd' : 'u')); /* alternating, up first */
    conn_events.seen[n] = up ? 'u' : 'd';
    atomic_store(&conn_events.n, n + 1);
    if (conn_events.then)
        conn_events.then(up);
}

/* Callers of other threads that must have stopped before done (rpc.h: a
 * call racing the close must have returned before done runs): done waits
 * for *done_waits_for to reach done_waits_n (the callers need no loop for
 * that: every call has ended, later ones return -ESHUTDOWN). */
static atomic_int *done_waits_for;
static int done_waits_n;

static void client_done(net_rpc_client_t *client, void *arg)
{
    (void)arg;
    if (done_waits_for)
        WAIT_UNTIL(atomic_load(done_waits_for) == done_waits_n);
    CHECK(client == C.rpc);
    struct net_rpc_client_stats st;
    net_rpc_client_stats(client, &st); /* the getters still work in done */
    CHECK_EQ(st.outstanding, 0);       /* every call ended before done */
    CHECK(!net_rpc_client_connected(client));
    probe_hit(&cdone, C.loop);
}

static void client_done_never(net_rpc_client_t *client, void *arg)
{
    (void)client, (void)arg;
    net_test_fail(__FILE__, __LINE__, "the done of a refused client close ran");
}

static void client_close_here(uint64_t drain_ms)
{
    CHECK_OK(net_rpc_client_close(C.rpc, drain_ms, client_done, NULL));
}

/* As server_close_again. */
static void client_close_again(void)
{
    CHECK_EQ(net_rpc_client_close(C.rpc, 0, client_done_never, NULL), -EALREADY);
}

static void client_done_wait(void)
{
    probe_wait(&cdone);
    C.rpc = NULL;
}

/* Defaults plus on_connected; a scenario may change C.opt before up. */
static void client_options(void)
{
    net_test_rpc_client_init(&C);
    C.opt.on_connected = on_connected;
    C.opt.arg = &conn_events;
}

static void client_up_to(const net_addr_t *addr)
{
    net_test_rpc_client_up(&C, addr);
}

static void both_up(void)
{
    server_up_with(NULL);
    client_options();
    client_up_to(&srv.addr);
    WAIT_UNTIL(net_rpc_client_connected(C.rpc));
}

/* ---- calls and their outcomes -------------------------------------------------------- */

struct outcome {
    atomic_int ran;
    atomic_uint status;
    size_t len;
    char body[64];
    void (*then)(struct outcome *o); /* on the loop, after the outcome is stored */
};

static void outcome_done(net_rpc_client_t *client, uint32_t status, const void *body, size_t len,
                         void *arg)
{
    struct outcome *o = arg;
    CHECK(client == C.rpc);
    CHECK(net_loop_in_loop_thread(C.loop));
    CHECK(!atomic_load(&cdone.in_call));
    CHECK_EQ(atomic_load(&cdone.dones), 0); /* every call ends before done */
    o->len = len < sizeof o->body ? len : sizeof o->body;
    if (o->len)
        memcpy(o->body, body, o->len);
    atomic_store(&o->status, status);
    if (atomic_fetch_add(&o->ran, 1) != 0)
        net_test_fail(__FILE__, __LINE__, "a call ended twice");
    if (o->then)
        o->then(o);
}

static void call(struct outcome *o, const char *method, const char *text, uint64_t timeout_ms)
{
    CHECK_OK(net_rpc_call(C.rpc, method, text, strlen(text), timeout_ms, outcome_done, o));
}

static void expect(struct outcome *o, uint32_t status)
{
    WAIT_UNTIL(atomic_load(&o->ran) == 1);
    if (atomic_load(&o->status) != status)
        net_test_fail(__FILE__, __LINE__, "status %s, expected %s",
                      net_rpc_status_name(atomic_load(&o->status)), net_rpc_status_name(status));
}

static uint32_t sync_call(const char *method, const char *text, uint64_t timeout_ms)
{
    uint32_t st = 0xDEAD;
    void *out = NULL;
    size_t n = 0;
    CHECK_OK(net_rpc_call_sync(C.rpc, method, text, strlen(text), timeout_ms, &st, &out, &n));
    if (st == NET_RPC_OK)
        CHECK(n == strlen(text) && memcmp(out, text, n) == 0);
    free(out);
    return st;
}

/* ---- sockets -------------------------------------------------------------------------- */

/* A loopback port held by a bound socket that does not listen: connects are
 * refused, and with SO_REUSEPORT a server of ours may bind it later. */
static int reserve_port(net_addr_t *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    int one = 1;
    CHECK_EQ(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one), 0);
    CHECK_OK(net_addr_parse(addr, "127.0.0.1:0"));
    CHECK_EQ(bind(fd, net_addr_sockaddr(addr), net_addr_len(addr)), 0);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    CHECK_EQ(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    CHECK_OK(net_addr_from_sockaddr(addr, (struct sockaddr *)&ss, len));
    return fd;
}

static void reuse_port(struct net_rpc_server_options *opt)
{
    opt->server.reuse_port = true;
}

/* ======================================================================================== */
/* The server                                                                               */
/* ======================================================================================== */

static void server_close_twice_on_loop(void *arg)
{
    (void)arg;
    probe_enter(&sdone);
    server_close_here(0);
    server_close_again();
    probe_leave(&sdone);
}

/* A second close is refused and its done never runs; the first's runs once,
 * later, on the loop. */
TEST(lifecycle_rpc_server_close_twice_done_once)
{
    net_test_watchdog_start();
    both_up();
    CHECK_EQ(sync_call("echo", "before", 0), NET_RPC_OK);
    net_test_on_loop(srv.loop, server_close_twice_on_loop, NULL);
    server_done_wait();
    WAIT_UNTIL(!net_rpc_client_connected(C.rpc));
    net_test_rpc_client_down(&C);
    server_down();
}

TEST(lifecycle_rpc_server_close_before_start)
{
    net_test_watchdog_start();
    net_test_rpc_server_init(&srv, add_methods);
    CHECK_OK(net_loop_thread_start("rpc-server", NULL, NULL, &srv.thread));
    srv.loop = net_loop_thread_loop(srv.thread);
    net_test_on_loop(srv.loop, server_create_unstarted, NULL);
    server_close_here(0); /* from this thread: any thread may close */
    server_done_wait();
    server_down();
}

/* From another thread, with requests in flight and a drain long enough:
 * every request is answered, new ones get SHUTTING_DOWN, and done comes as
 * soon as the last answer, long before the drain time. */
#define IN_FLIGHT 8

static void *release_held(void *arg)
{
    (void)arg;
    net_test_sleep_ms(50);
    CHECK_EQ(net_test_held_release(&held, NET_RPC_OK, "answered"), IN_FLIGHT);
    return NULL;
}

TEST(lifecycle_rpc_server_close_other_thread_drains_in_flight)
{
    net_test_watchdog_start();
    both_up();
    struct outcome o[IN_FLIGHT] = {0}, late = {0};
    for (int i = 0; i < IN_FLIGHT; i++)
        call(&o[i], "hold", "h", 0);
    WAIT_UNTIL(atomic_load(&held.total) == IN_FLIGHT);
    uint64_t t0 = net_test_now_ms();
    server_close_here(60000);
    server_close_again(); /* from this thread: the held requests keep it */
    call(&late, "echo", "too late", 0);
    expect(&late, NET_RPC_SHUTTING_DOWN);
    CHECK_EQ(atomic_load(&sdone.dones), 0); /* draining */
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, release_held, NULL), 0);
    for (int i = 0; i < IN_FLIGHT; i++) {
        expect(&o[i], NET_RPC_OK);
        CHECK(o[i].len == 8 && memcmp(o[i].body, "answered", 8) == 0);
    }
    CHECK_EQ(pthread_join(t, NULL), 0);
    server_done_wait();
    CHECK(atomic_load(&sdone.at_ms) - t0 < 5000);
    net_test_rpc_client_down(&C);
    server_down();
}

/* The drain runs out with requests unanswered: their calls end
 * DISCONNECTED, done comes at the drain time, and the replies made after
 * done are safe no-ops that free the requests (ASan: no leak, no use after
 * free; the last one frees the server's memory). */
static void close_200_on_loop(void *arg)
{
    (void)arg;
    probe_enter(&sdone);
    server_close_here(200);
    server_close_again();
    probe_leave(&sdone);
}

TEST(lifecycle_rpc_server_drain_expires_replies_after_done_safe)
{
    net_test_watchdog_start();
    both_up();
    struct outcome o[IN_FLIGHT] = {0};
    for (int i = 0; i < IN_FLIGHT; i++)
        call(&o[i], "hold", "h", 0);
    WAIT_UNTIL(atomic_load(&held.total) == IN_FLIGHT);
    uint64_t t0 = net_test_now_ms();
    net_test_on_loop(srv.loop, close_200_on_loop, NULL);
    for (int i = 0; i < IN_FLIGHT; i++)
        expect(&o[i], NET_RPC_DISCONNECTED);
    server_done_wait();
    CHECK(atomic_load(&sdone.at_ms) - t0 >= 190);
    net_rpc_req_t *reqs[NET_TEST_MAX_HELD];
    int n = net_test_held_take(&held, reqs);
    CHECK_EQ(n, IN_FLIGHT);
    for (int i = 0; i < n; i++) /* after done, from this thread */
        CHECK_EQ(net_rpc_reply(reqs[i], NET_RPC_OK, "nobody", 6), 0);
    net_test_rpc_client_down(&C);
    server_down();
}

/* From inside a handler (on the connection's loop): the handler's own
 * reply still goes out, a request held before it is answered in the drain,
 * later requests get SHUTTING_DOWN, and done comes after all that. */
TEST(lifecycle_rpc_server_close_in_handler)
{
    net_test_watchdog_start();
    server_up_with(NULL);
    client_options();
    client_up_to(&srv.addr);
    struct outcome first = {0}, closer = {0}, late = {0};
    call(&first, "hold", "h", 0);
    WAIT_UNTIL(atomic_load(&held.total) == 1);
    call(&closer, "close_me", "x", 0);
    expect(&closer, NET_RPC_OK);
    CHECK(closer.len == 7 && memcmp(closer.body, "closing", 7) == 0);
    call(&late, "echo", "late", 0);
    expect(&late, NET_RPC_SHUTTING_DOWN);
    net_test_sleep_ms(30);
    CHECK_EQ(atomic_load(&sdone.dones), 0); /* the held one is in flight */
    CHECK_EQ(net_test_held_release(&held, NET_RPC_OK, "drained"), 1);
    expect(&first, NET_RPC_OK);
    server_done_wait();
    net_test_rpc_client_down(&C);
    server_down();
}

static void two_workers(struct net_rpc_server_options *opt)
{
    opt->worker_threads = 2;
}

/* The same from a blocking handler, on a worker thread: the workers are
 * joined on the loop after the handler has returned. (A held request keeps
 * the drain, and so the connection, open for the late call.) */
TEST(lifecycle_rpc_server_close_in_blocking_handler)
{
    net_test_watchdog_start();
    server_up_with(two_workers);
    client_options();
    client_up_to(&srv.addr);
    struct outcome first = {0}, closer = {0}, late = {0};
    call(&first, "hold", "h", 0);
    WAIT_UNTIL(atomic_load(&held.total) == 1);
    call(&closer, "bclose", "x", 0);
    expect(&closer, NET_RPC_OK);
    call(&late, "echo", "late", 0);
    expect(&late, NET_RPC_SHUTTING_DOWN);
    CHECK_EQ(net_test_held_release(&held, NET_RPC_OK, "drained"), 1);
    expect(&first, NET_RPC_OK);
    server_done_wait();
    net_test_rpc_client_down(&C);
    server_down();
}

/* ======================================================================================== */
/* The client                                                                               */
/* ======================================================================================== */

static void client_close_twice_on_loop(void *arg)
{
    (void)arg;
    probe_enter(&cdone);
    client_close_here(0);
    client_close_again();
    probe_leave(&cdone);
}

TEST(lifecycle_rpc_client_close_twice_done_once)
{
    net_test_watchdog_start();
    both_up();
    CHECK_EQ(sync_call("echo", "before", 0), NET_RPC_OK);
    struct outcome o = {0};
    call(&o, "hold", "h", 0);
    WAIT_UNTIL(atomic_load(&held.total) == 1);
    net_test_on_loop(C.loop, client_close_twice_on_loop, NULL);
    expect(&o, NET_RPC_CANCELLED);
    client_done_wait();
    CHECK_EQ(atomic_load(&conn_events.n), 2); /* up, then down before done */
    net_test_rpc_client_down(&C);
    server_down();
}

/* Threads with async calls outstanding and one blocked in a sync call
 * each; the close comes from the main thread with no drain: every call ends
 * exactly once (echoes OK or CANCELLED, holds CANCELLED), every sync caller
 * returns CANCELLED, calls after it are refused, and done waits for the
 * callers (they hold references until they return). */
#define CT_THREADS 4
#define CT_HOLDS 16
#define CT_ECHOES 64

struct ct_thread {
    pthread_t t;
    struct outcome holds[CT_HOLDS], echoes[CT_ECHOES];
    uint32_t sync_status;
    int after_close; /* what a call made after the sync returned got */
};

static struct ct_thread ct[CT_THREADS];
static atomic_int ct_returned;

static void *ct_main(void *arg)
{
    struct ct_thread *t = arg;
    for (int i = 0; i < CT_HOLDS; i++)
        call(&t->holds[i], "hold", "h", 0);
    for (int i = 0; i < CT_ECHOES; i++)
        call(&t->echoes[i], "echo", "e", 0);
    t->sync_status = sync_call("hold", "s", 0);
    struct outcome never = {0};
    t->after_close = net_rpc_call(C.rpc, "echo", "x", 1, 0, outcome_done, &never);
    atomic_fetch_add(&ct_returned, 1);
    return NULL;
}

TEST(lifecycle_rpc_client_close_other_thread_calls_in_flight)
{
    net_test_watchdog_start();
    both_up();
    for (int i = 0; i < CT_THREADS; i++)
        CHECK_EQ(pthread_create(&ct[i].t, NULL, ct_main, &ct[i]), 0);
    WAIT_UNTIL(atomic_load(&held.total) == CT_THREADS * (CT_HOLDS + 1));
    done_waits_for = &ct_returned;
    done_waits_n = CT_THREADS;
    client_close_here(0);
    for (int i = 0; i < CT_THREADS; i++)
        CHECK_EQ(pthread_join(ct[i].t, NULL), 0);
    client_done_wait();
    for (int i = 0; i < CT_THREADS; i++) {
        CHECK_EQ(ct[i].sync_status, NET_RPC_CANCELLED);
        CHECK_EQ(ct[i].after_close, -ESHUTDOWN);
        for (int j = 0; j < CT_HOLDS; j++) {
            CHECK_EQ(atomic_load(&ct[i].holds[j].ran), 1);
            CHECK_EQ(atomic_load(&ct[i].holds[j].status), NET_RPC_CANCELLED);
        }
        for (int j = 0; j < CT_ECHOES; j++) {
            uint32_t st = atomic_load(&ct[i].echoes[j].status);
            CHECK_EQ(atomic_load(&ct[i].echoes[j].ran), 1);
            CHECK(st == NET_RPC_OK || st == NET_RPC_CANCELLED);
        }
    }
    net_test_rpc_client_down(&C);
    server_down();
}

/* Threads calling as fast as they can while the close comes: a call is
 * either accepted (and ends exactly once: OK, or CANCELLED) or refused
 * with -ESHUTDOWN, and refusals come only after the close. done waits
 * until the callers have stopped (rpc.h: a call racing the close must have
 * returned before done runs). */
#define RACE_THREADS 4
#define RACE_MAX 4096

struct race_thread {
    pthread_t t;
    struct outcome o[RACE_MAX];
    int accepted;
    bool refused_before_close;
};

static struct race_thread race[RACE_THREADS];
static atomic_bool race_closed;
static atomic_int race_stopped;

static void *race_main(void *arg)
{
    struct race_thread *t = arg;
    for (int i = 0; i < RACE_MAX; i++) {
        bool closed_before = atomic_load(&race_closed);
        int rc = net_rpc_call(C.rpc, "echo", "r", 1, 0, outcome_done, &t->o[i]);
        if (rc == -ESHUTDOWN) {
            t->refused_before_close = !closed_before && !atomic_load(&race_closed);
            break;
        }
        CHECK_OK(rc);
        t->accepted++;
        if (i % 64 == 63)
            WAIT_UNTIL(atomic_load(&t->o[i - 32].ran)); /* a window, not a flood */
    }
    atomic_fetch_add(&race_stopped, 1);
    return NULL;
}

TEST(lifecycle_rpc_client_close_races_callers)
{
    net_test_watchdog_start();
    both_up();
    for (int i = 0; i < RACE_THREADS; i++)
        CHECK_EQ(pthread_create(&race[i].t, NULL, race_main, &race[i]), 0);
    net_test_sleep_ms(20);
    done_waits_for = &race_stopped;
    done_waits_n = RACE_THREADS;
    atomic_store(&race_closed, true);
    client_close_here(0);
    for (int i = 0; i < RACE_THREADS; i++)
        CHECK_EQ(pthread_join(race[i].t, NULL), 0);
    client_done_wait();
    int ok = 0, cancelled = 0;
    for (int i = 0; i < RACE_THREADS; i++) {
        CHECK(!race[i].refused_before_close);
        for (int j = 0; j < race[i].accepted; j++) {
            CHECK_EQ(atomic_load(&race[i].o[j].ran), 1);
            uint32_t st = atomic_load(&race[i].o[j].status);
            CHECK(st == NET_RPC_OK || st == NET_RPC_CANCELLED);
            ok += st == NET_RPC_OK;
            cancelled += st == NET_RPC_CANCELLED;
        }
        for (int j = race[i].accepted; j < RACE_MAX; j++)
            CHECK_EQ(atomic_load(&race[i].o[j].ran), 0);
    }
    fprintf(stderr, "%d OK, %d CANCELLED\n", ok, cancelled);
    CHECK(ok > 0);
    net_test_rpc_client_down(&C);
    server_down();
}

/* From inside a call's done: the other calls in flight end CANCELLED, all
 * after this callback has returned, and done after them. */
static struct outcome in_done_others[IN_FLIGHT];

static void close_from_done(struct outcome *o)
{
    (void)o;
    probe_enter(&cdone);
    client_close_here(0);
    client_close_again();
    probe_leave(&cdone);
    for (int i = 0; i < IN_FLIGHT; i++)
        CHECK_EQ(atomic_load(&in_done_others[i].ran), 0); /* later, not inside */
}

TEST(lifecycle_rpc_client_close_in_call_done)
{
    net_test_watchdog_start();
    both_up();
    for (int i = 0; i < IN_FLIGHT; i++)
        call(&in_done_others[i], "hold", "h", 0);
    WAIT_UNTIL(atomic_load(&held.total) == IN_FLIGHT);
    struct outcome trigger = {.then = close_from_done};
    call(&trigger, "echo", "go", 0);
    expect(&trigger, NET_RPC_OK);
    for (int i = 0; i < IN_FLIGHT; i++)
        expect(&in_done_others[i], NET_RPC_CANCELLED);
    client_done_wait();
    net_test_rpc_client_down(&C);
    server_down();
}

/* From inside on_connected(up): calls made before the connection came up
 * were just sent; with no drain they end CANCELLED; the connection is then
 * reported down, and done comes last. */
static struct outcome early[IN_FLIGHT];

static void close_when_up(bool up)
{
    if (!up)
        return;
    probe_enter(&cdone);
    client_close_here(0);
    client_close_again();
    probe_leave(&cdone);
}

static void create_and_call(void *arg)
{
    (void)arg;
    CHECK_OK(net_rpc_client_new(C.loop, &C.addr, &C.opt, &C.rpc));
    for (int i = 0; i < IN_FLIGHT; i++)
        call(&early[i], "hold", "h", 0);
}

TEST(lifecycle_rpc_client_close_in_on_connected_up)
{
    net_test_watchdog_start();
    server_up_with(NULL);
    client_options();
    conn_events.then = close_when_up;
    net_test_rpc_client_start_thread(&C, &srv.addr);
    net_test_on_loop(C.loop, create_and_call, NULL);
    for (int i = 0; i < IN_FLIGHT; i++)
        expect(&early[i], NET_RPC_CANCELLED);
    client_done_wait();
    CHECK_EQ(atomic_load(&conn_events.n), 2);
    CHECK(conn_events.seen[0] == 'u' && conn_events.seen[1] == 'd');
    net_test_rpc_client_down(&C);
    server_down();
}

/* From inside on_connected(down), after the server went away: a call made
 * there waits for a connection (fail_fast off); the close ends it
 * CANCELLED. */
static struct outcome made_when_down;

static void close_when_down(bool up)
{
    if (up)
        return;
    call(&made_when_down, "echo", "waits", 0);
    probe_enter(&cdone);
    client_close_here(0);
    client_close_again();
    probe_leave(&cdone);
    CHECK_EQ(atomic_load(&made_when_down.ran), 0);
}

TEST(lifecycle_rpc_client_close_in_on_connected_down)
{
    net_test_watchdog_start();
    server_up_with(NULL);
    client_options();
    conn_events.then = close_when_down;
    client_up_to(&srv.addr);
    WAIT_UNTIL(net_rpc_client_connected(C.rpc));
    server_close_here(0);
    server_done_wait();
    expect(&made_when_down, NET_RPC_CANCELLED);
    client_done_wait();
    CHECK_EQ(atomic_load(&conn_events.n), 2);
    net_test_rpc_client_down(&C);
    server_down();
}

/* The drain runs out: calls never answered end CANCELLED at the drain
 * time, not before. */
TEST(lifecycle_rpc_client_drain_expires_cancels)
{
    net_test_watchdog_start();
    both_up();
    struct outcome o[IN_FLIGHT] = {0};
    for (int i = 0; i < IN_FLIGHT; i++)
        call(&o[i], "hold", "h", 0);
    WAIT_UNTIL(atomic_load(&held.total) == IN_FLIGHT);
    uint64_t t0 = net_test_now_ms();
    client_close_here(200);
    net_test_sleep_ms(100);
    for (int i = 0; i < IN_FLIGHT; i++)
        CHECK_EQ(atomic_load(&o[i].ran), 0); /* draining */
    for (int i = 0; i < IN_FLIGHT; i++)
        expect(&o[i], NET_RPC_CANCELLED);
    CHECK(net_test_now_ms() - t0 >= 190);
    client_done_wait();
    net_test_rpc_client_down(&C);
    server_down();
}

static size_t client_outstanding(void)
{
    struct net_rpc_client_stats s;
    net_rpc_client_stats(C.rpc, &s);
    return s.outstanding;
}

/* Calls waiting for a connection that never comes (async and sync): the
 * close ends them CANCELLED and the sync callers return. */
static void *sync_waiting(void *arg)
{
    *(uint32_t *)arg = sync_call("echo", "nobody", 0);
    return NULL;
}

TEST(lifecycle_rpc_client_close_ends_waiting_calls)
{
    net_test_watchdog_start();
    net_addr_t addr;
    int fd = reserve_port(&addr);
    client_options();
    client_up_to(&addr);
    struct outcome o[IN_FLIGHT] = {0};
    for (int i = 0; i < IN_FLIGHT; i++)
        call(&o[i], "echo", "nobody", 0);
    pthread_t t[2];
    uint32_t st[2] = {0, 0};
    for (int i = 0; i < 2; i++)
        CHECK_EQ(pthread_create(&t[i], NULL, sync_waiting, &st[i]), 0);
    WAIT_UNTIL(client_outstanding() == IN_FLIGHT + 2);
    net_test_sleep_ms(150); /* a few failed attempts: still waiting */
    for (int i = 0; i < IN_FLIGHT; i++)
        CHECK_EQ(atomic_load(&o[i].ran), 0);
    client_close_here(0);
    for (int i = 0; i < IN_FLIGHT; i++)
        expect(&o[i], NET_RPC_CANCELLED);
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(pthread_join(t[i], NULL), 0);
        CHECK_EQ(st[i], NET_RPC_CANCELLED);
    }
    client_done_wait();
    CHECK_EQ(atomic_load(&conn_events.n), 0); /* never up, so never down */
    net_test_rpc_client_down(&C);
    close(fd);
}

/* ======================================================================================== */
/* Options and threads                                                                      */
/* ======================================================================================== */

static void zero_server_create(void *arg)
{
    (void)arg;
    struct net_rpc_server_options zero;
    memset(&zero, 0, sizeof zero);
    net_addr_t any;
    CHECK_OK(net_addr_parse(&any, "127.0.0.1:0"));
    CHECK_OK(net_rpc_server_new(srv.loop, &any, &zero, &srv.server));
    CHECK_OK(net_rpc_server_register(srv.server, "echo", echo_method, NULL, false));
    /* worker_threads 0 is the default: none. */
    CHECK_EQ(net_rpc_server_register(srv.server, "b", echo_method, NULL, true), -EINVAL);
    CHECK_OK(net_rpc_server_start(srv.server));
    srv.addr = *net_rpc_server_addr(srv.server);
}

static void zero_client_create(void *arg)
{
    (void)arg;
    struct net_rpc_client_options zero;
    memset(&zero, 0, sizeof zero);
    CHECK_OK(net_rpc_client_new(C.loop, &C.addr, &zero, &C.rpc));
}

/* All-zero options structs mean the defaults: the server serves, 1 MiB
 * bodies pass (max_frame, max_input), many calls in flight are not refused
 * (max_outstanding, max_in_flight), a call made before the connection is up
 * waits for it (fail_fast off). */
#define ZERO_CALLS 200

TEST(lifecycle_rpc_zero_options_are_defaults)
{
    net_test_watchdog_start();
    net_test_rpc_server_init(&srv, add_methods);
    CHECK_OK(net_loop_thread_start("rpc-server", NULL, NULL, &srv.thread));
    srv.loop = net_loop_thread_loop(srv.thread);
    net_test_on_loop(srv.loop, zero_server_create, NULL);
    net_test_rpc_client_init(&C);
    net_test_rpc_client_start_thread(&C, &srv.addr);
    net_test_on_loop(C.loop, zero_client_create, NULL);
    static struct outcome o[ZERO_CALLS];
    for (int i = 0; i < ZERO_CALLS; i++)
        call(&o[i], "echo", "zero", 0);
    for (int i = 0; i < ZERO_CALLS; i++)
        expect(&o[i], NET_RPC_OK);
    size_t big_len = 1u << 20;
    char *big = malloc(big_len);
    CHECK(big != NULL);
    memset(big, 'z', big_len);
    uint32_t st;
    void *out = NULL;
    size_t n = 0;
    CHECK_OK(net_rpc_call_sync(C.rpc, "echo", big, big_len, 0, &st, &out, &n));
    CHECK_EQ(st, NET_RPC_OK);
    CHECK(n == big_len && memcmp(out, big, n) == 0);
    free(out);
    free(big);
    struct net_rpc_server_stats ss;
    net_rpc_server_stats(srv.server, &ss);
    CHECK(ss.tcp.memory_budget > 0); /* the default budget, not "none" */
    net_test_rpc_client_down(&C);
    server_close_here(0);
    server_done_wait();
    server_down();
}

struct wrong_thread {
    net_rpc_server_t *server;
};

static void create_unstarted_here(void *arg)
{
    struct wrong_thread *w = arg;
    net_addr_t any;
    CHECK_OK(net_addr_parse(&any, "127.0.0.1:0"));
    CHECK_OK(net_rpc_server_new(net_loop_current(), &any, NULL, &w->server));
}

static void register_on_loop(void *arg)
{
    struct wrong_thread *w = arg;
    CHECK_OK(net_rpc_server_register(w->server, "echo", echo_method, NULL, false));
}

static void register_after_start(void *arg)
{
    struct wrong_thread *w = arg;
    CHECK_EQ(net_rpc_server_register(w->server, "late", echo_method, NULL, false), -EBUSY);
}

static atomic_int wrong_thread_done;

static void wrong_thread_closed(net_rpc_server_t *server, void *arg)
{
    (void)server, (void)arg;
    atomic_fetch_add(&wrong_thread_done, 1);
}

/* On the loop: done cannot come before this returns, so the start after
 * the close is sure to find the server. */
static void close_then_start(void *arg)
{
    struct wrong_thread *w = arg;
    CHECK_OK(net_rpc_server_close(w->server, 0, wrong_thread_closed, NULL));
    CHECK_EQ(net_rpc_server_start(w->server), -ESHUTDOWN);
    CHECK_EQ(net_rpc_server_register(w->server, "later", echo_method, NULL, false), -EBUSY);
}

/* new and register are loop-thread only: from another thread they return
 * NET_EWRONGTHREAD and make or change nothing. */
TEST(lifecycle_rpc_wrong_thread)
{
    net_test_watchdog_start();
    net_loop_thread_t *lt;
    CHECK_OK(net_loop_thread_start("rpc-loop", NULL, NULL, &lt));
    net_loop_t *loop = net_loop_thread_loop(lt);
    net_addr_t any;
    CHECK_OK(net_addr_parse(&any, "127.0.0.1:0"));
    net_rpc_server_t *s = NULL;
    CHECK_EQ(net_rpc_server_new(loop, &any, NULL, &s), NET_EWRONGTHREAD);
    CHECK(s == NULL);
    net_rpc_client_t *c = NULL;
    CHECK_EQ(net_rpc_client_new(loop, &any, NULL, &c), NET_EWRONGTHREAD);
    CHECK(c == NULL);

    struct wrong_thread w = {0};
    net_test_on_loop(loop, create_unstarted_here, &w);
    CHECK_EQ(net_rpc_server_register(w.server, "echo", echo_method, NULL, false),
             NET_EWRONGTHREAD);
    net_test_on_loop(loop, register_on_loop, &w); /* the same name: not taken above */
    CHECK_OK(net_rpc_server_start(w.server));     /* thread-safe */
    net_test_on_loop(loop, register_after_start, &w);
    net_test_on_loop(loop, close_then_start, &w);
    WAIT_UNTIL(atomic_load(&wrong_thread_done) == 1);
    CHECK_OK(net_loop_thread_join(lt));
}

/* ======================================================================================== */
/* Waiting for the connection                                                               */
/* ======================================================================================== */

#define WAIT_CALLS 1000
#define LATE_SERVER_MS 300
#define WAIT_CALL_TIMEOUT_MS SCALED(2000, 8000)

static struct outcome wait_calls[WAIT_CALLS];

static void make_wait_calls(void)
{
    for (int i = 0; i < WAIT_CALLS; i++) {
        snprintf(wait_calls[i].body, sizeof wait_calls[i].body, "call %d", i);
        CHECK_OK(net_rpc_call(C.rpc, "echo", wait_calls[i].body, strlen(wait_calls[i].body),
                              WAIT_CALL_TIMEOUT_MS, outcome_done, &wait_calls[i]));
    }
}

static int wait_calls_ended(void)
{
    int n = 0;
    for (int i = 0; i < WAIT_CALLS; i++)
        n += atomic_load(&wait_calls[i].ran);
    return n;
}

/* The default: calls made before the server exists wait for it (the
 * client retries refused connects) and all succeed once it is up, 300 ms
 * after the client, well inside their 2 s timeout. */
TEST(lifecycle_rpc_calls_wait_for_late_server)
{
    net_test_watchdog_start();
    net_addr_t addr;
    int fd = reserve_port(&addr);
    client_options();
    client_up_to(&addr);
    uint64_t t0 = net_test_now_ms();
    make_wait_calls();
    net_test_sleep_ms(10);
    uint64_t made = net_test_now_ms();
    if (made - t0 < LATE_SERVER_MS)
        net_test_sleep_ms((unsigned)(LATE_SERVER_MS - (made - t0)));
    CHECK_EQ(wait_calls_ended(), 0); /* all still waiting */
    CHECK(!net_rpc_client_connected(C.rpc));
    server_up_at(&addr, reuse_port);
    for (int i = 0; i < WAIT_CALLS; i++) {
        char want[32];
        expect(&wait_calls[i], NET_RPC_OK);
        int n = snprintf(want, sizeof want, "call %d", i);
        CHECK((int)wait_calls[i].len == n && memcmp(wait_calls[i].body, want, (size_t)n) == 0);
    }
    CHECK_EQ(atomic_load(&conn_events.n), 1);
    struct net_rpc_client_stats st;
    net_rpc_client_stats(C.rpc, &st);
    CHECK_EQ(st.timeouts, 0);
    CHECK_EQ(st.disconnected, 0);
    net_test_rpc_client_down(&C);
    server_down();
    close(fd);
}

/* fail_fast: the same calls end DISCONNECTED with the next failed attempt,
 * before the server exists; once it is up a call succeeds. */
TEST(lifecycle_rpc_calls_fail_fast_without_server)
{
    net_test_watchdog_start();
    net_addr_t addr;
    int fd = reserve_port(&addr);
    client_options();
    C.opt.fail_fast = true;
    client_up_to(&addr);
    make_wait_calls();
    for (int i = 0; i < WAIT_CALLS; i++)
        expect(&wait_calls[i], NET_RPC_DISCONNECTED);
    server_up_at(&addr, reuse_port);
    uint32_t st = NET_RPC_DISCONNECTED;
    for (int i = 0; i < 100 && st == NET_RPC_DISCONNECTED; i++)
        st = sync_call("echo", "now", 0); /* the next attempt may still be refused */
    CHECK_EQ(st, NET_RPC_OK);
    net_test_rpc_client_down(&C);
    server_down();
    close(fd);
}

/* A waiting call with a timeout ends TIMEOUT at it, not before; the client
 * still tries meanwhile (no max_attempts). */
TEST(lifecycle_rpc_waiting_call_times_out)
{
    net_test_watchdog_start();
    net_addr_t addr;
    int fd = reserve_port(&addr);
    client_options();
    client_up_to(&addr);
    struct outcome o = {0};
    uint64_t t0 = net_test_now_ms();
    call(&o, "echo", "in vain", 300);
    expect(&o, NET_RPC_TIMEOUT);
    CHECK(net_test_now_ms() - t0 >= 290);
    net_test_rpc_client_down(&C);
    close(fd);
}

/* Without a timeout, a waiting call ends DISCONNECTED when a round of
 * attempts gives up (max_attempts); the next call starts a new round. */
TEST(lifecycle_rpc_waiting_call_ends_with_max_attempts)
{
    net_test_watchdog_start();
    net_addr_t addr;
    int fd = reserve_port(&addr);
    client_options();
    C.opt.client.max_attempts = 3;
    C.opt.client.retry_initial_ms = 10;
    client_up_to(&addr);
    struct outcome o[2] = {0};
    call(&o[0], "echo", "first round", 0);
    expect(&o[0], NET_RPC_DISCONNECTED);
    call(&o[1], "echo", "second round", 0);
    expect(&o[1], NET_RPC_DISCONNECTED);
    struct net_rpc_client_stats st;
    net_rpc_client_stats(C.rpc, &st);
    CHECK_EQ(st.disconnected, 2);
    net_test_rpc_client_down(&C);
    close(fd);
}

/* on_connected follows the connection: up, down when the server closes,
 * up again when another server takes the port, down at the client's close
 * (before its done). */
TEST(lifecycle_rpc_on_connected_follows_the_connection)
{
    net_test_watchdog_start();
    net_addr_t addr;
    int fd = reserve_port(&addr);
    server_up_at(&addr, reuse_port);
    client_options();
    C.opt.client.retry_initial_ms = 10;
    client_up_to(&addr);
    WAIT_UNTIL(atomic_load(&conn_events.n) == 1);
    CHECK_EQ(sync_call("echo", "one", 0), NET_RPC_OK);
    server_close_here(0);
    server_done_wait();
    WAIT_UNTIL(atomic_load(&conn_events.n) == 2);
    server_down();
    atomic_store(&sdone.dones, 0);
    server_up_at(&addr, reuse_port);
    CHECK_EQ(sync_call("echo", "two", 0), NET_RPC_OK); /* waited for the new server */
    CHECK_EQ(atomic_load(&conn_events.n), 3);
    client_close_here(0);
    client_done_wait();
    CHECK_EQ(atomic_load(&conn_events.n), 4);
    CHECK_EQ(memcmp(conn_events.seen, "udud", 4), 0);
    net_test_rpc_client_down(&C);
    server_down();
    close(fd);
}
