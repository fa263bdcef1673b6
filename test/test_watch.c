/* fd watches and signals: readiness, interest changes, removal during
 * dispatch, hang-up, argument and thread checks. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <net/loop.h>
#include <net/signal.h>

#include "net_test_util.h"
#include "loop/loop_internal.h"

static void make_pipe(int fds[2])
{
    CHECK_EQ(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
}

static void close_pipe(int fds[2])
{
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
    fds[0] = fds[1] = -1;
}

static void write_all(int fd, const void *buf, size_t n)
{
    CHECK_EQ(write(fd, buf, n), (ssize_t)n);
}

static void quit_timer_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    net_loop_quit(arg);
}

static void ignore_events(net_watch_t *w, int fd, unsigned events, void *arg)
{
    (void)w, (void)fd, (void)events, (void)arg;
}

static void ignore_signal(net_signal_t *s, int signo, void *arg)
{
    (void)s, (void)signo, (void)arg;
}

/* ---- a readable pipe delivers exactly the bytes written --------------- */

static const char rd_payload[] = "hello\0netloop\xff\x01 end";

static struct {
    net_loop_t *loop;
    int fds[2];
    bool written;
    int calls;
    char got[64];
    size_t n;
} rd;

static void rd_write_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    rd.written = true;
    write_all(rd.fds[1], rd_payload, sizeof rd_payload);
}

static void rd_on_readable(net_watch_t *w, int fd, unsigned events, void *arg)
{
    CHECK(arg == &rd);
    CHECK_EQ(fd, rd.fds[0]);
    CHECK(rd.written); /* never called before the data exists */
    CHECK(events & NET_READABLE);
    rd.calls++;
    ssize_t r = read(fd, rd.got + rd.n, sizeof rd.got - rd.n);
    CHECK(r > 0);
    rd.n += (size_t)r;
    if (rd.n >= sizeof rd_payload) {
        net_watch_free(w);
        net_loop_quit(rd.loop);
    }
}

TEST(watch_pipe_readable)
{
    rd.loop = net_test_new_loop(5000);
    make_pipe(rd.fds);
    net_watch_t *w = NULL;
    CHECK_OK(net_watch_new(rd.loop, rd.fds[0], NET_READABLE, rd_on_readable, &rd, &w));
    CHECK(w != NULL);
    CHECK_EQ(net_watch_events(w), NET_READABLE);
    CHECK_OK(net_loop_run_after(rd.loop, 10, rd_write_cb, NULL));
    CHECK_OK(net_loop_run(rd.loop));
    CHECK_EQ(rd.n, sizeof rd_payload);
    CHECK_MEM_EQ(rd.got, rd_payload, sizeof rd_payload);
    CHECK(rd.calls >= 1);
    net_loop_free(rd.loop);
    close_pipe(rd.fds);
}

/* ---- write interest toggled off and on -------------------------------- */

static struct {
    net_loop_t *loop;
    net_watch_t *w;
    int calls;
    int ticks;
    net_timer_id_t ticker;
    unsigned long long iter_at_off;
} wt;

static void wt_on_writable(net_watch_t *w, int fd, unsigned events, void *arg)
{
    (void)fd, (void)arg;
    CHECK(w == wt.w);
    CHECK(events & NET_WRITABLE);
    CHECK_EQ(net_watch_events(w), NET_WRITABLE); /* never called while off */
    wt.calls++;
    if (wt.calls == 1) {
        CHECK_OK(net_watch_set(w, 0));
        CHECK_EQ(net_watch_events(w), 0);
        wt.iter_at_off = wt.loop->iterations;
    } else {
        CHECK_EQ(wt.calls, 2);
        CHECK_EQ(wt.ticks, 10);
        net_watch_free(w);
        wt.w = NULL;
        net_loop_quit(wt.loop);
    }
}

