/* rpc_client: a tour of the RPC client, run against examples/rpc_server.
 *
 *   rpc_client [--connect HOST:PORT]      default 127.0.0.1:2008
 *
 * One client on one loop thread, used four ways; each part prints a line:
 *   async    10 echo calls started on the loop thread; the outcomes arrive in
 *            callbacks, on that same thread
 *   sync     one blocking echo call from the main thread
 *   threads  4 threads x 1000 blocking echo calls sharing the one client,
 *            every body checked
 *   order    "sleep 200" then "echo" on the same connection: the echo's reply
 *            overtakes the sleep's (replies are matched by call id, not order)
 * Exits 0 when every part passed, 1 otherwise. Every call carries a timeout
 * and every wait a deadline, so it ends in seconds even if the server hangs. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <net/loop_thread.h>
#include <net/rpc.h>

enum {
    CALL_TIMEOUT_MS = 5000,
    WAIT_MS = CALL_TIMEOUT_MS + 1000, /* a call always ends before this */
    ASYNC_CALLS = 10,
    THREADS = 4,
    CALLS_PER_THREAD = 1000,
};

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- waiting for callbacks, with a deadline ------------------------------------- */

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int pending;
};

static void waiter_init(struct waiter *w, int pending)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&w->mu, NULL);
    w->pending = pending;
}

static void waiter_done(struct waiter *w)
{
    pthread_mutex_lock(&w->mu);
    w->pending--;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

/* True when every pending callback ran within ms. */
static bool waiter_wait(struct waiter *w, uint64_t ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += (time_t)(ms / 1000);
    deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    int rc = 0;
    while (w->pending > 0 && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&w->cond, &w->mu, &deadline);
    bool all = w->pending <= 0;
    pthread_mutex_unlock(&w->mu);
    return all;
}

static void waiter_destroy(struct waiter *w)
{
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->mu);
}

/* ---- the demo's state ------------------------------------------------------------ */

struct async_call {
    struct demo *demo;
    char body[32];
};

struct order_call {
    struct demo *demo;
    const char *name;
    uint32_t status;
    int rank;        /* 1 = first to complete */
    uint64_t done_us;
};

/* Lives in main until the client is closed: a callback that outlives a
 * deadline still finds it (the close ends every call, CANCELLED, before
 * its done). */
struct demo {
    net_addr_t addr;
    net_loop_t *loop;
    net_rpc_client_t *client;
    int new_rc;
    struct waiter connected; /* the first on_connected(up) */
    struct waiter closed;    /* the close's done */

    struct waiter async_wait;
    struct async_call async[ASYNC_CALLS];
    atomic_int async_ok;

    atomic_int threads_ok, threads_failed;
    char first_failure[128];
    pthread_mutex_t failure_mu;

    struct waiter order_wait;
    struct order_call order[2];
    atomic_int order_rank;
};

/* ---- part a: async calls from the loop thread ------------------------------------- */

static void async_done(net_rpc_client_t *c, uint32_t status, const void *body, size_t len,
                       void *arg)
{
    (void)c;
    struct async_call *k = arg;
    struct demo *d = k->demo;
    bool ok = status == NET_RPC_OK && net_loop_in_loop_thread(d->loop) &&
              len == strlen(k->body) && memcmp(body, k->body, len) == 0;
    if (ok)
        atomic_fetch_add(&d->async_ok, 1);
    else
        fprintf(stderr, "rpc_client: async \"%s\": %s\n", k->body, net_rpc_status_name(status));
    waiter_done(&d->async_wait);
}

/* A functor on the loop thread: calls started from a callback of the loop
 * are the common case in a server that calls other servers. */
static void async_start(void *arg)
{
    struct demo *d = arg;
    for (int i = 0; i < ASYNC_CALLS; i++) {
        struct async_call *k = &d->async[i];
        k->demo = d;
        snprintf(k->body, sizeof k->body, "async call #%d", i);
        int rc = net_rpc_call(d->client, "echo", k->body, strlen(k->body), CALL_TIMEOUT_MS,
                              async_done, k);
        if (rc < 0) { /* not accepted: no callback will come */
            fprintf(stderr, "rpc_client: async call: %s\n", net_strerror(rc));
            waiter_done(&d->async_wait);
        }
    }
}

static bool part_async(struct demo *d)
{
    if (net_loop_queue_in_loop(d->loop, async_start, d) < 0)
        return false;
    bool all = waiter_wait(&d->async_wait, WAIT_MS);
    int ok = atomic_load(&d->async_ok);
    printf("async:   %d/%d echo calls completed in callbacks on the loop thread%s\n", ok,
           ASYNC_CALLS, all ? "" : " (deadline passed)");
    return all && ok == ASYNC_CALLS;
}

