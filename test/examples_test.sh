#!/bin/sh
# examples_smoke: the example binaries and tools work end to end, on
# loopback, each bounded by a timeout:
#   echo_server + echo_client, graceful stop on SIGTERM
#   rpc_server + rpc_call exit codes (0 OK, 1 remote error, 3 local failure)
#   rpc_server + rpc_client
#   examples_test.sh BUILD_ROOT
set -eu
b=$1
tmp=$(mktemp -d)
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

fail() { echo "FAIL: $*"; exit 1; }

# SIGTERM, then the exit status must be 0 within 10 s.
stop_gracefully() {
    kill -TERM "$1"
    ( sleep 10; kill -KILL "$1" 2>/dev/null ) >/dev/null 2>&1 &
    watchdog=$!
    rc=0; wait "$1" || rc=$?
    pkill -P "$watchdog" 2>/dev/null || true
    kill "$watchdog" 2>/dev/null || true
    [ "$rc" -eq 0 ] || fail "$2 exited with $rc after SIGTERM"
}

# Starts a server on port 0 (in this shell, so that it can be waited for);
# sets $pid and $addr, the HOST:PORT it announced.
start() {
    name=$1; shift
    "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pid=$!
    pids="$pids $pid"
    for _ in $(seq 100); do
        addr=$(grep -o '127\.0\.0\.1:[0-9]*' "$tmp/$name.out" 2>/dev/null | head -n 1 || true)
        [ -n "$addr" ] && return 0
        sleep 0.05
    done
    fail "$name did not announce its address"
}

start echo "$b/examples/echo_server" --listen 127.0.0.1:0 --threads 2
echo_pid=$pid echo_addr=$addr
timeout 30 "$b/examples/echo_client" --connect "$echo_addr" --count 2000 --size 1000 ||
    fail "echo_client against echo_server"
stop_gracefully "$echo_pid" echo_server

start rpc "$b/examples/rpc_server" --listen 127.0.0.1:0
rpc_pid=$pid rpc_addr=$addr
out=$(timeout 10 "$b/tools/rpc_call" "$rpc_addr" echo hello) || fail "rpc_call echo"
[ "$out" = "hello" ] || fail "rpc_call echo printed '$out'"
out=$(printf 'from stdin' | timeout 10 "$b/tools/rpc_call" "$rpc_addr" echo -) || fail "stdin"
[ "$out" = "from stdin" ] || fail "rpc_call echo - printed '$out'"
rc=0; timeout 10 "$b/tools/rpc_call" "$rpc_addr" no_such_method x 2>/dev/null || rc=$?
[ "$rc" -eq 1 ] || fail "unknown method: exit $rc, want 1"
rc=0; timeout 10 "$b/tools/rpc_call" --timeout 50 "$rpc_addr" sleep 2000 2>/dev/null || rc=$?
[ "$rc" -eq 3 ] || fail "timeout: exit $rc, want 3"
# A port with nothing listening: bind-and-close finds one that refuses.
rc=0; timeout 10 "$b/tools/rpc_call" 127.0.0.1:1 echo x 2>/dev/null || rc=$?
[ "$rc" -eq 3 ] || fail "refused: exit $rc, want 3"
if [ -x "$b/examples/rpc_client" ]; then
    timeout 60 "$b/examples/rpc_client" --connect "$rpc_addr" >/dev/null || fail "rpc_client"
fi
stop_gracefully "$rpc_pid" rpc_server
echo "examples work"
