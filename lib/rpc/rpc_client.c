/* The RPC client: one connection, every call pipelined over it.
 *
 * A call is started on the caller's thread, without a lock and usually
 * without waking the loop: the call record goes onto the wait-free intake
 * list, then its frame onto the connection's write queue (conn_output.c),
 * which batches the frames of all threads into few writes and wakes the
 * loop at most once per batch.
 *
 * Everything else is loop-thread state: the tables of outstanding calls by
 * id (`sent`: frames handed to a connection; `waiting`: frames kept until
 * one comes up) and their timers. The loop moves calls from the intake into
 * the tables before it reads any response (on_message) or fails calls, so a
 * response can never arrive for a call the tables do not know yet: the call
 * was pushed onto the intake before its frame was queued, and the loop took
 * the frame, wrote it and read the response after that push. Calls with a
 * timeout also start a periodic tick that drains the intake, so their
 * timers are armed within TICK_MS even when no response comes; the timer
 * still fires at the call's own deadline, taken at submission.
 *
 * The connection pointer is shared with callers under a reader-writer lock
 * (readers: every call; the writer: the loop, when the connection comes or
 * goes). A caller pushes its call and queues its frame under the read lock,
 * noting in the call which connection (`gen`) took it, or 0 when the frame
 * went into `waiting_frames`; so when the loop swaps the connection under
 * the write lock, every call pushed before has its frame where its gen says.
 * When a connection comes up the waiting frames go to it and the waiting
 * calls become sent; when it goes down the calls it took end DISCONNECTED
 * and the waiting ones stay (fail_fast: until the next failed attempt).
 *
 * Each call ends exactly once, on the loop, by whichever comes first: its
 * response, its timer, the loss of its connection, a round of connect
 * attempts that gives up (or one failed attempt with fail_fast), or the
 * client's close.
 *
 * The protocol (opt.protocol) only changes the bytes: an NRPC/1 frame or a
 * baidu_std one (its correlation_id is the call id, its head built on the
 * caller's stack), and how on_message decodes responses; the tables, the
 * outcomes and the limits are the same for both.
 *
 * Lifetime (the one close rule, loop/closer.h): references are the owner's,
 * one per thread inside net_rpc_call or net_rpc_call_sync, and one per
 * pending poke (the one armed task through which other threads ask the loop
 * for work). Close drains, ends what is left CANCELLED, closes the TCP
 * client and drops the owner's; the release runs done and frees. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <net/rpc.h>

#include "loop/alloc_internal.h"
#include "loop/armed.h"
#include "loop/closer.h"
#include "loop/id_table.h"
#include "loop/log_internal.h"
#include "rpc/baidu_codec.h"
#include "rpc/rpc_codec.h"
#include "rpc/waitset.h"
#include "tcp/tcp_conn_internal.h"
#include "tcp/write_queue.h"

/* Longest delay between a call with a timeout and its timer being armed,
 * when no response or failure makes the loop look at the intake sooner. */
#define TICK_MS 5
#define DEFAULT_MAX_OUTSTANDING 65536
/* Room in each table from the start, so that inserting never fails (a
 * failed grow later only makes chains longer). */
#define TABLE_RESERVE 256

/* What other threads ask of the loop (client_poke). */
enum {
    WANT_DRAIN = 1u,   /* take the intake and the failed sends */
    WANT_TICK = 2u,    /* start the tick */
    WANT_CONNECT = 4u, /* a call waits and the TCP client gave up: try again */
    WANT_CLOSE = 8u,   /* net_rpc_client_close was called */
    WANT_FINISH = 16u, /* the close's drain is over */
};

/* Loop thread: the client's life after the close call. */
enum phase { OPEN, DRAINING, FINISHED };

/* A call lives in the payload of a write-queue node, so that it is
 * allocated from the per-thread node cache (write_queue.c) and travels
 * through the intake list with one atomic exchange. */
struct call {
    struct net__wq_node *node; /* the node whose payload this is */
    struct net__id_node link;  /* in sent or waiting (loop); link.id: the call id */
    struct call *next_ended;   /* on the ended list (loop) */
    uint64_t deadline_ms;      /* net_now_ms() clock; 0 = no timeout */
    uint64_t gen;              /* the connection its frame went to; 0: waiting_frames */
    net_timer_id_t timer;
    net_rpc_done_fn done;
    void *arg;
    net_rpc_client_t *client;
    /* Set: the call ends with this as soon as the loop takes it: OVERLOADED
     * or INTERNAL from the caller (never sent), or what the loop decided. */
    uint32_t early_status;
};

/* A frame that could not be queued after its call was on the intake. */
struct failed_send {
    uint64_t id;
    uint32_t status;
};

struct net_rpc_client {
    struct net__closer closer;
    net_loop_t *loop;
    net_client_t *tcp;         /* NULL once its close is done */
    struct net_rpc_client_options opt;
    atomic_ullong next_id;
    atomic_size_t admitted;    /* submitted and not yet completed */

    struct net__wq intake;     /* calls started, not yet in a table */
    struct net__wq failures;   /* struct failed_send, for the loop */
    struct net__armed poke;    /* poked_cb: does what `wants` says */
    atomic_uint wants;
    atomic_bool tick_on;       /* the tick runs or is being started */
    atomic_bool gave_up;       /* the TCP client stopped trying */
    atomic_bool up;            /* connected (net_rpc_client_connected) */

    pthread_rwlock_t conn_lock; /* guards conn and gen for other threads */
    net_conn_t *conn;           /* written by the loop under the write lock */
    uint64_t gen;               /* conn's number; 0 without one */
    pthread_mutex_t wait_mu;    /* callers appending to waiting_frames */
    net_buf_t waiting_frames;   /* frames of the calls in `waiting` */

