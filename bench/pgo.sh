#!/usr/bin/env bash
# Profile-guided optimisation for ferry (Go's PGO).
#
#   bench/pgo.sh [profile]   build ferry with a pprof endpoint (-tags ferry_pprof, -pgo=off),
#                            run it as bench/run.sh does (static endpoints to benchnode's origin,
#                            access log and tracing off), drive small GETs (wrk -t2 -c32, then
#                            -c256) and large downloads and uploads, take a CPU profile of each
#                            phase and write them merged to cmd/ferry/default.pgo, which
#                            `go build ./cmd/ferry` then uses (its default -pgo=auto).
#   bench/pgo.sh measure [PROFILE]
#                            build ferry twice from this tree, with -pgo=off and with PROFILE
#                            (default cmd/ferry/default.pgo), and compare them: instructions per
#                            small request under callgrind (two runs each) and CPU-µs per small
#                            request from /proc under wrk -t2 -c32 (interleaved rounds, medians),
#                            plus the build times.
#
# Environment (defaults): PGO_OUT (cmd/ferry/default.pgo), PGO_SMALL_SECONDS (40),
# PGO_MANY_SECONDS (5), PGO_STREAM_SECONDS (10), PGO_STREAM_SIZE (256MiB);
# for measure: PGO_ROUNDS (7), PGO_CG_WARM_SECONDS (5), PGO_CG_REQUESTS (20000), PGO_CG_RUNS (2),
# PGO_BUILD_TIMES (0; 1 times go build -a of both).
# Needs wrk and curl (and valgrind for measure); installs wrk with apt-get as root when missing.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

mode=${1:-profile}
case $mode in
profile | measure) ;;
-h | --help) sed -n '2,22p' "$0"; exit 0 ;;
*) echo "bench/pgo.sh: unknown mode $mode (profile or measure)" >&2; exit 2 ;;
esac

need=(wrk curl)
[[ $mode == measure ]] && need+=(valgrind callgrind_control)
for c in "${need[@]}"; do
	command -v "$c" >/dev/null 2>&1 && continue
	if [[ $c == wrk && $(id -u) -eq 0 ]]; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null ||
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null; }
		continue
	fi
	echo "bench/pgo.sh: $c missing" >&2
	exit 1
done

