/* The loop's private state and the internal API the rest of the library
 * (connections, acceptor, signals) uses to register channels. */
#ifndef NET__LOOP_INTERNAL_H
#define NET__LOOP_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include <net/loop.h>

#include "loop/alloc_internal.h"
#include "loop/busy_poll.h"
#include "loop/channel.h"
#include "loop/counter.h"
#include "loop/functor_queue.h"
#include "loop/poller.h"
#include "loop/timer_queue.h"

struct net_loop {
    const struct net__poller_ops *ops;
    struct net__poller *poller;
    struct net__channel wakeup;  /* eventfd */
    struct net__timer_queue timers;
    struct net__fqueue functors;
    _Atomic(struct net__loop_task *) posted; /* net__loop_post: a LIFO stack */
    /* Set by the producer that writes the eventfd, cleared by the loop just
     * before it takes the batch: many producers between two batches cost one
     * eventfd write. */
    atomic_bool wakeup_pending;
    atomic_bool quit;
    bool running;
    struct net__busy_poll busy; /* the option and its back-off state */
    /* The batch being dispatched, so removing a channel can drop its
     * not-yet-delivered event (the channel may be freed right after). */
    struct net__ready *ready;
    int nready, ready_pos;
    /* Counters for net_loop_stats. eventfd_writes is added to by the
     * producers that wake the loop (an RMW: several may race); the others
     * only by the loop thread (net__counter_add). All relaxed: a reader
     * wants the counts, not what the counted work wrote. */
    atomic_ullong eventfd_writes;
    atomic_ullong iterations;
    atomic_ullong functors_run;
    uint64_t now_ms; /* net_now_ms() when the last wait returned */
    char *scratch;   /* NET__LOOP_SCRATCH bytes, made on first use */
};

/* A loop-thread buffer for short-lived use inside one callback (the write
 * path stages small messages in it). */
#define NET__LOOP_SCRATCH (64 * 1024)

/* The loop's scratch buffer, NULL without memory. Loop thread only. */
static inline char *net__loop_scratch(net_loop_t *loop)
{
    if (!loop->scratch)
        loop->scratch = net__malloc(NET__LOOP_SCRATCH);
    return loop->scratch;
}

/* The time the current iteration's wait returned: per-event timestamps
 * without a clock read per event (libuv caches "now" the same way).
 * Loop thread only. */
static inline uint64_t net__loop_now_ms(const net_loop_t *loop)
{
    return loop->now_ms;
}

/* Registers/updates/unregisters a channel. Loop thread only. */
int net__loop_add_channel(net_loop_t *loop, struct net__channel *ch);
int net__loop_update_channel(net_loop_t *loop, struct net__channel *ch);
void net__loop_remove_channel(net_loop_t *loop, struct net__channel *ch);

/* Work for the loop that brings its own storage, so posting it cannot fail
 * (net_loop_queue_in_loop needs memory when its vector grows). For what
 * must reach the loop even without memory: a connection's flush. The owner
 * posts a task at most once until it has run; it runs once, on the loop,
 * with the queued functors, and may post itself again from inside fn. */
struct net__loop_task {
    struct net__loop_task *next;
    net_loop_fn fn;
    void *arg;
};

/* Posts t (fn and arg set by the caller) to run on the loop soon; wakes the
 * loop when called from another thread. Lock-free. Thread-safe. */
void net__loop_post(net_loop_t *loop, struct net__loop_task *t);

/* Tasks posted and not yet taken. Walks the list: only while the loop
 * cannot take it (its thread, or parked; for tests). */
size_t net__loop_posted_count(net_loop_t *loop);

/* Wakes the loop from another thread (coalesced). Thread-safe. */
void net__loop_wakeup(net_loop_t *loop);

/* Eventfd writes made so far (for the benchmarks). Thread-safe. */
unsigned long long net__loop_eventfd_writes(net_loop_t *loop);

#endif
