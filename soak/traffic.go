package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymesh/ferry/internal/payload"
)

// The kinds of exchange the soak mixes. Each checks its answer end to end
// and tells a failure made by ferry from behaviour the origin chose.
const (
	kindSmall       = "small"        // GET, 0..4 KiB body
	kindDownload    = "download"     // GET, 1 KiB..max-body, Content-Length or chunked
	kindUpload      = "upload"       // POST, 1 KiB..max-body, Content-Length or chunked
	kindStream      = "stream"       // GET, server-sent events flushed one by one
	kindOriginError = "origin-error" // GET, the origin answers 404, 429 or 500 itself
	kindOriginAbort = "origin-abort" // GET, the origin breaks its body half-way
)

var allKinds = []string{kindSmall, kindDownload, kindUpload, kindStream, kindOriginError, kindOriginAbort}

const defaultMix = "small=45,download=20,upload=15,stream=5,origin-error=10,origin-abort=5"

// mix is a weighted choice of kinds.
type mix struct {
	kinds   []string
	weights []int
	total   int
}

// parseMix reads "kind=weight,..."; kinds left out get weight 0.
func parseMix(s string) (mix, error) {
	var m mix
	seen := map[string]bool{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return mix{}, fmt.Errorf("-mix: %q: want kind=weight", part)
		}
		if !slices.Contains(allKinds, k) {
			return mix{}, fmt.Errorf("-mix: unknown kind %q (kinds: %s)", k, strings.Join(allKinds, ", "))
		}
		if seen[k] {
			return mix{}, fmt.Errorf("-mix: kind %q given twice", k)
		}
		seen[k] = true
		w, err := strconv.Atoi(v)
		if err != nil || w < 0 {
			return mix{}, fmt.Errorf("-mix: %s: weight %q is not a whole number >= 0", k, v)
		}
		if w > 0 {
			m.kinds = append(m.kinds, k)
			m.weights = append(m.weights, w)
			m.total += w
		}
	}
	if m.total == 0 {
		return mix{}, fmt.Errorf("-mix: %q: no kind has a positive weight", s)
	}
	return m, nil
}

func (m mix) pick(r *rand.Rand) string {
	n := r.IntN(m.total)
	for i, w := range m.weights {
		if n < w {
			return m.kinds[i]
		}
		n -= w
	}
	return m.kinds[len(m.kinds)-1]
}

// counts of one kind.
type kindStats struct {
	requests, ok, originMade, ferryErrors atomic.Int64
	bytesDown, bytesUp                    atomic.Int64
}

// traffic runs the workers and keeps the tallies.
type traffic struct {
	base       string // ferry's outbound URL
	origin     *origin
	mix        mix
	maxBody    int64
	h2cShare   float64
	reqTimeout time.Duration
	h1, h2c    *http.Client

	requests, ferryErrors, originMade atomic.Int64
	byKind                            map[string]*kindStats

	mu       sync.Mutex
	errors   []string // the first maxErrorLines ferry-made failures
	firstErr time.Time
}

const maxErrorLines = 200

func newTraffic(base string, o *origin, m mix, maxBody int64, h2cShare float64, reqTimeout time.Duration, concurrency int) *traffic {
	h1 := &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConns: concurrency * 2, MaxIdleConnsPerHost: concurrency * 2}
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	h2 := &http.Transport{Proxy: nil, DisableCompression: true, Protocols: p}
	tr := &traffic{
		base: base, origin: o, mix: m, maxBody: maxBody, h2cShare: h2cShare, reqTimeout: reqTimeout,
		h1: &http.Client{Transport: h1}, h2c: &http.Client{Transport: h2},
		byKind: map[string]*kindStats{},
	}
	for _, k := range allKinds {
		tr.byKind[k] = &kindStats{}
	}
	return tr
}

