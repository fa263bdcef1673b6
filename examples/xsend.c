/* xsend: benchmark of net_conn_send from threads that are not the
 * connection's loop, by either cross-thread path:
 *   queue: the connection's wait-free write queue (the default path): one
 *          atomic exchange per send, one flush functor per batch;
 *   loop:  each send is a functor carrying its own copy, queued with
 *          net_loop_queue_in_loop() and sent by net_conn_send() on the
 *          connection's loop: one lock round trip per send (the library's
 *          first cross-thread path, kept here for comparison).
 *
 *   xsend --path loop|queue [--threads T] [--size S] [--seconds N]
 *
 * Defaults T = 4, S = 64 (at least 12), N = 3. One process: a server (0 I/O
 * threads) on one loop thread, a net_client connected to it on a second loop
 * thread, and T producer threads that call net_conn_send() on that ONE
 * client connection as fast as they can. Every message starts with (producer
 * id, sequence number) and is filled with a byte derived from them; the
 * server checks every byte and that each producer's sequence arrives in
 * order, once (violation: message on stderr, exit 1). After N seconds the
 * producers stop, every message sent is waited for, and one line is printed:
 *
 *   xsend path=loop threads=T size=S seconds=N msgs=M msgs/s=X
 *       eventfd_writes/msg=Y syscalls/msg=Z
 *
 * M counts every message sent (all of them arrived and were checked), X is M
 * over the time from the start to the last one's arrival, Y the wakeups the
 * producers wrote to the client loop's eventfd per message (the wakeups of
 * net_loop_stats()), Z the system calls of the whole
 * process per message, from the start of the loop threads to the last
 * message's arrival, leaving out sched_yield (a producer's back-off, see
 * below) and clock_nanosleep (the main thread's timing). Z is counted with
 * the kernel's raw_syscalls:sys_enter tracepoint (perf_event_open, inherited
 * by every thread); where that is not allowed (not root and
 * perf_event_paranoid too high, no tracefs) it reads n/a, and
 * tools/bench/xsend_syscalls.sh counts with strace instead.
 *
 * Memory is bounded end to end: a producer with more than
 * IN_FLIGHT_BYTES / T of its messages not yet checked by the server yields
 * the CPU (sched_yield) until the server catches up. (The connection's
 * output_queued counter would do for the queue path, but on the loop path
 * it counts only bytes the loop has already taken from the functor queue;
 * one rule for both keeps the comparison fair.) */
#include <errno.h>
#include <linux/perf_event.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <net/loop.h>
#include <net/loop_thread.h>
#include <net/tcp_client.h>
#include <net/tcp_server.h>

#include "parse_uint.h"

#define HEADER_LEN 12 /* u32 producer id, u64 sequence (host order: one process) */
#define IN_FLIGHT_BYTES (4u << 20)
#define MAX_THREADS 256
#define SETUP_TIMEOUT_MS 5000
#define DRAIN_TIMEOUT_MS 30000

/* One producer's counters: written by one thread, read by another; a cache
 * line each so that producers do not slow each other down. */
struct counter {
    _Alignas(64) atomic_ullong n;
};

static struct {
    unsigned threads;
    size_t size;
    unsigned seconds;
    uint64_t window; /* messages a producer may have in flight */
    bool via_loop;   /* --path loop */

    net_server_t *server;
    net_client_t *client;
    net_conn_t *conn; /* the client side, with a reference */
    atomic_int setup_rc;
    atomic_bool connected, stopping, stop_producers, server_stopped, client_closed;

    struct counter sent[MAX_THREADS];    /* by each producer */
    struct counter checked[MAX_THREADS]; /* by the server, per producer */
    atomic_ullong backoffs;

    uint64_t next_seq[MAX_THREADS]; /* server loop thread only */
} g;

static unsigned char fill_byte(uint32_t id, uint64_t seq)
{
    return (unsigned char)(id * 31u + seq);
}

__attribute__((format(printf, 1, 2))) _Noreturn static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fflush(stderr);
    _exit(1); /* other threads are running: do not run atexit handlers */
}

