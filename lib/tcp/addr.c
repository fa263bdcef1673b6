/* Socket addresses: text <-> sockaddr, without DNS (except net_addr_resolve).
 *
 * Every constructor builds into a zeroed local net_addr_t and copies it out
 * only on success. That gives the two properties the header promises: a
 * failed call leaves the caller's address alone, and equal addresses are
 * equal byte for byte (no stale padding), which makes the parse/format
 * round trip testable with memcmp. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <net/if.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <net/addr.h>

#define UNIX_PATH_OFF offsetof(struct sockaddr_un, sun_path)
#define SUN_PATH_SIZE sizeof(((struct sockaddr_un *)0)->sun_path)

_Static_assert(NET_ADDR_UNIX_MAX + 1 == SUN_PATH_SIZE, "sun_path size changed");
_Static_assert(sizeof "unix:@" - 1 + 2 * NET_ADDR_UNIX_MAX + 1 <= NET_ADDR_STRLEN,
               "NET_ADDR_STRLEN too small for an escaped abstract name");
_Static_assert(sizeof "[%4294967295]:65535" + INET6_ADDRSTRLEN <= NET_ADDR_STRLEN,
               "NET_ADDR_STRLEN too small for IPv6 with scope");

static void commit(net_addr_t *out, const net_addr_t *tmp)
{
    /* memcpy, not assignment: assignment need not copy padding bytes. */
    memcpy(out, tmp, sizeof *out);
}

/* ---- Small text helpers ------------------------------------------------ */

/* Copies n bytes of s as a C string; false when it does not fit. */
static bool copy_span(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap)
        return false;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return true;
}

static bool all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return n > 0;
}

/* Plain decimal only: strtoul would also take "+1", " 1" and, with base 0,
 * "0x1" -- all of which in a config file are more likely typos. */
static int parse_decimal(const char *s, size_t n, unsigned long max, unsigned long *out)
{
    unsigned long v = 0;
    if (!all_digits(s, n))
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        v = v * 10 + (unsigned long)(s[i] - '0');
        if (v > max) /* checked every digit, so v never overflows */
            return -EINVAL;
    }
    *out = v;
    return 0;
}

static int parse_port(const char *s, uint16_t *port)
{
    unsigned long v;
    int rc = parse_decimal(s, strlen(s), 65535, &v);
    if (rc == 0)
        *port = (uint16_t)v;
    return rc;
}

/* ---- IPv4 -------------------------------------------------------------- */

static void fill_in4(net_addr_t *a, struct in_addr ip, uint16_t port)
{
    memset(a, 0, sizeof *a);
    a->u.in4.sin_family = AF_INET;
    a->u.in4.sin_port = htons(port);
    a->u.in4.sin_addr = ip;
    a->len = sizeof a->u.in4;
}

/* inet_pton, not inet_aton: it takes only four decimal parts, where
 * inet_aton would read "1.2.3" or "010.0.0.1" (octal) without complaint. */
static int ipv4_from_span(struct in_addr *ip, const char *s, size_t n)
{
    char buf[INET_ADDRSTRLEN];
    if (!copy_span(buf, sizeof buf, s, n))
        return -EINVAL;
    if (strcasecmp(buf, "localhost") == 0) {
        ip->s_addr = htonl(INADDR_LOOPBACK);
        return 0;
    }
    if (strcmp(buf, "*") == 0) {
        ip->s_addr = htonl(INADDR_ANY);
        return 0;
    }
    return inet_pton(AF_INET, buf, ip) == 1 ? 0 : -EINVAL;
}

/* "host:port". The first colon splits, so an unbracketed IPv6 address fails
 * in the host part instead of being split at a guess. */
static int parse_ipv4(net_addr_t *a, const char *text)
{
    const char *colon = strchr(text, ':');
    struct in_addr ip;
    uint16_t port = 0; /* set by parse_port; gcc -O2 cannot see that */
    if (!colon || ipv4_from_span(&ip, text, (size_t)(colon - text)) < 0 ||
        parse_port(colon + 1, &port) < 0)
        return -EINVAL;
    fill_in4(a, ip, port);
    return 0;
}

