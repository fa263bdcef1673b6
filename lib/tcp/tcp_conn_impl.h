/* The connection object, shared by its two halves: tcp_conn.c (life,
 * reading, closing, options) and conn_output.c (the write path). Nothing
 * outside those two files includes this. */
#ifndef NET__TCP_CONN_IMPL_H
#define NET__TCP_CONN_IMPL_H

#include <stdatomic.h>

#include "loop/loop_internal.h"
#include "tcp/tcp_conn_internal.h"
#include "tcp/write_queue.h"

/* Reasons to pause reading (net_conn.pause). */
enum {
    NET__PAUSE_USER = 1u,   /* net_conn_stop_read() */
    NET__PAUSE_OUTPUT = 2u, /* queued output reached backpressure_mark */
    NET__PAUSE_BUDGET = 4u, /* the server's buffers are over its memory budget */
    NET__PAUSE_OWNER = 8u,  /* net__conn_pause_owner() */
};

struct net_conn {
    atomic_int refs;
    _Atomic int state;        /* net_conn_state_t */
    atomic_bool closing;      /* force_close requested: deliver no more input */
    net_loop_t *loop;
    uint64_t id;
    struct net__channel ch;
    net_buf_t in;
    struct net_conn_callbacks cbs;
    net__conn_closed_fn closed;
    void *owner;
    _Atomic(void *) context;
    _Atomic(void *) owner_data; /* net__conn_set_owner_data: not the user's slot */
    atomic_size_t high_water;
    atomic_ullong bytes_in, bytes_out;

    /* The write path (conn_output.c). Any thread pushes onto `wq`; the loop
     * thread moves what was pushed onto `pend` (FIFO) and writes from there.
     * `flushing` is the flush token: whoever sets it from false to true must
     * make sure a flush runs; it returns to false only when the loop found
     * everything written. `queued` counts bytes accepted and not yet written
     * (pushed, pending, or racing in); it is what high water and max_output
     * look at. */
    struct net__wq wq;
    atomic_bool flushing;
    atomic_size_t queued;
    struct net__wq_node *pend, *pend_tail; /* loop thread only */
    struct net__loop_task flush_task;      /* the token holder's queued flush */
    bool flush_wrote;         /* this flush wrote something: report write-complete */

    /* Reading runs only while no reason to pause holds (NET__PAUSE_*): the
     * user's stop_read, backed-up output, the server's memory budget and the
     * owner's own (the RPC server's request limit) are independent. */
    unsigned pause;
    /* HUP or a write error came while reading was paused: the fd is out of
     * the poller (those events cannot be masked, level-triggered they would
     * spin) and goes back in when reading resumes, to deliver what the
     * kernel still holds before the close. */
    bool detached;
    bool redeliver_queued;    /* a task will hand buffered input to on_message */
    bool peer_eof;
    bool write_shut;          /* shutdown(SHUT_WR) done: nothing more goes out */
    struct net__budget *budget; /* the server's, or NULL */
    size_t budget_reported;   /* what this connection added to budget->used */
    net_timer_id_t budget_timer;
    struct net_conn_options opt;
    uint64_t last_input_ms;
    net_timer_id_t idle_timer, close_timer;
    net_addr_t local, peer;
    struct net__conn_link link; /* the owner's list */
};

/* ---- provided by tcp_conn.c (loop thread unless said) ---- */

/* Reads the output and budget pause rules need after output moved:
 * resumes reading once queued output is below half the backpressure mark,
 * and brings the budget's count up to date. Called after every write. */
void net__conn_output_moved(net_conn_t *conn);
/* Output is backing up (the socket is full): pauses reading at the mark. */
void net__conn_output_backed_up(net_conn_t *conn);

/* Runs fn(conn) later on the loop thread, holding a reference meanwhile.
 * Any thread. */
int net__conn_defer(net_conn_t *conn, net_loop_fn fn);
/* Queues the write-complete callback, if the user set one. Any thread. */
void net__conn_defer_write_complete(net_conn_t *conn);
/* Queues the high-water callback with `queued` bytes. Any thread. */
void net__conn_queue_high_water(net_conn_t *conn, size_t queued);
/* A send on the loop thread failed: close later, not inside the send. */
void net__conn_queue_error(net_conn_t *conn, int err);
/* Logs once and closes now (callbacks run). */
void net__conn_handle_error(net_conn_t *conn, int err, const char *op);
void net__conn_handle_close(net_conn_t *conn);
void net__conn_shutdown_write(net_conn_t *conn);
void net__conn_set_interest(net_conn_t *conn, unsigned interest);
/* NET_READABLE when the connection wants input, else 0. */
unsigned net__conn_read_interest(const net_conn_t *conn);

/* ---- provided by conn_output.c ---- */

/* Initialises the write path of a new connection. */
void net__conn_output_init(net_conn_t *conn);
/* Frees every byte still queued (the connection closed). Loop thread, or
 * the last reference's thread at free. */
void net__conn_output_discard(net_conn_t *conn);
/* The socket is writable. */
void net__conn_handle_write(net_conn_t *conn);
/* Takes the flush token if nobody holds it and flushes now; else the flush
 * already under way finishes the job. Either way, once the output is empty,
 * a DISCONNECTING connection shuts its write side and a connection whose
 * peer half-closed (without the half_close option) closes. */
void net__conn_flush_then_finish(net_conn_t *conn);

#endif
