# shellcheck shell=bash
# lib.sh: what the benchmark scripts of tools/bench share (bash). Source it:
#   . "$(dirname "$0")/lib.sh"
# It sets $bench_prog (the script's name, for messages), and, once
# bench_tmpdir has run, $tmp, removed at exit together with every process
# handed to bench_track that is still running.

bench_prog=$(basename "$0" .sh)

# bench_usage FIRST,LAST: prints lines FIRST to LAST of the script's header
# comment (its synopsis) to stderr and exits 2.
bench_usage() {
    sed -n "${1}p" "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# bench_parse FIRST,LAST --option=var ... -- "$@": sets each var from an
# "--option VALUE" pair of the arguments. Whatever follows a lone -- goes to
# the array bench_rest; anything else unknown prints the usage (bench_usage
# FIRST,LAST).
bench_parse() {
    local _bp_lines=$1
    local -A _bp_var=()
    shift
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        _bp_var[${1%%=*}]=${1#*=}
        shift
    done
    shift
    bench_rest=()
    while [ $# -gt 0 ]; do
        if [ "$1" = -- ]; then
            shift
            # shellcheck disable=SC2034 # for the script that sourced this
            bench_rest=("$@")
            return
        fi
        if [ $# -lt 2 ] || [ -z "${_bp_var[$1]+set}" ]; then
            bench_usage "$_bp_lines"
        fi
        printf -v "${_bp_var[$1]}" '%s' "$2"
        shift 2
    done
}

# bench_require_exec BIN...: each must be an executable file.
bench_require_exec() {
    local bin
    for bin in "$@"; do
        [ -x "$bin" ] || { echo "$bench_prog: $bin: not an executable (build first)" >&2; exit 1; }
    done
}

# bench_require_cmd CMD: CMD must be on the PATH.
bench_require_cmd() {
    command -v "$1" >/dev/null || { echo "$bench_prog: $1 not found" >&2; exit 1; }
}

# ---- processes and the temporary directory --------------------------------------

bench_tracked=() # "SIGNAL PID": what bench_cleanup sends to a process still running

# bench_track SIGNAL PID: at exit, PID gets SIGNAL (and is waited for) if it
# still runs.
bench_track() {
    bench_tracked+=("$1 $2")
}

# bench_untrack PID: PID has been stopped and waited for by the script.
bench_untrack() {
    local keep=() entry
    for entry in "${bench_tracked[@]}"; do
        [ "${entry#* }" = "$1" ] || keep+=("$entry")
    done
    bench_tracked=("${keep[@]}")
}

bench_cleanup() {
    local entry
    for entry in "${bench_tracked[@]}"; do
        kill -0 "${entry#* }" 2>/dev/null && kill -"${entry%% *}" "${entry#* }" 2>/dev/null
    done
    for entry in "${bench_tracked[@]}"; do
        wait "${entry#* }" 2>/dev/null || true
    done
    [ -z "${tmp:-}" ] || rm -rf "$tmp"
}

# bench_tmpdir: a fresh $tmp, and the exit traps that clean up.
bench_tmpdir() {
    tmp=$(mktemp -d)
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

# ---- servers that print their address -----------------------------------------

# bench_start_server NAME SIGNAL CMD...: runs CMD in the background (stdout
# to $tmp/NAME.out, stderr to $tmp/NAME.err), tracked with SIGNAL, and waits
# up to 10 s for its first stdout line. Sets $server_pid, and $addr to the
# last HOST:PORT token of that line (so start servers with --listen
# 127.0.0.1:0). Fails if there is none.
bench_start_server() {
    local name=$1 sig=$2
    shift 2
    : >"$tmp/$name.out"
    "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    server_pid=$!
    bench_track "$sig" "$server_pid"
    addr=''
    for _ in $(seq 100); do
        if [ "$(wc -l <"$tmp/$name.out")" -ge 1 ]; then
            addr=$(head -n 1 "$tmp/$name.out" |
                awk '{ for (i = 1; i <= NF; i++) if ($i ~ /:[0-9]+$/) a = $i } END { print a }')
            break
        fi
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$addr" ]; then
        echo "$bench_prog: $name ($1) printed no HOST:PORT line" >&2
        cat "$tmp/$name.err" >&2
        exit 1
    fi
}

# bench_stop_server PID SIGNAL: sends SIGNAL and waits up to 5 s; a server
# still running then is killed. Returns 1 in that case.
bench_stop_server() {
    local pid=$1 rc=0
    kill -"$2" "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$bench_prog: the server ignored SIG$2" >&2
        kill -KILL "$pid" 2>/dev/null || true
        rc=1
    fi
    wait "$pid" 2>/dev/null || true
    bench_untrack "$pid"
    return "$rc"
}

# bench_stop_traced STRACE_PID SIGNAL: stops the process that strace runs
# with SIGNAL, as the user would, so that it exits normally and strace writes
# its summary. If it ignores the signal for 10 s, strace detaches and the
# process is killed.
bench_stop_traced() {
    local spid=$1 tracee
    tracee=$(pgrep -P "$spid" || true)
    [ -n "$tracee" ] && kill -"$2" "$tracee"
    for _ in $(seq 100); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$spid" 2>/dev/null; then
        echo "$bench_prog: the server ignored SIG$2; detaching strace" >&2
        kill -INT "$spid"
        [ -n "$tracee" ] && kill -KILL "$tracee" 2>/dev/null
    fi
    wait "$spid" 2>/dev/null || true
    bench_untrack "$spid"
}

# ---- figures ---------------------------------------------------------------------

# bench_median [FILE...]: the median of the numbers, one per line.
bench_median() {
    sort -g "$@" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# bench_strace_calls FILE NAME: the calls column of NAME's row (or of the
# total) in an `strace -c` summary; 0 if absent.
bench_strace_calls() {
    awk -v s="$2" '$NF == s { n = $4 } END { print n + 0 }' "$1"
}
