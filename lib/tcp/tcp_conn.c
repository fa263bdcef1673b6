/* A TCP connection (muduo's TcpConnection): its life, reading, closing,
 * options, and the send calls. The output itself (queueing, flushing,
 * writing) is conn_output.c, which this file calls and which never calls
 * back: what the output needs done comes back as NET__OUT_* bits, applied
 * here (output_apply).
 *
 * All socket I/O and all state changes except the first step of shutdown and
 * force_close happen on the connection's loop thread. The state is atomic so
 * that other threads can refuse work on a closed connection without touching
 * the loop. Work other threads hand to the loop (a flush, a shutdown, a
 * close, a read pause, a notification) goes through the connection's one
 * armed task (loop/armed.h) and its work bits: no allocation, so none of
 * those calls can fail for want of memory. A connection never uses its fd
 * after net__conn_handle_close() closed it, so a late send can never reach
 * a reused descriptor. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loop/alloc_internal.h"
#include "loop/log_internal.h"
#include "tcp/buffer_internal.h"
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
/* Input storage up to this size may hold a message's unfinished start
 * whatever its share of it (input_compact). */
#define INPUT_SPARSE_MIN (4u * 1024)

/* The connection's deferred work (net_conn.work), done by its task in
 * this order: notifications of what already happened first, then the
 * flush, then what the user asked for, the closes last. */
enum {
    NET__WORK_HIGH_WATER = 1u,     /* on_high_water, with the crossing's count */
    NET__WORK_WRITE_COMPLETE = 2u, /* on_write_complete, unless output is on its way */
    NET__WORK_FLUSH = 4u,          /* the token's holder asked for a flush */
    NET__WORK_PAUSE = 8u,          /* make pause follow want_pause */
    NET__WORK_REDELIVER = 16u,     /* hand buffered input to on_message again */
    NET__WORK_ERROR = 32u,         /* a send on the loop thread failed: close */
    NET__WORK_SHUTDOWN = 64u,      /* net_conn_shutdown */
    NET__WORK_CLOSE = 128u,        /* net_conn_force_close */
};

static atomic_ullong next_conn_id = 1;

/* ---- options, refs, accessors ----------------------------------------- */

void net_conn_options_init(struct net_conn_options *opt)
{
    *opt = (struct net_conn_options){.high_water_mark = DEFAULT_HIGH_WATER,
                                     .backpressure_mark = DEFAULT_BACKPRESSURE,
                                     .max_input = DEFAULT_MAX_INPUT,
                                     .max_output = NET_UNLIMITED};
}

static size_t size_or(size_t v, size_t dflt)
{
    return v ? v : dflt;
}

/* 0 means the default in every field (an all-zero struct is the defaults);
 * NET_UNLIMITED and NET_NO_TIMEOUT stay what they say. */
