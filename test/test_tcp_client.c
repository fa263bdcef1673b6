/* net_client: connect, echo, refusal, retry with backoff, timeouts,
 * cancellation (disconnect/close) exactly once, reconnect after a drop,
 * cross-thread use, IPv6 and Unix sockets. Loopback only. (Closing from
 * every callback and thread: test_lifecycle_tcp.c.)
 *
 * The servers here are plain sockets watched with net_watch on the client's
 * own loop, so each scenario is one thread (plus the one it tests with). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <unistd.h>

#include <net/loop.h>
#include <net/tcp_client.h>

#include "net_test_util.h"

#define WATCHDOG_MS 8000
#define MAX_FAILS 32
#define MAX_PEERS 8

/* ---- a tiny server: a listening socket and its accepted peers ------------ */

static struct {
    int lfd;
    net_watch_t *lw;
    net_addr_t addr;
    bool echo;        /* write back what arrives */
    bool close_first; /* close the first accepted socket at once */
    int accepted;
    int eofs;         /* peers that sent EOF (or reset) */
    char unix_path[64];
    struct {
        int fd;
        net_watch_t *w;
    } peers[MAX_PEERS];
} srv = {.lfd = -1};

static void peer_drop(int i)
{
    net_watch_free(srv.peers[i].w);
    close(srv.peers[i].fd);
    srv.peers[i].fd = -1;
    srv.peers[i].w = NULL;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EAGAIN)
            continue; /* tiny test payloads: the buffer frees up at once */
        CHECK(w > 0);
        p += w;
        n -= (size_t)w;
    }
}

static void peer_event(net_watch_t *w, int fd, unsigned events, void *arg)
{
    (void)w, (void)events;
    int i = (int)(intptr_t)arg;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0 && srv.echo)
        write_all(fd, buf, (size_t)n);
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
        srv.eofs++;
        peer_drop(i);
    }
}

static void peer_add(int fd)
{
    for (int i = 0; i < MAX_PEERS; i++) {
        if (srv.peers[i].w)
            continue;
        srv.peers[i].fd = fd;
        CHECK_OK(net_watch_new(net_loop_current(), fd, NET_READABLE, peer_event,
                               (void *)(intptr_t)i, &srv.peers[i].w));
        return;
    }
    net_test_fail(__FILE__, __LINE__, "too many peers");
}

