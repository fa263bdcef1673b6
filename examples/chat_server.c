/* chat_server: a broadcast chat (after muduo's asio chat server).
 *
 *   chat_server [--listen HOST:PORT] [--threads N]
 *
 * Defaults: 127.0.0.1:2009, 0 I/O threads. Wire format, both ways: a message
 * is a 4-byte big-endian payload length followed by that many bytes
 * (0 .. 65536). Every message a client sends is relayed, framed the same way,
 * to every connected client, the sender included. A length over 64 KiB closes
 * that connection with one log line; so does a client that stops reading
 * until 4 MiB wait for it. Prints one line with the address it listens on;
 * SIGINT/SIGTERM stop it gracefully (a second to drain).
 *
 * Threads: with --threads N the clients live on N loops, so the set of
 * clients is shared. It is copy-on-write: a broadcast holds the lock only to
 * take a reference on the current snapshot and then sends outside it
 * (net_conn_send is thread-safe); a join or a leave copies the array under
 * the lock. Messages far outnumber joins, so the O(clients) copy is paid
 * where it is rare. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <net/log.h>
#include <net/loop.h>
#include <net/signal.h>
#include <net/tcp_server.h>

#include "parse_uint.h"

#define HEADER_LEN 4
#define MAX_PAYLOAD (64 * 1024)
#define SLOW_CLIENT_BYTES (4 * 1024 * 1024)

/* An immutable snapshot of the connected clients; it holds a reference on
 * each of them and is freed by its last user. */
struct members {
    atomic_int refs;
    size_t n;
    net_conn_t *conns[];
};

struct chat {
    net_loop_t *loop;
    net_server_t *server;
    pthread_mutex_t mu;
    struct members *members; /* the current snapshot, never NULL; under mu */
};

static struct members *members_new(size_t n)
{
    struct members *m = malloc(sizeof *m + n * sizeof m->conns[0]);
    if (m) {
        atomic_init(&m->refs, 1);
        m->n = 0;
    }
    return m;
}

static void members_unref(struct members *m)
{
    if (atomic_fetch_sub(&m->refs, 1) != 1)
        return;
    for (size_t i = 0; i < m->n; i++)
        net_conn_unref(m->conns[i]);
    free(m);
}

/* The current snapshot, with a reference the caller drops. */
static struct members *members_get(struct chat *chat)
{
    pthread_mutex_lock(&chat->mu);
    struct members *m = chat->members;
    atomic_fetch_add(&m->refs, 1);
    pthread_mutex_unlock(&chat->mu);
    return m;
}

/* Replaces the snapshot by a copy that adds `join` or drops `leave` (one of
 * them is NULL). Returns 0 or -1 when out of memory (nothing changes). */
static int members_update(struct chat *chat, net_conn_t *join, net_conn_t *leave)
{
    pthread_mutex_lock(&chat->mu);
    struct members *old = chat->members;
    struct members *m = members_new(old->n + (join ? 1 : 0));
    if (!m) {
        pthread_mutex_unlock(&chat->mu);
        return -1;
    }
    for (size_t i = 0; i < old->n; i++)
        if (old->conns[i] != leave)
            m->conns[m->n++] = net_conn_ref(old->conns[i]);
    if (join)
        m->conns[m->n++] = net_conn_ref(join);
    chat->members = m;
    pthread_mutex_unlock(&chat->mu);
    members_unref(old); /* broadcasts still using it keep it alive */
    return 0;
}

static void broadcast(struct chat *chat, const char *frame, size_t len)
{
    struct members *m = members_get(chat);
    for (size_t i = 0; i < m->n; i++)
        net_conn_send(m->conns[i], frame, len); /* -ENOTCONN: that one is leaving */
    members_unref(m);
}

static const char *peer_text(net_conn_t *conn, char *buf, size_t cap)
{
    if (net_addr_format(net_conn_peer_addr(conn), buf, cap) < 0)
        snprintf(buf, cap, "?");
    return buf;
}

