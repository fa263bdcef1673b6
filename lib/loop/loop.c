/* The event loop: poll, dispatch ready channels, run queued functors.
 *
 * Timers are a channel like any other (their timerfd), so an iteration is
 * just: wait -> dispatch -> functors. The wait blocks forever unless functors
 * are already queued; everything that must interrupt it writes the eventfd.
 * With busy polling on, the wait first spins (polls without blocking) for a
 * while after an iteration that found work (busy_poll.h says when). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "loop/alloc_internal.h"
#include "loop/log_internal.h"
#include "loop/loop_internal.h"

static _Thread_local net_loop_t *current_loop;

net_loop_t *net_loop_current(void)
{
    return current_loop;
}

bool net_loop_in_loop_thread(const net_loop_t *loop)
{
    return loop && current_loop == loop;
}

const char *net_loop_backend(const net_loop_t *loop)
{
    return loop->ops->name;
}

unsigned long long net__loop_eventfd_writes(net_loop_t *loop)
{
    return net__counter_get(&loop->eventfd_writes);
}

void net_loop_stats(const net_loop_t *loop, struct net_loop_stats *out)
{
    *out = (struct net_loop_stats){
        .iterations = net__counter_get(&loop->iterations),
        .wakeups = net__counter_get(&loop->eventfd_writes),
        .functors_run = net__counter_get(&loop->functors_run),
        .timers_fired = net__counter_get(&loop->timers.fired),
    };
}

uint64_t net_loop_now_ms(const net_loop_t *loop)
{
    /* A TLS compare keeps the plain field unshared: other threads get the
     * documented 0 instead of a data race. */
    return net_loop_in_loop_thread(loop) ? loop->now_ms : 0;
}

/* ---- wakeup ----------------------------------------------------------- */

static void wakeup_read_cb(struct net__channel *ch, unsigned revents)
{
    (void)revents;
    uint64_t value;
    ssize_t r = read(ch->fd, &value, sizeof value);
    (void)r; /* EAGAIN is harmless: someone else already drained it */
}

void net__loop_wakeup(net_loop_t *loop)
{
    if (atomic_exchange(&loop->wakeup_pending, true))
        return; /* a wakeup is already on its way */
    uint64_t one = 1;
    atomic_fetch_add_explicit(&loop->eventfd_writes, 1, memory_order_relaxed);
    /* Can fail only with EAGAIN at a counter of 2^64-2: already readable. */
    ssize_t w = write(loop->wakeup.fd, &one, sizeof one);
    (void)w;
}

static size_t run_functors(net_loop_t *loop);

/* Caches the clock for the iteration. Never 0, so that net_loop_now_ms()'s
 * 0 means "not the loop thread" even within the first millisecond of boot. */
static void update_now(net_loop_t *loop)
{
    uint64_t now = net_now_ms();
    loop->now_ms = now ? now : 1;
}

/* ---- creation --------------------------------------------------------- */

static int loop_register_own_channels(net_loop_t *loop)
{
    loop->wakeup.interest = NET_READABLE;
    loop->timers.ch.interest = NET_READABLE;
    int rc = loop->ops->add(loop->poller, &loop->wakeup);
    return rc < 0 ? rc : loop->ops->add(loop->poller, &loop->timers.ch);
}

static int loop_open(net_loop_t *loop)
{
    loop->ops = net__poller_default();
    int rc = loop->ops->create(&loop->poller);
    if (rc < 0)
        return rc;
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) {
        rc = -errno;
        goto fail_eventfd;
    }
    net__channel_init(&loop->wakeup, efd, wakeup_read_cb);
    net__busy_poll_init(&loop->busy, net__busy_poll_env());
    update_now(loop);
    if ((rc = net__timer_queue_init(&loop->timers, loop)) < 0)
        goto fail_timers;
    if ((rc = net__fqueue_init(&loop->functors)) < 0)
        goto fail_functors;
    if ((rc = loop_register_own_channels(loop)) < 0)
        goto fail_register;
    return 0;

fail_register:
    net__fqueue_destroy(&loop->functors);
fail_functors:
    net__timer_queue_destroy(&loop->timers);
