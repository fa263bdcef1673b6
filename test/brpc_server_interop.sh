#!/bin/sh
# brpc 1.17's own clients against examples/rpc_server (baidu_std on the
# port that also answers NRPC/1), on 127.0.0.1, every step bounded:
#  - echo_client -attachment=..., without and with -enable_checksum (a
#    CRC32C request checksum): every response line is a success that
#    echoes "hello world" and the attachment byte for byte;
#  - mt_echo_client, 16 threads on one connection, ~5 s: no error line and
#    a non-zero qps.
# The clients' call timeout is raised from brpc's 100 ms to 5 s: a loaded or
# sanitized server is slow, and this checks answers, never speed.
# Skips (exit 77) when the brpc folder ($NETLOOP_BRPC_DIR, else
# SOURCE_ROOT/../shared/interop/brpc) or its runtime is missing.
#   brpc_server_interop.sh SOURCE_ROOT BUILD_ROOT
set -eu
src=$1
b=$2
brpc=${NETLOOP_BRPC_DIR:-$src/../shared/interop/brpc}
if [ ! -x "$brpc/bin/echo_client" ] || ! "$brpc/bin/echo_client" --version >/dev/null 2>&1; then
    echo "SKIP: no runnable brpc clients in $brpc (set NETLOOP_BRPC_DIR; see its README)"
    exit 77
fi
tmp=$(mktemp -d)
server=""
cleanup() {
    [ -n "$server" ] && kill -KILL "$server" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

# Created first: the server's shell may open it after the first look below.
: >"$tmp/server.out"
"$b/examples/rpc_server" --listen 127.0.0.1:0 >>"$tmp/server.out" 2>&1 &
server=$!
port=""
for _ in $(seq 50); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/server.out")
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || fail "rpc_server did not start: $(cat "$tmp/server.out")"

att='netloop-attachment_0123456789'
# Twice: plain, then with a CRC32C request checksum that the server verifies.
for sum in false true; do
    timeout -s INT 3 "$brpc/bin/echo_client" -server=127.0.0.1:"$port" -interval_ms=50 \
        -timeout_ms=5000 -attachment="$att" -enable_checksum=$sum >"$tmp/echo.out" 2>&1 || true
    grep 'client.cpp' "$tmp/echo.out" | grep -v 'going to quit' >"$tmp/calls" || true
    calls=$(wc -l <"$tmp/calls")
    ok=$(grep -c "Received response from 127\.0\.0\.1:$port to .*: hello world (attached=$att) latency=" \
         "$tmp/calls" || true)
    echo "echo_client -enable_checksum=$sum: $ok of $calls calls echoed message and attachment"
    [ "$calls" -ge 5 ] || fail "echo_client made $calls calls: $(tail -5 "$tmp/echo.out")"
    [ "$ok" -eq "$calls" ] ||
        fail "echo_client failures: $(grep -v 'hello world (attached=' "$tmp/calls" | head -5)"
done

timeout -s INT 5 "$brpc/bin/mt_echo_client" -server=127.0.0.1:"$port" -thread_num=16 -timeout_ms=5000 \
    -connection_type=single -request_size=64 >"$tmp/mt.out" 2>&1 || true
errors=$(grep -ci 'error' "$tmp/mt.out" || true)
grep 'qps=' "$tmp/mt.out" | tail -3
[ "$errors" -eq 0 ] || fail "mt_echo_client: $errors error lines: $(grep -i error "$tmp/mt.out" | head -3)"
grep -q 'qps=[1-9]' "$tmp/mt.out" || fail "mt_echo_client: no calls: $(tail -3 "$tmp/mt.out")"

kill -INT "$server"
for _ in $(seq 50); do
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$server" 2>/dev/null && fail "rpc_server did not stop on SIGINT"
wait "$server" || fail "rpc_server exited $?"
server=""
echo "PASS"
