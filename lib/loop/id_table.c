#include <errno.h>

#include "loop/alloc_internal.h"
#include "loop/id_table.h"

void net__id_table_init(struct net__id_table *t)
{
    *t = (struct net__id_table){0};
}

void net__id_table_free(struct net__id_table *t)
{
    net__free(t->buckets);
    net__id_table_init(t);
}

static struct net__id_node **bucket(const struct net__id_table *t, uint64_t id)
{
    return &t->buckets[id & (t->size - 1)];
}

static int rehash(struct net__id_table *t, size_t size)
{
    struct net__id_node **old = t->buckets;
    size_t old_size = t->size;
    t->buckets = net__calloc(size, sizeof *t->buckets);
    if (!t->buckets) {
        t->buckets = old;
        return -ENOMEM;
    }
    t->size = size;
    for (size_t i = 0; i < old_size; i++) {
        for (struct net__id_node *n = old[i], *next; n; n = next) {
            next = n->next;
            n->next = *bucket(t, n->id);
            *bucket(t, n->id) = n;
        }
    }
    net__free(old);
    return 0;
}

int net__id_table_reserve(struct net__id_table *t, size_t n)
{
    size_t size = t->size ? t->size : 64;
    while (size < n)
        size *= 2;
    return size == t->size ? 0 : rehash(t, size);
}

int net__id_table_insert(struct net__id_table *t, struct net__id_node *n)
{
    if (t->count >= t->size && rehash(t, t->size ? t->size * 2 : 64) < 0 && !t->size)
        return -ENOMEM;
    n->next = *bucket(t, n->id);
    *bucket(t, n->id) = n;
    t->count++;
    return 0;
}

struct net__id_node *net__id_table_find(const struct net__id_table *t, uint64_t id)
{
    if (!t->size)
        return NULL;
    struct net__id_node *n = *bucket(t, id);
    while (n && n->id != id)
        n = n->next;
    return n;
}

struct net__id_node *net__id_table_take(struct net__id_table *t, uint64_t id)
{
    if (!t->size)
        return NULL;
    for (struct net__id_node **p = bucket(t, id); *p; p = &(*p)->next) {
        if ((*p)->id == id) {
            struct net__id_node *n = *p;
            *p = n->next;
            t->count--;
            return n;
        }
    }
    return NULL;
}

struct net__id_node *net__id_table_pop(struct net__id_table *t)
{
    for (size_t i = 0; i < t->size && t->count; i++) {
        struct net__id_node **b = &t->buckets[(t->scan + i) & (t->size - 1)];
        if (*b) {
            struct net__id_node *n = *b;
            *b = n->next;
            t->count--;
            t->scan = (t->scan + i) & (t->size - 1);
            return n;
        }
    }
    return NULL;
}
