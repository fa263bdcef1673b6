/* netloop — the event loop.
 *
 * One loop per thread. A loop waits on a poller (epoll by default, poll(2)
 * when the environment has NETLOOP_POLLER=poll), runs the callbacks of ready
 * file descriptors and due timers, then runs the functors other threads (or
 * its own callbacks) handed to it with net_loop_run_in_loop() and
 * net_loop_queue_in_loop().
 *
 * Threads: a loop belongs to the thread that created it ("the loop thread").
 * Functions marked "Loop thread only" must be called there; the others are
 * thread-safe. Callbacks registered on a loop always run on its thread.
 *
 * Ordering: functors queued from one thread run in the order they were
 * queued (FIFO per producer thread). Functors from different threads
 * interleave in the order they took the queue's lock.
 *
 * Lifetime: the loop is freed with net_loop_free() on its thread after
 * net_loop_run() has returned. Every functor the loop accepted runs exactly
 * once: those still queued when run returns run in net_loop_free() (or in the
 * next net_loop_run()). Timers still pending at free are discarded without
 * calling them; their arg pointers are the caller's to release.
 *
 * Errors: functions return 0 (or a non-negative value where stated) or a
 * negative errno / NET_E* code (net/error.h). A "Loop thread only" function
 * checks the thread (one thread-local load) and returns NET_EWRONGTHREAD
 * elsewhere, doing nothing; the one that returns a time gives 0 instead. */
#ifndef NET_LOOP_H
#define NET_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <net/error.h>
#include <net/export.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct net_loop net_loop_t;

/* A unit of work for the loop: fn(arg) runs on the loop thread. */
typedef void (*net_loop_fn)(void *arg);

/* Creates an event loop owned by the calling thread and stores it in *out.
 * Returns 0, -EINVAL if out is NULL, NET_ELOOPEXISTS if this thread already
 * has a loop, -ENOMEM, or the negative errno of a failed epoll/poll, eventfd
 * or timerfd call (e.g. -EMFILE); *out is untouched on failure.
 * The caller owns the loop and frees it with net_loop_free() on this thread.
 * Thread-safe (it concerns only the calling thread). */
NET_EXPORT int net_loop_new(net_loop_t **out);

/* Frees a loop that is not running: runs the functors still queued (and any
 * they queue, until none remain), discards pending timers without calling
 * them, closes the loop's own descriptors. User fd watches and signals must
 * have been freed before. The thread may create a new loop afterwards.
 * Returns 0 when the loop was freed (or loop is NULL), NET_EWRONGTHREAD when
 * called from another thread, -EBUSY while net_loop_run() is running it
 * (including from inside any of its callbacks) or while this free is running
 * its last functors (from inside one of them); on an error nothing is freed
 * and the loop goes on working.
 * Loop thread only. */
NET_EXPORT int net_loop_free(net_loop_t *loop);

/* Runs the loop until net_loop_quit(): waits, dispatches ready descriptors
 * and due timers, runs queued functors. Before returning, for any reason
 * after it started, it runs every functor queued so far and consumes a
 * pending quit. A quit requested before run starts makes it return at once
 * (after the queued functors). The loop can be run again after it returns.
 * Returns:
 *   0                 after net_loop_quit();
 *   -EINVAL           loop is NULL;
 *   NET_EWRONGTHREAD  called from another thread (nothing ran);
 *   -EBUSY            the loop is already running (a call from inside one of
 *                     its callbacks) or being freed (nothing ran);
 *   another negative errno  the poller's wait failed with it (anything but
 *                     EINTR, which is retried; e.g. -ENOMEM from poll(2)).
 *                     The failure is not logged above debug: the caller
 *                     decides; running again may fail the same way.
 * Loop thread only. */
NET_EXPORT int net_loop_run(net_loop_t *loop);

/* Asks the loop to return from net_loop_run() after the current iteration.
 * Works before run has started, from the loop's callbacks and from any other
 * thread (it wakes the loop). The request is consumed when run returns.
 * loop must not be NULL.
 * Thread-safe. */
