#!/bin/sh
# Builds and runs the whole test suite in each configuration, then the
# fuzzers and the soak, and prints one closing line "N passed, N failed" over
# all of them (skipped tests are counted on the line before it).
#   ./tools/test.sh [CONFIG...]
#   CONFIG: plain asan tsan clang   the Meson suite in that build
#           fuzz                    tools/fuzz.sh, 60 s per libFuzzer target
#                                   (one test per target)
#           soak                    tools/soak for 30 s on the plain build
#                                   (build-plain; one test)
#   default: plain asan tsan, clang when installed, then fuzz and soak.
# Build directories: build-plain (release), build-asan, build-tsan,
# build-clang (debugoptimized), build-fuzz (tools/fuzz.sh); all with werror.
# One made by hand with other options or compiler is reconfigured (said on
# the output). build/ is left to tools/run.sh and to you.
# Every scenario of the suite runs once with the epoll and once with the poll
# backend.
set -u
cd "$(dirname "$0")/.." || exit 1
./tools/deps.sh --test || exit 1

configs="$*"
if [ -z "$configs" ]; then
    configs="plain asan tsan"
    command -v clang >/dev/null 2>&1 && configs="$configs clang"
    configs="$configs fuzz soak"
fi

total_pass=0 total_fail=0 total_skip=0
# report STAGE PASSED FAILED SKIPPED: one stage's line, added to the totals.
report() {
    echo "$1: $2 passed, $3 failed, $4 skipped"
    total_pass=$((total_pass + $2)); total_fail=$((total_fail + $3)); total_skip=$((total_skip + $4))
}

# Every configuration names all the options it depends on, werror among
# them (the project leaves werror off for projects that embed it), so a
# directory made by hand with other options is noticed.
plain_opts="buildtype=release werror=true b_sanitize=none b_lundef=true"
asan_opts="buildtype=debugoptimized werror=true b_sanitize=address,undefined b_lundef=false"
tsan_opts="buildtype=debugoptimized werror=true b_sanitize=thread b_lundef=false"
clang_opts="buildtype=debugoptimized werror=true b_sanitize=none b_lundef=true"

# config_diff DIR CC KEY=VALUE...: prints one line of the settings of DIR
# that differ (compiler=ID first if the compiler does); nothing when all match.
config_diff() {
    python3 - "$@" <<'PY'
import json, re, sys
d, cc = sys.argv[1], sys.argv[2]
want = dict(a.split("=", 1) for a in sys.argv[3:])
try:
    opts = {o["name"]: o["value"]
            for o in json.load(open(d + "/meson-info/intro-buildoptions.json"))}
    # Meson 1.0 has no compiler introspection; every configure logs
    # "C compiler for the host machine: cc (gcc 12.2.0 ...)".
    log = open(d + "/meson-logs/meson-log.txt").read()
    comp = re.search(r"C compiler for the host machine: \S+ \((\w+)", log).group(1)
except (OSError, KeyError, ValueError, AttributeError):
    print("unreadable configuration")
    sys.exit()
diff = ["compiler=" + comp] if comp != cc else []
for k, v in want.items():
    have = opts.get(k)
    have = str(have).lower() if isinstance(have, bool) else str(have)
    if have != v:
        diff.append(k + "=" + have)
if diff:
    print(" ".join(diff))
PY
}

# setup DIR CC KEY=VALUE...: configures DIR; an existing DIR is reused when
# its compiler and options match, else reconfigured (wiped for another
# compiler), saying so.
setup() {
    setup_dir=$1 setup_cc=$2; shift 2
    setup_how=""
    if [ -f "$setup_dir/build.ninja" ]; then
        setup_diff=$(config_diff "$setup_dir" "$setup_cc" "$@")
        [ -z "$setup_diff" ] && return 0
        setup_how=--reconfigure
        case "$setup_diff" in compiler=*|unreadable*) setup_how=--wipe ;; esac
        echo "$setup_dir: has ${setup_diff}; meson setup $setup_how for $setup_cc $*"
    fi
    # shellcheck disable=SC2046
    CC=$setup_cc meson setup $setup_how "$setup_dir" $(printf -- '-D%s ' "$@") \
        >"$setup_dir.setup.log" 2>&1 || { cat "$setup_dir.setup.log"; return 1; }
}

# Each libFuzzer target is one test; fuzz.sh exits 77 when clang's libFuzzer
# runtime is missing and cannot be installed (not root).
run_fuzz() {
    echo "=== fuzz (build-fuzz, 60 s per target)"
    ./tools/fuzz.sh --seconds 60 >build-fuzz.run.log 2>&1
    rc=$?
    cat build-fuzz.run.log
    # As many tests as fuzz.sh has default targets, so a new one counts.
    n=$(sed -n 's/^\[ -n "\$targets" \] || targets="\(.*\)"$/\1/p' tools/fuzz.sh | wc -w)
    if [ "$rc" -eq 77 ]; then
        report fuzz 0 0 "$n"; return
    fi
    p=$(grep -c '^fuzz_[a-z_]*: .*: ok$' build-fuzz.run.log)
    report fuzz "$p" $((n - p)) 0
}

# The soak needs the plain build's tools/soak (built here if missing).
run_soak() {
    echo "=== soak (build-plain, 30 s)"
    # shellcheck disable=SC2086
    if setup build-plain gcc $plain_opts &&
        ninja -C build-plain tools/soak >build-plain.build.log 2>&1 &&
        timeout 180 build-plain/tools/soak --seconds 30 --interval 5 >build-plain.soak.log 2>&1; then
        tail -1 build-plain.soak.log; report soak 1 0 0
    else
        tail -30 build-plain.soak.log 2>/dev/null; report soak 0 1 0
    fi
}
for config in $configs; do
    case "$config" in
    fuzz) run_fuzz; continue ;;
    soak) run_soak; continue ;;
    # build-plain, not build: tools/run.sh's build/ is a debugoptimized one.
    plain) dir=build-plain; opts=$plain_opts; cc=gcc ;;
    asan) dir=build-asan; opts=$asan_opts; cc=gcc ;;
    tsan) dir=build-tsan; opts=$tsan_opts; cc=gcc ;;
    clang) dir=build-clang; opts=$clang_opts; cc=clang ;;
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
