#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "loop/alloc_internal.h"
#include "loop/timer_heap.h"

static bool before(const struct net__timer *a, const struct net__timer *b)
{
    return a->when_ns < b->when_ns || (a->when_ns == b->when_ns && a->node.id < b->node.id);
}

static void place(struct net__timer_heap *h, size_t i, struct net__timer *t)
{
    h->items[i] = t;
    t->slot = i;
}

static void sift_up(struct net__timer_heap *h, size_t i)
{
    struct net__timer *t = h->items[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(t, h->items[parent]))
            break;
        place(h, i, h->items[parent]);
        i = parent;
    }
    place(h, i, t);
}

static void sift_down(struct net__timer_heap *h, size_t i)
{
    struct net__timer *t = h->items[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->n)
            break;
        if (child + 1 < h->n && before(h->items[child + 1], h->items[child]))
            child++;
        if (!before(h->items[child], t))
            break;
        place(h, i, h->items[child]);
        i = child;
    }
    place(h, i, t);
}

void net__timer_heap_destroy(struct net__timer_heap *h)
{
    net__free(h->items);
    *h = (struct net__timer_heap){0};
}

int net__timer_heap_push(struct net__timer_heap *h, struct net__timer *t)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        struct net__timer **items = net__realloc(h->items, cap * sizeof *items);
        if (!items)
            return -ENOMEM;
        h->items = items;
        h->cap = cap;
    }
    h->items[h->n] = t;
    sift_up(h, h->n++);
    return 0;
}

struct net__timer *net__timer_heap_top(const struct net__timer_heap *h)
{
    return h->n ? h->items[0] : NULL;
}

void net__timer_heap_remove(struct net__timer_heap *h, struct net__timer *t)
{
    size_t i = t->slot, last = --h->n;
    t->slot = SIZE_MAX;
    if (i == last)
        return;
    place(h, i, h->items[last]);
    /* The moved timer may belong above or below its new slot. */
    if (i > 0 && before(h->items[i], h->items[(i - 1) / 2]))
        sift_up(h, i);
    else
        sift_down(h, i);
}
