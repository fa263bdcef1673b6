#!/bin/sh
# Runs the libFuzzer targets of test/fuzz, each for a bounded time, in a
# separate clang build with ASan+UBSan (see docs/reliability.md, "Fuzzing").
#
#   tools/fuzz.sh [--seconds N] [--builddir DIR] [TARGET...]
#
# N: seconds per target (default 60). DIR: the build directory (default
# build-fuzz). TARGET: rpc_frames, baidu_frames, buffer, addr (default all four).
# Each target starts from a temporary copy of its seed corpus and regression
# inputs, so the checked-in corpus never grows. Prints one line per target
# and exits non-zero if any target crashed, leaked, hung or broke an
# invariant; the input that did it is kept under DIR/fuzz-artifacts/.
# Exits 77 (skip) when clang's libFuzzer runtime is missing and cannot be
# installed.
set -u
cd "$(dirname "$0")/.." || exit 1

seconds=60
builddir=build-fuzz
targets=""
while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) seconds="${2:?--seconds needs a value}"; shift 2 ;;
    --builddir) builddir="${2:?--builddir needs a value}"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets="$targets $1"; shift ;;
    esac
done
[ -n "$targets" ] || targets="rpc_frames baidu_frames buffer addr"
case "$seconds" in
''|*[!0-9]*) echo "fuzz.sh: --seconds wants a whole number, not '$seconds'" >&2; exit 2 ;;
esac

# True when clang can build and link a libFuzzer target.
have_libfuzzer() {
    probe_dir=$(mktemp -d) || return 1
    printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
        >"$probe_dir/probe.c"
    clang -fsanitize=fuzzer,address,undefined "$probe_dir/probe.c" -o "$probe_dir/probe" \
        >/dev/null 2>&1
    ok=$?
    rm -rf "$probe_dir"
    return $ok
}

ensure_libfuzzer() {
    command -v clang >/dev/null 2>&1 && have_libfuzzer && return 0
    echo "fuzz.sh: clang with the libFuzzer runtime is missing (packages clang, libclang-rt-14-dev)" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "fuzz.sh: SKIP: run as root to install them, or: apt-get install clang libclang-rt-14-dev" >&2
        exit 77
    fi
    echo "fuzz.sh: installing clang libclang-rt-14-dev" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q clang libclang-rt-14-dev || {
        echo "fuzz.sh: SKIP: apt-get could not install clang libclang-rt-14-dev" >&2; exit 77; }
    have_libfuzzer || { echo "fuzz.sh: clang still cannot link -fsanitize=fuzzer" >&2; exit 1; }
}

configure_and_build() {
    opts="-Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false -Dwerror=true"
    if [ -f "$builddir/build.ninja" ]; then
        # shellcheck disable=SC2086
        meson configure "$builddir" $opts >"$builddir.setup.log" 2>&1
    else
        # shellcheck disable=SC2086
        CC=clang meson setup "$builddir" --buildtype=debugoptimized $opts >"$builddir.setup.log" 2>&1
    fi || { cat "$builddir.setup.log" >&2; echo "fuzz.sh: configuring $builddir failed" >&2; exit 1; }
    exes=""
    for t in $targets; do exes="$exes test/fuzz/fuzz_$t"; done
    # shellcheck disable=SC2086
    nice -n 10 ninja -C "$builddir" -j2 $exes >"$builddir.build.log" 2>&1 || {
        tail -40 "$builddir.build.log" >&2; echo "fuzz.sh: build failed" >&2; exit 1; }
}

# The last value of a libFuzzer status field ("cov: 123") in the log.
last_field() {
    v=$(grep -o "$1: [0-9]*" "$2" | tail -1 | sed 's/.*: //')
    echo "${v:--}"
}

final_stat() {
    v=$(sed -n "s/^stat::$1: *//p" "$2" | tail -1)
    echo "${v:--}"
}

outcome() {
    if [ "$2" -eq 0 ]; then echo "ok"; return; fi
    if grep -q "LeakSanitizer" "$1"; then kind=LEAK
    elif grep -q "libFuzzer: timeout" "$1"; then kind=TIMEOUT
    elif grep -q "libFuzzer: out-of-memory" "$1"; then kind=OOM
    else kind=CRASH; fi
    unit=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$1" | tail -1)
    echo "$kind ${unit:-(no input saved)}"
}

run_target() {
    t=$1
    exe="$builddir/test/fuzz/fuzz_$t"
    corpus="$work/$t"
    artifacts="$builddir/fuzz-artifacts/$t"
    log="$builddir/fuzz-logs/$t.log"
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
    for f in test/fuzz/corpus/"$t"/* test/fuzz/regressions/"$t"/*; do
        [ -f "$f" ] && cp "$f" "$corpus/$(basename "$(dirname "$f")")-$(basename "$f")"
    done
    dict=""
    started=$(date +%s)
    [ -f "test/fuzz/fuzz_$t.dict" ] && dict="-dict=test/fuzz/fuzz_$t.dict"
    # $dict unquoted: empty means no argument at all.
    # shellcheck disable=SC2086
    ASAN_OPTIONS="detect_leaks=1" UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
        nice -n 10 "$exe" -max_total_time="$seconds" -detect_leaks=1 -max_len=4096 \
        -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" $dict "$corpus" >"$log" 2>&1
    rc=$?
    elapsed=$(($(date +%s) - started))
    printf 'fuzz_%s: %s runs in %ss (%s/s), cov %s, ft %s, corpus %s: %s\n' "$t" \
        "$(final_stat number_of_executed_units "$log")" "$elapsed" \
        "$(final_stat average_exec_per_sec "$log")" "$(last_field cov "$log")" \
        "$(last_field ft "$log")" "$(last_field corp "$log")" "$(outcome "$log" "$rc")"
    [ "$rc" -eq 0 ]
}

./tools/deps.sh || exit 1
ensure_libfuzzer
configure_and_build
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT INT TERM
failed=0
for t in $targets; do
    run_target "$t" || failed=1
done
[ "$failed" -eq 0 ] || echo "fuzz.sh: FAILED; logs in $builddir/fuzz-logs, inputs in $builddir/fuzz-artifacts" >&2
exit "$failed"
