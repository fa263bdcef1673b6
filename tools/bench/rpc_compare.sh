#!/usr/bin/env bash
# rpc_compare.sh: two builds of netloop side by side on the same RPC load.
#
#   tools/bench/rpc_compare.sh --a DIR_A --b DIR_B [--rounds R] [--seconds N]
#       [-- RPC_BENCH_ARGS...]
#   defaults R=3 N=3, RPC_BENCH_ARGS: --connections 1 --threads 16 --sync --size 64
#
# For each round, and alternating which goes first, starts DIR/examples/
# rpc_server (0 I/O threads, 127.0.0.1, a free port) and drives it with the
# same build's DIR/tools/rpc_bench for N seconds. Prints each run's line,
# then one summary: the median calls/s of each build and their ratio b/a.
# Alternating and taking medians tames a noisy shared machine; it does not
# remove the noise, so report several runs.
set -euo pipefail

a='' b='' rounds=3 seconds=3
while [ $# -gt 0 ]; do
    case $1 in
    --a) a=$2; shift 2 ;;
    --b) b=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --) shift; break ;;
    *) sed -n '4,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
[ -n "$a" ] && [ -n "$b" ] || { sed -n '4,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--connections 1 --threads 16 --sync --size 64)

tmp=$(mktemp -d)
server_pid=''
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

# run DIR LABEL: one server + one rpc_bench; appends calls/s to $tmp/LABEL.
run() {
    local dir=$1 label=$2
    "$dir/examples/rpc_server" --listen 127.0.0.1:0 >"$tmp/server.out" 2>"$tmp/server.err" &
    server_pid=$!
    local addr=''
    for _ in $(seq 100); do
        addr=$(grep -o '127\.0\.0\.1:[0-9]*' "$tmp/server.out" 2>/dev/null | head -1 || true)
        [ -n "$addr" ] && break
        sleep 0.05
    done
    [ -n "$addr" ] || { echo "rpc_compare: $dir: server did not start" >&2; cat "$tmp/server.err" >&2; exit 1; }
    local line
    line=$("$dir/tools/rpc_bench" "$addr" "${args[@]}" --seconds "$seconds" 2>/dev/null)
    kill -INT "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=''
    echo "$label: $line"
    sed -n 's/.* calls\/s=\([0-9.]*\).*/\1/p' <<<"$line" >>"$tmp/$label"
}

for r in $(seq "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then run "$a" a; run "$b" b; else run "$b" b; run "$a" a; fi
done
median() { sort -n "$1" | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
ma=$(median "$tmp/a") mb=$(median "$tmp/b")
awk -v a="$ma" -v b="$mb" -v r="$rounds" \
    'BEGIN { printf "rpc_compare: rounds=%d median calls/s a=%.0f b=%.0f ratio b/a=%.2f\n", r, a, b, b / a }'
