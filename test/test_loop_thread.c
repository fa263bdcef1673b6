/* Loop threads and pools: start/stop, init, functors, signal masks, round
 * robin. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

#include <net/loop.h>
#include <net/loop_thread.h>

#include "harness.h"

/* Waits (bounded) until *v >= n; fails the test on timeout. */
static void wait_at_least(atomic_int *v, int n, uint64_t timeout_ms)
{
    uint64_t deadline = net_test_now_ms() + timeout_ms;
    while (atomic_load(v) < n) {
        CHECK(net_test_now_ms() < deadline);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

/* Waits (bounded) until *flag (never negative) becomes nonzero. */
static void wait_flag(atomic_int *flag, uint64_t timeout_ms)
{
    wait_at_least(flag, 1, timeout_ms);
}

/* ---- start gives a running loop on another thread --------------------- */

static struct {
    pthread_t main_thread;
    net_loop_t *loop;
    net_loop_t *current;
    bool other_thread;
    bool in_loop_thread;
    char name[16];
    atomic_int ran;
} st;

static void st_functor(void *arg)
{
    CHECK(arg == &st);
    st.current = net_loop_current();
    st.other_thread = !pthread_equal(pthread_self(), st.main_thread);
    st.in_loop_thread = net_loop_in_loop_thread(st.loop);
    CHECK_EQ(pthread_getname_np(pthread_self(), st.name, sizeof st.name), 0);
    atomic_store(&st.ran, 1);
}

TEST(loop_thread_start_gives_running_loop)
{
    st.main_thread = pthread_self();
    net_loop_thread_t *t = NULL;
    CHECK_OK(net_loop_thread_start("lt-test", NULL, NULL, &t));
    CHECK(t != NULL);
    st.loop = net_loop_thread_loop(t);
    CHECK(st.loop != NULL);
    CHECK(net_loop_current() == NULL); /* the main thread got no loop */
    CHECK(!net_loop_in_loop_thread(st.loop));
    CHECK_OK(net_loop_run_in_loop(st.loop, st_functor, &st));
    wait_flag(&st.ran, 2000);
    CHECK(st.current == st.loop);
    CHECK(st.other_thread);
    CHECK(st.in_loop_thread);
    CHECK(strcmp(st.name, "lt-test") == 0);
    net_loop_thread_join(t);
}

/* ---- a timer added from the main thread fires on the loop thread ------ */

static struct {
    net_loop_t *loop;
    net_loop_t *current;
    atomic_int fired;
} tm;

static void tm_fire_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    tm.current = net_loop_current();
    atomic_store(&tm.fired, 1);
}

TEST(loop_thread_timer_from_other_thread)
{
    net_loop_thread_t *t;
    CHECK_OK(net_loop_thread_start(NULL, NULL, NULL, &t));
    tm.loop = net_loop_thread_loop(t);
    CHECK_OK(net_loop_run_after(tm.loop, 10, tm_fire_cb, NULL));
    wait_flag(&tm.fired, 2000);
    CHECK(tm.current == tm.loop);
    net_loop_thread_join(t);
}

/* ---- init runs on the thread, before start returns -------------------- */

/* Plain fields on purpose: start's handshake must publish them (TSan). */
static struct {
    int calls;
    net_loop_t *loop;
    net_loop_t *current;
    bool other_thread;
    void *arg;
    pthread_t main_thread;
} in;

static void in_init(net_loop_t *loop, void *arg)
{
    in.calls++;
    in.loop = loop;
    in.current = net_loop_current();
    in.other_thread = !pthread_equal(pthread_self(), in.main_thread);
    in.arg = arg;
}

TEST(loop_thread_init_runs_before_start_returns)
{
    in.main_thread = pthread_self();
    net_loop_thread_t *t;
    CHECK_OK(net_loop_thread_start("lt-init", in_init, &in, &t));
    CHECK_EQ(in.calls, 1);
    CHECK(in.loop != NULL);
    CHECK(in.loop == net_loop_thread_loop(t));
    CHECK(in.current == in.loop);
    CHECK(in.other_thread);
    CHECK(in.arg == &in);
    net_loop_thread_join(t);
    CHECK_EQ(in.calls, 1);
}

/* ---- functors queued just before stop all run, once, in order --------- */

#define QUEUED 1000

static struct {
    net_loop_t *loop;
    int ran;
    int seen[QUEUED];
    bool wrong_thread;
    bool out_of_order;
} qs;

static void qs_functor(void *arg)
{
    int i = (int)(intptr_t)arg;
    if (!net_loop_in_loop_thread(qs.loop))
        qs.wrong_thread = true;
    if (i != qs.ran)
        qs.out_of_order = true;
    qs.seen[i]++;
    qs.ran++;
}

TEST(loop_thread_functors_queued_before_stop_run)
{
    net_loop_thread_t *t;
    CHECK_OK(net_loop_thread_start("lt-stop", NULL, NULL, &t));
    qs.loop = net_loop_thread_loop(t);
    for (int i = 0; i < QUEUED; i++)
        CHECK_OK(net_loop_queue_in_loop(qs.loop, qs_functor, (void *)(intptr_t)i));
    net_loop_thread_join(t); /* the join publishes the loop thread's writes */
    CHECK_EQ(qs.ran, QUEUED);
    for (int i = 0; i < QUEUED; i++)
        CHECK_EQ(qs.seen[i], 1);
    CHECK(!qs.wrong_thread);
    CHECK(!qs.out_of_order);
}

/* ---- stop's quit must not race the thread freeing its loop ----------- */

static void noop_functor(void *arg)
{
    (void)arg;
}

TEST(loop_thread_stop_does_not_race_loop_free)
{
    /* stop() asks the loop to quit and wakes it; the woken thread may free
     * the loop before the waking call has finished touching it. Repeated so
     * that TSan/ASan see the window; each round takes about a millisecond. */
    for (int round = 0; round < 30; round++) {
        net_loop_thread_t *t;
        CHECK_OK(net_loop_thread_start("lt-race", NULL, NULL, &t));
        for (int i = 0; i < 100; i++)
            CHECK_OK(net_loop_queue_in_loop(net_loop_thread_loop(t), noop_functor, NULL));
        net_loop_thread_join(t);
    }
}

/* ---- the loop stays valid until stop, even if someone else quit it ---- */

static atomic_int uq_quit;

static void uq_quit_functor(void *arg)
{
    net_loop_quit(arg);
    atomic_store(&uq_quit, 1);
}

TEST(loop_thread_loop_valid_until_stop_after_user_quit)
{
    net_loop_thread_t *t;
    CHECK_OK(net_loop_thread_start("lt-uquit", NULL, NULL, &t));
    net_loop_t *loop = net_loop_thread_loop(t);
    CHECK_OK(net_loop_run_in_loop(loop, uq_quit_functor, loop));
    wait_flag(&uq_quit, 2000);
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL); /* let net_loop_run return on the loop thread */
    /* "Valid until net_loop_thread_join()": the handle still gives the loop
     * and stop may quit it (ASan: no use after free). */
    CHECK(net_loop_thread_loop(t) == loop);
    CHECK(net_loop_queue_size(loop) == 0);
    net_loop_thread_join(t);
}

