#!/usr/bin/env bash
# Builds one external tool that ferry's tests run for real (consul, jaeger,
# helm, ...) from the Go module proxy, and prints the path of the binary.
#
#   scripts/tool.sh consul      -> prints .../consul
#
# Each tool lives in tools/<name>/: its own go.mod (so the tool's
# dependencies never enter ferry's go.mod) and a TOOL file with
#   PKG=<main package to build>
#   VERSION=<version, used in the cache path>
# The binary is cached outside the clone, in
# ${FERRY_TOOLS_CACHE:-$HOME/.cache/ferry}/<name>-<version>/<name>, and
# linked into bin/ (git-ignored). A cached binary is reused; a fresh clone on
# a machine that built it once pays nothing.
set -euo pipefail
name=${1:?usage: scripts/tool.sh <tool>}
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/tools/$name"
[ -f "$dir/TOOL" ] || { echo "tool.sh: no tools/$name/TOOL" >&2; exit 2; }
# shellcheck disable=SC1091
. "$dir/TOOL"
: "${PKG:?tools/$name/TOOL sets no PKG}" "${VERSION:?tools/$name/TOOL sets no VERSION}"
command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$PATH"
cache="${FERRY_TOOLS_CACHE:-$HOME/.cache/ferry}/$name-$VERSION"
out="$cache/$name"
if [ ! -x "$out" ]; then
	mkdir -p "$cache"
	echo "tool.sh: building $name $VERSION ($PKG) into $cache (once per machine)" >&2
	start=$(date +%s)
	(cd "$dir" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o "$out.tmp" "$PKG")
	mv "$out.tmp" "$out"
	echo "tool.sh: built $name in $(( $(date +%s) - start ))s" >&2
fi
mkdir -p "$root/bin"
ln -sf "$out" "$root/bin/$name"
echo "$out"
