/* Allocation failure. A test allocator, installed with
 * net_replace_allocator(), counts the library's allocations and makes the
 * Nth one fail (or every one from the Nth on). A scripted scenario that
 * uses most of the library runs in a forked child for N = 1..K, K being
 * the number of allocations the scenario makes when nothing fails, and
 * every child must end clean: a normal exit, no sanitizer report (leaks
 * included: LeakSanitizer runs at the child's exit), no hang (an alarm
 * kills a child that hangs), every public call either succeeded or
 * returned -ENOMEM, every accepted RPC call and functor completed exactly
 * once, and every echoed byte stream intact.
 *
 * Scenarios:
 *   alloc_hook_rejects_null            net_replace_allocator() wants all four functions
 *   alloc_scenario_clean               the scenario once, nothing failing: strict, counts K
 *   alloc_fail_each_once               N = 1..K: only the Nth allocation fails
 *   alloc_fail_from_nth                N = 1..K: every allocation from the Nth fails, until
 *                                      the teardown (memory comes back for it)
 *   alloc_rpc_batch_reply_nomem_reg    an error reply that finds no memory in the
 *                                      server's batch closes the connection (it was
 *                                      dropped: the call waited for its timeout)
 *   alloc_rpc_waiting_frame_whole_reg  a call made before the connection is up
 *                                      whose frame finds no memory leaves no part
 *                                      of it behind (it corrupted the stream)
 *   alloc_server_stop_completes_reg    a server stop whose completion could not be
 *                                      queued completes at its drain deadline (it
 *                                      never completed)
 *
 * The scenario (one child): a loop on the main thread, timers (one-shot,
 * repeating, one added from another thread), a functor queued from another
 * thread, a pool of 2 loop threads with a functor each; a TCP echo server
 * with 2 I/O threads (and an idle timer per connection) and a TCP client
 * (high-water and write-complete callbacks), fixed-size records echoed,
 * sent from the loop thread and from another thread, which also pauses and
 * resumes reading; an RPC server (1 I/O thread, 1 worker for a blocking
 * handler) and an RPC client with async calls from both threads and sync
 * calls; then every object stopped and freed.
 *
 * A refused send (-ENOMEM from the loop thread or another) must never come
 * back in the echo. With memory gone for good (alloc_fail_from_nth) the
 * scenario is lenient where the library cannot make progress without
 * memory: see sc.lenient.
 *
 * To reproduce one child in this process (under gdb, say):
 *   ALLOC_FAIL_N=57 test_alloc_fail alloc_fail_each_once
 * A failing child's log shows where its allocation failed (addresses for
 * addr2line). Memory in the counted K varies a little run to run (threads).
 *
 * The parent never has a thread of its own (the counting pass also runs in
 * a child), so fork() is safe under TSan too. The main thread of a child
 * drives its loop in short slices (a ticker thread calls net_loop_quit()
 * every millisecond, which allocates nothing), so every wait is bounded
 * however little memory the library gets. */
#include <execinfo.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <unistd.h>

#include <net/alloc.h>
#include <net/loop_thread.h>
#include <net/rpc.h>
#include <net/tcp_client.h>
#include <net/tcp_server.h>

#include "faults_common.h"

/* A child that has not finished by then is hung: SIGALRM kills it. */
#define CHILD_ALARM_S SCALED(20, 80)
/* The longest a scenario waits for anything; below the alarm. */
#define SLICE_WAIT_MS SCALED(8000, 30000)
/* RPC call timeouts: a call that times out lost its request or reply. */
#define CALL_TIMEOUT_MS SCALED(5000, 20000)
/* FAIL_FROM: how long the traffic may take before memory comes back and
 * the teardown ends what is left (with no memory, some work cannot end). */
#define SHORTAGE_MS SCALED(100, 400)
/* The whole sweep must stay well inside Meson's timeout (60 s, x4). */
#define SWEEP_BUDGET_MS SCALED(45000, 200000)

/* ---- the test allocator ----------------------------------------------------------- */

/* Each block carries a header with a magic number: a block the library
 * allocated and freed with the C library's free (or the reverse) makes
 * ASan report a bad free, and the plain build aborts on the magic. */
#define HDR 16
#define MAGIC 0x6e6c616c6c6f6321ull

/* FAIL_MATCH: once armed, the first allocation of match_min..match_max
 * bytes on match_loop's thread (any thread if NULL) fails (for the
 * regression tests). */
enum fail_mode { FAIL_NONE, FAIL_ONCE, FAIL_FROM, FAIL_MATCH };

static struct {
    enum fail_mode mode; /* set before the library runs, read-only after */
    unsigned long at;
    size_t match_min, match_max;
    net_loop_t *match_loop;
    atomic_bool match_armed;
    atomic_bool recovered; /* FAIL_FROM: memory is back (teardown) */
    atomic_ulong count, injected;
} ta;

static bool match_failure(size_t size)
{
    return atomic_load(&ta.match_armed) && size >= ta.match_min && size <= ta.match_max &&
           (!ta.match_loop || net_loop_current() == ta.match_loop) &&
           atomic_exchange(&ta.match_armed, false);
}

/* Arms FAIL_MATCH. Call before the threads concerned can allocate: the
 * fields are plain (the flag publishes them). */
static void match_arm(size_t min, size_t max, net_loop_t *loop)
{
    ta.match_min = min;
    ta.match_max = max;
    ta.match_loop = loop;
    atomic_store(&ta.match_armed, true);
}

/* Writes who got the first NULL to stderr, which the parent shows only if
 * the child fails (`addr2line -e test_alloc_fail +0x...` names the
 * frames), and is a breakpoint for debuggers. */
__attribute__((noinline)) static void allocation_failed(unsigned long n)
{
    if (n != ta.at && ta.mode != FAIL_MATCH)
        return;
    void *frames[24];
    int depth = backtrace(frames, 24);
    fprintf(stderr, "allocation %lu failed here:\n", n);
    backtrace_symbols_fd(frames, depth, 2);
}

static bool inject_failure(size_t size)
{
    unsigned long n = atomic_fetch_add(&ta.count, 1) + 1;
    bool fail = (ta.mode == FAIL_ONCE && n == ta.at) ||
                (ta.mode == FAIL_FROM && n >= ta.at && !atomic_load(&ta.recovered)) ||
                (ta.mode == FAIL_MATCH && match_failure(size));
    if (fail) {
        atomic_fetch_add(&ta.injected, 1);
        allocation_failed(n);
    }
    return fail;
}

static void *tag(char *block)
{
    if (!block)
        return NULL;
    *(uint64_t *)(void *)block = MAGIC;
    return block + HDR;
}

