/* rpc_call: one NRPC/1 or baidu_std call from the command line; installed as
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

#include "echo_pb.h"
#include "parse_uint.h"

#define DEFAULT_TIMEOUT_MS 5000
#define MAX_METHOD_LEN 255 /* NRPC/1: a one-byte method length (baidu_std: the same bound) */

/* The manual's EXIT STATUS: a script can tell "the server said no" (1)
 * from "no answer" (3) from "this end failed" (4). */
enum {
    EXIT_OK_STATUS = 0,
    EXIT_REMOTE_STATUS = 1,
    EXIT_USAGE = 2,
    EXIT_NO_ANSWER = 3,
    EXIT_LOCAL_ERROR = 4,
};

/* In parts: ISO C bounds one string literal to 4095 bytes. */
static const char *const help_text[] = {
    "NAME\n"
    "    netloop-rpc-call - make one NRPC/1 or baidu_std call and print the reply\n"
    "\n"
    "SYNOPSIS\n"
    "    netloop-rpc-call [OPTIONS] HOST:PORT METHOD [BODY|-]\n"
    "    netloop-rpc-call --protocol baidu_std --echo-message TEXT [OPTIONS] HOST:PORT METHOD\n"
    "    netloop-rpc-call --help\n"
    "\n"
    "DESCRIPTION\n"
    "    Connects to the server at HOST:PORT (one attempt, no retry), calls\n"
    "    METHOD (1 to 255 bytes) with BODY as the request body (empty when\n"
    "    absent; \"-\" reads it from standard input up to end of file) and\n"
    "    writes the body of an OK reply to standard output exactly as received\n"
    "    (no newline added), followed by the reply's attachment, if any (see\n"
    "    --attachment-out). Every other outcome is reported on standard error.\n"
    "    HOST:PORT takes the forms of net_addr_parse(): 127.0.0.1:2008,\n"
    "    localhost:2008, [::1]:2008, unix:/path, unix:@abstract; no DNS.\n"
    "    In a build tree the same program is build/tools/rpc_call (its messages\n"
    "    then start with \"rpc_call:\").\n"
    "\n"
    "    With --protocol baidu_std it speaks brpc's default protocol: METHOD\n"
    "    is \"Service.Method\", the service's full protobuf name and the\n"
    "    method's (split at the last '.', e.g. example.EchoService.Echo), and\n"
    "    BODY must be the serialized protobuf request (brpc refuses one that\n"
    "    does not parse): give its bytes with \"-\" (e.g. from xxd -r -p), or,\n"
    "    for brpc's echo servers, use --echo-message.\n"
    "\n",
    "OPTIONS\n"
    "    --timeout MS\n"
    "        Give up after MS milliseconds without a reply, connecting\n"
    "        included: 1 to 4294967295. 0, or no --timeout, means 5000; there\n"
    "        is no \"wait forever\" (a script must not hang).\n"
    "    --protocol nrpc|baidu_std\n"
    "        The protocol spoken: nrpc (NRPC/1, the default) or baidu_std\n"
    "        (brpc's; netloop's own servers answer both).\n"
    "    --attachment TEXT\n"
    "        Send TEXT as the request's attachment (baidu_std only: bytes\n"
    "        after the body that brpc passes to the service untouched; brpc's\n"
    "        echo server sends it back).\n"
    "    --attachment-out FILE\n"
    "        Write the reply's attachment (byte for byte, possibly empty) to\n"
    "        FILE instead of after the body on standard output.\n"
    "    --echo-message TEXT\n"
    "        baidu_std only, for brpc's echo servers: send the protobuf\n"
    "        EchoRequest { message: TEXT } as the body (no BODY argument then),\n"
    "        and write the message of the EchoResponse instead of the raw body\n"
    "        (a reply that is no EchoResponse is a local failure, exit 4).\n"
    "    -h, --help\n"
    "        Print this manual on standard output and exit 0.\n"
    "\n",
    "EXIT STATUS\n"
    "    0   The reply's status is OK; its body is on standard output.\n"
    "    1   The reply has another status: UNKNOWN_METHOD, BAD_REQUEST,\n"
    "        INTERNAL, OVERLOADED, SHUTTING_DOWN or an application code (100\n"
    "        and up). Standard error: \"netloop-rpc-call: remote error CODE\n"
    "        (NAME): BODY\" (the reply's body is the server's message). A brpc\n"
    "        error_code is shown mapped to a status (docs/protocol.md):\n"
    "        ENOSERVICE and ENOMETHOD as 1 (UNKNOWN_METHOD), ELIMIT and\n"
    "        EOVERCROWDED as 4 (OVERLOADED), other codes from 100 up as\n"
    "        themselves (e.g. 1008 for ERPCTIMEDOUT), with brpc's error_text as\n"
    "        BODY.\n"
    "    2   Usage error: an unknown option or argument, MS malformed or out\n"
    "        of range, a bad HOST:PORT, METHOD empty or longer than 255 bytes\n"
    "        (baidu_std: without a '.' between a non-empty service and\n"
    "        method), an unknown protocol, --attachment or --echo-message with\n"
    "        nrpc, --echo-message with a BODY. The usage goes to standard error;\n"
    "        nothing is sent.\n"
    "    3   No reply: TIMEOUT, DISCONNECTED (the connect was refused or\n"
    "        failed, or the connection closed before the reply), PROTOCOL_ERROR\n"
    "        (the peer does not speak the protocol) or CANCELLED. Standard error:\n"
    "        \"netloop-rpc-call: NAME\", e.g. \"netloop-rpc-call: TIMEOUT\".\n"
    "    4   Local failure: out of memory, standard input unreadable, standard\n"
    "        output or FILE unwritable, an OK reply to --echo-message that is\n"
    "        no EchoResponse, or the event loop or client could not be created.\n"
    "\n",
    "EXAMPLES\n"
    "    Against netloop's example server (build/examples/rpc_server, on\n"
    "    127.0.0.1:2008; methods echo, sleep with a body of milliseconds):\n"
    "        netloop-rpc-call 127.0.0.1:2008 echo hello\n"
    "        head -c 65536 /dev/urandom | netloop-rpc-call 127.0.0.1:2008 echo - >reply\n"
    "        netloop-rpc-call --timeout 100 127.0.0.1:2008 sleep 2000; echo $?   # 3\n"
    "    Against brpc's echo_server (example/echo_c++) on 127.0.0.1:8000:\n"
    "        netloop-rpc-call --protocol baidu_std --echo-message hi \\\n"
    "            --attachment extra 127.0.0.1:8000 example.EchoService.Echo\n"
    "        # prints \"hiextra\"; the raw body instead (EchoRequest \"hi\" is 0a 02 68 69):\n"
    "        echo 0a026869 | xxd -r -p | netloop-rpc-call --protocol baidu_std \\\n"
    "            127.0.0.1:8000 example.EchoService.Echo - | xxd\n",
    NULL,
};

