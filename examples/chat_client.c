/* chat_client: a line-oriented client for chat_server.
 *
 *   chat_client [--connect HOST:PORT]
 *
 * Default 127.0.0.1:2009. Each line read from stdin (without its newline) is
 * sent as one message: a 4-byte big-endian length, then the bytes. Each
 * message received is printed as one line on stdout. At the end of stdin the
 * client half-closes, prints what the server still relays, and exits 0 once
 * the server closes; a failed connect or a connection lost before the end of
 * stdin exits 1. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <net/loop.h>
#include <net/signal.h>
#include <net/tcp_client.h>

#define HEADER_LEN 4
#define MAX_PAYLOAD (64 * 1024)

struct app {
    net_loop_t *loop;
    const char *target;
    net_client_t *client;
    net_conn_t *conn;     /* set while connected (the client holds it) */
    net_watch_t *stdin_w; /* stdin, while connected and not at its end */
    net_buf_t line;       /* stdin bytes not yet ending in a newline */
    bool stdin_done;
    int rc;
};

static void send_message(struct app *app, const char *p, size_t len)
{
    if (len > MAX_PAYLOAD) {
        fprintf(stderr, "chat_client: line of %zu bytes is over %d: not sent\n", len,
                MAX_PAYLOAD);
        return;
    }
    net_buf_t msg = NET_BUF_INIT;
    if (net_buf_append_u32(&msg, (uint32_t)len) == 0 && net_buf_append(&msg, p, len) == 0)
        net_conn_send_buf(app->conn, &msg);
    net_buf_destroy(&msg);
}

/* Sends every complete line in app->line; with `all`, the unterminated tail too. */
static void send_lines(struct app *app, bool all)
{
    const char *eol;
    while ((eol = net_buf_find_eol(&app->line)) != NULL) {
        send_message(app, net_buf_peek(&app->line), (size_t)(eol - net_buf_peek(&app->line)));
        net_buf_retrieve_until(&app->line, eol + 1);
    }
    if (all && net_buf_readable(&app->line) > 0) {
        send_message(app, net_buf_peek(&app->line), net_buf_readable(&app->line));
        net_buf_retrieve_all(&app->line);
    }
}

static void stdin_ended(struct app *app)
{
    send_lines(app, true);
    app->stdin_done = true;
    net_client_disconnect(app->client); /* after the queued output: then EOF */
}

static void on_stdin(net_watch_t *w, int fd, unsigned events, void *arg)
{
    (void)events;
    struct app *app = arg;
    ssize_t n = net_buf_read_fd(&app->line, fd);
    if (n == -EAGAIN || n == -EINTR)
        return;
    if (n > 0) {
        send_lines(app, false);
        return;
    }
    net_watch_free(w);
    app->stdin_w = NULL;
    stdin_ended(app);
}

/* stdin a regular file (epoll refuses those): read it all now. */
static void read_stdin_file(struct app *app)
{
    while (net_buf_read_fd(&app->line, STDIN_FILENO) > 0)
        send_lines(app, false);
    stdin_ended(app);
}

static void on_message(net_conn_t *conn, net_buf_t *in, uint64_t receive_ms, void *arg)
{
    (void)receive_ms;
    (void)arg;
    uint32_t len;
    while (net_buf_peek_u32(in, &len) == 0) {
        if (len > MAX_PAYLOAD) {
            fprintf(stderr, "chat_client: server sent length %u: closing\n", len);
            net_buf_retrieve_all(in);
            net_conn_force_close(conn);
            return;
        }
        if (net_buf_readable(in) < HEADER_LEN + (size_t)len)
            return;
        fwrite(net_buf_peek(in) + HEADER_LEN, 1, len, stdout);
        putchar('\n');
        net_buf_retrieve(in, HEADER_LEN + (size_t)len);
    }
    fflush(stdout);
}

static void on_closed(net_client_t *client, void *arg)
{
    (void)client;
    struct app *app = arg;
    net_loop_quit(app->loop);
}

/* Closes the client (allowed inside its callbacks; a second close returns
 * -EALREADY and changes nothing); the loop ends once it is done. */
static void finish(struct app *app)
{
    net_client_close(app->client, 0, on_closed, app);
}

static void on_connection(net_conn_t *conn, void *arg)
{
    struct app *app = arg;
    if (net_conn_connected(conn)) {
        app->conn = conn;
        fprintf(stderr, "chat_client: connected to %s\n", app->target);
        int rc = net_watch_new(app->loop, STDIN_FILENO, NET_READABLE, on_stdin, app,
                               &app->stdin_w);
        if (rc == -EPERM)
            read_stdin_file(app);
        else if (rc < 0)
            fprintf(stderr, "chat_client: cannot watch stdin: %s\n", net_strerror(rc));
        return;
    }
    app->conn = NULL;
    if (app->stdin_w) {
        net_watch_free(app->stdin_w);
        app->stdin_w = NULL;
    }
    if (!app->stdin_done) {
        fprintf(stderr, "chat_client: connection to %s lost\n", app->target);
        app->rc = 1;
    }
    finish(app);
}

static void on_failed(net_client_t *client, int err, bool will_retry, void *arg)
{
    (void)client;
    (void)will_retry;
    struct app *app = arg;
    if (err != NET_ECANCELLED) { /* cancelled: a signal closed us while connecting */
        fprintf(stderr, "chat_client: connect to %s: %s\n", app->target, net_strerror(err));
        app->rc = 1;
    }
    finish(app);
}

static void on_signal(net_signal_t *sig, int signo, void *arg)
{
    (void)sig;
    (void)signo;
    struct app *app = arg;
    app->stdin_done = true; /* a quiet exit, not a lost connection */
    finish(app);
}

int main(int argc, char **argv)
{
    struct app app = {.target = "127.0.0.1:2009"};
    if (argc == 3 && strcmp(argv[1], "--connect") == 0) {
        app.target = argv[2];
    } else if (argc != 1) {
        fprintf(stderr, "usage: chat_client [--connect HOST:PORT]\n");
        return 2;
    }
    net_addr_t addr;
    if (net_addr_parse(&addr, app.target) < 0) {
        fprintf(stderr, "chat_client: bad address %s\n", app.target);
        return 2;
    }
    struct net_conn_callbacks cbs = {
        .on_connection = on_connection, .on_message = on_message, .arg = &app};
    static const int term[] = {SIGINT, SIGTERM};
    net_signal_t *sig;
    int rc;
    if ((rc = net_loop_new(&app.loop)) < 0 ||
        (rc = net_signal_new(app.loop, term, 2, on_signal, &app, &sig)) < 0 ||
        (rc = net_client_new(app.loop, &addr, NULL, &cbs, on_failed, &app, &app.client)) < 0 ||
        (rc = net_client_connect(app.client)) < 0) {
        fprintf(stderr, "chat_client: %s: %s\n", app.target, net_strerror(rc));
        return 1;
    }
    net_loop_run(app.loop); /* until on_closed: the client is gone */
    if (app.stdin_w)
        net_watch_free(app.stdin_w);
    app.stdin_w = NULL;
    net_signal_free(sig);
    net_loop_free(app.loop);
    net_buf_destroy(&app.line);
    return app.rc;
}
