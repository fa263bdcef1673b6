/* netloop — byte buffer.
 *
 * A growable contiguous buffer in the style of muduo's Buffer, used for a
 * connection's input and output. Its storage is laid out as
 *
 *     [ prependable | readable | writable ]
 *     0             rd         wr         cap
 *
 * Bytes are appended at the writable end and consumed ("retrieved") from the
 * readable front. A cheap-prepend area of NET_BUF_PREPEND bytes is kept in
 * front of the readable bytes, so a length header can be prepended to a
 * message after it was written without moving it.
 *
 * Memory: an initialized buffer holds no memory; storage is allocated by the
 * first append (or ensure_writable / prepend / read_fd that needs it), so an
 * idle connection costs only the struct. Growth first reuses the space
 * already consumed at the front; otherwise it allocates at least twice the
 * old capacity and copies only the readable bytes. Storage of 128 KiB and more
 * is mapped from the kernel directly (mmap, in whole pages) and grows
 * without a copy (mremap), so freeing it returns it to the kernel at once
 * whatever malloc's thresholds are; smaller storage comes from the library's
 * allocator (include/net/alloc.h; with a replaced allocator, all of it does).
 * Memory goes back: a retrieve that empties the buffer frees storage larger
 * than NET_BUF_KEEP (so one large message does not pin its size for a
 * connection's life), and net_buf_release() and net_buf_shrink() give
 * memory back on request.
 *
 * Integers are read and written in network byte order (big-endian).
 *
 * Errors: 0 or a negative errno. Every operation is bounds-checked: asking for
 * more bytes than are readable fails and changes nothing. Pointers returned
 * by peek, begin_write and the find functions point into the buffer: they stay
 * valid only until the next call that modifies the buffer, retrieves
 * included (a retrieve that empties the buffer may free its storage).
 *
 * Threads: a buffer is a plain value. Not thread-safe: one thread at a time
 * (normally the loop thread of the connection that owns it). */
#ifndef NET_BUFFER_H
#define NET_BUFFER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <net/error.h>
#include <net/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes reserved in front of the readable bytes for cheap prepends. */
#define NET_BUF_PREPEND 8

/* The largest capacity a buffer may reach; larger requests fail with
 * -ENOMEM instead of overflowing a size computation. */
#define NET_BUF_MAX_SIZE ((size_t)PTRDIFF_MAX)

/* Storage an emptied buffer keeps (64 KiB): a retrieve that leaves no
 * readable bytes frees larger storage, and keeps this much or less for the
 * next messages. */
#define NET_BUF_KEEP ((size_t)64 * 1024)

/* The struct is public so that a buffer can be embedded in another object or
 * live on the stack. Its fields are private: use the functions below. */
typedef struct net_buf {
    char *data; /* storage, NULL while the buffer holds no memory */
    size_t cap; /* bytes allocated at data */
    size_t rd;  /* start of the readable bytes */
    size_t wr;  /* end of the readable bytes, start of the writable ones */
} net_buf_t;

/* Static initializer, equivalent to net_buf_init(). */
#define NET_BUF_INIT { NULL, 0, 0, 0 }

/* ---- Life cycle ------------------------------------------------------- */

/* Makes *buf an empty buffer holding no heap memory. Never fails. Does not
 * free anything: use it on fresh memory, net_buf_destroy() on a used buffer.
 * NULL is ignored. Not thread-safe: one thread at a time. */
NET_EXPORT void net_buf_init(net_buf_t *buf);

/* Frees the storage and discards the contents. The buffer is left as after
 * net_buf_init() and may be used again. NULL is ignored.
 * Not thread-safe: one thread at a time. */
NET_EXPORT void net_buf_destroy(net_buf_t *buf);

/* Frees the storage of an empty buffer, returning it to zero heap memory
 * (e.g. for an idle connection). Returns 0 (also when it held no memory),
 * -EBUSY if readable bytes remain (nothing changes), -EINVAL for NULL.
 * Not thread-safe: one thread at a time. */
NET_EXPORT int net_buf_release(net_buf_t *buf);

/* Reallocates the storage to exactly NET_BUF_PREPEND + readable + reserve
 * bytes (rounded up to whole pages from 128 KiB on), keeping the contents; an
 * empty buffer with reserve 0 frees its storage. Returns 0, -ENOMEM (the
 * buffer is unchanged) or -EINVAL for NULL.
 * Not thread-safe: one thread at a time. */
NET_EXPORT int net_buf_shrink(net_buf_t *buf, size_t reserve);

/* ---- Sizes ------------------------------------------------------------ */

/* Bytes that can be read (retrieved). 0 for NULL.
 * Not thread-safe: one thread at a time. */
NET_EXPORT size_t net_buf_readable(const net_buf_t *buf);

