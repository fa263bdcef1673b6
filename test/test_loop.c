/* The event loop: functor queue, quit, one loop per thread. */
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include <net/loop.h>

#include "net_test_util.h"
#include "loop_internal.h"

/* ---- 4 producers x 100k functors, exactly once, FIFO per producer ----- */

#define PRODUCERS 4
#define PER_PRODUCER 100000

static struct {
    net_loop_t *loop;
    uint32_t next_seq[PRODUCERS];
    long ran;
    pthread_t loop_thread;
} fifo;

static void fifo_functor(void *arg)
{
    uintptr_t v = (uintptr_t)arg;
    unsigned producer = (unsigned)(v >> 24), seq = (unsigned)(v & 0xffffff);
    CHECK(pthread_equal(pthread_self(), fifo.loop_thread));
    CHECK_EQ(seq, fifo.next_seq[producer]);
    fifo.next_seq[producer]++;
    if (++fifo.ran == (long)PRODUCERS * PER_PRODUCER)
        net_loop_quit(fifo.loop);
}

static void *fifo_producer(void *arg)
{
    uintptr_t producer = (uintptr_t)arg;
    for (uintptr_t seq = 0; seq < PER_PRODUCER; seq++) {
        int rc = net_loop_run_in_loop(fifo.loop, fifo_functor, (void *)(producer << 24 | seq));
        CHECK_OK(rc);
        if (seq % 8192 == 0)
            sched_yield(); /* vary the interleaving */
    }
    return NULL;
}

TEST(loop_run_in_loop_4_threads_100k_fifo)
{
    fifo.loop = net_test_new_loop(50000);
    fifo.loop_thread = pthread_self();
    pthread_t t[PRODUCERS];
    for (uintptr_t i = 0; i < PRODUCERS; i++)
        CHECK_EQ(pthread_create(&t[i], NULL, fifo_producer, (void *)i), 0);
    CHECK_OK(net_loop_run(fifo.loop));
    for (int i = 0; i < PRODUCERS; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ(fifo.next_seq[i], PER_PRODUCER);
    }
    CHECK_EQ(fifo.ran, (long)PRODUCERS * PER_PRODUCER);
    net_loop_free(fifo.loop);
    CHECK_EQ(fifo.ran, (long)PRODUCERS * PER_PRODUCER); /* nothing ran twice */
}

/* ---- queue_in_loop from inside a functor ------------------------------ */

static struct {
    net_loop_t *loop;
    int step;
    bool inside_outer;
} nested;

static void nested_second(void *arg)
{
    (void)arg;
    CHECK(!nested.inside_outer); /* queued: never run inside the caller */
    CHECK_EQ(nested.step, 2);
    nested.step = 3;
    net_loop_quit(nested.loop);
}

static void nested_immediate(void *arg)
{
    (void)arg;
    CHECK(nested.inside_outer); /* run_in_loop on the loop thread: at once */
    nested.step = 2;
}

static void nested_first(void *arg)
{
    (void)arg;
    nested.inside_outer = true;
    nested.step = 1;
    CHECK_OK(net_loop_queue_in_loop(nested.loop, nested_second, NULL));
    CHECK_EQ(nested.step, 1);
    CHECK_OK(net_loop_run_in_loop(nested.loop, nested_immediate, NULL));
    CHECK_EQ(nested.step, 2);
    nested.inside_outer = false;
}

TEST(loop_queue_in_loop_from_functor_runs_next_iteration)
{
    /* No fd, no timer but the watchdog: if the nested functor waited for
     * I/O the watchdog would fire. */
    nested.loop = net_test_new_loop(5000);
    CHECK_OK(net_loop_queue_in_loop(nested.loop, nested_first, NULL));
    CHECK_OK(net_loop_run(nested.loop));
    CHECK_EQ(nested.step, 3);
    net_loop_free(nested.loop);
}

/* ---- a chain of self-requeuing functors never blocks ------------------ */

static int chain_left;
static void chain_step(void *arg)
{
    net_loop_t *loop = arg;
    if (--chain_left == 0)
        net_loop_quit(loop);
    else
        CHECK_OK(net_loop_queue_in_loop(loop, chain_step, loop));
}

