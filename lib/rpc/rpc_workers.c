/* Worker threads for blocking handlers: one mutex-protected FIFO. Blocking
 * handlers are slow by definition, so a lock per item costs nothing here. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>

#include "loop/alloc_internal.h"
#include "rpc/rpc_workers.h"

struct net__rpc_workers {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct net__rpc_work *head, *tail;
    bool stopping;
    size_t n;
    pthread_t threads[];
};

static struct net__rpc_work *take(struct net__rpc_workers *p)
{
    pthread_mutex_lock(&p->mu);
    while (!p->head && !p->stopping)
        pthread_cond_wait(&p->cond, &p->mu);
    struct net__rpc_work *w = p->head;
    if (w && !(p->head = w->next))
        p->tail = NULL;
    pthread_mutex_unlock(&p->mu);
    return w; /* NULL: stopping and nothing left */
}

static void *worker_main(void *arg)
{
    struct net__rpc_workers *p = arg;
    for (struct net__rpc_work *w; (w = take(p));)
        w->run(w);
    return NULL;
}

int net__rpc_workers_start(size_t n, struct net__rpc_workers **out)
{
    struct net__rpc_workers *p = net__calloc(1, sizeof *p + n * sizeof(pthread_t));
    if (!p)
        return -ENOMEM;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cond, NULL);
    /* Workers never take process signals (see net_loop_thread). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = 0;
    for (; p->n < n && rc == 0; p->n++)
        rc = -pthread_create(&p->threads[p->n], NULL, worker_main, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc < 0) {
        p->n--; /* the failed one */
        net__rpc_workers_stop(p);
        return rc;
    }
    *out = p;
    return 0;
}

void net__rpc_workers_submit(struct net__rpc_workers *p, struct net__rpc_work *w)
{
    w->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->tail)
        p->tail->next = w;
    else
        p->head = w;
    p->tail = w;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->mu);
}

void net__rpc_workers_stop(struct net__rpc_workers *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->mu);
    net__free(p);
}