/* Relays every complete frame in `in` as it came (header included). */
static void on_message(net_conn_t *conn, net_buf_t *in, uint64_t receive_ms, void *arg)
{
    (void)receive_ms;
    uint32_t len;
    while (net_buf_peek_u32(in, &len) == 0) {
        if (len > MAX_PAYLOAD) {
            char text[NET_ADDR_STRLEN];
            net_log(NET_LOG_WARN, "chat_server: %s sent length %u (max %d): closing",
                    peer_text(conn, text, sizeof text), len, MAX_PAYLOAD);
            net_buf_retrieve_all(in);
            net_conn_force_close(conn);
            return;
        }
        if (net_buf_readable(in) < HEADER_LEN + (size_t)len)
            return; /* the rest of the frame comes later */
        broadcast(arg, net_buf_peek(in), HEADER_LEN + (size_t)len);
        net_buf_retrieve(in, HEADER_LEN + (size_t)len);
    }
}

static void on_connection(net_conn_t *conn, void *arg)
{
    struct chat *chat = arg;
    char text[NET_ADDR_STRLEN];
    bool up = net_conn_connected(conn);
    net_log(NET_LOG_INFO, "chat_server: %s %s", peer_text(conn, text, sizeof text),
            up ? "joined" : "left");
    if (members_update(chat, up ? conn : NULL, up ? NULL : conn) == 0)
        return;
    /* FIXME: a leave that finds no memory leaves a closed connection in the
     * set (sends to it return -ENOTCONN); it goes with the next update. */
    net_log(NET_LOG_ERROR, "chat_server: out of memory updating the client set");
    if (up)
        net_conn_force_close(conn);
}

static void on_high_water(net_conn_t *conn, size_t queued, void *arg)
{
    (void)arg;
    char text[NET_ADDR_STRLEN];
    net_log(NET_LOG_WARN, "chat_server: %s is not reading (%zu bytes queued): closing",
            peer_text(conn, text, sizeof text), queued);
    net_conn_force_close(conn);
}

static void on_closed(net_server_t *server, void *arg)
{
    (void)server;
    net_loop_quit(arg);
}

static void on_signal(net_signal_t *sig, int signo, void *arg)
{
    (void)sig;
    struct chat *chat = arg;
    fprintf(stderr, "chat_server: signal %d, stopping\n", signo);
    /* A second signal finds the close under way (-EALREADY): it goes on. */
    net_server_close(chat->server, 1000, on_closed, chat->loop);
}

static int usage(void)
{
    fprintf(stderr, "usage: chat_server [--listen HOST:PORT] [--threads N]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:2009";
    struct net_server_options opt;
    net_server_options_init(&opt);
    opt.name = "chat";
    opt.conn.high_water_mark = SLOW_CLIENT_BYTES;
    uint64_t threads;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            listen = argv[++i];
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc &&
                 parse_uint(argv[++i], 0, 1024, &threads)) /* the loop pool's limit */
            opt.io_threads = (size_t)threads;
        else
            return usage();
    }
    net_addr_t addr;
    if (net_addr_parse(&addr, listen) < 0) {
        fprintf(stderr, "chat_server: bad address %s\n", listen);
        return 2;
    }
    struct chat chat = {.members = members_new(0)};
    if (!chat.members || pthread_mutex_init(&chat.mu, NULL) != 0) {
        fprintf(stderr, "chat_server: out of memory\n");
        return 1;
    }
    struct net_conn_callbacks cbs = {.on_connection = on_connection,
                                     .on_message = on_message,
                                     .on_high_water = on_high_water,
                                     .arg = &chat};
    static const int term[] = {SIGINT, SIGTERM};
    net_signal_t *sig;
    int rc;
    if ((rc = net_loop_new(&chat.loop)) < 0 ||
        (rc = net_signal_new(chat.loop, term, 2, on_signal, &chat, &sig)) < 0 ||
        (rc = net_server_new(chat.loop, &addr, &opt, &cbs, &chat.server)) < 0 ||
        (rc = net_server_start(chat.server)) < 0) {
        fprintf(stderr, "chat_server: %s: %s\n", listen, net_strerror(rc));
        return 1;
    }
    char text[NET_ADDR_STRLEN];
    net_addr_format(net_server_addr(chat.server), text, sizeof text);
    printf("chat_server listening on %s (%zu I/O threads)\n", text, opt.io_threads);
    fflush(stdout);
    net_loop_run(chat.loop); /* until on_closed: every client has left, the set is empty */
    net_signal_free(sig);
    net_loop_free(chat.loop);
    members_unref(chat.members);
    pthread_mutex_destroy(&chat.mu);
    return 0;
}