static void accept_event(net_watch_t *w, int fd, unsigned events, void *arg)
{
    (void)w, (void)events, (void)arg;
    int cfd;
    while ((cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        srv.accepted++;
        if (srv.close_first && srv.accepted == 1)
            close(cfd);
        else
            peer_add(cfd);
    }
}

/* A socket bound to `text` (port 0: the kernel picks one; srv.addr gets the
 * real address). Not yet listening: connects to it are refused. Returns
 * false if the address cannot be bound (no IPv6, say). */
static bool server_bind(const char *text)
{
    CHECK_OK(net_addr_parse(&srv.addr, text));
    if (net_addr_family(&srv.addr) == AF_UNIX)
        unlink(srv.addr.u.un.sun_path);
    srv.lfd = socket(net_addr_family(&srv.addr), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    CHECK(srv.lfd >= 0);
    if (bind(srv.lfd, net_addr_sockaddr(&srv.addr), net_addr_len(&srv.addr)) < 0) {
        close(srv.lfd);
        srv.lfd = -1;
        return false;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    CHECK_EQ(getsockname(srv.lfd, (struct sockaddr *)&ss, &len), 0);
    CHECK_OK(net_addr_from_sockaddr(&srv.addr, (struct sockaddr *)&ss, len));
    return true;
}

/* Listens on the bound socket and accepts on the current loop. */
static void server_listen(int backlog, bool accept_them)
{
    CHECK_EQ(listen(srv.lfd, backlog), 0);
    if (accept_them)
        CHECK_OK(net_watch_new(net_loop_current(), srv.lfd, NET_READABLE, accept_event, NULL,
                               &srv.lw));
}

static void server_close(void)
{
    for (int i = 0; i < MAX_PEERS; i++)
        if (srv.peers[i].w)
            peer_drop(i);
    net_watch_free(srv.lw);
    srv.lw = NULL;
    if (srv.lfd >= 0)
        close(srv.lfd);
    srv.lfd = -1;
    if (net_addr_family(&srv.addr) == AF_UNIX)
        unlink(srv.addr.u.un.sun_path);
}

/* ---- the client side: counters and hooks --------------------------------- */

typedef void (*hook_fn)(void);

static struct {
    net_loop_t *loop;
    net_client_t *client;
    bool in_api;  /* inside a client call that must not run callbacks */
    bool in_fail; /* inside the failure callback */
    bool close_called;
    int ups, downs, fails, closed;
    uint32_t attempts; /* net_client_attempts, taken in the close's done */
    int fail_err[MAX_FAILS];
    bool fail_retry[MAX_FAILS];
    bool fail_nested[MAX_FAILS]; /* reported inside another failure callback */
    uint64_t fail_ms[MAX_FAILS];
    uint64_t up_ms;
    char got[256];
    size_t ngot, expect;
    net_conn_t *up_conn;
    hook_fn on_up, on_down, on_fail, on_done;
} t;

static void on_connection(net_conn_t *conn, void *arg)
{
    CHECK(arg == &t);
    CHECK(!t.in_api);
    if (net_conn_connected(conn)) {
        t.ups++;
        t.up_ms = net_now_ms();
        t.up_conn = conn;
        if (t.on_up)
            t.on_up();
    } else {
        t.downs++;
        CHECK(t.up_conn == conn);
        CHECK_EQ(t.downs, t.ups);
        if (t.on_down)
            t.on_down();
    }
}

static void on_message(net_conn_t *conn, net_buf_t *in, uint64_t ms, void *arg)
{
    (void)conn, (void)ms, (void)arg;
    size_t n = net_buf_readable(in);
    CHECK(t.ngot + n <= sizeof t.got);
    memcpy(t.got + t.ngot, net_buf_peek(in), n);
    t.ngot += n;
    net_buf_retrieve_all(in);
    if (t.expect && t.ngot >= t.expect && t.on_done)
        t.on_done();
}

static void on_failed(net_client_t *client, int err, bool will_retry, void *arg)
{
    CHECK(arg == &t);
    CHECK(client == t.client);
    CHECK(!t.in_api);
    CHECK(t.fails < MAX_FAILS);
    t.fail_err[t.fails] = err;
    t.fail_retry[t.fails] = will_retry;
    t.fail_nested[t.fails] = t.in_fail;
    t.fail_ms[t.fails] = net_now_ms();
    t.fails++;
    t.in_fail = true;
    if (t.on_fail)
        t.on_fail();
    t.in_fail = false;
}

/* The close's done: last, on the loop, never inside a call; the client's
 * memory goes when it returns. */
static void on_closed(net_client_t *client, void *arg)
{
    CHECK(arg == &t);
    CHECK(client == t.client);
    CHECK(!t.in_api);
    CHECK(net_loop_in_loop_thread(t.loop));
    CHECK_EQ(t.downs, t.ups); /* every connection's down came first */
    t.closed++;
    t.attempts = net_client_attempts(client);
    t.client = NULL;
}

static bool client_closed(void *arg)
{
    (void)arg;
    return t.closed > 0;
}

/* Attempts so far: the client's, or what its done saw once it is gone. */
static uint32_t attempts(void)
{
    return t.client ? net_client_attempts(t.client) : t.attempts;
}

static void setup(void)
{
    t.loop = net_test_new_loop(WATCHDOG_MS);
}

/* The scenario's loop and a server socket bound to a loopback port, not
 * listening: connects to it are refused. */
static void setup_refusing(void)
{
    setup();
    CHECK(server_bind("127.0.0.1:0"));
}

/* The scenario's loop and a server that accepts on it. */
static void setup_listening(void)
{
    setup_refusing();
    server_listen(16, true);
}

/* Defaults, but the first backoff delay is initial_ms. */
static struct net_client_options backoff_options(uint32_t initial_ms)
{
    struct net_client_options opt;
    net_client_options_init(&opt);
    opt.retry_initial_ms = initial_ms;
    return opt;
}

static struct net_client_options retry_options(uint32_t initial_ms)
{
    struct net_client_options opt = backoff_options(initial_ms);
    opt.retry = true;
    return opt;
}

static struct net_client_options reconnect_options(uint32_t initial_ms)
{
    struct net_client_options opt = backoff_options(initial_ms);
    opt.reconnect = true;
    return opt;
}

static void new_client(const struct net_client_options *opt)
{
    struct net_conn_callbacks cbs = {.on_connection = on_connection,
                                     .on_message = on_message,
                                     .arg = &t};
    CHECK_OK(net_client_new(t.loop, &srv.addr, opt, &cbs, on_failed, &t, &t.client));
}

static void client_connect(void)
{
    t.in_api = true;
    CHECK_OK(net_client_connect(t.client));
    t.in_api = false;
}

/* Closes with drain 0 (the first call; later ones must say -EALREADY). */
static void client_close(void)
{
    t.in_api = true;
    CHECK_EQ(net_client_close(t.client, 0, on_closed, &t), t.close_called ? -EALREADY : 0);
    t.close_called = true;
    t.in_api = false;
}

/* A new client (opt NULL: defaults) connects; the loop runs until a hook
 * quits it. */
static void connect_and_run(const struct net_client_options *opt)
{
    new_client(opt);
    client_connect();
    CHECK_OK(net_loop_run(t.loop));
}

static void quit_fn(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    net_loop_quit(t.loop);
}

/* Quits a little later, so a second (wrong) callback would still be seen. */
static void quit_soon(void)
{
    CHECK_OK(net_loop_run_after(t.loop, 150, quit_fn, NULL));
}

/* Closes the client if the scenario did not, runs the loop until its done
 * ran (once), and ends the server and the loop. */
static void teardown(void)
{
    if (!t.close_called)
        client_close();
    net_test_run_until(t.loop, client_closed, NULL);
    CHECK_EQ(t.closed, 1);
    server_close();
    net_loop_free(t.loop);
}

static void close_client_hook(void)
{
    client_close();
}

/* ---- echo over TCP/IPv4, IPv6 and a Unix socket -------------------------- */

static const char payload[] = "hello, netloop\0\x01\xff binary and all";

static void echo_up(void)
{
    net_conn_t *c = net_client_conn_ref(t.client);
    CHECK(c == t.up_conn);
    net_conn_unref(c);
    CHECK_OK(net_conn_send(t.up_conn, payload, sizeof payload));
}

static void echo_done(void)
{
    client_close();
}

static void echo_down(void)
{
    CHECK(net_client_conn_ref(t.client) == NULL);
    quit_soon();
}

static void run_echo(void)
{
    srv.echo = true;
    server_listen(16, true);
    t.expect = sizeof payload;
    t.on_up = echo_up;
    t.on_done = echo_done;
    t.on_down = echo_down;
    new_client(NULL);
    CHECK(net_client_conn_ref(t.client) == NULL);
    client_connect();
    CHECK_EQ(t.ups, 0); /* never inside connect */
    CHECK_OK(net_loop_run(t.loop));
    CHECK_EQ(t.ups, 1);
    CHECK_EQ(t.downs, 1);
    CHECK_EQ(t.fails, 0);
    CHECK_EQ(t.ngot, sizeof payload);
    CHECK_MEM_EQ(t.got, payload, sizeof payload);
    CHECK_EQ(attempts(), 1);
    CHECK_EQ(srv.accepted, 1);
    teardown();
}

TEST(client_connects_and_echoes)
{
    setup_refusing();
    run_echo();
}

TEST(client_ipv6_loopback)
{
    setup();
    if (!server_bind("[::1]:0")) {
        net_loop_free(t.loop);
        SKIP("::1 is not available here");
    }
    run_echo();
}

TEST(client_unix_socket)
{
    setup();
    char text[96];
    snprintf(text, sizeof text, "unix:/tmp/netloop_test_client_%d.sock", (int)getpid());
    CHECK(server_bind(text));
    run_echo();
}

/* ---- refused: one report, never inside connect --------------------------- */

static void quit_soon_hook(void)
{
    quit_soon();
}

TEST(client_connect_refused_reports_once)
{
    setup();
    CHECK(server_bind("127.0.0.1:0")); /* bound, not listening: refuses */
    t.on_fail = quit_soon_hook;
    new_client(NULL);
    client_connect();
    CHECK_EQ(t.fails, 0);
    CHECK_OK(net_loop_run(t.loop));
    CHECK_EQ(t.fails, 1);
    CHECK_EQ(t.fail_err[0], -ECONNREFUSED);
    CHECK(!t.fail_retry[0]);
    CHECK_EQ(t.ups, 0);
    CHECK_EQ(attempts(), 1);
    /* Not stopped: a new request makes a new attempt with a new report. */
    client_connect();
    CHECK_OK(net_loop_run(t.loop));
    CHECK_EQ(t.fails, 2);
    CHECK_EQ(t.fail_err[1], -ECONNREFUSED);
    CHECK_EQ(attempts(), 2);
    teardown();
}

/* ---- errors connect(2) returns at once ------------------------------------ */

/* TCP on loopback says EINPROGRESS even when refused; a Unix socket path
 * with nothing behind it fails inside connect(2) itself (ENOENT). */
static void use_missing_unix_path(void)
{
    char text[96];
    snprintf(text, sizeof text, "unix:/tmp/netloop_test_client_none_%d.sock", (int)getpid());
    unlink(text + 5);
    CHECK_OK(net_addr_parse(&srv.addr, text));
}

static void quit_after_final(void)
{
    if (!t.fail_retry[t.fails - 1])
        quit_soon();
}

TEST(client_immediate_error_reported_later)
{
    setup();
    use_missing_unix_path();
    struct net_client_options opt = retry_options(10);
    opt.max_attempts = 2;
    t.on_fail = quit_after_final;
    new_client(&opt);
    client_connect();
    CHECK_EQ(t.fails, 0); /* not inside connect */
    CHECK_OK(net_loop_run(t.loop));
    CHECK_EQ(t.fails, 2);
    CHECK_EQ(t.fail_err[0], -ENOENT);
    CHECK(t.fail_retry[0]);
    CHECK_EQ(t.fail_err[1], -ENOENT);
    CHECK(!t.fail_retry[1]);
    CHECK_EQ(attempts(), 2);
    teardown();
}

/* Connect and close in the same turn: the loop applies the connect as
 * cancelled, with no attempt, and one report. */
TEST(client_close_right_after_connect_cancels_once)
{
    setup();
    use_missing_unix_path();
    struct net_client_options opt;
    net_client_options_init(&opt);
    opt.retry = true;
    new_client(&opt);
    client_connect();
    client_close();
    CHECK_EQ(t.fails, 0); /* neither call reported inside itself */
    net_test_run_until(t.loop, client_closed, NULL);
    CHECK_EQ(t.fails, 1);
    CHECK_EQ(t.fail_err[0], NET_ECANCELLED);
    CHECK(!t.fail_retry[0]);
    CHECK_EQ(attempts(), 0);
    teardown();
}

/* An attempt that fails inside connect(2) (ENOENT), retried, then closed
 * during its backoff: the failure and then one cancellation. */
static void close_after_first_fail(void)
{
    if (t.fails == 1)
        client_close();
}

TEST(client_close_after_immediate_error_cancels_once)
{
    setup();
    use_missing_unix_path();
    struct net_client_options opt = retry_options(5000);
    t.on_fail = close_after_first_fail;
    new_client(&opt);
    client_connect();
    net_test_run_until(t.loop, client_closed, NULL);
    CHECK_EQ(t.fails, 2);
    CHECK_EQ(t.fail_err[0], -ENOENT);
    CHECK(t.fail_retry[0]);
    CHECK_EQ(t.fail_err[1], NET_ECANCELLED);
    CHECK(!t.fail_retry[1]);
    CHECK(!t.fail_nested[1]); /* after the first callback, not inside it */
    CHECK_EQ(attempts(), 1);
    teardown();
}

/* ---- retry with backoff until the port opens ----------------------------- */

static void open_port(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    server_listen(16, true);
}

TEST(client_retry_until_port_opens)
{
    setup_refusing();
    struct net_client_options opt = retry_options(30);
    opt.retry_max_ms = 160;
    opt.connect_timeout_ms = 2000;
    t.on_up = close_client_hook;
    t.on_down = quit_soon_hook;
    new_client(&opt);
    uint64_t start = net_now_ms();
    CHECK_OK(net_loop_run_after(t.loop, 300, open_port, NULL));
    client_connect();
    CHECK_OK(net_loop_run(t.loop));
    CHECK_EQ(t.ups, 1);
    CHECK(t.up_ms - start >= 290);
    /* Attempts at about 0, 30, 90, 210 ms are refused; 370 connects. */
    CHECK(t.fails >= 3);
    for (int i = 0; i < t.fails; i++) {
        CHECK_EQ(t.fail_err[i], -ECONNREFUSED);
        CHECK(t.fail_retry[i]);
    }
    CHECK_EQ(attempts(), (uint32_t)t.fails + 1);
    uint64_t gap0 = t.fail_ms[1] - t.fail_ms[0], gap1 = t.fail_ms[2] - t.fail_ms[1];
    CHECK(gap0 >= 25);
    CHECK(gap1 >= gap0 + 15); /* doubled (60 after 30), loosely */
    teardown();
}

/* ---- max_attempts: the last failure says it will not retry --------------- */

TEST(client_max_attempts_gives_up)
{
    setup_refusing();
    struct net_client_options opt = retry_options(10);
    opt.max_attempts = 3;
    new_client(&opt);
    client_connect();
    CHECK_OK(net_loop_run_after(t.loop, 400, quit_fn, NULL));
    CHECK_OK(net_loop_run(t.loop));
    CHECK_EQ(t.fails, 3);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(t.fail_err[i], -ECONNREFUSED);
    CHECK(t.fail_retry[0]);
    CHECK(t.fail_retry[1]);
    CHECK(!t.fail_retry[2]);
    CHECK_EQ(attempts(), 3);
    CHECK_EQ(t.ups, 0);
    teardown();
}

/* ---- connect timeout: a listener whose accept queue is full -------------- */

/* With backlog 0 Linux queues one connection; further SYNs are dropped (not
 * refused) while the queue is full, so a connect stays in SYN_SENT. */
static int fillers[4] = {-1, -1, -1, -1};

static void fill_backlog(void)
{
    for (int i = 0; i < 4; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        CHECK(fillers[i] >= 0);
        int rc = connect(fillers[i], net_addr_sockaddr(&srv.addr), net_addr_len(&srv.addr));
        CHECK(rc == 0 || errno == EINPROGRESS);
    }
    usleep(50 * 1000); /* the handshakes that can complete do so */
}

static void close_fillers(void)
{
    for (int i = 0; i < 4; i++)
        if (fillers[i] >= 0)
            close(fillers[i]);
}

TEST(client_connect_timeout)
{
    setup_refusing();
    server_listen(0, false);
    fill_backlog();
    struct net_client_options opt;
    net_client_options_init(&opt);
    opt.connect_timeout_ms = 200;
    t.on_fail = quit_soon_hook;
    t.on_up = quit_soon_hook;
    new_client(&opt);
    uint64_t start = net_now_ms();
    client_connect();
    CHECK_OK(net_loop_run(t.loop));
    if (t.ups) {
        teardown();
        close_fillers();
        SKIP("the kernel accepted a connection beyond a full backlog");
    }
    CHECK_EQ(t.fails, 1);
    CHECK_EQ(t.fail_err[0], -ETIMEDOUT);
    CHECK(!t.fail_retry[0]);
    CHECK(t.fail_ms[0] - start >= 190);
    CHECK(t.fail_ms[0] - start < 2000);
    teardown();
    close_fillers();
}

/* ---- close while connecting: NET_ECANCELLED, exactly once ---------------- */

TEST(client_close_while_connecting_cancels_once)
{
    setup_listening();
    new_client(NULL);
    client_connect();
    client_close();
    client_close(); /* -EALREADY */
    CHECK_EQ(net_client_connect(t.client), -ESHUTDOWN);
    CHECK_EQ(net_client_disconnect(t.client), -ESHUTDOWN);
    CHECK_EQ(t.fails, 0);
    CHECK_OK(net_loop_run_after(t.loop, 200, quit_fn, NULL));
    CHECK_OK(net_loop_run(t.loop));
    CHECK_EQ(t.closed, 1);
    CHECK_EQ(t.fails, 1);
    CHECK_EQ(t.fail_err[0], NET_ECANCELLED);
    CHECK(!t.fail_retry[0]);
    CHECK_EQ(t.ups, 0);
    teardown();
}

static void *connect_then_close(void *arg)
{
    (void)arg;
    CHECK_OK(net_client_connect(t.client));
    CHECK_OK(net_client_close(t.client, 0, on_closed, &t));
    CHECK_EQ(net_client_connect(t.client), -ESHUTDOWN);
    CHECK_EQ(net_client_close(t.client, 0, on_closed, &t), -EALREADY);
    return NULL;
}

TEST(client_close_from_other_thread_cancels_once)
{
    setup_listening();
    new_client(NULL);
    /* Both calls are queued before the loop runs, so the close finds the
     * connect not yet applied (the in-flight variant is below). */
    t.close_called = true;
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, connect_then_close, NULL), 0);
    CHECK_EQ(pthread_join(th, NULL), 0);
    CHECK_EQ(t.fails, 0);
    CHECK_OK(net_loop_run_after(t.loop, 300, quit_fn, NULL));
    CHECK_OK(net_loop_run(t.loop));
    CHECK_EQ(t.fails, 1);
    CHECK_EQ(t.fail_err[0], NET_ECANCELLED);
    CHECK(!t.fail_retry[0]);
    CHECK_EQ(t.ups, 0);
    teardown();
}

/* A close from another thread while the attempt really is in flight (the
 * server's accept queue is full, so the SYN goes unanswered). */
static atomic_bool attempt_started;

static void *close_when_started(void *arg)
{
    (void)arg;
    while (!atomic_load(&attempt_started))
        usleep(1000);
    usleep(50 * 1000);
    CHECK_OK(net_client_close(t.client, 0, on_closed, &t));
    return NULL;
}

static void start_connect(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    client_connect();
    atomic_store(&attempt_started, true);
}

TEST(client_close_from_other_thread_while_in_flight)
{
    setup_refusing();
    server_listen(0, false);
    fill_backlog();
    struct net_client_options opt;
    net_client_options_init(&opt);
    opt.retry = true;
    t.on_fail = quit_soon_hook;
    t.on_up = quit_soon_hook;
    new_client(&opt);
    t.close_called = true;
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, close_when_started, NULL), 0);
    CHECK_OK(net_loop_run_after(t.loop, 0, start_connect, NULL));
    CHECK_OK(net_loop_run(t.loop));
    CHECK_EQ(pthread_join(th, NULL), 0);
    if (t.ups) {
        teardown();
        close_fillers();
        SKIP("the kernel accepted a connection beyond a full backlog");
    }
    CHECK_EQ(t.fails, 1);
    CHECK_EQ(t.fail_err[0], NET_ECANCELLED);
    CHECK(!t.fail_retry[0]);
    CHECK_EQ(attempts(), 1);
    teardown();
    close_fillers();
}

