/* The write path of a connection: brpc's per-socket write list on a reactor.
 *
 * Every send becomes a node on the connection's wait-free queue (`wq`,
 * write_queue.h): one atomic exchange, no lock. Only the loop thread writes
 * to the socket. It moves what was pushed onto `pend`, oldest first, and
 * hands many nodes to one sendmsg (up to IOV_MAX buffers); what the socket
 * does not take waits for EPOLLOUT.
 *
 * The flush token (`flushing`) makes one flush serve many senders. Whoever
 * turns it from false to true owns the flush: on the loop thread it writes
 * at once; on another thread it posts the connection's flush task to the
 * loop (no allocation, one eventfd write at most). Everyone else only
 * pushes. The loop keeps the token while it writes,
 * while it waits for EPOLLOUT and across its own continuations, and gives it
 * back only when it has found the queue empty.
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
 * stack. Scheduling the flush cannot fail: the task that carries it lives
 * in the connection (net__loop_post), so a token once taken always reaches
 * the loop. Per-thread order holds because the loop takes the stack whole
 * and reverses it (write_queue.h), and because the loop thread itself only
 * writes directly when it holds the token with nothing pending or pushed.
 *
 * Bytes are counted in `queued` when a send accepts them, not when they are
 * written, so the high-water mark and max_output see a slow reader at once
 * (brpc counted late, its #1107). */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "loop/alloc_internal.h"
#include "loop/log_internal.h"
#include "tcp/tcp_conn_impl.h"

/* Most buffers one sendmsg takes (the kernel refuses more than IOV_MAX). */
#ifdef IOV_MAX
#define WRITEV_MAX IOV_MAX
#else
#define WRITEV_MAX 1024
#endif
/* Batches one flush takes before it lets the loop serve other connections:
 * senders that never stop cannot pin the loop on one socket. */
#define FLUSH_ROUNDS 8

static void flush_output(net_conn_t *conn);

static void flush_cb(void *arg);

void net__conn_output_init(net_conn_t *conn)
{
    conn->flush_task = (struct net__loop_task){.fn = flush_cb, .arg = conn};
    atomic_init(&conn->wq.head, NULL);
    atomic_init(&conn->flushing, false);
    atomic_init(&conn->queued, 0);
    conn->pend = conn->pend_tail = NULL;
}

static bool writing(const net_conn_t *conn)
{
    return conn->ch.interest & NET_WRITABLE;
}

/* The socket is full: output backs up, and may pause reading (the
 * backpressure rule, tcp_conn.c). */
static void wait_writable(net_conn_t *conn)
{
    net__conn_output_backed_up(conn);
    net__conn_set_interest(conn, net__conn_read_interest(conn) | NET_WRITABLE);
}

/* ---- counting ---------------------------------------------------------------- */

/* Counts len more queued bytes and reports a high-water crossing. With
 * enforce, fails with -ENOBUFS (counting nothing) past max_output. The
 * limit is checked without a retry loop: a send that loses a race near the
 * limit may fail while a smaller one would still fit, never the other way. */
static int account(net_conn_t *conn, size_t len, bool enforce)
{
    size_t max = conn->opt.max_output;
    if (enforce && max && atomic_load_explicit(&conn->queued, memory_order_relaxed) + len > max)
        return -ENOBUFS;
    size_t old = atomic_fetch_add_explicit(&conn->queued, len, memory_order_relaxed);
    if (enforce && max && old + len > max) {
        atomic_fetch_sub_explicit(&conn->queued, len, memory_order_relaxed);
        return -ENOBUFS;
    }
    size_t mark = atomic_load_explicit(&conn->high_water, memory_order_relaxed);
    /* Each fetch_add sees a distinct `old`: one send wins each crossing. */
    if (mark && old < mark && old + len >= mark && conn->cbs.on_high_water)
        net__conn_queue_high_water(conn, old + len);
    return 0;
}

static void unaccount(net_conn_t *conn, size_t len)
{
    atomic_fetch_sub_explicit(&conn->queued, len, memory_order_relaxed);
}

/* ---- the pending list (loop thread) ------------------------------------------- */

