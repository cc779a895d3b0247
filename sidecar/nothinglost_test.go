package sidecar

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/payload"
)

// Nothing lost: every byte the origin sends reaches the caller and every
// byte the caller sends reaches the origin, through a real ferry, counted
// and sha256-hashed at both ends. Gigabyte bodies several times over, then
// many bodies of mixed sizes at once, over HTTP/1.1 and h2c, with and
// without Content-Length.

// requestID is payload.IDLen (16) bytes, as tagged bodies expect.
func requestID(worker, n int) string {
	return fmt.Sprintf("w%03d-n%04d-%05d", worker, n, rand.IntN(100000))
}

// lossOrigin is a payload.Ledger at /dl and /ul: it serves and takes
// tagged bodies, counting and hashing on its side.
type lossOrigin struct{ payload.Ledger }

func (o *lossOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/dl":
		o.ServeDownload(w, r)
	case "/ul":
		o.ServeUpload(w, r)
	default:
		http.NotFound(w, r)
	}
}

// lossFerry is an origin behind a ferry that speaks to it the protocol the
// caller spoke (auto).
func lossFerry(t *testing.T) (*lossOrigin, string) {
	t.Helper()
	o := &lossOrigin{}
	_, url := outboundTo(t, "", origin(t, o))
	return o, url
}

// download fetches size bytes under a new id and compares count and
// digest with what the origin wrote. It returns a description of any
// mismatch.
func download(ctx context.Context, c *http.Client, o *lossOrigin, url, id string, size int64, chunked bool) error {
	u := fmt.Sprintf("%s/dl?size=%d&id=%s", url, size, id)
	if chunked {
		u += "&chunked=1"
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return fmt.Errorf("status %d %q (X-Ferry-Error %q)", res.StatusCode, b, res.Header.Get("X-Ferry-Error"))
	}
	if !chunked && res.ContentLength != size {
		return fmt.Errorf("Content-Length %d, want %d", res.ContentLength, size)
	}
	sink := payload.NewSink()
	n, err := io.CopyBuffer(sink, res.Body, make([]byte, 64<<10))
	if err != nil {
		return fmt.Errorf("read %d of %d bytes: %w", n, size, err)
	}
	sent, ok := o.Written(id, 10*time.Second)
	if !ok {
		return fmt.Errorf("origin has no record of %s", id)
	}
	if sent.Err != nil || sent.N != size {
		return fmt.Errorf("origin wrote %d of %d bytes: %v", sent.N, size, sent.Err)
	}
	if n != sent.N || sink.Digest() != sent.Digest {
		return fmt.Errorf("caller got %d bytes sha256 %s, origin sent %d bytes sha256 %s", n, sink.Digest(), sent.N, sent.Digest)
	}
	return nil
}

// upload sends size bytes under id, with Content-Length or without, and
// compares count and digest with what the origin read.
func upload(ctx context.Context, c *http.Client, url, id string, size int64, declared bool) error {
	mine := payload.NewSink()
	body := io.TeeReader(payload.NewTagged(id, size), mine)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/ul", io.NopCloser(body))
	if declared {
		req.ContentLength = size
	} else {
		req.ContentLength = -1
	}
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d %q (X-Ferry-Error %q)", res.StatusCode, b, res.Header.Get("X-Ferry-Error"))
	}
	if mine.N() != size {
		return fmt.Errorf("caller sent %d of %d bytes", mine.N(), size)
	}
	if want := fmt.Sprintf("%d %s", size, mine.Digest()); string(b) != want {
		return fmt.Errorf("origin read %q, caller sent %q", b, want)
	}
	return nil
}

