/* Fuzz target: net_buf_t (lib/buffer.c) driven by a byte program.
 *
 * The input is a sequence of operations: an opcode byte (taken modulo the
 * number of operations) followed by its operands, up to MAX_OPS of them.
 * Every operation runs on the buffer and on a reference model, a plain byte
 * array holding what the readable bytes must be; the return code is
 * predicted from the model and include/net/buffer.h. After every operation
 * the buffer must hold exactly the model's bytes and its sizes must add up
 * (prependable + readable + writable == capacity).
 *
 * Operand encodings are in the comment of each op_* function. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include <net/buffer.h>

#include "fuzz.h"

#define MAX_OPS 512
/* Keeps one input fast: appends that would pass this are skipped. */
#define MAX_MODEL (256u << 10)
/* Largest append_big and read_fd. Larger ones found nothing more (the
 * growth and read_fd overflow logic only compare sizes) but moved so much
 * memory under ASan that a 4 KiB program took milliseconds. */
#define BIG 16384
/* Bytes compared at each end of a large buffer after most operations. */
#define ENDS 2048
/* Operations between two full compares of a large buffer. */
#define FULL_EVERY 16
/* Mirrors lib/buffer.c's BUF_MIN_ALLOC: the smallest block it allocates. */
#define MIN_ALLOC 128
/* Mirrors lib/alloc_internal.h's NET__MAP_MIN: from this size on, storage
 * is whole pages. */
#define MAP_MIN ((size_t)128 * 1024)

/* The capacity the buffer gives a block asked for n bytes. */
static size_t block_size(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return n < MAP_MIN ? n : (n + page - 1) & ~(page - 1);
}

/* The readable bytes are data[head, head + len): consuming moves head,
 * so the model costs O(1) per retrieve whatever its size. */
struct model {
    uint8_t *data;
    size_t head, len, cap;
};

struct state {
    net_buf_t buf;
    struct model m;
    struct fuzz_input *in;
    int pipe_fd[2]; /* for read_fd; -1 until first needed */
};

/* ---- The model -------------------------------------------------------- */

static const uint8_t *model_bytes(const struct model *m)
{
    return m->data + m->head;
}

/* Makes room for `front` bytes before the readable ones and `back` after. */
static void model_reserve(struct model *m, size_t front, size_t back)
{
    if (m->data && m->head >= front && m->head + m->len + back <= m->cap)
        return;
    size_t cap = (front + m->len + back) * 2 + 64;
    uint8_t *data = malloc(cap);
    FUZZ_CHECK(data != NULL);
    if (m->len)
        memcpy(data + front, model_bytes(m), m->len);
    free(m->data);
    m->data = data;
    m->head = front;
    m->cap = cap;
}

static void model_append(struct model *m, const void *p, size_t n)
{
    model_reserve(m, 0, n);
    if (n)
        memcpy(m->data + m->head + m->len, p, n);
    m->len += n;
}

static void model_prepend(struct model *m, const void *p, size_t n)
{
    model_reserve(m, n, 0);
    m->head -= n;
    m->len += n;
    if (n)
        memcpy(m->data + m->head, p, n);
}

static void model_consume(struct model *m, size_t n)
{
    m->head += n;
    m->len -= n;
}

static void model_clear(struct model *m)
{
    m->head = 0;
    m->len = 0;
}

static bool room_for(const struct state *s, size_t n)
{
    return n <= MAX_MODEL - s->m.len;
}

/* ---- Checks after every operation -------------------------------------- */

/* All readable bytes equal the model's. For a large buffer only both ends
 * are compared after most operations: comparing up to MAX_MODEL bytes after
 * each of 512 operations dominated the run time once the corpus held large
 * buffers, and a corrupted byte stays corrupted until the next full compare
 * (every FULL_EVERY operations and at the end) finds it. */