TEST(loop_functor_chain_does_not_wait_for_io)
{
    net_loop_t *loop = net_test_new_loop(5000);
    chain_left = 10000;
    CHECK_OK(net_loop_queue_in_loop(loop, chain_step, loop));
    CHECK_OK(net_loop_run(loop));
    CHECK_EQ(chain_left, 0);
    net_loop_free(loop);
}

/* ---- quit ------------------------------------------------------------- */

static int counter;
static void count_functor(void *arg)
{
    (void)arg;
    counter++;
}

TEST(loop_quit_before_run)
{
    net_loop_t *loop = net_test_new_loop(5000);
    counter = 0;
    CHECK_OK(net_loop_queue_in_loop(loop, count_functor, NULL));
    net_loop_quit(loop);
    CHECK_OK(net_loop_run(loop)); /* returns at once, queued work done */
    CHECK_EQ(counter, 1);
    net_loop_free(loop);
}

static void *quit_now(void *arg)
{
    net_loop_quit(arg);
    return NULL;
}

TEST(loop_quit_from_other_thread_before_run)
{
    net_loop_t *loop = net_test_new_loop(5000);
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, quit_now, loop), 0);
    pthread_join(t, NULL);
    CHECK_OK(net_loop_run(loop));
    net_loop_free(loop);
}

static void *quit_later(void *arg)
{
    usleep(50 * 1000);
    net_loop_quit(arg);
    return NULL;
}

TEST(loop_quit_from_other_thread)
{
    net_loop_t *loop = net_test_new_loop(5000);
    pthread_t t;
    uint64_t start = net_test_now_ms();
    CHECK_EQ(pthread_create(&t, NULL, quit_later, loop), 0);
    CHECK_OK(net_loop_run(loop));
    CHECK(net_test_now_ms() - start >= 40);
    pthread_join(t, NULL);
    /* The request was consumed: the loop can run again. */
    net_loop_quit(loop);
    CHECK_OK(net_loop_run(loop));
    net_loop_free(loop);
}

static void quit_functor(void *arg)
{
    net_loop_quit(arg);
}

TEST(loop_quit_from_functor)
{
    net_loop_t *loop = net_test_new_loop(5000);
    CHECK_OK(net_loop_queue_in_loop(loop, quit_functor, loop));
    CHECK_OK(net_loop_run(loop));
    net_loop_free(loop);
}

/* ---- one loop per thread ---------------------------------------------- */

TEST(loop_second_loop_on_thread_rejected)
{
    CHECK(net_loop_current() == NULL);
    net_loop_t *a, *b = NULL;
    CHECK_OK(net_loop_new(&a));
    CHECK(net_loop_current() == a);
    CHECK(net_loop_in_loop_thread(a));
    CHECK_EQ(net_loop_new(&b), NET_ELOOPEXISTS);
    CHECK(b == NULL);
    CHECK(strstr(net_strerror(NET_ELOOPEXISTS), "already") != NULL);
    net_loop_free(a);
    CHECK(net_loop_current() == NULL);
    CHECK_OK(net_loop_new(&b)); /* the thread may have a loop again */
    net_loop_free(b);
}

static void *run_elsewhere(void *arg)
{
    net_loop_t *loop = arg;
    CHECK(!net_loop_in_loop_thread(loop));
    CHECK_EQ(net_loop_run(loop), NET_EWRONGTHREAD);
    return NULL;
}

TEST(loop_run_from_other_thread_rejected)
{
    net_loop_t *loop;
    CHECK_OK(net_loop_new(&loop));
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, run_elsewhere, loop), 0);
    pthread_join(t, NULL);
    net_loop_free(loop);
}

static void nested_run(void *arg)
{
    CHECK_EQ(net_loop_run(arg), -EBUSY);
    net_loop_quit(arg);
}

TEST(loop_nested_run_rejected)
{
    net_loop_t *loop = net_test_new_loop(5000);
    CHECK_OK(net_loop_queue_in_loop(loop, nested_run, loop));
    CHECK_OK(net_loop_run(loop));
    net_loop_free(loop);
}

