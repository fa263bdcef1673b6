/* A TCP client: one connection to one address, reconnect, callbacks
 * (muduo's TcpClient); the connect attempts are the connector's
 * (connector.c).
 *
 * States (loop thread only):
 *
 *   IDLE --connect--> CONNECTING --socket--> ESTABLISHING --up--> CONNECTED
 *    ^  ^               |  ^                      | could not watch  |   |
 *    |  +- gave up -----+  +----------------------+ (a failed attempt)  |
 *    |                     ^ dropped, reconnect on: after a delay   |   |
 *    |                     +----------------------------------------+   |
 *    |                     ^ connect again: at once                     |
 *    +--- closed hook --- DISCONNECTING <------------------ disconnect -+
 *
 *   close: CONNECTING -> (cancelled) -> CLOSED; CONNECTED, DISCONNECTING ->
 *   CLOSING (drains until the deadline) --closed hook--> CLOSED
 *
 * `want` says the user asked to be connected (connect since the last
 * disconnect): it decides whether a connection that goes away is re-made.
 * CLOSED is the end: only the release remains.
 *
 * Calls from users (connect, disconnect, close) never act inside the call:
 * they leave a request and post an armed task, so no callback runs inside
 * them and none can fail for want of memory. Connect and disconnect share
 * one task and one word of request bits; close has its own task.
 *
 * Lifetime (lib/loop/closer.h): the client's own reference goes when the
 * close has finished (the connection's closed hook, or at once with no
 * connection); each posted task holds one more. Timers and the connector's
 * socket hold none: close cancels them on the loop before it finishes. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <net/tcp_client.h>

#include "loop/alloc_internal.h"
#include "loop/armed.h"
#include "loop/closer.h"
#include "loop/log_internal.h"
#include "tcp/connector.h"
#include "tcp/tcp_conn_internal.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_RETRY_INITIAL_MS 100
#define DEFAULT_RETRY_MAX_MS 10000

enum client_state {
    ST_IDLE,          /* nothing in progress */
    ST_CONNECTING,    /* the connector is attempting or backing off */
    ST_ESTABLISHING,  /* inside net__conn_establish (the up callback) */
    ST_CONNECTED,     /* conn is up */
    ST_DISCONNECTING, /* disconnect asked conn to go; until its closed hook */
    ST_CLOSING,       /* close is draining conn; until its closed hook */
    ST_CLOSED,        /* close finished */
};

/* Request bits, set by connect/disconnect on any thread. */
enum {
    OP_CONNECT = 1u << 0,
    OP_DISCONNECT = 1u << 1,
    OP_LAST_IS_CONNECT = 1u << 2, /* of the two, connect came last */
};

struct net_client {
    struct net__closer closer;
    net_loop_t *loop;
    struct net_client_options opt; /* normalised: no 0 left where a default is meant */
    struct net_conn_callbacks cbs;
    net_connect_failed_fn failed;
    void *failed_arg;
    struct net__connector connector;

    atomic_uint ops; /* OP_* bits not yet applied */
    struct net__armed ops_task, close_task;
    /* Written by the one accepted close before it posts close_task (the
     * post orders them before close_cb). */
    uint64_t drain_ms;
    net_client_close_fn done;
    void *done_arg;

    /* Loop thread only. */
    enum client_state state;
    bool want;
    net_timer_id_t drain_timer;

    /* The loop thread writes conn under mu; other threads read it under mu
     * (net_client_conn_ref). The loop thread itself reads it without. */
    pthread_mutex_t mu;
    net_conn_t *conn;
};

static void set_conn(net_client_t *c, net_conn_t *conn)
{
    pthread_mutex_lock(&c->mu);
    c->conn = conn;
    pthread_mutex_unlock(&c->mu);
}

/* ---- options and creation ------------------------------------------------ */

void net_client_options_init(struct net_client_options *opt)
{
    *opt = (struct net_client_options){
        .connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS,
        .retry_initial_ms = DEFAULT_RETRY_INITIAL_MS,
        .retry_max_ms = DEFAULT_RETRY_MAX_MS,
    };
    net_conn_options_init(&opt->conn);
    opt->conn.backpressure_mark = NET_UNLIMITED;
}