FUZZ_NO_COVERAGE static void check_contents(const struct state *s, bool full)
{
    const uint8_t *got = (const uint8_t *)net_buf_peek(&s->buf), *want = model_bytes(&s->m);
    size_t n = s->m.len;
    if (full || n <= 2 * ENDS) {
        FUZZ_CHECK(n == 0 || memcmp(got, want, n) == 0);
        return;
    }
    FUZZ_CHECK(memcmp(got, want, ENDS) == 0);
    FUZZ_CHECK(memcmp(got + n - ENDS, want + n - ENDS, ENDS) == 0);
}

static void check_buffer(const struct state *s, bool full)
{
    const net_buf_t *b = &s->buf;
    size_t readable = net_buf_readable(b), cap = net_buf_capacity(b);
    FUZZ_CHECK(readable == s->m.len);
    FUZZ_CHECK(net_buf_peek(b) != NULL);
    check_contents(s, full);
    FUZZ_CHECK(net_buf_prependable(b) + readable + net_buf_writable(b) == cap);
    if (cap == 0) {
        FUZZ_CHECK(readable == 0 && net_buf_writable(b) == 0 && net_buf_prependable(b) == 0);
        FUZZ_CHECK(net_buf_begin_write((net_buf_t *)b) == NULL);
    } else {
        FUZZ_CHECK(net_buf_begin_write((net_buf_t *)b) == net_buf_peek(b) + readable);
    }
}

/* Growth happened: at least twice the old capacity and no more than
 * needed; a fresh layout (the full prepend area), except that a mapping
 * grown in place (mremap) keeps its layout when the room fits. */
static void check_growth(const struct state *s, size_t old_cap, size_t old_prep, size_t need)
{
    size_t cap = net_buf_capacity(&s->buf);
    if (cap == old_cap)
        return;
    size_t bound = block_size(2 * need > MIN_ALLOC ? 2 * need : MIN_ALLOC);
    FUZZ_CHECK(cap >= 2 * old_cap);
    FUZZ_CHECK(cap >= need && cap <= bound);
    size_t prep = net_buf_prependable(&s->buf);
    FUZZ_CHECK(prep == NET_BUF_PREPEND || (old_cap >= MAP_MIN && prep == old_prep));
}

/* A retrieve that empties the buffer frees storage above NET_BUF_KEEP and
 * keeps smaller storage, with the full prepend area. */
static void check_emptied(const struct state *s, size_t old_cap)
{
    if (s->m.len)
        return;
    size_t cap = net_buf_capacity(&s->buf);
    FUZZ_CHECK(cap == (old_cap > NET_BUF_KEEP ? 0 : old_cap));
    FUZZ_CHECK(cap == 0 || net_buf_prependable(&s->buf) == NET_BUF_PREPEND);
}

/* ---- Operations ---------------------------------------------------------- */

FUZZ_NO_COVERAGE static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed + i * 7);
}

static void do_append(struct state *s, const uint8_t *p, size_t n)
{
    size_t old_cap = net_buf_capacity(&s->buf), old_prep = net_buf_prependable(&s->buf);
    bool fits = old_cap > 0 && net_buf_writable(&s->buf) >= n;
    size_t need = NET_BUF_PREPEND + s->m.len + n;
    FUZZ_CHECK(net_buf_append(&s->buf, p, n) == 0);
    model_append(&s->m, p, n);
    if (fits)
        FUZZ_CHECK(net_buf_capacity(&s->buf) == old_cap);
    if (n > 0)
        check_growth(s, old_cap, old_prep, need);
}

/* len(1), then len bytes of data */
static void op_append(struct state *s)
{
    uint8_t data[256];
    size_t n = fuzz_take(s->in, 1);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)fuzz_take(s->in, 1);
    if (room_for(s, n))
        do_append(s, data, n);
}

/* len(2) modulo BIG, seed(1): a large append of generated bytes */
static void op_append_big(struct state *s)
{
    static uint8_t data[BIG];
    size_t n = fuzz_take(s->in, 2) % BIG;
    fill(data, n, (unsigned)fuzz_take(s->in, 1));
    if (room_for(s, n))
        do_append(s, data, n);
}

