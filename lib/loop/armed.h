/* An "armed once" loop task: work an object hands to its loop from any
 * thread at most once at a time, with no allocation (the task is embedded
 * in the object and posted with net__loop_post), so it cannot fail for want
 * of memory. Arming an armed task does nothing: the run already pending
 * will see whatever state the second arm wanted to report.
 *
 * Every "atomic flag plus queued functor" of the library is one of these:
 * a connection's flush, an RPC session's kick, a client's report, an
 * object's close and its final release. */
#ifndef NET__ARMED_H
#define NET__ARMED_H

#include <stdatomic.h>
#include <stdbool.h>

#include "loop/loop_internal.h"

struct net__armed {
    struct net__loop_task task;
    net_loop_t *loop;
    net_loop_fn fn;
    void *arg;
    atomic_bool armed;
};

/* The trampoline: disarms, then runs fn. Disarming first (seq_cst, like
 * the arm's exchange) means an arm that comes after fn has read its state
 * posts again: no wanted run is lost. Nothing touches `a` after fn, so fn
 * may free the memory holding it. */
static inline void net__armed_cb(void *arg)
{
    struct net__armed *a = arg;
    net_loop_fn fn = a->fn;
    void *fn_arg = a->arg;
    atomic_store(&a->armed, false);
    fn(fn_arg);
}

/* Sets up a disarmed task that runs fn(arg) on loop. */
static inline void net__armed_init(struct net__armed *a, net_loop_t *loop, net_loop_fn fn,
                                   void *arg)
{
    a->task = (struct net__loop_task){.fn = net__armed_cb, .arg = a};
    a->loop = loop;
    a->fn = fn;
    a->arg = arg;
    atomic_init(&a->armed, false);
}

/* Posts the task unless it is armed already; never runs fn inside this
 * call, even on the loop thread. Returns true when this call armed it.
 * Thread-safe. */
static inline bool net__armed_arm(struct net__armed *a)
{
    if (atomic_exchange(&a->armed, true))
        return false;
    net__loop_post(a->loop, &a->task);
    return true;
}

/* True while posted and not yet started. Thread-safe (a snapshot). */
static inline bool net__armed_pending(struct net__armed *a)
{
    return atomic_load(&a->armed);
}

#endif
