/* The tcp_proxy example (examples/tcp_proxy.c) end to end: the built binary
 * runs as a child process between a client and an upstream that are plain
 * blocking sockets here (every call times out: SO_RCVTIMEO / SO_SNDTIMEO),
 * on loopback. The scenarios check that
 * - 50 MB arrive byte-exact through a slow reader at either end while the
 *   proxy's memory stays bounded (its /proc/PID/status);
 * - a FIN is passed on after the bytes before it, the other direction stays
 *   open, and the proxy closes the pair when both directions are done;
 * - a reset of one side closes the other soon, also while the proxy is
 *   holding that side back, and then every byte the proxy's kernel had
 *   taken still arrives; so does everything after a hang-up while paused;
 * - a refused upstream closes the client, and SIGTERM with a pair open ends
 *   both connections and exits 0.
 * After each scenario the proxy holds no descriptor of a finished pair (its
 * /proc/PID/fd) and exits 0 on SIGTERM: under a sanitizer that also means no
 * leak and no race report in the child.
 *
 * The binary is $NETLOOP_TCP_PROXY (test/meson.build sets it), else
 * ../examples/tcp_proxy next to this test's own executable. */
#include <dirent.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net_test_util.h"

/* The proxy's high-water mark is 1 MiB per direction; allow that twice
 * over, its input buffers, and the allocator's slack. Without backpressure
 * the 50 MB slow-reader scenarios would push it past 40 MiB. */
#define RSS_GROWTH_MAX_KB (32 * 1024)
/* The proxy gives a side whose partner is gone 10 s to drain (DRAIN_MS); a
 * close that comes from the reset itself comes well before. */
#define RESET_SEEN_MS 5000

/* ---- the proxy child ---------------------------------------------------------- */

struct proxy {
    pid_t pid;
    int out;          /* its stdout */
    net_addr_t addr;  /* where it listens */
    long start_rss_kb;
    int start_fds;
};

static pid_t child_pid;

/* A failed CHECK exits: the child must not outlive us (the watchdog's
 * _exit is covered by PR_SET_PDEATHSIG). */
static void kill_child(void)
{
    if (child_pid > 0)
        kill(child_pid, SIGKILL);
}

static void proxy_path(char *path, size_t cap)
{
    const char *env = getenv("NETLOOP_TCP_PROXY");
    if (env) {
        snprintf(path, cap, "%s", env);
        return;
    }
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    CHECK(n > 0);
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    CHECK(slash != NULL);
    *slash = '\0';
    snprintf(path, cap, "%s/../examples/tcp_proxy", self);
}

static long proxy_status_kb(const struct proxy *px, const char *field)
{
    char name[64], line[256];
    snprintf(name, sizeof name, "/proc/%d/status", (int)px->pid);
    FILE *f = fopen(name, "r");
    CHECK(f != NULL);
    long kb = -1;
    size_t len = strlen(field);
    while (kb < 0 && fgets(line, sizeof line, f))
        if (strncmp(line, field, len) == 0)
            kb = strtol(line + len, NULL, 10);
    fclose(f);
    CHECK(kb >= 0);
    return kb;
}