/* ---- loop threads block asynchronous signals -------------------------- */

static struct {
    sigset_t in_init, in_functor;
    atomic_int ran;
} sm;

static void sm_init(net_loop_t *loop, void *arg)
{
    (void)loop, (void)arg;
    CHECK_EQ(pthread_sigmask(SIG_BLOCK, NULL, &sm.in_init), 0);
}

static void sm_functor(void *arg)
{
    (void)arg;
    CHECK_EQ(pthread_sigmask(SIG_BLOCK, NULL, &sm.in_functor), 0);
    atomic_store(&sm.ran, 1);
}

TEST(loop_thread_blocks_signals)
{
    sigset_t before, after;
    CHECK_EQ(pthread_sigmask(SIG_BLOCK, NULL, &before), 0);
    CHECK(!sigismember(&before, SIGINT));
    CHECK(!sigismember(&before, SIGTERM));
    net_loop_thread_t *t;
    CHECK_OK(net_loop_thread_start("lt-sig", sm_init, NULL, &t));
    CHECK_OK(net_loop_run_in_loop(net_loop_thread_loop(t), sm_functor, NULL));
    wait_flag(&sm.ran, 2000);
    CHECK(sigismember(&sm.in_init, SIGINT));
    CHECK(sigismember(&sm.in_init, SIGTERM));
    CHECK(sigismember(&sm.in_functor, SIGINT));
    CHECK(sigismember(&sm.in_functor, SIGTERM));
    CHECK(sigismember(&sm.in_functor, SIGHUP));
    CHECK(sigismember(&sm.in_functor, SIGUSR1));
    /* Synchronous faults must still be deliverable (a crash stays a crash). */
    CHECK(!sigismember(&sm.in_functor, SIGSEGV));
    /* The caller's own mask is restored. */
    CHECK_EQ(pthread_sigmask(SIG_BLOCK, NULL, &after), 0);
    CHECK(!sigismember(&after, SIGINT));
    CHECK(!sigismember(&after, SIGTERM));
    net_loop_thread_join(t);
}

