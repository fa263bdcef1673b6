/* rpc_server: an RPC server with four methods, answering NRPC/1 and brpc's
 * baidu_std on the same port (each connection's first bytes choose).
 *
 *   rpc_server [--listen HOST:PORT] [--threads N]
 *
 * Defaults 127.0.0.1:2008 and 0 I/O threads (N: 0..1024).
 *   example.EchoService.Echo  brpc's echo example (example/echo_c++): the
 *          body is an EchoRequest { required string message = 1; }, the
 *          reply an EchoResponse with the same message, and the request's
 *          attachment comes back as the reply's; so brpc's echo_client and
 *          mt_echo_client can call this server
 *   echo   replies with the request body
 *   sleep  the body is a decimal number of milliseconds (ASCII); replies with
 *          an empty body after that long, from a timer: the loop is not
 *          blocked, so later requests overtake a sleeping one
 *   sleepers replies with the number of requests sleeping now, in decimal
 *          (a script can wait for its sleeps to be under way)
 * SIGINT/SIGTERM close it gracefully: every sleeping request is answered
 * SHUTTING_DOWN ("server stopped") at once, later requests get SHUTTING_DOWN
 * too, and the connections have a second to flush those replies and close. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <net/rpc.h>
#include <net/signal.h>

#include "parse_uint.h"

static void echo(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    net_rpc_reply(req, NET_RPC_OK, body, len);
}

/* ---- example.EchoService.Echo: protobuf by hand ------------------------------ */

/* One base-128 varint at *p (below end); false when truncated or over 10
 * bytes. */
