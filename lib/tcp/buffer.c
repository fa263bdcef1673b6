/* Growable contiguous byte buffer (see include/net/buffer.h).
 *
 * Invariants while storage exists: rd <= wr <= cap, and rd >= NET_BUF_PREPEND
 * unless prepends used that room. Without storage data is NULL and
 * cap == rd == wr == 0. The storage is mapped exactly when
 * cap >= NET__MAP_MIN (alloc_internal.h), and every capacity is a result of
 * net__block_size(), so the capacity alone says how to free or grow it. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <net/buffer.h>

#include "loop/alloc_internal.h"
#include "tcp/buffer_internal.h"

/* The first allocation is at least this big: tiny appends (a 4-byte length,
 * a short header) would otherwise reallocate several times in a row, while an
 * idle connection that got a few bytes still pays for a small block only. */
#define BUF_MIN_ALLOC 128

/* Stack space net_buf_read_fd() reads into beyond the buffer's free space.
 * 64 KiB takes a typical socket's worth of data in one syscall without every
 * connection keeping that much heap (muduo makes the same trade). */
#define BUF_READ_EXTRA 65536

/* peek() on a buffer without storage points here so callers always get a
 * valid pointer (NULL + 0 is undefined behaviour in C). */
static const char buf_empty[1];

static size_t buf_readable(const net_buf_t *buf)
{
    return buf->wr - buf->rd;
}

/* A capacity the storage can have for cap bytes: whole pages once it is
 * mapped. 0 if that exceeds NET_BUF_MAX_SIZE. */
static size_t buf_block_size(size_t cap)
{
    size_t size = net__block_size(cap);
    return size <= NET_BUF_MAX_SIZE ? size : 0;
}

/* Replaces the storage with a new block of new_cap bytes (a result of
 * buf_block_size) holding only the readable bytes, at offset
 * NET_BUF_PREPEND. realloc() would copy the whole old capacity, including
 * consumed bytes (muduo issues #422/#530). */
static int buf_reallocate(net_buf_t *buf, size_t new_cap)
{
    size_t readable = buf_readable(buf);
    char *data = net__block_alloc(new_cap);
    if (!data)
        return -ENOMEM;
    if (readable > 0)
        memcpy(data + NET_BUF_PREPEND, buf->data + buf->rd, readable);
    net__block_free(buf->data, buf->cap);
    buf->data = data;
    buf->cap = new_cap;
    buf->rd = NET_BUF_PREPEND;
    buf->wr = NET_BUF_PREPEND + readable;
    return 0;
}

/* Capacity for a buffer that must hold `need` bytes: at least double the old
 * one so a stream of appends costs amortized O(1) copies. Since growth only
 * happens when need > cap, the result stays below 2 * need (plus a page). */
static size_t buf_grown_cap(size_t cap, size_t need)
{
    size_t new_cap = cap <= NET_BUF_MAX_SIZE / 2 ? cap * 2 : NET_BUF_MAX_SIZE;
    if (new_cap < need)
        new_cap = need;
    return buf_block_size(new_cap < BUF_MIN_ALLOC ? BUF_MIN_ALLOC : new_cap);
}

/* Storage needed for the prepend area, the readable bytes and `extra` more:
 * 0 when that exceeds NET_BUF_MAX_SIZE, so callers never see a wrapped sum. */
static size_t buf_need(const net_buf_t *buf, size_t extra)
{
    size_t readable = buf_readable(buf);
    if (readable > NET_BUF_MAX_SIZE - NET_BUF_PREPEND ||
        extra > NET_BUF_MAX_SIZE - NET_BUF_PREPEND - readable)
        return 0;
    return NET_BUF_PREPEND + readable + extra;
}

/* Moves the readable bytes to the front, reusing the space already consumed. */
static void buf_compact(net_buf_t *buf)
{
    size_t readable = buf_readable(buf);
    memmove(buf->data + NET_BUF_PREPEND, buf->data + buf->rd, readable);
    buf->rd = NET_BUF_PREPEND;
    buf->wr = NET_BUF_PREPEND + readable;
}

/* A mapping grows in place or moves its pages (mremap): no byte is copied,
 * which matters at these sizes. The consumed front moves along, so it is
 * compacted away only if the n bytes still do not fit behind wr. */
static int buf_remap(net_buf_t *buf, size_t new_cap, size_t n)
{
    char *data = net__block_remap(buf->data, buf->cap, new_cap);
    if (!data)
        return -ENOMEM;
    buf->data = data;
    buf->cap = new_cap;
    if (buf->cap - buf->wr < n)
        buf_compact(buf);
    return 0;
}

