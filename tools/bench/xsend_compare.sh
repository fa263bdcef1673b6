#!/usr/bin/env bash
# xsend_compare.sh: the two cross-thread send paths side by side.
#
#   tools/bench/xsend_compare.sh --builddir DIR [--rounds R] [--threads T]
#       [--size S] [--seconds N]
#   defaults R=3 T=4 S=64 N=3
#
# queue is the library's own path (net_conn_send from another thread: the
# connection's wait-free write queue); loop is a functor per send carrying a
# copy, which xsend builds from the public API (net_loop_queue_in_loop, then
# net_conn_send on the loop), as the library's first cross-thread path did.
# Runs DIR/examples/xsend --path loop and --path queue alternately, R times
# each (which one goes first alternates too), prints every line, then one
# summary with the median msgs/s of each path and the ratio queue/loop.
set -euo pipefail

. "$(dirname "$0")/lib.sh"

builddir='' rounds=3 threads=4 size=64 seconds=3
bench_parse 4,6 --builddir=builddir --rounds=rounds --threads=threads --size=size \
    --seconds=seconds -- "$@"
[ -n "$builddir" ] || bench_usage 4,6
xsend=$builddir/examples/xsend
bench_require_exec "$xsend"

bench_tmpdir
run() {
    local line
    line=$("$xsend" --path "$1" --threads "$threads" --size "$size" --seconds "$seconds" 2>/dev/null)
    echo "$line"
    sed -n 's/.* msgs\/s=\([0-9.]*\).*/\1/p' <<<"$line" >>"$tmp/$1"
}
for r in $(seq "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then run loop; run queue; else run queue; run loop; fi
done
awk -v l="$(bench_median "$tmp/loop")" -v q="$(bench_median "$tmp/queue")" -v r="$rounds" \
    'BEGIN { printf "xsend_compare: rounds=%d median msgs/s loop=%.0f queue=%.0f ratio queue/loop=%.2f\n", r, l, q, q / l }'
