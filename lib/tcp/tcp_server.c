/* A TCP server: an acceptor on the base loop, connections on I/O loops.
 *
 * Each I/O loop has a slot holding the list of its connections; a slot is
 * touched only on its loop's thread, so the lists need no lock. The count of
 * open connections is atomic (the acceptor reads it for max_connections).
 *
 * The server is reference counted internally: every functor it queues on a
 * loop holds a reference, so net_server_free() never leaves a queued functor
 * pointing at freed memory; the memory goes when the last one has run. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <net/loop_thread.h>
#include <net/tcp_server.h>

#include "tcp/acceptor.h"
#include "loop/alloc_internal.h"
#include "loop/log_internal.h"
#include "loop/loop_internal.h"
#include "tcp/tcp_conn_internal.h"

/* After the drain deadline, how often a stop that has not completed looks
 * again (see drain_deadline). */
#define DRAIN_RECHECK_MS 10
/* A few hundred MiB: room for thousands of busy connections on a small
 * machine, while a crowd of hostile peers cannot take gigabytes. */
#define DEFAULT_MEMORY_BUDGET (256u * 1024 * 1024)

struct slot {
    net_server_t *server;
    net_loop_t *loop;
    net_conn_t *head; /* this loop's connections */
};

struct net_server {
    atomic_int refs;
    net_loop_t *base;
    struct net__acceptor acceptor;
    struct net_server_options opt;
    char name[32];
    struct net_conn_callbacks cbs;
    net_loop_pool_t *pool;
    struct slot *slots;
    size_t nslots, next_slot;
    atomic_bool started;
    bool running, stopped;          /* base loop only */
    atomic_bool stopping, freed;    /* read on the I/O loops too */
    atomic_size_t nconns;
    atomic_ullong accepted, refused;
    net_server_stopped_fn done;
    void *done_arg;
    net_timer_id_t drain_timer;
    struct net__budget budget; /* shared by every connection of the server */
};

void net_server_options_init(struct net_server_options *opt)
{
    *opt = (struct net_server_options){.backlog = SOMAXCONN, .max_connections = 100000,
                                       .name = "server", .memory_budget = DEFAULT_MEMORY_BUDGET};
    net_conn_options_init(&opt->conn);
}

/* ---- references and queued work ----------------------------------------- */

static net_server_t *server_ref(net_server_t *s)
{
    atomic_fetch_add(&s->refs, 1);
    return s;
}

static void server_unref(net_server_t *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    net__free(s->slots);
    net__free(s);
}

struct slot_work {
    struct slot *slot;
    void (*fn)(struct slot *slot);
};

static void slot_work_run(void *arg)
{
    struct slot_work *w = arg;
    net_server_t *s = w->slot->server;
    if (!s->freed)
        w->fn(w->slot);
    server_unref(s);
    net__free(w);
}

/* Runs fn(slot) on the slot's loop, later. */
static void slot_defer(struct slot *slot, void (*fn)(struct slot *))
{
    struct slot_work *w = net__malloc(sizeof *w);
    if (!w) {
        NET__LOG_RL(NET_LOG_ERROR, "server: out of memory queueing work");
        return;
    }
    *w = (struct slot_work){slot, fn};
    server_ref(slot->server);
    if (net_loop_queue_in_loop(slot->loop, slot_work_run, w) < 0) {
        server_unref(slot->server);
        net__free(w);
    }
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

static void stopped_on_base(void *arg)
{
    net_server_t *s = arg;
    if (!s->stopped) {
        s->stopped = true;
        if (s->drain_timer > 0)
            net_timer_cancel(s->base, s->drain_timer);
        s->drain_timer = 0;
        if (s->done && !s->freed)
            s->done(s, s->done_arg);
    }
    server_unref(s);
}

/* One connection fewer; the last one during a stop completes the stop. */
static void conn_gone(net_server_t *s)
{
    if (atomic_fetch_sub(&s->nconns, 1) == 1 && s->stopping) {
        server_ref(s);
        if (net_loop_queue_in_loop(s->base, stopped_on_base, s) < 0)
            server_unref(s);
    }
}

static void on_conn_closed(net_conn_t *conn, void *owner)
{
    struct slot *slot = owner;
    net_server_t *s = slot->server;
    slot_unlink(slot, conn);
    net_conn_unref(conn);
    conn_gone(s);
}

static void establish_in_slot(void *arg)
{
    net_conn_t *conn = arg;
    struct slot *slot = net__conn_owner(conn);
    net_server_t *s = slot->server;
    if (s->stopping) {
        net_conn_unref(conn); /* never established: this closes the fd */
        conn_gone(s);
    } else {
        slot_link(slot, conn);
        net__conn_establish(conn);
    }
    server_unref(s);
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
    server_ref(s);
    if (net_loop_run_in_loop(slot->loop, establish_in_slot, conn) < 0) {
        net_conn_unref(conn);
        conn_gone(s);
        server_unref(s);
    }
}

/* ---- life ------------------------------------------------------------------ */

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
    atomic_init(&s->refs, 1);
    s->base = base;
    if (opt)
        s->opt = *opt;
    else
        net_server_options_init(&s->opt);
    if (s->opt.backlog <= 0)
        s->opt.backlog = SOMAXCONN;
    if (!s->opt.memory_budget)
        s->opt.memory_budget = DEFAULT_MEMORY_BUDGET;
    s->budget.limit = s->opt.memory_budget;
    strncpy(s->name, s->opt.name ? s->opt.name : "server", sizeof s->name - 1);
    s->opt.name = s->name;
    if (cbs)
        s->cbs = *cbs;
    int rc = net__acceptor_open(&s->acceptor, base, addr, s->opt.reuse_port, s->opt.ipv6_only,
                                on_accept, s);
    if (rc < 0) {
        net__free(s);
        return rc;
    }
    *out = s;
    return 0;
}

