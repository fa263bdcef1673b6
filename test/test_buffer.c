#include "harness.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <net/buffer.h>

#include "loop/alloc_internal.h"
#include "net_test_util.h"

/* The readable bytes of b are exactly the n bytes at exp. */
#define CHECK_CONTENT(b, exp, n)                                              \
    do {                                                                      \
        CHECK_EQ(net_buf_readable(b), (n));                                   \
        CHECK_MEM_EQ(net_buf_peek(b), (exp), (n));                            \
    } while (0)

/* Where the storage starts, to tell an in-place move from a reallocation. */
static const char *storage_base(const net_buf_t *b)
{
    return net_buf_peek(b) - net_buf_prependable(b);
}

static void fill_pattern(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 31 + seed) % 251);
}

static void make_pipe(int fds[2], int flags)
{
    CHECK_EQ(pipe2(fds, O_CLOEXEC | flags), 0);
}

/* ---- Life cycle and memory ------------------------------------------- */

TEST(buf_init_holds_no_memory)
{
    net_buf_t a;
    memset(&a, 0xab, sizeof a);
    net_buf_init(&a);
    net_buf_t b = NET_BUF_INIT;
    const net_buf_t *bufs[] = { &a, &b };
    for (int i = 0; i < 2; i++) {
        CHECK(bufs[i]->data == NULL);
        CHECK_EQ(net_buf_capacity(bufs[i]), 0);
        CHECK_EQ(net_buf_readable(bufs[i]), 0);
        CHECK_EQ(net_buf_writable(bufs[i]), 0);
        CHECK_EQ(net_buf_prependable(bufs[i]), 0);
        CHECK(net_buf_peek(bufs[i]) != NULL);
        CHECK(net_buf_find_crlf(bufs[i]) == NULL);
    }
    CHECK(net_buf_begin_write(&a) == NULL);
    net_buf_destroy(&a);
    net_buf_destroy(&b);
    CHECK_EQ(net_buf_capacity(&a), 0);
}

TEST(buf_first_small_append_allocates_small_block)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&b, "0123456789", 10));
    CHECK(net_buf_capacity(&b) >= NET_BUF_PREPEND + 10);
    CHECK(net_buf_capacity(&b) <= 256);
    CHECK_EQ(net_buf_prependable(&b), NET_BUF_PREPEND);
    CHECK_CONTENT(&b, "0123456789", 10);
    net_buf_destroy(&b);
}

TEST(buf_empty_append_allocates_nothing)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&b, NULL, 0));
    CHECK_OK(net_buf_append(&b, "x", 0));
    CHECK_OK(net_buf_ensure_writable(&b, 0));
    CHECK_OK(net_buf_prepend(&b, NULL, 0));
    CHECK_EQ(net_buf_capacity(&b), 0);
}

TEST(buf_destroy_then_reuse)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&b, "abc", 3));
    net_buf_destroy(&b);
    CHECK_EQ(net_buf_capacity(&b), 0);
    CHECK_EQ(net_buf_readable(&b), 0);
    CHECK_OK(net_buf_append(&b, "xyz", 3));
    CHECK_CONTENT(&b, "xyz", 3);
    net_buf_destroy(&b);
}

TEST(buf_release_frees_only_when_empty)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&b, "data", 4));
    size_t cap = net_buf_capacity(&b);
    CHECK_EQ(net_buf_release(&b), -EBUSY);
    CHECK_EQ(net_buf_capacity(&b), cap);
    CHECK_CONTENT(&b, "data", 4);
    net_buf_retrieve_all(&b);
    CHECK_EQ(net_buf_release(&b), 0);
    CHECK_EQ(net_buf_capacity(&b), 0);
    CHECK(b.data == NULL);
    CHECK_EQ(net_buf_release(&b), 0);
    CHECK_OK(net_buf_append(&b, "again", 5));
    CHECK_CONTENT(&b, "again", 5);
    net_buf_destroy(&b);
}

TEST(buf_shrink_keeps_readable_bytes)
{
    net_buf_t b = NET_BUF_INIT;
    unsigned char data[10000];
    fill_pattern(data, sizeof data, 7);
    CHECK_OK(net_buf_append(&b, data, sizeof data));
    CHECK_OK(net_buf_retrieve(&b, 9900));
    CHECK_OK(net_buf_shrink(&b, 0));
    CHECK_EQ(net_buf_capacity(&b), NET_BUF_PREPEND + 100);
    CHECK_EQ(net_buf_prependable(&b), NET_BUF_PREPEND);
    CHECK_EQ(net_buf_writable(&b), 0);
    CHECK_CONTENT(&b, data + 9900, 100);
    CHECK_OK(net_buf_shrink(&b, 50));
    CHECK_EQ(net_buf_capacity(&b), NET_BUF_PREPEND + 100 + 50);
    CHECK_EQ(net_buf_writable(&b), 50);
    CHECK_CONTENT(&b, data + 9900, 100);
    net_buf_destroy(&b);
}

TEST(buf_shrink_keeps_prepended_bytes)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&b, "body", 4));
    CHECK_OK(net_buf_prepend(&b, "hd", 2));
    CHECK_OK(net_buf_shrink(&b, 0));
    CHECK_EQ(net_buf_capacity(&b), NET_BUF_PREPEND + 6);
    CHECK_EQ(net_buf_prependable(&b), NET_BUF_PREPEND);
    CHECK_CONTENT(&b, "hdbody", 6);
    net_buf_destroy(&b);
}

TEST(buf_shrink_empty_frees_storage)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&b, "abc", 3));
    net_buf_retrieve_all(&b);
    CHECK_OK(net_buf_shrink(&b, 0));
    CHECK_EQ(net_buf_capacity(&b), 0);
    CHECK(b.data == NULL);
    CHECK_OK(net_buf_shrink(&b, 0));
    CHECK_EQ(net_buf_capacity(&b), 0);
}

TEST(buf_shrink_huge_reserve_returns_enomem)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&b, "abc", 3));
    size_t cap = net_buf_capacity(&b);
    CHECK_EQ(net_buf_shrink(&b, SIZE_MAX), -ENOMEM);
    CHECK_EQ(net_buf_shrink(&b, NET_BUF_MAX_SIZE), -ENOMEM);
    CHECK_EQ(net_buf_capacity(&b), cap);
    CHECK_CONTENT(&b, "abc", 3);
    net_buf_destroy(&b);
}