NET_EXPORT void net_loop_quit(net_loop_t *loop);

/* The calling thread's loop, or NULL if it has none. Thread-safe. */
NET_EXPORT net_loop_t *net_loop_current(void);

/* True when called on the loop's own thread; false for NULL. Thread-safe. */
NET_EXPORT bool net_loop_in_loop_thread(const net_loop_t *loop);

/* Runs fn(arg) on the loop thread: at once (before returning) when called on
 * the loop thread, otherwise queued as with net_loop_queue_in_loop().
 * Returns 0, -EINVAL (NULL loop or fn) or -ENOMEM (fn is then not run).
 * Thread-safe. arg stays owned by the caller; fn may free it. */
NET_EXPORT int net_loop_run_in_loop(net_loop_t *loop, net_loop_fn fn, void *arg);

/* Queues fn(arg) to run on the loop thread in the loop's next functor phase,
 * never from inside this call. A functor queued from inside a functor runs in
 * the next iteration without waiting for I/O. Wakes the loop when needed;
 * many queued functors share one wakeup. Returns 0, -EINVAL (NULL loop or
 * fn) or -ENOMEM (fn is then not run).
 * Thread-safe. arg stays owned by the caller; fn may free it. */
NET_EXPORT int net_loop_queue_in_loop(net_loop_t *loop, net_loop_fn fn, void *arg);

/* Number of functors waiting in the queue of net_loop_queue_in_loop() (a
 * snapshot). loop must not be NULL. Thread-safe. */
NET_EXPORT size_t net_loop_queue_size(net_loop_t *loop);

/* Counters since the loop was created, for benchmarks, tests and metrics. */
struct net_loop_stats {
    /* Poller waits that returned (with or without events). */
    uint64_t iterations;
    /* Eventfd writes other threads made to wake the loop (their functors,
     * quits and the library's cross-thread work); many queued while one
     * wakeup is pending share it. */
    uint64_t wakeups;
    /* Functors run from the queue: net_loop_queue_in_loop(),
     * net_loop_run_in_loop() from another thread, the library's own deferred
     * work. A run_in_loop on the loop thread runs at once, uncounted. */
    uint64_t functors_run;
    /* Timer callbacks called (each run of a repeating timer counts). */
    uint64_t timers_fired;
};

/* The same type by a name that C++ does not hide behind the function of
 * the same name. */
typedef struct net_loop_stats net_loop_stats_t;

/* Stores a snapshot of the loop's counters in *out. Each counter is read
 * atomically, but not all at the same instant: while the loop runs they may
 * be from slightly different moments. Each is monotonic across snapshots.
 * loop and out must not be NULL. Thread-safe. */
NET_EXPORT void net_loop_stats(const net_loop_t *loop, struct net_loop_stats *out);

/* ---- Busy polling ----------------------------------------------------- */

/* The largest budget net_loop_set_busy_poll() accepts: 10 ms. */
#define NET_LOOP_BUSY_POLL_MAX_US 10000

/* Sets the loop's busy-poll budget, in microseconds; 0 turns it off.
 * Off by default, unless the environment has NETLOOP_BUSY_POLL_US=N
 * (0..NET_LOOP_BUSY_POLL_MAX_US; another value is logged once and ignored)
 * when the loop is created: that is every new loop's initial setting.
 *
 * On, the loop polls its descriptors without blocking, for up to usec
 * after an iteration that found work (I/O, a timer, functors), before it
 * goes to sleep: the next event is then taken by a running thread instead
 * of waking a sleeping one, which on a latency-bound load (one call in
 * flight) is most of a round trip. While it spins, other threads' functors
 * need no eventfd write. The cost is CPU time: a spinning loop keeps a core
 * busy. It backs off by itself: spins that find nothing shrink the next
 * ones (to usec / 8). And it pauses, for 1 ms doubling up to 256 ms while
 * the cause persists (back to 1 ms after a second without one), when half
 * of the last 16 spins found nothing, when the loop's thread is seen to
 * have been descheduled while spinning (another thread wanted its CPU),
 * or when the host had more runnable threads than CPUs at most of its
 * last checks (/proc/loadavg, read at most once a millisecond, before a
 * spin). A paused loop is a loop with busy polling off. Every guarantee
 * of the loop (ordering, timers, exactly-once functors, quit) is the same
 * either way.
 *
 * Returns 0, or -EINVAL (NULL loop, or usec > NET_LOOP_BUSY_POLL_MAX_US:
 * the setting is then unchanged). Thread-safe: the loop uses the new value
 * from its next wait on (for the I/O loops of a server, see
 * net_server_io_loop()). */
