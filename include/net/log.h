/* netloop — logging.
 *
 * A small leveled logger. Messages go to stderr as one line each
 * ("2026-11-23T10:00:00.123Z WARN  text") unless a sink is installed. The
 * level starts from the environment variable NETLOOP_LOG (trace, debug, info,
 * warn, error, off; default warn) and can be changed with
 * net_log_set_level().
 *
 * The library rate-limits its own repeating error lines (a descriptor
 * shortage, a peer sending garbage over and over): each call site prints at
 * most a burst of lines per second and then one summary line with the count
 * it suppressed, so a log can never flood a disk.
 *
 * What the library logs: an error it also hands back to the caller (a
 * return value, a failure callback, a status) only at debug, since the
 * caller decides what it means; WARN and ERROR only for what no caller can
 * see (a connection closed for a limit, a loop thread whose poller broke, a
 * timerfd that could not be armed). */
#ifndef NET_LOG_H
#define NET_LOG_H

#include <stdarg.h>
#include <stddef.h>

#include <net/error.h>
#include <net/export.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum net_log_level {
    NET_LOG_TRACE = 0,
    NET_LOG_DEBUG = 1,
    NET_LOG_INFO = 2,
    NET_LOG_WARN = 3,
    NET_LOG_ERROR = 4,
    NET_LOG_OFF = 5,
} net_log_level_t;

/* Receives one formatted message (no trailing newline, NUL-terminated, len
 * bytes). May be called from any thread, concurrently: a sink must be
 * thread-safe. msg is valid only during the call. */
typedef void (*net_log_sink_fn)(net_log_level_t level, const char *msg, size_t len,
                                void *arg);

/* Sets the minimum level that is emitted; a value outside NET_LOG_TRACE ..
 * NET_LOG_OFF is ignored. Thread-safe. */
NET_EXPORT void net_log_set_level(net_log_level_t level);

/* The current minimum level. Thread-safe. */
NET_EXPORT net_log_level_t net_log_level(void);

/* Installs a sink (NULL restores stderr). arg is passed back to fn and stays
 * owned by the caller; it must outlive any logging. Returns 0, or -ENOMEM
 * (the previous sink stays). Thread-safe, but a message being written
 * concurrently may still reach the previous sink. */
NET_EXPORT int net_log_set_sink(net_log_sink_fn fn, void *arg);

/* Formats and emits a message at `level` if enabled. Thread-safe. */
NET_EXPORT void net_log(net_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* va_list twin of net_log(). Thread-safe. */
NET_EXPORT void net_log_v(net_log_level_t level, const char *fmt, va_list ap);

/* Name of a level ("WARN"), or "?" for an unknown value. Thread-safe. */
NET_EXPORT const char *net_log_level_name(net_log_level_t level);

#ifdef __cplusplus
}
#endif

#endif