/* ---- pool: round robin over 3 threads --------------------------------- */

TEST(loop_pool_round_robin)
{
    net_loop_t *base;
    CHECK_OK(net_loop_new(&base));
    net_loop_pool_t *pool = NULL;
    CHECK_OK(net_loop_pool_start(base, 3, "rr", NULL, NULL, &pool));
    CHECK(pool != NULL);
    CHECK_EQ(net_loop_pool_size(pool), 3);
    net_loop_t *l[6];
    for (int i = 0; i < 6; i++) {
        l[i] = net_loop_pool_next(pool);
        CHECK(l[i] != NULL);
        CHECK(l[i] != base);
    }
    CHECK(l[0] != l[1] && l[1] != l[2] && l[0] != l[2]);
    for (int i = 0; i < 3; i++) {
        CHECK(l[i + 3] == l[i]);
        CHECK(net_loop_pool_get(pool, (size_t)i) == l[i]);
    }
    CHECK(net_loop_pool_get(pool, 3) == NULL);
    CHECK(net_loop_pool_get(pool, SIZE_MAX) == NULL);
    static const uint64_t hashes[] = {0, 1, 2, 3, 4, 5, 1000, 0xdeadbeef, UINT64_MAX};
    for (size_t i = 0; i < sizeof hashes / sizeof *hashes; i++) {
        net_loop_t *a = net_loop_pool_for_hash(pool, hashes[i]);
        CHECK(a == net_loop_pool_for_hash(pool, hashes[i]));
        CHECK(a == net_loop_pool_get(pool, hashes[i] % 3));
    }
    /* for_hash does not disturb the round robin. */
    CHECK(net_loop_pool_next(pool) == l[0]);
    net_loop_pool_join(pool);
    CHECK(net_loop_current() == base); /* untouched */
    net_loop_free(base);
}

/* ---- pool: zero threads hands out the base loop ----------------------- */

static struct {
    int calls;
    net_loop_t *loop;
    bool on_caller;
    void *arg;
    pthread_t caller;
} zt;

static void zt_init(net_loop_t *loop, void *arg)
{
    zt.calls++;
    zt.loop = loop;
    zt.on_caller = pthread_equal(pthread_self(), zt.caller);
    zt.arg = arg;
}

static void quit_functor(void *arg)
{
    net_loop_quit(arg);
}