/* ---- IPv6 -------------------------------------------------------------- */

static void fill_in6(net_addr_t *a, const struct in6_addr *ip, uint32_t scope,
                     uint16_t port)
{
    memset(a, 0, sizeof *a);
    a->u.in6.sin6_family = AF_INET6;
    a->u.in6.sin6_port = htons(port);
    a->u.in6.sin6_addr = *ip;
    a->u.in6.sin6_scope_id = scope;
    a->len = sizeof a->u.in6;
}

/* Digits are an interface index (as in glibc's getaddrinfo); anything else
 * names an interface. if_nametoindex is an ioctl, not a network lookup. */
static int scope_from_span(uint32_t *scope, const char *s, size_t n)
{
    char name[IF_NAMESIZE];
    unsigned long v;
    if (all_digits(s, n)) {
        if (parse_decimal(s, n, UINT32_MAX, &v) < 0)
            return -EINVAL;
        *scope = (uint32_t)v;
        return 0;
    }
    if (n == 0)
        return -EINVAL;
    if (!copy_span(name, sizeof name, s, n))
        return -ENODEV; /* longer than any interface name can be */
    unsigned idx = if_nametoindex(name);
    if (idx == 0)
        return (errno == ENODEV || errno == 0) ? -ENODEV : -errno;
    *scope = idx;
    return 0;
}

/* "addr" or "addr%scope", n bytes, no brackets. */
static int ipv6_from_span(struct in6_addr *ip, uint32_t *scope, const char *s, size_t n)
{
    char buf[INET6_ADDRSTRLEN];
    const char *pct = memchr(s, '%', n);
    size_t alen = pct ? (size_t)(pct - s) : n;
    *scope = 0;
    if (!copy_span(buf, sizeof buf, s, alen) || inet_pton(AF_INET6, buf, ip) != 1)
        return -EINVAL;
    return pct ? scope_from_span(scope, pct + 1, n - alen - 1) : 0;
}

/* "[addr]:port", text starting after the '['. The port is checked first so
 * that malformed text never costs an interface lookup. */
static int parse_ipv6(net_addr_t *a, const char *text)
{
    const char *rb = strchr(text, ']');
    struct in6_addr ip;
    uint32_t scope;
    uint16_t port = 0; /* set by parse_port; gcc -O2 cannot see that */
    if (!rb || rb[1] != ':' || parse_port(rb + 2, &port) < 0)
        return -EINVAL;
    int rc = ipv6_from_span(&ip, &scope, text, (size_t)(rb - text));
    if (rc < 0)
        return rc;
    fill_in6(a, &ip, scope, port);
    return 0;
}

/* ---- Unix -------------------------------------------------------------- */

static void init_un(net_addr_t *a)
{
    memset(a, 0, sizeof *a);
    a->u.un.sun_family = AF_UNIX;
    a->len = UNIX_PATH_OFF;
}

/* Bytes of sun_path that make up the name: up to the NUL for a path, all
 * of them for an abstract name (which may contain NULs), 0 when unnamed.
 * Clamped so that a hand-filled len can never make us read past sun_path. */
static size_t unix_name_len(const net_addr_t *a)
{
    size_t n = a->len > UNIX_PATH_OFF ? a->len - UNIX_PATH_OFF : 0;
    if (n > SUN_PATH_SIZE)
        n = SUN_PATH_SIZE;
    if (n > 0 && a->u.un.sun_path[0] != '\0')
        n = strnlen(a->u.un.sun_path, n);
    return n;
}

/* Abstract names may hold any byte, NUL included. The text escapes NUL as
 * "\0" and the backslash as "\\", so every name has exactly one text. */
static int unescape_abstract(char *dst, size_t cap, const char *s, size_t *len)
{
    size_t n = 0;
    for (; *s; s++) {
        char c = *s;
        if (c == '\\') {
            c = *++s;
            if (c == '0')
                c = '\0';
            else if (c != '\\')
                return -EINVAL; /* also a lone backslash at the end */
        }
        if (n == cap)
            return -ENAMETOOLONG;
        dst[n++] = c;
    }
    *len = n;
    return 0;
}

