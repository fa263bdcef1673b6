/* Signals through a signalfd, so handlers run as ordinary loop callbacks. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <net/signal.h>

#include "loop/alloc_internal.h"
#include "loop/log_internal.h"
#include "loop/loop_internal.h"

#define SIGNALS_MAX 16

struct net_signal {
    struct net__channel ch;
    net_loop_t *loop;
    net_signal_fn fn;
    void *arg;
};

static void signal_event_cb(struct net__channel *ch, unsigned revents)
{
    (void)revents;
    net_signal_t *s = net__container_of(ch, net_signal_t, ch);
    struct signalfd_siginfo info;
    /* One signal per event: the callback may free s, and level-triggering
     * brings us back for the next one. */
    ssize_t n = read(ch->fd, &info, sizeof info);
    if (n == (ssize_t)sizeof info)
        s->fn(s, (int)info.ssi_signo, s->arg);
}

static int signal_open(const int *signals, size_t n)
{
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < n; i++)
        if (sigaddset(&set, signals[i]) < 0)
            return -EINVAL;
    int rc = pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (rc)
        return -rc;
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
        return rc;
    }
    return fd;
}

int net_signal_new(net_loop_t *loop, const int *signals, size_t n, net_signal_fn fn,
                   void *arg, net_signal_t **out)
{
    if (!loop || !signals || n == 0 || n > SIGNALS_MAX || !fn || !out)
        return -EINVAL;
    if (!net_loop_in_loop_thread(loop))
        return NET_EWRONGTHREAD;
    net_signal_t *s = net__malloc(sizeof *s);
    if (!s)
        return -ENOMEM;
    int fd = signal_open(signals, n);
    if (fd < 0) {
        net__free(s);
        return fd;
    }
    *s = (net_signal_t){.loop = loop, .fn = fn, .arg = arg};
    net__channel_init(&s->ch, fd, signal_event_cb);
    s->ch.interest = NET_READABLE;
    int rc = net__loop_add_channel(loop, &s->ch);
    if (rc < 0) {
        close(fd);
        net__free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int net_signal_free(net_signal_t *s)
{
    if (!s)
        return 0;
    if (!net_loop_in_loop_thread(s->loop))
        return NET_EWRONGTHREAD;
    net__loop_remove_channel(s->loop, &s->ch);
    close(s->ch.fd);
    net__free(s);
    return 0;
}

static void quit_on_signal_cb(net_signal_t *s, int signo, void *arg)
{
    (void)s;
    NET__LOG(NET_LOG_INFO, "signal %d: stopping the loop", signo);
    net_loop_quit(arg);
}

int net_signal_quit_on_term(net_loop_t *loop, net_signal_t **out)
{
    static const int term[] = {SIGINT, SIGTERM};
    return net_signal_new(loop, term, 2, quit_on_signal_cb, loop, out);
}
