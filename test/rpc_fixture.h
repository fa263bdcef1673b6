/* An RPC server and RPC clients under test, each on its own loop thread,
 * driven from the scenario's main thread (the calls are thread-safe; what
 * must run on a loop goes through net_test_on_loop). Shared by test_rpc.c
 * and test_faults_rpc.c; each registers its own methods. */
#ifndef NET_TEST_RPC_FIXTURE_H
#define NET_TEST_RPC_FIXTURE_H

#include <net/loop_thread.h>
#include <net/rpc.h>

#include "net_test_util.h"

struct net_test_rpc_server {
    net_loop_thread_t *thread;
    net_loop_t *loop;
    net_rpc_server_t *server;
    net_addr_t addr; /* where it listens, once up */
    const net_addr_t *bind; /* where to listen; NULL: 127.0.0.1, a free port */
    struct net_rpc_server_options opt;
    /* Registers the methods, on the server's loop, before the start. */
    void (*add_methods)(net_rpc_server_t *server);
    bool in_close;     /* server loop: inside net_rpc_server_close */
    bool close_begun;  /* main thread: net_test_rpc_server_close_begin ran */
    atomic_int closed; /* done callbacks of the close */
};

/* Default options; a scenario may change s->opt before the server is up. */
void net_test_rpc_server_init(struct net_test_rpc_server *s,
                              void (*add_methods)(net_rpc_server_t *server));
/* Starts the loop thread, creates and starts the server there. */
void net_test_rpc_server_up(struct net_test_rpc_server *s);
/* Closes the server on its loop (requests in flight get drain_ms) and
 * returns: s->closed becomes 1 later. A second close must say -EALREADY. */
void net_test_rpc_server_close_begin(struct net_test_rpc_server *s, uint64_t drain_ms);
/* Waits for the close's done callback, which must come once, on the
 * server's loop, outside the close call; then s->server is NULL. */
void net_test_rpc_server_close_wait(struct net_test_rpc_server *s);
/* Both of the above. */
void net_test_rpc_server_close(struct net_test_rpc_server *s, uint64_t drain_ms);
/* Closes the server unless a close was begun, and waits for its done (no-op
 * once s->server is NULL). */
void net_test_rpc_server_gone(struct net_test_rpc_server *s, uint64_t drain_ms);
/* net_test_rpc_server_gone, then ends the loop thread. */
void net_test_rpc_server_down(struct net_test_rpc_server *s, uint64_t drain_ms);

struct net_test_rpc_client {
    net_loop_thread_t *thread;
    net_loop_t *loop;
    net_rpc_client_t *rpc;
    struct net_rpc_client_options opt;
    net_addr_t addr; /* of the server */
    bool in_close;     /* client loop: inside net_rpc_client_close */
    atomic_int closed; /* done callbacks of the close */
};

/* Default options; a scenario may change c->opt before the client is up. */
void net_test_rpc_client_init(struct net_test_rpc_client *c);
/* Starts the client's loop thread only (the scenario creates the client). */
void net_test_rpc_client_start_thread(struct net_test_rpc_client *c, const net_addr_t *addr);
/* Starts the loop thread and creates the client there, for addr. */
void net_test_rpc_client_up(struct net_test_rpc_client *c, const net_addr_t *addr);
/* Closes the client on its loop (calls get drain_ms) and waits for the
 * close's done, which must come once, on the loop, outside the close call;
 * then c->rpc is NULL. */
void net_test_rpc_client_close(struct net_test_rpc_client *c, uint64_t drain_ms);
/* Closes the client (if any) with no drain and ends the loop thread. */
void net_test_rpc_client_down(struct net_test_rpc_client *c);

/* ---- requests kept unanswered ---------------------------------------------------- */

#define NET_TEST_MAX_HELD 256

/* Requests a method keeps until the scenario answers them. Initialize with
 * NET_TEST_HELD_INIT. */
struct net_test_held {
    pthread_mutex_t mu;
    net_rpc_req_t *reqs[NET_TEST_MAX_HELD];
    int n;           /* held now */
    atomic_int total; /* ever held */
};

#define NET_TEST_HELD_INIT {.mu = PTHREAD_MUTEX_INITIALIZER}

/* Keeps req (from a method). Thread-safe. */
void net_test_hold(struct net_test_held *h, net_rpc_req_t *req);
/* Moves every held request to reqs (room for NET_TEST_MAX_HELD); returns
 * how many. */
int net_test_held_take(struct net_test_held *h, net_rpc_req_t **reqs);
/* Answers every held request from the calling thread; returns how many. */
int net_test_held_release(struct net_test_held *h, uint32_t status, const char *text);

/* ---- requests handed to other threads ------------------------------------------- */

/* A request and a copy of its body, queued for a thread that answers it. */
struct net_test_handoff {
    struct net_test_handoff *next;
    net_rpc_req_t *req;
    size_t len;
    char body[];
};

/* FIFO from a method (on a loop) to replier threads. Initialize with
 * NET_TEST_HANDOFF_QUEUE_INIT. */
struct net_test_handoff_queue {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct net_test_handoff *head, *tail;
    bool quit;
};

#define NET_TEST_HANDOFF_QUEUE_INIT {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER}

/* Queues req with a copy of body. Thread-safe. */
void net_test_handoff_push(struct net_test_handoff_queue *q, net_rpc_req_t *req,
                           const void *body, size_t len);
/* The oldest entry (the caller frees it), waiting for one; NULL once the
 * queue is empty and net_test_handoff_quit was called. */
struct net_test_handoff *net_test_handoff_pop(struct net_test_handoff_queue *q);
/* Wakes every waiting pop; they return what is still queued, then NULL. */
void net_test_handoff_quit(struct net_test_handoff_queue *q);

#endif
