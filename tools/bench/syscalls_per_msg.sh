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

server='' pingpong='' conns=100 size=64 seconds=5 threads=1
usage() {
    sed -n '4,6p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || usage
    case $1 in
    --server) server=$2 ;;
    --pingpong) pingpong=$2 ;;
    --conns) conns=$2 ;;
    --size) size=$2 ;;
    --seconds) seconds=$2 ;;
    --threads) threads=$2 ;;
    *) usage ;;
    esac
    shift 2
done
if [ -z "$server" ] || [ -z "$pingpong" ]; then usage; fi
command -v strace >/dev/null || { echo "syscalls_per_msg: strace not found" >&2; exit 1; }
read -r -a srv <<<"$server"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
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

strace -c -f -o "$tmp/strace.txt" "${srv[@]}" >"$tmp/server.out" 2>"$tmp/server.err" &
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
    echo "syscalls_per_msg: server printed no HOST:PORT line" >&2
    cat "$tmp/server.err" >&2
    exit 1
fi

if ! line=$(timeout $((${seconds%.*} + 30)) "$pingpong" --connect "$addr" --connections "$conns" \
    --size "$size" --seconds "$seconds" --threads "$threads" --warmup 0); then
    echo "syscalls_per_msg: pingpong failed" >&2
    exit 1
fi
echo "$line" >&2

# Stop the traced server itself (strace's child) so it exits as it normally
# would; strace writes its summary when the tracee is gone.
tracee=$(pgrep -P "$spid" || true)
[ -n "$tracee" ] && kill -TERM "$tracee"
for _ in $(seq 100); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$spid" 2>/dev/null; then
    echo "syscalls_per_msg: server ignored SIGTERM; detaching strace" >&2
    kill -INT "$spid"
    [ -n "$tracee" ] && kill -KILL "$tracee" 2>/dev/null
fi
wait "$spid" 2>/dev/null || true
spid=''

calls() { awk -v s="$1" '$NF == s { n = $4 } END { print n + 0 }' "$tmp/strace.txt"; }
bytes=$(sed -n 's/.* bytes=\([0-9]*\).*/\1/p' <<<"$line")
awk -v t="$(calls total)" -v b="$bytes" -v s="$size" -v c="$(calls epoll_ctl)" -v i="$(calls ioctl)" \
    'BEGIN { m = int(b / s); if (m == 0) { print "syscalls_per_msg: no messages" > "/dev/stderr"; exit 1 }
             printf "syscalls/msg=%.2f epoll_ctl=%d ioctl=%d msgs=%d\n", t / m, c, i, m }'
