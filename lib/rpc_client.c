/* The RPC client: one connection, every call pipelined over it.
 *
 * Any thread submits a call by encoding its frame into the shared submission
 * buffer under a mutex and, if no flush is pending, queueing one on the loop.
 * The flush takes the whole buffer and sends it with one write: calls made
 * by many threads between two loop iterations leave together.
 *
 * Everything else is loop-thread state: the table of outstanding calls by id,
 * their timers, and the frames waiting for a connection. Each call ends
 * exactly once, by whichever comes first: its response, its timer, the loss
 * of the connection (or a failed connect) or the client's stop. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <net/rpc.h>

#include "log_internal.h"
#include "rpc_codec.h"

struct call {
    struct call *next;   /* submission list, then table chain */
    uint64_t id;
    uint64_t timeout_ms;
    net_timer_id_t timer;
    net_rpc_done_fn done;
    void *arg;
    net_rpc_client_t *client;
    uint32_t early_status; /* set: complete with this at flush (OVERLOADED) */
};

struct net_rpc_client {
    atomic_int refs;          /* the owner's and one per queued functor */
    net_loop_t *loop;
    net_client_t *tcp;
    struct net_rpc_client_options opt;
    atomic_bool stopped;
    atomic_ullong next_id;
    atomic_size_t admitted;   /* submitted and not yet completed */

    pthread_mutex_t mu;       /* guards the submission side */
    net_buf_t submit_buf;
    struct call *submit_head, *submit_tail;
    bool flush_queued;

    /* Loop thread only. */
    net_conn_t *conn;
    net_buf_t waiting;        /* frames accepted while not connected */
    bool gave_up;             /* the TCP client stopped trying */
    struct call **table;
    size_t table_size, outstanding;

    atomic_ullong calls, completed, late, timeouts, disconnected;
};

void net_rpc_client_options_init(struct net_rpc_client_options *opt)
{
    net_client_options_init(&opt->client);
    opt->client.retry = true;
    opt->client.reconnect = true;
    opt->max_frame = NET__RPC_DEFAULT_MAX_FRAME;
    opt->max_outstanding = 65536;
}

/* ---- the outstanding-call table (loop thread) ------------------------------------ */

static struct call **bucket(net_rpc_client_t *c, uint64_t id)
{
    return &c->table[id & (c->table_size - 1)];
}

static void table_grow(net_rpc_client_t *c)
{
    size_t size = c->table_size ? c->table_size * 2 : 256;
    struct call **t = calloc(size, sizeof *t);
    if (!t)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < c->table_size; i++) {
        for (struct call *k = c->table[i], *next; k; k = next) {
            next = k->next;
            k->next = t[k->id & (size - 1)];
            t[k->id & (size - 1)] = k;
        }
    }
    free(c->table);
    c->table = t;
    c->table_size = size;
}