static int fill_abstract(net_addr_t *a, const char *name)
{
    size_t n;
    init_un(a);
    /* sun_path[0] stays 0: that byte is what makes the name abstract. */
    int rc = unescape_abstract(a->u.un.sun_path + 1, NET_ADDR_UNIX_MAX, name, &n);
    if (rc < 0)
        return rc;
    if (n == 0)
        return -EINVAL;
    a->len = (socklen_t)(UNIX_PATH_OFF + 1 + n);
    return 0;
}

/* len counts the path's NUL: that is what getsockname reports on Linux, so
 * a parsed path and the kernel's copy of it are byte-identical. */
static int fill_path(net_addr_t *a, const char *path)
{
    size_t n = strlen(path);
    if (n == 0)
        return -EINVAL;
    if (n > NET_ADDR_UNIX_MAX)
        return -ENAMETOOLONG;
    init_un(a);
    memcpy(a->u.un.sun_path, path, n + 1);
    a->len = (socklen_t)(UNIX_PATH_OFF + n + 1);
    return 0;
}

static int fill_unix(net_addr_t *a, const char *path)
{
    return path[0] == '@' ? fill_abstract(a, path + 1) : fill_path(a, path);
}

/* ---- Constructors ------------------------------------------------------ */

int net_addr_parse(net_addr_t *out, const char *text)
{
    net_addr_t tmp;
    int rc;
    if (!out || !text)
        return -EINVAL;
    if (strncmp(text, "unix:", 5) == 0)
        rc = fill_unix(&tmp, text + 5);
    else if (text[0] == '[')
        rc = parse_ipv6(&tmp, text + 1);
    else
        rc = parse_ipv4(&tmp, text);
    if (rc == 0)
        commit(out, &tmp);
    return rc;
}

int net_addr_from_ipv4(net_addr_t *out, const char *ip, uint16_t port)
{
    struct in_addr in;
    net_addr_t tmp;
    if (!out || !ip || ipv4_from_span(&in, ip, strlen(ip)) < 0)
        return -EINVAL;
    fill_in4(&tmp, in, port);
    commit(out, &tmp);
    return 0;
}

int net_addr_from_ipv6(net_addr_t *out, const char *ip, uint16_t port)
{
    struct in6_addr in;
    uint32_t scope;
    net_addr_t tmp;
    if (!out || !ip)
        return -EINVAL;
    int rc = ipv6_from_span(&in, &scope, ip, strlen(ip));
    if (rc < 0)
        return rc;
    fill_in6(&tmp, &in, scope, port);
    commit(out, &tmp);
    return 0;
}

int net_addr_from_unix(net_addr_t *out, const char *path)
{
    net_addr_t tmp;
    if (!out || !path)
        return -EINVAL;
    int rc = fill_unix(&tmp, path);
    if (rc == 0)
        commit(out, &tmp);
    return rc;
}

/* ---- From the kernel's sockaddr ---------------------------------------- */

/* The source is copied into a typed local first: sa may point into any
 * buffer (sockaddr_storage, a char array), and memcpy is alignment- and
 * aliasing-safe. Rebuilding through fill_in4/fill_in6 drops sin_zero and
 * the flow label, which are not part of the endpoint's identity. */
static int copy_in4(net_addr_t *a, const struct sockaddr *sa, socklen_t len)
{
    struct sockaddr_in in;
    if (len < sizeof in)
        return -EINVAL;
    memcpy(&in, sa, sizeof in);
    fill_in4(a, in.sin_addr, ntohs(in.sin_port));
    return 0;
}

static int copy_in6(net_addr_t *a, const struct sockaddr *sa, socklen_t len)
{
    struct sockaddr_in6 in6;
    if (len < sizeof in6)
        return -EINVAL;
    memcpy(&in6, sa, sizeof in6);
    fill_in6(a, &in6.sin6_addr, in6.sin6_scope_id, ntohs(in6.sin6_port));
    return 0;
}

