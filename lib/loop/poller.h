/* The poller interface: the loop reaches its backend only through these few
 * functions (redis ae.c's aeApi* idea), one file per backend. */
#ifndef NET__POLLER_H
#define NET__POLLER_H

#include "loop/channel.h"

struct net__ready {
    struct net__channel *ch; /* NULL once the channel was removed mid-dispatch */
    unsigned revents;        /* NET_READABLE | NET_WRITABLE | NET_ERROR | NET_HUP */
};

struct net__poller;

struct net__poller_ops {
    const char *name;
    /* Returns 0 and the poller in *out, or a negative errno. */
    int (*create)(struct net__poller **out);
    void (*destroy)(struct net__poller *p);
    /* Registers ch (ch->poller_slot is -1) with ch->interest. */
    int (*add)(struct net__poller *p, struct net__channel *ch);
    /* Applies a changed ch->interest to a registered channel. */
    int (*modify)(struct net__poller *p, struct net__channel *ch);
    /* Unregisters ch; ch->poller_slot becomes -1. */
    void (*remove)(struct net__poller *p, struct net__channel *ch);
    /* Waits up to timeout_ms (-1: forever) and points *ready at the ready
     * channels (valid until the next wait). Returns the count or -errno. */
    int (*wait)(struct net__poller *p, int timeout_ms, struct net__ready **ready);
};

extern const struct net__poller_ops net__poller_epoll;
extern const struct net__poller_ops net__poller_poll;

/* The backend named by NETLOOP_POLLER ("epoll", the default, or "poll"). */
const struct net__poller_ops *net__poller_default(void);

#endif