static void wait_until(atomic_bool *flag, unsigned timeout_ms, const char *what)
{
    struct timespec ms = {0, 1000000};
    for (unsigned i = 0; !atomic_load(flag); i++) {
        if (atomic_load(&g.setup_rc) < 0)
            die("xsend: %s failed\n", what);
        if (i >= timeout_ms)
            die("xsend: timed out waiting for %s\n", what);
        nanosleep(&ms, NULL);
    }
}

/* ---- the receiving side: the server's loop thread ----------------------- */

static void check_message(const unsigned char *p)
{
    uint32_t id;
    uint64_t seq;
    memcpy(&id, p, sizeof id);
    memcpy(&seq, p + 4, sizeof seq);
    if (id >= g.threads)
        die("xsend: message from unknown producer %u\n", id);
    if (seq != g.next_seq[id])
        die("xsend: order violation: producer %u sent seq %llu, expected %llu\n", id,
            (unsigned long long)seq, (unsigned long long)g.next_seq[id]);
    unsigned char b = fill_byte(id, seq);
    for (size_t k = HEADER_LEN; k < g.size; k++)
        if (p[k] != b)
            die("xsend: producer %u seq %llu: corrupt byte at offset %zu\n", id,
                (unsigned long long)seq, k);
    g.next_seq[id]++;
}

static void on_server_message(net_conn_t *conn, net_buf_t *in, uint64_t receive_ms, void *arg)
{
    (void)conn;
    (void)receive_ms;
    (void)arg;
    const unsigned char *p = (const unsigned char *)net_buf_peek(in);
    size_t n = net_buf_readable(in) / g.size;
    for (size_t i = 0; i < n; i++)
        check_message(p + i * g.size);
    net_buf_retrieve(in, n * g.size);
    /* Published once per read, not per message: one store per producer. */
    for (unsigned id = 0; id < g.threads; id++)
        atomic_store_explicit(&g.checked[id].n, g.next_seq[id], memory_order_release);
}

static void server_init(net_loop_t *loop, void *arg)
{
    (void)arg;
    net_addr_t addr;
    struct net_conn_callbacks cbs = {.on_message = on_server_message};
    int rc = net_addr_parse(&addr, "127.0.0.1:0");
    if (rc == 0)
        rc = net_server_new(loop, &addr, NULL, &cbs, &g.server);
    if (rc == 0)
        rc = net_server_start(g.server);
    if (rc < 0) {
        fprintf(stderr, "xsend: server: %s\n", net_strerror(rc));
        atomic_store(&g.setup_rc, rc);
    }
}

static void on_server_stopped(net_server_t *server, void *arg)
{
    (void)server;
    (void)arg;
    atomic_store(&g.server_stopped, true);
}


/* ---- the sending side: the client's loop thread -------------------------- */

static void on_client_connection(net_conn_t *conn, void *arg)
{
    (void)arg;
    if (net_conn_connected(conn)) {
        g.conn = net_conn_ref(conn);
        atomic_store(&g.connected, true);
    } else if (!atomic_load(&g.stopping)) {
        die("xsend: the connection closed during the run\n");
    }
}

static void on_connect_failed(net_client_t *client, int err, bool will_retry, void *arg)
{
    (void)client;
    (void)will_retry;
    (void)arg;
    if (!atomic_load(&g.stopping))
        die("xsend: connect: %s\n", net_strerror(err));
}

static void client_init(net_loop_t *loop, void *arg)
{
    struct net_conn_callbacks cbs = {.on_connection = on_client_connection};
    struct net_client_options opt;
    net_client_options_init(&opt);
    opt.conn.high_water_mark = NET_UNLIMITED; /* the window bounds memory; no callback */
    int rc = net_client_new(loop, net_server_addr(arg), &opt, &cbs, on_connect_failed, NULL,
                            &g.client);
    if (rc == 0)
        rc = net_client_connect(g.client);
    if (rc < 0) {
        fprintf(stderr, "xsend: client: %s\n", net_strerror(rc));
        atomic_store(&g.setup_rc, rc);
    }
}

static void on_client_closed(net_client_t *client, void *arg)
{
    (void)client;
    (void)arg;
    atomic_store(&g.client_closed, true);
}

/* ---- producers ------------------------------------------------------------ */

/* --path loop: one functor per message, with its own copy. */
struct loop_send {
    size_t len;
    unsigned char data[];
};

