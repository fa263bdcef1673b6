/* netloop's baidu_std client against netloop's server, loopback only:
 * every status goes through brpc's error codes and back (docs/protocol.md,
 * "Statuses in baidu_std"), attachments of every size arrive byte-exact,
 * and baidu_std and NRPC clients are served side by side, from several
 * threads, each call completing exactly once. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc_fixture.h"

static struct net_test_rpc_server srv;

static void echo_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    size_t alen;
    const void *att = net_rpc_req_attachment(req, &alen);
    CHECK_OK(net_rpc_reply_with_attachment(req, NET_RPC_OK, body, len, att, alen));
}

/* The body is a decimal status: answered with it, the text "s N" and the
 * attachment "A" (NRPC: no attachment). */
static void status_method(net_rpc_req_t *req, const void *body, size_t len, void *arg)
{
    (void)arg;
    char num[16], text[32];
    CHECK(len > 0 && len < sizeof num);
    memcpy(num, body, len);
    num[len] = '\0';
    int n = snprintf(text, sizeof text, "s %s", num);
    bool baidu = net_rpc_req_protocol(req) == NET_RPC_BAIDU_STD;
    CHECK_OK(net_rpc_reply_with_attachment(req, (uint32_t)strtoul(num, NULL, 10), text,
                                           (size_t)n, baidu ? "A" : NULL, baidu ? 1 : 0));
}

static void add_methods(net_rpc_server_t *server)
{
    CHECK_OK(net_rpc_server_register(server, "t.Svc.Echo", echo_method, NULL, false));
    CHECK_OK(net_rpc_server_register(server, "t.Svc.Status", status_method, NULL, false));
}

static void client_up(struct net_test_rpc_client *c, enum net_rpc_protocol protocol)
{
    net_test_rpc_client_init(c);
    c->opt.protocol = protocol;
    net_test_rpc_client_up(c, &srv.addr);
}

static void expect_sync(struct net_test_rpc_client *c, const char *method, const char *body,
                        uint32_t want, const char *want_body)
{
    uint32_t status;
    void *got = NULL;
    size_t len = 0;
    CHECK_OK(net_rpc_call_sync(c->rpc, method, body, strlen(body), 5000, &status, &got, &len));
    if (status != want)
        net_test_fail(__FILE__, __LINE__, "%s(%s): status %s, want %s", method, body,
                      net_rpc_status_name(status), net_rpc_status_name(want));
    CHECK_EQ(len, strlen(want_body));
    if (len)
        CHECK_MEM_EQ(got, want_body, len);
    free(got);
}

/* Each status the server sends arrives as the one the table maps it to,
 * in both protocols; unknown names are UNKNOWN_METHOD either way. */
TEST(baidu_e2e_statuses_round_trip)
{
    net_test_watchdog_start();
    net_test_rpc_server_init(&srv, add_methods);
    net_test_rpc_server_up(&srv);
    struct net_test_rpc_client b, n;
    client_up(&b, NET_RPC_BAIDU_STD);
    client_up(&n, NET_RPC_NRPC);
    static const struct { const char *sent; uint32_t baidu, nrpc; } cases[] = {
        {"0", NET_RPC_OK, NET_RPC_OK},
        {"1", NET_RPC_UNKNOWN_METHOD, NET_RPC_UNKNOWN_METHOD},
        {"2", NET_RPC_BAD_REQUEST, NET_RPC_BAD_REQUEST},
        {"3", NET_RPC_INTERNAL, NET_RPC_INTERNAL},
        {"4", NET_RPC_OVERLOADED, NET_RPC_OVERLOADED},
        {"5", NET_RPC_SHUTTING_DOWN, NET_RPC_SHUTTING_DOWN},
        {"50", NET_RPC_INTERNAL, 50},  /* reserved: EINTERNAL on baidu_std */
        {"100", 100, 100},
        {"4242", 4242, 4242},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[32];
        snprintf(text, sizeof text, "s %s", cases[i].sent);
        /* OK carries the text as its payload too. */
        expect_sync(&b, "t.Svc.Status", cases[i].sent, cases[i].baidu, text);
        expect_sync(&n, "t.Svc.Status", cases[i].sent, cases[i].nrpc, text);
    }
    expect_sync(&b, "t.Svc.Nope", "", NET_RPC_UNKNOWN_METHOD, "no method Nope in service t.Svc");
    expect_sync(&b, "t.Other.Echo", "", NET_RPC_UNKNOWN_METHOD, "no service t.Other");
    expect_sync(&n, "t.Svc.Nope", "", NET_RPC_UNKNOWN_METHOD, "unknown method");
    net_test_rpc_client_down(&b);
    net_test_rpc_client_down(&n);
    net_test_rpc_server_down(&srv, 1000);
}