static void wt_tick_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    CHECK_EQ(wt.calls, 1); /* interest 0: the writable pipe stays silent */
    if (++wt.ticks < 10)
        return;
    CHECK_EQ(net_timer_cancel(wt.loop, wt.ticker), 0);
    /* Ten timer runs are ten separate iterations with the pipe writable. */
    CHECK(wt.loop->iterations - wt.iter_at_off >= 10);
    CHECK_OK(net_watch_set(wt.w, NET_WRITABLE));
    CHECK_EQ(net_watch_events(wt.w), NET_WRITABLE);
}

TEST(watch_writable_toggle)
{
    wt.loop = net_test_new_loop(5000);
    int fds[2];
    make_pipe(fds);
    CHECK_OK(net_watch_new(wt.loop, fds[1], NET_WRITABLE, wt_on_writable, NULL, &wt.w));
    CHECK_EQ(net_watch_events(wt.w), NET_WRITABLE);
    wt.ticker = net_loop_run_every(wt.loop, 2, wt_tick_cb, NULL);
    CHECK_OK(wt.ticker);
    CHECK_OK(net_loop_run(wt.loop));
    CHECK_EQ(wt.calls, 2);
    CHECK(wt.w == NULL);
    net_loop_free(wt.loop);
    close_pipe(fds);
}

/* ---- freeing another watch whose event is in the same batch ----------- */

static struct {
    net_loop_t *loop;
    int fds[2][2];
    net_watch_t *w[2];
    int calls[2];
    int first; /* index of the callback that ran first, -1 before */
} fo;

static void fo_on_readable(net_watch_t *w, int fd, unsigned events, void *arg)
{
    (void)events;
    int idx = (int)(intptr_t)arg;
    CHECK(w == fo.w[idx]); /* a freed watch must never be called */
    fo.calls[idx]++;
    if (fo.first < 0) {
        /* Both pipes were readable before the first wait: same batch. */
        CHECK_EQ(fo.loop->iterations, 1);
        fo.first = idx;
        net_watch_free(fo.w[1 - idx]);
        fo.w[1 - idx] = NULL;
    }
    char c;
    CHECK_EQ(read(fd, &c, 1), 1);
    CHECK_EQ(c, 'a' + idx);
}

TEST(watch_free_other_in_same_iteration)
{
    fo.loop = net_test_new_loop(5000);
    fo.first = -1;
    for (int i = 0; i < 2; i++) {
        make_pipe(fo.fds[i]);
        CHECK_OK(net_watch_new(fo.loop, fo.fds[i][0], NET_READABLE, fo_on_readable,
                               (void *)(intptr_t)i, &fo.w[i]));
        char c = (char)('a' + i);
        write_all(fo.fds[i][1], &c, 1);
    }
    CHECK_OK(net_loop_run_after(fo.loop, 30, quit_timer_cb, fo.loop));
    CHECK_OK(net_loop_run(fo.loop));
    CHECK(fo.first == 0 || fo.first == 1);
    CHECK_EQ(fo.calls[fo.first], 1);
    CHECK_EQ(fo.calls[1 - fo.first], 0);
    CHECK(fo.w[1 - fo.first] == NULL);
    net_watch_free(fo.w[fo.first]);
    net_loop_free(fo.loop);
    close_pipe(fo.fds[0]);
    close_pipe(fo.fds[1]);
}

/* ---- a watch frees itself; the fd can be watched again ---------------- */

static struct {
    net_loop_t *loop;
    int fds[2];
    int self_calls;
    int again_calls;
} fs;

static void fs_free_self(net_watch_t *w, int fd, unsigned events, void *arg)
{
    (void)fd, (void)arg;
    CHECK(events & NET_READABLE);
    fs.self_calls++;
    net_watch_free(w); /* the byte is left unread: still readable */
}

static void fs_again(net_watch_t *w, int fd, unsigned events, void *arg)
{
    (void)events, (void)arg;
    fs.again_calls++;
    char c;
    CHECK_EQ(read(fd, &c, 1), 1);
    CHECK_EQ(c, 'x');
    net_watch_free(w);
    net_loop_quit(fs.loop);
}

