/* idle_conns: user-space memory a server spends per idle connection.
 * Standalone C11 + libc; no netloop.
 *
 *   idle_conns --connect 127.0.0.1:PORT --pid SERVER_PID [--connections N]
 *              [--settle-ms MS]
 *   defaults: N=10000, MS=1000.
 *
 * Reads VmRSS (and RssAnon, the heap part) of process PID from
 * /proc/PID/status, opens N connections to the echo server at PORT, sends one
 * 64-byte message on each and checks its echo (so the server has read and
 * written on every connection, as a real idle client would have), waits MS
 * milliseconds, reads the figures again and prints one line:
 *   idle_conns conns=N rss_before_kib=A rss_after_kib=B bytes_per_conn=X
 *       anon_bytes_per_conn=Y
 * with X = (B - A) * 1024 / N. Then it closes everything and exits 0; a
 * failed connect or a wrong echo exits 1.
 *
 * Kernel socket memory is not in any process's RSS: the figure is the
 * server's own (user-space) cost. Beyond CONNS_PER_SOURCE connections the
 * source addresses are spread over 127.0.0.1, 127.0.0.2, ... (bind with
 * IP_BIND_ADDRESS_NO_PORT before connect), since one source address has only
 * the ~28000 ports of the ephemeral range towards one server address. The
 * server must be on loopback (127.0.0.0/8) and have a descriptor limit above
 * N itself. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
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

enum { MSG_LEN = 64, CONNS_PER_SOURCE = 20000, IO_TIMEOUT_S = 5 };

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

/* Room for n sockets plus stdio: the soft limit up to the hard one, or both
 * higher when we may (root). */
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

static void pattern(unsigned char *p, long i)
{
    for (int k = 0; k < MSG_LEN; k++)
        p[k] = (unsigned char)(i * 7 + k);
}

/* Connection i: connect (from source sources[i % nsrc] if spreading), send
 * one message, read its echo. Returns the fd or -1 (message printed). */
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
    if (nsrc > 1) {
        int one = 1;
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl((127u << 24) | (uint32_t)(1 + i % nsrc));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
            fprintf(stderr, "idle_conns: bind #%ld: %s\n", i, strerror(errno));
            close(fd);
            return -1;
        }
    }
    const char *what = "connect";
    unsigned char out[MSG_LEN], in[MSG_LEN];
    pattern(out, i);
    size_t got = 0;
    if (connect(fd, (const struct sockaddr *)dst, sizeof *dst) < 0)
        goto fail;
    what = "send";
    if (send(fd, out, MSG_LEN, MSG_NOSIGNAL) != MSG_LEN)
        goto fail;
    what = "recv";
    while (got < MSG_LEN) {
        ssize_t n = recv(fd, in + got, MSG_LEN - got, 0);
        if (n <= 0) {
            if (n == 0)
                errno = ECONNRESET;
            goto fail;
        }
        got += (size_t)n;
    }
    if (memcmp(in, out, MSG_LEN) != 0) {
        fprintf(stderr, "idle_conns: connection #%ld: echo differs from what was sent\n", i);
        close(fd);
        return -1;
    }
    return fd;
fail:
    fprintf(stderr, "idle_conns: %s #%ld: %s\n", what, i, strerror(errno));
    close(fd);
    return -1;
}

static int usage(void)
{
    fprintf(stderr, "usage: idle_conns --connect 127.0.0.1:PORT --pid SERVER_PID "
                    "[--connections N] [--settle-ms MS]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *target = NULL;
    int pid = 0;
    long conns = 10000, settle_ms = 1000;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            return usage();
        if (strcmp(argv[i], "--connect") == 0)
            target = argv[++i];
        else if (strcmp(argv[i], "--pid") == 0)
            pid = atoi(argv[++i]);
        else if (strcmp(argv[i], "--connections") == 0)
            conns = atol(argv[++i]);
        else if (strcmp(argv[i], "--settle-ms") == 0)
            settle_ms = atol(argv[++i]);
        else
            return usage();
    }
    struct sockaddr_in dst;
    if (!target || pid <= 0 || conns < 1 || settle_ms < 0)
        return usage();
    if (parse_addr(target, &dst) < 0) {
        fprintf(stderr, "idle_conns: %s: need 127.x.y.z:PORT (loopback only)\n", target);
        return 2;
    }
    if (raise_nofile(conns) < 0) {
        fprintf(stderr, "idle_conns: cannot raise RLIMIT_NOFILE to %ld: %s\n", conns + 64,
                strerror(errno));
        return 1;
    }
    int *fds = malloc((size_t)conns * sizeof *fds);
    struct rss before, after;
    if (!fds || read_rss(pid, &before) < 0) {
        fprintf(stderr, "idle_conns: %s\n", fds ? "cannot read /proc/PID/status" : "no memory");
        return 1;
    }
    long nsrc = (conns + CONNS_PER_SOURCE - 1) / CONNS_PER_SOURCE;
    int rc = 0;
    long opened = 0;
    for (; opened < conns; opened++) {
        if ((fds[opened] = open_one(&dst, opened, nsrc)) < 0) {
            rc = 1;
            break;
        }
    }
    if (rc == 0) {
        struct timespec ts = {settle_ms / 1000, (settle_ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
        if (read_rss(pid, &after) < 0) {
            fprintf(stderr, "idle_conns: server %d is gone\n", pid);
            rc = 1;
        }
    }
    if (rc == 0) {
        printf("idle_conns conns=%ld rss_before_kib=%ld rss_after_kib=%ld bytes_per_conn=%.0f "
               "anon_bytes_per_conn=%.0f\n",
               conns, before.vm_kib, after.vm_kib,
               (double)(after.vm_kib - before.vm_kib) * 1024 / (double)conns,
               (double)(after.anon_kib - before.anon_kib) * 1024 / (double)conns);
    }
    for (long i = 0; i < opened; i++)
        close(fds[i]);
    free(fds);
    return rc;
}
