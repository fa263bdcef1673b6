/* netloop test harness.
 *
 * Each test file defines scenarios with TEST(name) { ... }. The runner binary
 * runs one scenario per process: `test_loop loop_quit_before_run`; with no
 * argument it lists the names. meson.build reads the TEST( lines of every
 * file, so each scenario becomes its own named Meson test (run once with each
 * poller backend). A scenario fails by calling CHECK*, which prints where and
 * exits 1; SKIP() exits 77, which Meson reports as skipped. */
#ifndef NET_TEST_HARNESS_H
#define NET_TEST_HARNESS_H

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <net/error.h>

typedef void (*net_test_fn)(void);
void net_test_register(const char *name, net_test_fn fn);

#define TEST(name)                                                            \
    static void test_##name(void);                                            \
    __attribute__((constructor)) static void test_register_##name(void)       \
    {                                                                         \
        net_test_register(#name, test_##name);                                \
    }                                                                         \
    static void test_##name(void)

void net_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond))                                                          \
            net_test_fail(__FILE__, __LINE__, "CHECK(%s) failed", #cond);     \
    } while (0)

#define CHECK_EQ(a, b)                                                        \
    do {                                                                      \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);       \
        if (check_a_ != check_b_)                                             \
            net_test_fail(__FILE__, __LINE__, "%s == %s failed: %lld != %lld", \
                          #a, #b, check_a_, check_b_);                        \
    } while (0)

/* rc must be 0 (or >= 0); otherwise the error text is printed. */
#define CHECK_OK(expr)                                                        \
    do {                                                                      \
        long long check_rc_ = (long long)(expr);                              \
        if (check_rc_ < 0)                                                    \
            net_test_fail(__FILE__, __LINE__, "%s failed: %lld (%s)", #expr,  \
                          check_rc_, net_strerror((int)check_rc_));           \
    } while (0)

#define CHECK_MEM_EQ(a, b, n) CHECK(memcmp((a), (b), (n)) == 0)

#define SKIP(...)                                                             \
    do {                                                                      \
        fprintf(stderr, "SKIP: " __VA_ARGS__);                                \
        fputc('\n', stderr);                                                  \
        exit(77);                                                             \
    } while (0)

/* Monotonic milliseconds, for bounded loops in tests. */
uint64_t net_test_now_ms(void);

#endif