static bool table_insert(net_rpc_client_t *c, struct call *k)
{
    if (c->outstanding >= c->table_size)
        table_grow(c);
    if (!c->table_size)
        return false;
    struct call **b = bucket(c, k->id);
    k->next = *b;
    *b = k;
    c->outstanding++;
    return true;
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

/* ---- completing calls -------------------------------------------------------------- */

static void complete(net_rpc_client_t *c, struct call *k, uint32_t status, const void *body,
                     size_t len)
{
    if (k->timer > 0)
        net_loop_cancel(c->loop, k->timer);
    atomic_fetch_sub(&c->admitted, 1);
    atomic_fetch_add_explicit(&c->completed, 1, memory_order_relaxed);
    if (status == NET_RPC_TIMEOUT)
        atomic_fetch_add_explicit(&c->timeouts, 1, memory_order_relaxed);
    else if (status == NET_RPC_DISCONNECTED)
        atomic_fetch_add_explicit(&c->disconnected, 1, memory_order_relaxed);
    k->done(c, status, body, len, k->arg);
    free(k);
}

/* Ends every outstanding call with status (connection lost, stop). */
static void fail_all(net_rpc_client_t *c, uint32_t status)
{
    for (size_t i = 0; i < c->table_size && c->outstanding; i++) {
        while (c->table[i]) {
            struct call *k = c->table[i];
            c->table[i] = k->next;
            c->outstanding--;
            complete(c, k, status, NULL, 0);
        }
    }
    net_buf_retrieve_all(&c->waiting);
}

static void call_timed_out(void *arg)
{
    struct call *k = arg;
    net_rpc_client_t *c = k->client;
    k->timer = 0;
    if (table_take(c, k->id) == k)
        complete(c, k, NET_RPC_TIMEOUT, NULL, 0);
}

/* ---- flushing submissions (loop thread) ----------------------------------------------- */

static void client_unref(net_rpc_client_t *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void start_call(net_rpc_client_t *c, struct call *k)
{
    if (k->early_status || atomic_load(&c->stopped)) {
        complete(c, k, k->early_status ? k->early_status : NET_RPC_CANCELLED, NULL, 0);
        return;
    }
    if (!table_insert(c, k)) {
        complete(c, k, NET_RPC_OVERLOADED, NULL, 0);
        return;
    }
    if (k->timeout_ms) {
        net_timer_id_t t = net_loop_run_after(c->loop, k->timeout_ms, call_timed_out, k);
        k->timer = t > 0 ? t : 0;
    }
}

/* Keeps frames until the connection is up; a client that gave up connecting
 * tries again, so a call is never stranded. */
static void wait_for_connection(net_rpc_client_t *c, net_buf_t *frames)
{
    if (net_buf_append(&c->waiting, net_buf_peek(frames), net_buf_readable(frames)) < 0)
        NET__LOG_RL(NET_LOG_ERROR, "rpc client: no memory for waiting calls");
    if (c->gave_up) {
        c->gave_up = false;
        net_client_connect(c->tcp);
    }
}

static void flush(void *arg)
{
    net_rpc_client_t *c = arg;
    pthread_mutex_lock(&c->mu);
    net_buf_t frames = c->submit_buf;
    struct call *k = c->submit_head;
    net_buf_init(&c->submit_buf);
    c->submit_head = c->submit_tail = NULL;
    c->flush_queued = false;
    pthread_mutex_unlock(&c->mu);

    for (struct call *next; k; k = next) {
        next = k->next;
        start_call(c, k);
    }
    /* Frames of calls that ended early (stopped, over the limit) were never
     * encoded, so everything in `frames` belongs to a call in the table. */
    if (atomic_load(&c->stopped) || !net_buf_readable(&frames)) {
        /* nothing to send */
    } else if (c->conn) {
        net_conn_send_buf(c->conn, &frames); /* on failure the down callback fails the calls */
    } else {
        wait_for_connection(c, &frames);
    }
    net_buf_destroy(&frames);
}

static void flush_functor(void *arg)
{
    flush(arg);
    client_unref(arg);
}

/* ---- submitting (any thread) ----------------------------------------------------------- */

static int submit(net_rpc_client_t *c, struct call *k, const char *method, size_t mlen,
                  const void *body, size_t len)
{
    pthread_mutex_lock(&c->mu);
    int rc = 0;
    if (!k->early_status)
        rc = net__rpc_encode_request(&c->submit_buf, k->id, method, mlen, body, len);
    if (rc == 0) {
        if (c->submit_tail)
            c->submit_tail->next = k;
        else
            c->submit_head = k;
        c->submit_tail = k;
    }
    bool queue = rc == 0 && !c->flush_queued;
    if (queue)
        c->flush_queued = true;
    pthread_mutex_unlock(&c->mu);
    if (queue) {
        atomic_fetch_add(&c->refs, 1);
        if ((rc = net_loop_queue_in_loop(c->loop, flush_functor, c)) < 0) {
            /* The call is in the list and will be flushed by the next call's
             * functor or by free: report success, it will complete. */
            NET__LOG_RL(NET_LOG_ERROR, "rpc client: cannot queue a flush: %s", net_strerror(rc));
            pthread_mutex_lock(&c->mu);
            c->flush_queued = false;
            pthread_mutex_unlock(&c->mu);
            client_unref(c);
            rc = 0;
        }
    }
    return rc;
}

int net_rpc_call(net_rpc_client_t *client, const char *method, const void *body,
                 size_t body_len, uint64_t timeout_ms, net_rpc_done_fn done, void *arg)
{
    size_t mlen = method ? strlen(method) : 0;
    if (!client || !done || mlen == 0 || mlen > NET__RPC_MAX_METHOD || (body_len && !body) ||
        body_len > UINT32_MAX)
        return -EINVAL;
    if (atomic_load(&client->stopped))
        return -ESHUTDOWN;
    struct call *k = malloc(sizeof *k);
    if (!k)
        return -ENOMEM;
    *k = (struct call){.id = atomic_fetch_add(&client->next_id, 1), .timeout_ms = timeout_ms,
                       .done = done, .arg = arg, .client = client};
    if (atomic_fetch_add(&client->admitted, 1) >= client->opt.max_outstanding)
        k->early_status = NET_RPC_OVERLOADED; /* memory stays bounded */
    atomic_fetch_add_explicit(&client->calls, 1, memory_order_relaxed);
    int rc = submit(client, k, method, mlen, body, body_len);
    if (rc < 0) {
        atomic_fetch_sub(&client->admitted, 1);
        free(k);
    }
    return rc;
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
}

static void on_connection(net_conn_t *conn, void *arg)
{
    net_rpc_client_t *c = arg;
    if (net_conn_connected(conn)) {
        c->conn = net_conn_ref(conn);
        if (net_buf_readable(&c->waiting))
            net_conn_send_buf(conn, &c->waiting);
        net_buf_destroy(&c->waiting);
        return;
    }
    if (!c->opt.client.reconnect)
        c->gave_up = true;
    if (c->conn == conn) {
        net_conn_unref(c->conn);
        c->conn = NULL;
    }
    fail_all(c, atomic_load(&c->stopped) ? NET_RPC_CANCELLED : NET_RPC_DISCONNECTED);
}

static void on_connect_failed(net_client_t *tcp, int err, bool will_retry, void *arg)
{
    (void)tcp;
    net_rpc_client_t *c = arg;
    if (!will_retry)
        c->gave_up = true;
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
    net_rpc_client_t *c = calloc(1, sizeof *c);
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
    atomic_init(&c->next_id, 1);
    pthread_mutex_init(&c->mu, NULL);
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
        net_client_free(c->tcp);
        client_unref(c);
        return rc;
    }
    *out = c;
    return 0;
}

bool net_rpc_client_connected(net_rpc_client_t *client)
{
    net_conn_t *conn = net_client_conn(client->tcp);
    net_conn_unref(conn);
    return conn != NULL;
}

static void stop_in_loop(void *arg)
{
    net_rpc_client_t *c = arg;
    if (c->tcp) { /* NULL once freed */
        net_client_stop(c->tcp);
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

void net_rpc_client_free(net_rpc_client_t *client)
{
    if (!client)
        return;
    atomic_store(&client->stopped, true);
    net_client_free(client->tcp); /* runs the down callback: calls fail */
    flush(client);                /* submissions not yet flushed: CANCELLED */
    fail_all(client, NET_RPC_CANCELLED);
    if (client->conn)
        net_conn_unref(client->conn);
    client->conn = NULL;
    client->tcp = NULL;
    net_buf_destroy(&client->waiting);
    free(client->table);
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

struct sync_call {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool finished;
    uint32_t status;
    void *body;
    size_t len;
};

static void sync_done(net_rpc_client_t *c, uint32_t status, const void *body, size_t len,
                      void *arg)
{
    (void)c;
    struct sync_call *s = arg;
    void *copy = len ? malloc(len) : NULL;
    if (copy)
        memcpy(copy, body, len);
    pthread_mutex_lock(&s->mu);
    s->status = (len && !copy) ? NET_RPC_INTERNAL : status;
    s->body = copy;
    s->len = copy ? len : 0;
    s->finished = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu); /* s may be gone after this line */
}

int net_rpc_call_sync(net_rpc_client_t *client, const char *method, const void *body,
                      size_t body_len, uint64_t timeout_ms, uint32_t *status, void **body_out,
                      size_t *len_out)
{
    if (!client || !status)
        return -EINVAL;
    if (net_loop_in_loop_thread(client->loop))
        return NET_EWRONGTHREAD;
    struct sync_call s = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    int rc = net_rpc_call(client, method, body, body_len, timeout_ms, sync_done, &s);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&s.mu);
    while (!s.finished)
        pthread_cond_wait(&s.cond, &s.mu);
    pthread_mutex_unlock(&s.mu);
    *status = s.status;
    if (body_out)
        *body_out = s.body;
    else
        free(s.body);
    if (len_out)
        *len_out = s.len;
    pthread_mutex_destroy(&s.mu);
    pthread_cond_destroy(&s.cond);
    return 0;
}
