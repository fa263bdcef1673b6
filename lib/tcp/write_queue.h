/* A wait-free multi-producer, single-consumer queue of byte chunks: the
 * cross-thread write path of a connection (brpc's Socket write list).
 *
 * Producers push with one atomic exchange of the head: no lock, no retry
 * loop, so a sender never waits for another sender. The push tells the
 * producer whether the queue was empty; exactly that producer arranges the
 * flush (writes itself on the loop thread, or wakes the loop once), so N
 * concurrent senders cost one wakeup, not N.
 *
 * The consumer (the loop thread) takes the whole pushed stack with one
 * exchange and reverses it into FIFO order. Memory ordering:
 *   push:  n->next = UNLINKED (relaxed; n is not yet shared)
 *          prev = exchange(head, n, seq_cst)    -- publishes n's payload
 *          (seq_cst, not just acq_rel: the connection's flush token pairs
 *          this exchange with a later seq_cst load; see conn_output.c)
 *          n->next = prev (release)             -- links it
 *   take:  top = exchange(head, NULL, acq_rel)  -- acquires every payload
 *          for each node: next = load(n->next, acquire); while UNLINKED,
 *          the producer is between its two steps: yield and reload.
 * The acquire/release pairs on `head` make each node's bytes visible to the
 * consumer before it can reach the node; the release store of `next` pairs
 * with the consumer's acquire load of it. A node pushed after the take's
 * exchange sees prev == NULL and starts a new flush; nothing is lost.
 *
 * Within one producer thread pushes are ordered by program order and the
 * consumer reverses the stack, so bytes from one thread stay in order. */
#ifndef NET__WRITE_QUEUE_H
#define NET__WRITE_QUEUE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct net__wq_node {
    _Atomic(struct net__wq_node *) next;
    size_t len;  /* bytes in data */
    size_t off;  /* consumer: bytes already written */
    size_t cap;  /* capacity of data: NET__WQ_SMALL for pooled nodes, else len
                  * (a mapped node, see write_queue.c, rounds up to a page) */
    char data[];
};

/* Payload of a pooled node. Larger sends get a node of their own size. */
#define NET__WQ_SMALL 480

struct net__wq {
    _Atomic(struct net__wq_node *) head;
};

/* A node for len bytes (uninitialised payload). From the calling thread's
 * cache when small. NULL on -ENOMEM. Thread-safe. */
struct net__wq_node *net__wq_node_alloc(size_t len);

/* Returns a node to the calling thread's cache (or frees it). Thread-safe. */
void net__wq_node_free(struct net__wq_node *n);

/* Pushes n; returns true when the queue was empty before, i.e. the caller
 * must make sure a flush happens. Wait-free. Thread-safe. */
bool net__wq_push(struct net__wq *q, struct net__wq_node *n);

/* True when nothing is pushed (a seq_cst load of the head). Any thread. */
static inline bool net__wq_empty(struct net__wq *q)
{
    return atomic_load_explicit(&q->head, memory_order_seq_cst) == NULL;
}

/* Takes everything pushed so far, oldest first, as a list linked through
 * `next` (NULL-terminated; *tail_out gets the last node). Returns NULL when
 * empty. Consumer only. */
struct net__wq_node *net__wq_take(struct net__wq *q, struct net__wq_node **tail_out);

/* Frees every node in the queue (consumer, at teardown). */
void net__wq_drain(struct net__wq *q);

#endif
