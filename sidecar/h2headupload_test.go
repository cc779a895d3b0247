package sidecar

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// An h2c upstream whose response head is over maxResponseHeader while the
// HTTP/1.1 caller's upload is still coming gets the caller its 502 at
// once, not when the caller sends more of its body or hangs up: closing
// that response waits, in net/http's HTTP/2 client, for the request body's
// writer, held in a Read of the caller's body.
func TestH2CUpstreamHeadOverWhileTheCallerUploads(t *testing.T) {
	addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 32; i++ { // 2 MiB in 64 KiB fields
			w.Header().Set(fmt.Sprintf("X-Big-%d", i), strings.Repeat("b", 64<<10))
		}
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	}))
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: svc } ]
services:
  svc: { endpoints: [%s], protocol: h2c }
`, addr))
	c, err := net.Dial("tcp", sc.Addr("outbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// 10 of the body's 100 bytes; the rest waits for the answer.
	if _, err := c.Write([]byte("POST /up HTTP/1.1\r\nHost: svc\r\nContent-Length: 100\r\n\r\n0123456789")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("no answer within 10s of the upstream's 2 MiB head, the caller's upload unfinished: %v", err)
	}
	if !strings.HasPrefix(line, "HTTP/1.1 502") {
		t.Fatalf("got %q, want a 502", line)
	}
}
