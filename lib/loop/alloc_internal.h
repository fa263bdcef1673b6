/* The library's allocator (include/net/alloc.h): every block the library
 * owns comes from these and goes back through net__free (or, for blocks
 * sized by the caller, net__block_free), never through the C library
 * directly, so an application's allocator sees all of it. */
#ifndef NET__ALLOC_INTERNAL_H
#define NET__ALLOC_INTERNAL_H

#include <stddef.h>

void *net__malloc(size_t size);
void *net__calloc(size_t count, size_t size);
void *net__realloc(void *ptr, size_t size);
void net__free(void *ptr);

/* Blocks of this size and more are mapped with mmap, not malloc'd, so that
 * freeing one returns it to the kernel at once. glibc's malloc would map
 * them too at first, but each free of a mapped chunk raises its dynamic
 * mmap threshold to that chunk's size (up to 32 MiB): later blocks that big
 * come from the heap, and a heap free returns memory only at the heap's
 * top. The library may not change that process-wide (mallopt). The line
 * is glibc's own first threshold, 128 KiB: hundreds of connections growing
 * buffers past it together (partial frames against the memory budget) left
 * the heap holding what they had passed through, 1 MiB each at a 1 MiB
 * line, RSS far over the budget. From 128 KiB the syscalls and the page
 * rounding cost little next to filling the block.
 * With a replaced allocator (net_replace_allocator) nothing is mapped: big
 * blocks go to it like the rest. */
#define NET__MAP_MIN ((size_t)128 << 10)

/* Blocks whose size the caller keeps (buffer storage, queued sends) and
 * passes back: mapped from NET__MAP_MIN bytes on, net__malloc'd below.
 *   net__block_size: the size to allocate for `size` bytes: size itself
 *     below NET__MAP_MIN, whole pages from there on; 0 if that overflows.
 *   net__block_alloc: a block of `size` bytes, a result of net__block_size
 *     (uninitialised); NULL on no memory.
 *   net__block_remap: resizes a block whose old and new sizes are both
 *     NET__MAP_MIN or more, keeping its bytes (it may move); NULL on no
 *     memory, the block then unchanged.
 *   net__block_free: frees it; size as allocated (or remapped). NULL is
 *     ignored.
 * Thread-safe, like net__malloc. */
size_t net__block_size(size_t size);
void *net__block_alloc(size_t size);
void *net__block_remap(void *p, size_t old_size, size_t new_size);
void net__block_free(void *p, size_t size);

/* Hands free heap pages back to the kernel (glibc's malloc_trim), only with
 * the C library's allocator; a no-op elsewhere. Medium blocks (below
 * NET__MAP_MIN: queued sends of a slow reader, say) freed in thousands
 * leave holes in the heap that glibc returns only at its top, so a burst
 * would keep its peak RSS after every connection of it is gone; this is no
 * malloc setting, only a walk over the free lists. Costs a lock and a walk:
 * call it rarely. Thread-safe. */
void net__heap_trim(void);

#endif
