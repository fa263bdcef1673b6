/* The output of a connection (conn_output.c): its queued bytes, the
 * wait-free intake from any thread, the flush token, writing to the socket,
 * and the bookkeeping behind the high-water and write-complete callbacks.
 *
 * Calls go one way: tcp_conn.c (the connection) calls these; conn_output.c
 * calls nothing of tcp_conn.c and knows no connection, only this struct,
 * the socket it is handed and the loop (for its scratch buffer). Where the
 * connection must act on what happened (watch for writable, read again,
 * queue a callback or a flush, close), the call says so in the NET__OUT_*
 * bits it adds to *ev, and the connection applies them. So the write path
 * costs no indirect call and no allocation beyond the queued bytes. */
#ifndef NET__CONN_OUTPUT_H
#define NET__CONN_OUTPUT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

#include "loop/loop_internal.h"
#include "tcp/write_queue.h"

/* What a call reports back in *ev (bits; the caller zeroes *ev first). */
enum {
    /* The caller took the flush token: it must have net__output_flush run
     * on the loop (later: never inside a send). */
    NET__OUT_FLUSH = 1u,
    /* The socket is full: output backs up; watch for writable (the token
     * waits there) and apply backpressure. */
    NET__OUT_WAITING = 2u,
    /* Bytes left the queue: the queued count fell. */
    NET__OUT_MOVED = 4u,
    /* Everything is written and the token is given back: stop watching
     * for writable, finish a shutdown or a peer's half-close. */
    NET__OUT_DRAINED = 8u,
    /* A write emptied the output: the write-complete callback is due. */
    NET__OUT_COMPLETE = 16u,
    /* The queued count crossed the high-water mark upwards (its value is
     * net__output_high_water_at). Reported before the bytes are pushed, so
     * the callback can be queued before any drain of them. */
    NET__OUT_HIGH_WATER = 32u,
    /* Part of a message is on the wire and the rest could not follow: the
     * byte stream is broken; the connection must close (later). */
    NET__OUT_BROKEN = 64u,
};

struct net__output {
    /* Any thread pushes onto `wq`; the loop thread moves what was pushed
     * onto `pend` (FIFO) and writes from there. `flushing` is the flush
     * token: whoever sets it from false to true must make sure a flush
     * runs; it returns to false only when the loop found everything
     * written. `queued` counts bytes accepted and not yet written (pushed,
     * pending, or racing in): what the high-water mark, max_output and
     * the connection's backpressure look at. */
    struct net__wq wq;
    atomic_size_t queued;
    atomic_size_t high_water;    /* NET_UNLIMITED: never crossed */
    atomic_size_t high_water_at; /* queued bytes at the last crossing */
    atomic_ullong bytes_out;     /* written to the socket */
    size_t max_output;           /* NET_UNLIMITED: no limit */
    struct net__wq_node *pend, *pend_tail; /* loop thread only */
    /* The three flags share the struct's last word (no padding between
     * pointers: it is embedded in every connection). */
    atomic_bool flushing;
    bool wrote;   /* loop: written since the last drain (write-complete due) */
    bool waiting; /* loop: the socket was full; writable brings the token back */
};

/* A new, empty output; both limits in bytes, NET_UNLIMITED for none. */
void net__output_init(struct net__output *o, size_t high_water, size_t max_output);

/* Changes the high-water mark (NET_UNLIMITED: off). Thread-safe. */
void net__output_set_high_water(struct net__output *o, size_t bytes);

/* Counts len more bytes as queued; fails with -ENOBUFS, counting nothing,
 * past max_output (checked without a retry loop: a send that loses a race
 * near the limit may fail while a smaller one would still fit, never the
 * other way). Adds NET__OUT_HIGH_WATER when this crossed the mark. Returns
 * 0 or -ENOBUFS. Thread-safe. */
int net__output_reserve(struct net__output *o, size_t len, unsigned *ev);

/* Copies the n pieces (len bytes, reserved) into one node and pushes it.
 * Adds NET__OUT_FLUSH when the push found the queue empty and took the free
 * token. Returns 0 or -ENOMEM (the reservation is given back). Thread-safe;
 * wait-free but for the node's allocation. */
int net__output_push(struct net__output *o, const struct iovec *iov, int n, size_t len,
                     unsigned *ev);

/* A send on the loop thread: writes at once with one send() when nothing
 * is queued, else queues behind what is (order). Returns 0, -ENOBUFS or
 * -ENOMEM (nothing queued), or with NET__OUT_BROKEN the socket's errno
 * (or -ENOMEM when the unwritten rest found no memory). Loop thread only. */
int net__output_send_now(struct net__output *o, int fd, const void *data, size_t len,
                         unsigned *ev);

/* Takes the token if nobody holds it: the caller then flushes. Otherwise
 * the flush under way finishes the job and reports NET__OUT_DRAINED. Any
 * thread. */
bool net__output_claim(struct net__output *o);

/* Writes what is queued, with few sendmsg calls, until the output is empty
 * (the token is given back: NET__OUT_DRAINED), the socket is full (the token
 * waits for writable: NET__OUT_WAITING) or a few batches went out (the token
 * needs another flush: NET__OUT_FLUSH, unless writable brings it back).
 * Returns 0 or the socket's negative errno (the stream is broken, the token
 * stays taken). Loop thread only; the caller holds the token. */
int net__output_flush(struct net__output *o, net_loop_t *loop, int fd, unsigned *ev);

/* Frees every byte still queued and keeps the token taken, so that late
 * pushes schedule nothing (they wait here for the next discard). Loop
 * thread, or the last reference's thread at the connection's free. */
void net__output_discard(struct net__output *o);

/* Bytes accepted and not yet written (a snapshot). Thread-safe. */
static inline size_t net__output_queued(const struct net__output *o)
{
    return atomic_load_explicit(&((struct net__output *)o)->queued, memory_order_relaxed);
}

/* Bytes written to the socket so far (a snapshot). Thread-safe. */
static inline unsigned long long net__output_bytes_out(const struct net__output *o)
{
    return atomic_load_explicit(&((struct net__output *)o)->bytes_out, memory_order_relaxed);
}

/* The queued count at the last high-water crossing. Thread-safe. */
static inline size_t net__output_high_water_at(const struct net__output *o)
{
    return atomic_load_explicit(&((struct net__output *)o)->high_water_at, memory_order_relaxed);
}

/* True while the token waits for the socket to become writable. Loop
 * thread only. */
static inline bool net__output_waiting(const struct net__output *o)
{
    return o->waiting;
}

/* True when nothing is pending or pushed: no write is on its way (a
 * write-complete reported earlier is still true). Loop thread only. */
static inline bool net__output_idle(struct net__output *o)
{
    return !o->pend && net__wq_empty(&o->wq);
}

#endif