/* Makes n bytes writable. Compacting avoids an allocation when the buffer is
 * large enough overall; otherwise the storage grows: heap storage (also
 * when it becomes a mapping) by a copy of the readable bytes, a mapping by
 * mremap. */
static int buf_make_space(net_buf_t *buf, size_t n)
{
    size_t need = buf_need(buf, n);
    if (need == 0)
        return -ENOMEM;
    if (buf->data && buf->cap >= need) {
        buf_compact(buf);
        return 0;
    }
    size_t new_cap = buf_grown_cap(buf->cap, need);
    if (new_cap == 0)
        return -ENOMEM;
    if (buf->cap >= NET__MAP_MIN)
        return buf_remap(buf, new_cap, n);
    return buf_reallocate(buf, new_cap);
}

/* ---- Life cycle ------------------------------------------------------- */

void net_buf_init(net_buf_t *buf)
{
    if (buf)
        *buf = (net_buf_t)NET_BUF_INIT;
}

void net_buf_destroy(net_buf_t *buf)
{
    if (!buf)
        return;
    net__block_free(buf->data, buf->cap);
    net_buf_init(buf);
}

int net_buf_release(net_buf_t *buf)
{
    if (!buf)
        return -EINVAL;
    if (buf_readable(buf) > 0)
        return -EBUSY;
    net_buf_destroy(buf);
    return 0;
}

int net_buf_shrink(net_buf_t *buf, size_t reserve)
{
    if (!buf)
        return -EINVAL;
    if (buf_readable(buf) == 0 && reserve == 0)
        return net_buf_release(buf);
    size_t need = buf_block_size(buf_need(buf, reserve));
    if (need == 0)
        return -ENOMEM;
    if (need == buf->cap && buf->rd == NET_BUF_PREPEND)
        return 0;
    return buf_reallocate(buf, need);
}

/* ---- Sizes ------------------------------------------------------------ */

size_t net_buf_readable(const net_buf_t *buf)
{
    return buf ? buf_readable(buf) : 0;
}

size_t net_buf_writable(const net_buf_t *buf)
{
    return buf ? buf->cap - buf->wr : 0;
}

size_t net_buf_prependable(const net_buf_t *buf)
{
    return buf ? buf->rd : 0;
}

size_t net_buf_capacity(const net_buf_t *buf)
{
    return buf ? buf->cap : 0;
}

/* ---- Reading ---------------------------------------------------------- */

const char *net_buf_peek(const net_buf_t *buf)
{
    if (!buf)
        return NULL;
    return buf->data ? buf->data + buf->rd : buf_empty;
}

int net_buf_retrieve(net_buf_t *buf, size_t n)
{
    if (!buf || n > buf_readable(buf))
        return -EINVAL;
    if (n == buf_readable(buf))
        net_buf_retrieve_all(buf);
    else
        buf->rd += n;
    return 0;
}

int net_buf_retrieve_until(net_buf_t *buf, const char *end)
{
    if (!buf || !end)
        return -EINVAL;
    /* Compare as integers: relational operators on pointers into different
     * objects are undefined, and end comes from the caller. */
    const char *peek = net_buf_peek(buf);
    uintptr_t start = (uintptr_t)peek, stop = (uintptr_t)end;
    if (stop < start || stop - start > buf_readable(buf))
        return -EINVAL;
    return net_buf_retrieve(buf, stop - start);
}

void net_buf_retrieve_all(net_buf_t *buf)
{
    if (!buf || !buf->data)
        return;
    /* Storage beyond NET_BUF_KEEP grew for a burst or a large message: keeping
     * it would pin that peak for the buffer's life, and it is free now at the
     * cost of one compare. Smaller storage is rewound, which restores the full
     * prepend area and makes everything behind it writable again. */
    if (buf->cap > NET_BUF_KEEP) {
        net_buf_destroy(buf);
        return;
    }
    buf->rd = NET_BUF_PREPEND;
    buf->wr = NET_BUF_PREPEND;
}

int net_buf_retrieve_as_string(net_buf_t *buf, size_t n, char *out, size_t out_size)
{
    if (!buf || !out || n > buf_readable(buf))
        return -EINVAL;
    if (out_size <= n)
        return -ENOSPC;
    memcpy(out, net_buf_peek(buf), n);
    out[n] = '\0';
    return net_buf_retrieve(buf, n);
}

