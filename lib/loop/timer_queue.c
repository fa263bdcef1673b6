#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "loop/alloc_internal.h"
#include "loop/counter.h"
#include "loop/log_internal.h"
#include "loop/timer_queue.h"

/* Process-wide, so an id is never reused, even across loops. */
static _Atomic int64_t next_timer_id = 1;

int64_t net__mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t net__ns_add(int64_t a, uint64_t b)
{
    return b > (uint64_t)(INT64_MAX - a) ? INT64_MAX : a + (int64_t)b;
}

int64_t net__ms_to_ns(uint64_t ms)
{
    return ms > (uint64_t)INT64_MAX / 1000000 ? INT64_MAX : (int64_t)ms * 1000000;
}

/* ---- id table --------------------------------------------------------- */

static struct net__timer *timer_of(struct net__id_node *n)
{
    return n ? net__container_of(n, struct net__timer, node) : NULL;
}

static struct net__timer *table_find(struct net__timer_queue *tq, net_timer_id_t id)
{
    return timer_of(net__id_table_find(&tq->ids, (uint64_t)id));
}

static void table_remove(struct net__timer_queue *tq, struct net__timer *t)
{
    net__id_table_take(&tq->ids, t->node.id);
}

/* ---- timerfd ---------------------------------------------------------- */

static void arm(struct net__timer_queue *tq, int64_t when_ns)
{
    struct itimerspec its = {0};
    if (when_ns > 0) {
        its.it_value.tv_sec = when_ns / 1000000000;
        its.it_value.tv_nsec = when_ns % 1000000000;
    }
    if (timerfd_settime(tq->ch.fd, TFD_TIMER_ABSTIME, &its, NULL) < 0) {
        NET__LOG_RL(NET_LOG_ERROR, "timerfd_settime: %s", net_strerror(-errno));
        return;
    }
    tq->armed_ns = when_ns;
}

/* Points the timerfd at the earliest timer. Called with the lock held. */
static void rearm(struct net__timer_queue *tq)
{
    struct net__timer *top = net__timer_heap_top(&tq->heap);
    int64_t when = top ? top->when_ns : 0;
    if (when != tq->armed_ns)
        arm(tq, when);
}

/* ---- public operations ------------------------------------------------ */

static void timer_queue_fire_cb(struct net__channel *ch, unsigned revents);

int net__timer_queue_init(struct net__timer_queue *tq, net_loop_t *loop)
{
    *tq = (struct net__timer_queue){.loop = loop};
    net__id_table_init(&tq->ids);
    atomic_init(&tq->fired, 0);
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = -pthread_mutex_init(&tq->mu, NULL);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    net__channel_init(&tq->ch, fd, timer_queue_fire_cb);
    return 0;
}

void net__timer_queue_destroy(struct net__timer_queue *tq)
{
    for (struct net__timer *t; (t = timer_of(net__id_table_pop(&tq->ids)));)
        net__free(t);
    net__id_table_free(&tq->ids);
    net__timer_heap_destroy(&tq->heap);
    pthread_mutex_destroy(&tq->mu);
    close(tq->ch.fd);
}

/* The table first: it fails only before its first buckets exist, and the
 * heap push is then the one failure left to undo. */
static int insert(struct net__timer_queue *tq, struct net__timer *t)
{
    int rc = net__id_table_insert(&tq->ids, &t->node);
    if (rc < 0)
        return rc;
    rc = net__timer_heap_push(&tq->heap, t);
    if (rc < 0)
        table_remove(tq, t);
    return rc;
}

net_timer_id_t net__timer_queue_add(struct net__timer_queue *tq, int64_t when_ns,
                                    int64_t interval_ns, net_timer_fn fn, void *arg)
{
    struct net__timer *t = net__malloc(sizeof *t);
    if (!t)
        return -ENOMEM;
    /* when 0 would disarm the timerfd: the earliest expressible time is 1 ns. */
    *t = (struct net__timer){.when_ns = when_ns > 0 ? when_ns : 1,
                             .interval_ns = interval_ns, .fn = fn, .arg = arg};
    pthread_mutex_lock(&tq->mu);
    /* The id is taken under the lock so ids enter the heap in order: equal
     * due times then fire in the order the adds happened. */
    net_timer_id_t id = atomic_fetch_add(&next_timer_id, 1);
    t->node.id = (uint64_t)id;
    int rc = insert(tq, t);
    if (rc == 0 && net__timer_heap_top(&tq->heap) == t)
        rearm(tq);
    pthread_mutex_unlock(&tq->mu);
    if (rc < 0) {
        net__free(t);
        return rc;
    }
    return id; /* not t->node.id: once unlocked, t may have fired and gone */
}

int net__timer_queue_cancel(struct net__timer_queue *tq, net_timer_id_t id)
{
    int rc = -ENOENT;
    pthread_mutex_lock(&tq->mu);
    struct net__timer *t = id > 0 ? table_find(tq, id) : NULL;
    if (t && t == tq->running) {
        /* Running now: a repeating timer is stopped after this run; a
         * one-shot has already fired. */
        if (t->interval_ns && !tq->running_cancelled) {
            tq->running_cancelled = true;
            rc = 0;
        }
    } else if (t) {
        net__timer_heap_remove(&tq->heap, t);
        table_remove(tq, t);
        net__free(t);
        rc = 0;
    }
    pthread_mutex_unlock(&tq->mu);
    return rc;
}

size_t net__timer_queue_count(struct net__timer_queue *tq)
{
    pthread_mutex_lock(&tq->mu);
    size_t n = tq->ids.count;
    pthread_mutex_unlock(&tq->mu);
    return n;
}

/* After a run: a repeating timer goes back into the heap (there is room: it
 * just left it), anything else is freed. Called with the lock held. */
static void finish_run(struct net__timer_queue *tq, struct net__timer *t, int64_t now)
{
    if (t->interval_ns && !tq->running_cancelled) {
        t->when_ns = net__ns_add(now, (uint64_t)t->interval_ns);
        if (net__timer_heap_push(&tq->heap, t) == 0)
            return;
    }
    table_remove(tq, t);
    net__free(t);
}

static void timer_queue_fire_cb(struct net__channel *ch, unsigned revents)
{
    (void)revents;
    struct net__timer_queue *tq = net__container_of(ch, struct net__timer_queue, ch);
    uint64_t expirations;
    ssize_t r = read(ch->fd, &expirations, sizeof expirations);
    (void)r; /* EAGAIN: a rearm raced the wakeup; the heap is the truth */

    int64_t now = net__mono_ns();
    pthread_mutex_lock(&tq->mu);
    tq->armed_ns = 0; /* the expiration was consumed: rearm must set it again */
    /* Timers added by the callbacks below wait for the next iteration, so a
     * callback that keeps adding due timers cannot starve I/O. */
    int64_t cutoff = atomic_load(&next_timer_id);
    struct net__timer *t;
    while ((t = net__timer_heap_top(&tq->heap)) && t->when_ns <= now &&
           t->node.id < (uint64_t)cutoff) {
        net__timer_heap_remove(&tq->heap, t);
        tq->running = t;
        tq->running_cancelled = false;
        pthread_mutex_unlock(&tq->mu);
        net__counter_add(&tq->fired, 1); /* counted first: fn may look */
        t->fn(tq->loop, (net_timer_id_t)t->node.id, t->arg); /* t stays while running */
        pthread_mutex_lock(&tq->mu);
        finish_run(tq, t, now);
        tq->running = NULL;
    }
    rearm(tq);
    pthread_mutex_unlock(&tq->mu);
}
