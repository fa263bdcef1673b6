/* brpc's echo messages (EchoRequest and EchoResponse, both
 * `required string message = 1;`) on the protobuf wire, for rpc_call and
 * rpc_bench talking to brpc's echo servers. Header-only: the tools link
 * the public library only, and the codec's protobuf layer is internal. */
#ifndef NETLOOP_TOOLS_ECHO_PB_H
#define NETLOOP_TOOLS_ECHO_PB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Room echo_pb_wrap needs for a message of len bytes. */
#define ECHO_PB_ROOM(len) ((len) + 11)

/* Writes the message { 1: msg } at out (ECHO_PB_ROOM(len) bytes) and
 * returns its length. */
static inline size_t echo_pb_wrap(uint8_t *out, const void *msg, size_t len)
{
    size_t n = 0;
    out[n++] = 0x0a; /* field 1, wire type 2 */
    for (uint64_t v = len; ; v >>= 7) {
        out[n++] = (uint8_t)(v > 0x7f ? (v & 0x7f) | 0x80 : v);
        if (v <= 0x7f)
            break;
    }
    if (len)
        memcpy(out + n, msg, len);
    return n + len;
}

static inline bool echo_pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

/* Skips a field's value of wire type `wire`; false when malformed. */
static inline bool echo_pb_skip(const uint8_t **p, const uint8_t *end, unsigned wire)
{
    uint64_t v;
    size_t fixed = wire == 1 ? 8 : wire == 5 ? 4 : 0;
    if (wire == 0)
        return echo_pb_varint(p, end, &v);
    if (wire == 2) {
        if (!echo_pb_varint(p, end, &v) || v > (uint64_t)(end - *p))
            return false;
        *p += v;
        return true;
    }
    if (!fixed || (size_t)(end - *p) < fixed)
        return false;
    *p += fixed;
    return true;
}

/* The string of field 1 of the message buf[0..len) in *msg, *msg_len (the
 * last one, as protobuf reads repeated scalars); false when the bytes are
 * malformed or have no field 1 of wire type 2. */
static inline bool echo_pb_unwrap(const void *buf, size_t len, const uint8_t **msg,
                                  size_t *msg_len)
{
    const uint8_t *p = buf, *end = p + len;
    bool found = false;
    while (p < end) {
        uint64_t key, n;
        if (!echo_pb_varint(&p, end, &key))
            return false;
        if (key != 0x0a) {
            if (!echo_pb_skip(&p, end, (unsigned)(key & 7)))
                return false;
            continue;
        }
        if (!echo_pb_varint(&p, end, &n) || n > (uint64_t)(end - p))
            return false;
        *msg = p;
        *msg_len = (size_t)n;
        p += n;
        found = true;
    }
    return found;
}

#endif
