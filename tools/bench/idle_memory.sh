#!/usr/bin/env bash
# idle_memory.sh: user-space memory of echo_server per idle connection.
#
#   tools/bench/idle_memory.sh --builddir DIR [--connections N] [--threads T]
#       [--max-bytes-per-conn B] [--sources S] [--server BIN] [--idle-conns BIN]
#   defaults N=50000 T=0 B=2048 S=as few as needed,
#   BIN=DIR/examples/echo_server, DIR/tools/bench/idle_conns
#
# Starts the server with --listen 127.0.0.1:0 (and --threads T), reads its port
# from the last HOST:PORT token of its first stdout line, runs idle_conns
# against it (N concurrent connections spread over 127.0.0.x sources, one
# echoed 64-byte message each, RSS of the server before and after, then a
# second echoed message on every connection with all N open) and stops the
# server with SIGTERM.  Prints idle_conns' line:
#   idle_conns conns=N sources=S rss_before_kib=A rss_after_kib=B
#       bytes_per_conn=X anon_bytes_per_conn=Y server_fds=F echoed=E/2N
#       target=B PASS|FAIL
# Kernel socket buffers are not in RSS: X is the server's own cost.  Exit 0
# when every message was echoed and X <= B (B=0: no limit), 1 otherwise, 77
# (skip, with the reason) when the descriptor limit cannot be raised to
# N + 64 for both processes (beyond the hard limit that takes
# CAP_SYS_RESOURCE, which root in a container may lack).  Only
# this script's own limit is raised (ulimit), never a system setting.
set -euo pipefail

. "$(dirname "$0")/lib.sh"

builddir='' conns=50000 threads=0 max_bytes=2048 sources=0 server='' idle=''
bench_parse 4,8 --builddir=builddir --connections=conns --threads=threads \
    --max-bytes-per-conn=max_bytes --sources=sources --server=server --idle-conns=idle -- "$@"
if [ -z "$builddir" ] && { [ -z "$server" ] || [ -z "$idle" ]; }; then bench_usage 4,8; fi
server=${server:-$builddir/examples/echo_server}
idle=${idle:-$builddir/tools/bench/idle_conns}
bench_require_exec "$server" "$idle"

# The server needs N descriptors too, and inherits the limit from here.
want=$((conns + 64))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$want" ]; then
    ulimit -Hn "$want" 2>/dev/null || true
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
    # Raising a hard limit takes CAP_SYS_RESOURCE (bit 24 of CapEff), which
    # root in a container may lack.
    capeff=$(awk '/^CapEff:/ { print $2 }' /proc/self/status)
    cap=without
    [ $(((0x${capeff:-0} >> 24) & 1)) -eq 1 ] && cap=with
    echo "idle_memory: SKIP: $conns connections need a descriptor limit of $want;" \
        "this process has $(ulimit -n) (hard $(ulimit -Hn), fs.nr_open" \
        "$(cat /proc/sys/fs/nr_open)) and runs as uid $(id -u) $cap CAP_SYS_RESOURCE," \
        "which raising the hard limit needs"
    exit 77
fi

bench_tmpdir
bench_start_server server TERM "$server" --listen 127.0.0.1:0 --threads "$threads"
spid=$server_pid

rc=0
timeout 600 "$idle" --connect "$addr" --pid "$spid" --connections "$conns" \
    --max-bytes-per-conn "$max_bytes" --sources "$sources" || rc=$?

bench_stop_server "$spid" TERM || rc=1
[ -s "$tmp/server.err" ] && sed 's/^/idle_memory: server: /' "$tmp/server.err" >&2
exit "$rc"