/* What to call; body points into argv or at `owned` (from stdin). */
struct request {
    net_addr_t addr;
    const char *method;
    const char *body;
    size_t len;
    uint64_t timeout_ms;
    char *owned;
    enum net_rpc_protocol protocol;
    const char *attachment;   /* NULL: none */
    const char *att_out;      /* --attachment-out FILE, or NULL */
    const char *echo_message; /* --echo-message TEXT, or NULL */
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
    const struct request *r;
};

/* The attachment to stdout after the body, or to --attachment-out's file. */
static int write_attachment(const struct request *r, const void *att, size_t len)
{
    if (!r->att_out) {
        if (len) /* att is NULL then */
            fwrite(att, 1, len, stdout);
        return EXIT_OK_STATUS;
    }
    FILE *f = fopen(r->att_out, "wb");
    bool ok = f && (!len || fwrite(att, 1, len, f) == len);
    if (f && fclose(f) != 0)
        ok = false;
    if (!ok)
        complain("writing %s: %s\n", r->att_out, strerror(errno));
    return ok ? EXIT_OK_STATUS : EXIT_LOCAL_ERROR;
}

/* An OK reply: the body (or the EchoResponse's message), then the
 * attachment. */
static int print_reply(net_rpc_client_t *c, const struct request *r, const void *body,
                       size_t len)
{
    size_t alen;
    const void *att = net_rpc_response_attachment(c, &alen);
    if (r->echo_message) {
        const uint8_t *msg;
        if (!echo_pb_unwrap(body, len, &msg, &len)) {
            complain("the reply is no EchoResponse (%zu bytes)\n", len);
            return EXIT_LOCAL_ERROR;
        }
        body = msg;
    }
    if (len)
        fwrite(body, 1, len, stdout);
    return write_attachment(r, att, alen);
}