// run starts concurrency workers that loop until ctx ends; each finishes
// the exchange it is in (the exchange has its own timeout, not ctx).
func (tr *traffic) run(ctx context.Context, concurrency int) {
	var wg sync.WaitGroup
	var seq atomic.Uint64
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for ctx.Err() == nil {
				kind := tr.mix.pick(r)
				proto, c := "h1", tr.h1
				if r.Float64() < tr.h2cShare {
					proto, c = "h2c", tr.h2c
				}
				id := fmt.Sprintf("%016x", seq.Add(1))
				tr.once(r, c, kind, proto, id)
			}
		}()
	}
	wg.Wait()
}

func (tr *traffic) closeIdle() {
	tr.h1.CloseIdleConnections()
	tr.h2c.CloseIdleConnections()
}

// once runs one exchange and records it.
func (tr *traffic) once(r *rand.Rand, c *http.Client, kind, proto, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), tr.reqTimeout)
	defer cancel()
	ks := tr.byKind[kind]
	start := time.Now()
	var down, up int64
	var originMade bool
	var err error
	switch kind {
	case kindSmall:
		down = int64(r.IntN(4097))
		err = tr.download(ctx, c, id, down, r.IntN(2) == 0)
	case kindDownload:
		down = logSize(r, tr.maxBody)
		err = tr.download(ctx, c, id, down, r.IntN(2) == 0)
	case kindUpload:
		up = logSize(r, tr.maxBody)
		err = tr.upload(ctx, c, id, up, r.IntN(2) == 0)
	case kindStream:
		err = tr.stream(ctx, c, id)
	case kindOriginError:
		err = tr.originStatus(ctx, c, []int{404, 429, 500}[r.IntN(3)])
		originMade = err == nil
	case kindOriginAbort:
		down = 64<<10 + int64(r.IntN(1<<20))
		err = tr.originAbort(ctx, c, id, down)
		originMade = err == nil
	}
	tr.requests.Add(1)
	ks.requests.Add(1)
	switch {
	case err != nil:
		tr.ferryErrors.Add(1)
		ks.ferryErrors.Add(1)
		tr.mu.Lock()
		if tr.firstErr.IsZero() {
			tr.firstErr = start
		}
		if len(tr.errors) < maxErrorLines {
			tr.errors = append(tr.errors, fmt.Sprintf("%s %s %s %s (%v): %v", start.Format(time.RFC3339Nano), kind, proto, id, time.Since(start).Round(time.Millisecond), err))
		}
		tr.mu.Unlock()
	case originMade:
		tr.originMade.Add(1)
		ks.originMade.Add(1)
	default:
		ks.ok.Add(1)
		ks.bytesDown.Add(down)
		ks.bytesUp.Add(up)
	}
}

// logSize is log-uniform between 1 KiB and max.
func logSize(r *rand.Rand, max int64) int64 {
	lo, hi := math.Log(1<<10), math.Log(float64(max))
	if hi <= lo {
		return max
	}
	return int64(math.Exp(lo + r.Float64()*(hi-lo)))
}

// ferryAnswer reports an answer ferry made itself (X-Ferry-Error), which
// none of the soak's exchanges may get.
func ferryAnswer(res *http.Response) error {
	if reason := res.Header.Get("X-Ferry-Error"); reason != "" {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return fmt.Errorf("ferry answered %d: %s (body %q)", res.StatusCode, reason, b)
	}
	return nil
}

func (tr *traffic) get(ctx context.Context, c *http.Client, path string) (*http.Response, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, tr.base+path, nil)
	res, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("no answer: %w", err)
	}
	if err := ferryAnswer(res); err != nil {
		res.Body.Close()
		return nil, err
	}
	return res, nil
}