/* ---- close during the backoff delay -------------------------------------- */

static void close_later(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    client_close();
    CHECK_EQ(t.fails, 1); /* the cancel report comes later, not inside close */
}

static void backoff_fail(void)
{
    if (t.fails == 1) {
        CHECK(t.fail_retry[0]);
        CHECK_OK(net_loop_run_after(t.loop, 50, close_later, NULL));
    } else {
        quit_soon();
    }
}

TEST(client_close_during_backoff_cancels_once)
{
    setup_refusing();
    struct net_client_options opt = retry_options(5000);
    t.on_fail = backoff_fail;
    connect_and_run(&opt);
    CHECK_EQ(t.fails, 2);
    CHECK_EQ(t.fail_err[0], -ECONNREFUSED);
    CHECK(t.fail_retry[0]);
    CHECK_EQ(t.fail_err[1], NET_ECANCELLED);
    CHECK(!t.fail_retry[1]);
    CHECK_EQ(attempts(), 1);
    teardown();
}

/* A close from inside the failure callback that scheduled the retry. */
static void close_inside_fail(void)
{
    if (t.fails == 1)
        client_close();
    else
        quit_soon();
}

TEST(client_close_inside_failure_callback_cancels_retry)
{
    setup_refusing();
    struct net_client_options opt = retry_options(20);
    t.on_fail = close_inside_fail;
    connect_and_run(&opt);
    CHECK_EQ(t.fails, 2);
    CHECK(t.fail_retry[0]);
    CHECK_EQ(t.fail_err[1], NET_ECANCELLED);
    CHECK(!t.fail_retry[1]);
    CHECK_EQ(attempts(), 1);
    teardown();
}