/* ---- Append, peek, retrieve ------------------------------------------ */

TEST(buf_append_peek_retrieve)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&b, "hello ", 6));
    CHECK_OK(net_buf_append(&b, "world", 5));
    CHECK_CONTENT(&b, "hello world", 11);
    CHECK_OK(net_buf_retrieve(&b, 6));
    CHECK_EQ(net_buf_prependable(&b), NET_BUF_PREPEND + 6);
    CHECK_CONTENT(&b, "world", 5);
    CHECK_OK(net_buf_retrieve(&b, 0));
    CHECK_CONTENT(&b, "world", 5);
    CHECK_OK(net_buf_retrieve(&b, 5));
    CHECK_EQ(net_buf_readable(&b), 0);
    /* Emptying rewinds: the whole prepend area is back. */
    CHECK_EQ(net_buf_prependable(&b), NET_BUF_PREPEND);
    CHECK_EQ(net_buf_writable(&b), net_buf_capacity(&b) - NET_BUF_PREPEND);
    net_buf_destroy(&b);
}

TEST(buf_append_binary_with_nul_bytes)
{
    net_buf_t b = NET_BUF_INIT;
    static const char bin[] = { 'a', 0, 'b', 0, 0, (char)0xff };
    CHECK_OK(net_buf_append(&b, bin, sizeof bin));
    CHECK_CONTENT(&b, bin, sizeof bin);
    net_buf_destroy(&b);
}

TEST(buf_retrieve_all_keeps_storage)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&b, "abc", 3));
    size_t cap = net_buf_capacity(&b);
    net_buf_retrieve_all(&b);
    CHECK_EQ(net_buf_readable(&b), 0);
    CHECK_EQ(net_buf_capacity(&b), cap);
    net_buf_retrieve_all(&b);
    net_buf_destroy(&b);
    net_buf_retrieve_all(&b);
    CHECK_EQ(net_buf_capacity(&b), 0);
}

TEST(buf_retrieve_beyond_readable_rejected)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_EQ(net_buf_retrieve(&b, 1), -EINVAL);
    CHECK_OK(net_buf_append(&b, "abcd", 4));
    CHECK_EQ(net_buf_retrieve(&b, 5), -EINVAL);
    CHECK_EQ(net_buf_retrieve(&b, SIZE_MAX), -EINVAL);
    CHECK_CONTENT(&b, "abcd", 4);
    CHECK_OK(net_buf_retrieve(&b, 1));
    CHECK_EQ(net_buf_retrieve(&b, 4), -EINVAL);
    CHECK_CONTENT(&b, "bcd", 3);
    net_buf_destroy(&b);
}

TEST(buf_retrieve_until_checks_range)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_retrieve_until(&b, net_buf_peek(&b)));
    CHECK_OK(net_buf_append(&b, "line1\r\nrest", 11));
    const char *p = net_buf_peek(&b);
    char elsewhere[4];
    CHECK_EQ(net_buf_retrieve_until(&b, p + 12), -EINVAL);
    CHECK_EQ(net_buf_retrieve_until(&b, p - 1), -EINVAL);
    CHECK_EQ(net_buf_retrieve_until(&b, elsewhere), -EINVAL);
    CHECK_EQ(net_buf_retrieve_until(&b, NULL), -EINVAL);
    CHECK_CONTENT(&b, "line1\r\nrest", 11);
    CHECK_OK(net_buf_retrieve_until(&b, net_buf_find_crlf(&b) + 2));
    CHECK_CONTENT(&b, "rest", 4);
    CHECK_OK(net_buf_retrieve_until(&b, net_buf_peek(&b) + 4));
    CHECK_EQ(net_buf_readable(&b), 0);
    net_buf_destroy(&b);
}

TEST(buf_retrieve_as_string_copies_and_consumes)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&b, "key=value", 9));
    char out[8];
    memset(out, 'X', sizeof out);
    CHECK_OK(net_buf_retrieve_as_string(&b, 3, out, sizeof out));
    CHECK_MEM_EQ(out, "key", 4);
    CHECK_CONTENT(&b, "=value", 6);
    /* Needs room for the NUL: 6 bytes + 1 does not fit in 6. */
    CHECK_EQ(net_buf_retrieve_as_string(&b, 6, out, 6), -ENOSPC);
    CHECK_EQ(net_buf_retrieve_as_string(&b, 7, out, sizeof out), -EINVAL);
    CHECK_EQ(net_buf_retrieve_as_string(&b, 1, NULL, 8), -EINVAL);
    CHECK_CONTENT(&b, "=value", 6);
    CHECK_OK(net_buf_retrieve_as_string(&b, 6, out, 7));
    CHECK_MEM_EQ(out, "=value", 7);
    CHECK_EQ(net_buf_readable(&b), 0);
    CHECK_OK(net_buf_retrieve_as_string(&b, 0, out, 1));
    CHECK_EQ(out[0], '\0');
    net_buf_destroy(&b);
}

/* ---- Prepend ---------------------------------------------------------- */

TEST(buf_prepend_into_cheap_area)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&b, "payload", 7));
    const char *base = storage_base(&b);
    CHECK_OK(net_buf_prepend(&b, "\x00\x07", 2));
    CHECK_EQ(net_buf_prependable(&b), NET_BUF_PREPEND - 2);
    CHECK(storage_base(&b) == base);
    CHECK_CONTENT(&b, "\x00\x07payload", 9);
    net_buf_destroy(&b);
}

TEST(buf_prepend_rejected_when_full)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&b, "x", 1));
    CHECK_EQ(net_buf_prepend(&b, "123456789", NET_BUF_PREPEND + 1), -ENOSPC);
    CHECK_OK(net_buf_prepend(&b, "12345678", NET_BUF_PREPEND));
    CHECK_EQ(net_buf_prependable(&b), 0);
    CHECK_EQ(net_buf_prepend(&b, "z", 1), -ENOSPC);
    CHECK_CONTENT(&b, "12345678x", 9);
    net_buf_destroy(&b);
}

