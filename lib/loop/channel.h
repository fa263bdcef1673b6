/* A channel: one fd's registration in a loop's poller (muduo's Channel).
 * Internal; users get the same thing as net_watch. The owner embeds the
 * channel and recovers itself in on_event with container_of. */
#ifndef NET__CHANNEL_H
#define NET__CHANNEL_H

#include <stddef.h>

struct net__channel;
typedef void (*net__channel_fn)(struct net__channel *ch, unsigned revents);

struct net__channel {
    int fd;
    unsigned interest;   /* NET_READABLE | NET_WRITABLE */
    int poller_slot;     /* backend bookkeeping; -1 when not registered */
    net__channel_fn on_event;
};

#define net__container_of(ptr, type, member)                                  \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

static inline void net__channel_init(struct net__channel *ch, int fd, net__channel_fn fn)
{
    ch->fd = fd;
    ch->interest = 0;
    ch->poller_slot = -1;
    ch->on_event = fn;
}

#endif
