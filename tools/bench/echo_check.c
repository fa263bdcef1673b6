/* echo_check: checks that an echo server returns every byte, in order, on
 * every connection; the client of tools/bench/uring_echo_test.sh.
 * Standalone C11 + libc.
 *
 *   echo_check --connect 127.0.0.1:PORT [--connections C] [--bytes B]
 *              [--hold-ms H] [--rcvbuf R] [--half-close]
 *
 * Opens C connections (default 10) and sends B bytes (default 100000) on
 * each, a pattern that differs per connection and offset, while reading the
 * echo back and comparing it byte for byte.  --hold-ms: first write as much
 * as the sockets take without reading, then wait H ms, so the server holds
 * data it cannot send (pause and pool-exhaustion paths); --rcvbuf R sets
 * SO_RCVBUF to R on each connection, so that the server's sends back block
 * sooner.  --half-close: shut
 * down the write side after the last byte and expect the server to send the
 * rest and then close (EOF).  Everything is bounded by a 60 s deadline.
 * Prints "echo_check ok conns=C bytes=B" and exits 0, or names the first
 * mismatch and exits 1; usage errors exit 2.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { CHUNK = 64 * 1024, DEADLINE_S = 60 };

struct peer {
    int fd;
    size_t sent, got;
    int shut, eof;
};

static size_t g_bytes = 100000;
static int g_half_close, g_rcvbuf;

static unsigned char pattern(size_t k, size_t off)
{
    return (unsigned char)(off * 31u + k * 7u + (off >> 9));
}

static void fail(const char *what, size_t k)
{
    fprintf(stderr, "echo_check: connection %zu: %s%s%s\n", k, what, errno ? ": " : "",
            errno ? strerror(errno) : "");
    exit(1);
}

static int open_conn(const struct sockaddr_in *sa)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || (g_rcvbuf && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &g_rcvbuf, sizeof g_rcvbuf)))
        return -1;
    if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) < 0)
        return -1;
    return fcntl(fd, F_SETFL, O_NONBLOCK) < 0 ? -1 : fd;
}

/* Writes what the socket takes; returns 0, or -1 on an error. */
static int pump_out(struct peer *p, size_t k)
{
    unsigned char buf[CHUNK];
    while (p->sent < g_bytes) {
        size_t n = g_bytes - p->sent < CHUNK ? g_bytes - p->sent : CHUNK;
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern(k, p->sent + i);
        ssize_t w = write(p->fd, buf, n);
        if (w < 0)
            return errno == EAGAIN ? 0 : -1;
        p->sent += (size_t)w;
    }
    if (g_half_close && !p->shut) {
        p->shut = 1;
        return shutdown(p->fd, SHUT_WR);
    }
    return 0;
}

/* Reads and compares what has arrived. */
static void pump_in(struct peer *p, size_t k)
{
    unsigned char buf[CHUNK];
    for (;;) {
        ssize_t r = read(p->fd, buf, sizeof buf);
        if (r < 0 && errno == EAGAIN)
            return;
        if (r < 0)
            fail("read", k);
        if (r == 0) {
            errno = 0;
            if (p->got < g_bytes || !g_half_close)
                fail("early EOF", k);
            p->eof = 1;
            return;
        }
        errno = 0;
        for (ssize_t i = 0; i < r; i++)
            if (p->got >= g_bytes || buf[i] != pattern(k, p->got++))
                fail(p->got > g_bytes ? "more bytes than sent" : "wrong byte", k);
    }
}

static int peer_done(const struct peer *p)
{
    return p->got == g_bytes && (!g_half_close || p->eof);
}

static void run(struct peer *ps, size_t n)
{
    struct pollfd *pf = calloc(n, sizeof *pf);
    time_t end = time(NULL) + DEADLINE_S;
    if (!pf)
        fail("calloc", 0);
    for (size_t left = n; left > 0;) {
        if (time(NULL) > end)
            errno = ETIMEDOUT, fail("deadline passed", 0);
        for (size_t k = 0; k < n; k++) {
            pf[k].fd = peer_done(&ps[k]) ? -1 : ps[k].fd;
            pf[k].events = POLLIN | (ps[k].sent < g_bytes ? POLLOUT : 0);
        }
        if (poll(pf, n, 1000) < 0 && errno != EINTR)
            fail("poll", 0);
        left = 0;
        for (size_t k = 0; k < n; k++) {
            if (pf[k].revents & POLLOUT && pump_out(&ps[k], k) < 0)
                fail("write", k);
            if (pf[k].revents & (POLLIN | POLLHUP | POLLERR))
                pump_in(&ps[k], k);
            left += !peer_done(&ps[k]);
        }
    }
    free(pf);
}

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
    const char *colon = strrchr(s, ':');
    char host[INET_ADDRSTRLEN];
    if (!colon || (size_t)(colon - s) >= sizeof host)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((unsigned short)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return -1;
    return (ntohl(sa->sin_addr.s_addr) >> 24) == 127 ? 0 : -1;
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa;
    size_t conns = 10;
    long hold_ms = 0;
    int have_addr = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--half-close"))
            g_half_close = 1;
        else if (i + 1 < argc && !strcmp(argv[i], "--connect"))
            have_addr = parse_addr(argv[++i], &sa) == 0;
        else if (i + 1 < argc && !strcmp(argv[i], "--connections"))
            conns = strtoul(argv[++i], NULL, 10);
        else if (i + 1 < argc && !strcmp(argv[i], "--bytes"))
            g_bytes = strtoul(argv[++i], NULL, 10);
        else if (i + 1 < argc && !strcmp(argv[i], "--rcvbuf"))
            g_rcvbuf = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--hold-ms"))
            hold_ms = strtol(argv[++i], NULL, 10);
        else
            have_addr = 0, i = argc;
    }
    if (!have_addr || conns < 1 || conns > 10000 || hold_ms < 0 || hold_ms > 10000 ||
        g_rcvbuf < 0) {
        fprintf(stderr, "usage: echo_check --connect 127.0.0.1:PORT [--connections C] "
                        "[--bytes B] [--hold-ms H] [--rcvbuf R] [--half-close]\n");
        return 2;
    }
    struct peer *ps = calloc(conns, sizeof *ps);
    if (!ps)
        fail("calloc", 0);
    for (size_t k = 0; k < conns; k++)
        if ((ps[k].fd = open_conn(&sa)) < 0)
            fail("connect", k);
    for (size_t k = 0; hold_ms > 0 && k < conns; k++)
        if (pump_out(&ps[k], k) < 0)
            fail("write", k);
    nanosleep(&(struct timespec){ .tv_sec = hold_ms / 1000, .tv_nsec = hold_ms % 1000 * 1000000 },
              NULL);
    run(ps, conns);
    for (size_t k = 0; k < conns; k++)
        close(ps[k].fd);
    free(ps);
    printf("echo_check ok conns=%zu bytes=%zu\n", conns, g_bytes);
    return 0;
}
