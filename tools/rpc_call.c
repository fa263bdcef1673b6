/* rpc_call: one NRPC/1 call from the command line.
 *
 *   rpc_call [--timeout MS] HOST:PORT METHOD [BODY|-]
 *
 * MS bounds the connect and the call alike: 1 to 4294967295 milliseconds;
 * 0, or no --timeout, means the default of 5000 (a tool that may never
 * return is no use in a script, so there is no "wait forever").
 * Prints the response body on stdout and exits 0. A remote error status
 * prints its message on stderr and exits 1; a local failure (connect
 * refused, TIMEOUT, DISCONNECTED, PROTOCOL_ERROR) prints a message on stderr
 * and exits 3. BODY "-" reads the body from stdin. Usage errors, a malformed MS among
 * them, print the usage on stderr and exit 2. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <net/rpc.h>

#include "parse_uint.h"

#define DEFAULT_TIMEOUT_MS 5000

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
        o->exit_code = 0;
    } else if (status >= 0xFFFFFF00u) {
        fprintf(stderr, "rpc_call: %s\n", net_rpc_status_name(status));
        o->exit_code = 3;
    } else {
        fprintf(stderr, "rpc_call: remote error %u (%s): %.*s\n", status,
                net_rpc_status_name(status), (int)len, (const char *)body);
        o->exit_code = 1;
    }
    net_loop_quit(o->loop);
}

/* The client's close is done: it is gone. */
static void closed(net_rpc_client_t *c, void *arg)
{
    (void)c;
    net_loop_quit(arg);
}

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
    *len = n;
    return buf;
}

static int usage(void)
{
    fprintf(stderr, "usage: rpc_call [--timeout MS] HOST:PORT METHOD [BODY|-]\n"
                    "  MS: milliseconds for the connect and the call, 1..4294967295;\n"
                    "  0 or no --timeout: %d\n", DEFAULT_TIMEOUT_MS);
    return 2;
}

int main(int argc, char **argv)
{
    uint64_t timeout = DEFAULT_TIMEOUT_MS;
    int i = 1;
    if (i + 1 < argc && strcmp(argv[i], "--timeout") == 0) {
        /* At most UINT32_MAX: the connect timeout is a uint32_t. */
        if (!parse_uint(argv[i + 1], 0, UINT32_MAX, &timeout))
            return usage();
        if (timeout == 0) /* net_rpc_call would take 0 as "no timeout" */
            timeout = DEFAULT_TIMEOUT_MS;
        i += 2;
    }
    if (argc - i < 2 || argc - i > 3)
        return usage();
    net_addr_t addr;
    if (net_addr_parse(&addr, argv[i]) < 0) {
        fprintf(stderr, "rpc_call: bad address %s\n", argv[i]);
        return 2;
    }
    const char *method = argv[i + 1];
    char *body = NULL;
    size_t len = 0;
    if (argc - i == 3 && strcmp(argv[i + 2], "-") == 0)
        body = read_stdin(&len);
    else if (argc - i == 3)
        len = strlen(body = strdup(argv[i + 2]));
    struct outcome o = {.exit_code = 3};
    struct net_rpc_client_options opt;
    net_rpc_client_options_init(&opt);
    opt.client.max_attempts = 1; /* one attempt: a refused connect is final */
    opt.fail_fast = true;
    opt.client.connect_timeout_ms = (uint32_t)timeout;
    net_rpc_client_t *client;
    int rc;
    if ((rc = net_loop_new(&o.loop)) < 0 ||
        (rc = net_rpc_client_new(o.loop, &addr, &opt, &client)) < 0 ||
        (rc = net_rpc_call(client, method, body, len, timeout, done, &o)) < 0) {
        fprintf(stderr, "rpc_call: %s\n", net_strerror(rc));
        return rc == -EINVAL ? 2 : 3;
    }
    net_loop_run(o.loop);
    net_rpc_client_close(client, 0, closed, o.loop);
    net_loop_run(o.loop);
    net_loop_free(o.loop);
    free(body);
    fflush(stdout);
    return o.exit_code;
}
