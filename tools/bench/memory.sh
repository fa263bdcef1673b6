#!/usr/bin/env bash
# memory.sh: a server's memory under hostile peers (tools/hostile), one table.
#
#   tools/bench/memory.sh --builddir DIR [--quick] [--scenarios 'a1 a20 b c d f']
#       [--max-rss-mb M] [--threads T] [--hostile BIN]
#   defaults: all six, M=4096, T=0, BIN=DIR/tools/hostile
#
# Builds nothing. For each scenario it starts a fresh DIR/examples/echo_server
# (a) or DIR/examples/rpc_server (the others) with --listen 127.0.0.1:0
# --threads T, reads the address from the last HOST:PORT token of its first
# stdout line, runs hostile against it and stops it with SIGTERM:
#   a1   echo-noread       1 client x 200 MiB, never reads
#   a20  echo-noread       20 clients x 200 MiB, never read
#   b    rpc-noread        2,000,000 pipelined 1 KiB echo calls, replies read
#                          only after sending stops; every reply checked
#   c    partial-frames    500 connections announce a 60 MiB body and send all
#                          but its last byte; an honest echo call every 100 ms
#   d    slowloris         5000 connections, one request byte each every 5 s
#   f    idle-after-large  100 connections, one 16 MiB echo call each, then idle
# each for at most 60 s; (e) is the RSS 5 s after each burst, with every
# hostile socket closed. --quick scales down for a smoke run: 20 MiB per
# client, 200,000 calls, 50 x 8 MiB partial frames, 50 slowloris
# connections, 10 idle-after-large calls, 10 s each. A fresh server per
# scenario keeps one scenario's leftovers out of the next one's figures.
# hostile cuts a burst short when the server's RSS passes M MiB (the table
# says "capped"): the machine is shared.
#
# Prints each hostile line to stderr and a markdown table to stdout (RSS in
# MiB). Exit 1 when a scenario failed its own checks (hostile's exit status),
# 0 otherwise.
set -euo pipefail

. "$(dirname "$0")/lib.sh"

quick=0 args=()
for arg in "$@"; do
    if [ "$arg" = --quick ]; then quick=1; else args+=("$arg"); fi
done
builddir='' scenarios='a1 a20 b c d f' cap=4096 threads=0 hostile=''
bench_parse 4,6 --builddir=builddir --scenarios=scenarios --max-rss-mb=cap \
    --threads=threads --hostile=hostile -- "${args[@]}"
[ -n "$builddir" ] || bench_usage 4,6
hostile=${hostile:-$builddir/tools/hostile}
echo_server=$builddir/examples/echo_server
rpc_server=$builddir/examples/rpc_server
bench_require_exec "$hostile" "$echo_server" "$rpc_server"

if [ "$quick" = 1 ]; then
    seconds=10 mb=20 requests=200000 pf_clients=50 pf_mb=8 loris=50 idle=10
else
    seconds=60 mb=200 requests=2000000 pf_clients=500 pf_mb=60 loris=5000 idle=100
fi

# Slowloris holds thousands of sockets; both processes inherit this limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

bench_tmpdir

# scenario_args KEY: sets $server, $load and the array $hargs for scenario KEY.
scenario_args() {
    case $1 in
    a1 | a20)
        local n=${1#a}
        server=$echo_server load="$n x $mb MiB, never read"
        hargs=(--scenario echo-noread --clients "$n" --mb "$mb") ;;
    b)
        server=$rpc_server load="$requests x 1 KiB echo, pipelined, read after"
        hargs=(--scenario rpc-noread --requests "$requests" --size 1024) ;;
    c)
        server=$rpc_server load="$pf_clients x $pf_mb MiB frames, all but 1 byte"
        hargs=(--scenario partial-frames --clients "$pf_clients" --frame-mb "$pf_mb") ;;
    d)
        server=$rpc_server load="$loris conns, 1 byte / 5 s"
        hargs=(--scenario slowloris --clients "$loris" --interval-s 5) ;;
    f)
        server=$rpc_server load="$idle x one 16 MiB echo, then idle"
        hargs=(--scenario idle-after-large --clients "$idle" --size $((16 << 20))) ;;
    *)
        echo "$bench_prog: unknown scenario $1 (a1 a20 b c d f)" >&2
        exit 2 ;;
    esac
}

declare -A f=()

# parse_line LINE: the key=value fields of a hostile line into f.
parse_line() {
    local kv
    f=()
    for kv in $1; do
        [[ $kv == *=* ]] && f[${kv%%=*}]=${kv#*=}
    done
}

mib() { awk -v k="${1:--1}" 'BEGIN { if (k < 0) print "?"; else printf "%.1f", k / 1024 }'; }

# outcome KEY: the scenario's own counts, in words, from f.
outcome() {
    case $1 in
    a*) echo "sent ${f[sent_min_mib]}-${f[sent_max_mib]} MiB per client;" \
        "completed ${f[completed]}, stalled ${f[stalled]}, closed ${f[closed]}" ;;
    b) echo "sent ${f[sent]}: ok ${f[ok]}, missing ${f[missing]}, duplicate ${f[duplicate]}," \
        "bad ${f[bad]} (overloaded ${f[overloaded]}); stalled ${f[stalled]}" ;;
    c) echo "sent ${f[sent_mib]} MiB; held ${f[completed]}, stalled ${f[stalled]}," \
        "closed ${f[closed]}; honest ${f[honest_ok]}/${f[honest_calls]} ok," \
        "max ${f[honest_max_ms]} ms" ;;
    d) if [ "${f[closed]}" = 0 ]; then
        echo "closed 0/${f[opened]}: all still open at the end"
    else
        echo "closed ${f[closed]}/${f[opened]} (eof ${f[eof]}, rst ${f[rst]}) after" \
            "${f[first_close_s]}/${f[median_close_s]}/${f[last_close_s]} s (first/median/last)"
    fi ;;
    f) echo "ok ${f[ok]}/${f[calls]}; idle: ${f[bytes_per_idle_conn]} B per connection" ;;
    esac
}

rows=() rc=0
for key in $scenarios; do
    scenario_args "$key"
    bench_start_server "$key" TERM "$server" --listen 127.0.0.1:0 --threads "$threads"
    hrc=0
    line=$(timeout $((seconds + 180)) "$hostile" "${hargs[@]}" --connect "$addr" \
        --pid "$server_pid" --seconds "$seconds" --max-rss-mb "$cap") || hrc=$?
    bench_stop_server "$server_pid" TERM || true
    echo "$bench_prog: $key: ${line:-hostile printed nothing} (exit $hrc)" >&2
    [ "$hrc" -eq 0 ] || rc=1
    parse_line "$line"
    if [ -z "${f[scenario]:-}" ]; then
        rows+=("| $key | $load | ? | ? | ? | ? | **no result (exit $hrc)** |")
        continue
    fi
    note=''
    [ "${f[capped]:-0}" = 1 ] && note=" **capped at $cap MiB**"
    [ "$hrc" -eq 0 ] || note="$note **FAIL (exit $hrc)**"
    rows+=("| $key ${f[scenario]} | $load | $(mib "${f[before_kib]}") | $(mib "${f[peak_rss_kib]}") |\
 $(mib "${f[end_kib]}") | $(mib "${f[after5s_kib]}") | $(outcome "$key")$note |")
done

echo "| scenario | load | RSS before | peak | end of burst | 5 s after (e) | outcome |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit "$rc"
