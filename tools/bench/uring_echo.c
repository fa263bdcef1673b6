/* uring_echo: the smallest io_uring echo server, the de-risk prototype of
 * issue 14, measured beside the raw-epoll floor (floor_echo.c).  Standalone
 * C11 + libc: raw io_uring_setup/enter/register system calls, no liburing,
 * no netloop.
 *
 *   uring_echo [--listen 127.0.0.1:PORT]     (default 127.0.0.1:2017, PORT 0 ok)
 *
 * Prints one line "uring_echo listening on 127.0.0.1:PORT" once ready (the
 * same as floor_echo, so the benchmark scripts drive either), a line naming
 * the kernel features in use on stderr, and exits 0 on SIGINT/SIGTERM.  Exits
 * 3 when the kernel refuses io_uring or lacks a feature it needs (the message
 * says which), 2 on a bad argument or URING_ECHO_SETUP, 1 on other
 * failures.  Loopback addresses only.
 *
 * Environment, for the experiments of docs/benchmarks.md:
 *   URING_ECHO_SETUP = defer (default: SINGLE_ISSUER|DEFER_TASKRUN, falling
 *                      back to coop, then plain, when refused) | single
 *                      (SINGLE_ISSUER) | coop (COOP_TASKRUN|TASKRUN_FLAG) |
 *                      plain (no setup flags)
 *   URING_ECHO_BUFS  = the pool's buffer count, a power of two 1..32768
 *                      (default 1024); the test shrinks it to run it dry
 *
 * Completion-based: one multishot accept on the listener; one multishot
 * receive per connection into a ring of provided buffers (registered with
 * IORING_REGISTER_PBUF_RING, shared by all connections); each received
 * buffer is sent back as it is with an IORING_OP_SEND and returned to the
 * ring once fully sent.  SIGINT/SIGTERM come from a signalfd polled through
 * the ring.  Every loop iteration is one io_uring_enter that submits what the
 * completions produced and waits for at least one more.
 *
 * Per connection at most one send is in flight, so a partial send is
 * resubmitted for its tail before anything queued behind it: order is kept
 * without links.  Bounded: the buffer pool is fixed (nbuf x BUF_SIZE); a
 * connection holding more than PAUSE_BYTES unsent cancels its receive and
 * rearms it once its queue is empty (floor_echo's EPOLLOUT switch, in
 * completion terms); ENOBUFS (pool exhausted) ends a multishot receive, which
 * is rearmed once buffers come back.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

/* 1024 x 16 KiB: one 16 KiB message fits one buffer, and 1000 connections
 * with one message each in flight do not exhaust the pool.  16 MiB in all,
 * touched as the kernel cycles through the ring. */
enum { NBUF_DEFAULT = 1024, NBUF_MAX = 32768, BUF_SIZE = 16 * 1024, BGID = 1 };
enum { SQ_ENTRIES = 2048, CQ_ENTRIES = 8192 };
enum { PAUSE_BYTES = 64 * 1024, NO_BID = -1 };
/* user_data: a pointer (8-aligned) with the operation in its low 3 bits. */
enum { OP_RECV = 1, OP_SEND = 2, OP_CANCEL = 3, OP_ACCEPT = 4, OP_SIGNAL = 5 };

struct conn {
    int fd;
    unsigned inflight;    /* operations whose last CQE has not come yet */
    unsigned recv_armed : 1, sending : 1, cancelling : 1;
    unsigned paused : 1;  /* receive cancelled until the queue drains */
    unsigned starved : 1; /* on the starved list: rearm once buffers return */
    unsigned eof : 1;     /* peer closed: close after the queue is sent */
    unsigned failed : 1;  /* error: drop the queue, close when idle */
    int q_head, q_tail;   /* FIFO of buffer ids received, not yet sent */
    uint32_t q_off;       /* bytes of q_head already sent */
    size_t held;          /* bytes queued */
    struct conn *prev, *next, *next_starved;
};