NET_EXPORT int net_loop_set_busy_poll(net_loop_t *loop, unsigned usec);

/* The loop's busy-poll budget in microseconds (0: off). loop must not be
 * NULL. Thread-safe. */
NET_EXPORT unsigned net_loop_busy_poll(const net_loop_t *loop);

/* What busy polling did, since the loop was created. */
struct net_loop_busy_poll_stats {
    uint64_t spins;    /* episodes: waits that began by spinning */
    uint64_t hits;     /* episodes that found work while spinning */
    uint64_t misses;   /* episodes that ran out of budget; the loop slept */
    uint64_t backoffs; /* pauses: after half of the last 16 episodes
                          missed, after an episode cut short because the
                          thread had been descheduled, or instead of a
                          spin because the host had no idle CPU */
};

/* Stores a snapshot of the busy-poll counters in *out (each read
 * atomically, not all at one instant; each monotonic). loop and out must
 * not be NULL. Thread-safe. */
NET_EXPORT void net_loop_busy_poll_stats(const net_loop_t *loop,
                                         struct net_loop_busy_poll_stats *out);

/* ---- Time and timers -------------------------------------------------- */

/* Milliseconds on CLOCK_MONOTONIC; the time base of net_loop_run_at().
 * Thread-safe. */
NET_EXPORT uint64_t net_now_ms(void);

/* The loop's cached clock: net_now_ms() as taken when the loop's last wait
 * returned (before that, when the loop was created). One clock read per
 * iteration serves every callback of it, so it lags the real time by as
 * long as the iteration has run so far. Never 0 on the loop thread.
 * Loop thread only: from any other thread it returns 0 (the cached value
 * is not published to other threads; use net_now_ms() there). */
NET_EXPORT uint64_t net_loop_now_ms(const net_loop_t *loop);

/* A timer id: > 0 for a timer, < 0 for an error. Ids are never reused within
 * a process, so cancelling a stale id is harmless. */
typedef int64_t net_timer_id_t;

/* A timer's callback, on the loop thread: loop is the loop the timer was
 * added to, id the id its add call returned (so a timer can cancel itself
 * with net_timer_cancel(loop, id) without storing the id anywhere: no race
 * with an add made from another thread that fires before the adder could
 * store what the add returned), arg what the add was given. */
typedef void (*net_timer_fn)(net_loop_t *loop, net_timer_id_t id, void *arg);

/* Runs fn(loop, id, arg) once on the loop thread when CLOCK_MONOTONIC
 * reaches when_ms (see net_now_ms(); a time in the past fires in the next
 * iteration). Timers due at the same instant fire in the order they were
 * added. Returns the timer id (> 0), -EINVAL if loop or fn is NULL, or
 * -ENOMEM. arg stays owned by the caller.
 * Thread-safe; never calls fn from inside this call. */
NET_EXPORT net_timer_id_t net_loop_run_at(net_loop_t *loop, uint64_t when_ms,
                                          net_timer_fn fn, void *arg);

/* Like net_loop_run_at() with when = now + delay_ms. Any delay is accepted:
 * huge delays saturate (they never overflow into the past).
 * Thread-safe. */
NET_EXPORT net_timer_id_t net_loop_run_after(net_loop_t *loop, uint64_t delay_ms,
                                             net_timer_fn fn, void *arg);