/* ---- part b: one blocking call from the main thread --------------------------------- */

static bool part_sync(struct demo *d)
{
    static const char hello[] = "hello from main";
    uint32_t status;
    void *body;
    size_t len;
    uint64_t t0 = now_us();
    int rc = net_rpc_call_sync(d->client, "echo", hello, sizeof hello - 1, CALL_TIMEOUT_MS,
                               &status, &body, &len);
    uint64_t us = now_us() - t0;
    if (rc < 0) {
        printf("sync:    echo failed: %s\n", net_strerror(rc));
        return false;
    }
    bool ok = status == NET_RPC_OK && len == sizeof hello - 1 && memcmp(body, hello, len) == 0;
    printf("sync:    echo \"%s\" -> \"%.*s\" (%s, %" PRIu64 " us)\n", hello, (int)len,
           body ? (const char *)body : "", net_rpc_status_name(status), us);
    free(body);
    return ok;
}

/* ---- part c: many threads, one client ------------------------------------------------ */

struct caller {
    struct demo *demo;
    int index;
    pthread_t tid;
};

static void note_failure(struct demo *d, const char *what, const char *detail)
{
    atomic_fetch_add(&d->threads_failed, 1);
    pthread_mutex_lock(&d->failure_mu);
    if (!d->first_failure[0])
        snprintf(d->first_failure, sizeof d->first_failure, "%s: %s", what, detail);
    pthread_mutex_unlock(&d->failure_mu);
}

static bool echo_once(struct demo *d, const char *text)
{
    size_t want = strlen(text), len;
    uint32_t status;
    void *body;
    int rc = net_rpc_call_sync(d->client, "echo", text, want, CALL_TIMEOUT_MS, &status, &body,
                               &len);
    if (rc < 0) {
        note_failure(d, text, net_strerror(rc));
        return false;
    }
    bool same = status == NET_RPC_OK && len == want && memcmp(body, text, len) == 0;
    if (!same)
        note_failure(d, text, status == NET_RPC_OK ? "body differs" : net_rpc_status_name(status));
    free(body);
    return same;
}

static void *caller_main(void *arg)
{
    struct caller *t = arg;
    char text[48];
    for (int i = 0; i < CALLS_PER_THREAD; i++) {
        snprintf(text, sizeof text, "thread %d call %d", t->index, i);
        if (echo_once(t->demo, text))
            atomic_fetch_add(&t->demo->threads_ok, 1);
        else if (!net_rpc_client_connected(t->demo->client))
            break; /* no point in 1000 DISCONNECTED */
    }
    return NULL;
}

static bool part_threads(struct demo *d)
{
    struct caller callers[THREADS];
    int started = 0;
    uint64_t t0 = now_us();
    for (; started < THREADS; started++) {
        callers[started] = (struct caller){.demo = d, .index = started};
        if (pthread_create(&callers[started].tid, NULL, caller_main, &callers[started]) != 0)
            break;
    }
    for (int i = 0; i < started; i++)
        pthread_join(callers[i].tid, NULL);
    double s = (double)(now_us() - t0) / 1e6;
    int ok = atomic_load(&d->threads_ok), failed = atomic_load(&d->threads_failed);
    printf("threads: %d x %d sync echo calls on one client: %d ok, %d failed "
           "(%.0f ms, %.0f calls/s)\n",
           THREADS, CALLS_PER_THREAD, ok, failed, s * 1e3, ok / s);
    if (d->first_failure[0])
        printf("         first failure: %s\n", d->first_failure);
    return started == THREADS && ok == THREADS * CALLS_PER_THREAD;
}

/* ---- part d: replies out of order ------------------------------------------------------ */

static void order_done(net_rpc_client_t *c, uint32_t status, const void *body, size_t len,
                       void *arg)
{
    (void)c, (void)body, (void)len;
    struct order_call *k = arg;
    k->status = status;
    k->rank = atomic_fetch_add(&k->demo->order_rank, 1) + 1;
    k->done_us = now_us();
    waiter_done(&k->demo->order_wait);
}

static bool order_call(struct demo *d, struct order_call *k, const char *method,
                       const char *body)
{
    *k = (struct order_call){.demo = d, .name = method};
    int rc = net_rpc_call(d->client, method, body, strlen(body), CALL_TIMEOUT_MS, order_done, k);
    if (rc < 0) {
        fprintf(stderr, "rpc_client: %s: %s\n", method, net_strerror(rc));
        waiter_done(&d->order_wait);
    }
    return rc == 0;
}

