/* The RPC client: one connection, every call pipelined over it.
 *
 * A call is started on the caller's thread, without a lock and usually
 * without waking the loop: the call record goes onto the wait-free intake
 * list, then its frame onto the connection's write queue (conn_write.c),
 * which batches the frames of all threads into few writes and wakes the
 * loop at most once per batch.
 *
 * Everything else is loop-thread state: the table of outstanding calls by
 * id and their timers. The loop moves calls from the intake into the table
 * before it reads any response (on_message) or fails calls (fail_all), so
 * a response can never arrive for a call the table does not know yet: the
 * call was pushed onto the intake before its frame was queued, and the loop
 * took the frame, wrote it and read the response after that push. Calls
 * with a timeout also start a periodic tick that drains the intake, so
 * their timers are armed within TICK_MS even when no response comes; the
 * timer still fires at the call's own deadline, taken at submission.
 *
 * The connection pointer is shared with callers under a reader-writer lock
 * (readers: every call; the writer: the loop, when the connection comes or
 * goes). With no connection, frames wait in `waiting` until one comes.
 *
 * Each call ends exactly once, on the loop, by whichever comes first: its
 * response, its timer, the loss of the connection (or a failed connect) or
 * the client's stop. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <net/rpc.h>

#include "loop/alloc_internal.h"
#include "loop/log_internal.h"
#include "loop/loop_internal.h"
#include "rpc/rpc_codec.h"
#include "tcp/tcp_conn_internal.h"
#include "rpc/waitset.h"
#include "tcp/write_queue.h"

/* Longest delay between a call with a timeout and its timer being armed,
 * when no response or failure makes the loop look at the intake sooner. */
#define TICK_MS 5

/* A call lives in the payload of a write-queue node, so that it is
 * allocated from the per-thread node cache (write_queue.c) and travels
 * through the intake list with one atomic exchange. */
struct call {
    struct net__wq_node *node; /* the node whose payload this is */
    struct call *next;         /* table chain (loop thread) */
    uint64_t id;
    uint64_t deadline_ms;      /* net_now_ms() clock; 0 = no timeout */
    net_timer_id_t timer;
    net_rpc_done_fn done;
    void *arg;
    net_rpc_client_t *client;
    uint32_t early_status;     /* set: end with this at once (OVERLOADED, a failed send) */
};

struct net_rpc_client {
    atomic_int refs;          /* the owner's, one per queued functor, one per sync caller */
    net_loop_t *loop;
    net_client_t *tcp;
    struct net_rpc_client_options opt;
    atomic_bool stopped;
    atomic_ullong next_id;
    atomic_size_t admitted;   /* submitted and not yet completed */

    struct net__wq intake;    /* calls started, not yet in the table */
    atomic_bool tick_on;      /* the tick runs or is being started */
    atomic_bool kick_queued;  /* a reconnect request is on its way to the loop */
    atomic_bool drain_queued; /* a drain_functor is on its way to the loop */
    atomic_bool gave_up;      /* the TCP client stopped trying */

    pthread_rwlock_t conn_lock; /* guards conn for other threads */
    net_conn_t *conn;           /* written by the loop under the write lock */
    pthread_mutex_t wait_mu;
    net_buf_t waiting;          /* frames accepted while not connected */

    /* Loop thread only. */
    struct call **table;
    size_t table_size, outstanding;
    net_timer_id_t tick;

    /* net_rpc_call_sync callers sleep here; the loop wakes those whose
     * outcome it delivered once per batch (after each read). */
    struct net__waitset sync_waiters;
    bool in_batch; /* loop thread: inside on_message, wakes wait for its end */

    atomic_ullong calls, completed, late, timeouts, disconnected;
};

void net_rpc_client_options_init(struct net_rpc_client_options *opt)
{
    net_client_options_init(&opt->client);
    opt->client.retry = true;
    opt->client.reconnect = true;
    opt->client.conn.backpressure_mark = NET_UNLIMITED; /* see net_rpc_client_new */
    opt->max_frame = NET__RPC_DEFAULT_MAX_FRAME;
    opt->max_outstanding = 65536;
}

