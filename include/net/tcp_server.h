/* netloop — a TCP server.
 *
 * A net_server listens on one address from a base loop and hands each
 * accepted connection to the next loop of its pool of I/O threads, round
 * robin (with 0 I/O threads everything runs on the base loop). The acceptor
 * accepts until EAGAIN on each wakeup, keeps a spare descriptor so that
 * running out of descriptors (EMFILE) never makes the loop spin, and closes at
 * once connections beyond max_connections.
 *
 * Threads: create, stop and free on the base loop's thread; start is
 * thread-safe. Callbacks run on the connection's I/O loop.
 *
 * Lifetime: net_server_stop() stops accepting, half-closes every connection
 * (queued output is flushed first), force-closes those still open at the
 * deadline and then calls the stopped callback on the base loop. Only then
 * (or if the server was never started) may net_server_free() be called.
 *
 * Memory: each connection's output (conn.backpressure_mark) and unconsumed
 * input (conn.max_input) is bounded, and so is the total over all
 * connections (memory_budget). Deadlines: none by default, since a user
 * protocol may idle for hours; the cost is that a peer that sends part of a
 * message and stops (or a connection paused for the budget whose peer left)
 * is held until conn.idle_timeout_ms, which is off. Set it when peers are
 * not trusted. (The RPC server sets its own deadlines by default.) */
#ifndef NET_TCP_SERVER_H
#define NET_TCP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <net/addr.h>
#include <net/loop.h>
#include <net/tcp_conn.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct net_server net_server_t;

struct net_server_options {
    size_t io_threads;      /* I/O loops beside the base loop; default 0 */
    bool reuse_port;        /* SO_REUSEPORT; default false */
    bool ipv6_only;         /* IPV6_V6ONLY for an IPv6 address; default false */
    int backlog;            /* listen(2) backlog; default SOMAXCONN */
    size_t max_connections; /* beyond it, accept and close at once; default 100000 */
    const char *name;       /* for thread names and logs; default "server" */
    /* Bytes all connections together may hold in their input and output
     * buffers. Over it, connections holding more than a small share (a 16th
     * of it over the connections, 16 to 256 KiB) stop reading until the
     * total is back under 7/8 of it; smaller ones, such as an honest client
     * with small messages, are still served, reading up to the share. Default 256 MiB; 0 means the default;
     * NET_UNLIMITED turns it off. Each connection's own limits (conn.
     * max_input, conn.backpressure_mark) still apply. */
    size_t memory_budget;
    struct net_conn_options conn; /* defaults of net_conn_options_init() */
};

/* Fills the defaults above. Thread-safe. */
NET_EXPORT void net_server_options_init(struct net_server_options *opt);

/* Creates a server on `base`, bound to `addr` (port 0 picks a free port: see
 * net_server_addr()). It does not listen until started. opt may be NULL for
 * the defaults; cbs (copied) may be NULL for none. Stores it in *out.
 * Returns 0, -EINVAL, -ENOMEM, NET_EWRONGTHREAD, or the errno of
 * socket/bind (-EADDRINUSE, -EACCES, ...).
 * Base loop thread only. */
NET_EXPORT int net_server_new(net_loop_t *base, const net_addr_t *addr,
                              const struct net_server_options *opt,
                              const struct net_conn_callbacks *cbs, net_server_t **out);

/* Starts the I/O threads and listens. Idempotent: later calls return 0 and
 * do nothing. Returns 0, -ESHUTDOWN (net_server_stop was called: a stopped
 * server does not start again) or the errno of listen/thread creation (then
 * the server is not started). From another thread it is applied on the base loop
 * and returns 0 (errors are logged).
 * Thread-safe. */
NET_EXPORT int net_server_start(net_server_t *server);

/* Called on the base loop when the server has stopped (no connection left). */
typedef void (*net_server_stopped_fn)(net_server_t *server, void *arg);

/* Graceful stop: closes the listening socket, half-closes every connection
 * after its queued output, and force-closes what is left after drain_ms.
 * `done` (may be NULL) runs on the base loop once every connection is gone,
 * never inside this call. A second stop returns -EALREADY.
 * Base loop thread only. */
NET_EXPORT int net_server_stop(net_server_t *server, uint64_t drain_ms,
                               net_server_stopped_fn done, void *arg);

/* Frees a stopped (or never started) server and joins its I/O threads.
 * Returns 0, or -EBUSY if it is started and not yet stopped (nothing is
 * freed). NULL is ignored (0). Base loop thread only; not from a callback of
 * one of the server's connections. */
NET_EXPORT int net_server_free(net_server_t *server);

/* The bound address (with the real port when 0 was asked). Thread-safe. */
NET_EXPORT const net_addr_t *net_server_addr(const net_server_t *server);

struct net_server_stats {
    size_t connections;     /* open now */
    uint64_t accepted;      /* so far */
    uint64_t refused;       /* over max_connections */
    size_t memory_budget;   /* the option (NET_UNLIMITED when off) */
    size_t memory_used;     /* held in the connections' buffers now, counted
                               in 16 KiB steps per connection */
    uint64_t budget_pauses; /* times a connection stopped reading for it */
};

/* Counters and the memory budget (a snapshot). Thread-safe. */
NET_EXPORT void net_server_stats(const net_server_t *server, struct net_server_stats *out);

/* Open connections (a snapshot). Thread-safe. */
NET_EXPORT size_t net_server_connection_count(const net_server_t *server);

/* Connections accepted so far, and refused over max_connections.
 * Thread-safe. */
NET_EXPORT uint64_t net_server_accepted(const net_server_t *server);
NET_EXPORT uint64_t net_server_refused(const net_server_t *server);

/* The I/O loop of index i (0 <= i < max(1, io_threads)), for tests and for
 * spreading user work. NULL when out of range or not started. Thread-safe. */
NET_EXPORT net_loop_t *net_server_io_loop(net_server_t *server, size_t i);

#ifdef __cplusplus
}
#endif

#endif
