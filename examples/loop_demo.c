/* loop_demo: a loop thread pool, a repeating timer and cross-thread functors,
 * stopped by SIGINT/SIGTERM or after --seconds N, 1..86400 (default: run
 * until a signal); prints the base loop's counters (net_loop_stats) at the
 * end. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <net/loop.h>
#include <net/loop_thread.h>
#include <net/signal.h>

#include "parse_uint.h"

struct demo {
    net_loop_t *base;
    net_loop_pool_t *pool;
    int ticks;
};

/* The tick number travels in arg: the pool thread reads no shared state. */
static void hello_cb(void *arg)
{
    printf("  functor on a pool thread (loop %p), tick %d\n", (void *)net_loop_current(),
           (int)(intptr_t)arg);
    fflush(stdout);
}

static void tick_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    struct demo *d = arg;
    d->ticks++;
    printf("tick %d\n", d->ticks);
    fflush(stdout);
    net_loop_run_in_loop(net_loop_pool_next(d->pool), hello_cb, (void *)(intptr_t)d->ticks);
}

static void stop_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)id;
    (void)arg;
    net_loop_quit(loop);
}

static void print_stats(net_loop_t *loop)
{
    struct net_loop_stats st;
    net_loop_stats(loop, &st);
    printf("loop_demo: base loop: %llu iterations, %llu wakeups, %llu functors, %llu timers\n",
           (unsigned long long)st.iterations, (unsigned long long)st.wakeups,
           (unsigned long long)st.functors_run, (unsigned long long)st.timers_fired);
}

int main(int argc, char **argv)
{
    uint64_t seconds = 0; /* 0: until a signal */
    if (argc != 1 && (argc != 3 || strcmp(argv[1], "--seconds") != 0 ||
                      !parse_uint(argv[2], 1, 86400, &seconds))) {
        fprintf(stderr, "usage: loop_demo [--seconds N]   (N: 1..86400)\n");
        return 2;
    }
    struct demo d = {0};
    net_signal_t *sig;
    int rc;
    if ((rc = net_loop_new(&d.base)) < 0 || (rc = net_signal_quit_on_term(d.base, &sig)) < 0 ||
        (rc = net_loop_pool_start(d.base, 2, "demo", NULL, NULL, &d.pool)) < 0) {
        fprintf(stderr, "loop_demo: %s\n", net_strerror(rc));
        return 1;
    }
    printf("loop_demo: %s backend, 2 pool threads; Ctrl-C stops\n", net_loop_backend(d.base));
    fflush(stdout);
    net_loop_run_every(d.base, 500, tick_cb, &d);
    if (seconds)
        net_loop_run_after(d.base, seconds * 1000, stop_cb, NULL);
    rc = net_loop_run(d.base);
    if (rc < 0)
        fprintf(stderr, "loop_demo: %s\n", net_strerror(rc));
    net_loop_pool_join(d.pool);
    net_signal_free(sig);
    printf("loop_demo: stopped after %d ticks\n", d.ticks);
    print_stats(d.base);
    net_loop_free(d.base);
    return rc < 0 ? 1 : 0;
}
