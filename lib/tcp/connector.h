/* The connector: a sequence of non-blocking connect attempts to one address
 * (muduo's Connector). Each attempt has a timeout; a failed one is retried
 * after an exponential backoff when retry is on; a socket connected to
 * itself is a failed attempt. It hands a connected socket to its owner
 * (the TCP client) and knows nothing of connections.
 *
 *   IDLE --start--> CONNECTING --writable, SO_ERROR 0, not self--> IDLE (fd handed over)
 *                     |    ^
 *   error, timeout    |    | retry timer
 *                     v    |
 *                   (failed) --will retry--> BACKOFF
 *
 * Loop thread only, except net__connector_attempts. Callbacks run inside
 * the connector's own events and timers, or inside start (an attempt that
 * fails at once): the owner calls start only from loop callbacks of its
 * own, never from inside a user's call. */
#ifndef NET__CONNECTOR_H
#define NET__CONNECTOR_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <net/addr.h>
#include <net/loop.h>

#include "loop/channel.h"

/* A connected socket (non-blocking), owned by the callee from now. */
typedef void (*net__connected_fn)(int fd, void *arg);
/* An attempt failed with err; will_retry: a retry is armed. */
typedef void (*net__connect_failed_fn)(int err, bool will_retry, void *arg);

struct net__connector_options {
    uint32_t timeout_ms;       /* per attempt; 0: none of ours */
    bool retry;
    uint32_t retry_initial_ms; /* first backoff delay */
    uint32_t retry_max_ms;     /* backoff cap */
    uint32_t max_attempts;     /* per sequence; 0: unlimited */
};

enum net__connector_state {
    NET__CONNECTOR_IDLE,       /* no attempt, no retry armed */
    NET__CONNECTOR_CONNECTING, /* a socket is connecting, watched for writable */
    NET__CONNECTOR_BACKOFF,    /* waiting for the retry timer */
};

struct net__connector {
    net_loop_t *loop;
    net_addr_t addr;
    struct net__connector_options opt;
    net__connected_fn connected;
    net__connect_failed_fn failed;
    void *arg;
    enum net__connector_state state;
    struct net__channel ch;        /* the connecting socket; fd -1 when none */
    net_timer_id_t timeout_timer;  /* 0 when not armed */
    net_timer_id_t retry_timer;    /* 0 when not armed */
    uint32_t tries;                /* attempts in this sequence */
    uint64_t next_delay_ms;        /* the next backoff delay */
    atomic_uint attempts;          /* every attempt ever made */
};

/* Sets up an idle connector. */
void net__connector_init(struct net__connector *cn, net_loop_t *loop, const net_addr_t *addr,
                         const struct net__connector_options *opt, net__connected_fn connected,
                         net__connect_failed_fn failed, void *arg);

/* Starts a new sequence of attempts (max_attempts counts from here): the
 * first at once, or after the initial backoff delay when `delayed` (a
 * reconnect: a peer that accepts and closes at once must not make us
 * spin). The connector must be idle. */
void net__connector_start(struct net__connector *cn, bool delayed);

/* An attempt whose socket was handed over failed after all (the owner
 * could not use it): a failed attempt of the same sequence, retried per
 * the options, reported through `failed`. The connector must be idle. */
void net__connector_fail(struct net__connector *cn, int err);

/* Cancels the attempt or the retry in progress (the socket is closed, the
 * timers cancelled), without a callback. Returns true when there was one:
 * the owner then reports the cancellation. */
bool net__connector_stop(struct net__connector *cn);

/* True while an attempt or a retry is in progress. */
bool net__connector_active(const struct net__connector *cn);

/* The current sequence's attempt count (for logs). */
uint32_t net__connector_tries(const struct net__connector *cn);

/* Attempts made so far, all sequences. Thread-safe. */
uint32_t net__connector_attempts(const struct net__connector *cn);

#endif
