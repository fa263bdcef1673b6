#!/bin/sh
# uring_echo_test.sh BENCH_BUILD_DIR: the io_uring echo prototype echoes
# every byte, in order, on loopback (tools/bench/echo_check), through the
# paths a benchmark does not take:
#   many small connections; 4 x 8 MiB streamed both ways (partial sends, the
#   receive paused at 64 KiB unsent and rearmed); 300 connections that write
#   256 KiB before they read, through a 4 KiB receive buffer, against a pool
#   of 64 buffers (URING_ECHO_BUFS; it runs dry: ENOBUFS, and the receives
#   are rearmed); half-close (what was sent is echoed, then the server
#   closes); then SIGTERM: exit 0 within 10 s, and the counters it prints
#   must show the pool ran dry (else the ENOBUFS path went untested).  Skips (exit 77) when the kernel refuses
# io_uring or a feature the prototype needs (uring_echo exits 3).
set -eu
b=$1
tmp=$(mktemp -d)
pid=''
cleanup() {
    [ -z "$pid" ] || kill -KILL "$pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fail() { echo "FAIL: $*"; cat "$tmp/err" 2>/dev/null; exit 1; }

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
URING_ECHO_BUFS=64 "$b/uring_echo" --listen 127.0.0.1:0 >"$tmp/out" 2>"$tmp/err" &
pid=$!
addr=''
for _ in $(seq 100); do
    addr=$(grep -o '127\.0\.0\.1:[0-9]*' "$tmp/out" 2>/dev/null | head -n 1 || true)
    [ -n "$addr" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then
        rc=0; wait "$pid" || rc=$?; pid=''
        if [ "$rc" -eq 3 ]; then echo "SKIP: $(cat "$tmp/err")"; exit 77; fi
        fail "uring_echo exited with $rc before listening"
    fi
    sleep 0.05
done
[ -n "$addr" ] || fail "uring_echo did not announce its address"

check() {
    timeout 90 "$b/echo_check" --connect "$addr" "$@" || fail "echo_check $*"
}
check --connections 50 --bytes 1000
check --connections 4 --bytes 8388608
check --connections 300 --bytes 262144 --hold-ms 300 --rcvbuf 4096
check --connections 10 --bytes 100000 --half-close

kill -TERM "$pid"
( sleep 10; kill -KILL "$pid" 2>/dev/null ) >/dev/null 2>&1 &
watchdog=$!
rc=0; wait "$pid" || rc=$?
pid=''
kill "$watchdog" 2>/dev/null || true
[ "$rc" -eq 0 ] || fail "uring_echo exited with $rc after SIGTERM"
cat "$tmp/err" # the features in use and the counters, for the log
grep -q ' enobufs=[1-9]' "$tmp/err" || fail "the buffer pool never ran dry"
