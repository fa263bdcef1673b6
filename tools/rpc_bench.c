/* rpc_bench: calls/s and latency of an echo method, over NRPC/1 or baidu_std;
 * installed as netloop-rpc-bench. What it measures, its options, its output
 * line and exit codes are in its manual (`--help`, help_text below); the
 * histogram and sampling constants are the enum below. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <net/loop_thread.h>
#include <net/rpc.h>

#include "echo_pb.h"
#include "netns_guard.h"

enum {
    CALL_TIMEOUT_MS = 5000,
    DRAIN_MS = CALL_TIMEOUT_MS + 1000, /* every outstanding call ends before */
    CONNECT_WAIT_MS = 5000,
    SAMPLE_MASK = 63,   /* one reply in 64 is compared byte for byte */
    TAG_LEN = 8,
    MAX_REPORTS = 10,   /* errors described on stderr */
    SUB_BITS = 5,       /* histogram: 2^5 sub-buckets per power of two */
    SUB = 1 << SUB_BITS,
    HIST_BUCKETS = (64 - SUB_BITS + 1) * SUB,
};

enum phase { WARMUP, MEASURE, DRAIN, TEARDOWN };

/* Latencies in ns. Values below 2*SUB have a bucket each; above, a power of
 * two [2^m, 2^(m+1)) is split into SUB equal buckets. */
struct hist {
    uint64_t n[HIST_BUCKETS];
};

/* What one thread measures: a loop thread (async) or a caller (sync). Only
 * its thread writes it; main reads it after joining. */
struct worker {
    int index;
    pthread_t tid;               /* sync callers only */
    unsigned char *scratch;      /* the next request body */
    unsigned char *wire;         /* --echo-request: scratch as an EchoRequest */
    uint64_t calls, errors;
    struct hist hist;
};

struct conn;

/* One outstanding async call, reused for the next one when it completes. */
struct slot {
    struct conn *conn;
    uint64_t tag;
    uint64_t submit_ns;
};

struct conn {
    net_rpc_client_t *client;
    atomic_bool closed; /* its close's done ran */
    net_loop_t *loop;
    struct worker *worker;       /* async: its loop thread's */
    struct slot *slots;
};

