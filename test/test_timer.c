/* Timers: order, cancel (same thread, other thread, self), scale, overflow. */
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include <net/loop.h>

#include "net_test_util.h"

/* ---- same-instant order ----------------------------------------------- */

#define SAME 200
static int fired_order[SAME], nfired;

static void record_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    fired_order[nfired++] = (int)(intptr_t)arg;
}

TEST(timer_same_instant_fires_in_add_order)
{
    net_loop_t *loop = net_test_new_loop(5000);
    uint64_t when = net_now_ms() + 20;
    for (intptr_t i = 0; i < SAME; i++)
        CHECK_OK(net_loop_run_at(loop, when, record_cb, (void *)i));
    CHECK_OK(net_loop_run_at(loop, when + 1, net_test_quit_loop, loop));
    CHECK_OK(net_loop_run(loop));
    CHECK_EQ(nfired, SAME);
    for (int i = 0; i < SAME; i++)
        CHECK_EQ(fired_order[i], i);
    net_loop_free(loop);
}

TEST(timer_fires_in_time_order)
{
    net_loop_t *loop = net_test_new_loop(5000);
    static const int delays[] = {30, 10, 50, 20, 40, 0};
    for (int i = 0; i < 6; i++)
        CHECK_OK(net_loop_run_after(loop, (uint64_t)delays[i], record_cb, (void *)(intptr_t)delays[i]));
    CHECK_OK(net_loop_run_after(loop, 60, net_test_quit_loop, loop));
    uint64_t start = net_now_ms();
    CHECK_OK(net_loop_run(loop));
    CHECK(net_now_ms() - start >= 60);
    CHECK_EQ(nfired, 6);
    for (int i = 0; i < 6; i++)
        CHECK_EQ(fired_order[i], i * 10);
    net_loop_free(loop);
}

/* ---- never from inside the add call; past times fire next iteration --- */

static bool in_add_call;
static void not_inside_add_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    CHECK(!in_add_call);
    net_loop_quit(arg);
}

TEST(timer_past_time_fires_but_not_inside_add)
{
    net_loop_t *loop = net_test_new_loop(5000);
    in_add_call = true;
    CHECK_OK(net_loop_run_at(loop, 0, not_inside_add_cb, loop));
    in_add_call = false;
    CHECK_OK(net_loop_run(loop));
    net_loop_free(loop);
}

/* ---- cancel ----------------------------------------------------------- */

static int fires;
static void count_fire_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    fires++;
}

TEST(timer_cancel_before_fire)
{
    net_loop_t *loop = net_test_new_loop(5000);
    fires = 0;
    net_timer_id_t id = net_loop_run_after(loop, 10, count_fire_cb, NULL);
    CHECK(id > 0);
    CHECK_EQ(net_loop_timer_count(loop), 2);
    CHECK_EQ(net_timer_cancel(loop, id), 0);
    CHECK_EQ(net_timer_cancel(loop, id), -ENOENT); /* only once */
    CHECK_EQ(net_loop_timer_count(loop), 1);
    CHECK_OK(net_loop_run_after(loop, 40, net_test_quit_loop, loop));
    CHECK_OK(net_loop_run(loop));
    CHECK_EQ(fires, 0);
    CHECK_EQ(net_timer_cancel(loop, 0), -ENOENT);
    CHECK_EQ(net_timer_cancel(loop, -5), -ENOENT);
    CHECK_EQ(net_timer_cancel(loop, 1 << 30), -ENOENT);
    net_loop_free(loop);
}

TEST(timer_cancel_after_fire_is_enoent)
{
    net_loop_t *loop = net_test_new_loop(5000);
    fires = 0;
    net_timer_id_t id = net_loop_run_after(loop, 1, count_fire_cb, NULL);
    CHECK_OK(net_loop_run_after(loop, 20, net_test_quit_loop, loop));
    CHECK_OK(net_loop_run(loop));
    CHECK_EQ(fires, 1);
    CHECK_EQ(net_timer_cancel(loop, id), -ENOENT);
    net_loop_free(loop);
}

