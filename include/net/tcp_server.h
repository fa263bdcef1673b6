/* netloop — a TCP server.
 *
 * A net_server listens on one address from a base loop and hands each
 * accepted connection to the next loop of its pool of I/O threads, round
 * robin (with 0 I/O threads everything runs on the base loop). The acceptor
 * accepts until EAGAIN on each wakeup, keeps a spare descriptor so that
 * running out of descriptors (EMFILE) never makes the loop spin, and closes at
 * once connections beyond max_connections.
 *
 * Threads: net_server_new on the base loop's thread; start, close and the
 * getters from any thread. Connection callbacks run on the connection's I/O
 * loop; thread_init and thread_exit on each I/O loop's thread; done on the
 * base loop.
 *
 * Lifetime (the one close rule, as every long-lived object of netloop):
 * net_server_close() stops accepting, half-closes every connection once its
 * queued output is written, force-closes what is left after drain_ms, runs
 * thread_exit on every I/O loop, joins the I/O threads and then calls done
 * on the base loop, after which the server's memory is gone. Close is the
 * only way to end a server, started or not. Keep the base loop running
 * until done has run.
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

/* Options. An all-zero struct is valid: 0 in every field is its default. */
struct net_server_options {
    size_t io_threads;      /* I/O loops beside the base loop; default 0 */
    bool reuse_port;        /* SO_REUSEPORT; default false */
    bool ipv6_only;         /* IPV6_V6ONLY for an IPv6 address; default false */
    int backlog;            /* listen(2) backlog; 0 (or < 0): SOMAXCONN */
    /* Beyond this many open connections, a new one is accepted and closed
     * at once (one rate-limited WARN line). 0: the default, 100000;
     * NET_UNLIMITED: no limit. */
    size_t max_connections;
    const char *name;       /* for thread names and logs (copied, 31 bytes
                               used); NULL: "server" */
    /* Bytes all connections together may hold in their input and output
     * buffers. Over it, connections holding more than a small share (a 16th
     * of it over the connections, 16 to 256 KiB) stop reading until the
     * total is back under 7/8 of it; smaller ones, such as an honest client
     * with small messages, are still served, reading up to the share.
     * 0: the default, 256 MiB; NET_UNLIMITED turns it off. Each
     * connection's own limits (conn.max_input, conn.backpressure_mark)
     * still apply. */
    size_t memory_budget;
    struct net_conn_options conn; /* defaults of net_conn_options_init() */
    /* Per-I/O-loop hooks (muduo's ThreadInitCallback), both optional, both
     * given thread_arg. thread_init(loop) runs on each I/O loop's thread
     * (on the base loop when io_threads is 0) after start, before that loop
     * serves any connection: for objects that live on the loop (a
     * net_client, say). thread_exit(loop) runs there during close, once the
     * server's connections on that loop are gone and before the loop stops,
     * so those objects can be closed in it; closed there with drain_ms 0
     * their done runs before the server's done (give their close drain_ms
     * 0: the loop runs only its queued work after thread_exit, no timer
     * and no I/O). Each runs exactly once per loop once start has made the
     * loops (also if listen then failed); neither runs otherwise. */
    void (*thread_init)(net_loop_t *loop, void *arg);
    void (*thread_exit)(net_loop_t *loop, void *arg);
    void *thread_arg;
};

/* Fills the defaults above (all-zero gives the same server). Thread-safe. */
NET_EXPORT void net_server_options_init(struct net_server_options *opt);

/* Creates a server on `base`, bound to `addr` (port 0 picks a free port: see
 * net_server_addr()). It does not listen until started. opt may be NULL for
 * the defaults; opt and cbs are copied (cbs may be NULL for none). Stores
 * the server in *out; the caller owns it and ends it with
 * net_server_close(). Returns 0, -EINVAL (NULL base, addr or out),
 * NET_EWRONGTHREAD (not on base's thread), -ENOMEM, or the errno of
 * socket/bind (-EADDRINUSE, -EACCES, ...); on failure *out is untouched.
 * Base loop thread only. */
NET_EXPORT int net_server_new(net_loop_t *base, const net_addr_t *addr,
                              const struct net_server_options *opt,
                              const struct net_conn_callbacks *cbs, net_server_t **out);

/* Starts the I/O threads and listens. On the base loop's thread it does so
 * before returning and returns 0, -ESHUTDOWN (close was called) or the
 * errno of thread creation or listen (the server is then not started and
 * start may be tried again; I/O threads already started stay, for the next
 * try and close). From any other thread it hands the start to the base loop
 * and returns 0 (or -ESHUTDOWN); errors there are logged (ERROR), since
 * nobody else sees them. Later calls on a started server return 0 and do
 * nothing. -EINVAL for NULL.
 * Thread-safe. */
NET_EXPORT int net_server_start(net_server_t *server);

/* Called once on the base loop when the server is closed: every connection
 * is gone and the I/O threads are joined. server identifies it only during
 * the call (net_server_addr and net_server_stats still work inside); after
 * done returns the memory is gone. */
typedef void (*net_server_close_fn)(net_server_t *server, void *arg);

/* Closes the server: the listening socket at once (before this returns on
 * the base loop's thread, on the base loop's next turn from elsewhere),
 * then on each I/O loop every connection is half-closed once its queued
 * output is written (net_conn_shutdown), and whatever is still open drain_ms
 * after the close reached the base loop is force-closed (drain_ms 0: all at
 * once, queued output dropped; any value is accepted). Every connection
 * that came up gets its down callback, once. Then thread_exit runs on each
 * I/O loop, the I/O threads are joined, and done(server, arg) runs on the
 * base loop, never inside this call (even for a server never started); done
 * may be NULL. Keep the base loop running until then.
 * Returns 0 for the first call; -EALREADY for any later one (nothing
 * changes, its done is not kept); -EINVAL for NULL. Works from inside any
 * callback of the server and its connections.
 * Thread-safe. */
NET_EXPORT int net_server_close(net_server_t *server, uint64_t drain_ms,
                                net_server_close_fn done, void *arg);

/* The bound address (with the real port when 0 was asked), valid until
 * done. Thread-safe. */
NET_EXPORT const net_addr_t *net_server_addr(const net_server_t *server);

struct net_server_stats {
    size_t connections;     /* open now (accepted, not yet gone) */
    uint64_t accepted;      /* so far */
    uint64_t refused;       /* over max_connections */
    size_t memory_budget;   /* the option (NET_UNLIMITED when off) */
    size_t memory_used;     /* held in the connections' buffers now, counted
                               in 16 KiB steps per connection */
    uint64_t budget_pauses; /* times a connection stopped reading for it */
};

/* The same type by a name that C++ does not hide behind the function of
 * the same name. */
typedef struct net_server_stats net_server_stats_t;

/* Stores a snapshot of the counters in *out (each counter read atomically,
 * not all at the same instant). Valid until done returns. Thread-safe. */
NET_EXPORT void net_server_stats(const net_server_t *server, struct net_server_stats *out);

/* The I/O loop of index i (0 <= i < max(1, io_threads); with 0 I/O threads,
 * index 0 is the base loop), for tests and for spreading user work. NULL
 * when out of range, before start has made the loops (from another thread:
 * until the base loop applied it), and from the moment close joins the I/O
 * threads (inside done too). A loop returned here lives until close joins
 * it; call only its thread-safe functions from other threads.
 * Thread-safe. */
NET_EXPORT net_loop_t *net_server_io_loop(net_server_t *server, size_t i);

#ifdef __cplusplus
}
#endif

#endif
