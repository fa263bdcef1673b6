#!/usr/bin/env bash
# xsend_syscalls.sh: system calls per message of the cross-thread send path.
#
#   tools/bench/xsend_syscalls.sh --builddir DIR [--path P] [--threads T]
#       [--size S] [--seconds N] [--xsend BIN]
#   defaults P=loop T=4 S=64 N=3, BIN=DIR/examples/xsend
#
# Runs xsend under `strace -f -c -o FILE` (every thread of the process) and
# prints xsend's own line with syscalls/msg filled in:
#   xsend path=loop threads=T size=S seconds=N msgs=M ... syscalls/msg=Z
# Z = the process's system calls over its whole life / M, leaving out two
# kinds that belong to the benchmark, not to the send path: sched_yield (a
# producer backing off when IN_FLIGHT_BYTES are unchecked) and
# clock_nanosleep (the main thread timing the run and polling for the
# drain).  Setup and teardown (thread starts, connect, mmaps) are included:
# a few hundred calls, noise against M.  On stderr: the per-message figure of
# each call that makes more than 0.005 per message, and the total including
# the excluded calls.
# strace makes xsend many times slower (msgs/s drops accordingly); the
# counts per message are what this measures, not the speed.
set -euo pipefail

. "$(dirname "$0")/lib.sh"

builddir='' path=loop threads=4 size=64 seconds=3 xsend=''
bench_parse 4,6 --builddir=builddir --path=path --threads=threads --size=size \
    --seconds=seconds --xsend=xsend -- "$@"
[ -n "$builddir" ] || [ -n "$xsend" ] || bench_usage 4,6
xsend=${xsend:-$builddir/examples/xsend}
bench_require_exec "$xsend"
bench_require_cmd strace

bench_tmpdir

if ! line=$(timeout $((seconds + 120)) strace -f -c -o "$tmp/strace.txt" \
    "$xsend" --path "$path" --threads "$threads" --size "$size" --seconds "$seconds" \
    2>"$tmp/xsend.err"); then
    echo "xsend_syscalls: xsend failed" >&2
    cat "$tmp/xsend.err" >&2
    exit 1
fi
cat "$tmp/xsend.err" >&2

msgs=$(sed -n 's/.* msgs=\([0-9]*\) .*/\1/p' <<<"$line")
[ -n "$msgs" ] && [ "$msgs" -gt 0 ] || { echo "xsend_syscalls: no messages in: $line" >&2; exit 1; }

# strace -c rows: % time, seconds, usecs/call, calls, [errors], syscall; the
# calls are always the 4th field and the name the last.
awk -v m="$msgs" -v line="$line" '
    $NF == "total" { total = $4; next }
    NF >= 5 && $4 ~ /^[0-9]+$/ { calls[$NF] = $4 }
    END {
        excl = calls["sched_yield"] + calls["clock_nanosleep"]
        detail = ""
        for (s in calls)
            if (s != "sched_yield" && s != "clock_nanosleep" && calls[s] / m > 0.005)
                detail = detail sprintf(" %s=%.3f", s, calls[s] / m)
        printf "xsend_syscalls: per msg:%s; total incl. sched_yield=%d clock_nanosleep=%d: %.3f\n",
            detail, calls["sched_yield"], calls["clock_nanosleep"], total / m > "/dev/stderr"
        sub(/syscalls\/msg=[^ ]*/, sprintf("syscalls/msg=%.3f", (total - excl) / m), line)
        print line
    }' "$tmp/strace.txt"