static void fs_rewatch_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    /* Level-triggered and still readable for 20 ms: exactly one call. */
    CHECK_EQ(fs.self_calls, 1);
    net_watch_t *w;
    CHECK_OK(net_watch_new(fs.loop, fs.fds[0], NET_READABLE, fs_again, NULL, &w));
}

TEST(watch_free_self_in_callback)
{
    fs.loop = net_test_new_loop(5000);
    make_pipe(fs.fds);
    net_watch_t *w;
    CHECK_OK(net_watch_new(fs.loop, fs.fds[0], NET_READABLE, fs_free_self, NULL, &w));
    write_all(fs.fds[1], "x", 1);
    CHECK_OK(net_loop_run_after(fs.loop, 20, fs_rewatch_cb, NULL));
    CHECK_OK(net_loop_run(fs.loop));
    CHECK_EQ(fs.self_calls, 1);
    CHECK_EQ(fs.again_calls, 1);
    net_loop_free(fs.loop);
    close_pipe(fs.fds);
}

/* ---- the writer closes: data, then hang-up / EOF ---------------------- */

static struct {
    net_loop_t *loop;
    int fds[2];
    char got[16];
    size_t n;
    bool eof;
    unsigned eof_events;
} hup;

static void hup_close_writer_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    write_all(hup.fds[1], "bye", 3);
    close(hup.fds[1]);
    hup.fds[1] = -1;
}

static void hup_on_event(net_watch_t *w, int fd, unsigned events, void *arg)
{
    (void)arg;
    CHECK(!hup.eof);
    CHECK(events & (NET_READABLE | NET_HUP));
    for (;;) {
        ssize_t r = read(fd, hup.got + hup.n, sizeof hup.got - hup.n);
        if (r > 0) {
            hup.n += (size_t)r;
            continue;
        }
        CHECK_EQ(r, 0); /* not EAGAIN: only the writer's close wakes us */
        break;
    }
    hup.eof = true;
    hup.eof_events = events;
    net_watch_free(w);
    net_loop_quit(hup.loop);
}

TEST(watch_hup_on_writer_close)
{
    hup.loop = net_test_new_loop(5000);
    make_pipe(hup.fds);
    net_watch_t *w;
    CHECK_OK(net_watch_new(hup.loop, hup.fds[0], NET_READABLE, hup_on_event, NULL, &w));
    CHECK_OK(net_loop_run_after(hup.loop, 10, hup_close_writer_cb, NULL));
    CHECK_OK(net_loop_run(hup.loop));
    CHECK(hup.eof);
    CHECK(hup.eof_events & NET_HUP);
    CHECK_EQ(hup.n, 3);
    CHECK_MEM_EQ(hup.got, "bye", 3);
    net_loop_free(hup.loop);
    close_pipe(hup.fds);
}

/* ---- one watch per fd per loop ---------------------------------------- */

static int dup_calls;
static void dup_on_readable(net_watch_t *w, int fd, unsigned events, void *arg)
{
    (void)events;
    dup_calls++;
    char c;
    CHECK_EQ(read(fd, &c, 1), 1);
    net_watch_free(w);
    net_loop_quit(arg);
}

TEST(watch_duplicate_fd_rejected)
{
    net_loop_t *loop = net_test_new_loop(5000);
    int fds[2];
    make_pipe(fds);
    net_watch_t *a, *b = NULL;
    CHECK_OK(net_watch_new(loop, fds[0], NET_READABLE, dup_on_readable, loop, &a));
    CHECK_EQ(net_watch_new(loop, fds[0], NET_READABLE, ignore_events, NULL, &b), -EEXIST);
    CHECK_EQ(net_watch_new(loop, fds[0], 0, ignore_events, NULL, &b), -EEXIST);
    CHECK(b == NULL);
    /* The rejected attempt left the first watch intact. */
    write_all(fds[1], "z", 1);
    CHECK_OK(net_loop_run(loop));
    CHECK_EQ(dup_calls, 1);
    /* Once freed, the fd may be watched again. */
    CHECK_OK(net_watch_new(loop, fds[0], NET_READABLE, ignore_events, NULL, &b));
    net_watch_free(b);
    net_loop_free(loop);
    close_pipe(fds);
}

