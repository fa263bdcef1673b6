/* The RPC server: NRPC/1 and baidu_std requests in, one response per
 * request out. A connection's protocol is chosen from its first bytes
 * (the magic, "NRPC" or "PRPC") and kept; both go through the same
 * discipline: one decoded request (struct inreq) is dispatched, bounded
 * and answered the same way, only the framing differs.
 *
 * Each connection has a session (the connection's owner-data slot, so the
 * user's context slot stays the user's) counting the requests it has in
 * flight. A request handle holds a reference to its connection and to its
 * session, so a reply can come from any thread, at any time, and is a safe
 * no-op once the connection is gone.
 *
 * Replies made on the loop thread while a read is being processed are
 * collected in the session's batch and leave in one write after the last
 * frame of that read: a pipelined burst of requests costs one read and one
 * write, not one write per call.
 *
 * Bounds (docs/design.md, "The RPC server's memory"): a connection with
 * max_in_flight unanswered requests stops being decoded and read until a
 * reply makes room, so a peer's backlog waits in TCP, not here; queued
 * replies pause reading at the connection's backpressure mark; an
 * unfinished frame has frame_timeout_ms to complete and a quiet connection
 * closes after idle_timeout_ms. A connection that ends (peer half-close,
 * protocol error, frame timeout) first answers every request it read.
 *
 * Lifetime (the one close rule, loop/closer.h): the closer's references are
 * the owner's, the pending close task's and one per thread inside start;
 * close drains, closes the TCP
 * server, stops the workers and then drops the owner's, and the release
 * runs done. The memory is a separate count (mem_refs): the release's and
 * one per session. A session lives as long as its unanswered requests, and
 * those are the user's handles: holding one must not delay done, so a
 * reply after done still finds its session and the counters it updates,
 * and the last session frees the server. Nothing after done touches a
 * loop: a session stops kicking its connection's loop when the connection
 * goes down (session_down), before the TCP server's close can end. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <net/rpc.h>

#include "loop/alloc_internal.h"
#include "loop/armed.h"
#include "loop/closer.h"
#include "loop/log_internal.h"
#include "rpc/baidu_codec.h"
#include "rpc/rpc_codec.h"
#include "rpc/rpc_workers.h"
#include "tcp/tcp_conn_internal.h"

#define TABLE_SIZE 64 /* handlers per server are few; chains stay short */
/* While a close drains, how often it looks whether every request is
 * answered. A poll, not a kick from the last reply: a reply may come from
 * any thread at any time, also after done, and must then touch no task. */
#define DRAIN_POLL_MS 5
#define DEFAULT_IN_FLIGHT 1024
#define DEFAULT_FRAME_TIMEOUT_MS 30000u
/* Five minutes: long enough that a client pausing between bursts keeps its
 * connection (and rarely races a close with a new request), short enough
 * that abandoned connections do not pile up; our client reconnects
 * transparently. brpc leaves it off, nginx's keepalive_timeout is 75 s. */
#define DEFAULT_IDLE_TIMEOUT_MS 300000u
/* After a protocol error or a frame timeout, once the last answer is
 * queued: time for the peer to take it and close before we force it. */
#define LINGER_MS 5000
/* A reply batch larger than this is freed after its send: one large reply
 * must not pin its size for the connection's life. */
#define BATCH_KEEP_MAX (64u * 1024)
/* While reading is paused for queued replies, how often we look whether
 * they drained below half the mark: the socket's own buffer keeps the link
 * busy meanwhile, and a connection that keeps up never starts this timer. */
#define OUTPUT_POLL_MS 10

_Static_assert(NET_RPC_TIMEOUT == NET__RPC_TIMEOUT, "status codes match the codec");
_Static_assert(NET_RPC_PROTOCOL_ERROR == NET__RPC_PROTOCOL_ERROR, "status codes match");

struct handler {
    struct handler *next;
    net_rpc_handler_fn fn;
    void *arg;
    bool blocking;
    size_t len;
    char method[];
};

/* A connection's protocol: unknown until its first bytes have come. */
enum { PROTO_UNKNOWN, PROTO_NRPC, PROTO_BAIDU };

/* One request as decoded, whatever its protocol; the pointers go into the
 * connection's input (method into a caller's array for baidu_std). */
struct inreq {
    uint8_t proto;
    uint64_t id;
    const char *method; size_t method_len;
    const char *body; size_t body_len;
    const char *att; size_t att_len;
    size_t total;       /* bytes to retrieve */
    uint8_t refuse;     /* baidu_std: REFUSE_*, why it is answered unserved */
    int32_t compress;   /* baidu_std: its compress_type */
    int32_t checksum;   /* baidu_std: its checksum_type */
};

struct session {
    atomic_int refs;
    net_rpc_server_t *server;
    net_conn_t *conn;          /* no reference: whoever uses it holds one */
    atomic_size_t in_flight;
    /* A reply that leaves fewer than this in flight kicks the loop (0: the
     * loop waits for nothing). Written on the loop, read by every reply:
     * see session_update for why nothing is missed. */
    atomic_size_t wake_below;
    struct net__armed kick;    /* session_update on the connection's loop */
    /* Orders every kick against the connection going down: once detached
     * (under the lock) nothing is posted to the loop, which may end soon. */
    pthread_mutex_t kick_mu;
    bool detached;
    atomic_bool batching;      /* inside on_message; written on the loop thread,
                                  read by replies from any thread */
    atomic_bool went_quiet;    /* a reply left nothing in flight (relaxed: a hint
                                  for the idle clock, which orders nothing) */
    net_buf_t batch;
    /* The rest: the connection's loop thread only. */
    bool paused;               /* reading paused at max_in_flight */
    bool out_paused;           /* reading paused: replies queued at the mark */
    bool owner_paused;         /* what we last asked of net__conn_pause_owner */
    bool stalled;              /* a complete frame waits undecoded in the input */
    uint8_t proto;             /* PROTO_*: chosen by the first bytes */
    bool peer_eof;             /* half-closed by the peer: finish when answered */
    bool discarding;           /* protocol error or frame timeout: input dropped */
    bool finished;             /* our shutdown is requested */
    bool was_busy;             /* the last deadline check found work */
    uint64_t frame_start_ms;   /* first byte of the unfinished frame; 0: none */
    uint64_t active_ms;        /* last input, or last check that found work */
    net_timer_id_t timer;      /* the deadline check */
    net_timer_id_t out_timer;  /* while out_paused: looks for the output to drain */
    size_t batch_cap;          /* what this session adds to server->batch_bytes */
    size_t queued_at_read;     /* the connection's queued output when this read began */
};

struct net_rpc_req {
    struct net__rpc_work work; /* for the worker pool; first member */
    net_conn_t *conn;
    struct session *session;
    uint64_t call_id;
    struct handler *handler;
    uint8_t proto;             /* PROTO_NRPC or PROTO_BAIDU */
    size_t body_len;
    const char *att;           /* during the handler only */
    size_t att_len;
    char *body;                /* body + attachment copied, for blocking handlers only */
    char method[NET__RPC_MAX_METHOD + 1];
};

