/* netloop — loop threads and pools of them.
 *
 * A net_loop_thread is a thread that creates its own loop and runs it. A
 * net_loop_pool is N of them handed out round robin (muduo's
 * EventLoopThreadPool); with N = 0 the pool hands out its base loop, so a
 * single-threaded server needs no special case.
 *
 * Threads started here block every asynchronous signal (so SIGINT/SIGTERM go
 * to the main thread and its net_signal).
 *
 * Ending: net_loop_thread_join() quits the thread's loop, joins the thread
 * (the loop runs its queued functors and is freed there) and frees the
 * handle; net_loop_pool_join() does the same for each thread of a pool and
 * frees the pool. Neither is ever needed from the thread being ended. */
#ifndef NET_LOOP_THREAD_H
#define NET_LOOP_THREAD_H

#include <stddef.h>
#include <stdint.h>

#include <net/loop.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct net_loop_thread net_loop_thread_t;
typedef struct net_loop_pool net_loop_pool_t;

/* Called on a loop's own thread once its loop exists, before it runs. */
typedef void (*net_loop_init_fn)(net_loop_t *loop, void *arg);

/* Starts a thread running a new loop. Returns once the loop exists and the
 * optional init(loop, arg) has run on that thread. name (may be NULL, at most
 * 15 bytes used) names the thread. Stores the handle in *out; the caller owns
 * it and ends it with net_loop_thread_join(). arg stays owned by the caller.
 * Returns 0, -EINVAL (out is NULL), -ENOMEM, -EAGAIN (no thread), or the
 * loop's creation error (see net_loop_new(); the thread is then gone).
 * Thread-safe. */
NET_EXPORT int net_loop_thread_start(const char *name, net_loop_init_fn init, void *arg,
                                     net_loop_thread_t **out);

/* The thread's loop (NULL for a NULL handle). Valid until
 * net_loop_thread_join(); another thread may use it only through the
 * loop's thread-safe calls. Thread-safe. */
NET_EXPORT net_loop_t *net_loop_thread_loop(net_loop_thread_t *t);

/* Quits the loop, joins the thread (the loop runs its queued functors and is
 * freed on its thread) and frees the handle, which must not be used again.
 * Returns 0 (also for NULL), or NET_EWRONGTHREAD when called on the thread
 * itself, from one of its loop's callbacks (nothing is done: it would wait
 * for itself).
 * Thread-safe, on any other thread (one caller per handle). */
NET_EXPORT int net_loop_thread_join(net_loop_thread_t *t);

/* Starts a pool of nthreads loop threads (0 <= nthreads <= 1024) beside the
 * base loop; init runs on each new thread, or once on the calling thread for
 * the base loop when nthreads is 0. Thread i is named "<name>-<i>" (name cut
 * to 10 bytes; "loop" for NULL). Stores the pool in *out; the caller owns it
 * and ends it with net_loop_pool_join(). The base loop stays owned by the
 * caller and must outlive the pool.
 * Returns 0, -EINVAL (NULL base or out, nthreads > 1024), NET_EWRONGTHREAD
 * (not called on the base loop's thread), -ENOMEM, or a thread's start
 * error (then none of the pool's threads is left running).
 * Base loop's thread only. */
NET_EXPORT int net_loop_pool_start(net_loop_t *base, size_t nthreads, const char *name,
                                   net_loop_init_fn init, void *arg, net_loop_pool_t **out);

/* The next loop, round robin (the base loop if the pool has no threads).
 * pool must not be NULL. Thread-safe. */
NET_EXPORT net_loop_t *net_loop_pool_next(net_loop_pool_t *pool);

/* A loop chosen by hash: the same h always gives the same loop.
 * pool must not be NULL. Thread-safe. */
NET_EXPORT net_loop_t *net_loop_pool_for_hash(net_loop_pool_t *pool, uint64_t h);

/* Number of loops handed out: nthreads, or 1 (the base loop) for none.
 * pool must not be NULL. Thread-safe. */
NET_EXPORT size_t net_loop_pool_size(const net_loop_pool_t *pool);

/* Loop i, 0 <= i < net_loop_pool_size() (all of them, for broadcasts);
 * NULL when out of range. pool must not be NULL. Thread-safe. */
NET_EXPORT net_loop_t *net_loop_pool_get(net_loop_pool_t *pool, size_t i);

/* Quits, joins and frees every thread of the pool (as
 * net_loop_thread_join(): each loop runs its queued functors first), then
 * frees the pool, which must not be used again. The base loop is untouched.
 * Returns 0 (also for NULL), or NET_EWRONGTHREAD when not called on the base
 * loop's thread (nothing is done).
 * Base loop's thread only. */
NET_EXPORT int net_loop_pool_join(net_loop_pool_t *pool);

#ifdef __cplusplus
}
#endif

#endif
