/* netloop — a TCP client: one outgoing connection, with retry.
 *
 * A net_client connects to one address from its loop with a non-blocking
 * connect and a timeout. A failed attempt is retried with exponential backoff
 * (initial delay doubling up to a maximum) when retry is on; an established
 * connection that drops is re-made when reconnect is on. Connecting to itself
 * (same local and peer address, possible on loopback) is detected and treated
 * as a failed attempt.
 *
 * Every connect request ends exactly once: either the connection callback
 * reports it up, or the failure callback runs with the reason (-ECONNREFUSED,
 * -ETIMEDOUT, NET_ESELFCONNECT, ..., or NET_ECANCELLED when stop or
 * disconnect ended it). With retry on, failure runs for each failed attempt
 * with `will_retry` true, and once more with it false when the client gives
 * up or is stopped.
 *
 * Threads: create and free on the loop thread; connect, disconnect and stop
 * are thread-safe. Callbacks run on the loop thread, never inside the call
 * that triggered them. */
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

/* A connect attempt failed with err (a negative errno or NET_E* code). */
typedef void (*net_connect_failed_fn)(net_client_t *client, int err, bool will_retry,
                                      void *arg);

struct net_client_options {
    uint32_t connect_timeout_ms; /* per attempt; default 5000; 0 = kernel's own */
    bool retry;                  /* retry failed attempts; default false */
    bool reconnect;              /* re-connect after a drop; default false */
    uint32_t retry_initial_ms;   /* first backoff delay; default 100 */
    uint32_t retry_max_ms;       /* backoff cap; default 10000 */
    uint32_t max_attempts;       /* 0 = unlimited (default) */
    /* Defaults of net_conn_options_init(), except backpressure_mark: off
     * (NET_UNLIMITED, also for 0) on a client's connection, since a client
     * that stops reading while its requests back up deadlocks against a
     * server that stops reading while its replies back up. */
    struct net_conn_options conn;
};

/* Fills the defaults above. Thread-safe. */
NET_EXPORT void net_client_options_init(struct net_client_options *opt);

/* Creates a client for `addr` on `loop`; nothing happens until connect.
 * opt NULL means defaults; cbs is copied; failed may be NULL; arg is passed to
 * failed (the connection callbacks get cbs->arg). Stores it in *out.
 * Returns 0, -EINVAL, -ENOMEM, NET_EWRONGTHREAD. Loop thread only. */
NET_EXPORT int net_client_new(net_loop_t *loop, const net_addr_t *addr,
                              const struct net_client_options *opt,
                              const struct net_conn_callbacks *cbs,
                              net_connect_failed_fn failed, void *arg, net_client_t **out);

/* Starts connecting (a no-op returning 0 if already connecting or
 * connected). Returns 0 or -ESHUTDOWN after stop. Thread-safe. */
NET_EXPORT int net_client_connect(net_client_t *client);

/* Closes the connection gracefully (shutdown after queued output) and turns
 * reconnect off; a connect in progress is cancelled (failure callback with
 * NET_ECANCELLED). Returns 0. Thread-safe. */
NET_EXPORT int net_client_disconnect(net_client_t *client);

/* Stops for good: cancels connecting and retries (failure callback with
 * NET_ECANCELLED, once), force-closes the connection. Idempotent.
 * Returns 0. Thread-safe. */
NET_EXPORT int net_client_stop(net_client_t *client);

/* The current connection with a reference taken (release it with
 * net_conn_unref), or NULL when not connected. Thread-safe. */
NET_EXPORT net_conn_t *net_client_conn_ref(net_client_t *client);

/* Stops the client and frees it. Callbacks that stop triggers run before
 * this returns: this call is the exception to "never inside". NULL ignored.
 * Loop thread only. */
NET_EXPORT void net_client_free(net_client_t *client);

/* Attempts made so far (for tests and logs). Thread-safe. */
NET_EXPORT uint32_t net_client_attempts(const net_client_t *client);

#ifdef __cplusplus
}
#endif

#endif