static uint32_t or_default(uint32_t v, uint32_t def)
{
    return v ? v : def;
}

static void normalise_options(net_client_t *c, const struct net_client_options *opt)
{
    if (opt)
        c->opt = *opt;
    else
        net_client_options_init(&c->opt);
    c->opt.connect_timeout_ms = or_default(c->opt.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS);
    c->opt.retry_initial_ms = or_default(c->opt.retry_initial_ms, DEFAULT_RETRY_INITIAL_MS);
    c->opt.retry_max_ms = or_default(c->opt.retry_max_ms, DEFAULT_RETRY_MAX_MS);
    /* A client that stopped reading while its own output backs up would
     * deadlock against a server that does the same: off unless asked. */
    if (!c->opt.conn.backpressure_mark)
        c->opt.conn.backpressure_mark = NET_UNLIMITED;
}

static void connector_options(const struct net_client_options *o,
                              struct net__connector_options *out)
{
    *out = (struct net__connector_options){
        .timeout_ms = o->connect_timeout_ms == NET_NO_TIMEOUT ? 0 : o->connect_timeout_ms,
        .retry = o->retry,
        .retry_initial_ms = o->retry_initial_ms,
        .retry_max_ms = o->retry_max_ms,
        .max_attempts = o->max_attempts,
    };
}

static bool family_supported(const net_addr_t *addr)
{
    int f = net_addr_family(addr);
    return f == AF_INET || f == AF_INET6 || f == AF_UNIX;
}

static void on_connected(int fd, void *arg);
static void on_attempt_failed(int err, bool will_retry, void *arg);
static void ops_cb(void *arg);
static void close_cb(void *arg);
static void release_cb(void *arg);

static void client_init(net_client_t *c, net_loop_t *loop, const net_addr_t *addr)
{
    c->loop = loop;
    net__closer_init(&c->closer, loop, release_cb, c);
    net__armed_init(&c->ops_task, loop, ops_cb, c);
    net__armed_init(&c->close_task, loop, close_cb, c);
    atomic_init(&c->ops, 0);
    struct net__connector_options co;
    connector_options(&c->opt, &co);
    net__connector_init(&c->connector, loop, addr, &co, on_connected, on_attempt_failed, c);
}

int net_client_new(net_loop_t *loop, const net_addr_t *addr,
                   const struct net_client_options *opt, const struct net_conn_callbacks *cbs,
                   net_connect_failed_fn failed, void *arg, net_client_t **out)
{
    if (!loop || !addr || !out || !family_supported(addr))
        return -EINVAL;
    if (!net_loop_in_loop_thread(loop))
        return NET_EWRONGTHREAD;
    net_client_t *c = net__calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        net__free(c);
        return -ENOMEM;
    }
    normalise_options(c, opt);
    client_init(c, loop, addr);
    if (cbs)
        c->cbs = *cbs;
    c->failed = failed;
    c->failed_arg = arg;
    *out = c;
    return 0;
}

/* ---- the end of a connect request ------------------------------------------ */

/* Runs the user's failure callback. At debug only: the callback is how the
 * user sees it (the connector logged the attempt's reason already). */
static void report(net_client_t *c, int err, bool will_retry)
{
    if (err == NET_ECANCELLED)
        NET__LOG_RL(NET_LOG_DEBUG, "client: connect cancelled");
    if (c->failed)
        c->failed(c, err, will_retry, c->failed_arg);
}

static void on_attempt_failed(int err, bool will_retry, void *arg)
{
    net_client_t *c = arg;
    if (!will_retry) {
        c->state = ST_IDLE;
        c->want = false; /* the request ended: a drop later is not ours to mend */
    }
    report(c, err, will_retry);
}

/* Whether a connect applied now would start a request of its own (not
 * join the one in progress or find the client connected). */
static bool would_start(const net_client_t *c)
{
    return c->state != ST_CONNECTING && c->state != ST_ESTABLISHING &&
           c->state != ST_CONNECTED;
}

