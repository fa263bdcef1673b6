#!/usr/bin/env bash
# idle_memory.sh: user-space memory of echo_server per idle connection.
#
#   tools/bench/idle_memory.sh --builddir DIR [--connections N] [--threads T]
#       [--server BIN] [--idle-conns BIN]
#   defaults N=10000 T=0, BIN=DIR/examples/echo_server, DIR/tools/bench/idle_conns
#
# Starts the server with --listen 127.0.0.1:0 (and --threads T), reads its port
# from the last HOST:PORT token of its first stdout line, runs idle_conns
# against it (N connections, one echoed 64-byte message each, RSS of the
# server before and after) and stops the server with SIGTERM.  Prints
# idle_conns' line:
#   idle_conns conns=N rss_before_kib=A rss_after_kib=B bytes_per_conn=X
#       anon_bytes_per_conn=Y
# Kernel socket buffers are not in RSS: X is the server's own cost.  Both
# processes get the hard descriptor limit (raised to N + 64 first when we
# may).
set -euo pipefail

builddir='' conns=10000 threads=0 server='' idle=''
usage() {
    sed -n '4,6p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || usage
    case $1 in
    --builddir) builddir=$2 ;;
    --connections) conns=$2 ;;
    --threads) threads=$2 ;;
    --server) server=$2 ;;
    --idle-conns) idle=$2 ;;
    *) usage ;;
    esac
    shift 2
done
if [ -z "$builddir" ] && { [ -z "$server" ] || [ -z "$idle" ]; }; then usage; fi
server=${server:-$builddir/examples/echo_server}
idle=${idle:-$builddir/tools/bench/idle_conns}
for bin in "$server" "$idle"; do
    [ -x "$bin" ] || { echo "idle_memory: $bin: not an executable" >&2; exit 1; }
done

# The server needs N descriptors too, and inherits the limit from here.
want=$((conns + 64))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$want" ]; then
    ulimit -Hn "$want" 2>/dev/null || true
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
    echo "idle_memory: descriptor limit $(ulimit -n) is below $want" >&2
    exit 1
fi

tmp=$(mktemp -d)
spid=''
cleanup() {
    if [ -n "$spid" ] && kill -0 "$spid" 2>/dev/null; then
        kill -TERM "$spid" 2>/dev/null || true
        wait "$spid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$server" --listen 127.0.0.1:0 --threads "$threads" >"$tmp/server.out" 2>"$tmp/server.err" &
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
    echo "idle_memory: server printed no HOST:PORT line" >&2
    cat "$tmp/server.err" >&2
    exit 1
fi

rc=0
timeout 300 "$idle" --connect "$addr" --pid "$spid" --connections "$conns" || rc=$?

kill -TERM "$spid"
for _ in $(seq 50); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$spid" 2>/dev/null; then
    echo "idle_memory: server ignored SIGTERM" >&2
    kill -KILL "$spid" 2>/dev/null || true
    rc=1
fi
wait "$spid" 2>/dev/null || true
spid=''
[ -s "$tmp/server.err" ] && sed 's/^/idle_memory: server: /' "$tmp/server.err" >&2
exit "$rc"
