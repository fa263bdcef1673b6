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

. "$(dirname "$0")/lib.sh"

a='' b='' rounds=3 seconds=3
bench_parse 4,6 --a=a --b=b --rounds=rounds --seconds=seconds -- "$@"
[ -n "$a" ] && [ -n "$b" ] || bench_usage 4,6
args=("${bench_rest[@]}")
[ ${#args[@]} -gt 0 ] || args=(--connections 1 --threads 16 --sync --size 64)

bench_tmpdir

# run DIR LABEL: one server + one rpc_bench; appends calls/s to $tmp/LABEL.
run() {
    local dir=$1 label=$2
    bench_start_server server TERM "$dir/examples/rpc_server" --listen 127.0.0.1:0
    local line
    line=$("$dir/tools/rpc_bench" "$addr" "${args[@]}" --seconds "$seconds" 2>/dev/null)
    kill -INT "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    bench_untrack "$server_pid"
    echo "$label: $line"
    sed -n 's/.* calls\/s=\([0-9.]*\).*/\1/p' <<<"$line" >>"$tmp/$label"
}

for r in $(seq "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then run "$a" a; run "$b" b; else run "$b" b; run "$a" a; fi
done
ma=$(bench_median "$tmp/a") mb=$(bench_median "$tmp/b")
awk -v a="$ma" -v b="$mb" -v r="$rounds" \
    'BEGIN { printf "rpc_compare: rounds=%d median calls/s a=%.0f b=%.0f ratio b/a=%.2f\n", r, a, b, b / a }'
