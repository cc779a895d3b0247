#!/usr/bin/env bash
# Idle memory of `ferry run`: builds ferry (or takes BIN), starts it RUNS
# times with a plain config (one outbound route to one static upstream,
# access log off, no tracing), waits until /ready answers, then SETTLE
# seconds more, and reads VmRSS, RssAnon and RssFile from
# /proc/PID/status. Prints each start and the medians, in KiB and MiB.
#
#   scripts/idle-rss.sh                      # 7 starts of the working tree's ferry
#   RUNS=9 SETTLE=3 scripts/idle-rss.sh
#   BIN=/tmp/ferry-variant scripts/idle-rss.sh
#   STATIC=1 scripts/idle-rss.sh             # built as deploy/Dockerfile builds it: CGO_ENABLED=0 -trimpath
#   GODEBUG=inittrace=1 RUNS=1 scripts/idle-rss.sh   # ferry's stderr is kept in $DIR/ferry.log
#
# This is what bench/run.sh reports as ferry's 'idle RSS' (it waits for
# /ready, then 3 s), without the other proxies and the load generators.
# Like bench/run.sh it builds with a plain `go build`, which links libc
# dynamically where cgo is available (about 1.4 MiB of the figure); the
# image ships the static build that STATIC=1 measures.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null 2>&1 || export PATH="/usr/local/go/bin:$PATH"

RUNS=${RUNS:-7}
SETTLE=${SETTLE:-3}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/ferry-idle-rss.XXXXXX")
pid=
cleanup() {
	if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
	if [ -z "${KEEP:-}" ]; then rm -rf "$DIR"; fi
}
trap cleanup EXIT

if [ -z "${BIN:-}" ]; then
	BIN=$DIR/ferry
	if [ -n "${STATIC:-}" ]; then
		CGO_ENABLED=0 go build -trimpath -o "$BIN" ./cmd/ferry
	else
		go build -o "$BIN" ./cmd/ferry
	fi
fi

# A free loopback port: bind to 0 and report what the kernel chose.
freeport() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }

field() { awk -v k="$1:" '$1==k {print $2}' "/proc/$2/status"; }

printf '%-4s %10s %10s %10s\n' run VmRSS_KiB RssAnon RssFile
: >"$DIR/rss" ; : >"$DIR/anon" ; : >"$DIR/file"
for i in $(seq 1 "$RUNS"); do
	admin=$(freeport)
	out=$(freeport)
	cat >"$DIR/ferry.yaml" <<EOF
admin: { listen: 127.0.0.1:$admin }
outbound:
  listen: 127.0.0.1:$out
  routes:
    - { path_prefix: /, service: origin }
services:
  origin:
    endpoints: [127.0.0.1:9]
    protocol: http1
telemetry: { access_log: off, traces_exporter: none }
shutdown: { grace: 2s }
EOF
	"$BIN" run --config "$DIR/ferry.yaml" 2>"$DIR/ferry.log" &
	pid=$!
	for _ in $(seq 1 150); do
		if curl -fs -o /dev/null "http://127.0.0.1:$admin/ready"; then break; fi
		if ! kill -0 "$pid" 2>/dev/null; then echo "ferry exited:" >&2; cat "$DIR/ferry.log" >&2; exit 1; fi
		sleep 0.1
	done
	sleep "$SETTLE"
	rss=$(field VmRSS "$pid"); anon=$(field RssAnon "$pid"); file=$(field RssFile "$pid")
	kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
	printf '%-4s %10s %10s %10s\n' "$i" "$rss" "$anon" "$file"
	echo "$rss" >>"$DIR/rss"; echo "$anon" >>"$DIR/anon"; echo "$file" >>"$DIR/file"
done
r=$(median <"$DIR/rss"); a=$(median <"$DIR/anon"); f=$(median <"$DIR/file")
printf 'median %8s %10s %10s KiB\n' "$r" "$a" "$f"
awk -v r="$r" -v a="$a" -v f="$f" 'BEGIN {printf "median VmRSS %.1f MiB (RssAnon %.1f, RssFile %.1f)\n", r/1024, a/1024, f/1024}'
