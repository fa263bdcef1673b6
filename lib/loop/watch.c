/* net_watch: the public face of a channel, for users' own descriptors. */
#include <errno.h>
#include <stdlib.h>

#include "loop/alloc_internal.h"
#include "loop/loop_internal.h"

struct net_watch {
    struct net__channel ch;
    net_loop_t *loop;
    net_watch_fn fn;
    void *arg;
};

static void watch_event_cb(struct net__channel *ch, unsigned revents)
{
    net_watch_t *w = net__container_of(ch, net_watch_t, ch);
    w->fn(w, ch->fd, revents, w->arg); /* may free w: touch nothing after */
}

int net_watch_new(net_loop_t *loop, int fd, unsigned events, net_watch_fn fn, void *arg,
                  net_watch_t **out)
{
    if (!loop || fd < 0 || !fn || !out || (events & ~(unsigned)(NET_READABLE | NET_WRITABLE)))
        return -EINVAL;
    if (!net_loop_in_loop_thread(loop))
        return NET_EWRONGTHREAD;
    net_watch_t *w = net__malloc(sizeof *w);
    if (!w)
        return -ENOMEM;
    *w = (net_watch_t){.loop = loop, .fn = fn, .arg = arg};
    net__channel_init(&w->ch, fd, watch_event_cb);
    w->ch.interest = events;
    int rc = net__loop_add_channel(loop, &w->ch);
    if (rc < 0) {
        net__free(w);
        return rc;
    }
    *out = w;
    return 0;
}

int net_watch_set(net_watch_t *w, unsigned events)
{
    if (!w || (events & ~(unsigned)(NET_READABLE | NET_WRITABLE)))
        return -EINVAL;
    if (!net_loop_in_loop_thread(w->loop))
        return NET_EWRONGTHREAD;
    if (events == w->ch.interest)
        return 0;
    unsigned old = w->ch.interest;
    w->ch.interest = events;
    int rc = net__loop_update_channel(w->loop, &w->ch);
    if (rc < 0)
        w->ch.interest = old;
    return rc;
}

int net_watch_events(const net_watch_t *w)
{
    if (!w)
        return -EINVAL;
    if (!net_loop_in_loop_thread(w->loop))
        return NET_EWRONGTHREAD;
    return (int)w->ch.interest;
}

int net_watch_free(net_watch_t *w)
{
    if (!w)
        return 0;
    if (!net_loop_in_loop_thread(w->loop))
        return NET_EWRONGTHREAD;
    net__loop_remove_channel(w->loop, &w->ch);
    net__free(w);
    return 0;
}
