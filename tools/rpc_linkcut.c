/* rpc_linkcut: keeps pipelined `echo` calls going through a link cut and
 * checks that every call ends exactly once and that the client comes back.
 *
 *   rpc_linkcut HOST:PORT [--depth D] [--timeout MS] [--idle MS]
 *               [--seconds N] [--max-calls M] [--netns]
 *   defaults D=64 MS=2000 idle=1000 N=12 M=1000000
 *
 * Addresses: loopback, or with --netns a private IPv4 one from a network
 * namespace without a default route (tools/netns_guard.h, as rpc_bench).
 *
 * One net_rpc_client (retry and reconnect on, backoff 50..500 ms, connect
 * timeout 1 s, and an idle timeout of `idle` ms on the connection, so that a
 * connection that hears nothing is given up) keeps D calls outstanding, each
 * with a timeout of MS ms, for N seconds; then no call starts and the
 * outstanding ones get MS + 2 s to end. A call that fails is followed by the
 * next one 20 ms later (fail_fast: a disconnected client fails calls with its
 * next failed connect attempt instead of holding them). After
 * M calls (a record each, 32 bytes) no call starts (noted on stderr): a run
 * that gets there before the cut fails, so on a fast link raise M.
 *
 * The caller cuts the link and says when: SIGUSR1 right after the link went
 * down, SIGUSR2 right before it comes back up, so that the time between the
 * marks is all "down". Every call has a record (issued, ended, status, how
 * many outcomes it got) and every OK reply must carry the call's own tag.
 * One line on stdout, `rpc_linkcut calls=.. ok=.. timeout=.. ...` with:
 *   at_cut        calls outstanding at SIGUSR1 (at_cut_ok/_timeout/
 *                 _disconnected: how they ended; last_ok_at_cut_ms: when the
 *                 last of those that succeeded did, from SIGUSR1)
 *   stranded      of those, the ones still outstanding 500 ms after SIGUSR1
 *                 (a reply already past the cut arrives sooner);
 *                 stranded_ok: how many of them succeeded (must be 0)
 *   failed_in_cut calls started before SIGUSR2 that ended TIMEOUT or
 *                 DISCONNECTED (must be > 0: the cut was felt)
 *   ok_while_down calls that succeeded from 500 ms after SIGUSR1 to SIGUSR2
 *                 (must be 0: nothing crosses a cut link)
 *   down_after_ms from SIGUSR1 to the client seeing the connection gone
 *   reconnect_ms, first_ok_after_up_ms  from SIGUSR2 to connected again, to
 *                 the first success of a call started after SIGUSR2
 *   (-1 when it did not happen)
 *   late_replies  replies to calls that had already timed out (the client's
 *                 counter)
 * Exit 0 when: no call is missing or ended twice, every status is OK,
 * TIMEOUT or DISCONNECTED, every reply is right, no call failed before the
 * cut, the three "must" above hold, the client was connected again and at
 * least 100 calls started after SIGUSR2 succeeded. Otherwise 1, with the
 * reasons on stderr; usage errors exit 2. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <net/loop_thread.h>
#include <net/rpc.h>

#include "netns_guard.h"

enum {
    RETRY_PAUSE_MS = 20,
    DRAIN_GRACE_MS = 2000,
    CONNECT_WAIT_MS = 5000,
    MIN_OK_AFTER_UP = 100,
    CUT_GRACE_MS = 500, /* replies already past the cut arrive within this */
};

enum phase { RUN, DRAIN, TEARDOWN };

/* One call. Written on the loop thread only; main reads after the drain. */
struct record {
    uint64_t issued_ns, ended_ns;
    uint32_t status;
    uint32_t outcomes;   /* callbacks received: must end at exactly 1 */
    uint32_t slot;
    bool bad_reply;
};

