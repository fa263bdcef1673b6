/* An id-keyed hash table of intrusive nodes: timers by timer id, RPC calls
 * by call id. Ids are sequence numbers, so the low bits spread well and the
 * bucket is id & (size - 1) with no hashing. Chains make removal O(1)
 * amortised without tombstones; the table doubles when it holds as many
 * nodes as buckets and never shrinks (a burst's peak is the likely next
 * burst's size too).
 *
 * No locking of its own: a table is used by one thread (a loop) or under
 * its owner's lock (the timer queue). */
#ifndef NET__ID_TABLE_H
#define NET__ID_TABLE_H

#include <stddef.h>
#include <stdint.h>

/* Embedded in the object the table holds. */
struct net__id_node {
    struct net__id_node *next;
    uint64_t id;
};

struct net__id_table {
    struct net__id_node **buckets;
    size_t size;  /* a power of two, or 0 before the first insert */
    size_t count;
    size_t scan;  /* net__id_table_pop resumes here: draining is O(size) */
};

/* An empty table; it allocates on its first insert (or net__id_table_reserve). */
void net__id_table_init(struct net__id_table *t);

/* Frees the buckets (not the nodes). */
void net__id_table_free(struct net__id_table *t);

/* Makes room for `n` nodes without growing. Returns 0 or -ENOMEM. */
int net__id_table_reserve(struct net__id_table *t, size_t n);

/* Adds a node whose id is set and not in the table. Growing is
 * best-effort once buckets exist (without memory the chains get longer);
 * returns -ENOMEM only when there are no buckets at all, else 0. */
int net__id_table_insert(struct net__id_table *t, struct net__id_node *n);

/* The node with this id, or NULL. */
struct net__id_node *net__id_table_find(const struct net__id_table *t, uint64_t id);

/* Removes and returns the node with this id, or NULL. */
struct net__id_node *net__id_table_take(struct net__id_table *t, uint64_t id);

/* Removes and returns some node, or NULL when empty (to drain the table). */
struct net__id_node *net__id_table_pop(struct net__id_table *t);

#endif