    /* Loop thread only. */
    struct net__id_table sent, waiting;
    struct call *ended;        /* taken from the intake, to complete */
    uint64_t gens;             /* connections so far */
    bool reported_up;          /* what on_connected last said */
    net_timer_id_t tick, drain_timer;
    enum phase phase;

    /* The close: written by the close call before its poke (the post
     * publishes them), then the loop's. */
    uint64_t drain_ms;
    net_rpc_client_close_fn done;
    void *done_arg;

    /* net_rpc_call_sync callers sleep here; the loop wakes those whose
     * outcome it delivered once per batch (after each read). */
    struct net__waitset sync_waiters;
    bool in_batch; /* loop thread: inside on_message, wakes wait for its end */
    /* Loop thread: the attachment of the response being delivered
     * (net_rpc_response_attachment), set only around its done. */
    const void *resp_att;
    size_t resp_att_len;

    atomic_ullong calls, completed, late, timeouts, disconnected;
};

void net_rpc_client_options_init(struct net_rpc_client_options *opt)
{
    *opt = (struct net_rpc_client_options){.max_frame = NET__RPC_DEFAULT_MAX_FRAME,
                                           .max_outstanding = DEFAULT_MAX_OUTSTANDING};
    net_client_options_init(&opt->client);
    opt->client.retry = true;
    opt->client.reconnect = true;
    opt->client.conn.backpressure_mark = NET_UNLIMITED; /* see options_normalise */
}

/* Asks the loop to do `what` (WANT_*), later, never inside this call. The
 * pending task holds a reference. Ordering: the fetch_or comes before the
 * arm; an arm that finds the task still armed came before poked_cb's
 * disarm (armed.h), so the exchange of `wants` after it sees our bit.
 * Any thread; the caller holds a reference. */
static void client_poke(net_rpc_client_t *c, unsigned what)
{
    atomic_fetch_or(&c->wants, what);
    net__closer_ref(&c->closer);
    if (!net__armed_arm(&c->poke))
        net__closer_unref(&c->closer);
}

/* ---- completing calls (loop thread) ------------------------------------------------ */

static struct call *call_of(struct net__id_node *n)
{
    return n ? (struct call *)(void *)((char *)n - offsetof(struct call, link)) : NULL;
}

static bool nothing_outstanding(net_rpc_client_t *c)
{
    return !c->sent.count && !c->waiting.count && !c->ended && net__wq_empty(&c->intake);
}

static void count_outcome(net_rpc_client_t *c, uint32_t status)
{
    atomic_fetch_add_explicit(&c->completed, 1, memory_order_relaxed);
    if (status == NET_RPC_TIMEOUT)
        atomic_fetch_add_explicit(&c->timeouts, 1, memory_order_relaxed);
    else if (status == NET_RPC_DISCONNECTED)
        atomic_fetch_add_explicit(&c->disconnected, 1, memory_order_relaxed);
}

/* Delivers the outcome and frees the call, which is in no table. A drain
 * that has nothing left to wait for ends now (via the poke: this may run
 * deep inside a loop over a table). */
static void complete(net_rpc_client_t *c, struct call *k, uint32_t status, const void *body,
                     size_t len)
{
    if (k->timer > 0)
        net_timer_cancel(c->loop, k->timer);
    atomic_fetch_sub(&c->admitted, 1);
    count_outcome(c, status);
    k->done(c, status, body, len, k->arg);
    net__wq_node_free(k->node);
    if (c->phase == DRAINING && nothing_outstanding(c))
        client_poke(c, WANT_FINISH);
}

/* The call with this id in either table, taken out, or NULL. */
static struct call *table_take(net_rpc_client_t *c, uint64_t id)
{
    struct net__id_node *n = net__id_table_take(&c->sent, id);
    return call_of(n ? n : net__id_table_take(&c->waiting, id));
}

static void fail_table(net_rpc_client_t *c, struct net__id_table *t, uint32_t status)
{
    for (struct net__id_node *n; (n = net__id_table_pop(t));)
        complete(c, call_of(n), status, NULL, 0);
}

static void complete_ended(net_rpc_client_t *c)
{
    while (c->ended) {
        struct call *k = c->ended;
        c->ended = k->next_ended;
        complete(c, k, k->early_status, NULL, 0);
    }
}

static void call_timed_out(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    struct call *k = arg;
    net_rpc_client_t *c = k->client;
    k->timer = 0;
    if (table_take(c, k->link.id) == k)
        complete(c, k, NET_RPC_TIMEOUT, NULL, 0);
}

static void arm_timer(net_rpc_client_t *c, struct call *k)
{
    net_timer_id_t t = net_loop_run_at(c->loop, k->deadline_ms, call_timed_out, k);
    k->timer = t > 0 ? t : 0; /* without a timer the call still ends on loss or close */
}

static void end_later(net_rpc_client_t *c, struct call *k, uint32_t status)
{
    if (!k->early_status)
        k->early_status = status;
    k->next_ended = c->ended;
    c->ended = k;
}

/* Sorts one call from the intake: into the table its gen says, or onto the
 * ended list. Runs no callback, so the loop may hold the write lock. A gen
 * that is not the current connection's is one that went down already. */
static void intake_sort(net_rpc_client_t *c, struct call *k)
{
    if (k->early_status || c->phase == FINISHED) {
        end_later(c, k, NET_RPC_CANCELLED);
        return;
    }
    if (k->gen && k->gen != c->gen) {
        end_later(c, k, NET_RPC_DISCONNECTED);
        return;
    }
    net__id_table_insert(k->gen ? &c->sent : &c->waiting, &k->link); /* reserved: cannot fail */
    if (k->deadline_ms)
        arm_timer(c, k);
}

