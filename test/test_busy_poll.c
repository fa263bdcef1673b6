/* Busy polling: the option, its environment default, that a spinning loop
 * keeps every guarantee (functors exactly once and in order, quit), that an
 * idle loop goes to sleep, and that it backs off when its spins keep
 * missing, when its thread is preempted or when the host has no idle CPU. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <net/loop.h>

#include "net_test_util.h"
#include "loop/loop_internal.h"

static struct net_loop_busy_poll_stats bp_stats(net_loop_t *loop)
{
    struct net_loop_busy_poll_stats st;
    net_loop_busy_poll_stats(loop, &st);
    return st;
}

static bool backed_off(void *loop)
{
    return bp_stats(loop).backoffs > 0;
}

/* The host-load check reads the whole machine; the scenarios that count
 * spins turn it off so their result does not depend on what else runs. */
static void ignore_host_load(net_loop_t *loop)
{
    loop->busy.cpus = 0;
}

/* Every episode ends once: as a hit, a miss or a preemption back-off (the
 * host-load back-offs start none). Read on the loop thread after run. */
static void check_episodes_add_up(net_loop_t *loop)
{
    struct net_loop_busy_poll_stats st = bp_stats(loop);
    CHECK(st.hits + st.misses <= st.spins);
    CHECK(st.spins <= st.hits + st.misses + st.backoffs);
}

TEST(busy_poll_option_set_get_and_limits)
{
    unsetenv("NETLOOP_BUSY_POLL_US");
    net_loop_t *loop = net_test_new_loop(5000);
    CHECK_EQ(net_loop_busy_poll(loop), 0u);
    CHECK_OK(net_loop_set_busy_poll(loop, 50));
    CHECK_EQ(net_loop_busy_poll(loop), 50u);
    CHECK_EQ(net_loop_set_busy_poll(loop, NET_LOOP_BUSY_POLL_MAX_US + 1), -EINVAL);
    CHECK_EQ(net_loop_busy_poll(loop), 50u);
    CHECK_OK(net_loop_set_busy_poll(loop, NET_LOOP_BUSY_POLL_MAX_US));
    CHECK_EQ(net_loop_busy_poll(loop), (unsigned)NET_LOOP_BUSY_POLL_MAX_US);
    CHECK_EQ(net_loop_set_busy_poll(NULL, 10), -EINVAL);
    CHECK_OK(net_loop_set_busy_poll(loop, 0));
    CHECK_EQ(net_loop_busy_poll(loop), 0u);
    struct net_loop_busy_poll_stats st = bp_stats(loop);
    CHECK_EQ(st.spins + st.hits + st.misses + st.backoffs, 0u);
    net_loop_free(loop);
}

static unsigned default_with_env(const char *value)
{
    setenv("NETLOOP_BUSY_POLL_US", value, 1);
    net_loop_t *loop;
    CHECK_OK(net_loop_new(&loop));
    unsigned us = net_loop_busy_poll(loop);
    CHECK_OK(net_loop_free(loop));
    return us;
}

TEST(busy_poll_env_sets_the_default)
{
    CHECK_EQ(default_with_env("75"), 75u);
    CHECK_EQ(default_with_env("10000"), 10000u);
    CHECK_EQ(default_with_env("0"), 0u);
    CHECK_EQ(default_with_env("10001"), 0u); /* out of range: off */
    CHECK_EQ(default_with_env("-5"), 0u);
    CHECK_EQ(default_with_env("50us"), 0u);
    CHECK_EQ(default_with_env(""), 0u);
    unsetenv("NETLOOP_BUSY_POLL_US");
}

/* ---- a producer thread in ping-pong with a spinning loop ---------------- */

#define PINGS 5000

static struct {
    net_loop_t *loop;
    atomic_int ran;     /* functors run; the producer waits for each */
    int next;           /* the sequence number the next functor must carry */
    struct net__loop_task task;
    atomic_int task_runs;
} pp;

/* Keeps the loop spinning after every functor: this test is about what
 * arrives during spins, and on a loaded host (the suite runs in parallel)
 * the back-offs would otherwise pause spinning for most of the run. Runs
 * on the loop thread, the only one that touches this state. */
static void never_pause(net_loop_t *loop)
{
    loop->busy.cool_until_ns = 0;
    loop->busy.miss_history = 0;
}

static void ping_functor(void *arg)
{
    CHECK_EQ((int)(intptr_t)arg, pp.next);
    pp.next++;
    never_pause(pp.loop);
    atomic_fetch_add(&pp.ran, 1);
}

static void ping_task(void *arg)
{
    (void)arg;
    atomic_fetch_add(&pp.task_runs, 1);
}

