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

builddir='' seconds=5
usage() {
    sed -n '4,5p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || usage
    case $1 in
    --builddir) builddir=$2 ;;
    --seconds) seconds=$2 ;;
    *) usage ;;
    esac
    shift 2
done
[ -n "$builddir" ] || usage
server=$builddir/examples/rpc_server
bench=$builddir/tools/rpc_bench
for bin in "$server" "$bench"; do
    [ -x "$bin" ] || { echo "rpc_syscalls: $bin not found (build first)" >&2; exit 1; }
done
command -v strace >/dev/null || { echo "rpc_syscalls: strace not found" >&2; exit 1; }

tmp=$(mktemp -d)
spid=''
cleanup() {
    if [ -n "$spid" ] && kill -0 "$spid" 2>/dev/null; then
        kill -INT "$spid" 2>/dev/null || true # strace detaches and exits
        wait "$spid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

strace -f -c -o "$tmp/strace.txt" "$server" --listen 127.0.0.1:0 \
    >"$tmp/server.out" 2>"$tmp/server.err" &
spid=$!
addr=''
for _ in $(seq 100); do
    if [ "$(wc -l <"$tmp/server.out")" -ge 1 ]; then
        addr=$(head -n 1 "$tmp/server.out" |
            awk '{ for (i = 1; i <= NF; i++) if ($i ~ /:[0-9]+$/) a = $i } END { print a }')
        break
    fi
    kill -0 "$spid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$addr" ]; then
    echo "rpc_syscalls: the server printed no HOST:PORT line" >&2
    cat "$tmp/server.err" >&2
    exit 1
fi

if ! line=$(timeout $((${seconds%.*} + 30)) "$bench" "$addr" --connections 1 --depth 128 \
    --threads 1 --size 64 --seconds "$seconds" --warmup 0); then
    echo "rpc_syscalls: rpc_bench failed: $line" >&2
    exit 1
fi
echo "$line" >&2

# Stop the traced server itself (strace's child), as ^C would; strace writes
# its summary once the tracee has exited.
tracee=$(pgrep -P "$spid" || true)
[ -n "$tracee" ] && kill -INT "$tracee"
for _ in $(seq 100); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$spid" 2>/dev/null; then
    echo "rpc_syscalls: the server ignored SIGINT; detaching strace" >&2
    kill -INT "$spid"
    [ -n "$tracee" ] && kill -KILL "$tracee" 2>/dev/null
fi
wait "$spid" 2>/dev/null || true
spid=''

total=$(awk '$NF == "total" { n = $4 } END { print n + 0 }' "$tmp/strace.txt")
calls=$(sed -n 's/.* calls=\([0-9]*\) .*/\1/p' <<<"$line")
awk -v t="$total" -v c="${calls:-0}" \
    'BEGIN { if (c == 0) { print "rpc_syscalls: no calls" > "/dev/stderr"; exit 1 }
             printf "server syscalls/call=%.3f (total syscalls %d, calls %d)\n", t / c, t, c }'