static void loop_send_cb(void *arg)
{
    struct loop_send *s = arg;
    int rc = net_conn_send(g.conn, s->data, s->len);
    if (rc < 0)
        die("xsend: net_conn_send on the loop: %s\n", net_strerror(rc));
    free(s);
}

static int send_via_loop(const unsigned char *msg, size_t len)
{
    struct loop_send *s = malloc(sizeof *s + len);
    if (!s)
        return -ENOMEM;
    s->len = len;
    memcpy(s->data, msg, len);
    int rc = net_loop_queue_in_loop(net_conn_loop(g.conn), loop_send_cb, s);
    if (rc < 0)
        free(s);
    return rc;
}

static void *producer(void *arg)
{
    uint32_t id = (uint32_t)(uintptr_t)arg;
    unsigned char *msg = malloc(g.size);
    if (!msg)
        die("xsend: out of memory\n");
    uint64_t seq = 0, backoffs = 0;
    while (!atomic_load_explicit(&g.stop_producers, memory_order_relaxed)) {
        if (seq - atomic_load_explicit(&g.checked[id].n, memory_order_acquire) >= g.window) {
            backoffs++;
            sched_yield();
            continue;
        }
        memcpy(msg, &id, sizeof id);
        memcpy(msg + 4, &seq, sizeof seq);
        memset(msg + HEADER_LEN, fill_byte(id, seq), g.size - HEADER_LEN);
        int rc = g.via_loop ? send_via_loop(msg, g.size) : net_conn_send(g.conn, msg, g.size);
        if (rc < 0)
            die("xsend: net_conn_send: %s\n", net_strerror(rc));
        seq++;
    }
    atomic_store(&g.sent[id].n, seq);
    atomic_fetch_add(&g.backoffs, backoffs);
    free(msg);
    return NULL;
}

/* ---- main ------------------------------------------------------------------ */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int usage(void)
{
    fprintf(stderr, "usage: xsend --path loop|queue [--threads T] [--size S] [--seconds N]\n");
    return 2;
}

static int parse_args(int argc, char **argv, const char **path)
{
    g.threads = 4;
    g.size = 64;
    g.seconds = 3;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            return -1;
        const char *v = argv[++i];
        uint64_t n;
        if (strcmp(argv[i - 1], "--path") == 0)
            *path = v;
        else if (strcmp(argv[i - 1], "--threads") == 0 && parse_uint(v, 1, MAX_THREADS, &n))
            g.threads = (unsigned)n;
        else if (strcmp(argv[i - 1], "--size") == 0 &&
                 parse_uint(v, HEADER_LEN, IN_FLIGHT_BYTES, &n))
            g.size = (size_t)n;
        else if (strcmp(argv[i - 1], "--seconds") == 0 && parse_uint(v, 1, 86400, &n))
            g.seconds = (unsigned)n;
        else
            return -1;
    }
    return *path ? 0 : -1;
}

/* Runs the producers for g.seconds, waits for every message to be checked,
 * and returns the messages sent; *elapsed is start to last arrival. */
static uint64_t run_producers(double *elapsed)
{
    pthread_t tids[MAX_THREADS];
    double t0 = now_s();
    for (unsigned i = 0; i < g.threads; i++)
        if (pthread_create(&tids[i], NULL, producer, (void *)(uintptr_t)i) != 0)
            die("xsend: cannot start a producer thread\n");
    struct timespec run = {(time_t)g.seconds, 0};
    while (nanosleep(&run, &run) < 0 && errno == EINTR) {
    }
    atomic_store(&g.stop_producers, true);
    for (unsigned i = 0; i < g.threads; i++)
        pthread_join(tids[i], NULL);
    uint64_t total = 0;
    for (unsigned i = 0; i < g.threads; i++)
        total += atomic_load(&g.sent[i].n);
    struct timespec ms = {0, 1000000}; /* few wakeups: strace counts them */
    for (unsigned i = 0;; i++) {
        uint64_t checked = 0;
        for (unsigned id = 0; id < g.threads; id++)
            checked += atomic_load(&g.checked[id].n);
        if (checked == total)
            break;
        if (i >= DRAIN_TIMEOUT_MS)
            die("xsend: messages still missing after the drain timeout\n");
        nanosleep(&ms, NULL);
    }
    *elapsed = now_s() - t0;
    return total;
}