static struct {
    net_addr_t addr;
    size_t depth;
    size_t max_calls;            /* records; no call starts beyond */
    uint64_t timeout_ms, idle_ms;
    double seconds;
    bool netns;
    net_loop_thread_t *thread;
    net_loop_t *loop;
    net_rpc_client_t *client;
    struct record *rec;
    size_t issued;               /* loop thread only */
    uint64_t not_accepted;       /* loop thread only */
    _Atomic enum phase phase;
    atomic_long outstanding;
    _Atomic uint64_t down_ns, up_ns; /* from the signal handlers */
    uint64_t disconnected_ns, reconnected_ns; /* main's monitor */
    struct net_rpc_client_stats stats; /* after the drain */
} g;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* clock_gettime is async-signal-safe and the atomics are lock-free. */
static void on_mark(int signo)
{
    atomic_store(signo == SIGUSR1 ? &g.down_ns : &g.up_ns, now_ns());
}

/* ---- calls, on the loop thread ------------------------------------------------- */

static void call_done(net_rpc_client_t *c, uint32_t status, const void *body, size_t len,
                      void *arg);

static void issue(uint32_t slot)
{
    if (atomic_load(&g.phase) != RUN || g.issued >= g.max_calls) {
        atomic_fetch_sub(&g.outstanding, 1);
        return;
    }
    uint64_t index = g.issued++;
    struct record *r = &g.rec[index];
    r->slot = slot;
    r->issued_ns = now_ns();
    int rc = net_rpc_call(g.client, "echo", &index, sizeof index, g.timeout_ms, call_done,
                          (void *)(uintptr_t)(index + 1));
    if (rc < 0) { /* no callback will come: the slot retires */
        g.not_accepted++;
        r->outcomes = 1;
        r->ended_ns = now_ns();
        r->status = NET_RPC_CANCELLED;
        atomic_fetch_sub(&g.outstanding, 1);
    }
}

static void issue_later(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    issue((uint32_t)(uintptr_t)arg);
}

static void note_outcome(struct record *r, uint64_t index, uint32_t status, const void *body,
                         size_t len)
{
    r->ended_ns = now_ns();
    r->status = status;
    r->bad_reply = status == NET_RPC_OK && (len != sizeof index || memcmp(body, &index, len));
}

static void call_done(net_rpc_client_t *c, uint32_t status, const void *body, size_t len,
                      void *arg)
{
    (void)c;
    uint64_t index = (uint64_t)(uintptr_t)arg - 1;
    struct record *r = &g.rec[index];
    if (++r->outcomes > 1)
        return; /* a second outcome: counted, and it must not start a call */
    if (atomic_load(&g.phase) == TEARDOWN) {
        r->status = status; /* CANCELLED by free: the call outlived the drain */
        return;
    }
    note_outcome(r, index, status, body, len);
    if (status == NET_RPC_OK) {
        issue(r->slot);
    } else if (net_loop_run_after(g.loop, RETRY_PAUSE_MS, issue_later,
                                  (void *)(uintptr_t)r->slot) < 0) {
        atomic_fetch_sub(&g.outstanding, 1);
    }
}

static void start_calls(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < g.depth; i++)
        issue((uint32_t)i);
}

/* ---- running on the loop -------------------------------------------------------- */

struct task {
    net_loop_fn fn;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool done;
};

