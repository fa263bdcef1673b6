/* netloop — a TCP connection.
 *
 * A net_conn_t is one established TCP (or Unix stream) connection, made by a
 * net_server (accepted) or a net_client (connected). It lives on one loop:
 * every callback runs on that loop's thread, and so do its reads and writes.
 *
 * Lifetime: connections are reference counted. The server or client that
 * made a connection holds a reference until the connection is closed; a user
 * who keeps the pointer beyond the callback that handed it over (to send from
 * another thread later, say) takes a reference with net_conn_ref() and drops
 * it with net_conn_unref(), on any thread. Memory lives until the last
 * reference goes. Every operation on a closed connection is safe and returns
 * -ENOTCONN (or, for the accessors, what they returned before the close): a
 * connection never touches its descriptor after closing it, so nothing is
 * ever written to a reused fd. Every function takes a connection the caller
 * holds a reference on (or got in a callback); NULL is refused with -EINVAL
 * by the functions that return int and is undefined for the others.
 *
 * Threads: each function says "Thread-safe." or "Loop thread only." (the
 * connection's loop, net_conn_loop()); a loop-thread-only function called
 * elsewhere does nothing and returns NET_EWRONGTHREAD. Handing work to the
 * loop (a shutdown, a close, a read pause, a send's flush) needs no memory:
 * shutdown, force_close, stop_read and start_read cannot fail with -ENOMEM
 * (a send still needs memory for the copy of its bytes).
 *
 * Callbacks are never called from inside the API call that caused them:
 * write-complete and high-water callbacks triggered by a send, and the close
 * notification triggered by force_close, run later on the loop thread. A
 * high-water callback runs before the write-complete of the drain that
 * follows it. A notification still waiting to run absorbs a second one of
 * its kind (one call; high water reports the latest crossing), and a
 * write-complete whose output has been followed by more before it ran is
 * left out: the drain of that output reports it. So after a high-water
 * callback there is always a write-complete once the output is empty (while
 * the connection is open), and never one while that backlog is still
 * queued. */
#ifndef NET_TCP_CONN_H
#define NET_TCP_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <net/addr.h>
#include <net/buffer.h>
#include <net/error.h>
#include <net/loop.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct net_conn net_conn_t;

typedef enum net_conn_state {
    NET_CONN_CONNECTING = 0,    /* created, not yet handed to its loop */
    NET_CONN_CONNECTED = 1,     /* open both ways */
    NET_CONN_DISCONNECTING = 2, /* shutdown requested: output drains, then FIN */
    NET_CONN_DISCONNECTED = 3,  /* closed; operations return -ENOTCONN */
} net_conn_state_t;

/* Connection up (net_conn_connected() true) or down (false). */
typedef void (*net_conn_fn)(net_conn_t *conn, void *arg);
/* Bytes arrived: they are in `in`; consume what you use (net_buf_retrieve*),
 * leave the rest for the next call. receive_ms is net_now_ms() taken when
 * the loop's wait returned with this read (one clock read per iteration). */
typedef void (*net_message_fn)(net_conn_t *conn, net_buf_t *in, uint64_t receive_ms, void *arg);
/* The output queue crossed the high-water mark upwards; `queued` bytes
 * waited at that crossing. */
typedef void (*net_high_water_fn)(net_conn_t *conn, size_t queued, void *arg);

/* The callbacks of a connection, all optional, all run on the connection's
 * loop thread with `arg`. The struct is copied: it need not outlive the call
 * that takes it. */
struct net_conn_callbacks {
    net_conn_fn on_connection;       /* up, then once down */
    net_message_fn on_message;       /* NULL: input is discarded */
    net_conn_fn on_write_complete;   /* the output queue drained to empty */
    net_high_water_fn on_high_water; /* queued bytes crossed the mark */
    net_conn_fn on_peer_eof;         /* peer half-closed (half_close option) */
    void *arg;
};

/* For a size option: no limit. */
#define NET_UNLIMITED SIZE_MAX
/* For a millisecond timeout option: no timeout. */
#define NET_NO_TIMEOUT UINT32_MAX

/* Per-connection settings; servers and clients take them in their options.
 * 0 means the default in every field, so an all-zero struct (with or
 * without net_conn_options_init) is the defaults; the booleans are named
 * so that false is the default. */
