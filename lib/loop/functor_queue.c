#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "loop/alloc_internal.h"
#include "loop/functor_queue.h"

/* A batch vector this large after a burst is released rather than kept, so
 * one spike does not pin memory for the loop's lifetime. */
#define FVEC_KEEP_MAX 4096

int net__fqueue_init(struct net__fqueue *q)
{
    *q = (struct net__fqueue){0};
    return -pthread_mutex_init(&q->mu, NULL);
}

void net__fqueue_destroy(struct net__fqueue *q)
{
    pthread_mutex_destroy(&q->mu);
    net__free(q->pending.items);
    net__free(q->batch.items);
}

static int fvec_grow(struct net__fvec *v)
{
    size_t cap = v->cap ? v->cap * 2 : 64;
    if (cap > SIZE_MAX / sizeof *v->items)
        return -ENOMEM;
    struct net__functor *items = net__realloc(v->items, cap * sizeof *items);
    if (!items)
        return -ENOMEM;
    v->items = items;
    v->cap = cap;
    return 0;
}

int net__fqueue_push(struct net__fqueue *q, net_loop_fn fn, void *arg)
{
    int rc = 0;
    pthread_mutex_lock(&q->mu);
    if (q->pending.n == q->pending.cap)
        rc = fvec_grow(&q->pending);
    if (rc == 0)
        q->pending.items[q->pending.n++] = (struct net__functor){fn, arg};
    pthread_mutex_unlock(&q->mu);
    return rc;
}

size_t net__fqueue_run(struct net__fqueue *q)
{
    pthread_mutex_lock(&q->mu);
    struct net__fvec batch = q->pending;
    q->pending = q->batch; /* empty, with the capacity of the last batch */
    pthread_mutex_unlock(&q->mu);

    for (size_t i = 0; i < batch.n; i++)
        batch.items[i].fn(batch.items[i].arg);

    size_t ran = batch.n;
    batch.n = 0;
    if (batch.cap > FVEC_KEEP_MAX) {
        net__free(batch.items);
        batch = (struct net__fvec){0};
    }
    q->batch = batch;
    return ran;
}

size_t net__fqueue_size(struct net__fqueue *q)
{
    pthread_mutex_lock(&q->mu);
    size_t n = q->pending.n;
    pthread_mutex_unlock(&q->mu);
    return n;
}
