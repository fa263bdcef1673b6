/* soak: a long mixed load on an echo server and an RPC server in one process,
 * checking that nothing is lost and nothing grows.
 *
 *   soak [--seconds N] [--seed S] [--threads T] [--interval I]
 *   defaults N=30, S from the clock (printed), T=4, I=2; N and I may have
 *   decimals
 *
 * The process runs an echo server (net_server, 2 I/O threads) and an RPC
 * server (net_rpc_server, 1 I/O thread, methods `echo` and `drop`, the
 * latter force-closing the caller's connection) on 127.0.0.1, two client loop
 * threads, and T load threads. Each load thread loops over random episodes:
 *
 *   raw echo     a non-blocking socket from a random 127.0.0.1-4 source sends
 *                random-sized payloads (1 B .. 2 MiB) while reading the echo,
 *                then either half-closes and reads to EOF, or resets (SO_LINGER
 *                0) in the middle of the stream;
 *   client echo  the same through net_client / net_conn_send from the load
 *                thread, ending with net_client_disconnect (graceful) or
 *                net_conn_force_close;
 *   rpc          a net_rpc_client: batches of async calls and sync calls;
 *                sometimes a `drop` in the middle of a batch (the server closes
 *                the connection; the client reconnects), sometimes freeing the
 *                client with calls in flight;
 *   raw rpc      hand-made NRPC/1 frames on a raw socket, ending with a clean
 *                close, a truncated frame and a reset, or a bad magic (the
 *                server must close the connection).
 *
 * Every byte is checked: each connection sends a stream whose byte k is a
 * hash of (seed, k), so the echo is compared for content and order, and a
 * graceful close must bring back exactly what was sent. Every call must
 * complete exactly once: OK with its own body, or DISCONNECTED after a
 * deliberate `drop` on its connection ("interrupted"), or CANCELLED when its
 * client was freed with it in flight. Anything else -- a wrong or missing
 * byte, a TIMEOUT, a second completion, a call that never completes, a stall
 * of more than WAIT_MS -- is a failure.
 *
 * Every I seconds one line: elapsed time, RSS, descriptors, open connections
 * and counters. After the warm-up (25% of the run, at least 5 s) the load
 * threads pause between episodes, every connection closes, and the RSS and
 * descriptor count are recorded as the baseline; at the end the same is
 * measured again with everything closed. glibc's mmap and trim thresholds
 * are pinned (mallopt) and the RSS is read after malloc_trim(0) (the figure
 * before it is printed too), so that it follows memory in use; the heap in
 * use comes from mallinfo2(). The run fails if the RSS grew by more than
 * max(4 MiB, 20% of the baseline), the heap in use by more than max(1 MiB,
 * 10%) (neither is applied under sanitizers, whose allocators keep freed
 * memory in quarantine), or the descriptors by more than FD_SLACK.
 *
 * Last line: `soak: PASS ...` (exit 0) or `soak: FAIL reason` (exit 1);
 * usage errors exit 2. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <net/log.h>
#include <net/loop_thread.h>
#include <net/rpc.h>
#include <net/tcp_client.h>
#include <net/tcp_server.h>

#include "parse_uint.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SOAK_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SOAK_SANITIZED 1
#endif
#endif
#ifndef SOAK_SANITIZED
#define SOAK_SANITIZED 0
#endif

#define DROP_PENDING 0xFFFFFFFFu /* not a status anyone sends */

enum {
    WAIT_MS = 30000,         /* longest wait for anything; beyond it the run fails */
    CALL_TIMEOUT_MS = 30000, /* an RPC TIMEOUT is a failure, so far above WAIT_MS's scale */
    CHUNK = 64 * 1024,       /* bytes per send/recv on raw sockets and per net_conn_send */
    MAX_CALLS = 512,         /* async calls per rpc episode */
    CLIENT_LOOPS = 2,
    SOURCES = 4,             /* raw sockets bind 127.0.0.1 .. 127.0.0.SOURCES */
    RSS_MARGIN_KIB = 4096,   /* growth allowed: max(this, RSS_MARGIN_PCT% of baseline) */
    RSS_MARGIN_PCT = 20,
    FD_SLACK = 2,            /* descriptors allowed beyond the baseline */
    HEAP_MARGIN_KIB = 1024,  /* heap in use: max(this, HEAP_MARGIN_PCT% of baseline) */
    HEAP_MARGIN_PCT = 10,
    MAX_REPORTS = 20,        /* failures described on stderr */
    MIN_WARMUP_S = 5,
};

struct counters {
    atomic_ullong connects, graceful, resets, server_drops;
    atomic_ullong bytes_sent, bytes_echoed, bytes_abandoned;
    atomic_ullong calls, calls_ok, calls_interrupted, calls_cancelled, calls_failed;
    atomic_llong open; /* client-side connections open now */
};

static struct {
    double seconds, interval;
    unsigned long long seed;
    int threads;
    net_loop_thread_t *server_thread;
    net_loop_thread_t *client_threads[CLIENT_LOOPS];
    net_server_t *echo;
    net_rpc_server_t *rpc;
    net_addr_t echo_addr, rpc_addr;
    int setup_rc;
    atomic_bool stop;
    struct counters c;
    atomic_ullong failures;
    pthread_mutex_t mu; /* guards what follows */
    pthread_cond_t cv;
    char first_failure[256];
    bool pause_requested;
    int paused;
    int servers_stopped;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* ---- time, randomness and the byte streams ----------------------------------------- */

static uint64_t now_ms(void)
{
    return net_now_ms();
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* splitmix64: small, fast, and every seed is a good one. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rng_below(uint64_t *s, uint64_t n)
{
    return rng_next(s) % n;
}

static uint64_t rng_range(uint64_t *s, uint64_t lo, uint64_t hi)
{
    return lo + rng_below(s, hi - lo + 1);
}

/* Byte k of the stream `seed`: a hash of the position, so a lost, repeated or
 * reordered chunk shows as a mismatch. */
static unsigned char stream_byte(uint64_t seed, uint64_t k)
{
    uint64_t x = (seed ^ (k * 0x9E3779B97F4A7C15ull)) * 0xBF58476D1CE4E5B9ull;
    return (unsigned char)(x >> 56);
}

static void stream_fill(unsigned char *p, uint64_t seed, uint64_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = stream_byte(seed, off + i);
}

/* True when p[0..n) is bytes off..off+n of the stream. */
static bool stream_matches(const unsigned char *p, uint64_t seed, uint64_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != stream_byte(seed, off + i))
            return false;
    return true;
}

/* Mostly small messages, some large enough to fill socket buffers and make
 * output queue in user space. */
static size_t payload_size(uint64_t *rng)
{
    uint64_t r = rng_below(rng, 100);
    if (r < 60)
        return rng_range(rng, 1, 1024);
    if (r < 90)
        return rng_range(rng, 1025, 64 * 1024);
    if (r < 99)
        return rng_range(rng, 64 * 1024 + 1, 512 * 1024);
    return rng_range(rng, 512 * 1024 + 1, 2 * 1024 * 1024);
}

/* RPC bodies fit in one CHUNK. */
static size_t body_size(uint64_t *rng)
{
    uint64_t r = rng_below(rng, 100);
    if (r < 70)
        return rng_range(rng, 0, 256);
    if (r < 95)
        return rng_range(rng, 257, 8192);
    return rng_range(rng, 8193, CHUNK);
}

/* ---- failures and counters ------------------------------------------------------------ */

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
    char text[sizeof g.first_failure];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    unsigned long long n = atomic_fetch_add(&g.failures, 1);
    if (n < MAX_REPORTS)
        fprintf(stderr, "soak: error: %s\n", text);
    else if (n == MAX_REPORTS)
        fprintf(stderr, "soak: more errors (not shown)\n");
    if (n == 0) {
        pthread_mutex_lock(&g.mu);
        memcpy(g.first_failure, text, sizeof text);
        pthread_mutex_unlock(&g.mu);
    }
}

