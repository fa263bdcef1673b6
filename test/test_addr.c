/* Socket addresses: parsing, formatting, validation, and a bind/getsockname
 * round trip on loopback and Unix sockets. No test does a network lookup:
 * resolver tests use numeric hosts only. */
#include "harness.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <stddef.h>
#include <sys/socket.h>
#include <unistd.h>

#include <net/addr.h>

#define UNIX_OFF offsetof(struct sockaddr_un, sun_path)

/* Same bytes in every field that matters (padding after len excluded). */
static int same_bytes(const net_addr_t *a, const net_addr_t *b)
{
    return a->len == b->len && memcmp(&a->u, &b->u, sizeof a->u) == 0;
}

/* Formats a and checks the exact text. */
static void check_format(const net_addr_t *a, const char *want)
{
    char buf[NET_ADDR_STRLEN];
    int n = net_addr_format(a, buf, sizeof buf);
    if (n < 0 || strcmp(buf, want) != 0)
        net_test_fail(__FILE__, __LINE__, "format gave %d \"%s\", want \"%s\"", n, buf,
                      want);
    CHECK_EQ(n, strlen(want));
}

/* Parses text, which must fail with want_rc and leave the output alone. */
static void check_rejects(const char *text, int want_rc)
{
    net_addr_t a;
    memset(&a, 0xAB, sizeof a);
    net_addr_t before = a;
    int rc = net_addr_parse(&a, text);
    if (rc != want_rc)
        net_test_fail(__FILE__, __LINE__, "parse(\"%s\") = %d, want %d", text ? text : "NULL",
                      rc, want_rc);
    CHECK(same_bytes(&a, &before));
}

static void make_string(char *dst, char c, size_t n)
{
    memset(dst, c, n);
    dst[n] = '\0';
}

/* ---- Parsing ----------------------------------------------------------- */

TEST(addr_parse_ipv4)
{
    net_addr_t a;
    CHECK_OK(net_addr_parse(&a, "1.2.3.4:80"));
    CHECK_EQ(net_addr_family(&a), AF_INET);
    CHECK_EQ(a.u.in4.sin_port, htons(80));
    CHECK_EQ(a.u.in4.sin_addr.s_addr, htonl(0x01020304));
    CHECK_EQ(net_addr_len(&a), sizeof(struct sockaddr_in));
    CHECK(net_addr_sockaddr(&a) == &a.u.sa);
    CHECK_EQ(net_addr_port(&a), 80);

    CHECK_OK(net_addr_parse(&a, "255.255.255.255:65535"));
    CHECK_EQ(a.u.in4.sin_port, htons(65535));
    CHECK_EQ(a.u.in4.sin_addr.s_addr, htonl(0xFFFFFFFF));
    CHECK_OK(net_addr_parse(&a, "10.0.0.1:0"));
    CHECK_EQ(net_addr_port(&a), 0);
    CHECK_OK(net_addr_parse(&a, "10.0.0.1:0080")); /* leading zeros are decimal */
    CHECK_EQ(net_addr_port(&a), 80);
}

