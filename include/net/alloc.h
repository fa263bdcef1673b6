/* netloop — replacing the memory allocator.
 *
 * Every block of memory the library allocates for itself (loops, timers,
 * connections, buffers, queued sends, RPC calls and requests, ...) comes from
 * four functions that default to the C library's malloc, realloc, calloc and
 * free. net_replace_allocator() swaps them for the application's own: a
 * custom heap, an arena, accounting, or failure injection in tests (test/
 * test_alloc_fail.c makes the Nth allocation fail this way). With the
 * defaults, blocks of 128 KiB and more (buffer storage, queued sends) are
 * mapped with mmap instead, so that freeing them returns them to the kernel
 * whatever malloc's thresholds are; a replaced allocator gets those too.
 *
 * What the library does when an allocation fails: the public call that
 * needed the memory returns -ENOMEM (or the error its header documents),
 * or, when the memory was needed by a connection's own work where no caller
 * can be told (reading input, queueing a reply), that connection is closed
 * with one log line. Every RPC call still ends exactly once.
 *
 * The blocks that cross the API the other way: the reply body that
 * net_rpc_call_sync() stores in *body_out, and the body and attachment of
 * net_rpc_call_sync_with_attachment()'s reply, are allocated with the C
 * library's malloc(), whatever allocator is installed, so that callers free
 * them with free() as their documentation says. Everything else the library allocates it
 * also frees itself (user-visible buffers with net_buf_destroy()). */
#ifndef NET_ALLOC_H
#define NET_ALLOC_H

#include <stddef.h>

#include <net/error.h>
#include <net/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The four functions, with the C library's contracts: malloc(0) and
 * calloc(n, 0) may return NULL or a unique pointer, realloc(NULL, n) acts as
 * malloc(n), free(NULL) does nothing. A NULL return means "no memory". They
 * are called from any thread, including the library's own loop and worker
 * threads, concurrently: they must be thread-safe. */
typedef void *(*net_malloc_fn)(size_t size);
typedef void *(*net_realloc_fn)(void *ptr, size_t size);
typedef void *(*net_calloc_fn)(size_t count, size_t size);
typedef void (*net_free_fn)(void *ptr);

/* Makes the library allocate with these functions from now on. All four
 * are required (a NULL one gives -EINVAL and changes nothing); pass malloc,
 * realloc, calloc and free to go back to the defaults.
 *
 * Call it first, before any other netloop function, while the process has
 * no netloop object and no thread that uses the library: a block allocated
 * by one allocator must never reach another's free, and the library keeps
 * process-wide caches (the write path's node magazines) that outlive every
 * object. The library never frees the functions' own state; they must stay
 * usable until the process exits. Not thread-safe (see above).
 *
 * Returns 0 or -EINVAL. */
NET_EXPORT int net_replace_allocator(net_malloc_fn malloc_fn, net_realloc_fn realloc_fn,
                                     net_calloc_fn calloc_fn, net_free_fn free_fn);

#ifdef __cplusplus
}
#endif

#endif
