/* A TCP server: an acceptor on the base loop, connections on I/O loops.
 *
 * Each I/O loop has a slot holding the list of its connections; a slot is
 * touched only on its loop's thread, so the lists need no lock. The count of
 * open connections is atomic (the acceptor reads it for max_connections).
 *
 * Lifetime (lib/loop/closer.h): the server holds its own reference until
 * the close has run its course; every task it posts holds one more while
 * posted. Close, on the base loop: close the acceptor, then post each
 * slot's drain task (shut down every connection after its output), and at
 * the deadline its force task (close what is left). A slot that is closing
 * and empty posts its exit task (the user's thread_exit) and counts itself
 * out; the last one out drops the server's reference, and the release
 * (base loop) joins the I/O threads, calls done and frees. Every task is an
 * armed task embedded in the server or its slots: winding down never needs
 * memory. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <net/loop_thread.h>
#include <net/tcp_server.h>

#include "loop/alloc_internal.h"
#include "loop/armed.h"
#include "loop/closer.h"
#include "loop/log_internal.h"
#include "tcp/acceptor.h"
#include "tcp/tcp_conn_internal.h"

/* A few hundred MiB: room for thousands of busy connections on a small
 * machine, while a crowd of hostile peers cannot take gigabytes. */
#define DEFAULT_MEMORY_BUDGET (256u * 1024 * 1024)
#define DEFAULT_MAX_CONNECTIONS 100000
/* With no I/O thread, thread_exit's objects wind down on the base loop
 * itself, with nothing to join: done waits until the loop has run what
 * they queued (as a join would), for at most this many turns, so that a
 * loop that is never idle still gets its done. */
#define QUIESCE_TURNS 1000

/* The work a slot's loop is given, each an armed task of the slot. */
enum slot_task {
    TASK_INIT,  /* thread_init */
    TASK_DRAIN, /* close began: shut every connection down (or close at once) */
    TASK_FORCE, /* the drain deadline passed: close what is left */
    TASK_EXIT,  /* the slot is empty: thread_exit, then count the slot out */
    SLOT_TASKS
};

struct slot {
    net_server_t *server;
    net_loop_t *loop;
    net_conn_t *head;       /* this loop's connections */
    /* Accepted for this slot on the base loop, not yet linked (or dropped)
     * here: the slot is empty only when this is 0 too. */
    atomic_size_t arriving;
    /* Its loop's thread only. */
    bool inited;  /* thread_init has run */
    bool closing; /* the drain began: no new connection is linked */
    bool exiting; /* the exit task is armed: the slot is done */
    struct net__armed task[SLOT_TASKS];
};

struct net_server {
    struct net__closer closer;
    net_loop_t *base;
    struct net__acceptor acceptor;
    struct net_server_options opt; /* normalised: no 0 left where a default is meant */
    char name[32];
    struct net_conn_callbacks cbs;
    struct net__budget budget; /* shared by every connection of the server */
    atomic_size_t nconns;
    atomic_ullong accepted, refused;

    /* Base loop only. */
    net_loop_pool_t *pool;
    struct slot *slots;
    size_t nslots, next_slot;
    bool listening;
    net_timer_id_t drain_timer;
    unsigned quiesce_turns;

    /* The number of slots once start has made them, for net_server_io_loop
     * on any thread: stored (release) after the slots are filled in, loaded
     * (acquire) before they are read, so a reader that sees n sees slots[0..n). */
    atomic_size_t nlive;

    /* Written by the one accepted close before it posts close_task; the
     * post and the loop's taking of it order them before close_cb. */
    uint64_t drain_ms;
    net_server_close_fn done;
    void *done_arg;

    atomic_bool expired;      /* the drain is over: slots force-close */
    atomic_size_t slots_left; /* slots not yet done with the close */
    struct net__armed start_task, close_task, finish_task;
};

