/* The write queue and its node allocator.
 *
 * Small nodes come from a per-thread magazine (Bonwick's magazines): each
 * thread allocates from and frees into its own array of up to MAG_NODES
 * nodes without any synchronisation. Producers mostly allocate and the loop
 * thread mostly frees, so full and empty magazines flow through a global
 * depot under a mutex: one lock per MAG_NODES nodes, not one per send. The
 * depot keeps at most DEPOT_MAX full magazines; beyond that nodes go back to
 * malloc, so a burst does not pin memory forever.
 *
 * Other nodes are the size of their send, and from NET__MAP_MIN bytes on
 * (header included) mapped (net__block_alloc), so a large send or reply
 * returns to the kernel as soon as it is written. */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>

#include "loop/alloc_internal.h"
#include "tcp/write_queue.h"

#define UNLINKED ((struct net__wq_node *)(uintptr_t)1)
#define MAG_NODES 64
#define DEPOT_MAX 64

struct magazine {
    struct magazine *next;
    int n;
    struct net__wq_node *nodes[MAG_NODES];
};

static struct {
    pthread_mutex_t mu;
    struct magazine *full, *empty;
    int nfull;
} depot = {.mu = PTHREAD_MUTEX_INITIALIZER};

static _Thread_local struct magazine *mag;
static pthread_key_t mag_key;
static pthread_once_t mag_once = PTHREAD_ONCE_INIT;

/* ---- the depot ------------------------------------------------------------------- */

static void free_magazine(struct magazine *m)
{
    for (int i = 0; i < m->n; i++)
        net__free(m->nodes[i]);
    net__free(m);
}

/* Trades `give` (full, empty or NULL) for a magazine with nodes (want_full)
 * or with room. Returns NULL if the depot has none. */
static struct magazine *depot_exchange(struct magazine *give, bool want_full)
{
    struct magazine *drop = NULL, *got;
    pthread_mutex_lock(&depot.mu);
    if (give && give->n == 0) {
        give->next = depot.empty;
        depot.empty = give;
    } else if (give && depot.nfull < DEPOT_MAX) {
        give->next = depot.full;
        depot.full = give;
        depot.nfull++;
    } else {
        drop = give;
    }
    struct magazine **list = want_full ? &depot.full : &depot.empty;
    if ((got = *list)) {
        *list = got->next;
        depot.nfull -= want_full;
    }
    pthread_mutex_unlock(&depot.mu);
    if (drop)
        free_magazine(drop);
    return got;
}

/* A thread's magazine goes back to the depot when the thread exits. */
static void thread_exit(void *m)
{
    mag = NULL;
    /* Hand in ours, take one empty magazine out and free it, so the empty
     * list does not grow with every thread that ever sent. */
    net__free(depot_exchange(m, false));
}

static void make_key(void)
{
    pthread_key_create(&mag_key, thread_exit);
}

static void set_magazine(struct magazine *m)
{
    pthread_once(&mag_once, make_key);
    mag = m;
    pthread_setspecific(mag_key, m);
}

/* ---- nodes ------------------------------------------------------------------------- */

/* A mapped node's cap takes in the rest of its last page: its block is
 * then sizeof header + cap, and node_block_free needs nothing else. */
static struct net__wq_node *node_block_alloc(size_t cap)
{
    struct net__wq_node *n;
    if (cap > SIZE_MAX - sizeof *n)
        return NULL;
    size_t size = net__block_size(sizeof *n + cap);
    n = size ? net__block_alloc(size) : NULL;
    if (n)
        n->cap = size - sizeof *n;
    return n;
}

static void node_block_free(struct net__wq_node *n)
{
    net__block_free(n, sizeof *n + n->cap);
}

struct net__wq_node *net__wq_node_alloc(size_t len)
{
    struct net__wq_node *n;
    if (len > NET__WQ_SMALL) {
        n = node_block_alloc(len);
    } else {
        if (!mag || mag->n == 0) {
            struct magazine *full = depot_exchange(mag, true);
            set_magazine(full);
        }
        n = mag ? mag->nodes[--mag->n] : node_block_alloc(NET__WQ_SMALL);
    }
    if (n) {
        n->len = len;
        n->off = 0;
    }
    return n;
}

void net__wq_node_free(struct net__wq_node *n)
{
    if (!n)
        return;
    if (n->cap != NET__WQ_SMALL) {
        node_block_free(n);
        return;
    }
    if (!mag || mag->n == MAG_NODES) {
        struct magazine *room = depot_exchange(mag, false);
        if (!room && (room = net__malloc(sizeof *room)))
            room->n = 0;
        set_magazine(room);
        if (!room) {
            net__free(n);
            return;
        }
    }
    mag->nodes[mag->n++] = n;
}

/* ---- the queue ------------------------------------------------------------------------ */

bool net__wq_push(struct net__wq *q, struct net__wq_node *n)
{
    atomic_store_explicit(&n->next, UNLINKED, memory_order_relaxed);
    struct net__wq_node *prev = atomic_exchange_explicit(&q->head, n, memory_order_seq_cst);
    atomic_store_explicit(&n->next, prev, memory_order_release);
    return prev == NULL;
}

/* The producer of n has exchanged the head but not yet stored n->next: it
 * is between two instructions, so this wait is short unless it was
 * preempted right there; yielding lets it run on a busy machine. */
static struct net__wq_node *linked_next(struct net__wq_node *n)
{
    struct net__wq_node *next;
    while ((next = atomic_load_explicit(&n->next, memory_order_acquire)) == UNLINKED)
        sched_yield();
    return next;
}

struct net__wq_node *net__wq_take(struct net__wq *q, struct net__wq_node **tail_out)
{
    struct net__wq_node *top = atomic_exchange_explicit(&q->head, NULL, memory_order_acq_rel);
    struct net__wq_node *fifo = NULL;
    *tail_out = top;
    /* Newest first on the stack: reversing gives oldest first. */
    while (top) {
        struct net__wq_node *next = linked_next(top);
        atomic_store_explicit(&top->next, fifo, memory_order_relaxed);
        fifo = top;
        top = next;
    }
    return fifo;
}

void net__wq_drain(struct net__wq *q)
{
    struct net__wq_node *tail;
    for (struct net__wq_node *n = net__wq_take(q, &tail), *next; n; n = next) {
        next = atomic_load_explicit(&n->next, memory_order_relaxed);
        net__wq_node_free(n);
    }
}
