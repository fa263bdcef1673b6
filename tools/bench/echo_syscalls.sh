#!/bin/sh
# echo_syscalls.sh: system calls per echoed message in echo_server's steady
# state, counted by perf's raw_syscalls tracepoint (strace slows the server
# so much that connection setup dominates its counts).
#
#   tools/bench/echo_syscalls.sh --builddir DIR [--conns C] [--size S] [--seconds N]
#
# Starts DIR/examples/echo_server on 127.0.0.1:0, drives it with pingpong for
# N+3 s, and counts the server's syscalls (and epoll_ctl calls) for N s in
# the middle of the run. msgs in the window = pingpong's msgs/s x N.
set -eu
dir=build conns=100 size=64 seconds=3
while [ $# -gt 0 ]; do
    case "$1" in
    --builddir) dir=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    *) echo "usage: $0 --builddir DIR [--conns C] [--size S] [--seconds N]" >&2; exit 2 ;;
    esac
done
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'kill $srv 2>/dev/null || true; rm -rf "$tmp"' EXIT
"$dir/examples/echo_server" --listen 127.0.0.1:0 >"$tmp/server" 2>&1 &
srv=$!
for _ in $(seq 50); do grep -q listening "$tmp/server" && break; sleep 0.1; done
addr=$(grep -o '127\.0\.0\.1:[0-9]*' "$tmp/server")
"$dir/tools/bench/pingpong" --connect "$addr" --connections "$conns" --size "$size" \
    --seconds $((seconds + 2)) --warmup 1 >"$tmp/pp" &
pp=$!
sleep 1.5
perf stat -x, -e raw_syscalls:sys_enter -e syscalls:sys_enter_epoll_ctl -p "$srv" -- \
    sleep "$seconds" 2>"$tmp/perf"
wait "$pp"
rate=$(grep -o 'msgs/s=[0-9.]*' "$tmp/pp" | cut -d= -f2)
calls=$(grep raw_syscalls "$tmp/perf" | cut -d, -f1)
ctl=$(grep epoll_ctl "$tmp/perf" | cut -d, -f1)
awk -v c="$calls" -v r="$rate" -v n="$seconds" -v e="$ctl" -v cs="$conns" -v sz="$size" \
    'BEGIN { printf "echo_server %sx%sB: syscalls/msg=%.2f epoll_ctl/msg=%.4f (syscalls=%d msgs=%.0f)\n", cs, sz, c / (r * n), e / (r * n), c, r * n }'