static void *ping_producer(void *arg)
{
    (void)arg;
    for (int i = 0; i < PINGS; i++) {
        CHECK_OK(net_loop_queue_in_loop(pp.loop, ping_functor, (void *)(intptr_t)i));
        if (i % 16 == 0) { /* and the allocation-free task path */
            int before = atomic_load(&pp.task_runs);
            net__loop_post(pp.loop, &pp.task);
            while (atomic_load(&pp.task_runs) == before)
                sched_yield();
        }
        while (atomic_load(&pp.ran) <= i)
            sched_yield();
    }
    net_loop_quit(pp.loop);
    return NULL;
}

/* One ping-pong on a fresh loop; checks every functor and task ran once
 * and in order, and returns the spins that found work. */
static uint64_t ping_pong_once(void)
{
    pp.loop = net_test_new_loop(30000);
    ignore_host_load(pp.loop);
    atomic_store(&pp.ran, 0);
    atomic_store(&pp.task_runs, 0);
    pp.next = 0;
    pp.task = (struct net__loop_task){.fn = ping_task};
    CHECK_OK(net_loop_set_busy_poll(pp.loop, 1000));
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, ping_producer, NULL), 0);
    CHECK_OK(net_loop_run(pp.loop));
    pthread_join(t, NULL);
    CHECK_EQ(atomic_load(&pp.ran), PINGS);
    CHECK_EQ(atomic_load(&pp.task_runs), (PINGS + 15) / 16);
    struct net_loop_busy_poll_stats st = bp_stats(pp.loop);
    CHECK(st.spins > 0);
    check_episodes_add_up(pp.loop);
    net_loop_free(pp.loop);
    return st.hits;
}

/* The functors must come while the loop spins (hits), or the test proves
 * nothing about spinning. On a loaded host the producer may not get a CPU
 * during a whole run's spins, so it gets a few tries; every try checks
 * the order. */
TEST(busy_poll_cross_thread_functors_exactly_once_in_order)
{
    uint64_t hits = 0;
    for (int try = 0; try < 5 && hits == 0; try++)
        hits = ping_pong_once();
    CHECK(hits > 0);
}

static void nothing(void *arg)
{
    (void)arg;
}

/* ---- quit while spinning: no eventfd write announces it ----------------- */

static struct {
    net_loop_t *loop;
    atomic_bool quit_sent;
} qs;

static void keep_busy(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop, (void)id, (void)arg; /* firing is the work that starts a spin */
}

static void *quit_when_spinning(void *arg)
{
    (void)arg;
    while (bp_stats(qs.loop).spins == 0)
        sched_yield(); /* quit within the 10 ms spin, not after it */
    net_loop_quit(qs.loop);
    atomic_store(&qs.quit_sent, true);
    return NULL;
}

TEST(busy_poll_quit_from_other_thread_while_spinning)
{
    qs.loop = net_test_new_loop(10000);
    ignore_host_load(qs.loop);
    CHECK_OK(net_loop_set_busy_poll(qs.loop, NET_LOOP_BUSY_POLL_MAX_US));
    /* One piece of work, so that one spin follows; the quit comes in it
     * and nothing else would wake the loop after it. */
    CHECK_OK(net_loop_queue_in_loop(qs.loop, nothing, NULL));
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, quit_when_spinning, NULL), 0);
    CHECK_OK(net_loop_run(qs.loop)); /* the watchdog fails a lost quit */
    pthread_join(t, NULL);
    CHECK(atomic_load(&qs.quit_sent));
    check_episodes_add_up(qs.loop);
    net_loop_free(qs.loop);
}

/* ---- an idle loop sleeps -------------------------------------------------- */

static int64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

TEST(busy_poll_idle_loop_goes_to_sleep)
{
    net_loop_t *loop = net_test_new_loop(10000);
    ignore_host_load(loop);
    CHECK_OK(net_loop_set_busy_poll(loop, NET_LOOP_BUSY_POLL_MAX_US));
    CHECK_OK(net_loop_queue_in_loop(loop, nothing, NULL)); /* some work, then none */
    int64_t cpu0 = thread_cpu_ns();
    net_test_run_for(loop, 400);
    int64_t cpu = thread_cpu_ns() - cpu0;
    /* One 10 ms spin after the functor (and one after the timer that ends
     * the run); a loop that kept spinning would have burnt ~400 ms. */
    CHECK(cpu < 150 * 1000000);
    /* The spin ended by running out (or, on a busy host, by a preemption). */
    struct net_loop_busy_poll_stats st = bp_stats(loop);
    CHECK(st.spins >= 1);
    CHECK(st.misses + st.backoffs >= 1);
    check_episodes_add_up(loop);
    net_loop_free(loop);
}

/* ---- spins that keep missing pause ---------------------------------------- */

