#!/bin/sh
# install_pkgconfig: `meson install` into a staging dir, then use it the way
# README ("Installing", "Use it from your own Meson project") tells users:
#  - the layout: headers under include/netloop/net, netloop.pc, libnetloop.so
#    exporting only net_* symbols, the tools netloop-rpc-call,
#    netloop-rpc-bench and netloop-pingpong with their manuals (--help);
#  - test/install/hello.c built with pkg-config and an rpath to the libdir,
#    run without LD_LIBRARY_PATH; and linked with the installed libnetloop.a;
#  - netloop as a Meson subproject (test/install/meson.build.in): hello with
#    dependency('netloop') and with dependency('netloop', static: true), the
#    static one not needing libnetloop.so, and netloop's build forcing
#    neither -Werror nor its warning level on the embedding project.
#   install_test.sh SOURCE_ROOT BUILD_ROOT
set -eu
src=$1 build=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
stage=$tmp/stage
fail() { echo "FAIL: $*"; exit 1; }

check_layout() {
    test -f "$(find "$stage" -path '*/netloop/net/loop.h' | head -n 1)" ||
        fail "headers not under include/netloop/net"
    if find "$stage" -path '*/include/net/loop.h' | grep -v '/netloop/net/' | grep -q .; then
        fail "headers installed into include/net (would clash with the system)"
    fi
    # Only net_* symbols are exported from the shared library.
    bad=$(nm -D --defined-only "$libdir/libnetloop.so" | awk '$2 ~ /[TDBR]/ {print $3}' |
        grep -v '^net_' || true)
    [ -z "$bad" ] || fail "exported non-net_ symbols: $bad"
    test -f "$libdir/libnetloop.a" || fail "libnetloop.a not installed in $libdir"
}

# The tools' runpath is the real libdir (not yet there: the library is only
# staged), so LD_LIBRARY_PATH stands in for it here.
check_tools() {
    bindir=$(dirname "$(find "$stage" -name netloop-rpc-call -type f | head -n 1)")
    for t in netloop-rpc-call netloop-rpc-bench netloop-pingpong; do
        [ -x "$bindir/$t" ] || fail "$t not installed in $bindir"
        LD_LIBRARY_PATH=$libdir "$bindir/$t" --help >"$tmp/help" || fail "$t --help exits $?"
        for section in NAME SYNOPSIS DESCRIPTION OPTIONS 'EXIT STATUS' EXAMPLES; do
            grep -qx "$section" "$tmp/help" || fail "$t --help has no $section section"
        done
    done
    real_libdir=${libdir#"$stage"}
    case "$real_libdir" in /usr/lib*) return 0 ;; esac # a system prefix needs no runpath
    readelf -d "$bindir/netloop-rpc-call" | grep -q "RUNPATH.*\[$real_libdir\]" ||
        fail "netloop-rpc-call has no runpath $real_libdir"
}

# Exit codes of the manual that examples_test.sh does not reach: stdin that
# cannot be read is 4; usage errors name the program as it was run.
check_rpc_call_codes() {
    rc=0; LD_LIBRARY_PATH=$libdir "$bindir/netloop-rpc-call" 127.0.0.1:1 echo - </ \
        2>"$tmp/err" || rc=$?
    [ "$rc" -eq 4 ] || fail "netloop-rpc-call with a directory as stdin: exit $rc, want 4"
    rc=0; LD_LIBRARY_PATH=$libdir "$bindir/netloop-rpc-call" --timeout x 127.0.0.1:1 echo \
        2>"$tmp/err" || rc=$?
    [ "$rc" -eq 2 ] || fail "netloop-rpc-call --timeout x: exit $rc, want 2"
    grep -q '^usage: netloop-rpc-call ' "$tmp/err" || fail "usage does not say netloop-rpc-call"
}

# As README says: pkg-config for the flags, an rpath for the loader.
check_pkgconfig_consumer() {
    export PKG_CONFIG_PATH="$pcdir" PKG_CONFIG_SYSROOT_DIR="$stage"
    cflags=$(pkg-config --cflags netloop) libs=$(pkg-config --libs netloop)
    rpath=$(pkg-config --variable=libdir netloop)
    [ "$rpath" = "$libdir" ] || fail "pkg-config libdir is $rpath, want $libdir"
    # shellcheck disable=SC2086
    ${CC:-cc} -std=c11 -Wall -Wextra -Werror $cflags "$src/test/install/hello.c" \
        -o "$tmp/hello" $libs "-Wl,-rpath,$rpath"
    env -u LD_LIBRARY_PATH "$tmp/hello" || fail "hello (rpath) exits $?"
    # shellcheck disable=SC2086
    ${CC:-cc} -std=c11 -Wall -Wextra -Werror $cflags "$src/test/install/hello.c" \
        -o "$tmp/hello_a" "$libdir/libnetloop.a" -pthread
    ! needs_libnetloop "$tmp/hello_a" || fail "hello linked with libnetloop.a needs the .so"
    env -u LD_LIBRARY_PATH "$tmp/hello_a" || fail "hello (libnetloop.a) exits $?"
    unset PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
}

needs_libnetloop() { readelf -d "$1" | grep NEEDED | grep -q 'libnetloop\.so'; }

# forcefallback: an installed netloop (say the .deb) must not stand in.
check_subproject_consumer() {
    c=$tmp/consumer
    mkdir -p "$c/subprojects"
    cp "$src/test/install/hello.c" "$c/"
    cp "$src/test/install/meson.build.in" "$c/meson.build"
    ln -s "$src" "$c/subprojects/netloop"
    meson setup "$c/build" "$c" --wrap-mode=forcefallback >"$tmp/setup.log" 2>&1 ||
        { cat "$tmp/setup.log"; fail "consumer setup"; }
    ninja -C "$c/build" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; fail "consumer build"; }
    needs_libnetloop "$c/build/hello" || fail "dependency('netloop') did not link the .so"
    ! needs_libnetloop "$c/build/hello_static" ||
        fail "dependency('netloop', static: true) links libnetloop.so"
    env -u LD_LIBRARY_PATH "$c/build/hello" || fail "subproject hello exits $?"
    env -u LD_LIBRARY_PATH "$c/build/hello_static" || fail "subproject hello_static exits $?"
    check_warning_flags "$c/build/compile_commands.json"
}

# Every compile without -Werror; netloop's own sources with its -Wextra
# (warning_level 2), the consumer's without it (its level 1).
check_warning_flags() {
    python3 - "$1" <<'PY' || fail "warning flags of the subproject build"
import json, sys
entries = json.load(open(sys.argv[1]))
bad = []
for e in entries:
    ours = "/subprojects/netloop/" in e["file"]
    flags = e["command"].split()
    if any(f == "-Werror" or f.startswith("-Werror=") for f in flags):
        bad.append("-Werror: " + e["file"])
    if ("-Wextra" in flags) != ours:
        bad.append(("no " if ours else "") + "-Wextra: " + e["file"])
if not any("/subprojects/netloop/" in e["file"] for e in entries):
    bad.append("no netloop source among the compile commands")
if bad:
    print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
}

meson install -C "$build" --destdir "$stage" --quiet >/dev/null
pcdir=$(find "$stage" -name netloop.pc -exec dirname {} \; | head -n 1)
[ -n "$pcdir" ] || fail "netloop.pc was not installed"
libdir=$(dirname "$pcdir")
check_layout
check_tools
check_rpc_call_codes
check_pkgconfig_consumer
check_subproject_consumer
echo "install (pkg-config with rpath, libnetloop.a, tools) and subproject (shared, static) work"