/* ---- loop-thread-only calls from another thread ----------------------- */

static struct {
    net_loop_t *loop;
    net_watch_t *w;
    int fd;
    int rc_new, rc_set, rc_signal;
    net_watch_t *out;
    net_signal_t *sig_out;
} wrong;

static void *wrong_thread_main(void *arg)
{
    (void)arg;
    wrong.rc_new = net_watch_new(wrong.loop, wrong.fd, NET_READABLE, ignore_events, NULL,
                                 &wrong.out);
    wrong.rc_set = net_watch_set(wrong.w, NET_READABLE | NET_WRITABLE);
    return NULL;
}

static void *wrong_signal_main(void *arg)
{
    (void)arg;
    static const int usr1[] = {SIGUSR1};
    wrong.rc_signal = net_signal_new(wrong.loop, usr1, 1, ignore_signal, NULL,
                                     &wrong.sig_out);
    return NULL;
}

TEST(watch_wrong_thread_rejected)
{
    CHECK_OK(net_loop_new(&wrong.loop));
    int a[2], b[2];
    make_pipe(a);
    make_pipe(b);
    CHECK_OK(net_watch_new(wrong.loop, b[0], NET_READABLE, ignore_events, NULL, &wrong.w));
    wrong.fd = a[0];
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, wrong_thread_main, NULL), 0);
    pthread_join(t, NULL);
    CHECK_EQ(wrong.rc_new, NET_EWRONGTHREAD);
    CHECK(wrong.out == NULL);
    CHECK_EQ(wrong.rc_set, NET_EWRONGTHREAD);
    CHECK_EQ(net_watch_events(wrong.w), NET_READABLE); /* unchanged */
    CHECK_EQ(pthread_create(&t, NULL, wrong_signal_main, NULL), 0);
    pthread_join(t, NULL);
    CHECK_EQ(wrong.rc_signal, NET_EWRONGTHREAD);
    CHECK(wrong.sig_out == NULL);
    /* The fd the other thread tried is still free to watch here. */
    net_watch_t *w;
    CHECK_OK(net_watch_new(wrong.loop, a[0], NET_READABLE, ignore_events, NULL, &w));
    net_watch_free(w);
    net_watch_free(wrong.w);
    net_loop_free(wrong.loop);
    close_pipe(a);
    close_pipe(b);
}

/* ---- argument checks -------------------------------------------------- */

