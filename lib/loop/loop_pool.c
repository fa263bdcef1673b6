/* N loop threads handed out round robin; with none, the base loop. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include <net/loop_thread.h>

#include "loop/alloc_internal.h"

#define POOL_THREADS_MAX 1024

struct net_loop_pool {
    net_loop_t *base;
    size_t n;
    atomic_size_t next;
    net_loop_thread_t **threads;
};

int net_loop_pool_start(net_loop_t *base, size_t nthreads, const char *name,
                        net_loop_init_fn init, void *arg, net_loop_pool_t **out)
{
    if (!base || !out || nthreads > POOL_THREADS_MAX)
        return -EINVAL;
    if (!net_loop_in_loop_thread(base))
        return NET_EWRONGTHREAD;
    net_loop_pool_t *pool = net__calloc(1, sizeof *pool);
    if (!pool || !(pool->threads = net__calloc(nthreads ? nthreads : 1, sizeof *pool->threads))) {
        net__free(pool);
        return -ENOMEM;
    }
    pool->base = base;
    for (; pool->n < nthreads; pool->n++) {
        char tname[32]; /* loop_thread keeps the first 15 bytes */
        snprintf(tname, sizeof tname, "%.10s-%u", name ? name : "loop", (unsigned)pool->n);
        int rc = net_loop_thread_start(tname, init, arg, &pool->threads[pool->n]);
        if (rc < 0) {
            net_loop_pool_join(pool);
            return rc;
        }
    }
    if (nthreads == 0 && init)
        init(base, arg);
    *out = pool;
    return 0;
}

net_loop_t *net_loop_pool_next(net_loop_pool_t *pool)
{
    if (pool->n == 0)
        return pool->base;
    size_t i = atomic_fetch_add_explicit(&pool->next, 1, memory_order_relaxed);
    return net_loop_thread_loop(pool->threads[i % pool->n]);
}

net_loop_t *net_loop_pool_for_hash(net_loop_pool_t *pool, uint64_t h)
{
    if (pool->n == 0)
        return pool->base;
    return net_loop_thread_loop(pool->threads[h % pool->n]);
}

size_t net_loop_pool_size(const net_loop_pool_t *pool)
{
    return pool->n ? pool->n : 1;
}

net_loop_t *net_loop_pool_get(net_loop_pool_t *pool, size_t i)
{
    if (i >= net_loop_pool_size(pool))
        return NULL;
    return pool->n ? net_loop_thread_loop(pool->threads[i]) : pool->base;
}

int net_loop_pool_join(net_loop_pool_t *pool)
{
    if (!pool)
        return 0;
    if (!net_loop_in_loop_thread(pool->base))
        return NET_EWRONGTHREAD;
    for (size_t i = 0; i < pool->n; i++)
        net_loop_thread_join(pool->threads[i]); /* 0: the base thread is none of them */
    net__free(pool->threads);
    net__free(pool);
    return 0;
}
