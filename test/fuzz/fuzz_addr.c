/* Fuzz target: net_addr_parse() and net_addr_format() (lib/addr.c).
 *
 * The input is the text to parse (up to its first NUL byte). Whatever it
 * is, a failed parse must leave the output alone and return one of the
 * documented errors. An address that parses must be well formed, carry the
 * port written in the text, format into a string that parses back to the
 * same address byte for byte (include/net/addr.h promises this round trip
 * for everything net_addr_parse() accepts), format the same way again, and
 * come out equal from the other constructors (net_addr_from_ipv4/ipv6/unix,
 * net_addr_from_sockaddr) given the same pieces. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include <net/addr.h>

#include "fuzz.h"

#define MAX_TEXT 1024

static bool same_bytes(const net_addr_t *a, const net_addr_t *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

static void check_error(const char *text, int rc, const net_addr_t *out,
                        const net_addr_t *untouched)
{
    FUZZ_CHECK(same_bytes(out, untouched));
    bool unix_text = strncmp(text, "unix:", 5) == 0;
    bool scoped = !unix_text && text[0] == '[' && strchr(text, '%');
    if (rc == -EINVAL)
        return;
    if (rc == -ENAMETOOLONG) {
        FUZZ_CHECK(unix_text);
        return;
    }
    /* -ENODEV, or the errno of the interface lookup (e.g. -EMFILE) */
    FUZZ_CHECK(scoped);
}

static void check_shape(const net_addr_t *a)
{
    switch (net_addr_family(a)) {
    case AF_INET: FUZZ_CHECK(net_addr_len(a) == sizeof(struct sockaddr_in)); break;
    case AF_INET6: FUZZ_CHECK(net_addr_len(a) == sizeof(struct sockaddr_in6)); break;
    case AF_UNIX:
        /* never the unnamed address: parse refuses "unix:" */
        FUZZ_CHECK(net_addr_len(a) > offsetof(struct sockaddr_un, sun_path) + 1);
        FUZZ_CHECK(net_addr_len(a) <= sizeof(struct sockaddr_un));
        break;
    default: FUZZ_CHECK(!"parse gave an address of no family");
    }
}

/* The port is the decimal number after the text's last colon. */
static void check_port(const char *text, const net_addr_t *a)
{
    if (net_addr_family(a) == AF_UNIX) {
        FUZZ_CHECK(strncmp(text, "unix:", 5) == 0);
        FUZZ_CHECK(net_addr_port(a) == -EAFNOSUPPORT);
        return;
    }
    unsigned long port = 0;
    for (const char *p = strrchr(text, ':') + 1; *p; p++) {
        FUZZ_CHECK(*p >= '0' && *p <= '9');
        port = port * 10 + (unsigned long)(*p - '0');
        FUZZ_CHECK(port <= 65535);
    }
    FUZZ_CHECK(net_addr_port(a) == (int)port);
}

/* format must fit exactly in n + 1 bytes and refuse anything smaller whole. */
static int checked_format(const net_addr_t *a, char *buf)
{
    int n = net_addr_format(a, buf, NET_ADDR_STRLEN);
    FUZZ_CHECK(n > 0 && n < NET_ADDR_STRLEN && strlen(buf) == (size_t)n);
    char small[NET_ADDR_STRLEN];
    memset(small, 'x', sizeof small);
    FUZZ_CHECK(net_addr_format(a, small, (size_t)n) == -ENOSPC && small[0] == '\0');
    FUZZ_CHECK(net_addr_format(a, small, 0) == -ENOSPC && small[0] == '\0');
    FUZZ_CHECK(net_addr_format(a, small, (size_t)n + 1) == n && strcmp(small, buf) == 0);
    return n;
}

static void check_round_trip(const net_addr_t *a)
{
    char text[NET_ADDR_STRLEN], again[NET_ADDR_STRLEN];
    net_addr_t b;
    checked_format(a, text);
    FUZZ_CHECK(net_addr_parse(&b, text) == 0);
    FUZZ_CHECK(same_bytes(a, &b));
    FUZZ_CHECK(net_addr_equal(a, &b) && net_addr_equal(&b, a));
    checked_format(&b, again);
    FUZZ_CHECK(strcmp(text, again) == 0);
}

/* The same pieces through the other constructors give the same bytes. */
static void check_constructors(const char *text, const net_addr_t *a)
{
    net_addr_t b;
    FUZZ_CHECK(net_addr_from_sockaddr(&b, net_addr_sockaddr(a), net_addr_len(a)) == 0);
    FUZZ_CHECK(same_bytes(a, &b));
    if (net_addr_family(a) == AF_UNIX) {
        FUZZ_CHECK(net_addr_from_unix(&b, text + 5) == 0 && same_bytes(a, &b));
        return;
    }
    char host[MAX_TEXT];
    const char *colon = net_addr_family(a) == AF_INET ? strchr(text, ':') : strrchr(text, ']');
    bool v6 = net_addr_family(a) == AF_INET6;
    size_t start = v6 ? 1 : 0, n = (size_t)(colon - text) - start;
    memcpy(host, text + start, n);
    host[n] = '\0';
    uint16_t port = (uint16_t)net_addr_port(a);
    int rc = v6 ? net_addr_from_ipv6(&b, host, port) : net_addr_from_ipv4(&b, host, port);
    FUZZ_CHECK(rc == 0 && same_bytes(a, &b));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[MAX_TEXT + 1];
    net_addr_t out, untouched;
    if (size > MAX_TEXT)
        size = MAX_TEXT;
    memcpy(text, data, size);
    text[size] = '\0';
    memset(&untouched, 0x5A, sizeof untouched);
    memcpy(&out, &untouched, sizeof out);
    int rc = net_addr_parse(&out, text);
    if (rc < 0) {
        check_error(text, rc, &out, &untouched);
        return 0;
    }
    FUZZ_CHECK(rc == 0);
    check_shape(&out);
    check_port(text, &out);
    check_round_trip(&out);
    check_constructors(text, &out);
    return 0;
}