/* The policy alone, on synthetic times (no scheduler in the way): seven
 * misses among hits do not pause; the eighth of the last sixteen does, for
 * the 1 ms cool-down, and the count starts over after it. */
TEST(busy_poll_pauses_after_half_of_the_last_16_missed)
{
    struct net__busy_poll bp;
    net__busy_poll_init(&bp, 1000);
    bp.cpus = 0; /* no host-load check */
    bp.after_work = true;
    int64_t t = 1000000000, deadline;
    for (int i = 0; i < 16; i++) { /* 7 misses, 9 hits */
        CHECK(net__busy_poll_begin(&bp, t, &deadline));
        net__busy_poll_end(&bp, i % 2 && i < 14 ? NET__SPIN_MISS : NET__SPIN_HIT, t);
        t += 10000;
    }
    CHECK_EQ(net__counter_get(&bp.backoffs), 0u);
    CHECK(net__busy_poll_begin(&bp, t, &deadline));
    net__busy_poll_end(&bp, NET__SPIN_MISS, t); /* the 8th miss of 16 */
    CHECK_EQ(net__counter_get(&bp.backoffs), 1u);
    CHECK(!net__busy_poll_begin(&bp, t + 999999, &deadline)); /* cooling */
    t += 1000000;
    for (int i = 0; i < 7; i++) { /* a fresh count: 7 misses do not pause */
        CHECK(net__busy_poll_begin(&bp, t, &deadline));
        net__busy_poll_end(&bp, NET__SPIN_MISS, t);
        t += 10000;
    }
    CHECK_EQ(net__counter_get(&bp.backoffs), 1u);
    net__busy_poll_destroy(&bp);
}

/* ---- back-off beside a CPU hog on the same CPU ---------------------------- */

static atomic_bool hog_stop;

static void *hog(void *arg)
{
    (void)arg;
    while (!atomic_load_explicit(&hog_stop, memory_order_relaxed)) {
    }
    return NULL;
}

/* Pins the calling thread to the first CPU it may run on; returns it. */
static int pin_to_first_allowed_cpu(void)
{
    cpu_set_t set;
    CHECK_EQ(sched_getaffinity(0, sizeof set, &set), 0);
    int cpu = 0;
    while (!CPU_ISSET(cpu, &set))
        cpu++;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    CHECK_EQ(pthread_setaffinity_np(pthread_self(), sizeof set, &set), 0);
    return cpu;
}

TEST(busy_poll_backs_off_when_preempted_by_a_hog)
{
    net_loop_t *loop = net_test_new_loop(20000);
    ignore_host_load(loop); /* this one is about the preemption check */
    CHECK_OK(net_loop_set_busy_poll(loop, NET_LOOP_BUSY_POLL_MAX_US));
    int cpu = pin_to_first_allowed_cpu();
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    CHECK_EQ(pthread_attr_setaffinity_np(&attr, sizeof set, &set), 0);
    atomic_store(&hog_stop, false);
    pthread_t t;
    CHECK_EQ(pthread_create(&t, &attr, hog, NULL), 0);
    pthread_attr_destroy(&attr);
    /* A timer every millisecond keeps the loop spinning (each firing is
     * work); the hog on its CPU must preempt it, and the gap shows. */
    net_timer_id_t id = net_loop_run_every(loop, 1, keep_busy, NULL);
    CHECK(id > 0);
    net_test_run_until(loop, backed_off, loop);
    atomic_store(&hog_stop, true);
    pthread_join(t, NULL);
    check_episodes_add_up(loop);
    net_timer_cancel(loop, id);
    net_loop_free(loop);
}

/* ---- back-off when the host has no idle CPU ------------------------------- */

#define MAX_HOGS 64

TEST(busy_poll_backs_off_on_a_full_host)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 1 || cpus + 1 > MAX_HOGS)
        SKIP("%ld CPUs: too many to fill with hogs here", cpus);
    net_loop_t *loop = net_test_new_loop(20000);
    CHECK_OK(net_loop_set_busy_poll(loop, NET_LOOP_BUSY_POLL_MAX_US));
    atomic_store(&hog_stop, false);
    pthread_t t[MAX_HOGS];
    for (long i = 0; i < cpus + 1; i++)
        CHECK_EQ(pthread_create(&t[i], NULL, hog, NULL), 0);
    net_timer_id_t id = net_loop_run_every(loop, 1, keep_busy, NULL);
    CHECK(id > 0);
    net_test_run_until(loop, backed_off, loop);
    atomic_store(&hog_stop, true);
    for (long i = 0; i < cpus + 1; i++)
        pthread_join(t[i], NULL);
    check_episodes_add_up(loop);
    net_timer_cancel(loop, id);
    net_loop_free(loop);
}
