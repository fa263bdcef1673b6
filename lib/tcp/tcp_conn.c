/* A TCP connection (muduo's TcpConnection): its life, reading, closing and
 * options. The write path is in conn_output.c.
 *
 * All socket I/O and all state changes except the first step of shutdown and
 * force_close happen on the connection's loop thread. The state is atomic so
 * that other threads can refuse work on a closed connection without touching
 * the loop. A connection never uses its fd after net__conn_handle_close()
 * closed it, so a late send can never reach a reused descriptor. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loop/alloc_internal.h"
#include "tcp/buffer_internal.h"
#include "loop/log_internal.h"
#include "tcp/tcp_conn_impl.h"

#define DEFAULT_HIGH_WATER (64u * 1024 * 1024)
/* A few MiB of queued output keep a fast link busy (several bandwidth-delay
 * products of a LAN) while one peer that never reads costs little. */
#define DEFAULT_BACKPRESSURE (4u * 1024 * 1024)
/* As large as the RPC layer's default frame: a message being assembled. */
#define DEFAULT_MAX_INPUT (64u * 1024 * 1024)
/* Over the budget, connections holding less than a small share keep
 * reading up to it: an honest client with small messages is served while
 * the big holders wait. The share is a 16th of the budget spread over the
 * connections (so all the small ones together overshoot it by 1/16 at
 * most), within these bounds. */
#define BUDGET_SHARE_MIN (16u * 1024)
#define BUDGET_SHARE_MAX (256u * 1024)
/* How often a connection paused for the budget looks whether the total
 * fell below 7/8 of it. */
#define BUDGET_RECHECK_MS 20

static atomic_ullong next_conn_id = 1;

/* ---- options, refs, accessors ----------------------------------------- */

void net_conn_options_init(struct net_conn_options *opt)
{
    *opt = (struct net_conn_options){.high_water_mark = DEFAULT_HIGH_WATER,
                                     .backpressure_mark = DEFAULT_BACKPRESSURE,
                                     .max_input = DEFAULT_MAX_INPUT,
                                     .tcp_nodelay = true};
}

/* 0 means the default for the size options added with backpressure. */
static void options_normalise(struct net_conn_options *opt)
{
    if (!opt->backpressure_mark)
        opt->backpressure_mark = DEFAULT_BACKPRESSURE;
    if (!opt->max_input)
        opt->max_input = DEFAULT_MAX_INPUT;
}

net_conn_t *net_conn_ref(net_conn_t *conn)
{
    atomic_fetch_add_explicit(&conn->refs, 1, memory_order_relaxed);
    return conn;
}

static void budget_leave(net_conn_t *conn);

static void conn_free(net_conn_t *conn)
{
    /* Only a connection that never reached its loop is still open here. */
    if (atomic_load(&conn->state) != NET_CONN_DISCONNECTED && conn->ch.fd >= 0)
        close(conn->ch.fd);
    net_buf_destroy(&conn->in);
    net__conn_output_discard(conn);
    budget_leave(conn); /* one that never came up still counted */
    net__free(conn);
}

void net_conn_unref(net_conn_t *conn)
{
    if (conn && atomic_fetch_sub_explicit(&conn->refs, 1, memory_order_acq_rel) == 1)
        conn_free(conn);
}

net_conn_state_t net_conn_state(const net_conn_t *conn)
{
    return (net_conn_state_t)atomic_load(&conn->state);
}

bool net_conn_connected(const net_conn_t *conn)
{
    return net_conn_state(conn) == NET_CONN_CONNECTED;
}

void net_conn_set_context(net_conn_t *conn, void *context)
{
    atomic_store(&conn->context, context);
}

void *net_conn_context(const net_conn_t *conn)
{
    return atomic_load(&((net_conn_t *)conn)->context);
}

net_loop_t *net_conn_loop(const net_conn_t *conn)
{
    return conn->loop;
}

uint64_t net_conn_id(const net_conn_t *conn)
{
    return conn->id;
}

const net_addr_t *net_conn_local_addr(const net_conn_t *conn)
{
    return &conn->local;
}

const net_addr_t *net_conn_peer_addr(const net_conn_t *conn)
{
    return &conn->peer;
}

void net_conn_set_high_water_mark(net_conn_t *conn, size_t bytes)
{
    atomic_store(&conn->high_water, bytes);
}

