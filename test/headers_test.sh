#!/bin/sh
# Every public header, include/net/*.h (found here, so a new header is
# covered without listing it), stands on its own. For each header:
#   - it compiles first in a translation unit, included twice (the second
#     inclusion must add nothing), as C11 with gcc and clang (-std=c11
#     -Wall -Wextra -Wpedantic -Werror) and as C++11 and C++17 with g++ and
#     clang++ (the same warnings);
#   - the error codes its comments promise (-EINVAL, NET_ECANCELLED, ...)
#     and its NET_* constant macros are usable after including it alone;
#   - its include guard is NET_<NAME>_H, and a header that declares anything
#     wraps it in extern "C" for C++;
#   - in C++ its functions keep C linkage: an object that takes their
#     addresses refers to them by their C names, not by mangled ones.
# A compiler that is not installed is skipped with a message; with no C++
# compiler the C checks still run and the output says so. Fails naming the
# header and showing the compiler's output.
#   test/headers_test.sh SOURCE_ROOT
set -u
root=${1:-.}
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
bad=0

# fail HEADER WHAT [OUTPUT_FILE]: reports one defect.
fail() {
    echo "FAIL $1: $2"
    [ $# -lt 3 ] || head -n 40 "$3" | sed 's/^/    /'
    bad=1
}

# present CANDIDATE...: the candidates that are installed, skipping others loudly.
present() {
    for c in "$@"; do
        if command -v "$c" >/dev/null 2>&1; then
            printf ' %s' "$c"
        else
            echo "skip: $c is not installed" >&2
        fi
    done
}

# codes HEADER: the error codes its text names: -Exxx errnos and NET_Exxx.
codes() {
    grep -oE -e '(^|[^[:alnum:]_])-E[A-Z][A-Z0-9]+' -e 'NET_E[A-Z0-9_]+' "$1" |
        sed 's/^.*-E/E/' | grep -v -e '^NET_EXPORT$' -e '_H$' | sort -u
}

# macros HEADER: NET_* object-like macros whose value is an expression (a
# number, a parenthesised expression or another constant): not the include
# guard, NET_EXPORT's attribute or a braced initialiser.
macros() {
    sed -n 's/^#define \(NET_[A-Z0-9_]*\)[[:blank:]][[:blank:]]*[-0-9(A-Z].*/\1/p' "$1" | sort -u
}

# write_tu HEADER FILE: the translation unit that includes HEADER first.
write_tu() {
    n=0
    {
        printf '#include <net/%s>\n#include <net/%s>\n' "$1" "$1"
        # An enumerator per code: a missing name fails to compile, naming it.
        printf 'enum net_hdrtest_codes {\n'
        for c in $(codes "$root/include/net/$1"); do
            printf '    net_hdrtest_code_%s = %s,\n' "$n" "$c"; n=$((n + 1))
        done
        printf '    net_hdrtest_codes_end\n};\n'
        for m in $(macros "$root/include/net/$1"); do
            printf 'typedef char net_hdrtest_macro_%s[sizeof(%s)];\n' "$m" "$m"
        done
    } >"$2"
}

# compile HEADER LANG STD COMPILER: builds the unit of HEADER with one compiler.
compile() {
    ext=c; [ "$2" = c ] || ext=cc
    src="$tmp/${1%.h}.$ext"
    write_tu "$1" "$src"
    if ! "$4" -x "$2" -std="$3" -Wall -Wextra -Wpedantic -Werror -I"$root/include" \
         -c -o "$tmp/unit.o" "$src" >"$tmp/out" 2>&1; then
        fail "$1" "does not compile alone with $4 -std=$3" "$tmp/out"
    fi
}

# check_guard HEADER: the first two directives are #ifndef/#define NET_<NAME>_H.
check_guard() {
    guard=NET_$(echo "${1%.h}" | tr 'a-z' 'A-Z')_H
    first=$(grep '^#' "$root/include/net/$1" | head -n 2 | tr '\n' ' ')
    [ "$first" = "#ifndef $guard #define $guard " ] ||
        fail "$1" "include guard is not $guard (starts: $first)"
}

# check_extern_c HEADER: a header with declarations opens extern "C" for C++.
check_extern_c() {
    f="$root/include/net/$1"
    grep -q -e '^NET_EXPORT ' -e '^typedef ' -e '^struct ' -e '^enum' "$f" || return 0
    grep -A 1 '^#ifdef __cplusplus$' "$f" | grep -qx 'extern "C" {' ||
        fail "$1" 'declares things but has no #ifdef __cplusplus / extern "C" {'
}

# functions HEADER: the names of the functions it declares with NET_EXPORT.
functions() {
    sed -n 's/^NET_EXPORT .*[ *]\(net_[a-z0-9_]*\)(.*/\1/p' "$root/include/net/$1" | sort -u
}

# check_linkage HEADER CXX: a C++ object taking each function's address
# refers to the plain C symbol (a missing extern "C" would make it _Z...).
check_linkage() {
    names=$(functions "$1")
    [ -n "$names" ] || return 0
    src="$tmp/link.cc"
    {
        printf '#include <net/%s>\nvoid net_hdrtest_refs(void (**out)());\n' "$1"
        printf 'void net_hdrtest_refs(void (**out)()) {\n'
        i=0
        for fn in $names; do
            printf '    out[%s] = reinterpret_cast<void (*)()>(&%s);\n' "$i" "$fn"
            i=$((i + 1))
        done
        printf '}\n'
    } >"$src"
    if ! "$2" -std=c++11 -I"$root/include" -c -o "$tmp/link.o" "$src" >"$tmp/out" 2>&1; then
        fail "$1" "the linkage probe does not compile with $2" "$tmp/out"
        return
    fi
    nm -u "$tmp/link.o" | awk '{print $NF}' >"$tmp/undef"
    missing=$(for fn in $names; do grep -qx "$fn" "$tmp/undef" || printf ' %s' "$fn"; done)
    [ -z "$missing" ] && return
    grep '^_Z' "$tmp/undef" >"$tmp/mangled"
    fail "$1" "no C linkage in C++ for:$missing (its mangled references follow)" "$tmp/mangled"
}

ccs=$(present gcc clang)
cxxs=$(present g++ clang++)
[ -n "$ccs" ] || { echo "FAIL: neither gcc nor clang is installed"; exit 1; }
[ -n "$cxxs" ] || echo "note: no C++ compiler installed: checking the headers as C only"
command -v nm >/dev/null 2>&1 || echo "skip: nm is not installed: C linkage in C++ unchecked"

count=0
for path in "$root"/include/net/*.h; do
    [ -e "$path" ] || continue
    h=${path##*/}
    count=$((count + 1))
    check_guard "$h"
    check_extern_c "$h"
    for cc in $ccs; do compile "$h" c c11 "$cc"; done
    for cxx in $cxxs; do
        for std in c++11 c++17; do compile "$h" c++ "$std" "$cxx"; done
    done
    # One C++ compiler suffices: linkage is the header's, not the compiler's.
    set -- $cxxs
    if [ $# -gt 0 ] && command -v nm >/dev/null 2>&1; then check_linkage "$h" "$1"; fi
done
[ "$count" -gt 0 ] || { echo "FAIL: no headers in $root/include/net"; exit 1; }
[ $bad -eq 0 ] || exit 1
echo "headers ok: $count headers; C with:$ccs; C++ with:${cxxs:- none}"
