/* The replaceable allocator. The four pointers are written once, before
 * any other thread uses the library (net_replace_allocator's contract), and
 * only read afterwards: thread creation orders that write before every
 * read, so plain variables suffice and the hot paths pay one indirect
 * call. */
#include <errno.h>
#include <stdlib.h>

#include <net/alloc.h>

#include "alloc_internal.h"

static struct {
    net_malloc_fn malloc_fn;
    net_realloc_fn realloc_fn;
    net_calloc_fn calloc_fn;
    net_free_fn free_fn;
} allocator = {malloc, realloc, calloc, free};

int net_replace_allocator(net_malloc_fn malloc_fn, net_realloc_fn realloc_fn,
                          net_calloc_fn calloc_fn, net_free_fn free_fn)
{
    if (!malloc_fn || !realloc_fn || !calloc_fn || !free_fn)
        return -EINVAL;
    allocator.malloc_fn = malloc_fn;
    allocator.realloc_fn = realloc_fn;
    allocator.calloc_fn = calloc_fn;
    allocator.free_fn = free_fn;
    return 0;
}

void *net__malloc(size_t size)
{
    return allocator.malloc_fn(size);
}

void *net__calloc(size_t count, size_t size)
{
    return allocator.calloc_fn(count, size);
}

void *net__realloc(void *ptr, size_t size)
{
    return allocator.realloc_fn(ptr, size);
}

void net__free(void *ptr)
{
    allocator.free_fn(ptr);
}
