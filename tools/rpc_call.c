/* rpc_call: one NRPC/1 call from the command line; installed as
 * netloop-rpc-call. Its manual (`--help`, help_text below) is the one
 * description of the options and of the exit codes, which scripts rely on:
 * README's tools section and test/examples_test.sh follow it. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <net/rpc.h>

#include "parse_uint.h"

#define DEFAULT_TIMEOUT_MS 5000
#define MAX_METHOD_LEN 255 /* NRPC/1: a one-byte method length */

/* The manual's EXIT STATUS: a script can tell "the server said no" (1)
 * from "no answer" (3) from "this end failed" (4). */
enum {
    EXIT_OK_STATUS = 0,
    EXIT_REMOTE_STATUS = 1,
    EXIT_USAGE = 2,
    EXIT_NO_ANSWER = 3,
    EXIT_LOCAL_ERROR = 4,
};

static const char help_text[] =
    "NAME\n"
    "    netloop-rpc-call - make one NRPC/1 call and print the reply\n"
    "\n"
    "SYNOPSIS\n"
    "    netloop-rpc-call [--timeout MS] HOST:PORT METHOD [BODY|-]\n"
    "    netloop-rpc-call --help\n"
    "\n"
    "DESCRIPTION\n"
    "    Connects to the NRPC/1 server at HOST:PORT (one attempt, no retry),\n"
    "    calls METHOD (1 to 255 bytes) with BODY as the request body (empty\n"
    "    when absent; \"-\" reads it from standard input up to end of file) and\n"
    "    writes the body of an OK reply to standard output exactly as received\n"
    "    (no newline added). Every other outcome is reported on standard error.\n"
    "    HOST:PORT takes the forms of net_addr_parse(): 127.0.0.1:2008,\n"
    "    localhost:2008, [::1]:2008, unix:/path, unix:@abstract; no DNS.\n"
    "    In a build tree the same program is build/tools/rpc_call (its messages\n"
    "    then start with \"rpc_call:\").\n"
    "\n"
    "OPTIONS\n"
    "    --timeout MS\n"
    "        Give up after MS milliseconds without a reply, connecting\n"
    "        included: 1 to 4294967295. 0, or no --timeout, means 5000; there\n"
    "        is no \"wait forever\" (a script must not hang).\n"
    "    -h, --help\n"
    "        Print this manual on standard output and exit 0.\n"
    "\n"
    "EXIT STATUS\n"
    "    0   The reply's status is OK; its body is on standard output.\n"
    "    1   The reply has another status: UNKNOWN_METHOD, BAD_REQUEST,\n"
    "        INTERNAL, OVERLOADED, SHUTTING_DOWN or an application code (100\n"
    "        and up). Standard error: \"netloop-rpc-call: remote error CODE\n"
    "        (NAME): BODY\" (the reply's body is the server's message).\n"
    "    2   Usage error: an unknown option or argument, MS malformed or out\n"
    "        of range, a bad HOST:PORT, METHOD empty or longer than 255 bytes.\n"
    "        The usage goes to standard error; nothing is sent.\n"
    "    3   No reply: TIMEOUT, DISCONNECTED (the connect was refused or\n"
    "        failed, or the connection closed before the reply), PROTOCOL_ERROR\n"
    "        (the peer does not speak NRPC/1) or CANCELLED. Standard error:\n"
    "        \"netloop-rpc-call: NAME\", e.g. \"netloop-rpc-call: TIMEOUT\".\n"
    "    4   Local failure: out of memory, standard input unreadable, standard\n"
    "        output unwritable, or the event loop or client could not be created.\n"
    "\n"
    "EXAMPLES\n"
    "    Against netloop's example server (build/examples/rpc_server, on\n"
    "    127.0.0.1:2008; methods echo, sleep with a body of milliseconds):\n"
    "        netloop-rpc-call 127.0.0.1:2008 echo hello\n"
    "        head -c 65536 /dev/urandom | netloop-rpc-call 127.0.0.1:2008 echo - >reply\n"
    "        netloop-rpc-call --timeout 100 127.0.0.1:2008 sleep 2000; echo $?   # 3\n";

/* What to call; body points into argv or at `owned` (from stdin). */
struct request {
    net_addr_t addr;
    const char *method;
    const char *body;
    size_t len;
    uint64_t timeout_ms;
    char *owned;
};

/* One line on stderr, after the name this program was run as (rpc_call in
 * a build tree, netloop-rpc-call installed). */