/* ---- disconnect: graceful, and no reconnect ------------------------------ */

static void disconnect_up(void)
{
    t.in_api = true;
    CHECK_OK(net_client_disconnect(t.client));
    CHECK_OK(net_client_disconnect(t.client));
    t.in_api = false;
}

static void wait_for_reconnects(void)
{
    CHECK_OK(net_loop_run_after(t.loop, 300, quit_fn, NULL));
}

TEST(client_disconnect_when_connected)
{
    setup_listening();
    struct net_client_options opt = reconnect_options(20);
    t.on_up = disconnect_up;
    t.on_down = wait_for_reconnects;
    connect_and_run(&opt);
    CHECK_EQ(t.ups, 1);
    CHECK_EQ(t.downs, 1);
    CHECK_EQ(t.fails, 0);
    CHECK_EQ(srv.accepted, 1);
    CHECK_EQ(srv.eofs, 1); /* the server saw our FIN */
    CHECK_EQ(attempts(), 1);
    CHECK(net_client_conn_ref(t.client) == NULL);
    teardown();
}

/* Disconnect while connecting cancels the attempt; connect works again. */
static void reconnect_after_cancel(void)
{
    CHECK_EQ(t.fail_err[0], NET_ECANCELLED);
    client_connect();
}

TEST(client_disconnect_while_connecting_then_connect_again)
{
    setup_listening();
    t.on_fail = reconnect_after_cancel;
    t.on_up = close_client_hook;
    t.on_down = quit_soon_hook;
    new_client(NULL);
    client_connect();
    t.in_api = true;
    CHECK_OK(net_client_disconnect(t.client));
    t.in_api = false;
    CHECK_OK(net_loop_run(t.loop));
    CHECK_EQ(t.fails, 1);
    CHECK(!t.fail_retry[0]);
    CHECK_EQ(t.ups, 1);
    CHECK_EQ(t.downs, 1);
    CHECK_EQ(attempts(), 2);
    teardown();
}

