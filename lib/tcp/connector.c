/* Connect attempts: non-blocking connect, timeout, backoff, self-connect
 * detection (see connector.h for the states).
 *
 * Even a connect(2) that completes at once goes through the channel (the
 * socket is writable at the next wait), so the owner's connected callback
 * always runs from the loop's dispatch. EAGAIN (no ephemeral port, a full
 * Unix backlog) and EADDRNOTAVAIL are failed attempts like any other: the
 * backoff gives the system time. */
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcp/connector.h"
#include "loop/log_internal.h"
#include "loop/loop_internal.h"

static void on_connect_event(struct net__channel *ch, unsigned revents);

void net__connector_init(struct net__connector *cn, net_loop_t *loop, const net_addr_t *addr,
                         const struct net__connector_options *opt, net__connected_fn connected,
                         net__connect_failed_fn failed, void *arg)
{
    *cn = (struct net__connector){.loop = loop, .addr = *addr, .opt = *opt,
                                  .connected = connected, .failed = failed, .arg = arg};
    net__channel_init(&cn->ch, -1, on_connect_event);
    atomic_init(&cn->attempts, 0);
}

/* ---- backoff ------------------------------------------------------------- */

static uint64_t cap_delay(const struct net__connector *cn, uint64_t ms)
{
    return ms > cn->opt.retry_max_ms ? cn->opt.retry_max_ms : ms;
}

static void reset_backoff(struct net__connector *cn)
{
    cn->tries = 0;
    cn->next_delay_ms = cap_delay(cn, cn->opt.retry_initial_ms);
}

static bool may_retry(const struct net__connector *cn)
{
    return cn->opt.retry && (cn->opt.max_attempts == 0 || cn->tries < cn->opt.max_attempts);
}

static void attempt(struct net__connector *cn);

static void retry_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    struct net__connector *cn = arg;
    cn->retry_timer = 0;
    cn->state = NET__CONNECTOR_IDLE;
    attempt(cn);
}

/* Arms the backoff timer with the current delay and doubles the next one
 * (a delay of 0 grows to 1 ms so that it grows at all). */
static int schedule_retry(struct net__connector *cn)
{
    uint64_t delay = cn->next_delay_ms;
    net_timer_id_t id = net_loop_run_after(cn->loop, delay, retry_cb, cn);
    if (id < 0)
        return (int)id;
    cn->retry_timer = id;
    cn->next_delay_ms = cap_delay(cn, delay ? delay * 2 : 1);
    cn->state = NET__CONNECTOR_BACKOFF;
    return 0;
}

/* An attempt ended without a connection: retry later or give up. The
 * owner hears of it either way (at debug here: the callback reports it). */
static void attempt_failed(struct net__connector *cn, int err)
{
    cn->state = NET__CONNECTOR_IDLE;
    bool retry = may_retry(cn) && schedule_retry(cn) == 0;
    char text[NET_ADDR_STRLEN];
    net_addr_format(&cn->addr, text, sizeof text);
    NET__LOG_RL(NET_LOG_DEBUG, "connect %s: attempt %u failed: %s%s", text, cn->tries,
                net_strerror(err), retry ? "; retrying" : "; giving up");
    cn->failed(err, retry, cn->arg);
}

/* ---- the connecting socket ----------------------------------------------- */

static void cancel_timer(struct net__connector *cn, net_timer_id_t *id)
{
    if (*id > 0)
        net_timer_cancel(cn->loop, *id);
    *id = 0;
}

/* Stops watching the socket and gives it to the caller. */
static int take_socket(struct net__connector *cn)
{
    int fd = cn->ch.fd;
    net__loop_remove_channel(cn->loop, &cn->ch);
    cancel_timer(cn, &cn->timeout_timer);
    cn->ch.fd = -1;
    cn->state = NET__CONNECTOR_IDLE;
    return fd;
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

static void on_connect_event(struct net__channel *ch, unsigned revents)
{
    (void)revents; /* SO_ERROR tells writable-and-connected from failed */
    struct net__connector *cn = net__container_of(ch, struct net__connector, ch);
    int err = socket_error(ch->fd);
    if (err == 0)
        err = check_peer(ch->fd);
    int fd = take_socket(cn);
    if (err < 0) {
        close(fd);
        attempt_failed(cn, err);
        return;
    }
    cn->connected(fd, cn->arg);
}

static void timeout_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    struct net__connector *cn = arg;
    cn->timeout_timer = 0;
    close(take_socket(cn));
    attempt_failed(cn, -ETIMEDOUT);
}

/* Watches a connecting socket for writable (errors are always reported) and
 * arms the attempt's timeout. On failure the socket is closed. */
static int watch_socket(struct net__connector *cn, int fd)
{
    net__channel_init(&cn->ch, fd, on_connect_event);
    cn->ch.interest = NET_WRITABLE;
    int rc = net__loop_add_channel(cn->loop, &cn->ch);
    if (rc < 0) {
        close(fd);
        cn->ch.fd = -1;
        return rc;
    }
    cn->state = NET__CONNECTOR_CONNECTING;
    if (cn->opt.timeout_ms) {
        net_timer_id_t id = net_loop_run_after(cn->loop, cn->opt.timeout_ms, timeout_cb, cn);
        if (id < 0) {
            close(take_socket(cn));
            return (int)id;
        }
        cn->timeout_timer = id;
    }
    return 0;
}

/* ---- attempts ------------------------------------------------------------ */

static void attempt(struct net__connector *cn)
{
    atomic_fetch_add_explicit(&cn->attempts, 1, memory_order_relaxed);
    cn->tries++;
    int fd = socket(net_addr_family(&cn->addr), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        attempt_failed(cn, -errno);
        return;
    }
    int err = connect(fd, net_addr_sockaddr(&cn->addr), net_addr_len(&cn->addr)) == 0 ? 0 : -errno;
    if (err == 0 || err == -EINPROGRESS || err == -EINTR) /* EINTR: still connecting */
        err = watch_socket(cn, fd);
    else
        close(fd);
    if (err < 0)
        attempt_failed(cn, err);
}

void net__connector_start(struct net__connector *cn, bool delayed)
{
    reset_backoff(cn);
    if (!delayed || schedule_retry(cn) < 0)
        attempt(cn);
}

void net__connector_fail(struct net__connector *cn, int err)
{
    attempt_failed(cn, err);
}

bool net__connector_stop(struct net__connector *cn)
{
    switch (cn->state) {
    case NET__CONNECTOR_CONNECTING:
        close(take_socket(cn));
        return true;
    case NET__CONNECTOR_BACKOFF:
        cancel_timer(cn, &cn->retry_timer);
        cn->state = NET__CONNECTOR_IDLE;
        return true;
    case NET__CONNECTOR_IDLE:
        break;
    }
    return false;
}

bool net__connector_active(const struct net__connector *cn)
{
    return cn->state != NET__CONNECTOR_IDLE;
}

uint32_t net__connector_tries(const struct net__connector *cn)
{
    return cn->tries;
}

uint32_t net__connector_attempts(const struct net__connector *cn)
{
    return atomic_load_explicit(&((struct net__connector *)cn)->attempts, memory_order_relaxed);
}