void net_conn_stats(const net_conn_t *conn, struct net_conn_stats *out)
{
    net_conn_t *c = (net_conn_t *)conn;
    out->bytes_received = atomic_load_explicit(&c->bytes_in, memory_order_relaxed);
    out->bytes_sent = atomic_load_explicit(&c->bytes_out, memory_order_relaxed);
    out->output_queued = atomic_load_explicit(&c->queued, memory_order_relaxed);
}

/* ---- deferred work ------------------------------------------------------ */

/* Runs fn(conn) later on the loop thread, holding a reference meanwhile. */
int net__conn_defer(net_conn_t *conn, net_loop_fn fn)
{
    net_conn_ref(conn);
    int rc = net_loop_queue_in_loop(conn->loop, fn, conn);
    if (rc < 0)
        net_conn_unref(conn);
    return rc;
}

/* As net__conn_defer(), but at once when already on the loop thread. */
static int in_loop(net_conn_t *conn, net_loop_fn fn)
{
    net_conn_ref(conn);
    int rc = net_loop_run_in_loop(conn->loop, fn, conn);
    if (rc < 0)
        net_conn_unref(conn);
    return rc;
}

static void write_complete_cb(void *arg)
{
    net_conn_t *conn = arg;
    if (net_conn_state(conn) != NET_CONN_DISCONNECTED && conn->cbs.on_write_complete)
        conn->cbs.on_write_complete(conn, conn->cbs.arg);
    net_conn_unref(conn);
}

void net__conn_defer_write_complete(net_conn_t *conn)
{
    if (conn->cbs.on_write_complete)
        net__conn_defer(conn, write_complete_cb);
}

struct high_water_event {
    net_conn_t *conn;
    size_t queued;
};

static void high_water_cb(void *arg)
{
    struct high_water_event *ev = arg;
    if (net_conn_state(ev->conn) != NET_CONN_DISCONNECTED)
        ev->conn->cbs.on_high_water(ev->conn, ev->queued, ev->conn->cbs.arg);
    net_conn_unref(ev->conn);
    net__free(ev);
}

void net__conn_queue_high_water(net_conn_t *conn, size_t queued)
{
    struct high_water_event *ev = net__malloc(sizeof *ev);
    if (!ev)
        return; /* a lost notification beats a failed send */
    ev->conn = net_conn_ref(conn);
    ev->queued = queued;
    if (net_loop_queue_in_loop(conn->loop, high_water_cb, ev) < 0) {
        net_conn_unref(conn);
        net__free(ev);
    }
}

/* ---- interest ----------------------------------------------------------- */

void net__conn_set_interest(net_conn_t *conn, unsigned interest)
{
    if (conn->ch.interest == interest || conn->ch.poller_slot < 0)
        return;
    conn->ch.interest = interest;
    int rc = net__loop_update_channel(conn->loop, &conn->ch);
    if (rc < 0)
        NET__LOG_RL(NET_LOG_ERROR, "conn %llu: poller update: %s",
                    (unsigned long long)conn->id, net_strerror(rc));
}

unsigned net__conn_read_interest(const net_conn_t *conn)
{
    return !conn->pause && !conn->peer_eof ? NET_READABLE : 0u;
}

/* ---- pausing and the memory budget ----------------------------------------- */

static void deliver(net_conn_t *conn);

static void redeliver_cb(void *arg)
{
    net_conn_t *conn = arg;
    conn->redeliver_queued = false;
    if (net_conn_state(conn) != NET_CONN_DISCONNECTED && !conn->pause &&
        net_buf_readable(&conn->in))
        deliver(conn);
    net_conn_unref(conn);
}

/* Input left in the buffer when reading paused is handed over again once
 * it resumes: no new bytes may come to trigger it (the rest of a pipelined
 * burst can be all there is). If the task cannot be queued the bytes wait
 * for the next read. */
static void queue_redeliver(net_conn_t *conn)
{
    if (!conn->redeliver_queued && net__conn_defer(conn, redeliver_cb) == 0)
        conn->redeliver_queued = true;
}

static void attach(net_conn_t *conn)
{
    conn->detached = false;
    conn->ch.interest = NET_READABLE;
    int rc = net__loop_add_channel(conn->loop, &conn->ch);
    if (rc < 0)
        net__conn_queue_error(conn, rc);
}

static void detach(net_conn_t *conn)
{
    conn->detached = true;
    net__loop_remove_channel(conn->loop, &conn->ch);
}

/* Applies conn->pause after it went to or from zero. */
static void read_state_changed(net_conn_t *conn)
{
    if (net_conn_state(conn) == NET_CONN_DISCONNECTED)
        return;
    unsigned writable = conn->ch.interest & NET_WRITABLE;
    if (conn->pause) {
        net__conn_set_interest(conn, writable);
    } else if (conn->detached) {
        attach(conn);
    } else {
        net__conn_set_interest(conn, net__conn_read_interest(conn) | writable);
        if (net_buf_readable(&conn->in))
            queue_redeliver(conn);
    }
}

static void pause_set(net_conn_t *conn, unsigned reason, bool on)
{
    unsigned old = conn->pause;
    conn->pause = on ? old | reason : old & ~reason;
    if (!old != !conn->pause)
        read_state_changed(conn);
}

static size_t input_held(const net_conn_t *conn)
{
    size_t cap = net_buf_capacity(&conn->in);
    /* A mapping (NET__MAP_MIN and up): untouched pages cost nothing. */
    return cap < NET__MAP_MIN ? cap : net_buf_prependable(&conn->in) + net_buf_readable(&conn->in);
}

static size_t held(const net_conn_t *conn)
{
    return input_held(conn) + atomic_load_explicit(&conn->queued, memory_order_relaxed);
}

/* Brings the budget's total up to date with what this connection holds,
 * in steps (relaxed: the total is a gauge; nothing is ordered by it). */
static void budget_sync(net_conn_t *conn)
{
    struct net__budget *b = conn->budget;
    if (!b)
        return;
    size_t step = held(conn) & ~(size_t)(NET__BUDGET_STEP - 1);
    if (step != conn->budget_reported) {
        atomic_fetch_add_explicit(&b->used, step - conn->budget_reported, memory_order_relaxed);
        conn->budget_reported = step;
    }
}

static void budget_leave(net_conn_t *conn)
{
    if (conn->budget) {
        atomic_fetch_sub_explicit(&conn->budget->used, conn->budget_reported,
                                  memory_order_relaxed);
        atomic_fetch_sub_explicit(&conn->budget->conns, 1, memory_order_relaxed);
    }
    conn->budget = NULL;
    conn->budget_reported = 0;
}

static bool budget_over(const struct net__budget *b, size_t limit)
{
    return atomic_load_explicit(&((struct net__budget *)b)->used, memory_order_relaxed) > limit;
}

static void budget_timer_fired(net_loop_t *loop, net_timer_id_t id, void *arg);

static int budget_arm(net_conn_t *conn)
{
    net_timer_id_t id = net_loop_run_after(conn->loop, BUDGET_RECHECK_MS, budget_timer_fired, conn);
    conn->budget_timer = id > 0 ? id : 0;
    return id > 0 ? 0 : -ENOMEM;
}

/* Resumes once the total is below 7/8 of the budget; else looks again. The
 * timer's reference passes to the next timer. */
static void budget_timer_fired(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    net_conn_t *conn = arg;
    conn->budget_timer = 0;
    if (net_conn_state(conn) != NET_CONN_DISCONNECTED && conn->budget) {
        if (!budget_over(conn->budget, conn->budget->limit - conn->budget->limit / 8))
            pause_set(conn, NET__PAUSE_BUDGET, false);
        else if (budget_arm(conn) == 0)
            return;
    }
    net_conn_unref(conn);
}

/* Before a read: over the budget, a connection holding more than a small
 * share pauses instead of reading more; a smaller one reads only up to that
 * share. Returns how much it may read, 0 for none. Without a timer to
 * resume it, it reads on (bounded service beats a connection stuck). */
static size_t budget_share(const struct net__budget *b)
{
    size_t n = atomic_load_explicit(&((struct net__budget *)b)->conns, memory_order_relaxed);
    size_t share = b->limit / 16 / (n ? n : 1);
    return share < BUDGET_SHARE_MIN ? BUDGET_SHARE_MIN
           : share > BUDGET_SHARE_MAX ? BUDGET_SHARE_MAX : share;
}

static size_t budget_allowance(net_conn_t *conn)
{
    struct net__budget *b = conn->budget;
    if (!b || !budget_over(b, b->limit))
        return SIZE_MAX;
    size_t h = held(conn), share = budget_share(b);
    if (h < share)
        return share - h;
    net_conn_ref(conn); /* held by the timer */
    if (budget_arm(conn) < 0) {
        net_conn_unref(conn);
        return SIZE_MAX;
    }
    atomic_fetch_add_explicit(&b->pauses, 1, memory_order_relaxed);
    pause_set(conn, NET__PAUSE_BUDGET, true);
    return 0;
}

void net__conn_set_budget(net_conn_t *conn, struct net__budget *b)
{
    conn->budget = b;
    atomic_fetch_add_explicit(&b->conns, 1, memory_order_relaxed);
}

void net__conn_output_backed_up(net_conn_t *conn)
{
    budget_sync(conn);
    if (atomic_load_explicit(&conn->queued, memory_order_relaxed) >= conn->opt.backpressure_mark)
        pause_set(conn, NET__PAUSE_OUTPUT, true);
}

void net__conn_output_moved(net_conn_t *conn)
{
    budget_sync(conn);
    if ((conn->pause & NET__PAUSE_OUTPUT) &&
        atomic_load_explicit(&conn->queued, memory_order_relaxed) < conn->opt.backpressure_mark / 2)
        pause_set(conn, NET__PAUSE_OUTPUT, false);
}

/* ---- closing ------------------------------------------------------------ */

static void cancel_timer(net_conn_t *conn, net_timer_id_t *id)
{
    /* The timer holds a reference; if we stopped it, that reference is ours
     * to drop. */
    if (*id > 0 && net_timer_cancel(conn->loop, *id) == 0)
        net_conn_unref(conn);
    *id = 0;
}

/* ---- giving heap memory back ---------------------------------------------- */

#define TRIM_MIN_HELD (1u << 20) /* a close that frees this much asks for a trim */
#define TRIM_AFTER_MS 200        /* one trim after a burst of closes, not one each */

static atomic_ullong trim_armed_ms; /* when the pending trim was scheduled; 0: none */

static void trim_fired(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    atomic_store(&trim_armed_ms, 0);
    net__heap_trim();
}

/* A connection that held a lot just freed it, much of it medium blocks
 * from the heap (alloc_internal.h, net__heap_trim). A schedule older than
 * a second is stale: its loop went away before it fired. */
static void trim_soon(net_conn_t *conn)
{
    unsigned long long now = net_now_ms(), armed = atomic_load(&trim_armed_ms);
    if (armed && now - armed < 1000)
        return;
    if (!atomic_compare_exchange_strong(&trim_armed_ms, &armed, now))
        return;
    if (net_loop_run_after(conn->loop, TRIM_AFTER_MS, trim_fired, NULL) < 0)
        atomic_store(&trim_armed_ms, 0);
}

void net__conn_handle_close(net_conn_t *conn)
{
    if (net_conn_state(conn) == NET_CONN_DISCONNECTED)
        return;
    size_t was_held = held(conn);
    atomic_store(&conn->state, NET_CONN_DISCONNECTED);
    net__loop_remove_channel(conn->loop, &conn->ch);
    close(conn->ch.fd);
    conn->ch.fd = -1;
    cancel_timer(conn, &conn->idle_timer);
    cancel_timer(conn, &conn->close_timer);
    cancel_timer(conn, &conn->budget_timer);
    net_buf_destroy(&conn->in);
    net__conn_output_discard(conn);
    budget_leave(conn);
    if (was_held >= TRIM_MIN_HELD)
        trim_soon(conn);
    net_conn_ref(conn); /* the owner's hook may drop the last other reference */
    if (conn->cbs.on_connection)
        conn->cbs.on_connection(conn, conn->cbs.arg);
    if (conn->closed)
        conn->closed(conn, conn->owner);
    net_conn_unref(conn);
}

static bool expected_disconnect(int err)
{
    return err == -ECONNRESET || err == -EPIPE || err == -ETIMEDOUT;
}

/* Paused reading (and not force-closed): the kernel may hold bytes the
 * user has not been given yet. */
static bool keeps_unread_input(const net_conn_t *conn)
{
    return conn->pause && !conn->peer_eof && !atomic_load(&conn->closing);
}

