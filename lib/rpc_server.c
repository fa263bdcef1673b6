/* The RPC server: NRPC/1 requests in, one response per request out.
 *
 * Each connection has a session (its context pointer) counting the requests
 * it has in flight. A request handle holds a reference to its connection and
 * to its session, so a reply can come from any thread, at any time, and is a
 * safe no-op once the connection is gone.
 *
 * Replies made on the loop thread while a read is being processed are
 * collected in the session's batch and leave in one write after the last
 * frame of that read: a pipelined burst of requests costs one read and one
 * write, not one write per call. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <net/rpc.h>

#include "alloc_internal.h"
#include "log_internal.h"
#include "rpc_codec.h"
#include "tcp_conn_internal.h"
#include "rpc_workers.h"

#define TABLE_SIZE 64 /* handlers per server are few; chains stay short */
#define STOP_POLL_MS 5

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

struct session {
    atomic_int refs;
    net_rpc_server_t *server;
    atomic_size_t in_flight;
    atomic_bool batching; /* inside on_message; written on the loop thread,
                             read by replies from any thread */
    net_buf_t batch;
};

struct net_rpc_req {
    struct net__rpc_work work; /* for the worker pool; first member */
    net_conn_t *conn;
    struct session *session;
    uint64_t call_id;
    struct handler *handler;
    size_t body_len;
    char *body;                /* copied, for blocking handlers only */
    char method[NET__RPC_MAX_METHOD + 1];
};

struct net_rpc_server {
    atomic_int refs; /* the owner's and one per session: replies may outlive free */
    net_loop_t *loop;
    net_server_t *tcp;
    struct net_rpc_server_options opt;
    struct handler *table[TABLE_SIZE];
    struct net__rpc_workers *workers;
    atomic_bool stopping;
    atomic_size_t in_flight; /* over all connections */
    bool started;
    uint64_t drain_deadline;
    net_timer_id_t stop_timer;
    void (*done)(net_rpc_server_t *, void *);
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
    opt->max_frame = NET__RPC_DEFAULT_MAX_FRAME;
    opt->max_in_flight = 1024;
    opt->worker_threads = 0;
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
    if (blocking && !server->workers)
        return -EINVAL;
    if (server->started)
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

/* ---- sessions and replies ------------------------------------------------------ */

static void server_unref(net_rpc_server_t *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    for (size_t i = 0; i < TABLE_SIZE; i++) {
        for (struct handler *h = s->table[i], *next; h; h = next) {
            next = h->next;
            net__free(h);
        }
    }
    net__free(s);
}

static void session_unref(struct session *ss)
{
    if (atomic_fetch_sub(&ss->refs, 1) == 1) {
        net_rpc_server_t *s = ss->server;
        net_buf_destroy(&ss->batch);
        net__free(ss);
        server_unref(s);
    }
}

static void req_free(net_rpc_req_t *req)
{
    atomic_fetch_sub(&req->session->in_flight, 1);
    atomic_fetch_sub(&req->session->server->in_flight, 1);
    session_unref(req->session);
    net_conn_unref(req->conn);
    net__free(req->body);
    net__free(req);
}

/* Sends one encoded response: into the read's batch when we are inside it,
 * else straight to the connection (thread-safe). */
static int send_response(net_conn_t *conn, struct session *ss, uint64_t id, uint32_t status,
                         const void *body, size_t len)
{
    /* batching first: it is true only while the connection (and its loop)
     * is alive, and a reply may come after both are gone. */
    if (ss && atomic_load_explicit(&ss->batching, memory_order_relaxed) &&
        net_loop_in_loop_thread(net_conn_loop(conn)))
        return net__rpc_encode_response(&ss->batch, id, status, body, len);
    /* Header and body go straight into one write-queue node: no buffer of
     * our own, one copy. */
    struct net__rpc_header h = {.version = NET__RPC_VERSION, .type = NET__RPC_TYPE_RESPONSE,
                                .call_id = id, .status = status, .body_len = (uint32_t)len};
    uint8_t hdr[NET__RPC_HEADER_LEN];
    net__rpc_header_pack(hdr, &h);
    struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)body, len}};
    return net__conn_sendv(conn, iov, len ? 2 : 1);
}

/* A reply that could not be queued (rc from send_response): the caller
 * would wait forever for it, so the connection closes instead and the
 * client's calls end DISCONNECTED. Returns the error the replier should
 * see: a dead connection is not its error. */
