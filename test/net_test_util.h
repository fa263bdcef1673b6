/* Scaffolding shared by the scenarios that run loops and sockets: bounded
 * waiting, watchdogs, running a loop until something holds, helper threads,
 * and blocking loopback client sockets whose every call times out.
 *
 * Everything here fails the scenario (net_test_fail) instead of returning an
 * error the caller would have to check, except where the comment says what
 * comes back. */
#ifndef NET_TEST_UTIL_H
#define NET_TEST_UTIL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <net/addr.h>
#include <net/loop.h>
#include <net/tcp_conn.h>
#include <net/tcp_server.h>

#include "harness.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

/* Sanitized builds run 4-10x slower (test timeouts are scaled x4): scenarios
 * scale their counts and bounds with SCALED so that each finishes well inside
 * its timeout. gcc defines __SANITIZE_*__, clang has __has_feature. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define NET_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define NET_TEST_SANITIZED 1
#endif
#endif
#ifndef NET_TEST_SANITIZED
#define NET_TEST_SANITIZED 0
#endif

#define SCALED(plain, sanitized) (NET_TEST_SANITIZED ? (sanitized) : (plain))

/* Below Meson's timeout (60 s, x4 sanitized), so a hang fails with a
 * message instead of a kill. */
#define NET_TEST_WATCHDOG_S SCALED(55, 220)
/* The longest any single condition may take to come true. */
#define NET_TEST_WAIT_MS SCALED(20000, 80000)
/* Bound on any single call of a blocking client socket. */
#define NET_TEST_IO_TIMEOUT_MS 20000

/* ---- time and waiting ------------------------------------------------------ */

void net_test_sleep_ms(unsigned ms);

/* Polls cond every millisecond; fails if it is still false after
 * NET_TEST_WAIT_MS. */
