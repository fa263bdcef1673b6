/* CRC-32C. On x86-64 with SSE4.2 (x86-64-v2 CPUs and later) the crc32
 * instruction does eight bytes at a time; elsewhere a four-bits-at-a-time
 * loop over a 64-byte table, slow (tens of MB/s) but always in cache and
 * short, since brpc sends checksums only when a caller asks for them. */
#include <stdbool.h>
#include <string.h>

#include "rpc/crc32c.h"

/* NIBBLE[i]: the reflected CRC (polynomial 0x82F63B78) of the 4-bit value i. */
static const uint32_t NIBBLE[16] = {
    0x00000000, 0x105ec76f, 0x20bd8ede, 0x30e349b1, 0x417b1dbc, 0x5125dad3,
    0x61c69362, 0x7198540d, 0x82f63b78, 0x92a8fc17, 0xa24bb5a6, 0xb21572c9,
    0xc38d26c4, 0xd3d3e1ab, 0xe330a81a, 0xf36e6f75,
};

static uint32_t crc_portable(uint32_t crc, const uint8_t *b, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        crc ^= b[i];
        crc = (crc >> 4) ^ NIBBLE[crc & 15];
        crc = (crc >> 4) ^ NIBBLE[crc & 15];
    }
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* The instruction computes the same reflected Castagnoli CRC, without the
 * initial and final inversions (done by the caller, as for the loop). */
__attribute__((target("sse4.2"))) static uint32_t crc_sse42(uint32_t crc, const uint8_t *b,
                                                            size_t len)
{
    uint64_t c = crc, w;
    for (; len >= 8; b += 8, len -= 8) {
        memcpy(&w, b, 8); /* unaligned, and little-endian as the CRC wants */
        c = __builtin_ia32_crc32di(c, w);
    }
    for (; len; b++, len--)
        c = __builtin_ia32_crc32qi((uint32_t)c, *b);
    return (uint32_t)c;
}

static bool have_sse42(void)
{
    return __builtin_cpu_supports("sse4.2");
}
#else
static uint32_t crc_sse42(uint32_t crc, const uint8_t *b, size_t len)
{
    return crc_portable(crc, b, len);
}

static bool have_sse42(void)
{
    return false;
}
#endif

uint32_t net__crc32c(uint32_t crc, const void *p, size_t len)
{
    if (len == 0)
        return crc;
    return ~(have_sse42() ? crc_sse42(~crc, p, len) : crc_portable(~crc, p, len));
}

uint32_t net__crc32c_portable(uint32_t crc, const void *p, size_t len)
{
    return len ? ~crc_portable(~crc, p, len) : crc;
}

/* The constant is leveldb's, which brpc's butil::crc32c::Mask also uses. */
uint32_t net__crc32c_mask(uint32_t crc)
{
    return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}