func (tr *traffic) download(ctx context.Context, c *http.Client, id string, size int64, chunked bool) error {
	path := fmt.Sprintf("/dl?size=%d&id=%s", size, id)
	if chunked {
		path += "&chunked=1"
	}
	res, err := tr.get(ctx, c, path)
	if err != nil {
		tr.origin.ledger.Written(id, 0) // drop the origin's record, if any
		return err
	}
	defer res.Body.Close()
	sink := payload.NewSink()
	n, rerr := io.CopyBuffer(sink, res.Body, make([]byte, 32<<10))
	sent, ok := tr.origin.ledger.Written(id, 10*time.Second)
	switch {
	case res.StatusCode != http.StatusOK:
		return fmt.Errorf("status %d from the origin's 200 path", res.StatusCode)
	case !chunked && res.ContentLength != size:
		return fmt.Errorf("Content-Length %d, the origin sent %d", res.ContentLength, size)
	case !ok:
		return fmt.Errorf("read %d bytes (%v); the origin never finished writing", n, rerr)
	case sent.Err != nil:
		return fmt.Errorf("the origin's write failed after %d of %d bytes: %v (caller read %d, %v)", sent.N, size, sent.Err, n, rerr)
	case rerr != nil:
		return fmt.Errorf("body broken after %d of %d bytes the origin sent whole: %v", n, size, rerr)
	case n != sent.N || sink.Digest() != sent.Digest:
		return fmt.Errorf("caller got %d bytes sha256 %s, the origin sent %d bytes sha256 %s", n, sink.Digest(), sent.N, sent.Digest)
	}
	return nil
}

func (tr *traffic) upload(ctx context.Context, c *http.Client, id string, size int64, declared bool) error {
	mine := payload.NewSink()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, tr.base+"/ul", io.NopCloser(io.TeeReader(payload.NewTagged(id, size), mine)))
	req.ContentLength = -1
	if declared {
		req.ContentLength = size
	}
	res, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("no answer after sending %d of %d bytes: %w", mine.N(), size, err)
	}
	defer res.Body.Close()
	if err := ferryAnswer(res); err != nil {
		return err
	}
	b, err := io.ReadAll(res.Body)
	switch {
	case err != nil:
		return fmt.Errorf("answer broken: %w", err)
	case res.StatusCode != http.StatusOK:
		return fmt.Errorf("origin answered %d %q", res.StatusCode, b)
	case mine.N() != size:
		return fmt.Errorf("sent %d of %d bytes", mine.N(), size)
	}
	if want := fmt.Sprintf("%d %s", size, mine.Digest()); string(b) != want {
		return fmt.Errorf("origin read %q, caller sent %q", b, want)
	}
	return nil
}

func (tr *traffic) stream(ctx context.Context, c *http.Client, id string) error {
	res, err := tr.get(ctx, c, "/stream?id="+id)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("stream broken after %d bytes: %w", len(b), err)
	}
	var want strings.Builder
	for i := range streamEvents {
		fmt.Fprintf(&want, "id: %d\ndata: %s\n\n", i, id)
	}
	if res.StatusCode != http.StatusOK || string(b) != want.String() {
		return fmt.Errorf("stream: status %d, %d bytes, want 200 and %d bytes of %d events", res.StatusCode, len(b), want.Len(), streamEvents)
	}
	return nil
}

// originStatus: the origin's own error answer must pass unchanged.
func (tr *traffic) originStatus(ctx context.Context, c *http.Client, code int) error {
	res, err := tr.get(ctx, c, fmt.Sprintf("/status?code=%d", code))
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("origin's %d: body broken: %w", code, err)
	}
	if want := fmt.Sprintf("origin says %d", code); res.StatusCode != code || string(b) != want {
		return fmt.Errorf("origin answered %d %q, caller got %d %q", code, want, res.StatusCode, b)
	}
	return nil
}

// originAbort: the origin breaks its body half-way; the caller must see a
// broken body (never a clean one) holding at most what the origin sent.
func (tr *traffic) originAbort(ctx context.Context, c *http.Client, id string, size int64) error {
	res, err := tr.get(ctx, c, fmt.Sprintf("/abort?size=%d&id=%s", size, id))
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d, the origin sent 200", res.StatusCode)
	}
	n, err := io.Copy(io.Discard, res.Body)
	switch {
	case err == nil:
		return fmt.Errorf("clean end after %d bytes of a body the origin broke after %d of %d", n, size/2, size)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("the broken body hung until the request timeout after %d bytes", n)
	case n > size/2:
		return fmt.Errorf("read %d bytes, the origin sent %d", n, size/2)
	}
	return nil
}