static bool part_order(struct demo *d)
{
    uint64_t t0 = now_us();
    /* Ids are given in call order, so the sleep is first on the wire too. */
    bool sent = order_call(d, &d->order[0], "sleep", "200") &&
                order_call(d, &d->order[1], "echo", "after the sleep");
    bool all = waiter_wait(&d->order_wait, WAIT_MS);
    if (!sent || !all) {
        printf("order:   %s\n", sent ? "deadline passed" : "a call was refused");
        return false;
    }
    const struct order_call *first = d->order[0].rank == 1 ? &d->order[0] : &d->order[1];
    const struct order_call *second = first == &d->order[0] ? &d->order[1] : &d->order[0];
    bool overtaken = first == &d->order[1];
    printf("order:   sent sleep 200, then echo; %s finished first (%" PRIu64 " ms, %s), "
           "%s second (%" PRIu64 " ms, %s): %s\n",
           first->name, (first->done_us - t0) / 1000, net_rpc_status_name(first->status),
           second->name, (second->done_us - t0) / 1000, net_rpc_status_name(second->status),
           overtaken ? "replies out of order" : "in order (expected the echo first)");
    return overtaken && d->order[0].status == NET_RPC_OK && d->order[1].status == NET_RPC_OK;
}

/* ---- setup and teardown ---------------------------------------------------------------- */

/* On the loop thread each time the connection comes up or goes down. */
static void on_connected(net_rpc_client_t *client, bool up, void *arg)
{
    (void)client;
    struct demo *d = arg;
    if (up)
        waiter_done(&d->connected);
}

/* Runs on the loop thread before its loop runs: the client belongs there. */
static void create_client(net_loop_t *loop, void *arg)
{
    struct demo *d = arg;
    struct net_rpc_client_options opt;
    net_rpc_client_options_init(&opt);
    opt.client.connect_timeout_ms = 2000;
    opt.on_connected = on_connected;
    opt.arg = d;
    d->loop = loop;
    d->new_rc = net_rpc_client_new(loop, &d->addr, &opt, &d->client);
}

/* The close's done, on the loop thread: the client is gone after it. */
static void client_closed(net_rpc_client_t *client, void *arg)
{
    (void)client;
    waiter_done(&((struct demo *)arg)->closed);
}

static int usage(void)
{
    fprintf(stderr, "usage: rpc_client [--connect HOST:PORT]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *target = "127.0.0.1:2008";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--connect") == 0 && i + 1 < argc)
            target = argv[++i];
        else
            return usage();
    }
    static struct demo d;
    if (net_addr_parse(&d.addr, target) < 0) {
        fprintf(stderr, "rpc_client: bad address %s\n", target);
        return 2;
    }
    pthread_mutex_init(&d.failure_mu, NULL);
    waiter_init(&d.async_wait, ASYNC_CALLS);
    waiter_init(&d.order_wait, 2);
    waiter_init(&d.connected, 1);
    waiter_init(&d.closed, 1);
    net_loop_thread_t *thread;
    int rc = net_loop_thread_start("rpc-client", create_client, &d, &thread);
    if (rc < 0 || d.new_rc < 0) {
        fprintf(stderr, "rpc_client: %s\n", net_strerror(rc < 0 ? rc : d.new_rc));
        net_loop_thread_join(rc < 0 ? NULL : thread);
        return 1;
    }
    /* Not needed for correctness: calls made while connecting wait for the
     * connection. It turns a dead server into one clear line instead of
     * four parts that fail with TIMEOUT. */
    bool ok = waiter_wait(&d.connected, 3000);
    if (!ok)
        printf("connect: %s: not connected after 3 s\n", target);
    else {
        printf("connect: %s\n", target);
        ok = part_async(&d);
        ok = part_sync(&d) && ok;
        ok = part_threads(&d) && ok;
        ok = part_order(&d) && ok;
    }
    /* Close from this thread (close is thread-safe) and keep the loop until
     * the close's done has run; no drain: every call has ended. */
    net_rpc_client_close(d.client, 0, client_closed, &d);
    if (!waiter_wait(&d.closed, WAIT_MS))
        ok = false; /* not closed: the loop thread ends it anyway */
    net_loop_thread_join(thread);
    waiter_destroy(&d.async_wait);
    waiter_destroy(&d.order_wait);
    waiter_destroy(&d.connected);
    waiter_destroy(&d.closed);
    pthread_mutex_destroy(&d.failure_mu);
    printf("%s\n", ok ? "all parts passed" : "FAILED");
    return ok ? 0 : 1;
}