static void pend_append(net_conn_t *conn, struct net__wq_node *first, struct net__wq_node *last)
{
    if (conn->pend_tail)
        atomic_store_explicit(&conn->pend_tail->next, first, memory_order_relaxed);
    else
        conn->pend = first;
    conn->pend_tail = last;
}

static struct net__wq_node *node_next(struct net__wq_node *n)
{
    return atomic_load_explicit(&n->next, memory_order_relaxed);
}

/* Moves what senders pushed onto the end of `pend`. */
static void take_pushed(net_conn_t *conn)
{
    struct net__wq_node *last, *first = net__wq_take(&conn->wq, &last);
    if (first)
        pend_append(conn, first, last);
}

void net__conn_output_discard(net_conn_t *conn)
{
    /* Closed: the token stays taken, so late senders schedule nothing; what
     * they push waits here for the connection's free. */
    atomic_store(&conn->flushing, true);
    take_pushed(conn);
    size_t dropped = 0;
    for (struct net__wq_node *p = conn->pend, *next; p; p = next) {
        next = node_next(p);
        dropped += p->len - p->off;
        net__wq_node_free(p);
    }
    conn->pend = conn->pend_tail = NULL;
    unaccount(conn, dropped);
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
static int gather(const net_conn_t *conn, struct iovec *iov, size_t *offered)
{
    char *scratch = net__loop_scratch(conn->loop);
    size_t used = 0;
    bool in_run = false; /* iov[n - 1] is a run of small nodes in scratch */
    int n = 0;
    *offered = 0;
    for (struct net__wq_node *p = conn->pend; p; p = node_next(p)) {
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
static void drop_written(net_conn_t *conn, size_t written)
{
    while (written) {
        struct net__wq_node *p = conn->pend;
        size_t left = p->len - p->off;
        if (written < left) {
            p->off += written;
            return;
        }
        written -= left;
        if (!(conn->pend = node_next(p)))
            conn->pend_tail = NULL;
        net__wq_node_free(p);
    }
}

/* Drops `written` bytes from the front of `pend`. */
static void consume(net_conn_t *conn, size_t written)
{
    unaccount(conn, written);
    atomic_fetch_add_explicit(&conn->bytes_out, written, memory_order_relaxed);
    conn->flush_wrote = true;
    drop_written(conn, written);
    net__conn_output_moved(conn);
}

/* Writes `pend` until it is empty (0) or the socket is full (1). On an
 * error the connection is closed and the error returned. */
static int write_pending(net_conn_t *conn)
{
    struct iovec iov[WRITEV_MAX];
    while (conn->pend) {
        size_t offered;
        struct msghdr msg = {.msg_iov = iov};
        msg.msg_iovlen = (size_t)gather(conn, iov, &offered);
        ssize_t w = sendmsg(conn->ch.fd, &msg, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return 1;
            int err = -errno;
            net__conn_handle_error(conn, err, "write");
            return err;
        }
        consume(conn, (size_t)w);
        if ((size_t)w < offered)
            return 1;
    }
    return 0;
}

/* Gives the token back. Returns false if something was pushed meanwhile and
 * the token could be taken again: the caller goes on flushing. */
static bool token_release(net_conn_t *conn)
{
    atomic_store_explicit(&conn->flushing, false, memory_order_seq_cst);
    if (net__wq_empty(&conn->wq))
        return true;
    return atomic_exchange_explicit(&conn->flushing, true, memory_order_seq_cst);
}

/* Everything is written and the token is back. */
static void output_drained(net_conn_t *conn)
{
    net__conn_set_interest(conn, net__conn_read_interest(conn));
    if (conn->flush_wrote) {
        conn->flush_wrote = false;
        net__conn_defer_write_complete(conn);
    }
    if (net_conn_state(conn) == NET_CONN_DISCONNECTING && !conn->write_shut)
        net__conn_shutdown_write(conn);
    else if (conn->peer_eof && !conn->opt.half_close)
        net__conn_handle_close(conn);
}

/* DISCONNECTING may still write until the write side is shut: a send that
 * another thread queued before its own shutdown() must go out before the
 * FIN (net_conn_send() refuses new sends once shutdown was called). */
static bool can_write(const net_conn_t *conn)
{
    return net_conn_state(conn) != NET_CONN_DISCONNECTED && !conn->write_shut &&
           !atomic_load_explicit(&conn->closing, memory_order_relaxed);
}

static void flush_cb(void *arg)
{
    flush_output(arg);
    net_conn_unref(arg);
}

/* Queues a flush for the token's holder. The task lives in the connection
 * and posting it needs no memory, so a flush is never lost for want of it;
 * the token makes sure at most one is queued at a time. */
static void flush_later(net_conn_t *conn)
{
    net_conn_ref(conn);
    net__loop_post(conn->loop, &conn->flush_task);
}

/* The one place output leaves. The caller holds the token; it passes on to
 * exactly one continuation (EPOLLOUT or a queued flush) or is given back. */
static void flush_output(net_conn_t *conn)
{
    if (!can_write(conn)) {
        net__conn_output_discard(conn);
        return;
    }
    for (int round = 0; round < FLUSH_ROUNDS; round++) {
        take_pushed(conn);
        if (!conn->pend) {
            if (token_release(conn)) {
                output_drained(conn);
                return;
            }
            continue;
        }
        int rc = write_pending(conn);
        if (rc < 0)
            return;
        if (rc > 0) {
            wait_writable(conn);
            return;
        }
    }
    if (!writing(conn)) /* an armed EPOLLOUT already brings us back */
        flush_later(conn);
}

void net__conn_handle_write(net_conn_t *conn)
{
    if (writing(conn))
        flush_output(conn);
}

void net__conn_flush_then_finish(net_conn_t *conn)
{
    if (!atomic_exchange(&conn->flushing, true))
        flush_output(conn);
}

/* ---- sending ------------------------------------------------------------------- */

/* Copies the n pieces into one node and pushes it. Returns 1 when the
 * queue was empty (the caller sees to the flush), 0, -ENOBUFS or -ENOMEM. */
static int enqueue_iov(net_conn_t *conn, const struct iovec *iov, int n)
{
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += iov[i].iov_len;
    int rc = account(conn, len, true);
    if (rc < 0)
        return rc;
    struct net__wq_node *node = net__wq_node_alloc(len);
    if (!node) {
        unaccount(conn, len);
        return -ENOMEM;
    }
    for (size_t i = 0, off = 0; i < (size_t)n; off += iov[i].iov_len, i++)
        memcpy(node->data + off, iov[i].iov_base, iov[i].iov_len);
    return net__wq_push(&conn->wq, node) ? 1 : 0;
}

/* Takes the token if it is free. The plain load first keeps senders off
 * the token's cache line while a flush is under way. */
static bool token_take(net_conn_t *conn)
{
    return !atomic_load_explicit(&conn->flushing, memory_order_seq_cst) &&
           !atomic_exchange_explicit(&conn->flushing, true, memory_order_seq_cst);
}

/* Pushes, and if this push found the queue empty and the token free,
 * queues one flush (on the loop thread too: the flush then runs after the
 * current iteration, so messages made during it leave together). Returns 0,
 * or -ENOBUFS / -ENOMEM with nothing queued. */
static int send_queued(net_conn_t *conn, const struct iovec *iov, int n)
{
    if (atomic_load_explicit(&conn->closing, memory_order_relaxed))
        return -ENOTCONN;
    int rc = enqueue_iov(conn, iov, n);
    if (rc <= 0 || !token_take(conn))
        return rc < 0 ? rc : 0;
    flush_later(conn);
    return 0;
}

static int send_from_thread(net_conn_t *conn, const char *data, size_t len)
{
    struct iovec iov = {(void *)data, len};
    return send_queued(conn, &iov, 1);
}

/* Writes with one send(); keeps what the socket did not take. Token held,
 * nothing pending or pushed. */
static int write_direct(net_conn_t *conn, const char *data, size_t len)
{
    ssize_t n = send(conn->ch.fd, data, len, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        int err = -errno;
        net__conn_queue_error(conn, err);
        return err;
    }
    size_t done = n > 0 ? (size_t)n : 0;
    atomic_fetch_add_explicit(&conn->bytes_out, done, memory_order_relaxed);
    if (done == len) {
        net__conn_defer_write_complete(conn);
        if (!token_release(conn))
            flush_later(conn);
        return 0;
    }
    struct net__wq_node *rest = net__wq_node_alloc(len - done);
    if (!rest) {
        /* Part of the message is on the wire: the stream is broken. */
        net__conn_queue_error(conn, -ENOMEM);
        return -ENOMEM;
    }
    account(conn, len - done, false); /* the limit was checked before the write */
    memcpy(rest->data, data + done, len - done);
    atomic_store_explicit(&rest->next, NULL, memory_order_relaxed);
    pend_append(conn, rest, rest);
    conn->flush_wrote = true;
    wait_writable(conn);
    return 0;
}

/* On the loop thread: write at once when nothing is queued, else queue
 * behind what is (order). Callbacks never run inside. */
static int send_in_loop(net_conn_t *conn, const char *data, size_t len)
{
    if (!can_write(conn))
        return -ENOTCONN;
    if (conn->opt.max_output && len > conn->opt.max_output)
        return -ENOBUFS;
    if (!token_take(conn)) {
        struct iovec iov = {(void *)data, len};
        int rc = enqueue_iov(conn, &iov, 1); /* the holder will write it */
        return rc < 0 ? rc : 0;
    }
    if (net__wq_empty(&conn->wq))
        return write_direct(conn, data, len);
    /* Another thread pushed and found the token ours: flush for both. */
    struct iovec iov = {(void *)data, len};
    int rc = enqueue_iov(conn, &iov, 1);
    flush_later(conn);
    return rc < 0 ? rc : 0;
}

int net__conn_sendv(net_conn_t *conn, const struct iovec *iov, int n)
{
    return net_conn_connected(conn) ? send_queued(conn, iov, n) : -ENOTCONN;
}

/* ---- cross-thread send through the loop's functor queue ---------------------- */

/* The first cross-thread path (issue 3), kept as the xsend_via_loop option
 * for comparison and for users who want it: each send is a functor that
 * carries its own copy and runs send_in_loop. */
struct send_task {
    net_conn_t *conn;
    net_buf_t buf;
};

static void send_task_run(void *arg)
{
    struct send_task *t = arg;
    send_in_loop(t->conn, net_buf_peek(&t->buf), net_buf_readable(&t->buf));
    net_conn_unref(t->conn);
    net_buf_destroy(&t->buf);
    net__free(t);
}

/* Hands buf's storage (not a copy of it) to the loop. */
static int send_task_queue(net_conn_t *conn, net_buf_t *buf)
{
    struct send_task *t = net__malloc(sizeof *t);
    if (!t)
        return -ENOMEM;
    t->conn = net_conn_ref(conn);
    t->buf = *buf;
    int rc = net_loop_queue_in_loop(conn->loop, send_task_run, t);
    if (rc < 0) {
        net_conn_unref(conn);
        net__free(t);
        return rc;
    }
    net_buf_init(buf);
    return 0;
}

/* ---- the public calls -------------------------------------------------------- */

static int check_send(const net_conn_t *conn)
{
    return net_conn_connected(conn) ? 0 : -ENOTCONN;
}

int net_conn_send(net_conn_t *conn, const void *data, size_t len)
{
    if (!conn || (!data && len))
        return -EINVAL;
    int rc = check_send(conn);
    if (rc < 0 || len == 0)
        return rc;
    if (net_loop_in_loop_thread(conn->loop))
        return send_in_loop(conn, data, len);
    if (!conn->opt.xsend_via_loop)
        return send_from_thread(conn, data, len);
    net_buf_t copy = NET_BUF_INIT;
    if ((rc = net_buf_append(&copy, data, len)) == 0 && (rc = send_task_queue(conn, &copy)) < 0)
        net_buf_destroy(&copy);
    return rc;
}

int net_conn_send_buf(net_conn_t *conn, net_buf_t *buf)
{
    if (!conn || !buf)
        return -EINVAL;
    int rc = check_send(conn);
    if (rc < 0 || net_buf_readable(buf) == 0)
        return rc;
    bool in_loop = net_loop_in_loop_thread(conn->loop);
    if (!in_loop && conn->opt.xsend_via_loop)
        return send_task_queue(conn, buf);
    const char *p = net_buf_peek(buf);
    size_t len = net_buf_readable(buf);
    rc = in_loop ? send_in_loop(conn, p, len) : send_from_thread(conn, p, len);
    if (rc == 0)
        net_buf_retrieve_all(buf);
    return rc;
}