static struct {
    net_loop_t *loop;
    net_timer_id_t id;
    int runs;
} self;

static void self_cancel_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    if (++self.runs == 5) {
        CHECK_EQ(net_timer_cancel(self.loop, self.id), 0);
        CHECK_EQ(net_timer_cancel(self.loop, self.id), -ENOENT);
        CHECK_OK(net_loop_run_after(self.loop, 30, net_test_quit_loop, self.loop));
    }
}

TEST(timer_repeating_cancels_itself)
{
    self.loop = net_test_new_loop(5000);
    self.id = net_loop_run_every(self.loop, 1, self_cancel_cb, NULL);
    CHECK(self.id > 0);
    CHECK_OK(net_loop_run(self.loop));
    CHECK_EQ(self.runs, 5); /* no run after the cancel */
    CHECK_EQ(net_loop_timer_count(self.loop), 1); /* only the watchdog */
    net_loop_free(self.loop);
}

static void one_shot_cancels_itself_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    CHECK_EQ(net_timer_cancel(self.loop, self.id), -ENOENT); /* already fired */
    net_loop_quit(self.loop);
}

TEST(timer_one_shot_cancel_inside_itself_is_enoent)
{
    self.loop = net_test_new_loop(5000);
    self.id = net_loop_run_after(self.loop, 1, one_shot_cancels_itself_cb, NULL);
    CHECK_OK(net_loop_run(self.loop));
    net_loop_free(self.loop);
}

static struct {
    net_loop_t *loop;
    net_timer_id_t repeating, one_shot;
    atomic_int runs, one_shot_runs;
    int runs_at_cancel;
} xc;

static void xc_tick_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    atomic_fetch_add(&xc.runs, 1);
}

static void xc_one_shot_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    atomic_fetch_add(&xc.one_shot_runs, 1);
}

static void *xc_canceller(void *arg)
{
    (void)arg;
    while (atomic_load(&xc.runs) < 3)
        usleep(1000);
    CHECK_EQ(net_timer_cancel(xc.loop, xc.repeating), 0);
    xc.runs_at_cancel = atomic_load(&xc.runs);
    CHECK_EQ(net_timer_cancel(xc.loop, xc.one_shot), 0);
    CHECK_OK(net_loop_run_after(xc.loop, 50, net_test_quit_loop, xc.loop)); /* add from here too */
    return NULL;
}

TEST(timer_cancel_from_other_thread)
{
    xc.loop = net_test_new_loop(5000);
    xc.repeating = net_loop_run_every(xc.loop, 2, xc_tick_cb, NULL);
    xc.one_shot = net_loop_run_after(xc.loop, 3000, xc_one_shot_cb, NULL);
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, xc_canceller, NULL), 0);
    CHECK_OK(net_loop_run(xc.loop));
    pthread_join(t, NULL);
    /* A run already under way when cancel returned may finish; none starts. */
    CHECK(atomic_load(&xc.runs) <= xc.runs_at_cancel + 1);
    CHECK_EQ(atomic_load(&xc.one_shot_runs), 0);
    net_loop_free(xc.loop);
}

static net_loop_t *add_loop;
static pthread_t add_loop_thread;
static void on_loop_thread_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    CHECK(pthread_equal(pthread_self(), add_loop_thread));
    CHECK(net_loop_current() == add_loop);
    net_loop_quit(arg);
}

static void *add_from_thread(void *arg)
{
    CHECK_OK(net_loop_run_after(arg, 5, on_loop_thread_cb, arg));
    return NULL;
}

TEST(timer_added_from_other_thread_fires_on_loop)
{
    add_loop = net_test_new_loop(5000);
    add_loop_thread = pthread_self();
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, add_from_thread, add_loop), 0);
    CHECK_OK(net_loop_run(add_loop));
    pthread_join(t, NULL);
    net_loop_free(add_loop);
}

/* ---- 10k timers ------------------------------------------------------- */

