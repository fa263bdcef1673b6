/* hostile: plays one kind of hostile peer against a server and measures the
 * server's memory while it does. Standalone C11 + libc + pthreads; no
 * netloop, so that the peer does exactly what it is told, byte for byte.
 *
 *   hostile --scenario NAME --connect HOST:PORT --pid SERVER_PID
 *           [--clients N] [--seconds S] [--mb M] [--requests N] [--size B]
 *           [--frame-mb M] [--interval-s S] [--stall-s S] [--settle-s S]
 *           [--max-rss-mb M]
 *   defaults: S=60, stall 3 s, settle 5 s, max-rss 4096 MiB; the rest per
 *   scenario, below. HOST is a loopback address (127.x.y.z or ::1, [::1]).
 *
 * Scenarios:
 *   echo-noread       (echo server) N clients (default 1) each send M MiB
 *                     (default 200) as fast as the socket takes them and
 *                     never read. A client whose socket stays full for the
 *                     stall time stops: the server applied backpressure.
 *   rpc-noread        (NRPC/1 server) one connection pipelines N `echo`
 *                     requests (default 2,000,000) of B bytes (default 1024)
 *                     without reading, until all are sent, S seconds pass or
 *                     the socket stays full for the stall time; then reads
 *                     every reply and checks that each call id came back
 *                     exactly once, status OK, body byte-exact.
 *   partial-frames    (NRPC/1) N connections (default 500) each send a request
 *                     header announcing a body of M MiB (--frame-mb, default
 *                     60), then stream the body as fast as the server takes
 *                     it, all but its last byte, and hold for S seconds; an
 *                     honest client makes one small `echo` call every 100 ms.
 *   slowloris         (NRPC/1) N connections (default 5000) each send one byte
 *                     of a request every --interval-s (default 5), spread
 *                     evenly, for S seconds; counts the connections the
 *                     server closes (EOF or RST) and after how long
 *                     (seconds from each one's connect: first, median, last).
 *   idle-after-large  (NRPC/1) K connections (default 100), one after the
 *                     other, each make one `echo` call of B bytes (default
 *                     16 MiB) and then stay open and idle; 3 s later the RSS
 *                     gives the cost of an idle connection after a big call.
 *
 * Every scenario: the server's VmRSS before, sampled every 50 ms during the
 * burst (the peak), at its end with the hostile sockets still open, then
 * all of them are closed and the RSS is read again after the settle time
 * (5 s); VmHWM from /proc/PID/status at the end. A server whose RSS passes
 * --max-rss-mb cuts the burst short (capped=1): the machine is shared, and a
 * server without limits would otherwise take all of it. One line on stdout:
 *   hostile: scenario=NAME clients=N peak_rss_kib=P before_kib=A end_kib=E
 *     after5s_kib=F hwm_kib=H settle_s=5 <scenario's counts> capped=0|1
 *     server_gone=0|1 burst_s=T result=ok|fail
 * Exit 0; 1 when a check failed (rpc-noread: a reply missing, duplicated or
 * wrong; idle-after-large: a wrong reply; no connection at all) or the
 * server died; 2 for usage errors. Kernel socket buffers are not in any
 * RSS: the figures are the server's user-space memory. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum {
    HDR_LEN = 24,
    METHOD_LEN = 4,                  /* "echo" */
    PREFIX_LEN = HDR_LEN + METHOD_LEN, /* header + method: what precedes a body */
    TYPE_REQUEST = 1,
    TYPE_RESPONSE = 2,
    STATUS_OVERLOADED = 4,
    CHUNK = 256 * 1024,     /* bytes per send/recv call */
    TURN_CHUNKS = 16,       /* sends per connection per poll round, so one fast
                               connection cannot starve the others */
    ERR_BODY_MAX = 4096,    /* an error reply's message: longer is a broken peer */
    SAMPLE_MS = 50,
    TICK_MS = 100,
    DIAL_TIMEOUT_S = 5,
    READ_IDLE_S = 10,       /* rpc-noread: reading gives up after this long without a byte */
    HONEST_PERIOD_MS = 100,
    HONEST_BODY = 64,
    HONEST_TIMEOUT_MS = 1000,
    IDLE_SETTLE_S = 3,      /* idle-after-large: time for the frees before measuring */
    END_HOLD_S = 1,         /* echo-noread: connections stay open this long after the burst */
    FD_SPARE = 64,          /* descriptors beyond the clients: stdio, the honest client */
};

static const char METHOD[METHOD_LEN + 1] = "echo";
#define MIB ((uint64_t)1 << 20)

/* ---- time ---------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Milliseconds until `deadline` for poll(), at most TICK_MS so that loops
 * look at their clocks and stop flags often enough. */
static int poll_ms(double deadline)
{
    double ms = (deadline - now_s()) * 1000;
    if (ms <= 0)
        return 0;
    return ms > TICK_MS ? TICK_MS : (int)ms + 1;
}

/* ---- options --------------------------------------------------------------------- */

struct opts {
    const char *scenario, *target;
    long pid, clients, requests, mb, frame_mb, max_rss_mb, size;
    double seconds, interval_s, stall_s, settle_s;
};

struct flag {
    const char *name;
    char kind; /* 's' string, 'l' long, 'd' double */
    void *ptr;
};

static int usage(void)
{
    fprintf(stderr,
            "usage: hostile --scenario echo-noread|rpc-noread|partial-frames|slowloris|"
            "idle-after-large --connect HOST:PORT --pid SERVER_PID [--clients N] "
            "[--seconds S] [--mb M] [--requests N] [--size B] [--frame-mb M] "
            "[--interval-s S] [--stall-s S] [--settle-s S] [--max-rss-mb M]\n");
    return 2;
}