/* For AF_UNIX the length carries meaning: OFF alone is the unnamed address;
 * a leading NUL makes the rest (exactly len - OFF - 1 bytes) an abstract
 * name; otherwise the path ends at its first NUL or at len, whichever comes
 * first, and is stored NUL-terminated with len recomputed. */
static int copy_un(net_addr_t *a, const struct sockaddr *sa, socklen_t len)
{
    if (len < UNIX_PATH_OFF || len > sizeof(struct sockaddr_un))
        return -EINVAL;
    const char *path = (const char *)sa + UNIX_PATH_OFF;
    size_t n = len - UNIX_PATH_OFF;
    init_un(a);
    if (n > 0 && path[0] == '\0') {
        memcpy(a->u.un.sun_path, path, n);
        a->len = len;
        return 0;
    }
    n = strnlen(path, n);
    if (n > NET_ADDR_UNIX_MAX)
        return -ENAMETOOLONG;
    memcpy(a->u.un.sun_path, path, n);
    if (n > 0)
        a->len = (socklen_t)(UNIX_PATH_OFF + n + 1);
    return 0;
}

int net_addr_from_sockaddr(net_addr_t *out, const struct sockaddr *sa, socklen_t len)
{
    net_addr_t tmp;
    sa_family_t family;
    int rc;
    if (!out || !sa || len < sizeof family)
        return -EINVAL;
    memcpy(&family, &sa->sa_family, sizeof family);
    switch (family) {
    case AF_INET: rc = copy_in4(&tmp, sa, len); break;
    case AF_INET6: rc = copy_in6(&tmp, sa, len); break;
    case AF_UNIX: rc = copy_un(&tmp, sa, len); break;
    default: return -EAFNOSUPPORT;
    }
    if (rc == 0)
        commit(out, &tmp);
    return rc;
}

/* ---- Formatting ---------------------------------------------------------- */

/* Each writer fills buf (NET_ADDR_STRLEN bytes, always enough, see the
 * static asserts) and returns the length; net_addr_format then copies out
 * whole or not at all. */