/* ---- reconnect after the server drops the connection --------------------- */

static void reconnect_up(void)
{
    if (t.ups == 2)
        client_close();
}

static void reconnect_down(void)
{
    if (t.downs == 2)
        quit_soon();
}

TEST(client_reconnects_after_drop)
{
    setup_listening();
    srv.close_first = true;
    struct net_client_options opt = reconnect_options(20);
    t.on_up = reconnect_up;
    t.on_down = reconnect_down;
    connect_and_run(&opt);
    CHECK_EQ(t.ups, 2);
    CHECK_EQ(t.downs, 2);
    CHECK_EQ(t.fails, 0);
    CHECK_EQ(srv.accepted, 2);
    CHECK_EQ(attempts(), 2);
    teardown();
}

/* ---- net_client_conn_ref from another thread --------------------------------- */

static atomic_bool conn_is_up;
static const char thread_msg[] = "sent from another thread";

static void *send_from_thread(void *arg)
{
    (void)arg;
    while (!atomic_load(&conn_is_up))
        usleep(1000);
    net_conn_t *c = net_client_conn_ref(t.client);
    CHECK(c != NULL);
    CHECK(net_conn_connected(c));
    CHECK_OK(net_conn_send(c, thread_msg, sizeof thread_msg));
    net_conn_unref(c);
    return NULL;
}