static struct {
    net_addr_t addr;
    size_t conns, depth, threads, size, att_size;
    enum net_rpc_protocol protocol;
    const char *method;
    bool echo_request;           /* bodies as brpc's EchoRequest/EchoResponse */
    unsigned char *att;          /* the attachment sent with every call */
    double seconds, warmup;
    bool sync;
    bool netns;                  /* private addresses from a private netns */
    unsigned char *pattern;      /* the body's bytes after the tag */
    size_t nloops, nworkers;
    net_loop_thread_t **loops;
    struct worker **workers;
    struct conn *conn;
    _Atomic enum phase phase;
    atomic_long outstanding;     /* async calls started and not ended */
    atomic_int reports;
} g;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t deadline_ns)
{
    struct timespec ts = {(time_t)(deadline_ns / 1000000000u), (long)(deadline_ns % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* ---- the histogram ------------------------------------------------------------------ */

static void hist_add(struct hist *h, uint64_t v)
{
    if (v < 2 * SUB) {
        h->n[v]++;
        return;
    }
    int shift = 63 - __builtin_clzll(v) - SUB_BITS;
    h->n[(size_t)(shift + 1) * SUB + (size_t)((v >> shift) - SUB)]++;
}

/* The middle of bucket i. */
static double hist_value(size_t i)
{
    if (i < 2 * SUB)
        return (double)i;
    int shift = (int)(i / SUB) - 1;
    double low = (double)((i % SUB + SUB) << shift);
    return low + (double)(1ull << shift) / 2;
}

static uint64_t hist_total(const struct hist *h)
{
    uint64_t total = 0;
    for (size_t i = 0; i < HIST_BUCKETS; i++)
        total += h->n[i];
    return total;
}

/* The q-quantile in µs (nearest rank), 0 for an empty histogram. */
static double hist_quantile_us(const struct hist *h, double q)
{
    uint64_t total = hist_total(h), seen = 0;
    if (total == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)total);
    if ((double)rank < q * (double)total || rank == 0)
        rank++; /* nearest rank: ceil(q * total), at least 1 */
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        if ((seen += h->n[i]) >= rank)
            return hist_value(i) / 1000;
    }
    return 0;
}

/* ---- request bodies and checking replies --------------------------------------------- */

static size_t tag_len(void)
{
    return g.size < TAG_LEN ? g.size : TAG_LEN;
}

/* The next request's bytes in w (the tag, then the pattern; with
 * --echo-request wrapped as an EchoRequest); returns their length. */
static size_t make_body(struct worker *w, uint64_t tag, const unsigned char **out)
{
    memcpy(w->scratch, &tag, tag_len());
    *out = w->scratch;
    if (!g.echo_request)
        return g.size;
    *out = w->wire;
    return echo_pb_wrap(w->wire, w->scratch, g.size);
}

static void report(const char *mode, uint64_t tag, const char *what)
{
    int n = atomic_fetch_add(&g.reports, 1);
    if (n < MAX_REPORTS)
        fprintf(stderr, "rpc_bench: %s call %#llx: %s\n", mode, (unsigned long long)tag, what);
    else if (n == MAX_REPORTS)
        fprintf(stderr, "rpc_bench: more errors (not shown)\n");
}

/* True when the reply is the echo of the call tagged `tag`; otherwise counts
 * an error and describes it. */
/* The echoed attachment (async only: a sync call has none): its length
 * always, its bytes with the sampled calls; NULL when right. */
static const char *attachment_error(net_rpc_client_t *c, uint64_t tag)
{
    size_t alen = 0;
    const void *att = c ? net_rpc_response_attachment(c, &alen) : NULL;
    if (alen != g.att_size)
        return "attachment of another length";
    if ((tag & SAMPLE_MASK) == 0 && alen && memcmp(att, g.att, alen) != 0)
        return "attachment differs";
    return NULL;
}

/* With --echo-request the reply's message is what must echo the body. */
static bool unwrap_reply(const void **body, size_t *len)
{
    const uint8_t *msg;
    if (!g.echo_request)
        return true;
    if (!echo_pb_unwrap(*body, *len, &msg, len))
        return false;
    *body = msg;
    return true;
}

/* What is wrong with an OK reply's body; NULL when it echoes the call. */
static const char *body_error(uint64_t tag, const unsigned char *p, size_t len, char *text,
                              size_t cap)
{
    if (len != g.size) {
        snprintf(text, cap, "reply of %zu bytes, sent %zu", len, g.size);
        return text;
    }
    if (memcmp(p, &tag, tag_len()) != 0)
        return "the reply of another call";
    if ((tag & SAMPLE_MASK) == 0 && g.size > TAG_LEN &&
        memcmp(p + TAG_LEN, g.pattern + TAG_LEN, g.size - TAG_LEN) != 0)
        return "reply body differs";
    return NULL;
}

/* True when the reply is the echo of the call tagged `tag` (c: the client,
 * for the attachment; NULL in sync mode); otherwise counts an error and
 * describes it. */
static bool check_reply(struct worker *w, net_rpc_client_t *c, uint64_t tag, uint32_t status,
                        const void *body, size_t len)
{
    const char *what;
    char text[64];
    if (status != NET_RPC_OK)
        what = net_rpc_status_name(status);
    else if (!unwrap_reply(&body, &len))
        what = "the reply is no EchoResponse";
    else if (!(what = body_error(tag, body, len, text, sizeof text)))
        what = attachment_error(c, tag);
    if (!what)
        return true;
    w->errors++;
    report(g.sync ? "sync" : "async", tag, what);
    return false;
}

static void record(struct worker *w, uint64_t submit_ns, uint64_t done_ns)
{
    if (atomic_load_explicit(&g.phase, memory_order_relaxed) != MEASURE)
        return;
    w->calls++;
    hist_add(&w->hist, done_ns - submit_ns);
}

/* ---- async mode: callbacks on the loop threads ------------------------------------------ */

static void call_done(net_rpc_client_t *c, uint32_t status, const void *body, size_t len,
                      void *arg);

static void issue(struct slot *s)
{
    struct worker *w = s->conn->worker;
    s->tag++;
    const unsigned char *body;
    size_t len = make_body(w, s->tag, &body);
    s->submit_ns = now_ns();
    int rc = net_rpc_call_with_attachment(s->conn->client, g.method, body, len, g.att,
                                          g.att_size, CALL_TIMEOUT_MS, call_done, s);
    if (rc < 0) { /* not accepted: no callback, the slot retires */
        w->errors++;
        report("async", s->tag, net_strerror(rc));
        atomic_fetch_sub(&g.outstanding, 1);
    }
}

static void call_done(net_rpc_client_t *c, uint32_t status, const void *body, size_t len,
                      void *arg)
{
    uint64_t done = now_ns();
    struct slot *s = arg;
    enum phase phase = atomic_load_explicit(&g.phase, memory_order_relaxed);
    if (phase == TEARDOWN) { /* CANCELLED by free, after the drain deadline */
        atomic_fetch_sub(&g.outstanding, 1);
        return;
    }
    if (check_reply(s->conn->worker, c, s->tag, status, body, len))
        record(s->conn->worker, s->submit_ns, done);
    if (phase < DRAIN)
        issue(s);
    else
        atomic_fetch_sub(&g.outstanding, 1);
}

/* Runs on the connection's loop: its D calls start there. */
static void kick(void *arg)
{
    struct conn *k = arg;
    for (size_t i = 0; i < g.depth; i++)
        issue(&k->slots[i]);
}

static int start_async(void)
{
    atomic_store(&g.outstanding, (long)(g.conns * g.depth));
    for (size_t i = 0; i < g.conns; i++) {
        int rc = net_loop_queue_in_loop(g.conn[i].loop, kick, &g.conn[i]);
        if (rc < 0) {
            atomic_fetch_sub(&g.outstanding, (long)((g.conns - i) * g.depth));
            return rc;
        }
    }
    return 0;
}

/* True when every call ended before the deadline. */
static bool drain_async(void)
{
    uint64_t deadline = now_ns() + (uint64_t)DRAIN_MS * 1000000u;
    while (atomic_load(&g.outstanding) > 0 && now_ns() < deadline)
        sleep_until(now_ns() + 1000000u);
    return atomic_load(&g.outstanding) <= 0;
}

/* ---- sync mode: plain threads ------------------------------------------------------------ */

/* One blocking call; false when the thread should stop (the client refuses). */
static bool sync_call(struct worker *w, net_rpc_client_t *client, uint64_t tag)
{
    uint32_t status;
    void *body;
    size_t len;
    const unsigned char *req;
    size_t req_len = make_body(w, tag, &req);
    uint64_t t0 = now_ns();
    int rc = net_rpc_call_sync(client, g.method, req, req_len, CALL_TIMEOUT_MS, &status, &body,
                               &len);
    uint64_t t1 = now_ns();
    if (rc < 0) {
        w->errors++;
        report("sync", tag, net_strerror(rc));
        return false;
    }
    if (check_reply(w, NULL, tag, status, body, len))
        record(w, t0, t1);
    free(body);
    return true;
}

static void *sync_main(void *arg)
{
    struct worker *w = arg;
    uint64_t tag = (uint64_t)(w->index + 1) << 32;
    for (size_t next = (size_t)w->index;
         atomic_load_explicit(&g.phase, memory_order_relaxed) < DRAIN; next++) {
        if (!sync_call(w, g.conn[next % g.conns].client, ++tag))
            break;
    }
    return NULL;
}

static int start_sync(void)
{
    for (size_t i = 0; i < g.nworkers; i++) {
        int rc = pthread_create(&g.workers[i]->tid, NULL, sync_main, g.workers[i]);
        if (rc != 0) {
            atomic_store(&g.phase, DRAIN);
            for (size_t j = 0; j < i; j++)
                pthread_join(g.workers[j]->tid, NULL);
            return -rc;
        }
    }
    return 0;
}

/* Each caller is in at most one call, which ends within its timeout. */
static void drain_sync(void)
{
    for (size_t i = 0; i < g.nworkers; i++)
        pthread_join(g.workers[i]->tid, NULL);
}

/* ---- running a function on a loop and waiting for it ----------------------------------------- */

struct task {
    net_loop_fn fn;
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool done;
};

static void task_run(void *arg)
{
    struct task *t = arg;
    t->fn(t->arg);
    pthread_mutex_lock(&t->mu);
    t->done = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

/* The loop is idle or busy with our own short callbacks: no deadline. */
static int run_on_loop(net_loop_t *loop, net_loop_fn fn, void *arg)
{
    struct task t = {.fn = fn, .arg = arg, .mu = PTHREAD_MUTEX_INITIALIZER,
                     .cond = PTHREAD_COND_INITIALIZER};
    int rc = net_loop_run_in_loop(loop, task_run, &t);
    pthread_mutex_lock(&t.mu);
    while (rc == 0 && !t.done)
        pthread_cond_wait(&t.cond, &t.mu);
    pthread_mutex_unlock(&t.mu);
    pthread_mutex_destroy(&t.mu);
    pthread_cond_destroy(&t.cond);
    return rc;
}

/* ---- setup and teardown -------------------------------------------------------------------- */

static void create_client(void *arg)
{
    struct conn *k = arg;
    struct net_rpc_client_options opt;
    net_rpc_client_options_init(&opt);
    opt.client.connect_timeout_ms = 2000;
    opt.protocol = g.protocol;
    if (net_rpc_client_new(k->loop, &g.addr, &opt, &k->client) < 0)
        k->client = NULL;
}

static void client_closed(net_rpc_client_t *client, void *arg)
{
    (void)client;
    atomic_store(&((struct conn *)arg)->closed, true);
}

/* Closes from this thread (close is thread-safe) and waits for its done:
 * until then a call's callback may still use the slots. */
static void close_client(struct conn *k)
{
    net_rpc_client_close(k->client, 0, client_closed, k);
    struct timespec ms = {0, 1000000};
    while (!atomic_load(&k->closed))
        nanosleep(&ms, NULL);
    k->client = NULL;
}

static struct worker *worker_new(int index)
{
    struct worker *w = calloc(1, sizeof *w);
    if (!w || !(w->scratch = malloc(g.size ? g.size : 1)) ||
        !(w->wire = malloc(ECHO_PB_ROOM(g.size)))) {
        if (w)
            free(w->scratch);
        free(w);
        return NULL;
    }
    w->index = index;
    if (g.size)
        memcpy(w->scratch, g.pattern, g.size);
    return w;
}

static int setup_conn(struct conn *k, size_t i)
{
    k->loop = net_loop_thread_loop(g.loops[i % g.nloops]);
    k->worker = g.sync ? NULL : g.workers[i % g.nloops];
    if (!(k->slots = calloc(g.depth, sizeof *k->slots)))
        return -ENOMEM;
    for (size_t j = 0; j < g.depth; j++)
        k->slots[j] = (struct slot){.conn = k, .tag = (uint64_t)(i * g.depth + j + 1) << 32};
    int rc = run_on_loop(k->loop, create_client, k);
    return rc < 0 ? rc : k->client ? 0 : -ENOMEM;
}

static int setup(void)
{
    g.nloops = g.threads < g.conns ? g.threads : g.conns;
    g.nworkers = g.sync ? g.threads : g.nloops;
    g.loops = calloc(g.nloops, sizeof *g.loops);
    g.workers = calloc(g.nworkers, sizeof *g.workers);
    g.conn = calloc(g.conns, sizeof *g.conn);
    g.pattern = malloc(g.size ? g.size : 1);
    g.att = g.att_size ? malloc(g.att_size) : NULL;
    if (!g.loops || !g.workers || !g.conn || !g.pattern || (g.att_size && !g.att))
        return -ENOMEM;
    /* Printable with --echo-request: brpc's message is a protobuf string. */
    for (size_t i = 0; i < g.size; i++)
        g.pattern[i] = g.echo_request ? (unsigned char)('a' + i % 26) : (unsigned char)(i * 31 + 7);
    for (size_t i = 0; i < g.att_size; i++)
        g.att[i] = (unsigned char)(i * 13 + 5);
    for (size_t i = 0; i < g.nworkers; i++)
        if (!(g.workers[i] = worker_new((int)i)))
            return -ENOMEM;
    int rc;
    for (size_t i = 0; i < g.nloops; i++)
        if ((rc = net_loop_thread_start("rpc-bench", NULL, NULL, &g.loops[i])) < 0)
            return rc;
    for (size_t i = 0; i < g.conns; i++)
        if ((rc = setup_conn(&g.conn[i], i)) < 0)
            return rc;
    return 0;
}

/* Frees whatever setup() made, in any state. */
static void teardown(void)
{
    atomic_store(&g.phase, TEARDOWN);
    for (size_t i = 0; g.conn && i < g.conns; i++) {
        if (g.conn[i].client)
            close_client(&g.conn[i]);
        free(g.conn[i].slots);
    }
    for (size_t i = 0; g.loops && i < g.nloops; i++)
        net_loop_thread_join(g.loops[i]);
    for (size_t i = 0; g.workers && i < g.nworkers; i++) {
        if (g.workers[i]) {
            free(g.workers[i]->scratch);
            free(g.workers[i]->wire);
        }
        free(g.workers[i]);
    }
    free(g.conn);
    free(g.loops);
    free(g.workers);
    free(g.pattern);
    free(g.att);
}

static bool wait_connected(void)
{
    uint64_t deadline = now_ns() + (uint64_t)CONNECT_WAIT_MS * 1000000u;
    for (size_t i = 0; i < g.conns; i++) {
        while (!net_rpc_client_connected(g.conn[i].client)) {
            if (now_ns() >= deadline)
                return false;
            sleep_until(now_ns() + 5000000u);
        }
    }
    return true;
}

/* The client loops' busy polling (NETLOOP_BUSY_POLL_US), when it is on. */
static void print_busy_poll_counters(void)
{
    struct net_loop_busy_poll_stats sum = {0}, s;
    for (size_t i = 0; i < g.nloops; i++) {
        net_loop_t *loop = net_loop_thread_loop(g.loops[i]);
        if (net_loop_busy_poll(loop) == 0)
            return;
        net_loop_busy_poll_stats(loop, &s);
        sum.spins += s.spins;
        sum.hits += s.hits;
        sum.misses += s.misses;
        sum.backoffs += s.backoffs;
    }
    fprintf(stderr, "rpc_bench busy poll: spins=%llu hits=%llu misses=%llu backoffs=%llu\n",
            (unsigned long long)sum.spins, (unsigned long long)sum.hits,
            (unsigned long long)sum.misses, (unsigned long long)sum.backoffs);
}

static void print_client_counters(void)
{
    struct net_rpc_client_stats sum = {0}, s;
    for (size_t i = 0; i < g.conns; i++) {
        net_rpc_client_stats(g.conn[i].client, &s);
        sum.calls += s.calls;
        sum.completed += s.completed;
        sum.late_replies += s.late_replies;
        sum.timeouts += s.timeouts;
        sum.disconnected += s.disconnected;
        sum.outstanding += s.outstanding;
    }
    fprintf(stderr,
            "rpc_bench clients: calls=%llu completed=%llu late_replies=%llu timeouts=%llu "
            "disconnected=%llu outstanding=%zu\n",
            (unsigned long long)sum.calls, (unsigned long long)sum.completed,
            (unsigned long long)sum.late_replies, (unsigned long long)sum.timeouts,
            (unsigned long long)sum.disconnected, sum.outstanding);
    print_busy_poll_counters();
}

/* ---- the run ------------------------------------------------------------------------------- */

/* Warm-up, measurement, drain. Returns the measured seconds; *stuck gets
 * the calls still outstanding after the drain deadline. */
static double run(long *stuck)
{
    uint64_t start = now_ns();
    int rc = g.sync ? start_sync() : start_async();
    if (rc < 0) {
        fprintf(stderr, "rpc_bench: cannot start: %s\n", net_strerror(rc));
        *stuck = 1;
        return 0;
    }
    sleep_until(start + (uint64_t)(g.warmup * 1e9));
    uint64_t t0 = now_ns();
    atomic_store(&g.phase, MEASURE);
    sleep_until(t0 + (uint64_t)(g.seconds * 1e9));
    atomic_store(&g.phase, DRAIN);
    uint64_t t1 = now_ns();
    if (g.sync)
        drain_sync();
    else if (!drain_async())
        fprintf(stderr, "rpc_bench: %ld calls still outstanding after %d ms\n",
                atomic_load(&g.outstanding), DRAIN_MS);
    *stuck = g.sync ? 0 : atomic_load(&g.outstanding);
    return (double)(t1 - t0) / 1e9;
}

static int summarize(double measured, long stuck)
{
    struct hist *all = calloc(1, sizeof *all);
    if (!all)
        return 1;
    uint64_t calls = 0, errors = (uint64_t)(stuck > 0 ? stuck : 0);
    for (size_t i = 0; i < g.nworkers; i++) {
        calls += g.workers[i]->calls;
        errors += g.workers[i]->errors;
        for (size_t b = 0; b < HIST_BUCKETS; b++)
            all->n[b] += g.workers[i]->hist.n[b];
    }
    printf("rpc_bench conns=%zu depth=%zu threads=%zu size=%zu seconds=%g mode=%s calls=%llu "
           "calls/s=%.0f p50=%.1fus p99=%.1fus p999=%.1fus errors=%llu\n",
           g.conns, g.sync ? g.threads : g.depth, g.threads, g.size, g.seconds,
           g.sync ? "sync" : "async", (unsigned long long)calls,
           measured > 0 ? (double)calls / measured : 0.0, hist_quantile_us(all, 0.50),
           hist_quantile_us(all, 0.99), hist_quantile_us(all, 0.999),
           (unsigned long long)errors);
    free(all);
    return errors == 0 && calls > 0 ? 0 : 1;
}

/* ---- arguments ------------------------------------------------------------------------------ */

static bool parse_size(const char *text, size_t min, size_t max, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || v < min || v > max)
        return false;
    *out = (size_t)v;
    return true;
}

static bool parse_seconds(const char *text, double min, double *out)
{
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end || !(v >= min && v <= 86400))
        return false;
    *out = v;
    return true;
}