static void task_run(void *arg)
{
    struct task *t = arg;
    t->fn(NULL);
    pthread_mutex_lock(&t->mu);
    t->done = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

static int run_on_loop(net_loop_fn fn)
{
    struct task t = {.fn = fn, .mu = PTHREAD_MUTEX_INITIALIZER,
                     .cond = PTHREAD_COND_INITIALIZER};
    int rc = net_loop_run_in_loop(g.loop, task_run, &t);
    pthread_mutex_lock(&t.mu);
    while (rc == 0 && !t.done)
        pthread_cond_wait(&t.cond, &t.mu);
    pthread_mutex_unlock(&t.mu);
    return rc;
}

static void create_client(void *arg)
{
    (void)arg;
    struct net_rpc_client_options opt;
    net_rpc_client_options_init(&opt);
    opt.client.connect_timeout_ms = 1000;
    opt.client.retry_initial_ms = 50;
    opt.client.retry_max_ms = 500; /* back soon after the link is */
    opt.client.conn.idle_timeout_ms = (uint32_t)g.idle_ms;
    opt.fail_fast = true;
    if (net_rpc_client_new(g.loop, &g.addr, &opt, &g.client) < 0)
        g.client = NULL;
}

static atomic_bool client_closed;

static void on_client_closed(net_rpc_client_t *client, void *arg)
{
    (void)client, (void)arg;
    atomic_store(&client_closed, true);
}

/* No drain: late outcomes arrive as CANCELLED, before the close's done,
 * which this waits for (the loop keeps running meanwhile). */
static void close_client(void)
{
    net_rpc_client_close(g.client, 0, on_client_closed, NULL);
    while (!atomic_load(&client_closed))
        sleep_ms(1);
    g.client = NULL;
}

/* ---- main's side: the run and its monitor --------------------------------------------- */

static bool wait_connected(void)
{
    for (int waited = 0; !net_rpc_client_connected(g.client); waited += 5) {
        if (waited >= CONNECT_WAIT_MS)
            return false;
        sleep_ms(5);
    }
    return true;
}

/* Notes when the connection goes after the cut and when it is back after
 * the link. */
static void monitor_once(void)
{
    bool connected = net_rpc_client_connected(g.client);
    uint64_t down = atomic_load(&g.down_ns), up = atomic_load(&g.up_ns);
    if (down && !g.disconnected_ns && !connected)
        g.disconnected_ns = now_ns();
    if (up && !g.reconnected_ns && connected && g.disconnected_ns)
        g.reconnected_ns = now_ns();
}

static void run(void)
{
    atomic_store(&g.outstanding, (long)g.depth);
    net_loop_run_in_loop(g.loop, start_calls, NULL);
    uint64_t end = now_ns() + (uint64_t)(g.seconds * 1e9);
    while (now_ns() < end) {
        monitor_once();
        sleep_ms(2);
    }
    atomic_store(&g.phase, DRAIN);
    uint64_t deadline = now_ns() + (g.timeout_ms + DRAIN_GRACE_MS) * 1000000u;
    while (atomic_load(&g.outstanding) > 0 && now_ns() < deadline) {
        monitor_once();
        sleep_ms(2);
    }
}

/* ---- the verdict ---------------------------------------------------------------------- */

struct tally {
    uint64_t ok, timeout, disconnected, other, missing, duplicates, bad_replies;
    uint64_t failed_before_cut, at_cut, at_cut_ok, at_cut_timeout, at_cut_disconnected;
    uint64_t stranded, stranded_ok, failed_in_cut, ok_while_down;
    uint64_t ok_after_up;
    uint64_t first_ok_after_up_ns, last_ok_at_cut_ns;
};

static void count_status(uint32_t status, uint64_t *ok, uint64_t *timeout, uint64_t *disc,
                         uint64_t *other)
{
    if (status == NET_RPC_OK)
        (*ok)++;
    else if (status == NET_RPC_TIMEOUT)
        (*timeout)++;
    else if (status == NET_RPC_DISCONNECTED)
        (*disc)++;
    else if (other)
        (*other)++;
}

/* The calls the cut caught: outstanding when it came. Those still
 * outstanding CUT_GRACE_MS later (their replies were not already on the
 * way) are stranded and cannot succeed. */
static void tally_at_cut(struct tally *t, const struct record *r, uint64_t down)
{
    if (r->issued_ns >= down || r->ended_ns < down)
        return;
    t->at_cut++;
    count_status(r->status, &t->at_cut_ok, &t->at_cut_timeout, &t->at_cut_disconnected, NULL);
    if (r->status == NET_RPC_OK && r->ended_ns > t->last_ok_at_cut_ns)
        t->last_ok_at_cut_ns = r->ended_ns;
    if (r->ended_ns >= down + CUT_GRACE_MS * 1000000u) {
        t->stranded++;
        t->stranded_ok += r->status == NET_RPC_OK;
    }
}

/* Every ended call (a record with an outcome), against the marks: SIGUSR1
 * after the link went down, SIGUSR2 before it comes back. */
static void tally_cut(struct tally *t, const struct record *r, uint64_t down, uint64_t up)
{
    bool ok = r->status == NET_RPC_OK;
    if (r->ended_ns < down && !ok)
        t->failed_before_cut++;
    tally_at_cut(t, r, down);
    if (!up)
        return;
    if (!ok && r->issued_ns < up)
        t->failed_in_cut++;
    if (ok && r->ended_ns >= down + CUT_GRACE_MS * 1000000u && r->ended_ns < up)
        t->ok_while_down++;
    if (ok && r->issued_ns >= up) {
        t->ok_after_up++;
        if (!t->first_ok_after_up_ns || r->ended_ns < t->first_ok_after_up_ns)
            t->first_ok_after_up_ns = r->ended_ns;
    }
}

static struct tally tally(void)
{
    struct tally t = {0};
    uint64_t down = atomic_load(&g.down_ns), up = atomic_load(&g.up_ns);
    for (size_t i = 0; i < g.issued; i++) {
        const struct record *r = &g.rec[i];
        if (r->outcomes == 0 || r->ended_ns == 0) { /* none, or CANCELLED at teardown */
            t.missing++;
            continue;
        }
        t.duplicates += r->outcomes - 1;
        t.bad_replies += r->bad_reply;
        count_status(r->status, &t.ok, &t.timeout, &t.disconnected, &t.other);
        if (down)
            tally_cut(&t, r, down, up);
    }
    return t;
}

static double ms_since(uint64_t from, uint64_t to)
{
    return from && to ? (double)(to - from) / 1e6 : -1;
}

static bool verdict_line(bool ok, const char *why)
{
    if (!ok)
        fprintf(stderr, "rpc_linkcut: FAIL: %s\n", why);
    return ok;
}

static int verdict(const struct tally *t)
{
    bool cut = atomic_load(&g.down_ns) && atomic_load(&g.up_ns);
    if (g.issued >= g.max_calls) /* fine after the cut; before, the checks fail */
        fprintf(stderr, "rpc_linkcut: note: --max-calls reached, calls stopped early\n");
    bool ok = verdict_line(t->missing == 0, "calls without an outcome");
    ok &= verdict_line(t->duplicates == 0, "calls with more than one outcome");
    ok &= verdict_line(t->other == 0, "statuses other than OK, TIMEOUT, DISCONNECTED (or "
                       "calls refused)");
    ok &= verdict_line(t->bad_replies == 0, "replies that are not the call's echo");
    ok &= verdict_line(cut, "no SIGUSR1/SIGUSR2: the link was not cut");
    ok &= verdict_line(t->failed_before_cut == 0, "calls failed before the cut");
    ok &= verdict_line(t->failed_in_cut > 0, "no call failed while the link was down: was it "
                       "cut?");
    ok &= verdict_line(t->stranded_ok == 0, "calls stranded by the cut succeeded");
    ok &= verdict_line(t->ok_while_down == 0, "calls succeeded while the link was down");
    /* Without an idle timeout nothing tells the client the peer is gone: the
     * connection may live through the cut, and TCP then carries on. */
    ok &= verdict_line(g.reconnected_ns != 0 || (g.idle_ms == 0 && !g.disconnected_ns),
                       "the client did not reconnect");
    ok &= verdict_line(t->ok_after_up >= MIN_OK_AFTER_UP, "too few calls succeeded after "
                       "the link came back");
    return ok ? 0 : 1;
}

static void print_tally(const struct tally *t)
{
    uint64_t down = atomic_load(&g.down_ns), up = atomic_load(&g.up_ns);
    printf("rpc_linkcut calls=%zu ok=%llu timeout=%llu disconnected=%llu other=%llu "
           "missing=%llu duplicates=%llu bad_replies=%llu failed_before_cut=%llu at_cut=%llu "
           "at_cut_ok=%llu at_cut_timeout=%llu at_cut_disconnected=%llu last_ok_at_cut_ms=%.1f "
           "stranded=%llu stranded_ok=%llu failed_in_cut=%llu ok_while_down=%llu "
           "down_after_ms=%.0f "
           "reconnect_ms=%.0f first_ok_after_up_ms=%.0f ok_after_up=%llu late_replies=%llu\n",
           g.issued, (unsigned long long)t->ok, (unsigned long long)t->timeout,
           (unsigned long long)t->disconnected, (unsigned long long)t->other,
           (unsigned long long)t->missing, (unsigned long long)t->duplicates,
           (unsigned long long)t->bad_replies, (unsigned long long)t->failed_before_cut,
           (unsigned long long)t->at_cut, (unsigned long long)t->at_cut_ok,
           (unsigned long long)t->at_cut_timeout, (unsigned long long)t->at_cut_disconnected,
           ms_since(down, t->last_ok_at_cut_ns), (unsigned long long)t->stranded,
           (unsigned long long)t->stranded_ok, (unsigned long long)t->failed_in_cut,
           (unsigned long long)t->ok_while_down, ms_since(down, g.disconnected_ns), ms_since(up, g.reconnected_ns),
           ms_since(up, t->first_ok_after_up_ns), (unsigned long long)t->ok_after_up,
           (unsigned long long)g.stats.late_replies);
}

/* ---- arguments -------------------------------------------------------------------------- */

static bool parse_number(const char *text, double min, double max, double *out)
{
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end || !(v >= min && v <= max))
        return false;
    *out = v;
    return true;
}

