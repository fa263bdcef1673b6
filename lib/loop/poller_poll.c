/* poll(2) backend: O(n) per wait, kept as a portable reference and to prove
 * the loop does not depend on epoll's semantics (the suite runs on both).
 * Channels live in a dense array; removal moves the last entry into the hole. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>

#include <net/loop.h>

#include "loop/alloc_internal.h"
#include "loop/poller.h"

/* Ready entries kept inside the poller, used while the heap array cannot
 * grow: even with no memory at all the loop still dispatches something
 * each wait, timers included, instead of spinning on an empty batch. */
#define READY_SPARE 8

struct net__poller {
    struct pollfd *fds;
    struct net__channel **chans;
    struct net__ready *ready; /* resized only in wait: dispatch walks it */
    int n, cap, ready_cap;
    struct net__ready spare[READY_SPARE];
};

static void poll_destroy(struct net__poller *p)
{
    net__free(p->fds);
    net__free(p->chans);
    net__free(p->ready);
    net__free(p);
}

static int poll_create_poller(struct net__poller **out)
{
    struct net__poller *p = net__calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    *out = p;
    return 0;
}

static short to_poll(unsigned interest)
{
    return (short)(((interest & NET_READABLE) ? POLLIN | POLLPRI : 0) |
                   ((interest & NET_WRITABLE) ? POLLOUT : 0));
}

static unsigned from_poll(short ev)
{
    return ((ev & (POLLIN | POLLPRI | POLLRDHUP)) ? NET_READABLE : 0u) |
           ((ev & POLLOUT) ? NET_WRITABLE : 0u) | ((ev & (POLLERR | POLLNVAL)) ? NET_ERROR : 0u) |
           ((ev & POLLHUP) ? NET_HUP : 0u);
}

static int reserve(struct net__poller *p)
{
    if (p->n < p->cap)
        return 0;
    int cap = p->cap ? p->cap * 2 : 16;
    struct pollfd *fds = net__realloc(p->fds, (size_t)cap * sizeof *fds);
    if (!fds)
        return -ENOMEM;
    p->fds = fds;
    struct net__channel **ch = net__realloc(p->chans, (size_t)cap * sizeof *ch);
    if (!ch)
        return -ENOMEM;
    p->chans = ch;
    p->cap = cap;
    return 0;
}

/* Called from wait, never during dispatch: a channel added by a callback
 * must not move the array the loop is walking. */
static int reserve_ready(struct net__poller *p)
{
    if (p->ready_cap >= p->n)
        return 0;
    struct net__ready *r = net__realloc(p->ready, (size_t)p->cap * sizeof *r);
    if (!r)
        return -ENOMEM;
    p->ready = r;
    p->ready_cap = p->cap;
    return 0;
}

static int poll_add(struct net__poller *p, struct net__channel *ch)
{
    if (ch->fd < 0)
        return -EBADF;
    for (int i = 0; i < p->n; i++) /* epoll refuses duplicates; so do we */
        if (p->fds[i].fd == ch->fd)
            return -EEXIST;
    int rc = reserve(p);
    if (rc < 0)
        return rc;
    p->fds[p->n] = (struct pollfd){.fd = ch->fd, .events = to_poll(ch->interest)};
    p->chans[p->n] = ch;
    ch->poller_slot = p->n++;
    return 0;
}

static int poll_modify(struct net__poller *p, struct net__channel *ch)
{
    p->fds[ch->poller_slot].events = to_poll(ch->interest);
    return 0;
}

static void poll_remove(struct net__poller *p, struct net__channel *ch)
{
    int slot = ch->poller_slot, last = --p->n;
    if (slot != last) {
        p->fds[slot] = p->fds[last];
        p->chans[slot] = p->chans[last];
        p->chans[slot]->poller_slot = slot;
    }
    ch->poller_slot = -1;
}

static int poll_wait_ready(struct net__poller *p, int timeout_ms, struct net__ready **ready)
{
    /* Without memory for a bigger array the batch is only smaller: the
     * rest stay ready (level-triggered) and come with the next wait, which
     * tries to grow again. Failing the wait would stop the loop for good. */
    struct net__ready *out = p->ready;
    int cap = p->ready_cap;
    if (reserve_ready(p) == 0)
        out = p->ready, cap = p->ready_cap;
    else if (cap < READY_SPARE)
        out = p->spare, cap = READY_SPARE;
    int rc = poll(p->fds, (nfds_t)p->n, timeout_ms);
    if (rc < 0)
        return -errno;
    int n = 0;
    for (int i = 0; i < p->n && n < rc && n < cap; i++) {
        if (!p->fds[i].revents)
            continue;
        out[n].ch = p->chans[i];
        out[n].revents = from_poll(p->fds[i].revents);
        n++;
    }
    *ready = out;
    return n;
}

const struct net__poller_ops net__poller_poll = {
    .name = "poll",
    .create = poll_create_poller,
    .destroy = poll_destroy,
    .add = poll_add,
    .modify = poll_modify,
    .remove = poll_remove,
    .wait = poll_wait_ready,
};