static int set_flag(const struct flag *f, const char *v)
{
    char *end;
    errno = 0;
    if (f->kind == 's')
        *(const char **)f->ptr = v;
    else if (f->kind == 'l')
        *(long *)f->ptr = strtol(v, &end, 10);
    else
        *(double *)f->ptr = strtod(v, &end);
    return f->kind != 's' && (errno || end == v || *end) ? -1 : 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.seconds = 60, .stall_s = 3, .settle_s = 5, .interval_s = 5,
                       .max_rss_mb = 4096, .mb = 200, .requests = 2000000, .frame_mb = 60};
    const struct flag flags[] = {
        {"--scenario", 's', &o->scenario}, {"--connect", 's', &o->target},
        {"--pid", 'l', &o->pid},           {"--clients", 'l', &o->clients},
        {"--seconds", 'd', &o->seconds},   {"--mb", 'l', &o->mb},
        {"--requests", 'l', &o->requests}, {"--size", 'l', &o->size},
        {"--frame-mb", 'l', &o->frame_mb}, {"--interval-s", 'd', &o->interval_s},
        {"--stall-s", 'd', &o->stall_s},   {"--settle-s", 'd', &o->settle_s},
        {"--max-rss-mb", 'l', &o->max_rss_mb},
    };
    for (int i = 1; i < argc; i += 2) {
        size_t k = 0;
        while (k < sizeof flags / sizeof flags[0] && strcmp(argv[i], flags[k].name) != 0)
            k++;
        if (k == sizeof flags / sizeof flags[0] || i + 1 >= argc ||
            set_flag(&flags[k], argv[i + 1]) < 0)
            return usage();
    }
    bool bad = !o->scenario || !o->target || o->pid <= 0 || o->clients < 0 || o->mb < 0 ||
               o->requests < 1 || o->size < 0 || o->size > UINT32_MAX || o->frame_mb < 1 ||
               o->frame_mb >= 4096 || o->seconds <= 0 || o->interval_s <= 0 ||
               o->stall_s <= 0 || o->settle_s < 0 || o->max_rss_mb < 0;
    return bad ? usage() : 0;
}

/* ---- the server's address and connections ------------------------------------------ */

struct target {
    struct sockaddr_storage sa;
    socklen_t len;
};

static bool is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    return ss->ss_family == AF_INET6 && IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
}

/* HOST:PORT, HOST an IPv4 or IPv6 literal (brackets optional). Refuses
 * anything but loopback: this tool is meant to hurt, and only our own. */
static int parse_target(const char *s, struct target *t)
{
    const char *colon = strrchr(s, ':');
    char host[INET6_ADDRSTRLEN + 2];
    if (!colon || (size_t)(colon - s) >= sizeof host)
        return -1;
    size_t hl = (size_t)(colon - s);
    memcpy(host, s, hl);
    host[hl] = '\0';
    char *h = host;
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        h++;
    }
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *res;
    if (getaddrinfo(h, colon + 1, &hints, &res) != 0)
        return -1;
    memcpy(&t->sa, res->ai_addr, res->ai_addrlen);
    t->len = res->ai_addrlen;
    freeaddrinfo(res);
    return is_loopback(&t->sa) ? 0 : -1;
}

/* A connected socket, non-blocking if asked. The connect blocks (bounded by
 * SO_SNDTIMEO): on loopback it takes microseconds, unless the server's
 * accept queue is full, and then waiting for the retried SYN is what a
 * real peer does too. TCP_NODELAY: a slowloris byte leaves at once. */
static int dial(const struct target *t, bool nonblock)
{
    int fd = socket(t->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {DIAL_TIMEOUT_S, 0};
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)&t->sa, t->len) < 0 ||
        (nonblock && fcntl(fd, F_SETFL, O_NONBLOCK) < 0)) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

static bool would_block(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

/* Sends or receives exactly n bytes before `deadline` (MSG_DONTWAIT + poll,
 * whatever the socket's mode). Returns 0 or -1. */
static int io_full(int fd, bool out, uint8_t *p, size_t n, double deadline)
{
    while (n > 0) {
        ssize_t k = out ? send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT)
                        : recv(fd, p, n, MSG_DONTWAIT);
        if (k == 0 && !out)
            return -1;
        if (k > 0) {
            p += k;
            n -= (size_t)k;
            continue;
        }
        if (k < 0 && !would_block())
            return -1;
        if (now_s() >= deadline)
            return -1;
        struct pollfd pfd = {.fd = fd, .events = out ? POLLOUT : POLLIN};
        poll(&pfd, 1, poll_ms(deadline));
    }
    return 0;
}

/* Room for `want` descriptors: the soft limit up to the hard one (raising
 * the hard one takes CAP_SYS_RESOURCE). Returns how many we may have. */
static long fit_nofile(long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 0;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)want) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= (rlim_t)want
                          ? (rlim_t)want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= (rlim_t)want ? want
                                                                       : (long)rl.rlim_cur;
}

/* ---- NRPC/1 frames (docs/protocol.md section 2) --------------------------------------- */

/* Encoded by hand from docs/protocol.md, not with lib/rpc/rpc_codec.c: a peer
 * that shared the server's codec would share its mistakes. */

