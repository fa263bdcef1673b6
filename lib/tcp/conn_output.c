/* The output of a connection: brpc's per-socket write list on a reactor.
 *
 * Every send from another thread becomes a node on the wait-free queue
 * (`wq`, write_queue.h): one atomic exchange, no lock. Only the loop thread
 * writes to the socket. It moves what was pushed onto `pend`, oldest first,
 * and hands many nodes to one sendmsg (up to IOV_MAX buffers); what the
 * socket does not take waits for writable.
 *
 * The flush token (`flushing`) makes one flush serve many senders. Whoever
 * turns it from false to true owns the flush: on the loop thread it writes
 * at once; elsewhere the push reports NET__OUT_FLUSH and the connection
 * posts its task (no allocation, one eventfd write at most). Everyone else
 * only pushes. The loop keeps the token while it writes, while it waits for
 * writable and across its own continuations, and gives it back only when it
 * has found the queue empty.
 *
 * Why no node is stranded (a Dekker pair, hence seq_cst on both sides):
 *   sender:  push(node)          [seq_cst exchange of wq.head]
 *            if the queue was empty: load/exchange flushing  [seq_cst]
 *   loop:    store flushing=false                           [seq_cst]
 *            load wq.head; if not empty, exchange flushing=true
 * In the single total order of these operations either the sender's look at
 * the token comes after the loop's release (it sees false, takes the token
 * and schedules a flush) or before it, and then the push is also before the
 * loop's load of the head, which sees the node and takes the token back. A
 * sender that pushed onto a non-empty queue need not look: the node under
 * it has a sender that does, and whoever takes that node takes the whole
 * stack. Scheduling the flush cannot fail: the connection's task lives in
 * the connection, so a token once taken always reaches the loop. Per-thread
 * order holds because the loop takes the stack whole and reverses it
 * (write_queue.h), and because the loop thread itself only writes directly
 * when it holds the token with nothing pending or pushed.
 *
 * Bytes are counted in `queued` when a send accepts them, not when they are
 * written, so the high-water mark and max_output see a slow reader at once
 * (brpc counted late, its #1107).
 *
 * This file calls nothing of tcp_conn.c (conn_output.h says why). */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>

#include "tcp/conn_output.h"

/* Most buffers one sendmsg takes (the kernel refuses more than IOV_MAX). */
#ifdef IOV_MAX
#define WRITEV_MAX IOV_MAX
#else
#define WRITEV_MAX 1024
#endif
/* Batches one flush takes before it lets the loop serve other connections:
 * senders that never stop cannot pin the loop on one socket. */
#define FLUSH_ROUNDS 8

void net__output_init(struct net__output *o, size_t high_water, size_t max_output)
{
    atomic_init(&o->wq.head, NULL);
    atomic_init(&o->flushing, false);
    atomic_init(&o->queued, 0);
    atomic_init(&o->high_water, high_water);
    atomic_init(&o->high_water_at, 0);
    atomic_init(&o->bytes_out, 0);
    o->max_output = max_output;
    o->pend = o->pend_tail = NULL;
    o->wrote = o->waiting = false;
}

void net__output_set_high_water(struct net__output *o, size_t bytes)
{
    atomic_store_explicit(&o->high_water, bytes, memory_order_relaxed);
}

/* ---- counting ---------------------------------------------------------------- */

/* Relaxed throughout: `queued` is a gauge; the bytes themselves are
 * published by the queue's exchange, not by the count. Each fetch_add sees
 * a distinct `old`, so one send wins each crossing of the mark; a mark of
 * NET_UNLIMITED is never reached (no memory holds that much). */
static void note_crossing(struct net__output *o, size_t old, size_t len, unsigned *ev)
{
    size_t mark = atomic_load_explicit(&o->high_water, memory_order_relaxed);
    if (old < mark && len >= mark - old) {
        atomic_store_explicit(&o->high_water_at, old + len, memory_order_relaxed);
        *ev |= NET__OUT_HIGH_WATER;
    }
}

static void count(struct net__output *o, size_t len, unsigned *ev)
{
    note_crossing(o, atomic_fetch_add_explicit(&o->queued, len, memory_order_relaxed), len, ev);
}

static void uncount(struct net__output *o, size_t len)
{
    atomic_fetch_sub_explicit(&o->queued, len, memory_order_relaxed);
}

static bool over_limit(size_t queued, size_t len, size_t max)
{
    return queued > max || len > max - queued;
}

int net__output_reserve(struct net__output *o, size_t len, unsigned *ev)
{
    size_t max = o->max_output;
    if (over_limit(atomic_load_explicit(&o->queued, memory_order_relaxed), len, max))
        return -ENOBUFS;
    size_t old = atomic_fetch_add_explicit(&o->queued, len, memory_order_relaxed);
    if (over_limit(old, len, max)) { /* another sender counted in between */
        uncount(o, len);
        return -ENOBUFS;
    }
    note_crossing(o, old, len, ev);
    return 0;
}