static void client_ref(net_rpc_client_t *c)
{
    atomic_fetch_add(&c->refs, 1);
}

static void client_unref(net_rpc_client_t *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    net__wq_drain(&c->intake); /* calls pushed after free ran: never started */
    pthread_rwlock_destroy(&c->conn_lock);
    pthread_mutex_destroy(&c->wait_mu);
    net_buf_destroy(&c->waiting);
    net__free(c);
}

/* Queues fn(c) on the loop with a reference; returns false if it could not. */
static bool queue_with_ref(net_rpc_client_t *c, net_loop_fn fn)
{
    client_ref(c);
    if (net_loop_queue_in_loop(c->loop, fn, c) == 0)
        return true;
    client_unref(c);
    return false;
}

/* ---- the outstanding-call table (loop thread) ------------------------------------ */

static struct call **bucket(net_rpc_client_t *c, uint64_t id)
{
    return &c->table[id & (c->table_size - 1)];
}

static void table_grow(net_rpc_client_t *c)
{
    size_t size = c->table_size ? c->table_size * 2 : 256;
    struct call **t = net__calloc(size, sizeof *t);
    if (!t)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < c->table_size; i++) {
        for (struct call *k = c->table[i], *next; k; k = next) {
            next = k->next;
            k->next = t[k->id & (size - 1)];
            t[k->id & (size - 1)] = k;
        }
    }
    net__free(c->table);
    c->table = t;
    c->table_size = size;
}

static void table_insert(net_rpc_client_t *c, struct call *k)
{
    if (c->outstanding >= c->table_size)
        table_grow(c); /* the first table exists since new: this cannot fail */
    struct call **b = bucket(c, k->id);
    k->next = *b;
    *b = k;
    c->outstanding++;
}

static struct call *table_take(net_rpc_client_t *c, uint64_t id)
{
    if (!c->table_size)
        return NULL;
    for (struct call **p = bucket(c, id); *p; p = &(*p)->next) {
        if ((*p)->id == id) {
            struct call *k = *p;
            *p = k->next;
            c->outstanding--;
            return k;
        }
    }
    return NULL;
}

/* ---- completing calls (loop thread) ------------------------------------------------ */

static void call_free(struct call *k)
{
    net__wq_node_free(k->node);
}

static void complete(net_rpc_client_t *c, struct call *k, uint32_t status, const void *body,
                     size_t len)
{
    if (k->timer > 0)
        net_timer_cancel(c->loop, k->timer);
    atomic_fetch_sub(&c->admitted, 1);
    atomic_fetch_add_explicit(&c->completed, 1, memory_order_relaxed);
    if (status == NET_RPC_TIMEOUT)
        atomic_fetch_add_explicit(&c->timeouts, 1, memory_order_relaxed);
    else if (status == NET_RPC_DISCONNECTED)
        atomic_fetch_add_explicit(&c->disconnected, 1, memory_order_relaxed);
    k->done(c, status, body, len, k->arg);
    call_free(k);
}

static void call_timed_out(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    struct call *k = arg;
    net_rpc_client_t *c = k->client;
    k->timer = 0;
    if (table_take(c, k->id) == k)
        complete(c, k, NET_RPC_TIMEOUT, NULL, 0);
}

static void arm_timer(net_rpc_client_t *c, struct call *k)
{
    net_timer_id_t t = net_loop_run_at(c->loop, k->deadline_ms, call_timed_out, k);
    k->timer = t > 0 ? t : 0; /* without a timer the call still ends on loss or stop */
}