static void intake_take(net_rpc_client_t *c)
{
    struct net__wq_node *last, *n = net__wq_take(&c->intake, &last);
    for (struct net__wq_node *next; n; n = next) {
        next = atomic_load_explicit(&n->next, memory_order_relaxed);
        intake_sort(c, (struct call *)(void *)n->data);
    }
}

/* Every started call into the tables, or ended now. */
static void drain_intake(net_rpc_client_t *c)
{
    intake_take(c);
    complete_ended(c);
}

/* The frames that could not be queued: each call ends with its status
 * (unless it has ended already, by its timer say). */
static void take_failures(net_rpc_client_t *c)
{
    drain_intake(c); /* the call was pushed before its failure */
    struct net__wq_node *last, *n = net__wq_take(&c->failures, &last);
    for (struct net__wq_node *next; n; n = next) {
        next = atomic_load_explicit(&n->next, memory_order_relaxed);
        const struct failed_send *f = (const struct failed_send *)(const void *)n->data;
        struct call *k = table_take(c, f->id);
        uint32_t status = f->status;
        net__wq_node_free(n);
        if (k)
            complete(c, k, status, NULL, 0);
    }
}

/* ---- the tick (loop thread) ------------------------------------------------------- */

static void stop_tick(net_rpc_client_t *c)
{
    if (c->tick > 0)
        net_timer_cancel(c->loop, c->tick);
    c->tick = 0;
}

static void tick_cb(net_loop_t *loop, net_timer_id_t id, void *arg);

static void start_tick(net_rpc_client_t *c)
{
    if (c->tick > 0 || c->phase == FINISHED)
        return;
    c->tick = net_loop_run_every(c->loop, TICK_MS, tick_cb, c);
    if (c->tick < 0) {
        c->tick = 0;
        atomic_store(&c->tick_on, false); /* the next call with a timeout tries again */
    }
}

static void tick_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    net_rpc_client_t *c = arg;
    drain_intake(c);
    if (c->sent.count || c->waiting.count || !net__wq_empty(&c->intake))
        return;
    /* Idle: stop, then look again (a caller that saw tick_on still set
     * relied on us; seq_cst pairs with its exchange as in conn_output.c). */
    stop_tick(c);
    atomic_store(&c->tick_on, false);
    if (!net__wq_empty(&c->intake) && !atomic_exchange(&c->tick_on, true))
        start_tick(c);
}

/* ---- the connection (loop thread) --------------------------------------------------- */

static void report_connected(net_rpc_client_t *c, bool up)
{
    if (c->reported_up == up)
        return;
    c->reported_up = up;
    if (c->opt.on_connected)
        c->opt.on_connected(c, up, c->opt.arg);
}

/* Publishes conn (or none) and takes the waiting frames into *frames (if
 * not NULL) in one step under the write lock, with every call pushed so
 * far sorted (intake_sort runs no callback). */
static net_conn_t *swap_conn(net_rpc_client_t *c, net_conn_t *conn, net_buf_t *frames)
{
    pthread_rwlock_wrlock(&c->conn_lock);
    net_conn_t *old = c->conn;
    c->conn = conn;
    c->gen = conn ? ++c->gens : 0;
    if (frames) {
        *frames = c->waiting_frames;
        net_buf_init(&c->waiting_frames);
    }
    intake_take(c);
    pthread_rwlock_unlock(&c->conn_lock);
    return old;
}

/* The waiting calls' frames go with the first ones on the new connection. */
static void conn_up(net_rpc_client_t *c, net_conn_t *conn)
{
    net_buf_t frames;
    net_conn_unref(swap_conn(c, net_conn_ref(conn), &frames));
    atomic_store(&c->up, true);
    for (struct net__id_node *n; (n = net__id_table_pop(&c->waiting));) {
        call_of(n)->gen = c->gen;
        net__id_table_insert(&c->sent, n);
    }
    /* On failure the connection is closed: the down callback fails them. */
    if (net_buf_readable(&frames) && net_conn_send_buf(conn, &frames) < 0)
        net_conn_force_close(conn);
    net_buf_destroy(&frames);
    complete_ended(c);
    report_connected(c, true);
}

/* Its calls end DISCONNECTED (they may have run: never sent again); the
 * waiting ones stay for the next connection. */
static void conn_down(net_rpc_client_t *c, net_conn_t *conn)
{
    if (c->conn == conn)
        net_conn_unref(swap_conn(c, NULL, NULL));
    atomic_store(&c->up, false);
    fail_table(c, &c->sent, c->phase == FINISHED ? NET_RPC_CANCELLED : NET_RPC_DISCONNECTED);
    complete_ended(c);
    net__waitset_wake(&c->sync_waiters);
    report_connected(c, false);
}

/* The waiting calls end with status; their frames go (none is sent). */
static void fail_waiting(net_rpc_client_t *c, uint32_t status)
{
    pthread_rwlock_wrlock(&c->conn_lock);
    net_buf_retrieve_all(&c->waiting_frames);
    intake_take(c);
    pthread_rwlock_unlock(&c->conn_lock);
    fail_table(c, &c->waiting, status);
    complete_ended(c);
    net__waitset_wake(&c->sync_waiters);
}

static void on_connection(net_conn_t *conn, void *arg)
{
    net_rpc_client_t *c = arg;
    if (net_conn_connected(conn) && c->phase != FINISHED)
        conn_up(c, conn);
    else if (!net_conn_connected(conn))
        conn_down(c, conn);
}