static void done(net_rpc_client_t *c, uint32_t status, const void *body, size_t len, void *arg)
{
    struct outcome *o = arg;
    if (status == NET_RPC_OK) {
        o->exit_code = print_reply(c, o->r, body, len);
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
    fprintf(stderr, "usage: %s [--timeout MS] [--protocol nrpc|baidu_std] [--attachment TEXT]\n"
                    "       [--attachment-out FILE] [--echo-message TEXT] HOST:PORT METHOD [BODY|-]\n"
                    "  MS: milliseconds for the connect and the call, 1..4294967295;\n"
                    "  0 or no --timeout: %d. --help: the manual.\n",
            program_invocation_short_name, DEFAULT_TIMEOUT_MS);
    return EXIT_USAGE;
}

/* --timeout's value; false if malformed. */
static bool parse_timeout(const char *arg, uint64_t *ms)
{
    /* At most UINT32_MAX: the connect timeout is a uint32_t. */
    if (!parse_uint(arg, 0, UINT32_MAX, ms))
        return false;
    if (*ms == 0) /* net_rpc_call would take 0 as "no timeout" */
        *ms = DEFAULT_TIMEOUT_MS;
    return true;
}

static bool parse_protocol(const char *arg, enum net_rpc_protocol *p)
{
    if (strcmp(arg, "nrpc") == 0)
        *p = NET_RPC_NRPC;
    else if (strcmp(arg, "baidu_std") == 0)
        *p = NET_RPC_BAIDU_STD;
    else
        return false;
    return true;
}

/* One OPTION VALUE pair at argv[i]; false if unknown or malformed. */
static bool parse_option(const char *opt, const char *val, struct request *r)
{
    if (strcmp(opt, "--timeout") == 0)
        return parse_timeout(val, &r->timeout_ms);
    if (strcmp(opt, "--protocol") == 0)
        return parse_protocol(val, &r->protocol);
    if (strcmp(opt, "--attachment") == 0)
        r->attachment = val;
    else if (strcmp(opt, "--attachment-out") == 0)
        r->att_out = val;
    else if (strcmp(opt, "--echo-message") == 0)
        r->echo_message = val;
    else
        return false;
    return true;
}

/* baidu_std's "Service.Method": a '.' with something on both sides. */
static bool baidu_method_ok(const char *m)
{
    const char *dot = strrchr(m, '.');
    return dot && dot != m && dot[1] != '\0';
}

/* The method and the combinations of options; true if usable. */
static bool request_ok(const struct request *r, int nbody)
{
    size_t mlen = strlen(r->method);
    if (mlen == 0 || mlen > MAX_METHOD_LEN) {
        complain("METHOD must be 1..%d bytes\n", MAX_METHOD_LEN);
        return false;
    }
    if (r->protocol == NET_RPC_BAIDU_STD && !baidu_method_ok(r->method)) {
        complain("a baidu_std METHOD is Service.Method\n");
        return false;
    }
    if (r->protocol == NET_RPC_NRPC && (r->attachment || r->echo_message)) {
        complain("--attachment and --echo-message need --protocol baidu_std\n");
        return false;
    }
    if (r->echo_message && nbody) {
        complain("--echo-message builds the body: no BODY argument\n");
        return false;
    }
    return true;
}

/* The body: --echo-message's EchoRequest, stdin ("-"), the argument or
 * none. Returns 0 or the exit code. */
static int take_body(struct request *r, const char *arg)
{
    if (r->echo_message) {
        size_t n = strlen(r->echo_message);
        if (!(r->owned = malloc(ECHO_PB_ROOM(n))))
            return EXIT_LOCAL_ERROR;
        r->len = echo_pb_wrap((uint8_t *)r->owned, r->echo_message, n);
        r->body = r->owned;
    } else if (arg && strcmp(arg, "-") == 0) {
        if (!(r->body = r->owned = read_stdin(&r->len))) {
            complain("cannot read the body from stdin: %s\n", strerror(errno));
            return EXIT_LOCAL_ERROR;
        }
    } else if (arg) {
        r->len = strlen(r->body = arg);
    }
    return 0;
}

/* Fills r from the command line; returns 0 or the exit code. */
static int parse_args(int argc, char **argv, struct request *r)
{
    int i = 1;
    *r = (struct request){.timeout_ms = DEFAULT_TIMEOUT_MS};
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2)
        if (!parse_option(argv[i], argv[i + 1], r))
            return usage();
    if (argc - i < 2 || argc - i > 3)
        return usage();
    if (net_addr_parse(&r->addr, argv[i]) < 0) {
        complain("bad address %s\n", argv[i]);
        return usage();
    }
    r->method = argv[i + 1];
    if (!request_ok(r, argc - i - 2))
        return usage();
    return take_body(r, argc - i == 3 ? argv[i + 2] : NULL);
}

/* Makes the call and waits for its outcome; returns the exit code. */
static int call(const struct request *r)
{
    struct outcome o = {.exit_code = EXIT_NO_ANSWER, .r = r};
    struct net_rpc_client_options opt;
    net_rpc_client_options_init(&opt);
    opt.client.max_attempts = 1; /* one attempt: a refused connect is final */
    opt.fail_fast = true;
    opt.client.connect_timeout_ms = (uint32_t)r->timeout_ms;
    opt.protocol = r->protocol;
    net_rpc_client_t *client = NULL;
    int rc;
    if ((rc = net_loop_new(&o.loop)) < 0 ||
        (rc = net_rpc_client_new(o.loop, &r->addr, &opt, &client)) < 0 ||
        (rc = net_rpc_call_with_attachment(client, r->method, r->body, r->len, r->attachment,
                                           r->attachment ? strlen(r->attachment) : 0,
                                           r->timeout_ms, done, &o)) < 0) {
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
        for (int i = 0; help_text[i]; i++)
            fputs(help_text[i], stdout);
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