__attribute__((format(printf, 1, 2))) static void complain(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", program_invocation_short_name);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

struct outcome {
    net_loop_t *loop;
    int exit_code;
};

static void done(net_rpc_client_t *c, uint32_t status, const void *body, size_t len, void *arg)
{
    (void)c;
    struct outcome *o = arg;
    if (status == NET_RPC_OK) {
        fwrite(body, 1, len, stdout);
        o->exit_code = EXIT_OK_STATUS;
    } else if (status >= 0xFFFFFF00u) { /* local outcomes: rpc.h */
        complain("%s\n", net_rpc_status_name(status));
        o->exit_code = EXIT_NO_ANSWER;
    } else {
        complain("remote error %u (%s): %.*s\n", status, net_rpc_status_name(status),
                 (int)len, (const char *)body);
        o->exit_code = EXIT_REMOTE_STATUS;
    }
    net_loop_quit(o->loop);
}

/* The client's close is done: it is gone. */
static void closed(net_rpc_client_t *c, void *arg)
{
    (void)c;
    net_loop_quit(arg);
}

/* All of stdin, malloc'd (never NULL on success, even when empty); NULL on
 * a read error or without memory. */
static char *read_stdin(size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (size_t r; buf && (r = fread(buf + n, 1, cap - n, stdin)) > 0;) {
        n += r;
        if (n == cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger)
                free(buf);
            buf = bigger;
        }
    }
    if (buf && ferror(stdin)) {
        free(buf);
        buf = NULL;
    }
    *len = n;
    return buf;
}

static int usage(void)
{
    fprintf(stderr, "usage: %s [--timeout MS] HOST:PORT METHOD [BODY|-]\n"
                    "  MS: milliseconds for the connect and the call, 1..4294967295;\n"
                    "  0 or no --timeout: %d. --help: the manual.\n",
            program_invocation_short_name, DEFAULT_TIMEOUT_MS);
    return EXIT_USAGE;
}

/* --timeout MS at argv[*i], if there; false if malformed. */
static bool parse_timeout(int argc, char **argv, int *i, uint64_t *ms)
{
    *ms = DEFAULT_TIMEOUT_MS;
    if (*i + 1 >= argc || strcmp(argv[*i], "--timeout") != 0)
        return true;
    /* At most UINT32_MAX: the connect timeout is a uint32_t. */
    if (!parse_uint(argv[*i + 1], 0, UINT32_MAX, ms))
        return false;
    if (*ms == 0) /* net_rpc_call would take 0 as "no timeout" */
        *ms = DEFAULT_TIMEOUT_MS;
    *i += 2;
    return true;
}

/* Fills r from the command line; returns 0 or the exit code. */
static int parse_args(int argc, char **argv, struct request *r)
{
    int i = 1;
    *r = (struct request){0};
    if (!parse_timeout(argc, argv, &i, &r->timeout_ms) || argc - i < 2 || argc - i > 3)
        return usage();
    if (net_addr_parse(&r->addr, argv[i]) < 0) {
        complain("bad address %s\n", argv[i]);
        return usage();
    }
    r->method = argv[i + 1];
    size_t mlen = strlen(r->method);
    if (mlen == 0 || mlen > MAX_METHOD_LEN) {
        complain("METHOD must be 1..%d bytes\n", MAX_METHOD_LEN);
        return usage();
    }
    if (argc - i == 3 && strcmp(argv[i + 2], "-") == 0) {
        if (!(r->body = r->owned = read_stdin(&r->len))) {
            complain("cannot read the body from stdin: %s\n", strerror(errno));
            return EXIT_LOCAL_ERROR;
        }
    } else if (argc - i == 3) {
        r->len = strlen(r->body = argv[i + 2]);
    }
    return 0;
}

/* Makes the call and waits for its outcome; returns the exit code. */
static int call(const struct request *r)
{
    struct outcome o = {.exit_code = EXIT_NO_ANSWER};
    struct net_rpc_client_options opt;
    net_rpc_client_options_init(&opt);
    opt.client.max_attempts = 1; /* one attempt: a refused connect is final */
    opt.fail_fast = true;
    opt.client.connect_timeout_ms = (uint32_t)r->timeout_ms;
    net_rpc_client_t *client = NULL;
    int rc;
    if ((rc = net_loop_new(&o.loop)) < 0 ||
        (rc = net_rpc_client_new(o.loop, &r->addr, &opt, &client)) < 0 ||
        (rc = net_rpc_call(client, r->method, r->body, r->len, r->timeout_ms, done, &o)) < 0) {
        complain("%s\n", net_strerror(rc));
        o.exit_code = EXIT_LOCAL_ERROR;
    } else {
        net_loop_run(o.loop);
    }
    /* The close's done quits the loop again: the client is gone then. */
    if (client && net_rpc_client_close(client, 0, closed, o.loop) == 0)
        net_loop_run(o.loop);
    if (o.loop)
        net_loop_free(o.loop);
    return o.exit_code;
}

int main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(help_text, stdout);
        return EXIT_OK_STATUS;
    }
    struct request r;
    int code = parse_args(argc, argv, &r);
    if (code == 0)
        code = call(&r);
    free(r.owned);
    if (fflush(stdout) != 0 && code == EXIT_OK_STATUS) {
        complain("writing the reply: %s\n", strerror(errno));
        code = EXIT_LOCAL_ERROR;
    }
    return code;
}
