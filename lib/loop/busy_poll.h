/* Adaptive busy polling: the loop's decision whether to spin (poll without
 * blocking) before it sleeps, and what each spin taught it.
 *
 * A sleeping loop pays a wake-up (the scheduler, often a cross-CPU IPI)
 * for every event; on a latency-bound load (one call in flight) that is
 * most of the round trip. Spinning for a few microseconds after work
 * catches the next event awake. It is worth it only while a core is free
 * for the spinner, so it backs off in these ways:
 *   - budget: an episode that finds nothing halves the next episode's
 *     budget (down to an eighth of the option); one that finds work
 *     restores it. A loop going idle stops paying for spins quickly.
 *     When half of the last 16 episodes missed, spinning pauses as below:
 *     besides work that comes too seldom, this is what two threads that
 *     ping each other on one CPU look like (the scheduler keeps them
 *     together), where each spin only delays the peer it waits for.
 *   - descheduling: a gap between two of an episode's polls far longer
 *     than a poll takes, with the thread's count of involuntary context
 *     switches gone up, means it lost its CPU to another runnable thread.
 *     Spinning then only takes CPU time from whoever would produce the
 *     work (the sched_yield spin that fell to 0.45x beside other load), so
 *     spinning pauses for a cool-down that doubles while this keeps
 *     happening (1 ms to 256 ms) and starts again at 1 ms once it has not
 *     happened for a second. A sleeping thread, on the other hand, is
 *     woken ahead of a CPU hog, so paused is exactly "off".
 *     A gap without a context switch is an interrupt or, in a virtual
 *     machine, the host running another guest on our virtual CPU (steal
 *     time): no thread of ours wanted the CPU, so it does not count.
 *   - a full host: being preempted is found only after the fact, and each
 *     time costs the spinner a whole time slice (milliseconds) that a
 *     sleeping thread would not have lost. So before spinning, at most once
 *     a millisecond, the loop reads how many threads the host has runnable
 *     (/proc/loadavg, ~1 us): more than there are CPUs at most of the last
 *     checks means no CPU is idle, and a spin would only take one from a
 *     thread that wants it; spinning then pauses as after a preemption.
 *
 * Only the loop thread touches this, except the option (any thread sets
 * it) and the counters (any thread reads them). */
#ifndef NET__BUSY_POLL_H
#define NET__BUSY_POLL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <net/loop.h>

struct net__busy_poll {
    atomic_uint max_us;     /* the option; 0: off. Relaxed: a plain setting */
    bool after_work;        /* the last iteration found work */
    int64_t budget_ns;      /* this episode's budget, <= max_us */
    int64_t cool_ns;        /* the next cool-down's length */
    int64_t cool_until_ns;  /* no spinning before this */
    int64_t last_backoff_ns;
    long nivcsw;            /* involuntary switches seen at the last gap */
    int loadavg_fd;         /* /proc/loadavg; -1: unavailable, -2: not open yet */
    long cpus;              /* online CPUs */
    int64_t next_load_check_ns;
    uint8_t full_checks;    /* the last 8 host checks, 1 bit each: full */
    uint16_t miss_history;  /* the last 16 episodes, 1 bit each: missed */
    atomic_ullong spins, hits, misses, backoffs; /* net__counter_add */
};

/* How an episode ended. */
enum net__spin_end { NET__SPIN_HIT, NET__SPIN_MISS, NET__SPIN_DESCHEDULED };

/* A gap between two polls of one episode longer than this means the thread
 * was descheduled: a non-blocking epoll_wait takes about a microsecond, an
 * interrupt some more, and the scheduler's smallest slice is ~750 us. */
#define NET__SPIN_GAP_NS (100 * 1000)

/* Sets up bp with max_us (0..NET_LOOP_BUSY_POLL_MAX_US). */
void net__busy_poll_init(struct net__busy_poll *bp, unsigned max_us);

/* Releases what bp holds (a descriptor once it has spun). */
void net__busy_poll_destroy(struct net__busy_poll *bp);

/* The NETLOOP_BUSY_POLL_US default for new loops: 0 when unset; a bad
 * value is logged (rate-limited) and taken as 0. */
unsigned net__busy_poll_env(void);

/* Records whether the iteration that just ended found work. */
static inline void net__busy_poll_note(struct net__busy_poll *bp, bool found_work)
{
    bp->after_work = found_work;
}

/* The cheap first test, inline on every iteration: the option is on and
 * the last iteration found work. */
static inline bool net__busy_poll_may_spin(const struct net__busy_poll *bp)
{
    return bp->after_work &&
           atomic_load_explicit((atomic_uint *)&bp->max_us, memory_order_relaxed) != 0;
}

/* True when the loop should spin now rather than sleep: the option is on,
 * the last iteration found work, no cool-down is running and the host has
 * an idle CPU (checked at most once a millisecond). Starts an
 * episode (counts it, fixes its budget) and returns its deadline in
 * *deadline_ns. */
bool net__busy_poll_begin(struct net__busy_poll *bp, int64_t now_ns, int64_t *deadline_ns);

/* Ends the episode begun last: adapts the budget or starts a cool-down. */
void net__busy_poll_end(struct net__busy_poll *bp, enum net__spin_end how, int64_t now_ns);

/* After a gap of more than NET__SPIN_GAP_NS between two polls: true when
 * the thread was preempted meanwhile (its involuntary context switches
 * went up; one getrusage call, only on a gap). */
bool net__busy_poll_was_preempted(struct net__busy_poll *bp);

#endif
