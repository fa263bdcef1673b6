/* A loop's timers: a heap by due time, a table by id, one timerfd armed for
 * the earliest. Guarded by a mutex so that add and cancel work from any
 * thread and take effect at once (cancel can promise the callback will not
 * start); the lock is never held while a callback runs. */
#ifndef NET__TIMER_QUEUE_H
#define NET__TIMER_QUEUE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "loop/channel.h"
#include "loop/timer_heap.h"

struct net__timer_queue {
    pthread_mutex_t mu;
    net_loop_t *loop;          /* passed to the callbacks */
    struct net__timer_heap heap;
    /* id -> timer. The table has no lock of its own: mu serializes every
     * use, from whichever thread adds or cancels. */
    struct net__id_table ids;
    int64_t armed_ns;          /* what the timerfd is set to; 0 when disarmed */
    struct net__timer *running;
    bool running_cancelled;
    struct net__channel ch;    /* the timerfd, registered by the loop */
    /* Callbacks called. Written by the loop thread only (a relaxed load and
     * store, no RMW), read by any thread (net_loop_stats): relaxed, since a
     * reader wants the count, not the memory the callbacks wrote. */
    atomic_ullong fired;
};

/* loop is what the callbacks are passed. */
int net__timer_queue_init(struct net__timer_queue *tq, net_loop_t *loop);
/* Frees every timer without calling it. */
void net__timer_queue_destroy(struct net__timer_queue *tq);
net_timer_id_t net__timer_queue_add(struct net__timer_queue *tq, int64_t when_ns,
                                    int64_t interval_ns, net_timer_fn fn, void *arg);
int net__timer_queue_cancel(struct net__timer_queue *tq, net_timer_id_t id);
size_t net__timer_queue_count(struct net__timer_queue *tq);

/* CLOCK_MONOTONIC in nanoseconds, and saturating arithmetic on it. */
int64_t net__mono_ns(void);
int64_t net__ns_add(int64_t a, uint64_t b);
int64_t net__ms_to_ns(uint64_t ms);

#endif
