/* Helpers shared by the fault-injection scenarios (test_faults_tcp.c,
 * test_faults_storm.c, test_faults_rpc.c) on top of net_test_util.h: CPU
 * accounting of this process, and position-dependent test streams.
 *
 * Everything is static inline so that a runner that uses only part of it
 * still builds with -Werror. */
#ifndef NET_TEST_FAULTS_COMMON_H
#define NET_TEST_FAULTS_COMMON_H

#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "net_test_util.h"

/* CPU time (user + system, all threads) this process has used, in ms. */
static inline int64_t cpu_ms_self(void)
{
    struct rusage r;
    CHECK(getrusage(RUSAGE_SELF, &r) == 0);
    return (int64_t)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1000 +
           (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1000;
}

/* ---- data ------------------------------------------------------------------------ */

/* Byte i of a test stream: position-dependent, so a lost, repeated or
 * reordered piece is caught without keeping a copy. */
static inline char stream_byte(uint64_t i)
{
    uint64_t x = i * 0x9E3779B97F4A7C15ull;
    return (char)(x >> 56 ^ x >> 29 ^ i);
}

static inline void stream_fill(char *p, uint64_t offset, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = stream_byte(offset + i);
}

static inline bool stream_matches(const char *p, uint64_t offset, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != stream_byte(offset + i))
            return false;
    return true;
}

/* A deterministic generator (xorshift): a failing run can be replayed. */
static inline uint64_t rng_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

#endif
