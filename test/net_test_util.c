#include "net_test_util.h"

#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <net/alloc.h>

/* ---- time and waiting ------------------------------------------------------ */

void net_test_sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static void watchdog_fired(int sig)
{
    (void)sig;
    /* Async-signal-safe: no stdio here. */
    static const char msg[] = "FAIL watchdog: the scenario did not finish in time\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(1);
}

void net_test_watchdog_start(void)
{
    signal(SIGALRM, watchdog_fired);
    alarm(NET_TEST_WATCHDOG_S);
}

static void watchdog_timer(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)loop;
    (void)id;
    (void)arg;
    net_test_fail(__FILE__, __LINE__, "watchdog: the scenario did not finish in time");
}

net_loop_t *net_test_new_loop(uint64_t watchdog_ms)
{
    net_loop_t *loop;
    CHECK_OK(net_loop_new(&loop));
    CHECK(net_loop_run_after(loop, watchdog_ms, watchdog_timer, NULL) > 0);
    return loop;
}

/* ---- running a loop ---------------------------------------------------------- */

void net_test_quit_loop(net_loop_t *loop, net_timer_id_t id, void *arg)
{
    (void)id;
    (void)arg;
    net_loop_quit(loop);
}

void net_test_run_for(net_loop_t *loop, uint64_t ms)
{
    CHECK(net_loop_run_after(loop, ms, net_test_quit_loop, loop) > 0);
    CHECK_OK(net_loop_run(loop));
}

struct until {
    net_loop_t *loop;
    bool (*cond)(void *arg);
    void *arg;
    uint64_t deadline;
};

static void until_tick(net_loop_t *loop, net_timer_id_t id, void *p)
{
    (void)loop;
    (void)id;
    struct until *u = p;
    if (u->cond(u->arg) || net_test_now_ms() > u->deadline)
        net_loop_quit(u->loop);
}

void net_test_run_until(net_loop_t *loop, bool (*cond)(void *), void *arg)
{
    struct until u = {loop, cond, arg, net_test_now_ms() + NET_TEST_WAIT_MS};
    net_timer_id_t id = net_loop_run_every(loop, 1, until_tick, &u);
    CHECK(id > 0);
    CHECK_OK(net_loop_run(loop));
    CHECK_OK(net_timer_cancel(loop, id));
    if (!cond(arg))
        net_test_fail(__FILE__, __LINE__, "timed out running the loop until a condition");
}

struct count_goal {
    atomic_int *count;
    int n;
};

static bool count_reached(void *p)
{
    struct count_goal *g = p;
    return atomic_load(g->count) >= g->n;
}

void net_test_run_until_count(net_loop_t *loop, atomic_int *count, int n)
{
    struct count_goal g = {count, n};
    net_test_run_until(loop, count_reached, &g);
}

struct on_loop_job {
    void (*fn)(void *);
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool done;
};

static void on_loop_run(void *p)
{
    struct on_loop_job *job = p;
    job->fn(job->arg);
    pthread_mutex_lock(&job->mu);
    job->done = true;
    pthread_cond_signal(&job->cond);
    pthread_mutex_unlock(&job->mu);
}

void net_test_on_loop(net_loop_t *loop, void (*fn)(void *), void *arg)
{
    struct on_loop_job job = {.fn = fn, .arg = arg, .mu = PTHREAD_MUTEX_INITIALIZER,
                              .cond = PTHREAD_COND_INITIALIZER};
    CHECK_OK(net_loop_queue_in_loop(loop, on_loop_run, &job));
    pthread_mutex_lock(&job.mu);
    while (!job.done)
        pthread_cond_wait(&job.cond, &job.mu);
    pthread_mutex_unlock(&job.mu);
    pthread_cond_destroy(&job.cond);
    pthread_mutex_destroy(&job.mu);
}

/* ---- helper threads ------------------------------------------------------------ */

static void *job_main(void *p)
{
    struct net_test_job *j = p;
    j->fn(j->arg);
    atomic_store(&j->done, true);
    return NULL;
}

void net_test_job_start(struct net_test_job *j, void (*fn)(void *), void *arg)
{
    j->fn = fn;
    j->arg = arg;
    atomic_init(&j->done, false);
    CHECK_EQ(pthread_create(&j->thread, NULL, job_main, j), 0);
}

bool net_test_job_done(void *job)
{
    return atomic_load(&((struct net_test_job *)job)->done);
}

void net_test_job_join(struct net_test_job *j)
{
    CHECK_EQ(pthread_join(j->thread, NULL), 0);
}

void net_test_run_with_client(net_loop_t *loop, void (*fn)(void *), void *arg)
{
    struct net_test_job j;
    net_test_job_start(&j, fn, arg);
    net_test_run_until(loop, net_test_job_done, &j);
    net_test_job_join(&j);
}

/* ---- server-side connections ------------------------------------------------------ */

void net_test_keep_conn(net_conn_t *conn, void *keeper)
{
    struct net_test_conn_keeper *k = keeper;
    if (net_conn_connected(conn)) {
        atomic_store(&k->conn, net_conn_ref(conn));
        atomic_fetch_add(&k->ups, 1);
    } else {
        atomic_fetch_add(&k->downs, 1);
    }
}