static void put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* The 24-byte header and the method of an `echo` request. */
static void put_request_prefix(uint8_t out[PREFIX_LEN], uint64_t id, uint32_t body_len)
{
    memcpy(out, "NRPC", 4);
    out[4] = 1; /* version */
    out[5] = TYPE_REQUEST;
    put_be(out + 6, METHOD_LEN, 2);
    put_be(out + 8, id, 8);
    put_be(out + 16, 0, 4); /* a request's status */
    put_be(out + 20, body_len, 4);
    memcpy(out + HDR_LEN, METHOD, METHOD_LEN);
}

struct reply_hdr {
    uint64_t id;
    uint32_t status, body_len;
};

/* Returns 0 for a well-formed response header, -1 for anything else (the
 * server broke the protocol: nothing after it can be trusted). */
static int parse_reply_hdr(const uint8_t *p, struct reply_hdr *h)
{
    if (memcmp(p, "NRPC", 4) != 0 || p[4] != 1 || p[5] != TYPE_RESPONSE || get_be(p + 6, 2))
        return -1;
    h->id = get_be(p + 8, 8);
    h->status = (uint32_t)get_be(p + 16, 4);
    h->body_len = (uint32_t)get_be(p + 20, 4);
    return 0;
}

/* The body of call `id`: a splitmix64 stream seeded by the id, so that the
 * bodies of different calls differ and a crossed or shifted reply shows. */
static void fill_body(uint8_t *p, size_t n, uint64_t id)
{
    uint64_t x = id * 0xD1B54A32D192ED03ull;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t z = (x += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        memcpy(p + i, &z, n - i < 8 ? n - i : 8);
    }
}

/* Reads one response into body (room for cap bytes) before deadline.
 * Returns 0 or -1 (closed, late, malformed or too long). */
static int read_reply(int fd, struct reply_hdr *h, uint8_t *body, size_t cap, double deadline)
{
    uint8_t hdr[HDR_LEN];
    if (io_full(fd, false, hdr, HDR_LEN, deadline) < 0 || parse_reply_hdr(hdr, h) < 0 ||
        h->body_len > cap)
        return -1;
    return io_full(fd, false, body, h->body_len, deadline);
}

/* One `echo` call of n bytes on a connected socket; buf has room for
 * PREFIX_LEN + n, in for n. Returns 0 when the reply is OK and byte-exact. */
static int echo_call(int fd, uint64_t id, uint8_t *buf, uint8_t *in, size_t n, double deadline)
{
    put_request_prefix(buf, id, (uint32_t)n);
    fill_body(buf + PREFIX_LEN, n, id);
    struct reply_hdr h;
    if (io_full(fd, true, buf, PREFIX_LEN + n, deadline) < 0 ||
        read_reply(fd, &h, in, n + ERR_BODY_MAX, deadline) < 0)
        return -1;
    bool ok = h.id == id && h.status == 0 && h.body_len == n &&
              memcmp(in, buf + PREFIX_LEN, n) == 0;
    return ok ? 0 : -1;
}

/* ---- the server's memory ------------------------------------------------------------- */

struct rss {
    long rss_kib, hwm_kib;
};

static int read_rss(long pid, struct rss *out)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    out->rss_kib = out->hwm_kib = -1;
    while (fgets(line, sizeof line, f)) {
        sscanf(line, "VmRSS: %ld kB", &out->rss_kib);
        sscanf(line, "VmHWM: %ld kB", &out->hwm_kib);
    }
    fclose(f);
    return out->rss_kib < 0 ? -1 : 0;
}

/* A thread that reads the server's RSS every SAMPLE_MS: the scenarios' own
 * loops may block in a send or a connect, and the peak must not be missed
 * meanwhile. It raises over_cap past the cap, gone when the server dies. */
struct sampler {
    long pid, cap_kib;
    atomic_long peak_kib;
    atomic_bool over_cap, gone, stop;
    pthread_t thread;
};

static void *sampler_main(void *arg)
{
    struct sampler *s = arg;
    while (!atomic_load(&s->stop)) {
        struct rss r;
        if (read_rss(s->pid, &r) < 0) {
            atomic_store(&s->gone, true);
            break;
        }
        if (r.rss_kib > atomic_load(&s->peak_kib))
            atomic_store(&s->peak_kib, r.rss_kib);
        if (s->cap_kib > 0 && r.rss_kib > s->cap_kib)
            atomic_store(&s->over_cap, true);
        sleep_s(SAMPLE_MS / 1000.0);
    }
    return NULL;
}

/* ---- one run: what every scenario shares ---------------------------------------------- */

struct run {
    const struct opts *o;
    struct target target;
    struct sampler sampler;
    long clients;    /* o->clients or the scenario's default, cut to the fd limit */
    long before_kib;
    int *fds;        /* hostile sockets, closed by the runner after end_kib */
    size_t nfds, cap_fds;
    char detail[1024];
    size_t dlen;
    bool failed;
};

/* True when the burst must end early: the server passed the RSS cap or died. */
static bool run_stop(struct run *r)
{
    return atomic_load(&r->sampler.over_cap) || atomic_load(&r->sampler.gone);
}

/* Appends " key=value ..." to the result line. */
__attribute__((format(printf, 2, 3))) static void detail(struct run *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(r->detail + r->dlen, sizeof r->detail - r->dlen, fmt, ap);
    va_end(ap);
    if (n > 0)
        r->dlen += (size_t)n < sizeof r->detail - r->dlen ? (size_t)n
                                                           : sizeof r->detail - r->dlen - 1;
}

/* Hands fd to the runner, which closes it once the end of the burst is
 * measured. Returns fd, or -1 (and closes it) without memory. */
