package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// procRSS is a process's resident memory in bytes (VmRSS).
func procRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS line %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/<pid>/status")
	return 0
}

// metricValue is one unlabelled series of ferry's /metrics.
func metricValue(t *testing.T, admin, name string) float64 {
	t.Helper()
	_, body := httpGet(t, "http://"+admin+"/metrics")
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", name, line, err)
			}
			return v
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

// After a burst of 256 connections, ferry gives the heap memory it no
// longer uses back to the system once it has been idle for
// trimQuietIntervals (trimWhenIdle), instead of keeping it mapped until
// the runtime gets
// round to it (minutes, or never while its collection target allows it):
// the free heap still mapped falls under trimMinFree, and the process's
// resident memory to within 8 MiB of what it was before the burst (the
// idle upstream connections the burst left in the pool gave their buffers
// back, see h1Conn.park; the connections themselves stay until the pool's
// idle timeout).
func TestIdleMemoryReturnsAfterBurst(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 16<<10)
	up := startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	cfg := oneUpstreamConfig(up, "")
	p := startFerryProc(t, []string{"run", "--config-env", "FERRY_TEST_CFG"}, []string{"FERRY_TEST_CFG=" + cfg}, "outbound", "admin")
	url := "http://" + p.addrs["outbound"] + "/"
	admin := p.addrs["admin"]
	pid := p.cmd.Process.Pid
	if code, _ := httpGet(t, url); code != http.StatusOK {
		t.Fatalf("first request: %d", code)
	}
	base := procRSS(t, pid)

	const conns, each = 256, 60
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed error
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			for range each {
				res, err := c.Get(url)
				if err == nil {
					_, err = io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
				if err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if failed != nil {
		t.Fatalf("burst: %v", failed)
	}
	peak := procRSS(t, pid)
	const mib = 1 << 20
	if peak-base < 8*mib {
		t.Fatalf("the burst grew ferry's memory by only %.1f MiB (%.1f -> %.1f): too little to show a return", float64(peak-base)/mib, float64(base)/mib, float64(peak)/mib)
	}
	deadline := time.Now().Add((trimQuietIntervals+1)*trimInterval + 20*time.Second)
	rss := peak
	for rss > base+8*mib { // looking allocates nothing in ferry
		if time.Now().After(deadline) {
			t.Fatalf("RSS %.1f MiB before the burst, %.1f after it, still %.1f after %s idle", float64(base)/mib, float64(peak)/mib, float64(rss)/mib, (trimQuietIntervals+1)*trimInterval+20*time.Second)
		}
		time.Sleep(200 * time.Millisecond)
		rss = procRSS(t, pid)
	}
	free := metricValue(t, admin, "go_memstats_heap_idle_bytes") - metricValue(t, admin, "go_memstats_heap_released_bytes")
	if free >= trimMinFree {
		t.Fatalf("free heap still mapped once idle: %.1f MiB", free/mib)
	}
	t.Logf("RSS %.1f MiB before the burst, %.1f after it, %.1f once idle; free heap still mapped %.1f MiB", float64(base)/mib, float64(peak)/mib, float64(rss)/mib, free/mib)
}