/* The socket can take no more output (reset, or both directions shut)
 * while bytes may still wait to be read: output is dropped, new sends are
 * refused (DISCONNECTING), and the fd leaves the poller until reading
 * resumes; then the read path delivers the rest and closes. */
static void write_side_dead(net_conn_t *conn)
{
    int expected = NET_CONN_CONNECTED;
    atomic_compare_exchange_strong(&conn->state, &expected, NET_CONN_DISCONNECTING);
    conn->write_shut = true;
    net__conn_output_discard(conn);
    budget_sync(conn);
    detach(conn);
    /* The output is gone, so is that reason to wait: with no other, the
     * read path takes over at once (attach) and ends in the close. */
    pause_set(conn, NET__PAUSE_OUTPUT, false);
}

/* A read or write error: log once, close once (after the unread input, if
 * reading is paused). */
void net__conn_handle_error(net_conn_t *conn, int err, const char *op)
{
    if (net_conn_state(conn) == NET_CONN_DISCONNECTED)
        return;
    if (expected_disconnect(err))
        NET__LOG_RL(NET_LOG_INFO, "conn %llu: %s: %s", (unsigned long long)conn->id, op,
                    net_strerror(err));
    else
        NET__LOG_RL(NET_LOG_WARN, "conn %llu: %s: %s", (unsigned long long)conn->id, op,
                    net_strerror(err));
    if (keeps_unread_input(conn))
        write_side_dead(conn);
    else
        net__conn_handle_close(conn);
}

struct error_event {
    net_conn_t *conn;
    int err;
};

static void error_cb(void *arg)
{
    struct error_event *ev = arg;
    net__conn_handle_error(ev->conn, ev->err, "write");
    net_conn_unref(ev->conn);
    net__free(ev);
}

/* A send on the loop thread failed: close later, not inside the send. */
void net__conn_queue_error(net_conn_t *conn, int err)
{
    if (!conn->pause) /* a paused connection keeps its input for the user */
        atomic_store(&conn->closing, true);
    struct error_event *ev = net__malloc(sizeof *ev);
    if (ev) {
        ev->conn = net_conn_ref(conn);
        ev->err = err;
        if (net_loop_queue_in_loop(conn->loop, error_cb, ev) == 0)
            return;
        net_conn_unref(conn);
        net__free(ev);
    }
    NET__LOG_RL(NET_LOG_ERROR, "conn %llu: cannot queue close; closing now",
                (unsigned long long)conn->id);
    net__conn_handle_close(conn);
}

void net__conn_shutdown_write(net_conn_t *conn)
{
    conn->write_shut = true;
    if (shutdown(conn->ch.fd, SHUT_WR) < 0 && errno != ENOTCONN)
        NET__LOG_RL(NET_LOG_INFO, "conn %llu: shutdown: %s", (unsigned long long)conn->id,
                    net_strerror(-errno));
    if (conn->peer_eof)
        net__conn_handle_close(conn); /* both directions are done */
}

/* ---- reading ------------------------------------------------------------ */

/* A buffer that emptied gives its storage back by itself (buffer.c); one
 * that keeps the start of the next message after a large one would still
 * pin the large one's pages: it is copied down to size. */
static void shrink_if_sparse(net_buf_t *buf)
{
    size_t cap = net_buf_capacity(buf);
    if (cap > NET_BUF_KEEP && net_buf_readable(buf) <= cap / 4)
        net_buf_shrink(buf, 0);
}
static void handle_peer_eof(net_conn_t *conn)
{
    conn->peer_eof = true;
    net__conn_set_interest(conn, conn->ch.interest & ~(unsigned)NET_READABLE);
    if (conn->opt.half_close && net_conn_state(conn) == NET_CONN_CONNECTED) {
        if (conn->cbs.on_peer_eof)
            conn->cbs.on_peer_eof(conn, conn->cbs.arg);
        return;
    }
    /* Flush what is queued first (muduo drops it, its #366); the flush
     * closes once the output is empty. */
    if (conn->write_shut)
        net__conn_handle_close(conn);
    else
        net__conn_flush_then_finish(conn);
}

static void input_overflow(net_conn_t *conn)
{
    NET__LOG_RL(NET_LOG_WARN, "conn %llu: %zu bytes of unfinished input (max_input %zu): closing",
                (unsigned long long)conn->id, net_buf_readable(&conn->in), conn->opt.max_input);
    net__conn_handle_close(conn);
}