fail_timers:
    close(efd);
fail_eventfd:
    loop->ops->destroy(loop->poller);
    return rc;
}

int net_loop_new(net_loop_t **out)
{
    if (!out)
        return -EINVAL;
    if (current_loop) { /* the caller gets the code: debug only */
        NET__LOG(NET_LOG_DEBUG, "net_loop_new: this thread already has a loop");
        return NET_ELOOPEXISTS;
    }
    net_loop_t *loop = net__calloc(1, sizeof *loop);
    if (!loop)
        return -ENOMEM;
    atomic_init(&loop->posted, NULL);
    int rc = loop_open(loop);
    if (rc < 0) {
        net__free(loop);
        return rc;
    }
    current_loop = loop;
    *out = loop;
    return 0;
}

static int loop_free_check(const net_loop_t *loop)
{
    if (!net_loop_in_loop_thread(loop)) {
        NET__LOG(NET_LOG_DEBUG, "net_loop_free: not the loop's thread");
        return NET_EWRONGTHREAD;
    }
    if (loop->running) {
        NET__LOG(NET_LOG_DEBUG, "net_loop_free: the loop is running");
        return -EBUSY;
    }
    return 0;
}

int net_loop_free(net_loop_t *loop)
{
    if (!loop)
        return 0;
    int rc = loop_free_check(loop);
    if (rc < 0)
        return rc;
    /* Every accepted functor runs exactly once, even those queued late.
     * Marked running meanwhile: a functor's run or free then gets -EBUSY
     * instead of running or freeing the loop under our feet. */
    loop->running = true;
    while (run_functors(loop) > 0) {
    }
    net__fqueue_destroy(&loop->functors);
    net__timer_queue_destroy(&loop->timers);
    net__busy_poll_destroy(&loop->busy);
    close(loop->wakeup.fd);
    loop->ops->destroy(loop->poller);
    current_loop = NULL;
    net__free(loop->scratch);
    net__free(loop);
    return 0;
}

/* ---- running ---------------------------------------------------------- */

static void dispatch(net_loop_t *loop, struct net__ready *ready, int n)
{
    loop->ready = ready;
    loop->nready = n;
    for (loop->ready_pos = 0; loop->ready_pos < n; loop->ready_pos++) {
        struct net__ready *r = &ready[loop->ready_pos];
        if (r->ch)
            r->ch->on_event(r->ch, r->revents);
    }
    loop->ready = NULL;
    loop->nready = 0;
}

/* Runs the posted tasks, oldest first. Returns how many ran. */
static size_t run_posted(net_loop_t *loop)
{
    /* A plain look first: the common case writes nothing to the posters'
     * cache line. seq_cst pairs with the post's CAS across wakeup_pending:
     * a poster whose wakeup was coalesced into one already pending (its
     * exchange came before run_functors cleared the flag) is seen here. */
    if (!atomic_load(&loop->posted))
        return 0;
    struct net__loop_task *t = atomic_exchange(&loop->posted, NULL), *fifo = NULL;
    while (t) { /* the stack is newest first: reverse it */
        struct net__loop_task *next = t->next;
        t->next = fifo;
        fifo = t;
        t = next;
    }
    size_t ran = 0;
    for (struct net__loop_task *next; fifo; fifo = next, ran++) {
        next = fifo->next; /* fn may post fifo again */
        fifo->fn(fifo->arg);
    }
    return ran;
}

static size_t run_functors(net_loop_t *loop)
{
    /* Cleared before the batch is taken: a producer that saw the flag set
     * pushed before this point and is in the batch; one that pushes later
     * sees it clear and writes the eventfd. */
    atomic_store(&loop->wakeup_pending, false);
    size_t ran = run_posted(loop);
    ran += net__fqueue_run(&loop->functors);
    net__counter_add(&loop->functors_run, ran);
    return ran;
}

static bool work_waiting(net_loop_t *loop)
{
    return atomic_load_explicit(&loop->posted, memory_order_relaxed) ||
           net__fqueue_size(&loop->functors);
}