/* Moves every started call into the table (or ends it now). */
static void drain_intake(net_rpc_client_t *c)
{
    struct net__wq_node *last, *n = net__wq_take(&c->intake, &last);
    for (struct net__wq_node *next; n; n = next) {
        next = atomic_load_explicit(&n->next, memory_order_relaxed);
        struct call *k = (struct call *)(void *)n->data;
        if (k->early_status) {
            complete(c, k, k->early_status, NULL, 0);
            continue;
        }
        table_insert(c, k);
        if (k->deadline_ms)
            arm_timer(c, k);
    }
}

/* Ends every outstanding call with status (connection lost, stop). Frames
 * still waiting go first: a call started after that has its frame kept for
 * the next connection, and a call ended here whose frame stays only earns a
 * late (dropped, counted) reply. */
static void fail_all(net_rpc_client_t *c, uint32_t status)
{
    pthread_mutex_lock(&c->wait_mu);
    net_buf_retrieve_all(&c->waiting);
    pthread_mutex_unlock(&c->wait_mu);
    drain_intake(c);
    for (size_t i = 0; i < c->table_size && c->outstanding; i++) {
        while (c->table[i]) {
            struct call *k = c->table[i];
            c->table[i] = k->next;
            c->outstanding--;
            complete(c, k, status, NULL, 0);
        }
    }
}

static void drain_functor(void *arg)
{
    net_rpc_client_t *c = arg;
    atomic_store(&c->drain_queued, false); /* before draining: later pushes queue again */
    if (c->table) /* NULL once freed */
        drain_intake(c);
    client_unref(c);
}

static void cancel_functor(void *arg)
{
    net_rpc_client_t *c = arg;
    if (c->table)
        fail_all(c, NET_RPC_CANCELLED);
    client_unref(c);
}

/* ---- the tick (loop thread) ------------------------------------------------------- */

static void stop_tick(net_rpc_client_t *c)
{
    if (c->tick > 0)
        net_timer_cancel(c->loop, c->tick);
    c->tick = 0;
}

static void tick_fired(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    net_rpc_client_t *c = arg;
    drain_intake(c);
    if (c->outstanding || !net__wq_empty(&c->intake))
        return;
    /* Idle: stop, then look again (a caller that saw tick_on still set
     * relied on us; seq_cst pairs with its exchange as in conn_write.c). */
    stop_tick(c);
    atomic_store(&c->tick_on, false);
    if (!net__wq_empty(&c->intake) && !atomic_exchange(&c->tick_on, true))
        c->tick = net_loop_run_every(c->loop, TICK_MS, tick_fired, c);
}

static void start_tick_functor(void *arg)
{
    net_rpc_client_t *c = arg;
    if (c->table && c->tick <= 0) {
        c->tick = net_loop_run_every(c->loop, TICK_MS, tick_fired, c);
        if (c->tick < 0)
            atomic_store(&c->tick_on, false); /* the next call with a timeout tries again */
    }
    client_unref(c);
}

/* ---- the connection ------------------------------------------------------------------- */

static void reconnect_functor(void *arg)
{
    net_rpc_client_t *c = arg;
    atomic_store(&c->kick_queued, false);
    if (c->tcp && !atomic_load(&c->stopped) && atomic_exchange(&c->gave_up, false))
        net_client_connect(c->tcp);
    client_unref(c);
}

/* Keeps the frame until a connection comes; a client that gave up
 * connecting is asked to try again, so a call is never stranded. Caller
 * holds the read lock, so the loop cannot hand out `waiting` meanwhile. */
static int wait_for_connection(net_rpc_client_t *c, const struct iovec *iov, int n)
{
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += iov[i].iov_len;
    pthread_mutex_lock(&c->wait_mu);
    /* All of the frame or nothing: a part left behind would corrupt the
     * stream the waiting frames are sent on. */
    int rc = net_buf_ensure_writable(&c->waiting, len);
    for (int i = 0; i < n && rc == 0; i++)
        rc = net_buf_append(&c->waiting, iov[i].iov_base, iov[i].iov_len);
    pthread_mutex_unlock(&c->wait_mu);
    if (atomic_load(&c->gave_up) && !atomic_exchange(&c->kick_queued, true) &&
        !queue_with_ref(c, reconnect_functor))
        atomic_store(&c->kick_queued, false);
    return rc;
}