static int reply_lost(net_conn_t *conn, int rc)
{
    if (rc != -ENOMEM && rc != -ENOBUFS)
        return 0; /* sent, or the connection is closing already */
    NET__LOG_RL(NET_LOG_ERROR, "rpc: no %s for a reply; closing the connection",
                rc == -ENOMEM ? "memory" : "room in the output queue (max_output)");
    net_conn_force_close(conn);
    return rc;
}

int net_rpc_reply(net_rpc_req_t *req, uint32_t status, const void *body, size_t body_len)
{
    if (!req || (body_len && !body) || body_len > UINT32_MAX || status >= NET__RPC_LOCAL_MIN)
        return -EINVAL;
    int rc = send_response(req->conn, req->session, req->call_id, status, body, body_len);
    rc = reply_lost(req->conn, rc);
    req_free(req);
    return rc;
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

static void reply_error(net_conn_t *conn, struct session *ss, uint64_t id, uint32_t status,
                        const char *message)
{
    reply_lost(conn, send_response(conn, ss, id, status, message, strlen(message)));
}

static net_rpc_req_t *req_new(net_conn_t *conn, struct session *ss, const struct net__rpc_frame *f,
                              struct handler *h)
{
    net_rpc_req_t *req = net__malloc(sizeof *req);
    if (!req)
        return NULL;
    *req = (net_rpc_req_t){.conn = net_conn_ref(conn), .session = ss, .call_id = f->hdr.call_id,
                           .handler = h, .body_len = f->hdr.body_len};
    memcpy(req->method, f->method, f->hdr.method_len);
    req->method[f->hdr.method_len] = '\0';
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

static void hand_to_worker(net_rpc_req_t *req, const struct net__rpc_frame *f)
{
    req->body = net__malloc(f->hdr.body_len ? f->hdr.body_len : 1);
    if (!req->body) {
        net_rpc_reply(req, NET_RPC_INTERNAL, "out of memory", 13);
        return;
    }
    memcpy(req->body, f->body, f->hdr.body_len);
    req->work.run = run_blocking;
    net__rpc_workers_submit(req->session->server->workers, &req->work);
}

static void dispatch(net_conn_t *conn, struct session *ss, const struct net__rpc_frame *f)
{
    net_rpc_server_t *s = ss->server;
    uint64_t id = f->hdr.call_id;
    if (atomic_load_explicit(&s->stopping, memory_order_relaxed))
        return reply_error(conn, ss, id, NET_RPC_SHUTTING_DOWN, "server is shutting down");
    struct handler *h = lookup(s, f->method, f->hdr.method_len);
    if (!h)
        return reply_error(conn, ss, id, NET_RPC_UNKNOWN_METHOD, "unknown method");
    if (atomic_load_explicit(&ss->in_flight, memory_order_relaxed) >= s->opt.max_in_flight)
        return reply_error(conn, ss, id, NET_RPC_OVERLOADED, "too many requests in flight");
    net_rpc_req_t *req = req_new(conn, ss, f, h);
    if (!req)
        return reply_error(conn, ss, id, NET_RPC_INTERNAL, "out of memory");
    if (h->blocking)
        hand_to_worker(req, f);
    else
        h->fn(req, f->body, f->hdr.body_len, h->arg);
}

static void protocol_error(net_conn_t *conn, const struct net__rpc_frame *f, const char *reason)
{
    char peer[NET_ADDR_STRLEN];
    net_addr_format(net_conn_peer_addr(conn), peer, sizeof peer);
    NET__LOG_RL(NET_LOG_WARN, "rpc: closing connection from %s: %s (type %u, method_len %u, "
                "body_len %u)", peer, reason, f->hdr.type, f->hdr.method_len, f->hdr.body_len);
    net_conn_force_close(conn);
}

static void on_message(net_conn_t *conn, net_buf_t *in, uint64_t receive_ms, void *arg)
{
    (void)receive_ms;
    net_rpc_server_t *s = arg;
    struct session *ss = net_conn_context(conn);
    struct net__rpc_frame f;
    const char *reason = NULL;
    atomic_store_explicit(&ss->batching, true, memory_order_relaxed);
    for (;;) {
        int rc = net__rpc_decode(in, s->opt.max_frame, &f, &reason);
        if (rc == 0)
            break;
        if (rc < 0 || f.hdr.type != NET__RPC_TYPE_REQUEST) {
            protocol_error(conn, &f, rc < 0 ? reason : "response sent to a server");
            net_buf_retrieve_all(in);
            break;
        }
        dispatch(conn, ss, &f);
        net_buf_retrieve(in, f.total);
    }
    atomic_store_explicit(&ss->batching, false, memory_order_relaxed);
    if (net_buf_readable(&ss->batch)) {
        int rc = net_conn_send_buf(conn, &ss->batch);
        if (rc < 0) {
            net_buf_retrieve_all(&ss->batch);
            reply_lost(conn, rc);
        }
    }
}

static void on_connection(net_conn_t *conn, void *arg)
{
    net_rpc_server_t *s = arg;
    if (net_conn_connected(conn)) {
        struct session *ss = net__calloc(1, sizeof *ss);
        if (!ss) {
            net_conn_force_close(conn);
            return;
        }
        atomic_init(&ss->refs, 1); /* the connection's */
        ss->server = s;
        atomic_fetch_add(&s->refs, 1);
        net_conn_set_context(conn, ss);
    } else if (net_conn_context(conn)) {
        session_unref(net_conn_context(conn));
        net_conn_set_context(conn, NULL);
    }
}

/* ---- life ------------------------------------------------------------------------ */

int net_rpc_server_new(net_loop_t *loop, const net_addr_t *addr,
                       const struct net_rpc_server_options *opt, net_rpc_server_t **out)
{
    if (!loop || !addr || !out)
        return -EINVAL;
    net_rpc_server_t *s = net__calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    atomic_init(&s->refs, 1);
    s->loop = loop;
    if (opt)
        s->opt = *opt;
    else
        net_rpc_server_options_init(&s->opt);
    if (!s->opt.max_frame)
        s->opt.max_frame = NET__RPC_DEFAULT_MAX_FRAME;
    struct net_conn_callbacks cbs = {.on_connection = on_connection, .on_message = on_message,
                                     .arg = s};
    int rc = net_server_new(loop, addr, &s->opt.server, &cbs, &s->tcp);
    if (rc == 0 && s->opt.worker_threads)
        rc = net__rpc_workers_start(s->opt.worker_threads, &s->workers);
    if (rc < 0) {
        net_server_free(s->tcp);
        net__free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int net_rpc_server_start(net_rpc_server_t *server)
{
    if (!server)
        return -EINVAL;
    server->started = true;
    return net_server_start(server->tcp);
}

const net_addr_t *net_rpc_server_addr(const net_rpc_server_t *server)
{
    return net_server_addr(server->tcp);
}

static void tcp_stopped(net_server_t *tcp, void *arg)
{
    (void)tcp;
    net_rpc_server_t *s = arg;
    if (s->done)
        s->done(s, s->done_arg);
}

/* Polls until the requests in flight are answered or the deadline passes,
 * then stops the TCP server (which closes the connections). */
static void stop_check(void *arg)
{
    net_rpc_server_t *s = arg;
    uint64_t now = net_now_ms();
    if (atomic_load(&s->in_flight) > 0 && now < s->drain_deadline)
        return;
    net_loop_cancel(s->loop, s->stop_timer);
    s->stop_timer = 0;
    uint64_t left = now < s->drain_deadline ? s->drain_deadline - now : 0;
    net_server_stop(s->tcp, left, tcp_stopped, s);
}

int net_rpc_server_stop(net_rpc_server_t *server, uint64_t drain_ms,
                        void (*done)(net_rpc_server_t *, void *), void *arg)
{
    if (!server)
        return -EINVAL;
    if (!net_loop_in_loop_thread(server->loop))
        return NET_EWRONGTHREAD;
    if (atomic_exchange(&server->stopping, true))
        return -EALREADY;
    server->done = done;
    server->done_arg = arg;
    server->drain_deadline = net_now_ms() + drain_ms;
    net_timer_id_t id = net_loop_run_every(server->loop, STOP_POLL_MS, stop_check, server);
    if (id < 0) {
        net_server_stop(server->tcp, drain_ms, tcp_stopped, server);
        return 0;
    }
    server->stop_timer = id;
    return 0;
}

int net_rpc_server_free(net_rpc_server_t *server)
{
    if (!server)
        return 0;
    int rc = net_server_free(server->tcp);
    if (rc < 0)
        return rc;
    if (server->stop_timer > 0)
        net_loop_cancel(server->loop, server->stop_timer);
    /* Blocking handlers still queued run now and reply into closed
     * connections: safe. */
    net__rpc_workers_stop(server->workers);
    server->workers = NULL;
    server_unref(server);
    return 0;
}
