/* loop_bench: how fast the functor queue and the timers are.
 *
 *   loop_bench [--seconds N]
 *
 * For 1 and 4 producer threads: functors/s through net_loop_run_in_loop into
 * one loop, and eventfd writes per functor (wakeup batching). Then the timer
 * add+cancel rate on the loop thread. Benchmarks only: nothing is asserted. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <net/loop.h>

static struct {
    net_loop_t *loop;
    atomic_bool stop;
    atomic_ullong queued;
    unsigned long long ran;
} bench;

static void count(void *arg)
{
    (void)arg;
    bench.ran++;
}

static void *producer(void *arg)
{
    (void)arg;
    unsigned long long n = 0;
    while (!atomic_load_explicit(&bench.stop, memory_order_relaxed)) {
        /* Check the flag every 64 sends: the check must not dominate. */
        for (int i = 0; i < 64; i++)
            if (net_loop_run_in_loop(bench.loop, count, NULL) == 0)
                n++;
    }
    atomic_fetch_add(&bench.queued, n);
    return NULL;
}

static void stop_producers_cb(void *arg)
{
    (void)arg;
    atomic_store(&bench.stop, true);
    net_loop_quit(bench.loop);
}

static void stop_producers_timer_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    stop_producers_cb(arg);
}

static uint64_t wakeups(void)
{
    struct net_loop_stats st;
    net_loop_stats(bench.loop, &st);
    return st.wakeups;
}

static void run_functors(int threads, double seconds)
{
    bench.ran = 0;
    atomic_store(&bench.queued, 0);
    atomic_store(&bench.stop, false);
    uint64_t writes0 = wakeups();
    pthread_t t[64];
    uint64_t start = net_now_ms();
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, producer, NULL);
    net_loop_run_after(bench.loop, (uint64_t)(seconds * 1000), stop_producers_timer_cb, NULL);
    net_loop_run(bench.loop);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    /* Run the stragglers so ran == queued, then time everything. */
    while (bench.ran < atomic_load(&bench.queued)) {
        net_loop_queue_in_loop(bench.loop, stop_producers_cb, NULL);
        net_loop_run(bench.loop);
    }
    double elapsed = (double)(net_now_ms() - start) / 1000.0;
    uint64_t writes = wakeups() - writes0;
    printf("run_in_loop producers=%d functors=%llu functors/s=%.0f eventfd_writes/functor=%.4f\n",
           threads, bench.ran, (double)bench.ran / elapsed,
           bench.ran ? (double)writes / (double)bench.ran : 0.0);
}

static void never_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    abort();
}

static void run_timers(double seconds)
{
    unsigned long long n = 0;
    uint64_t start = net_now_ms(), deadline = start + (uint64_t)(seconds * 1000);
    while (net_now_ms() < deadline) {
        for (int i = 0; i < 1024; i++) {
            net_timer_id_t id = net_loop_run_after(bench.loop, 60000, never_cb, NULL);
            if (id < 0 || net_timer_cancel(bench.loop, id) < 0) {
                fprintf(stderr, "timer add/cancel failed\n");
                exit(1);
            }
        }
        n += 1024;
    }
    double elapsed = (double)(net_now_ms() - start) / 1000.0;
    printf("timer add+cancel pairs=%llu pairs/s=%.0f\n", n, (double)n / elapsed);
}

/* The whole text as a number in [min, max]: atof would take "abc" as 0 and
 * "2s" as 2 without a word. */
static bool parse_number(const char *text, double min, double max, double *out)
{
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end || !(v >= min && v <= max))
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    double seconds = 2.0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") != 0 || i + 1 >= argc ||
            !parse_number(argv[++i], 0.1, 3600, &seconds)) {
            fprintf(stderr, "usage: loop_bench [--seconds N]   (N: 0.1..3600, default 2)\n");
            return 2;
        }
    }
    if (net_loop_new(&bench.loop) < 0)
        return 1;
    printf("backend=%s seconds=%.1f\n", net_loop_backend(bench.loop), seconds);
    run_functors(1, seconds);
    run_functors(4, seconds);
    run_timers(seconds);
    net_loop_free(bench.loop);
    return 0;
}
