package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// httpGet returns the status and body of a GET, or fails the test.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// What kubelet sees of a drain, from the process: on SIGTERM /ready turns
// 503 at once (so the endpoints controller stops sending) while /live stays
// 200 and the outbound listener keeps serving through shutdown.delay; a
// drain with nothing left in flight exits 0.
func TestDrainProbesAndExitCode(t *testing.T) {
	up := startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") }))
	cfg := oneUpstreamConfig(up, "shutdown: { delay: 3s, grace: 5s }")
	p := startFerryProc(t, []string{"run", "--config-env", "FERRY_TEST_CFG"}, []string{"FERRY_TEST_CFG=" + cfg}, "outbound", "admin")
	admin := "http://" + p.addrs["admin"]
	if code, body := httpGet(t, admin+"/ready"); code != http.StatusOK {
		t.Fatalf("/ready before the drain: %d %q", code, body)
	}
	p.signal(syscall.SIGTERM)
	p.waitLog(10*time.Second, msgIs("draining"))
	if code, body := httpGet(t, admin+"/ready"); code != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Fatalf("/ready during shutdown.delay: %d %q, want 503 saying draining", code, body)
	}
	if code, body := httpGet(t, admin+"/live"); code != http.StatusOK {
		t.Fatalf("/live during the drain: %d %q, want 200 until ferry exits", code, body)
	}
	if code, body := httpGet(t, "http://"+p.addrs["outbound"]+"/"); code != http.StatusOK || body != "up" {
		t.Fatalf("a request during shutdown.delay: %d %q, want the upstream's answer", code, body)
	}
	if code := p.exitCode(20 * time.Second); code != exitOK {
		t.Fatalf("exit code %d after a clean drain, want 0; log:\n%s", code, p.log())
	}
}

// A listener whose port is taken stops ferry before anything serves:
// exit 1, the key and the address named, no listener left logged as up.
func TestRunPortInUseExits1NamingTheKey(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	cfg := fmt.Sprintf("admin: { listen: 127.0.0.1:0 }\noutbound: { listen: '%s' }\n", held.Addr())
	p := startFerryProc(t, []string{"run", "--config-env", "FERRY_TEST_CFG"}, []string{"FERRY_TEST_CFG=" + cfg})
	if code := p.exitCode(20 * time.Second); code != exitFail {
		t.Fatalf("exit code %d with outbound's port taken, want %d; log:\n%s", code, exitFail, p.log())
	}
	log := p.log()
	if !strings.Contains(log, "outbound.listen") || !strings.Contains(log, held.Addr().String()) || !strings.Contains(log, "address already in use") {
		t.Fatalf("the log does not name outbound.listen, %s and the cause:\n%s", held.Addr(), log)
	}
	if strings.Contains(log, `"listening"`) {
		t.Fatalf("a listener was reported up:\n%s", log)
	}
}