TEST(buf_prepend_uses_retrieved_space)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&b, "0123456789abcdef", 16));
    CHECK_OK(net_buf_retrieve(&b, 10));
    CHECK_EQ(net_buf_prependable(&b), NET_BUF_PREPEND + 10);
    CHECK_OK(net_buf_prepend(&b, "HEADERXYZ!", 10));
    CHECK_CONTENT(&b, "HEADERXYZ!abcdef", 16);
    net_buf_destroy(&b);
}

TEST(buf_prepend_on_buffer_without_memory)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_EQ(net_buf_prepend(&b, "123456789", NET_BUF_PREPEND + 1), -ENOSPC);
    CHECK_EQ(net_buf_capacity(&b), 0);
    CHECK_OK(net_buf_prepend(&b, "\x00\x00\x00\x00", 4));
    CHECK_CONTENT(&b, "\x00\x00\x00\x00", 4);
    CHECK_EQ(net_buf_prependable(&b), NET_BUF_PREPEND - 4);
    net_buf_destroy(&b);
}

/* ---- Integers --------------------------------------------------------- */

TEST(buf_int_append_network_byte_order_on_wire)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append_u8(&b, 0xa1));
    CHECK_OK(net_buf_append_u16(&b, 0xb1b2));
    CHECK_OK(net_buf_append_u32(&b, 0xc1c2c3c4u));
    CHECK_OK(net_buf_append_u64(&b, 0xd1d2d3d4d5d6d7d8ull));
    static const unsigned char wire[] = {
        0xa1, 0xb1, 0xb2, 0xc1, 0xc2, 0xc3, 0xc4,
        0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8,
    };
    CHECK_CONTENT(&b, wire, sizeof wire);
    net_buf_destroy(&b);
}

TEST(buf_int_round_trip)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append_u8(&b, 0xfe));
    CHECK_OK(net_buf_append_u16(&b, 0x0102));
    CHECK_OK(net_buf_append_u32(&b, 0xdeadbeefu));
    CHECK_OK(net_buf_append_u64(&b, 0x8000000000000001ull));
    CHECK_OK(net_buf_append_u64(&b, 0));
    uint8_t v8 = 0;
    uint16_t v16 = 0;
    uint32_t v32 = 0;
    uint64_t v64 = 1;
    CHECK_OK(net_buf_read_u8(&b, &v8));
    CHECK_EQ(v8, 0xfe);
    CHECK_OK(net_buf_read_u16(&b, &v16));
    CHECK_EQ(v16, 0x0102);
    CHECK_OK(net_buf_read_u32(&b, &v32));
    CHECK_EQ(v32, 0xdeadbeefu);
    CHECK_OK(net_buf_read_u64(&b, &v64));
    CHECK(v64 == 0x8000000000000001ull);
    CHECK_OK(net_buf_read_u64(&b, &v64));
    CHECK(v64 == 0);
    CHECK_EQ(net_buf_readable(&b), 0);
    net_buf_destroy(&b);
}

TEST(buf_int_peek_does_not_consume)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&b, "\x12\x34\x56\x78\x9a\xbc\xde\xf0", 8));
    uint8_t v8;
    uint16_t v16;
    uint32_t v32;
    uint64_t v64;
    CHECK_OK(net_buf_peek_u8(&b, &v8));
    CHECK_EQ(v8, 0x12);
    CHECK_OK(net_buf_peek_u16(&b, &v16));
    CHECK_EQ(v16, 0x1234);
    CHECK_OK(net_buf_peek_u32(&b, &v32));
    CHECK_EQ(v32, 0x12345678u);
    CHECK_OK(net_buf_peek_u64(&b, &v64));
    CHECK(v64 == 0x123456789abcdef0ull);
    CHECK_EQ(net_buf_readable(&b), 8);
    net_buf_destroy(&b);
}

TEST(buf_int_prepend_network_byte_order)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&b, "msg", 3));
    CHECK_OK(net_buf_prepend_u32(&b, 3));
    CHECK_OK(net_buf_prepend_u16(&b, 0xcafe));
    CHECK_OK(net_buf_prepend_u8(&b, 0x7f));
    CHECK_EQ(net_buf_prependable(&b), 1);
    CHECK_EQ(net_buf_prepend_u16(&b, 1), -ENOSPC);
    CHECK_CONTENT(&b, "\x7f\xca\xfe\x00\x00\x00\x03msg", 10);
    net_buf_retrieve_all(&b);
    CHECK_OK(net_buf_append(&b, "m", 1));
    CHECK_OK(net_buf_prepend_u64(&b, 0x0102030405060708ull));
    CHECK_CONTENT(&b, "\x01\x02\x03\x04\x05\x06\x07\x08m", 9);
    net_buf_destroy(&b);
}

TEST(buf_int_read_too_few_bytes_fails_without_consuming)
{
    net_buf_t b = NET_BUF_INIT;
    uint8_t v8 = 0x55;
    uint16_t v16 = 0x5555;
    uint32_t v32 = 0x55555555u;
    uint64_t v64 = 0x5555555555555555ull;
    CHECK_EQ(net_buf_read_u8(&b, &v8), -ENODATA);
    CHECK_EQ(net_buf_peek_u8(&b, &v8), -ENODATA);
    CHECK_OK(net_buf_append(&b, "\x01", 1));
    CHECK_EQ(net_buf_read_u16(&b, &v16), -ENODATA);
    CHECK_OK(net_buf_append(&b, "\x02\x03", 2));
    CHECK_EQ(net_buf_read_u32(&b, &v32), -ENODATA);
    CHECK_EQ(net_buf_peek_u32(&b, &v32), -ENODATA);
    CHECK_OK(net_buf_append(&b, "\x04\x05\x06\x07", 4));
    CHECK_EQ(net_buf_read_u64(&b, &v64), -ENODATA);
    CHECK_EQ(net_buf_peek_u64(&b, &v64), -ENODATA);
    CHECK_EQ(v8, 0x55);
    CHECK_EQ(v16, 0x5555);
    CHECK_EQ(v32, 0x55555555u);
    CHECK(v64 == 0x5555555555555555ull);
    CHECK_CONTENT(&b, "\x01\x02\x03\x04\x05\x06\x07", 7);
    CHECK_OK(net_buf_read_u32(&b, &v32));
    CHECK_EQ(v32, 0x01020304u);
    CHECK_CONTENT(&b, "\x05\x06\x07", 3);
    net_buf_destroy(&b);
}