static size_t expected_prepend_room(const struct state *s)
{
    return net_buf_capacity(&s->buf) ? net_buf_prependable(&s->buf) : NET_BUF_PREPEND;
}

/* len(1) modulo 17: up to twice the prepend area */
static void op_prepend(struct state *s)
{
    uint8_t data[16];
    size_t n = fuzz_take(s->in, 1) % 17;
    fill(data, n, (unsigned)n);
    size_t room = expected_prepend_room(s);
    int rc = net_buf_prepend(&s->buf, data, n);
    FUZZ_CHECK(rc == (n <= room ? 0 : -ENOSPC));
    if (rc == 0)
        model_prepend(&s->m, data, n);
}

/* A count from 2 bytes, mostly within [0, len + 4]: a few past the end. */
static size_t take_count(struct state *s)
{
    size_t n = fuzz_take(s->in, 2);
    return n > s->m.len + 4 ? n % (s->m.len + 5) : n;
}

/* n(2) */
static void op_retrieve(struct state *s)
{
    size_t n = take_count(s), old_cap = net_buf_capacity(&s->buf);
    int rc = net_buf_retrieve(&s->buf, n);
    FUZZ_CHECK(rc == (n <= s->m.len ? 0 : -EINVAL));
    if (rc == 0) {
        model_consume(&s->m, n);
        check_emptied(s, old_cap);
    }
}

FUZZ_NO_COVERAGE static const uint8_t *model_find(const struct model *m, size_t off, bool crlf)
{
    const uint8_t *b = model_bytes(m);
    for (size_t i = off; i < m->len; i++) {
        if (crlf && b[i] == '\r' && i + 1 < m->len && b[i + 1] == '\n')
            return b + i;
        if (!crlf && b[i] == '\n')
            return b + i;
    }
    return NULL;
}

/* The find result must be the model's, as a pointer into the buffer. */
static const char *checked_find(struct state *s, size_t off, bool crlf)
{
    const char *got = crlf ? net_buf_find_crlf_at(&s->buf, off)
                           : net_buf_find_eol_at(&s->buf, off);
    if (off > s->m.len) {
        FUZZ_CHECK(got == NULL);
        return NULL;
    }
    const uint8_t *want = model_find(&s->m, off, crlf);
    FUZZ_CHECK((got == NULL) == (want == NULL));
    if (got)
        FUZZ_CHECK(got - net_buf_peek(&s->buf) == want - model_bytes(&s->m));
    if (off == 0)
        FUZZ_CHECK(got == (crlf ? net_buf_find_crlf(&s->buf) : net_buf_find_eol(&s->buf)));
    return got;
}

/* kind(1): bit 0 CRLF or EOL; offset(2) */
static void op_find(struct state *s)
{
    bool crlf = fuzz_take(s->in, 1) & 1;
    checked_find(s, take_count(s), crlf);
}

/* kind(1): bit 0 CRLF or EOL, bit 1 an end pointer outside the buffer.
 * Consumes through the end of the line found. */
static void op_retrieve_until(struct state *s)
{
    unsigned kind = (unsigned)fuzz_take(s->in, 1);
    const char *end = checked_find(s, 0, kind & 1);
    if (kind & 2) {
        char outside = 0;
        FUZZ_CHECK(net_buf_retrieve_until(&s->buf, &outside) == -EINVAL);
        return;
    }
    if (!end)
        return;
    size_t n = (size_t)(end - net_buf_peek(&s->buf)) + (kind & 1 ? 2 : 1);
    size_t old_cap = net_buf_capacity(&s->buf);
    FUZZ_CHECK(net_buf_retrieve_until(&s->buf, net_buf_peek(&s->buf) + n) == 0);
    model_consume(&s->m, n);
    check_emptied(s, old_cap);
}

static void op_retrieve_all(struct state *s)
{
    size_t cap = net_buf_capacity(&s->buf);
    net_buf_retrieve_all(&s->buf);
    model_clear(&s->m);
    check_emptied(s, cap);
}

