/* netloop — socket addresses.
 *
 * net_addr_t is a small value type holding one IPv4, IPv6 or Unix domain
 * socket address, ready to hand to bind(2), connect(2) and sendto(2) through
 * net_addr_sockaddr() and net_addr_len(). Copy it freely (memcpy or plain
 * assignment); it owns no memory.
 *
 * Text forms, used by net_addr_parse() and produced by net_addr_format():
 *
 *   1.2.3.4:80          IPv4, dotted decimal with exactly four parts
 *   localhost:80        the name "localhost" (any case) means 127.0.0.1
 *   *:80                the IPv4 any-address, same as 0.0.0.0:80
 *   [::1]:80            IPv6, always in brackets
 *   [fe80::1%2]:80      IPv6 with a scope id (interface index); on input the
 *                       interface may also be named: [fe80::1%eth0]:80
 *   unix:/run/x.sock    Unix domain socket at a path (relative paths work too)
 *   unix:@name          Linux abstract Unix socket "name" (no file)
 *
 * Parsing never blocks and never asks DNS: any host other than the forms
 * above is -EINVAL. Use net_addr_resolve() (blocking) for host names.
 *
 * Dual stack: a listener bound to [::]:port also accepts IPv4 peers (they
 * appear as [::ffff:a.b.c.d]:port) unless the listener's options ask for
 * IPV6_V6ONLY; that choice belongs to the listener, not to the address.
 *
 * Threads: every function here is thread-safe. They only read and write the
 * objects passed in (net_addr_parse() with a named scope and
 * net_addr_resolve() also ask the kernel or the resolver). */
#ifndef NET_ADDR_H
#define NET_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <net/error.h>
#include <net/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One socket address. Fill it only with the net_addr_* functions: they
 * zero every unused byte, so two equal addresses are also equal byte for
 * byte. Reading the fields is fine: u.sa.sa_family is the family, u.in4 /
 * u.in6 / u.un the family's sockaddr (ports and IPv4 addresses in network
 * byte order), len the number of bytes the kernel must read.
 * A zero-filled net_addr_t is "no address" (family AF_UNSPEC, len 0). */
typedef struct net_addr {
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
        struct sockaddr_un un;
        struct sockaddr_storage ss; /* size and alignment for any family */
    } u;
    socklen_t len;
} net_addr_t;

/* Longest Unix path or abstract name, in bytes. A path needs room for its
 * terminating NUL in sun_path (108 bytes on Linux); an abstract name starts
 * after the leading NUL byte. */
#define NET_ADDR_UNIX_MAX 107

/* A buffer of this size holds the text of any address plus its NUL.
 * The longest text is an abstract Unix name of NET_ADDR_UNIX_MAX bytes that
 * all need escaping: "unix:@" + 2 * 107 + NUL = 221. */
#define NET_ADDR_STRLEN 224

/* Parses one of the text forms listed at the top of this file into *out.
 * The port is 0..65535 in plain decimal digits (leading zeros allowed, no
 * sign, no spaces, nothing after it). An IPv6 scope given as digits is an
 * interface index; otherwise it names an interface (looked up with
 * if_nametoindex(), which briefly opens a socket).
 * In an abstract Unix name, "\0" stands for a NUL byte and "\\" for one
 * backslash; any other backslash is an error.
 * Returns 0; -EINVAL for malformed text (including ":80" with no host, IPv6
 * without brackets, "unix:" and "unix:@" with an empty name, NULL
 * arguments); -ENAMETOOLONG when a Unix path or abstract name is longer than
 * NET_ADDR_UNIX_MAX; -ENODEV for an unknown scope interface (or the errno
 * of the lookup, e.g. -EMFILE). On error *out is left unchanged.
 * Thread-safe; text is only read. */
NET_EXPORT int net_addr_parse(net_addr_t *out, const char *text);

/* Builds an IPv4 address from dotted decimal text (exactly as in
 * net_addr_parse(): four parts, "localhost" or "*") and a host-order port.
 * Returns 0 or -EINVAL; on error *out is unchanged.
 * Thread-safe. */
NET_EXPORT int net_addr_from_ipv4(net_addr_t *out, const char *ip, uint16_t port);

/* Builds an IPv6 address from text without brackets ("::1", "fe80::1%2",
 * "fe80::1%lo") and a host-order port. Returns 0, -EINVAL or -ENODEV (unknown
 * scope interface); on error *out is unchanged.
 * Thread-safe. */
NET_EXPORT int net_addr_from_ipv6(net_addr_t *out, const char *ip, uint16_t port);

