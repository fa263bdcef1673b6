/* Shared by the fuzz targets and the replay driver.
 *
 * A target is one LLVMFuzzerTestOneInput(): libFuzzer calls it with inputs
 * it invents (tools/fuzz.sh), replay_main.c with the checked-in corpus and
 * regression inputs (the normal test suite). A broken invariant must be a
 * crash in both: FUZZ_CHECK prints the condition and aborts, which libFuzzer
 * records as a finding with the input that caused it. Not assert(): release
 * builds define NDEBUG. */
#ifndef NET_TEST_FUZZ_H
#define NET_TEST_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed\n", __FILE__,       \
                    __LINE__, #cond);                                         \
            abort();                                                          \
        }                                                                     \
    } while (0)

/* For a harness's own per-byte loops (filling, reference searches): they are
 * not the code under test, and with coverage tracing on every comparison
 * they took most of a run's time. */
#if defined(__clang__)
#define FUZZ_NO_COVERAGE __attribute__((no_sanitize("coverage")))
#else
#define FUZZ_NO_COVERAGE
#endif

/* Reads operands off the front of the input; past its end every read gives
 * zeros, so a truncated program still runs (and stays deterministic). */
struct fuzz_input {
    const uint8_t *p;
    size_t left;
};

static inline uint64_t fuzz_take(struct fuzz_input *in, size_t width)
{
    uint64_t v = 0;
    for (size_t i = 0; i < width; i++) {
        uint8_t b = 0;
        if (in->left > 0) {
            b = *in->p++;
            in->left--;
        }
        v = v << 8 | b;
    }
    return v;
}

/* n bytes off the front of the input into out, zeros past its end. */
static inline void fuzz_take_bytes(struct fuzz_input *in, uint8_t *out, size_t n)
{
    size_t have = n < in->left ? n : in->left;
    memcpy(out, in->p, have);
    memset(out + have, 0, n - have);
    in->p += have;
    in->left -= have;
}

#endif
