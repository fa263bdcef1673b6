#!/usr/bin/env bash
# brpc_compare.sh: brpc's own load client against netloop's RPC server and
# against brpc's own server, side by side.
#
#   tools/bench/brpc_compare.sh --netloop BUILD_DIR [--brpc DIR] [--threads "1 4 16"]
#       [--rounds R] [--seconds N] [--io-threads K] [--request-size B]
#   defaults: DIR $NETLOOP_BRPC_DIR or ../shared/interop/brpc, R=3, N=5, K=0, B=64
#
# For each client thread count and each round (alternating which server goes
# first) it starts one server -- BUILD_DIR/examples/rpc_server with K I/O
# threads, or brpc's bin/bench_echo_server -- and drives it for N seconds
# with brpc's bin/mt_echo_client over one connection (-connection_type=
# single, -request_size=B, baidu_std). QPS is the mean of the client's
# once-a-second lines after the first (its warm-up); p99 and p999 are the
# client's own latency recorder (its bvar client_latency_99/_999, in us,
# read from its -dummy_port just before it stops); errors counts its error
# lines. Prints each run, then per thread count the medians and the ratios
# netloop/brpc (QPS: higher is better; p99: lower is better) with the
# range of the per-round ratios. Loopback only.
set -euo pipefail

. "$(dirname "$0")/lib.sh"

root=$(cd "$(dirname "$0")/../.." && pwd)
netloop='' brpc=${NETLOOP_BRPC_DIR:-$root/../shared/interop/brpc}
threads='1 4 16' rounds=3 seconds=5 io_threads=0 size=64
bench_parse 4,7 --netloop=netloop --brpc=brpc --threads=threads --rounds=rounds \
    --seconds=seconds --io-threads=io_threads --request-size=size -- "$@"
[ -n "$netloop" ] || bench_usage 4,7
bench_require_exec "$netloop/examples/rpc_server" "$brpc/bin/mt_echo_client" \
    "$brpc/bin/bench_echo_server"
bench_require_cmd curl
bench_require_cmd python3

bench_tmpdir

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_netloop() {
    bench_start_server server INT "$netloop/examples/rpc_server" --listen 127.0.0.1:0 \
        --threads "$io_threads"
}

# brpc's server prints its port to its log only: pick one, wait for it.
start_brpc() {
    local port
    port=$(free_port)
    "$brpc/bin/bench_echo_server" -port="$port" >"$tmp/brpc.log" 2>&1 &
    server_pid=$!
    bench_track INT "$server_pid"
    addr=127.0.0.1:$port
    for _ in $(seq 100); do
        grep -q "is serving on port=$port" "$tmp/brpc.log" && return
        sleep 0.1
    done
    echo "$bench_prog: bench_echo_server did not start" >&2
    cat "$tmp/brpc.log" >&2
    exit 1
}

# drive T LABEL: one mt_echo_client run against $addr; appends
# "qps p99 p999 errors" to $tmp/LABEL.T.
drive() {
    local t=$1 label=$2 dport log=$tmp/client.log vars=$tmp/vars
    dport=$(free_port)
    "$brpc/bin/mt_echo_client" -server="$addr" -thread_num="$t" -connection_type=single \
        -request_size="$size" -dummy_port="$dport" >"$log" 2>&1 &
    local pid=$!
    bench_track INT "$pid"
    sleep "$seconds"
    curl -s --max-time 2 "http://127.0.0.1:$dport/vars/client_latency_99*" >"$vars" || true
    bench_stop_server "$pid" INT || true
    local qps p99 p999 errors
    qps=$(sed -n 's/.*qps=\([0-9]*\).*/\1/p' "$log" | tail -n +2 |
        awk '{ s += $1; n++ } END { print n ? s / n : 0 }')
    p99=$(awk '$1 == "client_latency_99" { print $3 }' "$vars")
    p999=$(awk '$1 == "client_latency_999" { print $3 }' "$vars")
    errors=$(grep -ci 'error' "$log" || true)
    printf '%-7s threads=%-2s qps=%-8.0f p99=%-6s p999=%-6s errors=%s\n' \
        "$label" "$t" "$qps" "${p99:-?}" "${p999:-?}" "$errors"
    echo "$qps ${p99:-0} ${p999:-0} $errors" >>"$tmp/$label.$t"
}

run() {
    local t=$1 label=$2
    if [ "$label" = netloop ]; then start_netloop; else start_brpc; fi
    drive "$t" "$label"
    bench_stop_server "$server_pid" INT || true
}

for t in $threads; do
    for r in $(seq "$rounds"); do
        if [ $((r % 2)) -eq 1 ]; then run "$t" netloop; run "$t" brpc
        else run "$t" brpc; run "$t" netloop; fi
    done
done

echo "--- medians; ratios netloop/brpc (per-round range)"
for t in $threads; do
    paste -d ' ' "$tmp/netloop.$t" "$tmp/brpc.$t" | awk -v t="$t" '
        function med(a, n,   i, j, x) {
            for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j > 0 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
            return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        {
            n++; nq[n] = $1 + 0; np[n] = $2 + 0; bq[n] = $5 + 0; bp[n] = $6 + 0; err += $4 + $8
            rq[n] = $5 ? $1 / $5 : 0; rp[n] = $6 ? $2 / $6 : 0
            if (n == 1 || rq[n] < qlo) qlo = rq[n]; if (n == 1 || rq[n] > qhi) qhi = rq[n]
            if (n == 1 || rp[n] < plo) plo = rp[n]; if (n == 1 || rp[n] > phi) phi = rp[n]
        }
        END {
            a = med(nq, n); b = med(bq, n); c = med(np, n); d = med(bp, n)
            printf "threads=%-2d qps netloop=%.0f brpc=%.0f ratio=%.2f (%.2f-%.2f)  p99us netloop=%s brpc=%s ratio=%.2f (%.2f-%.2f)  errors=%d\n",
                t, a, b, b ? a / b : 0, qlo, qhi, c, d, d ? c / d : 0, plo, phi, err
        }'
done