struct net_rpc_server {
    struct net__closer closer; /* the owner's, the close task's, a starting thread's */
    atomic_uint mem_refs;      /* the release's and one per session */
    net_loop_t *loop;
    /* NULL once the TCP server is closed; guarded by tcp_lock for the
     * calls that may come from other threads (start, stats). */
    net_server_t *tcp;
    pthread_rwlock_t tcp_lock;
    struct net_server_stats tcp_final; /* its stats when it closed */
    net_addr_t addr;
    struct net_rpc_server_options opt;
    size_t budget;   /* the TCP server's memory budget: no frame may be larger */
    size_t out_mark; /* conn.backpressure_mark: queued replies that pause reading */
    uint64_t check_ms; /* period of each session's deadline check; 0: none */
    struct handler *table[TABLE_SIZE];
    struct net__rpc_workers *workers;
    atomic_size_t in_flight; /* over all connections */
    atomic_size_t paused_now, batch_bytes, worker_bytes;
    atomic_ullong in_flight_pauses, output_pauses, frame_timeouts, idle_closes,
        protocol_errors, worker_refusals;
    atomic_bool started; /* see net_rpc_server_start */

    /* The close: written by the close call before it arms close_task (the
     * post publishes them), then the loop's. */
    struct net__armed close_task;
    uint64_t drain_ms, drain_deadline;
    net_timer_id_t drain_timer;
    net_rpc_server_close_fn done;
    void *done_arg;
};

const char *net_rpc_status_name(uint32_t status)
{
    return net__rpc_status_name(status);
}

void net_rpc_server_options_init(struct net_rpc_server_options *opt)
{
    net_server_options_init(&opt->server);
    opt->server.name = "rpc";
    opt->server.conn.half_close = true;
    opt->max_frame = NET__RPC_DEFAULT_MAX_FRAME;
    opt->max_in_flight = DEFAULT_IN_FLIGHT;
    opt->worker_threads = 0;
    opt->frame_timeout_ms = DEFAULT_FRAME_TIMEOUT_MS;
    opt->idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS;
}

/* ---- handlers ------------------------------------------------------------------ */

static size_t method_hash(const char *m, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)m[i]) * 16777619u;
    return h % TABLE_SIZE;
}

static struct handler *lookup(net_rpc_server_t *s, const char *m, size_t len)
{
    struct handler *h = s->table[method_hash(m, len)];
    while (h && (h->len != len || memcmp(h->method, m, len) != 0))
        h = h->next;
    return h;
}

int net_rpc_server_register(net_rpc_server_t *server, const char *method, net_rpc_handler_fn fn,
                            void *arg, bool blocking)
{
    size_t len = method ? strlen(method) : 0;
    if (!server || !fn || len == 0 || len > NET__RPC_MAX_METHOD)
        return -EINVAL;
    if (!net_loop_in_loop_thread(server->loop))
        return NET_EWRONGTHREAD;
    if (blocking && !server->workers)
        return -EINVAL;
    /* Relaxed: see net_rpc_server_start. */
    if (atomic_load_explicit(&server->started, memory_order_relaxed) ||
        net__closer_closing(&server->closer))
        return -EBUSY;
    if (lookup(server, method, len))
        return -EEXIST;
    struct handler *h = net__malloc(sizeof *h + len + 1);
    if (!h)
        return -ENOMEM;
    *h = (struct handler){.fn = fn, .arg = arg, .blocking = blocking, .len = len};
    memcpy(h->method, method, len + 1);
    size_t b = method_hash(method, len);
    h->next = server->table[b];
    server->table[b] = h;
    return 0;
}

/* ---- sessions: references, the kick, pausing and finishing ----------------------- */

static void handlers_free(net_rpc_server_t *s)
{
    for (size_t i = 0; i < TABLE_SIZE; i++) {
        for (struct handler *h = s->table[i], *next; h; h = next) {
            next = h->next;
            net__free(h);
        }
    }
}

/* The server's memory, after done: the last holder frees it on its own
 * thread (no loop is involved any more). acq_rel as in closer.h: every
 * holder's writes happen before the free. */
static void server_mem_unref(net_rpc_server_t *s)
{
    if (atomic_fetch_sub_explicit(&s->mem_refs, 1, memory_order_acq_rel) != 1)
        return;
    handlers_free(s);
    pthread_rwlock_destroy(&s->tcp_lock);
    net__free(s);
}

static void session_unref(struct session *ss)
{
    if (atomic_fetch_sub(&ss->refs, 1) == 1) {
        net_rpc_server_t *s = ss->server;
        net_buf_destroy(&ss->batch);
        pthread_mutex_destroy(&ss->kick_mu);
        net__free(ss);
        server_mem_unref(s);
    }
}

/* Keeps server->batch_bytes equal to the sum of the batches' capacities
 * (loop thread; relaxed: a gauge that orders nothing). */
static void batch_account(struct session *ss)
{
    size_t cap = net_buf_capacity(&ss->batch);
    if (cap != ss->batch_cap) {
        atomic_fetch_add_explicit(&ss->server->batch_bytes, cap - ss->batch_cap,
                                  memory_order_relaxed); /* wraps down when it shrank */
        ss->batch_cap = cap;
    }
}

/* Has session_update run on the connection's loop soon: an armed task in
 * the session, so it needs no memory and cannot fail, and an armed one
 * already pending looks at in_flight after our decrement. The pending task
 * holds a session and a connection reference. Any thread; the caller holds
 * both references too, so the unrefs here are never the last. */
static void session_kick(struct session *ss)
{
    pthread_mutex_lock(&ss->kick_mu);
    if (!ss->detached) {
        atomic_fetch_add(&ss->refs, 1);
        net_conn_ref(ss->conn);
        if (!net__armed_arm(&ss->kick)) {
            net_conn_unref(ss->conn);
            atomic_fetch_sub(&ss->refs, 1);
        }
    }
    pthread_mutex_unlock(&ss->kick_mu);
}

/* One owner reason at the connection covers both of ours. On the loop
 * thread the change is applied at once and cannot fail. */
static void owner_pause_apply(struct session *ss)
{
    bool want = ss->paused || ss->out_paused;
    if (want != ss->owner_paused) {
        ss->owner_paused = want;
        net__conn_pause_owner(ss->conn, want);
    }
}

static void pause_reading(struct session *ss)
{
    ss->stalled = true;
    ss->paused = true;
    atomic_fetch_add(&ss->server->paused_now, 1);
    atomic_fetch_add_explicit(&ss->server->in_flight_pauses, 1, memory_order_relaxed);
    owner_pause_apply(ss);
}

/* Reading resumes; the connection hands the stalled input back to
 * on_message later (redelivery), which clears `stalled`. */
static void resume_reading(struct session *ss)
{
    ss->paused = false;
    atomic_fetch_sub(&ss->server->paused_now, 1);
    owner_pause_apply(ss);
}

static size_t output_queued(const struct session *ss)
{
    struct net_conn_stats st;
    net_conn_stats(ss->conn, &st);
    return st.output_queued;
}

/* Resumes below half the mark, or once the connection can no longer write
 * (a reset while paused: the connection dropped its output, but a reply
 * racing the reset may stay counted until the free, and the connection
 * waits for reading to resume to deliver the rest and close). */