static char *untag(void *p)
{
    char *block = (char *)p - HDR;
    if (*(uint64_t *)(void *)block != MAGIC) {
        static const char msg[] = "FAIL test allocator: a block it did not allocate\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        abort();
    }
    return block;
}

static void *ta_malloc(size_t n)
{
    if (n > SIZE_MAX - HDR || inject_failure(n))
        return NULL;
    return tag(malloc(n + HDR));
}

static void *ta_calloc(size_t count, size_t n)
{
    if ((n && count > (SIZE_MAX - HDR) / n) || inject_failure(count * n))
        return NULL;
    return tag(calloc(1, count * n + HDR));
}

static void *ta_realloc(void *p, size_t n)
{
    if (n > SIZE_MAX - HDR || inject_failure(n))
        return NULL;
    if (!p)
        return tag(malloc(n + HDR));
    char *block = realloc(untag(p), n + HDR);
    return block ? block + HDR : NULL;
}

static void ta_free(void *p)
{
    if (!p)
        return;
    char *block = untag(p);
    *(uint64_t *)(void *)block = 0; /* a second free of it aborts */
    free(block);
}

static void ta_install(enum fail_mode mode, unsigned long at)
{
    ta.mode = mode;
    ta.at = at;
    CHECK_OK(net_replace_allocator(ta_malloc, ta_realloc, ta_calloc, ta_free));
}

/* ---- what a scenario records ----------------------------------------------------- */

#define STEPS(X)                                                  \
    X(LOOP_NEW, "net_loop_new")                                   \
    X(TIMER_AFTER, "net_loop_run_after")                          \
    X(TIMER_EVERY, "net_loop_run_every")                          \
    X(TIMER_XTHREAD, "net_loop_run_after (other thread)")         \
    X(QUEUE_XTHREAD, "net_loop_queue_in_loop (other thread)")     \
    X(POOL_START, "net_loop_pool_start")                          \
    X(POOL_FUNCTOR, "net_loop_run_in_loop (pool loop)")           \
    X(SERVER_NEW, "net_server_new")                               \
    X(SERVER_START, "net_server_start")                           \
    X(CLIENT_NEW, "net_client_new")                               \
    X(CLIENT_CONNECT, "net_client_connect")                       \
    X(SEND_LOOP, "net_conn_send (loop thread)")                   \
    X(SEND_XTHREAD, "net_conn_send (other thread)")               \
    X(READ_CONTROL, "net_conn_stop_read/start_read (other thread)") \
    X(ECHO_SEND, "net_conn_send_buf (echo server)")               \
    X(FORCE_CLOSE, "net_conn_force_close (echo server)")          \
    X(RPC_SERVER_NEW, "net_rpc_server_new")                       \
    X(RPC_REGISTER, "net_rpc_server_register")                    \
    X(RPC_SERVER_START, "net_rpc_server_start")                   \
    X(RPC_CLIENT_NEW, "net_rpc_client_new")                       \
    X(RPC_CALL, "net_rpc_call")                                   \
    X(RPC_CALL_SYNC, "net_rpc_call_sync")                         \
    X(RPC_REPLY, "net_rpc_reply")

#define STEP_ENUM(id, name) STEP_##id,
#define STEP_NAME(id, name) name,
enum step { STEPS(STEP_ENUM) NSTEPS };
static const char *const step_names[] = {STEPS(STEP_NAME)};

/* TIMEOUT and CANCELLED only when memory ran out for good (FAIL_FROM). */
enum rpc_outcome { RPC_OK, RPC_INTERNAL, RPC_DISCONNECTED, RPC_TIMEOUT, RPC_CANCELLED, NOUTCOMES };
static const char *const outcome_names[] = {"OK", "INTERNAL", "DISCONNECTED", "TIMEOUT",
                                            "CANCELLED"};

/* Sent from the child to the parent through a pipe. */
struct outcome {
    unsigned long allocations, injected;
    unsigned enomem[NSTEPS];      /* calls of each step that returned -ENOMEM */
    unsigned rpc[NOUTCOMES];      /* RPC calls by outcome */
    unsigned records_sent, records_echoed;
    unsigned client_drops;        /* the echo client's connection went down early */
    unsigned connect_failures;    /* the echo client's connect failed */
    bool finished;
};

/* ---- the scenario's state (one per child process) ------------------------------- */

#define REC_LEN 16
#define LOOP_RECS 4
#define XTHREAD_RECS 8
#define MAX_RECS 8
enum { SENDER_LOOP, SENDER_XTHREAD, SENDERS };
enum rec_state { REC_UNSENT, REC_SENDING, REC_ACCEPTED, REC_REFUSED };

#define MAX_CALLS 16

struct call_slot {
    atomic_int fired;
    bool accepted;
    char body[24];
    size_t len;
};

static struct {
    /* FAIL_FROM: with memory gone for good, a stream may get a hole (the
     * echo server could neither echo nor close), a reply may be lost (the
     * server could not close the connection either), and work can only end
     * once memory is back, at teardown. */
    bool lenient;
    net_loop_t *loop;
    pthread_t ticker;
    atomic_bool ticker_stop;

    atomic_uint enomem[NSTEPS];
    atomic_uint rpc[NOUTCOMES];

    net_timer_id_t every_id;
    atomic_int once_fired, every_fired, xthread_timer_fired, xthread_functor_ran;
    bool once_armed, xthread_timer_armed, xthread_functor_queued;

    net_loop_pool_t *pool;
    atomic_int pool_ran;
    int pool_queued;

    net_server_t *server;
    bool server_started;
    atomic_int server_ups, server_downs;
    bool server_stopped;

    net_client_t *client;
    bool client_closed;
    net_conn_t *client_conn; /* loop thread; from the up callback to the down one */
    int client_ups, client_downs, write_completes, high_waters;
    bool client_failed, tearing_down;
    _Atomic int rec[SENDERS][MAX_RECS]; /* enum rec_state */
    bool echoed[SENDERS][MAX_RECS];
    int next_seq[SENDERS];              /* first seq not yet echoed, per sender */
    net_buf_t echo_in;

    net_rpc_server_t *rpc_server;
    bool rpc_server_stopped;
    net_rpc_client_t *rpc_client;
    atomic_bool rpc_client_stopped; /* its close was called */
    bool rpc_client_closed;         /* its close's done ran */
    struct call_slot calls[MAX_CALLS];
    atomic_int ncalls;

    atomic_bool driver_done;
} sc;

