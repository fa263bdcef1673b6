#!/bin/sh
# The layer rule of docs/design.md: lib/loop includes only lib/loop, lib/tcp
# includes lib/tcp and lib/loop, lib/rpc any of the three. A file that
# includes a layer above its own fails this test, naming the line.
#   test/layers_test.sh SOURCE_ROOT
set -u
root=${1:-.}
bad=0
# check LAYER ALLOWED...: every quoted include in lib/LAYER names an allowed layer.
check() {
    layer=$1; shift
    for f in "$root/lib/$layer"/*.[ch]; do
        grep -n '^#include "' "$f" | while IFS= read -r line; do
            target=$(printf '%s\n' "$line" | sed 's/^[0-9]*:#include "\([^/"]*\)\/.*/\1/')
            ok=0
            for a in "$@"; do [ "$target" = "$a" ] && ok=1; done
            [ $ok -eq 1 ] || echo "${f#"$root"/}:$line: layer $layer may not include $target"
        done
    done
}
out=$( { check loop loop; check tcp loop tcp; check rpc loop tcp rpc; } )
if [ -n "$out" ]; then
    printf '%s\n' "$out"
    exit 1
fi
# A quoted include without a layer folder would escape the rule.
stray=$(grep -n '^#include "[^/]*"' "$root"/lib/*/*.[ch])
if [ -n "$stray" ]; then
    printf '%s: include a lib/ header by its layer folder\n' "$stray"
    exit 1
fi
echo "layers ok: loop <- tcp <- rpc"
