#!/bin/sh
# Quick start: install what is missing, build, and run the main example.
#   ./tools/run.sh [EXAMPLE ARGS...]    (default: echo_server, or loop_demo)
set -eu
cd "$(dirname "$0")/.."
./tools/deps.sh
# --werror: netloop's own builds treat warnings as errors (the project
# default leaves that to projects embedding it).
[ -f build/build.ninja ] || meson setup --werror build >/dev/null
ninja -C build >/dev/null
if [ -x build/examples/echo_server ]; then
    exec build/examples/echo_server "$@"
fi
exec build/examples/loop_demo "$@"