TEST(loop_pool_zero_threads_uses_base)
{
    net_loop_t *base;
    CHECK_OK(net_loop_new(&base));
    zt.caller = pthread_self();
    net_loop_pool_t *pool;
    CHECK_OK(net_loop_pool_start(base, 0, "zero", zt_init, &zt, &pool));
    CHECK_EQ(zt.calls, 1);
    CHECK(zt.loop == base);
    CHECK(zt.on_caller);
    CHECK(zt.arg == &zt);
    CHECK_EQ(net_loop_pool_size(pool), 1);
    CHECK(net_loop_pool_next(pool) == base);
    CHECK(net_loop_pool_next(pool) == base);
    CHECK(net_loop_pool_for_hash(pool, 0) == base);
    CHECK(net_loop_pool_for_hash(pool, 12345) == base);
    CHECK(net_loop_pool_get(pool, 0) == base);
    CHECK(net_loop_pool_get(pool, 1) == NULL);
    net_loop_pool_join(pool);
    CHECK_EQ(zt.calls, 1);
    /* The base loop still works after the pool is gone. */
    CHECK_OK(net_loop_queue_in_loop(base, quit_functor, base));
    CHECK_OK(net_loop_run(base));
    net_loop_free(base);
}

/* ---- pool: init on each thread, with that thread's loop --------------- */

#define POOL_N 4

static struct {
    pthread_mutex_t mu;
    int calls;
    pthread_t threads[POOL_N];
    net_loop_t *loops[POOL_N];
    char names[POOL_N][16];
    bool current_matches[POOL_N];
    pthread_t caller;
} pi = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void pi_init(net_loop_t *loop, void *arg)
{
    CHECK(arg == &pi);
    pthread_mutex_lock(&pi.mu);
    int i = pi.calls++;
    CHECK(i < POOL_N);
    pi.threads[i] = pthread_self();
    pi.loops[i] = loop;
    pi.current_matches[i] = net_loop_current() == loop;
    CHECK_EQ(pthread_getname_np(pthread_self(), pi.names[i], sizeof pi.names[i]), 0);
    pthread_mutex_unlock(&pi.mu);
}

TEST(loop_pool_init_on_each_thread)
{
    net_loop_t *base;
    CHECK_OK(net_loop_new(&base));
    pi.caller = pthread_self();
    net_loop_pool_t *pool;
    CHECK_OK(net_loop_pool_start(base, POOL_N, "workers", pi_init, &pi, &pool));
    pthread_mutex_lock(&pi.mu);
    CHECK_EQ(pi.calls, POOL_N);
    for (int i = 0; i < POOL_N; i++) {
        CHECK(pi.current_matches[i]);
        CHECK(!pthread_equal(pi.threads[i], pi.caller));
        CHECK(pi.loops[i] != base);
        for (int j = 0; j < i; j++) {
            CHECK(!pthread_equal(pi.threads[i], pi.threads[j]));
            CHECK(pi.loops[i] != pi.loops[j]);
        }
        /* Threads start in order: init i belongs to loop i, "workers-i". */
        CHECK(pi.loops[i] == net_loop_pool_get(pool, (size_t)i));
        char want[16];
        snprintf(want, sizeof want, "workers-%d", i);
        CHECK(strcmp(pi.names[i], want) == 0);
    }
    pthread_mutex_unlock(&pi.mu);
    net_loop_pool_join(pool);
    CHECK_EQ(pi.calls, POOL_N);
    net_loop_free(base);
}

/* ---- argument checks -------------------------------------------------- */

TEST(loop_pool_invalid_args)
{
    net_loop_t *base;
    CHECK_OK(net_loop_new(&base));
    net_loop_pool_t *pool = NULL;
    CHECK_EQ(net_loop_pool_start(NULL, 2, NULL, NULL, NULL, &pool), -EINVAL);
    CHECK_EQ(net_loop_pool_start(base, 2, NULL, NULL, NULL, NULL), -EINVAL);
    CHECK_EQ(net_loop_pool_start(base, 1025, NULL, NULL, NULL, &pool), -EINVAL);
    CHECK_EQ(net_loop_pool_start(base, SIZE_MAX, NULL, NULL, NULL, &pool), -EINVAL);
    CHECK(pool == NULL);
    net_loop_pool_join(NULL);

    CHECK_EQ(net_loop_thread_start("x", NULL, NULL, NULL), -EINVAL);
    CHECK(net_loop_thread_loop(NULL) == NULL);
    net_loop_thread_join(NULL);

    /* A name longer than 15 bytes is cut, not an error. */
    net_loop_thread_t *t;
    CHECK_OK(net_loop_thread_start("a-very-long-thread-name", NULL, NULL, &t));
    net_loop_thread_join(t);
    net_loop_free(base);
}