static void mark_up(void)
{
    atomic_store(&conn_is_up, true);
}

TEST(client_conn_ref_from_other_thread)
{
    setup_listening();
    srv.echo = true;
    t.expect = sizeof thread_msg;
    t.on_up = mark_up;
    t.on_done = close_client_hook;
    t.on_down = quit_soon_hook;
    new_client(NULL);
    CHECK(net_client_conn_ref(t.client) == NULL);
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, send_from_thread, NULL), 0);
    client_connect();
    CHECK_OK(net_loop_run(t.loop));
    CHECK_EQ(pthread_join(th, NULL), 0);
    CHECK_EQ(t.ngot, sizeof thread_msg);
    CHECK_MEM_EQ(t.got, thread_msg, sizeof thread_msg);
    CHECK_EQ(t.ups, 1);
    CHECK_EQ(t.downs, 1);
    teardown();
}

/* ---- close with work queued, and from inside callbacks -------------------- */

/* A close with a cross-thread connect queued, a loop-thread connect and a
 * disconnect queued too: the requests coalesce into one, which ends once
 * (cancelled); nothing runs after done. */
static void *connect_from_thread(void *arg)
{
    (void)arg;
    CHECK_OK(net_client_connect(t.client));
    return NULL;
}

TEST(client_close_with_queued_work)
{
    setup();
    use_missing_unix_path();
    new_client(NULL);
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, connect_from_thread, NULL), 0);
    CHECK_EQ(pthread_join(th, NULL), 0); /* its request is queued, not applied */
    client_connect();
    t.in_api = true;
    CHECK_OK(net_client_disconnect(t.client));
    t.in_api = false;
    client_connect();
    client_close();
    CHECK_EQ(t.fails, 0);
    net_test_run_until(t.loop, client_closed, NULL);
    net_test_run_for(t.loop, 50); /* a late callback would show here */
    CHECK_EQ(t.fails, 1);
    CHECK_EQ(t.fail_err[0], NET_ECANCELLED);
    teardown();
}