static bool pb_varint(const unsigned char **p, const unsigned char *end, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 70 && *p < end; shift += 7) {
        unsigned char b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

/* Skips a field's value of wire type `wire`; false when malformed. */
static bool pb_skip(const unsigned char **p, const unsigned char *end, unsigned wire)
{
    uint64_t v;
    size_t fixed = wire == 1 ? 8 : wire == 5 ? 4 : 0;
    if (wire == 0)
        return pb_varint(p, end, &v);
    if (wire == 2) {
        if (!pb_varint(p, end, &v) || v > (uint64_t)(end - *p))
            return false;
        fixed = (size_t)v;
    } else if (!fixed) {
        return false; /* groups (3, 4) and the undefined 6, 7 */
    }
    if (fixed > (size_t)(end - *p))
        return false;
    *p += fixed;
    return true;
}

/* Field 1 (a string) of a message; the last one wins, as in protobuf. */
static bool pb_message_field(const void *body, size_t len, const unsigned char **msg,
                             size_t *msg_len)
{
    const unsigned char *p = body, *end = p + len;
    bool found = false;
    uint64_t key, n;
    while (p < end) {
        if (!pb_varint(&p, end, &key))
            return false;
        if (key != (1u << 3 | 2)) {
            if (!pb_skip(&p, end, (unsigned)(key & 7)))
                return false;
            continue;
        }
        if (!pb_varint(&p, end, &n) || n > (uint64_t)(end - p))
            return false;
        *msg = p, *msg_len = (size_t)n, found = true;
        p += n;
    }
    return found;
}

/* EchoResponse { message = 1 } is the same bytes as a minimal EchoRequest:
 * key 0x0a, the length as a varint, the message. */
static void echo_service_echo(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    static const char bad[] = "EchoRequest: malformed, or no message";
    const unsigned char *msg = NULL;
    size_t msg_len = 0, att_len;
    if (!pb_message_field(body, len, &msg, &msg_len)) {
        net_rpc_reply(req, NET_RPC_BAD_REQUEST, bad, sizeof bad - 1);
        return;
    }
    unsigned char *out = malloc(msg_len + 11);
    if (!out) {
        net_rpc_reply(req, NET_RPC_INTERNAL, "out of memory", 13);
        return;
    }
    size_t n = 0;
    out[n++] = 0x0a;
    for (uint64_t v = msg_len; ; v >>= 7) {
        out[n++] = (unsigned char)(v & 0x7f) | (v > 0x7f ? 0x80 : 0);
        if (v <= 0x7f)
            break;
    }
    memcpy(out + n, msg, msg_len);
    const void *att = net_rpc_req_attachment(req, &att_len);
    net_rpc_reply_with_attachment(req, NET_RPC_OK, out, n + msg_len, att, att_len);
    free(out);
}

/* ---- sleep ------------------------------------------------------------------ */

/* Sleeping requests, so that a close can answer those whose timers have not
 * fired: a client should hear SHUTTING_DOWN, not wait for a sleep the server
 * will never finish. Replies are thread-safe; the list is shared by the I/O
 * loops, hence the lock. */
struct sleeper {
    struct sleeper *prev, *next;
    net_rpc_req_t *req;
    net_loop_t *loop;
    net_timer_id_t timer;
};
static struct sleeper *sleepers;
static pthread_mutex_t sleepers_mu = PTHREAD_MUTEX_INITIALIZER;
/* Set, under the lock, by the close: an I/O loop may be dispatching a sleep
 * right then, before the server refuses requests itself; such a sleep is
 * answered at once rather than left to be cut off by the close. */
static bool sleepers_closed;

static void sleeper_unlink(struct sleeper *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        sleepers = s->next;
    if (s->next)
        s->next->prev = s->prev;
}

static void wake(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    struct sleeper *s = arg;
    pthread_mutex_lock(&sleepers_mu);
    sleeper_unlink(s);
    pthread_mutex_unlock(&sleepers_mu);
    net_rpc_reply(s->req, NET_RPC_OK, NULL, 0);
    free(s);
}

/* Answers every request still sleeping, and every later one. Called at the
 * start of the close, while the connections are still open: the replies are
 * queued on them, and the close's drain flushes them before the end. A
 * timer that cannot be cancelled is firing right now: its wake() owns the
 * sleeper and waits for the lock we hold. */
static void wake_all_shutting_down(void)
{
    pthread_mutex_lock(&sleepers_mu);
    sleepers_closed = true;
    for (struct sleeper *s = sleepers, *next; s; s = next) {
        next = s->next;
        if (net_timer_cancel(s->loop, s->timer) < 0)
            continue;
        sleeper_unlink(s);
        net_rpc_reply(s->req, NET_RPC_SHUTTING_DOWN, "server stopped", 14);
        free(s);
    }
    pthread_mutex_unlock(&sleepers_mu);
}

/* Parses the whole body as a decimal count of milliseconds (the body is not
 * NUL-terminated, hence not parse_uint). */
static bool parse_ms(const char *p, size_t len, uint64_t *out)
{
    if (len == 0 || len > 9)
        return false; /* at most ~11 days */
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return true;
}

static void sleep_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    uint64_t ms;
    static const char bad[] = "sleep: the body must be a decimal number of milliseconds";
    if (!parse_ms(body, len, &ms)) {
        net_rpc_reply(req, NET_RPC_BAD_REQUEST, bad, sizeof bad - 1);
        return;
    }
    /* A timer on the request's own I/O loop: the reply then leaves from the
     * thread that owns the connection. */
    struct sleeper *sl = malloc(sizeof *sl);
    if (!sl) {
        net_rpc_reply(req, NET_RPC_INTERNAL, "out of memory", 13);
        return;
    }
    *sl = (struct sleeper){.req = req, .loop = net_conn_loop(net_rpc_req_conn(req))};
    pthread_mutex_lock(&sleepers_mu);
    if (sleepers_closed) {
        pthread_mutex_unlock(&sleepers_mu);
        net_rpc_reply(req, NET_RPC_SHUTTING_DOWN, "server stopped", 14);
        free(sl);
        return;
    }
    sl->next = sleepers;
    if (sleepers)
        sleepers->prev = sl;
    sleepers = sl;
    sl->timer = net_loop_run_after(sl->loop, ms, wake, sl);
    if (sl->timer < 0) {
        sleeper_unlink(sl);
        pthread_mutex_unlock(&sleepers_mu);
        net_rpc_reply(req, NET_RPC_INTERNAL, "no timer", 8);
        free(sl);
        return;
    }
    pthread_mutex_unlock(&sleepers_mu);
}