/* ---- Searching -------------------------------------------------------- */

TEST(buf_find_crlf)
{
    net_buf_t b = NET_BUF_INIT;
    static const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK_OK(net_buf_append(&b, req, sizeof req - 1));
    const char *p = net_buf_peek(&b);
    CHECK(net_buf_find_crlf(&b) == p + 14);
    CHECK(net_buf_find_crlf_at(&b, 14) == p + 14);
    CHECK(net_buf_find_crlf_at(&b, 15) == p + 23);
    CHECK(net_buf_find_crlf_at(&b, 25) == p + 25);
    CHECK(net_buf_find_crlf_at(&b, 26) == NULL);
    CHECK(net_buf_find_crlf_at(&b, 27) == NULL);
    CHECK(net_buf_find_crlf_at(&b, 28) == NULL);
    CHECK(net_buf_find_crlf_at(&b, SIZE_MAX) == NULL);
    net_buf_destroy(&b);
}

TEST(buf_find_crlf_not_found)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK(net_buf_find_crlf(&b) == NULL);
    CHECK_OK(net_buf_append(&b, "no line\nend\r", 12));
    CHECK(net_buf_find_crlf(&b) == NULL);
    net_buf_destroy(&b);
}

TEST(buf_find_crlf_split_at_end)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&b, "abc\r", 4));
    CHECK(net_buf_find_crlf(&b) == NULL);
    CHECK_OK(net_buf_append(&b, "\n", 1));
    CHECK(net_buf_find_crlf(&b) == net_buf_peek(&b) + 3);
    net_buf_destroy(&b);
}

TEST(buf_find_crlf_ignores_retrieved_bytes)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&b, "a\r\nbc", 5));
    CHECK_OK(net_buf_retrieve(&b, 3));
    CHECK(net_buf_find_crlf(&b) == NULL);
    CHECK(net_buf_find_eol(&b) == NULL);
    net_buf_destroy(&b);
}

TEST(buf_find_eol)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK(net_buf_find_eol(&b) == NULL);
    CHECK_OK(net_buf_append(&b, "one\ntwo\r\nthree", 14));
    const char *p = net_buf_peek(&b);
    CHECK(net_buf_find_eol(&b) == p + 3);
    CHECK(net_buf_find_eol_at(&b, 4) == p + 8);
    CHECK(net_buf_find_eol_at(&b, 9) == NULL);
    CHECK(net_buf_find_eol_at(&b, 14) == NULL);
    CHECK(net_buf_find_eol_at(&b, 15) == NULL);
    net_buf_destroy(&b);
}

/* ---- Growth ----------------------------------------------------------- */

TEST(buf_growth_moves_in_place_when_front_has_room)
{
    net_buf_t b = NET_BUF_INIT;
    unsigned char data[256];
    fill_pattern(data, sizeof data, 1);
    CHECK_OK(net_buf_append(&b, data, 100));
    size_t cap = net_buf_capacity(&b);
    const char *base = storage_base(&b);
    CHECK_OK(net_buf_retrieve(&b, 90));
    size_t more = net_buf_writable(&b) + 10;
    CHECK(NET_BUF_PREPEND + 10 + more <= cap);
    CHECK_OK(net_buf_append(&b, data + 100, more));
    CHECK_EQ(net_buf_capacity(&b), cap);
    CHECK(storage_base(&b) == base);
    CHECK_EQ(net_buf_prependable(&b), NET_BUF_PREPEND);
    CHECK_CONTENT(&b, data + 90, 10 + more);
    net_buf_destroy(&b);
}

TEST(buf_growth_copies_only_readable_bytes)
{
    /* A large consumed prefix is not carried into the new block: the
     * readable bytes land right after the prepend area and the capacity is
     * sized from them, not from the old write position. */
    net_buf_t b = NET_BUF_INIT;
    static unsigned char data[100000];
    fill_pattern(data, sizeof data, 3);
    CHECK_OK(net_buf_append(&b, data, 60000));
    CHECK_OK(net_buf_retrieve(&b, 59990));
    size_t old_cap = net_buf_capacity(&b);
    size_t more = old_cap; /* too much for an in-place move */
    CHECK(more <= sizeof data);
    CHECK_OK(net_buf_append(&b, data, more));
    size_t need = NET_BUF_PREPEND + 10 + more;
    CHECK(net_buf_capacity(&b) >= need);
    CHECK(net_buf_capacity(&b) < 2 * need);
    CHECK(net_buf_capacity(&b) >= 2 * old_cap);
    CHECK_EQ(net_buf_prependable(&b), NET_BUF_PREPEND);
    CHECK_EQ(net_buf_readable(&b), 10 + more);
    CHECK_MEM_EQ(net_buf_peek(&b), data + 59990, 10);
    CHECK_MEM_EQ(net_buf_peek(&b) + 10, data, more);
    net_buf_destroy(&b);
}

TEST(buf_growth_is_geometric)
{
    net_buf_t b = NET_BUF_INIT;
    int reallocations = 0;
    size_t cap = 0;
    for (unsigned i = 0; i < 200000; i++) {
        unsigned char c = (unsigned char)(i % 251);
        CHECK_OK(net_buf_append(&b, &c, 1));
        if (net_buf_capacity(&b) != cap) {
            CHECK(net_buf_capacity(&b) >= 2 * cap);
            cap = net_buf_capacity(&b);
            reallocations++;
        }
    }
    CHECK(reallocations <= 20);
    const unsigned char *p = (const unsigned char *)net_buf_peek(&b);
    for (unsigned i = 0; i < 200000; i++)
        CHECK_EQ(p[i], i % 251);
    net_buf_destroy(&b);
}

TEST(buf_steady_stream_capacity_stays_bounded)
{
    /* A reader that keeps up to ~1000 bytes pending while the writer appends
     * forever must not make the capacity creep (the consumed prefix is
     * reclaimed, not kept). */
    net_buf_t b = NET_BUF_INIT;
    unsigned char chunk[300];
    fill_pattern(chunk, sizeof chunk, 5);
    for (int i = 0; i < 100000; i++) {
        CHECK_OK(net_buf_append(&b, chunk, sizeof chunk));
        if (net_buf_readable(&b) > 1000)
            CHECK_OK(net_buf_retrieve(&b, net_buf_readable(&b) - 100));
    }
    CHECK(net_buf_capacity(&b) <= 4096);
    net_buf_destroy(&b);
}

