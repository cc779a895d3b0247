#!/usr/bin/env bash
# One command for ferry's side-by-side benchmark: installs nginx, HAProxy and
# wrk from Debian's packages when missing, builds ferry (the tree as it is,
# the way deploy/Dockerfile builds the shipped binary: static, trimmed,
# stripped) and the harness, and runs the harness. Results go to
# results/<timestamp>/.
#
#   bench/run.sh            full mode (the sizes of issue 8; ~15-25 min on 2 cores)
#   bench/run.sh --quick    quick mode (a couple of minutes)
#   bench/run.sh --quick --proxies ferry,l4-splice --rounds 3   any ferrybench flag
#   bench/run.sh --publish  ...and copy the table and plots to bench/latest/ (what the README shows)
#   bench/run.sh --ferry-ref HEAD   measure ferry as committed at a git ref, not the working tree
set -euo pipefail

publish=0
ref=""
args=()
while (($#)); do
	case $1 in
	--publish) publish=1 ;;
	--ferry-ref) ref=${2:?--ferry-ref needs a git ref}; shift ;;
	--ferry-ref=*) ref=${1#--ferry-ref=} ;;
	*) args+=("$1") ;;
	esac
	shift
done
set -- ${args[@]+"${args[@]}"}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

missing=()
command -v nginx   >/dev/null 2>&1 || missing+=(nginx)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v wrk     >/dev/null 2>&1 || missing+=(wrk)
if ((${#missing[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "bench/run.sh: ${missing[*]} missing; run as root (or install them) so apt-get can add them" >&2
		exit 1
	fi
	echo "installing ${missing[*]} from Debian's packages"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	# The packages' own services are not wanted: the harness runs its own.
	for s in nginx haproxy; do
		service "$s" stop >/dev/null 2>&1 || true
	done
fi

stamp=$(date -u +%Y%m%d-%H%M%S)
out="$root/results/$stamp"
build="$root/results/.build"
mkdir -p "$out" "$build"

if [[ -n $ref ]]; then
	rev=$(git -C "$root" rev-parse --short "$ref^{commit}")
	src=$(mktemp -d)
	trap 'rm -rf "$src"' EXIT
	git -C "$root" archive "$rev" | tar -x -C "$src"
	echo "building ferry at $ref ($rev) and the harness"
	(cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$rev" -o "$build/ferry" ./cmd/ferry)
else
	rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
	if [[ -n $(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null) ]]; then rev="$rev+uncommitted-changes"; fi
	echo "building ferry from the working tree ($rev) and the harness"
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$rev" -o "$build/ferry" ./cmd/ferry
fi
(cd bench && go build -o "$build/ferrybench" ./cmd/ferrybench && go build -o "$build/benchnode" ./cmd/benchnode)

ln -sfn "$stamp" "$root/results/latest"
invocation="bench/run.sh"
((publish)) && invocation+=" --publish"
[[ -n $ref ]] && invocation+=" --ferry-ref $ref"
(($#)) && invocation+=" $*"
set +e
"$build/ferrybench" run --ferry "$build/ferry" --out "$out" --ferry-rev "$rev" --invocation "$invocation" "$@" 2>&1 | tee "$out/log.txt"
rc=${PIPESTATUS[0]}
set -e
if ((rc == 0 && publish)); then
	mkdir -p "$root/bench/latest"
	rm -f "$root/bench/latest/"*.png "$root/bench/latest/results.md"
	cp "$out/results.md" "$out/"*.png "$root/bench/latest/"
	echo "copied the table and plots to bench/latest/"
fi
exit "$rc"
