/* The logger: one formatted line per call, written with a single write(2) so
 * lines from different threads never interleave mid-line. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "loop/alloc_internal.h"
#include "loop/log_internal.h"

#define LINE_MAX_BYTES 1024

static _Atomic int log_level = -1; /* -1: not yet read from NETLOOP_LOG */

struct sink {
    net_log_sink_fn fn;
    void *arg;
};
/* The sink is swapped as a whole, so a line needs no lock. Replaced pairs are
 * never freed (a writer may still be using one) but stay reachable on a
 * retired list, so leak checkers do not flag them; sinks change rarely. */
static _Atomic(struct sink *) log_sink;
struct retired {
    struct sink *sink;
    struct retired *next;
};
static struct retired *retired_sinks;
static pthread_mutex_t retired_mu = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "OFF"};

static int level_from_env(void)
{
    const char *s = getenv("NETLOOP_LOG");
    if (!s)
        return NET_LOG_WARN;
    for (int i = 0; i <= NET_LOG_OFF; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    return NET_LOG_WARN;
}

net_log_level_t net_log_level(void)
{
    int l = atomic_load_explicit(&log_level, memory_order_relaxed);
    if (l < 0) {
        int expected = -1;
        l = level_from_env();
        if (!atomic_compare_exchange_strong(&log_level, &expected, l))
            l = expected;
    }
    return (net_log_level_t)l;
}

void net_log_set_level(net_log_level_t level)
{
    if ((int)level < NET_LOG_TRACE || level > NET_LOG_OFF)
        return;
    atomic_store(&log_level, (int)level);
}

const char *net_log_level_name(net_log_level_t level)
{
    if ((int)level < NET_LOG_TRACE || level > NET_LOG_OFF)
        return "?";
    return level_names[level];
}

int net_log_set_sink(net_log_sink_fn fn, void *arg)
{
    struct sink *s = NULL;
    if (fn) {
        s = net__malloc(sizeof *s);
        if (!s)
            return -ENOMEM;
        s->fn = fn;
        s->arg = arg;
    }
    struct sink *old = atomic_exchange(&log_sink, s);
    struct retired *r = old ? net__malloc(sizeof *r) : NULL;
    if (r) {
        pthread_mutex_lock(&retired_mu);
        *r = (struct retired){old, retired_sinks};
        retired_sinks = r;
        pthread_mutex_unlock(&retired_mu);
    }
    return 0; /* an unrecorded old sink only shows to leak checkers */
}

static size_t format_prefix(char *buf, size_t cap, net_log_level_t level)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, net_log_level_name(level));
    return n > 0 ? (size_t)n : 0;
}

void net_log_v(net_log_level_t level, const char *fmt, va_list ap)
{
    if (level < net_log_level() || level >= NET_LOG_OFF)
        return;
    char line[LINE_MAX_BYTES];
    struct sink *s = atomic_load(&log_sink);
    size_t pre = s ? 0 : format_prefix(line, sizeof line, level);
    int n = vsnprintf(line + pre, sizeof line - pre, fmt, ap);
    if (n < 0)
        return;
    size_t len = pre + (size_t)n;
    if (len > sizeof line - 2)
        len = sizeof line - 2; /* truncated: keep room for '\n' and NUL */
    if (s) {
        line[len] = '\0';
        s->fn(level, line, len, s->arg);
        return;
    }
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w; /* nowhere left to report a failed log write */
}

void net_log(net_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    net_log_v(level, fmt, ap);
    va_end(ap);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

bool net__log_rl_allow(struct net__log_rl *rl, uint64_t *dropped)
{
    uint64_t now = mono_ms();
    uint64_t start = atomic_load(&rl->window_start_ms);
    if (now - start >= NET__LOG_WINDOW_MS &&
        atomic_compare_exchange_strong(&rl->window_start_ms, &start, now)) {
        /* This thread opened the new window: it reports the old one's drops. */
        atomic_store(&rl->in_window, 0);
        *dropped = atomic_exchange(&rl->suppressed, 0);
    }
    if (atomic_fetch_add(&rl->in_window, 1) < NET__LOG_BURST)
        return true;
    atomic_fetch_add(&rl->suppressed, 1);
    return false;
}