static bool parse_option(const char *name, const char *value)
{
    double v;
    if (strcmp(name, "--depth") == 0 && parse_number(value, 1, 4096, &v))
        g.depth = (size_t)v;
    else if (strcmp(name, "--timeout") == 0 && parse_number(value, 1, 600000, &v))
        g.timeout_ms = (uint64_t)v;
    else if (strcmp(name, "--idle") == 0 && parse_number(value, 0, 600000, &v))
        g.idle_ms = (uint64_t)v;
    else if (strcmp(name, "--seconds") == 0 && parse_number(value, 0.1, 3600, &v))
        g.seconds = v;
    else if (strcmp(name, "--max-calls") == 0 && parse_number(value, 1, 1e9, &v))
        g.max_calls = (size_t)v;
    else
        return false;
    return true;
}

static int usage(void)
{
    fprintf(stderr, "usage: rpc_linkcut HOST:PORT [--depth D] [--timeout MS] [--idle MS]\n"
                    "                   [--seconds N] [--max-calls M] [--netns]\n");
    return 2;
}

static int parse_args(int argc, char **argv)
{
    const char *target = NULL;
    g.depth = 64, g.timeout_ms = 2000, g.idle_ms = 1000, g.seconds = 12, g.max_calls = 1000000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--netns") == 0)
            g.netns = true;
        else if (strncmp(argv[i], "--", 2) == 0 && i + 1 < argc && parse_option(argv[i], argv[i + 1]))
            i++;
        else if (!target && argv[i][0] != '-')
            target = argv[i];
        else
            return usage();
    }
    if (!target || net_addr_parse(&g.addr, target) < 0)
        return usage();
    const char *why;
    if (!netns_address_allowed(&g.addr, g.netns, &why)) {
        fprintf(stderr, "rpc_linkcut: %s: %s\n", target, why);
        return 2;
    }
    return 0;
}

