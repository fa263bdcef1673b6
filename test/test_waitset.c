/* The batched waitset behind net_rpc_call_sync (lib/rpc/waitset.h).
 *
 * Scenarios:
 *   waitset_model_batched_wakes_lose_nobody  40 waiters (more than the 32
 *       bits, so bits are shared) each wait 2000 times for an answer that
 *       one deliverer makes, in batches, with random delays between the
 *       marks and the wakes; every waiter gets its own answer, none hangs
 *   waitset_ready_before_wait_returns_at_once  a waiter whose outcome was
 *       marked (and woken) before it waits does not sleep
 *   waitset_wake_with_nothing_marked_changes_nothing */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#include "harness.h"
#include "rpc/waitset.h"

#define WAITERS 40
#define ROUNDS 2000
#define DEADLINE_MS 120000

struct req {
    struct net__waiter w;
    uint64_t question, answer;
    struct req *next;
};

static struct {
    struct net__waitset ws;
    pthread_mutex_t mu;
    struct req *asked; /* requests not yet answered (LIFO; order is free) */
    atomic_int waiting_threads;
    atomic_long answered;
} m = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void ask(struct req *r)
{
    pthread_mutex_lock(&m.mu);
    r->next = m.asked;
    m.asked = r;
    pthread_mutex_unlock(&m.mu);
}

static void *waiter(void *arg)
{
    uint64_t id = (uintptr_t)arg;
    for (uint64_t i = 0; i < ROUNDS; i++) {
        struct req r = {.question = id << 32 | i};
        net__waiter_init(&r.w);
        ask(&r);
        net__waitset_wait(&m.ws, &r.w);
        /* r lives on this stack: a late mark or a stale answer shows here. */
        CHECK_EQ(r.answer, r.question * 3 + 1);
    }
    atomic_fetch_sub(&m.waiting_threads, 1);
    return NULL;
}

/* Answers everything asked so far; wakes per batch, or sometimes after
 * each mark, with random pauses between mark and wake. */
static void deliver_batch(unsigned *seed)
{
    pthread_mutex_lock(&m.mu);
    struct req *r = m.asked;
    m.asked = NULL;
    pthread_mutex_unlock(&m.mu);
    bool wake_each = rand_r(seed) % 8 == 0;
    for (struct req *next; r; r = next) {
        next = r->next; /* r may be gone once marked */
        r->answer = r->question * 3 + 1;
        net__waitset_mark(&m.ws, &r->w);
        atomic_fetch_add(&m.answered, 1);
        if (wake_each)
            net__waitset_wake(&m.ws);
    }
    int pause = rand_r(seed) % 64;
    if (pause == 0)
        usleep(100);
    else if (pause < 8)
        sched_yield();
    net__waitset_wake(&m.ws);
}

TEST(waitset_model_batched_wakes_lose_nobody)
{
    net__waitset_init(&m.ws);
    pthread_t t[WAITERS];
    atomic_store(&m.waiting_threads, WAITERS);
    for (uintptr_t i = 0; i < WAITERS; i++)
        CHECK_EQ(pthread_create(&t[i], NULL, waiter, (void *)i), 0);
    unsigned seed = 12345;
    uint64_t deadline = net_test_now_ms() + DEADLINE_MS;
    while (atomic_load(&m.waiting_threads) > 0) {
        deliver_batch(&seed);
        /* A lost wakeup leaves a waiter asleep forever: caught here. */
        CHECK(net_test_now_ms() < deadline);
    }
    for (int i = 0; i < WAITERS; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ(atomic_load(&m.answered), (long)WAITERS * ROUNDS);
    CHECK(m.asked == NULL);
}

TEST(waitset_ready_before_wait_returns_at_once)
{
    struct net__waitset ws;
    net__waitset_init(&ws);
    struct net__waiter w;
    net__waiter_init(&w);
    CHECK(w.bit != 0 && (w.bit & (w.bit - 1)) == 0); /* one bit */
    net__waitset_mark(&ws, &w);
    CHECK_EQ(ws.pending, w.bit);
    net__waitset_wake(&ws);
    CHECK_EQ(ws.pending, 0);
    CHECK_EQ(atomic_load(&ws.word), 1);
    net__waitset_wait(&ws, &w); /* would hang if it slept */
    CHECK_EQ(atomic_load(&ws.sleepers), 0);
}

TEST(waitset_wake_with_nothing_marked_changes_nothing)
{
    struct net__waitset ws;
    net__waitset_init(&ws);
    net__waitset_wake(&ws);
    CHECK_EQ(atomic_load(&ws.word), 0);
    CHECK_EQ(ws.pending, 0);
}
