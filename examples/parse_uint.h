/* The examples' and tools' one number parser for command-line options. */
#ifndef NETLOOP_EXAMPLES_PARSE_UINT_H
#define NETLOOP_EXAMPLES_PARSE_UINT_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

/* A whole decimal number in [min, max]. strtoull alone takes "12x" as 12,
 * "" as 0 and "-1" as 2^64 - 1 without a word: a typo must be an error. */
static inline bool parse_uint(const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (text[0] < '0' || text[0] > '9' || *end || errno || v < min || v > max)
        return false;
    *out = v;
    return true;
}

#endif