/* In parts: ISO C bounds one string literal to 4095 bytes. */
static const char *const help_text[] = {
    "NAME\n"
    "    netloop-rpc-bench - calls/s and latency of an echo method (NRPC/1 or baidu_std)\n"
    "\n"
    "SYNOPSIS\n"
    "    netloop-rpc-bench HOST:PORT [--connections C] [--depth D] [--threads T]\n"
    "                      [--size S] [--seconds N] [--warmup W] [--sync] [--netns]\n"
    "                      [--protocol nrpc|baidu_std] [--method M] [--echo-request]\n"
    "                      [--attachment-size A]\n"
    "    netloop-rpc-bench --help\n"
    "\n"
    "DESCRIPTION\n"
    "    Calls the method `echo` (see --method) of the server at HOST:PORT (which must send\n"
    "    the request body back, as examples/rpc_server does) as fast as it\n"
    "    answers, and prints one line:\n"
    "        rpc_bench conns=C depth=D threads=T size=S seconds=N mode=async|sync\n"
    "            calls=M calls/s=X p50=..us p99=..us p999=..us errors=E\n"
    "    (depth is T in sync mode); the clients' counters (calls, completed,\n"
    "    late replies, timeouts, disconnects) go to standard error.\n"
    "    Async (default): C clients spread over min(T, C) loop threads, each\n"
    "    keeping D calls outstanding; every completion starts the next call\n"
    "    from its callback. Sync (--sync): T threads loop on\n"
    "    net_rpc_call_sync() over the C clients round robin, so T calls are in\n"
    "    flight whatever D says.\n"
    "    Every call sends S bytes, an 8-byte tag then a fixed pattern; every\n"
    "    reply must be OK, S bytes long and carry its own tag, and one in 64 is\n"
    "    compared byte for byte. Latency is submission to completion. After W\n"
    "    seconds of warm-up the calls completing in the next N seconds are\n"
    "    counted; then no call starts and the outstanding ones get 6 s.\n"
    "    Only 127.0.0.0/8 and [::1] are accepted, so the load stays on\n"
    "    loopback (see --netns).\n"
    "    In a build tree the same program is build/tools/rpc_bench.\n"
    "\n"
    "    Against brpc (its echo_server or bench_echo_server, service\n"
    "    example.EchoService): --protocol baidu_std --echo-request. The S bytes\n"
    "    then travel as the message of an EchoRequest (brpc refuses a body\n"
    "    that is no valid protobuf), the method defaults to\n"
    "    example.EchoService.Echo, and every reply must be an EchoResponse\n"
    "    whose message passes the checks above.\n"
    "\n",
    "OPTIONS\n"
    "    --connections C  clients (connections), 1..10000; default 1\n"
    "    --depth D        calls outstanding per client (async), 1..65536;\n"
    "                     default 128. D may exceed the server's limit of\n"
    "                     unanswered requests per connection: the surplus\n"
    "                     waits in TCP.\n"
    "    --threads T      loop threads (async) or calling threads (sync),\n"
    "                     1..1024; default 1\n"
    "    --size S         request body bytes, 0..16777216; default 64 (below 8\n"
    "                     the tag is cut short)\n"
    "    --seconds N      measured seconds, 0.001..86400; default 5\n"
    "    --warmup W       warm-up seconds, 0..86400; default 0.5\n"
    "    --sync           blocking calls from T threads instead of callbacks\n"
    "    --netns          also accept a private IPv4 address (10/8, 172.16/12,\n"
    "                     192.168/16) when run in a network namespace that is\n"
    "                     not PID 1's and has no default route\n"
    "    --protocol P     nrpc (NRPC/1, the default) or baidu_std (brpc's)\n"
    "    --method M       the method called: default echo, with baidu_std\n"
    "                     example.EchoService.Echo (\"Service.Method\")\n"
    "    --echo-request   wrap each body as brpc's EchoRequest { message = 1 }\n"
    "                     and unwrap each reply as its EchoResponse (the pattern\n"
    "                     is then lower-case letters); with nrpc too, for\n"
    "                     netloop's example.EchoService.Echo over NRPC/1\n"
    "    --attachment-size A\n"
    "                     baidu_std, async only: send A bytes (0..16777216,\n"
    "                     default 0) of attachment with every call; every reply\n"
    "                     must carry an attachment of A bytes (one in 64\n"
    "                     compared byte for byte), as brpc's echo servers send\n"
    "    -h, --help       print this manual on standard output and exit 0\n"
    "\n",
    "EXIT STATUS\n"
    "    0   Every call succeeded and at least one completed.\n"
    "    1   A call failed or a reply differed (the first few are described on\n"
    "        standard error), no call completed, calls were still outstanding\n"
    "        after the drain, or the clients could not be set up or were not\n"
    "        connected within 5 s.\n"
    "    2   Usage error: an unknown option, a value malformed or out of range,\n"
    "        a bad or non-loopback address, --attachment-size without\n"
    "        --protocol baidu_std, --attachment-size with --sync, a\n"
    "        baidu_std method that is not Service.Method.\n"
    "\n"
    "EXAMPLES\n"
    "    With build/examples/rpc_server on 127.0.0.1:2008:\n"
    "        netloop-rpc-bench 127.0.0.1:2008 --connections 1 --depth 128 --seconds 3\n"
    "        netloop-rpc-bench 127.0.0.1:2008 --threads 16 --sync --size 4096\n"
    "    With brpc's bench_echo_server -port=8002:\n"
    "        netloop-rpc-bench 127.0.0.1:8002 --protocol baidu_std --echo-request \\\n"
    "            --depth 64 --attachment-size 1024 --seconds 3\n",
    NULL,
};

