#!/usr/bin/env bash
# syscalls_per_msg.sh: how many system calls an echo server spends per message.
#
#   tools/bench/syscalls_per_msg.sh --server "CMD ARGS" --pingpong BIN
#       [--conns C] [--size S] [--seconds N] [--threads T]
#   defaults C=100 S=64 N=5 T=1
#
# Runs the server under `strace -c -f`, reads its port from the last HOST:PORT
# token of its first stdout line (so give it --listen 127.0.0.1:0), drives it
# with pingpong for N seconds, stops it with SIGTERM and prints one line:
#   syscalls/msg=X epoll_ctl=N ioctl=N msgs=M
# X = every syscall of the server's whole life (startup, accepts and closes
# included) / messages echoed, M = bytes pingpong received / S.  pingpong
# runs with --warmup 0 so that nearly every echoed message is counted; the
# setup costs are a few calls per connection, noise against M.
# strace makes the server several times slower; that is fine: we count calls,
# not time.  The --server string is split on whitespace (no quoting).
# Example, the floor is ~2 (one read and one write per message, epoll_wait
# amortised over the ready connections):
#   syscalls_per_msg.sh --server "build/tools/bench/floor_echo --listen 127.0.0.1:0" \
#       --pingpong build/tools/bench/pingpong --conns 100 --size 64 --seconds 5
set -euo pipefail

. "$(dirname "$0")/lib.sh"

server='' pingpong='' conns=100 size=64 seconds=5 threads=1
bench_parse 4,6 --server=server --pingpong=pingpong --conns=conns --size=size \
    --seconds=seconds --threads=threads -- "$@"
if [ -z "$server" ] || [ -z "$pingpong" ]; then bench_usage 4,6; fi
bench_require_cmd strace
read -r -a srv <<<"$server"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
bench_tmpdir
# strace detaches on SIGINT and exits.
bench_start_server server INT strace -c -f -o "$tmp/strace.txt" "${srv[@]}"
spid=$server_pid

if ! line=$(timeout $((${seconds%.*} + 30)) "$pingpong" --connect "$addr" --connections "$conns" \
    --size "$size" --seconds "$seconds" --threads "$threads" --warmup 0); then
    echo "syscalls_per_msg: pingpong failed" >&2
    exit 1
fi
echo "$line" >&2

# Stop the traced server itself (strace's child) so it exits as it normally
# would.
bench_stop_traced "$spid" TERM

calls() { bench_strace_calls "$tmp/strace.txt" "$1"; }
bytes=$(sed -n 's/.* bytes=\([0-9]*\).*/\1/p' <<<"$line")
awk -v t="$(calls total)" -v b="$bytes" -v s="$size" -v c="$(calls epoll_ctl)" -v i="$(calls ioctl)" \
    'BEGIN { m = int(b / s); if (m == 0) { print "syscalls_per_msg: no messages" > "/dev/stderr"; exit 1 }
             printf "syscalls/msg=%.2f epoll_ctl=%d ioctl=%d msgs=%d\n", t / m, c, i, m }'