void net_server_options_init(struct net_server_options *opt)
{
    *opt = (struct net_server_options){.backlog = SOMAXCONN,
                                       .max_connections = DEFAULT_MAX_CONNECTIONS,
                                       .name = "server", .memory_budget = DEFAULT_MEMORY_BUDGET};
    net_conn_options_init(&opt->conn);
}

/* ---- tasks ------------------------------------------------------------------ */

/* Posts a task of the server, holding a reference while it is posted (the
 * task's callback drops it). Only from a holder of a reference. */
static void server_arm(net_server_t *s, struct net__armed *task)
{
    net__closer_ref(&s->closer);
    if (!net__armed_arm(task))
        net__closer_unref(&s->closer); /* already posted: that one holds one */
}

static void slot_arm(struct slot *slot, enum slot_task t)
{
    server_arm(slot->server, &slot->task[t]);
}

static void arm_all(net_server_t *s, enum slot_task t)
{
    for (size_t i = 0; i < s->nslots; i++)
        slot_arm(&s->slots[i], t);
}

/* ---- a slot's life (on its loop) -------------------------------------------------- */

static void ensure_init(struct slot *slot)
{
    net_server_t *s = slot->server;
    if (slot->inited)
        return;
    slot->inited = true;
    if (s->opt.thread_init)
        s->opt.thread_init(slot->loop, s->opt.thread_arg);
}

static void init_cb(void *arg)
{
    struct slot *slot = arg;
    net_server_t *s = slot->server;
    ensure_init(slot);
    net__closer_unref(&s->closer);
}

/* A closing slot with no connection left and none arriving is done: its
 * exit task runs thread_exit from a clean stack (this may be a
 * connection's closed hook). Once closing, `arriving` only falls: the
 * acceptor was closed before the drain task that set closing was posted. */
static void slot_check_done(struct slot *slot)
{
    if (!slot->closing || slot->exiting || slot->head || atomic_load(&slot->arriving) > 0)
        return;
    slot->exiting = true;
    slot_arm(slot, TASK_EXIT);
}

static void exit_cb(void *arg)
{
    struct slot *slot = arg;
    net_server_t *s = slot->server;
    ensure_init(slot); /* pairs: a loop gets thread_exit only after thread_init */
    if (s->opt.thread_exit)
        s->opt.thread_exit(slot->loop, s->opt.thread_arg);
    /* acq_rel through the closer: the last slot out drops the server's own
     * reference; the release then sees every slot's work. */
    if (atomic_fetch_sub(&s->slots_left, 1) == 1)
        net__closer_unref(&s->closer);
    net__closer_unref(&s->closer);
}

/* ---- connection bookkeeping (on the slot's loop) ------------------------- */

static void slot_link(struct slot *slot, net_conn_t *conn)
{
    struct net__conn_link *l = net__conn_link(conn);
    l->prev = NULL;
    l->next = slot->head;
    if (slot->head)
        net__conn_link(slot->head)->prev = conn;
    slot->head = conn;
}

static void slot_unlink(struct slot *slot, net_conn_t *conn)
{
    struct net__conn_link *l = net__conn_link(conn);
    if (l->prev)
        net__conn_link(l->prev)->next = l->next;
    else
        slot->head = l->next;
    if (l->next)
        net__conn_link(l->next)->prev = l->prev;
    l->prev = l->next = NULL;
}

static void on_conn_closed(net_conn_t *conn, void *owner)
{
    struct slot *slot = owner;
    slot_unlink(slot, conn);
    net_conn_unref(conn);
    atomic_fetch_sub(&slot->server->nconns, 1);
    slot_check_done(slot);
}

static void establish_cb(void *arg)
{
    net_conn_t *conn = arg;
    struct slot *slot = net__conn_owner(conn);
    ensure_init(slot); /* in case this functor overtook the posted init task */
    if (slot->closing) {
        net_conn_unref(conn); /* never established: this closes the fd */
        atomic_fetch_sub(&slot->server->nconns, 1);
    } else {
        slot_link(slot, conn);
        net__conn_establish(conn);
    }
    atomic_fetch_sub(&slot->arriving, 1);
    slot_check_done(slot);
}

