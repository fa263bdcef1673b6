/* What servers and clients need from a connection beyond the public API. */
#ifndef NET__TCP_CONN_INTERNAL_H
#define NET__TCP_CONN_INTERNAL_H

#include <stdatomic.h>
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
 * one iteration leave in one writev. Returns as net_conn_send. Thread-safe.
 * The public net_conn_sendv is this plus its argument checks; the layers
 * above can call that instead. */
int net__conn_sendv(net_conn_t *conn, const struct iovec *iov, int n);

/* A cap on the bytes a group of connections (one server's) holds in its
 * input and output buffers together. Each connection adds what it holds in
 * steps of NET__BUDGET_STEP, so the small buffers of a busy happy path do
 * not touch the shared counter on every message. */
struct net__budget {
    atomic_size_t used;
    size_t limit;         /* SIZE_MAX: no cap */
    atomic_ullong pauses; /* times a connection was paused for it */
    atomic_size_t conns;  /* connections counting against it */
};
#define NET__BUDGET_STEP (16u * 1024)

/* Makes conn count against b (which must outlive the connection's close).
 * Before net__conn_establish; any thread. */
void net__conn_set_budget(net_conn_t *conn, struct net__budget *b);

/* Pauses (true) or resumes (false) reading for the owner's own reason,
 * independent of the user's stop_read and of the library's backpressure.
 * When reading resumes with input still buffered, on_message runs again with
 * it, later on the loop. Applied at once on the loop thread, else handed to
 * the loop (the latest call wins). Returns 0, -EINVAL (NULL) or -ENOTCONN;
 * never fails for want of memory (it used to say -ENOMEM). Thread-safe. */
int net__conn_pause_owner(net_conn_t *conn, bool pause);

/* The owner passed to net__conn_new. Thread-safe. */
void *net__conn_owner(const net_conn_t *conn);

/* A pointer for the layer above's own per-connection state (the RPC
 * server's session), apart from the user's net_conn_set_context slot.
 * NULL at first. Thread-safe. */
void net__conn_set_owner_data(net_conn_t *conn, void *data);
void *net__conn_owner_data(const net_conn_t *conn);

/* Links for the owner's intrusive list of its connections; touched only by
 * the owner, on the connection's loop thread. */
struct net__conn_link {
    net_conn_t *prev, *next;
};
struct net__conn_link *net__conn_link(net_conn_t *conn);

#endif