/* What a spinning loop must stop for besides I/O: functors and tasks
 * (their producers skip the eventfd while it spins) and a quit. */
static bool spin_should_stop(net_loop_t *loop)
{
    return work_waiting(loop) || atomic_load_explicit(&loop->quit, memory_order_relaxed);
}

/* One busy-poll episode: non-blocking waits until one returns something
 * (its count, or an error), other work turns up (0), the budget runs out
 * or a gap shows the thread was descheduled (0, and the loop then sleeps).
 * While it spins the loop is awake and looking, so it holds wakeup_pending
 * set: producers skip the eventfd write (net__loop_wakeup), and a
 * cross-thread send costs its sender no system call. */
static int spin(net_loop_t *loop, int64_t deadline, struct net__ready **ready)
{
    atomic_store(&loop->wakeup_pending, true);
    int64_t last = net__mono_ns();
    for (;;) {
        int n = loop->ops->wait(loop->poller, 0, ready);
        if (n != 0 || spin_should_stop(loop)) {
            net__busy_poll_end(&loop->busy, NET__SPIN_HIT, last);
            return n;
        }
        int64_t now = net__mono_ns();
        bool descheduled =
            now - last > NET__SPIN_GAP_NS && net__busy_poll_was_preempted(&loop->busy);
        if (descheduled || now >= deadline) {
            net__busy_poll_end(&loop->busy, descheduled ? NET__SPIN_DESCHEDULED : NET__SPIN_MISS,
                               now);
            return 0;
        }
        last = now;
    }
}

/* After a spin that found nothing: sleep, unless work came as it ended. */
static int wait_after_spin(net_loop_t *loop, struct net__ready **ready)
{
    /* Producers must write the eventfd again. Clearing the flag and then
     * looking (both seq_cst) pairs with a producer's push then exchange:
     * either it sees the flag clear and writes, or this load sees its push
     * (a Dekker pair; the functor queue's lock orders its own push). */
    atomic_store(&loop->wakeup_pending, false);
    bool work = atomic_load(&loop->posted) || net__fqueue_size(&loop->functors) ||
                atomic_load(&loop->quit);
    return loop->ops->wait(loop->poller, work ? 0 : -1, ready);
}

/* The loop's wait: at once when functors are queued (those queued by the
 * previous batch run without waiting for I/O), else spinning first when
 * busy polling says so, else blocking. */
static int wait_for_work(net_loop_t *loop, struct net__ready **ready)
{
    if (work_waiting(loop))
        return loop->ops->wait(loop->poller, 0, ready);
    int64_t deadline;
    if (net__busy_poll_may_spin(&loop->busy) &&
        net__busy_poll_begin(&loop->busy, net__mono_ns(), &deadline)) {
        int n = spin(loop, deadline, ready);
        return n != 0 || spin_should_stop(loop) ? n : wait_after_spin(loop, ready);
    }
    return loop->ops->wait(loop->poller, -1, ready);
}

static int run_once(net_loop_t *loop)
{
    struct net__ready *ready;
    int n = wait_for_work(loop, &ready);
    if (n < 0 && n != -EINTR) { /* run returns it: debug only */
        NET__LOG_RL(NET_LOG_DEBUG, "%s wait failed: %s", loop->ops->name, net_strerror(n));
        return n;
    }
    net__counter_add(&loop->iterations, 1);
    update_now(loop);
    if (n > 0)
        dispatch(loop, ready, n);
    size_t ran = run_functors(loop);
    net__busy_poll_note(&loop->busy, n > 0 || ran > 0);
    return 0;
}

int net_loop_run(net_loop_t *loop)
{
    if (!loop)
        return -EINVAL;
    if (!net_loop_in_loop_thread(loop))
        return NET_EWRONGTHREAD;
    if (loop->running)
        return -EBUSY;
    loop->running = true;
    int rc = 0;
    while (rc == 0 && !atomic_load(&loop->quit))
        rc = run_once(loop);
    run_functors(loop);
    atomic_store(&loop->quit, false);
    loop->running = false;
    return rc;
}

void net_loop_quit(net_loop_t *loop)
{
    atomic_store(&loop->quit, true);
    if (!net_loop_in_loop_thread(loop))
        net__loop_wakeup(loop);
}