/* ---- counting system calls -------------------------------------------------- */

/* Opens a counter of this process's system calls (its threads created
 * from now on included), without the benchmark's own sched_yield and
 * clock_nanosleep. Returns the fd, or -1 where the kernel does not allow
 * it. */
static int syscall_counter_open(void)
{
    FILE *f = fopen("/sys/kernel/tracing/events/raw_syscalls/sys_enter/id", "r");
    if (!f)
        f = fopen("/sys/kernel/debug/tracing/events/raw_syscalls/sys_enter/id", "r");
    unsigned long long id;
    bool ok = f && fscanf(f, "%llu", &id) == 1;
    if (f)
        fclose(f);
    if (!ok)
        return -1;
    struct perf_event_attr attr = {.type = PERF_TYPE_TRACEPOINT, .size = sizeof attr,
                                   .config = id, .inherit = 1};
    int fd = (int)syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0);
    if (fd < 0)
        return -1;
    char filter[64];
    snprintf(filter, sizeof filter, "id != %d && id != %d", SYS_sched_yield,
             SYS_clock_nanosleep);
    if (ioctl(fd, PERF_EVENT_IOC_SET_FILTER, filter) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static long long syscall_counter_read(int fd)
{
    uint64_t n;
    return fd >= 0 && read(fd, &n, sizeof n) == (ssize_t)sizeof n ? (long long)n : -1;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    if (parse_args(argc, argv, &path) < 0)
        return usage();
    if (strcmp(path, "loop") != 0 && strcmp(path, "queue") != 0)
        return usage();
    g.via_loop = strcmp(path, "loop") == 0;
    g.window = IN_FLIGHT_BYTES / g.threads / g.size;
    if (g.window == 0)
        g.window = 1;

    int counter = syscall_counter_open();
    net_loop_thread_t *srv, *cli;
    int rc = net_loop_thread_start("xsend-server", server_init, NULL, &srv);
    if (rc < 0 || atomic_load(&g.setup_rc) < 0)
        die("xsend: server thread: %s\n", net_strerror(rc < 0 ? rc : atomic_load(&g.setup_rc)));
    rc = net_loop_thread_start("xsend-client", client_init, g.server, &cli);
    if (rc < 0)
        die("xsend: client thread: %s\n", net_strerror(rc));
    wait_until(&g.connected, SETUP_TIMEOUT_MS, "connect");
    net_loop_t *cli_loop = net_loop_thread_loop(cli);

    struct net_loop_stats st0, st1;
    net_loop_stats(cli_loop, &st0);
    double elapsed;
    uint64_t msgs = run_producers(&elapsed);
    net_loop_stats(cli_loop, &st1);
    unsigned long long wakeups = st1.wakeups - st0.wakeups;
    long long calls = syscall_counter_read(counter);
    char per_msg[32] = "n/a";
    if (calls >= 0 && msgs)
        snprintf(per_msg, sizeof per_msg, "%.4f", (double)calls / (double)msgs);

    printf("xsend path=%s threads=%u size=%zu seconds=%u msgs=%llu msgs/s=%.0f "
           "eventfd_writes/msg=%.6f syscalls/msg=%s\n",
           path, g.threads, g.size, g.seconds, (unsigned long long)msgs, (double)msgs / elapsed,
           msgs ? (double)wakeups / (double)msgs : 0.0, per_msg);
    fflush(stdout);
    fprintf(stderr, "xsend: eventfd_writes=%llu producer_backoffs=%llu window=%llu msgs/producer\n",
            wakeups, (unsigned long long)atomic_load(&g.backoffs),
            (unsigned long long)g.window);

    /* Teardown: the client first (the server then sees EOF), then the server. */
    atomic_store(&g.stopping, true);
    net_conn_unref(g.conn);
    net_client_close(g.client, 0, on_client_closed, NULL); /* thread-safe */
    wait_until(&g.client_closed, SETUP_TIMEOUT_MS, "the client to close");
    net_loop_thread_join(cli);
    net_server_close(g.server, 100, on_server_stopped, NULL);
    wait_until(&g.server_stopped, SETUP_TIMEOUT_MS, "the server to close");
    net_loop_thread_join(srv);
    return 0;
}