TEST(watch_invalid_args)
{
    net_loop_t *loop;
    CHECK_OK(net_loop_new(&loop));
    int fds[2];
    make_pipe(fds);
    net_watch_t *w = NULL;
    CHECK_EQ(net_watch_new(loop, -1, NET_READABLE, ignore_events, NULL, &w), -EINVAL);
    CHECK_EQ(net_watch_new(loop, fds[0], NET_READABLE, NULL, NULL, &w), -EINVAL);
    CHECK_EQ(net_watch_new(loop, fds[0], 1u << 7, ignore_events, NULL, &w), -EINVAL);
    CHECK_EQ(net_watch_new(loop, fds[0], NET_READABLE | 1u << 30, ignore_events, NULL, &w),
             -EINVAL);
    CHECK_EQ(net_watch_new(NULL, fds[0], NET_READABLE, ignore_events, NULL, &w), -EINVAL);
    CHECK_EQ(net_watch_new(loop, fds[0], NET_READABLE, ignore_events, NULL, NULL), -EINVAL);
    CHECK(w == NULL);

    CHECK_OK(net_watch_new(loop, fds[0], NET_READABLE, ignore_events, NULL, &w));
    CHECK_EQ(net_watch_set(w, 1u << 7), -EINVAL);
    CHECK_EQ(net_watch_events(w), NET_READABLE); /* a rejected set changes nothing */
    CHECK_EQ(net_watch_set(NULL, NET_READABLE), -EINVAL);
    CHECK_OK(net_watch_set(w, NET_READABLE | NET_WRITABLE));
    CHECK_EQ(net_watch_events(w), NET_READABLE | NET_WRITABLE);
    net_watch_free(w);
    net_watch_free(NULL);

    static const int sigs[] = {SIGUSR1};
    net_signal_t *s = NULL;
    CHECK_EQ(net_signal_new(loop, sigs, 0, ignore_signal, NULL, &s), -EINVAL);
    CHECK_EQ(net_signal_new(loop, NULL, 1, ignore_signal, NULL, &s), -EINVAL);
    CHECK_EQ(net_signal_new(loop, sigs, 17, ignore_signal, NULL, &s), -EINVAL);
    CHECK_EQ(net_signal_new(loop, sigs, 1, NULL, NULL, &s), -EINVAL);
    CHECK_EQ(net_signal_new(loop, sigs, 1, ignore_signal, NULL, NULL), -EINVAL);
    static const int bad[] = {0};
    CHECK_EQ(net_signal_new(loop, bad, 1, ignore_signal, NULL, &s), -EINVAL);
    CHECK(s == NULL);
    net_signal_free(NULL);
    net_loop_free(loop);
    close_pipe(fds);
}

/* ---- many descriptors ready in one wait (more than the first batch) --- */

#define MANY 150

static struct {
    net_loop_t *loop;
    int fds[MANY][2];
    net_watch_t *w[MANY];
    int calls[MANY];
    int done;
} many;

static void many_on_readable(net_watch_t *w, int fd, unsigned events, void *arg)
{
    (void)events;
    int i = (int)(intptr_t)arg;
    CHECK(w == many.w[i]);
    CHECK_EQ(fd, many.fds[i][0]);
    many.calls[i]++;
    unsigned char c;
    CHECK_EQ(read(fd, &c, 1), 1);
    CHECK_EQ(c, (unsigned char)i);
    net_watch_free(w);
    many.w[i] = NULL;
    if (++many.done == MANY)
        net_loop_quit(many.loop);
}

TEST(watch_many_ready_in_one_wait)
{
    many.loop = net_test_new_loop(5000);
    for (int i = 0; i < MANY; i++) {
        make_pipe(many.fds[i]);
        CHECK_OK(net_watch_new(many.loop, many.fds[i][0], NET_READABLE, many_on_readable,
                               (void *)(intptr_t)i, &many.w[i]));
        unsigned char c = (unsigned char)i;
        write_all(many.fds[i][1], &c, 1);
    }
    CHECK_OK(net_loop_run(many.loop));
    for (int i = 0; i < MANY; i++) {
        CHECK_EQ(many.calls[i], 1);
        close_pipe(many.fds[i]);
    }
    net_loop_free(many.loop);
}

/* ---- many watches created from inside a callback, mid-dispatch -------- */

#define GROW 40

static struct {
    net_loop_t *loop;
    int a[2], b[2];
    int fds[GROW][2];
    net_watch_t *wa, *wb, *w[GROW];
    int a_calls, b_calls, grown_calls;
} grow;

static void grow_on_new(net_watch_t *w, int fd, unsigned events, void *arg)
{
    (void)w, (void)fd, (void)events, (void)arg;
    grow.grown_calls++; /* nothing was written to these pipes */
}

static void grow_on_b(net_watch_t *w, int fd, unsigned events, void *arg)
{
    (void)events, (void)arg;
    CHECK(w == grow.wb);
    grow.b_calls++;
    char c;
    CHECK_EQ(read(fd, &c, 1), 1);
    CHECK_EQ(c, 'b');
    net_watch_free(w);
    grow.wb = NULL;
}