static void output_check(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    struct session *ss = arg;
    if (net_conn_connected(ss->conn) && output_queued(ss) >= ss->server->out_mark / 2)
        return;
    net_timer_cancel(net_conn_loop(ss->conn), ss->out_timer);
    ss->out_timer = 0;
    ss->out_paused = false;
    owner_pause_apply(ss);
}

/* Replies queued at the backpressure mark: no more requests are read until
 * they drain below half of it. The connection has the same rule, but looks
 * only when a write leaves the socket full; a peer that never reads gives
 * it no write to look at, so we count our own replies too. Without a timer
 * to resume, reading goes on (bounded by the memory budget). */
static bool output_full(struct session *ss, size_t queued)
{
    net_rpc_server_t *s = ss->server;
    if (ss->out_paused)
        return true;
    if (s->out_mark == NET_UNLIMITED || queued < s->out_mark || !net_conn_connected(ss->conn))
        return false;
    net_timer_id_t id = net_loop_run_every(net_conn_loop(ss->conn), OUTPUT_POLL_MS,
                                           output_check, ss);
    if (id < 0)
        return false;
    ss->out_timer = id;
    ss->out_paused = true;
    atomic_fetch_add_explicit(&s->output_pauses, 1, memory_order_relaxed);
    owner_pause_apply(ss);
    return true;
}

/* Everything read is answered: queued replies go out, then our FIN; the
 * connection closes when both directions are done. A peer that broke the
 * rules gets LINGER_MS to take the answers and close. */
static void finish(struct session *ss)
{
    ss->finished = true;
    net_conn_shutdown(ss->conn);
    if (ss->discarding)
        net_conn_force_close_after(ss->conn, LINGER_MS);
}

/* What the loop waits for: room below the limit while paused; nothing in
 * flight when the connection is ending. 0: nothing. */
static size_t wake_threshold(const struct session *ss)
{
    if (ss->paused)
        return ss->server->opt.max_in_flight;
    if ((ss->peer_eof || ss->discarding) && !ss->stalled && !ss->finished)
        return 1;
    return 0;
}

/* Acts on in_flight (loop thread): resumes or finishes when the condition
 * holds, else leaves in wake_below what a reply must look for.
 * Why no wakeup is missed (a Dekker pair, hence seq_cst on both sides):
 *   loop:   store wake_below = T, then load in_flight
 *   reply:  fetch_sub in_flight, then load wake_below
 * In the single total order either the reply's load comes after the store
 * (it sees T and kicks) or its decrement comes before the loop's load
 * (the loop sees it and acts now). While the loop waits, in_flight only
 * falls: nothing is decoded while paused or ending. */
static void session_update(struct session *ss)
{
    for (size_t want; (want = wake_threshold(ss)) != 0;) {
        atomic_store(&ss->wake_below, want);
        if (atomic_load(&ss->in_flight) >= want)
            return;
        if (ss->paused)
            resume_reading(ss);
        else
            finish(ss);
    }
    atomic_store(&ss->wake_below, 0);
}

/* The kick, on the loop. armed.h disarms before this runs (seq_cst, like
 * the arm), so a reply that found it still armed is seen here. */
static void kick_cb(void *arg)
{
    struct session *ss = arg;
    net_conn_t *conn = ss->conn;
    if (net_conn_state(conn) != NET_CONN_DISCONNECTED)
        session_update(ss);
    net_conn_unref(conn);
    session_unref(ss);
}

/* ---- replies ------------------------------------------------------------------------ */

static void req_free(net_rpc_req_t *req)
{
    struct session *ss = req->session;
    size_t left = atomic_fetch_sub(&ss->in_flight, 1) - 1;
    atomic_fetch_sub(&ss->server->in_flight, 1);
    if (left == 0)
        atomic_store_explicit(&ss->went_quiet, true, memory_order_relaxed);
    if (left < atomic_load(&ss->wake_below))
        session_kick(ss);
    if (req->body)
        atomic_fetch_sub_explicit(&ss->server->worker_bytes, req->body_len + req->att_len,
                                  memory_order_relaxed);
    session_unref(ss);
    net_conn_unref(req->conn);
    net__free(req->body);
    net__free(req);
}

static bool in_batch(net_conn_t *conn, const struct session *ss)
{
    /* batching first: it is true only while the connection (and its loop)
     * is alive, and a reply may come after both are gone. */
    return ss && atomic_load_explicit(&ss->batching, memory_order_relaxed) &&
           net_loop_in_loop_thread(net_conn_loop(conn));
}

/* Sends one encoded NRPC response: into the read's batch when we are
 * inside it, else straight to the connection (thread-safe). */
static int send_nrpc(net_conn_t *conn, struct session *ss, uint64_t id, uint32_t status,
                     const void *body, size_t len)
{
    if (in_batch(conn, ss))
        return net__rpc_encode_response(&ss->batch, id, status, body, len);
    /* Header and body go straight into one write-queue node: no buffer of
     * our own, one copy. */
    struct net__rpc_header h = {.version = NET__RPC_VERSION, .type = NET__RPC_TYPE_RESPONSE,
                                .call_id = id, .status = status, .body_len = (uint32_t)len};
    uint8_t hdr[NET__RPC_HEADER_LEN];
    net__rpc_header_pack(hdr, &h);
    struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)body, len}};
    return net_conn_sendv(conn, iov, len ? 2 : 1);
}

/* The pieces of a baidu_std response after its head: error text, payload,
 * attachment (an empty piece is left out of the iovec). */
static int send_pieces(net_conn_t *conn, struct session *ss, struct iovec *iov, size_t n)
{
    size_t used = 1;
    for (size_t i = 1; i < n; i++)
        if (iov[i].iov_len)
            iov[used++] = iov[i];
    if (!in_batch(conn, ss))
        return net_conn_sendv(conn, iov, (int)used);
    size_t total = 0;
    for (size_t i = 0; i < used; i++)
        total += iov[i].iov_len;
    if (net_buf_ensure_writable(&ss->batch, total) < 0)
        return -ENOMEM; /* all or nothing: the appends below cannot fail */
    for (size_t i = 0; i < used; i++)
        net_buf_append(&ss->batch, iov[i].iov_base, iov[i].iov_len);
    return 0;
}

/* A baidu_std response with brpc's error code: on an error the text goes
 * in the meta (error_text) and the payload is empty, as brpc does; the
 * attachment goes either way. -EINVAL when it cannot be encoded. */
static int send_baidu(net_conn_t *conn, struct session *ss, uint64_t id, int32_t code,
                      const void *body, size_t len, const void *att, size_t att_len)
{
    size_t text = code ? len : 0, payload = code ? 0 : len;
    uint8_t head[NET__BAIDU_RESPONSE_HEAD_MAX];
    size_t n = net__baidu_response_head(head, id, code, text, payload, att_len);
    if (n == 0)
        return -EINVAL;
    struct iovec iov[4] = {{head, n}, {(void *)body, text}, {(void *)body, payload},
                           {(void *)att, att_len}};
    return send_pieces(conn, ss, iov, 4);
}