static int send_frame(net_rpc_client_t *c, const struct iovec *iov, int n)
{
    pthread_rwlock_rdlock(&c->conn_lock);
    int rc = c->conn ? net__conn_sendv(c->conn, iov, n) : wait_for_connection(c, iov, n);
    pthread_rwlock_unlock(&c->conn_lock);
    /* -ENOTCONN: the connection is going; its down callback ends the call. */
    return rc == -ENOTCONN ? 0 : rc;
}

static void set_conn(net_rpc_client_t *c, net_conn_t *conn)
{
    pthread_rwlock_wrlock(&c->conn_lock);
    net_conn_t *old = c->conn;
    c->conn = conn;
    pthread_rwlock_unlock(&c->conn_lock);
    if (old)
        net_conn_unref(old);
}

/* ---- starting calls (any thread) ------------------------------------------------------ */

/* After the call is on the intake: only the loop may end it now. A failure
 * to send is reported through early_status only while the loop cannot have
 * seen the call; otherwise the loop is asked to look (drain_functor) and
 * the failure becomes the call's outcome there (table_take finds it). */
static void start_timeout_tick(net_rpc_client_t *c)
{
    if (!atomic_load(&c->tick_on) && !atomic_exchange(&c->tick_on, true) &&
        !queue_with_ref(c, start_tick_functor))
        atomic_store(&c->tick_on, false);
}

struct failed_send {
    net_rpc_client_t *c;
    uint64_t id;
    uint32_t status;
};

static void failed_send_functor(void *arg)
{
    struct failed_send *f = arg;
    net_rpc_client_t *c = f->c;
    if (c->table) {
        drain_intake(c);
        struct call *k = table_take(c, f->id);
        if (k)
            complete(c, k, f->status, NULL, 0);
    }
    client_unref(c);
    net__free(f);
}

/* The frame could not be queued (no memory, output limit): end the call
 * on the loop with status. If even that cannot be queued, the call ends
 * with its timeout, the connection's loss or the client's stop. */
static void fail_sent_call(net_rpc_client_t *c, uint64_t id, uint32_t status)
{
    struct failed_send *f = net__malloc(sizeof *f);
    if (!f) {
        NET__LOG_RL(NET_LOG_ERROR, "rpc client: call %llu could not be sent or failed",
                    (unsigned long long)id);
        return;
    }
    *f = (struct failed_send){.c = c, .id = id, .status = status};
    client_ref(c);
    if (net_loop_queue_in_loop(c->loop, failed_send_functor, f) < 0) {
        client_unref(c);
        net__free(f);
    }
}

static uint64_t deadline_after(uint64_t now_ms, uint64_t timeout_ms)
{
    return timeout_ms > UINT64_MAX - now_ms ? UINT64_MAX : now_ms + timeout_ms;
}

static struct call *call_new(net_rpc_client_t *c, uint64_t timeout_ms, net_rpc_done_fn done,
                             void *arg)
{
    struct net__wq_node *n = net__wq_node_alloc(sizeof(struct call));
    if (!n)
        return NULL;
    struct call *k = (struct call *)(void *)n->data;
    /* On the loop thread the iteration's cached time saves a clock read per
     * call (the deadline is then at most one iteration early). */
    uint64_t now = timeout_ms == 0                     ? 0
                   : net_loop_in_loop_thread(c->loop) ? net__loop_now_ms(c->loop)
                                                      : net_now_ms();
    *k = (struct call){.node = n, .id = atomic_fetch_add(&c->next_id, 1),
                       .deadline_ms = timeout_ms ? deadline_after(now, timeout_ms) : 0,
                       .done = done, .arg = arg, .client = c};
    if (timeout_ms && !k->deadline_ms)
        k->deadline_ms = 1;
    return k;
}