static bool step_ok(enum step s, long long rc, const char *file, int line)
{
    if (rc >= 0)
        return true;
    if (rc == -ENOMEM) {
        atomic_fetch_add(&sc.enomem[s], 1);
        return false;
    }
    net_test_fail(file, line, "%s returned %lld (%s)", step_names[s], rc, net_strerror((int)rc));
}

/* True when the call succeeded; false for -ENOMEM (counted); anything else
 * fails the scenario. */
#define TRY(s, expr) step_ok(STEP_##s, (long long)(expr), __FILE__, __LINE__)

static bool failures_injected(void)
{
    return atomic_load(&ta.injected) > 0;
}

/* ---- driving the loop in slices ----------------------------------------------------- */

static void *ticker_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&sc.ticker_stop)) {
        net_loop_quit(sc.loop);
        net_test_sleep_ms(1);
    }
    return NULL;
}

/* Runs the loop until cond(arg) holds; false if it did not within the wait. */
static bool run_until(bool (*cond)(void), unsigned max_ms)
{
    uint64_t deadline = net_test_now_ms() + max_ms;
    while (!cond()) {
        if (net_test_now_ms() > deadline)
            return false;
        CHECK_OK(net_loop_run(sc.loop));
    }
    return true;
}

#define RUN_UNTIL(cond)                                                                 \
    do {                                                                                \
        if (!run_until(cond, SLICE_WAIT_MS))                                            \
            net_test_fail(__FILE__, __LINE__, "timed out waiting for %s", #cond);       \
    } while (0)

/* ---- timers and functors ---------------------------------------------------------- */

static void count_up(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

static void count_up_timer_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    count_up(arg);
}

static bool timers_done(void)
{
    return (!sc.once_armed || atomic_load(&sc.once_fired) > 0) &&
           (sc.every_id <= 0 || atomic_load(&sc.every_fired) >= 2);
}

static void start_timers(void)
{
    sc.once_armed =
        TRY(TIMER_AFTER, net_loop_run_after(sc.loop, 1, count_up_timer_cb, &sc.once_fired));
    net_timer_id_t id = net_loop_run_every(sc.loop, 2, count_up_timer_cb, &sc.every_fired);
    sc.every_id = TRY(TIMER_EVERY, id) ? id : 0;
}

static void start_pool(void)
{
    if (!TRY(POOL_START, net_loop_pool_start(sc.loop, 2, "af", NULL, NULL, &sc.pool)))
        return;
    for (size_t i = 0; i < net_loop_pool_size(sc.pool); i++)
        if (TRY(POOL_FUNCTOR, net_loop_run_in_loop(net_loop_pool_get(sc.pool, i), count_up,
                                                   &sc.pool_ran)))
            sc.pool_queued++;
}

/* ---- the echo server and its client ------------------------------------------------ */

static void echo_on_connection(net_conn_t *conn, void *arg)
{
    (void)arg;
    atomic_fetch_add(net_conn_connected(conn) ? &sc.server_ups : &sc.server_downs, 1);
}

/* A stream cannot go on with a hole in it: without memory to echo, the
 * server closes the connection (retrying the close if that finds no memory
 * either; -ENOTCONN: the library closed it already). */
static void echo_on_message(net_conn_t *conn, net_buf_t *in, uint64_t when, void *arg)
{
    (void)when;
    (void)arg;
    int rc = net_conn_send_buf(conn, in);
    if (rc == 0)
        return;
    net_buf_retrieve_all(in);
    if ((rc == -ENOTCONN && failures_injected()) || TRY(ECHO_SEND, rc))
        return;
    for (int i = 0; i < 3; i++) {
        int rc = net_conn_force_close(conn);
        if (rc == -ENOTCONN || TRY(FORCE_CLOSE, rc))
            return;
    }
}

static void record_fill(char *rec, int sender, int seq)
{
    rec[0] = 'R';
    rec[1] = (char)('0' + sender);
    rec[2] = (char)('a' + seq);
    for (int i = 3; i < REC_LEN; i++)
        rec[i] = (char)('A' + (sender * 7 + seq * 3 + i) % 26);
}

/* A send's refusal that only a connection broken by an injected failure
 * explains: it is closing (-ENOTCONN), or, on the loop thread, whose send
 * writes at once, the peer already closed or reset it because of one
 * (-EPIPE, -ECONNRESET, as net_conn_send documents). */
static bool broken_by_failure(int sender, int rc)
{
    if (!failures_injected())
        return false;
    return rc == -ENOTCONN ||
           (sender == SENDER_LOOP && (rc == -EPIPE || rc == -ECONNRESET));
}

/* Sends record seq of sender on conn; a refusal broken_by_failure explains
 * counts as refused, any other error fails the scenario. */
static void record_send(net_conn_t *conn, int sender, int seq)
{
    char rec[REC_LEN];
    record_fill(rec, sender, seq);
    atomic_store(&sc.rec[sender][seq], REC_SENDING);
    int rc = net_conn_send(conn, rec, sizeof rec);
    if (broken_by_failure(sender, rc)) {
        atomic_store(&sc.rec[sender][seq], REC_REFUSED);
        return;
    }
    bool ok = sender == SENDER_LOOP ? TRY(SEND_LOOP, rc) : TRY(SEND_XTHREAD, rc);
    atomic_store(&sc.rec[sender][seq], ok ? REC_ACCEPTED : REC_REFUSED);
}

/* Checks each whole record as it comes back: well formed, and in order
 * per sender with no repeat. Holes are judged at the end (echo_check). */
static void client_on_message(net_conn_t *conn, net_buf_t *in, uint64_t when, void *arg)
{
    (void)conn;
    (void)when;
    (void)arg;
    while (net_buf_readable(in) >= REC_LEN) {
        const char *p = net_buf_peek(in);
        int sender = p[1] - '0', seq = p[2] - 'a';
        CHECK(p[0] == 'R' && sender >= 0 && sender < SENDERS && seq >= 0 && seq < MAX_RECS);
        char want[REC_LEN];
        record_fill(want, sender, seq);
        CHECK_MEM_EQ(p, want, REC_LEN);
        CHECK(seq >= sc.next_seq[sender]);
        sc.echoed[sender][seq] = true;
        sc.next_seq[sender] = seq + 1;
        CHECK_OK(net_buf_retrieve(in, REC_LEN));
    }
}

/* Notifications: without memory one may be lost (documented), so they are
 * only counted, for coverage of their paths. */
static void client_on_write_complete(net_conn_t *conn, void *arg)
{
    (void)conn;
    (void)arg;
    sc.write_completes++;
}

static void client_on_high_water(net_conn_t *conn, size_t queued, void *arg)
{
    (void)conn;
    (void)arg;
    CHECK(queued >= REC_LEN);
    sc.high_waters++;
}

static void client_on_connection(net_conn_t *conn, void *arg)
{
    (void)arg;
    if (net_conn_connected(conn)) {
        sc.client_ups++;
        sc.client_conn = conn;
        net_conn_set_high_water_mark(conn, REC_LEN); /* each queued record crosses it */
        record_send(conn, SENDER_LOOP, 0);
        return;
    }
    sc.client_downs++;
    sc.client_conn = NULL;
}

static void client_on_failed(net_client_t *client, int err, bool will_retry, void *arg)
{
    (void)client;
    (void)arg;
    CHECK(!will_retry);
    /* -EIO: the connection could not be registered with the poller. */
    if (!(sc.tearing_down && err == NET_ECANCELLED))
        CHECK(err == -ENOMEM || err == -EIO);
    sc.client_failed = true;
}

static void start_echo(void)
{
    struct net_server_options opt;
    net_server_options_init(&opt);
    opt.io_threads = 2;
    opt.name = "afecho";
    opt.conn.idle_timeout_ms = 60000; /* a timer per connection */
    struct net_conn_callbacks scbs = {.on_connection = echo_on_connection,
                                      .on_message = echo_on_message};
    net_addr_t addr;
    CHECK_OK(net_addr_parse(&addr, "127.0.0.1:0"));
    if (!TRY(SERVER_NEW, net_server_new(sc.loop, &addr, &opt, &scbs, &sc.server)))
        return;
    if (!TRY(SERVER_START, net_server_start(sc.server)))
        return;
    sc.server_started = true;
    struct net_conn_callbacks ccbs = {.on_connection = client_on_connection,
                                      .on_message = client_on_message,
                                      .on_write_complete = client_on_write_complete,
                                      .on_high_water = client_on_high_water};
    if (!TRY(CLIENT_NEW, net_client_new(sc.loop, net_server_addr(sc.server), NULL, &ccbs,
                                        client_on_failed, NULL, &sc.client)))
        return;
    if (!TRY(CLIENT_CONNECT, net_client_connect(sc.client)))
        sc.client_failed = true;
}

static bool client_settled(void)
{
    return !sc.client || sc.client_failed || sc.client_ups > 0;
}

/* Every accepted record came back, or the connection is gone. */
static bool echo_settled(void)
{
    if (!sc.client_conn)
        return true;
    for (int s = 0; s < SENDERS; s++)
        for (int q = 0; q < MAX_RECS; q++) {
            int st = atomic_load(&sc.rec[s][q]);
            if (st == REC_SENDING || (st == REC_ACCEPTED && !sc.echoed[s][q]))
                return false;
        }
    return true;
}

/* No accepted record is missing before one that came back (a hole), and
 * while the connection lived to the end, none is missing at all. A
 * refused record never comes back. */
static void echo_check(bool conn_lived, struct outcome *out)
{
    for (int s = 0; s < SENDERS; s++) {
        for (int q = 0; q < MAX_RECS; q++) {
            int st = atomic_load(&sc.rec[s][q]);
            CHECK(st != REC_SENDING);
            out->records_sent += st == REC_ACCEPTED;
            out->records_echoed += sc.echoed[s][q];
            if (st == REC_REFUSED || st == REC_UNSENT) {
                if (sc.echoed[s][q])
                    net_test_fail(__FILE__, __LINE__,
                                  "record %d of sender %d was refused yet echoed", q, s);
                continue;
            }
            if (!sc.echoed[s][q] && !sc.lenient && (conn_lived || q < sc.next_seq[s] - 1))
                net_test_fail(__FILE__, __LINE__, "record %d of sender %d was lost", q, s);
        }
    }
}

/* ---- RPC -------------------------------------------------------------------------- */

static void rpc_echo(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    TRY(RPC_REPLY, net_rpc_reply(req, NET_RPC_OK, body, len));
}

/* Counts an outcome; any other status than these is a failure (TIMEOUT: a
 * request or reply was lost without the connection closing). */
static void rpc_outcome(uint32_t status, const void *body, size_t len, const struct call_slot *s)
{
    enum rpc_outcome o;
    switch (status) {
    case NET_RPC_OK:
        CHECK_EQ(len, s->len);
        CHECK_MEM_EQ(body, s->body, len);
        o = RPC_OK;
        break;
    case NET_RPC_INTERNAL:
        o = RPC_INTERNAL;
        break;
    case NET_RPC_DISCONNECTED:
        o = RPC_DISCONNECTED;
        break;
    case NET_RPC_TIMEOUT:
        CHECK(sc.lenient);
        o = RPC_TIMEOUT;
        break;
    case NET_RPC_CANCELLED:
        CHECK(sc.lenient);
        o = RPC_CANCELLED;
        break;
    default:
        net_test_fail(__FILE__, __LINE__, "RPC call ended with %s", net_rpc_status_name(status));
    }
    atomic_fetch_add(&sc.rpc[o], 1);
}

static void call_done(net_rpc_client_t *client, uint32_t status, const void *body, size_t len,
                      void *arg)
{
    (void)client;
    struct call_slot *s = arg;
    CHECK_EQ(atomic_fetch_add(&s->fired, 1), 0);
    rpc_outcome(status, body, len, s);
}

static struct call_slot *slot_new(int i, const char *method)
{
    int n = atomic_fetch_add(&sc.ncalls, 1);
    CHECK(n < MAX_CALLS);
    struct call_slot *s = &sc.calls[n];
    s->len = (size_t)snprintf(s->body, sizeof s->body, "%s-%d-%d", method, i, n);
    return s;
}

/* -ESHUTDOWN: the teardown closed the client under a late caller
 * (FAIL_FROM only). */
static bool call_refused(int rc)
{
    return rc == -ESHUTDOWN && sc.lenient && atomic_load(&sc.rpc_client_stopped);
}

static void call_async(const char *method, int i)
{
    struct call_slot *s = slot_new(i, method);
    int rc = net_rpc_call(sc.rpc_client, method, s->body, s->len, CALL_TIMEOUT_MS, call_done, s);
    s->accepted = !call_refused(rc) && TRY(RPC_CALL, rc);
}

static void call_sync(const char *method, int i)
{
    struct call_slot *s = slot_new(i, method);
    uint32_t status;
    void *body = NULL;
    size_t len = 0;
    int rc = net_rpc_call_sync(sc.rpc_client, method, s->body, s->len, CALL_TIMEOUT_MS, &status,
                               &body, &len);
    if (!call_refused(rc) && TRY(RPC_CALL_SYNC, rc)) {
        s->accepted = true;
        atomic_fetch_add(&s->fired, 1);
        rpc_outcome(status, body, len, s);
    }
    free(body); /* the C library's malloc (include/net/alloc.h) */
}

static void start_rpc(void)
{
    struct net_rpc_server_options opt;
    net_rpc_server_options_init(&opt);
    opt.server.io_threads = 1;
    opt.server.name = "afrpc";
    opt.worker_threads = 1;
    net_addr_t addr;
    CHECK_OK(net_addr_parse(&addr, "127.0.0.1:0"));
    if (!TRY(RPC_SERVER_NEW, net_rpc_server_new(sc.loop, &addr, &opt, &sc.rpc_server)))
        return;
    if (!TRY(RPC_REGISTER, net_rpc_server_register(sc.rpc_server, "echo", rpc_echo, NULL, false)) ||
        !TRY(RPC_REGISTER, net_rpc_server_register(sc.rpc_server, "becho", rpc_echo, NULL, true)) ||
        !TRY(RPC_SERVER_START, net_rpc_server_start(sc.rpc_server)))
        return;
    TRY(RPC_CLIENT_NEW, net_rpc_client_new(sc.loop, net_rpc_server_addr(sc.rpc_server), NULL,
                                           &sc.rpc_client));
}

static bool calls_settled(void)
{
    for (int i = 0; i < atomic_load(&sc.ncalls); i++)
        if (sc.calls[i].accepted && atomic_load(&sc.calls[i].fired) == 0)
            return false;
    return true;
}

/* ---- the other thread ------------------------------------------------------------- */

/* Pauses and resumes reading on conn from this thread. A resume that finds
 * no memory is retried: reading stopped for good would stall the echo. */
static void read_pause(net_conn_t *conn)
{
    int rc = net_conn_stop_read(conn);
    if ((rc == -ENOTCONN && failures_injected()) || !TRY(READ_CONTROL, rc))
        return;
    for (int i = 0; i < 100; i++) {
        rc = net_conn_start_read(conn);
        if ((rc == -ENOTCONN && failures_injected()) || TRY(READ_CONTROL, rc))
            return;
        net_test_sleep_ms(1);
    }
}

static void *driver_main(void *arg)
{
    (void)arg;
    net_conn_t *conn = sc.client ? net_client_conn_ref(sc.client) : NULL;
    for (int q = 0; conn && q < XTHREAD_RECS; q++) {
        record_send(conn, SENDER_XTHREAD, q);
        if (q == XTHREAD_RECS / 2)
            read_pause(conn);
    }
    net_conn_unref(conn);
    sc.xthread_functor_queued =
        TRY(QUEUE_XTHREAD, net_loop_queue_in_loop(sc.loop, count_up, &sc.xthread_functor_ran));
    sc.xthread_timer_armed = TRY(TIMER_XTHREAD, net_loop_run_after(sc.loop, 1, count_up_timer_cb,
                                                                   &sc.xthread_timer_fired));
    if (sc.rpc_client) {
        call_async("echo", 10);
        call_async("becho", 11);
        call_sync("echo", 12);
        call_sync("becho", 13);
        call_async("echo", 14);
    }
    atomic_store(&sc.driver_done, true);
    return NULL;
}

static bool driver_finished(void)
{
    return atomic_load(&sc.driver_done);
}

static bool traffic_settled(void)
{
    return atomic_load(&sc.driver_done) && echo_settled() && calls_settled() &&
           (!sc.xthread_timer_armed || atomic_load(&sc.xthread_timer_fired) > 0);
}

/* ---- teardown ------------------------------------------------------------------------ */

static void server_stopped(net_server_t *server, void *arg)
{
    (void)server;
    (void)arg;
    sc.server_stopped = true;
}

static void client_closed(net_client_t *client, void *arg)
{
    (void)client;
    (void)arg;
    sc.client_closed = true;
}

static void rpc_server_stopped(net_rpc_server_t *server, void *arg)
{
    (void)server;
    (void)arg;
    sc.rpc_server_stopped = true;
}

/* A call from the other thread racing the close must have returned
 * before done (rpc.h): in the lenient ending the driver may still be
 * making its last calls, which return -ESHUTDOWN without the loop. */
static void rpc_client_closed(net_rpc_client_t *client, void *arg)
{
    (void)client;
    (void)arg;
    while (!atomic_load(&sc.driver_done))
        net_test_sleep_ms(1);
    sc.rpc_client_closed = true;
}

static void rpc_client_close(void)
{
    if (sc.rpc_client && !atomic_exchange(&sc.rpc_client_stopped, true))
        CHECK_OK(net_rpc_client_close(sc.rpc_client, 0, rpc_client_closed, NULL));
}

static bool servers_stopped(void)
{
    return (!sc.server || sc.server_stopped) && (!sc.client || sc.client_closed) &&
           (!sc.rpc_server || sc.rpc_server_stopped) && (!sc.rpc_client || sc.rpc_client_closed);
}

/* Ends the traffic: at once, or with FAIL_FROM after SHORTAGE_MS and
 * with memory back, by closing the RPC client (its calls end CANCELLED,
 * so the other thread's sync call returns). */
static void traffic_end(pthread_t driver)
{
    if (!sc.lenient) {
        RUN_UNTIL(traffic_settled);
    } else if (!run_until(traffic_settled, SHORTAGE_MS)) {
        atomic_store(&ta.recovered, true);
        rpc_client_close();
        RUN_UNTIL(driver_finished);
    }
    CHECK(pthread_join(driver, NULL) == 0);
}

static void teardown(void)
{
    sc.tearing_down = true;
    atomic_store(&ta.recovered, true);
    rpc_client_close(); /* ends nothing: every call has ended */
    if (sc.client)
        CHECK_OK(net_client_close(sc.client, 0, client_closed, NULL));
    if (sc.server) /* started or not: close is the only end */
        CHECK_OK(net_server_close(sc.server, 100, server_stopped, NULL));
    if (sc.rpc_server)
        CHECK_OK(net_rpc_server_close(sc.rpc_server, 100, rpc_server_stopped, NULL));
    RUN_UNTIL(servers_stopped);
    net_loop_pool_join(sc.pool);
    if (sc.every_id > 0)
        CHECK_OK(net_timer_cancel(sc.loop, sc.every_id));
    atomic_store(&sc.ticker_stop, true);
    CHECK(pthread_join(sc.ticker, NULL) == 0);
    net_loop_free(sc.loop);
}

/* Every accepted piece of work ran exactly once; connections came up and
 * went down in pairs. */
static void final_checks(void)
{
    CHECK_EQ(atomic_load(&sc.pool_ran), sc.pool_queued);
    CHECK_EQ(atomic_load(&sc.once_fired), sc.once_armed);
    CHECK_EQ(atomic_load(&sc.xthread_timer_fired), sc.xthread_timer_armed);
    CHECK_EQ(atomic_load(&sc.xthread_functor_ran), sc.xthread_functor_queued);
    for (int i = 0; i < atomic_load(&sc.ncalls); i++)
        CHECK_EQ(atomic_load(&sc.calls[i].fired), sc.calls[i].accepted);
    CHECK_EQ(atomic_load(&sc.server_ups), atomic_load(&sc.server_downs));
    CHECK_EQ(sc.client_ups, sc.client_downs);
}

static void scenario(struct outcome *out)
{
    if (!TRY(LOOP_NEW, net_loop_new(&sc.loop)))
        return;
    CHECK(pthread_create(&sc.ticker, NULL, ticker_main, NULL) == 0);
    start_timers();
    start_pool();
    start_echo();
    start_rpc();
    RUN_UNTIL(timers_done);
    RUN_UNTIL(client_settled);
    for (int q = 1; sc.client_conn && q < LOOP_RECS; q++)
        record_send(sc.client_conn, SENDER_LOOP, q);
    if (sc.rpc_client) {
        call_async("echo", 0);
        call_async("becho", 1);
    }
    pthread_t driver;
    CHECK(pthread_create(&driver, NULL, driver_main, NULL) == 0);
    traffic_end(driver);
    bool conn_lived = sc.client_conn != NULL;
    out->client_drops = sc.client_ups > 0 && !conn_lived;
    out->connect_failures = sc.client_failed;
    teardown();
    echo_check(conn_lived, out);
    final_checks();
}

/* ---- one child --------------------------------------------------------------------- */

static void child_main(enum fail_mode mode, unsigned long at, int report_fd)
{
    alarm(CHILD_ALARM_S); /* the default action kills: the parent sees the hang */
    ta_install(mode, at);
    sc.lenient = mode == FAIL_FROM;
    struct outcome out = {0};
    scenario(&out);
    out.allocations = atomic_load(&ta.count);
    out.injected = atomic_load(&ta.injected);
    for (int i = 0; i < NSTEPS; i++)
        out.enomem[i] = atomic_load(&sc.enomem[i]);
    for (int i = 0; i < NOUTCOMES; i++)
        out.rpc[i] = atomic_load(&sc.rpc[i]);
    out.finished = true;
    if (report_fd >= 0)
        CHECK_EQ(write(report_fd, &out, sizeof out), (ssize_t)sizeof out);
    else
        printf("N = %lu: %lu allocations, %lu failed\n", at, out.allocations, out.injected);
    exit(0); /* LeakSanitizer runs now */
}

struct child_result {
    struct outcome out;
    bool reported;
    int status;
    char log[8192];
};

/* Reads fd to EOF, keeping the first bytes in buf (NUL-terminated). */
static void read_log(int fd, char *buf, size_t cap)
{
    size_t used = 0;
    char scratch[4096];
    for (;;) {
        ssize_t n = read(fd, scratch, sizeof scratch);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        size_t take = (size_t)n < cap - 1 - used ? (size_t)n : cap - 1 - used;
        memcpy(buf + used, scratch, take);
        used += take;
    }
    buf[used] = '\0';
}

/* Runs the scenario in a child with stdout and stderr captured. Must run
 * while this process has no other thread. */
static void run_child(enum fail_mode mode, unsigned long at, struct child_result *r)
{
    int report[2], logp[2];
    CHECK(pipe2(report, O_CLOEXEC) == 0 && pipe2(logp, O_CLOEXEC) == 0);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(report[0]);
        close(logp[0]);
        dup2(logp[1], 1);
        dup2(logp[1], 2);
        child_main(mode, at, report[1]);
    }
    close(report[1]);
    close(logp[1]);
    memset(r, 0, sizeof *r);
    read_log(logp[0], r->log, sizeof r->log);
    r->reported = read(report[0], &r->out, sizeof r->out) == (ssize_t)sizeof r->out;
    close(report[0]);
    close(logp[0]);
    CHECK_EQ(waitpid(pid, &r->status, 0), pid);
}

