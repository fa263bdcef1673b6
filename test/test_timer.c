/* Timers: order, cancel (same thread, other thread, self), scale, overflow. */
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include <net/loop.h>

#include "net_test_util.h"

/* ---- same-instant order ----------------------------------------------- */

#define SAME 200
static int fired_order[SAME], nfired;

static void record(net_loop_t *loop, net_timer_id_t id, void *arg)
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
        CHECK_OK(net_loop_run_at(loop, when, record, (void *)i));
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
        CHECK_OK(net_loop_run_after(loop, (uint64_t)delays[i], record, (void *)(intptr_t)delays[i]));
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
static void not_inside_add(net_loop_t *loop, net_timer_id_t id, void *arg)
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
    CHECK_OK(net_loop_run_at(loop, 0, not_inside_add, loop));
    in_add_call = false;
    CHECK_OK(net_loop_run(loop));
    net_loop_free(loop);
}

/* ---- cancel ----------------------------------------------------------- */

static int fires;
static void count_fire(net_loop_t *loop, net_timer_id_t id, void *arg)
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
    net_timer_id_t id = net_loop_run_after(loop, 10, count_fire, NULL);
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
    net_timer_id_t id = net_loop_run_after(loop, 1, count_fire, NULL);
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

static void self_cancel(net_loop_t *loop, net_timer_id_t id, void *arg)
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
    self.id = net_loop_run_every(self.loop, 1, self_cancel, NULL);
    CHECK(self.id > 0);
    CHECK_OK(net_loop_run(self.loop));
    CHECK_EQ(self.runs, 5); /* no run after the cancel */
    CHECK_EQ(net_loop_timer_count(self.loop), 1); /* only the watchdog */
    net_loop_free(self.loop);
}

static void one_shot_cancels_itself(net_loop_t *loop, net_timer_id_t id, void *arg)
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
    self.id = net_loop_run_after(self.loop, 1, one_shot_cancels_itself, NULL);
    CHECK_OK(net_loop_run(self.loop));
    net_loop_free(self.loop);
}

static struct {
    net_loop_t *loop;
    net_timer_id_t repeating, one_shot;
    atomic_int runs, one_shot_runs;
    int runs_at_cancel;
} xc;

static void xc_tick(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    atomic_fetch_add(&xc.runs, 1);
}

static void xc_one_shot(net_loop_t *loop, net_timer_id_t id, void *arg)
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
    xc.repeating = net_loop_run_every(xc.loop, 2, xc_tick, NULL);
    xc.one_shot = net_loop_run_after(xc.loop, 3000, xc_one_shot, NULL);
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
static void on_loop_thread(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    CHECK(pthread_equal(pthread_self(), add_loop_thread));
    CHECK(net_loop_current() == add_loop);
    net_loop_quit(arg);
}

static void *add_from_thread(void *arg)
{
    CHECK_OK(net_loop_run_after(arg, 5, on_loop_thread, arg));
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

static void many_fire(net_loop_t *loop, net_timer_id_t id, void *arg)
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
        many.id[i] = net_loop_run_at(many.loop, many.when[i], many_fire, (void *)(intptr_t)i);
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
    net_timer_id_t a = net_loop_run_after(loop, UINT64_MAX, count_fire, NULL);
    net_timer_id_t b = net_loop_run_at(loop, UINT64_MAX, count_fire, NULL);
    net_timer_id_t c = net_loop_run_every(loop, UINT64_MAX, count_fire, NULL);
    net_timer_id_t d = net_loop_run_after(loop, (uint64_t)INT64_MAX / 1000 + 7, count_fire, NULL);
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
    CHECK_EQ(net_loop_run_every(loop, 0, count_fire, NULL), -EINVAL);
    CHECK_EQ(net_loop_run_at(NULL, 1, count_fire, NULL), -EINVAL);
    net_loop_free(loop);
}

static void *make_ids(void *arg)
{
    net_loop_t *loop;
    CHECK_OK(net_loop_new(&loop));
    net_timer_id_t *out = arg;
    for (int i = 0; i < 1000; i++) {
        out[i] = net_loop_run_after(loop, 1000, count_fire, NULL);
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
static void rep_tick(net_loop_t *loop, net_timer_id_t id, void *arg)
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
    net_timer_id_t id = net_loop_run_every(rep_loop, 10, rep_tick, NULL);
    CHECK(id > 0);
    CHECK_OK(net_loop_run(rep_loop));
    CHECK_EQ(rep_runs, 5);
    CHECK_EQ(net_timer_cancel(rep_loop, id), 0);
    net_loop_free(rep_loop);
}