/* A close inside the failure callback that armed a retry: the retry is
 * cancelled and reported after that callback, not nested in it. */
static void close_inside_first_fail(void)
{
    if (t.fails == 1)
        client_close();
}

TEST(client_close_inside_failure_callback)
{
    setup_refusing();
    struct net_client_options opt = retry_options(10);
    t.on_fail = close_inside_first_fail;
    new_client(&opt);
    client_connect();
    net_test_run_until(t.loop, client_closed, NULL);
    CHECK_EQ(t.fails, 2);
    CHECK(t.fail_retry[0]);
    CHECK_EQ(t.fail_err[1], NET_ECANCELLED);
    CHECK(!t.fail_retry[1]);
    CHECK(!t.fail_nested[1]);
    CHECK_EQ(attempts(), 1);
    teardown();
}

/* Reconnect is on and the server drops us: a close inside the down
 * callback means no reconnect. */
TEST(client_close_inside_down_callback)
{
    setup_listening();
    srv.close_first = true;
    struct net_client_options opt = reconnect_options(10);
    t.on_down = close_client_hook;
    new_client(&opt);
    client_connect();
    net_test_run_until(t.loop, client_closed, NULL);
    net_test_run_for(t.loop, 100); /* a reconnect would be accepted here */
    CHECK_EQ(t.ups, 1);
    CHECK_EQ(t.downs, 1);
    CHECK_EQ(t.fails, 0);
    CHECK_EQ(srv.accepted, 1);
    CHECK_EQ(attempts(), 1);
    teardown();
}