/* The mmap'd rings.  k* point into memory shared with the kernel. */
struct ring {
    int fd;
    unsigned sq_mask, sq_entries, sq_tail; /* sq_tail: ours, unpublished */
    _Atomic uint32_t *ksq_head, *ksq_tail;
    struct io_uring_sqe *sqes;
    unsigned cq_mask;
    _Atomic uint32_t *kcq_head, *kcq_tail;
    struct io_uring_cqe *cqes;
    unsigned flags; /* setup flags in use */
};

static struct ring R;
static struct io_uring_buf_ring *bufring;
static char *bufmem;
static uint16_t buf_tail;                      /* ours, published in bufs_publish */
static unsigned nbuf = NBUF_DEFAULT;
static int bid_next[NBUF_MAX];                /* per-connection FIFO links */
static uint32_t bid_len[NBUF_MAX];            /* bytes received into each buffer */
static unsigned bufs_held;                    /* received, not yet returned */
static struct conn *conns, *starved;
static int lfd, sfd, running = 1;
/* What the tests and the benchmark notes want to know happened. */
static unsigned long n_enters, n_cqes, n_enobufs, n_pauses, n_partial;
static char accept_tag[8] __attribute__((aligned(8)));
static char signal_tag[8] __attribute__((aligned(8)));

static void die(const char *what, int err)
{
    fprintf(stderr, "uring_echo: %s: %s\n", what, strerror(err));
    exit(1);
}

/* The kernel cannot give us io_uring or a feature we need. */
static void refused(const char *what, int err)
{
    struct utsname u;
    uname(&u);
    fprintf(stderr, "uring_echo: io_uring refused: %s%s%s (kernel %s)\n", what,
            err ? ": " : "", err ? strerror(err) : "", u.release);
    exit(3);
}

static int sys_setup(unsigned entries, struct io_uring_params *p)
{
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_enter(unsigned submit, unsigned wait, unsigned flags)
{
    n_enters++;
    return (int)syscall(__NR_io_uring_enter, R.fd, submit, wait, flags, NULL, 0);
}

static int sys_register(unsigned op, void *arg, unsigned n)
{
    return (int)syscall(__NR_io_uring_register, R.fd, op, arg, n);
}

/* ---- the submission and completion rings ----------------------------------
 *
 * Memory ordering (the kernel's side uses smp_load_acquire/smp_store_release
 * on the same words):
 *  - SQ tail: we fill SQEs, then store-release the tail; the kernel's
 *    load-acquire of the tail then sees the SQEs complete.
 *  - SQ head: the kernel store-releases it after it has read the SQEs; our
 *    load-acquire of it means the slots below it may be overwritten.
 *  - CQ tail: the kernel writes CQEs, then store-releases the tail; our
 *    load-acquire makes the CQEs below it visible.
 *  - CQ head: we store-release it after reading the CQEs, so the kernel,
 *    which load-acquires it, never overwrites a CQE we are still reading.
 *  - Buffer ring tail: we write the io_uring_buf entries, then store-release
 *    the tail (bufs_publish); the kernel load-acquires it before it picks.
 */

static void *map_ring(size_t len, off_t off)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, R.fd, off);
    if (p == MAP_FAILED)
        die("mmap ring", errno);
    return p;
}

static void ring_map(const struct io_uring_params *p)
{
    size_t sq_len = p->sq_off.array + p->sq_entries * sizeof(uint32_t);
    size_t cq_len = p->cq_off.cqes + p->cq_entries * sizeof(struct io_uring_cqe);
    if (!(p->features & IORING_FEAT_SINGLE_MMAP))
        refused("no IORING_FEAT_SINGLE_MMAP", 0);
    char *sq = map_ring(sq_len > cq_len ? sq_len : cq_len, IORING_OFF_SQ_RING);
    char *cq = sq; /* one mapping holds both rings */
    R.sq_mask = *(uint32_t *)(sq + p->sq_off.ring_mask);
    R.sq_entries = p->sq_entries;
    R.ksq_head = (_Atomic uint32_t *)(sq + p->sq_off.head);
    R.ksq_tail = (_Atomic uint32_t *)(sq + p->sq_off.tail);
    uint32_t *array = (uint32_t *)(sq + p->sq_off.array);
    for (unsigned i = 0; i < p->sq_entries; i++)
        array[i] = i; /* SQE slot i is always array slot i */
    R.sq_tail = atomic_load_explicit(R.ksq_tail, memory_order_relaxed);
    R.sqes = map_ring(p->sq_entries * sizeof(struct io_uring_sqe), IORING_OFF_SQES);
    R.cq_mask = *(uint32_t *)(cq + p->cq_off.ring_mask);
    R.kcq_head = (_Atomic uint32_t *)(cq + p->cq_off.head);
    R.kcq_tail = (_Atomic uint32_t *)(cq + p->cq_off.tail);
    R.cqes = (struct io_uring_cqe *)(cq + p->cq_off.cqes);
}

