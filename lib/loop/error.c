/* One table for the library's own codes; everything else is an errno. */
#include <errno.h>
#include <string.h>

#include <net/error.h>

static const char *const net_codes[] = {
    [-(NET_ELOOPEXISTS + NET_ERR_BASE)] = "this thread already has an event loop",
    [-(NET_EWRONGTHREAD + NET_ERR_BASE)] = "called from a thread other than the loop's",
    [-(NET_ESELFCONNECT + NET_ERR_BASE)] = "TCP self-connect (local and peer address are the same)",
    [-(NET_ECANCELLED + NET_ERR_BASE)] = "operation cancelled",
};

const char *net_strerror(int err)
{
    /* Negated in unsigned arithmetic: -INT_MIN would overflow. */
    unsigned u = err < 0 ? 0u - (unsigned)err : (unsigned)err;
    if (u > NET_ERR_BASE) {
        unsigned i = u - NET_ERR_BASE;
        if (i < sizeof net_codes / sizeof net_codes[0] && net_codes[i])
            return net_codes[i];
        return "unknown error";
    }
    if (u == 0)
        return "success";
    if (u > 4095)
        return "unknown error";
    err = (int)u;
    /* strerrordesc_np (glibc >= 2.32) returns static text and is thread-safe,
     * unlike strerror(). */
    const char *s = strerrordesc_np(err);
    return s ? s : "unknown error";
}
