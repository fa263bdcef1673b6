/* Batched wakeups for synchronous waiters: see waitset.h. */
#include "rpc/waitset.h"

#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

static long futex(atomic_uint *word, int op, unsigned val, uint32_t bits)
{
    return syscall(SYS_futex, (unsigned *)word, op, val, NULL, NULL, bits);
}

void net__waitset_init(struct net__waitset *ws)
{
    atomic_init(&ws->word, 0);
    atomic_init(&ws->sleepers, 0);
    ws->pending = 0;
}

/* Round robin over the 32 bits, once per thread. */
static uint32_t thread_bit(void)
{
    static atomic_uint next;
    static _Thread_local uint32_t bit;
    if (!bit)
        bit = 1u << (atomic_fetch_add_explicit(&next, 1, memory_order_relaxed) % 32);
    return bit;
}

void net__waiter_init(struct net__waiter *w)
{
    atomic_init(&w->ready, false);
    w->bit = thread_bit();
}

void net__waitset_wait(struct net__waitset *ws, struct net__waiter *w)
{
    while (!atomic_load_explicit(&w->ready, memory_order_acquire)) {
        atomic_fetch_add(&ws->sleepers, 1);
        unsigned v = atomic_load(&ws->word);
        if (!atomic_load_explicit(&w->ready, memory_order_acquire))
            futex(&ws->word, FUTEX_WAIT_BITSET_PRIVATE, v, w->bit); /* EAGAIN, EINTR: look again */
        atomic_fetch_sub(&ws->sleepers, 1);
    }
}

void net__waitset_mark(struct net__waitset *ws, struct net__waiter *w)
{
    ws->pending |= w->bit; /* before the store: w may be gone after it */
    atomic_store_explicit(&w->ready, true, memory_order_release);
}

void net__waitset_wake(struct net__waitset *ws)
{
    uint32_t bits = ws->pending;
    if (!bits)
        return;
    ws->pending = 0;
    atomic_fetch_add(&ws->word, 1);
    if (atomic_load(&ws->sleepers) > 0)
        futex(&ws->word, FUTEX_WAKE_BITSET_PRIVATE, INT_MAX, bits);
}
