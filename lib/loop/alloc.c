/* The replaceable allocator. The four pointers are written once, before
 * any other thread uses the library (net_replace_allocator's contract), and
 * only read afterwards: thread creation orders that write before every
 * read, so plain variables suffice and the hot paths pay one indirect
 * call. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <sys/mman.h>
#include <unistd.h>

#include <net/alloc.h>

#include "loop/alloc_internal.h"

static struct {
    net_malloc_fn malloc_fn;
    net_realloc_fn realloc_fn;
    net_calloc_fn calloc_fn;
    net_free_fn free_fn;
    bool maps; /* the C library's functions: big blocks are mapped */
} allocator = {malloc, realloc, calloc, free, true};

int net_replace_allocator(net_malloc_fn malloc_fn, net_realloc_fn realloc_fn,
                          net_calloc_fn calloc_fn, net_free_fn free_fn)
{
    if (!malloc_fn || !realloc_fn || !calloc_fn || !free_fn)
        return -EINVAL;
    allocator.malloc_fn = malloc_fn;
    allocator.realloc_fn = realloc_fn;
    allocator.calloc_fn = calloc_fn;
    allocator.free_fn = free_fn;
    allocator.maps = malloc_fn == malloc && realloc_fn == realloc && calloc_fn == calloc &&
                     free_fn == free;
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

/* ---- blocks sized by the caller ------------------------------------------ */

/* Big blocks are mapped only while the C library's allocator is in place. A
 * replaced one gets them like every other block: alloc.h promises that it
 * sees all the library's memory, and it is how test_alloc_fail.c fails big
 * allocations too. */

size_t net__block_size(size_t size)
{
    if (size < NET__MAP_MIN)
        return size;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return size > SIZE_MAX - (page - 1) ? 0 : (size + page - 1) & ~(page - 1);
}

void *net__block_alloc(size_t size)
{
    if (size < NET__MAP_MIN || !allocator.maps)
        return allocator.malloc_fn(size);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* ThreadSanitizer does not intercept mremap: pages it moves keep no
 * history, and a range mapped again later at the same address by another
 * thread looks like a race with the bytes written there before. Under it,
 * a remap is a new mapping, a copy and an unmap. */
#if defined(__SANITIZE_THREAD__)
#define NET__NO_MREMAP 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define NET__NO_MREMAP 1
#endif
#endif

#ifdef NET__NO_MREMAP
static void *remap_by_copy(void *p, size_t old_size, size_t new_size)
{
    void *q = net__block_alloc(new_size);
    if (q) {
        memcpy(q, p, old_size < new_size ? old_size : new_size);
        munmap(p, old_size);
    }
    return q;
}
#endif

/* mremap moves the pages instead of copying their bytes, and the old range
 * is gone when it returns: a mapping never exists twice. */
void *net__block_remap(void *p, size_t old_size, size_t new_size)
{
    if (!allocator.maps)
        return allocator.realloc_fn(p, new_size);
#ifdef NET__NO_MREMAP
    return remap_by_copy(p, old_size, new_size);
#else
    void *q = mremap(p, old_size, new_size, MREMAP_MAYMOVE);
    return q == MAP_FAILED ? NULL : q;
#endif
}

void net__block_free(void *p, size_t size)
{
    if (size < NET__MAP_MIN || !allocator.maps)
        allocator.free_fn(p);
    else if (p)
        munmap(p, size);
}

void net__heap_trim(void)
{
#ifdef __GLIBC__
    if (allocator.maps)
        malloc_trim(0);
#endif
}