#define MANY 10000
static struct {
    net_loop_t *loop;
    uint64_t when[MANY];
    net_timer_id_t id[MANY];
    unsigned char fired[MANY];
    uint64_t last_when;
    int left;
} many;

static void many_fire_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    int i = (int)(intptr_t)arg;
    CHECK_EQ(many.fired[i], 0);
    CHECK(i % 2 == 0); /* odd ones were cancelled */
    many.fired[i] = 1;
    CHECK(many.when[i] >= many.last_when); /* due order */
    CHECK(net_now_ms() >= many.when[i]);
    many.last_when = many.when[i];
    if (--many.left == 0)
        net_loop_quit(many.loop);
}

TEST(timer_10k_fire_once_in_order_half_cancelled)
{
    many.loop = net_test_new_loop(10000);
    uint64_t now = net_now_ms();
    srand(42);
    for (int i = 0; i < MANY; i++) {
        many.when[i] = now + 5 + (uint64_t)(rand() % 200);
        many.id[i] = net_loop_run_at(many.loop, many.when[i], many_fire_cb, (void *)(intptr_t)i);
        CHECK(many.id[i] > 0);
        CHECK(i == 0 || many.id[i] > many.id[i - 1]);
    }
    for (int i = 1; i < MANY; i += 2)
        CHECK_EQ(net_timer_cancel(many.loop, many.id[i]), 0);
    many.left = MANY / 2;
    CHECK_OK(net_loop_run(many.loop));
    for (int i = 0; i < MANY; i++)
        CHECK_EQ(many.fired[i], i % 2 == 0);
    CHECK_EQ(net_loop_timer_count(many.loop), 1);
    net_loop_free(many.loop);
}

/* ---- huge timeouts ---------------------------------------------------- */

TEST(timer_huge_timeouts_do_not_overflow)
{
    net_loop_t *loop = net_test_new_loop(5000);
    fires = 0;
    net_timer_id_t a = net_loop_run_after(loop, UINT64_MAX, count_fire_cb, NULL);
    net_timer_id_t b = net_loop_run_at(loop, UINT64_MAX, count_fire_cb, NULL);
    net_timer_id_t c = net_loop_run_every(loop, UINT64_MAX, count_fire_cb, NULL);
    net_timer_id_t d = net_loop_run_after(loop, (uint64_t)INT64_MAX / 1000 + 7, count_fire_cb, NULL);
    CHECK(a > 0 && b > 0 && c > 0 && d > 0);
    /* A near timer still fires although the far ones are earlier in the
     * heap's insertion order. */
    CHECK_OK(net_loop_run_after(loop, 20, net_test_quit_loop, loop));
    CHECK_OK(net_loop_run(loop));
    CHECK_EQ(fires, 0);
    CHECK_EQ(net_loop_timer_count(loop), 5);
    CHECK_EQ(net_timer_cancel(loop, a), 0);
    CHECK_EQ(net_timer_cancel(loop, c), 0);
    CHECK_EQ(net_loop_timer_count(loop), 3);
    net_loop_free(loop); /* the rest are discarded without firing */
    CHECK_EQ(fires, 0);
}

TEST(timer_invalid_args)
{
    net_loop_t *loop;
    CHECK_OK(net_loop_new(&loop));
    CHECK_EQ(net_loop_run_after(loop, 1, NULL, NULL), -EINVAL);
    CHECK_EQ(net_loop_run_every(loop, 0, count_fire_cb, NULL), -EINVAL);
    CHECK_EQ(net_loop_run_at(NULL, 1, count_fire_cb, NULL), -EINVAL);
    net_loop_free(loop);
}

static void *make_ids(void *arg)
{
    net_loop_t *loop;
    CHECK_OK(net_loop_new(&loop));
    net_timer_id_t *out = arg;
    for (int i = 0; i < 1000; i++) {
        out[i] = net_loop_run_after(loop, 1000, count_fire_cb, NULL);
        CHECK(out[i] > 0);
    }
    net_loop_free(loop);
    return NULL;
}

