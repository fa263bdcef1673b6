/* idle_conns: user-space memory a server spends per idle connection.
 * Standalone C11 + libc; no netloop.
 *
 *   idle_conns --connect 127.0.0.1:PORT --pid SERVER_PID [--connections N]
 *              [--settle-ms MS] [--max-bytes-per-conn B] [--sources S]
 *   defaults: N=50000, MS=1000, B=0 (no limit), S=as few as the port range
 *   allows.
 *
 * Reads VmRSS (and RssAnon, the heap part) of process PID from
 * /proc/PID/status, opens N connections to the echo server at PORT, sends one
 * 64-byte message on each and checks its echo (so the server has read and
 * written on every connection, as a real idle client would have), waits MS
 * milliseconds, reads the figures again and counts the server's descriptors
 * (/proc/PID/fd). Then, with all N still open, it sends a second, different
 * message on every connection and checks every echo: all N connections are
 * alive at the same time. One line:
 *   idle_conns conns=N sources=S rss_before_kib=A rss_after_kib=B
 *       bytes_per_conn=X anon_bytes_per_conn=Y server_fds=F echoed=E/2N
 *       target=B PASS|FAIL
 * with X = (B - A) * 1024 / N. Then it closes everything. Exit 0; 1 for a
 * failed connect, a wrong or missing echo, or X above B; 2 for usage errors;
 * 77 (skip) when this process may not have N descriptors (RLIMIT_NOFILE
 * cannot be raised: not root, or fs.nr_open too low).
 *
 * Kernel socket memory is not in any process's RSS: the figure is the
 * server's own (user-space) cost. One source address has only the ports of
 * net.ipv4.ip_local_port_range towards one server address, so the
 * connections are spread over 127.0.0.1, 127.0.0.2, ... (bind with
 * IP_BIND_ADDRESS_NO_PORT before connect), at most 3/4 of that range (and
 * CONNS_PER_SOURCE) on each; --sources asks for more (round robin). The server must be on loopback (127.0.0.0/8) and
 * have a descriptor limit above N itself (idle_memory.sh sees to that). */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum { MSG_LEN = 64, CONNS_PER_SOURCE = 20000, IO_TIMEOUT_S = 5, MAX_SOURCES = 254 };

struct rss {
    long vm_kib, anon_kib;
};

static int read_rss(int pid, struct rss *out)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    out->vm_kib = out->anon_kib = -1;
    while (fgets(line, sizeof line, f)) {
        sscanf(line, "VmRSS: %ld kB", &out->vm_kib);
        sscanf(line, "RssAnon: %ld kB", &out->anon_kib);
    }
    fclose(f);
    return out->vm_kib < 0 ? -1 : 0;
}

static int parse_addr(const char *s, struct sockaddr_in *out)
{
    const char *colon = strrchr(s, ':');
    char host[INET_ADDRSTRLEN], *end;
    if (!colon || (size_t)(colon - s) >= sizeof host)
        return -1;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 1 || port > 65535)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &out->sin_addr) != 1)
        return -1;
    return (ntohl(out->sin_addr.s_addr) >> 24) == 127 ? 0 : -1; /* loopback only */
}

static long read_long_file(const char *path, long fallback)
{
    long v = fallback;
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%ld", &v) != 1)
            v = fallback;
        fclose(f);
    }
    return v;
}

/* Room for n sockets plus stdio: the soft limit up to the hard one, or both
 * higher when we may (root, and up to fs.nr_open). Returns 0, or -1 with
 * errno (EPERM: not allowed). */
static int raise_nofile(long n)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)n + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -1;
    if (rl.rlim_cur >= want)
        return 0;
    if (rl.rlim_max < want)
        rl.rlim_max = want;
    rl.rlim_cur = want;
    return setrlimit(RLIMIT_NOFILE, &rl);
}

/* Connections per source address: 3/4 of the ephemeral port range (the rest
 * is left to TIME_WAIT leftovers and other programs), at most
 * CONNS_PER_SOURCE. */
static long conns_per_source(void)
{
    long lo = 32768, hi = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &lo, &hi) != 2)
            lo = 32768, hi = 60999;
        fclose(f);
    }
    long per = (hi - lo + 1) * 3 / 4;
    if (per > CONNS_PER_SOURCE)
        per = CONNS_PER_SOURCE;
    return per < 1 ? 1 : per;
}

