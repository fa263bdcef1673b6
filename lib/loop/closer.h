/* The one lifecycle of the long-lived objects (TCP server and client, RPC
 * server and client): a reference count plus a deferred release.
 *
 * The object holds one reference for itself ("the owner's"); everything
 * that may reach the object after the user let go (a queued task, a timer,
 * a connection, a thread waiting in a sync call) holds one more. Close is
 * accepted once; the object winds down on its loop and then drops the
 * owner's reference. Whoever drops the last one, on whatever thread, arms
 * the final task: it runs `release` on the loop, later, never inside the
 * call that dropped the reference. `release` calls the user's done callback
 * and frees the memory, so "memory goes only in or after done" holds by
 * construction. */
#ifndef NET__CLOSER_H
#define NET__CLOSER_H

#include <stdatomic.h>
#include <stdbool.h>

#include "loop/armed.h"

struct net__closer {
    atomic_uint refs;
    atomic_bool closing;
    struct net__armed release;
};

/* One reference (the owner's); release(obj) will run on loop. */
static inline void net__closer_init(struct net__closer *c, net_loop_t *loop, net_loop_fn release,
                                    void *obj)
{
    atomic_init(&c->refs, 1);
    atomic_init(&c->closing, false);
    net__armed_init(&c->release, loop, release, obj);
}

/* Relaxed: a new reference is taken from one already held, which keeps the
 * object alive meanwhile; nothing is published by taking it. Thread-safe. */
static inline void net__closer_ref(struct net__closer *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

/* A reference for a thread-safe call that reaches the object holding none
 * (a user's connect or start from another thread, racing with close):
 * taken unless the count already reached zero, when the release is armed
 * and the call must leave the object alone. Returns false then. Once zero
 * the count stays zero, so the release is armed exactly once. Relaxed, as
 * net__closer_ref: the object is alive while the count is not zero.
 * Thread-safe. */
static inline bool net__closer_tryref(struct net__closer *c)
{
    unsigned n = atomic_load_explicit(&c->refs, memory_order_relaxed);
    do {
        if (n == 0)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&c->refs, &n, n + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    return true;
}

/* acq_rel: every holder's writes happen before the release that frees
 * the object (release half), and the release sees them all (acquire half).
 * Thread-safe. */
static inline void net__closer_unref(struct net__closer *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        net__armed_arm(&c->release);
}

/* Accepts the close: true for the first call only. Thread-safe. */
static inline bool net__closer_close(struct net__closer *c)
{
    return !atomic_exchange(&c->closing, true);
}

/* True once close was accepted. Thread-safe (a snapshot). */
static inline bool net__closer_closing(struct net__closer *c)
{
    return atomic_load(&c->closing);
}

#endif
