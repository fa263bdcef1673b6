#!/usr/bin/env bash
# xsend_compare.sh: the two cross-thread send paths side by side.
#
#   tools/bench/xsend_compare.sh --builddir DIR [--rounds R] [--threads T]
#       [--size S] [--seconds N]
#   defaults R=3 T=4 S=64 N=3
#
# Runs DIR/examples/xsend --path loop and --path queue alternately, R times
# each (which one goes first alternates too), prints every line, then one
# summary with the median msgs/s of each path and the ratio queue/loop.
set -euo pipefail

builddir='' rounds=3 threads=4 size=64 seconds=3
usage() {
    sed -n '4,6p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || usage
    case $1 in
    --builddir) builddir=$2 ;;
    --rounds) rounds=$2 ;;
    --threads) threads=$2 ;;
    --size) size=$2 ;;
    --seconds) seconds=$2 ;;
    *) usage ;;
    esac
    shift 2
done
[ -n "$builddir" ] || usage
xsend=$builddir/examples/xsend
[ -x "$xsend" ] || { echo "xsend_compare: $xsend: not an executable" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() {
    local line
    line=$("$xsend" --path "$1" --threads "$threads" --size "$size" --seconds "$seconds" 2>/dev/null)
    echo "$line"
    sed -n 's/.* msgs\/s=\([0-9.]*\).*/\1/p' <<<"$line" >>"$tmp/$1"
}
for r in $(seq "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then run loop; run queue; else run queue; run loop; fi
done
median() { sort -n "$1" | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
awk -v l="$(median "$tmp/loop")" -v q="$(median "$tmp/queue")" -v r="$rounds" \
    'BEGIN { printf "xsend_compare: rounds=%d median msgs/s loop=%.0f queue=%.0f ratio queue/loop=%.2f\n", r, l, q, q / l }'
