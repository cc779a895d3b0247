package main

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// measureTracing says it waits up to 7 s for the batch exporters' tail,
// but it only waits while no export at all arrived in the phase, so a
// tail export that lands after the last wrk run is never counted.
func TestTracingCountsOTLPTail(t *testing.T) {
	dir := t.TempDir()
	wrk := filepath.Join(dir, "wrk")
	script := "#!/bin/sh\nsleep 0.2\ncat <<'X'\n" + wrkSample + "X\n"
	if err := os.WriteFile(wrk, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	sink, err := startOTLPSink()
	if err != nil {
		t.Fatal(err)
	}
	defer sink.close()
	self := &proc{name: "self", addr: "127.0.0.1:1", cmd: &exec.Cmd{Process: &os.Process{Pid: os.Getpid()}}}
	f := &fleet{proxies: map[string]*proc{pFerry: self, pTraced: self}, otlp: sink}
	cfg := &config{wrkBin: wrk, traceRounds: 1, traceConns: 32, traceDuration: time.Second, wrkThreads: 2, smallSize: 1024}
	r := &results{Trace: map[string][]wrkRun{}, Failures: map[string][]string{}}
	post := func() {
		res, err := http.Post("http://"+sink.addr+"/v1/traces", "application/x-protobuf", strings.NewReader("span"))
		if err == nil {
			res.Body.Close()
		}
	}
	start := time.Now()
	go func() { time.Sleep(100 * time.Millisecond); post() }()  // an export during the runs
	go func() { time.Sleep(1500 * time.Millisecond); post() }() // the tail, 1.1 s after the last run
	if err := measureTracing(t.Context(), cfg, f, r); err != nil {
		t.Fatal(err)
	}
	t.Logf("phase took %s, counted %d export requests", time.Since(start).Round(time.Millisecond), r.OTLPRequests)
	if r.OTLPRequests != 2 {
		t.Errorf("OTLPRequests = %d, want 2 (the tail export arrived within the 7 s the phase says it waits)", r.OTLPRequests)
	}
}

// The uploads phase drives each proxy with wrk running a POST script of
// --small-size bodies at --upload-conns connections, round after round.
func TestUploadsPhasePostsSmallBodies(t *testing.T) {
	wrk, seen, self := fakeWrk(t)
	f := &fleet{order: []string{pFerry, pNginx}, proxies: map[string]*proc{pFerry: self, pNginx: self}}
	cfg := &config{wrkBin: wrk, wrkRounds: 2, uploadConns: 32, wrkDuration: time.Second, wrkThreads: 2, smallSize: 1024}
	r := &results{Uploads: map[string][]wrkRun{}, Failures: map[string][]string{}}
	if err := measureUploads(t.Context(), cfg, f, r); err != nil {
		t.Fatal(err)
	}
	if len(r.Uploads[pFerry]) != 2 || len(r.Uploads[pNginx]) != 2 || len(r.Failures) != 0 {
		t.Fatalf("uploads %v, failures %v; want 2 rounds of each proxy", r.Uploads, r.Failures)
	}
	b, err := os.ReadFile(seen)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, want := range []string{"-c 32 ", " -s ", `wrk.method = "POST"`, `wrk.body = string.rep("x", 1024)`} {
		if !strings.Contains(got, want) {
			t.Errorf("wrk ran without %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "wrk.method"); n != 4 {
		t.Errorf("%d runs with the POST script, want 4", n)
	}
}

// fakeWrk writes a wrk that notes its arguments and the script -s names in
// the file seen, and prints wrkSample; self is a proc of this process to
// measure against.
func fakeWrk(t *testing.T) (wrk, seen string, self *proc) {
	dir := t.TempDir()
	wrk = filepath.Join(dir, "wrk")
	seen = filepath.Join(dir, "seen")
	script := "#!/bin/sh\necho \"$@\" >> " + seen + "\nwhile [ $# -gt 0 ]; do [ \"$1\" = -s ] && cat \"$2\" >> " + seen + "; shift; done\ncat <<'X'\n" + wrkSample + "X\n"
	if err := os.WriteFile(wrk, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrk, seen, &proc{name: "self", addr: "127.0.0.1:1", cmd: &exec.Cmd{Process: &os.Process{Pid: os.Getpid()}}}
}

// The chunked phase sends the same bodies chunked, with their heads in one
// request string, to every proxy but the floors (which frame by
// Content-Length alone).
func TestChunkedPhaseSkipsTheFloors(t *testing.T) {
	wrk, seen, self := fakeWrk(t)
	f := &fleet{order: []string{pFerry, pFloor, pEpoll, pNginx}, proxies: map[string]*proc{pFerry: self, pFloor: self, pEpoll: self, pNginx: self}}
	cfg := &config{wrkBin: wrk, wrkRounds: 2, uploadConns: 32, wrkDuration: time.Second, wrkThreads: 2, smallSize: 1024}
	r := &results{Chunked: map[string][]wrkRun{}, Failures: map[string][]string{}}
	if err := measureChunked(t.Context(), cfg, f, r); err != nil {
		t.Fatal(err)
	}
	if len(r.Chunked[pFerry]) != 2 || len(r.Chunked[pNginx]) != 2 || len(r.Chunked[pFloor]) != 0 || len(r.Chunked[pEpoll]) != 0 || len(r.Failures) != 0 {
		t.Fatalf("chunked %v, failures %v; want 2 rounds of ferry and nginx, none of the floors", r.Chunked, r.Failures)
	}
	b, err := os.ReadFile(seen)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, want := range []string{"-c 32 ", `Transfer-Encoding: chunked`, `string.rep("x", 1024)`, `string.format("%x", #body)`, "request = function() return raw end"} {
		if !strings.Contains(got, want) {
			t.Errorf("wrk ran without %q:\n%s", want, got)
		}
	}
}
