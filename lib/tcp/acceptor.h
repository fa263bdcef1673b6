/* The acceptor: a listening socket on the base loop (muduo's Acceptor). */
#ifndef NET__ACCEPTOR_H
#define NET__ACCEPTOR_H

#include <stdbool.h>

#include <net/addr.h>
#include <net/loop.h>

#include "loop/channel.h"

/* A new connection: fd is non-blocking and owned by the callee from now. */
typedef void (*net__accept_fn)(int fd, void *arg);

struct net__acceptor {
    net_loop_t *loop;
    struct net__channel ch; /* the listening socket */
    int spare_fd;           /* kept open to shed connections on EMFILE */
    net_timer_id_t resume_timer;
    net__accept_fn on_accept;
    void *arg;
    net_addr_t addr;        /* bound address, real port */
};

/* Creates the socket and binds it (no listen yet). Returns 0 or -errno. */
int net__acceptor_open(struct net__acceptor *acc, net_loop_t *loop, const net_addr_t *addr,
                       bool reuse_port, bool ipv6_only, net__accept_fn fn, void *arg);
/* Listens and starts accepting. Loop thread only. */
int net__acceptor_listen(struct net__acceptor *acc, int backlog);
/* Stops accepting and closes everything. Idempotent. Loop thread only. */
void net__acceptor_close(struct net__acceptor *acc);

#endif