/* A reply that could not be queued (rc from send_response): the caller
 * would wait forever for it, so the connection closes instead and the
 * client's calls end DISCONNECTED. Returns the error the replier should
 * see: a dead connection is not its error. The log line is debug when the
 * replier gets the error back (seen), else (our own error replies, a
 * batch that could not be sent) one rate-limited error. */
static int reply_lost(net_conn_t *conn, int rc, bool seen)
{
    if (rc != -ENOMEM && rc != -ENOBUFS)
        return 0; /* sent, or the connection is closing already */
    NET__LOG_RL(seen ? NET_LOG_DEBUG : NET_LOG_ERROR,
                "rpc: no %s for a reply; closing the connection",
                rc == -ENOMEM ? "memory" : "room in the output queue (max_output)");
    net_conn_force_close(conn);
    return rc;
}

/* The checks that leave req unanswered (rpc.h): reply again correctly. */
static bool reply_valid(const net_rpc_req_t *req, uint32_t status, const void *body,
                        size_t body_len, const void *att, size_t att_len)
{
    if (!req || (body_len && !body) || body_len > UINT32_MAX || status >= NET__RPC_LOCAL_MIN)
        return false;
    if (att_len && (!att || req->proto != PROTO_BAIDU))
        return false;
    return att_len <= INT32_MAX;
}

int net_rpc_reply_with_attachment(net_rpc_req_t *req, uint32_t status, const void *body,
                                  size_t body_len, const void *attachment, size_t attachment_len)
{
    if (!reply_valid(req, status, body, body_len, attachment, attachment_len))
        return -EINVAL;
    int rc;
    if (req->proto == PROTO_BAIDU) {
        rc = send_baidu(req->conn, req->session, req->call_id, net__baidu_error_code(status),
                        body, body_len, attachment, attachment_len);
        if (rc == -EINVAL)
            return rc; /* body and attachment over the frame's limit */
    } else {
        rc = send_nrpc(req->conn, req->session, req->call_id, status, body, body_len);
    }
    rc = reply_lost(req->conn, rc, true);
    req_free(req);
    return rc;
}

int net_rpc_reply(net_rpc_req_t *req, uint32_t status, const void *body, size_t body_len)
{
    return net_rpc_reply_with_attachment(req, status, body, body_len, NULL, 0);
}

const void *net_rpc_req_attachment(const net_rpc_req_t *req, size_t *len)
{
    *len = req->att_len;
    return req->att_len ? req->att : NULL;
}

enum net_rpc_protocol net_rpc_req_protocol(const net_rpc_req_t *req)
{
    return req->proto == PROTO_BAIDU ? NET_RPC_BAIDU_STD : NET_RPC_NRPC;
}

const char *net_rpc_req_method(const net_rpc_req_t *req)
{
    return req->method;
}

uint64_t net_rpc_req_call_id(const net_rpc_req_t *req)
{
    return req->call_id;
}

net_conn_t *net_rpc_req_conn(const net_rpc_req_t *req)
{
    return req->conn;
}

/* ---- dispatch ---------------------------------------------------------------------- */

/* Why a baidu_std request is answered without being served. */
enum { REFUSE_NONE, REFUSE_COMPRESS, REFUSE_UNSUPPORTED, REFUSE_LONG_NAME, REFUSE_CHECKSUM };

/* baidu_code: brpc's error code, or 0 for the one status maps to. */
static void reply_error(net_conn_t *conn, struct session *ss, const struct inreq *r,
                        uint32_t status, int32_t baidu_code, const char *message)
{
    size_t len = strlen(message);
    int rc;
    if (r->proto == PROTO_BAIDU)
        rc = send_baidu(conn, ss, r->id, baidu_code ? baidu_code : net__baidu_error_code(status),
                        message, len, NULL, 0);
    else
        rc = send_nrpc(conn, ss, r->id, status, message, len);
    reply_lost(conn, rc, false);
}

/* A registered method "S.x" with no further '.' in x: service S exists. */
static bool service_known(const net_rpc_server_t *s, const char *svc, size_t len)
{
    for (size_t i = 0; i < TABLE_SIZE; i++)
        for (const struct handler *h = s->table[i]; h; h = h->next)
            if (h->len > len + 1 && h->method[len] == '.' && memcmp(h->method, svc, len) == 0 &&
                !memchr(h->method + len + 1, '.', h->len - len - 1))
                return true;
    return false;
}

/* NRPC: UNKNOWN_METHOD. baidu_std: ENOSERVICE or ENOMETHOD as brpc
 * answers, naming them (the method is what follows the last '.'). */
static void unknown_method(net_conn_t *conn, struct session *ss, const struct inreq *r)
{
    if (r->proto != PROTO_BAIDU) {
        reply_error(conn, ss, r, NET_RPC_UNKNOWN_METHOD, 0, "unknown method");
        return;
    }
    const char *dot = memrchr(r->method, '.', r->method_len);
    int svc = (int)(dot - r->method), m = (int)r->method_len - svc - 1;
    char text[2 * NET__RPC_MAX_METHOD + 64];
    if (service_known(ss->server, r->method, (size_t)svc)) {
        snprintf(text, sizeof text, "no method %.*s in service %.*s", m, dot + 1, svc, r->method);
        reply_error(conn, ss, r, NET_RPC_UNKNOWN_METHOD, NET__BAIDU_ENOMETHOD, text);
    } else {
        snprintf(text, sizeof text, "no service %.*s", svc, r->method);
        reply_error(conn, ss, r, NET_RPC_UNKNOWN_METHOD, NET__BAIDU_ENOSERVICE, text);
    }
}

static void refuse(net_conn_t *conn, struct session *ss, const struct inreq *r)
{
    char text[128];
    if (r->refuse == REFUSE_LONG_NAME) {
        reply_error(conn, ss, r, NET_RPC_UNKNOWN_METHOD, NET__BAIDU_ENOMETHOD,
                    "service and method name over 255 bytes together");
        return;
    }
    if (r->refuse == REFUSE_COMPRESS)
        snprintf(text, sizeof text, "compress_type %ld is not supported: netloop implements "
                 "no compression", (long)r->compress);
    else if (r->refuse == REFUSE_CHECKSUM && r->checksum == NET__BAIDU_CHECKSUM_CRC32C)
        snprintf(text, sizeof text, "request checksum (crc32c) does not match");
    else if (r->refuse == REFUSE_CHECKSUM)
        snprintf(text, sizeof text, "checksum_type %ld is not supported: netloop verifies "
                 "crc32c (1) only", (long)r->checksum);
    else
        snprintf(text, sizeof text, "chunk_info, stream_settings and a content_type other "
                 "than protobuf are not supported");
    reply_error(conn, ss, r, NET_RPC_BAD_REQUEST, NET__BAIDU_EREQUEST, text);
}

static net_rpc_req_t *req_new(net_conn_t *conn, struct session *ss, const struct inreq *r,
                              struct handler *h)
{
    net_rpc_req_t *req = net__malloc(sizeof *req);
    if (!req)
        return NULL;
    *req = (net_rpc_req_t){.conn = net_conn_ref(conn), .session = ss, .call_id = r->id,
                           .handler = h, .proto = r->proto, .body_len = r->body_len,
                           .att = r->att, .att_len = r->att_len};
    memcpy(req->method, r->method, r->method_len);
    req->method[r->method_len] = '\0';
    atomic_fetch_add(&ss->refs, 1);
    atomic_fetch_add(&ss->in_flight, 1);
    atomic_fetch_add(&ss->server->in_flight, 1);
    return req;
}

