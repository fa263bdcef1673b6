/* netloop — RPC over NRPC/1 and brpc's baidu_std (docs/protocol.md).
 *
 * A net_rpc_server answers requests by method name, in either protocol on
 * the same port (chosen per connection from its first bytes); a
 * net_rpc_client keeps one connection to one server and pipelines every
 * call over it, from any number of threads, matching replies by call id
 * (baidu_std: correlation_id).
 *
 * Lifetime: both objects follow the library's one close rule. Create on the
 * loop thread; net_rpc_server_close() / net_rpc_client_close() may be called
 * once from any thread (a second call returns -EALREADY), also from inside
 * any callback of the object; the object winds down on its loop and then
 * runs the close's done callback there, never inside the close call. The
 * object's memory goes in or after done: keep the loop running until done
 * has run, and use the handle no more once done has returned.
 *
 * Errors: functions return 0 or a negative errno / NET_E* code
 * (include/net/error.h), exactly as listed per function.
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

/* The wire protocols. A baidu_std method is named "Service.Method", the
 * service's full protobuf name and the method's, e.g.
 * "example.EchoService.Echo"; statuses map to brpc's error codes and back
 * (docs/protocol.md, "Statuses in baidu_std"). */
enum net_rpc_protocol {
    NET_RPC_NRPC = 0,      /* NRPC/1, netloop's own (the default) */
    NET_RPC_BAIDU_STD = 1, /* brpc's baidu_std: talks to brpc and its kin */
};

/* A name for a status: "OK", "UNKNOWN_METHOD", ..., "TIMEOUT"; codes from
 * NET_RPC_APP_BASE up give "APPLICATION". Static string. Thread-safe. */
NET_EXPORT const char *net_rpc_status_name(uint32_t status);

/* ---- Server ------------------------------------------------------------------ */

typedef struct net_rpc_server net_rpc_server_t;
typedef struct net_rpc_req net_rpc_req_t;

/* Handles one request. body (body_len bytes, not NUL-terminated) is valid
 * only during the call: copy what you keep. A baidu_std request for
 * service S, method M runs the handler registered as "S.M"; its body is
 * the serialized protobuf message, and its attachment is at
 * net_rpc_req_attachment(). The handler must answer exactly
 * once with net_rpc_reply(), now or later, from any thread; until then req
 * stays valid (also after the server's close: see net_rpc_server_close).
 * Runs on the connection's loop thread (or on a worker thread for handlers
 * registered as blocking). */
typedef void (*net_rpc_handler_fn)(net_rpc_req_t *req, const void *body, size_t body_len,
                                   void *arg);

/* For a millisecond timeout option: no timeout (the library's one
 * spelling, include/net/tcp_conn.h). */
#define NET_RPC_NO_TIMEOUT NET_NO_TIMEOUT

/* Server options. For every field 0 means the default given here (an
 * all-zero struct is valid and means the defaults); sizes take
 * NET_UNLIMITED and timeouts NET_RPC_NO_TIMEOUT for "off".
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
     * net_server_options_init (name: default "rpc"). The server sets
     * conn.half_close (a peer's half-close is answered, see
     * net_rpc_server_new) and raises conn.max_input to hold a largest
     * frame. */
    struct net_server_options server;
    /* Largest frame accepted. Default 64 MiB; NET_UNLIMITED: the
     * protocol's own limit (a body of 4 GiB - 1). */
    size_t max_frame;
    /* Unanswered requests per connection. At the limit the server stops
     * decoding and reading that connection until a reply makes room: the
     * peer's further requests wait in TCP, and all of them are answered in
     * the end (none is refused). Default 1024; NET_UNLIMITED: no limit. */
    size_t max_in_flight;
    /* Threads for blocking handlers. Default (0): none, and blocking
     * handlers cannot be registered. */
    size_t worker_threads;
    /* An unfinished frame must complete within this long of its first
     * byte (a peer trickling bytes does not extend it); then the
     * connection ends like on a protocol error: the requests read before
     * are answered, the connection is shut down and closed.
     * Default 30000 (30 s); NET_RPC_NO_TIMEOUT: none. */
    uint32_t frame_timeout_ms;
    /* A connection with nothing in flight, no reply queued, no unfinished
     * frame and no input for this long is closed. A connection with a call
     * in flight is never idle. Default 300000 (5 min): a client pausing
     * between bursts keeps its connection while abandoned ones do not pile
     * up; net_rpc_client reconnects by itself (a call sent just as the
     * server closes may end DISCONNECTED). NET_RPC_NO_TIMEOUT: never. Both
     * timeouts are checked by one timer per connection every half of the
     * shorter one: a frame is cut between 1x and 1.5x its timeout; an idle
     * connection between 1x the idle timeout and that plus the shorter
     * timeout, counted from its last input or from when its last answer
     * was done. */
    uint32_t idle_timeout_ms;
};