static void add(atomic_ullong *counter, uint64_t n)
{
    atomic_fetch_add_explicit(counter, n, memory_order_relaxed);
}

static unsigned long long get(atomic_ullong *counter)
{
    return atomic_load_explicit(counter, memory_order_relaxed);
}

static bool stopping(void)
{
    return atomic_load_explicit(&g.stop, memory_order_relaxed);
}

/* ---- what the process holds --------------------------------------------------------- */

static long rss_kib(void)
{
    long size = 0, resident = -1;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2)
        resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Bytes malloc has handed out and not got back, in KiB, or -1 where that is
 * unknown. With every connection closed this must come back to the baseline:
 * RSS may stay higher (a fragmented heap is not returned), this may not. */
static long heap_in_use_kib(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33) && !SOAK_SANITIZED
    struct mallinfo2 mi = mallinfo2();
    return (long)((mi.uordblks + mi.hblkhd) / 1024);
#else
    return -1;
#endif
}

/* Gives free heap pages back to the kernel. Large random buffers leave
 * glibc's arenas fragmented and their free pages resident; trimming at both
 * measuring points makes the RSS comparison about memory in use, not about
 * what the allocator happens to cache (both figures are printed). */
static void trim_heap(void)
{
#if defined(__GLIBC__) && !SOAK_SANITIZED
    malloc_trim(0);
#endif
}

/* glibc raises its mmap threshold each time a large mmapped block is freed
 * (up to 32 MiB), after which the 2 MiB payloads come from the per-thread
 * arenas, whose top only shrinks past a trim threshold that rose with it:
 * RSS then tracks the arenas' high-water marks, which creep for minutes.
 * Fixed thresholds keep RSS close to the memory in use, which is what the
 * soak compares. */
static void pin_malloc_thresholds(void)
{
#if defined(__GLIBC__) && !SOAK_SANITIZED
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    mallopt(M_TRIM_THRESHOLD, 128 * 1024);
#endif
}

/* "1234KiB", or "n/a" where the heap cannot be measured. */
static const char *kib_text(long kib, char *buf, size_t cap)
{
    if (kib < 0)
        snprintf(buf, cap, "n/a");
    else
        snprintf(buf, cap, "%ldKiB", kib);
    return buf;
}

/* Open descriptors, not counting the one that reads the directory. */
static int fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;
}

/* ---- a condition with a deadline ---------------------------------------------------------- */

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void waiter_init(struct waiter *w)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, &attr);
    pthread_condattr_destroy(&attr);
}

static void waiter_destroy(struct waiter *w)
{
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}

static void waiter_signal(struct waiter *w)
{
    pthread_cond_broadcast(&w->cv);
}

/* Waits once (w->mu held); false once deadline_ms (net_now_ms time) passed. */
static bool waiter_wait(struct waiter *w, uint64_t deadline_ms)
{
    if (now_ms() >= deadline_ms)
        return false;
    struct timespec ts = {(time_t)(deadline_ms / 1000), (long)(deadline_ms % 1000) * 1000000};
    pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    return true;
}

/* ---- running a function on a loop and waiting for it ------------------------------------- */

struct task {
    net_loop_fn fn;
    void *arg;
    struct waiter w;
    bool done;
};

static void task_run(void *arg)
{
    struct task *t = arg;
    t->fn(t->arg);
    pthread_mutex_lock(&t->w.mu);
    t->done = true;
    waiter_signal(&t->w);
    pthread_mutex_unlock(&t->w.mu);
}

/* Our functors are short: a wait beyond WAIT_MS means a stuck loop, and then
 * nothing is safe any more. */
static void run_on_loop(net_loop_t *loop, net_loop_fn fn, void *arg)
{
    struct task t = {.fn = fn, .arg = arg};
    waiter_init(&t.w);
    uint64_t deadline = now_ms() + WAIT_MS;
    int rc = net_loop_run_in_loop(loop, task_run, &t);
    if (rc < 0) {
        fprintf(stderr, "soak: FAIL run_in_loop: %s\n", net_strerror(rc));
        exit(1);
    }
    pthread_mutex_lock(&t.w.mu);
    while (!t.done && waiter_wait(&t.w, deadline))
        ;
    bool done = t.done;
    pthread_mutex_unlock(&t.w.mu);
    if (!done) {
        fprintf(stderr, "soak: FAIL a loop did not run a functor within %d ms\n", WAIT_MS);
        _exit(1);
    }
    waiter_destroy(&t.w);
}

/* ---- the servers -------------------------------------------------------------------------- */

static void echo_on_message(net_conn_t *conn, net_buf_t *in, uint64_t receive_ms, void *arg)
{
    (void)receive_ms;
    (void)arg;
    if (net_conn_send_buf(conn, in) < 0) /* closing: nothing to echo to */
        net_buf_retrieve_all(in);
}

static void rpc_echo(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    net_rpc_reply(req, NET_RPC_OK, body, len);
}

/* A deliberate disconnect from the server side: the reply must be dropped and
 * every call in flight on this connection end with DISCONNECTED. */
static void rpc_drop(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)body, (void)len, (void)arg;
    net_conn_force_close(net_rpc_req_conn(req));
    net_rpc_reply(req, NET_RPC_OK, NULL, 0);
}

static int start_echo_server(net_loop_t *loop, const net_addr_t *addr)
{
    struct net_server_options opt;
    struct net_conn_callbacks cbs = {.on_message = echo_on_message};
    net_server_options_init(&opt);
    opt.io_threads = 2;
    opt.name = "soak-echo";
    int rc = net_server_new(loop, addr, &opt, &cbs, &g.echo);
    if (rc == 0 && (rc = net_server_start(g.echo)) == 0)
        g.echo_addr = *net_server_addr(g.echo);
    return rc;
}

static int start_rpc_server(net_loop_t *loop, const net_addr_t *addr)
{
    struct net_rpc_server_options opt;
    net_rpc_server_options_init(&opt);
    opt.server.io_threads = 1;
    opt.server.name = "soak-rpc";
    int rc = net_rpc_server_new(loop, addr, &opt, &g.rpc);
    if (rc == 0)
        rc = net_rpc_server_register(g.rpc, "echo", rpc_echo, NULL, false);
    if (rc == 0)
        rc = net_rpc_server_register(g.rpc, "drop", rpc_drop, NULL, false);
    if (rc == 0 && (rc = net_rpc_server_start(g.rpc)) == 0)
        g.rpc_addr = *net_rpc_server_addr(g.rpc);
    return rc;
}

static void servers_create(void *arg)
{
    net_loop_t *loop = arg;
    net_addr_t any;
    net_addr_parse(&any, "127.0.0.1:0");
    g.setup_rc = start_echo_server(loop, &any);
    if (g.setup_rc == 0)
        g.setup_rc = start_rpc_server(loop, &any);
}

static void server_stopped(void)
{
    pthread_mutex_lock(&g.mu);
    g.servers_stopped++;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
}

/* Open connections of the echo server (main thread, while it runs). */
static size_t echo_conns(void)
{
    struct net_server_stats st;
    net_server_stats(g.echo, &st);
    return st.connections;
}

static void echo_stopped(net_server_t *server, void *arg)
{
    (void)server, (void)arg;
    server_stopped();
}