static bool sanitizer_spoke(const char *log)
{
    return strstr(log, "Sanitizer") || strstr(log, "runtime error:");
}

static void child_verdict(const char *what, unsigned long at, const struct child_result *r)
{
    const char *why = NULL;
    if (WIFSIGNALED(r->status))
        why = WTERMSIG(r->status) == SIGALRM ? "hung (alarm)" : "killed by a signal";
    else if (!WIFEXITED(r->status) || WEXITSTATUS(r->status) != 0)
        why = "exited with an error";
    else if (!r->reported || !r->out.finished)
        why = "did not report";
    else if (sanitizer_spoke(r->log))
        why = "a sanitizer reported";
    if (!why)
        return;
    fprintf(stderr, "---- child log (%s, N = %lu) ----\n%s\n---- end of child log ----\n", what,
            at, r->log);
    if (WIFSIGNALED(r->status))
        fprintf(stderr, "signal %d\n", WTERMSIG(r->status));
    net_test_fail(__FILE__, __LINE__, "%s: N = %lu: the child %s", what, at, why);
}

/* The run with nothing failing must do everything: no -ENOMEM, every
 * record echoed, every call OK. */
static struct outcome clean_run(void)
{
    static struct child_result r;
    run_child(FAIL_NONE, 0, &r);
    child_verdict("clean run", 0, &r);
    const struct outcome *o = &r.out;
    CHECK_EQ(o->injected, 0);
    for (int i = 0; i < NSTEPS; i++)
        if (o->enomem[i])
            net_test_fail(__FILE__, __LINE__, "clean run: %s returned -ENOMEM", step_names[i]);
    CHECK_EQ(o->records_sent, LOOP_RECS + XTHREAD_RECS);
    CHECK_EQ(o->records_echoed, LOOP_RECS + XTHREAD_RECS);
    CHECK_EQ(o->rpc[RPC_OK], 7);
    CHECK_EQ(o->client_drops + o->connect_failures, 0);
    CHECK(o->allocations > 50); /* the hook sees the library's allocations */
    return *o;
}

