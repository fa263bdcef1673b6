#include <stdlib.h>
#include <string.h>

#include "loop/log_internal.h"
#include "loop/poller.h"

const struct net__poller_ops *net__poller_default(void)
{
    const char *name = getenv("NETLOOP_POLLER");
    if (!name || !*name || strcmp(name, "epoll") == 0)
        return &net__poller_epoll;
    if (strcmp(name, "poll") == 0)
        return &net__poller_poll;
    NET__LOG_RL(NET_LOG_WARN, "NETLOOP_POLLER=%s is unknown; using epoll", name);
    return &net__poller_epoll;
}