static void rpc_stopped(net_rpc_server_t *server, void *arg)
{
    (void)server, (void)arg;
    server_stopped();
}

static void servers_stop(void *arg)
{
    (void)arg;
    if (g.echo && net_server_close(g.echo, 1000, echo_stopped, NULL) < 0)
        server_stopped();
    if (g.rpc && net_rpc_server_close(g.rpc, 1000, rpc_stopped, NULL) < 0)
        server_stopped();
}

/* Both servers are gone with their closes' done. */
static void servers_free(void *arg)
{
    (void)arg;
    g.echo = NULL;
    g.rpc = NULL;
}

/* ---- raw sockets ------------------------------------------------------------------------------ */

struct load {
    int index;
    pthread_t tid;
    uint64_t rng;
    unsigned char *out, *in; /* CHUNK bytes each */
};

static net_loop_t *client_loop(struct load *L)
{
    return net_loop_thread_loop(g.client_threads[L->index % CLIENT_LOOPS]);
}

static void opened(void)
{
    add(&g.c.connects, 1);
    atomic_fetch_add(&g.c.open, 1);
}

static void closed(void)
{
    atomic_fetch_sub(&g.c.open, 1);
}

static int wait_fd(int fd, short events, uint64_t deadline)
{
    struct pollfd p = {.fd = fd, .events = events};
    uint64_t now = now_ms();
    if (now >= deadline)
        return 0;
    int n = poll(&p, 1, (int)(deadline - now));
    return n <= 0 ? n : p.revents;
}

static void bind_random_source(int fd, uint64_t *rng)
{
    int one = 1;
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl((127u << 24) | (uint32_t)rng_range(rng, 1, SOURCES));
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0)
        fail("bind to a 127.0.0.x source: %s", strerror(errno));
}

/* A connected non-blocking socket, or -1 (failure recorded). */
static int raw_connect(struct load *L, const net_addr_t *dst)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fail("socket: %s", strerror(errno));
        return -1;
    }
    bind_random_source(fd, &L->rng);
    int err = 0;
    socklen_t len = sizeof err;
    if (connect(fd, net_addr_sockaddr(dst), net_addr_len(dst)) < 0) {
        err = errno;
        if (err == EINPROGRESS && wait_fd(fd, POLLOUT, now_ms() + WAIT_MS) > 0)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        else if (err == EINPROGRESS)
            err = ETIMEDOUT;
    }
    if (err) {
        fail("raw connect: %s", strerror(err));
        close(fd);
        return -1;
    }
    opened();
    return fd;
}

/* Closes with a reset: SO_LINGER 0 throws away whatever is queued both ways. */
static void raw_reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
    add(&g.c.resets, 1);
    closed();
}

static void raw_close(int fd)
{
    close(fd);
    add(&g.c.graceful, 1);
    closed();
}

/* ---- episode: raw echo ---------------------------------------------------------------------- */

struct pump {
    struct load *L;
    int fd;
    uint64_t seed, sent, got;
    bool eof;
};

static bool pump_send(struct pump *p, uint64_t send_to)
{
    size_t n = send_to - p->sent < CHUNK ? (size_t)(send_to - p->sent) : CHUNK;
    stream_fill(p->L->out, p->seed, p->sent, n);
    ssize_t r = send(p->fd, p->L->out, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r < 0 && errno != EAGAIN && errno != EINTR) {
        fail("raw echo: send: %s", strerror(errno));
        return false;
    }
    if (r > 0) {
        p->sent += (uint64_t)r;
        add(&g.c.bytes_sent, (uint64_t)r);
    }
    return true;
}

