#!/usr/bin/env bash
# The one command that passes all of ferry's tests on a fresh machine (and
# what CI runs, through .ci/run). It builds the real external parts the
# integration tests use (cached in ~/.cache/ferry, once per machine), then
# vets and tests everything: a full pass, then the race detector over the
# fast tests.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$PATH"
go version

for tool in tools/*/TOOL; do
	name=$(basename "$(dirname "$tool")")
	bin=$(scripts/tool.sh "$name")
	export "FERRY_$(echo "$name" | tr '[:lower:]' '[:upper:]')_BIN=$bin"
done

echo "== go vet"
go vet ./...
echo "== type check for macOS and Windows (where developers build and test)"
go run ./internal/typecheck -for darwin/arm64,windows/amd64 ./...
echo "== go test"
go test -count=1 -timeout 20m ./...
echo "== go test -race -short"
go test -race -short -count=1 -timeout 20m ./...
echo "== bench harness (its own module)"
(cd bench && go vet ./... && go test -count=1 ./...)
echo "== fuzz (each target ${FUZZTIME:-10s})"
FUZZTIME=${FUZZTIME:-10s} scripts/fuzz.sh
echo "== all tests passed"
