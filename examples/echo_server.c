/* echo_server: the main example. Echoes every byte back.
 *
 *   echo_server [--listen HOST:PORT] [--threads N]
 *
 * Defaults: 127.0.0.1:2007, 0 I/O threads (everything on one loop). Prints
 * one line with the address it listens on; SIGINT/SIGTERM stop it gracefully
 * (connections get up to a second to drain). */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <net/loop.h>
#include <net/signal.h>
#include <net/tcp_server.h>

#include "parse_uint.h"

static void on_message(net_conn_t *conn, net_buf_t *in, uint64_t receive_ms, void *arg)
{
    (void)receive_ms;
    (void)arg;
    /* Consumes the buffer on success; on failure the connection is closing. */
    if (net_conn_send_buf(conn, in) < 0)
        net_buf_retrieve_all(in);
}

static void on_closed(net_server_t *server, void *arg)
{
    (void)server;
    net_loop_quit(arg);
}

struct app {
    net_loop_t *loop;
    net_server_t *server;
};

static void on_signal(net_signal_t *sig, int signo, void *arg)
{
    (void)sig;
    struct app *app = arg;
    fprintf(stderr, "echo_server: signal %d, stopping\n", signo);
    /* A second signal finds the close under way (-EALREADY): it goes on. */
    net_server_close(app->server, 1000, on_closed, app->loop);
}

static int usage(void)
{
    fprintf(stderr, "usage: echo_server [--listen HOST:PORT] [--threads N]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:2007";
    struct net_server_options opt;
    net_server_options_init(&opt);
    opt.name = "echo";
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
        fprintf(stderr, "echo_server: bad address %s\n", listen);
        return 2;
    }
    struct app app;
    net_signal_t *sig;
    struct net_conn_callbacks cbs = {.on_message = on_message};
    int rc;
    static const int term[] = {SIGINT, SIGTERM};
    if ((rc = net_loop_new(&app.loop)) < 0 ||
        (rc = net_signal_new(app.loop, term, 2, on_signal, &app, &sig)) < 0 ||
        (rc = net_server_new(app.loop, &addr, &opt, &cbs, &app.server)) < 0 ||
        (rc = net_server_start(app.server)) < 0) {
        fprintf(stderr, "echo_server: %s: %s\n", listen, net_strerror(rc));
        return 1;
    }
    char text[NET_ADDR_STRLEN];
    net_addr_format(net_server_addr(app.server), text, sizeof text);
    printf("echo_server listening on %s (%zu I/O threads)\n", text, opt.io_threads);
    fflush(stdout);
    net_loop_run(app.loop); /* until on_closed: the server is gone */
    net_signal_free(sig);
    net_loop_free(app.loop);
    return 0;
}