TEST(buf_ensure_writable_huge_returns_enomem)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_EQ(net_buf_ensure_writable(&b, SIZE_MAX), -ENOMEM);
    CHECK_EQ(net_buf_capacity(&b), 0);
    CHECK_OK(net_buf_append(&b, "keep", 4));
    size_t cap = net_buf_capacity(&b);
    CHECK_EQ(net_buf_ensure_writable(&b, SIZE_MAX), -ENOMEM);
    CHECK_EQ(net_buf_ensure_writable(&b, SIZE_MAX - NET_BUF_PREPEND), -ENOMEM);
    CHECK_EQ(net_buf_ensure_writable(&b, NET_BUF_MAX_SIZE), -ENOMEM);
    CHECK_EQ(net_buf_ensure_writable(&b, NET_BUF_MAX_SIZE - NET_BUF_PREPEND - 3), -ENOMEM);
    CHECK_EQ(net_buf_capacity(&b), cap);
    CHECK_CONTENT(&b, "keep", 4);
    net_buf_destroy(&b);
}

TEST(buf_begin_write_has_written)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK(net_buf_begin_write(&b) == NULL);
    CHECK_EQ(net_buf_has_written(&b, 1), -EINVAL);
    CHECK_OK(net_buf_has_written(&b, 0));
    CHECK_OK(net_buf_ensure_writable(&b, 16));
    CHECK(net_buf_writable(&b) >= 16);
    char *w = net_buf_begin_write(&b);
    CHECK(w != NULL);
    memcpy(w, "direct", 6);
    CHECK_OK(net_buf_has_written(&b, 6));
    CHECK_CONTENT(&b, "direct", 6);
    CHECK_EQ(net_buf_has_written(&b, net_buf_writable(&b) + 1), -EINVAL);
    CHECK_EQ(net_buf_has_written(&b, SIZE_MAX), -EINVAL);
    CHECK_CONTENT(&b, "direct", 6);
    net_buf_destroy(&b);
}

TEST(buf_null_arguments_rejected)
{
    net_buf_t b = NET_BUF_INIT;
    uint32_t v32;
    char out[4];
    net_buf_init(NULL);
    net_buf_destroy(NULL);
    net_buf_retrieve_all(NULL);
    CHECK_EQ(net_buf_readable(NULL), 0);
    CHECK_EQ(net_buf_writable(NULL), 0);
    CHECK_EQ(net_buf_prependable(NULL), 0);
    CHECK_EQ(net_buf_capacity(NULL), 0);
    CHECK(net_buf_peek(NULL) == NULL);
    CHECK(net_buf_begin_write(NULL) == NULL);
    CHECK(net_buf_find_crlf(NULL) == NULL);
    CHECK(net_buf_find_eol(NULL) == NULL);
    CHECK_EQ(net_buf_append(NULL, "x", 1), -EINVAL);
    CHECK_EQ(net_buf_append(&b, NULL, 1), -EINVAL);
    CHECK_EQ(net_buf_prepend(&b, NULL, 1), -EINVAL);
    CHECK_EQ(net_buf_retrieve(NULL, 0), -EINVAL);
    CHECK_EQ(net_buf_retrieve_as_string(NULL, 0, out, sizeof out), -EINVAL);
    CHECK_EQ(net_buf_ensure_writable(NULL, 1), -EINVAL);
    CHECK_EQ(net_buf_has_written(NULL, 0), -EINVAL);
    CHECK_EQ(net_buf_release(NULL), -EINVAL);
    CHECK_EQ(net_buf_shrink(NULL, 0), -EINVAL);
    CHECK_EQ(net_buf_append_u32(NULL, 1), -EINVAL);
    CHECK_EQ(net_buf_read_u32(NULL, &v32), -EINVAL);
    CHECK_OK(net_buf_append_u32(&b, 1));
    CHECK_EQ(net_buf_read_u32(&b, NULL), -EINVAL);
    CHECK_EQ(net_buf_peek_u64(&b, NULL), -EINVAL);
    CHECK_EQ(net_buf_read_fd(NULL, 0), -EINVAL);
    CHECK_EQ(net_buf_readable(&b), 4);
    net_buf_destroy(&b);
}

/* ---- Reading from a file descriptor ---------------------------------- */

TEST(buf_read_fd_small_read_allocates_small)
{
    int fds[2];
    make_pipe(fds, 0);
    CHECK_EQ(write(fds[1], "0123456789", 10), 10);
    net_buf_t b = NET_BUF_INIT;
    CHECK_EQ(net_buf_read_fd(&b, fds[0]), 10);
    CHECK_CONTENT(&b, "0123456789", 10);
    CHECK(net_buf_capacity(&b) <= 256);
    net_buf_destroy(&b);
    close(fds[0]);
    close(fds[1]);
}

TEST(buf_read_fd_appends_after_existing_bytes)
{
    int fds[2];
    make_pipe(fds, 0);
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&b, "head:", 5));
    CHECK_EQ(write(fds[1], "tail", 4), 4);
    CHECK_EQ(net_buf_read_fd(&b, fds[0]), 4);
    CHECK_CONTENT(&b, "head:tail", 9);
    net_buf_destroy(&b);
    close(fds[0]);
    close(fds[1]);
}