static void on_connect_failed(net_client_t *tcp, int err, bool will_retry, void *arg)
{
    (void)tcp;
    net_rpc_client_t *c = arg;
    if (!will_retry)
        atomic_store(&c->gave_up, true);
    if (will_retry && !c->opt.fail_fast)
        return; /* the waiting calls wait on */
    if (c->waiting.count && err != NET_ECANCELLED)
        NET__LOG_RL(NET_LOG_DEBUG, "rpc client: connect failed (%s): %zu waiting calls fail",
                    net_strerror(err), c->waiting.count);
    fail_waiting(c, c->phase == FINISHED ? NET_RPC_CANCELLED : NET_RPC_DISCONNECTED);
}

/* A response to the call with this id; unknown ids are calls that ended
 * earlier (timed out): dropped and counted. */
static void on_response(net_rpc_client_t *c, uint64_t id, uint32_t status, const void *body,
                        size_t len)
{
    struct call *k = call_of(net__id_table_take(&c->sent, id));
    if (!k) {
        atomic_fetch_add_explicit(&c->late, 1, memory_order_relaxed);
        return;
    }
    complete(c, k, status, body, len);
}

/* A response netloop cannot read -- compressed, using a feature it does
 * not implement, or failing its checksum -- ends its call INTERNAL with the
 * reason: delivering the bytes as they are would hand the caller data it
 * cannot tell is wrong. brpc answers a request in its own compression, so
 * this takes a server that compresses on its own. Returns whether f was
 * such a response. */
static bool baidu_unreadable(net_rpc_client_t *c, const struct net__baidu_frame *f)
{
    const struct net__baidu_meta *m = &f->meta;
    char text[96];
    int n;
    if (m->compress_type != 0)
        n = snprintf(text, sizeof text, "response compressed (compress_type %ld): netloop "
                     "implements no compression", (long)m->compress_type);
    else if (m->unsupported)
        n = snprintf(text, sizeof text, "response uses chunk_info, stream_settings or a "
                     "content_type netloop does not implement");
    else if (net__baidu_checksum_ok(f))
        return false;
    else if (m->checksum_type == NET__BAIDU_CHECKSUM_CRC32C)
        n = snprintf(text, sizeof text, "response checksum (crc32c) does not match");
    else
        n = snprintf(text, sizeof text, "response checksum_type %ld: netloop verifies "
                     "crc32c (1) only", (long)m->checksum_type);
    on_response(c, m->correlation_id, NET_RPC_INTERNAL, text, (size_t)n);
    return true;
}

/* On error the body delivered is the error_text, as NRPC's message; the
 * attachment goes with either. */
static void on_baidu_response(net_rpc_client_t *c, const struct net__baidu_frame *f)
{
    const struct net__baidu_meta *m = &f->meta;
    if (baidu_unreadable(c, f))
        return;
    c->resp_att = f->attachment_len ? f->attachment : NULL;
    c->resp_att_len = f->attachment_len;
    if (m->error_code == 0)
        on_response(c, m->correlation_id, NET_RPC_OK, f->payload, f->payload_len);
    else
        on_response(c, m->correlation_id, net__baidu_status(m->error_code), m->error_text,
                    m->error_text ? m->error_text_len : 0);
    c->resp_att = NULL;
    c->resp_att_len = 0;
}

static int read_nrpc(net_rpc_client_t *c, net_buf_t *in, const char **reason)
{
    struct net__rpc_frame f;
    int rc;
    while ((rc = net__rpc_decode(in, c->opt.max_frame, &f, reason)) > 0) {
        if (f.hdr.type != NET__RPC_TYPE_RESPONSE) {
            *reason = "request sent to a client";
            return -EPROTO;
        }
        on_response(c, f.hdr.call_id, f.hdr.status, f.body, f.hdr.body_len);
        net_buf_retrieve(in, f.total);
    }
    return rc;
}

static int read_baidu(net_rpc_client_t *c, net_buf_t *in, const char **reason)
{
    struct net__baidu_frame f;
    size_t need;
    int rc;
    while ((rc = net__baidu_decode((const uint8_t *)net_buf_peek(in), net_buf_readable(in),
                                   c->opt.max_frame, &f, &need)) > 0) {
        if (!f.meta.has_response) {
            *reason = "request sent to a client";
            return -EPROTO;
        }
        on_baidu_response(c, &f);
        net_buf_retrieve(in, f.frame_len);
    }
    if (rc < 0)
        *reason = rc == -EMSGSIZE ? "baidu_std frame over max_frame" : "malformed baidu_std frame";
    return rc;
}

/* Debug when calls end PROTOCOL_ERROR (their callers see it); with none
 * in flight nobody would hear of it: one rate-limited warning. */
static void protocol_error(net_rpc_client_t *c, net_conn_t *conn, net_buf_t *in,
                           const char *reason)
{
    NET__LOG_RL(c->sent.count ? NET_LOG_DEBUG : NET_LOG_WARN,
                "rpc client: closing the connection: %s", reason);
    net_buf_retrieve_all(in);
    fail_table(c, &c->sent, NET_RPC_PROTOCOL_ERROR);
    net_conn_force_close(conn);
}

static void on_message(net_conn_t *conn, net_buf_t *in, uint64_t receive_ms, void *arg)
{
    (void)receive_ms;
    net_rpc_client_t *c = arg;
    const char *reason = NULL;
    if (c->phase == FINISHED) {
        net_buf_retrieve_all(in); /* every call has ended */
        return;
    }
    drain_intake(c); /* every call these responses answer is in the table now */
    c->in_batch = true;
    int rc = c->opt.protocol == NET_RPC_BAIDU_STD ? read_baidu(c, in, &reason)
                                                  : read_nrpc(c, in, &reason);
    if (rc < 0)
        protocol_error(c, conn, in, reason);
    c->in_batch = false;
    net__waitset_wake(&c->sync_waiters);
}

/* ---- the close (loop thread) --------------------------------------------------------- */

/* The TCP client's close is done: its down and failure callbacks have run
 * and no other can come. */
