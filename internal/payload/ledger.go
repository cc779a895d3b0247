package payload

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// IDLen is the length of a tag that starts a tagged body.
const IDLen = 16

// NewTagged returns size bytes that start with id (an exchange's own tag)
// and go on with the payload, so a body delivered to the wrong exchange
// changes its digest.
func NewTagged(id string, size int64) io.Reader {
	if size <= int64(len(id)) {
		return strings.NewReader(id[:size])
	}
	return io.MultiReader(strings.NewReader(id), NewReader(size-int64(len(id))))
}

// Ledger is an origin that keeps its own account of what it sent and
// received, for tests and the soak to compare with what arrived:
//
//	GET  /dl?size=N&id=ID[&chunked=1]  NewTagged(ID, N), recorded under ID
//	POST /ul                            answers "<bytes> <sha256>" of the body read
type Ledger struct {
	sent sync.Map // id -> Sent
}

// Sent is the origin's record of one download: bytes written, their
// digest, and the write error if the download broke.
type Sent struct {
	N      int64
	Digest string
	Err    error
}

// ServeDownload serves GET /dl.
func (l *Ledger) ServeDownload(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	id := q.Get("id")
	size, err := strconv.ParseInt(q.Get("size"), 10, 64)
	if err != nil || size < 0 || len(id) != IDLen {
		http.Error(w, "bad size or id", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if q.Get("chunked") == "" {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	}
	sink := NewSink()
	n, err := io.CopyBuffer(io.MultiWriter(writerOnly{w}, sink), NewTagged(id, size), make([]byte, 32<<10))
	l.sent.Store(id, Sent{N: n, Digest: sink.Digest(), Err: err})
}

// ServeUpload serves POST /ul.
func (l *Ledger) ServeUpload(w http.ResponseWriter, r *http.Request) {
	sink := NewSink()
	n, err := io.CopyBuffer(sink, r.Body, make([]byte, 64<<10))
	if err != nil {
		http.Error(w, fmt.Sprintf("origin read %d bytes: %v", n, err), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%d %s", n, sink.Digest())
}

// Written returns, and forgets, the record of what /dl sent under id,
// waiting up to within for it: the handler stores it after its last write,
// which the caller may have read already.
func (l *Ledger) Written(id string, within time.Duration) (Sent, bool) {
	deadline := time.Now().Add(within)
	for {
		if v, ok := l.sent.LoadAndDelete(id); ok {
			return v.(Sent), true
		}
		if time.Now().After(deadline) {
			return Sent{}, false
		}
		time.Sleep(2 * time.Millisecond)
	}
}