TEST(buf_read_fd_large_read_overflows_to_stack)
{
    enum { TOTAL = 300000, EXTRA = 65536 };
    int fds[2];
    make_pipe(fds, O_NONBLOCK);
    if (fcntl(fds[1], F_SETPIPE_SZ, 512 * 1024) < 512 * 1024)
        SKIP("cannot enlarge the pipe to hold more than one read");
    static unsigned char data[TOTAL];
    fill_pattern(data, sizeof data, 9);
    CHECK_EQ(write(fds[1], data, TOTAL), TOTAL);

    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_append(&b, "prefix", 6));
    CHECK_OK(net_buf_ensure_writable(&b, 1000));
    size_t writable = net_buf_writable(&b);
    CHECK(writable < EXTRA);
    /* One readv fills the free space and the 64 KiB stack buffer. */
    CHECK_EQ(net_buf_read_fd(&b, fds[0]), (ssize_t)(writable + EXTRA));
    CHECK_EQ(net_buf_readable(&b), 6 + writable + EXTRA);
    size_t got = writable + EXTRA;
    while (got < TOTAL) {
        ssize_t n = net_buf_read_fd(&b, fds[0]);
        CHECK(n > 0);
        got += (size_t)n;
    }
    CHECK_EQ(got, TOTAL);
    CHECK_EQ(net_buf_read_fd(&b, fds[0]), -EAGAIN);
    CHECK_EQ(net_buf_readable(&b), 6 + TOTAL);
    CHECK_MEM_EQ(net_buf_peek(&b), "prefix", 6);
    CHECK_MEM_EQ(net_buf_peek(&b) + 6, data, TOTAL);
    net_buf_destroy(&b);
    close(fds[0]);
    close(fds[1]);
}

TEST(buf_read_fd_eof_returns_zero)
{
    int fds[2];
    make_pipe(fds, 0);
    CHECK_EQ(write(fds[1], "last", 4), 4);
    close(fds[1]);
    net_buf_t b = NET_BUF_INIT;
    CHECK_EQ(net_buf_read_fd(&b, fds[0]), 4);
    CHECK_EQ(net_buf_read_fd(&b, fds[0]), 0);
    CHECK_CONTENT(&b, "last", 4);
    net_buf_destroy(&b);
    CHECK_EQ(net_buf_read_fd(&b, fds[0]), 0);
    CHECK_EQ(net_buf_capacity(&b), 0);
    close(fds[0]);
}

TEST(buf_read_fd_empty_nonblocking_returns_eagain)
{
    int fds[2];
    make_pipe(fds, O_NONBLOCK);
    net_buf_t b = NET_BUF_INIT;
    CHECK_EQ(net_buf_read_fd(&b, fds[0]), -EAGAIN);
    CHECK_EQ(net_buf_capacity(&b), 0);
    CHECK_OK(net_buf_append(&b, "kept", 4));
    CHECK_EQ(net_buf_read_fd(&b, fds[0]), -EAGAIN);
    CHECK_CONTENT(&b, "kept", 4);
    net_buf_destroy(&b);
    close(fds[0]);
    close(fds[1]);
}

TEST(buf_read_fd_bad_fd_returns_ebadf)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_EQ(net_buf_read_fd(&b, -1), -EBADF);
    CHECK_EQ(net_buf_capacity(&b), 0);
}

/* Regression, found by test/fuzz/fuzz_buffer.c: appending the buffer's own
 * readable bytes (net_buf_peek() + off) read them after growth had freed
 * them (heap-use-after-free), or after compaction had moved them (wrong
 * bytes, silently). Both paths are taken here, checked against a copy. */
TEST(buf_append_own_bytes_reg)
{
    net_buf_t b = NET_BUF_INIT;
    char want[512];
    size_t len = 120;
    for (size_t i = 0; i < len; i++)
        want[i] = (char)('a' + i % 26);
    CHECK_OK(net_buf_append(&b, want, len));
    CHECK_EQ(net_buf_writable(&b), 0); /* the next append must grow */
    size_t cap = net_buf_capacity(&b);
    CHECK_OK(net_buf_append(&b, net_buf_peek(&b) + 20, 100));
    memcpy(want + len, want + 20, 100);
    len += 100;
    CHECK(net_buf_capacity(&b) > cap);
    CHECK_CONTENT(&b, want, len);

    /* Consume most of it and fill the tail: the next append then fits only
     * by moving the readable bytes to the front. */
    CHECK_OK(net_buf_retrieve(&b, 200));
    memmove(want, want + 200, len - 200);
    len -= 200;
    size_t tail = net_buf_writable(&b);
    memset(want + len, 'z', tail);
    CHECK_OK(net_buf_append(&b, want + len, tail));
    len += tail;
    cap = net_buf_capacity(&b);
    CHECK_OK(net_buf_append(&b, net_buf_peek(&b), len));
    memcpy(want + len, want, len);
    len *= 2;
    CHECK_EQ(net_buf_capacity(&b), cap); /* compacted, not grown */
    CHECK_CONTENT(&b, want, len);
    net_buf_destroy(&b);
}

/* ---- Large storage: mapped, and given back ---------------------------------- */

/* n bytes of fill_pattern(seed), malloc'd: the expected contents. */
static unsigned char *pattern(size_t n, unsigned seed)
{
    unsigned char *p = malloc(n);
    CHECK(p != NULL);
    fill_pattern(p, n, seed);
    return p;
}

static void append_chunks(net_buf_t *b, const unsigned char *src, size_t n, size_t chunk)
{
    for (size_t off = 0; off < n; off += chunk)
        CHECK_OK(net_buf_append(b, src + off, n - off < chunk ? n - off : chunk));
}

/* Storage at the threshold and above is a mapping of whole pages. */
static void check_capacity_kind(const net_buf_t *b)
{
    size_t cap = net_buf_capacity(b);
    if (cap >= NET__MAP_MIN)
        CHECK_EQ(cap % (size_t)sysconf(_SC_PAGESIZE), 0);
}

/* b still has the storage and positions of `was` and holds want[0, n). */
static void check_unchanged(const net_buf_t *b, const net_buf_t *was, const void *want, size_t n)
{
    CHECK(b->data == was->data);
    CHECK_EQ(b->cap, was->cap);
    CHECK_EQ(b->rd, was->rd);
    CHECK_EQ(b->wr, was->wr);
    CHECK_CONTENT(b, want, n);
}

TEST(buf_large_emptied_by_retrieve_all_holds_no_storage)
{
    net_buf_t b = NET_BUF_INIT;
    unsigned char *want = pattern(16 * MiB, 5);
    append_chunks(&b, want, 16 * MiB, 64 * KiB);
    CHECK(net_buf_capacity(&b) >= 16 * MiB);
    CHECK_CONTENT(&b, want, 16 * MiB);
    net_buf_retrieve_all(&b);
    CHECK(b.data == NULL);
    CHECK_EQ(net_buf_capacity(&b), 0);
    CHECK_EQ(net_buf_prependable(&b), 0);
    /* A fresh buffer again: the next message gets a small block. */
    CHECK_OK(net_buf_append(&b, "abc", 3));
    CHECK_OK(net_buf_prepend_u8(&b, 'z'));
    CHECK(net_buf_capacity(&b) <= 256);
    CHECK_CONTENT(&b, "zabc", 4);
    net_buf_destroy(&b);
    free(want);
}

