/* pingpong: the classic ping-pong load client (after muduo's pingpong
 * client); installed as netloop-pingpong. Standalone C11 + libc + pthreads,
 * no netloop, so that the servers it measures (netloop and the raw-epoll
 * floor) share one client. Options, output and exit codes: its manual
 * (`--help`, help_text below).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { MAX_EVENTS = 256, CONNECT_TIMEOUT_S = 10 };

struct conn {
    int fd;
    int connected;
    int want_out; /* EPOLLOUT is in the interest set */
    char *buf;    /* capacity g_size: in-flight + unsent bytes never exceed it */
    size_t off, len; /* unsent bytes are buf[off, len) */
};

struct worker {
    pthread_t tid;
    int epfd;
    struct conn *conns;
    int nconns;
    uint64_t bytes; /* received while counting; read by main after join */
};

static struct sockaddr_storage g_addr;
static socklen_t g_addrlen;
static size_t g_size = 64;
static atomic_int g_connected, g_counting, g_stop, g_failed;

/* First failure wins the message; every worker then leaves its loop. */
static void fail(const char *what, int err)
{
    if (atomic_exchange(&g_failed, 1) == 0)
        fprintf(stderr, "pingpong: %s%s%s\n", what, err ? ": " : "", err ? strerror(err) : "");
}

static int parse_addr(const char *s)
{
    const char *colon = strrchr(s, ':');
    char host[INET6_ADDRSTRLEN + 2], *end;
    if (!colon || (size_t)(colon - s) >= sizeof host)
        return -1;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 1 || port > 65535)
        return -1;
    size_t hlen = (size_t)(colon - s);
    if (hlen > 2 && s[0] == '[' && s[hlen - 1] == ']') /* [::1]:PORT */
        s++, hlen -= 2;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    struct sockaddr_in *in4 = (struct sockaddr_in *)&g_addr;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&g_addr;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        g_addrlen = sizeof *in4;
        return (ntohl(in4->sin_addr.s_addr) >> 24) == 127 ? 0 : -1;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        g_addrlen = sizeof *in6;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) ? 0 : -1;
    }
    return -1;
}

static void set_events(struct worker *w, struct conn *c, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = c };
    if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        fail("epoll_ctl", errno);
}

/* One write per call: after a partial write the next one would almost
 * always hit EAGAIN, so wait for EPOLLOUT instead of spending a syscall. */
static void conn_flush(struct worker *w, struct conn *c)
{
    if (c->off < c->len) {
        ssize_t n = write(c->fd, c->buf + c->off, c->len - c->off);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            fail("write", errno);
            return;
        }
        if (n > 0)
            c->off += (size_t)n;
    }
    if (c->off == c->len)
        c->off = c->len = 0;
    int want = c->len > 0;
    if (want != c->want_out) {
        c->want_out = want;
        set_events(w, c, EPOLLIN | (want ? EPOLLOUT : 0));
    }
}