/* n(1), out_size(1) */
static void op_retrieve_as_string(struct state *s)
{
    char out[257];
    size_t n = fuzz_take(s->in, 1), out_size = fuzz_take(s->in, 1);
    memset(out, 'x', sizeof out);
    size_t old_cap = net_buf_capacity(&s->buf);
    int rc = net_buf_retrieve_as_string(&s->buf, n, out, out_size);
    int want = n > s->m.len ? -EINVAL : out_size <= n ? -ENOSPC : 0;
    FUZZ_CHECK(rc == want);
    if (rc < 0) {
        FUZZ_CHECK(out[0] == 'x'); /* nothing written */
        return;
    }
    FUZZ_CHECK(memcmp(out, model_bytes(&s->m), n) == 0 && out[n] == '\0' && out[n + 1] == 'x');
    model_consume(&s->m, n);
    check_emptied(s, old_cap);
}

static size_t width_of(unsigned arg)
{
    static const size_t widths[4] = { 1, 2, 4, 8 };
    return widths[arg & 3];
}

static int peek_or_read(struct state *s, size_t width, bool read, uint64_t *v)
{
    uint8_t u8 = 0xAA;
    uint16_t u16 = 0xAAAA;
    uint32_t u32 = 0xAAAAAAAA;
    uint64_t u64 = 0xAAAAAAAAAAAAAAAA;
    int rc;
    switch (width) {
    case 1: rc = read ? net_buf_read_u8(&s->buf, &u8) : net_buf_peek_u8(&s->buf, &u8);
            *v = u8; break;
    case 2: rc = read ? net_buf_read_u16(&s->buf, &u16) : net_buf_peek_u16(&s->buf, &u16);
            *v = u16; break;
    case 4: rc = read ? net_buf_read_u32(&s->buf, &u32) : net_buf_peek_u32(&s->buf, &u32);
            *v = u32; break;
    default: rc = read ? net_buf_read_u64(&s->buf, &u64) : net_buf_peek_u64(&s->buf, &u64);
             *v = u64; break;
    }
    return rc;
}

/* width(1), bit 2 of the same byte: read (consume) instead of peek */
static void op_peek_read_int(struct state *s)
{
    unsigned arg = (unsigned)fuzz_take(s->in, 1);
    size_t width = width_of(arg);
    bool read = arg & 4;
    uint64_t v;
    size_t old_cap = net_buf_capacity(&s->buf);
    int rc = peek_or_read(s, width, read, &v);
    if (s->m.len < width) {
        /* *out untouched: the 0xAA fill must come back */
        FUZZ_CHECK(rc == -ENODATA && v == (0xAAAAAAAAAAAAAAAAu >> (64 - 8 * width)));
        return;
    }
    FUZZ_CHECK(rc == 0);
    uint64_t want = 0;
    for (size_t i = 0; i < width; i++)
        want = want << 8 | model_bytes(&s->m)[i];
    FUZZ_CHECK(v == want);
    if (read) {
        model_consume(&s->m, width);
        check_emptied(s, old_cap);
    }
}

static int put_int(net_buf_t *b, size_t width, bool prepend, uint64_t v)
{
    switch (width) {
    case 1: return prepend ? net_buf_prepend_u8(b, (uint8_t)v) : net_buf_append_u8(b, (uint8_t)v);
    case 2: return prepend ? net_buf_prepend_u16(b, (uint16_t)v) : net_buf_append_u16(b, (uint16_t)v);
    case 4: return prepend ? net_buf_prepend_u32(b, (uint32_t)v) : net_buf_append_u32(b, (uint32_t)v);
    default: return prepend ? net_buf_prepend_u64(b, v) : net_buf_append_u64(b, v);
    }
}