TEST(buf_large_emptied_piecewise_holds_no_storage)
{
    /* Every retrieve that ends with no readable bytes gives storage back,
     * not only retrieve_all: here the last byte goes by a read. */
    net_buf_t b = NET_BUF_INIT;
    unsigned char *want = pattern(16 * MiB, 6);
    CHECK_OK(net_buf_append(&b, want, 16 * MiB));
    size_t cap = net_buf_capacity(&b);
    for (size_t off = 0; off < 15 * MiB; off += MiB) {
        CHECK_CONTENT(&b, want + off, 16 * MiB - off);
        CHECK_OK(net_buf_retrieve(&b, MiB));
        CHECK_EQ(net_buf_capacity(&b), cap);
    }
    CHECK_OK(net_buf_retrieve(&b, MiB - 1));
    uint8_t last = 0;
    CHECK_OK(net_buf_read_u8(&b, &last));
    CHECK_EQ(last, want[16 * MiB - 1]);
    CHECK_EQ(net_buf_capacity(&b), 0);
    free(want);
}

TEST(buf_emptied_keeps_storage_up_to_keep_size)
{
    net_buf_t b = NET_BUF_INIT;
    CHECK_OK(net_buf_shrink(&b, NET_BUF_KEEP - NET_BUF_PREPEND));
    CHECK_EQ(net_buf_capacity(&b), NET_BUF_KEEP);
    CHECK_OK(net_buf_append(&b, "abc", 3));
    const char *base = storage_base(&b);
    CHECK_OK(net_buf_retrieve(&b, 3));
    CHECK_EQ(net_buf_capacity(&b), NET_BUF_KEEP);
    CHECK_EQ(net_buf_prependable(&b), NET_BUF_PREPEND);
    CHECK(storage_base(&b) == base);
    /* One byte more and the emptied buffer lets its storage go. */
    CHECK_OK(net_buf_shrink(&b, NET_BUF_KEEP - NET_BUF_PREPEND + 1));
    CHECK_EQ(net_buf_capacity(&b), NET_BUF_KEEP + 1);
    CHECK_OK(net_buf_append(&b, "abc", 3));
    net_buf_retrieve_all(&b);
    CHECK_EQ(net_buf_capacity(&b), 0);
}

TEST(buf_growth_through_map_threshold_byte_exact)
{
    /* Odd-sized appends with a consumed front now and then: the storage goes
     * from malloc'd blocks to a mapping (a copy) and through larger mappings
     * (mremap), and the readable bytes stay exact at every step. */
    net_buf_t b = NET_BUF_INIT;
    const size_t total = 12 * MiB, chunk = 7777;
    unsigned char *want = pattern(total, 7);
    size_t consumed = 0, cap = 0;
    int heap_caps = 0, mapped_caps = 0;
    for (size_t off = 0, i = 1; off < total; off += chunk, i++) {
        CHECK_OK(net_buf_append(&b, want + off, total - off < chunk ? total - off : chunk));
        if (i % 8 == 0) {
            CHECK_OK(net_buf_retrieve(&b, chunk / 2));
            consumed += chunk / 2;
        }
        if (net_buf_capacity(&b) != cap) {
            cap = net_buf_capacity(&b);
            check_capacity_kind(&b);
            heap_caps += cap < NET__MAP_MIN;
            mapped_caps += cap >= NET__MAP_MIN;
            CHECK_CONTENT(&b, want + consumed, net_buf_readable(&b));
        }
    }
    CHECK(heap_caps >= 2 && mapped_caps >= 3);
    CHECK_CONTENT(&b, want + consumed, total - consumed);
    net_buf_destroy(&b);
    free(want);
}

TEST(buf_mapped_growth_compacts_when_front_blocks)
{
    /* A mapping grows with mremap, which keeps the consumed front: when
     * the room asked for still does not fit behind it, the readable bytes
     * move to the front. */
    net_buf_t b = NET_BUF_INIT;
    unsigned char *want = pattern(6 * MiB, 8);
    CHECK_OK(net_buf_append(&b, want, 2 * MiB));
    CHECK(net_buf_capacity(&b) >= NET__MAP_MIN);
    CHECK_OK(net_buf_retrieve(&b, 3 * MiB / 2));
    CHECK_OK(net_buf_ensure_writable(&b, 7 * MiB / 2));
    check_capacity_kind(&b);
    CHECK(net_buf_writable(&b) >= 7 * MiB / 2);
    CHECK_EQ(net_buf_prependable(&b), NET_BUF_PREPEND);
    CHECK_CONTENT(&b, want + 3 * MiB / 2, MiB / 2);
    memcpy(net_buf_begin_write(&b), want + 2 * MiB, 7 * MiB / 2);
    CHECK_OK(net_buf_has_written(&b, 7 * MiB / 2));
    CHECK_CONTENT(&b, want + 3 * MiB / 2, 4 * MiB);
    net_buf_destroy(&b);
    free(want);
}

TEST(buf_shrink_between_mapped_and_heap_byte_exact)
{
    net_buf_t b = NET_BUF_INIT;
    unsigned char *want = pattern(4 * MiB, 9);
    CHECK_OK(net_buf_append(&b, want, 4 * MiB));
    CHECK_OK(net_buf_retrieve(&b, 2 * MiB));
    CHECK_OK(net_buf_shrink(&b, 0)); /* mapped -> smaller mapping */
    CHECK(net_buf_capacity(&b) >= NET_BUF_PREPEND + 2 * MiB);
    CHECK(net_buf_capacity(&b) - (NET_BUF_PREPEND + 2 * MiB) < (size_t)sysconf(_SC_PAGESIZE));
    check_capacity_kind(&b);
    CHECK_CONTENT(&b, want + 2 * MiB, 2 * MiB);
    CHECK_OK(net_buf_retrieve(&b, 2 * MiB - 100 * KiB));
    CHECK_OK(net_buf_shrink(&b, 0)); /* mapped -> heap, to the byte */
    CHECK_EQ(net_buf_capacity(&b), NET_BUF_PREPEND + 100 * KiB);
    CHECK_CONTENT(&b, want + 4 * MiB - 100 * KiB, 100 * KiB);
    CHECK_OK(net_buf_shrink(&b, 2 * MiB)); /* heap -> mapped */
    check_capacity_kind(&b);
    CHECK(net_buf_writable(&b) >= 2 * MiB);
    CHECK_CONTENT(&b, want + 4 * MiB - 100 * KiB, 100 * KiB);
    net_buf_destroy(&b);
    free(want);
}

