package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// latQuantiles are the percentiles reported and plotted.
var latQuantiles = []float64{0.50, 0.75, 0.90, 0.95, 0.99, 0.999}

// latRound is one constant-rate attack on one target.
type latRound struct {
	Q       []time.Duration // at latQuantiles
	OK      int
	Errors  int
	Latency []time.Duration `json:"-"`
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// attack sends GETs at a constant rate for d and returns the latencies of
// the successful ones, sorted.
func attack(ctx context.Context, addr string, size int64, rate int, d time.Duration) (latRound, error) {
	tg := vegeta.NewStaticTargeter(vegeta.Target{Method: http.MethodGet, URL: fmt.Sprintf("http://%s/?size=%d", addr, size)})
	a := vegeta.NewAttacker(vegeta.KeepAlive(true), vegeta.HTTP2(false), vegeta.Timeout(10*time.Second), vegeta.Workers(32))
	var lr latRound
	for res := range a.Attack(tg, vegeta.Rate{Freq: rate, Per: time.Second}, d, addr) {
		if res.Code == http.StatusOK && res.Error == "" {
			lr.OK++
			lr.Latency = append(lr.Latency, res.Latency)
		} else {
			lr.Errors++
		}
		if ctx.Err() != nil {
			a.Stop()
		}
	}
	if ctx.Err() != nil {
		return lr, ctx.Err()
	}
	if lr.OK == 0 {
		return lr, fmt.Errorf("constant-rate attack on %s: no successful request (%d errors)", addr, lr.Errors)
	}
	if lr.Errors*100 > lr.OK+lr.Errors {
		return lr, fmt.Errorf("constant-rate attack on %s: %d of %d requests failed", addr, lr.Errors, lr.OK+lr.Errors)
	}
	slices.Sort(lr.Latency)
	for _, q := range latQuantiles {
		lr.Q = append(lr.Q, quantile(lr.Latency, q))
	}
	return lr, nil
}

func measureLatency(ctx context.Context, cfg *config, f *fleet, r *results) error {
	targets := append([]string{pDirect}, f.order...)
	addr := func(n string) string {
		if n == pDirect {
			return f.origin.addr
		}
		return f.proxies[n].addr
	}
	for _, n := range targets { // warm-up: connections, pools, page cache
		if _, err := attack(ctx, addr(n), cfg.smallSize, cfg.latRate, time.Second); err != nil {
			if r.fail(ctx, "latency warm-up", n, err) != nil {
				return ctx.Err()
			}
		}
	}
	// Each proxy's attack follows a direct attack of its own, so the
	// difference is taken between two measurements seconds apart.
	measure := func(round int, n string) (latRound, bool, error) {
		lr, err := attack(ctx, addr(n), cfg.smallSize, cfg.latRate, cfg.latDuration)
		if err != nil {
			// Kept without percentiles: rounds pair up by index.
			lr.Q, lr.Latency = nil, nil
			if r.fail(ctx, fmt.Sprintf("latency round %d", round+1), n, err) != nil {
				return lr, false, ctx.Err()
			}
			return lr, false, nil
		}
		r.LatPooled[n] = append(r.LatPooled[n], lr.Latency...)
		lr.Latency = nil
		logf("latency round %d %-10s %d req/s: p50 %-9s p90 %-9s p99 %-9s ok %d errors %d",
			round+1, n, cfg.latRate, lr.Q[0], lr.Q[2], lr.Q[4], lr.OK, lr.Errors)
		return lr, true, nil
	}
	for round := 0; round < cfg.latRounds; round++ {
		for _, n := range rotate(f.order, round) {
			d, _, err := measure(round, pDirect)
			if err != nil {
				return err
			}
			lr, _, err := measure(round, n)
			if err != nil {
				return err
			}
			r.Lat[pDirect] = append(r.Lat[pDirect], d)
			r.LatDirect[n] = append(r.LatDirect[n], d)
			r.Lat[n] = append(r.Lat[n], lr)
		}
	}
	for n, l := range r.LatPooled {
		slices.Sort(l)
		r.LatPooled[n] = l
	}
	return nil
}
