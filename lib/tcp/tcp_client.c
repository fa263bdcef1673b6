/* A TCP client: muduo's Connector and TcpClient in one object.
 *
 * States (loop thread only):
 *
 *   IDLE ---connect---> CONNECTING ---writable, SO_ERROR 0---> CONNECTED
 *                         |    ^                                   |
 *          error, timeout |    | backoff timer           closed hook|
 *                         v    |                                   v
 *                      (report) -- will retry --> BACKOFF <-- reconnect
 *
 * FAILING is CONNECTING's twin for an attempt that failed inside the call
 * that started it (connect(2) said ECONNREFUSED at once, socket(2) said
 * EMFILE): the report is queued, because no callback may run inside
 * net_client_connect(). stop/disconnect turn a queued report into
 * NET_ECANCELLED, so every connect request still ends exactly once.
 *
 * Lifetime: the client is reference counted. The user's handle is one
 * reference; every functor queued from another thread, every live
 * connection (its owner pointer) and every user callback in flight hold one
 * more. net_client_free() stops the client on the loop thread, runs the
 * callbacks that stop triggers and drops the user's reference; functors that
 * arrive later see `freed` and only drop theirs. Timers and the connecting
 * socket's channel hold no reference: they are cancelled and removed on the
 * loop thread before free returns. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <net/tcp_client.h>

#include "loop/alloc_internal.h"
#include "loop/log_internal.h"
#include "loop/loop_internal.h"
#include "tcp/tcp_conn_internal.h"

enum client_state {
    ST_IDLE,       /* nothing in progress */
    ST_CONNECTING, /* a socket is connecting, watched for writable */
    ST_FAILING,    /* an attempt failed; its report is queued */
    ST_BACKOFF,    /* waiting for the retry timer */
    ST_CONNECTED,  /* c->conn is set, until the connection's closed hook */
};

struct net_client {
    net_loop_t *loop;
    net_addr_t addr;
    struct net_client_options opt;
    struct net_conn_callbacks cbs;
    net_connect_failed_fn failed;
    void *failed_arg;

    atomic_uint refs;
    atomic_bool stopped;   /* set at once by stop, so connect can refuse */
    atomic_uint attempts;  /* every attempt ever made */

    /* Loop thread only. */
    enum client_state state;
    bool freed;
    bool want_connect;        /* the user asked to be connected (connect, not disconnect) */
    bool restart_after_close; /* connect was called while the connection went down */
    bool establishing;        /* inside net__conn_establish() */
    bool report_queued;       /* a report_functor is in the loop's queue */
    bool stop_reported;       /* after stop, the final failure was delivered */
    int pending_err;          /* FAILING: the error to report */
    bool pending_cancelled;   /* FAILING: stop/disconnect ended it: never retry */
    struct net__channel ch;   /* the connecting socket; fd -1 when none */
    net_timer_id_t timeout_timer, retry_timer; /* 0 when not armed */
    uint32_t tries;           /* attempts in this sequence, for max_attempts */
    uint64_t next_delay_ms;   /* the next backoff delay */
    uint64_t retry_delay_ms;  /* the delay of the armed retry timer (for logs) */

    /* The loop thread writes conn under mu; other threads read it under mu
     * (net_client_conn_ref). The loop thread itself reads it without the lock. */
    pthread_mutex_t mu;
    net_conn_t *conn;
};

/* ---- references ---------------------------------------------------------- */

static void client_ref(net_client_t *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

/* The last reference is dropped on the loop thread: by net_client_free, a
 * functor, a callback guard or a connection's closed hook. */
static void client_unref(net_client_t *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    pthread_mutex_destroy(&c->mu);
    net__free(c);
}

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
        .connect_timeout_ms = 5000,
        .retry_initial_ms = 100,
        .retry_max_ms = 10000,
    };
    net_conn_options_init(&opt->conn);
    opt->conn.backpressure_mark = NET_UNLIMITED;
}

