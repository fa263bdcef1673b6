/* The pending-functor queue: producers append under a mutex, the loop swaps
 * the whole batch out and runs it outside the lock (swap-and-run). Two
 * vectors trade places, so steady state allocates nothing. */
#ifndef NET__FUNCTOR_QUEUE_H
#define NET__FUNCTOR_QUEUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include <net/loop.h>

struct net__functor {
    net_loop_fn fn;
    void *arg;
};

struct net__fvec {
    struct net__functor *items;
    size_t n, cap;
};

struct net__fqueue {
    pthread_mutex_t mu;
    struct net__fvec pending; /* guarded by mu */
    struct net__fvec batch;   /* loop thread only: the batch being run */
};

int net__fqueue_init(struct net__fqueue *q);
void net__fqueue_destroy(struct net__fqueue *q);
/* Appends fn(arg). Returns 0 or -ENOMEM. Thread-safe. */
int net__fqueue_push(struct net__fqueue *q, net_loop_fn fn, void *arg);
/* Swaps the pending functors out and runs them in FIFO order; functors they
 * queue wait for the next call. Returns how many ran. Loop thread only. */
size_t net__fqueue_run(struct net__fqueue *q);
size_t net__fqueue_size(struct net__fqueue *q);

#endif