/* Fills the defaults above (and server.conn.half_close = true, which the
 * server sets anyway). Thread-safe. */
NET_EXPORT void net_rpc_server_options_init(struct net_rpc_server_options *opt);

/* Creates a server on `loop` bound to addr (see net_server_new) and stores
 * it in *out; it does not listen until net_rpc_server_start. opt (copied)
 * may be NULL for the defaults. Returns 0, -EINVAL (a NULL argument),
 * -ENOMEM, -EAGAIN (no worker thread could be made), NET_EWRONGTHREAD (not
 * on loop's thread: nothing made), or the errno of socket/bind
 * (-EADDRINUSE, -EACCES, ...). Loop thread only.
 * Connections end cleanly (docs/protocol.md, section 8):
 *  - the peer half-closes (shutdown(SHUT_WR)): every request read is
 *    answered, then the server shuts its side down and the connection
 *    closes; a close of the server bounds the wait by its drain time;
 *  - a protocol error (or a frame over max_frame or over the memory budget,
 *    refused on its header, or frame_timeout_ms): one rate-limited log
 *    line, the rest of the input is dropped, the requests read before the
 *    bad frame are answered, then the server shuts down its side and
 *    force-closes 5 s later if the peer has not closed (a frame timeout
 *    with nothing to answer closes at once). */
NET_EXPORT int net_rpc_server_new(net_loop_t *loop, const net_addr_t *addr,
                                  const struct net_rpc_server_options *opt,
                                  net_rpc_server_t **out);

/* Registers handler fn for method (1..255 bytes; copied) with arg for it.
 * blocking: run it on the worker pool instead of the connection's loop.
 * Register before starting. Returns 0; -EINVAL (NULL server or fn, a
 * method of 0 or more than 255 bytes, or blocking without worker_threads);
 * -EEXIST (method registered already); -ENOMEM; -EBUSY (the server was
 * started or closed: nothing changes); NET_EWRONGTHREAD (not on the
 * server's loop thread: nothing changes). Loop thread only. */
NET_EXPORT int net_rpc_server_register(net_rpc_server_t *server, const char *method,
                                       net_rpc_handler_fn fn, void *arg, bool blocking);

/* Starts the I/O threads and listens (see net_server_start). Idempotent.
 * Returns 0, -EINVAL (NULL), -ESHUTDOWN (close was called), or the errno
 * of listen/thread creation (then the server is not started). From
 * another thread it is applied on the server's loop and returns 0 (errors
 * are logged). Thread-safe. */
NET_EXPORT int net_rpc_server_start(net_rpc_server_t *server);

/* The close's done callback (the one close rule): called once, on the
 * server's loop, when the server is closed; the pointer identifies it only
 * for the duration of the call (net_rpc_server_addr and
 * net_rpc_server_stats may still be called inside done); after done
 * returns the server is gone. */
typedef void (*net_rpc_server_close_fn)(net_rpc_server_t *server, void *arg);

/* Closes the server gracefully. From the moment this returns, new requests
 * are answered SHUTTING_DOWN (also on a connection accepted meanwhile).
 * Requests in flight have drain_ms to be answered (0: no wait); as soon as
 * none is left, or the time is up, the listening socket closes, every
 * connection is half-closed after its queued replies, and whatever is still
 * open when the drain time is over is force-closed. Blocking handlers still
 * queued for a worker run before done (they reply into closed
 * connections). Then
 * done (may be NULL) runs with arg on the server's loop, never inside this
 * call. Requests still unanswered then stay valid: a reply to them is a
 * safe no-op that frees them (each holds what its reply needs; that memory
 * goes with the last of them), so a handler holding a request never delays
 * done. Keep the loop running until done.
 * Returns 0 (the close started), -EALREADY (a close was started before:
 * nothing changes, this done is not kept) or -EINVAL (NULL server).
 * Thread-safe; also from inside a handler or any callback of the server. */
NET_EXPORT int net_rpc_server_close(net_rpc_server_t *server, uint64_t drain_ms,
                                    net_rpc_server_close_fn done, void *arg);

/* The bound address (with the real port when 0 was asked), valid until
 * done. Thread-safe. */
