/* The library's allocator (include/net/alloc.h): every block the library
 * owns comes from these and goes back through net__free, never through the
 * C library directly, so an application's allocator sees all of it. */
#ifndef NET__ALLOC_INTERNAL_H
#define NET__ALLOC_INTERNAL_H

#include <stddef.h>

void *net__malloc(size_t size);
void *net__calloc(size_t count, size_t size);
void *net__realloc(void *ptr, size_t size);
void net__free(void *ptr);

#endif
