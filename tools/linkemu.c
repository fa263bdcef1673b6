/* linkemu: a userspace stand-in for `tc netem`, for kernels built without
 * sch_netem. It joins two interfaces of its network namespace as a wire:
 * every Ethernet frame received on one is sent out of the other, after a
 * delay, unless it is lost; some frames skip the delay (reordering).
 *
 *   linkemu IF1 IF2 [--delay MS] [--loss PCT] [--reorder PCT] [--corr PCT]
 *                   [--limit N] [--seed N] [--seconds N]
 *   defaults: delay 10, loss 0, reorder 0, corr 0, limit 1000, seed 1,
 *   seconds 600 (then it exits on its own)
 *
 * Meant for test/netns_test.sh: IF1 and IF2 are the middle ends of two veth
 * pairs in a namespace of their own, with no address and no forwarding, so
 * frames reach the far side only through this program. Each direction
 * applies, like netem on the sending interface: loss PCT% (independent),
 * then reorder PCT% of frames sent at once (with corr% correlation, netem's
 * formula), the others queued for MS ms (FIFO, at most N frames: more are
 * dropped, like netem's limit). Without --reorder every frame is delayed.
 *
 * Frames are read and written with their virtio_net_hdr (PACKET_VNET_HDR):
 * veth hands over TSO super-frames and frames whose checksum is still to be
 * filled in, and the header carries that state to the other side intact.
 * A frame lost is therefore a whole super-frame, as with netem.
 *
 * The delay counts from the kernel's receive stamp (SO_TIMESTAMPNS), so a
 * late read does not add to it; but a process that is not scheduled sends
 * late all the same. The counters say how late: lag_avg_us and lag_max_us,
 * over the frames sent, after the moment they were due.
 *
 * Counters per direction on stderr when it ends (SIGTERM, SIGINT, the time
 * limit, or an interface that goes away). Exit 0, 1 on a setup error, 2 on
 * a usage error. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <linux/virtio_net.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A TSO super-frame is at most 64 KiB of IP plus its Ethernet header. */
enum { FRAME_MAX = 65536 + 64 + sizeof(struct virtio_net_hdr) };

struct frame {
    struct frame *next;
    uint64_t due_ns;
    size_t len;
    unsigned char data[];
};

/* One direction: frames read on `in_fd` leave on `out_fd`. */
struct direction {
    const char *name;
    int in_fd, out_fd;
    struct frame *head, *tail;
    size_t queued;
    double last_reorder_rnd;
    uint64_t received, lost, reordered, delayed, overflow, sent, send_errors;
    uint64_t lag_sum_ns, lag_max_ns; /* sent later than due, over `sent` */
};

static struct {
    uint64_t delay_ns;
    double loss, reorder, corr;
    size_t limit;
    double seconds;
    uint64_t rng;
} opt = {.delay_ns = 10000000u, .limit = 1000, .seconds = 600, .rng = 1};

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int signo)
{
    (void)signo;
    stop_requested = 1;
}

static uint64_t clock_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