static void tcp_closed_cb(net_client_t *tcp, void *arg)
{
    (void)tcp;
    net_rpc_client_t *c = arg;
    c->tcp = NULL;
    net__closer_unref(&c->closer); /* the owner's */
}

/* No drain of its own: the RPC drain is over, every call has ended. */
static void tcp_close(net_rpc_client_t *c)
{
    if (net_client_close(c->tcp, 0, tcp_closed_cb, c) < 0)
        tcp_closed_cb(c->tcp, c); /* cannot happen: the one close */
}

/* Everything left ends CANCELLED; the connection and the attempts go. A
 * call pushed from now on is ended CANCELLED by the poke its caller makes
 * on seeing the close (or by the release). */
static void finish(net_rpc_client_t *c)
{
    if (c->phase == FINISHED)
        return;
    c->phase = FINISHED;
    if (c->drain_timer > 0)
        net_timer_cancel(c->loop, c->drain_timer);
    c->drain_timer = 0;
    stop_tick(c);
    fail_waiting(c, NET_RPC_CANCELLED);
    fail_table(c, &c->sent, NET_RPC_CANCELLED);
    net__waitset_wake(&c->sync_waiters);
    tcp_close(c);
}

static void drain_over_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    net_rpc_client_t *c = arg;
    c->drain_timer = 0;
    finish(c);
}

/* Calls outstanding have drain_ms; without a timer the drain is cut. */
static void close_in_loop(net_rpc_client_t *c)
{
    c->phase = DRAINING;
    drain_intake(c);
    if (c->drain_ms && !nothing_outstanding(c)) {
        net_timer_id_t t = net_loop_run_after(c->loop, c->drain_ms, drain_over_cb, c);
        if (t > 0) {
            c->drain_timer = t;
            return;
        }
    }
    finish(c);
}

static void reconnect(net_rpc_client_t *c)
{
    if (c->tcp && c->phase != FINISHED && atomic_exchange(&c->gave_up, false))
        net_client_connect(c->tcp);
}

static void poked_cb(void *arg)
{
    net_rpc_client_t *c = arg;
    unsigned w = atomic_exchange(&c->wants, 0);
    if (w & WANT_DRAIN)
        take_failures(c);
    if (w & WANT_CONNECT)
        reconnect(c);
    if (w & WANT_TICK)
        start_tick(c);
    if ((w & WANT_CLOSE) && c->phase == OPEN)
        close_in_loop(c);
    if ((w & WANT_FINISH) && nothing_outstanding(c))
        finish(c);
    net__closer_unref(&c->closer); /* the poke's */
}

/* The last reference is gone. The reference taken here is never given
 * back: a call made inside done (it returns -ESHUTDOWN) must not arm the
 * release again. */
static void release_cb(void *arg)
{
    net_rpc_client_t *c = arg;
    net__closer_ref(&c->closer);
    drain_intake(c); /* nothing is left here by construction; cheap to be sure */
    if (c->done)
        c->done(c, c->done_arg);
    net__wq_drain(&c->failures);
    net__id_table_free(&c->sent);
    net__id_table_free(&c->waiting);
    pthread_rwlock_destroy(&c->conn_lock);
    pthread_mutex_destroy(&c->wait_mu);
    net_buf_destroy(&c->waiting_frames);
    net__free(c);
}

/* ---- starting calls (any thread) ------------------------------------------------------ */

/* The frame could not be queued (no memory, output limit): the loop ends
 * the call with status. Without memory even for that, the call ends with
 * its timeout, the connection's loss or the close. */
static void fail_sent_call(net_rpc_client_t *c, uint64_t id, uint32_t status)
{
    struct net__wq_node *n = net__wq_node_alloc(sizeof(struct failed_send));
    if (!n) {
        /* Nobody else hears of it: one line. */
        NET__LOG_RL(NET_LOG_ERROR, "rpc client: call %llu could not be sent or failed",
                    (unsigned long long)id);
        return;
    }
    *(struct failed_send *)(void *)n->data = (struct failed_send){.id = id, .status = status};
    net__wq_push(&c->failures, n);
    client_poke(c, WANT_DRAIN);
}

static uint64_t deadline_after(uint64_t now_ms, uint64_t timeout_ms)
{
    return timeout_ms > UINT64_MAX - now_ms ? UINT64_MAX : now_ms + timeout_ms;
}

static struct call *call_new(net_rpc_client_t *c, uint64_t timeout_ms, net_rpc_done_fn done,
                             void *arg)
{
    struct net__wq_node *n = net__wq_node_alloc(sizeof(struct call));
    if (!n)
        return NULL;
    struct call *k = (struct call *)(void *)n->data;
    if (timeout_ms == NET_RPC_NO_TIMEOUT)
        timeout_ms = 0;
    /* On the loop thread the iteration's cached time saves a clock read per
     * call (the deadline is then at most one iteration early). */
    uint64_t now = timeout_ms == 0                     ? 0
                   : net_loop_in_loop_thread(c->loop) ? net_loop_now_ms(c->loop)
                                                      : net_now_ms();
    *k = (struct call){.node = n, .link.id = atomic_fetch_add(&c->next_id, 1),
                       .deadline_ms = timeout_ms ? deadline_after(now, timeout_ms) : 0,
                       .done = done, .arg = arg, .client = c};
    if (timeout_ms && !k->deadline_ms)
        k->deadline_ms = 1;
    return k;
}

/* All of the frame or nothing: a part left behind would corrupt the stream
 * the waiting frames are sent on. The caller holds the read lock, so the
 * loop cannot take the frames meanwhile. */
