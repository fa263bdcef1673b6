#!/bin/sh
# install_pkgconfig: `meson install` into a staging dir, then build a tiny
# program with the installed pkg-config file and run it. Then the same
# program with netloop as a Meson subproject.
#   install_test.sh SOURCE_ROOT BUILD_ROOT
set -eu
src=$1 build=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

meson install -C "$build" --destdir "$tmp/stage" --quiet >/dev/null
pcdir=$(find "$tmp/stage" -name netloop.pc -exec dirname {} \; | head -n 1)
[ -n "$pcdir" ] || { echo "netloop.pc was not installed"; exit 1; }
test -f "$(find "$tmp/stage" -path '*/netloop/net/loop.h' | head -n 1)" ||
    { echo "headers not under include/netloop/net"; exit 1; }
if find "$tmp/stage" -path '*/include/net/loop.h' | grep -v '/netloop/net/' | grep -q .; then
    echo "headers installed into include/net (would clash with the system)"; exit 1
fi

export PKG_CONFIG_PATH="$pcdir" PKG_CONFIG_SYSROOT_DIR="$tmp/stage"
cflags=$(pkg-config --cflags netloop) libs=$(pkg-config --libs netloop)
# shellcheck disable=SC2086
${CC:-cc} -std=c11 -Wall -Wextra -Werror $cflags "$src/test/install/hello.c" -o "$tmp/hello" $libs
so=$(find "$tmp/stage" -name 'libnetloop.so*' -type f | head -n 1)
LD_LIBRARY_PATH="$(dirname "$so")" "$tmp/hello"
# Only net_* symbols are exported from the shared library.
bad=$(nm -D --defined-only "$so" | awk '$2 ~ /[TDBR]/ {print $3}' | grep -v '^net_' || true)
[ -z "$bad" ] || { echo "exported non-net_ symbols:"; echo "$bad"; exit 1; }

mkdir -p "$tmp/consumer/subprojects"
cp "$src/test/install/hello.c" "$tmp/consumer/"
cp "$src/test/install/meson.build.in" "$tmp/consumer/meson.build"
ln -s "$src" "$tmp/consumer/subprojects/netloop"
unset PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
meson setup "$tmp/consumer/build" "$tmp/consumer" --wrap-mode=forcefallback >/dev/null
ninja -C "$tmp/consumer/build" >/dev/null
"$tmp/consumer/build/hello"
echo "install and subproject builds work"