static void run_blocking(struct net__rpc_work *w)
{
    net_rpc_req_t *req = (net_rpc_req_t *)w;
    req->handler->fn(req, req->body, req->body_len, req->handler->arg);
}

/* Blocking requests wait for a worker with a copy of their body, outside
 * any connection's buffers: together those copies may hold at most the
 * memory budget; beyond it a request is refused with OVERLOADED. Relaxed:
 * a gauge; a race may let a few bodies over, never an unbounded number. */
static bool worker_room(net_rpc_server_t *s, size_t len)
{
    size_t held = atomic_fetch_add_explicit(&s->worker_bytes, len, memory_order_relaxed);
    if (held + len <= s->budget)
        return true;
    atomic_fetch_sub_explicit(&s->worker_bytes, len, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->worker_refusals, 1, memory_order_relaxed);
    return false;
}

/* The copy holds the body and then the attachment. */
static void hand_to_worker(net_rpc_req_t *req, const struct inreq *r)
{
    net_rpc_server_t *s = req->session->server;
    size_t len = r->body_len + r->att_len;
    if (!worker_room(s, len)) {
        net_rpc_reply(req, NET_RPC_OVERLOADED, "worker queue full", 17);
        return;
    }
    req->body = net__malloc(len ? len : 1);
    if (!req->body) {
        atomic_fetch_sub_explicit(&s->worker_bytes, len, memory_order_relaxed);
        net_rpc_reply(req, NET_RPC_INTERNAL, "out of memory", 13);
        return;
    }
    memcpy(req->body, r->body, r->body_len);
    if (r->att_len)
        memcpy(req->body + r->body_len, r->att, r->att_len);
    req->att = req->body + r->body_len;
    req->work.run = run_blocking;
    net__rpc_workers_submit(s->workers, &req->work);
}

/* The handler for r, or NULL after answering r with the error that stops
 * it from running. */
static struct handler *admit(net_conn_t *conn, struct session *ss, const struct inreq *r)
{
    net_rpc_server_t *s = ss->server;
    struct handler *h = NULL;
    if (net__closer_closing(&s->closer))
        reply_error(conn, ss, r, NET_RPC_SHUTTING_DOWN, 0, "server is shutting down");
    else if (r->refuse)
        refuse(conn, ss, r);
    else if (!(h = lookup(s, r->method, r->method_len)))
        unknown_method(conn, ss, r);
    return h;
}

static void dispatch(net_conn_t *conn, struct session *ss, const struct inreq *r)
{
    struct handler *h = admit(conn, ss, r);
    if (!h)
        return;
    net_rpc_req_t *req = req_new(conn, ss, r, h);
    if (!req)
        reply_error(conn, ss, r, NET_RPC_INTERNAL, 0, "out of memory");
    else if (h->blocking)
        hand_to_worker(req, r);
    else
        h->fn(req, r->body, r->body_len, h->arg);
}

/* ---- reading --------------------------------------------------------------------- */

/* The NRPC frame at the front of in, refused as soon as its header shows
 * it can never be served: a response, or larger than the memory budget
 * (the codec refuses one over max_frame). Returns as net__rpc_decode. */
static int next_nrpc(const net_rpc_server_t *s, const net_buf_t *in, struct inreq *r,
                     const char **reason)
{
    struct net__rpc_frame f;
    int rc = net__rpc_decode(in, s->opt.max_frame, &f, reason);
    if (rc < 0 || f.total == 0)
        return rc;
    if (f.hdr.type != NET__RPC_TYPE_REQUEST) {
        *reason = "response sent to a server";
        return -EPROTO;
    }
    if (f.total > s->budget) {
        *reason = "frame larger than the server's memory budget";
        return -EMSGSIZE;
    }
    *r = (struct inreq){.proto = PROTO_NRPC, .id = f.hdr.call_id, .method = f.method,
                        .method_len = f.hdr.method_len, .body = f.body,
                        .body_len = f.hdr.body_len, .total = f.total};
    return rc;
}

/* "Service.Method" into name, or a refusal when it does not fit. */
static void baidu_inreq(struct inreq *r, const struct net__baidu_frame *f, char *name)
{
    const struct net__baidu_meta *m = &f->meta;
    *r = (struct inreq){.proto = PROTO_BAIDU, .id = m->correlation_id, .method = name,
                        .body = (const char *)f->payload, .body_len = f->payload_len,
                        .att = (const char *)f->attachment, .att_len = f->attachment_len,
                        .total = f->frame_len, .compress = m->compress_type,
                        .checksum = m->checksum_type};
    if (m->service_len + 1 + m->method_len > NET__RPC_MAX_METHOD) {
        r->refuse = REFUSE_LONG_NAME;
        return;
    }
    memcpy(name, m->service, m->service_len);
    name[m->service_len] = '.';
    memcpy(name + m->service_len + 1, m->method, m->method_len);
    r->method_len = m->service_len + 1 + m->method_len;
    if (m->compress_type != 0)
        r->refuse = REFUSE_COMPRESS;
    else if (m->unsupported)
        r->refuse = REFUSE_UNSUPPORTED;
    else if (!net__baidu_checksum_ok(f))
        r->refuse = REFUSE_CHECKSUM;
}

/* The baidu_std frame at the front of in, with the same refusals as
 * next_nrpc (the budget on the header alone too). Returns 1, 0 or <0. */
static int next_baidu(const net_rpc_server_t *s, const net_buf_t *in, struct inreq *r,
                      char *name, const char **reason)
{
    struct net__baidu_frame f;
    size_t need = 0;
    int rc = net__baidu_decode((const uint8_t *)net_buf_peek(in), net_buf_readable(in),
                               s->opt.max_frame, &f, &need);
    if (rc == -EPROTO)
        *reason = "malformed baidu_std frame";
    else if (rc == -EMSGSIZE)
        *reason = "frame over max_frame";
    else if ((rc == 0 && need > s->budget) || (rc == 1 && f.frame_len > s->budget)) {
        *reason = "frame larger than the server's memory budget";
        return -EMSGSIZE;
    } else if (rc == 1 && f.meta.has_response) {
        *reason = "response sent to a server";
        return -EPROTO;
    }
    if (rc == 1)
        baidu_inreq(r, &f, name);
    return rc;
}

/* The first bytes choose the protocol: up to 4 of them are compared with
 * both magics; a prefix of one waits for more. 0, or -EPROTO. */
static int choose_protocol(struct session *ss, const net_buf_t *in, const char **reason)
{
    size_t n = net_buf_readable(in) < 4 ? net_buf_readable(in) : 4;
    const char *p = net_buf_peek(in);
    if (memcmp(p, NET__RPC_MAGIC, n) == 0) {
        ss->proto = n == 4 ? PROTO_NRPC : PROTO_UNKNOWN;
    } else if (net__baidu_sniff((const uint8_t *)p, n)) {
        ss->proto = n == 4 ? PROTO_BAIDU : PROTO_UNKNOWN;
    } else {
        *reason = "neither NRPC/1 nor baidu_std";
        return -EPROTO;
    }
    return 0;
}

