/* What servers and clients need from a connection beyond the public API. */
#ifndef NET__TCP_CONN_INTERNAL_H
#define NET__TCP_CONN_INTERNAL_H

#include <sys/uio.h>

#include <net/tcp_conn.h>

/* Runs once on the loop thread when the connection has closed, right after
 * the user's down callback: the owner unlinks the connection and drops its
 * reference. */
typedef void (*net__conn_closed_fn)(net_conn_t *conn, void *owner);

/* Makes a connection for the connected socket fd (non-blocking, owned from
 * now on: closed on failure too) on `loop`, with one reference that belongs
 * to the caller (the owner). Addresses come from getsockname/getpeername.
 * Returns NULL on -ENOMEM. Any thread; the connection is not yet registered. */
net_conn_t *net__conn_new(net_loop_t *loop, int fd, const struct net_conn_options *opt,
                          const struct net_conn_callbacks *cbs, net__conn_closed_fn closed,
                          void *owner);

/* Registers the connection with its loop, marks it connected, applies the
 * socket options and calls the up callback. Loop thread only. */
void net__conn_establish(net_conn_t *conn);

/* Closes at once on the loop thread (as net_conn_force_close, but
 * synchronously: callbacks run before this returns). Loop thread only. */
void net__conn_close_in_loop(net_conn_t *conn);

/* Sends the n pieces as one message (copied into one queue node). Unlike
 * net_conn_send it never writes at once, on the loop thread either: the
 * flush runs after the loop's current iteration, so messages made during
 * one iteration leave in one writev. Returns as net_conn_send. Thread-safe. */
int net__conn_sendv(net_conn_t *conn, const struct iovec *iov, int n);

/* The owner passed to net__conn_new. Thread-safe. */
void *net__conn_owner(const net_conn_t *conn);

/* Links for the owner's intrusive list of its connections; touched only by
 * the owner, on the connection's loop thread. */
struct net__conn_link {
    net_conn_t *prev, *next;
};
struct net__conn_link *net__conn_link(net_conn_t *conn);

#endif