static long count_fds(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* Message `round` (0 or 1) of connection i: distinct per connection and per
 * round, so a stale or crossed echo shows. */
static void pattern(unsigned char *p, long i, int round)
{
    for (int k = 0; k < MSG_LEN; k++)
        p[k] = (unsigned char)(i * 7 + k + round * 131 + (i >> 8) * 13);
}

/* Reads exactly MSG_LEN bytes (blocking, SO_RCVTIMEO bounded) and compares
 * them with what message `round` of connection i was. Returns 0 or -1
 * (message printed). */
static int read_echo(int fd, long i, int round)
{
    unsigned char want[MSG_LEN], in[MSG_LEN];
    size_t got = 0;
    while (got < MSG_LEN) {
        ssize_t n = recv(fd, in + got, MSG_LEN - got, 0);
        if (n <= 0) {
            fprintf(stderr, "idle_conns: recv #%ld (message %d): %s\n", i, round + 1,
                    n == 0 ? "connection closed" : strerror(errno));
            return -1;
        }
        got += (size_t)n;
    }
    pattern(want, i, round);
    if (memcmp(in, want, MSG_LEN) != 0) {
        fprintf(stderr, "idle_conns: connection #%ld: echo of message %d differs\n", i,
                round + 1);
        return -1;
    }
    return 0;
}

static int send_message(int fd, long i, int round)
{
    unsigned char out[MSG_LEN];
    pattern(out, i, round);
    if (send(fd, out, MSG_LEN, MSG_NOSIGNAL) == MSG_LEN)
        return 0;
    fprintf(stderr, "idle_conns: send #%ld (message %d): %s\n", i, round + 1, strerror(errno));
    return -1;
}

static int bind_source(int fd, long i, long nsrc)
{
    int one = 1;
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl((127u << 24) | (uint32_t)(1 + i % nsrc));
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) == 0)
        return 0;
    fprintf(stderr, "idle_conns: bind #%ld: %s\n", i, strerror(errno));
    return -1;
}

/* Connection i: connect (from source 127.0.0.(1 + i % nsrc) if spreading),
 * send message 1, read its echo. Returns the fd or -1 (message printed). */
