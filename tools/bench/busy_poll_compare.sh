#!/usr/bin/env bash
# busy_poll_compare.sh: RPC with busy polling off and on, side by side.
#
#   tools/bench/busy_poll_compare.sh --build DIR [--rounds R] [--seconds N]
#       [--us U] [--hogs H] [-- RPC_BENCH_ARGS...]
#   defaults R=5 N=3 U=50 H=0, RPC_BENCH_ARGS: --connections 1 --depth 1
#   --threads 1 --size 64
#
# Each round runs DIR/examples/rpc_server (0 I/O threads) and DIR/tools/
# rpc_bench twice, once with NETLOOP_BUSY_POLL_US=0 and once with U (both
# processes), alternating which goes first. With H > 0, H CPU hogs (busy
# shell loops at the same priority) run for the whole comparison, so both
# settings see the same loaded host. Nothing is pinned. Prints each run,
# then the median calls/s and p50 of each setting, and the per-round
# ratios on/off (their median and range).
set -euo pipefail

. "$(dirname "$0")/lib.sh"

build='' rounds=5 seconds=3 us=50 hogs=0
bench_parse 4,7 --build=build --rounds=rounds --seconds=seconds --us=us --hogs=hogs -- "$@"
[ -n "$build" ] || bench_usage 4,7
bench_require_exec "$build/examples/rpc_server" "$build/tools/rpc_bench"
args=("${bench_rest[@]}")
[ ${#args[@]} -gt 0 ] || args=(--connections 1 --depth 1 --threads 1 --size 64)

bench_tmpdir

for _ in $(seq "$hogs"); do
    sh -c 'while :; do :; done' &
    bench_track KILL $!
done

# run US LABEL: one server + one rpc_bench with NETLOOP_BUSY_POLL_US=US;
# appends "calls/s p50" to $tmp/LABEL.
run() {
    local us=$1 label=$2 line
    NETLOOP_BUSY_POLL_US=$us bench_start_server server TERM \
        "$build/examples/rpc_server" --listen 127.0.0.1:0
    line=$(NETLOOP_BUSY_POLL_US=$us "$build/tools/rpc_bench" "$addr" "${args[@]}" \
        --seconds "$seconds" 2>/dev/null)
    bench_stop_server "$server_pid" TERM
    echo "$label: $line"
    sed -n 's/.* calls\/s=\([0-9.]*\) p50=\([0-9.]*\)us.*/\1 \2/p' <<<"$line" >>"$tmp/$label"
}

for r in $(seq "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then run 0 off; run "$us" on; else run "$us" on; run 0 off; fi
done

paste "$tmp/off" "$tmp/on" | awk '{ print $3 / $1 }' >"$tmp/ratio"
off=$(cut -d' ' -f1 "$tmp/off" | bench_median) on=$(cut -d' ' -f1 "$tmp/on" | bench_median)
p50off=$(cut -d' ' -f2 "$tmp/off" | bench_median) p50on=$(cut -d' ' -f2 "$tmp/on" | bench_median)
ratio=$(bench_median "$tmp/ratio")
range=$(sort -g "$tmp/ratio" | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2f-%.2f", lo, hi }')
awk -v off="$off" -v on="$on" -v po="$p50off" -v pn="$p50on" -v r="$ratio" -v g="$range" \
    -v n="$rounds" -v us="$us" -v h="$hogs" \
    'BEGIN { printf "busy_poll_compare: rounds=%d us=%d hogs=%d median calls/s off=%.0f on=%.0f " \
             "p50 off=%.1fus on=%.1fus ratio on/off median=%.2f range=%s\n",
             n, us, h, off, on, po, pn, r, g }'
