/* A set of threads waiting for outcomes that one thread delivers in
 * batches, woken with one system call per batch.
 *
 * The RPC client's loop delivers the replies of many synchronous callers
 * per read. Waking each caller on its own semaphore costs the loop a futex
 * call per reply, and on a VM an inter-processor interrupt per reply and a
 * preemption by each woken thread. Here every waiter sleeps on one futex
 * word, on a bit of its own (FUTEX_WAIT_BITSET); the deliverer marks the
 * bits of the outcomes it has made ready and wakes them all with one
 * FUTEX_WAKE_BITSET at the end of the batch. With more than 32 waiters,
 * bits are shared and a waiter may wake for another's outcome: it looks at
 * its own flag and sleeps again.
 *
 * Why nothing is missed (seq_cst on the marked operations):
 *   waiter:     sleepers++ [seq_cst]; v = word [seq_cst]; if !ready: wait(word, v)
 *   deliverer:  ready = 1 [release] ... word++ [seq_cst]; if sleepers: wake
 * If the deliverer's look at `sleepers` comes before the waiter's increment
 * in the single total order, the waiter's load of `word` comes after the
 * increment of `word`, reads it, and so sees `ready`. Otherwise the
 * deliverer wakes, and the kernel either wakes the sleeping waiter or
 * refuses its wait because `word` is no longer v.
 *
 * Per-thread bits are handed out round robin as threads first wait. */
#ifndef NET_WAITSET_H
#define NET_WAITSET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct net__waitset {
    atomic_uint word;      /* changes before every wake */
    atomic_int sleepers;   /* waiters between their announcement and their wake */
    uint32_t pending;      /* deliverer only: bits marked, not yet woken */
};

/* One waiter's outcome flag and its bit. Lives with the waiter (its stack). */
struct net__waiter {
    atomic_bool ready;
    uint32_t bit;
};

void net__waitset_init(struct net__waitset *ws);

/* Prepares w for one wait on the calling thread. */
void net__waiter_init(struct net__waiter *w);

/* Blocks until w is ready (net__waitset_mark, then net__waitset_wake). */
void net__waitset_wait(struct net__waitset *ws, struct net__waiter *w);

/* Deliverer: w's outcome is in place. w may be gone once this returns (its
 * waiter may see the flag before any wake); the wake comes with the next
 * net__waitset_wake. */
void net__waitset_mark(struct net__waitset *ws, struct net__waiter *w);

/* Deliverer: wakes the waiters of everything marked since the last wake;
 * one futex call at most. */
void net__waitset_wake(struct net__waitset *ws);

#endif
