package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// An upstream that gives its final answer to Expect: 100-continue before
// asking for the body, keeping its connection open (no Connection: close),
// gets no body, and the caller gets that answer with no 100 Continue before
// it, and its connection's end right after, not at body_idle.
func TestExpectContinueFinalAnswerFirst(t *testing.T) {
	for _, size := range []int{5, 100 << 10} {
		for _, status := range []int{200, 413} {
			t.Run(fmt.Sprintf("%dB/%d", size, status), func(t *testing.T) {
				release := make(chan struct{})
				defer close(release)
				got := make(chan int, 1)
				up := startRawServer(t, func(c net.Conn) {
					br := bufio.NewReader(c)
					for {
						l, err := br.ReadString('\n')
						if err != nil {
							return
						}
						if l == "\r\n" {
							break
						}
					}
					fmt.Fprintf(c, "HTTP/1.1 %d Answered\r\nContent-Length: 4\r\n\r\nnope", status)
					c.SetReadDeadline(time.Now().Add(3 * time.Second))
					n, _ := io.Copy(io.Discard, br)
					got <- int(n)
					<-release
				})
				_, url := outboundTo(t, "defaults: { timeouts: { body_idle: 30s } }", up.addr())
				c := dialRaw(t, url)
				start := time.Now()
				fmt.Fprintf(c, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", size)
				br := bufio.NewReader(c)
				res, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				if res.StatusCode != status {
					t.Fatalf("first answer %d %q after %v, want the upstream's %d (it never asked for the body)", res.StatusCode, res.Status, time.Since(start), status)
				}
				b, err := io.ReadAll(res.Body)
				if err != nil || string(b) != "nope" {
					t.Fatalf("body %q, %v", b, err)
				}
				if !res.Close {
					t.Errorf("the answer keeps the connection open, with the body neither sent nor asked for")
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := br.ReadByte(); err != io.EOF {
					t.Fatalf("after the answer: %v (%v after the head), want the connection's end at once", err, time.Since(start))
				}
				if n := recv(t, got, 10*time.Second, "upstream's read"); n != 0 {
					t.Fatalf("the upstream got %d body bytes it never asked for", n)
				}
			})
		}
	}
}