static int proxy_fds(const struct proxy *px)
{
    char name[64];
    snprintf(name, sizeof name, "/proc/%d/fd", (int)px->pid);
    DIR *d = opendir(name);
    CHECK(d != NULL);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Reads the child's one line "tcp_proxy listening on HOST:PORT, ...". */
static void read_listen_line(struct proxy *px)
{
    char line[512];
    size_t len = 0;
    uint64_t deadline = net_test_now_ms() + NET_TEST_WAIT_MS;
    while (!memchr(line, '\n', len)) {
        struct pollfd pfd = {.fd = px->out, .events = POLLIN};
        CHECK(net_test_now_ms() < deadline && len < sizeof line - 1);
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t r = read(px->out, line + len, sizeof line - 1 - len);
        CHECK(r > 0);
        len += (size_t)r;
    }
    line[len] = '\0';
    const char *at = strstr(line, " on ");
    CHECK(at != NULL);
    char text[NET_ADDR_STRLEN];
    CHECK(sscanf(at + 4, "%200[^,\n]", text) == 1);
    CHECK_OK(net_addr_parse(&px->addr, text));
}

/* Starts tcp_proxy --threads N in front of upstream; waits for its line. */
static void proxy_start(struct proxy *px, const net_addr_t *upstream, const char *threads)
{
    char path[4200], up[NET_ADDR_STRLEN];
    proxy_path(path, sizeof path);
    CHECK(access(path, X_OK) == 0);
    CHECK(net_addr_format(upstream, up, sizeof up) > 0);
    int pipefd[2];
    CHECK(pipe2(pipefd, O_CLOEXEC) == 0);
    /* ASan keeps 256 MB of freed memory in quarantine by default, which
     * would hide what the proxy itself holds. */
    char asan[1024];
    const char *was = getenv("ASAN_OPTIONS");
    snprintf(asan, sizeof asan, "%s%squarantine_size_mb=4", was ? was : "", was ? ":" : "");
    CHECK(setenv("ASAN_OPTIONS", asan, 1) == 0);
    atexit(kill_child);
    pid_t pid = fork(); /* before any thread of ours: only exec follows */
    CHECK(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(pipefd[1], 1);
        char *argv[] = {path, "--listen", "127.0.0.1:0", "--upstream", up,
                        "--threads", (char *)threads, NULL};
        execv(path, argv);
        _exit(127);
    }
    child_pid = pid;
    close(pipefd[1]);
    *px = (struct proxy){.pid = pid, .out = pipefd[0]};
    read_listen_line(px);
    px->start_rss_kb = proxy_status_kb(px, "VmRSS:");
    px->start_fds = proxy_fds(px);
}

/* The proxy holds no descriptor of a finished pair. */
static void wait_pairs_closed(const struct proxy *px)
{
    WAIT_UNTIL(proxy_fds(px) == px->start_fds);
}

/* The proxy must exit 0 within the wait bound. */
static void proxy_wait_exit(struct proxy *px)
{
    int status = 0;
    uint64_t deadline = net_test_now_ms() + NET_TEST_WAIT_MS;
    pid_t w;
    while ((w = waitpid(px->pid, &status, WNOHANG)) == 0 && net_test_now_ms() < deadline)
        net_test_sleep_ms(5);
    CHECK_EQ(w, px->pid);
    child_pid = 0;
    if (!WIFEXITED(status))
        net_test_fail(__FILE__, __LINE__, "tcp_proxy died of signal %d", WTERMSIG(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
    close(px->out);
}

static void proxy_stop(struct proxy *px)
{
    CHECK(kill(px->pid, SIGTERM) == 0);
    proxy_wait_exit(px);
}

/* ---- the upstream and the client ------------------------------------------------ */

/* The upstream listens with net_test_listen; the proxy's connection to it,
 * made when a client connected, is taken with net_test_accept. */

/* A client through the proxy and the upstream end of the same pair. */
static void pair_open(const struct proxy *px, int lfd, int *client, int *upstream)
{
    *client = net_test_connect(&px->addr, 0);
    *upstream = net_test_accept(lfd);
}

/* An upstream listener, the proxy in front of it (on `threads` I/O loops),
 * and one pair through it: client <-> proxy <-> upstream. */
struct fixture {
    int lfd;
    struct proxy px;
    int client, upstream;
};

static void fixture_start(struct fixture *f, const char *threads)
{
    net_test_watchdog_start();
    net_addr_t up;
    f->lfd = net_test_listen(&up);
    proxy_start(&f->px, &up, threads);
    pair_open(&f->px, f->lfd, &f->client, &f->upstream);
}

/* Every pair is closed; SIGTERM, and the proxy exits 0. */
static void fixture_end(struct fixture *f)
{
    wait_pairs_closed(&f->px);
    proxy_stop(&f->px);
    CHECK(close(f->lfd) == 0);
}

/* ---- streams -------------------------------------------------------------------- */

/* Byte `off` of every stream: a lost, repeated or reordered piece shows. */
static unsigned char pattern_at(uint64_t off)
{
    return (unsigned char)((((uint32_t)off * 2654435761u) >> 24) ^ (off >> 20));
}

static void send_pattern(int fd, size_t total)
{
    static _Thread_local unsigned char chunk[64 * KiB];
    for (size_t off = 0; off < total;) {
        size_t n = total - off < sizeof chunk ? total - off : sizeof chunk;
        for (size_t i = 0; i < n; i++)
            chunk[i] = pattern_at(off + i);
        CHECK(net_test_send_all(fd, chunk, n));
        off += n;
    }
}

/* Reads until EOF in reads of at most `step` bytes with pause_ms between
 * them, checking each byte; returns the count. A reset fails unless
 * reset_ok, which ends the stream like EOF. rss (may be NULL) samples the
 * proxy's VmRSS as it goes. */
struct reading {
    size_t step;
    unsigned pause_ms;
    bool reset_ok;
    const struct proxy *rss;
    long max_rss_kb;
};

static size_t recv_pattern(int fd, struct reading *rd)
{
    static _Thread_local unsigned char buf[64 * KiB];
    size_t got = 0;
    uint64_t next_sample = 0;
    for (;;) {
        ssize_t r = recv(fd, buf, rd->step < sizeof buf ? rd->step : sizeof buf, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0 || (r < 0 && errno == ECONNRESET && rd->reset_ok))
            return got;
        if (r < 0)
            net_test_fail(__FILE__, __LINE__, "recv after %zu bytes: %s", got, strerror(errno));
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] != pattern_at(got + (size_t)i))
                net_test_fail(__FILE__, __LINE__, "byte %zu differs", got + (size_t)i);
        got += (size_t)r;
        if (rd->rss && net_test_now_ms() >= next_sample) {
            long kb = proxy_status_kb(rd->rss, "VmRSS:");
            rd->max_rss_kb = kb > rd->max_rss_kb ? kb : rd->max_rss_kb;
            next_sample = net_test_now_ms() + 100;
        }
        if (rd->pause_ms)
            net_test_sleep_ms(rd->pause_ms);
    }
}

/* One end of a transfer, run on a helper thread: sends `size` pattern
 * bytes, half-closes, and waits for the proxy to close its side. */
struct sender {
    int fd;
    size_t size;
};

static void sender_run(void *arg)
{
    struct sender *s = arg;
    send_pattern(s->fd, s->size);
    CHECK(shutdown(s->fd, SHUT_WR) == 0);
    struct reading rd = {.step = 64 * KiB};
    CHECK_EQ(recv_pattern(s->fd, &rd), 0);
}

/* `size` bytes from `from` to a reader at `to` that takes 16 KiB a
 * millisecond (loopback and the proxy are far faster, so the proxy has to
 * hold the sender back): byte-exact, and the proxy's memory stays bounded. */
static void relay_to_slow_reader(const struct proxy *px, int from, int to, size_t size)
{
    struct sender s = {from, size};
    struct net_test_job job;
    net_test_job_start(&job, sender_run, &s);
    struct reading rd = {.step = 16 * KiB, .pause_ms = 1, .rss = px};
    uint64_t t0 = net_test_now_ms();
    size_t got = recv_pattern(to, &rd);
    uint64_t ms = net_test_now_ms() - t0;
    CHECK_EQ(got, size);
    CHECK(close(to) == 0); /* the proxy then closes its side of `from` */
    net_test_job_join(&job);
    CHECK(close(from) == 0);
    /* The kernel updates VmHWM lazily: a sample can exceed it a little. */
    long hwm = proxy_status_kb(px, "VmHWM:");
    long peak = hwm > rd.max_rss_kb ? hwm : rd.max_rss_kb;
    printf("%zu bytes in %llu ms; proxy VmRSS %ld kB at start, %ld kB max sampled, VmHWM %ld kB\n",
           got, (unsigned long long)ms, px->start_rss_kb, rd.max_rss_kb, hwm);
    CHECK(peak - px->start_rss_kb < RSS_GROWTH_MAX_KB);
}

/* Sends msg one way and reply the other. */
static void exchange(int a, int b, const char *msg, const char *reply)
{
    char buf[64];
    CHECK(net_test_send_all(a, msg, strlen(msg)));
    net_test_recv_exact(b, buf, strlen(msg));
    CHECK_MEM_EQ(buf, msg, strlen(msg));
    CHECK(net_test_send_all(b, reply, strlen(reply)));
    net_test_recv_exact(a, buf, strlen(reply));
    CHECK_MEM_EQ(buf, reply, strlen(reply));
}

/* ---- scenarios ------------------------------------------------------------------- */

TEST(proxy_50mb_slow_reader_bytes_exact_rss_bounded)
{
    struct fixture f;
    fixture_start(&f, "2");
    relay_to_slow_reader(&f.px, f.upstream, f.client, 50 * 1000 * 1000);
    fixture_end(&f);
}

TEST(proxy_50mb_slow_upstream_reader_bytes_exact_rss_bounded)
{
    struct fixture f;
    fixture_start(&f, "2");
    relay_to_slow_reader(&f.px, f.client, f.upstream, 50 * 1000 * 1000);
    fixture_end(&f);
}

/* `first` sends 1 MB and half-closes; `second` reads all of it, then EOF,
 * and answers 256 KB the other way, which arrives; then it half-closes too
 * and the proxy, both directions done, closes the pair by itself. */
struct half {
    int fd;
};

static void first_run(void *arg)
{
    int fd = ((struct half *)arg)->fd;
    send_pattern(fd, 1000 * 1000);
    CHECK(shutdown(fd, SHUT_WR) == 0);
    struct reading rd = {.step = 64 * KiB};
    CHECK_EQ(recv_pattern(fd, &rd), 256 * 1000);
}

static void half_close_both_ways(int first, int second, const struct proxy *px)
{
    struct half h = {first};
    struct net_test_job job;
    net_test_job_start(&job, first_run, &h);
    struct reading rd = {.step = 64 * KiB};
    CHECK_EQ(recv_pattern(second, &rd), 1000 * 1000);
    send_pattern(second, 256 * 1000);
    CHECK(shutdown(second, SHUT_WR) == 0);
    net_test_job_join(&job);
    wait_pairs_closed(px); /* both of our sockets are still open */
    CHECK(close(first) == 0);
    CHECK(close(second) == 0);
}

TEST(proxy_fin_from_client_forwarded_after_bytes)
{
    struct fixture f;
    fixture_start(&f, "0"); /* all on the base loop */
    half_close_both_ways(f.client, f.upstream, &f.px);
    fixture_end(&f);
}

TEST(proxy_fin_from_upstream_forwarded_after_bytes)
{
    struct fixture f;
    fixture_start(&f, "0");
    half_close_both_ways(f.upstream, f.client, &f.px);
    fixture_end(&f);
}

/* The other side sees EOF or a reset, soon (not the proxy's drain timer),
 * and the proxy goes on serving new pairs. */
static void expect_closed_soon(int fd)
{
    struct timeval tv = {.tv_sec = RESET_SEEN_MS / 1000};
    CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    char c;
    ssize_t r = recv(fd, &c, 1, 0);
    if (r != 0 && !(r < 0 && errno == ECONNRESET))
        net_test_fail(__FILE__, __LINE__, "recv gave %zd (%s), want EOF or ECONNRESET", r,
                      r < 0 ? strerror(errno) : "a byte");
    CHECK(close(fd) == 0);
}

/* Once the pair is closed the proxy serves a new one; then fixture_end. */
static void fixture_end_after_new_pair(struct fixture *f)
{
    wait_pairs_closed(&f->px);
    int client, upstream;
    pair_open(&f->px, f->lfd, &client, &upstream);
    exchange(client, upstream, "again", "still here");
    CHECK(close(client) == 0);
    expect_closed_soon(upstream);
    fixture_end(f);
}

static void reset_scenario(bool client_resets)
{
    struct fixture f;
    fixture_start(&f, "2");
    exchange(f.client, f.upstream, "hello", "world");
    net_test_close_reset(client_resets ? f.client : f.upstream);
    expect_closed_soon(client_resets ? f.upstream : f.client);
    fixture_end_after_new_pair(&f);
}

TEST(proxy_rst_from_client_closes_upstream)
{
    reset_scenario(true);
}

TEST(proxy_rst_from_upstream_closes_client)
{
    reset_scenario(false);
}

/* Sends pattern bytes without blocking until `limit` or until nothing more
 * fits for a while (the proxy holds back); returns the count. */
static size_t send_until_full(int fd, size_t limit)
{
    int flags = fcntl(fd, F_GETFL);
    CHECK(fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0);
    static unsigned char chunk[16 * KiB];
    size_t sent = 0;
    for (int idle = 0; sent < limit && idle < 50;) {
        size_t n = limit - sent < sizeof chunk ? limit - sent : sizeof chunk;
        for (size_t i = 0; i < n; i++)
            chunk[i] = pattern_at(sent + i);
        ssize_t w = send(fd, chunk, n, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN)
            net_test_fail(__FILE__, __LINE__, "send: %s", strerror(errno));
        idle = w > 0 ? 0 : idle + 1;
        sent += w > 0 ? (size_t)w : 0;
        if (w < 0)
            net_test_sleep_ms(10);
    }
    CHECK(fcntl(fd, F_SETFL, flags) == 0);
    return sent;
}

/* Bytes of fd's output the peer's kernel has not acknowledged; waits until
 * the count holds still (the peer stopped taking any). */
static size_t unacked_when_still(int fd)
{
    int q = -1, last;
    uint64_t deadline = net_test_now_ms() + NET_TEST_WAIT_MS;
    do {
        last = q;
        net_test_sleep_ms(50);
        CHECK(ioctl(fd, SIOCOUTQ, &q) == 0);
        CHECK(net_test_now_ms() < deadline);
    } while (q != last);
    return (size_t)q;
}

/* `sender` sends up to 8 MB that `other` does not read, so the proxy stops
 * reading `sender`, and resets once its send queue holds still. Linux keeps
 * the bytes it acknowledged readable after a reset, and the proxy must not
 * lose them either (tcp_conn.h: paused reading loses nothing when the peer
 * resets): `other` then reads exactly what the proxy's kernel acknowledged,
 * byte-exact, then EOF or a reset. */
static void reset_while_stalled(bool client_resets)
{
    struct fixture f;
    fixture_start(&f, "2");
    int sender = client_resets ? f.client : f.upstream;
    int other = client_resets ? f.upstream : f.client;
    size_t sent = send_until_full(sender, 8 * MiB);
    size_t unacked = unacked_when_still(sender);
    net_test_close_reset(sender);
    struct reading rd = {.step = 64 * KiB, .reset_ok = true};
    size_t got = recv_pattern(other, &rd);
    printf("sent %zu bytes, %zu unacknowledged at the reset; the other side read %zu\n", sent,
           unacked, got);
    CHECK_EQ(got, sent - unacked);
    CHECK(close(other) == 0);
    fixture_end_after_new_pair(&f);
}

TEST(proxy_rst_from_client_while_upstream_stalled_bytes_exact)
{
    reset_while_stalled(true);
}

TEST(proxy_rst_from_upstream_while_client_stalled_bytes_exact)
{
    reset_while_stalled(false);
}

/* The receive queue of the proxy's socket at the other end of `fd`, from
 * /proc/net/tcp (loopback: the ports alone name it). */
static long peer_rx_queue(int fd)
{
    struct sockaddr_in me, peer;
    socklen_t len = sizeof me;
    CHECK(getsockname(fd, (struct sockaddr *)&me, &len) == 0);
    len = sizeof peer;
    CHECK(getpeername(fd, (struct sockaddr *)&peer, &len) == 0);
    FILE *f = fopen("/proc/net/tcp", "r");
    CHECK(f != NULL);
    char line[512];
    long rx = -1;
    unsigned lport, rport, tx, q;
    while (rx < 0 && fgets(line, sizeof line, f))
        if (sscanf(line, " %*d: %*x:%x %*x:%x %*x %x:%x", &lport, &rport, &tx, &q) == 4 &&
            lport == ntohs(peer.sin_port) && rport == ntohs(me.sin_port))
            rx = (long)q;
    fclose(f);
    CHECK(rx >= 0);
    return rx;
}

/* Sends 16 KiB at a time until the proxy stops reading `fd` while its
 * kernel still takes more: everything sent is acknowledged (so a FIN sent
 * now arrives at once) and sits in the proxy's receive queue. Returns the
 * bytes sent. */
static size_t send_until_proxy_pauses(int fd)
{
    static unsigned char chunk[16 * KiB];
    size_t sent = 0;
    for (;;) {
        for (size_t i = 0; i < sizeof chunk; i++)
            chunk[i] = pattern_at(sent + i);
        CHECK(net_test_send_all(fd, chunk, sizeof chunk));
        sent += sizeof chunk;
        CHECK(sent < 64 * MiB);
        int q = 1;
        for (int i = 0; i < 1000 && q > 0; i++) {
            net_test_sleep_ms(1);
            CHECK(ioctl(fd, SIOCOUTQ, &q) == 0);
        }
        if (q > 0)
            net_test_fail(__FILE__, __LINE__, "the proxy's receive window closed before "
                                              "it was seen pausing (%zu bytes sent)", sent);
        long rx = peer_rx_queue(fd);
        if (rx > 0) /* unread now; still unread a while later: paused */
            net_test_sleep_ms(20);
        if (rx > 0 && peer_rx_queue(fd) == rx)
            return sent;
    }
}

/* The proxy holds `sender` back (`other` reads nothing) with every byte of
 * it and then its FIN in the proxy's kernel; `other` half-closes too, so the
 * proxy's socket of `sender` is shut both ways (a hang-up) while reading is
 * paused with bytes unread. `sender` sees EOF, `other` then reads every
 * byte and EOF, and the proxy closes the pair by itself. */
static void fin_both_ways_while_paused(bool client_sends)
{
    struct fixture f;
    fixture_start(&f, "2");
    int sender = client_sends ? f.client : f.upstream;
    int other = client_sends ? f.upstream : f.client;
    size_t sent = send_until_proxy_pauses(sender);
    CHECK(shutdown(sender, SHUT_WR) == 0);
    CHECK(shutdown(other, SHUT_WR) == 0);
    struct reading eof = {.step = 1};
    CHECK_EQ(recv_pattern(sender, &eof), 0);
    struct reading rd = {.step = 64 * KiB};
    size_t got = recv_pattern(other, &rd);
    printf("sent %zu bytes and a FIN while the proxy paused; the other side read %zu\n", sent,
           got);
    CHECK_EQ(got, sent);
    wait_pairs_closed(&f.px); /* both of our sockets are still open */
    CHECK(close(sender) == 0);
    CHECK(close(other) == 0);
    fixture_end(&f);
}

TEST(proxy_fin_both_ways_while_paused_from_client_bytes_exact)
{
    fin_both_ways_while_paused(true);
}

TEST(proxy_fin_both_ways_while_paused_from_upstream_bytes_exact)
{
    fin_both_ways_while_paused(false);
}

/* Nothing listens upstream: the client is closed, and the proxy goes on. */
TEST(proxy_upstream_refused_closes_client)
{
    net_test_watchdog_start();
    net_addr_t up;
    int lfd = net_test_listen(&up);
    CHECK(close(lfd) == 0); /* the port is free: connecting there is refused */
    struct proxy px;
    proxy_start(&px, &up, "2");
    int client = net_test_connect(&px.addr, 0);
    expect_closed_soon(client);
    wait_pairs_closed(&px);
    proxy_stop(&px);
}

/* SIGTERM with a pair open: the proxy half-closes the client, closes it
 * after its second of grace although the client never closes, then the
 * upstream, and exits 0 (no pair leaked: a sanitizer would say so). */
TEST(proxy_sigterm_with_open_pair_closes_both_and_exits_clean)
{
    struct fixture f;
    fixture_start(&f, "0");
    exchange(f.client, f.upstream, "hello", "world");
    CHECK(kill(f.px.pid, SIGTERM) == 0);
    struct reading eof = {.step = 1, .reset_ok = true};
    CHECK_EQ(recv_pattern(f.client, &eof), 0);
    CHECK_EQ(recv_pattern(f.upstream, &eof), 0);
    proxy_wait_exit(&f.px);
    CHECK(close(f.client) == 0);
    CHECK(close(f.upstream) == 0);
    CHECK(close(f.lfd) == 0);
}