static void grow_on_a(net_watch_t *w, int fd, unsigned events, void *arg)
{
    (void)events, (void)arg;
    CHECK(w == grow.wa);
    grow.a_calls++;
    char c;
    CHECK_EQ(read(fd, &c, 1), 1);
    /* Like an acceptor taking a burst of connections: the poller has to
     * grow while the loop is still walking this iteration's ready list. */
    for (int i = 0; i < GROW; i++) {
        make_pipe(grow.fds[i]);
        CHECK_OK(net_watch_new(grow.loop, grow.fds[i][0], NET_READABLE, grow_on_new, NULL,
                               &grow.w[i]));
    }
    net_watch_free(w);
    grow.wa = NULL;
}

TEST(watch_new_many_inside_callback)
{
    grow.loop = net_test_new_loop(5000);
    make_pipe(grow.a);
    make_pipe(grow.b);
    CHECK_OK(net_watch_new(grow.loop, grow.a[0], NET_READABLE, grow_on_a, NULL, &grow.wa));
    CHECK_OK(net_watch_new(grow.loop, grow.b[0], NET_READABLE, grow_on_b, NULL, &grow.wb));
    write_all(grow.a[1], "a", 1);
    write_all(grow.b[1], "b", 1);
    CHECK_OK(net_loop_run_after(grow.loop, 30, quit_timer_cb, grow.loop));
    CHECK_OK(net_loop_run(grow.loop));
    CHECK_EQ(grow.a_calls, 1);
    CHECK_EQ(grow.b_calls, 1);
    CHECK_EQ(grow.grown_calls, 0);
    for (int i = 0; i < GROW; i++) {
        net_watch_free(grow.w[i]);
        close_pipe(grow.fds[i]);
    }
    net_loop_free(grow.loop);
    close_pipe(grow.a);
    close_pipe(grow.b);
}

/* ---- signals ---------------------------------------------------------- */

static void send_sigterm_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    CHECK_EQ(kill(getpid(), SIGTERM), 0);
}

TEST(signal_sigterm_quits_loop)
{
    net_loop_t *loop = net_test_new_loop(5000);
    net_signal_t *s = NULL;
    CHECK_OK(net_signal_quit_on_term(loop, &s));
    CHECK(s != NULL);
    CHECK_OK(net_loop_run_after(loop, 10, send_sigterm_cb, NULL));
    uint64_t start = net_test_now_ms();
    CHECK_OK(net_loop_run(loop));
    CHECK(net_test_now_ms() - start < 2000);
    net_signal_free(s);
    /* Still blocked after free: a late SIGTERM stays pending, harmless. */
    sigset_t set;
    CHECK_EQ(pthread_sigmask(SIG_BLOCK, NULL, &set), 0);
    CHECK(sigismember(&set, SIGTERM));
    CHECK(sigismember(&set, SIGINT));
    net_loop_free(loop);
}

static struct {
    net_loop_t *loop;
    net_signal_t *s;
    int seen[2];
    int calls;
} sg;

static void sg_send_usr1_cb(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    CHECK_EQ(kill(getpid(), SIGUSR1), 0);
}

static void sg_on_signal(net_signal_t *s, int signo, void *arg)
{
    CHECK(s == sg.s);
    CHECK(arg == &sg);
    CHECK(net_loop_in_loop_thread(sg.loop));
    sg.seen[sg.calls++] = signo;
    if (signo == SIGUSR1) {
        CHECK_EQ(kill(getpid(), SIGUSR2), 0);
        return;
    }
    net_signal_free(s); /* safe inside its own callback */
    sg.s = NULL;
    net_loop_quit(sg.loop);
}

