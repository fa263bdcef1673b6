/* Adaptive busy polling: when to spin and how it backs off (busy_poll.h).
 * The spin itself is in loop.c: it is the loop's wait. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include "loop/busy_poll.h"
#include "loop/counter.h"
#include "loop/log_internal.h"
#include "loop/loop_internal.h"

#define COOL_MIN_NS (1000 * 1000)            /* 1 ms */
#define COOL_MAX_NS (256 * 1000 * 1000)      /* 256 ms */
#define COOL_FORGET_NS (1000 * 1000 * 1000)  /* a second without: start over */
#define BUDGET_FLOOR_SHIFT 3                 /* misses shrink to max / 8 */
#define LOAD_CHECK_NS (1000 * 1000)          /* host load: once a ms at most */
#define FULL_OF_LAST_8 6                     /* full at 6 of the last 8 checks */
#define MISSES_OF_LAST_16 8                  /* half of the last 16 episodes */

static long involuntary_switches(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_THREAD, &ru) == 0 ? ru.ru_nivcsw : 0;
}

void net__busy_poll_init(struct net__busy_poll *bp, unsigned max_us)
{
    *bp = (struct net__busy_poll){
        .cool_ns = COOL_MIN_NS,
        .nivcsw = involuntary_switches(),
        .loadavg_fd = -2,
        .cpus = sysconf(_SC_NPROCESSORS_ONLN),
    };
    atomic_init(&bp->max_us, max_us);
}

void net__busy_poll_destroy(struct net__busy_poll *bp)
{
    if (bp->loadavg_fd >= 0)
        close(bp->loadavg_fd);
    bp->loadavg_fd = -1;
}

/* Threads runnable on the host now (the 4th field of /proc/loadavg,
 * "R/T"), counting the caller; -1 when it cannot be read. */
static long runnable_threads(struct net__busy_poll *bp)
{
    if (bp->loadavg_fd == -2)
        bp->loadavg_fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    char text[128];
    ssize_t n = bp->loadavg_fd >= 0 ? pread(bp->loadavg_fd, text, sizeof text - 1, 0) : -1;
    if (n <= 0)
        return -1;
    text[n] = '\0';
    long running;
    return sscanf(text, "%*s %*s %*s %ld/", &running) == 1 ? running : -1;
}

/* True when the host had no idle CPU at most of the last 8 checks (a
 * millisecond apart at least). One reading is a snapshot: kernel threads
 * and short-lived wake-ups make ~1 in 10 of them "full" beside two
 * spinning loops on 2 CPUs, and such a blip does not hurt; a host that
 * stays full does. */
static bool host_is_full(struct net__busy_poll *bp, int64_t now_ns)
{
    if (now_ns < bp->next_load_check_ns)
        return false;
    bp->next_load_check_ns = now_ns + LOAD_CHECK_NS;
    bool full = bp->cpus > 0 && runnable_threads(bp) > bp->cpus;
    bp->full_checks = (uint8_t)(bp->full_checks << 1 | full);
    return __builtin_popcount(bp->full_checks) >= FULL_OF_LAST_8;
}

unsigned net__busy_poll_env(void)
{
    const char *text = getenv("NETLOOP_BUSY_POLL_US");
    if (!text || !*text)
        return 0;
    char *end;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (errno || *end || text[0] == '-' || v > NET_LOOP_BUSY_POLL_MAX_US) {
        NET__LOG_RL(NET_LOG_WARN, "NETLOOP_BUSY_POLL_US=%s is not 0..%d; busy polling is off",
                    text, NET_LOOP_BUSY_POLL_MAX_US);
        return 0;
    }
    return (unsigned)v;
}

bool net__busy_poll_was_preempted(struct net__busy_poll *bp)
{
    long now = involuntary_switches();
    bool preempted = now != bp->nivcsw;
    bp->nivcsw = now;
    return preempted;
}

