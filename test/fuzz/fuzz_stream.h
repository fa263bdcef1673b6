/* The stream mode the frame-codec targets share (fuzz_rpc_frames.c,
 * fuzz_baidu_frames.c): a byte stream split at fuzzer-chosen points and
 * decoded the way a connection decodes it -- decode after every append,
 * retrieve each whole frame, stop at the first error -- once appended whole
 * and once chunk by chunk. The two runs must see the same frames and end
 * the same way, and an error must stick: neither asking again nor more
 * bytes may change it.
 *
 * The input, after the mode byte:
 *   [0..1]     max_frame, big-endian; 0 selects the codec's default
 *   [2]        K = low 4 bits: the number of chunk sizes that follow
 *   [3..3+K)   chunk sizes, used in turn and repeated; 0 appends nothing
 *   rest       the stream
 * A target supplies the decoding and its checks as two callbacks. Included
 * by one file of each target only (its functions are static). */
#ifndef NET_TEST_FUZZ_STREAM_H
#define NET_TEST_FUZZ_STREAM_H

#include <stdbool.h>
#include <string.h>

#include <net/buffer.h>

#include "fuzz.h"

struct fuzz_run {
    size_t appended, consumed, frames;
    uint64_t digest;    /* over the offsets and sizes of the frames */
    int rc;             /* 0, or the error that stopped the run */
    const char *reason; /* the error's reason, for codecs that give one */
};

struct fuzz_stream {
    const uint8_t *bytes; /* the whole stream */
    size_t len;
    size_t max_frame;      /* as passed to the decoder */
    uint64_t max_effective;
    /* Decodes what in holds, checking each result, retrieving whole frames
     * (noting them in r) and setting r->rc (and r->reason) where it stops. */
    void (*decode)(const struct fuzz_stream *t, net_buf_t *in, struct fuzz_run *r);
    /* After r->rc < 0: decoding again, and after appending the next `more`
     * stream bytes, gives the same verdict. */
    void (*error_sticks)(const struct fuzz_stream *t, net_buf_t *in, const struct fuzz_run *r,
                         size_t more);
};

/* The frame, as a digest of where it starts and how long it is. */
static inline void fuzz_run_frame(struct fuzz_run *r, size_t frame_len)
{
    r->digest = r->digest * 1000003u + r->consumed * 31u + frame_len;
    r->frames++;
    r->consumed += frame_len;
}

static void fuzz_feed_chunk(const struct fuzz_stream *t, net_buf_t *in, struct fuzz_run *r,
                            size_t n)
{
    if (n > t->len - r->appended)
        n = t->len - r->appended;
    if (r->rc < 0) {
        t->error_sticks(t, in, r, n);
        r->appended = t->len; /* the connection is closed: stop feeding */
        return;
    }
    FUZZ_CHECK(net_buf_append(in, t->bytes + r->appended, n) == 0);
    r->appended += n;
    t->decode(t, in, r);
}

static struct fuzz_run fuzz_run_chunked(const struct fuzz_stream *t, const uint8_t *sizes,
                                        size_t k)
{
    struct fuzz_run r = { 0 };
    net_buf_t in = NET_BUF_INIT;
    bool any = false;
    for (size_t i = 0; i < k; i++)
        any |= sizes[i] != 0;
    if (!any)
        fuzz_feed_chunk(t, &in, &r, t->len);
    for (size_t i = 0; any && r.appended < t->len; i++)
        fuzz_feed_chunk(t, &in, &r, sizes[i % k]);
    if (r.rc < 0)
        t->error_sticks(t, &in, &r, 0);
    if (net_buf_readable(&in))
        FUZZ_CHECK(memcmp(net_buf_peek(&in), t->bytes + r.consumed, net_buf_readable(&in)) == 0);
    if (r.rc == 0)
        FUZZ_CHECK(r.consumed + net_buf_readable(&in) == t->len);
    net_buf_destroy(&in);
    return r;
}

/* Reads the stream's header off the input, runs it whole and chunked, and
 * compares. t->decode and t->error_sticks must be set; default_max is the
 * codec's limit for max_frame 0. */
static void fuzz_stream_mode(struct fuzz_input *in, struct fuzz_stream *t, uint64_t default_max)
{
    uint8_t sizes[15];
    t->max_frame = (size_t)fuzz_take(in, 2);
    t->max_effective = t->max_frame ? t->max_frame : default_max;
    size_t k = fuzz_take(in, 1) & 15;
    for (size_t i = 0; i < k; i++)
        sizes[i] = (uint8_t)fuzz_take(in, 1);
    t->bytes = in->p;
    t->len = in->left;

    struct fuzz_run whole = fuzz_run_chunked(t, NULL, 0);
    struct fuzz_run split = fuzz_run_chunked(t, sizes, k);
    FUZZ_CHECK(whole.frames == split.frames && whole.digest == split.digest);
    FUZZ_CHECK(whole.consumed == split.consumed);
    FUZZ_CHECK(whole.rc == split.rc);
    if (whole.rc < 0 && whole.reason)
        FUZZ_CHECK(split.reason && strcmp(whole.reason, split.reason) == 0);
}

#endif
