/* floor_echo: the hand-written epoll echo server that netloop's echo server
 * is measured against ("the floor").  Standalone C11 + libc; no netloop.
 *
 *   floor_echo [--listen 127.0.0.1:PORT]     (default 127.0.0.1:2017, PORT 0 ok)
 *
 * Prints one line "floor_echo listening on 127.0.0.1:PORT" once ready, exits 0
 * on SIGINT/SIGTERM.  Loopback addresses only (workplace rule).
 *
 * Kept deliberately plain, so it stands for "what hand-written epoll costs":
 *  - one thread, one epoll set, level-triggered: a still-readable fd is
 *    reported again, so one read() per event suffices and no busy connection
 *    can starve the others;
 *  - reads go into one 64 KiB stack buffer and are written straight back;
 *  - a partial write leaves its tail in a per-connection heap buffer and the
 *    fd's interest switches from EPOLLIN to EPOLLOUT until it is flushed.  Not
 *    reading meanwhile bounds memory to one read (64 KiB) per connection and
 *    lets TCP flow control push back on the peer.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

enum { READ_BUF = 64 * 1024, MAX_EVENTS = 256 };

struct conn {
    int fd;
    char *pending; /* unsent tail of an echo; NULL when all was written */
    size_t off, len;
    struct conn *prev, *next; /* every live connection, closed at exit */
};

static int epfd = -1;
static struct conn *conns;
/* epoll data for the listener and the signalfd: every event then carries a
 * pointer, and connections need no fd-indexed table. */
static char listen_tag, signal_tag;

static void die(const char *what)
{
    fprintf(stderr, "floor_echo: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
    const char *colon = strrchr(s, ':');
    char host[INET_ADDRSTRLEN], *end;
    if (!colon || (size_t)(colon - s) >= sizeof host)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    long port = strtol(colon + 1, &end, 10);
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((unsigned short)port);
    if (*end || end == colon + 1 || port < 0 || port > 65535 ||
        inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return -1;
    return (ntohl(sa->sin_addr.s_addr) >> 24) == 127 ? 0 : -1;
}

static void set_interest(struct conn *c, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = c };
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl");
}

static void conn_add(int fd)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->fd = fd;
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        die("epoll_ctl");
}

static void conn_close(struct conn *c)
{
    close(c->fd); /* also drops it from the epoll set: the fd is never dup'ed */
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c->pending);
    free(c);
}

static void on_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            /* FIXME: on EMFILE the level-triggered listener stays readable
             * and we spin; muduo sheds the connection with a spare fd.  We
             * raise RLIMIT_NOFILE instead, which suffices for benchmarks. */
            if (errno != EAGAIN)
                perror("floor_echo: accept4");
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_add(fd);
    }
}

static void on_readable(struct conn *c)
{
    char buf[READ_BUF];
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        conn_close(c);
        return;
    }
    ssize_t w = write(c->fd, buf, (size_t)n);
    if (w < 0 && errno != EAGAIN && errno != EINTR) {
        conn_close(c);
        return;
    }
    if (w < 0)
        w = 0;
    if (w == n)
        return;
    c->len = (size_t)(n - w);
    c->off = 0;
    c->pending = malloc(c->len);
    if (!c->pending) {
        conn_close(c);
        return;
    }
    memcpy(c->pending, buf + w, c->len);
    set_interest(c, EPOLLOUT);
}

static void on_writable(struct conn *c)
{
    ssize_t w = write(c->fd, c->pending + c->off, c->len - c->off);
    if (w < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (w < 0) {
        conn_close(c);
        return;
    }
    c->off += (size_t)w;
    if (c->off < c->len)
        return;
    free(c->pending);
    c->pending = NULL;
    set_interest(c, EPOLLIN);
}

static int listen_on(const struct sockaddr_in *sa)
{
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)sa, sizeof *sa) < 0)
        die("bind");
    if (listen(fd, SOMAXCONN) < 0)
        die("listen");
    return fd;
}

static void print_ready(int lfd)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    char host[INET_ADDRSTRLEN];
    if (getsockname(lfd, (struct sockaddr *)&sa, &len) < 0)
        die("getsockname");
    inet_ntop(AF_INET, &sa.sin_addr, host, sizeof host);
    printf("floor_echo listening on %s:%u\n", host, ntohs(sa.sin_port));
    fflush(stdout);
}

static void watch(int fd, void *tag)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = tag };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        die("epoll_ctl");
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa;
    const char *addr = argc == 3 && !strcmp(argv[1], "--listen") ? argv[2]
                                                                  : "127.0.0.1:2017";
    if ((argc != 1 && argc != 3) || parse_addr(addr, &sa) < 0) {
        fprintf(stderr, "usage: floor_echo [--listen 127.0.0.1:PORT]  (127.0.0.0/8 only)\n");
        return 2;
    }
    struct rlimit rl; /* room for 1000+ connections */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN); /* a write to a reset peer must fail, not kill us */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0)
        die("signalfd");
    if ((epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1");
    int lfd = listen_on(&sa);
    watch(lfd, &listen_tag);
    watch(sfd, &signal_tag);
    print_ready(lfd);

    struct epoll_event ev[MAX_EVENTS];
    for (int running = 1; running;) {
        int n = epoll_wait(epfd, ev, MAX_EVENTS, -1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            void *p = ev[i].data.ptr;
            if (p == &listen_tag)
                on_accept(lfd);
            else if (p == &signal_tag)
                running = 0;
            else if (((struct conn *)p)->pending) /* interest is EPOLLOUT only */
                on_writable(p);
            else
                on_readable(p);
        }
    }
    while (conns)
        conn_close(conns);
    close(lfd);
    close(sfd);
    close(epfd);
    return 0;
}
