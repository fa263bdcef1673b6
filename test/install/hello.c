/* Built against an installed netloop through pkg-config (or as a Meson
 * subproject): proves the public headers and the library stand alone. */
#include <stdio.h>
#include <stdlib.h>

#include <net/alloc.h>
#include <net/loop.h>

static unsigned long allocations; /* single-threaded here */

static void *counting_malloc(size_t n)
{
    allocations++;
    return malloc(n);
}

static void *counting_realloc(void *p, size_t n)
{
    allocations++;
    return realloc(p, n);
}

static void *counting_calloc(size_t count, size_t n)
{
    allocations++;
    return calloc(count, n);
}

static void done(void *arg)
{
    *(int *)arg = 42;
    net_loop_quit(net_loop_current());
}

int main(void)
{
    if (net_replace_allocator(counting_malloc, counting_realloc, counting_calloc, free) < 0)
        return 1;
    net_loop_t *loop;
    int value = 0;
    if (net_loop_new(&loop) < 0)
        return 1;
    net_loop_queue_in_loop(loop, done, &value);
    net_loop_run(loop);
    net_loop_free(loop);
    printf("hello from netloop: %d (%lu allocations through the hook)\n", value, allocations);
    return value == 42 && allocations > 0 ? 0 : 1;
}
