/* Accepting connections.
 *
 * Each wakeup accepts until EAGAIN (muduo accepts one per wakeup, which costs
 * an epoll_wait per connection in a storm), bounded by ACCEPT_BATCH so that a
 * flood cannot starve the loop's other work; level-triggering brings us back.
 *
 * Out of descriptors (EMFILE/ENFILE) the pending connection would stay in
 * the backlog and keep the listening socket readable: a level-triggered loop
 * would spin. We keep one spare descriptor, close it, accept and close the
 * connection (the client sees a clean close instead of hanging), and reopen
 * the spare. If even that fails, or memory runs out, accepting pauses for
 * PAUSE_MS. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcp/acceptor.h"
#include "loop/log_internal.h"
#include "loop/loop_internal.h"

#define ACCEPT_BATCH 4096
#define PAUSE_MS 100

static int open_spare(void)
{
    return open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static int set_flag(int fd, int level, int name)
{
    int on = 1;
    return setsockopt(fd, level, name, &on, sizeof on) < 0 ? -errno : 0;
}

static int bind_socket(const net_addr_t *addr, bool reuse_port, bool ipv6_only)
{
    int family = net_addr_family(addr);
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (family != AF_UNIX)
        rc = set_flag(fd, SOL_SOCKET, SO_REUSEADDR); /* restart while TIME_WAITs linger */
    if (rc == 0 && reuse_port)
        rc = set_flag(fd, SOL_SOCKET, SO_REUSEPORT);
    if (rc == 0 && family == AF_INET6) {
        int v = ipv6_only;
        rc = setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, sizeof v) < 0 ? -errno : 0;
    }
    if (rc == 0 && bind(fd, net_addr_sockaddr(addr), net_addr_len(addr)) < 0)
        rc = -errno;
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return fd;
}

static void pause_accepting(struct net__acceptor *acc);
static void handle_accept(struct net__channel *ch, unsigned revents);

int net__acceptor_open(struct net__acceptor *acc, net_loop_t *loop, const net_addr_t *addr,
                       bool reuse_port, bool ipv6_only, net__accept_fn fn, void *arg)
{
    *acc = (struct net__acceptor){.loop = loop, .on_accept = fn, .arg = arg, .spare_fd = -1};
    int fd = bind_socket(addr, reuse_port, ipv6_only);
    if (fd < 0)
        return fd;
    net__channel_init(&acc->ch, fd, handle_accept);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 ||
        net_addr_from_sockaddr(&acc->addr, (struct sockaddr *)&ss, len) < 0)
        acc->addr = *addr;
    acc->spare_fd = open_spare();
    return 0;
}

int net__acceptor_listen(struct net__acceptor *acc, int backlog)
{
    if (listen(acc->ch.fd, backlog) < 0)
        return -errno;
    acc->ch.interest = NET_READABLE;
    return net__loop_add_channel(acc->loop, &acc->ch);
}

void net__acceptor_close(struct net__acceptor *acc)
{
    if (acc->ch.fd < 0)
        return;
    net__loop_remove_channel(acc->loop, &acc->ch);
    close(acc->ch.fd);
    acc->ch.fd = -1;
    if (acc->spare_fd >= 0)
        close(acc->spare_fd);
    acc->spare_fd = -1;
    if (acc->resume_timer > 0)
        net_timer_cancel(acc->loop, acc->resume_timer);
    acc->resume_timer = 0;
}

static void resume_accepting(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    struct net__acceptor *acc = arg;
    acc->resume_timer = 0;
    if (acc->spare_fd < 0)
        acc->spare_fd = open_spare();
    acc->ch.interest = NET_READABLE;
    net__loop_update_channel(acc->loop, &acc->ch);
}

static void pause_accepting(struct net__acceptor *acc)
{
    if (acc->resume_timer > 0)
        return;
    net_timer_id_t id = net_loop_run_after(acc->loop, PAUSE_MS, resume_accepting, acc);
    if (id < 0)
        return; /* without a timer we cannot come back: keep accepting */
    acc->resume_timer = id;
    acc->ch.interest = 0;
    net__loop_update_channel(acc->loop, &acc->ch);
}

enum shed_result { SHED_ONE, SHED_NOTHING_PENDING, SHED_FAILED };

/* EMFILE: refuse one connection with the spare descriptor. Out of
 * descriptors, accept() fails even when the backlog is empty (the kernel
 * takes the descriptor before it looks at the queue), so EAGAIN here only
 * means that nothing is left to shed: the caller waits for readability as
 * after any EAGAIN (level-triggered, so no spin). Pausing instead would let
 * new connections pile up unshed and exhaust us again in one burst once
 * descriptors come back. */
static enum shed_result shed_one(struct net__acceptor *acc)
{
    if (acc->spare_fd < 0)
        return SHED_FAILED;
    close(acc->spare_fd);
    int fd = accept4(acc->ch.fd, NULL, NULL, SOCK_CLOEXEC);
    bool empty = fd < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    if (fd >= 0)
        close(fd);
    acc->spare_fd = open_spare();
    if (acc->spare_fd < 0 || (fd < 0 && !empty))
        return SHED_FAILED;
    return empty ? SHED_NOTHING_PENDING : SHED_ONE;
}

static bool accept_failed(struct net__acceptor *acc, int err)
{
    switch (err) {
    case EINTR:
    case ECONNABORTED: /* the peer gave up in the backlog: next one */
    case EPROTO:
        return true;
    case EMFILE:
    case ENFILE:
        NET__LOG_RL(NET_LOG_ERROR, "accept: %s; refusing connections", net_strerror(-err));
        switch (shed_one(acc)) {
        case SHED_ONE:
            return true;
        case SHED_NOTHING_PENDING:
            return false;
        case SHED_FAILED:
            break;
        }
        break;
    default:
        NET__LOG_RL(NET_LOG_ERROR, "accept: %s; pausing %d ms", net_strerror(-err), PAUSE_MS);
        break;
    }
    pause_accepting(acc);
    return false;
}

static void handle_accept(struct net__channel *ch, unsigned revents)
{
    (void)revents;
    struct net__acceptor *acc = net__container_of(ch, struct net__acceptor, ch);
    for (int i = 0; i < ACCEPT_BATCH && acc->ch.fd >= 0; i++) {
        int fd = accept4(acc->ch.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0)
            acc->on_accept(fd, acc->arg);
        else if (errno == EAGAIN || !accept_failed(acc, errno))
            return;
    }
}