static int64_t max_budget_ns(const struct net__busy_poll *bp)
{
    return (int64_t)atomic_load_explicit(&bp->max_us, memory_order_relaxed) * 1000;
}

static void back_off(struct net__busy_poll *bp, int64_t now_ns)
{
    if (now_ns - bp->last_backoff_ns > COOL_FORGET_NS)
        bp->cool_ns = COOL_MIN_NS; /* contention went away: probe soon */
    bp->cool_until_ns = now_ns + bp->cool_ns;
    if (bp->cool_ns < COOL_MAX_NS)
        bp->cool_ns *= 2;
    bp->last_backoff_ns = now_ns;
    net__counter_add(&bp->backoffs, 1);
}

bool net__busy_poll_begin(struct net__busy_poll *bp, int64_t now_ns, int64_t *deadline_ns)
{
    int64_t max = max_budget_ns(bp);
    if (max == 0 || !bp->after_work || now_ns < bp->cool_until_ns)
        return false;
    if (host_is_full(bp, now_ns)) {
        back_off(bp, now_ns);
        return false;
    }
    /* The option may have changed since the last episode: clamp to it. */
    if (bp->budget_ns == 0 || bp->budget_ns > max)
        bp->budget_ns = max;
    net__counter_add(&bp->spins, 1);
    *deadline_ns = now_ns + bp->budget_ns;
    return true;
}

/* Spins that keep missing are not paying. Either the work comes too
 * seldom, or, the case that matters, the thread that would produce it
 * shares this CPU and cannot run while we spin: the scheduler keeps two
 * threads that wake each other on one CPU, and a spinning one then makes
 * every round trip wait out its peer's budget. Sleeping at once is what
 * lets the peer run, so back off as after a preemption. The history
 * starts over after it, so only new misses count against the next spin. */
static void note_miss(struct net__busy_poll *bp, bool missed, int64_t now_ns)
{
    bp->miss_history = (uint16_t)(bp->miss_history << 1 | missed);
    if (missed && __builtin_popcount(bp->miss_history) >= MISSES_OF_LAST_16) {
        bp->miss_history = 0;
        back_off(bp, now_ns);
    }
}

void net__busy_poll_end(struct net__busy_poll *bp, enum net__spin_end how, int64_t now_ns)
{
    int64_t max = max_budget_ns(bp);
    note_miss(bp, how == NET__SPIN_MISS, now_ns);
    switch (how) {
    case NET__SPIN_HIT:
        bp->budget_ns = max;
        net__counter_add(&bp->hits, 1);
        break;
    case NET__SPIN_MISS:
        if (bp->budget_ns / 2 >= max >> BUDGET_FLOOR_SHIFT)
            bp->budget_ns /= 2;
        net__counter_add(&bp->misses, 1);
        break;
    case NET__SPIN_DESCHEDULED:
        back_off(bp, now_ns);
        break;
    }
}

/* ---- the public option ------------------------------------------------ */

int net_loop_set_busy_poll(net_loop_t *loop, unsigned usec)
{
    if (!loop || usec > NET_LOOP_BUSY_POLL_MAX_US)
        return -EINVAL;
    atomic_store_explicit(&loop->busy.max_us, usec, memory_order_relaxed);
    return 0;
}

unsigned net_loop_busy_poll(const net_loop_t *loop)
{
    return atomic_load_explicit((atomic_uint *)&loop->busy.max_us, memory_order_relaxed);
}

void net_loop_busy_poll_stats(const net_loop_t *loop, struct net_loop_busy_poll_stats *out)
{
    const struct net__busy_poll *bp = &loop->busy;
    *out = (struct net_loop_busy_poll_stats){
        .spins = net__counter_get(&bp->spins),
        .hits = net__counter_get(&bp->hits),
        .misses = net__counter_get(&bp->misses),
        .backoffs = net__counter_get(&bp->backoffs),
    };
}