/* ---- many calls, many threads, attachments ------------------------------------- */

#define THREADS 3
#define CALLS 150

struct caller {
    struct net_test_rpc_client *c;
    int index;
    atomic_int *done;
    atomic_int *wrong;
};

/* One call's expectation, freed by its done. */
struct pending {
    size_t body_len, att_len;
    uint8_t fill;
    atomic_int *done, *wrong;
};

static bool filled(const void *p, size_t len, uint8_t fill)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < len; i++)
        if (b[i] != (uint8_t)(fill + i))
            return false;
    return true;
}

static void call_done(net_rpc_client_t *client, uint32_t status, const void *body, size_t len,
                      void *arg)
{
    struct pending *p = arg;
    size_t alen;
    const void *att = net_rpc_response_attachment(client, &alen);
    bool ok = status == NET_RPC_OK && len == p->body_len && alen == p->att_len &&
              filled(body, len, p->fill) && (alen == 0 || filled(att, alen, p->fill ^ 0x5a));
    if (!ok)
        atomic_fetch_add(p->wrong, 1);
    atomic_fetch_add(p->done, 1);
    free(p);
}

/* Sizes from empty to 96 KiB, so that some frames span many reads. */
static size_t size_of(int i, int k)
{
    static const size_t sizes[] = {0, 1, 7, 64, 1000, 4096, 40000, 98304};
    return sizes[(size_t)(i * 3 + k) % (sizeof sizes / sizeof sizes[0])];
}

static void calls(void *arg)
{
    struct caller *k = arg;
    static uint8_t buf[THREADS][2][98304];
    bool baidu = k->c->opt.protocol == NET_RPC_BAIDU_STD;
    for (int i = 0; i < CALLS; i++) {
        struct pending *p = malloc(sizeof *p);
        CHECK(p != NULL);
        *p = (struct pending){.body_len = size_of(i, k->index),
                              .att_len = baidu ? size_of(i + 1, k->index) : 0,
                              .fill = (uint8_t)(i * 7 + k->index), .done = k->done,
                              .wrong = k->wrong};
        uint8_t *body = buf[k->index][0], *att = buf[k->index][1];
        for (size_t j = 0; j < p->body_len; j++)
            body[j] = (uint8_t)(p->fill + j);
        for (size_t j = 0; j < p->att_len; j++)
            att[j] = (uint8_t)((p->fill ^ 0x5a) + j);
        CHECK_OK(net_rpc_call_with_attachment(k->c->rpc, "t.Svc.Echo", body, p->body_len, att,
                                              p->att_len, 10000, call_done, p));
    }
}

/* Two baidu_std clients and one NRPC client, each driven by its own
 * thread, on one server with two I/O threads. */
TEST(baidu_e2e_threads_attachments_beside_nrpc)
{
    net_test_watchdog_start();
    net_test_rpc_server_init(&srv, add_methods);
    srv.opt.server.io_threads = 2;
    net_test_rpc_server_up(&srv);
    struct net_test_rpc_client clients[THREADS];
    struct caller callers[THREADS];
    struct net_test_job jobs[THREADS];
    atomic_int done = 0, wrong = 0;
    for (int i = 0; i < THREADS; i++) {
        client_up(&clients[i], i == THREADS - 1 ? NET_RPC_NRPC : NET_RPC_BAIDU_STD);
        callers[i] = (struct caller){&clients[i], i, &done, &wrong};
    }
    for (int i = 0; i < THREADS; i++)
        net_test_job_start(&jobs[i], calls, &callers[i]);
    for (int i = 0; i < THREADS; i++)
        net_test_job_join(&jobs[i]);
    WAIT_UNTIL(atomic_load(&done) == THREADS * CALLS);
    CHECK_EQ(atomic_load(&wrong), 0);
    for (int i = 0; i < THREADS; i++) {
        struct net_rpc_client_stats st;
        net_rpc_client_stats(clients[i].rpc, &st);
        CHECK_EQ(st.completed, CALLS);
        CHECK_EQ(st.late_replies, 0);
        net_test_rpc_client_down(&clients[i]);
    }
    struct net_rpc_server_stats st;
    net_rpc_server_stats(srv.server, &st);
    CHECK_EQ(st.protocol_errors, 0);
    net_test_rpc_server_down(&srv, 1000);
    CHECK_EQ(atomic_load(&done), THREADS * CALLS); /* and no more */
}
