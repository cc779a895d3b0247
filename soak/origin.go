package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/ferrymesh/ferry/internal/payload"
)

// The origin behind ferry, in this process. It counts and hashes what it
// sends and receives, so the traffic side can tell bytes ferry lost or
// changed from what the origin did on purpose:
//
//	GET  /dl?size=N&id=ID[&chunked=1]  payload.NewTagged(ID, N), recorded under ID
//	POST /ul                            "<bytes> <sha256>" of the body read
//	GET  /stream?id=ID                  streamEvents events, flushed one by one
//	GET  /status?code=C                 status C with body "origin says C" (origin-made errors)
//	GET  /abort?size=N&id=ID            N bytes announced, half sent, then the exchange aborted
type origin struct {
	srv    *http.Server
	ln     net.Listener
	ledger payload.Ledger // /dl and /ul, with the origin's own account
}

// streamEvents is how many events /stream sends, streamGap apart.
const (
	streamEvents = 20
	streamGap    = 5 * time.Millisecond
)

func startOrigin() (*origin, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	o := &origin{ln: ln}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	o.srv = &http.Server{Handler: o, Protocols: p, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Second}
	go o.srv.Serve(ln)
	return o, nil
}

func (o *origin) addr() string { return o.ln.Addr().String() }

func (o *origin) close() { o.srv.Close() }

// writerOnly hides ReadFrom so every byte passes the tee.
type writerOnly struct{ io.Writer }

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	switch r.URL.Path {
	case "/dl":
		o.ledger.ServeDownload(w, r)
	case "/ul":
		o.ledger.ServeUpload(w, r)
	case "/stream":
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for i := range streamEvents {
			if _, err := fmt.Fprintf(w, "id: %d\ndata: %s\n\n", i, q.Get("id")); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			time.Sleep(streamGap)
		}
	case "/status":
		code, err := strconv.Atoi(q.Get("code"))
		if err != nil || code < 200 || code > 599 {
			http.Error(w, "bad code", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(code)
		fmt.Fprintf(w, "origin says %d", code)
	case "/abort":
		size, err := strconv.ParseInt(q.Get("size"), 10, 64)
		if err != nil || size < 2 {
			http.Error(w, "bad size", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		io.CopyN(writerOnly{w}, payload.NewTagged(q.Get("id"), size), size/2)
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler) // HTTP/1.1: connection closed short; h2c: stream reset
	default:
		http.NotFound(w, r)
	}
}