/* Setup flag sets, tried in order from the one URING_ECHO_SETUP names. */
static const struct {
    const char *name;
    unsigned flags;
} setups[] = {
    { "defer", IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN },
    { "single", IORING_SETUP_SINGLE_ISSUER },
    { "coop", IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG },
    { "plain", 0 },
};

static const char *ring_setup(void)
{
    const char *want = getenv("URING_ECHO_SETUP");
    size_t i = 0, n = sizeof setups / sizeof setups[0];
    while (want && i < n && strcmp(want, setups[i].name))
        i++;
    if (i == n) {
        fprintf(stderr, "uring_echo: URING_ECHO_SETUP is not defer, single, coop or plain\n");
        exit(2);
    }
    for (int err = 0;; i++) {
        if (i == n)
            refused("io_uring_setup", err);
        struct io_uring_params p = { .flags = setups[i].flags | IORING_SETUP_CQSIZE,
                                     .cq_entries = CQ_ENTRIES };
        if ((R.fd = sys_setup(SQ_ENTRIES, &p)) >= 0) {
            R.flags = p.flags;
            ring_map(&p);
            return setups[i].name;
        }
        err = errno;
        if (err != EINVAL) /* ENOSYS, EPERM: io_uring itself is refused */
            refused("io_uring_setup", err);
    }
}

/* The opcodes we use must be known to this kernel. Multishot flags and the
 * buffer ring are not probeable: their registration or first CQE says. */