/* Hands the input buffer to on_message, then holds the connection to its
 * input limits. */
static void deliver(net_conn_t *conn)
{
    if (atomic_load_explicit(&conn->closing, memory_order_relaxed) || !conn->cbs.on_message)
        net_buf_retrieve_all(&conn->in);
    else
        conn->cbs.on_message(conn, &conn->in, conn->last_input_ms, conn->cbs.arg);
    if (net_conn_state(conn) == NET_CONN_DISCONNECTED)
        return;
    if (net_buf_readable(&conn->in) > conn->opt.max_input) {
        input_overflow(conn);
        return;
    }
    shrink_if_sparse(&conn->in);
    /* Output made by this read that is still queued: the flush waiting for
     * the socket does not look again until it can write. */
    if (atomic_load_explicit(&conn->queued, memory_order_relaxed) >= conn->opt.backpressure_mark)
        pause_set(conn, NET__PAUSE_OUTPUT, true);
    budget_sync(conn);
}

static void handle_read(net_conn_t *conn)
{
    size_t allowed = budget_allowance(conn);
    if (!allowed)
        return;
    ssize_t n = net__buf_read_fd_max(&conn->in, conn->ch.fd, allowed);
    if (n > 0) {
        atomic_fetch_add_explicit(&conn->bytes_in, (unsigned long long)n, memory_order_relaxed);
        conn->last_input_ms = net__loop_now_ms(conn->loop);
        deliver(conn);
    } else if (n == 0) {
        handle_peer_eof(conn);
    } else if (n != -EAGAIN && n != -EINTR) {
        net__conn_handle_error(conn, (int)n, "read");
    }
}

/* ---- shutdown, close, read control ------------------------------------------ */

static void shutdown_in_loop(void *arg)
{
    net_conn_t *conn = arg;
    if (net_conn_state(conn) == NET_CONN_DISCONNECTING && !conn->write_shut)
        net__conn_flush_then_finish(conn); /* shuts down once the output is empty */
    net_conn_unref(conn);
}

int net_conn_shutdown(net_conn_t *conn)
{
    int expected = NET_CONN_CONNECTED;
    if (!atomic_compare_exchange_strong(&conn->state, &expected, NET_CONN_DISCONNECTING))
        return -ENOTCONN;
    /* Deferred even on the loop thread: the shutdown may complete the close,
     * whose callback must not run inside this call. */
    int rc = net__conn_defer(conn, shutdown_in_loop);
    if (rc < 0) { /* nothing happened: stay open, so that sends and a retry work */
        expected = NET_CONN_DISCONNECTING;
        atomic_compare_exchange_strong(&conn->state, &expected, NET_CONN_CONNECTED);
    }
    return rc;
}

static void force_close_in_loop(void *arg)
{
    net_conn_t *conn = arg;
    net__conn_handle_close(conn);
    net_conn_unref(conn);
}

int net_conn_force_close(net_conn_t *conn)
{
    if (net_conn_state(conn) == NET_CONN_DISCONNECTED || atomic_exchange(&conn->closing, true))
        return -ENOTCONN;
    int rc = net__conn_defer(conn, force_close_in_loop);
    if (rc < 0) /* not closing after all: a later force_close must not see -ENOTCONN */
        atomic_store(&conn->closing, false);
    return rc;
}

void net__conn_close_in_loop(net_conn_t *conn)
{
    atomic_store(&conn->closing, true);
    net__conn_handle_close(conn);
}

static void close_timer_fired(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    net_conn_t *conn = arg;
    conn->close_timer = 0;
    net__conn_handle_close(conn);
    net_conn_unref(conn);
}

struct close_after {
    net_conn_t *conn;
    uint64_t delay_ms;
};

static void close_after_in_loop(void *arg)
{
    struct close_after *c = arg;
    net_conn_t *conn = c->conn;
    if (net_conn_state(conn) != NET_CONN_DISCONNECTED) {
        cancel_timer(conn, &conn->close_timer); /* the latest request wins */
        net_conn_ref(conn);                     /* held by the timer */
        net_timer_id_t id = net_loop_run_after(conn->loop, c->delay_ms, close_timer_fired, conn);
        if (id < 0)
            net_conn_unref(conn);
        else
            conn->close_timer = id;
    }
    net_conn_unref(conn);
    net__free(c);
}