static int usage(void)
{
    fprintf(stderr, "usage: rpc_bench HOST:PORT [--connections C] [--depth D] [--threads T]\n"
                    "                 [--size S] [--seconds N] [--warmup W] [--sync] [--netns]\n"
                    "                 [--protocol nrpc|baidu_std] [--method M] [--echo-request]\n"
                    "                 [--attachment-size A]\n"
                    "  defaults C=1 D=128 T=1 S=64 N=5 W=0.5; loopback addresses only\n"
                    "  (--netns: private IPv4, from a namespace without a default route)\n"
                    "  --help: the manual\n");
    return 2;
}

static bool parse_protocol(const char *value)
{
    if (strcmp(value, "nrpc") == 0)
        g.protocol = NET_RPC_NRPC;
    else if (strcmp(value, "baidu_std") == 0)
        g.protocol = NET_RPC_BAIDU_STD;
    else
        return false;
    return true;
}

/* The protocol's rules on the options; false (after a line) when broken. */
static bool options_fit(void)
{
    const char *why = NULL, *dot;
    if (!g.method)
        g.method = g.protocol == NET_RPC_BAIDU_STD ? "example.EchoService.Echo" : "echo";
    if (g.protocol != NET_RPC_BAIDU_STD && g.att_size)
        why = "--attachment-size needs --protocol baidu_std";
    else if (g.sync && g.att_size)
        why = "--attachment-size needs async mode (a sync call has no attachment)";
    else if (g.protocol == NET_RPC_BAIDU_STD &&
             (!(dot = strrchr(g.method, '.')) || dot == g.method || !dot[1]))
        why = "a baidu_std method is Service.Method";
    if (why)
        fprintf(stderr, "rpc_bench: %s\n", why);
    return !why;
}