/* ---- the sweep ------------------------------------------------------------------------ */

struct sweep {
    unsigned long runs, injected, finished_clean;
    unsigned enomem[NSTEPS], rpc[NOUTCOMES];
    unsigned drops, connect_failures;
};

static void sweep_add(struct sweep *s, const struct outcome *o)
{
    s->runs++;
    s->injected += o->injected > 0;
    bool any = false;
    for (int i = 0; i < NSTEPS; i++) {
        s->enomem[i] += o->enomem[i];
        any |= o->enomem[i] > 0;
    }
    for (int i = 0; i < NOUTCOMES; i++)
        s->rpc[i] += o->rpc[i];
    s->drops += o->client_drops;
    s->connect_failures += o->connect_failures;
    s->finished_clean += !any && !o->client_drops && !o->connect_failures &&
                         o->rpc[RPC_OK] == 7 && o->records_echoed == o->records_sent;
}

static void sweep_print(const char *what, unsigned long k, const struct sweep *s, uint64_t ms)
{
    printf("%s: K = %lu; %lu runs in %llu ms, %lu with a failure injected, %lu of those "
           "with no visible effect\n",
           what, k, s->runs, (unsigned long long)ms, s->injected, s->finished_clean);
    for (int i = 0; i < NSTEPS; i++)
        if (s->enomem[i])
            printf("  -ENOMEM from %s: %u\n", step_names[i], s->enomem[i]);
    for (int i = 0; i < NOUTCOMES; i++)
        printf("  RPC calls %s: %u\n", outcome_names[i], s->rpc[i]);
    printf("  echo connection dropped: %u, echo connect failed: %u\n", s->drops,
           s->connect_failures);
}