TEST(timer_ids_unique_across_loops)
{
    static net_timer_id_t ids[4][1000];
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        CHECK_EQ(pthread_create(&t[i], NULL, make_ids, ids[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    /* Ids increase per loop and never collide across loops. */
    static unsigned char seen[4 * 1000 + 16];
    net_timer_id_t base = ids[0][0];
    for (int i = 0; i < 4; i++)
        base = ids[i][0] < base ? ids[i][0] : base;
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 1000; j++) {
            CHECK(j == 0 || ids[i][j] > ids[i][j - 1]);
            net_timer_id_t k = ids[i][j] - base;
            CHECK(k >= 0 && k < 4000);
            CHECK_EQ(seen[k], 0);
            seen[k] = 1;
        }
    }
}

static net_loop_t *rep_loop;
static int rep_runs;
static uint64_t rep_last;
static void rep_tick_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    uint64_t now = net_now_ms();
    if (rep_runs > 0)
        CHECK(now - rep_last >= 9); /* ms granularity: >= interval - 1 */
    rep_last = now;
    if (++rep_runs == 5)
        net_loop_quit(rep_loop);
}

TEST(timer_repeating_interval_respected)
{
    rep_loop = net_test_new_loop(5000);
    net_timer_id_t id = net_loop_run_every(rep_loop, 10, rep_tick_cb, NULL);
    CHECK(id > 0);
    CHECK_OK(net_loop_run(rep_loop));
    CHECK_EQ(rep_runs, 5);
    CHECK_EQ(net_timer_cancel(rep_loop, id), 0);
    net_loop_free(rep_loop);
}

/* ---- the callback gets its loop and its own id ------------------------ */

static struct {
    net_loop_t *loop;
    net_timer_id_t ids[3];
    int seen[3];
    int bad;
} own;

static void own_id_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    int i = (int)(intptr_t)arg;
    if (loop != own.loop || id != own.ids[i])
        own.bad++;
    if (++own.seen[i] == 3 && i == 2)
        CHECK_EQ(net_timer_cancel(loop, id), 0);
}

TEST(timer_callback_gets_its_loop_and_id)
{
    own.loop = net_test_new_loop(5000);
    own.ids[0] = net_loop_run_after(own.loop, 1, own_id_cb, (void *)0);
    own.ids[1] = net_loop_run_at(own.loop, net_now_ms() + 2, own_id_cb, (void *)1);
    own.ids[2] = net_loop_run_every(own.loop, 1, own_id_cb, (void *)2);
    CHECK(own.ids[0] > 0 && own.ids[1] > 0 && own.ids[2] > 0);
    net_test_run_for(own.loop, 40);
    CHECK_EQ(own.bad, 0);
    CHECK_EQ(own.seen[0], 1);
    CHECK_EQ(own.seen[1], 1);
    CHECK_EQ(own.seen[2], 3); /* cancelled itself through the id it was given */
    CHECK_EQ(net_loop_timer_count(own.loop), 1); /* only the watchdog */
    CHECK_OK(net_loop_free(own.loop));
}

/* A timer added from another thread with a 1 ms interval may fire before
 * the adder has stored the id it got back: the callback cancels itself
 * with the id it is passed, and never runs again. */
#define XSELF_RUNS 5

static struct {
    net_loop_t *loop;
    atomic_int runs, bad_id;
    atomic_llong first_id; /* what the callback was given, 0 before */
    net_timer_id_t added;  /* what the add returned (written by the adder) */
    int cancel_rc;
} xself;

static void xself_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)arg;
    long long expect = 0;
    if (!atomic_compare_exchange_strong(&xself.first_id, &expect, id) && expect != id)
        atomic_fetch_add(&xself.bad_id, 1);
    if (atomic_fetch_add(&xself.runs, 1) + 1 == XSELF_RUNS)
        xself.cancel_rc = net_timer_cancel(loop, id);
}

static void xself_add(void *arg)
{
    (void)arg;
    xself.added = net_loop_run_every(xself.loop, 1, xself_cb, NULL);
    CHECK(xself.added > 0);
}