static bool pump_recv(struct pump *p)
{
    ssize_t r = recv(p->fd, p->L->in, CHUNK, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return true;
    if (r < 0) {
        fail("raw echo: recv after %llu of %llu bytes: %s", (unsigned long long)p->got,
             (unsigned long long)p->sent, strerror(errno));
        return false;
    }
    if (r == 0) {
        p->eof = true;
        return true;
    }
    if (p->got + (uint64_t)r > p->sent || !stream_matches(p->L->in, p->seed, p->got, (size_t)r)) {
        fail("raw echo: bytes %llu..%llu differ from what was sent (%llu bytes)",
             (unsigned long long)p->got, (unsigned long long)(p->got + (uint64_t)r),
             (unsigned long long)p->sent);
        return false;
    }
    p->got += (uint64_t)r;
    add(&g.c.bytes_echoed, (uint64_t)r);
    return true;
}

/* Sends up to send_to bytes of the stream, reading the echo all along (so
 * that neither side blocks), until at least recv_to bytes came back. */
static bool pump_io(struct pump *p, uint64_t send_to, uint64_t recv_to)
{
    uint64_t deadline = now_ms() + WAIT_MS;
    while (p->sent < send_to || p->got < recv_to) {
        short want = POLLIN | (p->sent < send_to ? POLLOUT : 0);
        int ev = wait_fd(p->fd, want, deadline);
        if (ev <= 0) {
            fail("raw echo: stalled at %llu sent, %llu echoed", (unsigned long long)p->sent,
                 (unsigned long long)p->got);
            return false;
        }
        if ((ev & (POLLIN | POLLHUP | POLLERR)) && !pump_recv(p))
            return false;
        if (p->eof) {
            fail("raw echo: the server closed after %llu of %llu bytes",
                 (unsigned long long)p->got, (unsigned long long)p->sent);
            return false;
        }
        if ((ev & POLLOUT) && !pump_send(p, send_to))
            return false;
    }
    return true;
}

/* Half-close: the server flushes the echo, then closes; all must be back. */
static bool pump_finish(struct pump *p)
{
    uint64_t deadline = now_ms() + WAIT_MS;
    shutdown(p->fd, SHUT_WR);
    while (!p->eof) {
        if (wait_fd(p->fd, POLLIN, deadline) <= 0) {
            fail("raw echo: no EOF after a half-close (%llu of %llu bytes back)",
                 (unsigned long long)p->got, (unsigned long long)p->sent);
            return false;
        }
        if (!pump_recv(p))
            return false;
    }
    if (p->got != p->sent) {
        fail("raw echo: lost %llu of %llu bytes", (unsigned long long)(p->sent - p->got),
             (unsigned long long)p->sent);
        return false;
    }
    return true;
}

static void raw_echo_episode(struct load *L)
{
    struct pump p = {.L = L, .seed = rng_next(&L->rng)};
    if ((p.fd = raw_connect(L, &g.echo_addr)) < 0)
        return;
    int rounds = (int)rng_range(&L->rng, 1, 12);
    int cut = rng_below(&L->rng, 4) == 0 ? (int)rng_below(&L->rng, (uint64_t)rounds) : -1;
    bool ok = true;
    for (int i = 0; ok && i < rounds && !stopping(); i++) {
        uint64_t end = p.sent + payload_size(&L->rng);
        ok = pump_io(&p, end, rng_below(&L->rng, 2) ? end : 0);
        if (i == cut)
            break;
    }
    if (ok && cut < 0 && pump_finish(&p)) {
        raw_close(p.fd);
        return;
    }
    add(&g.c.bytes_abandoned, p.sent - p.got);
    raw_reset(p.fd);
}

/* ---- episode: echo through net_client ----------------------------------------------------- */

struct nc {
    struct waiter w;
    net_loop_t *loop;
    net_client_t *client;
    net_conn_t *conn;   /* our reference, from the up callback */
    uint64_t seed, received;
    bool up, down, failed, corrupt, closed;
    int err;
};

static void nc_on_connection(net_conn_t *conn, void *arg)
{
    struct nc *n = arg;
    pthread_mutex_lock(&n->w.mu);
    if (net_conn_connected(conn)) {
        n->conn = net_conn_ref(conn);
        n->up = true;
    } else {
        n->down = true;
    }
    waiter_signal(&n->w);
    pthread_mutex_unlock(&n->w.mu);
}

static void nc_on_message(net_conn_t *conn, net_buf_t *in, uint64_t receive_ms, void *arg)
{
    (void)receive_ms;
    struct nc *n = arg;
    size_t len = net_buf_readable(in);
    pthread_mutex_lock(&n->w.mu);
    uint64_t off = n->received;
    n->received += len;
    waiter_signal(&n->w);
    pthread_mutex_unlock(&n->w.mu);
    if (!n->corrupt && !stream_matches((const unsigned char *)net_buf_peek(in), n->seed, off, len)) {
        n->corrupt = true;
        fail("client echo: bytes %llu..%llu differ from what was sent",
             (unsigned long long)off, (unsigned long long)(off + len));
        net_conn_force_close(conn);
    }
    add(&g.c.bytes_echoed, len);
    net_buf_retrieve_all(in);
}

static void nc_on_failed(net_client_t *client, int err, bool will_retry, void *arg)
{
    (void)client, (void)will_retry;
    struct nc *n = arg;
    pthread_mutex_lock(&n->w.mu);
    n->failed = true;
    n->err = err;
    waiter_signal(&n->w);
    pthread_mutex_unlock(&n->w.mu);
}

static void nc_create(void *arg)
{
    struct nc *n = arg;
    struct net_client_options opt;
    struct net_conn_callbacks cbs = {
        .on_connection = nc_on_connection, .on_message = nc_on_message, .arg = n};
    net_client_options_init(&opt);
    opt.connect_timeout_ms = WAIT_MS;
    n->err = net_client_new(n->loop, &g.echo_addr, &opt, &cbs, nc_on_failed, n, &n->client);
    if (n->err == 0)
        n->err = net_client_connect(n->client);
}

/* The client's close is done: nothing of it runs any more. */
static void nc_closed(net_client_t *client, void *arg)
{
    (void)client;
    struct nc *n = arg;
    pthread_mutex_lock(&n->w.mu);
    n->closed = true;
    waiter_signal(&n->w);
    pthread_mutex_unlock(&n->w.mu);
}

enum nc_event { NC_UP, NC_DOWN, NC_ECHOED, NC_CLOSED };

static bool nc_reached(const struct nc *n, enum nc_event what, uint64_t sent)
{
    switch (what) {
    case NC_UP:
        return n->up || n->failed;
    case NC_DOWN:
        return n->down;
    case NC_ECHOED:
        return n->received >= sent || n->down;
    case NC_CLOSED:
        return n->closed;
    }
    return true;
}

/* False when the deadline passed first (failure recorded). */
static bool nc_wait(struct nc *n, enum nc_event what, uint64_t sent)
{
    static const char *const names[] = {"connection", "close", "echo", "end of the client"};
    uint64_t deadline = now_ms() + WAIT_MS;
    pthread_mutex_lock(&n->w.mu);
    while (!nc_reached(n, what, sent) && waiter_wait(&n->w, deadline))
        ;
    bool ok = nc_reached(n, what, sent);
    uint64_t received = n->received;
    pthread_mutex_unlock(&n->w.mu);
    if (!ok)
        fail("client echo: no %s within %d ms (%llu of %llu bytes back)", names[what], WAIT_MS,
             (unsigned long long)received, (unsigned long long)sent);
    return ok;
}

static uint64_t nc_received(struct nc *n)
{
    pthread_mutex_lock(&n->w.mu);
    uint64_t r = n->received;
    pthread_mutex_unlock(&n->w.mu);
    return r;
}

/* Sends `size` more bytes of the stream from this (non-loop) thread. */
static bool nc_send(struct load *L, struct nc *n, uint64_t *sent, size_t size)
{
    while (size > 0) {
        size_t len = size < CHUNK ? size : CHUNK;
        stream_fill(L->out, n->seed, *sent, len);
        int rc = net_conn_send(n->conn, L->out, len);
        if (rc < 0) {
            fail("client echo: net_conn_send: %s", net_strerror(rc));
            return false;
        }
        *sent += len;
        size -= len;
        add(&g.c.bytes_sent, len);
    }
    return true;
}

/* Graceful: net_client_disconnect flushes, the server echoes the rest and
 * closes; everything must be back. Otherwise force_close drops the rest. */
static void nc_close(struct nc *n, uint64_t sent, bool graceful)
{
    if (graceful)
        net_client_disconnect(n->client);
    else
        net_conn_force_close(n->conn);
    if (!nc_wait(n, NC_DOWN, sent))
        return;
    uint64_t received = nc_received(n);
    if (graceful && received != sent)
        fail("client echo: lost %llu of %llu bytes after a graceful disconnect",
             (unsigned long long)(sent - received), (unsigned long long)sent);
    add(graceful ? &g.c.graceful : &g.c.resets, 1);
    if (!graceful)
        add(&g.c.bytes_abandoned, sent - received);
}

static void nc_exchange(struct load *L, struct nc *n)
{
    uint64_t sent = 0;
    int rounds = (int)rng_range(&L->rng, 1, 12);
    int cut = rng_below(&L->rng, 4) == 0 ? (int)rng_below(&L->rng, (uint64_t)rounds) : -1;
    bool ok = true;
    for (int i = 0; ok && i < rounds && !stopping(); i++) {
        ok = nc_send(L, n, &sent, payload_size(&L->rng));
        if (ok && rng_below(&L->rng, 2))
            ok = nc_wait(n, NC_ECHOED, sent);
        if (i == cut)
            break;
    }
    nc_close(n, sent, ok && cut < 0);
}

static void client_echo_episode(struct load *L)
{
    struct nc n = {.loop = client_loop(L), .seed = rng_next(&L->rng)};
    waiter_init(&n.w);
    run_on_loop(n.loop, nc_create, &n);
    if (n.err < 0) {
        fail("net_client_new/connect: %s", net_strerror(n.err));
    } else if (nc_wait(&n, NC_UP, 0) && n.failed) {
        fail("client echo: connect failed: %s", net_strerror(n.err));
    } else if (n.up) {
        opened();
        nc_exchange(L, &n);
        closed();
    }
    /* Thread-safe; n lives on this stack, so wait for the close's done. */
    if (n.client && net_client_close(n.client, 0, nc_closed, &n) == 0)
        nc_wait(&n, NC_CLOSED, 0);
    net_conn_unref(n.conn);
    waiter_destroy(&n.w);
}

/* ---- episode: RPC client ----------------------------------------------------------------------- */

struct rpc_ep;

struct call {
    struct rpc_ep *ep;
    uint64_t seed;
    size_t len;
    bool drop;              /* the `drop` method */
    atomic_int done;
};

struct rpc_ep {
    struct waiter w;
    net_loop_t *loop;
    net_rpc_client_t *client;
    struct call calls[MAX_CALLS];
    size_t ncalls;
    size_t outstanding;     /* under w.mu */
    atomic_uint drop_status; /* how the last `drop` ended; DROP_PENDING before */
    atomic_bool dropping;   /* a `drop` was issued: DISCONNECTED is expected */
    atomic_bool freeing;    /* the client is being closed: CANCELLED is expected */
    atomic_bool closed;     /* its close's done ran */
};

static void check_outcome(struct rpc_ep *ep, const struct call *k, uint32_t status,
                          const void *body, size_t len, const char *mode)
{
    if (status == NET_RPC_OK) {
        if (len == k->len && stream_matches(body, k->seed, 0, len)) {
            add(&g.c.calls_ok, 1);
            return;
        }
        fail("%s call: the reply (%zu bytes) is not the echo of the request (%zu bytes)", mode,
             len, k->len);
    } else if (status == NET_RPC_DISCONNECTED && atomic_load(&ep->dropping)) {
        add(&g.c.calls_interrupted, 1);
        return;
    } else if (status == NET_RPC_CANCELLED && atomic_load(&ep->freeing)) {
        add(&g.c.calls_cancelled, 1);
        return;
    } else {
        fail("%s call: ended with %s", mode, net_rpc_status_name(status));
    }
    add(&g.c.calls_failed, 1);
}

static void call_done(net_rpc_client_t *client, uint32_t status, const void *body, size_t len,
                      void *arg)
{
    (void)client;
    struct call *k = arg;
    struct rpc_ep *ep = k->ep;
    if (atomic_fetch_add(&k->done, 1) != 0) {
        fail("async call: completed twice (second: %s)", net_rpc_status_name(status));
        return;
    }
    if (k->drop)
        atomic_store(&ep->drop_status, status);
    check_outcome(ep, k, status, body, len, "async");
    pthread_mutex_lock(&ep->w.mu);
    ep->outstanding--;
    waiter_signal(&ep->w);
    pthread_mutex_unlock(&ep->w.mu);
}

static struct call *issue_async(struct load *L, struct rpc_ep *ep, const char *method)
{
    if (ep->ncalls == MAX_CALLS)
        return NULL;
    struct call *k = &ep->calls[ep->ncalls++];
    k->ep = ep;
    k->seed = rng_next(&L->rng);
    k->drop = strcmp(method, "drop") == 0;
    k->len = k->drop ? 0 : body_size(&L->rng);
    stream_fill(L->out, k->seed, 0, k->len);
    pthread_mutex_lock(&ep->w.mu);
    ep->outstanding++;
    pthread_mutex_unlock(&ep->w.mu);
    add(&g.c.calls, 1);
    int rc = net_rpc_call(ep->client, method, L->out, k->len, CALL_TIMEOUT_MS, call_done, k);
    if (rc < 0) { /* not accepted: no callback will come */
        fail("net_rpc_call: %s", net_strerror(rc));
        atomic_store(&k->done, 1);
        add(&g.c.calls_failed, 1);
        pthread_mutex_lock(&ep->w.mu);
        ep->outstanding--;
        pthread_mutex_unlock(&ep->w.mu);
    }
    return k;
}

static void sync_call(struct load *L, struct rpc_ep *ep)
{
    struct call k = {.seed = rng_next(&L->rng), .len = body_size(&L->rng)};
    uint32_t status;
    void *body = NULL;
    size_t len = 0;
    stream_fill(L->out, k.seed, 0, k.len);
    add(&g.c.calls, 1);
    int rc = net_rpc_call_sync(ep->client, "echo", L->out, k.len, CALL_TIMEOUT_MS, &status,
                               &body, &len);
    if (rc < 0) {
        fail("net_rpc_call_sync: %s", net_strerror(rc));
        add(&g.c.calls_failed, 1);
        return;
    }
    check_outcome(ep, &k, status, body, len, "sync");
    free(body);
}

static bool wait_outstanding(struct rpc_ep *ep)
{
    uint64_t deadline = now_ms() + WAIT_MS;
    pthread_mutex_lock(&ep->w.mu);
    while (ep->outstanding > 0 && waiter_wait(&ep->w, deadline))
        ;
    size_t left = ep->outstanding;
    pthread_mutex_unlock(&ep->w.mu);
    if (left)
        fail("rpc: %zu async calls not completed after %d ms", left, WAIT_MS);
    return left == 0;
}

static bool wait_rpc_connected(struct rpc_ep *ep)
{
    uint64_t deadline = now_ms() + WAIT_MS;
    while (!net_rpc_client_connected(ep->client)) {
        if (now_ms() >= deadline) {
            fail("rpc: not connected within %d ms", WAIT_MS);
            return false;
        }
        sleep_ms(1);
    }
    return true;
}

static void rpc_round(struct load *L, struct rpc_ep *ep)
{
    if (rng_below(&L->rng, 3) == 0) {
        for (int i = (int)rng_range(&L->rng, 1, 8); i > 0; i--)
            sync_call(L, ep);
        return;
    }
    for (int i = (int)rng_range(&L->rng, 1, 64); i > 0; i--)
        issue_async(L, ep, "echo");
    if (rng_below(&L->rng, 2))
        wait_outstanding(ep);
}

/* A `drop` between two batches: calls end OK or DISCONNECTED, the drop itself
 * DISCONNECTED (its reply is sent after the close); then the client
 * reconnects by itself and calls work again. */
static bool rpc_drop_round(struct load *L, struct rpc_ep *ep)
{
    if (!wait_outstanding(ep))
        return false;
    atomic_store(&ep->dropping, true);
    atomic_store(&ep->drop_status, DROP_PENDING);
    for (int i = (int)rng_range(&L->rng, 0, 16); i > 0; i--)
        issue_async(L, ep, "echo");
    bool issued = issue_async(L, ep, "drop") != NULL;
    for (int i = (int)rng_range(&L->rng, 0, 16); i > 0; i--)
        issue_async(L, ep, "echo");
    bool ok = wait_outstanding(ep);
    add(&g.c.server_drops, 1);
    if (ok && issued && atomic_load(&ep->drop_status) != NET_RPC_DISCONNECTED)
        fail("rpc: the `drop` call ended %s, expected DISCONNECTED",
             net_rpc_status_name(atomic_load(&ep->drop_status)));
    ok = ok && wait_rpc_connected(ep);
    atomic_store(&ep->dropping, false);
    if (ok)
        add(&g.c.connects, 1);
    return ok;
}

static void rpc_create(void *arg)
{
    struct rpc_ep *ep = arg;
    struct net_rpc_client_options opt;
    net_rpc_client_options_init(&opt);
    opt.client.connect_timeout_ms = WAIT_MS;
    opt.client.retry_initial_ms = 10; /* reconnect soon after a `drop` */
    int rc = net_rpc_client_new(ep->loop, &g.rpc_addr, &opt, &ep->client);
    if (rc < 0) {
        fail("net_rpc_client_new: %s", net_strerror(rc));
        ep->client = NULL;
    }
}

static void rpc_closed(net_rpc_client_t *client, void *arg)
{
    (void)client;
    atomic_store(&((struct rpc_ep *)arg)->closed, true);
}

/* Closes the client (no drain: the calls in flight end CANCELLED) and
 * waits for the close's done, after which no callback can come. */
static void rpc_close(struct rpc_ep *ep)
{
    atomic_store(&ep->freeing, true);
    if (net_rpc_client_close(ep->client, 0, rpc_closed, ep) < 0)
        fail("net_rpc_client_close: refused");
    uint64_t deadline = now_ms() + WAIT_MS;
    while (!atomic_load(&ep->closed) && now_ms() < deadline)
        sleep_ms(1);
    if (!atomic_load(&ep->closed))
        fail("rpc: the client's close never completed");
}

/* After the close every call must have ended, each exactly once. */
static void rpc_check_all_done(struct rpc_ep *ep)
{
    for (size_t i = 0; i < ep->ncalls; i++) {
        int done = atomic_load(&ep->calls[i].done);
        if (done == 0) {
            fail("rpc: async call %zu of %zu never completed", i, ep->ncalls);
            add(&g.c.calls_failed, 1);
        }
    }
}

static void rpc_exchange(struct load *L, struct rpc_ep *ep)
{
    bool ok = true;
    for (int i = (int)rng_range(&L->rng, 1, 6); ok && i > 0 && !stopping(); i--) {
        rpc_round(L, ep);
        if (rng_below(&L->rng, 8) == 0)
            ok = rpc_drop_round(L, ep);
    }
    /* One episode in four closes the client with calls in flight. */
    if (ok && rng_below(&L->rng, 4) == 0) {
        for (int i = (int)rng_range(&L->rng, 1, 32); i > 0; i--)
            issue_async(L, ep, "echo");
        return;
    }
    if (wait_outstanding(ep))
        add(&g.c.graceful, 1);
}

static void rpc_episode(struct load *L)
{
    struct rpc_ep *ep = calloc(1, sizeof *ep);
    if (!ep) {
        fail("rpc: out of memory");
        return;
    }
    waiter_init(&ep->w);
    ep->loop = client_loop(L);
    run_on_loop(ep->loop, rpc_create, ep);
    if (ep->client && wait_rpc_connected(ep)) {
        opened();
        rpc_exchange(L, ep);
        closed();
    }
    if (ep->client)
        rpc_close(ep);
    rpc_check_all_done(ep);
    waiter_destroy(&ep->w);
    free(ep);
}

/* ---- episode: NRPC/1 frames on a raw socket ------------------------------------------------- */

enum { HDR = 24 };

static void put_be(unsigned char *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t get_be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Appends an `echo` request for call id `id` with body stream (seed, len). */
static size_t put_request(unsigned char *p, uint64_t id, uint64_t seed, size_t len)
{
    memcpy(p, "NRPC\1\1", 6);
    put_be(p + 6, 4, 2);
    put_be(p + 8, id, 8);
    put_be(p + 16, 0, 4);
    put_be(p + 20, len, 4);
    memcpy(p + HDR, "echo", 4);
    stream_fill(p + HDR + 4, seed, 0, len);
    return HDR + 4 + len;
}

struct raw_rpc {
    int n;                  /* requests */
    uint64_t seeds[16];
    size_t lens[16];
    unsigned char *req, *resp;
    size_t req_len, resp_len, resp_cap, sent, got;
    bool eof;
};

/* Checks the complete responses in resp[0..got) (a partial last one is left
 * alone). Returns how many, or -1 (failure recorded). */
static int check_responses(struct raw_rpc *r)
{
    size_t off = 0;
    int count = 0;
    while (r->got - off >= HDR) {
        const unsigned char *h = r->resp + off;
        uint64_t id = get_be(h + 8, 8);
        size_t len = (size_t)get_be(h + 20, 4);
        if (memcmp(h, "NRPC\1\2\0\0", 8) != 0 || get_be(h + 16, 4) != 0 || id < 1 ||
            id > (uint64_t)r->n || len != r->lens[id - 1]) {
            fail("raw rpc: bad response header at byte %zu", off);
            return -1;
        }
        if (r->got - off < HDR + len)
            break;
        if (!stream_matches(h + HDR, r->seeds[id - 1], 0, len)) {
            fail("raw rpc: the response to call %llu is not its echo", (unsigned long long)id);
            return -1;
        }
        off += HDR + len;
        count++;
    }
    return count;
}

static bool raw_rpc_send(int fd, struct raw_rpc *r)
{
    ssize_t k = send(fd, r->req + r->sent, r->req_len - r->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k > 0)
        r->sent += (size_t)k;
    else if (errno == ECONNRESET || errno == EPIPE)
        r->eof = true;
    else if (errno != EAGAIN && errno != EINTR) {
        fail("raw rpc: send: %s", strerror(errno));
        return false;
    }
    return true;
}

static bool raw_rpc_recv(int fd, struct raw_rpc *r)
{
    ssize_t k = recv(fd, r->resp + r->got, r->resp_cap - r->got, MSG_DONTWAIT);
    if (k > 0)
        r->got += (size_t)k;
    else if (k == 0 || errno == ECONNRESET)
        r->eof = true;
    else if (errno != EAGAIN && errno != EINTR) {
        fail("raw rpc: recv: %s", strerror(errno));
        return false;
    }
    return true;
}

/* Sends every request byte while reading, until want_back bytes came back
 * (or the server closed). */
static bool raw_rpc_io(int fd, struct raw_rpc *r, size_t want_back)
{
    uint64_t deadline = now_ms() + WAIT_MS;
    while ((r->sent < r->req_len || r->got < want_back) && !r->eof) {
        int ev = wait_fd(fd, POLLIN | (r->sent < r->req_len ? POLLOUT : 0), deadline);
        if (ev <= 0) {
            fail("raw rpc: stalled (%zu of %zu sent, %zu back)", r->sent, r->req_len, r->got);
            return false;
        }
        if ((ev & (POLLIN | POLLHUP | POLLERR)) && !raw_rpc_recv(fd, r))
            return false;
        if ((ev & POLLOUT) && !r->eof && !raw_rpc_send(fd, r))
            return false;
    }
    return true;
}

enum raw_rpc_end { RAW_CLEAN, RAW_TRUNCATED, RAW_BAD_MAGIC };

/* Lays out n requests and, for the truncated or bad ending, the start of one
 * more frame. */
static bool raw_rpc_build(struct load *L, struct raw_rpc *r, enum raw_rpc_end end)
{
    r->n = (int)rng_range(&L->rng, 1, 16);
    size_t total = 0;
    for (int i = 0; i < r->n; i++) {
        r->seeds[i] = rng_next(&L->rng);
        r->lens[i] = body_size(&L->rng) / 8; /* up to 8 KiB */
        total += r->lens[i];
    }
    r->req = malloc(total + (size_t)(r->n + 1) * (HDR + 4));
    r->resp_cap = total + (size_t)r->n * HDR + 1; /* one more byte shows excess */
    r->resp = malloc(r->resp_cap);
    if (!r->req || !r->resp)
        return false;
    for (int i = 0; i < r->n; i++)
        r->req_len += put_request(r->req + r->req_len, (uint64_t)i + 1, r->seeds[i], r->lens[i]);
    r->resp_len = r->resp_cap - 1;
    if (end == RAW_TRUNCATED) { /* a header promising a body that never comes */
        put_request(r->req + r->req_len, 99, 0, 0);
        put_be(r->req + r->req_len + 20, 1000, 4);
        r->req_len += rng_range(&L->rng, 1, HDR + 4);
    } else if (end == RAW_BAD_MAGIC) {
        r->req_len += put_request(r->req + r->req_len, 99, 0, 0);
        r->req[r->req_len - HDR - 4] = 'X';
    }
    return true;
}

/* Bad magic: the server answers what came before (as far as it got before
 * closing; the spec lets it drop the rest) and closes: wait for that EOF. */
static void raw_rpc_end(int fd, struct raw_rpc *r, enum raw_rpc_end end)
{
    if (end == RAW_CLEAN) {
        if (r->got == r->resp_len && check_responses(r) == r->n)
            raw_close(fd);
        else
            raw_reset(fd);
        return;
    }
    if (end == RAW_TRUNCATED) {
        check_responses(r);
        raw_reset(fd);
        return;
    }
    if (raw_rpc_io(fd, r, r->resp_cap) && !r->eof)
        fail("raw rpc: the server did not close after a bad magic");
    if (r->got > r->resp_len)
        fail("raw rpc: %zu bytes more than the responses", r->got - r->resp_len);
    else
        check_responses(r);
    raw_close(fd);
    add(&g.c.server_drops, 1);
}

static void raw_rpc_episode(struct load *L)
{
    struct raw_rpc r = {0};
    enum raw_rpc_end end = (enum raw_rpc_end)rng_below(&L->rng, 3);
    int fd = -1;
    if (!raw_rpc_build(L, &r, end)) {
        fail("raw rpc: out of memory");
    } else if ((fd = raw_connect(L, &g.rpc_addr)) >= 0) {
        size_t want = end == RAW_CLEAN ? r.resp_len : 0;
        if (raw_rpc_io(fd, &r, want)) {
            if (end == RAW_CLEAN && r.got < r.resp_len)
                fail("raw rpc: the server closed after %zu of %zu response bytes", r.got,
                     r.resp_len);
            raw_rpc_end(fd, &r, end);
        } else {
            raw_reset(fd);
        }
    }
    free(r.req);
    free(r.resp);
}

/* ---- load threads and pauses ------------------------------------------------------------ */

static void pause_point(void)
{
    pthread_mutex_lock(&g.mu);
    if (g.pause_requested) {
        g.paused++;
        pthread_cond_broadcast(&g.cv);
        while (g.pause_requested)
            pthread_cond_wait(&g.cv, &g.mu);
        g.paused--;
    }
    pthread_mutex_unlock(&g.mu);
}

static void *load_main(void *arg)
{
    struct load *L = arg;
    while (!stopping()) {
        pause_point();
        uint64_t r = rng_below(&L->rng, 100);
        if (r < 30)
            raw_echo_episode(L);
        else if (r < 55)
            client_echo_episode(L);
        else if (r < 85)
            rpc_episode(L);
        else
            raw_rpc_episode(L);
    }
    return NULL;
}

struct figures {
    long rss_kib;     /* after malloc_trim: what the process really holds */
    long raw_rss_kib; /* before it: with what the allocator keeps cached */
    long heap_kib;
    int fds;
};

static void request_pause(bool on)
{
    pthread_mutex_lock(&g.mu);
    g.pause_requested = on;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
}

/* Waits until every load thread sits between episodes; bounded by the
 * longest episode, a few WAIT_MS at worst. */
static bool wait_paused(int threads)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 4 * WAIT_MS / 1000;
    int rc = 0;
    pthread_mutex_lock(&g.mu);
    while (g.paused < threads && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&g.cv, &g.mu, &ts);
    bool ok = g.paused >= threads;
    pthread_mutex_unlock(&g.mu);
    return ok;
}

/* With no episode running, every connection closes on both sides: waits for
 * the descriptor count to hold still for 500 ms, then measures. */
static bool settle(struct figures *out)
{
    uint64_t deadline = now_ms() + WAIT_MS, still_since = now_ms();
    int last = fd_count();
    while (now_ms() < deadline) {
        sleep_ms(50);
        int fds = fd_count();
        if (fds != last || echo_conns() > 0)
            still_since = now_ms();
        last = fds;
        if (now_ms() - still_since >= 500) {
            out->fds = fds;
            out->raw_rss_kib = rss_kib();
            out->heap_kib = heap_in_use_kib();
            trim_heap();
            out->rss_kib = rss_kib();
            return true;
        }
    }
    return false;
}

/* Pauses the load (if running), measures, resumes. */
static bool quiesce(int running_threads, struct figures *out)
{
    bool ok = true;
    if (running_threads > 0) {
        request_pause(true);
        ok = wait_paused(running_threads);
        if (!ok)
            fail("load threads did not pause within %d s", 4 * WAIT_MS / 1000);
    }
    if (ok && !(ok = settle(out)))
        fail("descriptors did not settle within %d ms", WAIT_MS);
    if (running_threads > 0)
        request_pause(false);
    return ok;
}

/* ---- reporting ------------------------------------------------------------------------------ */

static void print_sample(double elapsed)
{
    char heap[32];
    printf("soak: t=%.1fs rss=%ldKiB heap=%s fds=%d open=%lld echo_conns=%zu connects=%llu "
           "echoed=%.1fMiB calls=%llu interrupted=%llu cancelled=%llu resets=%llu "
           "drops=%llu errors=%llu\n",
           elapsed, rss_kib(), kib_text(heap_in_use_kib(), heap, sizeof heap), fd_count(), (long long)atomic_load(&g.c.open),
           echo_conns(), get(&g.c.connects),
           (double)get(&g.c.bytes_echoed) / (1 << 20), get(&g.c.calls),
           get(&g.c.calls_interrupted), get(&g.c.calls_cancelled), get(&g.c.resets),
           get(&g.c.server_drops), get(&g.failures));
    fflush(stdout);
}

static long margin_kib(long baseline, long min_kib, long pct)
{
    long m = baseline * pct / 100;
    return m > min_kib ? m : min_kib;
}

static long rss_margin_kib(long baseline)
{
    return margin_kib(baseline, RSS_MARGIN_KIB, RSS_MARGIN_PCT);
}

static long heap_margin_kib(long baseline)
{
    return margin_kib(baseline, HEAP_MARGIN_KIB, HEAP_MARGIN_PCT);
}

/* The reason to fail, or NULL. */
static const char *verdict(bool have_baseline, const struct figures *base,
                           const struct figures *end, char *text, size_t cap)
{
    unsigned long long calls = get(&g.c.calls);
    unsigned long long ended = get(&g.c.calls_ok) + get(&g.c.calls_interrupted) +
                               get(&g.c.calls_cancelled) + get(&g.c.calls_failed);
    if (get(&g.failures) > 0) {
        pthread_mutex_lock(&g.mu);
        snprintf(text, cap, "%llu errors, the first: %s", get(&g.failures), g.first_failure);
        pthread_mutex_unlock(&g.mu);
    } else if (calls != ended) {
        snprintf(text, cap, "%llu calls made, %llu ended", calls, ended);
    } else if (get(&g.c.connects) == 0 || calls == 0) {
        snprintf(text, cap, "no load ran (connects %llu, calls %llu)", get(&g.c.connects), calls);
    } else if (have_baseline && end->fds > base->fds + FD_SLACK) {
        snprintf(text, cap, "descriptors grew from %d to %d (slack %d)", base->fds, end->fds,
                 FD_SLACK);
    } else if (have_baseline && !SOAK_SANITIZED &&
               end->rss_kib > base->rss_kib + rss_margin_kib(base->rss_kib)) {
        snprintf(text, cap, "RSS grew from %ld KiB to %ld KiB (margin %ld KiB)", base->rss_kib,
                 end->rss_kib, rss_margin_kib(base->rss_kib));
    } else if (have_baseline && base->heap_kib >= 0 &&
               end->heap_kib > base->heap_kib + heap_margin_kib(base->heap_kib)) {
        snprintf(text, cap, "heap in use grew from %ld KiB to %ld KiB (margin %ld KiB)",
                 base->heap_kib, end->heap_kib, heap_margin_kib(base->heap_kib));
    } else {
        return NULL;
    }
    return text;
}

static void print_result(const char *reason, bool have_baseline, const struct figures *base,
                         const struct figures *end)
{
    if (reason) {
        printf("soak: FAIL %s\n", reason);
        return;
    }
    printf("soak: PASS seconds=%g seed=%llu connects=%llu echoed_bytes=%llu abandoned_bytes=%llu "
           "calls=%llu ok=%llu interrupted=%llu cancelled=%llu resets=%llu drops=%llu ",
           g.seconds, g.seed, get(&g.c.connects), get(&g.c.bytes_echoed),
           get(&g.c.bytes_abandoned), get(&g.c.calls), get(&g.c.calls_ok),
           get(&g.c.calls_interrupted), get(&g.c.calls_cancelled), get(&g.c.resets),
           get(&g.c.server_drops));
    if (have_baseline)
        printf("rss_kib=%ld->%ld%s heap_kib=%ld->%ld fds=%d->%d\n", base->rss_kib, end->rss_kib,
               SOAK_SANITIZED ? "(unchecked:sanitizer)" : "", base->heap_kib, end->heap_kib,
               base->fds, end->fds); /* heap -1: unknown (sanitizer or not glibc) */
    else
        printf("(run shorter than the warm-up: growth not checked)\n");
}

/* ---- setup, the run, teardown ------------------------------------------------------------- */

static int setup(void)
{
    int rc = net_loop_thread_start("soak-srv", NULL, NULL, &g.server_thread);
    for (int i = 0; rc == 0 && i < CLIENT_LOOPS; i++)
        rc = net_loop_thread_start("soak-cli", NULL, NULL, &g.client_threads[i]);
    if (rc < 0)
        return rc;
    net_loop_t *loop = net_loop_thread_loop(g.server_thread);
    run_on_loop(loop, servers_create, loop);
    return g.setup_rc;
}

static void teardown(void)
{
    if (g.server_thread) {
        net_loop_t *loop = net_loop_thread_loop(g.server_thread);
        run_on_loop(loop, servers_stop, NULL);
        pthread_mutex_lock(&g.mu);
        while (g.servers_stopped < (g.echo != NULL) + (g.rpc != NULL))
            pthread_cond_wait(&g.cv, &g.mu);
        pthread_mutex_unlock(&g.mu);
        run_on_loop(loop, servers_free, NULL);
    }
    for (int i = 0; i < CLIENT_LOOPS; i++)
        net_loop_thread_join(g.client_threads[i]);
    net_loop_thread_join(g.server_thread);
}

static struct load *start_load(void)
{
    struct load *loads = calloc((size_t)g.threads, sizeof *loads);
    for (int i = 0; loads && i < g.threads; i++) {
        struct load *L = &loads[i];
        L->index = i;
        L->rng = g.seed + (uint64_t)i * 0x632BE59BD9B4E019ull;
        L->out = malloc(CHUNK);
        L->in = malloc(CHUNK);
        if (!L->out || !L->in || pthread_create(&L->tid, NULL, load_main, L) != 0) {
            fprintf(stderr, "soak: FAIL cannot start load thread %d\n", i);
            exit(1);
        }
    }
    return loads;
}

static void stop_load(struct load *loads)
{
    atomic_store(&g.stop, true);
    request_pause(false);
    for (int i = 0; i < g.threads; i++)
        pthread_join(loads[i].tid, NULL);
}

/* After the last measurement, so that it sees the same buffers as the
 * baseline did. */
static void free_load(struct load *loads)
{
    for (int i = 0; i < g.threads; i++) {
        free(loads[i].out);
        free(loads[i].in);
    }
    free(loads);
}

/* Reports every interval; takes the baseline once the warm-up is over. */
static bool run(double warmup, struct figures *base)
{
    uint64_t t0 = now_ms(), end = t0 + (uint64_t)(g.seconds * 1000);
    uint64_t warm = t0 + (uint64_t)(warmup * 1000);
    uint64_t next = t0 + (uint64_t)(g.interval * 1000);
    bool have_baseline = false, want_baseline = warmup < g.seconds;
    for (uint64_t now = t0; now < end; now = now_ms()) {
        uint64_t wake = next < end ? next : end;
        if (want_baseline && !have_baseline && warm < wake)
            wake = warm;
        sleep_ms(wake > now ? wake - now : 0);
        now = now_ms();
        if (want_baseline && !have_baseline && now >= warm) {
            if (!(have_baseline = quiesce(g.threads, base)))
                break;
            char heap[32];
            printf("soak: baseline after %.1fs warm-up: rss=%ldKiB (%ldKiB before malloc_trim) "
                   "heap=%s fds=%d\n",
                   (double)(now - t0) / 1000, base->rss_kib, base->raw_rss_kib,
                   kib_text(base->heap_kib, heap, sizeof heap), base->fds);
        }
        if (now >= next) {
            print_sample((double)(now - t0) / 1000);
            next += (uint64_t)(g.interval * 1000);
        }
    }
    return have_baseline;
}

static int usage(void)
{
    fprintf(stderr, "usage: soak [--seconds N] [--seed S] [--threads T] [--interval I]\n"
                    "  defaults N=30 S=random (printed) T=4 I=2\n");
    return 2;
}

static bool parse_double(const char *text, double min, double max, double *out)
{
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end || !(v >= min && v <= max))
        return false;
    *out = v;
    return true;
}