static void options_normalise(struct net_conn_options *opt)
{
    opt->high_water_mark = size_or(opt->high_water_mark, DEFAULT_HIGH_WATER);
    opt->backpressure_mark = size_or(opt->backpressure_mark, DEFAULT_BACKPRESSURE);
    opt->max_input = size_or(opt->max_input, DEFAULT_MAX_INPUT);
    opt->max_output = size_or(opt->max_output, NET_UNLIMITED);
    if (opt->idle_timeout_ms == NET_NO_TIMEOUT)
        opt->idle_timeout_ms = 0; /* off, like the default */
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
    net__output_discard(&conn->out);
    budget_leave(conn); /* one that never came up still counted */
    net__free(atomic_load_explicit(&conn->addrs, memory_order_acquire));
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

/* ---- addresses ------------------------------------------------------------ */

/* The "no address" an accessor returns when the net_addr_t forms found no
 * memory (a zero net_addr_t is AF_UNSPEC). */
static const net_addr_t no_addr;

static socklen_t compact_len(const union net__conn_sockaddr *a)
{
    return a->sa.sa_family == AF_INET    ? (socklen_t)sizeof a->in4
           : a->sa.sa_family == AF_INET6 ? (socklen_t)sizeof a->in6 : 0;
}

/* *out as before from the compact form (it stays zero for no address). */
static void addr_expand(net_addr_t *out, const union net__conn_sockaddr *a)
{
    socklen_t len = compact_len(a);
    if (len)
        net_addr_from_sockaddr(out, &a->sa, len);
}

/* Keeps an IPv4 or IPv6 address compactly; of another family only the
 * family, and then returns false: the full form must be kept. */
static bool addr_keep(union net__conn_sockaddr *a, const struct sockaddr_storage *ss)
{
    a->sa.sa_family = ss->ss_family;
    if (!compact_len(a))
        return ss->ss_family == AF_UNSPEC;
    memcpy(a, ss, compact_len(a));
    return true;
}

static int get_name(int fd, bool peer, struct sockaddr_storage *ss, socklen_t *len)
{
    *len = sizeof *ss;
    memset(ss, 0, sizeof *ss); /* a failed call leaves AF_UNSPEC: no address */
    return peer ? getpeername(fd, (struct sockaddr *)ss, len) : getsockname(fd, (struct sockaddr *)ss, len);
}

/* Reads both addresses. A Unix socket's (up to 110 bytes) get their
 * net_addr_t forms now, so only an IPv4 or IPv6 connection makes them
 * lazily. Returns 0 or -ENOMEM. */
static int read_addresses(net_conn_t *conn)
{
    struct sockaddr_storage local, peer;
    socklen_t local_len, peer_len;
    get_name(conn->ch.fd, false, &local, &local_len);
    get_name(conn->ch.fd, true, &peer, &peer_len);
    bool compact = addr_keep(&conn->local, &local);
    if (addr_keep(&conn->peer, &peer) && compact)
        return 0;
    struct net__conn_addrs *a = net__calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    if (local.ss_family != AF_UNSPEC)
        net_addr_from_sockaddr(&a->local, (struct sockaddr *)&local, local_len);
    if (peer.ss_family != AF_UNSPEC)
        net_addr_from_sockaddr(&a->peer, (struct sockaddr *)&peer, peer_len);
    atomic_store_explicit(&conn->addrs, a, memory_order_relaxed);
    return 0;
}

/* The net_addr_t forms, made at the first call; NULL without memory. */
static struct net__conn_addrs *addrs_get(const net_conn_t *conn)
{
    net_conn_t *c = (net_conn_t *)conn;
    struct net__conn_addrs *a = atomic_load_explicit(&c->addrs, memory_order_acquire), *none = NULL;
    if (a || !(a = net__calloc(1, sizeof *a)))
        return a;
    addr_expand(&a->local, &conn->local);
    addr_expand(&a->peer, &conn->peer);
    /* acq_rel: publishes the forms; a loser takes the winner's. */
    if (atomic_compare_exchange_strong_explicit(&c->addrs, &none, a, memory_order_acq_rel,
                                                memory_order_acquire))
        return a;
    net__free(a);
    return none;
}

const net_addr_t *net_conn_local_addr(const net_conn_t *conn)
{
    struct net__conn_addrs *a = addrs_get(conn);
    return a ? &a->local : &no_addr;
}

const net_addr_t *net_conn_peer_addr(const net_conn_t *conn)
{
    struct net__conn_addrs *a = addrs_get(conn);
    return a ? &a->peer : &no_addr;
}

void net_conn_set_high_water_mark(net_conn_t *conn, size_t bytes)
{
    net__output_set_high_water(&conn->out, size_or(bytes, DEFAULT_HIGH_WATER));
}

void net_conn_stats(const net_conn_t *conn, struct net_conn_stats *out)
{
    out->bytes_received = atomic_load_explicit(&((net_conn_t *)conn)->bytes_in,
                                               memory_order_relaxed);
    out->bytes_sent = net__output_bytes_out(&conn->out);
    out->output_queued = net__output_queued(&conn->out);
}

/* ---- deferred work ------------------------------------------------------ */

/* Asks the task for the work in `bits`; it runs later on the loop, never
 * inside this call. The caller holds a reference (an API call on the
 * connection, or the loop working on it), so dropping the one taken for a
 * task that was armed already cannot free the connection. Thread-safe,
 * allocation-free. */
static void post_work(net_conn_t *conn, unsigned bits)
{
    /* release: what the caller stored for the work (high_water_at,
     * want_pause, error) is seen by the task's acquire exchange. */
    atomic_fetch_or_explicit(&conn->work, bits, memory_order_release);
    net_conn_ref(conn); /* held by the armed task */
    if (!net__armed_arm(&conn->task))
        net_conn_unref(conn); /* the pending run holds one and sees our bits */
}

static void run_work(net_conn_t *conn, unsigned work);

static void work_cb(void *arg)
{
    net_conn_t *conn = arg;
    run_work(conn, atomic_exchange_explicit(&conn->work, 0, memory_order_acquire));
    net_conn_unref(conn);
}

static void notify_high_water(net_conn_t *conn)
{
    if (net_conn_state(conn) != NET_CONN_DISCONNECTED)
        conn->cbs.on_high_water(conn, net__output_high_water_at(&conn->out), conn->cbs.arg);
}

/* A drain reported while more output is already on its way is stale: that
 * output's own drain reports it. So a write-complete never follows a
 * high-water callback while the backlog it reported is still there. */
static void notify_write_complete(net_conn_t *conn)
{
    if (net_conn_state(conn) != NET_CONN_DISCONNECTED && net__output_idle(&conn->out))
        conn->cbs.on_write_complete(conn, conn->cbs.arg);
}

/* ---- interest ----------------------------------------------------------- */

static void set_interest(net_conn_t *conn, unsigned interest)
{
    if (conn->ch.interest == interest || conn->ch.poller_slot < 0)
        return;
    conn->ch.interest = interest;
    int rc = net__loop_update_channel(conn->loop, &conn->ch);
    if (rc < 0)
        NET__LOG_RL(NET_LOG_ERROR, "conn %llu: poller update: %s",
                    (unsigned long long)conn->id, net_strerror(rc));
}

/* Readable while the connection wants input, writable while the output
 * waits for room. */
static void apply_interest(net_conn_t *conn)
{
    unsigned rd = !conn->pause && !conn->peer_eof ? NET_READABLE : 0u;
    set_interest(conn, rd | (net__output_waiting(&conn->out) ? NET_WRITABLE : 0u));
}

/* ---- pausing and the memory budget ----------------------------------------- */

static void queue_error(net_conn_t *conn, int err);

static void attach(net_conn_t *conn)
{
    conn->detached = false;
    conn->ch.interest = NET_READABLE;
    int rc = net__loop_add_channel(conn->loop, &conn->ch);
    if (rc < 0)
        queue_error(conn, rc);
}

static void detach(net_conn_t *conn)
{
    conn->detached = true;
    net__loop_remove_channel(conn->loop, &conn->ch);
}

/* Applies conn->pause after it went to or from zero. Input left in the
 * buffer when reading paused is handed over again once it resumes: no new
 * bytes may come to trigger it (the rest of a pipelined burst can be all
 * there is). */
static void read_state_changed(net_conn_t *conn)
{
    if (net_conn_state(conn) == NET_CONN_DISCONNECTED)
        return;
    if (!conn->pause && conn->detached) {
        attach(conn);
        return;
    }
    apply_interest(conn);
    if (!conn->pause && net_buf_readable(&conn->in))
        post_work(conn, NET__WORK_REDELIVER);
}

static void pause_set(net_conn_t *conn, unsigned reason, bool on)
{
    unsigned old = conn->pause;
    conn->pause = (unsigned char)(on ? old | reason : old & ~reason);
    if (!old != !conn->pause)
        read_state_changed(conn);
}

/* The user's and the owner's reasons follow what their calls last asked
 * for (relaxed: the work bits' release/acquire carry it to the loop, and
 * on the loop thread it is the caller's own store). */
static void pause_apply(net_conn_t *conn)
{
    unsigned want = atomic_load_explicit(&conn->want_pause, memory_order_relaxed);
    pause_set(conn, NET__PAUSE_USER, want & NET__PAUSE_USER);
    pause_set(conn, NET__PAUSE_OWNER, want & NET__PAUSE_OWNER);
}

static size_t input_held(const net_conn_t *conn)
{
    size_t cap = net_buf_capacity(&conn->in);
    /* A mapping (NET__MAP_MIN and up): untouched pages cost nothing. */
    return cap < NET__MAP_MIN ? cap : net_buf_prependable(&conn->in) + net_buf_readable(&conn->in);
}

static size_t held(const net_conn_t *conn)
{
    return input_held(conn) + net__output_queued(&conn->out);
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

static void budget_timer_cb(net_loop_t *loop, net_timer_id_t id, void *arg);

static int budget_arm(net_conn_t *conn)
{
    net_timer_id_t id = net_loop_run_after(conn->loop, BUDGET_RECHECK_MS, budget_timer_cb, conn);
    conn->budget_timer = id > 0 ? id : 0;
    return id > 0 ? 0 : -ENOMEM;
}

/* Resumes once the total is below 7/8 of the budget; else looks again. The
 * timer's reference passes to the next timer. */
static void budget_timer_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
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

/* The backpressure rule after output moved: reading pauses once the
 * output backs up (the socket is full) to the mark, and resumes once it
 * is below half of it; the budget's count follows what is held. */
static void output_moved(net_conn_t *conn, bool backed_up)
{
    budget_sync(conn);
    size_t queued = net__output_queued(&conn->out), mark = conn->backpressure_mark;
    if (backed_up && queued >= mark)
        pause_set(conn, NET__PAUSE_OUTPUT, true);
    else if ((conn->pause & NET__PAUSE_OUTPUT) && queued < mark / 2)
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

/* As cancel_timer, for force_close_after's timer, which any thread sets:
 * whoever exchanges an id out of close_timer cancels that one. */
static void cancel_close_timer(net_conn_t *conn)
{
    net_timer_id_t id = atomic_exchange(&conn->close_timer, 0);
    cancel_timer(conn, &id);
}

/* ---- giving heap memory back ---------------------------------------------- */

#define TRIM_MIN_HELD (1u << 20) /* a close that frees this much asks for a trim */
#define TRIM_AFTER_MS 200        /* one trim after a burst of closes, not one each */

static atomic_ullong trim_armed_ms; /* when the pending trim was scheduled; 0: none */

static void trim_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
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
    if (net_loop_run_after(conn->loop, TRIM_AFTER_MS, trim_cb, NULL) < 0)
        atomic_store(&trim_armed_ms, 0);
}

static void release_resources(net_conn_t *conn)
{
    net__loop_remove_channel(conn->loop, &conn->ch);
    close(conn->ch.fd);
    conn->ch.fd = -1;
    cancel_timer(conn, &conn->idle_timer);
    cancel_close_timer(conn);
    cancel_timer(conn, &conn->budget_timer);
    net_buf_destroy(&conn->in);
    net__output_discard(&conn->out);
    budget_leave(conn);
}

void net__conn_handle_close(net_conn_t *conn)
{
    if (net_conn_state(conn) == NET_CONN_DISCONNECTED)
        return;
    size_t was_held = held(conn);
    /* seq_cst, before the close timer's exchange: see force_close_after. */
    atomic_store(&conn->state, NET_CONN_DISCONNECTED);
    release_resources(conn);
    if (was_held >= TRIM_MIN_HELD)
        trim_soon(conn);
    net_conn_ref(conn); /* the owner's hook may drop the last other reference */
    if (conn->cbs.on_connection)
        conn->cbs.on_connection(conn, conn->cbs.arg);
    if (conn->closed)
        conn->closed(conn, conn->owner);
    net_conn_unref(conn);
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
    net__output_discard(&conn->out);
    budget_sync(conn);
    detach(conn);
    /* The output is gone, so is that reason to wait: with no other, the
     * read path takes over at once (attach) and ends in the close. */
    pause_set(conn, NET__PAUSE_OUTPUT, false);
}

/* A read or write error: close once (after the unread input, if reading
 * is paused). Debug only: the down callback tells the user. */
static void handle_error(net_conn_t *conn, int err, const char *op)
{
    if (net_conn_state(conn) == NET_CONN_DISCONNECTED)
        return;
    NET__LOG(NET_LOG_DEBUG, "conn %llu: %s: %s", (unsigned long long)conn->id, op,
             net_strerror(err));
    if (keeps_unread_input(conn))
        write_side_dead(conn);
    else
        net__conn_handle_close(conn);
}

/* A send on the loop thread broke the stream: close later, not inside the
 * send (the task's NET__WORK_ERROR). */
static void queue_error(net_conn_t *conn, int err)
{
    if (!conn->pause) /* a paused connection keeps its input for the user */
        atomic_store(&conn->closing, true);
    if (!conn->error)
        conn->error = err;
    post_work(conn, NET__WORK_ERROR);
}

static void shutdown_write(net_conn_t *conn)
{
    conn->write_shut = true;
    if (shutdown(conn->ch.fd, SHUT_WR) < 0 && errno != ENOTCONN)
        NET__LOG_RL(NET_LOG_INFO, "conn %llu: shutdown: %s", (unsigned long long)conn->id,
                    net_strerror(-errno));
    if (conn->peer_eof)
        net__conn_handle_close(conn); /* both directions are done */
}

/* ---- acting on the output ------------------------------------------------- */

/* The output's requests for later (a flush, a callback), as work bits. */
static unsigned output_work(const net_conn_t *conn, unsigned ev)
{
    unsigned work = ev & NET__OUT_FLUSH ? NET__WORK_FLUSH : 0u;
    if ((ev & NET__OUT_HIGH_WATER) && conn->cbs.on_high_water)
        work |= NET__WORK_HIGH_WATER;
    if ((ev & NET__OUT_COMPLETE) && conn->cbs.on_write_complete)
        work |= NET__WORK_WRITE_COMPLETE;
    return work;
}

/* What the output reported from another thread (only bits that post). */
static void output_post(net_conn_t *conn, unsigned ev)
{
    unsigned work = output_work(conn, ev);
    if (work)
        post_work(conn, work);
}

/* Once the output is empty, a DISCONNECTING connection shuts its write
 * side and one whose peer half-closed (without the half_close option)
 * closes. */
static void output_finish(net_conn_t *conn)
{
    if (net_conn_state(conn) == NET_CONN_DISCONNECTING && !conn->write_shut)
        shutdown_write(conn);
    else if (conn->peer_eof && !conn->half_close)
        net__conn_handle_close(conn);
}

/* Does what an output call reported (conn_output.h). Loop thread. */
static void output_apply(net_conn_t *conn, unsigned ev)
{
    if (ev & (NET__OUT_MOVED | NET__OUT_WAITING))
        output_moved(conn, ev & NET__OUT_WAITING);
    if (ev & (NET__OUT_WAITING | NET__OUT_DRAINED))
        apply_interest(conn);
    output_post(conn, ev);
    if (ev & NET__OUT_DRAINED)
        output_finish(conn);
}

/* DISCONNECTING may still write until the write side is shut: a send that
 * another thread queued before its own shutdown() must go out before the
 * FIN (net_conn_send() refuses new sends once shutdown was called). */
static bool can_write(const net_conn_t *conn)
{
    return net_conn_state(conn) != NET_CONN_DISCONNECTED && !conn->write_shut &&
           !atomic_load_explicit(&conn->closing, memory_order_relaxed);
}

/* The caller holds the flush token. */
static void flush(net_conn_t *conn)
{
    if (!can_write(conn)) {
        net__output_discard(&conn->out);
        return;
    }
    unsigned ev = 0;
    int rc = net__output_flush(&conn->out, conn->loop, conn->ch.fd, &ev);
    if (rc < 0)
        handle_error(conn, rc, "write");
    else
        output_apply(conn, ev);
}

/* Flushes now if nobody holds the token; else the flush under way ends in
 * output_finish. */
static void flush_then_finish(net_conn_t *conn)
{
    if (net__output_claim(&conn->out))
        flush(conn);
}

/* ---- reading ------------------------------------------------------------ */

/* An idle connection holds no input storage. A read that on_message
 * consumed whole hands its block (NET_BUF_KEEP at most: buffer.c frees
 * more) to its thread's spare, and the next read of any connection of
 * that thread that has none borrows the spare. So the happy path neither
 * allocates nor frees per message, and storage is allocated only where it
 * was before: by a read that finds no spare, or for a message left
 * unfinished. A thread keeps one spare; it is freed when the thread exits. */
static _Thread_local struct {
    net_buf_t buf;
    bool keyed; /* the key whose destructor frees it is set */
} spare;
static pthread_key_t spare_key;
static pthread_once_t spare_once = PTHREAD_ONCE_INIT;

static void spare_free(void *unused)
{
    (void)unused;
    net_buf_destroy(&spare.buf);
    spare.keyed = false; /* a later put (another key's destructor) sets it again */
}

static void spare_make_key(void)
{
    pthread_key_create(&spare_key, spare_free);
}

/* Keeps an emptied buffer's storage as the thread's spare if it has none
 * (else frees it); the buffer is left holding no memory. */
static void spare_put(net_buf_t *buf)
{
    if (spare.buf.data || !buf->data) {
        net_buf_destroy(buf);
        return;
    }
    if (!spare.keyed) {
        pthread_once(&spare_once, spare_make_key);
        spare.keyed = pthread_setspecific(spare_key, &spare) == 0;
        if (!spare.keyed) { /* no destructor to free it at the thread's exit */
            net_buf_destroy(buf);
            return;
        }
    }
    net_buf_retrieve_all(buf); /* rewound: the full prepend area again */
    spare.buf = *buf;
    net_buf_init(buf);
}

/* Before a read into an empty buffer: the spare, if there is one. */
static void input_borrow(net_buf_t *in)
{
    if (!in->data && spare.buf.data) {
        *in = spare.buf;
        net_buf_init(&spare.buf);
    }
}

/* Keeps a message's unfinished start in a block of its size. Over
 * NET_BUF_KEEP, a buffer that keeps the start of the next message after a
 * large one would pin the large one's pages; below it, a few bytes would
 * pin a borrowed spare that grew for large reads (a peer that sends a byte
 * and stops, times many connections). The big block goes back to the
 * spare. Without memory for the copy the buffer stays as it is. */
static void input_compact(net_buf_t *in)
{
    size_t cap = net_buf_capacity(in), readable = net_buf_readable(in);
    if (cap <= INPUT_SPARSE_MIN || readable > cap / 4)
        return;
    if (cap > NET_BUF_KEEP) {
        net_buf_shrink(in, 0);
        return;
    }
    net_buf_t own = NET_BUF_INIT;
    if (net_buf_append(&own, net_buf_peek(in), readable) < 0)
        return;
    spare_put(in);
    *in = own;
}

/* After on_message: an empty buffer keeps no storage. */
static void input_settle(net_buf_t *in)
{
    if (net_buf_readable(in) == 0)
        spare_put(in);
    else
        input_compact(in);
}

static void handle_peer_eof(net_conn_t *conn)
{
    conn->peer_eof = true;
    apply_interest(conn);
    if (conn->half_close && net_conn_state(conn) == NET_CONN_CONNECTED) {
        if (conn->cbs.on_peer_eof)
            conn->cbs.on_peer_eof(conn, conn->cbs.arg);
        return;
    }
    /* Flush what is queued first (muduo drops it, its #366); the flush
     * closes once the output is empty. */
    if (conn->write_shut)
        net__conn_handle_close(conn);
    else
        flush_then_finish(conn);
}

/* Invisible to the user (the down callback does not say why), so worth
 * one rate-limited warning. */
static void input_overflow(net_conn_t *conn)
{
    NET__LOG_RL(NET_LOG_WARN, "conn %llu: %zu bytes of unfinished input (max_input %zu): closing",
                (unsigned long long)conn->id, net_buf_readable(&conn->in), conn->max_input);
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
    if (net_buf_readable(&conn->in) > conn->max_input) {
        input_overflow(conn);
        return;
    }
    input_settle(&conn->in);
    /* Output made by this read that is still queued: the flush waiting for
     * the socket does not look again until it can write. */
    if (net__output_queued(&conn->out) >= conn->backpressure_mark)
        pause_set(conn, NET__PAUSE_OUTPUT, true);
    budget_sync(conn);
}

static void redeliver(net_conn_t *conn)
{
    if (net_conn_state(conn) != NET_CONN_DISCONNECTED && !conn->pause &&
        net_buf_readable(&conn->in))
        deliver(conn);
}

static void handle_read(net_conn_t *conn)
{
    size_t allowed = budget_allowance(conn);
    if (!allowed)
        return;
    input_borrow(&conn->in);
    ssize_t n = net__buf_read_fd_max(&conn->in, conn->ch.fd, allowed);
    if (n > 0) {
        atomic_fetch_add_explicit(&conn->bytes_in, (unsigned long long)n, memory_order_relaxed);
        conn->last_input_ms = net__loop_now_ms(conn->loop);
        deliver(conn);
        return;
    }
    input_settle(&conn->in); /* nothing came: give a borrowed spare back */
    if (n == 0) {
        handle_peer_eof(conn);
    } else if (n != -EAGAIN && n != -EINTR) {
        handle_error(conn, (int)n, "read");
    }
}

/* ---- the task ------------------------------------------------------------ */

/* Each step looks at the state itself: a callback of an earlier one may
 * have closed the connection. */
static void run_work(net_conn_t *conn, unsigned work)
{
    if (work & NET__WORK_HIGH_WATER)
        notify_high_water(conn);
    if (work & NET__WORK_WRITE_COMPLETE)
        notify_write_complete(conn);
    if (work & NET__WORK_FLUSH)
        flush(conn);
    if (work & NET__WORK_PAUSE)
        pause_apply(conn);
    if (work & NET__WORK_REDELIVER)
        redeliver(conn);
    if (work & NET__WORK_ERROR)
        handle_error(conn, conn->error, "write");
    if ((work & NET__WORK_SHUTDOWN) && net_conn_state(conn) == NET_CONN_DISCONNECTING &&
        !conn->write_shut)
        flush_then_finish(conn); /* shuts down once the output is empty */
    if (work & NET__WORK_CLOSE)
        net__conn_handle_close(conn);
}

/* ---- sending --------------------------------------------------------------- */

/* On the loop thread: at once when nothing is queued, else behind what is
 * (order). Callbacks never run inside. */
static int send_in_loop(net_conn_t *conn, const void *data, size_t len)
{
    if (!can_write(conn))
        return -ENOTCONN;
    unsigned ev = 0;
    int rc = net__output_send_now(&conn->out, conn->ch.fd, data, len, &ev);
    if (ev & NET__OUT_BROKEN)
        queue_error(conn, rc);
    output_apply(conn, ev);
    return rc;
}

/* Through the write queue, from any thread; the flush runs on the loop
 * after the current iteration at the earliest. */
static int send_queued(net_conn_t *conn, const struct iovec *iov, int n, size_t len)
{
    if (atomic_load_explicit(&conn->closing, memory_order_relaxed))
        return -ENOTCONN;
    unsigned ev = 0;
    int rc = net__output_reserve(&conn->out, len, &ev);
    if (rc < 0)
        return rc;
    /* The high-water callback is asked for before the bytes are pushed, so
     * it runs before the write-complete of their drain. */
    output_post(conn, ev);
    ev = 0;
    rc = net__output_push(&conn->out, iov, n, len, &ev);
    output_post(conn, ev);
    return rc;
}

int net_conn_send(net_conn_t *conn, const void *data, size_t len)
{
    if (!conn || (!data && len))
        return -EINVAL;
    if (!net_conn_connected(conn))
        return -ENOTCONN;
    if (len == 0)
        return 0;
    if (net_loop_in_loop_thread(conn->loop))
        return send_in_loop(conn, data, len);
    struct iovec iov = {(void *)data, len};
    return send_queued(conn, &iov, 1, len);
}

int net_conn_send_buf(net_conn_t *conn, net_buf_t *buf)
{
    if (!conn || !buf)
        return -EINVAL;
    int rc = net_conn_send(conn, net_buf_peek(buf), net_buf_readable(buf));
    if (rc == 0)
        net_buf_retrieve_all(buf);
    return rc;
}

int net__conn_sendv(net_conn_t *conn, const struct iovec *iov, int n)
{
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += iov[i].iov_len;
    if (!net_conn_connected(conn))
        return -ENOTCONN;
    return len ? send_queued(conn, iov, n, len) : 0; /* an empty node would never leave */
}

/* The pieces are valid and their total fits a size_t. */
static bool iov_valid(const struct iovec *iov, int n)
{
    size_t len = 0;
    for (int i = 0; i < n; i++)
        if ((!iov[i].iov_base && iov[i].iov_len) || __builtin_add_overflow(len, iov[i].iov_len, &len))
            return false;
    return true;
}

int net_conn_sendv(net_conn_t *conn, const struct iovec *iov, int iovcnt)
{
    if (!conn || iovcnt < 0 || (!iov && iovcnt) || !iov_valid(iov, iovcnt))
        return -EINVAL;
    return net__conn_sendv(conn, iov, iovcnt);
}

/* ---- shutdown, close, read control ------------------------------------------ */

int net_conn_shutdown(net_conn_t *conn)
{
    if (!conn)
        return -EINVAL;
    int expected = NET_CONN_CONNECTED;
    if (!atomic_compare_exchange_strong(&conn->state, &expected, NET_CONN_DISCONNECTING))
        return -ENOTCONN;
    /* Deferred even on the loop thread: the shutdown may complete the close,
     * whose callback must not run inside this call. */
    post_work(conn, NET__WORK_SHUTDOWN);
    return 0;
}

int net_conn_force_close(net_conn_t *conn)
{
    if (!conn)
        return -EINVAL;
    if (net_conn_state(conn) == NET_CONN_DISCONNECTED || atomic_exchange(&conn->closing, true))
        return -ENOTCONN;
    post_work(conn, NET__WORK_CLOSE);
    return 0;
}

void net__conn_close_in_loop(net_conn_t *conn)
{
    atomic_store(&conn->closing, true);
    net__conn_handle_close(conn);
}

static void close_timer_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    net_conn_t *conn = arg;
    net_timer_id_t mine = id; /* superseded or cancelled ids stay as they are */
    atomic_compare_exchange_strong(&conn->close_timer, &mine, 0);
    net__conn_handle_close(conn);
    net_conn_unref(conn);
}

/* The timer is added here, on the calling thread (timers are thread-safe),
 * so that a failure to get its memory is this call's -ENOMEM. */
int net_conn_force_close_after(net_conn_t *conn, uint64_t delay_ms)
{
    if (!conn)
        return -EINVAL;
    if (net_conn_state(conn) == NET_CONN_DISCONNECTED)
        return -ENOTCONN;
    net_conn_ref(conn); /* held by the timer */
    net_timer_id_t id = net_loop_run_after(conn->loop, delay_ms, close_timer_cb, conn);
    if (id < 0) {
        net_conn_unref(conn);
        return (int)id;
    }
    /* The latest request wins: the one it replaces is cancelled. Both this
     * exchange and the state load below are seq_cst, like handle_close's
     * store of the state and its exchange of the timer: if the connection
     * closed meanwhile, one side or the other sees the new id and cancels
     * it (the timer would hold the connection until it fired). */
    net_timer_id_t old = atomic_exchange(&conn->close_timer, id);
    cancel_timer(conn, &old);
    if (net_conn_state(conn) == NET_CONN_DISCONNECTED)
        cancel_close_timer(conn);
    return 0;
}

/* Sets or clears one of the thread-safe pause reasons: at once on the loop
 * thread, else by the task (the latest call wins). */
static int request_pause(net_conn_t *conn, unsigned reason, bool on)
{
    if (!conn)
        return -EINVAL;
    if (net_conn_state(conn) == NET_CONN_DISCONNECTED)
        return -ENOTCONN;
    if (on)
        atomic_fetch_or_explicit(&conn->want_pause, reason, memory_order_relaxed);
    else
        atomic_fetch_and_explicit(&conn->want_pause, ~reason, memory_order_relaxed);
    if (net_loop_in_loop_thread(conn->loop))
        pause_apply(conn);
    else
        post_work(conn, NET__WORK_PAUSE);
    return 0;
}

int net__conn_pause_owner(net_conn_t *conn, bool pause)
{
    return request_pause(conn, NET__PAUSE_OWNER, pause);
}

int net_conn_stop_read(net_conn_t *conn)
{
    return request_pause(conn, NET__PAUSE_USER, true);
}

int net_conn_start_read(net_conn_t *conn)
{
    return request_pause(conn, NET__PAUSE_USER, false);
}

/* ---- socket options ------------------------------------------------------ */

static bool is_tcp(const net_conn_t *conn)
{
    return compact_len(&conn->local) != 0;
}

static int sock_opt(net_conn_t *conn, int level, int name, bool on)
{
    int v = on;
    return setsockopt(conn->ch.fd, level, name, &v, sizeof v) < 0 ? -errno : 0;
}

/* Loop thread only: there the state says whether the fd is still ours
 * (handle_close marks the connection closed before it closes the fd, on
 * this thread), so the option never reaches a reused descriptor. */
static int set_opt(net_conn_t *conn, int level, int name, bool on)
{
    if (!conn)
        return -EINVAL;
    if (!net_loop_in_loop_thread(conn->loop))
        return NET_EWRONGTHREAD;
    if (net_conn_state(conn) == NET_CONN_DISCONNECTED)
        return -ENOTCONN;
    return is_tcp(conn) ? sock_opt(conn, level, name, on) : -EOPNOTSUPP;
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
    handle_error(conn, err ? -err : -EIO, "socket");
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
        !conn->detached && net__output_waiting(&conn->out))
        flush(conn); /* the token waited for this */
    net_conn_unref(conn);
}

