/* A binary min-heap of timers ordered by (due time, id). Ids grow with every
 * timer added, so timers due at the same instant leave in the order they
 * were added. Each timer remembers its slot, so removal is O(log n) too. */
#ifndef NET__TIMER_HEAP_H
#define NET__TIMER_HEAP_H

#include <stddef.h>
#include <stdint.h>

#include <net/loop.h>

#include "loop/id_table.h"

struct net__timer {
    struct net__id_node node; /* node.id is the timer id (> 0) */
    int64_t when_ns;     /* CLOCK_MONOTONIC, saturating */
    int64_t interval_ns; /* 0 for a one-shot timer */
    net_timer_fn fn;
    void *arg;
    size_t slot; /* index in the heap; SIZE_MAX when not in it */
};

struct net__timer_heap {
    struct net__timer **items;
    size_t n, cap;
};

void net__timer_heap_destroy(struct net__timer_heap *h);
int net__timer_heap_push(struct net__timer_heap *h, struct net__timer *t);
struct net__timer *net__timer_heap_top(const struct net__timer_heap *h);
void net__timer_heap_remove(struct net__timer_heap *h, struct net__timer *t);

#endif