/* ---- arguments and defaults ---------------------------------------------- */

static void *new_off_loop(void *arg)
{
    net_client_t *c = NULL;
    int *rc = arg;
    *rc = net_client_new(t.loop, &srv.addr, NULL, NULL, NULL, NULL, &c);
    CHECK(c == NULL);
    return NULL;
}

TEST(client_new_checks_arguments)
{
    setup_refusing();
    struct net_client_options opt;
    net_client_options_init(&opt);
    CHECK_EQ(opt.connect_timeout_ms, 5000);
    CHECK(!opt.retry);
    CHECK(!opt.reconnect);
    CHECK_EQ(opt.retry_initial_ms, 100);
    CHECK_EQ(opt.retry_max_ms, 10000);
    CHECK_EQ(opt.max_attempts, 0);
    CHECK(!opt.conn.nagle);
    net_client_t *c = NULL;
    net_addr_t none = {0};
    CHECK_EQ(net_client_new(NULL, &srv.addr, NULL, NULL, NULL, NULL, &c), -EINVAL);
    CHECK_EQ(net_client_new(t.loop, NULL, NULL, NULL, NULL, NULL, &c), -EINVAL);
    CHECK_EQ(net_client_new(t.loop, &none, NULL, NULL, NULL, NULL, &c), -EINVAL);
    CHECK_EQ(net_client_new(t.loop, &srv.addr, NULL, NULL, NULL, NULL, NULL), -EINVAL);
    CHECK(c == NULL);
    int rc = 0;
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, new_off_loop, &rc), 0);
    CHECK_EQ(pthread_join(th, NULL), 0);
    CHECK_EQ(rc, NET_EWRONGTHREAD);
    /* NULL callbacks, options and done are fine; so is closing a client
     * never connected (its release runs on the loop, at the latest in
     * net_loop_free). */
    CHECK_OK(net_client_new(t.loop, &srv.addr, NULL, NULL, NULL, NULL, &c));
    CHECK_EQ(net_client_attempts(c), 0);
    CHECK(net_client_conn_ref(c) == NULL);
    CHECK_OK(net_client_close(c, 0, NULL, NULL));
    CHECK_EQ(net_client_close(NULL, 0, NULL, NULL), -EINVAL);
    CHECK_EQ(net_client_connect(NULL), -EINVAL);
    CHECK_EQ(net_client_disconnect(NULL), -EINVAL);
    CHECK(net_client_conn_ref(NULL) == NULL);
    CHECK_EQ(net_client_attempts(NULL), 0);
    net_test_run_for(t.loop, 10);
    new_client(NULL);
    teardown();
}
