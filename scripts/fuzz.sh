#!/usr/bin/env bash
# Runs every fuzz target of ferry for a short time each (CI runs this; a
# crash fails the script and leaves the failing input under
# <package>/testdata/fuzz/<FuzzName>/, to commit as a regression seed once
# fixed).
#
#   scripts/fuzz.sh                 # every target, FUZZTIME each (default 20s)
#   FUZZTIME=5m scripts/fuzz.sh     # longer runs
#   scripts/fuzz.sh FuzzHeaders     # only the named targets
#
# FUZZMINIMIZETIME (default 1s) bounds the minimisation of each new input,
# which otherwise can eat most of a short run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$PATH"

FUZZTIME=${FUZZTIME:-20s}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-1s}
PKGS=(./sidecar ./deploy/inject)

fail=0
for pkg in "${PKGS[@]}"; do
	targets=$(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true)
	for target in $targets; do
		if [ $# -gt 0 ] && [[ ! " $* " == *" $target "* ]]; then
			continue
		fi
		echo "== fuzz $pkg $target for $FUZZTIME"
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" \
			-fuzzminimizetime "$FUZZMINIMIZETIME" "$pkg"; then
			echo "!! $target failed; the input is under $pkg/testdata/fuzz/$target/" >&2
			fail=1
		fi
	done
done
if [ "$fail" -ne 0 ]; then
	exit 1
fi
echo "== fuzzing found nothing"