#define WAIT_UNTIL(cond)                                                             \
    do {                                                                             \
        uint64_t wait_deadline_ = net_test_now_ms() + NET_TEST_WAIT_MS;              \
        while (!(cond)) {                                                            \
            if (net_test_now_ms() > wait_deadline_)                                  \
                net_test_fail(__FILE__, __LINE__, "timed out waiting for %s", #cond); \
            net_test_sleep_ms(1);                                                    \
        }                                                                            \
    } while (0)

/* Fails the scenario after NET_TEST_WATCHDOG_S (SIGALRM, which goes to the
 * main thread: loop threads block every signal). For scenarios whose main
 * thread does not run a loop. */
void net_test_watchdog_start(void);

/* A new loop with a timer that fails the scenario after watchdog_ms, for
 * scenarios that run the loop on their main thread. */
net_loop_t *net_test_new_loop(uint64_t watchdog_ms);

/* ---- running a loop ---------------------------------------------------------- */

/* A timer callback: quits the loop it fires on (arg is ignored). */
void net_test_quit_loop(net_loop_t *loop, net_timer_id_t id, void *arg);

/* Runs the loop for ms milliseconds. */
void net_test_run_for(net_loop_t *loop, uint64_t ms);

/* Runs the loop until cond(arg) holds (checked every millisecond on the loop
 * thread); fails if it does not within NET_TEST_WAIT_MS. */
void net_test_run_until(net_loop_t *loop, bool (*cond)(void *), void *arg);

/* Runs the loop until *count >= n. */
void net_test_run_until_count(net_loop_t *loop, atomic_int *count, int n);

/* Runs fn(arg) on loop's thread (not the caller's) and waits until it has
 * returned. */
void net_test_on_loop(net_loop_t *loop, void (*fn)(void *), void *arg);

/* ---- helper threads ------------------------------------------------------------ */

struct net_test_job {
    void (*fn)(void *arg);
    void *arg;
    pthread_t thread;
    atomic_bool done;
};

/* Runs fn(arg) on a new thread. */
void net_test_job_start(struct net_test_job *j, void (*fn)(void *), void *arg);
/* Whether the job's fn has returned (a net_test_run_until condition). */
bool net_test_job_done(void *job);
void net_test_job_join(struct net_test_job *j);

/* Runs fn(arg) on a helper thread while the loop runs, until fn returns. */
void net_test_run_with_client(net_loop_t *loop, void (*fn)(void *), void *arg);

/* ---- server-side connections ------------------------------------------------------ */

/* What a server's connection callback saw: the connection that came up last
 * (with a reference the scenario drops) and how many came up and went down. */
struct net_test_conn_keeper {
    _Atomic(net_conn_t *) conn;
    atomic_int ups, downs;
};

/* An on_connection callback whose arg is a struct net_test_conn_keeper. */
void net_test_keep_conn(net_conn_t *conn, void *keeper);

/* ---- closing a server --------------------------------------------------------------- */

/* The server's stats, by value (net_test_server_stats(s).accepted). */
struct net_server_stats net_test_server_stats(net_server_t *server);

/* The server's open connections (from its stats). */
size_t net_test_server_conns(net_server_t *server);

/* A net_test_run_until condition: the server (arg) has no connection open. */
bool net_test_server_idle(void *server);

/* Closes the server, whose base loop is `loop` (the caller's thread's), with
 * drain_ms, and runs the loop until its done has run. Checks that a second
 * close returns -EALREADY and that done runs exactly once, on the loop, not
 * inside the close call, with no connection left. The server is gone after. */
void net_test_server_close(net_loop_t *loop, net_server_t *server, uint64_t drain_ms);

/* ---- blocking client sockets ----------------------------------------------------- */

/* A blocking stream socket of family whose calls time out after timeout_ms.
 * rcvbuf > 0 sets SO_RCVBUF (before connect, so that the advertised window
 * is small from the start). TCP sockets get TCP_NODELAY. */
int net_test_socket(int family, int rcvbuf, unsigned timeout_ms);

/* Connected to addr (IPv4, IPv6 or Unix), with NET_TEST_IO_TIMEOUT_MS; fails
 * otherwise. On loopback connect completes in the listener's backlog: no
 * loop needs to run. */
int net_test_connect(const net_addr_t *addr, int rcvbuf);

/* Closes with a reset instead of a FIN (SO_LINGER {1, 0}). */
void net_test_close_reset(int fd);

/* Writes everything; false if the peer is gone (EPIPE, ECONNRESET). Any
 * other error or a timeout fails. */
bool net_test_send_all(int fd, const void *data, size_t n);

/* Reads exactly n bytes; EOF, an error or a timeout fails. */
void net_test_recv_exact(int fd, void *data, size_t n);

/* Connects, sends msg and checks that it comes back byte for byte. */
void net_test_echo_once(const net_addr_t *addr, const char *msg);

struct net_test_echo {
    net_addr_t addr;
    const char *msg;
};

/* net_test_echo_once as a helper-thread fn: echo is a struct net_test_echo. */
void net_test_echo_client(void *echo);

/* Descriptors open in this process, not counting the one used to count. */
int net_test_count_open_fds(void);

/* ---- memory -------------------------------------------------------------------- */

/* The process's resident set size in bytes (/proc/self/statm). */
size_t net_test_rss_bytes(void);

/* Puts glibc's malloc where it keeps big blocks: frees a mapped 30 MiB
 * chunk, which raises its mmap threshold to 30 MiB (its trim threshold to
 * twice that), so malloc then serves smaller blocks from the heap and their
 * frees need not reach the kernel (a 64 MiB buffer grown on malloc kept
 * 32 MiB resident after its free). Scenarios that check that memory
 * goes back run after it, so that they do not depend on malloc's state. */
void net_test_raise_malloc_mmap_threshold(void);

/* Makes every allocation the library asks for of min bytes or more fail,
 * until called again (SIZE_MAX: none fails). The first call installs the
 * failing allocator (net_replace_allocator, over the C library's): it must
 * come before any other netloop call. */
void net_test_fail_allocs_from(size_t min);

#endif
