package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferrymesh/ferry/bench/internal/nodes"
)

const gib = float64(1 << 30)

func newClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		ReadBufferSize:      256 << 10,
		WriteBufferSize:     256 << 10,
	}}
}

// download GETs size bytes through addr and checks status and length.
func download(ctx context.Context, c *http.Client, addr string, size int64, buf []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/?size=%d", addr, size), nil)
	if err != nil {
		return err
	}
	res, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("download %s via %s: %w", humanBytes(size), addr, err)
	}
	defer res.Body.Close()
	var n int64
	for {
		k, err := res.Body.Read(buf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("download %s via %s: after %d bytes: %w", humanBytes(size), addr, n, err)
		}
	}
	if res.StatusCode != http.StatusOK || n != size {
		return fmt.Errorf("download %s via %s: status %s, %d bytes", humanBytes(size), addr, res.Status, n)
	}
	return nil
}

// upload POSTs size bytes through addr; the origin answers with the count
// it received.
func upload(ctx context.Context, c *http.Client, addr string, size int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/upload", io.NopCloser(nodes.NewBody(size)))
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	res, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("upload %s via %s: %w", humanBytes(size), addr, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	got, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if res.StatusCode != http.StatusOK || got != size {
		return fmt.Errorf("upload %s via %s: status %s, origin got %q", humanBytes(size), addr, res.Status, b)
	}
	return nil
}

// bulkRound is one download and one upload through one proxy.
type bulkRound struct {
	DownCPUPerGiB, DownMiBps float64
	UpCPUPerGiB, UpMiBps     float64
	PeakRSS                  int64
}

func measureBulk(ctx context.Context, cfg *config, f *fleet, r *results) error {
	clients := map[string]*http.Client{}
	for _, n := range f.order {
		clients[n] = newClient(4)
	}
	buf := make([]byte, 256<<10)
	for round := 0; round < cfg.rounds; round++ {
		for _, name := range rotate(f.order, round) {
			p := f.proxies[name]
			if err := p.resetPeak(); err != nil {
				return err
			}
			var br bulkRound
			c0, t0 := p.cpuSeconds(), time.Now()
			if err := download(ctx, clients[name], p.addr, cfg.dlSize, buf); err != nil {
				if r.fail(ctx, "bulk", name, err) != nil {
					return ctx.Err()
				}
				continue
			}
			c1, t1 := p.cpuSeconds(), time.Now()
			if err := upload(ctx, clients[name], p.addr, cfg.ulSize); err != nil {
				if r.fail(ctx, "bulk", name, err) != nil {
					return ctx.Err()
				}
				continue
			}
			c2, t2 := p.cpuSeconds(), time.Now()
			_, hwm := p.memStatus()
			br.DownCPUPerGiB = (c1 - c0) / (float64(cfg.dlSize) / gib)
			br.DownMiBps = float64(cfg.dlSize) / (1 << 20) / t1.Sub(t0).Seconds()
			br.UpCPUPerGiB = (c2 - c1) / (float64(cfg.ulSize) / gib)
			br.UpMiBps = float64(cfg.ulSize) / (1 << 20) / t2.Sub(t1).Seconds()
			br.PeakRSS = hwm
			r.Bulk[name] = append(r.Bulk[name], br)
			logf("bulk round %d %-10s down %6.3f CPU-s/GiB %7.0f MiB/s  up %6.3f CPU-s/GiB %7.0f MiB/s  peak %s",
				round+1, name, br.DownCPUPerGiB, br.DownMiBps, br.UpCPUPerGiB, br.UpMiBps, mib(hwm))
		}
	}
	return nil
}

// seqResult is the RSS over repeated sequential downloads.
type seqResult struct {
	Before  int64
	After   []int64 // RSS after each download
	Samples []memSample
}

func measureSequential(ctx context.Context, cfg *config, f *fleet, r *results) error {
	buf := make([]byte, 256<<10)
	for _, name := range f.order {
		p := f.proxies[name]
		c := newClient(1)
		var s seqResult
		s.Before, _ = p.memStatus()
		sm := startSampler(p, cfg.sampleEvery)
		var err error
		for i := 0; i < cfg.seqCount && err == nil; i++ {
			if err = download(ctx, c, p.addr, cfg.seqSize, buf); err != nil {
				err = fmt.Errorf("sequential download %d: %w", i+1, err)
				break
			}
			rss, _ := p.memStatus()
			s.After = append(s.After, rss)
		}
		s.Samples, _ = sm.stop()
		c.CloseIdleConnections()
		if err != nil {
			if r.fail(ctx, "sequential", name, err) != nil {
				return ctx.Err()
			}
			continue
		}
		r.Seq[name] = s
		logf("sequential %-10s %d x %s: RSS before %s, after #1 %s, after #%d %s", name, cfg.seqCount, humanBytes(cfg.seqSize),
			mib(s.Before), mib(s.After[0]), cfg.seqCount, mib(s.After[len(s.After)-1]))
	}
	return nil
}

// concResult is one proxy under many concurrent downloads.
type concResult struct {
	Peak    int64
	CPU     float64
	MiBps   float64
	Samples []memSample
}

func measureConcurrent(ctx context.Context, cfg *config, f *fleet, r *results) error {
	for _, name := range f.order {
		p := f.proxies[name]
		c := newClient(cfg.concCount)
		if err := p.resetPeak(); err != nil {
			return err
		}
		sm := startSampler(p, cfg.sampleEvery)
		c0, t0 := p.cpuSeconds(), time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, cfg.concCount)
		for i := 0; i < cfg.concCount; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := download(ctx, c, p.addr, cfg.concSize, make([]byte, 64<<10)); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		el := time.Since(t0)
		cpu := p.cpuSeconds() - c0
		samples, maxSampled := sm.stop()
		_, hwm := p.memStatus()
		c.CloseIdleConnections()
		close(errs)
		if err := <-errs; err != nil {
			if r.fail(ctx, "concurrent", name, fmt.Errorf("%d of %d downloads failed, first: %w", len(errs)+1, cfg.concCount, err)) != nil {
				return ctx.Err()
			}
			continue
		}
		peak := max(hwm, maxSampled)
		total := float64(cfg.concSize) * float64(cfg.concCount)
		r.Conc[name] = concResult{Peak: peak, CPU: cpu / (total / gib), MiBps: total / (1 << 20) / el.Seconds(), Samples: samples}
		logf("concurrent %-10s %d x %s: peak RSS %s, %.3f CPU-s/GiB, %.0f MiB/s", name, cfg.concCount, humanBytes(cfg.concSize),
			mib(peak), r.Conc[name].CPU, r.Conc[name].MiBps)
	}
	return nil
}

// rotate starts the order at a different proxy every round, so no proxy
// always runs first (or right after the slowest).
func rotate(xs []string, k int) []string {
	out := make([]string, 0, len(xs))
	for i := range xs {
		out = append(out, xs[(i+k)%len(xs)])
	}
	return out
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