/* width(1) with bit 2: prepend instead of append; value(8) */
static void op_put_int(struct state *s)
{
    unsigned arg = (unsigned)fuzz_take(s->in, 1);
    size_t width = width_of(arg);
    bool prepend = arg & 4;
    uint64_t v = fuzz_take(s->in, 8);
    uint8_t bytes[8];
    for (size_t i = 0; i < width; i++)
        bytes[i] = (uint8_t)(v >> (8 * (width - 1 - i)));
    size_t room = expected_prepend_room(s);
    int rc = put_int(&s->buf, width, prepend, v);
    if (prepend) {
        FUZZ_CHECK(rc == (width <= room ? 0 : -ENOSPC));
        if (rc == 0)
            model_prepend(&s->m, bytes, width);
        return;
    }
    FUZZ_CHECK(rc == 0);
    model_append(&s->m, bytes, width);
}

/* Sizes that can never fit: each must fail with -ENOMEM before any
 * allocation is tried (a real attempt would abort under ASan). */
static size_t impossible_size(const struct state *s, unsigned pick)
{
    switch (pick % 3) {
    case 0: return SIZE_MAX;
    case 1: return NET_BUF_MAX_SIZE + 1 + pick;
    default: return NET_BUF_MAX_SIZE - NET_BUF_PREPEND - s->m.len + 1 + pick;
    }
}

/* n(2); a first byte with bit 7 set asks for an impossible size instead */
static void op_ensure_writable(struct state *s)
{
    unsigned pick = (unsigned)fuzz_take(s->in, 1);
    size_t old_cap = net_buf_capacity(&s->buf), old_writable = net_buf_writable(&s->buf);
    size_t old_prep = net_buf_prependable(&s->buf);
    if (pick & 0x80) {
        FUZZ_CHECK(net_buf_ensure_writable(&s->buf, impossible_size(s, pick)) == -ENOMEM);
        FUZZ_CHECK(net_buf_capacity(&s->buf) == old_cap);
        FUZZ_CHECK(net_buf_prependable(&s->buf) == old_prep);
        return;
    }
    size_t n = fuzz_take(s->in, 2);
    size_t need = NET_BUF_PREPEND + s->m.len + n;
    FUZZ_CHECK(net_buf_ensure_writable(&s->buf, n) == 0);
    FUZZ_CHECK(net_buf_writable(&s->buf) >= n);
    if (old_writable >= n)
        FUZZ_CHECK(net_buf_capacity(&s->buf) == old_cap && net_buf_prependable(&s->buf) == old_prep);
    else if (old_cap >= need) /* reuses the consumed front instead of growing */
        FUZZ_CHECK(net_buf_capacity(&s->buf) == old_cap &&
                   net_buf_prependable(&s->buf) == NET_BUF_PREPEND);
    else
        check_growth(s, old_cap, old_prep, need);
}

/* reserve(2); a first byte with bit 7 set asks for an impossible reserve */
static void op_shrink(struct state *s)
{
    unsigned pick = (unsigned)fuzz_take(s->in, 1);
    if (pick & 0x80) {
        size_t cap = net_buf_capacity(&s->buf);
        FUZZ_CHECK(net_buf_shrink(&s->buf, impossible_size(s, pick)) == -ENOMEM);
        FUZZ_CHECK(net_buf_capacity(&s->buf) == cap);
        return;
    }
    size_t reserve = fuzz_take(s->in, 2);
    FUZZ_CHECK(net_buf_shrink(&s->buf, reserve) == 0);
    size_t want = s->m.len == 0 && reserve == 0 ? 0
                  : block_size(NET_BUF_PREPEND + s->m.len + reserve);
    FUZZ_CHECK(net_buf_capacity(&s->buf) == want);
    FUZZ_CHECK(net_buf_writable(&s->buf) == (want ? want - NET_BUF_PREPEND - s->m.len : 0));
}

static void op_release(struct state *s)
{
    size_t cap = net_buf_capacity(&s->buf);
    int rc = net_buf_release(&s->buf);
    FUZZ_CHECK(rc == (s->m.len ? -EBUSY : 0));
    FUZZ_CHECK(net_buf_capacity(&s->buf) == (rc == 0 ? 0 : cap));
}