static int next_request(struct session *ss, const net_buf_t *in, struct inreq *r, char *name,
                        const char **reason)
{
    if (ss->proto == PROTO_UNKNOWN && choose_protocol(ss, in, reason) < 0)
        return -EPROTO;
    if (ss->proto == PROTO_NRPC)
        return next_nrpc(ss->server, in, r, reason);
    if (ss->proto == PROTO_BAIDU)
        return next_baidu(ss->server, in, r, name, reason);
    return 0;
}

/* The connection ends after the requests already read are answered:
 * the rest of the input (and all later input) is dropped. */
static void start_discarding(struct session *ss, atomic_ullong *counter)
{
    ss->discarding = true;
    ss->stalled = false;
    ss->frame_start_ms = 0;
    atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

/* One line with the first header bytes, whichever protocol they are. */
static void protocol_error(struct session *ss, net_buf_t *in, const char *reason)
{
    char peer[NET_ADDR_STRLEN];
    net_addr_format(net_conn_peer_addr(ss->conn), peer, sizeof peer);
    const uint8_t *p = (const uint8_t *)net_buf_peek(in);
    size_t n = net_buf_readable(in) < 12 ? net_buf_readable(in) : 12;
    char hex[2 * 12 + 1] = "";
    for (size_t i = 0; i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", p[i]);
    NET__LOG_RL(NET_LOG_WARN, "rpc: closing connection from %s: %s (%s, first bytes %s)", peer,
                reason, ss->proto == PROTO_BAIDU ? "baidu_std" :
                ss->proto == PROTO_NRPC ? "NRPC/1" : "unknown protocol", hex);
    net_buf_retrieve_all(in);
    start_discarding(ss, &ss->server->protocol_errors);
}

/* Below the limits, or reading pauses with this frame left in the input. */
static bool room_for_request(struct session *ss)
{
    if (atomic_load(&ss->in_flight) >= ss->server->opt.max_in_flight) {
        pause_reading(ss);
        return false;
    }
    /* Replies made in this read wait in the batch: they count with what the
     * connection held when the read began (one look per read, not per
     * frame, on the hot path). */
    if (output_full(ss, ss->queued_at_read + net_buf_readable(&ss->batch))) {
        ss->stalled = true;
        return false;
    }
    return true;
}

/* Dispatches the complete frames at the front of in; stops at a partial
 * frame, at the in-flight limit or at a protocol error. Returns how many
 * frames it consumed. */
static size_t decode_frames(struct session *ss, net_buf_t *in)
{
    struct inreq r;
    char name[NET__RPC_MAX_METHOD + 1];
    const char *reason = NULL;
    size_t n = 0;
    int rc;
    while ((rc = next_request(ss, in, &r, name, &reason)) > 0 && room_for_request(ss)) {
        dispatch(ss->conn, ss, &r);
        net_buf_retrieve(in, r.total);
        n++;
    }
    if (rc < 0)
        protocol_error(ss, in, reason);
    return n;
}

/* The replies made during this read leave in one write; a batch grown by a
 * large reply is freed (BATCH_KEEP_MAX). */
static void batch_send(struct session *ss)
{
    if (net_buf_readable(&ss->batch)) {
        int rc = net_conn_send_buf(ss->conn, &ss->batch);
        if (rc < 0) {
            net_buf_retrieve_all(&ss->batch);
            reply_lost(ss->conn, rc, false);
        }
    }
    if (net_buf_capacity(&ss->batch) > BATCH_KEEP_MAX)
        net_buf_release(&ss->batch);
    batch_account(ss);
}

/* Starts the frame clock when an unfinished frame is left: its first byte
 * came with this read unless that same frame was already waiting (nothing
 * was consumed). A stalled frame is complete: we wait, not the peer. */
static void note_partial(struct session *ss, const net_buf_t *in, size_t frames,
                         uint64_t receive_ms)
{
    if (!net_buf_readable(in) || ss->stalled || ss->discarding)
        ss->frame_start_ms = 0;
    else if (frames || !ss->frame_start_ms)
        ss->frame_start_ms = receive_ms;
}

static void on_message(net_conn_t *conn, net_buf_t *in, uint64_t receive_ms, void *arg)
{
    (void)arg;
    struct session *ss = net__conn_owner_data(conn);
    /* Once our FIN is on its way (a graceful close, or the end of a
     * connection) no answer can reach the peer: what arrives now is not
     * read as a request, and the peer's calls end DISCONNECTED. */
    if (!ss || ss->discarding || !net_conn_connected(conn)) {
        net_buf_retrieve_all(in);
        return;
    }
    ss->active_ms = receive_ms;
    ss->stalled = false;
    ss->queued_at_read = output_queued(ss);
    atomic_store_explicit(&ss->batching, true, memory_order_relaxed);
    size_t frames = decode_frames(ss, in);
    atomic_store_explicit(&ss->batching, false, memory_order_relaxed);
    batch_send(ss);
    output_full(ss, output_queued(ss));
    note_partial(ss, in, frames, receive_ms);
    session_update(ss);
}

/* half_close is on for RPC connections: the peer has sent everything. */
static void on_peer_eof(net_conn_t *conn, void *arg)
{
    (void)arg;
    struct session *ss = net__conn_owner_data(conn);
    if (!ss)
        return;
    ss->peer_eof = true;
    ss->frame_start_ms = 0; /* an unfinished frame never will be */
    session_update(ss);
}

/* ---- deadlines ------------------------------------------------------------------- */

static bool expired(uint64_t now, uint64_t since, uint32_t timeout_ms)
{
    return timeout_ms != NET_RPC_NO_TIMEOUT && now - since >= timeout_ms;
}

/* Work the server owes the peer: the connection is not idle. */
static bool session_busy(struct session *ss)
{
    return atomic_load(&ss->in_flight) > 0 || output_queued(ss) > 0 || ss->paused ||
           ss->out_paused;
}

/* Nothing owed to the peer: the connection closes now, which also gives
 * back the partial frame (it may be held while reading is paused for the
 * memory budget, where no input comes to discard it). Else the requests
 * read before are answered first. */
static void frame_timed_out(struct session *ss)
{
    char peer[NET_ADDR_STRLEN];
    net_addr_format(net_conn_peer_addr(ss->conn), peer, sizeof peer);
    NET__LOG_RL(NET_LOG_INFO, "rpc: closing connection from %s: a frame unfinished after "
                "frame_timeout_ms (%u ms)", peer, ss->server->opt.frame_timeout_ms);
    start_discarding(ss, &ss->server->frame_timeouts);
    if (atomic_load(&ss->in_flight) == 0 && output_queued(ss) == 0)
        net_conn_force_close(ss->conn);
    else
        session_update(ss);
}

static void idle_close(struct session *ss)
{
    NET__LOG(NET_LOG_DEBUG, "rpc: conn %llu idle for idle_timeout_ms: closing",
             (unsigned long long)net_conn_id(ss->conn));
    atomic_fetch_add_explicit(&ss->server->idle_closes, 1, memory_order_relaxed);
    net_conn_force_close(ss->conn);
}

/* Every check_ms (a repeating timer per connection, cancelled at close). An
 * ending connection is bounded by its own rules. Idle time counts from the
 * last input, or from the first check that found the work done (a reply
 * since the last check, or work then and none now), so a connection is
 * never closed sooner than idle_timeout_ms after its last answer left. */
static void deadlines_check(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    struct session *ss = arg;
    const struct net_rpc_server_options *o = &ss->server->opt;
    uint64_t now = net_now_ms();
    if (ss->discarding || ss->peer_eof || ss->finished)
        return;
    bool busy = session_busy(ss);
    bool answered = atomic_exchange_explicit(&ss->went_quiet, false, memory_order_relaxed);
    if (busy || ss->was_busy || answered)
        ss->active_ms = now;
    ss->was_busy = busy;
    if (ss->frame_start_ms && expired(now, ss->frame_start_ms, o->frame_timeout_ms))
        frame_timed_out(ss);
    else if (!ss->frame_start_ms && expired(now, ss->active_ms, o->idle_timeout_ms))
        idle_close(ss);
}

/* ---- connections up and down ------------------------------------------------------ */

static struct session *session_new(net_conn_t *conn, net_rpc_server_t *s)
{
    struct session *ss = net__calloc(1, sizeof *ss);
    if (!ss)
        return NULL;
    if (pthread_mutex_init(&ss->kick_mu, NULL) != 0) {
        net__free(ss);
        return NULL;
    }
    atomic_init(&ss->refs, 1); /* the connection's */
    ss->server = s;
    ss->conn = conn;
    net__armed_init(&ss->kick, net_conn_loop(conn), kick_cb, ss);
    ss->active_ms = net_loop_now_ms(net_conn_loop(conn));
    if (s->check_ms) {
        ss->timer = net_loop_run_every(net_conn_loop(conn), s->check_ms, deadlines_check, ss);
        if (ss->timer < 0) {
            pthread_mutex_destroy(&ss->kick_mu);
            net__free(ss);
            return NULL;
        }
    }
    /* Relaxed: taken from the reference the TCP server's callbacks imply
     * (it closes before the release drops the release's). */
    atomic_fetch_add_explicit(&s->mem_refs, 1, memory_order_relaxed);
    return ss;
}

/* On the loop, not inside on_message: nothing uses the batch any more. */
static void session_down(net_conn_t *conn, struct session *ss)
{
    net__conn_set_owner_data(conn, NULL);
    pthread_mutex_lock(&ss->kick_mu);
    ss->detached = true; /* no kick after the close: the loop may end */
    pthread_mutex_unlock(&ss->kick_mu);
    if (ss->timer > 0)
        net_timer_cancel(net_conn_loop(conn), ss->timer);
    if (ss->out_timer > 0)
        net_timer_cancel(net_conn_loop(conn), ss->out_timer);
    if (ss->paused)
        atomic_fetch_sub(&ss->server->paused_now, 1);
    net_buf_destroy(&ss->batch);
    batch_account(ss);
    session_unref(ss);
}

static void on_connection(net_conn_t *conn, void *arg)
{
    net_rpc_server_t *s = arg;
    struct session *ss = net__conn_owner_data(conn);
    if (!net_conn_connected(conn)) {
        if (ss)
            session_down(conn, ss);
    } else if (!(ss = session_new(conn, s))) {
        /* The peer sees a close; nobody here is told: one line. */
        NET__LOG_RL(NET_LOG_ERROR, "rpc: out of memory for a session: closing the connection");
        net_conn_force_close(conn);
    } else {
        net__conn_set_owner_data(conn, ss);
    }
}

/* ---- life ------------------------------------------------------------------------ */

/* 0 means the documented default (include/net/rpc.h); NET_UNLIMITED and
 * NET_RPC_NO_TIMEOUT pass through (the checks never reach them). */
static void options_normalise(struct net_rpc_server_options *o)
{
    if (!o->max_frame)
        o->max_frame = NET__RPC_DEFAULT_MAX_FRAME;
    if (!o->max_in_flight)
        o->max_in_flight = DEFAULT_IN_FLIGHT;
    if (!o->frame_timeout_ms)
        o->frame_timeout_ms = DEFAULT_FRAME_TIMEOUT_MS;
    if (!o->idle_timeout_ms)
        o->idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS;
    if (!o->server.name)
        o->server.name = "rpc";
    o->server.conn.half_close = true; /* on_peer_eof answers what was read */
}

/* Half the shorter timeout: a deadline is noticed between 1x and 1.5x. */
static uint64_t check_period(const struct net_rpc_server_options *o)
{
    uint32_t t = o->frame_timeout_ms < o->idle_timeout_ms ? o->frame_timeout_ms
                                                          : o->idle_timeout_ms;
    if (t == NET_RPC_NO_TIMEOUT)
        return 0;
    return t / 2 ? t / 2 : 1;
}

static void server_configure(net_rpc_server_t *s, const struct net_rpc_server_options *opt)
{
    if (opt)
        s->opt = *opt;
    else
        net_rpc_server_options_init(&s->opt);
    options_normalise(&s->opt);
    struct net_conn_options d, *c = &s->opt.server.conn;
    net_conn_options_init(&d);
    size_t need = net__rpc_input_need(s->opt.max_frame);
    if ((c->max_input ? c->max_input : d.max_input) < need)
        c->max_input = need;
    s->out_mark = c->backpressure_mark ? c->backpressure_mark : d.backpressure_mark;
    s->check_ms = check_period(&s->opt);
}

static void release_cb(void *arg);
static void close_cb(void *arg);

static net_rpc_server_t *server_alloc(net_loop_t *loop, const struct net_rpc_server_options *opt)
{
    net_rpc_server_t *s = net__calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (pthread_rwlock_init(&s->tcp_lock, NULL) != 0) {
        net__free(s);
        return NULL;
    }
    net__closer_init(&s->closer, loop, release_cb, s);
    net__armed_init(&s->close_task, loop, close_cb, s);
    atomic_init(&s->mem_refs, 1);
    s->loop = loop;
    server_configure(s, opt);
    return s;
}

/* The workers first: once the TCP server exists, nothing else can fail. */
int net_rpc_server_new(net_loop_t *loop, const net_addr_t *addr,
                       const struct net_rpc_server_options *opt, net_rpc_server_t **out)
{
    if (!loop || !addr || !out)
        return -EINVAL;
    if (!net_loop_in_loop_thread(loop))
        return NET_EWRONGTHREAD;
    net_rpc_server_t *s = server_alloc(loop, opt);
    if (!s)
        return -ENOMEM;
    struct net_conn_callbacks cbs = {.on_connection = on_connection, .on_message = on_message,
                                     .on_peer_eof = on_peer_eof, .arg = s};
    int rc = s->opt.worker_threads ? net__rpc_workers_start(s->opt.worker_threads, &s->workers)
                                   : 0;
    if (rc == 0)
        rc = net_server_new(loop, addr, &s->opt.server, &cbs, &s->tcp);
    if (rc < 0) {
        net__rpc_workers_stop(s->workers);
        server_mem_unref(s);
        return rc;
    }
    s->addr = *net_server_addr(s->tcp);
    struct net_server_stats st;
    net_server_stats(s->tcp, &st);
    s->budget = st.memory_budget;
    *out = s;
    return 0;
}

/* `started` only refuses a register after the start: relaxed is enough.
 * What makes the handler table safe to read from the I/O threads is that
 * register runs on the server's loop and listening starts there too (a
 * start from another thread is applied there, net_server_start), so every
 * register that saw started false happened before the first accept; the
 * accepted connection reaches its I/O loop through a queue, which orders
 * the table's writes before any lookup. The read lock keeps the TCP server
 * from being freed under the call (a start racing a close). */
static int start_tcp(net_rpc_server_t *s)
{
    if (net__closer_closing(&s->closer))
        return -ESHUTDOWN;
    atomic_store_explicit(&s->started, true, memory_order_relaxed);
    pthread_rwlock_rdlock(&s->tcp_lock);
    int rc = s->tcp ? net_server_start(s->tcp) : -ESHUTDOWN;
    pthread_rwlock_unlock(&s->tcp_lock);
    if (rc < 0) /* not started: it may be tried again, and register works */
        atomic_store_explicit(&s->started, false, memory_order_relaxed);
    return rc;
}

/* A reference while this thread uses the server (a start racing a close
 * from another thread keeps the release waiting). */
int net_rpc_server_start(net_rpc_server_t *server)
{
    if (!server)
        return -EINVAL;
    net__closer_ref(&server->closer);
    int rc = start_tcp(server);
    net__closer_unref(&server->closer);
    return rc;
}

const net_addr_t *net_rpc_server_addr(const net_rpc_server_t *server)
{
    return &server->addr;
}

static void tcp_stats(net_rpc_server_t *s, struct net_server_stats *out)
{
    pthread_rwlock_rdlock(&s->tcp_lock);
    if (s->tcp)
        net_server_stats(s->tcp, out);
    else
        *out = s->tcp_final;
    pthread_rwlock_unlock(&s->tcp_lock);
}

/* A memory reference while reading: its acq_rel drop orders the reads
 * before the free, also for a thread with no other tie to the loop. */
void net_rpc_server_stats(const net_rpc_server_t *server, struct net_rpc_server_stats *out)
{
    net_rpc_server_t *s = (net_rpc_server_t *)server;
    atomic_fetch_add_explicit(&s->mem_refs, 1, memory_order_relaxed);
    *out = (struct net_rpc_server_stats){
        .in_flight = atomic_load(&s->in_flight),
        .paused = atomic_load(&s->paused_now),
        .in_flight_pauses = atomic_load_explicit(&s->in_flight_pauses, memory_order_relaxed),
        .output_pauses = atomic_load_explicit(&s->output_pauses, memory_order_relaxed),
        .frame_timeouts = atomic_load_explicit(&s->frame_timeouts, memory_order_relaxed),
        .idle_closes = atomic_load_explicit(&s->idle_closes, memory_order_relaxed),
        .protocol_errors = atomic_load_explicit(&s->protocol_errors, memory_order_relaxed),
        .worker_refusals = atomic_load_explicit(&s->worker_refusals, memory_order_relaxed),
        .batch_bytes = atomic_load_explicit(&s->batch_bytes, memory_order_relaxed),
        .worker_bytes = atomic_load_explicit(&s->worker_bytes, memory_order_relaxed),
    };
    tcp_stats(s, &out->tcp);
    server_mem_unref(s);
}

/* ---- close ------------------------------------------------------------------------ */

/* The release (loop/closer.h): the last lifecycle reference is gone. done
 * may still read the stats and the address; the memory goes with the
 * release's memory reference, or later with the last session. */
static void release_cb(void *arg)
{
    net_rpc_server_t *s = arg;
    if (s->done)
        s->done(s, s->done_arg);
    server_mem_unref(s);
}

/* The TCP server is gone (its connections too, so every session is
 * detached). Blocking handlers still queued run now, on the workers, and
 * reply into closed connections: safe. Then the owner's reference goes. */
static void tcp_closed(net_rpc_server_t *s)
{
    net__rpc_workers_stop(s->workers);
    s->workers = NULL;
    net__closer_unref(&s->closer);
}

/* The TCP server's close is done (its I/O threads are joined): its
 * getters still work in here, and its memory goes when this returns. The
 * write lock waits for a start or stats call using it on another thread. */
static void tcp_closed_cb(net_server_t *tcp, void *arg)
{
    net_rpc_server_t *s = arg;
    pthread_rwlock_wrlock(&s->tcp_lock);
    net_server_stats(tcp, &s->tcp_final);
    s->tcp = NULL;
    pthread_rwlock_unlock(&s->tcp_lock);
    tcp_closed(s);
}

/* The drain is over: the TCP server half-closes every connection after its
 * queued replies and force-closes what is left after the time that
 * remains. */
static void drain_over(net_rpc_server_t *s, uint64_t now)
{
    if (s->drain_timer > 0)
        net_timer_cancel(s->loop, s->drain_timer);
    s->drain_timer = 0;
    uint64_t left = now < s->drain_deadline ? s->drain_deadline - now : 0;
    if (net_server_close(s->tcp, left, tcp_closed_cb, s) < 0)
        tcp_closed_cb(s->tcp, s); /* cannot happen: the one close */
}

/* Every DRAIN_POLL_MS until nothing is in flight or the deadline passes. */
static void drain_poll_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    net_rpc_server_t *s = arg;
    uint64_t now = net_now_ms();
    if (atomic_load(&s->in_flight) == 0 || now >= s->drain_deadline)
        drain_over(s, now);
}

static uint64_t deadline_after(uint64_t now, uint64_t ms)
{
    return ms > UINT64_MAX - now ? UINT64_MAX : now + ms;
}

/* The close on the loop. Requests decoded from now on are answered
 * SHUTTING_DOWN (the flag was set by the close call), so in_flight only
 * falls; without a timer for the poll the drain is cut to nothing. */
static void close_cb(void *arg)
{
    net_rpc_server_t *s = arg;
    uint64_t now = net_now_ms();
    s->drain_deadline = deadline_after(now, s->drain_ms);
    if (s->drain_ms && atomic_load(&s->in_flight) > 0) {
        net_timer_id_t id = net_loop_run_every(s->loop, DRAIN_POLL_MS, drain_poll_cb, s);
        if (id > 0) {
            s->drain_timer = id;
            net__closer_unref(&s->closer); /* the task's */
            return;
        }
        s->drain_deadline = now;
    }
    drain_over(s, now);
    net__closer_unref(&s->closer); /* the task's */
}

int net_rpc_server_close(net_rpc_server_t *server, uint64_t drain_ms,
                         net_rpc_server_close_fn done, void *arg)
{
    if (!server)
        return -EINVAL;
    if (!net__closer_close(&server->closer))
        return -EALREADY;
    server->done = done;
    server->done_arg = arg;
    server->drain_ms = drain_ms;
    /* Armed once: nothing else arms it. The task holds a reference. */
    net__closer_ref(&server->closer);
    net__armed_arm(&server->close_task);
    return 0;
}