int net_conn_force_close_after(net_conn_t *conn, uint64_t delay_ms)
{
    if (net_conn_state(conn) == NET_CONN_DISCONNECTED)
        return -ENOTCONN;
    struct close_after *c = net__malloc(sizeof *c);
    if (!c)
        return -ENOMEM;
    c->conn = net_conn_ref(conn);
    c->delay_ms = delay_ms;
    int rc = net_loop_run_in_loop(conn->loop, close_after_in_loop, c);
    if (rc < 0) {
        net_conn_unref(conn);
        net__free(c);
    }
    return rc;
}

static void stop_read_in_loop(void *arg)
{
    pause_set(arg, NET__PAUSE_USER, true);
    net_conn_unref(arg);
}

static void start_read_in_loop(void *arg)
{
    pause_set(arg, NET__PAUSE_USER, false);
    net_conn_unref(arg);
}

static void pause_owner_in_loop(void *arg)
{
    pause_set(arg, NET__PAUSE_OWNER, true);
    net_conn_unref(arg);
}

static void resume_owner_in_loop(void *arg)
{
    pause_set(arg, NET__PAUSE_OWNER, false);
    net_conn_unref(arg);
}

int net__conn_pause_owner(net_conn_t *conn, bool pause)
{
    if (net_conn_state(conn) == NET_CONN_DISCONNECTED)
        return -ENOTCONN;
    return in_loop(conn, pause ? pause_owner_in_loop : resume_owner_in_loop);
}

int net_conn_stop_read(net_conn_t *conn)
{
    if (net_conn_state(conn) == NET_CONN_DISCONNECTED)
        return -ENOTCONN;
    return in_loop(conn, stop_read_in_loop);
}

int net_conn_start_read(net_conn_t *conn)
{
    if (net_conn_state(conn) == NET_CONN_DISCONNECTED)
        return -ENOTCONN;
    return in_loop(conn, start_read_in_loop);
}

/* ---- socket options ------------------------------------------------------ */

static bool is_tcp(const net_conn_t *conn)
{
    int family = net_addr_family(&conn->local);
    return family == AF_INET || family == AF_INET6;
}

static int set_opt(net_conn_t *conn, int level, int name, bool on)
{
    if (net_conn_state(conn) == NET_CONN_DISCONNECTED)
        return -ENOTCONN;
    if (!is_tcp(conn))
        return -EOPNOTSUPP;
    int v = on;
    return setsockopt(conn->ch.fd, level, name, &v, sizeof v) < 0 ? -errno : 0;
}

int net_conn_set_tcp_nodelay(net_conn_t *conn, bool on)
{
    return set_opt(conn, IPPROTO_TCP, TCP_NODELAY, on);
}

int net_conn_set_keepalive(net_conn_t *conn, bool on)
{
    return set_opt(conn, SOL_SOCKET, SO_KEEPALIVE, on);
}

/* ---- events and life ------------------------------------------------------- */

/* HUP or ERR with nothing to read now. While reading is paused the kernel
 * may still hold bytes for the user (muduo closes here and loses them):
 * the connection waits, out of the poller, until reading resumes. */