/* xorshift64*: reproducible from --seed, good enough for coin flips. */
static double uniform(void)
{
    opt.rng ^= opt.rng >> 12;
    opt.rng ^= opt.rng << 25;
    opt.rng ^= opt.rng >> 27;
    return (double)((opt.rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

/* netem's correlated random value: a weighted mix of the last one and a
 * fresh one. */
static bool correlated_chance(double *last, double pct, double corr)
{
    double r = (1 - corr) * uniform() + corr * *last;
    *last = r;
    return r < pct;
}

/* ---- sockets --------------------------------------------------------------- */

static int set_int_opt(int fd, int level, int name, int value)
{
    return setsockopt(fd, level, name, &value, sizeof value);
}

/* A raw packet socket bound to ifname that sees every frame the interface
 * receives (not those it sends) and carries the virtio_net_hdr. */
static int open_port(const char *ifname)
{
    unsigned index = if_nametoindex(ifname);
    if (index == 0) {
        fprintf(stderr, "linkemu: no interface %s\n", ifname);
        return -1;
    }
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
    if (fd < 0) {
        perror("linkemu: socket(AF_PACKET)");
        return -1;
    }
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
                              .sll_ifindex = (int)index};
    struct packet_mreq promisc = {.mr_ifindex = (int)index, .mr_type = PACKET_MR_PROMISC};
    if (set_int_opt(fd, SOL_PACKET, PACKET_VNET_HDR, 1) < 0 ||
        set_int_opt(fd, SOL_SOCKET, SO_TIMESTAMPNS, 1) < 0 ||
        set_int_opt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, 1) < 0 ||
        bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0 ||
        setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &promisc, sizeof promisc) < 0) {
        fprintf(stderr, "linkemu: %s: %s\n", ifname, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* ---- the two queues ---------------------------------------------------------- */

/* Send errors (the far veth down, say) lose the frame, as a cable would.
 * The lag (how late after `due_ns` it leaves) says how faithful we are: a
 * starved process delays frames more than it was asked to. */
static void transmit(struct direction *d, const unsigned char *data, size_t len, uint64_t due_ns)
{
    uint64_t now = now_ns(), lag = now > due_ns ? now - due_ns : 0;
    if (send(d->out_fd, data, len, 0) < 0) {
        d->send_errors++;
        return;
    }
    d->sent++;
    d->lag_sum_ns += lag;
    if (lag > d->lag_max_ns)
        d->lag_max_ns = lag;
}

/* `arrived` is when the kernel received the frame: the delay counts from
 * there, not from when this process got round to reading it. */
static void enqueue(struct direction *d, const unsigned char *data, size_t len, uint64_t arrived)
{
    struct frame *f;
    if (d->queued >= opt.limit || !(f = malloc(sizeof *f + len))) {
        d->overflow++;
        return;
    }
    f->next = NULL;
    f->due_ns = arrived + opt.delay_ns;
    f->len = len;
    memcpy(f->data, data, len);
    if (d->tail)
        d->tail->next = f;
    else
        d->head = f;
    d->tail = f;
    d->queued++;
    d->delayed++;
}

/* Sends every queued frame that is due. The delay is the same for all, so
 * the queue is in due order. */
static void flush_due(struct direction *d, uint64_t now)
{
    while (d->head && d->head->due_ns <= now) {
        struct frame *f = d->head;
        d->head = f->next;
        if (!d->head)
            d->tail = NULL;
        d->queued--;
        transmit(d, f->data, f->len, f->due_ns);
        free(f);
    }
}

static void discard_queue(struct direction *d)
{
    while (d->head) {
        struct frame *f = d->head;
        d->head = f->next;
        free(f);
    }
    d->tail = NULL;
    d->queued = 0;
}

/* One frame off the wire: lost, sent at once (reordered), or queued. */
static void handle_frame(struct direction *d, const unsigned char *data, size_t len,
                         uint64_t arrived)
{
    d->received++;
    if (opt.loss > 0 && uniform() < opt.loss) {
        d->lost++;
        return;
    }
    if (opt.reorder > 0 && correlated_chance(&d->last_reorder_rnd, opt.reorder, opt.corr)) {
        d->reordered++;
        transmit(d, data, len, arrived);
        return;
    }
    enqueue(d, data, len, arrived);
}

/* When the frame reached the socket, on CLOCK_MONOTONIC, from its
 * SO_TIMESTAMPNS stamp (CLOCK_REALTIME); now when it has none. */
static uint64_t arrival_time(struct msghdr *msg)
{
    uint64_t now = now_ns(), real_now = clock_ns(CLOCK_REALTIME);
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_TIMESTAMPNS)
            continue;
        struct timespec ts;
        memcpy(&ts, CMSG_DATA(c), sizeof ts);
        uint64_t stamp = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        uint64_t waited = real_now > stamp ? real_now - stamp : 0;
        return waited < now ? now - waited : now;
    }
    return now;
}

/* Reads what is waiting on d->in_fd. False when the interface is gone. */
static bool drain_input(struct direction *d, unsigned char *buf)
{
    for (int i = 0; i < 256; i++) { /* a bound, so that the other side gets its turn */
        union {
            char space[CMSG_SPACE(sizeof(struct timespec))];
            struct cmsghdr align;
        } control;
        struct iovec iov = {.iov_base = buf, .iov_len = FRAME_MAX};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                             .msg_controllen = sizeof control.space};
        ssize_t n = recvmsg(d->in_fd, &msg, MSG_TRUNC);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR || errno == ENETDOWN;
        if ((size_t)n > FRAME_MAX) {
            d->overflow++; /* larger than any frame veth sends: not ours to mend */
            continue;
        }
        handle_frame(d, buf, (size_t)n, arrival_time(&msg));
    }
    return true;
}

/* ---- the loop ---------------------------------------------------------------- */

static uint64_t next_due(const struct direction *dirs)
{
    uint64_t due = UINT64_MAX;
    for (int i = 0; i < 2; i++)
        if (dirs[i].head && dirs[i].head->due_ns < due)
            due = dirs[i].head->due_ns;
    return due;
}