/* ---- functors --------------------------------------------------------- */

void net__loop_post(net_loop_t *loop, struct net__loop_task *t)
{
    /* A Treiber push: the loop takes the whole stack at once, so there is
     * no pop and no ABA. seq_cst: see run_posted. */
    struct net__loop_task *top = atomic_load_explicit(&loop->posted, memory_order_relaxed);
    do {
        t->next = top;
    } while (!atomic_compare_exchange_weak_explicit(&loop->posted, &top, t,
                                                    memory_order_seq_cst, memory_order_relaxed));
    if (!top && !net_loop_in_loop_thread(loop))
        net__loop_wakeup(loop);
}

size_t net__loop_posted_count(net_loop_t *loop)
{
    size_t n = 0;
    for (struct net__loop_task *t = atomic_load(&loop->posted); t; t = t->next)
        n++;
    return n;
}

int net_loop_queue_in_loop(net_loop_t *loop, net_loop_fn fn, void *arg)
{
    if (!loop || !fn)
        return -EINVAL;
    int rc = net__fqueue_push(&loop->functors, fn, arg);
    if (rc == 0 && !net_loop_in_loop_thread(loop))
        net__loop_wakeup(loop);
    return rc;
}

int net_loop_run_in_loop(net_loop_t *loop, net_loop_fn fn, void *arg)
{
    if (!loop || !fn)
        return -EINVAL;
    if (net_loop_in_loop_thread(loop)) {
        fn(arg);
        return 0;
    }
    return net_loop_queue_in_loop(loop, fn, arg);
}

size_t net_loop_queue_size(net_loop_t *loop)
{
    return net__fqueue_size(&loop->functors);
}

/* ---- channels --------------------------------------------------------- */

int net__loop_add_channel(net_loop_t *loop, struct net__channel *ch)
{
    return loop->ops->add(loop->poller, ch);
}

int net__loop_update_channel(net_loop_t *loop, struct net__channel *ch)
{
    return loop->ops->modify(loop->poller, ch);
}

void net__loop_remove_channel(net_loop_t *loop, struct net__channel *ch)
{
    if (ch->poller_slot < 0)
        return;
    loop->ops->remove(loop->poller, ch);
    for (int i = loop->ready_pos + 1; i < loop->nready; i++)
        if (loop->ready[i].ch == ch)
            loop->ready[i].ch = NULL;
}

/* ---- timers ----------------------------------------------------------- */

uint64_t net_now_ms(void)
{
    return (uint64_t)(net__mono_ns() / 1000000);
}

net_timer_id_t net_loop_run_at(net_loop_t *loop, uint64_t when_ms, net_timer_fn fn, void *arg)
{
    if (!loop || !fn)
        return -EINVAL;
    return net__timer_queue_add(&loop->timers, net__ms_to_ns(when_ms), 0, fn, arg);
}

net_timer_id_t net_loop_run_after(net_loop_t *loop, uint64_t delay_ms, net_timer_fn fn,
                                  void *arg)
{
    if (!loop || !fn)
        return -EINVAL;
    int64_t when = net__ns_add(net__mono_ns(), (uint64_t)net__ms_to_ns(delay_ms));
    return net__timer_queue_add(&loop->timers, when, 0, fn, arg);
}

net_timer_id_t net_loop_run_every(net_loop_t *loop, uint64_t interval_ms, net_timer_fn fn,
                                  void *arg)
{
    if (!loop || !fn || interval_ms == 0)
        return -EINVAL;
    int64_t interval = net__ms_to_ns(interval_ms);
    int64_t when = net__ns_add(net__mono_ns(), (uint64_t)interval);
    return net__timer_queue_add(&loop->timers, when, interval, fn, arg);
}

int net_timer_cancel(net_loop_t *loop, net_timer_id_t id)
{
    if (!loop)
        return -EINVAL;
    return net__timer_queue_cancel(&loop->timers, id);
}

size_t net_loop_timer_count(net_loop_t *loop)
{
    return net__timer_queue_count(&loop->timers);
}