static int parse_args(int argc, char **argv)
{
    double threads = 4;
    g.seconds = 30, g.interval = 2;
    g.seed = (unsigned long long)time(NULL) * 2654435761u ^ (unsigned long long)getpid();
    uint64_t seed = g.seed;
    for (int i = 1; i < argc; i += 2) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = v != NULL;
        if (ok && strcmp(argv[i], "--seconds") == 0)
            ok = parse_double(v, 1, 7 * 86400, &g.seconds);
        else if (ok && strcmp(argv[i], "--interval") == 0)
            ok = parse_double(v, 0.1, 3600, &g.interval);
        else if (ok && strcmp(argv[i], "--threads") == 0)
            ok = parse_double(v, 1, 64, &threads) && threads == (int)threads;
        else if (ok && strcmp(argv[i], "--seed") == 0)
            ok = parse_uint(v, 0, UINT64_MAX, &seed);
        else
            ok = false;
        if (!ok)
            return usage();
    }
    g.threads = (int)threads;
    g.seed = seed;
    return 0;
}

int main(int argc, char **argv)
{
    int rc = parse_args(argc, argv);
    if (rc)
        return rc;
    signal(SIGPIPE, SIG_IGN);
    pin_malloc_thresholds();
    if (!getenv("NETLOOP_LOG")) /* the bad frames we send would log warnings */
        net_log_set_level(NET_LOG_ERROR);
    double warmup = g.seconds / 4 > MIN_WARMUP_S ? g.seconds / 4 : MIN_WARMUP_S;
    if ((rc = setup()) < 0) {
        printf("soak: FAIL setup: %s\n", net_strerror(rc));
        teardown();
        return 1;
    }
    printf("soak: seed=%llu seconds=%g threads=%d warmup=%.1fs rss_margin=max(%dKiB,%d%%)%s "
           "heap_margin=max(%dKiB,%d%%)%s fd_slack=%d\n",
           g.seed, g.seconds, g.threads, warmup, RSS_MARGIN_KIB, RSS_MARGIN_PCT,
           SOAK_SANITIZED ? "(not applied: sanitizer)" : "", HEAP_MARGIN_KIB, HEAP_MARGIN_PCT,
           heap_in_use_kib() < 0 ? "(unknown here)" : "", FD_SLACK);
    struct figures base = {0}, end = {0};
    struct load *loads = start_load();
    bool have_baseline = run(warmup, &base);
    stop_load(loads);
    bool settled = quiesce(0, &end);
    print_sample((double)g.seconds);
    char text[512];
    if (settled)
        printf("soak: after the load: rss=%ldKiB (%ldKiB before malloc_trim) heap=%s fds=%d\n",
               end.rss_kib, end.raw_rss_kib, kib_text(end.heap_kib, text, sizeof text), end.fds);
    free_load(loads);
    teardown();
    const char *reason = verdict(have_baseline && settled, &base, &end, text, sizeof text);
    print_result(reason, have_baseline && settled, &base, &end);
    return reason ? 1 : 0;
}
