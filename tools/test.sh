#!/bin/sh
# Builds and runs the whole test suite in each configuration and prints one
# closing line "N passed, N failed, N skipped" over all of them.
#   ./tools/test.sh [CONFIG...]   CONFIG: plain asan tsan clang
#                                 (default: plain asan tsan, and clang when installed)
# Every scenario runs once with the epoll and once with the poll backend.
set -u
cd "$(dirname "$0")/.."
./tools/deps.sh || exit 1

configs="$*"
if [ -z "$configs" ]; then
    configs="plain asan tsan"
    command -v clang >/dev/null 2>&1 && configs="$configs clang"
fi

total_pass=0 total_fail=0 total_skip=0
for config in $configs; do
    case "$config" in
    plain) dir=build; opts="--buildtype=release"; cc=gcc ;;
    asan) dir=build-asan; opts="-Db_sanitize=address,undefined -Db_lundef=false"; cc=gcc ;;
    tsan) dir=build-tsan; opts="-Db_sanitize=thread -Db_lundef=false"; cc=gcc ;;
    clang) dir=build-clang; opts=""; cc=clang ;;
    *) echo "unknown configuration: $config" >&2; exit 2 ;;
    esac
    echo "=== $config ($dir)"
    if [ ! -f "$dir/build.ninja" ]; then
        # shellcheck disable=SC2086
        CC=$cc meson setup "$dir" $opts >"$dir.setup.log" 2>&1 || {
            cat "$dir.setup.log"; total_fail=$((total_fail + 1)); continue; }
    fi
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
    set -- $counts
    echo "$config: $1 passed, $2 failed, $3 skipped"
    total_pass=$((total_pass + $1)); total_fail=$((total_fail + $2)); total_skip=$((total_skip + $3))
done
echo "$total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]