/* ---- the pending list (loop thread) ------------------------------------------- */

static void pend_append(struct net__output *o, struct net__wq_node *first,
                        struct net__wq_node *last)
{
    if (o->pend_tail)
        atomic_store_explicit(&o->pend_tail->next, first, memory_order_relaxed);
    else
        o->pend = first;
    o->pend_tail = last;
}

static struct net__wq_node *node_next(struct net__wq_node *n)
{
    return atomic_load_explicit(&n->next, memory_order_relaxed);
}

/* Moves what senders pushed onto the end of `pend`. */
static void take_pushed(struct net__output *o)
{
    struct net__wq_node *last, *first = net__wq_take(&o->wq, &last);
    if (first)
        pend_append(o, first, last);
}

void net__output_discard(struct net__output *o)
{
    /* Closed: the token stays taken, so late senders schedule nothing; what
     * they push waits here for the connection's free. */
    atomic_store(&o->flushing, true);
    take_pushed(o);
    size_t dropped = 0;
    for (struct net__wq_node *p = o->pend, *next; p; p = next) {
        next = node_next(p);
        dropped += p->len - p->off;
        net__wq_node_free(p);
    }
    o->pend = o->pend_tail = NULL;
    o->waiting = false;
    uncount(o, dropped);
}

/* ---- the token ------------------------------------------------------------------ */

/* Takes the token if it is free. The plain load first keeps senders off
 * the token's cache line while a flush is under way. */
static bool token_take(struct net__output *o)
{
    return !atomic_load_explicit(&o->flushing, memory_order_seq_cst) &&
           !atomic_exchange_explicit(&o->flushing, true, memory_order_seq_cst);
}

bool net__output_claim(struct net__output *o)
{
    return token_take(o);
}

/* Gives the token back. Returns false if something was pushed meanwhile and
 * the token could be taken again: the caller goes on flushing. */
static bool token_release(struct net__output *o)
{
    atomic_store_explicit(&o->flushing, false, memory_order_seq_cst);
    if (net__wq_empty(&o->wq))
        return true;
    return atomic_exchange_explicit(&o->flushing, true, memory_order_seq_cst);
}

/* ---- writing (loop thread, token held) ----------------------------------------- */

/* A message this small or smaller is copied into the loop's scratch buffer
 * next to its neighbours instead of getting an iovec of its own: the kernel
 * pays per segment in sendmsg, and a run of 100-byte RPC frames costs it
 * more as 500 segments than as one (perf showed _copy_from_iter's
 * per-segment work at ~7% of an RPC client's loop). */
#define COALESCE_MAX 512

/* Builds the iovecs for the front of `pend`; returns their count and the
 * bytes they offer. Runs of small nodes share one iovec in `scratch`. */
static int gather(const struct net__output *o, char *scratch, struct iovec *iov, size_t *offered)
{
    size_t used = 0;
    bool in_run = false; /* iov[n - 1] is a run of small nodes in scratch */
    int n = 0;
    *offered = 0;
    for (struct net__wq_node *p = o->pend; p; p = node_next(p)) {
        size_t len = p->len - p->off;
        bool small = scratch && len <= COALESCE_MAX && used + len <= NET__LOOP_SCRATCH;
        if (!(small && in_run) && n == WRITEV_MAX)
            break;
        if (small) {
            memcpy(scratch + used, p->data + p->off, len);
            if (in_run)
                iov[n - 1].iov_len += len;
            else
                iov[n++] = (struct iovec){scratch + used, len};
            used += len;
        } else {
            iov[n++] = (struct iovec){p->data + p->off, len};
        }
        in_run = small;
        *offered += len;
    }
    return n;
}

/* Frees the nodes the socket took and advances into a partial one. */
static void drop_written(struct net__output *o, size_t written)
{
    while (written) {
        struct net__wq_node *p = o->pend;
        size_t left = p->len - p->off;
        if (written < left) {
            p->off += written;
            return;
        }
        written -= left;
        if (!(o->pend = node_next(p)))
            o->pend_tail = NULL;
        net__wq_node_free(p);
    }
}

/* Drops `written` bytes from the front of `pend`. */
static void consume(struct net__output *o, size_t written, unsigned *ev)
{
    uncount(o, written);
    atomic_fetch_add_explicit(&o->bytes_out, written, memory_order_relaxed);
    o->wrote = true;
    drop_written(o, written);
    *ev |= NET__OUT_MOVED;
}

