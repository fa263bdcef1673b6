#!/usr/bin/env bash
# rpc_syscalls.sh: how many system calls rpc_server spends per RPC call.
#
#   tools/bench/rpc_syscalls.sh --builddir DIR [--seconds N]
#   default N=5
#
# Runs DIR/examples/rpc_server --listen 127.0.0.1:0 under `strace -f -c`,
# reads its address from its first stdout line, drives it with
#   DIR/tools/rpc_bench ADDR --connections 1 --depth 128 --size 64 --seconds N --warmup 0
# stops it with SIGINT (its graceful stop) and prints one line:
#   server syscalls/call=X (total syscalls Y, calls Z)
# Y = every syscall of the server's whole life (startup, accept, shutdown
# included), Z = the calls= field of rpc_bench's summary. rpc_bench runs
# without warm-up so that Z misses only the last <= 128 calls of the drain.
# strace makes the server several times slower, which also changes how many
# requests each read picks up: we count calls, not time, but the figure is
# that of a slowed server (batching tends to be better than at full speed).
set -euo pipefail

. "$(dirname "$0")/lib.sh"

builddir='' seconds=5
bench_parse 4,5 --builddir=builddir --seconds=seconds -- "$@"
[ -n "$builddir" ] || bench_usage 4,5
server=$builddir/examples/rpc_server
bench=$builddir/tools/rpc_bench
bench_require_exec "$server" "$bench"
bench_require_cmd strace

bench_tmpdir
# strace detaches on SIGINT and exits.
bench_start_server server INT strace -f -c -o "$tmp/strace.txt" "$server" --listen 127.0.0.1:0
spid=$server_pid

if ! line=$(timeout $((${seconds%.*} + 30)) "$bench" "$addr" --connections 1 --depth 128 \
    --threads 1 --size 64 --seconds "$seconds" --warmup 0); then
    echo "rpc_syscalls: rpc_bench failed: $line" >&2
    exit 1
fi
echo "$line" >&2

# Stop the traced server itself (strace's child), as ^C would.
bench_stop_traced "$spid" INT

total=$(bench_strace_calls "$tmp/strace.txt" total)
calls=$(sed -n 's/.* calls=\([0-9]*\) .*/\1/p' <<<"$line")
awk -v t="$total" -v c="${calls:-0}" \
    'BEGIN { if (c == 0) { print "rpc_syscalls: no calls" > "/dev/stderr"; exit 1 }
             printf "server syscalls/call=%.3f (total syscalls %d, calls %d)\n", t / c, t, c }'
