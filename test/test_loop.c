/* The event loop: functor queue, quit, one loop per thread. */
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include <net/loop.h>

#include "net_test_util.h"
#include "loop/loop_internal.h"

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
    uint64_t writes_before, writes_after;
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

static uint64_t wakeups(net_loop_t *loop)
{
    struct net_loop_stats st;
    net_loop_stats(loop, &st);
    return st.wakeups;
}

static void *burst_producer(void *arg)
{
    (void)arg;
    wait_phase(1);
    co.writes_before = wakeups(co.loop);
    for (int i = 0; i < 1000; i++)
        CHECK_OK(net_loop_queue_in_loop(co.loop, count_functor, NULL));
    co.writes_after = wakeups(co.loop);
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
    uint64_t before = wakeups(loop);
    counter = 0;
    for (int i = 0; i < 100; i++)
        CHECK_OK(net_loop_queue_in_loop(loop, count_functor, NULL));
    CHECK_OK(net_loop_queue_in_loop(loop, quit_functor, loop));
    CHECK_OK(net_loop_run(loop));
    CHECK_EQ(counter, 100);
    CHECK_EQ(wakeups(loop) - before, 0);
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

/* ---- posted tasks (allocation-free work for the loop) ------------------- */

#define POST_THREADS 4
#define POST_ROUNDS 20000

/* One task per thread, reposted after each run: each runs exactly
 * POST_ROUNDS times, on the loop thread, however the posts interleave. */
static struct {
    net_loop_t *loop;
    pthread_t loop_thread;
    struct net__loop_task task[POST_THREADS];
    atomic_int ran[POST_THREADS];
    atomic_bool posted[POST_THREADS]; /* the owner may post again once it ran */
    atomic_int done;
} pt;

static void post_task_run(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg;
    CHECK(pthread_equal(pthread_self(), pt.loop_thread));
    CHECK(atomic_exchange(&pt.posted[i], false)); /* posted once, ran once */
    if (atomic_fetch_add(&pt.ran[i], 1) + 1 == POST_ROUNDS &&
        atomic_fetch_add(&pt.done, 1) + 1 == POST_THREADS)
        net_loop_quit(pt.loop);
}

static void *post_poster(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg;
    uint64_t deadline = net_test_now_ms() + NET_TEST_WAIT_MS;
    for (int round = 0; round < POST_ROUNDS; round++) {
        while (atomic_load(&pt.posted[i])) { /* wait for the last run */
            CHECK(net_test_now_ms() < deadline);
            sched_yield();
        }
        atomic_store(&pt.posted[i], true);
        net__loop_post(pt.loop, &pt.task[i]);
    }
    return NULL;
}

TEST(loop_posted_tasks_run_once_each_from_4_threads)
{
    pt.loop = net_test_new_loop(60000);
    pt.loop_thread = pthread_self();
    pthread_t t[POST_THREADS];
    for (uintptr_t i = 0; i < POST_THREADS; i++) {
        pt.task[i] = (struct net__loop_task){.fn = post_task_run, .arg = (void *)i};
        CHECK_EQ(pthread_create(&t[i], NULL, post_poster, (void *)i), 0);
    }
    CHECK_OK(net_loop_run(pt.loop));
    for (int i = 0; i < POST_THREADS; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ(atomic_load(&pt.ran[i]), POST_ROUNDS);
    }
    CHECK_EQ(net__loop_posted_count(pt.loop), 0);
    net_loop_free(pt.loop);
}

static int repost_left;

static void repost_self(void *arg)
{
    struct net__loop_task *t = arg;
    if (--repost_left > 0)
        net__loop_post(net_loop_current(), t);
}

/* A task may post itself again from inside its own run; posted tasks still
 * waiting when the loop is freed run then. */
TEST(loop_posted_task_reposts_itself_and_runs_at_free)
{
    net_loop_t *loop = net_test_new_loop(5000);
    struct net__loop_task t = {.fn = repost_self};
    t.arg = &t;
    repost_left = 3;
    net__loop_post(loop, &t);
    CHECK_EQ(net__loop_posted_count(loop), 1);
    net_test_run_for(loop, 20);
    CHECK_EQ(repost_left, 0); /* ran three times, across iterations */
    CHECK_EQ(net__loop_posted_count(loop), 0);
    repost_left = 2;
    net__loop_post(loop, &t);
    net_loop_free(loop); /* runs it, and the repost it makes */
    CHECK_EQ(repost_left, 0);
}

/* ---- net_loop_free refuses a running loop and other threads ----------- */

static struct {
    int from_functor, from_timer;
} busy;

static void free_in_functor_cb(void *loop)
{
    busy.from_functor = net_loop_free(loop);
}

static void free_in_timer_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)id;
    (void)arg;
    busy.from_timer = net_loop_free(loop);
    net_loop_quit(loop);
}

TEST(loop_free_inside_callback_is_ebusy)
{
    net_loop_t *loop = net_test_new_loop(5000);
    CHECK_OK(net_loop_queue_in_loop(loop, free_in_functor_cb, loop));
    CHECK(net_loop_run_after(loop, 1, free_in_timer_cb, NULL) > 0);
    CHECK_OK(net_loop_run(loop));
    CHECK_EQ(busy.from_functor, -EBUSY);
    CHECK_EQ(busy.from_timer, -EBUSY);
    /* Nothing was freed: the loop still runs functors and timers. */
    counter = 0;
    CHECK_OK(net_loop_queue_in_loop(loop, count_functor, NULL));
    net_test_run_for(loop, 5);
    CHECK_EQ(counter, 1);
    CHECK(net_loop_current() == loop);
    CHECK_OK(net_loop_free(loop));
    CHECK(net_loop_current() == NULL);
}

