#!/usr/bin/env bash
# protocol_compare.sh: NRPC/1 against baidu_std on netloop's own RPC server.
#
#   tools/bench/protocol_compare.sh --builddir DIR [--rounds R] [--seconds N]
#       [-- RPC_BENCH_ARGS...]
#   defaults R=5 N=3, RPC_BENCH_ARGS: --connections 1 --depth 128 --size 64
#
# For each round, alternating which goes first, starts DIR/examples/
# rpc_server (0 I/O threads, 127.0.0.1, a free port) and drives it with
# DIR/tools/rpc_bench for N seconds, calling the example's
# example.EchoService.Echo with --echo-request (the same handler, which
# decodes the EchoRequest and encodes the EchoResponse) once over
# --protocol nrpc and once over --protocol baidu_std: only the framing
# differs. Prints each run,
# then the median calls/s of each and the ratio baidu_std/nrpc with the
# range of the per-round ratios.
set -euo pipefail

. "$(dirname "$0")/lib.sh"

dir='' rounds=5 seconds=3
bench_parse 4,6 --builddir=dir --rounds=rounds --seconds=seconds -- "$@"
[ -n "$dir" ] || bench_usage 4,6
args=("${bench_rest[@]}")
[ ${#args[@]} -gt 0 ] || args=(--connections 1 --depth 128 --size 64)
bench_require_exec "$dir/examples/rpc_server" "$dir/tools/rpc_bench"

bench_tmpdir

# run LABEL ARGS...: one server + one rpc_bench; appends calls/s to $tmp/LABEL.
run() {
    local label=$1 line
    shift
    bench_start_server server INT "$dir/examples/rpc_server" --listen 127.0.0.1:0
    line=$("$dir/tools/rpc_bench" "$addr" "${args[@]}" "$@" --seconds "$seconds" 2>/dev/null)
    bench_stop_server "$server_pid" INT || true
    echo "$label: $line"
    sed -n 's/.* calls\/s=\([0-9.]*\).*/\1/p' <<<"$line" >>"$tmp/$label"
}

nrpc() { run nrpc --protocol nrpc --method example.EchoService.Echo --echo-request; }
baidu() { run baidu --protocol baidu_std --method example.EchoService.Echo --echo-request; }

for r in $(seq "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then nrpc; baidu; else baidu; nrpc; fi
done
paste -d ' ' "$tmp/nrpc" "$tmp/baidu" | awk -v r="$rounds" '
    { n++; a[n] = $1 + 0; b[n] = $2 + 0; q = $1 ? $2 / $1 : 0
      if (n == 1 || q < lo) lo = q; if (n == 1 || q > hi) hi = q }
    function med(v, n,   i, j, x) {
        for (i = 2; i <= n; i++) { x = v[i]; for (j = i - 1; j > 0 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
        return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    END { ma = med(a, n); mb = med(b, n)
          printf "protocol_compare: rounds=%d median calls/s nrpc=%.0f baidu_std=%.0f ratio=%.2f (per round %.2f-%.2f)\n", r, ma, mb, mb / ma, lo, hi }'