static void sleepers_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)body, (void)len, (void)arg;
    size_t n = 0;
    pthread_mutex_lock(&sleepers_mu);
    for (const struct sleeper *s = sleepers; s; s = s->next)
        n++; /* asked for rarely: not worth a counter on every sleep */
    pthread_mutex_unlock(&sleepers_mu);
    char text[24];
    int tl = snprintf(text, sizeof text, "%zu", n);
    net_rpc_reply(req, NET_RPC_OK, text, (size_t)tl);
}

struct app {
    net_loop_t *loop;
    net_rpc_server_t *server;
};

/* The close's done: the server is gone once this returns. */
static void closed(net_rpc_server_t *server, void *arg)
{
    (void)server;
    net_loop_quit(arg);
}

static void on_signal(net_signal_t *sig, int signo, void *arg)
{
    (void)sig;
    struct app *app = arg;
    fprintf(stderr, "rpc_server: signal %d, stopping\n", signo);
    /* Answers first, close second: the close waits (up to the drain) for no
     * request in flight, then half-closes each connection once its output
     * is written, so these replies still reach their clients. Answered
     * after the close had ended the connections, they would be dropped.
     * A second signal finds the close under way (-EALREADY). */
    wake_all_shutting_down();
    net_rpc_server_close(app->server, 1000, closed, app->loop);
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:2008";
    struct net_rpc_server_options opt;
    net_rpc_server_options_init(&opt);
    uint64_t threads;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            listen = argv[++i];
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc &&
                 parse_uint(argv[++i], 0, 1024, &threads)) /* the loop pool's limit */
            opt.server.io_threads = (size_t)threads;
        else {
            bool help = strcmp(argv[i], "--help") == 0;
            fprintf(help ? stdout : stderr,
                    "usage: rpc_server [--listen HOST:PORT] [--threads N]\n"
                    "  answers NRPC/1 and baidu_std on one port; methods: echo, sleep,\n"
                    "  sleepers, example.EchoService.Echo (brpc's echo example)\n");
            return help ? 0 : 2;
        }
    }
    net_addr_t addr;
    if (net_addr_parse(&addr, listen) < 0) {
        fprintf(stderr, "rpc_server: bad address %s\n", listen);
        return 2;
    }
    struct app app;
    net_signal_t *sig;
    static const int term[] = {SIGINT, SIGTERM};
    int rc;
    if ((rc = net_loop_new(&app.loop)) < 0 ||
        (rc = net_signal_new(app.loop, term, 2, on_signal, &app, &sig)) < 0 ||
        (rc = net_rpc_server_new(app.loop, &addr, &opt, &app.server)) < 0 ||
        (rc = net_rpc_server_register(app.server, "echo", echo, NULL, false)) < 0 ||
        (rc = net_rpc_server_register(app.server, "example.EchoService.Echo", echo_service_echo,
                                      NULL, false)) < 0 ||
        (rc = net_rpc_server_register(app.server, "sleep", sleep_method, app.loop, false)) < 0 ||
        (rc = net_rpc_server_register(app.server, "sleepers", sleepers_method, NULL, false)) < 0 ||
        (rc = net_rpc_server_start(app.server)) < 0) {
        fprintf(stderr, "rpc_server: %s: %s\n", listen, net_strerror(rc));
        return 1;
    }
    char text[NET_ADDR_STRLEN];
    net_addr_format(net_rpc_server_addr(app.server), text, sizeof text);
    printf("rpc_server listening on %s (%zu I/O threads)\n", text, opt.server.io_threads);
    fflush(stdout);
    net_loop_run(app.loop);
    /* The close answered every sleeper; this is a backstop only, since a
     * request never answered would keep its connection's memory (a reply
     * after the close's done is a safe no-op that frees it). */
    wake_all_shutting_down();
    net_signal_free(sig);
    net_loop_free(app.loop);
    return 0;
}
