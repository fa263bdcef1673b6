#!/bin/sh
# Installs what building netloop needs beyond gcc and git: meson, ninja and
# pkg-config, from Debian's packages, only when they are missing.
#   tools/deps.sh [--test]
# --test (tools/test.sh): also dpkg-dev, debhelper and fakeroot, for the
# deb_package test, and, when the stock brpc binaries are beside the project
# (../shared/interop/brpc, or $NETLOOP_BRPC_DIR), their runtime libraries,
# for the baidu_std interop tests. Those tests skip without them, so failing
# to get them is only a warning.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
brpc=${NETLOOP_BRPC_DIR:-$root/../shared/interop/brpc}
missing="" optional=""
command -v meson >/dev/null 2>&1 || missing="$missing meson"
command -v ninja >/dev/null 2>&1 || missing="$missing ninja-build"
command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
if [ "${1:-}" = "--test" ]; then
    command -v dpkg-buildpackage >/dev/null 2>&1 || optional="$optional dpkg-dev"
    command -v dh >/dev/null 2>&1 || optional="$optional debhelper"
    command -v fakeroot >/dev/null 2>&1 || optional="$optional fakeroot"
    # mt_echo_client also links tcmalloc (libgoogle-perftools4).
    for b in echo_client mt_echo_client; do
        if [ -x "$brpc/bin/$b" ] && ! "$brpc/bin/$b" --version >/dev/null 2>&1; then
            optional="$optional libgflags2.2 libprotobuf32 libleveldb1d libssl3 libsnappy1v5"
            optional="$optional zlib1g libgoogle-perftools4"
            break
        fi
    done
fi
[ -z "$missing$optional" ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
elif [ -n "$missing" ]; then
    echo "netloop: need root (or sudo) to apt-get install$missing" >&2
    exit 1
else
    echo "netloop: no root to install$optional: the deb_package and brpc interop tests will skip" >&2
    exit 0
fi
echo "netloop: installing$missing$optional" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q || [ -z "$missing" ] # offline: the install below warns
if [ -n "$missing" ]; then
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q $missing
fi
if [ -n "$optional" ]; then
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q $optional ||
        echo "netloop: could not install$optional: the tests that need them will skip" >&2
fi