TEST(signal_callback_gets_signo)
{
    sg.loop = net_test_new_loop(5000);
    static const int sigs[] = {SIGUSR1, SIGUSR2};
    CHECK_OK(net_signal_new(sg.loop, sigs, 2, sg_on_signal, &sg, &sg.s));
    CHECK_OK(net_loop_run_after(sg.loop, 10, sg_send_usr1_cb, NULL));
    CHECK_OK(net_loop_run(sg.loop));
    CHECK_EQ(sg.calls, 2);
    CHECK_EQ(sg.seen[0], SIGUSR1);
    CHECK_EQ(sg.seen[1], SIGUSR2);
    CHECK(sg.s == NULL);
    net_loop_free(sg.loop);
}

/* ---- freeing a watch or a signal from another thread is refused -------- */

static struct {
    net_loop_t *loop;
    net_watch_t *w;
    net_signal_t *s, *term_out;
    int rc_events, rc_free, rc_sig_free, rc_term;
    bool term_blocked; /* in the other thread, after its refused quit_on_term */
    int readable, signals;
} xf;

static void xf_on_readable_cb(net_watch_t *w, int fd, unsigned events, void *arg)
{
    (void)w, (void)events, (void)arg;
    char c;
    CHECK_EQ(read(fd, &c, 1), 1);
    xf.readable++;
}

static void xf_on_signal_cb(net_signal_t *s, int signo, void *arg)
{
    (void)s, (void)arg;
    CHECK_EQ(signo, SIGUSR1);
    xf.signals++;
    net_loop_quit(xf.loop);
}

static void *xf_other_thread(void *arg)
{
    (void)arg;
    xf.rc_events = net_watch_events(xf.w);
    xf.rc_free = net_watch_free(xf.w);
    xf.rc_sig_free = net_signal_free(xf.s);
    xf.rc_term = net_signal_quit_on_term(xf.loop, &xf.term_out);
    sigset_t set;
    CHECK_EQ(pthread_sigmask(SIG_BLOCK, NULL, &set), 0);
    xf.term_blocked = sigismember(&set, SIGTERM);
    return NULL;
}

TEST(watch_and_signal_free_from_other_thread_rejected)
{
    xf.loop = net_test_new_loop(5000);
    int p[2];
    make_pipe(p);
    CHECK_OK(net_watch_new(xf.loop, p[0], NET_READABLE, xf_on_readable_cb, NULL, &xf.w));
    static const int usr1[] = {SIGUSR1};
    CHECK_OK(net_signal_new(xf.loop, usr1, 1, xf_on_signal_cb, NULL, &xf.s));
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, xf_other_thread, NULL), 0);
    pthread_join(t, NULL);
    CHECK_EQ(xf.rc_events, NET_EWRONGTHREAD);
    CHECK_EQ(xf.rc_free, NET_EWRONGTHREAD);
    CHECK_EQ(xf.rc_sig_free, NET_EWRONGTHREAD);
    CHECK_EQ(xf.rc_term, NET_EWRONGTHREAD);
    CHECK(xf.term_out == NULL);
    CHECK(!xf.term_blocked); /* refused before blocking anything */
    /* Both still work on the loop thread. */
    CHECK_EQ(net_watch_events(xf.w), NET_READABLE);
    write_all(p[1], "x", 1);
    CHECK_EQ(kill(getpid(), SIGUSR1), 0);
    CHECK_OK(net_loop_run(xf.loop));
    CHECK_EQ(xf.signals, 1);
    if (!xf.readable) /* the signal came first: one more turn for the byte */
        net_test_run_for(xf.loop, 5);
    CHECK_EQ(xf.readable, 1);
    CHECK_EQ(net_watch_free(xf.w), 0);
    CHECK_EQ(net_signal_free(xf.s), 0);
    CHECK_EQ(net_watch_free(NULL), 0);
    CHECK_EQ(net_signal_free(NULL), 0);
    CHECK_EQ(net_watch_events(NULL), -EINVAL);
    CHECK_OK(net_loop_free(xf.loop));
    close_pipe(p);
}