static bool family_supported(const net_addr_t *addr)
{
    int f = net_addr_family(addr);
    return f == AF_INET || f == AF_INET6 || f == AF_UNIX;
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
    c->loop = loop;
    c->addr = *addr;
    if (opt)
        c->opt = *opt;
    else
        net_client_options_init(&c->opt);
    /* A client that stopped reading while its own output backs up would
     * deadlock against a server that does the same: off unless asked. */
    if (!c->opt.conn.backpressure_mark)
        c->opt.conn.backpressure_mark = NET_UNLIMITED;
    if (cbs)
        c->cbs = *cbs;
    c->failed = failed;
    c->failed_arg = arg;
    atomic_init(&c->refs, 1);
    net__channel_init(&c->ch, -1, NULL);
    *out = c;
    return 0;
}

/* ---- reporting failures -------------------------------------------------- */

static void log_failure(net_client_t *c, int err, bool will_retry)
{
    char text[NET_ADDR_STRLEN];
    net_addr_format(&c->addr, text, sizeof text);
    if (err == NET_ECANCELLED)
        NET__LOG_RL(NET_LOG_INFO, "client %s: connect cancelled", text);
    else if (will_retry)
        NET__LOG_RL(NET_LOG_INFO, "client %s: attempt %u failed: %s; retrying in %llu ms",
                    text, c->tries, net_strerror(err), (unsigned long long)c->retry_delay_ms);
    else
        NET__LOG_RL(NET_LOG_WARN, "client %s: attempt %u failed: %s; giving up", text,
                    c->tries, net_strerror(err));
}

/* Calls the user's failure callback. The callback may free the client: the
 * guard reference keeps the memory until it returns; callers touch nothing
 * after this. */
static void report(net_client_t *c, int err, bool will_retry)
{
    log_failure(c, err, will_retry);
    if (!will_retry && atomic_load(&c->stopped))
        c->stop_reported = true;
    if (!c->failed)
        return;
    client_ref(c);
    c->failed(c, err, will_retry, c->failed_arg);
    client_unref(c);
}

/* ---- backoff ------------------------------------------------------------- */

static uint64_t cap_delay(const net_client_t *c, uint64_t ms)
{
    return ms > c->opt.retry_max_ms ? c->opt.retry_max_ms : ms;
}

/* A new sequence of attempts: a connect request or a reconnect. */
static void reset_backoff(net_client_t *c)
{
    c->tries = 0;
    c->next_delay_ms = cap_delay(c, c->opt.retry_initial_ms);
}

static bool may_retry(const net_client_t *c)
{
    return c->opt.retry && c->want_connect && !c->freed && !atomic_load(&c->stopped) &&
           (c->opt.max_attempts == 0 || c->tries < c->opt.max_attempts);
}

static void start_attempt(net_client_t *c);

static void on_retry_timer(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    net_client_t *c = arg;
    c->retry_timer = 0;
    start_attempt(c);
}

/* Arms the backoff timer with the current delay and doubles the next one
 * (a delay of 0 grows to 1 ms so that it grows at all). */
static int schedule_retry(net_client_t *c)
{
    net_timer_id_t id = net_loop_run_after(c->loop, c->next_delay_ms, on_retry_timer, c);
    if (id < 0)
        return (int)id;
    c->retry_timer = id;
    c->retry_delay_ms = c->next_delay_ms;
    c->next_delay_ms = cap_delay(c, c->next_delay_ms ? c->next_delay_ms * 2 : 1);
    c->state = ST_BACKOFF;
    return 0;
}

/* An attempt ended without a connection: retry later or give up. The retry
 * is armed before the callback runs, so a stop from inside the callback
 * finds BACKOFF and cancels it. Touches nothing after the callback. */
static void attempt_failed(net_client_t *c, int err, bool cancelled)
{
    c->state = ST_IDLE;
    if (cancelled)
        err = NET_ECANCELLED;
    bool retry = !cancelled && may_retry(c) && schedule_retry(c) == 0;
    report(c, err, retry);
}