static int keep_fd(struct run *r, int fd)
{
    if (r->nfds == r->cap_fds) {
        size_t cap = r->cap_fds ? 2 * r->cap_fds : 256;
        int *v = realloc(r->fds, cap * sizeof *v);
        if (!v) {
            close(fd);
            return -1;
        }
        r->fds = v;
        r->cap_fds = cap;
    }
    r->fds[r->nfds++] = fd;
    return fd;
}

static void close_kept(struct run *r)
{
    for (size_t i = 0; i < r->nfds; i++)
        close(r->fds[i]);
    r->nfds = 0;
}

/* Connects a non-blocking socket kept by the runner; -1 on failure, with
 * the first failure's reason on stderr. */
static int dial_kept(struct run *r, long *failures)
{
    int fd = dial(&r->target, true);
    if (fd < 0 && (*failures)++ == 0)
        fprintf(stderr, "hostile: connect: %s\n", strerror(errno));
    return fd < 0 ? -1 : keep_fd(r, fd);
}

/* ---- pushers: connections that write a stream as fast as the server takes it -------- */

enum push_state { P_PUSHING, P_DONE, P_STALLED, P_CLOSED };

struct pusher {
    int fd;
    enum push_state state;
    uint64_t sent;
    double last_progress;
    bool ever_stalled;
};

/* What the pushers send: `head` (an NRPC request prefix, or nothing), then
 * zeros, up to `target` bytes each. */
struct push_plan {
    const uint8_t *head;
    size_t head_len;
    uint64_t target;
    double stall_s, deadline;
    bool freeze_on_stall; /* echo-noread: a stalled client gives up */
    bool hold;            /* partial-frames: stay until the deadline when all are done */
    bool watch_input;     /* partial-frames: the server sends nothing; read to see closes */
};

static void push_some(struct pusher *p, const struct push_plan *pl, double now)
{
    static const uint8_t zeros[CHUNK];
    for (int i = 0; i < TURN_CHUNKS && p->sent < pl->target; i++) {
        const uint8_t *src = zeros;
        uint64_t n = CHUNK;
        if (p->sent < pl->head_len) {
            src = pl->head + p->sent;
            n = pl->head_len - p->sent;
        }
        if (n > pl->target - p->sent)
            n = pl->target - p->sent;
        ssize_t k = send(p->fd, src, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0) {
            if (!would_block())
                p->state = P_CLOSED;
            return;
        }
        p->sent += (uint64_t)k;
        p->last_progress = now;
    }
    if (p->sent >= pl->target)
        p->state = P_DONE;
}

/* The server should send nothing on a partial request: read whatever comes
 * only to see an EOF or a reset. */
static void drain_input(struct pusher *p)
{
    static uint8_t sink[CHUNK];
    ssize_t k = recv(p->fd, sink, sizeof sink, MSG_DONTWAIT);
    if (k == 0 || (k < 0 && !would_block()))
        p->state = P_CLOSED;
}

/* Fills pfd; returns how many pushers still push. */
static size_t pushers_poll_set(const struct pusher *ps, size_t n, const struct push_plan *pl,
                               struct pollfd *pfd)
{
    size_t pushing = 0;
    for (size_t i = 0; i < n; i++) {
        short ev = pl->watch_input && ps[i].state != P_CLOSED ? POLLIN : 0;
        if (ps[i].state == P_PUSHING) {
            ev |= POLLOUT;
            pushing++;
        }
        pfd[i] = (struct pollfd){.fd = ev ? ps[i].fd : -1, .events = ev};
    }
    return pushing;
}

static void pusher_event(struct pusher *p, short revents, const struct push_plan *pl, double now)
{
    if (pl->watch_input && (revents & (POLLIN | POLLERR | POLLHUP)))
        drain_input(p);
    if (p->state == P_PUSHING && (revents & (POLLOUT | POLLERR | POLLHUP)))
        push_some(p, pl, now);
    if (p->state == P_PUSHING && now - p->last_progress >= pl->stall_s) {
        p->ever_stalled = true;
        if (pl->freeze_on_stall)
            p->state = P_STALLED;
    }
}

static int pushers_run(struct run *r, struct pusher *ps, size_t n, const struct push_plan *pl)
{
    struct pollfd *pfd = calloc(n, sizeof *pfd);
    if (!pfd)
        return -1;
    while (now_s() < pl->deadline && !run_stop(r)) {
        if (pushers_poll_set(ps, n, pl, pfd) == 0 && !pl->hold)
            break;
        poll(pfd, n, poll_ms(pl->deadline));
        double now = now_s();
        for (size_t i = 0; i < n; i++)
            pusher_event(&ps[i], pfd[i].revents, pl, now);
    }
    free(pfd);
    return 0;
}

/* Opens n pushers; the ones that fail to connect count as closed. */
static void pushers_open(struct run *r, struct pusher *ps, size_t n)
{
    long failures = 0;
    for (size_t i = 0; i < n && !run_stop(r); i++) {
        ps[i] = (struct pusher){.fd = dial_kept(r, &failures), .last_progress = now_s()};
        if (ps[i].fd < 0)
            ps[i].state = P_CLOSED;
    }
    detail(r, " connect_failed=%ld", failures);
}

