#include "rpc_fixture.h"

/* ---- the server ------------------------------------------------------------- */

void net_test_rpc_server_init(struct net_test_rpc_server *s,
                              void (*add_methods)(net_rpc_server_t *server))
{
    *s = (struct net_test_rpc_server){.add_methods = add_methods};
    net_rpc_server_options_init(&s->opt);
}

static void server_create_in_loop(void *arg)
{
    struct net_test_rpc_server *s = arg;
    net_addr_t any;
    CHECK_OK(net_addr_parse(&any, "127.0.0.1:0"));
    CHECK_OK(net_rpc_server_new(s->loop, s->bind ? s->bind : &any, &s->opt, &s->server));
    s->add_methods(s->server);
    CHECK_OK(net_rpc_server_start(s->server));
    s->addr = *net_rpc_server_addr(s->server);
}

void net_test_rpc_server_up(struct net_test_rpc_server *s)
{
    CHECK_OK(net_loop_thread_start("rpc-server", NULL, NULL, &s->thread));
    s->loop = net_loop_thread_loop(s->thread);
    net_test_on_loop(s->loop, server_create_in_loop, s);
}

static void server_closed(net_rpc_server_t *server, void *arg)
{
    struct net_test_rpc_server *s = arg;
    CHECK(server == s->server);
    CHECK(!s->in_close); /* never inside net_rpc_server_close */
    CHECK(net_loop_in_loop_thread(s->loop));
    net_rpc_server_stats(server, &(struct net_rpc_server_stats){0}); /* still valid in done */
    atomic_fetch_add(&s->closed, 1);
}

struct close_arg {
    struct net_test_rpc_server *s;
    uint64_t drain_ms;
};

static void server_close_in_loop(void *arg)
{
    struct close_arg *a = arg;
    a->s->in_close = true;
    CHECK_OK(net_rpc_server_close(a->s->server, a->drain_ms, server_closed, a->s));
    CHECK_EQ(net_rpc_server_close(a->s->server, a->drain_ms, server_closed, a->s), -EALREADY);
    a->s->in_close = false;
}

void net_test_rpc_server_close_begin(struct net_test_rpc_server *s, uint64_t drain_ms)
{
    struct close_arg a = {s, drain_ms};
    s->close_begun = true;
    net_test_on_loop(s->loop, server_close_in_loop, &a);
}

void net_test_rpc_server_close_wait(struct net_test_rpc_server *s)
{
    WAIT_UNTIL(atomic_load(&s->closed) == 1);
    s->server = NULL;
}

void net_test_rpc_server_close(struct net_test_rpc_server *s, uint64_t drain_ms)
{
    net_test_rpc_server_close_begin(s, drain_ms);
    net_test_rpc_server_close_wait(s);
}

void net_test_rpc_server_gone(struct net_test_rpc_server *s, uint64_t drain_ms)
{
    if (!s->server)
        return;
    if (!s->close_begun)
        net_test_rpc_server_close_begin(s, drain_ms);
    net_test_rpc_server_close_wait(s);
}

void net_test_rpc_server_down(struct net_test_rpc_server *s, uint64_t drain_ms)
{
    net_test_rpc_server_gone(s, drain_ms);
    CHECK_OK(net_loop_thread_join(s->thread));
    s->thread = NULL;
    s->loop = NULL;
}

/* ---- clients ------------------------------------------------------------------ */

void net_test_rpc_client_init(struct net_test_rpc_client *c)
{
    *c = (struct net_test_rpc_client){0};
    net_rpc_client_options_init(&c->opt);
}

void net_test_rpc_client_start_thread(struct net_test_rpc_client *c, const net_addr_t *addr)
{
    c->addr = *addr;
    CHECK_OK(net_loop_thread_start("rpc-client", NULL, NULL, &c->thread));
    c->loop = net_loop_thread_loop(c->thread);
}

static void client_create_in_loop(void *arg)
{
    struct net_test_rpc_client *c = arg;
    CHECK_OK(net_rpc_client_new(c->loop, &c->addr, &c->opt, &c->rpc));
}