/* Runs fn(loop, id, arg) every interval_ms (>= 1), first after interval_ms,
 * until the timer is cancelled; fn may cancel its own timer with the id it
 * is passed. Late runs are not replayed: the next run is scheduled
 * interval_ms after the current one. Returns the id, -EINVAL (NULL loop or
 * fn, or zero interval), or -ENOMEM.
 * Thread-safe. */
NET_EXPORT net_timer_id_t net_loop_run_every(net_loop_t *loop, uint64_t interval_ms,
                                             net_timer_fn fn, void *arg);

/* Cancels a timer of loop. After this returns the callback will not start
 * again; it may be running right now on the loop thread (a timer may cancel
 * itself from its own callback, with the id it is passed). Returns 0 when a
 * pending or repeating timer was stopped, -ENOENT when the id is unknown
 * (or <= 0, or another loop's), already fired (one-shot: also while its
 * callback is running) or cancelled, -EINVAL if loop is NULL. The timer's
 * arg is the caller's again once this returns 0 and, if the callback may be
 * running, once it has returned.
 * Thread-safe. */
NET_EXPORT int net_timer_cancel(net_loop_t *loop, net_timer_id_t id);

/* Number of timers not yet fired or cancelled (a snapshot; a repeating timer
 * counts until cancelled). loop must not be NULL. Thread-safe. */
NET_EXPORT size_t net_loop_timer_count(net_loop_t *loop);

/* ---- Watching file descriptors --------------------------------------- */

/* Interest and readiness bits. NET_ERROR and NET_HUP are always reported and
 * need not be asked for. */
enum {
    NET_READABLE = 1u << 0,
    NET_WRITABLE = 1u << 1,
    NET_ERROR = 1u << 2,
    NET_HUP = 1u << 3,
};

typedef struct net_watch net_watch_t;

/* Called on the loop thread with the ready bits (NET_READABLE, NET_WRITABLE,
 * NET_ERROR, NET_HUP). The callback may change the interest or free the
 * watch (w must not be used after net_watch_free). */
typedef void (*net_watch_fn)(net_watch_t *w, int fd, unsigned events, void *arg);

/* Starts watching fd (level-triggered) for the events in `events` (a mix of
 * NET_READABLE and NET_WRITABLE, possibly 0 to register without interest).
 * The fd stays owned by the caller and must stay open until the watch is
 * freed; the watch is the caller's and must be freed with net_watch_free()
 * before the loop is. One watch per fd per loop. Stores the watch in *out.
 * Returns 0, -EINVAL (NULL loop, fn or out, fd < 0, other bits in events),
 * NET_EWRONGTHREAD, -ENOMEM, or the poller's negative errno (e.g. -EEXIST
 * if the fd is already watched, -EPERM for a regular file under epoll).
 * Loop thread only. */
NET_EXPORT int net_watch_new(net_loop_t *loop, int fd, unsigned events,
                             net_watch_fn fn, void *arg, net_watch_t **out);

/* Replaces the interest set (NET_READABLE and/or NET_WRITABLE, or 0).
 * Returns 0, -EINVAL (NULL w or other bits), NET_EWRONGTHREAD, or the
 * poller's negative errno; on an error the interest set is unchanged.
 * Loop thread only. */
NET_EXPORT int net_watch_set(net_watch_t *w, unsigned events);

/* The current interest set (>= 0: NET_READABLE and/or NET_WRITABLE bits),
 * -EINVAL for NULL, or NET_EWRONGTHREAD.
 * Loop thread only. */
NET_EXPORT int net_watch_events(const net_watch_t *w);

/* Stops watching and frees the watch (not the fd). Safe from inside any
 * callback of the same loop, including the watch's own; no callback for this
 * watch runs afterwards. Returns 0 (also for NULL), or NET_EWRONGTHREAD when
 * called from another thread (nothing is freed; the watch goes on).
 * Loop thread only. */
NET_EXPORT int net_watch_free(net_watch_t *w);

/* The name of the poller backend in use: "epoll" or "poll" (a static
 * string). loop must not be NULL. Thread-safe. */
NET_EXPORT const char *net_loop_backend(const net_loop_t *loop);

#ifdef __cplusplus
}
#endif

#endif