static void pushers_report(struct run *r, const struct pusher *ps, size_t n, double stall_s)
{
    uint64_t total = 0, lo = UINT64_MAX, hi = 0;
    long count[P_CLOSED + 1] = {0}, ever = 0, paused = 0;
    double now = now_s();
    for (size_t i = 0; i < n; i++) {
        total += ps[i].sent;
        lo = ps[i].sent < lo ? ps[i].sent : lo;
        hi = ps[i].sent > hi ? ps[i].sent : hi;
        count[ps[i].state]++;
        ever += ps[i].ever_stalled;
        paused += ps[i].state == P_PUSHING && now - ps[i].last_progress >= stall_s;
    }
    detail(r, " sent_mib=%.1f sent_min_mib=%.1f sent_max_mib=%.1f completed=%ld stalled=%ld",
           (double)total / MIB, n ? (double)lo / MIB : 0.0, (double)hi / MIB, count[P_DONE],
           count[P_STALLED] + paused);
    detail(r, " ever_stalled=%ld closed=%ld", ever, count[P_CLOSED]);
}

/* ---- echo-noread ------------------------------------------------------------------------ */

static int scenario_echo_noread(struct run *r)
{
    size_t n = (size_t)r->clients;
    struct pusher *ps = calloc(n, sizeof *ps);
    if (!ps)
        return -1;
    pushers_open(r, ps, n);
    struct push_plan pl = {.target = (uint64_t)r->o->mb * MIB, .stall_s = r->o->stall_s,
                           .deadline = now_s() + r->o->seconds, .freeze_on_stall = true};
    int rc = pushers_run(r, ps, n, &pl);
    /* What the clients sent last may still sit in kernel buffers: a moment
     * for the server to take it in before end_kib. */
    sleep_s(END_HOLD_S);
    detail(r, " mib=%ld", r->o->mb);
    pushers_report(r, ps, n, pl.stall_s);
    free(ps);
    return rc;
}

/* ---- the honest client of partial-frames ------------------------------------------------- */

/* One small `echo` call every HONEST_PERIOD_MS on its own connection, in its
 * own thread, so that its latency is the server's and not our poll loop's.
 * A failed call (timeout, wrong reply) closes the connection: a late reply
 * on it would be taken for the next call's. */
struct honest {
    const struct target *t;
    atomic_bool stop;
    long calls, ok;
    double max_ms, sum_ms;
    pthread_t thread;
};

