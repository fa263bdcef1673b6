/* Logging (levels, sinks, the default stderr line, per-site rate limiting)
 * and error texts. */
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <time.h>
#include <unistd.h>

#include <net/error.h>
#include <net/log.h>

#include "harness.h"
#include "net_test_util.h"
#include "loop/log_internal.h"

/* ---- a capturing sink ------------------------------------------------- */

#define CAP_MAX 64

static struct {
    pthread_mutex_t mu;
    int n;      /* lines received, including those past CAP_MAX */
    net_log_level_t level[CAP_MAX];
    char *msg[CAP_MAX];
    size_t len[CAP_MAX];
} cap = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void cap_sink(net_log_level_t level, const char *msg, size_t len, void *arg)
{
    CHECK(arg == &cap);
    CHECK(msg != NULL);
    CHECK_EQ(strlen(msg), len); /* NUL-terminated at len */
    CHECK(memchr(msg, '\n', len) == NULL);
    pthread_mutex_lock(&cap.mu);
    if (cap.n < CAP_MAX) {
        cap.level[cap.n] = level;
        cap.msg[cap.n] = strdup(msg);
        CHECK(cap.msg[cap.n] != NULL);
        cap.len[cap.n] = len;
    }
    cap.n++;
    pthread_mutex_unlock(&cap.mu);
}

static void cap_install(void)
{
    CHECK_OK(net_log_set_sink(cap_sink, &cap));
}

static void cap_reset(void)
{
    for (int i = 0; i < cap.n && i < CAP_MAX; i++)
        free(cap.msg[i]);
    cap.n = 0;
}

static void check_line(int i, net_log_level_t level, const char *want)
{
    CHECK(i < cap.n);
    CHECK_EQ(cap.level[i], level);
    if (strcmp(cap.msg[i], want) != 0)
        net_test_fail(__FILE__, __LINE__, "line %d: got \"%s\", want \"%s\"", i, cap.msg[i],
                      want);
    CHECK_EQ(cap.len[i], strlen(want));
}

/* ---- levels ----------------------------------------------------------- */

TEST(log_level_filters)
{
    cap_install();
    net_log_set_level(NET_LOG_WARN);
    CHECK_EQ(net_log_level(), NET_LOG_WARN);
    net_log(NET_LOG_TRACE, "trace %d", 0);
    net_log(NET_LOG_DEBUG, "debug %d", 0);
    net_log(NET_LOG_INFO, "info %d", 1);
    CHECK_EQ(cap.n, 0);
    net_log(NET_LOG_WARN, "warn %d", 2);
    net_log(NET_LOG_ERROR, "error %s", "three");
    CHECK_EQ(cap.n, 2);
    check_line(0, NET_LOG_WARN, "warn 2");
    check_line(1, NET_LOG_ERROR, "error three");

    /* OFF is a threshold, never a message level. */
    net_log(NET_LOG_OFF, "off");
    CHECK_EQ(cap.n, 2);

    net_log_set_level(NET_LOG_TRACE);
    net_log(NET_LOG_TRACE, "now %s", "visible");
    CHECK_EQ(cap.n, 3);
    check_line(2, NET_LOG_TRACE, "now visible");

    net_log_set_level(NET_LOG_OFF);
    net_log(NET_LOG_ERROR, "silenced");
    CHECK_EQ(cap.n, 3);

    /* Out-of-range levels are ignored. */
    net_log_set_level((net_log_level_t)99);
    CHECK_EQ(net_log_level(), NET_LOG_OFF);
    net_log_set_level((net_log_level_t)-1);
    CHECK_EQ(net_log_level(), NET_LOG_OFF);

    CHECK(strcmp(net_log_level_name(NET_LOG_TRACE), "TRACE") == 0);
    CHECK(strcmp(net_log_level_name(NET_LOG_WARN), "WARN") == 0);
    CHECK(strcmp(net_log_level_name(NET_LOG_ERROR), "ERROR") == 0);
    CHECK(strcmp(net_log_level_name((net_log_level_t)42), "?") == 0);
    cap_reset();
}

/* ---- the sink gets the formatted text -------------------------------- */