const char *net_buf_find_crlf_at(const net_buf_t *buf, size_t offset)
{
    if (!buf || offset > buf_readable(buf))
        return NULL;
    const char *start = net_buf_peek(buf) + offset;
    return memmem(start, buf_readable(buf) - offset, "\r\n", 2);
}

const char *net_buf_find_crlf(const net_buf_t *buf)
{
    return net_buf_find_crlf_at(buf, 0);
}

const char *net_buf_find_eol_at(const net_buf_t *buf, size_t offset)
{
    if (!buf || offset > buf_readable(buf))
        return NULL;
    const char *start = net_buf_peek(buf) + offset;
    return memchr(start, '\n', buf_readable(buf) - offset);
}

const char *net_buf_find_eol(const net_buf_t *buf)
{
    return net_buf_find_eol_at(buf, 0);
}

/* ---- Writing ---------------------------------------------------------- */

int net_buf_ensure_writable(net_buf_t *buf, size_t n)
{
    if (!buf)
        return -EINVAL;
    if (buf->cap - buf->wr >= n)
        return 0;
    return buf_make_space(buf, n);
}

/* Where p lies within the readable bytes, or SIZE_MAX if it does not point
 * into them. Compared as integers, as in net_buf_retrieve_until(). */
static size_t buf_readable_offset(const net_buf_t *buf, const void *p)
{
    if (!buf->data)
        return SIZE_MAX;
    uintptr_t start = (uintptr_t)(buf->data + buf->rd), at = (uintptr_t)p;
    if (at < start || at - start >= buf_readable(buf))
        return SIZE_MAX;
    return at - start;
}

int net_buf_append(net_buf_t *buf, const void *data, size_t len)
{
    if (!buf || (!data && len > 0))
        return -EINVAL;
    if (len == 0)
        return 0;
    /* data may be the buffer's own readable bytes (e.g. repeating a prefix
     * via peek()): growing frees them and compacting moves them, so they
     * are found again by their offset from the readable start. */
    size_t off = buf_readable_offset(buf, data);
    int rc = net_buf_ensure_writable(buf, len);
    if (rc < 0)
        return rc;
    if (off != SIZE_MAX)
        data = buf->data + buf->rd + off;
    memcpy(buf->data + buf->wr, data, len);
    buf->wr += len;
    return 0;
}

int net_buf_prepend(net_buf_t *buf, const void *data, size_t len)
{
    if (!buf || (!data && len > 0))
        return -EINVAL;
    if (len == 0)
        return 0;
    size_t room = buf->data ? buf->rd : NET_BUF_PREPEND;
    if (len > room)
        return -ENOSPC;
    if (!buf->data) {
        int rc = buf_make_space(buf, 0);
        if (rc < 0)
            return rc;
    }
    buf->rd -= len;
    memcpy(buf->data + buf->rd, data, len);
    return 0;
}

char *net_buf_begin_write(net_buf_t *buf)
{
    return buf && buf->data ? buf->data + buf->wr : NULL;
}

int net_buf_has_written(net_buf_t *buf, size_t n)
{
    if (!buf || n > buf->cap - buf->wr)
        return -EINVAL;
    buf->wr += n;
    return 0;
}

/* ---- Integers in network byte order ---------------------------------- */

/* Shifting bytes out by hand gives big-endian on any host and needs no
 * alignment, unlike storing the result of htonl() through a cast pointer. */
static void put_be(unsigned char *p, uint64_t v, size_t width)
{
    for (size_t i = width; i-- > 0; v >>= 8)
        p[i] = (unsigned char)(v & 0xff);
}

static uint64_t get_be(const unsigned char *p, size_t width)
{
    uint64_t v = 0;
    for (size_t i = 0; i < width; i++)
        v = v << 8 | p[i];
    return v;
}

static int append_be(net_buf_t *buf, uint64_t v, size_t width)
{
    unsigned char bytes[8];
    put_be(bytes, v, width);
    return net_buf_append(buf, bytes, width);
}

static int prepend_be(net_buf_t *buf, uint64_t v, size_t width)
{
    unsigned char bytes[8];
    put_be(bytes, v, width);
    return net_buf_prepend(buf, bytes, width);
}

static int peek_be(const net_buf_t *buf, size_t width, uint64_t *v)
{
    if (!buf)
        return -EINVAL;
    if (buf_readable(buf) < width)
        return -ENODATA;
    *v = get_be((const unsigned char *)net_buf_peek(buf), width);
    return 0;
}