static int keep_frame(net_rpc_client_t *c, const struct iovec *iov, int n)
{
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += iov[i].iov_len;
    pthread_mutex_lock(&c->wait_mu);
    int rc = net_buf_ensure_writable(&c->waiting_frames, len);
    for (int i = 0; i < n && rc == 0; i++)
        rc = net_buf_append(&c->waiting_frames, iov[i].iov_base, iov[i].iov_len);
    pthread_mutex_unlock(&c->wait_mu);
    return rc;
}

/* Pushes k and queues its frame under the read lock (see the top). With a
 * connection the push comes first (its response must find the call);
 * without one the frame is kept first, so that a failure to keep it ends
 * the call before the loop can see it. Returns the send's error, if any. */
static int submit(net_rpc_client_t *c, struct call *k, const struct iovec *iov, int n)
{
    pthread_rwlock_rdlock(&c->conn_lock);
    k->gen = c->gen;
    int rc = 0;
    if (c->conn) {
        net_conn_t *conn = c->conn;
        net__wq_push(&c->intake, k->node); /* k belongs to the loop from here */
        rc = net_conn_sendv(conn, iov, n);
    } else {
        if (keep_frame(c, iov, n) < 0)
            k->early_status = NET_RPC_INTERNAL;
        net__wq_push(&c->intake, k->node);
    }
    pthread_rwlock_unlock(&c->conn_lock);
    /* -ENOTCONN: the connection is going; its down callback ends the call. */
    return rc == -ENOTCONN ? 0 : rc;
}

/* A call that cannot be served soon needs the loop now: a refused one (it
 * would wait for the next response otherwise), one waiting for a client
 * that gave up connecting, one with a timer to arm. */
static void after_submit(net_rpc_client_t *c, uint64_t id, int rc, bool timed)
{
    if (rc < 0)
        fail_sent_call(c, id, rc == -ENOBUFS ? NET_RPC_OVERLOADED : NET_RPC_INTERNAL);
    if (timed && !atomic_load(&c->tick_on) && !atomic_exchange(&c->tick_on, true))
        client_poke(c, WANT_TICK);
    if (atomic_load(&c->gave_up))
        client_poke(c, WANT_CONNECT);
}

/* What a call sends, checked by call_checked. */
struct call_req {
    const char *method;
    size_t mlen;
    const void *body;
    size_t body_len;
    const void *att;
    size_t att_len;
    /* baidu_std: the name split at its last '.', by req_valid. */
    size_t service_len, bmethod_len;
    const char *bmethod;
};

/* A call's frame: its head (NRPC's header, or baidu_std's header and
 * meta) built on the caller's stack, then method, body and attachment by
 * reference: the connection's queue copies them once. */
struct frame {
    uint8_t head[NET__BAIDU_REQUEST_HEAD_MAX];
    struct iovec iov[3];
    int n;
};

_Static_assert(NET__RPC_HEADER_LEN <= NET__BAIDU_REQUEST_HEAD_MAX, "the head holds NRPC's");

static void frame_add(struct frame *fr, const void *p, size_t len)
{
    if (len)
        fr->iov[fr->n++] = (struct iovec){(void *)p, len};
}

static int frame_nrpc(struct frame *fr, uint64_t id, const struct call_req *r)
{
    struct net__rpc_header h = {.version = NET__RPC_VERSION, .type = NET__RPC_TYPE_REQUEST,
                                .method_len = (uint16_t)r->mlen, .call_id = id,
                                .body_len = (uint32_t)r->body_len};
    net__rpc_header_pack(fr->head, &h);
    fr->n = 0;
    frame_add(fr, fr->head, NET__RPC_HEADER_LEN);
    frame_add(fr, r->method, r->mlen);
    frame_add(fr, r->body, r->body_len);
    return 0;
}

/* The correlation_id is the call id. -EINVAL: body, attachment and meta
 * over the frame's 4 GiB - 1 (the name was split by req_valid). */
static int frame_baidu(struct frame *fr, uint64_t id, const struct call_req *r)
{
    int len = net__baidu_pack_request(fr->head, r->method, r->service_len, r->bmethod,
                                      r->bmethod_len, id, r->body_len, r->att_len);
    if (len < 0)
        return len;
    fr->n = 0;
    frame_add(fr, fr->head, (size_t)len);
    frame_add(fr, r->body, r->body_len);
    frame_add(fr, r->att, r->att_len);
    return 0;
}

static int frame_build(net_rpc_client_t *c, struct frame *fr, uint64_t id,
                       const struct call_req *r)
{
    return c->opt.protocol == NET_RPC_BAIDU_STD ? frame_baidu(fr, id, r) : frame_nrpc(fr, id, r);
}

static int call_start(net_rpc_client_t *c, const struct call_req *r, uint64_t timeout_ms,
                      net_rpc_done_fn done, void *arg)
{
    if (net__closer_closing(&c->closer))
        return -ESHUTDOWN;
    struct call *k = call_new(c, timeout_ms, done, arg);
    if (!k)
        return -ENOMEM;
    uint64_t id = k->link.id;
    struct frame fr;
    int rc = frame_build(c, &fr, id, r);
    if (rc < 0) {
        net__wq_node_free(k->node); /* never seen by anyone: nothing started */
        return rc;
    }
    bool timed = k->deadline_ms != 0;
    atomic_fetch_add_explicit(&c->calls, 1, memory_order_relaxed);
    if (atomic_fetch_add(&c->admitted, 1) >= c->opt.max_outstanding) {
        k->early_status = NET_RPC_OVERLOADED; /* memory stays bounded */
        net__wq_push(&c->intake, k->node);
        client_poke(c, WANT_DRAIN); /* refused calls end soon, not with the next response */
        return 0;
    }
    after_submit(c, id, submit(c, k, fr.iov, fr.n), timed);
    /* Raced with the close: the loop may have finished; it ends the call
     * CANCELLED. seq_cst with the close's store: if this load misses it,
     * our push comes before the close's poke, whose drain then sees it. */
    if (net__closer_closing(&c->closer))
        client_poke(c, WANT_DRAIN);
    return 0;
}