/* Bytes that can be written at net_buf_begin_write() without growing.
 * 0 for NULL. Not thread-safe: one thread at a time. */
NET_EXPORT size_t net_buf_writable(const net_buf_t *buf);

/* Bytes that can be prepended without moving data. 0 while the buffer holds
 * no memory (a prepend then allocates, see net_buf_prepend()). 0 for NULL.
 * Not thread-safe: one thread at a time. */
NET_EXPORT size_t net_buf_prependable(const net_buf_t *buf);

/* Bytes held by the buffer's storage (0 after init or release).
 * 0 for NULL. Not thread-safe: one thread at a time. */
NET_EXPORT size_t net_buf_capacity(const net_buf_t *buf);

/* ---- Reading ---------------------------------------------------------- */

/* The first readable byte; net_buf_readable() bytes follow. Never NULL for a
 * non-NULL buf (an empty buffer gives a valid pointer to zero bytes). The
 * bytes stay owned by the buffer. Not thread-safe: one thread at a time. */
NET_EXPORT const char *net_buf_peek(const net_buf_t *buf);

/* Consumes the first n readable bytes. When that leaves none (n equal to
 * the readable bytes, 0 on an empty buffer included) it acts as
 * net_buf_retrieve_all(): storage above NET_BUF_KEEP is freed. Returns 0,
 * or -EINVAL if n exceeds the readable bytes (nothing is consumed) or buf is
 * NULL. Not thread-safe: one thread at a time. */
NET_EXPORT int net_buf_retrieve(net_buf_t *buf, size_t n);

/* Consumes the readable bytes before end, which must lie in
 * [peek, peek + readable] (e.g. a result of net_buf_find_crlf()); as
 * net_buf_retrieve() when that empties the buffer. Returns 0 or -EINVAL
 * (end outside that range: nothing is consumed).
 * Not thread-safe: one thread at a time. */
NET_EXPORT int net_buf_retrieve_until(net_buf_t *buf, const char *end);

/* Consumes every readable byte. Storage of up to NET_BUF_KEEP bytes is kept
 * for reuse (net_buf_release() frees it too); larger storage is freed, the
 * buffer then holds no memory, as after net_buf_init(). Either way every
 * pointer into the buffer is invalid afterwards: a pointer from peek or
 * begin_write taken before it must not be used (a caller that reserved room
 * with net_buf_ensure_writable() and then empties the buffer must call it
 * and net_buf_begin_write() again). NULL is ignored.
 * Not thread-safe: one thread at a time. */
NET_EXPORT void net_buf_retrieve_all(net_buf_t *buf);

/* Copies the first n readable bytes into out, NUL-terminates them and
 * consumes them (as net_buf_retrieve()). out is the caller's, out_size
 * bytes long; it must have room for n + 1 bytes. Embedded NUL bytes are
 * copied as they are.
 * Returns 0, -EINVAL (NULL argument or n beyond the readable bytes) or
 * -ENOSPC (out_size <= n). On error nothing is consumed or written.
 * Not thread-safe: one thread at a time. */
NET_EXPORT int net_buf_retrieve_as_string(net_buf_t *buf, size_t n, char *out,
                                          size_t out_size);

/* The first "\r\n" in the readable bytes (pointing at the '\r'), or NULL if
 * there is none (or buf is NULL). The pointer is into the buffer.
 * Not thread-safe: one thread at a time. */
NET_EXPORT const char *net_buf_find_crlf(const net_buf_t *buf);

/* Like net_buf_find_crlf(), searching from `offset` bytes past the first
 * readable byte (e.g. to resume after a partial line). NULL if offset exceeds
 * the readable bytes. Not thread-safe: one thread at a time. */
NET_EXPORT const char *net_buf_find_crlf_at(const net_buf_t *buf, size_t offset);

/* The first '\n' in the readable bytes, or NULL if there is none.
 * Not thread-safe: one thread at a time. */
NET_EXPORT const char *net_buf_find_eol(const net_buf_t *buf);

/* Like net_buf_find_eol(), searching from `offset` bytes past the first
 * readable byte. NULL if offset exceeds the readable bytes.
 * Not thread-safe: one thread at a time. */
NET_EXPORT const char *net_buf_find_eol_at(const net_buf_t *buf, size_t offset);

/* ---- Writing ---------------------------------------------------------- */

/* Appends len bytes copied from data (data may be NULL only if len is 0).
 * data may point into buf's own readable bytes (e.g. net_buf_peek(buf)),
 * even when the append grows or compacts the storage.
 * Returns 0, -ENOMEM (nothing appended) or -EINVAL.
 * Not thread-safe: one thread at a time. */
NET_EXPORT int net_buf_append(net_buf_t *buf, const void *data, size_t len);