struct net_conn_options {
    /* The high-water callback runs when queued output crosses this many
     * bytes upwards. 0 = default (64 MiB); NET_UNLIMITED turns it off. */
    size_t high_water_mark;
    /* Backpressure: when this many bytes of output are queued (a peer that
     * does not read what it is sent), the loop stops reading the connection,
     * so the peer's requests wait in TCP instead of in memory; reading
     * resumes once the output is below half of it. Independent of
     * net_conn_stop_read(): reading runs when neither holds. Meant for the
     * server side, where output is made by input (echo, request/response).
     * 0 = default (4 MiB); NET_UNLIMITED turns it off. A net_client's
     * connections have it off (include/net/tcp_client.h). */
    size_t backpressure_mark;
    /* Most bytes on_message may leave unconsumed in the input buffer (a
     * message being assembled); past it the connection is closed with one
     * rate-limited log line. 0 = default (64 MiB); NET_UNLIMITED turns it
     * off. */
    size_t max_input;
    /* Close after this long without input, checked by one repeating timer
     * per connection: the close comes 1x to 2x the timeout after the last
     * input. 0 = default (off); NET_NO_TIMEOUT is off too. Without it (or
     * keepalive) a connection whose network path dies silently is noticed
     * only when a write fails. */
    uint32_t idle_timeout_ms;
    /* Default false: TCP_NODELAY is set, so small messages leave at once.
     * True keeps Nagle's algorithm (small writes wait to be coalesced). No
     * effect on Unix sockets. */
    bool nagle;
    bool keepalive; /* SO_KEEPALIVE, default false */
    /* Default false: when the peer half-closes, queued output is flushed and
     * then the connection closes. True: the connection stays open for
     * writing; on_peer_eof runs and the user calls shutdown or force_close. */
    bool half_close;
    /* Hard limit on queued output in bytes: a send that would queue more
     * fails with -ENOBUFS and queues nothing. 0 = default (NET_UNLIMITED):
     * no limit; the high-water callback is the only brake. */
    size_t max_output;
};

/* Fills *opt with the defaults, spelled out (the sizes above, max_output
 * NET_UNLIMITED, everything else 0 or false). Same meaning as a zeroed
 * struct. opt must not be NULL. Thread-safe. */
NET_EXPORT void net_conn_options_init(struct net_conn_options *opt);

/* Takes a reference. Returns conn. Thread-safe. */
NET_EXPORT net_conn_t *net_conn_ref(net_conn_t *conn);

/* Drops a reference; the last one frees the connection (which is closed by
 * then, or is closed and freed on its loop). NULL is ignored. Thread-safe. */
NET_EXPORT void net_conn_unref(net_conn_t *conn);

/* Sends len bytes (copied: data may be reused at once). On the loop thread
 * with nothing queued it writes at once and queues what the socket did not
 * take. From another thread it pushes a copy onto the connection's
 * wait-free write queue (no lock); the loop writes everything queued, from
 * all threads, with few writev calls, and is woken at most once per batch.
 * Bytes sent from one thread arrive in the order sent; sends from different
 * threads interleave whole (a send's bytes are never split by another's).
 * Queued bytes count towards the high-water mark and max_output as soon as
 * the send accepts them.
 * Returns 0; -EINVAL (conn NULL, or data NULL with len > 0); -ENOTCONN
 * (closed, closing or shutting down); -ENOBUFS (would pass the max_output
 * option; nothing queued); -ENOMEM (nothing queued); or on the loop thread
 * the socket's errno (-EPIPE, -ECONNRESET; or -ENOMEM when the part the
 * socket did not take found no memory): the stream is then broken and the
 * connection closes, later, not inside this call. A send from another
 * thread racing with shutdown() or a close may return 0 and still be
 * dropped. len 0 is a no-op returning 0 (or -ENOTCONN). Thread-safe. */
NET_EXPORT int net_conn_send(net_conn_t *conn, const void *data, size_t len);

/* Sends the iovcnt pieces as one message: their bytes are contiguous on the
 * wire (no other send's bytes come between them) and copied, so the pieces
 * may be reused at once. Same ordering rules as net_conn_send, but it never
 * writes inside the call, on the loop thread either: the loop writes after
 * its current iteration, so the messages made during one iteration leave
 * in one writev. Returns 0; -EINVAL (conn NULL, iovcnt < 0, iov NULL with
 * iovcnt > 0, a piece with a NULL base and a length, or lengths whose sum
 * overflows); -ENOTCONN, -ENOBUFS or -ENOMEM as net_conn_send (nothing
 * queued). No bytes in all (iovcnt 0, or empty pieces) is a no-op
 * returning 0 (or -ENOTCONN). Thread-safe. */
NET_EXPORT int net_conn_sendv(net_conn_t *conn, const struct iovec *iov, int iovcnt);

/* Sends and consumes all readable bytes of buf: on 0 buf is empty, on a
 * failure it is untouched. Same returns as net_conn_send(), and -EINVAL for
 * a NULL buf. Thread-safe (buf itself is the caller's and must not be
 * shared). */
NET_EXPORT int net_conn_send_buf(net_conn_t *conn, net_buf_t *buf);

/* Half-closes: the state becomes DISCONNECTING at once (sends are refused
 * from now on); once every byte queued before is written, the loop shuts
 * down the write side (the peer reads EOF); reading goes on until the peer
 * closes. Returns 0, -EINVAL (NULL) or -ENOTCONN (not CONNECTED: closed,
 * or shutdown already called). Thread-safe; never fails for want of
 * memory. */