/* ---- main --------------------------------------------------------------------------------- */

static int setup(void)
{
    struct sigaction sa = {.sa_handler = on_mark, .sa_flags = SA_RESTART};
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    if (!(g.rec = calloc(g.max_calls, sizeof *g.rec)))
        return -ENOMEM;
    int rc = net_loop_thread_start("linkcut", NULL, NULL, &g.thread);
    if (rc < 0)
        return rc;
    g.loop = net_loop_thread_loop(g.thread);
    if ((rc = run_on_loop(create_client)) < 0)
        return rc;
    return g.client ? 0 : -ENOMEM;
}

int main(int argc, char **argv)
{
    int rc = parse_args(argc, argv), exit_code = 1;
    if (rc)
        return rc;
    if ((rc = setup()) < 0) {
        fprintf(stderr, "rpc_linkcut: setup: %s\n", net_strerror(rc));
    } else if (!wait_connected()) {
        fprintf(stderr, "rpc_linkcut: not connected after %d ms\n", CONNECT_WAIT_MS);
    } else {
        printf("rpc_linkcut: connected, %zu calls outstanding\n", g.depth);
        fflush(stdout);
        run();
        net_rpc_client_stats(g.client, &g.stats);
        atomic_store(&g.phase, TEARDOWN);
        close_client();
        struct tally t = tally();
        print_tally(&t);
        exit_code = verdict(&t);
    }
    if (g.client)
        close_client();
    if (g.thread)
        net_loop_thread_join(g.thread);
    free(g.rec);
    return exit_code;
}