static int run(struct direction *dirs)
{
    unsigned char *buf = malloc(FRAME_MAX);
    if (!buf)
        return 1;
    uint64_t end = now_ns() + (uint64_t)(opt.seconds * 1e9);
    bool alive = true;
    while (alive && !stop_requested && now_ns() < end) {
        uint64_t now = now_ns(), due = next_due(dirs);
        uint64_t wait = due == UINT64_MAX ? 100000000u : due > now ? due - now : 0;
        struct timespec ts = {(time_t)(wait / 1000000000u), (long)(wait % 1000000000u)};
        struct pollfd pfd[2] = {{.fd = dirs[0].in_fd, .events = POLLIN},
                                {.fd = dirs[1].in_fd, .events = POLLIN}};
        if (ppoll(pfd, 2, &ts, NULL) < 0 && errno != EINTR)
            break;
        for (int i = 0; i < 2; i++) {
            if (pfd[i].revents & (POLLERR | POLLNVAL))
                alive = false;
            else if (pfd[i].revents & POLLIN)
                alive = alive && drain_input(&dirs[i], buf);
            flush_due(&dirs[i], now_ns());
        }
    }
    free(buf);
    return 0;
}

static void print_counters(const struct direction *d)
{
    fprintf(stderr,
            "linkemu %s: received=%llu lost=%llu reordered=%llu delayed=%llu overflow=%llu "
            "sent=%llu send_errors=%llu lag_avg_us=%.0f lag_max_us=%.0f\n",
            d->name, (unsigned long long)d->received, (unsigned long long)d->lost,
            (unsigned long long)d->reordered, (unsigned long long)d->delayed,
            (unsigned long long)d->overflow, (unsigned long long)d->sent,
            (unsigned long long)d->send_errors,
            d->sent ? (double)d->lag_sum_ns / (double)d->sent / 1e3 : 0.0,
            (double)d->lag_max_ns / 1e3);
}

/* ---- arguments --------------------------------------------------------------- */

static bool parse_number(const char *text, double min, double max, double *out)
{
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end || !(v >= min && v <= max))
        return false;
    *out = v;
    return true;
}

static bool parse_option(const char *name, const char *value)
{
    double v;
    if (strcmp(name, "--delay") == 0 && parse_number(value, 0, 10000, &v))
        opt.delay_ns = (uint64_t)(v * 1e6);
    else if (strcmp(name, "--loss") == 0 && parse_number(value, 0, 100, &v))
        opt.loss = v / 100;
    else if (strcmp(name, "--reorder") == 0 && parse_number(value, 0, 100, &v))
        opt.reorder = v / 100;
    else if (strcmp(name, "--corr") == 0 && parse_number(value, 0, 100, &v))
        opt.corr = v / 100;
    else if (strcmp(name, "--limit") == 0 && parse_number(value, 1, 1e6, &v))
        opt.limit = (size_t)v;
    else if (strcmp(name, "--seed") == 0 && parse_number(value, 1, 1e15, &v))
        opt.rng = (uint64_t)v;
    else if (strcmp(name, "--seconds") == 0 && parse_number(value, 0.1, 86400, &v))
        opt.seconds = v;
    else
        return false;
    return true;
}

static int usage(void)
{
    fprintf(stderr, "usage: linkemu IF1 IF2 [--delay MS] [--loss PCT] [--reorder PCT] "
                    "[--corr PCT]\n               [--limit N] [--seed N] [--seconds N]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *ifs[2] = {NULL, NULL};
    int nifs = 0;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) == 0) {
            if (i + 1 >= argc || !parse_option(argv[i], argv[i + 1]))
                return usage();
            i++;
        } else if (nifs < 2) {
            ifs[nifs++] = argv[i];
        } else {
            return usage();
        }
    }
    if (nifs != 2)
        return usage();
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int fd0 = open_port(ifs[0]), fd1 = fd0 < 0 ? -1 : open_port(ifs[1]);
    if (fd0 < 0 || fd1 < 0)
        return 1;
    char name0[64], name1[64];
    snprintf(name0, sizeof name0, "%s->%s", ifs[0], ifs[1]);
    snprintf(name1, sizeof name1, "%s->%s", ifs[1], ifs[0]);
    struct direction dirs[2] = {{.name = name0, .in_fd = fd0, .out_fd = fd1},
                                {.name = name1, .in_fd = fd1, .out_fd = fd0}};
    printf("linkemu: %s <-> %s ready\n", ifs[0], ifs[1]);
    fflush(stdout);
    int rc = run(dirs);
    for (int i = 0; i < 2; i++) {
        print_counters(&dirs[i]);
        discard_queue(&dirs[i]);
    }
    close(fd0);
    close(fd1);
    return rc;
}
