/* One server connection seen from another thread (test_conn_write.c,
 * test_conn_api.c): a server on a loop thread ("base"), one blocking peer
 * socket with timeouts connected to it, the teardown, and parking the
 * connection's loop inside a functor so that a scenario can look at what
 * was handed to it before it runs.
 *
 * Set conn_fx.opt and conn_fx.cbs (on_connection and arg are the
 * fixture's: it keeps the connection in conn_fx.keeper), then
 * conn_fx_start(). Everything is static inline so that a runner that uses
 * only part of it still builds with -Werror. */
#ifndef NET_TEST_CONN_FIXTURE_H
#define NET_TEST_CONN_FIXTURE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

#include <net/addr.h>
#include <net/loop.h>
#include <net/loop_thread.h>
#include <net/tcp_conn.h>
#include <net/tcp_server.h>

#include "net_test_util.h"

static struct {
    struct net_server_options opt;
    struct net_conn_callbacks cbs;
    net_loop_thread_t *base;
    net_server_t *server;
    struct net_test_conn_keeper keeper;
    atomic_bool parked, release, stopped;
    int fd; /* the peer; -1 once a scenario closed it */
} conn_fx;

static inline void conn_fx_server_init(net_loop_t *loop, void *arg)
{
    (void)arg;
    struct net_conn_callbacks cbs = conn_fx.cbs;
    cbs.on_connection = net_test_keep_conn;
    cbs.arg = &conn_fx.keeper;
    net_addr_t addr;
    CHECK_OK(net_addr_parse(&addr, "127.0.0.1:0"));
    CHECK_OK(net_server_new(loop, &addr, &conn_fx.opt, &cbs, &conn_fx.server));
    CHECK_OK(net_server_start(conn_fx.server));
}

/* Starts the server with conn_fx.opt and connects one peer (rcvbuf as in
 * net_test_connect); returns the server's side of the connection, which
 * lives on another thread's loop. */
static inline net_conn_t *conn_fx_start(int rcvbuf)
{
    net_test_watchdog_start();
    CHECK_OK(net_loop_thread_start("base", conn_fx_server_init, NULL, &conn_fx.base));
    conn_fx.fd = net_test_connect(net_server_addr(conn_fx.server), rcvbuf);
    WAIT_UNTIL(atomic_load(&conn_fx.keeper.ups) == 1);
    net_conn_t *conn = atomic_load(&conn_fx.keeper.conn);
    CHECK(!net_loop_in_loop_thread(net_conn_loop(conn)));
    return conn;
}

static inline void conn_fx_closed(net_server_t *server, void *arg)
{
    (void)server, (void)arg;
    atomic_store(&conn_fx.stopped, true);
}

/* Closes the peer (if still open), waits for the connection to go down,
 * checks that it refuses sends, drops the scenario's reference and tears
 * the server down. */
static inline void conn_fx_finish(net_conn_t *conn)
{
    if (conn_fx.fd >= 0)
        close(conn_fx.fd);
    WAIT_UNTIL(atomic_load(&conn_fx.keeper.downs) == 1);
    CHECK_EQ(net_conn_send(conn, "x", 1), -ENOTCONN);
    net_conn_unref(conn);
    CHECK_OK(net_server_close(conn_fx.server, 100, conn_fx_closed, NULL)); /* thread-safe */
    WAIT_UNTIL(atomic_load(&conn_fx.stopped));
    CHECK_OK(net_loop_thread_join(conn_fx.base));
}

static inline void conn_fx_park_cb(void *arg)
{
    (void)arg;
    atomic_store(&conn_fx.parked, true);
    uint64_t deadline = net_test_now_ms() + NET_TEST_WAIT_MS;
    while (!atomic_load(&conn_fx.release)) {
        CHECK(net_test_now_ms() < deadline);
        net_test_sleep_ms(1);
    }
}

/* Returns once the connection's loop is parked: it runs nothing else
 * until conn_fx_unpark(). */
static inline void conn_fx_park(net_conn_t *conn)
{
    atomic_store(&conn_fx.release, false);
    atomic_store(&conn_fx.parked, false);
    CHECK_OK(net_loop_queue_in_loop(net_conn_loop(conn), conn_fx_park_cb, NULL));
    WAIT_UNTIL(atomic_load(&conn_fx.parked));
}

static inline void conn_fx_unpark(void)
{
    atomic_store(&conn_fx.release, true);
}

#endif
