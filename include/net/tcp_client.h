/* netloop — a TCP client: one outgoing connection, with retry.
 *
 * A net_client connects to one address from its loop with a non-blocking
 * connect and a timeout. A failed attempt is retried with exponential backoff
 * (initial delay doubling up to a maximum) when retry is on; an established
 * connection that drops is re-made when reconnect is on. Connecting to itself
 * (same local and peer address, possible on loopback) is detected and treated
 * as a failed attempt (NET_ESELFCONNECT).
 *
 * Every connect request ends exactly once: either the connection callback
 * reports it up, or the failure callback runs with the reason (-ECONNREFUSED,
 * -ETIMEDOUT, NET_ESELFCONNECT, ..., or NET_ECANCELLED when disconnect or
 * close ended it). With retry on, failure runs for each failed attempt with
 * `will_retry` true, and once more with it false when the client gives up
 * or is cancelled. (A connection that comes up and later drops ends with the
 * down callback; a reconnect after it is a new request.)
 *
 * Threads: net_client_new on the loop's thread; connect, disconnect, close
 * and the getters from any thread, and from inside any of the client's
 * callbacks. Callbacks run on the loop thread, never inside the call that
 * triggered them: connect, disconnect and close take effect on the loop's
 * next turn, even when called on the loop thread.
 *
 * Lifetime (the one close rule): net_client_close() cancels what is in
 * flight, lets the connection drain for drain_ms, then calls done on the
 * loop; after done the memory is gone. Close is the only way to end a
 * client. Keep the loop running until done has run. */
#ifndef NET_TCP_CLIENT_H
#define NET_TCP_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include <net/addr.h>
#include <net/loop.h>
#include <net/tcp_conn.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct net_client net_client_t;

/* A connect attempt failed with err (a negative errno or NET_E* code);
 * will_retry says whether another attempt follows. On the loop thread. */
typedef void (*net_connect_failed_fn)(net_client_t *client, int err, bool will_retry,
                                      void *arg);

/* Options. An all-zero struct is valid: 0 in every field is its default. */
struct net_client_options {
    /* Per attempt. 0: the default, 5000; NET_NO_TIMEOUT: no timeout of
     * ours (the kernel gives up on its own, after a minute or more). */
    uint32_t connect_timeout_ms;
    bool retry;                  /* retry failed attempts; default false */
    bool reconnect;              /* re-connect after a drop; default false */
    uint32_t retry_initial_ms;   /* first backoff delay; 0: the default, 100 */
    uint32_t retry_max_ms;       /* backoff cap; 0: the default, 10000 */
    uint32_t max_attempts;       /* per request, with retry; 0: the default,
                                    unlimited */
    /* Defaults of net_conn_options_init(), except backpressure_mark: off
     * (NET_UNLIMITED, also for 0) on a client's connection, since a client
     * that stops reading while its requests back up deadlocks against a
     * server that stops reading while its replies back up. */
    struct net_conn_options conn;
};

/* Fills the defaults above (all-zero gives the same client). Thread-safe. */
NET_EXPORT void net_client_options_init(struct net_client_options *opt);

/* Creates a client for `addr` (IPv4, IPv6 or Unix) on `loop`; nothing
 * happens until connect. opt NULL means the defaults; opt and cbs are
 * copied (cbs may be NULL for none); failed may be NULL; arg is passed to
 * failed (the connection callbacks get cbs->arg). Stores the client in
 * *out; the caller owns it and ends it with net_client_close().
 * Returns 0, -EINVAL (NULL loop, addr or out; another address family),
 * NET_EWRONGTHREAD (not on loop's thread) or -ENOMEM; on failure *out is
 * untouched.
 * Loop thread only. */
NET_EXPORT int net_client_new(net_loop_t *loop, const net_addr_t *addr,
                              const struct net_client_options *opt,
                              const struct net_conn_callbacks *cbs,
                              net_connect_failed_fn failed, void *arg, net_client_t **out);

/* Asks to be connected: on the loop's next turn an attempt starts, unless
 * the client is already connecting or connected (then nothing more
 * happens: the request is the one in progress). A connection going down
 * after disconnect is followed by a new attempt as soon as it is gone.
 * Turns reconnect (the option) back on after a disconnect. Connect and
 * disconnect calls that meet before the loop applies them coalesce: the
 * loop applies the last of the two kinds, after the other when both came.
 * Returns 0, -ESHUTDOWN after close (nothing happens) or -EINVAL (NULL).
 * Never fails for want of memory.
 * Thread-safe. */
NET_EXPORT int net_client_connect(net_client_t *client);

/* On the loop's next turn, closes the connection gracefully (shutdown once
 * its queued output is written; the down callback follows when the peer
 * closes too) and turns reconnect off; a connect attempt or retry in
 * progress is cancelled (failure callback with NET_ECANCELLED, will_retry
 * false). Nothing to do is fine. Returns 0, -ESHUTDOWN after close (close
 * does all of this anyway) or -EINVAL (NULL). Never fails for want of
 * memory.
 * Thread-safe. */
NET_EXPORT int net_client_disconnect(net_client_t *client);

/* Called once on the client's loop when the client is closed: the failure
 * or down callback of whatever was in flight has run. client identifies it
 * only during the call (net_client_attempts still works inside); after done
 * returns the memory is gone. */
typedef void (*net_client_close_fn)(net_client_t *client, void *arg);

/* Closes the client, on the loop's next turn: turns reconnect off, cancels
 * a connect attempt or retry in progress and any connect request not yet
 * applied (failure callback with NET_ECANCELLED, will_retry false, once per
 * request), and shuts the connection down once its queued output is
 * written; if it is still open drain_ms later it is force-closed (drain_ms
 * 0: at once, queued output dropped; any value is accepted). After the down
 * callback (or at once with no connection) done(client, arg) runs on the
 * loop, never inside this call; done may be NULL. Keep the loop running
 * until then.
 * Returns 0 for the first call; -EALREADY for any later one (nothing
 * changes, its done is not kept); -EINVAL for NULL. Works from inside any
 * callback of the client and its connection.
 * Thread-safe. */
NET_EXPORT int net_client_close(net_client_t *client, uint64_t drain_ms,
                                net_client_close_fn done, void *arg);

/* The current connection, with a reference taken for the caller, who
 * drops it with net_conn_unref() (the connection stays valid meanwhile, even
 * after it closed and the client went on); NULL when not connected (or
 * client is NULL).
 * Thread-safe. */
NET_EXPORT net_conn_t *net_client_conn_ref(net_client_t *client);

/* Attempts made so far, over all requests (for tests and logs); 0 for
 * NULL. Thread-safe. */
NET_EXPORT uint32_t net_client_attempts(const net_client_t *client);

#ifdef __cplusplus
}
#endif

#endif