static void conn_read(struct worker *w, struct conn *c)
{
    if (c->off > 0) {
        memmove(c->buf, c->buf + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    if (c->len == g_size) { /* nothing of ours can be in flight */
        fail("server sent more bytes than it was sent (or closed)", 0);
        return;
    }
    ssize_t n = read(c->fd, c->buf + c->len, g_size - c->len);
    if (n > 0) {
        c->len += (size_t)n;
        if (atomic_load_explicit(&g_counting, memory_order_relaxed))
            w->bytes += (uint64_t)n;
        conn_flush(w, c);
    } else if (n == 0) {
        fail("connection closed by server", 0);
    } else if (errno != EAGAIN && errno != EINTR) {
        fail("read", errno);
    }
}

static void conn_connected(struct worker *w, struct conn *c)
{
    int err = 0, one = 1;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        fail("connect", err);
        return;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->connected = 1;
    c->want_out = -1; /* interest is still EPOLLOUT alone: force the MOD */
    memset(c->buf, 'x', g_size);
    c->len = g_size;
    atomic_fetch_add(&g_connected, 1);
    conn_flush(w, c);
}

static void conn_event(struct worker *w, struct conn *c, uint32_t events)
{
    if (!c->connected) {
        conn_connected(w, c);
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        conn_read(w, c);
    if ((events & EPOLLOUT) && !atomic_load(&g_failed))
        conn_flush(w, c);
}

/* Non-blocking connect: a full accept backlog then only delays us (the SYN
 * is retried) instead of blocking a thread; SO_ERROR tells the outcome. */
static int conn_start(struct worker *w, struct conn *c)
{
    c->fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return fail("socket", errno), -1;
    if (connect(c->fd, (struct sockaddr *)&g_addr, g_addrlen) < 0 && errno != EINPROGRESS)
        return fail("connect", errno), -1;
    struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        return fail("epoll_ctl", errno), -1;
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct epoll_event ev[MAX_EVENTS];
    for (int i = 0; i < w->nconns; i++)
        if (conn_start(w, &w->conns[i]) < 0)
            return NULL;
    while (!atomic_load(&g_stop) && !atomic_load(&g_failed)) {
        int n = epoll_wait(w->epfd, ev, MAX_EVENTS, 50);
        if (n < 0 && errno != EINTR) {
            fail("epoll_wait", errno);
            break;
        }
        for (int i = 0; i < n; i++)
            conn_event(w, ev[i].data.ptr, ev[i].events);
    }
    return NULL;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleeps until `until` or a failure, or (if `all` > 0) all are connected. */
static void wait_until(double until, int all)
{
    struct timespec tick = { 0, 10 * 1000 * 1000 };
    while (now() < until && !atomic_load(&g_failed) &&
           !(all > 0 && atomic_load(&g_connected) == all))
        nanosleep(&tick, NULL);
}

static const char help_text[] =
    "NAME\n"
    "    netloop-pingpong - ping-pong load client for an echo server\n"
    "\n"
    "SYNOPSIS\n"
    "    netloop-pingpong --connect HOST:PORT [--connections C] [--size S]\n"
    "                     [--seconds N] [--threads T] [--warmup W]\n"
    "    netloop-pingpong --help\n"
    "\n"
    "DESCRIPTION\n"
    "    Opens C connections to the echo server at HOST:PORT. Each sends one\n"
    "    S-byte message and then writes back whatever it receives, so exactly\n"
    "    S bytes per connection are in flight. T threads, each with its own\n"
    "    epoll set, share the connections. The clock starts once all\n"
    "    connections are up and W seconds of warm-up have passed; the bytes\n"
    "    received in the next N seconds are counted. Prints one line:\n"
    "        pingpong conns=C size=S threads=T seconds=N bytes=B MiB/s=X msgs/s=Y\n"
    "    with msgs/s = B / S / measured seconds. HOST is an address in\n"
    "    127.0.0.0/8 or [::1] (the load stays on loopback); it does not use\n"
    "    netloop, so it measures any echo server alike.\n"
    "    In a build tree the same program is build/tools/bench/pingpong.\n"
    "\n"
    "OPTIONS\n"
    "    --connect HOST:PORT  the server, e.g. 127.0.0.1:2007 or [::1]:2007\n"
    "    --connections C      connections, 1..1000000; default 100 (the\n"
    "                         descriptor limit is raised to its hard limit)\n"
    "    --size S             message bytes, 1..67108864; default 64\n"
    "    --seconds N          measured seconds, 0.01..86400; default 5\n"
    "    --threads T          threads, 1..1024 (at most C); default 1\n"
    "    --warmup W           warm-up seconds, 0..3600; default 0.5\n"
    "    -h, --help           print this manual on standard output and exit 0\n"
    "\n"
    "EXIT STATUS\n"
    "    0   The run completed; the line is on standard output.\n"
    "    1   A connect failed or not every connection was up within 10 s, the\n"
    "        server closed a connection or sent more than it was sent, or a\n"
    "        system call or allocation failed (the reason is on standard error).\n"
    "    2   Usage error: an unknown option, a value malformed or out of range,\n"
    "        no --connect, or an address outside loopback.\n"
    "\n"
    "EXAMPLES\n"
    "    With build/examples/echo_server on 127.0.0.1:2007:\n"
    "        netloop-pingpong --connect 127.0.0.1:2007 --connections 100 --size 64\n"
    "        netloop-pingpong --connect 127.0.0.1:2007 --connections 1000 --threads 2 \\\n"
    "            --size 16384 --seconds 10\n";

static void usage(void)
{
    fprintf(stderr, "usage: pingpong --connect 127.0.0.1:PORT [--connections C] [--size S]\n"
                    "                [--seconds N] [--threads T] [--warmup W]\n"
                    "  defaults C=100 S=64 N=5 T=1 W=0.5; loopback addresses only\n"
                    "  --help: the manual\n");
    exit(2);
}

static double num(const char *s, double lo, double hi)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi))
        usage();
    return v;
}

int main(int argc, char **argv)
{
    int conns = 100, threads = 1, have_addr = 0;
    double seconds = 5, warmup = 0.5;
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(help_text, stdout);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[++i] : NULL;
        if (!v)
            usage();
        if (!strcmp(o, "--connect")) {
            if (parse_addr(v) < 0) {
                fprintf(stderr, "pingpong: refusing %s: need 127.0.0.0/8:PORT or [::1]:PORT\n", v);
                return 2;
            }
            have_addr = 1;
        } else if (!strcmp(o, "--connections")) {
            conns = (int)num(v, 1, 1000000);
        } else if (!strcmp(o, "--size")) {
            g_size = (size_t)num(v, 1, 64 << 20);
        } else if (!strcmp(o, "--seconds")) {
            seconds = num(v, 0.01, 86400);
        } else if (!strcmp(o, "--threads")) {
            threads = (int)num(v, 1, 1024);
        } else if (!strcmp(o, "--warmup")) {
            warmup = num(v, 0, 3600);
        } else {
            usage();
        }
    }
    if (!have_addr)
        usage();
    if (threads > conns)
        threads = conns;

    struct rlimit rl; /* 1000+ connections need more than the usual 1024 fds */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN); /* writing to a reset connection: EPIPE, not death */

    struct worker *ws = calloc((size_t)threads, sizeof *ws);
    struct conn *cs = calloc((size_t)conns, sizeof *cs);
    if (!ws || !cs)
        return fprintf(stderr, "pingpong: out of memory\n"), 1;
    for (int i = 0, next = 0; i < threads; i++) {
        ws[i].conns = cs + next;
        ws[i].nconns = conns / threads + (i < conns % threads);
        next += ws[i].nconns;
        if ((ws[i].epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
            return fprintf(stderr, "pingpong: epoll_create1: %s\n", strerror(errno)), 1;
    }
    for (int i = 0; i < conns; i++) {
        cs[i].fd = -1;
        if (!(cs[i].buf = malloc(g_size)))
            return fprintf(stderr, "pingpong: out of memory\n"), 1;
    }
    for (int i = 0; i < threads; i++)
        if (pthread_create(&ws[i].tid, NULL, worker_main, &ws[i]) != 0)
            return fprintf(stderr, "pingpong: pthread_create failed\n"), 1;

    wait_until(now() + CONNECT_TIMEOUT_S, conns);
    if (!atomic_load(&g_failed) && atomic_load(&g_connected) < conns) {
        fprintf(stderr, "pingpong: only %d of %d connections up after %d s\n",
                atomic_load(&g_connected), conns, CONNECT_TIMEOUT_S);
        atomic_store(&g_failed, 1);
    }
    wait_until(now() + warmup, 0);
    double t0 = now();
    atomic_store(&g_counting, 1);
    wait_until(t0 + seconds, 0);
    atomic_store(&g_counting, 0);
    double elapsed = now() - t0;
    atomic_store(&g_stop, 1);

    uint64_t bytes = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ws[i].tid, NULL);
        bytes += ws[i].bytes;
        close(ws[i].epfd);
    }
    for (int i = 0; i < conns; i++) {
        if (cs[i].fd >= 0)
            close(cs[i].fd);
        free(cs[i].buf);
    }
    free(cs);
    free(ws);
    if (atomic_load(&g_failed))
        return 1;
    printf("pingpong conns=%d size=%zu threads=%d seconds=%g bytes=%llu MiB/s=%.2f msgs/s=%.0f\n",
           conns, g_size, threads, seconds, (unsigned long long)bytes,
           (double)bytes / (1024.0 * 1024.0) / elapsed, (double)bytes / (double)g_size / elapsed);
    return 0;
}