static bool parse_option(const char *name, const char *value)
{
    if (strcmp(name, "--connections") == 0)
        return parse_size(value, 1, 10000, &g.conns);
    if (strcmp(name, "--depth") == 0)
        return parse_size(value, 1, 65536, &g.depth);
    if (strcmp(name, "--threads") == 0)
        return parse_size(value, 1, 1024, &g.threads);
    if (strcmp(name, "--size") == 0)
        return parse_size(value, 0, 16u << 20, &g.size);
    if (strcmp(name, "--seconds") == 0)
        return parse_seconds(value, 0.001, &g.seconds);
    if (strcmp(name, "--warmup") == 0)
        return parse_seconds(value, 0, &g.warmup);
    if (strcmp(name, "--attachment-size") == 0)
        return parse_size(value, 0, 16u << 20, &g.att_size);
    if (strcmp(name, "--method") == 0)
        return (g.method = value)[0] != '\0' && strlen(value) <= 255;
    if (strcmp(name, "--protocol") == 0)
        return parse_protocol(value);
    return false;
}

static int parse_args(int argc, char **argv)
{
    const char *target = NULL;
    g.conns = 1, g.depth = 128, g.threads = 1, g.size = 64, g.seconds = 5, g.warmup = 0.5;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--sync") == 0) {
            g.sync = true;
        } else if (strcmp(argv[i], "--netns") == 0) {
            g.netns = true;
        } else if (strcmp(argv[i], "--echo-request") == 0) {
            g.echo_request = true;
        } else if (strncmp(argv[i], "--", 2) == 0 && i + 1 < argc) {
            if (!parse_option(argv[i], argv[i + 1]))
                return usage();
            i++;
        } else if (!target && argv[i][0] != '-') {
            target = argv[i];
        } else {
            return usage();
        }
    }
    if (!target || !options_fit())
        return usage();
    if (net_addr_parse(&g.addr, target) < 0) {
        fprintf(stderr, "rpc_bench: bad address %s\n", target);
        return 2;
    }
    const char *why;
    if (!netns_address_allowed(&g.addr, g.netns, &why)) {
        fprintf(stderr, "rpc_bench: %s: %s\n", target, why);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        for (int i = 0; help_text[i]; i++)
            fputs(help_text[i], stdout);
        return 0;
    }
    int rc = parse_args(argc, argv);
    if (rc)
        return rc;
    int exit_code = 1;
    if ((rc = setup()) < 0) {
        fprintf(stderr, "rpc_bench: setup: %s\n", net_strerror(rc));
    } else if (!wait_connected()) {
        char text[NET_ADDR_STRLEN];
        net_addr_format(&g.addr, text, sizeof text);
        fprintf(stderr, "rpc_bench: %s: not connected after %d ms\n", text, CONNECT_WAIT_MS);
    } else {
        long stuck;
        double measured = run(&stuck);
        print_client_counters();
        exit_code = summarize(measured, stuck);
    }
    teardown();
    return exit_code;
}