static void honest_tick(struct honest *h, int *fd, uint64_t id)
{
    uint8_t buf[PREFIX_LEN + HONEST_BODY], in[HONEST_BODY + ERR_BODY_MAX];
    if (*fd < 0)
        *fd = dial(h->t, false);
    double t0 = now_s();
    int rc = *fd < 0 ? -1
                     : echo_call(*fd, id, buf, in, HONEST_BODY, t0 + HONEST_TIMEOUT_MS / 1000.0);
    double ms = (now_s() - t0) * 1000;
    h->calls++;
    if (rc == 0) {
        h->ok++;
        h->sum_ms += ms;
        h->max_ms = ms > h->max_ms ? ms : h->max_ms;
    } else if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static void *honest_main(void *arg)
{
    struct honest *h = arg;
    int fd = -1;
    double next = now_s();
    for (uint64_t id = 1; !atomic_load(&h->stop); id++) {
        honest_tick(h, &fd, id);
        next += HONEST_PERIOD_MS / 1000.0;
        double now = now_s();
        if (next < now)
            next = now; /* a slow call: no burst of catch-up calls after it */
        sleep_s(next - now);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static void honest_report(struct run *r, const struct honest *h)
{
    detail(r, " honest_calls=%ld honest_ok=%ld honest_max_ms=%.1f honest_mean_ms=%.2f",
           h->calls, h->ok, h->max_ms, h->ok ? h->sum_ms / (double)h->ok : 0.0);
}

/* ---- partial-frames ---------------------------------------------------------------------- */

static int scenario_partial_frames(struct run *r)
{
    size_t n = (size_t)r->clients;
    uint64_t body = (uint64_t)r->o->frame_mb * MIB;
    uint8_t head[PREFIX_LEN];
    put_request_prefix(head, 1, (uint32_t)body);
    struct pusher *ps = calloc(n, sizeof *ps);
    struct honest h = {.t = &r->target};
    if (!ps || pthread_create(&h.thread, NULL, honest_main, &h) != 0) {
        free(ps);
        return -1;
    }
    pushers_open(r, ps, n);
    /* All but the body's last byte: the frame never completes. */
    struct push_plan pl = {.head = head, .head_len = PREFIX_LEN, .target = PREFIX_LEN + body - 1,
                           .stall_s = r->o->stall_s, .deadline = now_s() + r->o->seconds,
                           .hold = true, .watch_input = true};
    int rc = pushers_run(r, ps, n, &pl);
    atomic_store(&h.stop, true);
    pthread_join(h.thread, NULL);
    detail(r, " frame_mib=%ld", r->o->frame_mb);
    pushers_report(r, ps, n, pl.stall_s);
    honest_report(r, &h);
    free(ps);
    return rc;
}

/* ---- rpc-noread -------------------------------------------------------------------------- */

/* One connection: requests go out of `batch` (frames encoded a batch at a
 * time), replies come into `in` and are checked off in `seen`. Every frame
 * has the same length, so what was sent is counted in bytes. */
struct rpc_pipe {
    int fd;
    size_t size, frame_len;
    uint64_t total, next; /* requests to send (cut when sending stops), next to encode */
    uint8_t *batch;
    size_t batch_cap, len, off;
    double last_out, last_in;
    bool stalled, eof, broken;
    uint8_t *in, *expect, *seen;
    size_t in_cap, in_len;
    uint64_t replies, distinct, ok, dup, bad, overloaded;
};

static void pipe_fill(struct rpc_pipe *p)
{
    p->len = p->off = 0;
    while (p->next < p->total && p->len + p->frame_len <= p->batch_cap) {
        uint8_t *f = p->batch + p->len;
        put_request_prefix(f, p->next, (uint32_t)p->size);
        fill_body(f + PREFIX_LEN, p->size, p->next);
        p->len += p->frame_len;
        p->next++;
    }
}

static bool pipe_all_sent(const struct rpc_pipe *p)
{
    return p->next == p->total && p->off == p->len;
}

static void pipe_send(struct rpc_pipe *p)
{
    for (int i = 0; i < TURN_CHUNKS; i++) {
        if (p->off == p->len)
            pipe_fill(p);
        if (p->len == 0)
            return;
        ssize_t k = send(p->fd, p->batch + p->off, p->len - p->off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0) {
            p->eof = !would_block();
            return;
        }
        p->off += (size_t)k;
        p->last_out = now_s();
    }
}

/* Sending stops at the end of the frame under way: a request cut in half
 * would never be answered. The frames of the batch after it are dropped. */
static void pipe_cut(struct rpc_pipe *p)
{
    size_t end = (p->off + p->frame_len - 1) / p->frame_len * p->frame_len;
    p->next -= (p->len - end) / p->frame_len;
    p->len = end;
    p->total = p->next;
}

static void pipe_check(struct rpc_pipe *p, const struct reply_hdr *h, const uint8_t *body)
{
    p->replies++;
    if (h->id >= p->total) {
        p->bad++; /* an id we never sent */
        return;
    }
    if (p->seen[h->id]) {
        p->dup++;
        return;
    }
    p->seen[h->id] = 1;
    p->distinct++;
    p->overloaded += h->status == STATUS_OVERLOADED;
    fill_body(p->expect, p->size, h->id);
    if (h->status == 0 && h->body_len == p->size && memcmp(body, p->expect, p->size) == 0)
        p->ok++;
    else
        p->bad++;
}

/* Checks every whole reply in `in` and keeps the partial one. Returns -1 on
 * a malformed reply: nothing after it can be framed. */
static int pipe_parse(struct rpc_pipe *p)
{
    size_t pos = 0;
    while (p->in_len - pos >= HDR_LEN) {
        struct reply_hdr h;
        if (parse_reply_hdr(p->in + pos, &h) < 0 || h.body_len > p->size + ERR_BODY_MAX)
            return -1;
        if (p->in_len - pos < HDR_LEN + (size_t)h.body_len)
            break;
        pipe_check(p, &h, p->in + pos + HDR_LEN);
        pos += HDR_LEN + h.body_len;
    }
    memmove(p->in, p->in + pos, p->in_len - pos);
    p->in_len -= pos;
    return 0;
}

static void pipe_read(struct rpc_pipe *p)
{
    for (int i = 0; i < TURN_CHUNKS && !p->eof; i++) {
        ssize_t k = recv(p->fd, p->in + p->in_len, p->in_cap - p->in_len, MSG_DONTWAIT);
        if (k == 0 || (k < 0 && !would_block()))
            p->eof = true;
        if (k <= 0)
            return;
        p->in_len += (size_t)k;
        p->last_in = now_s();
        if (pipe_parse(p) < 0)
            p->eof = p->broken = true;
    }
}

/* Pipelines without reading until everything is sent, the deadline, or a
 * socket that stays full for stall_s (the server stopped reading). */
static void pipe_send_phase(struct run *r, struct rpc_pipe *p, double deadline)
{
    p->last_out = now_s();
    while (!pipe_all_sent(p) && !p->eof && now_s() < deadline && !run_stop(r)) {
        struct pollfd pfd = {.fd = p->fd, .events = POLLOUT};
        if (poll(&pfd, 1, poll_ms(deadline)) > 0)
            pipe_send(p);
        if (now_s() - p->last_out >= r->o->stall_s) {
            p->stalled = true;
            break;
        }
    }
    pipe_cut(p);
}

/* Reads every reply, finishing the frame cut in the middle on the way. */
static void pipe_read_phase(struct rpc_pipe *p)
{
    p->last_in = now_s();
    while (p->distinct < p->total && !p->eof && now_s() - p->last_in < READ_IDLE_S) {
        struct pollfd pfd = {.fd = p->fd, .events = POLLIN | (pipe_all_sent(p) ? 0 : POLLOUT)};
        if (poll(&pfd, 1, TICK_MS) <= 0)
            continue;
        if (pfd.revents & POLLOUT)
            pipe_send(p);
        if (pfd.revents & (POLLIN | POLLERR | POLLHUP))
            pipe_read(p);
    }
}

static int pipe_init(struct rpc_pipe *p, const struct opts *o)
{
    size_t size = o->size ? (size_t)o->size : 1024;
    size_t frame = PREFIX_LEN + size;
    size_t per_batch = frame < CHUNK ? CHUNK / frame : 1;
    *p = (struct rpc_pipe){.size = size, .frame_len = frame, .total = (uint64_t)o->requests,
                           .batch_cap = per_batch * frame,
                           .in_cap = 2 * (HDR_LEN + size + ERR_BODY_MAX) + CHUNK};
    p->batch = malloc(p->batch_cap);
    p->in = malloc(p->in_cap);
    p->expect = malloc(size + 1);
    p->seen = calloc(p->total, 1);
    return p->batch && p->in && p->expect && p->seen ? 0 : -1;
}

static void pipe_free(struct rpc_pipe *p)
{
    free(p->batch);
    free(p->in);
    free(p->expect);
    free(p->seen);
}

static void pipe_report(struct run *r, const struct rpc_pipe *p, double send_s, double read_s)
{
    uint64_t missing = p->total - p->distinct;
    detail(r, " requests=%ld size=%zu sent=%llu replies=%llu ok=%llu missing=%llu", r->o->requests,
           p->size, (unsigned long long)p->total, (unsigned long long)p->replies,
           (unsigned long long)p->ok, (unsigned long long)missing);
    detail(r, " duplicate=%llu bad=%llu overloaded=%llu stalled=%d eof=%d malformed=%d",
           (unsigned long long)p->dup, (unsigned long long)p->bad,
           (unsigned long long)p->overloaded, p->stalled, p->eof, p->broken);
    detail(r, " send_s=%.1f read_s=%.1f", send_s, read_s);
    r->failed = r->failed || missing || p->dup || p->bad;
}

static int scenario_rpc_noread(struct run *r)
{
    struct rpc_pipe p;
    long failures = 0;
    if (pipe_init(&p, r->o) < 0 || (p.fd = dial_kept(r, &failures)) < 0) {
        detail(r, " connect_failed=%ld", failures);
        pipe_free(&p);
        return -1;
    }
    double t0 = now_s();
    pipe_send_phase(r, &p, t0 + r->o->seconds);
    double t1 = now_s();
    pipe_read_phase(&p);
    pipe_report(r, &p, t1 - t0, now_s() - t1);
    pipe_free(&p);
    return 0;
}

/* ---- slowloris ---------------------------------------------------------------------------- */

struct loris {
    int fd;
    uint64_t sent;
    double opened, next_send, closed_at; /* closed_at < 0: still open */
};

/* The byte a slowloris connection sends after `sent` others: a request
 * announcing a 1 MiB body, so that the frame cannot complete in any run. */
static uint8_t loris_byte(uint64_t sent)
{
    uint8_t head[PREFIX_LEN];
    put_request_prefix(head, 1, MIB);
    return sent < PREFIX_LEN ? head[sent] : 0;
}

static void loris_close_seen(struct loris *l, double now, long *eof, long *rst)
{
    uint8_t sink[4096];
    ssize_t k = recv(l->fd, sink, sizeof sink, MSG_DONTWAIT);
    if (k > 0 || (k < 0 && would_block()))
        return; /* the server answered something; the connection lives */
    l->closed_at = now;
    ++*(k == 0 ? eof : rst);
}

static void loris_send_due(struct loris *l, double now, double interval, long *rst)
{
    if (l->closed_at >= 0 || now < l->next_send)
        return;
    uint8_t b = loris_byte(l->sent);
    if (send(l->fd, &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1)
        l->sent++;
    else if (!would_block()) {
        l->closed_at = now;
        ++*rst;
    }
    l->next_send += interval;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* How long the closed connections lived: min, median, max. */
static void loris_report(struct run *r, const struct loris *ls, size_t n, long eof, long rst)
{
    double *life = malloc((n ? n : 1) * sizeof *life);
    size_t k = 0;
    uint64_t most = 0;
    for (size_t i = 0; life && i < n; i++) {
        if (ls[i].fd >= 0 && ls[i].closed_at >= 0)
            life[k++] = ls[i].closed_at - ls[i].opened;
        most = ls[i].sent > most ? ls[i].sent : most;
    }
    if (k)
        qsort(life, k, sizeof *life, cmp_double);
    detail(r, " closed=%zu eof=%ld rst=%ld first_close_s=%.1f median_close_s=%.1f"
              " last_close_s=%.1f bytes_each_max=%llu",
           k, eof, rst, k ? life[0] : -1.0, k ? life[k / 2] : -1.0, k ? life[k - 1] : -1.0,
           (unsigned long long)most);
    free(life);
}

static void loris_open(struct run *r, struct loris *ls, size_t n, double interval)
{
    long failures = 0, opened = 0;
    for (size_t i = 0; i < n && !run_stop(r); i++) {
        double now = now_s();
        /* Spread over one interval: the server sees a steady trickle. */
        ls[i] = (struct loris){.fd = dial_kept(r, &failures), .opened = now,
                               .next_send = now + interval * (double)i / (double)n,
                               .closed_at = -1};
        opened += ls[i].fd >= 0;
    }
    detail(r, " opened=%ld connect_failed=%ld", opened, failures);
}

static void loris_loop(struct run *r, struct loris *ls, size_t n, struct pollfd *pfd,
                       long *eof, long *rst)
{
    double deadline = now_s() + r->o->seconds;
    while (now_s() < deadline && !run_stop(r)) {
        for (size_t i = 0; i < n; i++)
            pfd[i] = (struct pollfd){.fd = ls[i].closed_at < 0 ? ls[i].fd : -1, .events = POLLIN};
        poll(pfd, n, poll_ms(deadline));
        double now = now_s();
        for (size_t i = 0; i < n; i++) {
            if (pfd[i].fd >= 0 && (pfd[i].revents & (POLLIN | POLLERR | POLLHUP)))
                loris_close_seen(&ls[i], now, eof, rst);
            if (ls[i].fd >= 0)
                loris_send_due(&ls[i], now, r->o->interval_s, rst);
        }
    }
}

static int scenario_slowloris(struct run *r)
{
    size_t n = (size_t)r->clients;
    struct loris *ls = calloc(n, sizeof *ls);
    struct pollfd *pfd = calloc(n, sizeof *pfd);
    long eof = 0, rst = 0;
    int rc = ls && pfd ? 0 : -1;
    if (rc == 0) {
        loris_open(r, ls, n, r->o->interval_s);
        loris_loop(r, ls, n, pfd, &eof, &rst);
        detail(r, " interval_s=%.1f", r->o->interval_s);
        loris_report(r, ls, n, eof, rst);
    }
    free(ls);
    free(pfd);
    return rc;
}

/* ---- idle-after-large ----------------------------------------------------------------------- */

static int scenario_idle_after_large(struct run *r)
{
    size_t size = r->o->size ? (size_t)r->o->size : 16 * MIB;
    uint8_t *buf = malloc(PREFIX_LEN + size), *in = malloc(size + ERR_BODY_MAX);
    double deadline = now_s() + r->o->seconds;
    long ok = 0, bad = 0, failures = 0;
    for (long i = 0; buf && in && i < r->clients && now_s() < deadline && !run_stop(r); i++) {
        int fd = dial_kept(r, &failures);
        if (fd >= 0 && echo_call(fd, (uint64_t)i, buf, in, size, deadline) == 0)
            ok++;
        else
            bad++;
    }
    free(buf);
    free(in);
    sleep_s(IDLE_SETTLE_S);
    struct rss idle = {0};
    read_rss(r->o->pid, &idle);
    long calls = ok + bad;
    detail(r, " size=%zu calls=%ld ok=%ld bad=%ld connect_failed=%ld idle_kib=%ld", size, calls,
           ok, bad, failures, idle.rss_kib);
    detail(r, " bytes_per_idle_conn=%.0f",
           calls ? (double)(idle.rss_kib - r->before_kib) * 1024 / (double)calls : 0.0);
    r->failed = r->failed || bad || calls == 0;
    return 0;
}

/* ---- the runner ------------------------------------------------------------------------------ */

struct scenario {
    const char *name;
    int (*fn)(struct run *r);
    long clients;  /* default */
    bool one_conn; /* --clients does not apply */
};

static const struct scenario scenarios[] = {
    {"echo-noread", scenario_echo_noread, 1, false},
    {"rpc-noread", scenario_rpc_noread, 1, true},
    {"partial-frames", scenario_partial_frames, 500, false},
    {"slowloris", scenario_slowloris, 5000, false},
    {"idle-after-large", scenario_idle_after_large, 100, false},
};

static const struct scenario *find_scenario(const char *name)
{
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
        if (strcmp(scenarios[i].name, name) == 0)
            return &scenarios[i];
    return NULL;
}

/* The clients asked for, or as many as the descriptor limit allows (said
 * in the result line). rpc-noread has one connection whatever is asked. */
static long plan_clients(struct run *r, const struct scenario *sc)
{
    long want = sc->one_conn || !r->o->clients ? sc->clients : r->o->clients;
    long have = fit_nofile(want + FD_SPARE) - FD_SPARE;
    if (have >= want)
        return want;
    detail(r, " nofile_short=%ld", want);
    fprintf(stderr, "hostile: RLIMIT_NOFILE allows %ld of the %ld clients\n", have, want);
    return have > 0 ? have : 0;
}

static void print_result(struct run *r, const char *name, const struct rss *before,
                         const struct rss *end, const struct rss *after, double burst_s)
{
    long peak = atomic_load(&r->sampler.peak_kib);
    if (end->rss_kib > peak)
        peak = end->rss_kib;
    printf("hostile: scenario=%s clients=%ld peak_rss_kib=%ld before_kib=%ld end_kib=%ld "
           "after5s_kib=%ld hwm_kib=%ld settle_s=%g%s capped=%d server_gone=%d burst_s=%.1f "
           "result=%s\n",
           name, r->clients, peak, before->rss_kib, end->rss_kib, after->rss_kib, after->hwm_kib,
           r->o->settle_s, r->detail, atomic_load(&r->sampler.over_cap),
           atomic_load(&r->sampler.gone), burst_s, r->failed ? "fail" : "ok");
    fflush(stdout);
}

/* before -> burst (sampled) -> end -> close everything -> settle -> after. */
static int run_scenario(struct run *r, const struct scenario *sc)
{
    struct rss before, end = {-1, -1}, after = {-1, -1};
    if (read_rss(r->o->pid, &before) < 0) {
        fprintf(stderr, "hostile: no process %ld\n", r->o->pid);
        return 1;
    }
    r->before_kib = before.rss_kib;
    r->clients = plan_clients(r, sc);
    r->sampler = (struct sampler){.pid = r->o->pid, .cap_kib = r->o->max_rss_mb * 1024};
    atomic_store(&r->sampler.peak_kib, before.rss_kib);
    if (pthread_create(&r->sampler.thread, NULL, sampler_main, &r->sampler) != 0)
        return 1;
    double t0 = now_s();
    r->failed = sc->fn(r) < 0;
    double burst_s = now_s() - t0;
    read_rss(r->o->pid, &end);
    close_kept(r);
    sleep_s(r->o->settle_s);
    read_rss(r->o->pid, &after);
    atomic_store(&r->sampler.stop, true);
    pthread_join(r->sampler.thread, NULL);
    r->failed = r->failed || atomic_load(&r->sampler.gone);
    print_result(r, sc->name, &before, &end, &after, burst_s);
    return r->failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;
    const struct scenario *sc = find_scenario(o.scenario);
    struct run r = {.o = &o};
    if (!sc || parse_target(o.target, &r.target) < 0) {
        fprintf(stderr, "hostile: %s\n",
                sc ? "--connect needs a loopback HOST:PORT" : "unknown scenario");
        return usage();
    }
    signal(SIGPIPE, SIG_IGN); /* MSG_NOSIGNAL covers send(); this, anything else */
    rc = run_scenario(&r, sc);
    free(r.fds);
    return rc;
}
