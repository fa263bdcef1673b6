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

builddir='' rounds=3 seconds=5 threads=1 floor='' lib='' pingpong=''
scenarios='100x64 1000x64 100x16384'
usage() {
    sed -n '4,5p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || usage
    case $1 in
    --builddir) builddir=$2 ;;
    --rounds) rounds=$2 ;;
    --seconds) seconds=$2 ;;
    --threads) threads=$2 ;;
    --floor) floor=$2 ;;
    --lib) lib=$2 ;;
    --pingpong) pingpong=$2 ;;
    --scenarios) scenarios=$2 ;;
    *) usage ;;
    esac
    shift 2
done
if [ -z "$builddir" ] && { [ -z "$floor" ] || [ -z "$lib" ] || [ -z "$pingpong" ]; }; then
    usage
fi
floor=${floor:-$builddir/tools/bench/floor_echo}
lib=${lib:-$builddir/examples/echo_server}
pingpong=${pingpong:-$builddir/tools/bench/pingpong}
for bin in "$floor" "$lib" "$pingpong"; do
    [ -x "$bin" ] || { echo "echo_compare: $bin: not an executable" >&2; exit 1; }
done

# Room for 1000 connections in both servers, whatever they do themselves.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

tmp=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server NAME BIN: runs BIN --listen 127.0.0.1:0, sets $addr.
start_server() {
    local name=$1 bin=$2
    "$bin" --listen 127.0.0.1:0 >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pids+=($!)
    addr=
    for _ in $(seq 100); do
        if [ -s "$tmp/$name.out" ] && [ "$(wc -l <"$tmp/$name.out")" -ge 1 ]; then
            addr=$(head -n 1 "$tmp/$name.out" |
                awk '{ for (i = 1; i <= NF; i++) if ($i ~ /:[0-9]+$/) a = $i } END { print a }')
            break
        fi
        kill -0 "$!" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$addr" ]; then
        echo "echo_compare: $name ($bin) printed no HOST:PORT line" >&2
        cat "$tmp/$name.err" >&2
        exit 1
    fi
    echo "echo_compare: $name listening on $addr" >&2
}

start_server floor "$floor"
floor_addr=$addr
start_server netloop "$lib"
lib_addr=$addr

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

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

for scenario in $scenarios; do
    conns=${scenario%x*} size=${scenario#*x}
    : >"$tmp/floor.rates"
    : >"$tmp/lib.rates"
    for ((r = 1; r <= rounds; r++)); do
        run_one "$floor_addr" "$conns" "$size" >>"$tmp/floor.rates"
        run_one "$lib_addr" "$conns" "$size" >>"$tmp/lib.rates"
    done
    f=$(median <"$tmp/floor.rates")
    l=$(median <"$tmp/lib.rates")
    awk -v s="${scenario}B" -v f="$f" -v l="$l" \
        'BEGIN { printf "%s floor=%.0f netloop=%.0f ratio=%.2f\n", s, f, l, (f > 0 ? l / f : 0) }'
done