/* ---- closing a server --------------------------------------------------------------- */

struct net_server_stats net_test_server_stats(net_server_t *server)
{
    struct net_server_stats st;
    net_server_stats(server, &st);
    return st;
}

size_t net_test_server_conns(net_server_t *server)
{
    return net_test_server_stats(server).connections;
}

bool net_test_server_idle(void *server)
{
    return net_test_server_conns(server) == 0;
}

struct server_close_rec {
    net_loop_t *loop;
    net_server_t *server;
    bool inside_close;
    int calls;
};

static void server_close_done(net_server_t *server, void *arg)
{
    struct server_close_rec *r = arg;
    CHECK(server == r->server);
    CHECK(net_loop_in_loop_thread(r->loop));
    CHECK(!r->inside_close);
    CHECK_EQ(net_test_server_conns(server), 0);
    r->calls++;
}

static bool server_close_ran(void *arg)
{
    return ((struct server_close_rec *)arg)->calls > 0;
}

void net_test_server_close(net_loop_t *loop, net_server_t *server, uint64_t drain_ms)
{
    struct server_close_rec r = {.loop = loop, .server = server, .inside_close = true};
    CHECK_OK(net_server_close(server, drain_ms, server_close_done, &r));
    CHECK_EQ(net_server_close(server, drain_ms, server_close_done, &r), -EALREADY);
    r.inside_close = false;
    net_test_run_until(loop, server_close_ran, &r);
    net_test_run_for(loop, 1); /* a second done would run here */
    CHECK_EQ(r.calls, 1);
}

/* ---- blocking client sockets ----------------------------------------------------- */

int net_test_socket(int family, int rcvbuf, unsigned timeout_ms)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    CHECK(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0);
    if (family != AF_UNIX) {
        int one = 1;
        CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
    }
    if (rcvbuf > 0)
        CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) == 0);
    return fd;
}

int net_test_connect(const net_addr_t *addr, int rcvbuf)
{
    int fd = net_test_socket(net_addr_family(addr), rcvbuf, NET_TEST_IO_TIMEOUT_MS);
    if (connect(fd, net_addr_sockaddr(addr), net_addr_len(addr)) < 0)
        net_test_fail(__FILE__, __LINE__, "connect: %s", strerror(errno));
    return fd;
}

void net_test_close_reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    CHECK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
    CHECK(close(fd) == 0);
}

bool net_test_send_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EPIPE || errno == ECONNRESET))
            return false;
        if (w <= 0)
            net_test_fail(__FILE__, __LINE__, "send: %s", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
    return true;
}

void net_test_recv_exact(int fd, void *data, size_t n)
{
    char *p = data;
    for (size_t got = 0; got < n;) {
        ssize_t r = recv(fd, p + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            net_test_fail(__FILE__, __LINE__, "recv: %zd (%s) after %zu of %zu bytes", r,
                          r < 0 ? strerror(errno) : "EOF", got, n);
        got += (size_t)r;
    }
}

void net_test_echo_once(const net_addr_t *addr, const char *msg)
{
    int fd = net_test_connect(addr, 0);
    size_t len = strlen(msg);
    char back[256];
    CHECK(len <= sizeof back);
    CHECK(net_test_send_all(fd, msg, len));
    net_test_recv_exact(fd, back, len);
    CHECK_MEM_EQ(back, msg, len);
    CHECK(close(fd) == 0);
}

void net_test_echo_client(void *echo)
{
    struct net_test_echo *e = echo;
    net_test_echo_once(&e->addr, e->msg);
}

int net_test_count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    CHECK(d != NULL);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;
}

/* ---- memory -------------------------------------------------------------------- */

size_t net_test_rss_bytes(void)
{
    unsigned long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    CHECK(f != NULL);
    CHECK_EQ(fscanf(f, "%lu %lu", &size, &resident), 2);
    fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

void net_test_raise_malloc_mmap_threshold(void)
{
    /* 30 MiB: glibc moves the threshold only for chunks up to 32 MiB,
     * header included (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit). Through a
     * volatile pointer: the compiler may drop a malloc only freed. */
    char *volatile chunk = malloc(30 * MiB);
    CHECK(chunk != NULL);
    free(chunk);
}

static _Atomic size_t fail_from = SIZE_MAX;

static void *failing_malloc(size_t n)
{
    return n >= atomic_load(&fail_from) ? NULL : malloc(n);
}

static void *failing_realloc(void *p, size_t n)
{
    return n >= atomic_load(&fail_from) ? NULL : realloc(p, n);
}

static void *failing_calloc(size_t count, size_t n)
{
    size_t total;
    if (__builtin_mul_overflow(count, n, &total) || total >= atomic_load(&fail_from))
        return NULL;
    return calloc(count, n);
}

void net_test_fail_allocs_from(size_t min)
{
    static bool installed;
    if (!installed)
        CHECK_OK(net_replace_allocator(failing_malloc, failing_realloc, failing_calloc, free));
    installed = true;
    atomic_store(&fail_from, min);
}