static void report_functor(void *arg)
{
    net_client_t *c = arg;
    c->report_queued = false;
    if (!c->freed && c->state == ST_FAILING)
        attempt_failed(c, c->pending_err, c->pending_cancelled);
    client_unref(c);
}

/* Ends the current attempt with err, reported from the loop's functor phase
 * rather than inside the user's call that got us here. */
static void queue_report(net_client_t *c, int err, bool cancelled)
{
    c->state = ST_FAILING;
    c->pending_err = err;
    c->pending_cancelled = cancelled;
    if (c->report_queued)
        return;
    client_ref(c);
    if (net_loop_queue_in_loop(c->loop, report_functor, c) == 0) {
        c->report_queued = true;
        return;
    }
    client_unref(c);
    /* FIXME: out of memory: report now (possibly inside the user's call)
     * rather than lose the report. */
    attempt_failed(c, err, cancelled);
}

/* ---- the connecting socket ----------------------------------------------- */

static void cancel_timeout(net_client_t *c)
{
    if (c->timeout_timer > 0)
        net_timer_cancel(c->loop, c->timeout_timer);
    c->timeout_timer = 0;
}

/* Stops watching the socket and gives it to the caller. */
static int take_socket(net_client_t *c)
{
    int fd = c->ch.fd;
    net__loop_remove_channel(c->loop, &c->ch);
    cancel_timeout(c);
    c->ch.fd = -1;
    return fd;
}

static void close_socket(net_client_t *c)
{
    close(take_socket(c));
}

static int socket_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return -errno;
    return -err;
}

static int sock_addr(int fd, bool peer, net_addr_t *out)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int rc = peer ? getpeername(fd, (struct sockaddr *)&ss, &len)
                  : getsockname(fd, (struct sockaddr *)&ss, &len);
    if (rc < 0)
        return -errno;
    return net_addr_from_sockaddr(out, (struct sockaddr *)&ss, len);
}

/* A connected socket must have a peer, and on loopback a connect to a port
 * with no listener can pick that very port as its own: TCP's simultaneous
 * open then "connects" the socket to itself, and the port is taken from the
 * server that was meant to bind it. Such a socket is a failed attempt. */
static int check_peer(int fd)
{
    net_addr_t local, peer;
    int rc = sock_addr(fd, true, &peer);
    if (rc < 0)
        return rc;
    if (net_addr_family(&peer) != AF_INET && net_addr_family(&peer) != AF_INET6)
        return 0;
    if ((rc = sock_addr(fd, false, &local)) < 0)
        return rc;
    return net_addr_equal(&local, &peer) ? NET_ESELFCONNECT : 0;
}

/* ---- connected ----------------------------------------------------------- */

static void reconnect(net_client_t *c, bool at_once);

/* The connection's closed hook: runs on the loop thread after the user's
 * down callback. Drops the connection and the reference the connection held
 * on the client (last: it may free the client). */
static void on_conn_closed(net_conn_t *conn, void *owner)
{
    net_client_t *c = owner;
    bool never_up = c->establishing && !c->freed; /* establish could not register the fd */
    bool restart = c->restart_after_close;
    c->restart_after_close = false;
    set_conn(c, NULL);
    net_conn_unref(conn);
    c->state = ST_IDLE;
    if (never_up)
        attempt_failed(c, -EIO, false);
    else if (!c->freed && !atomic_load(&c->stopped) && c->want_connect &&
             (c->opt.reconnect || restart))
        reconnect(c, restart);
    client_unref(c);
}