static struct {
    int run_rc, free_rc;
} drain;

static void free_while_draining_cb(void *loop)
{
    drain.free_rc = net_loop_free(loop);
    drain.run_rc = net_loop_run(loop);
}

TEST(loop_free_inside_its_last_functors_is_ebusy)
{
    net_loop_t *loop;
    CHECK_OK(net_loop_new(&loop));
    CHECK_OK(net_loop_queue_in_loop(loop, free_while_draining_cb, loop));
    CHECK_OK(net_loop_free(loop)); /* runs the functor, which must not free it again */
    CHECK_EQ(drain.free_rc, -EBUSY);
    CHECK_EQ(drain.run_rc, -EBUSY);
    CHECK(net_loop_current() == NULL);
    CHECK_EQ(net_loop_free(NULL), 0);
}

static struct {
    int free_rc, run_rc;
    uint64_t now;
} other;

static void loop_calls_elsewhere(void *loop)
{
    other.free_rc = net_loop_free(loop);
    other.run_rc = net_loop_run(loop);
    other.now = net_loop_now_ms(loop);
    CHECK_OK(net_loop_queue_in_loop(loop, count_functor, NULL));
}

TEST(loop_calls_from_other_thread_are_ewrongthread)
{
    net_loop_t *loop = net_test_new_loop(5000);
    other.now = 1;
    counter = 0;
    net_test_run_with_client(loop, loop_calls_elsewhere, loop);
    CHECK_EQ(other.free_rc, NET_EWRONGTHREAD);
    CHECK_EQ(other.run_rc, NET_EWRONGTHREAD);
    CHECK_EQ(other.now, 0);
    /* The loop was neither freed nor run there: it works here. */
    net_test_run_for(loop, 5);
    CHECK_EQ(counter, 1);
    CHECK(net_loop_now_ms(loop) > 0);
    CHECK_OK(net_loop_free(loop));
}

/* ---- net_loop_stats: wakeups from another thread ---------------------- */

#define WAKE_ROUNDS 20

static atomic_int wake_ran;

static void wake_functor(void *arg)
{
    (void)arg;
    atomic_fetch_add(&wake_ran, 1);
}

/* One functor at a time, each queued after the previous one ran. The loop
 * clears its wakeup flag before it takes a batch, so a functor queued after
 * the batch ran costs one eventfd write. One queued in the window between
 * the clear and the take runs in that batch and leaves the flag set, so the
 * next one is coalesced into it: every such round is followed by one that
 * writes, which bounds the writes to [WAKE_ROUNDS / 2, WAKE_ROUNDS]. */
static void wake_rounds(void *loop)
{
    for (int i = 0; i < WAKE_ROUNDS; i++) {
        CHECK_OK(net_loop_queue_in_loop(loop, wake_functor, NULL));
        WAIT_UNTIL(atomic_load(&wake_ran) == i + 1);
    }
}

TEST(loop_stats_count_wakeups_from_other_thread)
{
    net_loop_t *loop = net_test_new_loop(5000);
    struct net_loop_stats before, after;
    net_loop_stats(loop, &before);
    net_test_run_with_client(loop, wake_rounds, loop);
    net_loop_stats(loop, &after);
    CHECK_EQ(atomic_load(&wake_ran), WAKE_ROUNDS);
    uint64_t writes = after.wakeups - before.wakeups;
    CHECK(writes >= WAKE_ROUNDS / 2 && writes <= WAKE_ROUNDS);
    CHECK_EQ(after.functors_run - before.functors_run, WAKE_ROUNDS);
    CHECK(after.iterations - before.iterations >= WAKE_ROUNDS);
    /* Queued on the loop's own thread: run, but no wakeup. */
    CHECK_OK(net_loop_queue_in_loop(loop, wake_functor, NULL));
    net_test_run_for(loop, 2);
    net_loop_stats(loop, &before);
    CHECK_EQ(before.wakeups, after.wakeups);
    CHECK_EQ(before.functors_run, after.functors_run + 1);
    CHECK_OK(net_loop_free(loop));
}

/* ---- a failing poller ends run with its errno, after the functors ----- */

static const struct net__poller_ops *real_ops;

static int failing_wait(struct net__poller *p, int timeout_ms, struct net__ready **ready)
{
    (void)p;
    (void)timeout_ms;
    (void)ready;
    return -ENOMEM;
}

TEST(loop_run_returns_poller_failure_after_functors)
{
    net_loop_t *loop = net_test_new_loop(5000);
    static struct net__poller_ops broken;
    real_ops = loop->ops;
    broken = *real_ops;
    broken.wait = failing_wait;
    loop->ops = &broken;
    counter = 0;
    CHECK_OK(net_loop_queue_in_loop(loop, count_functor, NULL));
    CHECK_EQ(net_loop_run(loop), -ENOMEM);
    CHECK_EQ(counter, 1); /* the queued functor ran before run returned */
    loop->ops = real_ops; /* the poller is back: the loop runs again */
    CHECK_OK(net_loop_queue_in_loop(loop, count_functor, NULL));
    net_test_run_for(loop, 2);
    CHECK_EQ(counter, 2);
    CHECK_OK(net_loop_free(loop));
}
