/* tcp_proxy: relays every byte both ways between each client and its own
 * connection to the upstream.
 *
 *   tcp_proxy --listen HOST:PORT --upstream HOST:PORT [--threads N]
 *
 * Backpressure: when one side's output passes HIGH_WATER the other side stops
 * reading until that output is written, so a slow reader costs the proxy
 * about HIGH_WATER per direction. Half-close: a FIN is passed on after the
 * bytes before it, and the other direction goes on. A close or reset of one
 * side closes the other once that has written what it holds. Prints one line
 * with the address it listens on; SIGINT/SIGTERM stop it gracefully: clients
 * get a second, then what is left of each pair is closed on its loop (the
 * server's thread_exit). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <net/signal.h>
#include <net/tcp_client.h>
#include <net/tcp_server.h>

#include "parse_uint.h"

#define HIGH_WATER (1024 * 1024)
/* A side whose partner is gone gets this long to write what it holds: a peer
 * that never reads must not keep the pair forever. */
#define DRAIN_MS 10000

struct proxy {
    net_loop_t *loop;
    net_addr_t upstream;
    struct net_client_options client_opt;
    bool closed; /* the server's close is done */
};

/* Side 0 is the client's connection, side 1 the upstream's. The upstream
 * connection is made on the client connection's loop, so a pair lives on one
 * thread: every callback below runs there and the pair needs no lock. */
struct pair {
    struct pair *prev, *next; /* this loop's pairs (loop_pairs) */
    net_client_t *client; /* makes conn[1] */
    net_conn_t *conn[2];  /* with a reference; NULL until up */
    bool paused[2];       /* conn[i] is not read: conn[!i] is backed up */
    bool orphan[2];       /* conn[!i] is gone: conn[i] closes once drained */
    int live;             /* sides not finished; the pair goes at 0 */
};

/* The pairs of the calling thread's loop: the server's thread_exit closes
 * what is left of them when the proxy stops. */
static _Thread_local struct pair *loop_pairs;

static void pairs_link(struct pair *p)
{
    p->next = loop_pairs;
    if (loop_pairs)
        loop_pairs->prev = p;
    loop_pairs = p;
}

static void pairs_unlink(struct pair *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        loop_pairs = p->next;
    if (p->next)
        p->next->prev = p->prev;
}

static int side(const struct pair *p, const net_conn_t *conn)
{
    return conn == p->conn[1];
}

/* The client's close is done: nothing of the pair can run any more. */
static void pair_free(net_client_t *client, void *arg)
{
    (void)client;
    struct pair *p = arg;
    pairs_unlink(p);
    net_conn_unref(p->conn[0]);
    net_conn_unref(p->conn[1]);
    free(p);
}

/* Closes the upstream client (allowed inside its callbacks); a second
 * close of the same pair returns -EALREADY and changes nothing. */
static void pair_close(struct pair *p)
{
    net_client_close(p->client, 0, pair_free, p);
}

static void pair_release(struct pair *p)
{
    if (--p->live == 0)
        pair_close(p);
}

static void set_paused(struct pair *p, int i, bool on)
{
    if (p->paused[i] != on)
        (on ? net_conn_stop_read : net_conn_start_read)(p->conn[i]);
    p->paused[i] = on;
}

static void close_if_drained(net_conn_t *conn)
{
    struct net_conn_stats st;
    net_conn_stats(conn, &st);
    if (st.output_queued == 0)
        net_conn_force_close(conn);
}

/* Side i went down. Nothing more will come for the other, and what the
 * other's peer sends has nowhere to go (left unread, it makes the close a
 * reset, which tells that peer so). */
static void side_down(struct pair *p, int i)
{
    net_conn_t *other = p->conn[!i];
    if (other) {
        p->orphan[!i] = true;
        set_paused(p, !i, true);
        net_conn_force_close_after(other, DRAIN_MS);
        close_if_drained(other);
    } else { /* still connecting: the failure callback (cancelled) ends side 1 */
        net_client_disconnect(p->client);
    }
    pair_release(p);
}

static void on_message(net_conn_t *conn, net_buf_t *in, uint64_t receive_ms, void *arg)
{
    (void)receive_ms, (void)arg;
    struct pair *p = net_conn_context(conn);
    net_conn_t *to = p->conn[!side(p, conn)];
    int rc = net_conn_send_buf(to, in);
    if (rc < 0)
        net_buf_retrieve_all(in); /* -ENOTCONN: `to` is closing, and so is conn */
    if (rc < 0 && rc != -ENOTCONN)
        net_conn_force_close(to); /* a hole in the stream: end the pair */
}

static void on_high_water(net_conn_t *conn, size_t queued, void *arg)
{
    (void)queued, (void)arg;
    struct pair *p = net_conn_context(conn);
    set_paused(p, !side(p, conn), true);
}

/* Queued on the loop after the high-water callback of the same backlog, so
 * every pause is followed by its resume. */
static void on_write_complete(net_conn_t *conn, void *arg)
{
    (void)arg;
    struct pair *p = net_conn_context(conn);
    int i = side(p, conn);
    if (p->orphan[i])
        close_if_drained(conn);
    else
        set_paused(p, !i, false);
}

static void on_peer_eof(net_conn_t *conn, void *arg)
{
    (void)arg;
    struct pair *p = net_conn_context(conn);
    net_conn_shutdown(p->conn[!side(p, conn)]); /* FIN after the queued bytes */
}