int net_buf_append_u8(net_buf_t *buf, uint8_t v) { return append_be(buf, v, 1); }
int net_buf_append_u16(net_buf_t *buf, uint16_t v) { return append_be(buf, v, 2); }
int net_buf_append_u32(net_buf_t *buf, uint32_t v) { return append_be(buf, v, 4); }
int net_buf_append_u64(net_buf_t *buf, uint64_t v) { return append_be(buf, v, 8); }

int net_buf_prepend_u8(net_buf_t *buf, uint8_t v) { return prepend_be(buf, v, 1); }
int net_buf_prepend_u16(net_buf_t *buf, uint16_t v) { return prepend_be(buf, v, 2); }
int net_buf_prepend_u32(net_buf_t *buf, uint32_t v) { return prepend_be(buf, v, 4); }
int net_buf_prepend_u64(net_buf_t *buf, uint64_t v) { return prepend_be(buf, v, 8); }

int net_buf_peek_u8(const net_buf_t *buf, uint8_t *out)
{
    uint64_t v = 0;
    int rc = out ? peek_be(buf, sizeof *out, &v) : -EINVAL;
    if (rc == 0)
        *out = (uint8_t)v;
    return rc;
}

int net_buf_peek_u16(const net_buf_t *buf, uint16_t *out)
{
    uint64_t v = 0;
    int rc = out ? peek_be(buf, sizeof *out, &v) : -EINVAL;
    if (rc == 0)
        *out = (uint16_t)v;
    return rc;
}

int net_buf_peek_u32(const net_buf_t *buf, uint32_t *out)
{
    uint64_t v = 0;
    int rc = out ? peek_be(buf, sizeof *out, &v) : -EINVAL;
    if (rc == 0)
        *out = (uint32_t)v;
    return rc;
}

int net_buf_peek_u64(const net_buf_t *buf, uint64_t *out)
{
    return out ? peek_be(buf, sizeof *out, out) : -EINVAL;
}

/* The read functions consume only after a successful peek, so a short buffer
 * is left exactly as it was. */
int net_buf_read_u8(net_buf_t *buf, uint8_t *out)
{
    int rc = net_buf_peek_u8(buf, out);
    return rc < 0 ? rc : net_buf_retrieve(buf, sizeof *out);
}

int net_buf_read_u16(net_buf_t *buf, uint16_t *out)
{
    int rc = net_buf_peek_u16(buf, out);
    return rc < 0 ? rc : net_buf_retrieve(buf, sizeof *out);
}

int net_buf_read_u32(net_buf_t *buf, uint32_t *out)
{
    int rc = net_buf_peek_u32(buf, out);
    return rc < 0 ? rc : net_buf_retrieve(buf, sizeof *out);
}

int net_buf_read_u64(net_buf_t *buf, uint64_t *out)
{
    int rc = net_buf_peek_u64(buf, out);
    return rc < 0 ? rc : net_buf_retrieve(buf, sizeof *out);
}

/* ---- File descriptors ------------------------------------------------- */

/* Appends the part of a read that landed in the stack buffer. */
static ssize_t buf_take_overflow(net_buf_t *buf, size_t n, size_t writable,
                                 const char *extra)
{
    if (n <= writable) {
        buf->wr += n;
        return (ssize_t)n;
    }
    buf->wr += writable;
    int rc = net_buf_append(buf, extra, n - writable);
    return rc < 0 ? rc : (ssize_t)n;
}

ssize_t net__buf_read_fd_max(net_buf_t *buf, int fd, size_t max)
{
    char extra[BUF_READ_EXTRA];
    struct iovec iov[2];
    int iovcnt = 0;
    size_t writable = buf->cap - buf->wr;
    size_t first = writable < max ? writable : max;
    if (first > 0)
        iov[iovcnt++] = (struct iovec){ buf->data + buf->wr, first };
    /* With 64 KiB or more free the buffer alone is big enough for one read,
     * and skipping the stack buffer spares a copy. */
    if (first < sizeof extra && first < max)
        iov[iovcnt++] = (struct iovec){ extra, max - first < sizeof extra ? max - first : sizeof extra };
    ssize_t n = readv(fd, iov, iovcnt);
    if (n < 0)
        return -errno;
    return buf_take_overflow(buf, (size_t)n, first, extra);
}

ssize_t net_buf_read_fd(net_buf_t *buf, int fd)
{
    if (!buf)
        return -EINVAL;
    return net__buf_read_fd_max(buf, fd, SIZE_MAX);
}
