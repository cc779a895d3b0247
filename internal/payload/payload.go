// Package payload generates large deterministic bodies without holding them
// in memory, for ferry's demo, tests and benchmarks: any size, the same bytes
// every time, a different 64 KiB block at every offset, so a dropped,
// repeated or reordered block changes the digest.
package payload

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
)

const blockSize = 64 << 10

// base is the block every payload block is derived from, made on first use
// (not at package init: the package is linked into every ferry process for
// `ferry demo`).
var base = sync.OnceValue(func() []byte {
	b := make([]byte, blockSize)
	r := rand.NewChaCha8([32]byte{'f', 'e', 'r', 'r', 'y'})
	r.Read(b)
	return b
})

// Reader yields size bytes of the payload.
type Reader struct {
	size, off int64
	block     [blockSize]byte
	blockNo   int64
}

// NewReader returns a reader of size bytes.
func NewReader(size int64) *Reader {
	r := &Reader{size: size, blockNo: -1}
	return r
}

// Reset makes r yield size bytes of the payload from the start, as a new
// reader would, without a new reader's 64 KiB.
func (r *Reader) Reset(size int64) {
	r.size, r.off, r.blockNo = size, 0, -1 // the block is rebuilt at the first read
}

func (r *Reader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && r.off < r.size {
		no := r.off / blockSize
		if no != r.blockNo {
			copy(r.block[:], base())
			binary.LittleEndian.PutUint64(r.block[:8], uint64(no))
			r.blockNo = no
		}
		in := r.off % blockSize
		end := int64(blockSize)
		if rest := r.size - no*blockSize; rest < end {
			end = rest
		}
		c := copy(p[n:], r.block[in:end])
		n += c
		r.off += int64(c)
	}
	return n, nil
}

// Digest returns the hex sha256 of the payload of size bytes.
func Digest(size int64) string {
	h := sha256.New()
	buf := make([]byte, blockSize)
	io.CopyBuffer(h, NewReader(size), buf)
	return hex.EncodeToString(h.Sum(nil))
}

// Handler serves the payload: GET /?size=N (default size) with
// Content-Length, or with ?chunked=1 without it (chunked on HTTP/1.1).
func Handler(defaultSize int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		size := defaultSize
		if s := r.URL.Query().Get("size"); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < 0 {
				http.Error(w, "bad size", http.StatusBadRequest)
				return
			}
			size = n
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		if r.URL.Query().Get("chunked") == "" {
			w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		}
		s := served.Get().(*serving)
		s.r.Reset(size)
		io.CopyBuffer(writerOnly{w}, &s.r, s.buf[:])
		served.Put(s)
	})
}

// serving is what Handler needs per response: a reader (64 KiB of block)
// and a copy buffer, pooled so that a small response costs no more than
// the server's own work (the benchmarks count the origin's allocations).
type serving struct {
	r   Reader
	buf [32 << 10]byte
}

var served = sync.Pool{New: func() any { return new(serving) }}

// Sink hashes and counts a body without keeping it.
type Sink struct {
	n int64
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
}

// NewSink returns an empty sink.
func NewSink() *Sink { return &Sink{h: sha256.New()} }

func (s *Sink) Write(p []byte) (int, error) {
	s.n += int64(len(p))
	return s.h.Write(p)
}

// N is how many bytes were written.
func (s *Sink) N() int64 { return s.n }

// Digest is the hex sha256 of what was written.
func (s *Sink) Digest() string { return hex.EncodeToString(s.h.Sum(nil)) }

type writerOnly struct{ io.Writer }