/* Runs the children for every N = 1..K (K is about 130: no need to sample);
 * stops early, saying so, if the time budget runs out. */
static void sweep(const char *what, enum fail_mode mode)
{
    /* ALLOC_FAIL_N=n runs that N alone, in this process (to reproduce a
     * failure under a debugger). */
    const char *only = getenv("ALLOC_FAIL_N");
    if (only)
        child_main(mode, strtoul(only, NULL, 10), -1);
    struct outcome clean = clean_run();
    unsigned long k = clean.allocations;
    struct sweep s = {0};
    static struct child_result r;
    uint64_t t0 = net_test_now_ms();
    for (unsigned long n = 1; n <= k; n++) {
        if (net_test_now_ms() - t0 > SWEEP_BUDGET_MS) {
            printf("%s: time budget spent at N = %lu of %lu\n", what, n, k);
            break;
        }
        run_child(mode, n, &r);
        child_verdict(what, n, &r);
        sweep_add(&s, &r.out);
    }
    sweep_print(what, k, &s, net_test_now_ms() - t0);
    /* Allocation counts vary a little between runs (threads), but most
     * children must have had their failure. */
    CHECK(s.injected * 10 >= s.runs * 8);
}

/* ---- scenarios --------------------------------------------------------------------------- */

TEST(alloc_hook_rejects_null)
{
    CHECK_EQ(net_replace_allocator(NULL, realloc, calloc, free), -EINVAL);
    CHECK_EQ(net_replace_allocator(malloc, NULL, calloc, free), -EINVAL);
    CHECK_EQ(net_replace_allocator(malloc, realloc, NULL, free), -EINVAL);
    CHECK_EQ(net_replace_allocator(malloc, realloc, calloc, NULL), -EINVAL);
    CHECK_OK(net_replace_allocator(malloc, realloc, calloc, free));
}