/* Half-closes every connection after its output. One whose shutdown cannot
 * be queued (no memory) is closed now rather than left to a deadline that
 * may be far away. */
static void shutdown_all(struct slot *slot)
{
    for (net_conn_t *c = slot->head, *next; c; c = next) {
        next = net__conn_link(c)->next;
        if (net_conn_shutdown(c) == -ENOMEM)
            net__conn_close_in_loop(c);
    }
}

static void close_all(struct slot *slot)
{
    /* Each close unlinks the head (its closed hook runs synchronously). */
    while (slot->head)
        net__conn_close_in_loop(slot->head);
}

static void drain_cb(void *arg)
{
    struct slot *slot = arg;
    net_server_t *s = slot->server;
    slot->closing = true;
    if (atomic_load(&s->expired))
        close_all(slot);
    else
        shutdown_all(slot);
    slot_check_done(slot);
    net__closer_unref(&s->closer);
}

static void force_cb(void *arg)
{
    struct slot *slot = arg;
    net_server_t *s = slot->server;
    slot->closing = true;
    close_all(slot);
    slot_check_done(slot);
    net__closer_unref(&s->closer);
}

static void slot_init(net_server_t *s, struct slot *slot, net_loop_t *loop)
{
    static const net_loop_fn fns[SLOT_TASKS] = {init_cb, drain_cb, force_cb, exit_cb};
    *slot = (struct slot){.server = s, .loop = loop};
    atomic_init(&slot->arriving, 0);
    for (int t = 0; t < SLOT_TASKS; t++)
        net__armed_init(&slot->task[t], loop, fns[t], slot);
}

/* ---- accepting (on the base loop) -------------------------------------- */

static void refuse(net_server_t *s, int fd)
{
    close(fd);
    atomic_fetch_add(&s->refused, 1);
    NET__LOG_RL(NET_LOG_WARN, "%s: %zu connections open (max_connections): refusing", s->name,
                atomic_load(&s->nconns));
}

static void on_accept(int fd, void *arg)
{
    net_server_t *s = arg;
    if (atomic_load(&s->nconns) >= s->opt.max_connections) {
        refuse(s, fd);
        return;
    }
    struct slot *slot = &s->slots[s->next_slot++ % s->nslots];
    net_conn_t *conn = net__conn_new(slot->loop, fd, &s->opt.conn, &s->cbs, on_conn_closed, slot);
    if (!conn) {
        NET__LOG_RL(NET_LOG_ERROR, "%s: out of memory: connection dropped", s->name);
        return;
    }
    if (s->budget.limit != SIZE_MAX)
        net__conn_set_budget(conn, &s->budget);
    atomic_fetch_add(&s->nconns, 1);
    atomic_fetch_add(&s->accepted, 1);
    atomic_fetch_add(&slot->arriving, 1);
    if (net_loop_run_in_loop(slot->loop, establish_cb, conn) < 0) {
        NET__LOG_RL(NET_LOG_ERROR, "%s: out of memory: connection dropped", s->name);
        atomic_fetch_sub(&slot->arriving, 1);
        atomic_fetch_sub(&s->nconns, 1);
        net_conn_unref(conn);
    }
}

/* ---- creation ---------------------------------------------------------------- */

static void normalise_options(net_server_t *s, const struct net_server_options *opt)
{
    if (opt)
        s->opt = *opt;
    else
        net_server_options_init(&s->opt);
    if (s->opt.backlog <= 0)
        s->opt.backlog = SOMAXCONN;
    if (!s->opt.max_connections)
        s->opt.max_connections = DEFAULT_MAX_CONNECTIONS;
    if (!s->opt.memory_budget)
        s->opt.memory_budget = DEFAULT_MEMORY_BUDGET;
    strncpy(s->name, s->opt.name ? s->opt.name : "server", sizeof s->name - 1);
    s->opt.name = s->name;
}