/* ---- joins and pool starts from the wrong thread are refused ---------- */

static struct {
    net_loop_thread_t *t;
    int rc;
    atomic_int done, ran;
} sj;

static void sj_join_self_cb(void *arg)
{
    (void)arg;
    sj.rc = net_loop_thread_join(sj.t); /* from its own loop: would wait for itself */
    atomic_store(&sj.done, 1);
}

static void sj_ran_cb(void *arg)
{
    (void)arg;
    atomic_store(&sj.ran, 1);
}

TEST(loop_thread_join_from_its_own_thread_rejected)
{
    CHECK_OK(net_loop_thread_start("lt-self", NULL, NULL, &sj.t));
    CHECK_OK(net_loop_queue_in_loop(net_loop_thread_loop(sj.t), sj_join_self_cb, NULL));
    wait_flag(&sj.done, 5000);
    CHECK_EQ(sj.rc, NET_EWRONGTHREAD);
    /* Nothing was done: the thread still runs its loop. */
    CHECK_OK(net_loop_queue_in_loop(net_loop_thread_loop(sj.t), sj_ran_cb, NULL));
    wait_flag(&sj.ran, 5000);
    CHECK_EQ(net_loop_thread_join(sj.t), 0);
    CHECK_EQ(net_loop_thread_join(NULL), 0);
}

static struct {
    net_loop_t *base;
    net_loop_pool_t *pool, *other_pool;
    int start_rc, join_rc, join_in_pool_rc;
    atomic_int in_pool_done, ran;
} pw;

static void *pw_other_thread(void *arg)
{
    (void)arg;
    pw.start_rc = net_loop_pool_start(pw.base, 1, "pw", NULL, NULL, &pw.other_pool);
    pw.join_rc = net_loop_pool_join(pw.pool);
    return NULL;
}

static void pw_join_in_pool_cb(void *arg)
{
    (void)arg;
    pw.join_in_pool_rc = net_loop_pool_join(pw.pool);
    atomic_store(&pw.in_pool_done, 1);
}

static void pw_ran_cb(void *arg)
{
    (void)arg;
    atomic_fetch_add(&pw.ran, 1);
}

TEST(loop_pool_start_join_off_base_thread_rejected)
{
    CHECK_OK(net_loop_new(&pw.base));
    CHECK_OK(net_loop_pool_start(pw.base, 2, "pw", NULL, NULL, &pw.pool));
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, pw_other_thread, NULL), 0);
    pthread_join(t, NULL);
    CHECK_EQ(pw.start_rc, NET_EWRONGTHREAD);
    CHECK(pw.other_pool == NULL);
    CHECK_EQ(pw.join_rc, NET_EWRONGTHREAD);
    /* One of the pool's own threads is not the base thread either. */
    CHECK_OK(net_loop_queue_in_loop(net_loop_pool_get(pw.pool, 0), pw_join_in_pool_cb, NULL));
    wait_flag(&pw.in_pool_done, 5000);
    CHECK_EQ(pw.join_in_pool_rc, NET_EWRONGTHREAD);
    /* The pool was left whole: both loops still run functors. */
    for (size_t i = 0; i < 2; i++)
        CHECK_OK(net_loop_queue_in_loop(net_loop_pool_get(pw.pool, i), pw_ran_cb, NULL));
    wait_at_least(&pw.ran, 2, 5000);
    CHECK_EQ(net_loop_pool_join(pw.pool), 0);
    CHECK_EQ(net_loop_pool_join(NULL), 0);
    CHECK_OK(net_loop_free(pw.base));
}