static int format_in4(const struct sockaddr_in *in, char *buf)
{
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
    return snprintf(buf, NET_ADDR_STRLEN, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
}

/* The scope is written as a number: names can be renamed or vanish, and
 * if_indextoname would cost a syscall per log line. */
static int format_in6(const struct sockaddr_in6 *in6, char *buf)
{
    char ip[INET6_ADDRSTRLEN];
    unsigned port = ntohs(in6->sin6_port);
    inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
    if (in6->sin6_scope_id)
        return snprintf(buf, NET_ADDR_STRLEN, "[%s%%%" PRIu32 "]:%u", ip,
                        in6->sin6_scope_id, port);
    return snprintf(buf, NET_ADDR_STRLEN, "[%s]:%u", ip, port);
}

static int format_abstract(const char *name, size_t n, char *buf)
{
    char *o = buf + sprintf(buf, "unix:@");
    for (size_t i = 0; i < n; i++) {
        if (name[i] == '\0' || name[i] == '\\')
            *o++ = '\\';
        *o++ = name[i] == '\0' ? '0' : name[i];
    }
    *o = '\0';
    return (int)(o - buf);
}

static int format_un(const net_addr_t *a, char *buf)
{
    size_t n = unix_name_len(a);
    const char *p = a->u.un.sun_path;
    if (n > 0 && p[0] == '\0')
        return format_abstract(p + 1, n - 1, buf);
    return snprintf(buf, NET_ADDR_STRLEN, "unix:%.*s", (int)n, p);
}

static int format_any(const net_addr_t *a, char *buf)
{
    switch (a->u.sa.sa_family) {
    case AF_INET:
        return a->len < sizeof a->u.in4 ? -EINVAL : format_in4(&a->u.in4, buf);
    case AF_INET6:
        return a->len < sizeof a->u.in6 ? -EINVAL : format_in6(&a->u.in6, buf);
    case AF_UNIX:
        if (a->len < UNIX_PATH_OFF || a->len > sizeof a->u.un)
            return -EINVAL;
        return format_un(a, buf);
    default:
        return -EAFNOSUPPORT;
    }
}

int net_addr_format(const net_addr_t *addr, char *dst, size_t cap)
{
    char buf[NET_ADDR_STRLEN];
    int n = addr ? format_any(addr, buf) : -EINVAL;
    if (n >= 0 && (size_t)n >= cap)
        n = -ENOSPC;
    if (n < 0) {
        if (cap > 0)
            dst[0] = '\0';
        return n;
    }
    memcpy(dst, buf, (size_t)n + 1);
    return n;
}

/* ---- Accessors ------------------------------------------------------------- */

const struct sockaddr *net_addr_sockaddr(const net_addr_t *addr)
{
    return &addr->u.sa;
}

socklen_t net_addr_len(const net_addr_t *addr)
{
    return addr->len;
}

int net_addr_family(const net_addr_t *addr)
{
    return addr->u.sa.sa_family;
}

int net_addr_port(const net_addr_t *addr)
{
    switch (addr->u.sa.sa_family) {
    case AF_INET: return ntohs(addr->u.in4.sin_port);
    case AF_INET6: return ntohs(addr->u.in6.sin6_port);
    default: return -EAFNOSUPPORT;
    }
}

int net_addr_set_port(net_addr_t *addr, uint16_t port)
{
    switch (addr->u.sa.sa_family) {
    case AF_INET: addr->u.in4.sin_port = htons(port); return 0;
    case AF_INET6: addr->u.in6.sin6_port = htons(port); return 0;
    default: return -EAFNOSUPPORT;
    }
}

/* Compared field by field rather than with memcmp, so that an address the
 * caller filled by hand (with stray padding) still compares correctly. */
bool net_addr_equal(const net_addr_t *a, const net_addr_t *b)
{
    if (a->u.sa.sa_family != b->u.sa.sa_family)
        return false;
    switch (a->u.sa.sa_family) {
    case AF_INET:
        return a->u.in4.sin_port == b->u.in4.sin_port &&
               a->u.in4.sin_addr.s_addr == b->u.in4.sin_addr.s_addr;
    case AF_INET6:
        return a->u.in6.sin6_port == b->u.in6.sin6_port &&
               a->u.in6.sin6_scope_id == b->u.in6.sin6_scope_id &&
               memcmp(&a->u.in6.sin6_addr, &b->u.in6.sin6_addr, sizeof(struct in6_addr)) == 0;
    case AF_UNIX: {
        size_t n = unix_name_len(a);
        return n == unix_name_len(b) && memcmp(a->u.un.sun_path, b->u.un.sun_path, n) == 0;
    }
    default:
        return a->len == b->len; /* both "no address" */
    }
}

/* ---- Blocking resolver ------------------------------------------------------ */

static int gai_to_errno(int rc)
{
    switch (rc) {
    case EAI_NONAME:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY:
#endif
        return -ENOENT;
    case EAI_AGAIN: return -EAGAIN;
    case EAI_MEMORY: return -ENOMEM;
    case EAI_SYSTEM: return errno > 0 ? -errno : -EIO;
    default: return -EIO; /* EAI_FAIL and codes our hints cannot cause */
    }
}

/* SOCK_STREAM in the hints only deduplicates: without a socket type
 * getaddrinfo returns each address once per type. No AI_ADDRCONFIG: it
 * ignores loopback, so on a host with only loopback configured even
 * "localhost" would fail. */
int net_addr_resolve(net_addr_t *out, const char *host, uint16_t port, int family)
{
    struct addrinfo hints, *res;
    net_addr_t tmp;
    if (!out || !host || !*host)
        return -EINVAL;
    if (family != AF_UNSPEC && family != AF_INET && family != AF_INET6)
        return -EINVAL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0)
        return gai_to_errno(rc);
    rc = net_addr_from_sockaddr(&tmp, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (rc < 0)
        return rc;
    net_addr_set_port(&tmp, port);
    commit(out, &tmp);
    return 0;
}
