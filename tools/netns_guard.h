/* The address guard of the tools that may leave loopback (rpc_bench and
 * rpc_linkcut with --netns): for test/netns_test.sh, whose namespaces are
 * joined only to each other. Header-only, static: tools include it once. */
#ifndef NETLOOP_TOOLS_NETNS_GUARD_H
#define NETLOOP_TOOLS_NETNS_GUARD_H

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <net/addr.h>

static bool netns_is_loopback(const net_addr_t *a)
{
    if (net_addr_family(a) == AF_INET)
        return (ntohl(a->u.in4.sin_addr.s_addr) >> 24) == 127;
    if (net_addr_family(a) == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&a->u.in6.sin6_addr);
    return false;
}

/* 10/8, 172.16/12, 192.168/16. */
static bool netns_is_private_ipv4(const net_addr_t *a)
{
    if (net_addr_family(a) != AF_INET)
        return false;
    uint32_t ip = ntohl(a->u.in4.sin_addr.s_addr);
    return (ip >> 24) == 10 || (ip >> 20) == 0xAC1 || (ip >> 16) == 0xC0A8;
}

/* True when /proc/1/ns/net can be read and is this process's namespace. A
 * sandbox may hide PID 1's: then the route check below decides. */
static bool netns_is_pid1s(void)
{
    struct stat self, init;
    if (stat("/proc/self/ns/net", &self) < 0 || stat("/proc/1/ns/net", &init) < 0)
        return false;
    return self.st_ino == init.st_ino && self.st_dev == init.st_dev;
}

/* True when this namespace has an IPv4 default route (or its routes cannot
 * be read): a way out to somewhere else. */
static bool netns_has_default_route(void)
{
    FILE *f = fopen("/proc/net/route", "r");
    char line[256], ifname[64];
    unsigned dest, mask;
    bool found = f == NULL;
    while (f && fgets(line, sizeof line, f)) {
        if (sscanf(line, "%63s %x %*x %*x %*d %*d %*d %x", ifname, &dest, &mask) == 3 &&
            dest == 0 && mask == 0)
            found = true;
    }
    if (f)
        fclose(f);
    return found;
}

/* Loopback always; with netns_ok, a private IPv4 address from a namespace
 * that is not PID 1's and has no default route. On refusal, *why says why. */
static bool netns_address_allowed(const net_addr_t *a, bool netns_ok, const char **why)
{
    if (netns_is_loopback(a))
        return true;
    *why = "not a loopback address (127.0.0.0/8 or [::1]; --netns allows private IPv4)";
    if (!netns_ok)
        return false;
    if (!netns_is_private_ipv4(a)) {
        *why = "--netns: not a private IPv4 address (10/8, 172.16/12, 192.168/16)";
        return false;
    }
    if (netns_is_pid1s()) {
        *why = "--netns: this process is in PID 1's network namespace";
        return false;
    }
    if (netns_has_default_route()) {
        *why = "--netns: this network namespace has a default route";
        return false;
    }
    return true;
}

#endif