static bool xself_cancelled(void *arg)
{
    (void)arg;
    return atomic_load(&xself.runs) >= XSELF_RUNS;
}

TEST(timer_added_from_other_thread_cancels_itself_by_passed_id)
{
    xself.loop = net_test_new_loop(5000);
    net_test_run_with_client(xself.loop, xself_add, NULL);
    net_test_run_until(xself.loop, xself_cancelled, NULL);
    net_test_run_for(xself.loop, 30); /* 30 more intervals: none may run */
    CHECK_EQ(atomic_load(&xself.runs), XSELF_RUNS);
    CHECK_EQ(xself.cancel_rc, 0);
    CHECK_EQ(atomic_load(&xself.bad_id), 0);
    CHECK_EQ(atomic_load(&xself.first_id), xself.added);
    CHECK_EQ(net_timer_cancel(xself.loop, xself.added), -ENOENT);
    CHECK_EQ(net_loop_timer_count(xself.loop), 1); /* only the watchdog */
    CHECK_OK(net_loop_free(xself.loop));
}

/* ---- net_loop_stats counts timer runs --------------------------------- */

static void stats_tick_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    int *left = arg;
    if (--*left == 0)
        CHECK_EQ(net_timer_cancel(loop, id), 0);
}

static void stats_once_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (*(int *)arg)++;
}

TEST(timer_stats_count_fired_timers)
{
    net_loop_t *loop = net_test_new_loop(5000);
    struct net_loop_stats before, after;
    net_loop_stats(loop, &before);
    int ticks_left = 4, once = 0;
    CHECK(net_loop_run_every(loop, 1, stats_tick_cb, &ticks_left) > 0);
    for (int i = 0; i < 3; i++)
        CHECK(net_loop_run_after(loop, (uint64_t)i, stats_once_cb, &once) > 0);
    net_timer_id_t cancelled = net_loop_run_after(loop, 1, stats_once_cb, &once);
    CHECK_EQ(net_timer_cancel(loop, cancelled), 0);
    net_test_run_for(loop, 100); /* its quit timer is one more fired */
    net_loop_stats(loop, &after);
    CHECK_EQ(ticks_left, 0);
    CHECK_EQ(once, 3);
    CHECK_EQ(after.timers_fired - before.timers_fired, 4 + 3 + 1);
    CHECK(after.iterations > before.iterations);
    CHECK_OK(net_loop_free(loop));
}

/* ---- the cached clock ------------------------------------------------- */

static struct {
    uint64_t cached, fresh, after_sleep, fresh_after_sleep, other_thread;
} clk;

static void clk_other(void *loop)
{
    clk.other_thread = net_loop_now_ms(loop);
}

static void clk_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)id;
    (void)arg;
    clk.cached = net_loop_now_ms(loop);
    clk.fresh = net_now_ms();
    net_test_sleep_ms(20);
    clk.after_sleep = net_loop_now_ms(loop); /* same iteration: same value */
    clk.fresh_after_sleep = net_now_ms();
    net_loop_quit(loop);
}

TEST(timer_loop_now_ms_is_the_cached_clock)
{
    net_loop_t *loop = net_test_new_loop(5000);
    CHECK(net_loop_now_ms(loop) > 0);
    CHECK(net_loop_now_ms(loop) <= net_now_ms());
    CHECK(net_loop_run_after(loop, 5, clk_cb, NULL) > 0);
    CHECK_OK(net_loop_run(loop));
    CHECK(clk.cached > 0 && clk.cached <= clk.fresh);
    CHECK(clk.fresh - clk.cached <= 10); /* taken when this wait returned (slack: a busy CI) */
    CHECK_EQ(clk.after_sleep, clk.cached);
    CHECK(clk.fresh_after_sleep - clk.cached >= 20);
    struct net_test_job j;
    clk.other_thread = 1;
    net_test_job_start(&j, clk_other, loop);
    net_test_job_join(&j);
    CHECK_EQ(clk.other_thread, 0); /* not the loop thread: the documented 0 */
    CHECK_OK(net_loop_free(loop));
}