TEST(alloc_scenario_clean)
{
    struct outcome o = clean_run();
    printf("clean run: K = %lu allocations\n", o.allocations);
}

TEST(alloc_fail_each_once)
{
    sweep("fail once", FAIL_ONCE);
}

TEST(alloc_fail_from_nth)
{
    sweep("fail from N on", FAIL_FROM);
}

/* ---- regressions ------------------------------------------------------------------------ */

struct reg_rpc {
    net_loop_thread_t *server_thread, *client_thread;
    net_rpc_server_t *server;
    net_rpc_client_t *client;
    net_loop_t *server_loop;
    atomic_bool stopped, client_closed;
};

static void reg_server_start(void *arg)
{
    struct reg_rpc *r = arg;
    struct net_rpc_server_options opt;
    net_rpc_server_options_init(&opt);
    net_addr_t addr;
    CHECK_OK(net_addr_parse(&addr, "127.0.0.1:0"));
    CHECK_OK(net_rpc_server_new(net_loop_current(), &addr, &opt, &r->server));
    CHECK_OK(net_rpc_server_register(r->server, "echo", rpc_echo, NULL, false));
    CHECK_OK(net_rpc_server_start(r->server));
}

static void reg_client_start(void *arg)
{
    struct reg_rpc *r = arg;
    CHECK_OK(net_rpc_client_new(net_loop_current(), net_rpc_server_addr(r->server), NULL,
                                &r->client));
}

static void reg_client_closed(net_rpc_client_t *client, void *arg)
{
    (void)client;
    atomic_store(&((struct reg_rpc *)arg)->client_closed, true);
}

static void reg_client_close(void *arg)
{
    struct reg_rpc *r = arg;
    CHECK_OK(net_rpc_client_close(r->client, 0, reg_client_closed, r));
}

static void reg_server_stopped(net_rpc_server_t *server, void *arg)
{
    (void)server;
    atomic_store(&((struct reg_rpc *)arg)->stopped, true);
}

static void reg_server_stop(void *arg)
{
    struct reg_rpc *r = arg;
    CHECK_OK(net_rpc_server_close(r->server, 0, reg_server_stopped, r));
}

/* Two loop threads and the RPC server on the first; the test makes the
 * client on the second. */
static void reg_up(struct reg_rpc *r)
{
    CHECK_OK(net_loop_thread_start("regsrv", NULL, NULL, &r->server_thread));
    CHECK_OK(net_loop_thread_start("regcli", NULL, NULL, &r->client_thread));
    r->server_loop = net_loop_thread_loop(r->server_thread);
    net_test_on_loop(r->server_loop, reg_server_start, r);
}

static net_loop_t *reg_client_loop(struct reg_rpc *r)
{
    return net_loop_thread_loop(r->client_thread);
}

static void reg_down(struct reg_rpc *r)
{
    net_test_on_loop(reg_client_loop(r), reg_client_close, r);
    net_test_on_loop(r->server_loop, reg_server_stop, r);
    WAIT_UNTIL(atomic_load(&r->stopped) && atomic_load(&r->client_closed));
    net_loop_thread_join(r->client_thread);
    net_loop_thread_join(r->server_thread);
}

