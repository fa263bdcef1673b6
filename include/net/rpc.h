/* netloop — RPC over NRPC/1 (docs/protocol.md).
 *
 * A net_rpc_server answers requests by method name; a net_rpc_client keeps
 * one connection to one server and pipelines every call over it, from any
 * number of threads, matching replies by call id.
 *
 * Status codes: 0 is OK; 1..99 are the protocol's (NET_RPC_UNKNOWN_METHOD ...);
 * applications use 100 and up. TIMEOUT, DISCONNECTED, CANCELLED and
 * PROTOCOL_ERROR are local outcomes, never sent on the wire. */
#ifndef NET_RPC_H
#define NET_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <net/addr.h>
#include <net/loop.h>
#include <net/tcp_client.h>
#include <net/tcp_server.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Statuses are uint32_t values (macros, since the local ones do not fit a
 * C enum). */
#define NET_RPC_OK 0u
#define NET_RPC_UNKNOWN_METHOD 1u
#define NET_RPC_BAD_REQUEST 2u
#define NET_RPC_INTERNAL 3u
#define NET_RPC_OVERLOADED 4u
#define NET_RPC_SHUTTING_DOWN 5u
#define NET_RPC_APP_BASE 100u /* first code for applications */
/* Local outcomes: produced by this process, never sent nor accepted from the
 * wire (0xFFFFFF00 and up). */
#define NET_RPC_TIMEOUT 0xFFFFFF01u
#define NET_RPC_DISCONNECTED 0xFFFFFF02u
#define NET_RPC_CANCELLED 0xFFFFFF03u
#define NET_RPC_PROTOCOL_ERROR 0xFFFFFF04u

/* A name for a status: "OK", "UNKNOWN_METHOD", ..., "TIMEOUT"; codes from
 * NET_RPC_APP_BASE up give "APPLICATION". Static string. Thread-safe. */
NET_EXPORT const char *net_rpc_status_name(uint32_t status);

/* ---- Server ------------------------------------------------------------------ */

typedef struct net_rpc_server net_rpc_server_t;
typedef struct net_rpc_req net_rpc_req_t;

/* Handles one request. body (body_len bytes, not NUL-terminated) is valid
 * only during the call: copy what you keep. The handler must answer exactly
 * once with net_rpc_reply(), now or later, from any thread; until then req
 * stays valid. Runs on the connection's loop thread (or on a worker thread
 * for handlers registered as blocking). */
typedef void (*net_rpc_handler_fn)(net_rpc_req_t *req, const void *body, size_t body_len,
                                   void *arg);

/* For a millisecond timeout option: no timeout. */
#define NET_RPC_NO_TIMEOUT UINT32_MAX

/* Server options. For every field 0 means the default given here; sizes
 * take NET_UNLIMITED and timeouts NET_RPC_NO_TIMEOUT for "off".
 *
 * What a peer can make the server hold, and what bounds it:
 *  - unanswered requests: max_in_flight per connection;
 *  - queued replies: server.conn.backpressure_mark per connection (default
 *    4 MiB; it is this limit): at the mark the server stops reading the
 *    connection until its output is below half of it, so a peer that sends
 *    and never reads is slowed by TCP;
 *  - input: one frame (max_frame, checked on its header) per connection,
 *    and server.memory_budget over all of them;
 *  - blocking requests' body copies waiting for a worker: the memory
 *    budget over all connections (beyond it OVERLOADED);
 *  - time: frame_timeout_ms and idle_timeout_ms. */
struct net_rpc_server_options {
    /* I/O threads, memory_budget, per-connection limits: see
     * net_server_options_init. The server sets conn.half_close (a peer's
     * half-close is answered, see net_rpc_server_new) and raises
     * conn.max_input to hold a largest frame. */
    struct net_server_options server;
    size_t max_frame;        /* largest frame accepted; default 64 MiB */
    /* Unanswered requests per connection. At the limit the server stops
     * decoding and reading that connection until a reply makes room: the
     * peer's further requests wait in TCP, and all of them are answered in
     * the end (none is refused). Default 1024; NET_UNLIMITED: no limit. */
    size_t max_in_flight;
    size_t worker_threads;   /* threads for blocking handlers; default 0 */
    /* An unfinished frame must complete within this long of its first
     * byte (a peer trickling bytes does not extend it); then the
     * connection ends like on a protocol error: the requests read before
     * are answered, the connection is shut down and closed.
     * Default 30000 (30 s). */
    uint32_t frame_timeout_ms;
    /* A connection with nothing in flight, no reply queued, no unfinished
     * frame and no input for this long is closed. A connection with a call
     * in flight is never idle. Default 300000 (5 min): a client pausing
     * between bursts keeps its connection while abandoned ones do not pile
     * up; net_rpc_client reconnects by itself (a call sent just as the
     * server closes may end DISCONNECTED). Both timeouts are checked by one
     * timer per connection every half of the shorter one: a frame is cut
     * between 1x and 1.5x its timeout; an idle connection between 1x the
     * idle timeout and that plus the shorter timeout, counted from its last
     * input or from when its last answer was done. */
    uint32_t idle_timeout_ms;
};

