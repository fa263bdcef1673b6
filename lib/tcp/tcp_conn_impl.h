/* The connection object. Only tcp_conn.c includes this: the connection's
 * output is its own module (conn_output.h), which tcp_conn.c calls and
 * which never calls back (the dependency runs one way, tcp_conn.c ->
 * conn_output.c; what the output needs done comes back as NET__OUT_* bits).
 * Servers, clients and the RPC layer see only tcp_conn_internal.h. */
#ifndef NET__TCP_CONN_IMPL_H
#define NET__TCP_CONN_IMPL_H

#include <netinet/in.h>
#include <stdatomic.h>

#include "loop/armed.h"
#include "loop/loop_internal.h"
#include "tcp/conn_output.h"
#include "tcp/tcp_conn_internal.h"

/* Reasons to pause reading (net_conn.pause). */
enum {
    NET__PAUSE_USER = 1u,   /* net_conn_stop_read() */
    NET__PAUSE_OUTPUT = 2u, /* queued output reached backpressure_mark */
    NET__PAUSE_BUDGET = 4u, /* the server's buffers are over its memory budget */
    NET__PAUSE_OWNER = 8u,  /* net__conn_pause_owner() */
};

/* An address as getsockname/getpeername gave it, when it is IPv4 or IPv6
 * (28 bytes where a net_addr_t takes 136). A Unix address keeps only its
 * family here: its net_addr_t forms are made with the connection. */
union net__conn_sockaddr {
    struct sockaddr sa; /* sa_family AF_UNSPEC: no address */
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
};

/* The net_addr_t forms the accessors return, made at their first call. */
struct net__conn_addrs {
    net_addr_t local, peer;
};

/* Laid out small: an idle connection costs this struct and nothing else
 * (its input storage goes back to the thread's spare, tcp_conn.c; its
 * output queue is empty), so cold state is kept compact (the addresses)
 * or made on first use (their net_addr_t forms), and fields are grouped
 * by size so that no padding is left between them. */
struct net_conn {
    atomic_int refs;
    _Atomic int state;        /* net_conn_state_t */
    atomic_bool closing;      /* force_close requested: deliver no more input */
    /* Reading runs only while no reason to pause holds (NET__PAUSE_*): the
     * user's stop_read, backed-up output, the server's memory budget and the
     * owner's own (the RPC server's request limit) are independent. */
    unsigned char pause;
    /* HUP or a write error came while reading was paused: the fd is out of
     * the poller (those events cannot be masked, level-triggered they would
     * spin) and goes back in when reading resumes, to deliver what the
     * kernel still holds before the close. */
    bool detached;
    bool peer_eof;
    bool write_shut; /* shutdown(SHUT_WR) done: nothing more goes out */
    /* The options the connection still looks at after net__conn_new (the
     * output keeps the high-water mark and max_output). */
    bool half_close, nagle, keepalive;
    net_loop_t *loop;
    uint64_t id;
    struct net__channel ch;
    net_buf_t in;
    struct net_conn_callbacks cbs;
    net__conn_closed_fn closed;
    void *owner;
    _Atomic(void *) context;
    _Atomic(void *) owner_data; /* net__conn_set_owner_data: not the user's slot */
    atomic_ullong bytes_in;
    uint64_t last_input_ms;
    size_t max_input, backpressure_mark;

    struct net__output out; /* conn_output.h */

    /* Deferred work, from any thread and without allocating: whoever wants
     * some sets its NET__WORK_* bit in `work` and arms `task` (holding a
     * reference while it is armed); the task takes every bit set so far and
     * does the work on the loop. */
    struct net__armed task;
    atomic_uint work;
    /* The NET__PAUSE_USER and _OWNER reasons as the thread-safe calls last
     * asked for them; the loop makes `pause` follow (the latest call wins). */
    atomic_uint want_pause;
    int error; /* loop: why a send on the loop thread broke the stream */
    uint32_t idle_timeout_ms;

    struct net__budget *budget; /* the server's, or NULL */
    size_t budget_reported;   /* what this connection added to budget->used */
    net_timer_id_t budget_timer;
    net_timer_id_t idle_timer;
    /* force_close_after's timer: set from any thread (the latest call wins),
     * exchanged for 0 by whoever cancels it. */
    _Atomic net_timer_id_t close_timer;
    union net__conn_sockaddr local, peer;
    /* The net_addr_t forms: made at creation for a Unix socket, else by
     * the first accessor call (any thread: the first to install wins);
     * freed with the connection. */
    _Atomic(struct net__conn_addrs *) addrs;
    struct net__conn_link link; /* the owner's list */
};

#endif