/* The name's rules per protocol (rpc.h); an attachment is baidu_std's.
 * A baidu_std name is split here, once, for frame_baidu. */
static bool req_valid(const net_rpc_client_t *c, struct call_req *r)
{
    if (r->mlen == 0 || r->mlen > NET__RPC_MAX_METHOD || (r->body_len && !r->body) ||
        r->body_len > UINT32_MAX || (r->att_len && !r->att) || r->att_len > INT32_MAX)
        return false;
    if (c->opt.protocol != NET_RPC_BAIDU_STD)
        return r->att_len == 0;
    return net__baidu_split_method(r->method, r->mlen, &r->service_len, &r->bmethod,
                                   &r->bmethod_len) == 0;
}

/* net_rpc_call's checks, then the start; the caller holds a reference. */
static int call_checked(net_rpc_client_t *c, const char *method, const void *body,
                        size_t body_len, const void *att, size_t att_len, uint64_t timeout_ms,
                        net_rpc_done_fn done, void *arg)
{
    struct call_req r = {.method = method, .mlen = method ? strlen(method) : 0,
                         .body = body, .body_len = body_len, .att = att, .att_len = att_len};
    if (!done || !req_valid(c, &r))
        return -EINVAL;
    return call_start(c, &r, timeout_ms, done, arg);
}

int net_rpc_call_with_attachment(net_rpc_client_t *client, const char *method,
                                 const void *body, size_t body_len, const void *attachment,
                                 size_t attachment_len, uint64_t timeout_ms,
                                 net_rpc_done_fn done, void *arg)
{
    if (!client)
        return -EINVAL;
    /* Held while this thread uses the client: a close cannot free it under
     * the call. */
    net__closer_ref(&client->closer);
    int rc = call_checked(client, method, body, body_len, attachment, attachment_len,
                          timeout_ms, done, arg);
    net__closer_unref(&client->closer);
    return rc;
}

int net_rpc_call(net_rpc_client_t *client, const char *method, const void *body,
                 size_t body_len, uint64_t timeout_ms, net_rpc_done_fn done, void *arg)
{
    return net_rpc_call_with_attachment(client, method, body, body_len, NULL, 0, timeout_ms,
                                        done, arg);
}

const void *net_rpc_response_attachment(const net_rpc_client_t *client, size_t *len)
{
    *len = client ? client->resp_att_len : 0;
    return client ? client->resp_att : NULL;
}

/* ---- life ------------------------------------------------------------------------------ */

/* 0 means the documented default (include/net/rpc.h). */
static void options_normalise(struct net_rpc_client_options *o)
{
    if (!o->max_frame)
        o->max_frame = NET__RPC_DEFAULT_MAX_FRAME;
    if (!o->max_outstanding)
        o->max_outstanding = DEFAULT_MAX_OUTSTANDING;
    o->client.retry = true;
    o->client.reconnect = true;
    /* Reading replies only ever shrinks what a client holds, and its
     * requests are bounded by max_outstanding. Pausing reading because our
     * requests back up would deadlock with a server that pauses reading
     * because its replies back up: each waits for the other to read. */
    o->client.conn.backpressure_mark = NET_UNLIMITED;
    struct net_conn_options d;
    net_conn_options_init(&d);
    size_t need = net__rpc_input_need(o->max_frame);
    if ((o->client.conn.max_input ? o->client.conn.max_input : d.max_input) < need)
        o->client.conn.max_input = need;
}

