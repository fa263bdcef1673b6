#!/bin/sh
# Builds and runs the whole test suite in each configuration, then the
# fuzzers and the soak, and prints one closing line "N passed, N failed" over
# all of them (skipped tests are counted on the line before it).
#   ./tools/test.sh [CONFIG...]
#   CONFIG: plain asan tsan clang   the Meson suite in that build
#           fuzz                    tools/fuzz.sh, 60 s per libFuzzer target
#                                   (one test per target)
#           soak                    tools/soak for 30 s on the plain build
#                                   (one test)
#   default: plain asan tsan, clang when installed, then fuzz and soak.
# Every scenario of the suite runs once with the epoll and once with the poll
# backend.
set -u
cd "$(dirname "$0")/.." || exit 1
./tools/deps.sh || exit 1

configs="$*"
if [ -z "$configs" ]; then
    configs="plain asan tsan"
    command -v clang >/dev/null 2>&1 && configs="$configs clang"
    configs="$configs fuzz soak"
fi

plain_opts="--buildtype=release"
total_pass=0 total_fail=0 total_skip=0
# report STAGE PASSED FAILED SKIPPED: one stage's line, added to the totals.
report() {
    echo "$1: $2 passed, $3 failed, $4 skipped"
    total_pass=$((total_pass + $2)); total_fail=$((total_fail + $3)); total_skip=$((total_skip + $4))
}

# setup DIR CC OPTS...: configures DIR once (later runs reuse it).
setup() {
    setup_dir=$1 setup_cc=$2; shift 2
    [ -f "$setup_dir/build.ninja" ] && return 0
    CC=$setup_cc meson setup "$setup_dir" "$@" >"$setup_dir.setup.log" 2>&1 || {
        cat "$setup_dir.setup.log"; return 1; }
}

# Each libFuzzer target is one test; fuzz.sh exits 77 when clang's libFuzzer
# runtime is missing and cannot be installed (not root).
run_fuzz() {
    echo "=== fuzz (build-fuzz, 60 s per target)"
    ./tools/fuzz.sh --seconds 60 >build-fuzz.run.log 2>&1
    rc=$?
    cat build-fuzz.run.log
    if [ "$rc" -eq 77 ]; then
        report fuzz 0 0 3; return
    fi
    p=$(grep -c '^fuzz_[a-z_]*: .*: ok$' build-fuzz.run.log)
    report fuzz "$p" $((3 - p)) 0
}

# The soak needs the plain build's tools/soak (built here if missing).
run_soak() {
    echo "=== soak (build, 30 s)"
    if setup build gcc $plain_opts && ninja -C build tools/soak >build.build.log 2>&1 &&
        timeout 180 build/tools/soak --seconds 30 --interval 5 >build.soak.log 2>&1; then
        tail -1 build.soak.log; report soak 1 0 0
    else
        tail -30 build.soak.log 2>/dev/null; report soak 0 1 0
    fi
}
for config in $configs; do
    case "$config" in
    fuzz) run_fuzz; continue ;;
    soak) run_soak; continue ;;
    plain) dir=build; opts=$plain_opts; cc=gcc ;;
    asan) dir=build-asan; opts="-Db_sanitize=address,undefined -Db_lundef=false"; cc=gcc ;;
    tsan) dir=build-tsan; opts="-Db_sanitize=thread -Db_lundef=false"; cc=gcc ;;
    clang) dir=build-clang; opts=""; cc=clang ;;
    *) echo "unknown configuration: $config" >&2; exit 2 ;;
    esac
    echo "=== $config ($dir)"
    # shellcheck disable=SC2086
    setup "$dir" "$cc" $opts || { total_fail=$((total_fail + 1)); continue; }
    if ! ninja -C "$dir" >"$dir.build.log" 2>&1; then
        tail -50 "$dir.build.log"
        echo "$config: build failed"
        total_fail=$((total_fail + 1))
        continue
    fi
    rm -f "$dir/meson-logs/testlog.json"
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
    ASAN_OPTIONS="detect_leaks=1:abort_on_error=0" \
    TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1" \
        meson test -C "$dir" --print-errorlogs --num-processes 2 >"$dir.test.log" 2>&1
    grep -E '^ *[0-9]+/[0-9]+ .*(FAIL|TIMEOUT|ERROR)' "$dir.test.log" | head -40
    counts=$(python3 - "$dir/meson-logs/testlog.json" <<'PY'
import json, sys
p = f = s = 0
try:
    for line in open(sys.argv[1]):
        r = json.loads(line).get("result")
        if r == "OK": p += 1
        elif r == "SKIP": s += 1
        else: f += 1
except OSError:
    f = 1
print(p, f, s)
PY
)
    # shellcheck disable=SC2086
    report "$config" $counts
done
echo "$total_skip skipped"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
