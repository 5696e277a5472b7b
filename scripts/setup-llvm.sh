#!/usr/bin/env bash
# Offline stand-in for the LLVM bundle that cubecl-llvm's build script would download.
#
# cubecl-cuda 0.11 depends on cubecl-llvm, whose dependency tracel-llvm-bundler downloads a
# prebuilt LLVM in build.rs unless a marker file exists under
# $HOME/.local/share/tracel/tracel-llvm-<version>/. These machines reach only package
# registries, so we install Debian's LLVM and point the bundler at it with an llvm-config
# wrapper. Only the `cuda` feature needs this; the default build does not.
#
# Usage: scripts/setup-llvm.sh [Cargo.lock]   (needs root for apt-get)
set -euo pipefail
LLVM=${LLVM:-22}
LOCK=${1:-Cargo.lock}
if ! dpkg -s "llvm-$LLVM-dev" >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "llvm-$LLVM-dev" "libpolly-$LLVM-dev" libzstd-dev zlib1g-dev >/dev/null
fi
VER=${TRACEL_VER:-$(grep -A1 'name = "tracel-llvm-bundler"' "$LOCK" | sed -n 's/version = "\(.*\)"/\1/p')}
if [ -z "$VER" ]; then
    echo "setup-llvm: no tracel-llvm-bundler in $LOCK (is the cuda feature resolved?)" >&2
    exit 1
fi
DIR="$HOME/.local/share/tracel/tracel-llvm-$VER"
mkdir -p "$DIR/bin"
# Write only what changed: the bundler's build script reruns (and everything above cubecl-llvm
# rebuilds, ~7 min) whenever these files' timestamps move.
TMP=$(mktemp)
cat > "$TMP" <<EOS
#!/bin/sh
# Forwards to Debian's LLVM $LLVM; turns absolute .so paths into -l flags for static linking.
/usr/lib/llvm-$LLVM/bin/llvm-config "\$@" | sed -E 's#/[^ ]*/lib([A-Za-z0-9_+-]+)\.so[^ ]*#-l\1#g'
EOS
if ! cmp -s "$TMP" "$DIR/bin/llvm-config"; then
    mv "$TMP" "$DIR/bin/llvm-config"
    chmod +x "$DIR/bin/llvm-config"
else
    rm -f "$TMP"
fi
[ "$(readlink "$DIR/lib")" = "/usr/lib/llvm-$LLVM/lib" ] || ln -sfn "/usr/lib/llvm-$LLVM/lib" "$DIR/lib"
[ "$(readlink "$DIR/include")" = "/usr/lib/llvm-$LLVM/include" ] || ln -sfn "/usr/lib/llvm-$LLVM/include" "$DIR/include"
[ -e "$DIR/.tracel-llvm-installed" ] || touch "$DIR/.tracel-llvm-installed"
echo "setup-llvm: tracel-llvm-$VER -> LLVM $("$DIR/bin/llvm-config" --version)"
