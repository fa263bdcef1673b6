/* echo_client: sends messages to an echo server and checks every byte.
 *
 *   echo_client [--connect HOST:PORT] [--count N] [--size S]
 *
 * Defaults: 127.0.0.1:2007 (echo_server's default), N = 1000, S = 64.
 * Connects once with net_client (no retry), sends N messages of S bytes, each
 * filled with a pattern that depends on its index, and compares the echoed
 * stream byte for byte. Prints one summary line and exits 0; exits 1 on a
 * failed connect, a mismatch, or a connection that closes before the end. */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <net/loop.h>
#include <net/signal.h>
#include <net/tcp_client.h>

#include "parse_uint.h"

/* At most this many bytes are in flight: enough to keep the connection busy,
 * small enough that neither side queues much. */
#define WINDOW_BYTES (256 * 1024)

struct app {
    net_loop_t *loop;
    net_client_t *client;
    const char *target;
    unsigned long count; /* messages to send */
    size_t size;         /* bytes per message */
    unsigned long sent;  /* messages handed to net_conn_send */
    unsigned long long verified; /* echoed bytes checked so far */
    unsigned long window;        /* messages in flight at most */
    double start_s; /* CLOCK_MONOTONIC, seconds */
    bool done;
    int rc;
};

/* Byte k of message m: varies with both, so a lost, repeated or reordered
 * message shows up as a mismatch. */
static unsigned char pattern(unsigned long m, size_t k)
{
    return (unsigned char)(((uint32_t)m * 2654435761u >> 24) + k * 7u);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_closed(net_client_t *client, void *arg)
{
    (void)client;
    struct app *app = arg;
    net_loop_quit(app->loop);
}

/* Closes the client (allowed inside its callbacks); the loop ends once
 * the close is done. */
static void finish(struct app *app, int rc)
{
    if (app->done)
        return;
    app->done = true;
    app->rc = rc;
    net_client_close(app->client, 0, on_closed, app);
}

/* Tops the window up: builds the next messages into one buffer, one send. */
static void fill(struct app *app, net_conn_t *conn)
{
    unsigned long acked = (unsigned long)(app->verified / app->size);
    net_buf_t out = NET_BUF_INIT;
    while (app->sent < app->count && app->sent - acked < app->window) {
        if (net_buf_ensure_writable(&out, app->size) < 0)
            break;
        char *p = net_buf_begin_write(&out);
        for (size_t k = 0; k < app->size; k++)
            p[k] = (char)pattern(app->sent, k);
        net_buf_has_written(&out, app->size);
        app->sent++;
    }
    int rc = net_conn_send_buf(conn, &out);
    net_buf_destroy(&out);
    if (rc < 0) {
        fprintf(stderr, "echo_client: send: %s\n", net_strerror(rc));
        finish(app, 1);
    }
}

/* Checks the echoed bytes in `in` against the pattern, a message piece at a
 * time, and consumes them. */
static bool verify(struct app *app, net_buf_t *in)
{
    const unsigned char *p = (const unsigned char *)net_buf_peek(in);
    size_t n = net_buf_readable(in);
    for (size_t i = 0; i < n;) {
        unsigned long m = (unsigned long)(app->verified / app->size);
        size_t k = (size_t)(app->verified % app->size);
        if (m >= app->sent) {
            fprintf(stderr, "echo_client: %zu bytes more than were sent\n", n - i);
            return false;
        }
        size_t piece = app->size - k < n - i ? app->size - k : n - i;
        for (size_t j = 0; j < piece; j++) {
            if (p[i + j] != pattern(m, k + j)) {
                fprintf(stderr, "echo_client: mismatch at byte %llu (message %lu, offset %zu)\n",
                        app->verified + j, m, k + j);
                return false;
            }
        }
        i += piece;
        app->verified += piece;
    }
    net_buf_retrieve_all(in);
    return true;
}

static void on_message(net_conn_t *conn, net_buf_t *in, uint64_t receive_ms, void *arg)
{
    struct app *app = arg;
    if (app->done) {
        net_buf_retrieve_all(in);
        return;
    }
    if (!verify(app, in)) {
        finish(app, 1);
        return;
    }
    if (app->verified < (unsigned long long)app->count * app->size) {
        fill(app, conn);
        return;
    }
    (void)receive_ms; /* milliseconds: too coarse for a short run */
    double s = now_s() - app->start_s;
    printf("echo_client: %lu messages of %zu bytes echoed byte-exact by %s in %.3f s "
           "(%.0f msgs/s)\n",
           app->count, app->size, app->target, s, (double)app->count / s);
    finish(app, 0);
}

static void on_connection(net_conn_t *conn, void *arg)
{
    struct app *app = arg;
    if (net_conn_connected(conn)) {
        app->start_s = now_s();
        fill(app, conn);
    } else if (!app->done) {
        fprintf(stderr, "echo_client: connection closed after %llu of %llu bytes\n",
                app->verified, (unsigned long long)app->count * app->size);
        finish(app, 1);
    }
}

static void on_failed(net_client_t *client, int err, bool will_retry, void *arg)
{
    (void)client;
    (void)will_retry; /* retry is off: this is the only attempt */
    struct app *app = arg;
    fprintf(stderr, "echo_client: connect to %s: %s\n", app->target, net_strerror(err));
    finish(app, 1);
}

static void on_signal(net_signal_t *sig, int signo, void *arg)
{
    (void)sig;
    fprintf(stderr, "echo_client: signal %d, giving up\n", signo);
    finish(arg, 1);
}

static int usage(void)
{
    fprintf(stderr, "usage: echo_client [--connect HOST:PORT] [--count N] [--size S]\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct app app = {.target = "127.0.0.1:2007", .count = 1000, .size = 64};
    uint64_t n;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--connect") == 0 && i + 1 < argc)
            app.target = argv[++i];
        /* The bounds keep count * size, the bytes to verify, within 64 bits. */
        else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc &&
                 parse_uint(argv[++i], 1, UINT32_MAX, &n))
            app.count = (unsigned long)n;
        else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc &&
                 parse_uint(argv[++i], 1, 1u << 30, &n))
            app.size = (size_t)n;
        else
            return usage();
    }
    app.window = app.size >= WINDOW_BYTES ? 1 : WINDOW_BYTES / app.size;
    net_addr_t addr;
    if (net_addr_parse(&addr, app.target) < 0) {
        fprintf(stderr, "echo_client: bad address %s\n", app.target);
        return 2;
    }
    struct net_client_options opt;
    net_client_options_init(&opt); /* retry and reconnect are off by default */
    struct net_conn_callbacks cbs = {
        .on_connection = on_connection, .on_message = on_message, .arg = &app};
    static const int term[] = {SIGINT, SIGTERM};
    net_signal_t *sig;
    int rc;
    if ((rc = net_loop_new(&app.loop)) < 0 ||
        (rc = net_signal_new(app.loop, term, 2, on_signal, &app, &sig)) < 0 ||
        (rc = net_client_new(app.loop, &addr, &opt, &cbs, on_failed, &app, &app.client)) < 0 ||
        (rc = net_client_connect(app.client)) < 0) {
        fprintf(stderr, "echo_client: %s: %s\n", app.target, net_strerror(rc));
        return 1;
    }
    net_loop_run(app.loop); /* until on_closed; the down callback sees app.done */
    net_signal_free(sig);
    net_loop_free(app.loop);
    return app.rc;
}
