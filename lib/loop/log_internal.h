/* Internal logging macros. NET__LOG_RL is the rate-limited form for errors
 * that can repeat without bound (EMFILE, a peer sending garbage): each call
 * site keeps its own budget, so one noisy site cannot silence another. */
#ifndef NET__LOG_INTERNAL_H
#define NET__LOG_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <net/log.h>

/* Lines a call site may print per window before it goes quiet. */
#define NET__LOG_BURST 10
#define NET__LOG_WINDOW_MS 1000

struct net__log_rl {
    _Atomic uint64_t window_start_ms;
    _Atomic uint32_t in_window;
    _Atomic uint64_t suppressed;
};

/* True if the site may print now; when a new window opens and lines were
 * dropped in the old one, *dropped says how many (to mention in the line). */
bool net__log_rl_allow(struct net__log_rl *rl, uint64_t *dropped);

#define NET__LOG(level, ...)                                                  \
    do {                                                                      \
        if ((level) >= net_log_level())                                       \
            net_log((level), __VA_ARGS__);                                    \
    } while (0)

/* ISO C wants an argument for every "...": the 0 appended here, which
 * "%.0d" prints as nothing, lets a bare format through without GNU's
 * ", ##__VA_ARGS__". */
#define NET__LOG_RL(level, ...) NET__LOG_RL_(level, __VA_ARGS__, 0)
#define NET__LOG_RL_(level, fmt, ...)                                         \
    do {                                                                      \
        static struct net__log_rl net__rl_;                                   \
        uint64_t net__dropped_ = 0;                                           \
        if ((level) >= net_log_level() &&                                     \
            net__log_rl_allow(&net__rl_, &net__dropped_)) {                   \
            if (net__dropped_)                                                \
                net_log((level), fmt "%.0d (%llu similar lines suppressed)",  \
                        __VA_ARGS__, (unsigned long long)net__dropped_);      \
            else                                                              \
                net_log((level), fmt "%.0d", __VA_ARGS__);                    \
        }                                                                     \
    } while (0)

#endif
