/* netloop — symbol visibility.
 *
 * The library is built with -fvisibility=hidden; only declarations marked
 * NET_EXPORT are part of the ABI. Users never need this header directly: every
 * public header includes it. */
#ifndef NET_EXPORT_H
#define NET_EXPORT_H

#if defined(NETLOOP_BUILDING) && defined(__GNUC__)
#define NET_EXPORT __attribute__((visibility("default")))
#else
#define NET_EXPORT
#endif

#endif
