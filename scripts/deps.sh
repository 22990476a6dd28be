#!/bin/sh
# Installs the Debian packages soma needs (as root), or prints the apt-get
# line to run.  Usage: sh scripts/deps.sh [bench|fuzz]
#   bench: also python3-torch, for the PyTorch comparison in `make bench`;
#   fuzz:  clang with its libFuzzer runtime, for `make fuzz`.
set -e
PKGS="gcc make libopenblas-dev libopenblas-openmp-dev zlib1g-dev liblzma-dev python3-numpy dataset-fashion-mnist npm"
[ "$1" = "bench" ] && PKGS="$PKGS python3-torch"
[ "$1" = "fuzz" ] && PKGS="clang libclang-rt-14-dev libomp-dev libopenblas-dev zlib1g-dev liblzma-dev"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
# npm may come from elsewhere (e.g. a nodejs install); accept any working npm.
case "$missing" in *" npm"*) command -v npm >/dev/null 2>&1 && missing=$(echo "$missing" | sed 's/ npm//');; esac
if [ -z "$missing" ]; then
    echo "deps: ✓ all present ($PKGS)"
    exit 0
fi
echo "deps: missing:$missing"
if [ "$(id -u)" = "0" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing
    echo "deps: ✓ installed:$missing"
else
    echo "deps: ✗ run as root:  apt-get install -y$missing" >&2
    exit 1
fi
