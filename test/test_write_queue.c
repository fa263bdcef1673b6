/* The wait-free write queue: a model test of its ordering and loss
 * guarantees, and its node allocator. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#include "loop/alloc_internal.h"
#include "harness.h"
#include "net_test_util.h"
#include "tcp/write_queue.h"

TEST(wq_push_reports_empty_only_first)
{
    struct net__wq q;
    atomic_init(&q.head, NULL);
    struct net__wq_node *a = net__wq_node_alloc(1), *b = net__wq_node_alloc(1), *tail;
    CHECK(a && b);
    CHECK(net__wq_push(&q, a));
    CHECK(!net__wq_push(&q, b));
    struct net__wq_node *list = net__wq_take(&q, &tail);
    CHECK(list == a && tail == b);
    CHECK(atomic_load(&a->next) == b && atomic_load(&b->next) == NULL);
    CHECK(net__wq_take(&q, &tail) == NULL);
    CHECK(net__wq_push(&q, a)); /* empty again after the take */
    net__wq_drain(&q);
    net__wq_node_free(b);
}

TEST(wq_node_sizes)
{
    struct net__wq_node *small = net__wq_node_alloc(NET__WQ_SMALL);
    struct net__wq_node *big = net__wq_node_alloc(NET__WQ_SMALL + 1);
    CHECK(small && big);
    CHECK_EQ(small->cap, NET__WQ_SMALL);
    CHECK_EQ(big->cap, NET__WQ_SMALL + 1);
    CHECK_EQ(small->len, NET__WQ_SMALL);
    CHECK_EQ(small->off, 0);
    memset(small->data, 1, small->len);
    memset(big->data, 2, big->len);
    net__wq_node_free(small);
    net__wq_node_free(big);
    /* The pooled node comes back from this thread's magazine. */
    CHECK(net__wq_node_alloc(8) == small);
    net__wq_node_free(small);
}

/* ---- large nodes: mapped, and given back ---------------------------------------- */

#define NODE_HDR sizeof(struct net__wq_node)

TEST(wq_large_node_mapped_from_threshold)
{
    /* Below the threshold a node is exactly its send; from it on its block
     * is whole pages, and cap takes in the rest of the last one. */
    size_t page = (size_t)sysconf(_SC_PAGESIZE), odd_len = 3 * MiB + 1;
    struct net__wq_node *below = net__wq_node_alloc(NET__MAP_MIN - NODE_HDR - 1);
    struct net__wq_node *at = net__wq_node_alloc(NET__MAP_MIN - NODE_HDR);
    struct net__wq_node *odd = net__wq_node_alloc(odd_len);
    CHECK(below && at && odd);
    CHECK_EQ(below->cap, NET__MAP_MIN - NODE_HDR - 1);
    CHECK_EQ(at->cap, NET__MAP_MIN - NODE_HDR);
    CHECK_EQ(odd->len, odd_len);
    CHECK_EQ((NODE_HDR + odd->cap) % page, 0);
    CHECK(odd->cap >= odd_len && odd->cap - odd_len < page);
    /* All of cap is usable, and the bytes are what was written. */
    for (size_t i = 0; i < odd->cap; i++)
        odd->data[i] = (char)(i % 251);
    for (size_t i = 0; i < odd->cap; i += 4093)
        CHECK_EQ((unsigned char)odd->data[i], i % 251);
    net__wq_node_free(below);
    net__wq_node_free(at);
    net__wq_node_free(odd);
}

TEST(wq_large_node_freed_returns_memory_to_kernel)
{
    /* 24 MiB: below the mmap threshold malloc has after this, so a
     * malloc'd node would stay in the heap after its free. */
    net_test_raise_malloc_mmap_threshold();
    size_t before = net_test_rss_bytes();
    struct net__wq_node *n = net__wq_node_alloc(24 * MiB);
    CHECK(n != NULL);
    memset(n->data, 0x5a, n->len);
    size_t full = net_test_rss_bytes();
    net__wq_node_free(n);
    size_t after = net_test_rss_bytes();
    fprintf(stderr, "RSS: %zu KiB before, %zu KiB written, %zu KiB freed\n", before / KiB,
            full / KiB, after / KiB);
    CHECK(full >= before + 20 * MiB); /* the measurement sees the pages */
    CHECK(after <= before + 4 * MiB);
}