/* Ends the attempt or retry in progress, and a connect request the loop
 * has not applied (request_pending), with NET_ECANCELLED: once per
 * request. */
static void cancel_request(net_client_t *c, bool request_pending)
{
    bool ends = request_pending && would_start(c);
    if (c->state == ST_CONNECTING) {
        net__connector_stop(&c->connector);
        c->state = ST_IDLE;
        ends = true;
    }
    if (ends)
        report(c, NET_ECANCELLED, false);
}

/* ---- the connection -------------------------------------------------------- */

static void finish_close(net_client_t *c);

/* The connection's closed hook: runs on the loop thread after the user's
 * down callback (or with none, when establish could not watch the fd). */
static void on_conn_closed(net_conn_t *conn, void *owner)
{
    net_client_t *c = owner;
    enum client_state was = c->state;
    set_conn(c, NULL);
    net_conn_unref(conn);
    c->state = ST_IDLE;
    if (was == ST_CLOSING) {
        finish_close(c);
    } else if (was == ST_ESTABLISHING) { /* never up: a failed attempt */
        c->state = ST_CONNECTING;
        net__connector_fail(&c->connector, -EIO);
    } else if (c->want && !net__closer_closing(&c->closer) &&
               (was == ST_DISCONNECTING || c->opt.reconnect)) {
        /* connect after disconnect: at once; a drop: after the initial
         * delay, so a peer that accepts and closes cannot make us spin */
        c->state = ST_CONNECTING;
        net__connector_start(&c->connector, was != ST_DISCONNECTING);
    }
    /* else IDLE; with a close on its way, its close_cb finishes */
}

static void on_connected(int fd, void *arg)
{
    net_client_t *c = arg;
    net_conn_t *conn = net__conn_new(c->loop, fd, &c->opt.conn, &c->cbs, on_conn_closed, c);
    if (!conn) { /* the fd is closed */
        net__connector_fail(&c->connector, -ENOMEM);
        return;
    }
    set_conn(c, conn);
    c->state = ST_ESTABLISHING;
    net__conn_establish(conn);
    if (c->state == ST_ESTABLISHING)
        c->state = ST_CONNECTED;
}

/* Half-closes after the queued output. If that cannot be queued (no
 * memory), closes now: a disconnect must not fail. The caller has set the
 * state the closed hook is to find. */
static void shut_down(net_client_t *c)
{
    if (net_conn_shutdown(c->conn) == -ENOMEM) {
        NET__LOG_RL(NET_LOG_WARN, "client: out of memory: connection closed at once");
        net__conn_close_in_loop(c->conn);
    }
}

/* ---- connect / disconnect on the loop ------------------------------------- */

static void connect_in_loop(net_client_t *c)
{
    c->want = true;
    if (c->state != ST_IDLE)
        return; /* in progress, or re-made once the old connection is gone */
    c->state = ST_CONNECTING;
    net__connector_start(&c->connector, false);
}

static void disconnect_in_loop(net_client_t *c)
{
    c->want = false;
    if (c->state == ST_CONNECTED) {
        c->state = ST_DISCONNECTING;
        shut_down(c);
    } else {
        cancel_request(c, false);
    }
}

static unsigned take_ops(net_client_t *c)
{
    return atomic_exchange(&c->ops, 0);
}

static void apply_op(net_client_t *c, unsigned op)
{
    if (op == OP_CONNECT)
        connect_in_loop(c);
    else
        disconnect_in_loop(c);
}

static void ops_cb(void *arg)
{
    net_client_t *c = arg;
    unsigned ops = take_ops(c);
    if (net__closer_closing(&c->closer)) {
        /* A connect that slipped in as close began ends here. */
        cancel_request(c, ops & OP_CONNECT);
    } else {
        unsigned last = ops & OP_LAST_IS_CONNECT ? OP_CONNECT : OP_DISCONNECT;
        unsigned first = last == OP_CONNECT ? OP_DISCONNECT : OP_CONNECT;
        if (ops & first)
            apply_op(c, first);
        if (ops & last)
            apply_op(c, last);
    }
    net__closer_unref(&c->closer);
}