/* Writes `pend` until it is empty (0) or the socket is full (1); or returns
 * the socket's negative errno. */
static int write_pending(struct net__output *o, net_loop_t *loop, int fd, unsigned *ev)
{
    struct iovec iov[WRITEV_MAX];
    char *scratch = net__loop_scratch(loop);
    while (o->pend) {
        size_t offered;
        struct msghdr msg = {.msg_iov = iov};
        msg.msg_iovlen = (size_t)gather(o, scratch, iov, &offered);
        ssize_t w = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (w < 0)
            return errno == EAGAIN || errno == EINTR ? 1 : -errno;
        consume(o, (size_t)w, ev);
        if ((size_t)w < offered)
            return 1;
    }
    return 0;
}

static void wait_writable(struct net__output *o, unsigned *ev)
{
    o->waiting = true;
    *ev |= NET__OUT_WAITING;
}

/* Everything is written and the token is back. */
static void drained(struct net__output *o, unsigned *ev)
{
    o->waiting = false;
    *ev |= NET__OUT_DRAINED;
    if (o->wrote) {
        o->wrote = false;
        *ev |= NET__OUT_COMPLETE;
    }
}

/* The one place queued output leaves. The token passes on to exactly one
 * continuation (writable or another flush) or is given back. */
int net__output_flush(struct net__output *o, net_loop_t *loop, int fd, unsigned *ev)
{
    for (int round = 0; round < FLUSH_ROUNDS; round++) {
        take_pushed(o);
        if (!o->pend) {
            if (token_release(o)) {
                drained(o, ev);
                return 0;
            }
            continue;
        }
        int rc = write_pending(o, loop, fd, ev);
        if (rc < 0)
            return rc;
        if (rc > 0) {
            wait_writable(o, ev);
            return 0;
        }
    }
    if (!o->waiting) /* a watched writable already brings us back */
        *ev |= NET__OUT_FLUSH;
    return 0;
}

/* ---- sending ------------------------------------------------------------------- */

int net__output_push(struct net__output *o, const struct iovec *iov, int n, size_t len,
                     unsigned *ev)
{
    struct net__wq_node *node = net__wq_node_alloc(len);
    if (!node) {
        uncount(o, len);
        return -ENOMEM;
    }
    for (size_t i = 0, off = 0; i < (size_t)n; off += iov[i].iov_len, i++) {
        if (iov[i].iov_len) /* an empty piece may have a NULL base: memcpy's is nonnull */
            memcpy(node->data + off, iov[i].iov_base, iov[i].iov_len);
    }
    if (net__wq_push(&o->wq, node) && token_take(o))
        *ev |= NET__OUT_FLUSH;
    return 0;
}

static int enqueue(struct net__output *o, const void *data, size_t len, unsigned *ev)
{
    struct iovec iov = {(void *)data, len};
    int rc = net__output_reserve(o, len, ev);
    return rc < 0 ? rc : net__output_push(o, &iov, 1, len, ev);
}

/* Keeps the rest of a message the socket took only part of. */
static int keep_rest(struct net__output *o, const char *rest, size_t len, unsigned *ev)
{
    struct net__wq_node *node = net__wq_node_alloc(len);
    if (!node) {
        *ev |= NET__OUT_BROKEN; /* part of the message is on the wire */
        return -ENOMEM;
    }
    count(o, len, ev); /* the limit was checked before the write */
    memcpy(node->data, rest, len);
    atomic_store_explicit(&node->next, NULL, memory_order_relaxed);
    pend_append(o, node, node);
    o->wrote = true;
    wait_writable(o, ev);
    return 0;
}

/* Writes with one send(); keeps what the socket did not take. Token held,
 * nothing pending or pushed. */
static int write_direct(struct net__output *o, int fd, const char *data, size_t len, unsigned *ev)
{
    ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        *ev |= NET__OUT_BROKEN;
        return -errno;
    }
    size_t done = n > 0 ? (size_t)n : 0;
    atomic_fetch_add_explicit(&o->bytes_out, done, memory_order_relaxed);
    if (done < len)
        return keep_rest(o, data + done, len - done, ev);
    *ev |= NET__OUT_COMPLETE;
    if (!token_release(o))
        *ev |= NET__OUT_FLUSH;
    return 0;
}

int net__output_send_now(struct net__output *o, int fd, const void *data, size_t len,
                         unsigned *ev)
{
    if (len > o->max_output)
        return -ENOBUFS;
    if (!token_take(o))
        return enqueue(o, data, len, ev); /* the holder will write it */
    if (net__wq_empty(&o->wq))
        return write_direct(o, fd, data, len, ev);
    /* Another thread pushed and found the token ours: flush for both. */
    *ev |= NET__OUT_FLUSH;
    return enqueue(o, data, len, ev);
}
