package sidecar

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// An h2c upstream that refuses a stream (RST_STREAM REFUSED_STREAM), or
// whose GOAWAY's last stream id is below it, never processed that request:
// net/http's client sends it again, on a new connection after a GOAWAY,
// once it can get the body again. A small upload is read whole into its
// first stream at once, so it must be sent again from what ferry kept of
// it: a POST refused that way reaches the upstream once, whole, and its
// caller gets the upstream's answer, not a 502; the endpoint's breaker
// hears one success.
func TestH2CRefusedStreamUploadSentAgain(t *testing.T) {
	for _, how := range []string{"refused", "goaway"} {
		for _, caller := range []string{"h2c", "http1"} {
			t.Run(how+"/"+caller, func(t *testing.T) {
				up, lg := rvUpstream(t, func(c *rvConn, st *rvStream, ev string) {
					switch {
					case c.n == 1 && st.path == "/first":
						// held until /up arrives on this connection
					case c.n == 1 && ev == "end" && how == "refused" && st.id == 3:
						c.fr.WriteRSTStream(st.id, http2.ErrCodeRefusedStream)
						c.log.add(fmt.Sprintf("conn%d refused %d", c.n, st.id))
						c.answer(1, "first")
					case c.n == 1 && ev == "end" && how == "goaway":
						c.fr.WriteGoAway(st.id-2, http2.ErrCodeNo, nil)
						c.answer(st.id-2, "first")
					case ev == "end":
						c.log.add(fmt.Sprintf("conn%d body %q", c.n, st.body.String()))
						c.answer(st.id, "done")
					}
				})
				sc, url := ferryWithProtocol(t, "h2c", up.addr())
				cl := h2cFor(t)
				first := make(chan string, 1)
				go func() { first <- rvDo(t, cl, "GET", url+"/first", "") }()
				waitFor(t, "the first request upstream", 5*time.Second, func() bool {
					return strings.Contains(strings.Join(lg.all(), "\n"), "/first")
				})
				if caller == "http1" {
					cl = h1For(t)
				}
				got := rvDo(t, cl, "POST", url+"/up", "hello")
				if got != `200 "done" readErr=<nil>` {
					t.Errorf("the POST %s by the upstream got %s, want 200 \"done\"\nupstream: %s", how, got, strings.Join(lg.all(), "; "))
				}
				if got := recv(t, first, 5*time.Second, "the first answer"); got != `200 "first" readErr=<nil>` {
					t.Errorf("first request: %s", got)
				}
				if n := strings.Count(strings.Join(lg.all(), "\n"), `body "hello"`); n != 1 {
					t.Errorf("the upstream processed the upload %d times, want once\nupstream: %s", n, strings.Join(lg.all(), "; "))
				}
				if f := endpointFailures(t, sc); f != 0 {
					t.Errorf("the endpoint's breaker heard %d failures, want none", f)
				}
			})
		}
	}
}

// endpointFailures is what /upstreams reports of failures, summed over
// every endpoint.
func endpointFailures(t *testing.T, sc *Sidecar) int {
	t.Helper()
	res, err := http.Get("http://" + sc.Addr("admin") + "/upstreams")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var ups []struct {
		Endpoints []struct{ Failures int } `json:"endpoints"`
	}
	b, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(b, &ups); err != nil {
		t.Fatalf("/upstreams: %v: %s", err, b)
	}
	n := 0
	for _, u := range ups {
		for _, e := range u.Endpoints {
			n += e.Failures
		}
	}
	return n
}

type rvStream struct {
	id           uint32
	method, path string
	body         bytes.Buffer
}

type rvConn struct {
	n       int
	fr      *http2.Framer
	streams map[uint32]*rvStream
	log     *rvLog
}

type rvLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *rvLog) add(s string) { l.mu.Lock(); l.lines = append(l.lines, s); l.mu.Unlock() }
func (l *rvLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

func (c *rvConn) answer(id uint32, body string) {
	var block bytes.Buffer
	e := hpack.NewEncoder(&block)
	e.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	e.WriteField(hpack.HeaderField{Name: "content-length", Value: fmt.Sprint(len(body))})
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndHeaders: true})
	c.fr.WriteData(id, true, []byte(body))
	c.log.add(fmt.Sprintf("conn%d answered %s %s", c.n, c.streams[id].method, c.streams[id].path))
}

// rvUpstream is an h2c upstream read with the http2 framer: on is called
// with each stream's request head ("headers") and once the request is
// whole ("end"), and may answer, refuse or send GOAWAY; what happened is
// logged.
func rvUpstream(t *testing.T, on func(c *rvConn, st *rvStream, ev string)) (*rawServer, *rvLog) {
	var conns atomic.Int32
	lg := &rvLog{}
	s := startRawServer(t, func(nc net.Conn) {
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(nc, preface); err != nil {
			return
		}
		fr := http2.NewFramer(nc, nc)
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		fr.WriteSettings()
		c := &rvConn{n: int(conns.Add(1)), fr: fr, streams: map[uint32]*rvStream{}, log: lg}
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				lg.add(fmt.Sprintf("conn%d read: %v", c.n, err))
				return
			}
			if ackControl(fr, f) {
				continue
			}
			id := f.Header().StreamID
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				st := c.streams[id]
				if st == nil {
					st = &rvStream{id: id, method: f.PseudoValue("method"), path: f.PseudoValue("path")}
					c.streams[id] = st
					lg.add(fmt.Sprintf("conn%d got %s %s stream %d", c.n, st.method, st.path, id))
					on(c, st, "headers")
				}
				if f.StreamEnded() {
					on(c, st, "end")
				}
			case *http2.DataFrame:
				st := c.streams[id]
				if st == nil {
					continue
				}
				st.body.Write(f.Data())
				if len(f.Data()) > 0 {
					fr.WriteWindowUpdate(0, uint32(len(f.Data())))
				}
				if f.StreamEnded() {
					on(c, st, "end")
				}
			case *http2.RSTStreamFrame:
				lg.add(fmt.Sprintf("conn%d RST %d %v", c.n, id, f.ErrCode))
			case *http2.GoAwayFrame:
				lg.add(fmt.Sprintf("conn%d GOAWAY %v", c.n, f.ErrCode))
			}
		}
	})
	return s, lg
}

func rvDo(t *testing.T, cl *http.Client, method, url, body string) string {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	res, err := cl.Do(req)
	if err != nil {
		return "err " + err.Error()
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	return fmt.Sprintf("%d %q readErr=%v", res.StatusCode, b, err)
}