// 1 GiB down and 1 GiB up, three times each, over each protocol and
// framing.
func TestNothingLostGigabytes(t *testing.T) {
	skipHeavy(t)
	faultCheck(t)
	o, url := lossFerry(t)
	clients := faultClients(t)
	type run struct {
		proto   string
		framing bool // download: chunked; upload: Content-Length
	}
	for i, r := range []run{{"h1", false}, {"h2c", false}, {"h1", true}} {
		name := fmt.Sprintf("download-%d/%s/content-length", i+1, r.proto)
		if r.framing {
			name = fmt.Sprintf("download-%d/%s/chunked", i+1, r.proto)
		}
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			if err := download(context.Background(), clients[r.proto], o, url, requestID(0, i), gib, r.framing); err != nil {
				t.Fatal(err)
			}
			t.Logf("1 GiB, digests equal, %.1fs", time.Since(start).Seconds())
		})
	}
	for i, r := range []run{{"h1", true}, {"h2c", false}, {"h1", false}} {
		name := fmt.Sprintf("upload-%d/%s/chunked", i+1, r.proto)
		if r.framing {
			name = fmt.Sprintf("upload-%d/%s/content-length", i+1, r.proto)
		}
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			if err := upload(context.Background(), clients[r.proto], url, requestID(1, i), gib, r.framing); err != nil {
				t.Fatal(err)
			}
			t.Logf("1 GiB, digests equal, %.1fs", time.Since(start).Seconds())
		})
	}
}

// mixedSize picks a body size: for a worker's first exchange a
// block-boundary edge case, then log-uniform between 1 KiB and max, so
// most bodies are small and a few are large.
func mixedSize(r *rand.Rand, worker, n int, max int64) int64 {
	edges := []int64{0, 1, 15, 16, 17, 32<<10 - 1, 32 << 10, 32<<10 + 1, 64<<10 - 1, 64 << 10, 64<<10 + 1, 1 << 20}
	if n == 0 {
		return min(edges[worker%len(edges)], max)
	}
	lo, hi := math.Log(1<<10), math.Log(float64(max))
	return int64(math.Exp(lo + r.Float64()*(hi-lo)))
}

// Many callers at once, mixing downloads of random sizes (up to 64 MiB)
// and uploads (up to 16 MiB), HTTP/1.1 and h2c, with Content-Length and
// without: every body's byte count and digest match at both ends, and
// every exchange answers 200. Under -short or -race it runs smaller.
func TestNothingLostConcurrentMixed(t *testing.T) {
	faultCheck(t)
	workers, perWorker := 32, 10
	maxDown, maxUp := 64*mib, 16*mib
	if testing.Short() || raceEnabled {
		workers, perWorker = 8, 8
		maxDown, maxUp = mib, mib
	}
	o, url := lossFerry(t)
	clients := faultClients(t)
	var (
		mu       sync.Mutex
		failures []string
		down, up atomic.Int64
		kinds    sync.Map // "GET/h1/chunked" -> *atomic.Int64
	)
	count := func(kind string) {
		v, _ := kinds.LoadOrStore(kind, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for n := range perWorker {
				proto := []string{"h1", "h2c"}[r.IntN(2)]
				unframed := r.IntN(2) == 0
				id := requestID(w, n)
				var err error
				var kind string
				if r.IntN(3) < 2 {
					size := mixedSize(r, w, n, maxDown)
					kind = fmt.Sprintf("GET/%s/chunked=%v", proto, unframed)
					err = download(ctx, clients[proto], o, url, id, size, unframed)
					down.Add(size)
					if err != nil {
						err = fmt.Errorf("GET %s %d bytes over %s (chunked %v): %w", id, size, proto, unframed, err)
					}
				} else {
					size := mixedSize(r, w, n, maxUp)
					kind = fmt.Sprintf("POST/%s/content-length=%v", proto, !unframed)
					err = upload(ctx, clients[proto], url, id, size, !unframed)
					up.Add(size)
					if err != nil {
						err = fmt.Errorf("POST %s %d bytes over %s (Content-Length %v): %w", id, size, proto, !unframed, err)
					}
				}
				count(kind)
				if err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	var mix []string
	kinds.Range(func(k, v any) bool {
		mix = append(mix, fmt.Sprintf("%s:%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	t.Logf("%d exchanges by %d callers in %.1fs: %.0f MiB down, %.0f MiB up; %s",
		workers*perWorker, workers, took.Seconds(), float64(down.Load())/float64(mib), float64(up.Load())/float64(mib), strings.Join(mix, " "))
	if len(failures) > 0 {
		t.Fatalf("%d of %d exchanges lost or changed bytes:\n%s", len(failures), workers*perWorker, strings.Join(failures, "\n"))
	}
}
