/* A thread that owns and runs one loop (muduo's EventLoopThread). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <net/loop_thread.h>

#include "loop/alloc_internal.h"
#include "loop/log_internal.h"

struct net_loop_thread {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool ready;          /* the thread reported its start (loop or error) */
    bool stop_requested; /* join has quit the loop: the thread may free it */
    int start_rc;
    net_loop_t *loop;
    net_loop_init_fn init;
    void *init_arg;
    char name[16];
};

static void report_start(net_loop_thread_t *t, net_loop_t *loop, int rc)
{
    pthread_mutex_lock(&t->mu);
    t->loop = loop;
    t->start_rc = rc;
    t->ready = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

static void *loop_thread_main(void *p)
{
    net_loop_thread_t *t = p;
    if (t->name[0])
        pthread_setname_np(pthread_self(), t->name);
    net_loop_t *loop;
    int rc = net_loop_new(&loop);
    if (rc < 0) {
        report_start(t, NULL, rc);
        return NULL;
    }
    if (t->init)
        t->init(loop, t->init_arg);
    report_start(t, loop, 0);
    /* The loop lives until join: someone else quitting it only ends a run,
     * and join may still be inside net_loop_quit() when run returns. */
    pthread_mutex_lock(&t->mu);
    while (!t->stop_requested) {
        pthread_mutex_unlock(&t->mu);
        rc = net_loop_run(loop);
        pthread_mutex_lock(&t->mu);
        if (rc < 0) { /* the poller broke: nobody sees rc, so log it; wait for join */
            NET__LOG(NET_LOG_ERROR, "loop thread %s: run failed: %s", t->name, net_strerror(rc));
            while (!t->stop_requested)
                pthread_cond_wait(&t->cond, &t->mu);
        }
    }
    pthread_mutex_unlock(&t->mu);
    net_loop_free(loop);
    return NULL;
}

/* Starts the thread with every asynchronous signal blocked from its first
 * instruction (the mask is inherited), so process signals reach the thread
 * that set up a net_signal instead of a random loop thread. */
static int spawn_blocking_signals(net_loop_thread_t *t)
{
    sigset_t all, old;
    sigfillset(&all);
    static const int sync_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT};
    for (size_t i = 0; i < sizeof sync_signals / sizeof *sync_signals; i++)
        sigdelset(&all, sync_signals[i]);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&t->thread, NULL, loop_thread_main, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return -rc;
}

static void loop_thread_destroy(net_loop_thread_t *t)
{
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->mu);
    net__free(t);
}

int net_loop_thread_start(const char *name, net_loop_init_fn init, void *arg,
                          net_loop_thread_t **out)
{
    if (!out)
        return -EINVAL;
    net_loop_thread_t *t = net__calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cond, NULL);
    t->init = init;
    t->init_arg = arg;
    if (name)
        strncpy(t->name, name, sizeof t->name - 1);
    int rc = spawn_blocking_signals(t);
    if (rc < 0) {
        loop_thread_destroy(t);
        return rc;
    }
    pthread_mutex_lock(&t->mu);
    while (!t->ready)
        pthread_cond_wait(&t->cond, &t->mu);
    rc = t->start_rc;
    pthread_mutex_unlock(&t->mu);
    if (rc < 0) {
        pthread_join(t->thread, NULL);
        loop_thread_destroy(t);
        return rc;
    }
    *out = t;
    return 0;
}

net_loop_t *net_loop_thread_loop(net_loop_thread_t *t)
{
    return t ? t->loop : NULL;
}

int net_loop_thread_join(net_loop_thread_t *t)
{
    if (!t)
        return 0;
    if (net_loop_in_loop_thread(t->loop)) /* joining itself would hang */
        return NET_EWRONGTHREAD;
    pthread_mutex_lock(&t->mu);
    t->stop_requested = true;
    net_loop_quit(t->loop); /* under the lock: the thread cannot free the loop yet */
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
    loop_thread_destroy(t);
    return 0;
}