static int make_slots(net_server_t *s)
{
    int rc = net_loop_pool_start(s->base, s->opt.io_threads, s->name, NULL, NULL, &s->pool);
    if (rc < 0)
        return rc;
    size_t n = net_loop_pool_size(s->pool);
    s->slots = net__calloc(n, sizeof *s->slots);
    if (!s->slots) {
        net_loop_pool_join(s->pool);
        s->pool = NULL;
        return -ENOMEM;
    }
    s->nslots = n;
    for (size_t i = 0; i < s->nslots; i++)
        s->slots[i] = (struct slot){.server = s, .loop = net_loop_pool_get(s->pool, i)};
    return 0;
}

/* A failed start leaves no slot behind: stop would otherwise queue work on
 * the loops of the pool just stopped. */
static void drop_slots(net_server_t *s)
{
    net_loop_pool_join(s->pool);
    s->pool = NULL;
    net__free(s->slots);
    s->slots = NULL;
    s->nslots = 0;
}

static int start_in_loop(net_server_t *s)
{
    if (s->stopping)
        return -ESHUTDOWN;
    int rc = make_slots(s);
    if (rc == 0 && (rc = net__acceptor_listen(&s->acceptor, s->opt.backlog)) < 0)
        drop_slots(s);
    if (rc < 0) {
        NET__LOG(NET_LOG_ERROR, "%s: start failed: %s", s->name, net_strerror(rc));
        atomic_store(&s->started, false);
        return rc;
    }
    s->running = true;
    return 0;
}

static void start_functor(void *arg)
{
    net_server_t *s = arg;
    if (!s->freed)
        start_in_loop(s);
    server_unref(s);
}

int net_server_start(net_server_t *server)
{
    if (!server)
        return -EINVAL;
    if (atomic_exchange(&server->started, true))
        return 0;
    if (net_loop_in_loop_thread(server->base))
        return start_in_loop(server);
    server_ref(server);
    int rc = net_loop_queue_in_loop(server->base, start_functor, server);
    if (rc < 0) {
        server_unref(server);
        atomic_store(&server->started, false);
    }
    return rc;
}

/* ---- stop -------------------------------------------------------------------- */

static void shutdown_all(struct slot *slot)
{
    for (net_conn_t *c = slot->head; c; c = net__conn_link(c)->next)
        net_conn_shutdown(c);
}

static void close_all(struct slot *slot)
{
    /* Each close unlinks the head (its closed hook runs synchronously). */
    while (slot->head)
        net__conn_close_in_loop(slot->head);
}

/* At the deadline, and every DRAIN_RECHECK_MS after it until the stop
 * completes: closes what is left, and completes the stop once nothing is.
 * Normally the last connection's conn_gone completes it first; this also
 * covers a conn_gone (or a close_all) that found no memory to queue
 * itself, which would otherwise leave the stop waiting forever. */
static void drain_deadline(net_loop_t *loop, net_timer_id_t timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    net_server_t *s = arg;
    s->drain_timer = 0;
    if (s->stopped)
        return;
    if (atomic_load(&s->nconns) == 0) {
        stopped_on_base(server_ref(s));
        return;
    }
    for (size_t i = 0; i < s->nslots; i++)
        slot_defer(&s->slots[i], close_all);
    net_timer_id_t id = net_loop_run_after(s->base, DRAIN_RECHECK_MS, drain_deadline, s);
    s->drain_timer = id > 0 ? id : 0;
}

int net_server_stop(net_server_t *server, uint64_t drain_ms, net_server_stopped_fn done,
                    void *arg)
{
    if (!server)
        return -EINVAL;
    if (!net_loop_in_loop_thread(server->base))
        return NET_EWRONGTHREAD;
    if (server->stopping)
        return -EALREADY;
    server->stopping = true;
    server->done = done;
    server->done_arg = arg;
    net__acceptor_close(&server->acceptor);
    for (size_t i = 0; i < server->nslots; i++)
        slot_defer(&server->slots[i], shutdown_all);
    /* Counted under stopping: if nothing is open, finish on the next turn. */
    atomic_fetch_add(&server->nconns, 1);
    conn_gone(server);
    if (!server->stopped) {
        net_timer_id_t id = net_loop_run_after(server->base, drain_ms, drain_deadline, server);
        server->drain_timer = id > 0 ? id : 0;
    }
    return 0;
}

int net_server_free(net_server_t *server)
{
    if (!server)
        return 0;
    if (!net_loop_in_loop_thread(server->base))
        return NET_EWRONGTHREAD;
    if (server->running && !server->stopped)
        return -EBUSY;
    server->freed = true;
    if (server->drain_timer > 0)
        net_timer_cancel(server->base, server->drain_timer);
    net__acceptor_close(&server->acceptor);
    /* Joining the I/O threads runs what they still have queued. */
    net_loop_pool_join(server->pool);
    server->pool = NULL;
    server_unref(server);
    return 0;
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

size_t net_server_connection_count(const net_server_t *server)
{
    return atomic_load(&((net_server_t *)server)->nconns);
}

uint64_t net_server_accepted(const net_server_t *server)
{
    return atomic_load(&((net_server_t *)server)->accepted);
}

uint64_t net_server_refused(const net_server_t *server)
{
    return atomic_load(&((net_server_t *)server)->refused);
}

net_loop_t *net_server_io_loop(net_server_t *server, size_t i)
{
    if (!server->pool)
        return NULL;
    return net_loop_pool_get(server->pool, i);
}
