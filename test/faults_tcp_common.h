/* The server side of the TCP fault-injection scenarios (test_faults_tcp.c,
 * test_faults_storm.c): a server on the scenario's base loop, echoing, and
 * waits for its connections and this process's descriptors to settle.
 *
 * Everything is static inline so that a runner that uses only part of it
 * still builds with -Werror. */
#ifndef NET_TEST_FAULTS_TCP_COMMON_H
#define NET_TEST_FAULTS_TCP_COMMON_H

#include <net/buffer.h>
#include <net/tcp_conn.h>
#include <net/tcp_server.h>

#include "faults_common.h"

/* ---- clients ----------------------------------------------------------------- */

/* One echo round trip from a new client: the server still serves. */
static inline void check_still_serves(net_loop_t *loop, net_server_t *server, const char *msg)
{
    struct net_test_echo e = {*net_server_addr(server), msg};
    net_test_run_with_client(loop, net_test_echo_client, &e);
}

/* ---- the server ------------------------------------------------------------------- */

static inline net_server_t *server_start(net_loop_t *loop, size_t io_threads,
                                  const struct net_conn_callbacks *cbs,
                                  const struct net_conn_options *conn_opt)
{
    struct net_server_options opt;
    net_server_options_init(&opt);
    opt.io_threads = io_threads;
    if (conn_opt)
        opt.conn = *conn_opt;
    net_addr_t addr;
    CHECK_OK(net_addr_parse(&addr, "127.0.0.1:0"));
    net_server_t *server;
    CHECK_OK(net_server_new(loop, &addr, &opt, cbs, &server));
    CHECK_OK(net_server_start(server));
    return server;
}

static inline void echo_message(net_conn_t *conn, net_buf_t *in, uint64_t receive_ms, void *arg)
{
    (void)receive_ms, (void)arg;
    if (net_conn_send_buf(conn, in) < 0)
        net_buf_retrieve_all(in); /* closing: the scenario checks elsewhere */
}

/* Closes the server (connections get 2 s to drain) and waits for its done. */
static inline void server_close(net_loop_t *loop, net_server_t *server)
{
    net_test_server_close(loop, server, 2000);
}

static inline bool no_connections(void *server)
{
    return net_test_server_idle(server);
}

struct fd_goal {
    int want;
};

static inline bool fds_back(void *arg)
{
    return net_test_count_open_fds() == ((struct fd_goal *)arg)->want;
}

/* Connections close asynchronously: waits (running the loop) until the
 * process has exactly `want` descriptors open again. */
static inline void run_until_fds(net_loop_t *loop, int want)
{
    struct fd_goal g = {want};
    uint64_t deadline = net_test_now_ms() + NET_TEST_WAIT_MS;
    while (!fds_back(&g)) {
        if (net_test_now_ms() > deadline)
            net_test_fail(__FILE__, __LINE__, "%d descriptors open, expected %d",
                          net_test_count_open_fds(), want);
        net_test_run_for(loop, 5);
    }
}

#endif
