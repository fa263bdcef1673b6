#!/usr/bin/env bash
# echo_compare.sh: netloop's echo server against the hand-written epoll floor.
#
#   tools/bench/echo_compare.sh --builddir DIR [--rounds R] [--seconds N]
#       [--threads T] [--floor BIN] [--lib BIN] [--pingpong BIN]
#       [--scenarios 'CONNSxSIZE ...']   (default '100x64 1000x64 100x16384')
#
# Starts DIR/tools/bench/floor_echo and DIR/examples/echo_server, each with
# --listen 127.0.0.1:0, and reads the port from the last HOST:PORT token of
# each server's first stdout line.  For each scenario (100x64B, 1000x64B,
# 100x16384B) it runs DIR/tools/bench/pingpong against floor and netloop in
# interleaved rounds (floor, lib, floor, lib, ...; R each, default 3, N seconds
# each, default 5; pingpong threads T, default 1) so drift in machine load hits
# both alike, then prints per scenario
#   100x64B floor=<median msgs/s> netloop=<median msgs/s> ratio=<lib/floor>
# Per-round figures go to stderr.  --floor/--lib/--pingpong override the
# binaries (e.g. floor_echo standing in for both, to test this script).
#
# Nothing is pinned to a CPU: client and server share the machine's cores as
# the scheduler sees fit, the same for both servers.  On a small machine the
# client competes with the server; compare ratios, not absolute figures.
set -euo pipefail

. "$(dirname "$0")/lib.sh"

builddir='' rounds=3 seconds=5 threads=1 floor='' lib='' pingpong=''
scenarios='100x64 1000x64 100x16384'
bench_parse 4,5 --builddir=builddir --rounds=rounds --seconds=seconds --threads=threads \
    --floor=floor --lib=lib --pingpong=pingpong --scenarios=scenarios -- "$@"
if [ -z "$builddir" ] && { [ -z "$floor" ] || [ -z "$lib" ] || [ -z "$pingpong" ]; }; then
    bench_usage 4,5
fi
floor=${floor:-$builddir/tools/bench/floor_echo}
lib=${lib:-$builddir/examples/echo_server}
pingpong=${pingpong:-$builddir/tools/bench/pingpong}
bench_require_exec "$floor" "$lib" "$pingpong"

# Room for 1000 connections in both servers, whatever they do themselves.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

bench_tmpdir
bench_start_server floor TERM "$floor" --listen 127.0.0.1:0
floor_addr=$addr
echo "echo_compare: floor listening on $addr" >&2
bench_start_server netloop TERM "$lib" --listen 127.0.0.1:0
lib_addr=$addr
echo "echo_compare: netloop listening on $addr" >&2

# run_one ADDR CONNS SIZE: prints pingpong's msgs/s.
run_one() {
    local line
    if ! line=$(timeout $((seconds + 30)) "$pingpong" --connect "$1" --connections "$2" \
        --size "$3" --seconds "$seconds" --threads "$threads"); then
        echo "echo_compare: pingpong against $1 failed" >&2
        exit 1
    fi
    echo "  $line" >&2
    sed -n 's/.*msgs\/s=\([0-9.]*\).*/\1/p' <<<"$line"
}

for scenario in $scenarios; do
    conns=${scenario%x*} size=${scenario#*x}
    : >"$tmp/floor.rates"
    : >"$tmp/lib.rates"
    for ((r = 1; r <= rounds; r++)); do
        run_one "$floor_addr" "$conns" "$size" >>"$tmp/floor.rates"
        run_one "$lib_addr" "$conns" "$size" >>"$tmp/lib.rates"
    done
    f=$(bench_median "$tmp/floor.rates")
    l=$(bench_median "$tmp/lib.rates")
    awk -v s="${scenario}B" -v f="$f" -v l="$l" \
        'BEGIN { printf "%s floor=%.0f netloop=%.0f ratio=%.2f\n", s, f, l, (f > 0 ? l / f : 0) }'
done