/* Builds a Unix domain address from a path without the "unix:" prefix. A
 * leading '@' makes the rest an abstract name (escapes as in
 * net_addr_parse()); write "./@x" for a file named "@x". Returns 0, -EINVAL
 * (NULL or empty), or -ENAMETOOLONG; on error *out is unchanged.
 * Thread-safe. */
NET_EXPORT int net_addr_from_unix(net_addr_t *out, const char *path);

/* Copies a sockaddr returned by the kernel (accept, getsockname,
 * getpeername, recvfrom) into *out after checking it: len must cover the
 * family's sockaddr (at least sizeof(struct sockaddr_in) or
 * sockaddr_in6; for AF_UNIX between sizeof(sa_family_t), the unnamed
 * address, and sizeof(struct sockaddr_un)). The copy is normalised: IPv4
 * padding and the IPv6 flow label are dropped, a Unix path ends at its
 * first NUL and len is recomputed.
 * Returns 0; -EINVAL for a NULL pointer or a bad length; -EAFNOSUPPORT for a
 * family other than AF_INET, AF_INET6, AF_UNIX; -ENAMETOOLONG for a Unix path
 * that fills sun_path with no NUL. On error *out is unchanged.
 * Thread-safe; sa is only read. */
NET_EXPORT int net_addr_from_sockaddr(net_addr_t *out, const struct sockaddr *sa,
                                      socklen_t len);

/* Writes the text form into dst (cap bytes): "1.2.3.4:80", "[::1]:80",
 * "[fe80::1%2]:80" (the scope always as a number), "unix:/path",
 * "unix:@name". Two Unix addresses that the kernel can report but that
 * net_addr_parse() rejects on purpose (they are what a missing name turns
 * into) do not parse back: the unnamed address (e.g. the peer of a client
 * that did not bind), written "unix:", and the empty abstract name, written
 * "unix:@". For every other address net_addr_parse(format(a)) gives back a,
 * byte for byte.
 * Returns the length written (without the NUL); -ENOSPC when cap is too
 * small (NET_ADDR_STRLEN is always enough); -EAFNOSUPPORT for an address of
 * no supported family; -EINVAL for a NULL address or an impossible len.
 * Whenever cap > 0, dst is NUL-terminated; on error it is "" (never a
 * truncated address that could be mistaken for another one).
 * Thread-safe. */
NET_EXPORT int net_addr_format(const net_addr_t *addr, char *dst, size_t cap);

/* The sockaddr to pass to bind/connect/sendto, with net_addr_len().
 * Points into *addr: valid as long as addr is. Thread-safe. */
NET_EXPORT const struct sockaddr *net_addr_sockaddr(const net_addr_t *addr);

/* The length to pass with net_addr_sockaddr(); 0 for no address.
 * Thread-safe. */
NET_EXPORT socklen_t net_addr_len(const net_addr_t *addr);

/* AF_INET, AF_INET6, AF_UNIX, or AF_UNSPEC for a zero-filled address.
 * Thread-safe. */
NET_EXPORT int net_addr_family(const net_addr_t *addr);

/* The port in host byte order (0..65535), or -EAFNOSUPPORT for a Unix or
 * empty address. Thread-safe. */
NET_EXPORT int net_addr_port(const net_addr_t *addr);

/* Sets the port (host byte order) of an IPv4 or IPv6 address. Returns 0 or
 * -EAFNOSUPPORT (Unix or empty address, left unchanged). Thread-safe. */
NET_EXPORT int net_addr_set_port(net_addr_t *addr, uint16_t port);

/* True when a and b name the same endpoint: same family and, for IP, same
 * address, port and IPv6 scope id; for Unix, the same path or the same
 * abstract name (a path and an abstract name never match; two unnamed
 * addresses match). An IPv4 address and its IPv4-mapped IPv6 form are
 * different addresses. Thread-safe. */
NET_EXPORT bool net_addr_equal(const net_addr_t *a, const net_addr_t *b);

/* BLOCKING: resolves a host name with getaddrinfo(3), which may query DNS
 * and take seconds. Never call it on a loop thread; it is meant for tools
 * and start-up code. family is AF_INET, AF_INET6 or AF_UNSPEC (either, in
 * the system's preferred order). The first result is stored with the given
 * host-order port. Numeric hosts ("127.0.0.1", "::1") are converted without
 * any lookup.
 * Returns 0; -EINVAL (NULL/empty host, bad family); -ENOENT when the name
 * has no address (of that family); -EAGAIN for a temporary resolver
 * failure; -ENOMEM; -EIO for a permanent resolver failure; or the errno of a
 * failed system call. On error *out is unchanged.
 * Thread-safe. */
NET_EXPORT int net_addr_resolve(net_addr_t *out, const char *host, uint16_t port,
                                int family);

#ifdef __cplusplus
}
#endif

#endif
