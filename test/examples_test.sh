#!/bin/sh
# The example binaries and tools, end to end on loopback, every step bounded
# by a timeout. One scenario per run (test/meson.build names each one):
#   examples_smoke                 echo_server + echo_client, graceful stop
#                                  on SIGTERM; rpc_server + rpc_call exit
#                                  codes (0 OK, 1 remote error, 3 local
#                                  failure); rpc_server + rpc_client
#   rpc_call_timeout_malformed     --timeout abc, 12x, -1, "", 2^64: usage
#                                  on stderr, exit 2
#   rpc_call_timeout_zero_is_default
#                                  --timeout 0 against a request that is
#                                  never answered: TIMEOUT after the 5 s
#                                  default, not a hang
#   rpc_server_sigterm_answers_sleepers[_threads]
#                                  SIGTERM while sleep calls are in flight
#                                  (0 or 2 I/O threads): each caller hears
#                                  SHUTTING_DOWN, not DISCONNECTED (the
#                                  replies used to be sent after the close)
#   examples_test.sh BUILD_ROOT [SCENARIO]    (default examples_smoke)
set -eu
b=$1
scenario=${2:-examples_smoke}
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

# Milliseconds since the epoch (GNU date).
now_ms() { echo $(($(date +%s%N) / 1000000)); }

examples_smoke() {
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
}

# No server is needed: a malformed number must fail before any connect.
rpc_call_timeout_malformed() {
    for ms in abc 12x -1 "" 18446744073709551616; do
        rc=0
        timeout 10 "$b/tools/rpc_call" --timeout "$ms" 127.0.0.1:1 echo x \
            >"$tmp/out" 2>"$tmp/err" || rc=$?
        [ "$rc" -eq 2 ] || fail "--timeout '$ms': exit $rc, want 2"
        grep -q '^usage: rpc_call' "$tmp/err" || fail "--timeout '$ms': no usage on stderr"
        [ ! -s "$tmp/out" ] || fail "--timeout '$ms': printed on stdout"
    done
    echo "malformed --timeout values are usage errors"
}

# sleep 600000 is a request the server holds far longer than the check.
rpc_call_timeout_zero_is_default() {
    start rpc "$b/examples/rpc_server" --listen 127.0.0.1:0
    t0=$(now_ms)
    rc=0; timeout 15 "$b/tools/rpc_call" --timeout 0 "$addr" sleep 600000 2>"$tmp/err" || rc=$?
    ms=$(($(now_ms) - t0))
    [ "$rc" -ne 124 ] || fail "--timeout 0 still running after 15 s"
    [ "$rc" -eq 3 ] || fail "--timeout 0: exit $rc, want 3"
    [ "$(cat "$tmp/err")" = "rpc_call: TIMEOUT" ] || fail "--timeout 0 printed '$(cat "$tmp/err")'"
    # 5000 ms is the default; well below it would mean 0 is taken literally.
    [ "$ms" -ge 4500 ] || fail "--timeout 0 gave up after $ms ms, want about 5000"
    stop_gracefully "$pid" rpc_server
    echo "--timeout 0 timed out after $ms ms"
}

# Three sleep calls, one connection each; once the server holds all three
# (its sleepers method), SIGTERM. Each caller must hear the server's
# SHUTTING_DOWN; a reply sent after the close would leave it DISCONNECTED.
sigterm_answers_sleepers() {
    start rpc "$b/examples/rpc_server" --listen 127.0.0.1:0 --threads "$1"
    srv=$pid callers=""
    for k in 1 2 3; do
        timeout 30 "$b/tools/rpc_call" --timeout 20000 "$addr" sleep 600000 \
            >"$tmp/call$k.out" 2>"$tmp/call$k.err" &
        callers="$callers $!"
        pids="$pids $!"
    done
    n=""
    for _ in $(seq 100); do
        n=$(timeout 10 "$b/tools/rpc_call" --timeout 1000 "$addr" sleepers 2>/dev/null || true)
        [ "$n" = 3 ] && break
        sleep 0.05
    done
    [ "$n" = 3 ] || fail "the server holds '$n' sleep calls, want 3"
    stop_gracefully "$srv" rpc_server
    k=0
    for p in $callers; do
        k=$((k + 1))
        rc=0; wait "$p" || rc=$?
        err=$(cat "$tmp/call$k.err")
        [ "$err" = "rpc_call: remote error 5 (SHUTTING_DOWN): server stopped" ] ||
            fail "sleep call $k (exit $rc) printed '$err'"
        [ "$rc" -eq 1 ] || fail "sleep call $k: exit $rc, want 1"
    done
    echo "3 sleep calls answered SHUTTING_DOWN ($1 I/O threads)"
}

case $scenario in
examples_smoke | rpc_call_timeout_malformed | rpc_call_timeout_zero_is_default)
    "$scenario" ;;
rpc_server_sigterm_answers_sleepers) sigterm_answers_sleepers 0 ;;
rpc_server_sigterm_answers_sleepers_threads) sigterm_answers_sleepers 2 ;;
*) fail "unknown scenario $scenario" ;;
esac