static void log_via_v(net_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void log_via_v(net_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    net_log_v(level, fmt, ap);
    va_end(ap);
}

TEST(log_sink_receives_formatted_text)
{
    cap_install();
    net_log_set_level(NET_LOG_INFO);
    net_log(NET_LOG_INFO, "%s=%d %05.1f %x %c%% [%-4s] %llu", "answer", 42, 3.14159, 255, 'z',
            "ab", 18446744073709551615ull);
    log_via_v(NET_LOG_WARN, "via %s: %+d", "va_list", 7);
    net_log(NET_LOG_ERROR, "%s", "");
    CHECK_EQ(cap.n, 3);
    check_line(0, NET_LOG_INFO, "answer=42 003.1 ff z% [ab  ] 18446744073709551615");
    check_line(1, NET_LOG_WARN, "via va_list: +7");
    check_line(2, NET_LOG_ERROR, "");

    /* A message longer than the line buffer arrives cut but well formed. */
    char big[3000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    net_log(NET_LOG_ERROR, "%s", big);
    CHECK_EQ(cap.n, 4);
    CHECK(cap.len[3] > 0 && cap.len[3] < sizeof big - 1);
    CHECK_MEM_EQ(cap.msg[3], big, cap.len[3]);

    cap_reset();
}

/* ---- replacing the sink: the old one hears nothing, nothing leaks ----- */

static int other_calls;
static void other_sink(net_log_level_t level, const char *msg, size_t len, void *arg)
{
    (void)level, (void)msg, (void)len, (void)arg;
    other_calls++;
}

TEST(log_sink_replaced_and_restored_without_leak)
{
    net_log_set_level(NET_LOG_WARN);
    cap_install();
    net_log(NET_LOG_ERROR, "one");
    CHECK_OK(net_log_set_sink(other_sink, NULL));
    net_log(NET_LOG_ERROR, "two");
    CHECK_EQ(cap.n, 1);
    CHECK_EQ(other_calls, 1);

    /* NULL restores stderr: neither sink hears anything more. */
    CHECK_OK(net_log_set_sink(NULL, NULL));
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    CHECK(devnull >= 0);
    int saved = dup(STDERR_FILENO);
    CHECK(saved >= 0);
    CHECK_EQ(dup2(devnull, STDERR_FILENO), STDERR_FILENO);
    net_log(NET_LOG_ERROR, "to stderr");
    CHECK_EQ(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    close(devnull);
    CHECK_EQ(cap.n, 1);
    CHECK_EQ(other_calls, 1);
    check_line(0, NET_LOG_ERROR, "one");
    cap_reset();
    /* Under ASan, LeakSanitizer checks at exit that the replaced sinks were
     * not dropped on the floor. */
}

/* ---- the default sink: one prefixed line on stderr -------------------- */

TEST(log_default_sink_writes_one_line)
{
    net_log_set_level(NET_LOG_INFO);
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    int saved = dup(STDERR_FILENO);
    CHECK(saved >= 0);
    CHECK_EQ(dup2(fds[1], STDERR_FILENO), STDERR_FILENO);
    net_log(NET_LOG_WARN, "disk %d%% full", 93);
    net_log(NET_LOG_INFO, "second");
    CHECK_EQ(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    close(fds[1]);
    char buf[256];
    size_t n = 0;
    ssize_t r;
    while ((r = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)r;
    close(fds[0]);
    buf[n] = '\0';
    /* "2026-11-23T10:00:00.123Z WARN  disk 93% full\n" */
    const char *l1 = buf;
    char *nl = strchr(l1, '\n');
    CHECK(nl != NULL);
    *nl = '\0';
    const char *l2 = nl + 1;
    CHECK_EQ(strlen(l1), 24 + 1 + 6 + strlen("disk 93% full"));
    const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ ";
    for (size_t i = 0; shape[i]; i++) {
        if (shape[i] == 'd')
            CHECK(l1[i] >= '0' && l1[i] <= '9');
        else
            CHECK_EQ(l1[i], shape[i]);
    }
    CHECK(strcmp(l1 + 25, "WARN  disk 93% full") == 0);
    CHECK(strcmp(l2 + 25, "INFO  second\n") == 0);
}

/* ---- rate limiting: one call site ------------------------------------- */

static void noisy_site(int i)
{
    NET__LOG_RL(NET_LOG_ERROR, "noisy %d", i);
}

static void other_site(int i)
{
    NET__LOG_RL(NET_LOG_ERROR, "other %d", i);
}

TEST(log_rate_limited_site)
{
    cap_install();
    net_log_set_level(NET_LOG_WARN);
    uint64_t start = net_test_now_ms();
    for (int i = 0; i < 10000; i++)
        noisy_site(i);
    /* All in one window, or the count below would legitimately differ. */
    CHECK(net_test_now_ms() - start < NET__LOG_WINDOW_MS / 2);
    CHECK_EQ(cap.n, NET__LOG_BURST);
    for (int i = 0; i < NET__LOG_BURST; i++) {
        char want[32];
        snprintf(want, sizeof want, "noisy %d", i);
        check_line(i, NET_LOG_ERROR, want);
    }
    /* Each site has its own budget. */
    other_site(1);
    CHECK_EQ(cap.n, NET__LOG_BURST + 1);
    check_line(NET__LOG_BURST, NET_LOG_ERROR, "other 1");

    struct timespec ts = {1, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    noisy_site(10000);
    CHECK_EQ(cap.n, NET__LOG_BURST + 2);
    char want[80];
    snprintf(want, sizeof want, "noisy 10000 (%d similar lines suppressed)",
             10000 - NET__LOG_BURST);
    check_line(NET__LOG_BURST + 1, NET_LOG_ERROR, want);
    /* The count was reported once; the next line is plain. */
    noisy_site(10001);
    CHECK_EQ(cap.n, NET__LOG_BURST + 3);
    check_line(NET__LOG_BURST + 2, NET_LOG_ERROR, "noisy 10001");
    cap_reset();
}

TEST(log_rate_limited_site_below_level_costs_no_budget)
{
    cap_install();
    net_log_set_level(NET_LOG_OFF);
    for (int i = 0; i < 100; i++)
        noisy_site(i);
    net_log_set_level(NET_LOG_WARN);
    noisy_site(100);
    CHECK_EQ(cap.n, 1);
    check_line(0, NET_LOG_ERROR, "noisy 100"); /* nothing counted as suppressed */
    cap_reset();
}

/* ---- the level from the environment ----------------------------------- */

TEST(log_level_from_env)
{
    /* Before any logging call in this process: the level is read lazily. */
    CHECK_EQ(setenv("NETLOOP_LOG", "error", 1), 0);
    CHECK_EQ(net_log_level(), NET_LOG_ERROR);
    cap_install();
    net_log(NET_LOG_WARN, "hidden");
    net_log(NET_LOG_ERROR, "shown");
    CHECK_EQ(cap.n, 1);
    check_line(0, NET_LOG_ERROR, "shown");
    cap_reset();
}

TEST(log_level_from_env_case_insensitive)
{
    CHECK_EQ(setenv("NETLOOP_LOG", "Debug", 1), 0);
    CHECK_EQ(net_log_level(), NET_LOG_DEBUG);
}

TEST(log_level_from_env_unknown_defaults_to_warn)
{
    CHECK_EQ(setenv("NETLOOP_LOG", "verbose", 1), 0);
    CHECK_EQ(net_log_level(), NET_LOG_WARN);
}

TEST(log_level_default_is_warn)
{
    CHECK_EQ(unsetenv("NETLOOP_LOG"), 0);
    CHECK_EQ(net_log_level(), NET_LOG_WARN);
}

/* ---- net_strerror ----------------------------------------------------- */

TEST(strerror_library_and_errno)
{
    static const int codes[] = {NET_ELOOPEXISTS, NET_EWRONGTHREAD, NET_ESELFCONNECT,
                                NET_ECANCELLED};
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
        const char *s = net_strerror(codes[i]);
        CHECK(s != NULL && s[0] != '\0');
        CHECK(strcmp(s, "unknown error") != 0);
        CHECK(net_strerror(-codes[i]) == s); /* the sign does not matter */
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(s, net_strerror(codes[j])) != 0);
    }
    CHECK(strcmp(net_strerror(-EINVAL), strerror(EINVAL)) == 0);
    CHECK(strcmp(net_strerror(EINVAL), strerror(EINVAL)) == 0);
    CHECK(strcmp(net_strerror(-ENOMEM), strerror(ENOMEM)) == 0);
    CHECK(strcmp(net_strerror(-EEXIST), strerror(EEXIST)) == 0);
    CHECK(strcmp(net_strerror(-99999), "unknown error") == 0);
    CHECK(strcmp(net_strerror(-(NET_ERR_BASE + 5)), "unknown error") == 0);
    CHECK(strcmp(net_strerror(-NET_ERR_BASE), "unknown error") == 0);
    CHECK(strcmp(net_strerror(-4000), "unknown error") == 0);
    const char *zero = net_strerror(0);
    CHECK(zero != NULL && zero[0] != '\0');
    CHECK(strcmp(zero, "unknown error") != 0);
}

TEST(strerror_int_min_is_unknown)
{
    /* -INT_MIN does not exist: the code must not negate it (UBSan). */
    CHECK(strcmp(net_strerror(-2147483647 - 1), "unknown error") == 0);
    CHECK(strcmp(net_strerror(2147483647), "unknown error") == 0);
}

/* ---- a sink that cannot be installed leaves the old one --------------- */

TEST(log_sink_without_memory_keeps_previous)
{
    net_test_fail_allocs_from(SIZE_MAX); /* installs the allocator first */
    net_log_set_level(NET_LOG_WARN);
    cap_install();
    net_test_fail_allocs_from(1);
    CHECK_EQ(net_log_set_sink(other_sink, NULL), -ENOMEM);
    net_test_fail_allocs_from(SIZE_MAX);
    net_log(NET_LOG_ERROR, "still captured");
    CHECK_EQ(other_calls, 0);
    CHECK_EQ(cap.n, 1);
    CHECK(strcmp(cap.msg[0], "still captured") == 0);
    cap_reset();
    CHECK_OK(net_log_set_sink(NULL, NULL));
}