static void idle_check(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    net_conn_t *conn = arg;
    if (net_now_ms() - conn->last_input_ms >= conn->idle_timeout_ms) {
        NET__LOG(NET_LOG_DEBUG, "conn %llu: idle, closing", (unsigned long long)conn->id);
        net__conn_handle_close(conn);
    }
}

static void conn_set_options(net_conn_t *conn, const struct net_conn_options *given)
{
    struct net_conn_options opt = {0};
    if (given)
        opt = *given;
    options_normalise(&opt);
    conn->backpressure_mark = opt.backpressure_mark;
    conn->max_input = opt.max_input;
    conn->idle_timeout_ms = opt.idle_timeout_ms;
    conn->half_close = opt.half_close;
    conn->nagle = opt.nagle;
    conn->keepalive = opt.keepalive;
    net__output_init(&conn->out, opt.high_water_mark, opt.max_output);
}

static void conn_init(net_conn_t *conn, net_loop_t *loop, int fd)
{
    atomic_init(&conn->refs, 1);
    atomic_init(&conn->state, NET_CONN_CONNECTING);
    conn->loop = loop;
    conn->id = atomic_fetch_add(&next_conn_id, 1);
    net__channel_init(&conn->ch, fd, handle_event);
    net__armed_init(&conn->task, loop, work_cb, conn);
    atomic_init(&conn->work, 0);
    atomic_init(&conn->want_pause, 0);
    atomic_init(&conn->close_timer, 0);
    atomic_init(&conn->addrs, NULL);
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
    conn_init(conn, loop, fd);
    if (cbs)
        conn->cbs = *cbs;
    conn_set_options(conn, opt);
    conn->closed = closed;
    conn->owner = owner;
    if (read_addresses(conn) < 0) {
        conn_free(conn);
        return NULL;
    }
    return conn;
}

static void apply_socket_options(net_conn_t *conn)
{
    if (!is_tcp(conn))
        return;
    if (!conn->nagle)
        sock_opt(conn, IPPROTO_TCP, TCP_NODELAY, true);
    if (conn->keepalive)
        sock_opt(conn, SOL_SOCKET, SO_KEEPALIVE, true);
}

static void start_idle_timer(net_conn_t *conn)
{
    if (!conn->idle_timeout_ms)
        return;
    /* One repeating check per connection instead of a re-armed timer per read:
     * reads only store a timestamp. A connection closes between 1x and 2x the
     * timeout after its last input. */
    net_conn_ref(conn);
    conn->idle_timer = net_loop_run_every(conn->loop, conn->idle_timeout_ms, idle_check, conn);
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