int net_rpc_call(net_rpc_client_t *client, const char *method, const void *body,
                 size_t body_len, uint64_t timeout_ms, net_rpc_done_fn done, void *arg)
{
    size_t mlen = method ? strlen(method) : 0;
    if (!client || !done || mlen == 0 || mlen > NET__RPC_MAX_METHOD || (body_len && !body) ||
        body_len > UINT32_MAX)
        return -EINVAL;
    net_rpc_client_t *c = client;
    if (atomic_load(&c->stopped))
        return -ESHUTDOWN;
    struct call *k = call_new(c, timeout_ms, done, arg);
    if (!k)
        return -ENOMEM;
    uint64_t id = k->id;
    atomic_fetch_add_explicit(&c->calls, 1, memory_order_relaxed);
    bool over = atomic_fetch_add(&c->admitted, 1) >= c->opt.max_outstanding;
    if (over)
        k->early_status = NET_RPC_OVERLOADED; /* memory stays bounded */
    net__wq_push(&c->intake, k->node); /* k belongs to the loop from here */
    if (over) {
        /* Refused calls must end soon, not with the next response. */
        if (!atomic_exchange(&c->drain_queued, true) && !queue_with_ref(c, drain_functor))
            atomic_store(&c->drain_queued, false);
        return 0;
    }
    struct net__rpc_header h = {.version = NET__RPC_VERSION, .type = NET__RPC_TYPE_REQUEST,
                                .method_len = (uint16_t)mlen, .call_id = id,
                                .body_len = (uint32_t)body_len};
    uint8_t hdr[NET__RPC_HEADER_LEN];
    net__rpc_header_pack(hdr, &h);
    struct iovec iov[3] = {{hdr, sizeof hdr}, {(void *)method, mlen}, {(void *)body, body_len}};
    int rc = send_frame(c, iov, body_len ? 3 : 2);
    if (rc < 0)
        fail_sent_call(c, id, rc == -ENOBUFS ? NET_RPC_OVERLOADED : NET_RPC_INTERNAL);
    else if (timeout_ms)
        start_timeout_tick(c);
    if (atomic_load(&c->stopped))
        queue_with_ref(c, cancel_functor); /* raced with stop: end it CANCELLED */
    return 0;
}

/* ---- the connection ------------------------------------------------------------------- */

static void on_response(net_rpc_client_t *c, const struct net__rpc_frame *f)
{
    struct call *k = table_take(c, f->hdr.call_id);
    if (!k) {
        atomic_fetch_add_explicit(&c->late, 1, memory_order_relaxed);
        return; /* timed out earlier: dropped and counted */
    }
    complete(c, k, f->hdr.status, f->body, f->hdr.body_len);
}

static void on_message(net_conn_t *conn, net_buf_t *in, uint64_t receive_ms, void *arg)
{
    (void)receive_ms;
    net_rpc_client_t *c = arg;
    struct net__rpc_frame f;
    const char *reason = NULL;
    int rc;
    drain_intake(c); /* every call these responses answer is in the table now */
    c->in_batch = true;
    while ((rc = net__rpc_decode(in, c->opt.max_frame, &f, &reason)) > 0) {
        if (f.hdr.type != NET__RPC_TYPE_RESPONSE) {
            rc = -EPROTO;
            reason = "request sent to a client";
            break;
        }
        on_response(c, &f);
        net_buf_retrieve(in, f.total);
    }
    if (rc < 0) {
        NET__LOG_RL(NET_LOG_WARN, "rpc client: closing the connection: %s", reason);
        net_buf_retrieve_all(in);
        fail_all(c, NET_RPC_PROTOCOL_ERROR);
        net_conn_force_close(conn);
    }
    c->in_batch = false;
    net__waitset_wake(&c->sync_waiters);
}