TEST(wq_large_node_alloc_failure_returns_null)
{
    /* A replaced allocator gets the big nodes too, and can refuse them. */
    net_test_fail_allocs_from(NET__MAP_MIN);
    CHECK(net__wq_node_alloc(2 * MiB) == NULL);
    struct net__wq_node *n = net__wq_node_alloc(64 * KiB);
    CHECK(n != NULL);
    net__wq_node_free(n);
    net_test_fail_allocs_from(SIZE_MAX);
    CHECK((n = net__wq_node_alloc(2 * MiB)) != NULL);
    net__wq_node_free(n);
}

TEST(wq_node_alloc_huge_returns_null)
{
    CHECK(net__wq_node_alloc(SIZE_MAX) == NULL);            /* header + len wraps */
    CHECK(net__wq_node_alloc(SIZE_MAX - NODE_HDR) == NULL); /* pages would wrap */
    CHECK(net__wq_node_alloc(SIZE_MAX / 2) == NULL);        /* the kernel refuses */
}

/* ---- model: many producers, one consumer --------------------------------------- */

#define PRODUCERS 8
#define PER_PRODUCER 500000

struct msg {
    uint32_t producer, seq;
};

static struct {
    struct net__wq q;
    atomic_int running;
    atomic_long empty_transitions;
} model;

static void *producer(void *arg)
{
    uint32_t id = (uint32_t)(uintptr_t)arg;
    unsigned seed = id * 7919u + 1;
    for (uint32_t seq = 0; seq < PER_PRODUCER; seq++) {
        struct msg m = {id, seq};
        /* Random sizes exercise both the pooled and the malloc'd nodes. */
        size_t len = (rand_r(&seed) % 64 == 0) ? 2000 : sizeof m;
        struct net__wq_node *n = net__wq_node_alloc(len);
        CHECK(n != NULL);
        memset(n->data, 0, len);
        memcpy(n->data, &m, sizeof m);
        if (net__wq_push(&model.q, n))
            atomic_fetch_add(&model.empty_transitions, 1);
        int r = rand_r(&seed) % 1024;
        if (r == 0)
            usleep(50); /* random delays and yields vary the interleaving */
        else if (r < 8)
            sched_yield();
    }
    atomic_fetch_sub(&model.running, 1);
    return NULL;
}

static long consume(uint32_t next_seq[PRODUCERS])
{
    struct net__wq_node *tail, *n = net__wq_take(&model.q, &tail);
    long got = 0;
    for (struct net__wq_node *next; n; n = next, got++) {
        next = atomic_load(&n->next);
        struct msg m;
        memcpy(&m, n->data, sizeof m);
        CHECK(m.producer < PRODUCERS);
        /* Exactly the next one of that producer: none lost, duplicated or
         * reordered. */
        CHECK_EQ(m.seq, next_seq[m.producer]);
        next_seq[m.producer]++;
        net__wq_node_free(n); /* freed on another thread than allocated */
    }
    return got;
}

TEST(wq_model_many_producers_no_loss_no_dup_fifo)
{
    pthread_t t[PRODUCERS];
    uint32_t next_seq[PRODUCERS] = {0};
    atomic_store(&model.running, PRODUCERS);
    for (uintptr_t i = 0; i < PRODUCERS; i++)
        CHECK_EQ(pthread_create(&t[i], NULL, producer, (void *)i), 0);
    long total = 0, takes = 0;
    uint64_t deadline = net_test_now_ms() + 120000;
    while (atomic_load(&model.running) > 0 || atomic_load(&model.q.head)) {
        long got = consume(next_seq);
        total += got;
        takes += got > 0;
        if (!got)
            sched_yield();
        CHECK(net_test_now_ms() < deadline);
    }
    total += consume(next_seq);
    for (int i = 0; i < PRODUCERS; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ(next_seq[i], PER_PRODUCER);
    }
    CHECK_EQ(total, (long)PRODUCERS * PER_PRODUCER);
    /* Every take that found nodes was preceded by exactly one empty->busy
     * push (the one that would schedule a flush), and no more. */
    CHECK(atomic_load(&model.empty_transitions) >= takes);
    CHECK(atomic_load(&model.empty_transitions) <= takes + 1);
    printf("%ld nodes, %ld takes, %ld empty transitions\n", total, takes,
           atomic_load(&model.empty_transitions));
}
