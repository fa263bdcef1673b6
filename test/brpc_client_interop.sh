#!/bin/sh
# netloop's baidu_std client (tools/rpc_call, tools/rpc_bench) against
# brpc 1.17's stock echo_server. Usage: brpc_client_interop.sh SOURCE_ROOT
# BUILD_ROOT. brpc's folder is $NETLOOP_BRPC_DIR or
# SOURCE_ROOT/../shared/interop/brpc; without it (or its runtime) the test
# is skipped (exit 77). Loopback only; every wait is bounded and the
# server is killed on exit.
set -eu
src=$1
b=$2
brpc=${NETLOOP_BRPC_DIR:-$src/../shared/interop/brpc}
if [ ! -x "$brpc/bin/echo_server" ] || ! "$brpc/bin/echo_client" --version >/dev/null 2>&1; then
    echo "SKIP: brpc's binaries or runtime missing at $brpc (set NETLOOP_BRPC_DIR)"
    exit 77
fi
brpc=$(cd "$brpc" && pwd)
b=$(cd "$b" && pwd)
tmp=$(mktemp -d)
pid=
# timeout(1) passes the TERM on to echo_server.
cleanup() {
    rc=$?
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT INT TERM
fail() { echo "FAIL: $*"; [ -f "$tmp/server.log" ] && tail -5 "$tmp/server.log"; exit 1; }

# Port 0: brpc picks a free one and logs it.
: >"$tmp/server.log" # created first: the server's shell may open it after the first look
(cd "$tmp" && exec timeout 120 "$brpc/bin/echo_server" -listen_addr=127.0.0.1:0) \
    >>"$tmp/server.log" 2>&1 &
pid=$!
port=
for _ in $(seq 100); do
    port=$(sed -n 's/.*is serving on port=\([0-9]*\).*/\1/p' "$tmp/server.log" | head -1)
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || fail "echo_server did not start"
addr=127.0.0.1:$port
call="timeout 20 $b/tools/rpc_call --protocol baidu_std"

# A message and an attachment, byte-exact (the attachment to a file).
out=$($call --echo-message "hello brpc" --attachment "att:1 2" --attachment-out "$tmp/att" \
      "$addr" example.EchoService.Echo) || fail "Echo exit $?"
[ "$out" = "hello brpc" ] || fail "Echo printed '$out'"
[ "$(cat "$tmp/att")" = "att:1 2" ] || fail "attachment came back as '$(cat "$tmp/att")'"
# Without --attachment-out it follows the body on stdout.
out=$($call --echo-message m --attachment a "$addr" example.EchoService.Echo) || fail "Echo 2"
[ "$out" = "ma" ] || fail "Echo with attachment on stdout printed '$out'"
# A raw body: the EchoRequest "hi" is 0a 02 68 69, echoed as the same bytes.
printf '\n\002hi' >"$tmp/req"
$call "$addr" example.EchoService.Echo - <"$tmp/req" >"$tmp/reply" || fail "raw Echo exit $?"
cmp -s "$tmp/req" "$tmp/reply" || fail "raw Echo reply differs"

# An unknown method: brpc's ENOMETHOD, mapped to UNKNOWN_METHOD, exit 1.
rc=0
$call "$addr" example.EchoService.NoSuch x 2>"$tmp/err" >/dev/null || rc=$?
[ "$rc" = 1 ] || fail "unknown method exit $rc, want 1"
grep -q 'remote error 1 (UNKNOWN_METHOD): .*E1002.*Fail to find method' "$tmp/err" ||
    fail "unknown method said: $(cat "$tmp/err")"
# A body brpc cannot parse: EREQUEST, mapped to BAD_REQUEST.
rc=0
$call "$addr" example.EchoService.Echo notprotobuf 2>"$tmp/err" >/dev/null || rc=$?
[ "$rc" = 1 ] || fail "bad body exit $rc, want 1"
grep -q 'remote error 2 (BAD_REQUEST): .*E1003' "$tmp/err" || fail "bad body said: $(cat "$tmp/err")"

# Pipelined load: bounded time, zero errors, every reply checked.
out=$(timeout 60 "$b/tools/rpc_bench" "$addr" --protocol baidu_std --echo-request --depth 16 \
      --attachment-size 100 --seconds 0.5 --warmup 0.1 2>"$tmp/bench.err") ||
    fail "rpc_bench: $out $(cat "$tmp/bench.err")"
echo "$out" | grep -q ' errors=0$' || fail "rpc_bench: $out"
out=$(timeout 60 "$b/tools/rpc_bench" "$addr" --protocol baidu_std --echo-request --threads 4 \
      --sync --size 300 --seconds 0.5 --warmup 0.1 2>"$tmp/bench.err") ||
    fail "rpc_bench --sync: $out $(cat "$tmp/bench.err")"
echo "$out" | grep -q ' errors=0$' || fail "rpc_bench --sync: $out"
echo "ok: rpc_call and rpc_bench over baidu_std against brpc's echo_server on $addr"
