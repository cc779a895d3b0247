#!/usr/bin/env bash
# Soak ferry: mixed traffic through a real `ferry run` process for a long
# time (10 minutes by default) at high concurrency. Reports ferry-made
# errors (must be 0) and ferry's goroutines, threads, file descriptors and
# RSS over time as a plot, a CSV and a summary in results/soak-<timestamp>/.
# Exits non-zero if ferry made an error or grew beyond the bounds that
# `go doc ./soak` documents.
#
#   scripts/soak.sh                       # 10 minutes, 256 callers
#   scripts/soak.sh -duration 2m          # shorter
#   scripts/soak.sh -concurrency 64 -mix small=80,download=20 -max-body 64MiB
#   scripts/soak.sh -reload-every 500ms   # the config replaced (and SIGHUP) under traffic
#   scripts/soak.sh -h                    # every flag
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$PATH"
mkdir -p results/.soak-build
go build -o results/.soak-build/soak ./soak
exec results/.soak-build/soak "$@"
