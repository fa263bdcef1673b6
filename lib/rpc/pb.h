/* A minimal protobuf wire-format reader and writer: just enough for the
 * baidu_std meta (lib/rpc/baidu_codec.c). No schema, no allocation: the
 * reader walks a byte range field by field, the writer fills a byte array
 * whose size the caller computed first with the *_len functions.
 *
 * Wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32. Groups (3,
 * 4, deprecated) and the undefined types 6 and 7 are malformed, so is a
 * field number 0 or above 2^29 - 1, a varint longer than 10 bytes or one
 * whose 10th byte carries more than the 64th bit. All functions are pure
 * and thread-safe. */
#ifndef NET__PB_H
#define NET__PB_H

#include <stddef.h>
#include <stdint.h>

#define NET__PB_VARINT 0u
#define NET__PB_FIXED64 1u
#define NET__PB_LEN 2u
#define NET__PB_FIXED32 5u
#define NET__PB_MAX_VARINT_LEN 10
#define NET__PB_MAX_FIELD ((1u << 29) - 1)

/* The unread part of a message: [p, end). */
struct net__pb_reader {
    const uint8_t *p;
    const uint8_t *end;
};

/* One field as read. value holds a varint or a fixed32/fixed64 (in host
 * order); data/len a length-delimited field's bytes, pointing into the
 * reader's range (NULL/0 for the other wire types). */
struct net__pb_field {
    uint32_t number;
    unsigned wire;
    uint64_t value;
    const uint8_t *data;
    size_t len;
};

/* Reads one varint, advancing r. Returns 0, or -EPROTO (truncated, over 10
 * bytes, over 64 bits): r is then unchanged. Thread-safe. */
int net__pb_read_varint(struct net__pb_reader *r, uint64_t *v);

/* Reads one whole field (key and value), advancing r past it, so unknown
 * fields are skipped by ignoring them. Returns 1 (*f filled), 0 (r is
 * empty), -EPROTO (malformed: see the top of this file; or a value running
 * past r->end). Never reads at or past r->end. Thread-safe. */
int net__pb_read_field(struct net__pb_reader *r, struct net__pb_field *f);

/* Bytes the varint encoding of v takes: 1..10. Thread-safe. */
size_t net__pb_varint_len(uint64_t v);
/* Bytes of a varint field (key + value) and of a length-delimited field
 * (key + length + len bytes). Thread-safe. */
size_t net__pb_varint_field_len(uint32_t number, uint64_t v);
size_t net__pb_len_field_len(uint32_t number, size_t len);

/* Writers: each writes at p, which must have room for what the matching
 * *_len function says, and returns the end of what it wrote. A negative
 * int32/int64 is passed sign-extended to 64 bits (10 bytes), as protobuf
 * does. Thread-safe. */
uint8_t *net__pb_put_varint(uint8_t *p, uint64_t v);
uint8_t *net__pb_put_key(uint8_t *p, uint32_t number, unsigned wire);
uint8_t *net__pb_put_varint_field(uint8_t *p, uint32_t number, uint64_t v);
/* Writes the key and the length only: the caller writes len bytes after. */
uint8_t *net__pb_put_len_prefix(uint8_t *p, uint32_t number, size_t len);
uint8_t *net__pb_put_len_field(uint8_t *p, uint32_t number, const void *data, size_t len);

#endif