static void establish(net_client_t *c, int fd)
{
    net_conn_t *conn = net__conn_new(c->loop, fd, &c->opt.conn, &c->cbs, on_conn_closed, c);
    if (!conn) { /* the fd is closed */
        attempt_failed(c, -ENOMEM, false);
        return;
    }
    client_ref(c); /* the connection's owner pointer, dropped by on_conn_closed */
    c->state = ST_CONNECTED;
    reset_backoff(c);
    set_conn(c, conn);
    client_ref(c); /* the up callback may free the client */
    c->establishing = true;
    net__conn_establish(conn);
    c->establishing = false;
    client_unref(c);
}

static void on_connect_event(struct net__channel *ch, unsigned revents)
{
    (void)revents; /* SO_ERROR tells writable-and-connected from failed */
    net_client_t *c = net__container_of(ch, net_client_t, ch);
    int err = socket_error(ch->fd);
    if (err == 0)
        err = check_peer(ch->fd);
    if (err < 0) {
        close_socket(c);
        attempt_failed(c, err, false);
        return;
    }
    establish(c, take_socket(c));
}

static void on_connect_timeout(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    net_client_t *c = arg;
    c->timeout_timer = 0;
    close_socket(c);
    attempt_failed(c, -ETIMEDOUT, false);
}

/* ---- attempts ------------------------------------------------------------ */

/* Watches a connecting socket for writable (errors are always reported) and
 * arms the attempt's timeout. On failure the socket is closed. */
static int watch_socket(net_client_t *c, int fd)
{
    net__channel_init(&c->ch, fd, on_connect_event);
    c->ch.interest = NET_WRITABLE;
    int rc = net__loop_add_channel(c->loop, &c->ch);
    if (rc < 0) {
        close(fd);
        c->ch.fd = -1;
        return rc;
    }
    if (c->opt.connect_timeout_ms) {
        net_timer_id_t id =
            net_loop_run_after(c->loop, c->opt.connect_timeout_ms, on_connect_timeout, c);
        if (id < 0) {
            close_socket(c);
            return (int)id;
        }
        c->timeout_timer = id;
    }
    c->state = ST_CONNECTING;
    return 0;
}

/* One attempt. Even a connect(2) that completes at once goes through the
 * channel (the socket is writable at the next wait), so the up callback
 * never runs inside net_client_connect(); errors known at once are queued.
 * EAGAIN (no ephemeral port, a full Unix backlog) and EADDRNOTAVAIL are
 * failed attempts like any other: the backoff gives the system time. */
static void start_attempt(net_client_t *c)
{
    atomic_fetch_add_explicit(&c->attempts, 1, memory_order_relaxed);
    c->tries++;
    int fd = socket(net_addr_family(&c->addr), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        queue_report(c, -errno, false);
        return;
    }
    int err = connect(fd, net_addr_sockaddr(&c->addr), net_addr_len(&c->addr)) == 0 ? 0 : -errno;
    if (err == 0 || err == -EINPROGRESS || err == -EINTR) /* EINTR: still connecting */
        err = watch_socket(c, fd);
    else
        close(fd);
    if (err < 0)
        queue_report(c, err, false);
}

/* After a drop: a new sequence, first attempt after the initial delay (a
 * server that accepts and closes at once must not make us spin), or at once
 * when the user called connect while the connection was going down. */
static void reconnect(net_client_t *c, bool at_once)
{
    reset_backoff(c);
    if (at_once || schedule_retry(c) < 0)
        start_attempt(c);
}

/* ---- connect / disconnect / stop on the loop thread ---------------------- */

static void connect_in_loop(net_client_t *c)
{
    if (atomic_load(&c->stopped)) {
        /* A connect from another thread that passed the check just before a
         * stop: its request ends here, unless stop already reported one. */
        if (c->state == ST_IDLE && !c->stop_reported)
            report(c, NET_ECANCELLED, false);
        return;
    }
    c->want_connect = true;
    if (c->state == ST_CONNECTED && !net_conn_connected(c->conn))
        c->restart_after_close = true;
    if (c->state != ST_IDLE)
        return;
    reset_backoff(c);
    start_attempt(c);
}

