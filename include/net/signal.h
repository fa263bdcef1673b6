/* netloop — signals delivered through the loop (signalfd).
 *
 * net_signal_new() blocks the given signals in the calling thread and reads
 * them from a signalfd, so the callback runs on the loop thread like any other
 * event, with no async-signal-safety concerns. For the signals to be seen the
 * other threads of the process must have them blocked too: create the
 * net_signal before starting other threads (threads inherit the mask), or
 * start them with net_loop_thread/net_loop_pool, which block every
 * asynchronous signal in their threads. */
#ifndef NET_SIGNAL_H
#define NET_SIGNAL_H

#include <stddef.h>

#include <net/loop.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct net_signal net_signal_t;

/* Called on the loop thread once per delivered signal; it may free s. */
typedef void (*net_signal_fn)(net_signal_t *s, int signo, void *arg);

/* Blocks the n signals in `signals` (1 <= n <= 16; e.g. SIGINT, SIGTERM) in
 * the calling thread and watches them on loop. Stores the handle in *out;
 * the caller owns it and frees it with net_signal_free() before the loop is
 * freed. arg stays owned by the caller.
 * Returns 0, -EINVAL (NULL loop, signals, fn or out, n out of range, an
 * invalid signal number), NET_EWRONGTHREAD (nothing is blocked), -ENOMEM,
 * the negative errno of pthread_sigmask/signalfd (the signals are unblocked
 * again), or the poller's negative errno (they then stay blocked).
 * Loop thread only. */
NET_EXPORT int net_signal_new(net_loop_t *loop, const int *signals, size_t n,
                              net_signal_fn fn, void *arg, net_signal_t **out);

/* Stops watching and frees the handle. The signals stay blocked in the
 * calling thread (unblocking could deliver a pending one with its default
 * action, which usually kills the process). Safe inside the callback.
 * Returns 0 (also for NULL), or NET_EWRONGTHREAD when called from another
 * thread than the loop's (nothing is freed; the handle goes on working).
 * Loop thread only. */
NET_EXPORT int net_signal_free(net_signal_t *s);

/* Convenience: quits `loop` on SIGINT or SIGTERM (logged at info). Returns
 * as net_signal_new(); free the handle with net_signal_free().
 * Loop thread only. */
NET_EXPORT int net_signal_quit_on_term(net_loop_t *loop, net_signal_t **out);

#ifdef __cplusplus
}
#endif

#endif
