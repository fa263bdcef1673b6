/* A small pool of threads for blocking RPC handlers. */
#ifndef NET__RPC_WORKERS_H
#define NET__RPC_WORKERS_H

#include <stddef.h>

struct net__rpc_work {
    struct net__rpc_work *next;
    void (*run)(struct net__rpc_work *w);
};

struct net__rpc_workers;

/* Starts n threads. Returns 0, -ENOMEM or -EAGAIN. */
int net__rpc_workers_start(size_t n, struct net__rpc_workers **out);
/* Queues w (FIFO); a worker runs w->run(w). Thread-safe. */
void net__rpc_workers_submit(struct net__rpc_workers *p, struct net__rpc_work *w);
/* Runs what is queued, joins the threads and frees the pool. NULL ignored. */
void net__rpc_workers_stop(struct net__rpc_workers *p);

#endif