static void start_cb(void *arg);
static void close_cb(void *arg);
static void release_cb(void *arg);
static void finish_cb(void *arg);

static void server_init(net_server_t *s, net_loop_t *base)
{
    s->base = base;
    net__closer_init(&s->closer, base, release_cb, s);
    net__armed_init(&s->start_task, base, start_cb, s);
    net__armed_init(&s->close_task, base, close_cb, s);
    net__armed_init(&s->finish_task, base, finish_cb, s);
    atomic_init(&s->nlive, 0);
    atomic_init(&s->expired, false);
    atomic_init(&s->slots_left, 0);
    s->budget.limit = s->opt.memory_budget;
}

int net_server_new(net_loop_t *base, const net_addr_t *addr,
                   const struct net_server_options *opt, const struct net_conn_callbacks *cbs,
                   net_server_t **out)
{
    if (!base || !addr || !out)
        return -EINVAL;
    if (!net_loop_in_loop_thread(base))
        return NET_EWRONGTHREAD;
    net_server_t *s = net__calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    normalise_options(s, opt);
    server_init(s, base);
    if (cbs)
        s->cbs = *cbs;
    int rc = net__acceptor_open(&s->acceptor, base, addr, s->opt.reuse_port, s->opt.ipv6_only,
                                on_accept, s);
    if (rc < 0) {
        NET__LOG(NET_LOG_DEBUG, "%s: cannot bind: %s", s->name, net_strerror(rc));
        net__free(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* ---- start ---------------------------------------------------------------------- */

/* Starts the pool and publishes the slots. The slots stay until the
 * release, even if listen fails, so that a loop that ran thread_init gets
 * its thread_exit. thread_init rides on a posted task rather than the
 * pool's init hook: a start that cannot make all its threads then leaves
 * no loop that saw thread_init without thread_exit. */
static int make_slots(net_server_t *s)
{
    net_loop_pool_t *pool;
    int rc = net_loop_pool_start(s->base, s->opt.io_threads, s->name, NULL, NULL, &pool);
    if (rc < 0)
        return rc;
    size_t n = net_loop_pool_size(pool);
    struct slot *slots = net__calloc(n, sizeof *slots);
    if (!slots) {
        net_loop_pool_join(pool);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        slot_init(s, &slots[i], net_loop_pool_get(pool, i));
    s->pool = pool;
    s->slots = slots;
    s->nslots = n;
    atomic_store_explicit(&s->nlive, n, memory_order_release);
    arm_all(s, TASK_INIT);
    return 0;
}

static int start_in_loop(net_server_t *s)
{
    if (net__closer_closing(&s->closer))
        return -ESHUTDOWN;
    if (s->listening)
        return 0;
    int rc = s->slots ? 0 : make_slots(s);
    if (rc == 0)
        rc = net__acceptor_listen(&s->acceptor, s->opt.backlog);
    if (rc < 0)
        return rc;
    s->listening = true;
    return 0;
}

static void start_cb(void *arg)
{
    net_server_t *s = arg;
    int rc = start_in_loop(s);
    if (rc < 0 && rc != -ESHUTDOWN) /* nobody else sees it */
        NET__LOG(NET_LOG_ERROR, "%s: start failed: %s", s->name, net_strerror(rc));
    net__closer_unref(&s->closer);
}

int net_server_start(net_server_t *server)
{
    if (!server)
        return -EINVAL;
    if (net__closer_closing(&server->closer))
        return -ESHUTDOWN;
    if (net_loop_in_loop_thread(server->base)) {
        int rc = start_in_loop(server);
        if (rc < 0)
            NET__LOG(NET_LOG_DEBUG, "%s: start failed: %s", server->name, net_strerror(rc));
        return rc;
    }
    /* Holding no reference of our own, as the user's call may race with a
     * close that is already winding down (then the release is armed). */
    if (!net__closer_tryref(&server->closer))
        return -ESHUTDOWN;
    if (!net__armed_arm(&server->start_task))
        net__closer_unref(&server->closer);
    return 0;
}

/* ---- close ----------------------------------------------------------------------- */

static void drain_deadline_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    net_server_t *s = arg;
    s->drain_timer = 0;
    atomic_store(&s->expired, true);
    arm_all(s, TASK_FORCE);
}

/* Without a timer the drain ends at once: a close must end. */
static void start_deadline(net_server_t *s)
{
    net_timer_id_t id = 0;
    if (s->drain_ms)
        id = net_loop_run_after(s->base, s->drain_ms, drain_deadline_cb, s);
    if (id > 0)
        s->drain_timer = id;
    else
        atomic_store(&s->expired, true);
}

static void close_cb(void *arg)
{
    net_server_t *s = arg;
    net__acceptor_close(&s->acceptor);
    if (!s->slots) { /* never started: nothing runs anywhere */
        net__closer_unref(&s->closer); /* the server's own */
    } else {
        atomic_store(&s->slots_left, s->nslots);
        start_deadline(s);
        arm_all(s, TASK_DRAIN);
    }
    net__closer_unref(&s->closer);
}

int net_server_close(net_server_t *server, uint64_t drain_ms, net_server_close_fn done,
                     void *arg)
{
    if (!server)
        return -EINVAL;
    if (!net__closer_close(&server->closer))
        return -EALREADY;
    server->drain_ms = drain_ms;
    server->done = done;
    server->done_arg = arg;
    if (net_loop_in_loop_thread(server->base))
        net__acceptor_close(&server->acceptor); /* stop accepting before returning */
    /* The server's own reference is still held: it goes only in close_cb's
     * wake, which this task starts. */
    server_arm(server, &server->close_task);
    return 0;
}

static void finish(net_server_t *s)
{
    if (s->done)
        s->done(s, s->done_arg);
    net__free(s->slots);
    net__free(s);
}

/* Waits (a bounded number of turns) for the base loop to run what the
 * objects closed in thread_exit queued; see QUIESCE_TURNS. */
static void finish_cb(void *arg)
{
    net_server_t *s = arg;
    bool busy = net_loop_queue_size(s->base) > 0 || net__loop_posted_count(s->base) > 0;
    if (busy && s->quiesce_turns++ < QUIESCE_TURNS) {
        net__armed_arm(&s->finish_task);
        return;
    }
    finish(s);
}

static void release_cb(void *arg)
{
    net_server_t *s = arg;
    if (s->drain_timer > 0)
        net_timer_cancel(s->base, s->drain_timer);
    s->drain_timer = 0;
    atomic_store_explicit(&s->nlive, 0, memory_order_relaxed);
    /* Joining runs what the I/O loops still have queued: the objects the
     * user closed in thread_exit end there, before our done. */
    net_loop_pool_join(s->pool);
    s->pool = NULL;
    if (s->slots && s->opt.io_threads == 0 && s->opt.thread_exit)
        net__armed_arm(&s->finish_task);
    else
        finish(s);
}

/* ---- accessors ------------------------------------------------------------------ */

const net_addr_t *net_server_addr(const net_server_t *server)
{
    return &server->acceptor.addr;
}

void net_server_stats(const net_server_t *server, struct net_server_stats *out)
{
    net_server_t *s = (net_server_t *)server;
    *out = (struct net_server_stats){
        .connections = atomic_load(&s->nconns),
        .accepted = atomic_load(&s->accepted),
        .refused = atomic_load(&s->refused),
        .memory_budget = s->budget.limit,
        .memory_used = atomic_load_explicit(&s->budget.used, memory_order_relaxed),
        .budget_pauses = atomic_load_explicit(&s->budget.pauses, memory_order_relaxed),
    };
}

net_loop_t *net_server_io_loop(net_server_t *server, size_t i)
{
    if (!server)
        return NULL;
    size_t n = atomic_load_explicit(&server->nlive, memory_order_acquire);
    return i < n ? server->slots[i].loop : NULL;
}
