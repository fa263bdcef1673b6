/* Protobuf wire format (see lib/rpc/pb.h). */
#include <errno.h>
#include <string.h>

#include "rpc/pb.h"

/* ---- Reading ------------------------------------------------------------- */

int net__pb_read_varint(struct net__pb_reader *r, uint64_t *v)
{
    uint64_t out = 0;
    const uint8_t *p = r->p;
    for (int i = 0; i < NET__PB_MAX_VARINT_LEN && p < r->end; i++) {
        uint8_t b = *p++;
        /* The 10th byte holds bit 63 only: anything more does not fit. */
        if (i == NET__PB_MAX_VARINT_LEN - 1 && b > 1)
            return -EPROTO;
        out |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            r->p = p;
            *v = out;
            return 0;
        }
    }
    return -EPROTO; /* truncated, or a continuation bit on the 10th byte */
}

static int read_fixed(struct net__pb_reader *r, size_t n, uint64_t *v)
{
    if ((size_t)(r->end - r->p) < n)
        return -EPROTO;
    uint64_t out = 0;
    for (size_t i = n; i-- > 0; )
        out = out << 8 | r->p[i]; /* little-endian on the wire */
    r->p += n;
    *v = out;
    return 0;
}

static int read_len(struct net__pb_reader *r, struct net__pb_field *f)
{
    uint64_t n;
    if (net__pb_read_varint(r, &n) < 0 || n > (uint64_t)(r->end - r->p))
        return -EPROTO;
    f->data = r->p;
    f->len = (size_t)n;
    r->p += n;
    return 0;
}

static int read_value(struct net__pb_reader *r, struct net__pb_field *f)
{
    switch (f->wire) {
    case NET__PB_VARINT: return net__pb_read_varint(r, &f->value);
    case NET__PB_FIXED64: return read_fixed(r, 8, &f->value);
    case NET__PB_LEN: return read_len(r, f);
    case NET__PB_FIXED32: return read_fixed(r, 4, &f->value);
    default: return -EPROTO; /* groups (3, 4) and the undefined 6, 7 */
    }
}

int net__pb_read_field(struct net__pb_reader *r, struct net__pb_field *f)
{
    if (r->p >= r->end)
        return 0;
    struct net__pb_reader at = *r; /* r moves only past a whole field */
    uint64_t key;
    memset(f, 0, sizeof *f);
    if (net__pb_read_varint(&at, &key) < 0 || key >> 3 == 0 || key >> 3 > NET__PB_MAX_FIELD)
        return -EPROTO;
    f->number = (uint32_t)(key >> 3);
    f->wire = (unsigned)(key & 7);
    if (read_value(&at, f) < 0)
        return -EPROTO;
    *r = at;
    return 1;
}

/* ---- Writing ------------------------------------------------------------- */

size_t net__pb_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint64_t key_of(uint32_t number, unsigned wire)
{
    return (uint64_t)number << 3 | wire;
}

size_t net__pb_varint_field_len(uint32_t number, uint64_t v)
{
    return net__pb_varint_len(key_of(number, NET__PB_VARINT)) + net__pb_varint_len(v);
}

size_t net__pb_len_field_len(uint32_t number, size_t len)
{
    return net__pb_varint_len(key_of(number, NET__PB_LEN)) + net__pb_varint_len(len) + len;
}

uint8_t *net__pb_put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

uint8_t *net__pb_put_key(uint8_t *p, uint32_t number, unsigned wire)
{
    return net__pb_put_varint(p, key_of(number, wire));
}

uint8_t *net__pb_put_varint_field(uint8_t *p, uint32_t number, uint64_t v)
{
    return net__pb_put_varint(net__pb_put_key(p, number, NET__PB_VARINT), v);
}

uint8_t *net__pb_put_len_prefix(uint8_t *p, uint32_t number, size_t len)
{
    return net__pb_put_varint(net__pb_put_key(p, number, NET__PB_LEN), len);
}

uint8_t *net__pb_put_len_field(uint8_t *p, uint32_t number, const void *data, size_t len)
{
    p = net__pb_put_len_prefix(p, number, len);
    if (len > 0)
        memcpy(p, data, len); /* data may be NULL when len is 0 */
    return p + len;
}