static void op_destroy(struct state *s)
{
    net_buf_destroy(&s->buf);
    model_clear(&s->m);
    FUZZ_CHECK(net_buf_capacity(&s->buf) == 0);
}

/* n(2), seed(1): write into begin_write and commit n bytes */
static void op_write_commit(struct state *s)
{
    size_t n = fuzz_take(s->in, 2) % 1024;
    unsigned seed = (unsigned)fuzz_take(s->in, 1);
    size_t writable = net_buf_writable(&s->buf);
    char *w = net_buf_begin_write(&s->buf);
    if (n > writable) {
        FUZZ_CHECK(net_buf_has_written(&s->buf, n) == -EINVAL);
        return;
    }
    uint8_t data[1024];
    fill(data, n, seed);
    if (n)
        memcpy(w, data, n);
    FUZZ_CHECK(net_buf_has_written(&s->buf, n) == 0);
    model_append(&s->m, data, n);
}

static void open_pipe(struct state *s)
{
    if (s->pipe_fd[0] >= 0)
        return;
    FUZZ_CHECK(pipe2(s->pipe_fd, O_NONBLOCK | O_CLOEXEC) == 0);
}

/* n(2) modulo BIG, seed(1): n bytes through a pipe into net_buf_read_fd;
 * 0: an empty pipe, which must give -EAGAIN */
static void op_read_fd(struct state *s)
{
    static uint8_t data[BIG];
    size_t n = fuzz_take(s->in, 2) % BIG;
    fill(data, n, (unsigned)fuzz_take(s->in, 1));
    if (!room_for(s, n))
        return;
    open_pipe(s);
    ssize_t put = n ? write(s->pipe_fd[1], data, n) : 0;
    FUZZ_CHECK(put >= 0);
    ssize_t got = net_buf_read_fd(&s->buf, s->pipe_fd[0]);
    /* A pipe holds at most 64 KiB by default, and read_fd takes that much
     * in one call whatever the buffer's free space. */
    FUZZ_CHECK(got == (put > 0 ? put : -EAGAIN));
    if (got > 0)
        model_append(&s->m, data, (size_t)got);
}

/* offset(2), len(2): appends a run of the buffer's own readable bytes, as
 * in net_buf_append(buf, net_buf_peek(buf) + off, n): the call may grow or
 * compact the storage those bytes live in. */
static void op_append_self(struct state *s)
{
    size_t off = take_count(s), n = take_count(s);
    if (off > s->m.len || n > s->m.len - off || !room_for(s, n))
        return;
    uint8_t *copy = malloc(n ? n : 1);
    FUZZ_CHECK(copy != NULL);
    if (n)
        memcpy(copy, model_bytes(&s->m) + off, n);
    FUZZ_CHECK(net_buf_append(&s->buf, net_buf_peek(&s->buf) + off, n) == 0);
    model_append(&s->m, copy, n);
    free(copy);
}

typedef void (*op_fn)(struct state *);

static const op_fn ops[] = {
    op_append, op_append_big, op_prepend, op_retrieve, op_find, op_retrieve_until,
    op_retrieve_all, op_retrieve_as_string, op_peek_read_int, op_put_int,
    op_ensure_writable, op_shrink, op_release, op_destroy, op_write_commit, op_read_fd,
    op_append_self,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_input in = { data, size };
    struct state s = { .buf = NET_BUF_INIT, .in = &in, .pipe_fd = { -1, -1 } };
    model_reserve(&s.m, 0, 0); /* model_bytes() never sees NULL */
    for (int i = 0; i < MAX_OPS && in.left > 0; i++) {
        ops[fuzz_take(&in, 1) % (sizeof ops / sizeof ops[0])](&s);
        check_buffer(&s, i % FULL_EVERY == 0);
    }
    check_buffer(&s, true);
    net_buf_destroy(&s.buf);
    free(s.m.data);
    if (s.pipe_fd[0] >= 0) {
        close(s.pipe_fd[0]);
        close(s.pipe_fd[1]);
    }
    return 0;
}