TEST(addr_parse_localhost_and_any)
{
    net_addr_t a, b;
    CHECK_OK(net_addr_parse(&a, "localhost:2007"));
    CHECK_EQ(a.u.in4.sin_family, AF_INET);
    CHECK_EQ(a.u.in4.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    CHECK_EQ(a.u.in4.sin_port, htons(2007));
    CHECK_OK(net_addr_parse(&b, "LocalHost:2007"));
    CHECK(same_bytes(&a, &b));

    CHECK_OK(net_addr_parse(&a, "*:80"));
    CHECK_OK(net_addr_parse(&b, "0.0.0.0:80"));
    CHECK_EQ(a.u.in4.sin_addr.s_addr, htonl(INADDR_ANY));
    CHECK(same_bytes(&a, &b));
    check_format(&a, "0.0.0.0:80");
}

TEST(addr_parse_ipv6_brackets)
{
    net_addr_t a;
    CHECK_OK(net_addr_parse(&a, "[::1]:2007"));
    CHECK_EQ(net_addr_family(&a), AF_INET6);
    CHECK_EQ(a.u.in6.sin6_port, htons(2007));
    CHECK_MEM_EQ(&a.u.in6.sin6_addr, &in6addr_loopback, 16);
    CHECK_EQ(a.u.in6.sin6_scope_id, 0);
    CHECK_EQ(a.u.in6.sin6_flowinfo, 0);
    CHECK_EQ(net_addr_len(&a), sizeof(struct sockaddr_in6));

    CHECK_OK(net_addr_parse(&a, "[::]:0"));
    CHECK_MEM_EQ(&a.u.in6.sin6_addr, &in6addr_any, 16);

    static const uint8_t db8[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 0x01};
    CHECK_OK(net_addr_parse(&a, "[2001:DB8::1]:443"));
    CHECK_MEM_EQ(&a.u.in6.sin6_addr, db8, 16);
    CHECK_EQ(net_addr_port(&a), 443);

    static const uint8_t mapped[16] = {[10] = 0xff, [11] = 0xff, 1, 2, 3, 4};
    CHECK_OK(net_addr_parse(&a, "[::ffff:1.2.3.4]:80"));
    CHECK_MEM_EQ(&a.u.in6.sin6_addr, mapped, 16);
}

TEST(addr_parse_ipv6_scope_numeric)
{
    net_addr_t a;
    CHECK_OK(net_addr_parse(&a, "[fe80::1%2]:80"));
    CHECK_EQ(a.u.in6.sin6_scope_id, 2);
    CHECK_EQ(a.u.in6.sin6_addr.s6_addr[0], 0xfe);
    CHECK_EQ(a.u.in6.sin6_addr.s6_addr[1], 0x80);
    CHECK_EQ(a.u.in6.sin6_addr.s6_addr[15], 1);
    CHECK_OK(net_addr_parse(&a, "[fe80::1%4294967295]:80"));
    CHECK_EQ(a.u.in6.sin6_scope_id, 4294967295u);
    check_rejects("[fe80::1%4294967296]:80", -EINVAL);
    check_rejects("[fe80::1%]:80", -EINVAL);
    check_rejects("[fe80::1%2]", -EINVAL);
}

TEST(addr_parse_ipv6_scope_name)
{
    unsigned lo = if_nametoindex("lo");
    if (lo == 0)
        SKIP("no loopback interface named lo");
    net_addr_t a;
    CHECK_OK(net_addr_parse(&a, "[fe80::1%lo]:80"));
    CHECK_EQ(a.u.in6.sin6_scope_id, lo);
    CHECK_OK(net_addr_from_ipv6(&a, "fe80::1%lo", 80));
    CHECK_EQ(a.u.in6.sin6_scope_id, lo);
    check_rejects("[fe80::1%nosuchif0]:80", -ENODEV);
    check_rejects("[fe80::1%averyveryverylongname]:80", -ENODEV);
}

TEST(addr_parse_ipv6_requires_brackets)
{
    check_rejects("::1:80", -EINVAL);
    check_rejects("::1", -EINVAL);
    check_rejects("[::1]", -EINVAL);
    check_rejects("[::1]80", -EINVAL);
    check_rejects("[::1:80", -EINVAL);
    check_rejects("[]:80", -EINVAL);
    check_rejects("[1.2.3.4]:80", -EINVAL);
    check_rejects("[::1]]:80", -EINVAL);
}

TEST(addr_parse_unix)
{
    net_addr_t a;
    CHECK_OK(net_addr_parse(&a, "unix:/tmp/x.sock"));
    CHECK_EQ(net_addr_family(&a), AF_UNIX);
    CHECK(strcmp(a.u.un.sun_path, "/tmp/x.sock") == 0);
    CHECK_EQ(net_addr_len(&a), UNIX_OFF + strlen("/tmp/x.sock") + 1);
    CHECK_EQ(net_addr_port(&a), -EAFNOSUPPORT);

    CHECK_OK(net_addr_parse(&a, "unix:rel/x.sock"));
    CHECK(strcmp(a.u.un.sun_path, "rel/x.sock") == 0);
    CHECK_OK(net_addr_parse(&a, "unix:./@at"));
    CHECK(strcmp(a.u.un.sun_path, "./@at") == 0);
    /* Colons and brackets in a path are just bytes. */
    CHECK_OK(net_addr_parse(&a, "unix:/tmp/[a]:1"));
    CHECK(strcmp(a.u.un.sun_path, "/tmp/[a]:1") == 0);

    check_rejects("unix:", -EINVAL);
    check_rejects("UNIX:/tmp/x", -EINVAL);
}

TEST(addr_parse_unix_abstract)
{
    net_addr_t a;
    CHECK_OK(net_addr_parse(&a, "unix:@name"));
    CHECK_EQ(net_addr_family(&a), AF_UNIX);
    CHECK_EQ(a.u.un.sun_path[0], '\0');
    CHECK_MEM_EQ(a.u.un.sun_path + 1, "name", 4);
    CHECK_EQ(net_addr_len(&a), UNIX_OFF + 1 + 4); /* no trailing NUL counted */

    CHECK_OK(net_addr_parse(&a, "unix:@a\\0b\\\\c"));
    CHECK_EQ(net_addr_len(&a), UNIX_OFF + 1 + 5);
    CHECK_MEM_EQ(a.u.un.sun_path, "\0a\0b\\c", 6);

    check_rejects("unix:@", -EINVAL);
    check_rejects("unix:@bad\\x", -EINVAL);
    check_rejects("unix:@trailing\\", -EINVAL);
}

TEST(addr_parse_rejects_bad_port)
{
    const char *bad[] = {
        "1.2.3.4:",      "1.2.3.4:+1",   "1.2.3.4:-1",   "1.2.3.4:65536",
        "1.2.3.4:99999", "1.2.3.4: 80",  "1.2.3.4:80 ",  "1.2.3.4:0x50",
        "1.2.3.4:80a",   "1.2.3.4:1e3",  "[::1]:",       "[::1]:65536",
        "[::1]:+80",     "1.2.3.4:184467440737095516160",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        check_rejects(bad[i], -EINVAL);
}

TEST(addr_parse_rejects_junk)
{
    const char *bad[] = {
        "",           "1.2.3.4",        "1.2.3:80",       "1.2.3.4.5:80",
        "256.1.1.1:80", "01.2.3.4:80", "0x1.2.3.4:80", " 1.2.3.4:80",
        ":80",        "example.com:80", "1.2.3.4:80:81", "tcp:1.2.3.4:80",
        "[::1]:80x",  "localhostx:80",  "**:80",          "[*]:80",
        "255.255.255.255.255:80",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        check_rejects(bad[i], -EINVAL);
    check_rejects(NULL, -EINVAL);
}

TEST(addr_parse_error_leaves_output_unchanged)
{
    net_addr_t a, before;
    CHECK_OK(net_addr_parse(&a, "1.2.3.4:80"));
    before = a;
    CHECK_EQ(net_addr_parse(&a, "[::1]:99999"), -EINVAL);
    CHECK_EQ(net_addr_from_ipv4(&a, "nope", 1), -EINVAL);
    CHECK_EQ(net_addr_from_ipv6(&a, "nope", 1), -EINVAL);
    CHECK_EQ(net_addr_from_unix(&a, ""), -EINVAL);
    CHECK(same_bytes(&a, &before));
}

/* ---- Constructors ------------------------------------------------------ */

TEST(addr_from_ipv4_and_ipv6)
{
    net_addr_t a, b;
    CHECK_OK(net_addr_from_ipv4(&a, "10.0.0.1", 8080));
    CHECK_OK(net_addr_parse(&b, "10.0.0.1:8080"));
    CHECK(same_bytes(&a, &b));
    CHECK_OK(net_addr_from_ipv4(&a, "localhost", 1));
    CHECK_EQ(a.u.in4.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    CHECK_EQ(net_addr_from_ipv4(&a, "10.0.0.1:80", 1), -EINVAL);
    CHECK_EQ(net_addr_from_ipv4(&a, "::1", 1), -EINVAL);
    CHECK_EQ(net_addr_from_ipv4(&a, NULL, 1), -EINVAL);
    CHECK_EQ(net_addr_from_ipv4(NULL, "1.2.3.4", 1), -EINVAL);

    CHECK_OK(net_addr_from_ipv6(&a, "::1", 2007));
    CHECK_OK(net_addr_parse(&b, "[::1]:2007"));
    CHECK(same_bytes(&a, &b));
    CHECK_OK(net_addr_from_ipv6(&a, "fe80::1%3", 1));
    CHECK_EQ(a.u.in6.sin6_scope_id, 3);
    CHECK_EQ(net_addr_from_ipv6(&a, "[::1]", 1), -EINVAL);
    CHECK_EQ(net_addr_from_ipv6(&a, "1.2.3.4", 1), -EINVAL);
    CHECK_EQ(net_addr_from_ipv6(&a, "", 1), -EINVAL);
}

TEST(addr_from_unix)
{
    net_addr_t a, b;
    CHECK_OK(net_addr_from_unix(&a, "/run/x.sock"));
    CHECK_OK(net_addr_parse(&b, "unix:/run/x.sock"));
    CHECK(same_bytes(&a, &b));
    CHECK_OK(net_addr_from_unix(&a, "@abs"));
    CHECK_OK(net_addr_parse(&b, "unix:@abs"));
    CHECK(same_bytes(&a, &b));
    CHECK_EQ(net_addr_from_unix(&a, NULL), -EINVAL);
    CHECK_EQ(net_addr_from_unix(&a, "@"), -EINVAL);
}

TEST(addr_unix_path_too_long)
{
    char path[256] = "unix:";
    net_addr_t a;
    make_string(path + 5, 'p', NET_ADDR_UNIX_MAX);
    CHECK_OK(net_addr_parse(&a, path));
    CHECK_EQ(net_addr_len(&a), sizeof(struct sockaddr_un));
    CHECK_EQ(a.u.un.sun_path[NET_ADDR_UNIX_MAX], '\0');
    make_string(path + 5, 'p', NET_ADDR_UNIX_MAX + 1);
    check_rejects(path, -ENAMETOOLONG);
    CHECK_EQ(net_addr_from_unix(&a, path + 5), -ENAMETOOLONG);

    /* Abstract names have no NUL to store, but the leading 0 takes a byte. */
    path[5] = '@';
    make_string(path + 6, 'n', NET_ADDR_UNIX_MAX);
    CHECK_OK(net_addr_parse(&a, path));
    CHECK_EQ(net_addr_len(&a), sizeof(struct sockaddr_un));
    make_string(path + 6, 'n', NET_ADDR_UNIX_MAX + 1);
    check_rejects(path, -ENAMETOOLONG);
}

/* ---- From the kernel's sockaddr ---------------------------------------- */

TEST(addr_from_sockaddr_validates)
{
    net_addr_t a;
    struct sockaddr_storage ss;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    struct sockaddr_un *un = (struct sockaddr_un *)&ss;

    CHECK_EQ(net_addr_from_sockaddr(&a, NULL, sizeof ss), -EINVAL);
    memset(&ss, 0, sizeof ss);
    CHECK_EQ(net_addr_from_sockaddr(NULL, (struct sockaddr *)&ss, sizeof ss), -EINVAL);
    CHECK_EQ(net_addr_from_sockaddr(&a, (struct sockaddr *)&ss, 1), -EINVAL);

    in4->sin_family = AF_INET;
    CHECK_EQ(net_addr_from_sockaddr(&a, (struct sockaddr *)&ss, sizeof *in4 - 1), -EINVAL);
    in6->sin6_family = AF_INET6;
    CHECK_EQ(net_addr_from_sockaddr(&a, (struct sockaddr *)&ss, sizeof *in6 - 1), -EINVAL);
    un->sun_family = AF_UNIX;
    CHECK_EQ(net_addr_from_sockaddr(&a, (struct sockaddr *)&ss, 1), -EINVAL);
    CHECK_EQ(net_addr_from_sockaddr(&a, (struct sockaddr *)&ss, sizeof *un + 1), -EINVAL);
    ss.ss_family = AF_PACKET;
    CHECK_EQ(net_addr_from_sockaddr(&a, (struct sockaddr *)&ss, sizeof ss), -EAFNOSUPPORT);
    ss.ss_family = AF_UNSPEC;
    CHECK_EQ(net_addr_from_sockaddr(&a, (struct sockaddr *)&ss, sizeof ss), -EAFNOSUPPORT);

    /* A path filling sun_path without a NUL has no room for one here. */
    un->sun_family = AF_UNIX;
    memset(un->sun_path, 'x', sizeof un->sun_path);
    CHECK_EQ(net_addr_from_sockaddr(&a, (struct sockaddr *)&ss, sizeof *un), -ENAMETOOLONG);
}

TEST(addr_from_sockaddr_normalises)
{
    net_addr_t a, want;
    struct sockaddr_storage ss;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    struct sockaddr_un *un = (struct sockaddr_un *)&ss;

    /* IPv4: sin_zero garbage dropped; a longer len (storage) is fine. */
    memset(&ss, 0x5A, sizeof ss);
    in4->sin_family = AF_INET;
    in4->sin_port = htons(80);
    in4->sin_addr.s_addr = htonl(0x7F000001);
    CHECK_OK(net_addr_from_sockaddr(&a, (struct sockaddr *)&ss, sizeof ss));
    CHECK_OK(net_addr_parse(&want, "127.0.0.1:80"));
    CHECK(same_bytes(&a, &want));

    /* IPv6: the flow label is not part of the endpoint. */
    memset(&ss, 0, sizeof ss);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(443);
    in6->sin6_flowinfo = htonl(0x12345);
    in6->sin6_addr = in6addr_loopback;
    in6->sin6_scope_id = 7;
    CHECK_OK(net_addr_from_sockaddr(&a, (struct sockaddr *)&ss, sizeof *in6));
    CHECK_OK(net_addr_parse(&want, "[::1%7]:443"));
    CHECK(same_bytes(&a, &want));

    /* Unix path: len may or may not count the NUL, or cover all of
     * sun_path with junk after the NUL; the result is the same. */
    memset(&ss, 0x5A, sizeof ss);
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, "/tmp/s", 7);
    CHECK_OK(net_addr_parse(&want, "unix:/tmp/s"));
    CHECK_OK(net_addr_from_sockaddr(&a, (struct sockaddr *)&ss, UNIX_OFF + 6));
    CHECK(same_bytes(&a, &want));
    CHECK_OK(net_addr_from_sockaddr(&a, (struct sockaddr *)&ss, UNIX_OFF + 7));
    CHECK(same_bytes(&a, &want));
    CHECK_OK(net_addr_from_sockaddr(&a, (struct sockaddr *)&ss, sizeof *un));
    CHECK(same_bytes(&a, &want));

    /* Abstract: exactly len bytes, NULs included. */
    memcpy(un->sun_path, "\0ab\0c", 5);
    CHECK_OK(net_addr_from_sockaddr(&a, (struct sockaddr *)&ss, UNIX_OFF + 5));
    CHECK_OK(net_addr_parse(&want, "unix:@ab\\0c"));
    CHECK(same_bytes(&a, &want));
    check_format(&a, "unix:@ab\\0c");

    /* Unnamed: just the family. */
    CHECK_OK(net_addr_from_sockaddr(&a, (struct sockaddr *)&ss, UNIX_OFF));
    CHECK_EQ(net_addr_len(&a), UNIX_OFF);
    check_format(&a, "unix:");
}

/* ---- Formatting -------------------------------------------------------- */

TEST(addr_format_exact)
{
    net_addr_t a;
    CHECK_OK(net_addr_from_ipv4(&a, "1.2.3.4", 80));
    check_format(&a, "1.2.3.4:80");
    CHECK_OK(net_addr_from_ipv6(&a, "::1", 80));
    check_format(&a, "[::1]:80");
    CHECK_OK(net_addr_from_ipv6(&a, "0:0:0::0:1", 65535));
    check_format(&a, "[::1]:65535");
    CHECK_OK(net_addr_from_ipv6(&a, "FE80::A%2", 0));
    check_format(&a, "[fe80::a%2]:0");
    CHECK_OK(net_addr_from_ipv6(&a, "::ffff:10.0.0.1", 8));
    check_format(&a, "[::ffff:10.0.0.1]:8");
    CHECK_OK(net_addr_from_unix(&a, "/tmp/x.sock"));
    check_format(&a, "unix:/tmp/x.sock");
    CHECK_OK(net_addr_from_unix(&a, "@x\\\\y"));
    check_format(&a, "unix:@x\\\\y");
}

TEST(addr_format_round_trip)
{
    const char *texts[] = {
        "0.0.0.0:0",        "127.0.0.1:2007",     "255.255.255.255:65535",
        "[::]:0",           "[::1]:2007",         "[2001:db8::8:800:200c:417a]:443",
        "[fe80::1%2]:80",   "[::ffff:1.2.3.4]:1", "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:9",
        "unix:/tmp/a.sock", "unix:rel",           "unix:@abs",
        "unix:@\\0\\0",     "unix:@a\\\\b",       "unix:/x/[y]:1",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        net_addr_t a, b;
        char buf[NET_ADDR_STRLEN];
        CHECK_OK(net_addr_parse(&a, texts[i]));
        CHECK_OK(net_addr_format(&a, buf, sizeof buf));
        if (strcmp(buf, texts[i]) != 0)
            net_test_fail(__FILE__, __LINE__, "\"%s\" formatted as \"%s\"", texts[i], buf);
        CHECK_OK(net_addr_parse(&b, buf));
        CHECK(same_bytes(&a, &b));
        CHECK(net_addr_equal(&a, &b));
    }
}

TEST(addr_format_small_buffer)
{
    net_addr_t a;
    char buf[16];
    CHECK_OK(net_addr_parse(&a, "1.2.3.4:80")); /* 10 characters */
    memset(buf, 'z', sizeof buf);
    CHECK_EQ(net_addr_format(&a, buf, 10), -ENOSPC);
    CHECK_EQ(buf[0], '\0'); /* never a truncated "1.2.3.4:8" */
    CHECK_EQ(buf[1], 'z');
    CHECK_EQ(net_addr_format(&a, buf, 11), 10);
    CHECK(strcmp(buf, "1.2.3.4:80") == 0);
    CHECK_EQ(net_addr_format(&a, NULL, 0), -ENOSPC);
    buf[0] = 'z';
    CHECK_EQ(net_addr_format(&a, buf, 1), -ENOSPC);
    CHECK_EQ(buf[0], '\0');
}

TEST(addr_format_invalid_address)
{
    net_addr_t a;
    char buf[NET_ADDR_STRLEN] = "z";
    memset(&a, 0, sizeof a);
    CHECK_EQ(net_addr_family(&a), AF_UNSPEC);
    CHECK_EQ(net_addr_len(&a), 0);
    CHECK_EQ(net_addr_format(&a, buf, sizeof buf), -EAFNOSUPPORT);
    CHECK_EQ(buf[0], '\0');
    CHECK_EQ(net_addr_format(NULL, buf, sizeof buf), -EINVAL);
    /* A hand-made address with an impossible len is refused, not overread. */
    a.u.un.sun_family = AF_UNIX;
    a.len = sizeof(struct sockaddr_un) + 1;
    CHECK_EQ(net_addr_format(&a, buf, sizeof buf), -EINVAL);
    a.u.in4.sin_family = AF_INET;
    a.len = 4;
    CHECK_EQ(net_addr_format(&a, buf, sizeof buf), -EINVAL);
}

TEST(addr_format_longest_fits_strlen)
{
    char text[NET_ADDR_STRLEN + 8], buf[NET_ADDR_STRLEN];
    net_addr_t a;
    /* Longest IPv6 text: a mapped address with every field wide, max scope. */
    CHECK_OK(net_addr_parse(&a, "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%4294967295]:65535"));
    CHECK_OK(net_addr_format(&a, buf, sizeof buf));
    /* Longest of all: an abstract name of NUL bytes, each escaped. */
    strcpy(text, "unix:@");
    for (int i = 0; i < NET_ADDR_UNIX_MAX; i++)
        strcat(text, "\\0");
    CHECK_OK(net_addr_parse(&a, text));
    CHECK_EQ(net_addr_format(&a, buf, sizeof buf), strlen(text));
    CHECK(strcmp(buf, text) == 0);
    CHECK(strlen(text) + 1 <= NET_ADDR_STRLEN);
}

/* ---- Accessors and equality -------------------------------------------- */

TEST(addr_port_and_family)
{
    net_addr_t a;
    CHECK_OK(net_addr_parse(&a, "1.2.3.4:80"));
    CHECK_OK(net_addr_set_port(&a, 65535));
    CHECK_EQ(a.u.in4.sin_port, htons(65535));
    CHECK_EQ(net_addr_port(&a), 65535);
    check_format(&a, "1.2.3.4:65535");

    CHECK_OK(net_addr_parse(&a, "[::1]:80"));
    CHECK_OK(net_addr_set_port(&a, 1));
    CHECK_EQ(a.u.in6.sin6_port, htons(1));
    CHECK_EQ(net_addr_port(&a), 1);

    CHECK_OK(net_addr_parse(&a, "unix:/tmp/p"));
    net_addr_t before = a;
    CHECK_EQ(net_addr_set_port(&a, 1), -EAFNOSUPPORT);
    CHECK(same_bytes(&a, &before));
    CHECK_EQ(net_addr_port(&a), -EAFNOSUPPORT);

    memset(&a, 0, sizeof a);
    CHECK_EQ(net_addr_port(&a), -EAFNOSUPPORT);
    CHECK_EQ(net_addr_set_port(&a, 1), -EAFNOSUPPORT);
}

TEST(addr_equal)
{
    net_addr_t a, b;
    CHECK_OK(net_addr_parse(&a, "1.2.3.4:80"));
    CHECK_OK(net_addr_parse(&b, "1.2.3.4:80"));
    CHECK(net_addr_equal(&a, &b));
    CHECK_OK(net_addr_parse(&b, "1.2.3.4:81"));
    CHECK(!net_addr_equal(&a, &b));
    CHECK_OK(net_addr_parse(&b, "1.2.3.5:80"));
    CHECK(!net_addr_equal(&a, &b));
    CHECK_OK(net_addr_parse(&b, "[::ffff:1.2.3.4]:80"));
    CHECK(!net_addr_equal(&a, &b)); /* families differ */

    CHECK_OK(net_addr_parse(&a, "[fe80::1%1]:80"));
    CHECK_OK(net_addr_parse(&b, "[fe80::1%2]:80"));
    CHECK(!net_addr_equal(&a, &b));
    CHECK_OK(net_addr_parse(&b, "[fe80:0::1%1]:80"));
    CHECK(net_addr_equal(&a, &b));
    /* Stray padding does not matter to equality. */
    b.u.in6.sin6_flowinfo = htonl(5);
    CHECK(net_addr_equal(&a, &b));

    CHECK_OK(net_addr_parse(&a, "unix:/tmp/e"));
    CHECK_OK(net_addr_parse(&b, "unix:/tmp/e"));
    CHECK(net_addr_equal(&a, &b));
    b.len--; /* a hand-made len without the NUL names the same path */
    CHECK(net_addr_equal(&a, &b));
    CHECK_OK(net_addr_parse(&b, "unix:/tmp/f"));
    CHECK(!net_addr_equal(&a, &b));
    CHECK_OK(net_addr_parse(&a, "unix:@/tmp/e"));
    CHECK_OK(net_addr_parse(&b, "unix:/tmp/e"));
    CHECK(!net_addr_equal(&a, &b)); /* abstract vs path */
    CHECK_OK(net_addr_parse(&b, "unix:@/tmp/e\\0"));
    CHECK(!net_addr_equal(&a, &b)); /* abstract names: every byte counts */
}

/* ---- Real sockets (loopback and /tmp only) ----------------------------- */

/* Binds a fresh socket to a, reads the name back through
 * net_addr_from_sockaddr, stores it in *got. */
static void bind_and_getsockname(const net_addr_t *a, net_addr_t *got)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd = socket(net_addr_family(a), SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    if (bind(fd, net_addr_sockaddr(a), net_addr_len(a)) != 0)
        net_test_fail(__FILE__, __LINE__, "bind: %s", strerror(errno));
    CHECK_EQ(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    CHECK_OK(net_addr_from_sockaddr(got, (struct sockaddr *)&ss, len));
    close(fd);
}

TEST(addr_bind_ipv4_loopback)
{
    net_addr_t a, got, back;
    char buf[NET_ADDR_STRLEN];
    CHECK_OK(net_addr_parse(&a, "127.0.0.1:0"));
    bind_and_getsockname(&a, &got);
    CHECK_EQ(net_addr_family(&got), AF_INET);
    CHECK_EQ(got.u.in4.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    int port = net_addr_port(&got);
    CHECK(port > 0);
    CHECK(!net_addr_equal(&a, &got));

    char want[32];
    snprintf(want, sizeof want, "127.0.0.1:%d", port);
    CHECK_EQ(net_addr_format(&got, buf, sizeof buf), strlen(want));
    CHECK(strcmp(buf, want) == 0);
    CHECK_OK(net_addr_parse(&back, buf));
    CHECK(same_bytes(&back, &got));
    CHECK_OK(net_addr_set_port(&a, (uint16_t)port));
    CHECK(net_addr_equal(&a, &got));
}

TEST(addr_bind_ipv6_loopback)
{
    net_addr_t a, got;
    char buf[NET_ADDR_STRLEN], want[32];
    CHECK_OK(net_addr_parse(&a, "[::1]:0"));
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, net_addr_sockaddr(&a), net_addr_len(&a)) != 0)
        SKIP("no IPv6 loopback: %s", strerror(errno));
    close(fd);
    bind_and_getsockname(&a, &got);
    snprintf(want, sizeof want, "[::1]:%d", net_addr_port(&got));
    CHECK(net_addr_port(&got) > 0);
    CHECK_OK(net_addr_format(&got, buf, sizeof buf));
    CHECK(strcmp(buf, want) == 0);
}

TEST(addr_bind_unix_path)
{
    char text[128], buf[NET_ADDR_STRLEN];
    net_addr_t a, got;
    snprintf(text, sizeof text, "unix:/tmp/netloop-test-addr-%ld.sock", (long)getpid());
    CHECK_OK(net_addr_parse(&a, text));
    unlink(a.u.un.sun_path);
    bind_and_getsockname(&a, &got);
    unlink(a.u.un.sun_path);
    CHECK(same_bytes(&a, &got)); /* the kernel reports len with the NUL too */
    CHECK(net_addr_equal(&a, &got));
    CHECK_OK(net_addr_format(&got, buf, sizeof buf));
    CHECK(strcmp(buf, text) == 0);
}

TEST(addr_bind_unix_abstract)
{
    char text[128], buf[NET_ADDR_STRLEN];
    net_addr_t a, got;
    snprintf(text, sizeof text, "unix:@netloop-test-addr-%ld", (long)getpid());
    CHECK_OK(net_addr_parse(&a, text));
    bind_and_getsockname(&a, &got);
    CHECK(same_bytes(&a, &got));
    CHECK_OK(net_addr_format(&got, buf, sizeof buf));
    CHECK(strcmp(buf, text) == 0);
}

TEST(addr_unix_unnamed_peer)
{
    int sv[2];
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    net_addr_t a;
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    CHECK_EQ(getpeername(sv[0], (struct sockaddr *)&ss, &len), 0);
    close(sv[0]);
    close(sv[1]);
    CHECK_OK(net_addr_from_sockaddr(&a, (struct sockaddr *)&ss, len));
    CHECK_EQ(net_addr_family(&a), AF_UNIX);
    check_format(&a, "unix:");
    check_rejects("unix:", -EINVAL); /* documented: the unnamed text does not parse */
}

/* ---- Blocking resolver: numeric hosts only, no network ------------------ */

TEST(addr_resolve_numeric)
{
    net_addr_t a, want;
    CHECK_OK(net_addr_resolve(&a, "127.0.0.1", 80, AF_INET));
    CHECK_OK(net_addr_parse(&want, "127.0.0.1:80"));
    CHECK(same_bytes(&a, &want));
    CHECK_OK(net_addr_resolve(&a, "::1", 2007, AF_INET6));
    CHECK_OK(net_addr_parse(&want, "[::1]:2007"));
    CHECK(same_bytes(&a, &want));
    CHECK_OK(net_addr_resolve(&a, "::1", 2007, AF_UNSPEC));
    CHECK(same_bytes(&a, &want));

    net_addr_t before = a;
    CHECK_EQ(net_addr_resolve(&a, "::1", 1, AF_INET), -ENOENT);
    CHECK_EQ(net_addr_resolve(&a, "127.0.0.1", 1, AF_UNIX), -EINVAL);
    CHECK_EQ(net_addr_resolve(&a, "", 1, AF_INET), -EINVAL);
    CHECK_EQ(net_addr_resolve(&a, NULL, 1, AF_INET), -EINVAL);
    CHECK(same_bytes(&a, &before));
}
