/* Statistics counters with one writer thread and any number of readers. */
#ifndef NET__COUNTER_H
#define NET__COUNTER_H

#include <stdatomic.h>
#include <stdint.h>

/* Adds n to a counter only the calling thread writes. A relaxed load and a
 * relaxed store instead of an atomic RMW: with one writer no increment can
 * be lost, and the hot path pays no locked instruction. Relaxed because a
 * reader takes the count alone and orders nothing else by it. */
static inline void net__counter_add(atomic_ullong *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* The counter's value from any thread. */
static inline uint64_t net__counter_get(const atomic_ullong *c)
{
    return atomic_load_explicit((atomic_ullong *)c, memory_order_relaxed);
}

#endif