static void ring_probe(void)
{
    static const struct { int op; const char *name; } need[] = {
        { IORING_OP_ACCEPT, "ACCEPT" }, { IORING_OP_RECV, "RECV" },
        { IORING_OP_SEND, "SEND" },     { IORING_OP_POLL_ADD, "POLL_ADD" },
        { IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL" },
    };
    size_t len = sizeof(struct io_uring_probe) + 256 * sizeof(struct io_uring_probe_op);
    struct io_uring_probe *pr = calloc(1, len);
    if (!pr || sys_register(IORING_REGISTER_PROBE, pr, 256) < 0)
        refused("IORING_REGISTER_PROBE", pr ? errno : ENOMEM);
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if (need[i].op > pr->last_op || !(pr->ops[need[i].op].flags & IO_URING_OP_SUPPORTED))
            refused(need[i].name, EOPNOTSUPP);
    free(pr);
}

/* Publishes our SQ tail (store-release: see above). */
static void sq_publish(void)
{
    atomic_store_explicit(R.ksq_tail, R.sq_tail, memory_order_release);
}

static unsigned sq_unsubmitted(void)
{
    return R.sq_tail - atomic_load_explicit(R.ksq_head, memory_order_acquire);
}

/* A zeroed SQE.  A full SQ is submitted without waiting first: one extra
 * enter, only when one loop iteration produces more than SQ_ENTRIES. */
static struct io_uring_sqe *sqe_get(void)
{
    while (sq_unsubmitted() >= R.sq_entries) {
        sq_publish();
        if (sys_enter(sq_unsubmitted(), 0, 0) < 0 && errno != EINTR && errno != EAGAIN &&
            errno != EBUSY)
            die("io_uring_enter", errno);
    }
    struct io_uring_sqe *s = &R.sqes[R.sq_tail++ & R.sq_mask];
    memset(s, 0, sizeof *s);
    return s;
}

static void *ud_ptr(uint64_t ud) { return (void *)(uintptr_t)(ud & ~(uint64_t)7); }
static uint64_t ud_make(void *p, int op) { return (uint64_t)(uintptr_t)p | (uint64_t)op; }

/* ---- the provided-buffer ring ------------------------------------------ */

static void bufs_setup(void)
{
    const char *env = getenv("URING_ECHO_BUFS");
    if (env)
        nbuf = (unsigned)strtoul(env, NULL, 10);
    if (nbuf < 1 || nbuf > NBUF_MAX || (nbuf & (nbuf - 1)))
        die("URING_ECHO_BUFS: not a power of two 1..32768", EINVAL);
    size_t ring_len = nbuf * sizeof(struct io_uring_buf);
    bufring = mmap(NULL, ring_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    bufmem = malloc((size_t)nbuf * BUF_SIZE);
    if (bufring == MAP_FAILED || !bufmem)
        die("buffer memory", ENOMEM);
    struct io_uring_buf_reg reg = { .ring_addr = (uintptr_t)bufring, .ring_entries = nbuf,
                                    .bgid = BGID };
    if (sys_register(IORING_REGISTER_PBUF_RING, &reg, 1) < 0)
        refused("IORING_REGISTER_PBUF_RING", errno);
    buf_tail = 0;
}

/* Queues buffer bid for the kernel.  The slot at our tail is free: nbuf
 * buffers share nbuf slots, and bid, being ours, frees one. */
static void buf_return(int bid)
{
    struct io_uring_buf *b = &bufring->bufs[buf_tail++ & (nbuf - 1)];
    b->addr = (uintptr_t)(bufmem + (size_t)bid * BUF_SIZE);
    b->len = BUF_SIZE;
    b->bid = (uint16_t)bid;
}

static void bufs_publish(void)
{
    atomic_store_explicit((_Atomic uint16_t *)&bufring->tail, buf_tail, memory_order_release);
}

/* ---- submissions ------------------------------------------------------- */

static void arm_accept(void)
{
    struct io_uring_sqe *s = sqe_get();
    s->opcode = IORING_OP_ACCEPT;
    s->fd = lfd;
    s->ioprio = IORING_ACCEPT_MULTISHOT;
    s->accept_flags = SOCK_CLOEXEC; /* blocking: io_uring polls for us */
    s->user_data = ud_make(accept_tag, OP_ACCEPT);
}

static void arm_signal(void)
{
    struct io_uring_sqe *s = sqe_get();
    s->opcode = IORING_OP_POLL_ADD;
    s->fd = sfd;
    s->poll32_events = POLLIN;
    s->user_data = ud_make(signal_tag, OP_SIGNAL);
}

static void arm_recv(struct conn *c)
{
    struct io_uring_sqe *s = sqe_get();
    s->opcode = IORING_OP_RECV;
    s->fd = c->fd;
    s->ioprio = IORING_RECV_MULTISHOT;
    s->flags = IOSQE_BUFFER_SELECT;
    s->buf_group = BGID;
    s->user_data = ud_make(c, OP_RECV);
    c->recv_armed = 1;
    c->inflight++;
}

/* Sends the unsent part of the queue's head buffer. */
static void submit_send(struct conn *c)
{
    struct io_uring_sqe *s = sqe_get();
    s->opcode = IORING_OP_SEND;
    s->fd = c->fd;
    s->addr = (uintptr_t)(bufmem + (size_t)c->q_head * BUF_SIZE + c->q_off);
    s->len = bid_len[c->q_head] - c->q_off;
    s->msg_flags = MSG_NOSIGNAL;
    s->user_data = ud_make(c, OP_SEND);
    c->sending = 1;
    c->inflight++;
}

static void submit_cancel(struct conn *c)
{
    struct io_uring_sqe *s = sqe_get();
    s->opcode = IORING_OP_ASYNC_CANCEL;
    s->addr = ud_make(c, OP_RECV);
    s->user_data = ud_make(c, OP_CANCEL);
    c->cancelling = 1;
    c->inflight++;
}

/* ---- connections ------------------------------------------------------- */

static void conn_add(int fd)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->q_head = c->q_tail = NO_BID;
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
    arm_recv(c);
}

static void queue_push(struct conn *c, int bid, uint32_t len)
{
    bid_len[bid] = len;
    bid_next[bid] = NO_BID;
    if (c->q_tail == NO_BID)
        c->q_head = bid;
    else
        bid_next[c->q_tail] = bid;
    c->q_tail = bid;
    c->held += len;
    bufs_held++;
}

static void queue_pop(struct conn *c)
{
    int bid = c->q_head;
    c->held -= bid_len[bid];
    c->q_off = 0;
    c->q_head = bid_next[bid];
    if (c->q_head == NO_BID)
        c->q_tail = NO_BID;
    buf_return(bid);
    bufs_held--;
}

/* Returns the queued buffers to the pool, unless a send still reads the
 * head one: on_send drops them then. */
static void queue_drop(struct conn *c)
{
    while (!c->sending && c->q_head != NO_BID)
        queue_pop(c);
}

/* The peer misbehaved or left: drop what it sent, and wake our pending
 * operations (shutdown ends a multishot receive with 0). */
static void conn_fail(struct conn *c)
{
    if (c->failed)
        return;
    c->failed = 1;
    queue_drop(c);
    shutdown(c->fd, SHUT_RDWR);
}

static void conn_free(struct conn *c)
{
    close(c->fd); /* nothing is in flight: no operation holds the file */
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

/* After each completion: close a finished connection, rearm a receive. */
static void conn_settle(struct conn *c)
{
    if (c->eof && c->q_head == NO_BID)
        conn_fail(c);
    if (c->failed) {
        if (c->inflight == 0 && !c->starved)
            conn_free(c);
        return;
    }
    if (c->paused && c->q_head == NO_BID && !c->recv_armed && !c->cancelling)
        c->paused = 0;
    if (!c->recv_armed && !c->paused && !c->starved && !c->eof)
        arm_recv(c);
}

static void on_recv(struct conn *c, const struct io_uring_cqe *e)
{
    if (!(e->flags & IORING_CQE_F_MORE)) {
        c->recv_armed = 0;
        c->inflight--;
    }
    if (e->res > 0 && (e->flags & IORING_CQE_F_BUFFER)) {
        int bid = (int)(e->flags >> IORING_CQE_BUFFER_SHIFT);
        if (c->failed) {
            buf_return(bid); /* nobody to echo it to */
            return;
        }
        queue_push(c, bid, (uint32_t)e->res);
        if (!c->sending)
            submit_send(c);
        if (c->held > PAUSE_BYTES && c->recv_armed && !c->cancelling) {
            c->paused = 1;
            n_pauses++;
            submit_cancel(c);
        }
    } else if (e->res == -ENOBUFS) {
        n_enobufs++;
        c->starved = 1; /* the multishot ended; rearm once buffers return */
        c->next_starved = starved;
        starved = c;
    } else if (e->res == 0) {
        c->eof = 1;
    } else if (e->res != -ECANCELED) {
        conn_fail(c);
    }
}

static void on_send(struct conn *c, int res)
{
    c->sending = 0;
    c->inflight--;
    if (res < 0) {
        conn_fail(c);
        return;
    }
    if (c->failed) {
        queue_drop(c);
        return;
    }
    c->q_off += (uint32_t)res;
    if (c->q_off == bid_len[c->q_head])
        queue_pop(c);
    else
        n_partial++;
    if (c->q_head != NO_BID)
        submit_send(c); /* the tail of a partial send, or the next buffer */
}

/* ---- the loop ---------------------------------------------------------- */

static void on_accept(const struct io_uring_cqe *e)
{
    if (e->res >= 0)
        conn_add(e->res);
    else if (e->res != -ECONNABORTED && e->res != -EINTR)
        fprintf(stderr, "uring_echo: accept: %s\n", strerror(-e->res));
    /* FIXME: on EMFILE the rearmed accept fails again at once and we spin,
     * as floor_echo does; RLIMIT_NOFILE is raised instead. */
    if (!(e->flags & IORING_CQE_F_MORE))
        arm_accept();
}

static void on_cqe(const struct io_uring_cqe *e)
{
    void *p = ud_ptr(e->user_data);
    struct conn *c = p;
    switch ((int)(e->user_data & 7)) {
    case OP_ACCEPT: on_accept(e); return;
    case OP_SIGNAL: running = 0; return;
    case OP_RECV: on_recv(c, e); break;
    case OP_SEND: on_send(c, e->res); break;
    case OP_CANCEL: c->cancelling = 0, c->inflight--; break;
    }
    conn_settle(c);
}

/* Reads every CQE the kernel has posted, then frees their slots. */
static void reap(void)
{
    uint32_t head = atomic_load_explicit(R.kcq_head, memory_order_relaxed);
    uint32_t tail = atomic_load_explicit(R.kcq_tail, memory_order_acquire);
    n_cqes += tail - head;
    for (; head != tail; head++)
        on_cqe(&R.cqes[head & R.cq_mask]);
    atomic_store_explicit(R.kcq_head, head, memory_order_release);
}

/* Connections that saw ENOBUFS get their receive back once the pool has
 * buffers again (all of them are rearmed; the first to run out again waits
 * for the next round). */
static void rearm_starved(void)
{
    if (bufs_held >= nbuf)
        return;
    struct conn *c = starved;
    starved = NULL;
    while (c) {
        struct conn *next = c->next_starved;
        c->starved = 0;
        conn_settle(c);
        c = next;
    }
}

static void loop(void)
{
    while (running) {
        sq_publish();
        if (sys_enter(sq_unsubmitted(), 1, IORING_ENTER_GETEVENTS) < 0 && errno != EINTR &&
            errno != EAGAIN && errno != EBUSY)
            die("io_uring_enter", errno);
        reap();
        bufs_publish();
        rearm_starved();
    }
}

/* ---- setup: the same listener and address rules as floor_echo ------------ */

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

static int listen_on(const struct sockaddr_in *sa)
{
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); /* blocking: see arm_accept */
    if (fd < 0)
        die("socket", errno);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)sa, sizeof *sa) < 0)
        die("bind", errno);
    if (listen(fd, SOMAXCONN) < 0)
        die("listen", errno);
    return fd;
}