NET_EXPORT int net_conn_shutdown(net_conn_t *conn);

/* Closes soon, dropping queued output: input that arrives meanwhile is not
 * delivered, and the down callback runs later on the loop, never inside
 * this call. Returns 0, -EINVAL (NULL) or -ENOTCONN (closed, or a close is
 * already under way). Thread-safe; never fails for want of memory. */
NET_EXPORT int net_conn_force_close(net_conn_t *conn);

/* Force-closes delay_ms from now unless the connection is closed before;
 * a later call replaces the earlier one's deadline (the latest wins). The
 * timer is set up inside this call, on the calling thread. Returns 0,
 * -EINVAL (NULL) -ENOTCONN (closed) or -ENOMEM (no memory for the timer;
 * an earlier deadline then stays). Thread-safe. */
NET_EXPORT int net_conn_force_close_after(net_conn_t *conn, uint64_t delay_ms);

/* Stops / resumes reading (backpressure): while stopped no message callback
 * runs and the kernel's receive window fills. Nothing the peer sent is lost
 * while reading is stopped: if the peer closes or resets meanwhile (or a
 * write fails), the connection stays open, holding the unread bytes, and
 * after start_read every byte is delivered before the close. When reading
 * resumes with bytes still in the input buffer (left unconsumed by the last
 * on_message), on_message runs again with them, later on the loop. The
 * library's own backpressure (backpressure_mark) is a separate reason:
 * start_read does not override it. Applied at once on the loop thread,
 * handed to the loop from others, where the latest of several calls wins.
 * Returns 0, -EINVAL (NULL) or -ENOTCONN (closed). Thread-safe; never fails
 * for want of memory. */
NET_EXPORT int net_conn_stop_read(net_conn_t *conn);
NET_EXPORT int net_conn_start_read(net_conn_t *conn);

/* Sets TCP_NODELAY (on: Nagle's algorithm off) and SO_KEEPALIVE. Returns 0,
 * -EINVAL (NULL), NET_EWRONGTHREAD (not on the connection's loop thread:
 * only there is it certain that the connection's fd is still its own),
 * -ENOTCONN (closed), -EOPNOTSUPP (a Unix socket), or the negative errno of
 * setsockopt. Loop thread only. */
NET_EXPORT int net_conn_set_tcp_nodelay(net_conn_t *conn, bool on);
NET_EXPORT int net_conn_set_keepalive(net_conn_t *conn, bool on);

/* Changes the high-water mark for later sends: 0 = the default (64 MiB),
 * NET_UNLIMITED turns the callback off. Thread-safe. */
NET_EXPORT void net_conn_set_high_water_mark(net_conn_t *conn, size_t bytes);

/* The state (a snapshot). Thread-safe. */
NET_EXPORT net_conn_state_t net_conn_state(const net_conn_t *conn);

/* net_conn_state() == NET_CONN_CONNECTED. Thread-safe. */
NET_EXPORT bool net_conn_connected(const net_conn_t *conn);

/* A user pointer carried by the connection (NULL at first); the library
 * never touches what it points to. Thread-safe. */
NET_EXPORT void net_conn_set_context(net_conn_t *conn, void *context);
NET_EXPORT void *net_conn_context(const net_conn_t *conn);

/* The connection's loop (not owned by the connection). Thread-safe. */
NET_EXPORT net_loop_t *net_conn_loop(const net_conn_t *conn);

/* A process-wide unique id (> 0), for logs and maps. Thread-safe. */
NET_EXPORT uint64_t net_conn_id(const net_conn_t *conn);

/* Local and peer addresses, fixed at creation; the pointers are into the
 * connection and valid while a reference is held. An IPv4 or IPv6
 * connection keeps them compactly and makes these net_addr_t forms at the
 * first call of either (one small allocation, kept until the connection is
 * freed); when that finds no memory the call returns a "no address"
 * (AF_UNSPEC) instead, and a later call tries again. Thread-safe. */
NET_EXPORT const net_addr_t *net_conn_local_addr(const net_conn_t *conn);
NET_EXPORT const net_addr_t *net_conn_peer_addr(const net_conn_t *conn);

struct net_conn_stats {
    uint64_t bytes_received;
    uint64_t bytes_sent;  /* written to the socket */
    size_t output_queued; /* accepted by send, not yet written */
};

/* The same type by a name that C++ does not hide behind the function of
 * the same name. */
typedef struct net_conn_stats net_conn_stats_t;

/* Stores the counters in *out (a snapshot; out must not be NULL).
 * Thread-safe. */
NET_EXPORT void net_conn_stats(const net_conn_t *conn, struct net_conn_stats *out);

#ifdef __cplusplus
}
#endif

#endif