TEST(loop_invalid_args)
{
    net_loop_t *loop;
    CHECK_EQ(net_loop_new(NULL), -EINVAL);
    CHECK_OK(net_loop_new(&loop));
    CHECK_EQ(net_loop_queue_in_loop(loop, NULL, NULL), -EINVAL);
    CHECK_EQ(net_loop_run_in_loop(loop, NULL, NULL), -EINVAL);
    CHECK_EQ(net_loop_queue_in_loop(NULL, count_functor, NULL), -EINVAL);
    net_loop_free(loop);
}

/* ---- functors queued after run returns are run, never leaked ---------- */

static void free_arg(void *arg)
{
    counter++;
    free(arg); /* ASan's leak check proves each one ran */
}

static void *queue_after_run(void *arg)
{
    for (int i = 0; i < 1000; i++)
        CHECK_OK(net_loop_queue_in_loop(arg, free_arg, malloc(16)));
    return NULL;
}

TEST(loop_functors_queued_after_run_run_at_free)
{
    net_loop_t *loop = net_test_new_loop(5000);
    counter = 0;
    net_loop_quit(loop);
    CHECK_OK(net_loop_run(loop));
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, queue_after_run, loop), 0);
    pthread_join(t, NULL);
    CHECK_EQ(counter, 0);
    CHECK_EQ(net_loop_queue_size(loop), 1000);
    net_loop_free(loop);
    CHECK_EQ(counter, 1000);
}

/* ---- wakeups are coalesced -------------------------------------------- */

static struct {
    net_loop_t *loop;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int phase; /* 1: the loop is blocked in hold_loop; 2: release it */
    unsigned long long writes_before, writes_after;
} co = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void set_phase(int phase)
{
    pthread_mutex_lock(&co.mu);
    co.phase = phase;
    pthread_cond_broadcast(&co.cond);
    pthread_mutex_unlock(&co.mu);
}

static void wait_phase(int phase)
{
    pthread_mutex_lock(&co.mu);
    while (co.phase < phase)
        pthread_cond_wait(&co.cond, &co.mu);
    pthread_mutex_unlock(&co.mu);
}

static void hold_loop(void *arg)
{
    (void)arg;
    set_phase(1);
    wait_phase(2);
}

static void *burst_producer(void *arg)
{
    (void)arg;
    wait_phase(1);
    co.writes_before = net__loop_eventfd_writes(co.loop);
    for (int i = 0; i < 1000; i++)
        CHECK_OK(net_loop_queue_in_loop(co.loop, count_functor, NULL));
    co.writes_after = net__loop_eventfd_writes(co.loop);
    CHECK_OK(net_loop_queue_in_loop(co.loop, quit_functor, co.loop));
    set_phase(2);
    return NULL;
}

TEST(loop_wakeups_coalesced_while_loop_busy)
{
    co.loop = net_test_new_loop(5000);
    counter = 0;
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, burst_producer, NULL), 0);
    CHECK_OK(net_loop_queue_in_loop(co.loop, hold_loop, NULL));
    CHECK_OK(net_loop_run(co.loop));
    pthread_join(t, NULL);
    /* 1000 functors queued while the loop was busy: one eventfd write. */
    CHECK_EQ(co.writes_after - co.writes_before, 1);
    CHECK_EQ(counter, 1000);
    net_loop_free(co.loop);
}

TEST(loop_same_thread_queue_needs_no_wakeup)
{
    net_loop_t *loop = net_test_new_loop(5000);
    unsigned long long before = net__loop_eventfd_writes(loop);
    counter = 0;
    for (int i = 0; i < 100; i++)
        CHECK_OK(net_loop_queue_in_loop(loop, count_functor, NULL));
    CHECK_OK(net_loop_queue_in_loop(loop, quit_functor, loop));
    CHECK_OK(net_loop_run(loop));
    CHECK_EQ(counter, 100);
    CHECK_EQ(net__loop_eventfd_writes(loop) - before, 0);
    net_loop_free(loop);
}

TEST(loop_backend_matches_env)
{
    net_loop_t *loop;
    CHECK_OK(net_loop_new(&loop));
    const char *want = getenv("NETLOOP_POLLER");
    CHECK(strcmp(net_loop_backend(loop), want && *want ? want : "epoll") == 0);
    net_loop_free(loop);
}