/* Inserts len bytes copied from data in front of the readable bytes, using
 * the prependable area. Returns 0, -ENOSPC if fewer than len bytes are
 * prependable (nothing changes), -EINVAL, or -ENOMEM. The buffer keeps
 * NET_BUF_PREPEND bytes free in front of its readable bytes, minus what
 * earlier prepends used; a buffer holding no memory allocates its storage
 * first, so a first header of up to NET_BUF_PREPEND bytes always fits.
 * Not thread-safe: one thread at a time. */
NET_EXPORT int net_buf_prepend(net_buf_t *buf, const void *data, size_t len);

/* Makes at least n bytes writable, growing or compacting the storage as
 * needed. Returns 0, -ENOMEM (also for n too large to ever fit,
 * see NET_BUF_MAX_SIZE; the buffer is unchanged) or -EINVAL for NULL.
 * Not thread-safe: one thread at a time. */
NET_EXPORT int net_buf_ensure_writable(net_buf_t *buf, size_t n);

/* Where the next appended byte goes; net_buf_writable() bytes may be written
 * there, then committed with net_buf_has_written(). NULL while the buffer
 * holds no memory (call net_buf_ensure_writable() first) or for a NULL buf.
 * Not thread-safe: one thread at a time. */
NET_EXPORT char *net_buf_begin_write(net_buf_t *buf);

/* Commits n bytes written at net_buf_begin_write() as readable. Returns 0 or
 * -EINVAL if n exceeds the writable bytes (nothing changes).
 * Not thread-safe: one thread at a time. */
NET_EXPORT int net_buf_has_written(net_buf_t *buf, size_t n);

/* ---- Integers in network byte order ---------------------------------- */

/* append: adds the big-endian bytes of v at the end; 0, -ENOMEM or -EINVAL.
 * prepend: inserts them in front; 0, -ENOSPC, -ENOMEM or -EINVAL, as
 *   net_buf_prepend().
 * peek: decodes the first readable bytes into *out without consuming them.
 * read: decodes and consumes them (as net_buf_retrieve()).
 * peek and read return 0, -ENODATA when fewer bytes than the integer's size
 * are readable (nothing is consumed, *out is untouched), or -EINVAL for a
 * NULL argument.
 * All: not thread-safe: one thread at a time. */
NET_EXPORT int net_buf_append_u8(net_buf_t *buf, uint8_t v);
NET_EXPORT int net_buf_append_u16(net_buf_t *buf, uint16_t v);
NET_EXPORT int net_buf_append_u32(net_buf_t *buf, uint32_t v);
NET_EXPORT int net_buf_append_u64(net_buf_t *buf, uint64_t v);

NET_EXPORT int net_buf_prepend_u8(net_buf_t *buf, uint8_t v);
NET_EXPORT int net_buf_prepend_u16(net_buf_t *buf, uint16_t v);
NET_EXPORT int net_buf_prepend_u32(net_buf_t *buf, uint32_t v);
NET_EXPORT int net_buf_prepend_u64(net_buf_t *buf, uint64_t v);

NET_EXPORT int net_buf_peek_u8(const net_buf_t *buf, uint8_t *out);
NET_EXPORT int net_buf_peek_u16(const net_buf_t *buf, uint16_t *out);
NET_EXPORT int net_buf_peek_u32(const net_buf_t *buf, uint32_t *out);
NET_EXPORT int net_buf_peek_u64(const net_buf_t *buf, uint64_t *out);

NET_EXPORT int net_buf_read_u8(net_buf_t *buf, uint8_t *out);
NET_EXPORT int net_buf_read_u16(net_buf_t *buf, uint16_t *out);
NET_EXPORT int net_buf_read_u32(net_buf_t *buf, uint32_t *out);
NET_EXPORT int net_buf_read_u64(net_buf_t *buf, uint64_t *out);

/* ---- File descriptors ------------------------------------------------- */

/* Reads once from fd (one readv(2)) and appends what arrived. The read goes
 * into the writable space plus a 64 KiB buffer on the stack, so one call can
 * take up to writable + 64 KiB bytes while the buffer only grows by what was
 * actually read (a buffer holding no memory that receives 10 bytes allocates
 * a small block, not 64 KiB).
 * Returns the number of bytes read (> 0), 0 at end of file, or a negative
 * errno: -EAGAIN on an empty non-blocking fd, -EINTR, -EBADF, ... (nothing
 * appended), -EINVAL for NULL, or -ENOMEM when the overflow could not be
 * appended: those bytes have then been taken from fd and are lost, so the
 * caller should close the connection.
 * Not thread-safe: one thread at a time. The fd stays the caller's. */
NET_EXPORT ssize_t net_buf_read_fd(net_buf_t *buf, int fd);

#ifdef __cplusplus
}
#endif

#endif