/* Fills the defaults above (and server.conn.half_close = true, which the
 * server sets anyway). Thread-safe. */
NET_EXPORT void net_rpc_server_options_init(struct net_rpc_server_options *opt);

/* Creates a server on `loop` bound to addr (see net_server_new). opt NULL
 * for defaults. Returns 0, -EINVAL, -ENOMEM, NET_EWRONGTHREAD, or the bind
 * errno. Loop thread only.
 * Connections end cleanly (docs/protocol.md, section 8):
 *  - the peer half-closes (shutdown(SHUT_WR)): every request read is
 *    answered, then the server shuts its side down and the connection
 *    closes; a graceful stop bounds the wait by its drain time;
 *  - a protocol error (or a frame over max_frame or over the memory budget,
 *    refused on its header, or frame_timeout_ms): one rate-limited log
 *    line, the rest of the input is dropped, the requests read before the
 *    bad frame are answered, then the server shuts down its side and
 *    force-closes 5 s later if the peer has not closed (a frame timeout
 *    with nothing to answer closes at once). */
NET_EXPORT int net_rpc_server_new(net_loop_t *loop, const net_addr_t *addr,
                                  const struct net_rpc_server_options *opt,
                                  net_rpc_server_t **out);

/* Registers handler for method (1..255 bytes; copied). blocking: run it on
 * the worker pool (needs worker_threads > 0) instead of the loop. Register
 * before starting. Returns 0, -EINVAL, -EEXIST, -ENOMEM, -EBUSY (started).
 * Loop thread only. */
NET_EXPORT int net_rpc_server_register(net_rpc_server_t *server, const char *method,
                                       net_rpc_handler_fn fn, void *arg, bool blocking);

/* Starts listening. Returns as net_server_start(). Thread-safe. */
NET_EXPORT int net_rpc_server_start(net_rpc_server_t *server);

/* Graceful stop: new requests get SHUTTING_DOWN; requests in flight have
 * until drain_ms to be answered (connections a peer half-closed too); then
 * connections close. done (may be NULL) runs on the loop when everything is
 * closed, never inside this call. Returns 0, -EALREADY. Loop thread only. */
NET_EXPORT int net_rpc_server_stop(net_rpc_server_t *server, uint64_t drain_ms,
                                   void (*done)(net_rpc_server_t *server, void *arg), void *arg);

/* Frees a stopped (or never started) server: returns 0 or -EBUSY. Replies
 * still outstanding afterwards are safe no-ops. Loop thread only. */
NET_EXPORT int net_rpc_server_free(net_rpc_server_t *server);

/* The bound address. Thread-safe. */
NET_EXPORT const net_addr_t *net_rpc_server_addr(const net_rpc_server_t *server);

struct net_rpc_server_stats {
    struct net_server_stats tcp; /* connections, memory budget and use, budget pauses */
    size_t in_flight;            /* requests read and not yet answered, now */
    size_t paused;               /* connections not read now for max_in_flight */
    uint64_t in_flight_pauses;   /* times a connection paused for max_in_flight */
    uint64_t output_pauses;      /* times one paused for replies at the backpressure mark */
    uint64_t frame_timeouts;     /* connections ended for frame_timeout_ms */
    uint64_t idle_closes;        /* connections closed for idle_timeout_ms */
    uint64_t protocol_errors;    /* connections ended for a protocol error */
    uint64_t worker_refusals;    /* blocking requests refused OVERLOADED */
    size_t batch_bytes;          /* held by the connections' reply batches, now */
    size_t worker_bytes;         /* body copies of blocking requests, now */
};

/* Counters and gauges (a snapshot; each field is read on its own). Until
 * net_rpc_server_free. Thread-safe. */
NET_EXPORT void net_rpc_server_stats(const net_rpc_server_t *server,
                                     struct net_rpc_server_stats *out);

/* Answers req with status and body (copied) and frees req: never use it
 * again. If the connection is gone the reply is dropped and 0 is still
 * returned. A reply from another thread goes through the connection's
 * wait-free write queue (no lock). Returns 0; -ENOMEM or -ENOBUFS (no
 * memory, or the connection's max_output option is reached: req is freed
 * all the same, and the connection is closed, since the caller would
 * otherwise wait forever); or
 * -EINVAL for a NULL req, a NULL body with body_len > 0, body_len > 4 GiB - 1
 * or a local-only status (>= 0xFFFFFF00) -- then req is NOT freed: reply
 * again correctly. A reply that makes room below max_in_flight lets the
 * connection be read again (applied on its loop, later, never inside this
 * call). Thread-safe. */
NET_EXPORT int net_rpc_reply(net_rpc_req_t *req, uint32_t status, const void *body,
                             size_t body_len);

/* The method name of req (NUL-terminated, valid until the reply) and its
 * call id. Thread-safe. */
