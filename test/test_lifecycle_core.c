/* The shared internals of the objects' lifecycle: the id table, the armed
 * once task and the closer (lib/loop/id_table.h, armed.h, closer.h). */
#include <pthread.h>
#include <stdlib.h>

#include <net/loop.h>

#include "harness.h"
#include "loop/closer.h"
#include "loop/id_table.h"

struct item {
    struct net__id_node node;
    int value;
};

TEST(id_table_insert_find_take_pop_many)
{
    enum { N = 5000 };
    struct net__id_table t;
    struct item *items = calloc(N, sizeof *items);
    net__id_table_init(&t);
    for (int i = 0; i < N; i++) {
        items[i].node.id = (uint64_t)i * 3 + 1; /* not dense: chains form */
        items[i].value = i;
        CHECK_OK(net__id_table_insert(&t, &items[i].node));
    }
    CHECK_EQ(t.count, (size_t)N);
    CHECK(net__id_table_find(&t, 2) == NULL);
    CHECK(net__id_table_find(&t, 3 * 77 + 1) == &items[77].node);
    CHECK(net__id_table_take(&t, 3 * 77 + 1) == &items[77].node);
    CHECK(net__id_table_take(&t, 3 * 77 + 1) == NULL);
    CHECK(net__id_table_find(&t, 3 * 78 + 1) == &items[78].node);
    size_t popped = 0;
    for (struct net__id_node *n; (n = net__id_table_pop(&t)) != NULL; popped++)
        CHECK(n != &items[77].node);
    CHECK_EQ(popped, (size_t)N - 1);
    CHECK_EQ(t.count, (size_t)0);
    CHECK(net__id_table_find(&t, 1) == NULL);
    net__id_table_free(&t);
    free(items);
}

TEST(id_table_empty_has_no_buckets)
{
    struct net__id_table t;
    net__id_table_init(&t);
    CHECK(net__id_table_find(&t, 1) == NULL);
    CHECK(net__id_table_take(&t, 1) == NULL);
    CHECK(net__id_table_pop(&t) == NULL);
    CHECK_OK(net__id_table_reserve(&t, 1000));
    CHECK(t.size >= 1000);
    net__id_table_free(&t);
}

struct counter {
    struct net__armed task;
    int runs;
    int rearm; /* arm again from inside this many times */
    net_loop_t *loop;
};

static void count_cb(void *arg)
{
    struct counter *c = arg;
    c->runs++;
    if (c->rearm-- > 0)
        CHECK(net__armed_arm(&c->task));
    else
        net_loop_quit(c->loop);
}

TEST(armed_task_runs_once_per_arming_never_inside)
{
    net_loop_t *loop;
    CHECK_OK(net_loop_new(&loop));
    struct counter c = {.loop = loop, .rearm = 2};
    net__armed_init(&c.task, loop, count_cb, &c);
    CHECK(net__armed_arm(&c.task));
    CHECK(!net__armed_arm(&c.task)); /* armed already: coalesced */
    CHECK(net__armed_pending(&c.task));
    CHECK_EQ(c.runs, 0);             /* never inside the arm */
    CHECK_OK(net_loop_run(loop));
    CHECK_EQ(c.runs, 3);             /* the first, then the two re-arms */
    CHECK(!net__armed_pending(&c.task));
    net_loop_free(loop);
}

struct obj {
    struct net__closer closer;
    int *released;
    net_loop_t *loop;
};

static void release_cb(void *arg)
{
    struct obj *o = arg;
    (*o->released)++;
    net_loop_quit(o->loop);
    free(o); /* the closer's task lives in o: freeing it here is allowed */
}

static void *unref_thread(void *arg)
{
    net__closer_unref(arg);
    return NULL;
}

TEST(closer_last_unref_on_any_thread_releases_once_on_the_loop)
{
    net_loop_t *loop;
    CHECK_OK(net_loop_new(&loop));
    int released = 0;
    struct obj *o = calloc(1, sizeof *o);
    o->released = &released;
    o->loop = loop;
    net__closer_init(&o->closer, loop, release_cb, o);
    enum { HOLDERS = 8 };
    for (int i = 0; i < HOLDERS; i++)
        net__closer_ref(&o->closer);
    CHECK(net__closer_close(&o->closer));
    CHECK(!net__closer_close(&o->closer)); /* accepted once */
    CHECK(net__closer_closing(&o->closer));
    net__closer_unref(&o->closer);         /* the owner's, on the loop */
    CHECK_EQ(released, 0);
    pthread_t th[HOLDERS];
    for (int i = 0; i < HOLDERS; i++)
        CHECK_OK(pthread_create(&th[i], NULL, unref_thread, &o->closer));
    for (int i = 0; i < HOLDERS; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(released, 0); /* armed, not run: only the loop runs it */
    CHECK_OK(net_loop_run(loop));
    CHECK_EQ(released, 1);
    net_loop_free(loop);
}