void net_test_rpc_client_up(struct net_test_rpc_client *c, const net_addr_t *addr)
{
    net_test_rpc_client_start_thread(c, addr);
    net_test_on_loop(c->loop, client_create_in_loop, c);
}

static void client_closed(net_rpc_client_t *client, void *arg)
{
    struct net_test_rpc_client *c = arg;
    CHECK(client == c->rpc);
    CHECK(!c->in_close); /* never inside net_rpc_client_close */
    CHECK(net_loop_in_loop_thread(c->loop));
    struct net_rpc_client_stats st;
    net_rpc_client_stats(client, &st); /* still valid in done */
    CHECK_EQ(st.outstanding, 0);       /* every call has ended */
    atomic_fetch_add(&c->closed, 1);
}

struct client_close_arg {
    struct net_test_rpc_client *c;
    uint64_t drain_ms;
};

static void client_close_in_loop(void *arg)
{
    struct client_close_arg *a = arg;
    a->c->in_close = true;
    CHECK_OK(net_rpc_client_close(a->c->rpc, a->drain_ms, client_closed, a->c));
    CHECK_EQ(net_rpc_client_close(a->c->rpc, 0, client_closed, a->c), -EALREADY);
    a->c->in_close = false;
}

void net_test_rpc_client_close(struct net_test_rpc_client *c, uint64_t drain_ms)
{
    struct client_close_arg a = {c, drain_ms};
    net_test_on_loop(c->loop, client_close_in_loop, &a);
    WAIT_UNTIL(atomic_load(&c->closed) == 1);
    c->rpc = NULL;
}

void net_test_rpc_client_down(struct net_test_rpc_client *c)
{
    if (c->rpc)
        net_test_rpc_client_close(c, 0);
    CHECK_OK(net_loop_thread_join(c->thread));
    c->thread = NULL;
    c->loop = NULL;
}

/* ---- requests kept unanswered ---------------------------------------------------- */

void net_test_hold(struct net_test_held *h, net_rpc_req_t *req)
{
    pthread_mutex_lock(&h->mu);
    CHECK(h->n < NET_TEST_MAX_HELD);
    h->reqs[h->n++] = req;
    pthread_mutex_unlock(&h->mu);
    atomic_fetch_add(&h->total, 1);
}

int net_test_held_take(struct net_test_held *h, net_rpc_req_t **reqs)
{
    pthread_mutex_lock(&h->mu);
    int n = h->n;
    memcpy(reqs, h->reqs, (size_t)n * sizeof reqs[0]);
    h->n = 0;
    pthread_mutex_unlock(&h->mu);
    return n;
}

int net_test_held_release(struct net_test_held *h, uint32_t status, const char *text)
{
    net_rpc_req_t *reqs[NET_TEST_MAX_HELD];
    int n = net_test_held_take(h, reqs);
    for (int i = 0; i < n; i++)
        CHECK_EQ(net_rpc_reply(reqs[i], status, text, strlen(text)), 0);
    return n;
}

/* ---- requests handed to other threads ------------------------------------------- */

void net_test_handoff_push(struct net_test_handoff_queue *q, net_rpc_req_t *req,
                           const void *body, size_t len)
{
    struct net_test_handoff *h = malloc(sizeof *h + len);
    CHECK(h != NULL);
    h->next = NULL;
    h->req = req;
    h->len = len;
    if (len)
        memcpy(h->body, body, len);
    pthread_mutex_lock(&q->mu);
    if (q->tail)
        q->tail->next = h;
    else
        q->head = h;
    q->tail = h;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->mu);
}

struct net_test_handoff *net_test_handoff_pop(struct net_test_handoff_queue *q)
{
    pthread_mutex_lock(&q->mu);
    while (!q->head && !q->quit)
        pthread_cond_wait(&q->cond, &q->mu);
    struct net_test_handoff *h = q->head;
    if (h && !(q->head = h->next))
        q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    return h;
}

void net_test_handoff_quit(struct net_test_handoff_queue *q)
{
    pthread_mutex_lock(&q->mu);
    q->quit = true;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->mu);
}