static void print_ready(const char *setup)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    char host[INET_ADDRSTRLEN];
    if (getsockname(lfd, (struct sockaddr *)&sa, &len) < 0)
        die("getsockname", errno);
    inet_ntop(AF_INET, &sa.sin_addr, host, sizeof host);
    printf("uring_echo listening on %s:%u\n", host, ntohs(sa.sin_port));
    fflush(stdout);
    fprintf(stderr, "uring_echo: setup=%s flags=0x%x buffers=%ux%d\n", setup, R.flags, nbuf,
            BUF_SIZE);
}

static int signals_fd(void)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int fd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (fd < 0)
        die("signalfd", errno);
    return fd;
}

/* Closes every connection.  The ring goes first: closing it cancels what is
 * still in flight.  The buffer pool is left to the process's exit, so no
 * late cancelled receive can write into freed memory. */
static void teardown(void)
{
    close(R.fd);
    while (conns)
        conn_free(conns);
    close(lfd);
    close(sfd);
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa;
    const char *addr = argc == 3 && !strcmp(argv[1], "--listen") ? argv[2] : "127.0.0.1:2017";
    if ((argc != 1 && argc != 3) || parse_addr(addr, &sa) < 0) {
        fprintf(stderr, "usage: uring_echo [--listen 127.0.0.1:PORT]  (127.0.0.0/8 only)\n");
        return 2;
    }
    struct rlimit rl; /* room for 1000+ connections */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    sfd = signals_fd();
    const char *setup = ring_setup();
    ring_probe();
    bufs_setup();
    for (unsigned i = 0; i < nbuf; i++)
        buf_return((int)i);
    bufs_publish();
    lfd = listen_on(&sa);
    arm_accept();
    arm_signal();
    print_ready(setup);
    loop();
    teardown();
    fprintf(stderr, "uring_echo: enters=%lu cqes=%lu enobufs=%lu pauses=%lu partial_sends=%lu\n",
            n_enters, n_cqes, n_enobufs, n_pauses, n_partial);
    return 0;
}
