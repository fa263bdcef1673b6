#!/bin/sh
# readme_samples_compile: every C block of README.md that is a whole program
# (it has `int main`) compiles and links, as a new user would build it, with
# -std=c11 -Wall -Werror against the public headers and the library.
#   readme_test.sh SOURCE_ROOT BUILD_ROOT
set -eu
src=$1 build=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Split the README's ```c blocks into sample1.c, sample2.c, ...
awk -v dir="$tmp" '
    /^```c$/ { n++; out = dir "/sample" n ".c"; inblock = 1; next }
    /^```/ && inblock { inblock = 0; close(out); next }
    inblock { print > out }
' "$src/README.md"
count=0
for f in "$tmp"/sample*.c; do
    [ -f "$f" ] || continue
    grep -q 'int main' "$f" || continue
    count=$((count + 1))
    if ! ${CC:-cc} -std=c11 -Wall -Werror -I"$src/include" "$f" -o "$f.bin" \
        "$build/libnetloop.a" -pthread 2>"$f.err"; then
        echo "README sample $(basename "$f") does not build:"
        cat -n "$f"
        cat "$f.err"
        exit 1
    fi
done
[ "$count" -gt 0 ] || { echo "no whole-program sample found in README.md"; exit 1; }
echo "$count README samples build"