static int open_one(const struct sockaddr_in *dst, long i, long nsrc)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "idle_conns: socket #%ld: %s\n", i, strerror(errno));
        return -1;
    }
    struct timeval tv = {IO_TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (nsrc > 1 && bind_source(fd, i, nsrc) < 0) {
        close(fd);
        return -1;
    }
    if (connect(fd, (const struct sockaddr *)dst, sizeof *dst) < 0) {
        fprintf(stderr, "idle_conns: connect #%ld: %s\n", i, strerror(errno));
        close(fd);
        return -1;
    }
    if (send_message(fd, i, 0) < 0 || read_echo(fd, i, 0) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* With every connection open: message 2 on all of them, then every echo.
 * Returns the number of correct echoes. */
static long recheck_all(const int *fds, long n)
{
    long ok = 0;
    for (long i = 0; i < n; i++)
        if (send_message(fds[i], i, 1) < 0)
            return ok;
    for (long i = 0; i < n; i++)
        if (read_echo(fds[i], i, 1) == 0)
            ok++;
    return ok;
}

static int usage(void)
{
    fprintf(stderr, "usage: idle_conns --connect 127.0.0.1:PORT --pid SERVER_PID "
                    "[--connections N] [--settle-ms MS] [--max-bytes-per-conn B] "
                    "[--sources S]\n");
    return 2;
}

struct args {
    const char *target;
    int pid;
    long conns, settle_ms, max_bytes, sources;
};

static int parse_args(int argc, char **argv, struct args *a)
{
    a->target = NULL, a->pid = 0, a->conns = 50000, a->settle_ms = 1000, a->max_bytes = 0;
    a->sources = 0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            return usage();
        if (strcmp(argv[i], "--connect") == 0)
            a->target = argv[++i];
        else if (strcmp(argv[i], "--pid") == 0)
            a->pid = atoi(argv[++i]);
        else if (strcmp(argv[i], "--connections") == 0)
            a->conns = atol(argv[++i]);
        else if (strcmp(argv[i], "--settle-ms") == 0)
            a->settle_ms = atol(argv[++i]);
        else if (strcmp(argv[i], "--max-bytes-per-conn") == 0)
            a->max_bytes = atol(argv[++i]);
        else if (strcmp(argv[i], "--sources") == 0)
            a->sources = atol(argv[++i]);
        else
            return usage();
    }
    if (!a->target || a->pid <= 0 || a->conns < 1 || a->settle_ms < 0 || a->max_bytes < 0 ||
        a->sources < 0 || a->sources > MAX_SOURCES)
        return usage();
    return 0;
}

/* 0, or 77 with the reason when this process may not hold the sockets. */
static int check_nofile(long conns)
{
    if (raise_nofile(conns) == 0)
        return 0;
    int err = errno;
    long nr_open = read_long_file("/proc/sys/fs/nr_open", -1);
    printf("idle_conns: SKIP: cannot raise RLIMIT_NOFILE to %ld (%s; fs.nr_open=%ld%s)\n",
           conns + 64, strerror(err), nr_open,
           err == EPERM ? ", raising the hard limit needs CAP_SYS_RESOURCE" : "");
    return 77;
}

struct result {
    struct rss before, after;
    long opened, server_fds, rechecked;
};

/* Opens the connections, lets the server settle, measures, rechecks. */
static int measure(const struct sockaddr_in *dst, const struct args *a, long nsrc, int *fds,
                   struct result *r)
{
    for (; r->opened < a->conns; r->opened++)
        if ((fds[r->opened] = open_one(dst, r->opened, nsrc)) < 0)
            return 1;
    struct timespec ts = {a->settle_ms / 1000, (a->settle_ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
    if (read_rss(a->pid, &r->after) < 0) {
        fprintf(stderr, "idle_conns: server %d is gone\n", a->pid);
        return 1;
    }
    r->server_fds = count_fds(a->pid);
    r->rechecked = recheck_all(fds, r->opened);
    return r->rechecked == r->opened ? 0 : 1;
}

static int report(const struct args *a, long nsrc, const struct result *r)
{
    double per_conn = (double)(r->after.vm_kib - r->before.vm_kib) * 1024 / (double)a->conns;
    bool over = a->max_bytes > 0 && per_conn > (double)a->max_bytes;
    printf("idle_conns conns=%ld sources=%ld rss_before_kib=%ld rss_after_kib=%ld "
           "bytes_per_conn=%.0f anon_bytes_per_conn=%.0f server_fds=%ld echoed=%ld/%ld",
           a->conns, nsrc, r->before.vm_kib, r->after.vm_kib, per_conn,
           (double)(r->after.anon_kib - r->before.anon_kib) * 1024 / (double)a->conns,
           r->server_fds, r->opened + r->rechecked, 2 * a->conns);
    if (a->max_bytes > 0)
        printf(" target=%ld %s", a->max_bytes, over ? "FAIL" : "PASS");
    printf("\n");
    return over ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct args a;
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc;
    struct sockaddr_in dst;
    if (parse_addr(a.target, &dst) < 0) {
        fprintf(stderr, "idle_conns: %s: need 127.x.y.z:PORT (loopback only)\n", a.target);
        return 2;
    }
    long per_source = conns_per_source();
    long nsrc = (a.conns + per_source - 1) / per_source;
    if (a.sources > nsrc)
        nsrc = a.sources;
    if (nsrc > MAX_SOURCES) {
        printf("idle_conns: SKIP: %ld connections need %ld source addresses (%ld ports each)\n",
               a.conns, nsrc, per_source);
        return 77;
    }
    if ((rc = check_nofile(a.conns)) != 0)
        return rc;
    int *fds = malloc((size_t)a.conns * sizeof *fds);
    struct result r = {0};
    if (!fds || read_rss(a.pid, &r.before) < 0) {
        fprintf(stderr, "idle_conns: %s\n", fds ? "cannot read /proc/PID/status" : "no memory");
        free(fds);
        return 1;
    }
    rc = measure(&dst, &a, nsrc, fds, &r);
    if (rc == 0)
        rc = report(&a, nsrc, &r);
    else
        fprintf(stderr, "idle_conns: FAIL after %ld of %ld connections, %ld of them rechecked\n",
                r.opened, a.conns, r.rechecked);
    for (long i = 0; i < r.opened; i++)
        close(fds[i]);
    free(fds);
    return rc;
}