TEST(buf_freed_64mib_returns_memory_to_kernel)
{
    /* With malloc in the state that keeps big frees (a heap-backed buffer
     * then stays resident after its free), and a small block allocated
     * while the buffer is large, as other connections would. */
#if defined(__SANITIZE_THREAD__)
    SKIP("ThreadSanitizer's shadow of the pages stays resident after munmap");
#endif
    net_test_raise_malloc_mmap_threshold();
    unsigned char *chunk = pattern(MiB, 10);
    size_t before = net_test_rss_bytes();
    net_buf_t b = NET_BUF_INIT;
    for (int i = 0; i < 64; i++)
        CHECK_OK(net_buf_append(&b, chunk, MiB));
    char *volatile later = malloc(64);
    size_t full = net_test_rss_bytes();
    net_buf_retrieve_all(&b);
    size_t after = net_test_rss_bytes();
    fprintf(stderr, "RSS: %zu KiB before, %zu KiB written, %zu KiB emptied\n", before / KiB,
            full / KiB, after / KiB);
    CHECK(full >= before + 60 * MiB); /* the measurement sees the pages */
    CHECK_EQ(net_buf_capacity(&b), 0);
    CHECK(after <= before + 4 * MiB);
    free(later);
    free(chunk);
}

TEST(buf_big_alloc_failure_leaves_buffer_unchanged)
{
    /* A replaced allocator gets the big storage too (that is how
     * test_alloc_fail.c reaches it): failing it must leave each path,
     * heap -> big, big -> bigger, big -> smaller big, as it was. */
    net_test_fail_allocs_from(SIZE_MAX);
    unsigned char *want = pattern(3000 * KiB, 11);
    net_buf_t b = NET_BUF_INIT, was;
    CHECK_OK(net_buf_append(&b, want, 600 * KiB));
    net_test_fail_allocs_from(NET__MAP_MIN);
    was = b;
    CHECK_EQ(net_buf_append(&b, want + 600 * KiB, 600 * KiB), -ENOMEM);
    check_unchanged(&b, &was, want, 600 * KiB);
    net_test_fail_allocs_from(SIZE_MAX);
    CHECK_OK(net_buf_append(&b, want + 600 * KiB, 600 * KiB));
    net_test_fail_allocs_from(NET__MAP_MIN);
    was = b;
    CHECK_EQ(net_buf_ensure_writable(&b, 2 * MiB), -ENOMEM);
    check_unchanged(&b, &was, want, 1200 * KiB);
    CHECK_EQ(net_buf_shrink(&b, MiB), -ENOMEM);
    check_unchanged(&b, &was, want, 1200 * KiB);
    net_buf_t fresh = NET_BUF_INIT;
    CHECK_EQ(net_buf_ensure_writable(&fresh, 2 * MiB), -ENOMEM);
    CHECK_EQ(net_buf_capacity(&fresh), 0);
    net_test_fail_allocs_from(SIZE_MAX);
    CHECK_OK(net_buf_append(&b, want + 1200 * KiB, 1800 * KiB));
    CHECK_CONTENT(&b, want, 3000 * KiB);
    net_buf_destroy(&b);
    free(want);
}

/* Lets the address space grow by `room` bytes at most (RLIMIT_AS), so that
 * a real mmap or mremap beyond it fails; SIZE_MAX lifts the limit. */
static void limit_address_space(size_t room)
{
    unsigned long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    CHECK(f != NULL);
    CHECK_EQ(fscanf(f, "%lu", &pages), 1);
    fclose(f);
    struct rlimit lim;
    CHECK_EQ(getrlimit(RLIMIT_AS, &lim), 0);
    lim.rlim_cur = room == SIZE_MAX ? lim.rlim_max
                                    : pages * (size_t)sysconf(_SC_PAGESIZE) + room;
    CHECK_EQ(setrlimit(RLIMIT_AS, &lim), 0);
}

TEST(buf_mmap_failure_leaves_buffer_unchanged)
{
    /* The kernel refuses the mapping (no replaced allocator here): a first
     * mmap and an mremap growth. */
    if (NET_TEST_SANITIZED)
        SKIP("sanitizers reserve address space beyond any RLIMIT_AS");
    unsigned char *want = pattern(3000 * KiB, 12);
    net_buf_t b = NET_BUF_INIT, fresh = NET_BUF_INIT, was;
    CHECK_OK(net_buf_append(&b, want, 600 * KiB));
    limit_address_space(512 * KiB);
    was = b;
    CHECK_EQ(net_buf_append(&b, want + 600 * KiB, 600 * KiB), -ENOMEM);
    check_unchanged(&b, &was, want, 600 * KiB);
    CHECK_EQ(net_buf_ensure_writable(&fresh, 2 * MiB), -ENOMEM);
    CHECK_EQ(net_buf_capacity(&fresh), 0);
    limit_address_space(SIZE_MAX);
    CHECK_OK(net_buf_append(&b, want + 600 * KiB, 600 * KiB));
    CHECK(net_buf_capacity(&b) >= NET__MAP_MIN);
    limit_address_space(512 * KiB);
    was = b;
    CHECK_EQ(net_buf_append(&b, want + 1200 * KiB, 1800 * KiB), -ENOMEM);
    check_unchanged(&b, &was, want, 1200 * KiB);
    limit_address_space(SIZE_MAX);
    CHECK_OK(net_buf_append(&b, want + 1200 * KiB, 1800 * KiB));
    CHECK_CONTENT(&b, want, 3000 * KiB);
    net_buf_destroy(&b);
    free(want);
}
