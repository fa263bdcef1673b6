#!/bin/sh
# deb_package: builds the Debian packages of debian/ from a copy of the
# source tree (dpkg-buildpackage -us -uc -b), checks what each .deb holds,
# unpacks them into a temporary root (dpkg -x: nothing is installed on the
# system) and builds and runs test/install/hello.c against the unpacked
# headers and library.
#   deb_test.sh SOURCE_ROOT
# Exits 77 (skip) when dpkg-buildpackage, dh (debhelper) or fakeroot is
# missing: apt-get install dpkg-dev debhelper fakeroot.
set -eu
src=$1
for tool in dpkg-buildpackage dh fakeroot; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "SKIP: $tool is missing (apt-get install dpkg-dev debhelper fakeroot)"
        exit 77
    }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
ma=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
tree=$tmp/netloop-$version
root=$tmp/root

# The files git knows (tracked, or new and not ignored), else everything but
# build directories: never a build dir's objects or another package build.
copy_tree() {
    mkdir -p "$tree"
    if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$src" && git ls-files -z --cached --others --exclude-standard |
            tar --null --ignore-failed-read -cf - -T - 2>/dev/null) | tar -xf - -C "$tree"
    else
        (cd "$src" && tar --exclude='./build*' --exclude='./obj-*' -cf - .) | tar -xf - -C "$tree"
    fi
    [ -f "$tree/debian/rules" ] || fail "the copy of $src has no debian/rules"
}

build_debs() {
    if ! (cd "$tree" && DEB_BUILD_OPTIONS="parallel=2 ${DEB_BUILD_OPTIONS:-}" \
            dpkg-buildpackage -us -uc -b) >"$tmp/build.log" 2>&1; then
        tail -60 "$tmp/build.log"
        fail "dpkg-buildpackage"
    fi
}

# deb_has PACKAGE PATH...: each PATH (as dpkg-deb -c lists it) is in the
# .deb; the listing stays in $tmp/PACKAGE.list for deb_lacks.
deb_has() {
    pkg=$1; shift
    deb=$tmp/${pkg}_${version}_$arch.deb
    [ -f "$deb" ] || fail "$pkg: no $deb"
    dpkg-deb -c "$deb" | awk '{print $6}' >"$tmp/$pkg.list"
    for path; do
        grep -qxF "$path" "$tmp/$pkg.list" || fail "$pkg lacks $path"
    done
}

# deb_lacks PACKAGE REGEX: no path of the .deb matches (grep -E).
deb_lacks() {
    ! grep -E "$2" "$tmp/$1.list" || fail "$1 holds files that belong elsewhere"
}

check_contents() {
    lib=./usr/lib/$ma
    deb_has libnetloop0 "$lib/libnetloop.so.0" "$lib/libnetloop.so.0.1.0"
    deb_lacks libnetloop0 '\.(a|h|pc)$|libnetloop\.so$|/bin/'
    headers=$(cd "$src/include" && for h in net/*.h; do echo "./usr/include/netloop/$h"; done)
    # shellcheck disable=SC2086
    deb_has libnetloop-dev "$lib/libnetloop.so" "$lib/libnetloop.a" \
        "$lib/pkgconfig/netloop.pc" $headers
    deb_lacks libnetloop-dev 'libnetloop\.so\.|/bin/'
    deb_has netloop-tools ./usr/bin/netloop-rpc-call \
        ./usr/bin/netloop-rpc-bench ./usr/bin/netloop-pingpong
    deb_lacks netloop-tools '/lib/|/include/'
    # dh_shlibdeps saw the tools need the library.
    dpkg-deb -f "$tmp/netloop-tools_${version}_$arch.deb" Depends | grep -q 'libnetloop0' ||
        fail "netloop-tools does not depend on libnetloop0"
}

use_unpacked() {
    for p in libnetloop0 libnetloop-dev netloop-tools; do
        dpkg -x "$tmp/${p}_${version}_$arch.deb" "$root"
    done
    libdir=$root/usr/lib/$ma
    ${CC:-cc} -std=c11 -Wall -Wextra -Werror -I"$root/usr/include/netloop" \
        "$src/test/install/hello.c" -o "$tmp/hello" -L"$libdir" -lnetloop "-Wl,-rpath,$libdir"
    env -u LD_LIBRARY_PATH "$tmp/hello" || fail "hello against the unpacked packages exits $?"
    # The .pc file names the system paths the packages install to.
    pc_libdir=$(PKG_CONFIG_PATH=$libdir/pkgconfig pkg-config --variable=libdir netloop)
    [ "$pc_libdir" = "/usr/lib/$ma" ] || fail "netloop.pc: libdir=$pc_libdir"
    LD_LIBRARY_PATH=$libdir "$root/usr/bin/netloop-rpc-call" --help | grep -qx 'EXIT STATUS' ||
        fail "the packaged netloop-rpc-call --help"
}

copy_tree
build_debs
check_contents
use_unpacked
echo "netloop $version: libnetloop0, libnetloop-dev, netloop-tools build, hold their files, and work unpacked"