static const struct net_conn_callbacks relay = {.on_message = on_message,
                                                .on_write_complete = on_write_complete,
                                                .on_high_water = on_high_water,
                                                .on_peer_eof = on_peer_eof};

static void on_upstream_connection(net_conn_t *conn, void *arg)
{
    struct pair *p = arg;
    if (!net_conn_connected(conn)) {
        side_down(p, 1);
        return;
    }
    p->conn[1] = net_conn_ref(conn);
    net_conn_set_context(conn, p);
    set_paused(p, 0, false);
}

static void on_upstream_failed(net_client_t *client, int err, bool will_retry, void *arg)
{
    /* Retry is off: this is the end of side 1. The library logs the reason. */
    (void)client, (void)err, (void)will_retry;
    struct pair *p = arg;
    net_conn_force_close(p->conn[0]);
    pair_release(p);
}

static void on_client_connection(net_conn_t *conn, void *arg)
{
    struct proxy *px = arg;
    struct pair *p = net_conn_context(conn);
    if (!net_conn_connected(conn)) {
        if (p)
            side_down(p, 0);
        return;
    }
    if (!(p = malloc(sizeof *p))) {
        net_conn_force_close(conn);
        return;
    }
    *p = (struct pair){.conn[0] = net_conn_ref(conn), .live = 2};
    net_conn_set_context(conn, p);
    set_paused(p, 0, true); /* until the upstream is up */
    struct net_conn_callbacks cbs = relay;
    cbs.on_connection = on_upstream_connection;
    cbs.arg = p;
    if (net_client_new(net_conn_loop(conn), &px->upstream, &px->client_opt, &cbs,
                       on_upstream_failed, p, &p->client) == 0) {
        pairs_link(p);
        net_client_connect(p->client);
    } else {
        net_conn_set_context(conn, NULL);
        net_conn_unref(p->conn[0]);
        free(p);
        net_conn_force_close(conn);
    }
}

/* The server's connections on this loop are gone: each pair left has one
 * side, an upstream still writing what it holds (or connecting). It is cut
 * now, since the loop stops after this; the clients' done callbacks run
 * before the server's. */
static void close_loop_pairs(net_loop_t *loop, void *arg)
{
    (void)loop, (void)arg;
    for (struct pair *p = loop_pairs; p; p = p->next)
        pair_close(p); /* done comes later: the list stays as it is now */
}

static void on_closed(net_server_t *server, void *arg)
{
    (void)server;
    struct proxy *px = arg;
    px->closed = true;
    net_loop_quit(px->loop);
}

int main(int argc, char **argv)
{
    static struct proxy px;
    const char *listen = NULL, *upstream = NULL;
    uint64_t threads = 0;
    struct net_server_options opt;
    net_server_options_init(&opt);
    opt.name = "proxy";
    bool ok = argc % 2 == 1; /* options come in pairs */
    for (int i = 1; ok && i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--listen") == 0)
            listen = argv[i + 1];
        else if (strcmp(argv[i], "--upstream") == 0)
            upstream = argv[i + 1];
        else if (strcmp(argv[i], "--threads") == 0)
            ok = parse_uint(argv[i + 1], 0, 1024, &threads); /* the loop pool's limit */
        else
            ok = false;
    }
    net_addr_t addr;
    if (!ok || !listen || !upstream || net_addr_parse(&addr, listen) < 0 ||
        net_addr_parse(&px.upstream, upstream) < 0) {
        fprintf(stderr, "usage: tcp_proxy --listen HOST:PORT --upstream HOST:PORT [--threads N]\n");
        return 2;
    }
    opt.io_threads = (size_t)threads;
    opt.conn.half_close = true; /* a FIN is passed on, not a reason to close */
    opt.conn.high_water_mark = HIGH_WATER;
    opt.thread_exit = close_loop_pairs;
    net_client_options_init(&px.client_opt);
    px.client_opt.conn = opt.conn;
    struct net_conn_callbacks cbs = relay;
    cbs.on_connection = on_client_connection;
    cbs.arg = &px;
    net_server_t *server;
    net_signal_t *sig;
    int rc;
    if ((rc = net_loop_new(&px.loop)) < 0 || (rc = net_signal_quit_on_term(px.loop, &sig)) < 0 ||
        (rc = net_server_new(px.loop, &addr, &opt, &cbs, &server)) < 0 ||
        (rc = net_server_start(server)) < 0) {
        fprintf(stderr, "tcp_proxy: %s: %s\n", listen, net_strerror(rc));
        return 1;
    }
    char text[NET_ADDR_STRLEN];
    net_addr_format(net_server_addr(server), text, sizeof text);
    printf("tcp_proxy listening on %s, upstream %s\n", text, upstream);
    fflush(stdout);
    net_loop_run(px.loop); /* until SIGINT/SIGTERM */
    fprintf(stderr, "tcp_proxy: stopping\n");
    /* Clients get a second to finish; then close_loop_pairs cuts what is
     * left on each loop, and on_closed quits once every pair is gone. */
    net_server_close(server, 1000, on_closed, &px);
    net_loop_run(px.loop);
    if (!px.closed)
        return 1; /* a second signal cut the close short: leave at once */
    net_signal_free(sig);
    net_loop_free(px.loop);
    return 0;
}
