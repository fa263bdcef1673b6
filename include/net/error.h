/* netloop — errors.
 *
 * Every fallible function returns 0 (or a non-negative value where stated) on
 * success and a negative errno on failure, e.g. -EINVAL, -ENOMEM, -ENOTCONN.
 * A few outcomes that errno has no name for use the library codes below; they
 * lie far outside the errno range so the two never collide. */
#ifndef NET_ERROR_H
#define NET_ERROR_H

#include <errno.h>

#include <net/export.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    NET_ERR_BASE = 10000,
    /* A second event loop was requested on a thread that already has one. */
    NET_ELOOPEXISTS = -(NET_ERR_BASE + 1),
    /* The operation must run on the loop's own thread and was called elsewhere. */
    NET_EWRONGTHREAD = -(NET_ERR_BASE + 2),
    /* A TCP client connected to itself (same local and peer address). */
    NET_ESELFCONNECT = -(NET_ERR_BASE + 3),
    /* The operation was cancelled before it completed (stop, close). */
    NET_ECANCELLED = -(NET_ERR_BASE + 4),
};

/* Text for an error code: a negative errno or one of the NET_E* codes above
 * (a positive errno is accepted too). Never returns NULL; unknown codes give
 * "unknown error". The string is static: do not free it.
 * Thread-safe. */
NET_EXPORT const char *net_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif
