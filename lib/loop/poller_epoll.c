/* epoll backend, level-triggered.
 *
 * Level-triggered because every reader in the library may stop early (a read
 * cap per event, backpressure via stop_read) and rely on being told again;
 * edge-triggered would force each of them to drain to EAGAIN or track its own
 * readiness. The cost is an epoll_ctl when write interest changes, which only
 * happens when a socket's send buffer fills up. */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <net/loop.h>

#include "loop/alloc_internal.h"
#include "loop/poller.h"

#define EVENTS_INITIAL 64
#define EVENTS_MAX 4096 /* a full batch beyond this is split over iterations */

struct net__poller {
    int epfd;
    int cap;
    struct epoll_event *events;
    struct net__ready *ready;
};

static int grow(struct net__poller *p, int cap)
{
    struct epoll_event *ev = net__realloc(p->events, (size_t)cap * sizeof *ev);
    if (!ev)
        return -ENOMEM;
    p->events = ev;
    struct net__ready *r = net__realloc(p->ready, (size_t)cap * sizeof *r);
    if (!r)
        return -ENOMEM;
    p->ready = r;
    p->cap = cap;
    return 0;
}

static void epoll_destroy(struct net__poller *p)
{
    if (p->epfd >= 0)
        close(p->epfd);
    net__free(p->events);
    net__free(p->ready);
    net__free(p);
}

static int epoll_create_poller(struct net__poller **out)
{
    struct net__poller *p = net__calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    int rc = p->epfd < 0 ? -errno : grow(p, EVENTS_INITIAL);
    if (rc < 0) {
        epoll_destroy(p);
        return rc;
    }
    *out = p;
    return 0;
}

static uint32_t to_epoll(unsigned interest)
{
    return ((interest & NET_READABLE) ? EPOLLIN : 0u) |
           ((interest & NET_WRITABLE) ? EPOLLOUT : 0u);
}

static unsigned from_epoll(uint32_t ev)
{
    return ((ev & (EPOLLIN | EPOLLPRI | EPOLLRDHUP)) ? NET_READABLE : 0u) |
           ((ev & EPOLLOUT) ? NET_WRITABLE : 0u) | ((ev & EPOLLERR) ? NET_ERROR : 0u) |
           ((ev & EPOLLHUP) ? NET_HUP : 0u);
}

static int ctl(struct net__poller *p, int op, struct net__channel *ch)
{
    struct epoll_event ev = {.events = to_epoll(ch->interest), .data.ptr = ch};
    return epoll_ctl(p->epfd, op, ch->fd, &ev) < 0 ? -errno : 0;
}

static int epoll_add(struct net__poller *p, struct net__channel *ch)
{
    int rc = ctl(p, EPOLL_CTL_ADD, ch);
    if (rc == 0)
        ch->poller_slot = 0;
    return rc;
}

static int epoll_modify(struct net__poller *p, struct net__channel *ch)
{
    return ctl(p, EPOLL_CTL_MOD, ch);
}

static void epoll_remove(struct net__poller *p, struct net__channel *ch)
{
    /* Fails only if the fd was already closed, which removed it anyway. */
    (void)epoll_ctl(p->epfd, EPOLL_CTL_DEL, ch->fd, NULL);
    ch->poller_slot = -1;
}

static int epoll_wait_ready(struct net__poller *p, int timeout_ms, struct net__ready **ready)
{
    int n = epoll_wait(p->epfd, p->events, p->cap, timeout_ms);
    if (n < 0)
        return -errno;
    for (int i = 0; i < n; i++) {
        p->ready[i].ch = p->events[i].data.ptr;
        p->ready[i].revents = from_epoll(p->events[i].events);
    }
    /* A full batch suggests more were ready: widen for the next wait. Failure
     * to grow only means smaller batches. (realloc keeps the entries.) */
    if (n == p->cap && p->cap < EVENTS_MAX)
        (void)grow(p, p->cap * 2);
    *ready = p->ready;
    return n;
}

const struct net__poller_ops net__poller_epoll = {
    .name = "epoll",
    .create = epoll_create_poller,
    .destroy = epoll_destroy,
    .add = epoll_add,
    .modify = epoll_modify,
    .remove = epoll_remove,
    .wait = epoll_wait_ready,
};
