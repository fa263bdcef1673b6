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
 * -ENOTCONN: a connection never touches its descriptor after closing it, so
 * nothing is ever written to a reused fd.
 *
 * Callbacks are never called from inside the API call that caused them:
 * write-complete and high-water callbacks triggered by a send, and the close
 * notification triggered by force_close, run later on the loop thread,
 * in the order of what caused them (a high-water callback runs before the
 * write-complete of the drain that follows it). */
#ifndef NET_TCP_CONN_H
#define NET_TCP_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <net/addr.h>
#include <net/buffer.h>
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
/* The output queue crossed the high-water mark upwards; `queued` bytes wait. */
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

/* Per-connection settings; servers and clients take them in their options. */
struct net_conn_options {
    size_t high_water_mark;  /* bytes; 0 disables. Default 64 MiB */
    /* Backpressure: when this many bytes of output are queued (a peer that
     * does not read what it is sent), the loop stops reading the connection,
     * so the peer's requests wait in TCP instead of in memory; reading
     * resumes once the output is below half of it. Independent of
     * net_conn_stop_read(): reading runs when neither holds. Meant for the
     * server side, where output is made by input (echo, request/response).
     * Default 4 MiB; 0 means the default; NET_UNLIMITED turns it off. A
     * net_client's connections have it off (include/net/tcp_client.h). */
    size_t backpressure_mark;
    /* Most bytes on_message may leave unconsumed in the input buffer (a
     * message being assembled); past it the connection is closed with one
     * rate-limited log line. Default 64 MiB; 0 means the default;
     * NET_UNLIMITED turns it off. */
    size_t max_input;
    /* Close after this long without input, checked by one repeating timer
     * per connection: the close comes 1x to 2x the timeout after the last
     * input. 0 = never (default). Without it (or keepalive) a connection
     * whose network path dies silently is noticed only when a write fails. */
    uint32_t idle_timeout_ms;
    bool tcp_nodelay;        /* default true */
    bool keepalive;          /* SO_KEEPALIVE, default false */
    /* Default false: when the peer half-closes, queued output is flushed and
     * then the connection closes. True: the connection stays open for
     * writing; on_peer_eof runs and the user calls shutdown or force_close. */
    bool half_close;
    /* Hard limit on queued output in bytes: a send that would queue more
     * fails with -ENOBUFS and queues nothing. 0 (default): no limit; the
     * high-water callback is the only brake. */
    size_t max_output;
    /* Default false: sends from other threads go through the connection's
     * wait-free write queue (see net_conn_send). True: each such send is
     * handed to the loop as a functor of its own (net_loop_queue_in_loop)
     * carrying a copy, as in netloop's first versions: simpler, slower
     * under many senders; kept for comparison (examples/xsend --path loop). */
    bool xsend_via_loop;
};

/* Fills the defaults above. Thread-safe. */
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
 * Returns 0, -ENOTCONN (closed, closing or shutting down), -ENOBUFS (would
 * pass the max_output option; nothing queued), -ENOMEM (nothing queued), or
 * on the loop thread the socket's errno (-EPIPE, -ECONNRESET: the connection
 * then closes, later). A send from another thread racing with shutdown() or
 * a close may return 0 and still be dropped. len 0 is a no-op returning 0.
 * Thread-safe. */
NET_EXPORT int net_conn_send(net_conn_t *conn, const void *data, size_t len);

/* Sends and consumes all readable bytes of buf (on success buf is empty;
 * on failure it is untouched). Same returns as net_conn_send(). Thread-safe
 * (buf itself is the caller's and must not be shared). */
NET_EXPORT int net_conn_send_buf(net_conn_t *conn, net_buf_t *buf);

/* Half-closes: once every queued byte is written, shuts down the write side
 * (the peer reads EOF); reading goes on until the peer closes. Returns 0 or
 * -ENOTCONN. Thread-safe. */
NET_EXPORT int net_conn_shutdown(net_conn_t *conn);

/* Closes now, dropping queued output; the down callback runs later on the
 * loop. Returns 0 or -ENOTCONN if already closed. Thread-safe. */
NET_EXPORT int net_conn_force_close(net_conn_t *conn);

/* Force-closes after delay_ms unless the connection is closed before.
 * Returns 0, -ENOTCONN or -ENOMEM. Thread-safe. */
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
 * queued from others. Returns 0, -ENOTCONN or -ENOMEM. Thread-safe. */
NET_EXPORT int net_conn_stop_read(net_conn_t *conn);
NET_EXPORT int net_conn_start_read(net_conn_t *conn);

/* TCP_NODELAY and SO_KEEPALIVE. Return 0, -ENOTCONN, or the setsockopt errno
 * (-EOPNOTSUPP on a Unix socket). Loop thread only. */
NET_EXPORT int net_conn_set_tcp_nodelay(net_conn_t *conn, bool on);
NET_EXPORT int net_conn_set_keepalive(net_conn_t *conn, bool on);

/* Changes the high-water mark (0 disables). Thread-safe. */
NET_EXPORT void net_conn_set_high_water_mark(net_conn_t *conn, size_t bytes);

/* The state (a snapshot). Thread-safe. */
NET_EXPORT net_conn_state_t net_conn_state(const net_conn_t *conn);

/* net_conn_state() == NET_CONN_CONNECTED. Thread-safe. */
NET_EXPORT bool net_conn_connected(const net_conn_t *conn);

/* A user pointer carried by the connection (NULL at first). Thread-safe. */
NET_EXPORT void net_conn_set_context(net_conn_t *conn, void *context);
NET_EXPORT void *net_conn_context(const net_conn_t *conn);

/* The connection's loop. Thread-safe. */
NET_EXPORT net_loop_t *net_conn_loop(const net_conn_t *conn);

/* A process-wide unique id (> 0), for logs and maps. Thread-safe. */
NET_EXPORT uint64_t net_conn_id(const net_conn_t *conn);

/* Local and peer addresses, fixed at creation; valid while a reference is
 * held. Thread-safe. */
NET_EXPORT const net_addr_t *net_conn_local_addr(const net_conn_t *conn);
NET_EXPORT const net_addr_t *net_conn_peer_addr(const net_conn_t *conn);

struct net_conn_stats {
    uint64_t bytes_received;
    uint64_t bytes_sent;  /* written to the socket */
    size_t output_queued; /* accepted by send, not yet written */
};

/* Counters (a snapshot). Thread-safe. */
NET_EXPORT void net_conn_stats(const net_conn_t *conn, struct net_conn_stats *out);

#ifdef __cplusplus
}
#endif

#endif