static int client_init(net_rpc_client_t *c, net_loop_t *loop,
                       const struct net_rpc_client_options *opt)
{
    net__closer_init(&c->closer, loop, release_cb, c);
    net__armed_init(&c->poke, loop, poked_cb, c);
    c->loop = loop;
    if (opt)
        c->opt = *opt;
    else
        net_rpc_client_options_init(&c->opt);
    options_normalise(&c->opt);
    atomic_init(&c->next_id, 1);
    net__waitset_init(&c->sync_waiters);
    net__id_table_init(&c->sent);
    net__id_table_init(&c->waiting);
    if (net__id_table_reserve(&c->sent, TABLE_RESERVE) < 0 ||
        net__id_table_reserve(&c->waiting, TABLE_RESERVE) < 0)
        return -ENOMEM;
    /* Writers first: with callers holding the read lock back to back, a
     * reader-preferring lock could keep the loop from ever publishing a
     * new connection. */
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(&c->conn_lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (rc != 0)
        return -ENOMEM;
    if (pthread_mutex_init(&c->wait_mu, NULL) != 0) {
        pthread_rwlock_destroy(&c->conn_lock);
        return -ENOMEM;
    }
    return 0;
}

static int client_connect(net_rpc_client_t *c, const net_addr_t *addr)
{
    struct net_conn_callbacks cbs = {.on_connection = on_connection, .on_message = on_message,
                                     .arg = c};
    int rc = net_client_new(c->loop, addr, &c->opt.client, &cbs, on_connect_failed, c, &c->tcp);
    if (rc == 0 && (rc = net_client_connect(c->tcp)) < 0) /* cannot fail on a new client */
        net_client_close(c->tcp, 0, NULL, NULL); /* no request made: no callback reaches c */
    return rc;
}

int net_rpc_client_new(net_loop_t *loop, const net_addr_t *addr,
                       const struct net_rpc_client_options *opt, net_rpc_client_t **out)
{
    if (!loop || !addr || !out ||
        (opt && opt->protocol != NET_RPC_NRPC && opt->protocol != NET_RPC_BAIDU_STD))
        return -EINVAL;
    if (!net_loop_in_loop_thread(loop))
        return NET_EWRONGTHREAD;
    net_rpc_client_t *c = net__calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    int rc = client_init(c, loop, opt);
    if (rc == 0 && (rc = client_connect(c, addr)) < 0) {
        pthread_rwlock_destroy(&c->conn_lock);
        pthread_mutex_destroy(&c->wait_mu);
    }
    if (rc < 0) {
        net__id_table_free(&c->sent);
        net__id_table_free(&c->waiting);
        net__free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* The getters hold a reference while they read: its acq_rel drop orders
 * the read before the release's free, also for a thread that has no other
 * tie to the loop (it polls while the client closes itself). */
bool net_rpc_client_connected(net_rpc_client_t *client)
{
    net__closer_ref(&client->closer);
    bool up = atomic_load(&client->up);
    net__closer_unref(&client->closer);
    return up;
}

int net_rpc_client_close(net_rpc_client_t *client, uint64_t drain_ms,
                         net_rpc_client_close_fn done, void *arg)
{
    if (!client)
        return -EINVAL;
    if (!net__closer_close(&client->closer))
        return -EALREADY;
    client->drain_ms = drain_ms;
    client->done = done;
    client->done_arg = arg;
    client_poke(client, WANT_CLOSE);
    return 0;
}

void net_rpc_client_stats(net_rpc_client_t *client, struct net_rpc_client_stats *out)
{
    net__closer_ref(&client->closer); /* as net_rpc_client_connected */
    out->calls = atomic_load(&client->calls);
    out->completed = atomic_load(&client->completed);
    out->late_replies = atomic_load(&client->late);
    out->timeouts = atomic_load(&client->timeouts);
    out->disconnected = atomic_load(&client->disconnected);
    out->outstanding = atomic_load(&client->admitted);
    net__closer_unref(&client->closer);
}

/* ---- synchronous calls ------------------------------------------------------------------ */

/* The caller sleeps in the client's waitset (waitset.h): the loop marks
 * its outcome ready and wakes it together with the other callers answered
 * by the same read, in one system call. */
struct sync_call {
    struct net__waiter waiter;
    bool want_att;                  /* copy the response's attachment too */
    struct net_rpc_sync_reply out;  /* body and attachment: malloc'd copies */
};

/* A copy the caller frees with free(): the C library's malloc, not
 * net__malloc (include/net/alloc.h). False when it has no memory. */
static bool copy_for_caller(void **dst, size_t *dst_len, const void *src, size_t len)
{
    *dst = len ? malloc(len) : NULL;
    *dst_len = *dst ? len : 0;
    if (*dst)
        memcpy(*dst, src, len);
    return !len || *dst;
}

static void sync_done(net_rpc_client_t *c, uint32_t status, const void *body, size_t len,
                      void *arg)
{
    struct sync_call *s = arg;
    struct net_rpc_sync_reply *r = &s->out;
    size_t att_len = 0;
    const void *att = s->want_att ? net_rpc_response_attachment(c, &att_len) : NULL;
    bool ok = copy_for_caller(&r->body, &r->body_len, body, len);
    ok = copy_for_caller(&r->attachment, &r->attachment_len, att, att_len) && ok;
    if (!ok) { /* the reply's bytes are dropped, as documented */
        free(r->body);
        free(r->attachment);
        *r = (struct net_rpc_sync_reply){0};
    }
    r->status = ok ? status : NET_RPC_INTERNAL;
    net__waitset_mark(&c->sync_waiters, &s->waiter); /* s may be gone after this line */
    if (!c->in_batch)
        net__waitset_wake(&c->sync_waiters);
}

/* Both sync calls: want_att says whether the reply's attachment is kept. */
static int call_sync(net_rpc_client_t *client, const char *method, const void *body,
                     size_t body_len, const void *att, size_t att_len, uint64_t timeout_ms,
                     bool want_att, struct net_rpc_sync_reply *reply)
{
    if (!client || !reply)
        return -EINVAL;
    if (net_loop_in_loop_thread(client->loop))
        return NET_EWRONGTHREAD;
    struct sync_call s = {.want_att = want_att};
    net__waiter_init(&s.waiter);
    /* The waitset lives in the client: a reference keeps it for the call
     * and the wait (a close ends the call CANCELLED and then waits for this
     * return). One pair of atomics per call on a line all callers share:
     * the call itself takes no second one. */
    net__closer_ref(&client->closer);
    int rc = call_checked(client, method, body, body_len, att, att_len, timeout_ms, sync_done,
                          &s);
    if (rc == 0)
        net__waitset_wait(&client->sync_waiters, &s.waiter);
    net__closer_unref(&client->closer);
    if (rc == 0)
        *reply = s.out;
    return rc;
}

int net_rpc_call_sync_with_attachment(net_rpc_client_t *client, const char *method,
                                      const void *body, size_t body_len,
                                      const void *attachment, size_t attachment_len,
                                      uint64_t timeout_ms, struct net_rpc_sync_reply *reply)
{
    return call_sync(client, method, body, body_len, attachment, attachment_len, timeout_ms,
                     true, reply);
}

int net_rpc_call_sync(net_rpc_client_t *client, const char *method, const void *body,
                      size_t body_len, uint64_t timeout_ms, uint32_t *status, void **body_out,
                      size_t *len_out)
{
    struct net_rpc_sync_reply r = {0}; /* set by call_sync when it returns 0 */
    int rc = call_sync(client, method, body, body_len, NULL, 0, timeout_ms, false,
                       status ? &r : NULL);
    if (rc < 0)
        return rc;
    *status = r.status;
    if (body_out)
        *body_out = r.body;
    else
        free(r.body); /* malloc'd by copy_for_caller */
    if (len_out)
        *len_out = r.body_len;
    return 0;
}