static void on_connection(net_conn_t *conn, void *arg)
{
    net_rpc_client_t *c = arg;
    if (net_conn_connected(conn)) {
        /* Publish the connection and take the waiting frames in one step,
         * so that every frame goes either into `waiting` or to the queue. */
        pthread_rwlock_wrlock(&c->conn_lock);
        c->conn = net_conn_ref(conn);
        pthread_mutex_lock(&c->wait_mu);
        net_buf_t frames = c->waiting;
        net_buf_init(&c->waiting);
        pthread_mutex_unlock(&c->wait_mu);
        pthread_rwlock_unlock(&c->conn_lock);
        if (net_buf_readable(&frames))
            net_conn_send_buf(conn, &frames); /* on failure the down callback fails the calls */
        net_buf_destroy(&frames);
        return;
    }
    if (!c->opt.client.reconnect)
        atomic_store(&c->gave_up, true);
    if (c->conn == conn)
        set_conn(c, NULL);
    fail_all(c, atomic_load(&c->stopped) ? NET_RPC_CANCELLED : NET_RPC_DISCONNECTED);
}

static void on_connect_failed(net_client_t *tcp, int err, bool will_retry, void *arg)
{
    (void)tcp;
    net_rpc_client_t *c = arg;
    if (!will_retry)
        atomic_store(&c->gave_up, true);
    if (c->outstanding && err != NET_ECANCELLED)
        NET__LOG_RL(NET_LOG_INFO, "rpc client: connect failed (%s): %zu calls fail",
                    net_strerror(err), c->outstanding);
    fail_all(c, atomic_load(&c->stopped) ? NET_RPC_CANCELLED : NET_RPC_DISCONNECTED);
}

/* ---- life ------------------------------------------------------------------------------ */

int net_rpc_client_new(net_loop_t *loop, const net_addr_t *addr,
                       const struct net_rpc_client_options *opt, net_rpc_client_t **out)
{
    if (!loop || !addr || !out)
        return -EINVAL;
    if (!net_loop_in_loop_thread(loop))
        return NET_EWRONGTHREAD;
    net_rpc_client_t *c = net__calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    atomic_init(&c->refs, 1);
    c->loop = loop;
    if (opt)
        c->opt = *opt;
    else
        net_rpc_client_options_init(&c->opt);
    if (!c->opt.max_frame)
        c->opt.max_frame = NET__RPC_DEFAULT_MAX_FRAME;
    /* Reading replies only ever shrinks what a client holds, and its
     * requests are bounded by max_outstanding. Pausing reading because our
     * requests back up would deadlock with a server that pauses reading
     * because its replies back up: each waits for the other to read. */
    c->opt.client.conn.backpressure_mark = NET_UNLIMITED;
    atomic_init(&c->next_id, 1);
    net__waitset_init(&c->sync_waiters);
    atomic_init(&c->intake.head, NULL);
    /* Writers first: with callers holding the read lock back to back, a
     * reader-preferring lock could keep the loop from ever publishing a
     * new connection. */
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&c->conn_lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    pthread_mutex_init(&c->wait_mu, NULL);
    /* The first table now, so that inserting a call can never fail (a
     * failed grow later only makes chains longer). */
    table_grow(c);
    if (!c->table_size) {
        client_unref(c);
        return -ENOMEM;
    }
    struct net_conn_callbacks cbs = {.on_connection = on_connection, .on_message = on_message,
                                     .arg = c};
    int rc = net_client_new(loop, addr, &c->opt.client, &cbs, on_connect_failed, c, &c->tcp);
    if (rc == 0)
        rc = net_client_connect(c->tcp);
    if (rc < 0) {
        if (c->tcp) /* no attempt started: no callback can reach c */
            net_client_close(c->tcp, 0, NULL, NULL);
        net__free(c->table);
        client_unref(c);
        return rc;
    }
    *out = c;
    return 0;
}

bool net_rpc_client_connected(net_rpc_client_t *client)
{
    net_conn_t *conn = net_client_conn_ref(client->tcp);
    net_conn_unref(conn);
    return conn != NULL;
}