NET_EXPORT const char *net_rpc_req_method(const net_rpc_req_t *req);
NET_EXPORT uint64_t net_rpc_req_call_id(const net_rpc_req_t *req);

/* The connection the request came on (no reference taken: valid until the
 * reply). Its context slot (net_conn_set_context) is the user's: the server
 * keeps its own state elsewhere. Thread-safe. */
NET_EXPORT net_conn_t *net_rpc_req_conn(const net_rpc_req_t *req);

/* ---- Client ------------------------------------------------------------------ */

typedef struct net_rpc_client net_rpc_client_t;

/* The one outcome of a call, on the client's loop thread: status NET_RPC_OK
 * with the response body, a remote error code with its UTF-8 message as
 * body, or a local outcome (TIMEOUT, DISCONNECTED, CANCELLED,
 * PROTOCOL_ERROR) with an empty body. body is valid only during the call. */
typedef void (*net_rpc_done_fn)(net_rpc_client_t *client, uint32_t status, const void *body,
                                size_t body_len, void *arg);

struct net_rpc_client_options {
    struct net_client_options client; /* connect timeout, retry, reconnect;
                                         net_client_options_init, then retry
                                         and reconnect on by default here;
                                         conn.backpressure_mark is always
                                         off: a client that stopped reading
                                         because its requests backed up
                                         would deadlock with a server that
                                         stopped reading because its
                                         replies did */
    size_t max_frame;          /* default 64 MiB */
    size_t max_outstanding;    /* calls in flight before OVERLOADED; default 65536 */
};

/* Fills the defaults above. Thread-safe. */
NET_EXPORT void net_rpc_client_options_init(struct net_rpc_client_options *opt);

/* Creates a client for the server at addr, on `loop`, and starts
 * connecting. opt NULL for defaults. Returns 0, -EINVAL, -ENOMEM,
 * NET_EWRONGTHREAD. Loop thread only. */
NET_EXPORT int net_rpc_client_new(net_loop_t *loop, const net_addr_t *addr,
                                  const struct net_rpc_client_options *opt,
                                  net_rpc_client_t **out);

/* Starts a call: method (1..255 bytes), body (copied), a timeout (0 = none)
 * and the callback that receives the outcome exactly once, later, on the
 * client's loop (never inside this call). The call is started on the
 * calling thread without a lock: its frame goes onto the connection's
 * wait-free write queue, and calls from many threads (or many calls made
 * in one loop iteration) leave in few writes. Returns 0 when the call was accepted (the
 * callback will run), or -EINVAL / -ENOMEM / -ESHUTDOWN (client stopped) when
 * it was not (the callback will not run). A call made while disconnected
 * is accepted and waits for the connection: it is sent when the client
 * connects, or ends with DISCONNECTED when the next connect attempt fails
 * (with the default backoff that may take up to retry_max_ms, 10 s; give
 * calls a timeout to bound the wait). A call beyond max_outstanding is
 * accepted and ends with OVERLOADED; so is one whose frame the connection refuses (OVERLOADED when
 * its max_output is reached, INTERNAL without memory). Thread-safe. */
NET_EXPORT int net_rpc_call(net_rpc_client_t *client, const char *method, const void *body,
                            size_t body_len, uint64_t timeout_ms, net_rpc_done_fn done,
                            void *arg);

/* Blocking call for threads other than the client's loop: waits for the
 * outcome and returns it as *status, with the body in *body_out (malloc'd,
 * caller frees; NULL if empty) and *len_out. Returns 0 when an outcome was
 * delivered (check *status), NET_EWRONGTHREAD on the loop thread (it would
 * deadlock), or net_rpc_call's errors. Thread-safe. */
NET_EXPORT int net_rpc_call_sync(net_rpc_client_t *client, const char *method,
                                 const void *body, size_t body_len, uint64_t timeout_ms,
                                 uint32_t *status, void **body_out, size_t *len_out);

/* True while connected. Thread-safe. */
NET_EXPORT bool net_rpc_client_connected(net_rpc_client_t *client);

/* Stops: every outstanding call ends with CANCELLED (on the loop, exactly
 * once), the connection closes, later calls return -ESHUTDOWN. Idempotent.
 * Thread-safe. */
NET_EXPORT void net_rpc_client_stop(net_rpc_client_t *client);

/* Stops and frees the client; CANCELLED callbacks run before this returns
 * (the one documented exception), and threads waiting in net_rpc_call_sync
 * return with CANCELLED (keep the loop until they have returned: a caller
 * may still be finishing its submission). No other call may use the client
 * from now on. Loop thread only. */
NET_EXPORT void net_rpc_client_free(net_rpc_client_t *client);

struct net_rpc_client_stats {
    uint64_t calls, completed, late_replies, timeouts, disconnected;
    size_t outstanding;
};

/* Counters (a snapshot). Thread-safe. */
NET_EXPORT void net_rpc_client_stats(net_rpc_client_t *client, struct net_rpc_client_stats *out);

#ifdef __cplusplus
}
#endif

#endif
