/* Helpers shared by the fault-injection scenarios (test_faults_tcp.c,
 * test_faults_rpc.c): sanitizer-aware scaling, a watchdog, bounded waits,
 * descriptor and CPU accounting of this process, and raw loopback sockets
 * that misbehave on purpose (reset instead of close, never read).
 *
 * Everything is static inline so that a runner that uses only part of it
 * still builds with -Werror. */
#ifndef NET_TEST_FAULTS_COMMON_H
#define NET_TEST_FAULTS_COMMON_H

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <net/addr.h>
#include <net/loop.h>

#include "harness.h"

/* Sanitized builds run 4-10x slower (test timeouts are scaled x4): the
 * scenarios scale their counts down there so that each finishes well inside
 * its timeout. gcc defines __SANITIZE_*__, clang has __has_feature. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FAULTS_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define FAULTS_SANITIZED 1
#endif
#endif
#ifndef FAULTS_SANITIZED
#define FAULTS_SANITIZED 0
#endif

#define SCALED(plain, sanitized) (FAULTS_SANITIZED ? (sanitized) : (plain))

/* Below Meson's timeout (60 s, x4 sanitized), so a hang fails with a
 * message instead of a kill. */
#define WATCHDOG_S SCALED(55, 220)
/* The longest any single condition may take to come true. */
#define WAIT_MS SCALED(20000, 80000)

#define KiB 1024u
#define MiB (1024u * 1024u)

/* ---- time and waiting ------------------------------------------------------ */

static inline void watchdog_fired(int sig)
{
    (void)sig;
    static const char msg[] = "FAIL watchdog: the scenario did not finish in time\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(1);
}

/* SIGALRM goes to the main thread: loop threads block every signal. */
static inline void watchdog_start(void)
{
    signal(SIGALRM, watchdog_fired);
    alarm(WATCHDOG_S);
}

static inline void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

#define WAIT_UNTIL(cond)                                                             \
    do {                                                                             \
        uint64_t wait_deadline_ = net_test_now_ms() + WAIT_MS;                       \
        while (!(cond)) {                                                            \
            if (net_test_now_ms() > wait_deadline_)                                  \
                net_test_fail(__FILE__, __LINE__, "timed out waiting for %s", #cond); \
            sleep_ms(1);                                                             \
        }                                                                            \
    } while (0)

/* CPU time (user + system, all threads) this process has used, in ms. */
static inline int64_t cpu_ms_self(void)
{
    struct rusage r;
    CHECK(getrusage(RUSAGE_SELF, &r) == 0);
    return (int64_t)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1000 +
           (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1000;
}

/* ---- descriptors ------------------------------------------------------------- */

/* Descriptors open in this process, not counting the one used to count. */
static inline int count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    CHECK(d != NULL);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;
}

/* ---- running work on a loop thread -------------------------------------------- */

struct on_loop_job {
    void (*fn)(void *);
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool done;
};

static inline void on_loop_run(void *p)
{
    struct on_loop_job *job = p;
    job->fn(job->arg);
    pthread_mutex_lock(&job->mu);
    job->done = true;
    pthread_cond_signal(&job->cond);
    pthread_mutex_unlock(&job->mu);
}

/* Runs fn(arg) on loop's thread (not this one) and waits until it returned. */
static inline void on_loop(net_loop_t *loop, void (*fn)(void *), void *arg)
{
    struct on_loop_job job = {.fn = fn, .arg = arg, .mu = PTHREAD_MUTEX_INITIALIZER,
                              .cond = PTHREAD_COND_INITIALIZER};
    CHECK_OK(net_loop_queue_in_loop(loop, on_loop_run, &job));
    pthread_mutex_lock(&job.mu);
    while (!job.done)
        pthread_cond_wait(&job.cond, &job.mu);
    pthread_mutex_unlock(&job.mu);
    pthread_cond_destroy(&job.cond);
    pthread_mutex_destroy(&job.mu);
}

/* ---- raw client sockets --------------------------------------------------------- */

/* A blocking TCP socket whose calls time out after timeout_ms. rcvbuf > 0
 * sets SO_RCVBUF (before connect, so the advertised window is small from the
 * start). */
static inline int raw_socket(int rcvbuf, unsigned timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    CHECK(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0);
    int one = 1;
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
    if (rcvbuf > 0)
        CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) == 0);
    return fd;
}

/* Connected to addr, or the scenario fails. On loopback connect completes
 * in the listener's backlog: no loop needs to run. */
static inline int raw_connect(const net_addr_t *addr, int rcvbuf)
{
    int fd = raw_socket(rcvbuf, 10000);
    if (connect(fd, net_addr_sockaddr(addr), net_addr_len(addr)) < 0)
        net_test_fail(__FILE__, __LINE__, "connect: %s", strerror(errno));
    return fd;
}

/* Closes with a reset instead of a FIN (SO_LINGER {1, 0}). */
static inline void raw_reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    CHECK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
    CHECK(close(fd) == 0);
}

/* Writes everything; false if the peer is gone (EPIPE, ECONNRESET). */
static inline bool raw_write(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EPIPE || errno == ECONNRESET))
            return false;
        if (w <= 0)
            net_test_fail(__FILE__, __LINE__, "send: %s", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Reads exactly n bytes; EOF, an error or a timeout fails. */
static inline void raw_read_exact(int fd, void *data, size_t n)
{
    char *p = data;
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            net_test_fail(__FILE__, __LINE__, "recv: %s", r ? strerror(errno) : "EOF");
        p += r;
        n -= (size_t)r;
    }
}

/* Connects, sends msg and checks that it comes back byte for byte. */
static inline void raw_echo_once(const net_addr_t *addr, const char *msg)
{
    int fd = raw_connect(addr, 0);
    size_t len = strlen(msg);
    char back[256];
    CHECK(len <= sizeof back);
    CHECK(raw_write(fd, msg, len));
    raw_read_exact(fd, back, len);
    CHECK_MEM_EQ(back, msg, len);
    CHECK(close(fd) == 0);
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