static void stop_in_loop(void *arg)
{
    net_rpc_client_t *c = arg;
    if (c->tcp) { /* NULL once freed */
        net_client_disconnect(c->tcp); /* free closes it */
        fail_all(c, NET_RPC_CANCELLED);
    }
    client_unref(c);
}

void net_rpc_client_stop(net_rpc_client_t *client)
{
    if (atomic_exchange(&client->stopped, true))
        return;
    atomic_fetch_add(&client->refs, 1);
    /* Queued even on the loop thread: the CANCELLED callbacks must not run
     * inside this call (only free is allowed that). */
    if (net_loop_queue_in_loop(client->loop, stop_in_loop, client) < 0)
        client_unref(client); /* calls still end: at the latest in free */
}

/* The TCP client's close is done: its callbacks no longer reach c. */
static void tcp_closed(net_client_t *tcp, void *arg)
{
    (void)tcp;
    client_unref(arg);
}

void net_rpc_client_free(net_rpc_client_t *client)
{
    if (!client)
        return;
    atomic_store(&client->stopped, true);
    client_ref(client); /* for the TCP client's callbacks, until tcp_closed */
    net_client_close(client->tcp, 0, tcp_closed, client);
    fail_all(client, NET_RPC_CANCELLED); /* the down callback comes later: fail them now */
    stop_tick(client);
    set_conn(client, NULL);
    client->tcp = NULL;
    net__free(client->table);
    client->table = NULL;
    client->table_size = 0;
    client_unref(client); /* queued functors may still hold references */
}

void net_rpc_client_stats(net_rpc_client_t *client, struct net_rpc_client_stats *out)
{
    out->calls = atomic_load(&client->calls);
    out->completed = atomic_load(&client->completed);
    out->late_replies = atomic_load(&client->late);
    out->timeouts = atomic_load(&client->timeouts);
    out->disconnected = atomic_load(&client->disconnected);
    out->outstanding = atomic_load(&client->admitted);
}

/* ---- synchronous calls ------------------------------------------------------------------ */

/* The caller sleeps in the client's waitset (waitset.h): the loop marks
 * its outcome ready and wakes it together with the other callers answered
 * by the same read, in one system call. */
struct sync_call {
    struct net__waiter waiter;
    uint32_t status;
    void *body;
    size_t len;
};

static void sync_done(net_rpc_client_t *c, uint32_t status, const void *body, size_t len,
                      void *arg)
{
    struct sync_call *s = arg;
    /* The C library's malloc, not net__malloc: the caller frees this with
     * free() (include/net/alloc.h). */
    void *copy = len ? malloc(len) : NULL;
    if (copy)
        memcpy(copy, body, len);
    s->status = (len && !copy) ? NET_RPC_INTERNAL : status;
    s->body = copy;
    s->len = copy ? len : 0;
    net__waitset_mark(&c->sync_waiters, &s->waiter); /* s may be gone after this line */
    if (!c->in_batch)
        net__waitset_wake(&c->sync_waiters);
}

int net_rpc_call_sync(net_rpc_client_t *client, const char *method, const void *body,
                      size_t body_len, uint64_t timeout_ms, uint32_t *status, void **body_out,
                      size_t *len_out)
{
    if (!client || !status)
        return -EINVAL;
    if (net_loop_in_loop_thread(client->loop))
        return NET_EWRONGTHREAD;
    struct sync_call s;
    net__waiter_init(&s.waiter);
    /* The waitset lives in the client: a reference keeps it for the wait
     * even if the owner frees the client (the call then ends CANCELLED). */
    client_ref(client);
    int rc = net_rpc_call(client, method, body, body_len, timeout_ms, sync_done, &s);
    if (rc == 0)
        net__waitset_wait(&client->sync_waiters, &s.waiter);
    client_unref(client);
    if (rc < 0)
        return rc;
    *status = s.status;
    if (body_out)
        *body_out = s.body;
    else
        free(s.body); /* malloc'd by sync_done */
    if (len_out)
        *len_out = s.len;
    return 0;
}