static void handle_hangup(net_conn_t *conn, unsigned revents)
{
    if (keeps_unread_input(conn)) {
        write_side_dead(conn);
        return;
    }
    if (!(revents & NET_ERROR)) {
        net__conn_handle_close(conn);
        return;
    }
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(conn->ch.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    net__conn_handle_error(conn, err ? -err : -EIO, "socket");
}

static void handle_event(struct net__channel *ch, unsigned revents)
{
    net_conn_t *conn = net__container_of(ch, net_conn_t, ch);
    net_conn_ref(conn); /* a callback below may drop every other reference */
    /* The interest check: an earlier callback of this batch may have stopped
     * reading (stop_read) after the poller reported us readable. A peer that
     * sent data and then reset leaves ERR|IN: read first, so the bytes it
     * sent before the reset are delivered; the read itself then reports the
     * error. */
    bool readable = (revents & NET_READABLE) && (conn->ch.interest & NET_READABLE);
    if ((revents & (NET_HUP | NET_ERROR)) && !readable)
        handle_hangup(conn, revents);
    if (readable && net_conn_state(conn) != NET_CONN_DISCONNECTED)
        handle_read(conn);
    if ((revents & NET_WRITABLE) && net_conn_state(conn) != NET_CONN_DISCONNECTED &&
        !conn->detached)
        net__conn_handle_write(conn);
    net_conn_unref(conn);
}

static void idle_check(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    net_conn_t *conn = arg;
    if (net_now_ms() - conn->last_input_ms >= conn->opt.idle_timeout_ms) {
        NET__LOG(NET_LOG_DEBUG, "conn %llu: idle, closing", (unsigned long long)conn->id);
        net__conn_handle_close(conn);
    }
}

static void read_addresses(net_conn_t *conn)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(conn->ch.fd, (struct sockaddr *)&ss, &len) == 0)
        net_addr_from_sockaddr(&conn->local, (struct sockaddr *)&ss, len);
    len = sizeof ss;
    if (getpeername(conn->ch.fd, (struct sockaddr *)&ss, &len) == 0)
        net_addr_from_sockaddr(&conn->peer, (struct sockaddr *)&ss, len);
}

net_conn_t *net__conn_new(net_loop_t *loop, int fd, const struct net_conn_options *opt,
                          const struct net_conn_callbacks *cbs, net__conn_closed_fn closed,
                          void *owner)
{
    net_conn_t *conn = net__calloc(1, sizeof *conn);
    if (!conn) {
        close(fd);
        return NULL;
    }
    atomic_init(&conn->refs, 1);
    atomic_init(&conn->state, NET_CONN_CONNECTING);
    conn->loop = loop;
    conn->id = atomic_fetch_add(&next_conn_id, 1);
    net__channel_init(&conn->ch, fd, handle_event);
    net__conn_output_init(conn);
    if (cbs)
        conn->cbs = *cbs;
    if (opt)
        conn->opt = *opt;
    else
        net_conn_options_init(&conn->opt);
    options_normalise(&conn->opt);
    atomic_init(&conn->high_water, conn->opt.high_water_mark);
    conn->closed = closed;
    conn->owner = owner;
    read_addresses(conn);
    return conn;
}

static void apply_socket_options(net_conn_t *conn)
{
    if (!is_tcp(conn))
        return;
    if (conn->opt.tcp_nodelay)
        net_conn_set_tcp_nodelay(conn, true);
    if (conn->opt.keepalive)
        net_conn_set_keepalive(conn, true);
}

static void start_idle_timer(net_conn_t *conn)
{
    if (!conn->opt.idle_timeout_ms)
        return;
    /* One repeating check per connection instead of a re-armed timer per read:
     * reads only store a timestamp. A connection closes between 1x and 2x the
     * timeout after its last input. */
    net_conn_ref(conn);
    conn->idle_timer = net_loop_run_every(conn->loop, conn->opt.idle_timeout_ms, idle_check, conn);
    if (conn->idle_timer < 0) {
        conn->idle_timer = 0;
        net_conn_unref(conn);
    }
}

void net__conn_establish(net_conn_t *conn)
{
    atomic_store(&conn->state, NET_CONN_CONNECTED);
    apply_socket_options(conn);
    conn->ch.interest = NET_READABLE;
    int rc = net__loop_add_channel(conn->loop, &conn->ch);
    if (rc < 0) {
        NET__LOG_RL(NET_LOG_ERROR, "conn %llu: cannot watch fd %d: %s",
                    (unsigned long long)conn->id, conn->ch.fd, net_strerror(rc));
        struct net_conn_callbacks none = {0};
        conn->cbs = none; /* the user never saw it come up: no down either */
        net__conn_handle_close(conn);
        return;
    }
    conn->last_input_ms = net_now_ms();
    start_idle_timer(conn);
    if (conn->cbs.on_connection)
        conn->cbs.on_connection(conn, conn->cbs.arg);
}

void *net__conn_owner(const net_conn_t *conn)
{
    return conn->owner;
}

void net__conn_set_owner_data(net_conn_t *conn, void *data)
{
    atomic_store(&conn->owner_data, data);
}

void *net__conn_owner_data(const net_conn_t *conn)
{
    return atomic_load(&((net_conn_t *)conn)->owner_data);
}

struct net__conn_link *net__conn_link(net_conn_t *conn)
{
    return &conn->link;
}