NET_EXPORT const net_addr_t *net_rpc_server_addr(const net_rpc_server_t *server);

struct net_rpc_server_stats {
    struct net_server_stats tcp; /* connections, memory budget and use, budget
                                    pauses; frozen when the connections are gone */
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

/* The same type by a name that C++ does not hide behind the function of
 * the same name. */
typedef struct net_rpc_server_stats net_rpc_server_stats_t;

/* Counters and gauges into *out (a snapshot; each field is read on its
 * own). Until done returns (also inside done). Thread-safe. */
NET_EXPORT void net_rpc_server_stats(const net_rpc_server_t *server,
                                     struct net_rpc_server_stats *out);

/* Answers req with status and body (copied) and frees req: never use it
 * again. If the connection is gone (or the server closed) the reply is
 * dropped and 0 is still returned. A reply from another thread goes through
 * the connection's wait-free write queue (no lock). Returns 0; -ENOMEM or
 * -ENOBUFS (no memory, or the connection's max_output option is reached:
 * req is freed all the same, and the connection is closed, since the
 * caller would otherwise wait forever); or -EINVAL for a NULL req, a NULL
 * body with body_len > 0, body_len > 4 GiB - 1 or a local-only status
 * (>= 0xFFFFFF00) -- then req is NOT freed: reply again correctly. A reply
 * that makes room below max_in_flight lets the connection be read again
 * (applied on its loop, later, never inside this call). Thread-safe. */
NET_EXPORT int net_rpc_reply(net_rpc_req_t *req, uint32_t status, const void *body,
                             size_t body_len);

/* Answers req like net_rpc_reply, with attachment_len bytes of attachment
 * (copied) after body: baidu_std's attachment, sent on success and on
 * error alike. Returns as net_rpc_reply, and also -EINVAL (req NOT freed)
 * for a NULL attachment with attachment_len > 0, attachment_len over
 * INT32_MAX, body and attachment together over 4 GiB - 1 less the meta, or
 * attachment_len > 0 on an NRPC request (NRPC/1 has no attachment).
 * net_rpc_reply(req, s, b, n) is this with no attachment. Thread-safe. */
NET_EXPORT int net_rpc_reply_with_attachment(net_rpc_req_t *req, uint32_t status,
                                             const void *body, size_t body_len,
                                             const void *attachment, size_t attachment_len);

/* The attachment of req (baidu_std) in *len, and its address; NULL with
 * *len 0 when it has none (always for NRPC). Valid as long as the body
 * the handler was given: during the handler's call only. len must not be
 * NULL. Thread-safe. */
NET_EXPORT const void *net_rpc_req_attachment(const net_rpc_req_t *req, size_t *len);

/* The protocol req came in. Thread-safe. */
NET_EXPORT enum net_rpc_protocol net_rpc_req_protocol(const net_rpc_req_t *req);

/* The method name of req (NUL-terminated, valid until the reply; for
 * baidu_std "Service.Method") and its call id (baidu_std: its
 * correlation_id). Thread-safe. */
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

/* The connection came up (up true) or went down (false): on the client's
 * loop, alternating, starting with up; never inside a call of this API. */
typedef void (*net_rpc_connected_fn)(net_rpc_client_t *client, bool up, void *arg);

/* Client options. For every field 0 (false, NULL) means the default given
 * here: an all-zero struct is valid and means the defaults. */
struct net_rpc_client_options {
    /* Connect timeout, backoff and max_attempts: see
     * net_client_options_init. The RPC client always retries and
     * reconnects (retry and reconnect are set: a call can only be served
     * over a connection); max_attempts (default 0: unlimited) bounds each
     * round of attempts, after which the calls waiting end DISCONNECTED and
     * the next call starts a new round. conn.backpressure_mark is always
     * off: a client that stopped reading because its requests backed up
     * would deadlock with a server that stopped reading because its
     * replies did. conn.max_input is raised to hold a largest frame. */
    struct net_client_options client;
    /* Largest response accepted (a larger one is a protocol error).
     * Default 64 MiB; NET_UNLIMITED: the protocol's own limit. */
    size_t max_frame;
    /* Calls in flight before a call is refused OVERLOADED. Default 65536;
     * NET_UNLIMITED: no limit. */
    size_t max_outstanding;
    /* What a call made while not connected does. Default (false): it waits
     * for the connection until its own timeout, or, without one, until a
     * round of attempts gives up (max_attempts) or the client is closed.
     * true: it ends DISCONNECTED as soon as the next connect attempt fails. */
    bool fail_fast;
    /* Called with arg each time the connection comes up or goes down (see
     * net_rpc_connected_fn); may be NULL. It may call anything in this API
     * (net_rpc_call, net_rpc_client_close ...). */
    net_rpc_connected_fn on_connected;
    void *arg;
    /* The protocol spoken: NET_RPC_NRPC (default) or NET_RPC_BAIDU_STD, to
     * call brpc servers (and netloop's, which answer both). */
    enum net_rpc_protocol protocol;
};

/* Fills the defaults above. Thread-safe. */
NET_EXPORT void net_rpc_client_options_init(struct net_rpc_client_options *opt);

/* Creates a client for the server at addr, on `loop`, stores it in *out and
 * starts connecting. opt (copied) may be NULL for the defaults. Returns 0,
 * -EINVAL (a NULL argument, an address family other than IPv4, IPv6 or
 * Unix, a protocol that is not one of enum net_rpc_protocol), -ENOMEM,
 * NET_EWRONGTHREAD (not on loop's thread: nothing made).
 * Loop thread only. */
NET_EXPORT int net_rpc_client_new(net_loop_t *loop, const net_addr_t *addr,
                                  const struct net_rpc_client_options *opt,
                                  net_rpc_client_t **out);

/* Starts a call: method (1..255 bytes), body (copied), a timeout (0 or
 * NET_RPC_NO_TIMEOUT: none) and the callback that receives the outcome
 * exactly once, later, on the client's loop (never inside this call), with
 * arg. The call is started on the calling thread without a lock: its frame
 * goes onto the connection's wait-free write queue, and calls from many
 * threads (or many calls made in one loop iteration) leave in few writes.
 * A call made while not connected waits for the connection (see
 * fail_fast); its timeout counts from now, waiting included. A call beyond
 * max_outstanding is accepted and ends with OVERLOADED; so is one whose
 * frame the connection refuses (OVERLOADED when its max_output is reached,
 * INTERNAL without memory). A call in flight when the connection is lost
 * ends DISCONNECTED (it is not sent again: it may have run).
 * Returns 0 when the call was accepted (the callback will run), or
 * -EINVAL (NULL client or done, a bad method length, a NULL body with
 * body_len > 0, body_len > 4 GiB - 1), -ENOMEM or -ESHUTDOWN (close was
 * called) when it was not (the callback will not run). Thread-safe; also
 * from inside any callback of the client. */
NET_EXPORT int net_rpc_call(net_rpc_client_t *client, const char *method, const void *body,
                            size_t body_len, uint64_t timeout_ms, net_rpc_done_fn done,
                            void *arg);

/* net_rpc_call with attachment_len bytes of attachment (copied) sent after
 * body: baidu_std's attachment. With baidu_std, method is
 * "Service.Method", split at its last '.'. Returns as net_rpc_call, and
 * also -EINVAL for a NULL attachment with attachment_len > 0, an
 * attachment over INT32_MAX, body and attachment together over the
 * frame's limit (4 GiB - 1 less the meta), attachment_len > 0 on an NRPC
 * client (NRPC/1 has no
 * attachment), or, with baidu_std, a method without a '.' between a
 * non-empty service and method. net_rpc_call is this with no attachment.
 * Thread-safe. */
NET_EXPORT int net_rpc_call_with_attachment(net_rpc_client_t *client, const char *method,
                                            const void *body, size_t body_len,
                                            const void *attachment, size_t attachment_len,
                                            uint64_t timeout_ms, net_rpc_done_fn done,
                                            void *arg);

/* Inside a net_rpc_done_fn of client, on its loop thread: the attachment
 * of the response being delivered in *len, and its address (valid until
 * that done returns); NULL with *len 0 when it has none, for a local
 * outcome, and outside a done. len must not be NULL. Loop thread only. */
NET_EXPORT const void *net_rpc_response_attachment(const net_rpc_client_t *client, size_t *len);

/* Blocking call for threads other than the client's loop: makes the call
 * as net_rpc_call, waits for its outcome and returns it in *status, with
 * the body in *body_out (malloc'd, the caller frees it with free(); NULL
 * when empty; body_out may be NULL to drop it) and its length in *len_out
 * (may be NULL). A close of the client ends the wait with CANCELLED at the
 * latest when its drain is over; the client's done waits for this call to
 * return. Returns 0 when an outcome was delivered (check *status),
 * -EINVAL (NULL client or status, or as net_rpc_call), NET_EWRONGTHREAD on
 * the client's loop thread (it would deadlock), or net_rpc_call's other
 * errors (-ENOMEM, -ESHUTDOWN). Thread-safe (except the loop thread). */
NET_EXPORT int net_rpc_call_sync(net_rpc_client_t *client, const char *method,
                                 const void *body, size_t body_len, uint64_t timeout_ms,
                                 uint32_t *status, void **body_out, size_t *len_out);

/* The outcome of net_rpc_call_sync_with_attachment. body and attachment
 * are malloc'd copies the caller owns and frees with free() (not the
 * allocator of net_replace_allocator); each is NULL when its length is 0.
 * For a status other than OK, body is the error message. */
struct net_rpc_sync_reply {
    uint32_t status;
    void *body;
    size_t body_len;
    void *attachment; /* baidu_std's response attachment; NULL for NRPC */
    size_t attachment_len;
};

/* net_rpc_call_sync with attachment_len bytes of attachment (copied) sent
 * after body, as net_rpc_call_with_attachment, and the whole outcome in
 * *reply: status, body and the response's attachment. When memory for a
 * copy runs out the status is INTERNAL (the reply's bytes are dropped).
 * It waits, and a close ends the wait, as for net_rpc_call_sync. Returns 0 when an outcome was delivered (*reply is set: check its
 * status), -EINVAL (NULL client or reply, or as
 * net_rpc_call_with_attachment: an attachment on an NRPC client, say),
 * NET_EWRONGTHREAD on the client's loop thread (it would deadlock), or
 * net_rpc_call's other errors (-ENOMEM, -ESHUTDOWN); *reply is untouched
 * when it returns an error. Thread-safe (except the loop thread). */
NET_EXPORT int net_rpc_call_sync_with_attachment(net_rpc_client_t *client, const char *method,
                                                 const void *body, size_t body_len,
                                                 const void *attachment, size_t attachment_len,
                                                 uint64_t timeout_ms,
                                                 struct net_rpc_sync_reply *reply);

/* True while connected (a snapshot). Thread-safe. */
NET_EXPORT bool net_rpc_client_connected(net_rpc_client_t *client);

/* The close's done callback (the one close rule): called once, on the
 * client's loop, when the client is closed; the pointer identifies it only
 * for the duration of the call (net_rpc_client_stats and
 * net_rpc_client_connected may still be called inside done); after done
 * returns the client is gone. */
typedef void (*net_rpc_client_close_fn)(net_rpc_client_t *client, void *arg);

/* Closes the client. From the moment this returns, new calls return
 * -ESHUTDOWN. Calls outstanding have drain_ms (0: none) to complete -- a
 * call still waiting for the connection is sent if it comes up meanwhile;
 * then every call left ends CANCELLED (on the loop, exactly once), threads
 * in net_rpc_call_sync return with CANCELLED, connect attempts stop and
 * the connection closes (on_connected reports it down). done (may be NULL)
 * runs with arg on the client's loop once the last of these is over,
 * including the return of every net_rpc_call_sync caller; never inside
 * this call. Keep the loop running until done; no call may use the client
 * once done has returned (a call racing the close returns -ESHUTDOWN, but
 * it must have returned before done runs).
 * Returns 0 (the close started), -EALREADY (a close was started before:
 * nothing changes, this done is not kept) or -EINVAL (NULL client).
 * Thread-safe; also from inside any callback of the client (a call's done,
 * on_connected). */
NET_EXPORT int net_rpc_client_close(net_rpc_client_t *client, uint64_t drain_ms,
                                    net_rpc_client_close_fn done, void *arg);

struct net_rpc_client_stats {
    uint64_t calls;        /* accepted by net_rpc_call (and _sync) */
    uint64_t completed;    /* outcomes delivered */
    uint64_t late_replies; /* responses to calls that had ended (timed out) */
    uint64_t timeouts;     /* calls ended TIMEOUT */
    uint64_t disconnected; /* calls ended DISCONNECTED */
    size_t outstanding;    /* accepted and not yet completed, now */
};

/* The same type by a name that C++ does not hide behind the function of
 * the same name. */
typedef struct net_rpc_client_stats net_rpc_client_stats_t;

/* Counters into *out (a snapshot). Until done returns (also inside done).
 * Thread-safe. */
NET_EXPORT void net_rpc_client_stats(net_rpc_client_t *client, struct net_rpc_client_stats *out);

#ifdef __cplusplus
}
#endif

#endif