/* Leaves a request and posts the task that applies it. The user holds no
 * reference of ours, and a close may be winding down: tryref refuses once
 * the release is armed. */
static int post_op(net_client_t *c, unsigned op)
{
    if (net__closer_closing(&c->closer) || !net__closer_tryref(&c->closer))
        return -ESHUTDOWN;
    unsigned old = atomic_load(&c->ops), next;
    do {
        next = (old | op) & ~OP_LAST_IS_CONNECT;
        if (op == OP_CONNECT)
            next |= OP_LAST_IS_CONNECT;
    } while (!atomic_compare_exchange_weak(&c->ops, &old, next));
    if (!net__armed_arm(&c->ops_task))
        net__closer_unref(&c->closer); /* already posted: it applies ours too */
    return 0;
}

int net_client_connect(net_client_t *c)
{
    return c ? post_op(c, OP_CONNECT) : -EINVAL;
}

int net_client_disconnect(net_client_t *c)
{
    return c ? post_op(c, OP_DISCONNECT) : -EINVAL;
}

/* ---- close ------------------------------------------------------------------- */

static void drain_deadline_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    net_client_t *c = arg;
    c->drain_timer = 0;
    if (c->conn)
        net__conn_close_in_loop(c->conn); /* the closed hook finishes the close */
}

/* The connection goes down gracefully until the deadline, then by force;
 * with drain_ms 0, or without a timer (no memory), by force now: a close
 * must end. The closed hook finishes the close. */
static void drain_connection(net_client_t *c)
{
    bool connected = c->state == ST_CONNECTED;
    c->state = ST_CLOSING;
    net_timer_id_t id = 0;
    if (c->drain_ms)
        id = net_loop_run_after(c->loop, c->drain_ms, drain_deadline_cb, c);
    if (id > 0) {
        c->drain_timer = id;
        if (connected)
            shut_down(c);
    } else {
        net__conn_close_in_loop(c->conn);
    }
}

static void close_cb(void *arg)
{
    net_client_t *c = arg;
    bool request_pending = take_ops(c) & OP_CONNECT;
    c->want = false;
    cancel_request(c, request_pending);
    if (c->state == ST_CONNECTED || c->state == ST_DISCONNECTING)
        drain_connection(c);
    else
        finish_close(c);
    net__closer_unref(&c->closer);
}

/* Drops the client's own reference: the release follows. */
static void finish_close(net_client_t *c)
{
    if (c->drain_timer > 0)
        net_timer_cancel(c->loop, c->drain_timer);
    c->drain_timer = 0;
    c->state = ST_CLOSED;
    net__closer_unref(&c->closer);
}

int net_client_close(net_client_t *c, uint64_t drain_ms, net_client_close_fn done, void *arg)
{
    if (!c)
        return -EINVAL;
    if (!net__closer_close(&c->closer))
        return -EALREADY;
    c->drain_ms = drain_ms;
    c->done = done;
    c->done_arg = arg;
    /* The client's own reference is held until close_cb's wake: ref is safe. */
    net__closer_ref(&c->closer);
    net__armed_arm(&c->close_task);
    return 0;
}

static void release_cb(void *arg)
{
    net_client_t *c = arg;
    if (c->done)
        c->done(c, c->done_arg);
    pthread_mutex_destroy(&c->mu);
    net__free(c);
}

/* ---- accessors ----------------------------------------------------------------- */

net_conn_t *net_client_conn_ref(net_client_t *c)
{
    if (!c)
        return NULL;
    pthread_mutex_lock(&c->mu);
    net_conn_t *conn = c->conn;
    if (conn && net_conn_state(conn) != NET_CONN_DISCONNECTED)
        net_conn_ref(conn);
    else
        conn = NULL;
    pthread_mutex_unlock(&c->mu);
    return conn;
}

uint32_t net_client_attempts(const net_client_t *c)
{
    return c ? net__connector_attempts(&c->connector) : 0;
}