/* Ends an attempt in progress or a pending retry with NET_ECANCELLED:
 * queued for stop/disconnect, at once for free (its documented exception). */
static void cancel_attempt(net_client_t *c, bool now)
{
    if (c->state == ST_CONNECTING) {
        close_socket(c);
    } else if (c->state == ST_BACKOFF) {
        net_timer_cancel(c->loop, c->retry_timer);
        c->retry_timer = 0;
    } else if (c->state != ST_FAILING) {
        return;
    }
    if (!now) {
        queue_report(c, NET_ECANCELLED, true);
        return;
    }
    c->state = ST_IDLE; /* a queued report_functor now does nothing */
    report(c, NET_ECANCELLED, false);
}

static void stop_in_loop(net_client_t *c, bool now)
{
    c->want_connect = false;
    c->restart_after_close = false;
    if (c->state != ST_CONNECTED) {
        cancel_attempt(c, now);
        return;
    }
    if (!now) {
        net_conn_force_close(c->conn); /* the down callback runs later */
        return;
    }
    net_conn_t *conn = net_conn_ref(c->conn); /* the closed hook drops the owner's */
    net__conn_close_in_loop(conn);
    net_conn_unref(conn);
}

static void disconnect_in_loop(net_client_t *c)
{
    c->want_connect = false;
    c->restart_after_close = false;
    if (c->state == ST_CONNECTED)
        net_conn_shutdown(c->conn);
    else
        cancel_attempt(c, false);
}

/* ---- thread-safe entry points -------------------------------------------- */

static void connect_functor(void *arg)
{
    net_client_t *c = arg;
    if (!c->freed)
        connect_in_loop(c);
    client_unref(c);
}

static void disconnect_functor(void *arg)
{
    net_client_t *c = arg;
    if (!c->freed)
        disconnect_in_loop(c);
    client_unref(c);
}

static void stop_functor(void *arg)
{
    net_client_t *c = arg;
    if (!c->freed)
        stop_in_loop(c, false);
    client_unref(c);
}

/* Queues fn(c) on the loop, holding a reference until it has run. Only for
 * calls from other threads: they must not race with net_client_free (a
 * functor queued before free is safe; a call after free has begun is not). */
static int hop(net_client_t *c, net_loop_fn fn)
{
    client_ref(c);
    int rc = net_loop_queue_in_loop(c->loop, fn, c);
    if (rc < 0) {
        NET__LOG_RL(NET_LOG_ERROR, "client: cannot queue work: %s", net_strerror(rc));
        client_unref(c);
    }
    return rc;
}

int net_client_connect(net_client_t *c)
{
    if (!c)
        return -EINVAL;
    if (atomic_load(&c->stopped))
        return -ESHUTDOWN;
    if (!net_loop_in_loop_thread(c->loop))
        return hop(c, connect_functor); /* 0, or -ENOMEM */
    connect_in_loop(c);
    return 0;
}

int net_client_disconnect(net_client_t *c)
{
    if (!c)
        return -EINVAL;
    if (!net_loop_in_loop_thread(c->loop))
        return hop(c, disconnect_functor);
    disconnect_in_loop(c);
    return 0;
}

int net_client_stop(net_client_t *c)
{
    if (!c)
        return -EINVAL;
    atomic_store(&c->stopped, true);
    if (!net_loop_in_loop_thread(c->loop))
        return hop(c, stop_functor);
    stop_in_loop(c, false);
    return 0;
}

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
    return c ? atomic_load_explicit(&((net_client_t *)c)->attempts, memory_order_relaxed) : 0;
}

void net_client_free(net_client_t *c)
{
    if (!c)
        return;
    if (!net_loop_in_loop_thread(c->loop)) {
        NET__LOG(NET_LOG_ERROR, "net_client_free called off the loop thread; client leaked");
        return;
    }
    atomic_store(&c->stopped, true);
    c->freed = true;
    stop_in_loop(c, true);
    client_unref(c);
}