/* The server answers an unknown method from its read, into the session's
 * batch; when the batch could not grow, the error reply was dropped and
 * the call waited for its timeout. Now the connection closes: the call
 * ends DISCONNECTED at once. The failing allocation is the batch's first
 * block (128 bytes: the smallest a buffer takes) on the server's loop, the
 * request being large enough that the input buffer is not that size. */
TEST(alloc_rpc_batch_reply_nomem_reg)
{
    net_test_watchdog_start();
    ta_install(FAIL_MATCH, 0);
    struct reg_rpc r = {0};
    reg_up(&r);
    net_test_on_loop(reg_client_loop(&r), reg_client_start, &r);
    static char body[1000];
    memset(body, 'b', sizeof body);
    uint32_t status;
    void *reply = NULL;
    size_t len;
    match_arm(128, 128, r.server_loop);
    CHECK_OK(net_rpc_call_sync(r.client, "nosuchmethod", body, sizeof body, CALL_TIMEOUT_MS,
                               &status, &reply, &len));
    free(reply);
    CHECK_EQ(atomic_load(&ta.injected), 1);
    if (status != NET_RPC_DISCONNECTED)
        net_test_fail(__FILE__, __LINE__, "the call ended %s, not DISCONNECTED",
                      net_rpc_status_name(status));
    /* The client reconnects; the server still answers. */
    CHECK_OK(net_rpc_call_sync(r.client, "nosuchmethod", body, sizeof body, CALL_TIMEOUT_MS,
                               &status, &reply, &len));
    CHECK_EQ(status, NET_RPC_UNKNOWN_METHOD);
    free(reply);
    reg_down(&r);
}

static void quit_loop(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    net_loop_quit(arg);
}

static void stop_done(net_server_t *server, void *arg)
{
    (void)server;
    *(bool *)arg = true;
    net_loop_quit(net_loop_current());
}

/* The old stop with nothing left to close completed through a functor
 * queued on the base loop; when that push found no memory (the loop's first
 * functor grows the queue: 64 entries of 16 bytes), the stop never
 * completed and net_server_free() kept returning -EBUSY. A close is made of
 * armed tasks embedded in the server: with every allocation on the base
 * loop failing from the close on, a server never started and one started
 * (no I/O thread, drain 0: no timer either) still reach done, and nothing
 * even asked for memory. */
TEST(alloc_server_close_needs_no_memory_reg)
{
    net_test_watchdog_start();
    ta_install(FAIL_MATCH, 0);
    net_loop_t *loop;
    CHECK_OK(net_loop_new(&loop));
    net_addr_t addr;
    CHECK_OK(net_addr_parse(&addr, "127.0.0.1:0"));
    net_timer_id_t guard = net_loop_run_after(loop, NET_TEST_WAIT_MS, quit_loop, loop);
    CHECK_OK(guard);
    for (int started = 0; started < 2; started++) {
        net_server_t *server;
        CHECK_OK(net_server_new(loop, &addr, NULL, NULL, &server));
        if (started)
            CHECK_OK(net_server_start(server));
        bool closed = false;
        net_test_run_for(loop, 1); /* the poller's lazy arrays (poll(2)) */
        match_arm(1, SIZE_MAX, loop);
        CHECK_OK(net_server_close(server, started ? 0 : 20, stop_done, &closed));
        CHECK_OK(net_loop_run(loop));
        atomic_store(&ta.match_armed, false);
        CHECK(closed);
        CHECK_EQ(atomic_load(&ta.injected), 0);
    }
    net_timer_cancel(loop, guard);
    net_loop_free(loop);
}

struct reg_call {
    char body[200];
    size_t len;
    atomic_int fired;
    atomic_uint status;
    bool body_ok;
};

struct reg_wait {
    struct reg_rpc rpc;
    atomic_bool created, release;
};

/* Creates the client and holds its loop until released, so that its
 * connection cannot come up: calls made meanwhile wait in its buffer. */
static void reg_client_start_held(void *arg)
{
    struct reg_wait *w = arg;
    reg_client_start(&w->rpc);
    atomic_store(&w->created, true);
    uint64_t deadline = net_test_now_ms() + NET_TEST_WAIT_MS;
    while (!atomic_load(&w->release) && net_test_now_ms() < deadline)
        net_test_sleep_ms(1);
}

static void reg_call_done(net_rpc_client_t *client, uint32_t status, const void *body,
                          size_t len, void *arg)
{
    (void)client;
    struct reg_call *k = arg;
    k->body_ok = len == k->len && memcmp(body, k->body, len) == 0;
    atomic_store(&k->status, status);
    atomic_fetch_add(&k->fired, 1);
}

static void reg_call(net_rpc_client_t *client, struct reg_call *k, size_t len, char fill)
{
    memset(k->body, fill, len);
    k->len = len;
    CHECK_OK(net_rpc_call(client, "echo", k->body, len, CALL_TIMEOUT_MS, reg_call_done, k));
}

/* Calls made before the connection is up wait in one buffer as whole
 * frames. When a frame's body found no memory there, its header stayed
 * behind: the frames after it were read as its body and their calls
 * waited for their timeouts. The frame is now all or nothing: the call
 * ends INTERNAL and the next one is answered. */
TEST(alloc_rpc_waiting_frame_whole_reg)
{
    net_test_watchdog_start();
    ta_install(FAIL_MATCH, 0);
    struct reg_wait w = {0};
    reg_up(&w.rpc);
    CHECK_OK(net_loop_queue_in_loop(reg_client_loop(&w.rpc), reg_client_start_held, &w));
    WAIT_UNTIL(atomic_load(&w.created));
    /* The first frame's buffer space (24 + 4 + 200 bytes and the
     * buffer's own 8); the call's other allocations (its record, 512
     * bytes; its failure notice, 24) stay outside the range. */
    static struct reg_call k[2];
    match_arm(200, 300, NULL);
    reg_call(w.rpc.client, &k[0], 200, 'a');
    CHECK_EQ(atomic_load(&ta.injected), 1);
    reg_call(w.rpc.client, &k[1], 20, 'b');
    atomic_store(&w.release, true);
    WAIT_UNTIL(atomic_load(&k[0].fired) && atomic_load(&k[1].fired));
    CHECK_EQ(atomic_load(&k[0].status), NET_RPC_INTERNAL);
    if (atomic_load(&k[1].status) != NET_RPC_OK)
        net_test_fail(__FILE__, __LINE__, "the call after the refused one ended %s",
                      net_rpc_status_name(atomic_load(&k[1].status)));
    CHECK(k[1].body_ok);
    reg_down(&w.rpc);
    CHECK_EQ(atomic_load(&k[0].fired) + atomic_load(&k[1].fired), 2);
}
