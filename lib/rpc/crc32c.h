/* CRC-32C (Castagnoli), the checksum baidu_std's checksum_type 1 names.
 * Pure functions over bytes; thread-safe. */
#ifndef NET__CRC32C_H
#define NET__CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* The CRC-32C of len bytes at p continued from crc (0 to start), so that
 * net__crc32c(net__crc32c(0, a, n), b, m) is the CRC of a then b. p may be
 * NULL when len is 0. net__crc32c(0, "123456789", 9) is 0xE3069283. */
uint32_t net__crc32c(uint32_t crc, const void *p, size_t len);

/* The same without the SSE4.2 instruction: what net__crc32c computes on a
 * CPU without it (exported so that the tests check both ways). */
uint32_t net__crc32c_portable(uint32_t crc, const void *p, size_t len);

/* brpc's masked form of a CRC, the one its checksum_value carries: a
 * rotation and an offset, so that a CRC over bytes that hold CRCs does not
 * degenerate. */
uint32_t net__crc32c_mask(uint32_t crc);

#endif