work=$(mktemp -d)
pids=()
cleanup() {
	for p in ${pids[@]+"${pids[@]}"}; do
		kill "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

# freeport prints a loopback TCP port nothing listens on.
freeport() {
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		[[ -z $(ss -Htln "sport = :$p") ]] && { echo "$p"; return; }
	done
}

# waitfor URL SECONDS: poll until URL answers 200.
waitfor() {
	local deadline=$((SECONDS + $2))
	until curl -fsS -o /dev/null "$1" 2>/dev/null; do
		((SECONDS < deadline)) || { echo "bench/pgo.sh: $1 did not answer in $2s" >&2; return 1; }
		sleep 0.1
	done
}

echo "building benchnode"
(cd bench && go build -o "$work/benchnode" ./cmd/benchnode)
origin=127.0.0.1:$(freeport)
"$work/benchnode" origin -listen "$origin" &
pids+=($!)
waitfor "http://$origin/?size=1" 15

# The config ferrybench gives ferry (bench/cmd/ferrybench/fleet.go).
ferryconf() { # ferryconf ADMIN LISTEN
	cat <<EOF
admin: { listen: $1 }
outbound:
  listen: $2
  routes:
    - { path_prefix: /, service: origin }
services:
  origin:
    endpoints: [$origin]
    protocol: http1
telemetry: { access_log: off, traces_exporter: none }
shutdown: { grace: 2s }
EOF
}

# startferry NAME PREFIX...: run PREFIX... ferry run on a config of its own;
# sets ferry_pid and ferry_addr.
startferry() {
	local name=$1 admin addr
	shift
	admin=127.0.0.1:$(freeport)
	addr=127.0.0.1:$(freeport)
	ferryconf "$admin" "$addr" >"$work/$name.yaml"
	"$@" run --config "$work/$name.yaml" --config-poll 0 --log-level warn 2>"$work/$name.log" &
	ferry_pid=$!
	pids+=("$ferry_pid")
	ferry_addr=$addr
	waitfor "http://$admin/ready" 120
	waitfor "http://$addr/?size=1" 30
}

stopferry() {
	kill "$ferry_pid" 2>/dev/null || true
	wait "$ferry_pid" 2>/dev/null || true
}

if [[ $mode == profile ]]; then
	out=${PGO_OUT:-cmd/ferry/default.pgo}
	small=${PGO_SMALL_SECONDS:-40}
	many=${PGO_MANY_SECONDS:-5}
	stream=${PGO_STREAM_SECONDS:-10}
	size=${PGO_STREAM_SIZE:-256MiB}
	echo "building ferry with a pprof endpoint (-tags ferry_pprof -pgo=off)"
	CGO_ENABLED=0 go build -trimpath -pgo=off -tags ferry_pprof -o "$work/ferry" ./cmd/ferry
	pprof=127.0.0.1:$(freeport)
	FERRY_PPROF_LISTEN=$pprof startferry ferry "$work/ferry"
	waitfor "http://$pprof/debug/pprof/" 10
	url="http://$ferry_addr/?size=1024"
	echo "warm-up: wrk -t2 -c32 -d3s $url"
	wrk -t2 -c32 -d3s "$url" >/dev/null

	# profile NAME SECONDS COMMAND...: a CPU profile of ferry while COMMAND runs.
	# A phase of 0 seconds is skipped.
	profiles=()
	profile() {
		local name=$1 secs=$2
		shift 2
		((secs > 0)) || return 0
		profiles+=("$work/$name.pprof")
		curl -fsS -o "$work/$name.pprof" "http://$pprof/debug/pprof/profile?seconds=$secs" &
		local cpid=$!
		"$@"
		wait "$cpid"
		echo "  $name: $(wc -c <"$work/$name.pprof") bytes of profile"
	}
	echo "profile 1: small GETs, wrk -t2 -c32 -d${small}s"
	profile small "$small" wrk -t2 -c32 -d"${small}s" "$url"
	echo "profile 2: small GETs, wrk -t2 -c256 -d${many}s"
	profile many "$many" wrk -t2 -c256 -d"${many}s" "$url"

	# Downloads and uploads of $size, in turn, until the window ends:
	# one download, one upload with a Content-Length, one chunked upload.
	bytes=$(numfmt --from=iec-i "${size%B}")
	head -c "$bytes" /dev/urandom >"$work/body"
	streams() {
		local deadline=$((SECONDS + stream))
		while ((SECONDS < deadline)); do
			curl -fsS -o /dev/null "http://$ferry_addr/?size=$bytes"
			curl -fsS -o /dev/null -H 'Content-Type: application/octet-stream' --data-binary "@$work/body" "http://$ferry_addr/"
			curl -fsS -o /dev/null -H 'Transfer-Encoding: chunked' -T - "http://$ferry_addr/" <"$work/body"
		done
	}
	echo "profile 3: downloads and uploads of $size for ${stream}s"
	profile stream "$stream" streams
	stopferry
	go tool pprof -proto "${profiles[@]}" >"$work/merged.pgo" 2>"$work/pprof.log" ||
		{ cat "$work/pprof.log" >&2; exit 1; }
	mv "$work/merged.pgo" "$out"
	echo "wrote $out ($(wc -c <"$out") bytes); top of it:"
	go tool pprof -top -nodecount=15 "$out" 2>/dev/null | sed -n '1,22p'
	exit 0
fi

# measure
prof=${2:-cmd/ferry/default.pgo}
[[ -f $prof ]] || { echo "bench/pgo.sh measure: no profile at $prof" >&2; exit 1; }
prof=$(cd "$(dirname "$prof")" && pwd)/$(basename "$prof")
rounds=${PGO_ROUNDS:-7}
cgwarm=${PGO_CG_WARM_SECONDS:-5}
cgreqs=${PGO_CG_REQUESTS:-20000}
cgruns=${PGO_CG_RUNS:-2}

# Build times (PGO_BUILD_TIMES=1): go build -a of ./cmd/ferry (the standard
# library rebuilt too, as on a first build with a new profile), wall and
# user+sys CPU seconds; the CPU seconds are what a loaded machine moves least.
buildtime() { # buildtime OUT PGOFLAG EXTRA...
	local out=$1 pgo=$2 TIMEFORMAT='%R s wall, %U+%S s CPU'
	shift 2
	{ time CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -pgo="$pgo" "$@" -o "$out" ./cmd/ferry; } 2>&1
}
echo "building ferry -pgo=off and -pgo=$prof"
buildtime "$work/ferry-off" off >/dev/null
buildtime "$work/ferry-pgo" "$prof" >/dev/null
if [[ ${PGO_BUILD_TIMES:-0} == 1 ]]; then
	echo "build -a, -pgo=off:       $(buildtime "$work/ferry-off" off -a)"
	echo "build -a, with the profile: $(buildtime "$work/ferry-pgo" "$prof" -a)"
fi
ls -l "$work/ferry-off" "$work/ferry-pgo" | awk '{print "  " $5 " bytes " $NF}'

# callgrind: instructions per small request, wrk -t1 -c4 of 1 KiB GETs,
# counters zeroed after a warm-up, then a fixed request count.
# wrk's thread:stop() still waits out -d, so the script exits wrk itself at
# the count; up to 3 more requests (the other connections') may have reached
# ferry by then: 0.015% of 20,000.
cat >"$work/stop.lua" <<EOF
local n = 0
function response(status, headers, body)
	n = n + 1
	if n >= $cgreqs then os.exit(0) end
end
EOF
callgrind() { # callgrind NAME BINARY: sets ir and reqs
	local name=$1 bin=$2 out
	out=$work/cg.$name
	# Valgrind 3.19 reports RDTSCP in its CPUID but cannot run it on a host
	# without it, and its callgrind trips an assertion on Go's preemption
	# signals: both are turned off in the runtime, for both builds alike.
	GODEBUG=cpu.rdtscp=off,asyncpreemptoff=1 startferry "$name" valgrind --tool=callgrind --callgrind-out-file="$out.%p" "$bin"
	wrk -t1 -c4 -d"${cgwarm}s" "http://$ferry_addr/?size=1024" >/dev/null
	callgrind_control -z "$ferry_pid" >/dev/null
	wrk -t1 -c4 -d3600s -s "$work/stop.lua" "http://$ferry_addr/?size=1024" >/dev/null
	reqs=$cgreqs
	callgrind_control -d "$ferry_pid" >/dev/null
	stopferry
	ir=$(ls "$out".*.* 2>/dev/null | sort | head -1 | xargs grep -h '^summary:\|^totals:' | head -1 | awk '{print $2}')
	rm -f "$out".*
}
echo "callgrind: instructions per 1 KiB GET (wrk -t1 -c4, ${cgwarm}s warm-up, then $cgreqs requests)"
for ((i = 1; i <= cgruns; i++)); do
	for v in off pgo; do
		callgrind "$v$i" "$work/ferry-$v"
		printf '  run %d %-4s %14s instructions / %6s requests = %s\n' "$i" "$v" "$ir" "$reqs" "$(echo "scale=1; $ir / $reqs" | bc)"
	done
done

# CPU per request: utime+stime of ferry from /proc around wrk -t2 -c32 -d4s,
# both builds running side by side, rounds interleaved (order alternated).
cputicks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
declare -A fpid faddr
for v in off pgo; do
	startferry "cpu-$v" "$work/ferry-$v"
	fpid[$v]=$ferry_pid
	faddr[$v]=$ferry_addr
	wrk -t2 -c32 -d2s "http://$ferry_addr/?size=1024" >/dev/null
done
echo "CPU per request: wrk -t2 -c32 -d4s of 1 KiB GETs, $rounds interleaved rounds"
: >"$work/cpu.off"
: >"$work/cpu.pgo"
for ((r = 1; r <= rounds; r++)); do
	order="off pgo"
	((r % 2 == 0)) && order="pgo off"
	line="  round $r:"
	for v in $order; do
		t0=$(cputicks "${fpid[$v]}")
		reqs=$(wrk -t2 -c32 -d4s "http://${faddr[$v]}/?size=1024" | awk '/requests in/ {print $1}')
		t1=$(cputicks "${fpid[$v]}")
		us=$(echo "scale=2; ($t1 - $t0) * 1000000 / $hz / $reqs" | bc)
		echo "$us" >>"$work/cpu.$v"
		line+=" $v $us µs ($reqs req)"
	done
	echo "$line"
done
median() { sort -n "$1" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo "median CPU-µs per request: -pgo=off $(median "$work/cpu.off"), with the profile $(median "$work/cpu.pgo")"
