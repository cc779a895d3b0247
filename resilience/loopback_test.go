package resilience

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/localnet/localnettest"
)

// Loopback origins that misbehave the ways upstreams do, exercised by a
// small client loop that uses Upstream the way the proxy does: Pick, round
// trip, relay the body, Done, Retry. The proxy's own tests drive the same
// through the real proxy; these check the classification and the state
// machines against real sockets.

type origins struct {
	ok, flaky, hang, resetHeaders, resetBody *httptest.Server
	refused                                  string
	flakyHealthy                             atomic.Bool
}

func startOrigins(t *testing.T) *origins {
	t.Helper()
	o := &origins{}
	o.ok = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	o.flaky = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !o.flakyHealthy.Load() {
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "hello again")
	}))
	o.hang = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // until the client gives up
	}))
	hijack := func(afterHeaders bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			conn, buf, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			if afterHeaders {
				buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
				buf.Flush()
			}
			if tc, ok := conn.(*net.TCPConn); ok {
				tc.SetLinger(0) // RST instead of FIN
			}
			conn.Close()
		}
	}
	o.resetHeaders = httptest.NewServer(hijack(false))
	o.resetBody = httptest.NewServer(hijack(true))
	o.refused = localnettest.RefusedAddr(t)
	t.Cleanup(func() {
		for _, s := range []*httptest.Server{o.ok, o.flaky, o.hang, o.resetHeaders, o.resetBody} {
			s.CloseClientConnections()
			s.Close()
		}
	})
	return o
}

func addrOf(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

func newLoopbackTransport(t *testing.T) *http.Transport {
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: time.Second}).DialContext,
		ResponseHeaderTimeout: 100 * time.Millisecond, // the proxy's response_header timeout
		DisableKeepAlives:     true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// attempt sends one GET to addr and classifies how it ended.
func attempt(ctx context.Context, tr http.RoundTripper, addr string) Outcome {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		panic(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return Outcome{Result: ClassifyError(err)}
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		if r := ClassifyError(err); r == Canceled || r == TimedOut {
			return Outcome{Result: r, Status: resp.StatusCode}
		}
		return Outcome{Result: BodyBroken, Status: resp.StatusCode}
	}
	return Outcome{Result: Responded, Status: resp.StatusCode}
}

// request is the proxy's loop for one bodiless GET: pick, try, report,
// retry elsewhere while the policy and budget allow. It returns the final
// outcome, the endpoints tried, and the Pick error if no endpoint could be
// picked.
func request(u *Upstream, tr http.RoundTripper) (Outcome, []string, error) {
	var tried []string
	for n := 1; ; n++ {
		p, err := u.Pick("", tried)
		if err != nil {
			return Outcome{}, tried, err
		}
		o := attempt(context.Background(), tr, p.Addr())
		p.Done(o)
		tried = append(tried, p.Addr())
		if _, _, d := u.Retry(n, http.MethodGet, 0, false, o); d != RetryAllowed {
			return o, tried, nil
		}
		// The proxy waits the returned backoff here; the test need not.
	}
}

func TestClassifyLoopbackFailures(t *testing.T) {
	o := startOrigins(t)
	tr := newLoopbackTransport(t)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		addr string
		want Outcome
	}{
		{"healthy", context.Background(), addrOf(o.ok), Outcome{Result: Responded, Status: 200}},
		{"503", context.Background(), addrOf(o.flaky), Outcome{Result: Responded, Status: 503}},
		{"refused", context.Background(), o.refused, Outcome{Result: ConnectFailed}},
		{"hangs", context.Background(), addrOf(o.hang), Outcome{Result: TimedOut}},
		{"reset before headers", context.Background(), addrOf(o.resetHeaders), Outcome{Result: TransportFailed}},
		{"reset mid-body", context.Background(), addrOf(o.resetBody), Outcome{Result: BodyBroken, Status: 200}},
		{"client canceled", canceled, addrOf(o.hang), Outcome{Result: Canceled}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := attempt(tc.ctx, tr, tc.addr); got != tc.want {
				t.Fatalf("outcome %+v (%s), want %+v", got, got.Result, tc.want)
			}
		})
	}
	if ClassifyError(fmt.Errorf("wrapped: %w", context.DeadlineExceeded)) != TimedOut {
		t.Fatal("deadline not a timeout")
	}
}

func TestLoopbackBreakersIsolateBadOrigins(t *testing.T) {
	o := startOrigins(t)
	tr := newLoopbackTransport(t)
	u, clk, rec := newTestUpstream(t, func(s *Settings) {
		s.Breaker.ConsecutiveFailures = 2
		s.Breaker.OpenDuration = 30 * time.Second
		s.Outlier.Consecutive5xx = 0
		s.Retry.MaxRetries = 4
		s.Retry.Budget.MinPerSecond = 1000 // this test is about breakers
	}, addrOf(o.ok), addrOf(o.flaky), o.refused, addrOf(o.hang), addrOf(o.resetHeaders), addrOf(o.resetBody))
	good := addrOf(o.ok)

	// Warm-up: bad origins fail until each breaker has seen 2 failures.
	// Retries rescue every bodiless GET except one cut mid-body.
	for range 60 {
		out, tried, err := request(u, tr)
		if err != nil {
			t.Fatalf("pick failed with a healthy origin: %v", err)
		}
		if out.Result == Responded && out.Status == 200 && tried[len(tried)-1] != good {
			t.Fatalf("success from %s", tried[len(tried)-1])
		}
		if out.Result != Responded && out.Result != BodyBroken {
			t.Fatalf("request ended %s after %v", out.Result, tried)
		}
	}
	for _, st := range u.Status() {
		want := BreakerOpen
		if st.Addr == good {
			want = BreakerClosed
		}
		if st.Breaker != want {
			t.Fatalf("%s breaker %s, want %s (%+v)", st.Addr, st.Breaker, want, st)
		}
	}
	// Open breakers are skipped: every request goes straight to ok.
	for range 20 {
		out, tried, err := request(u, tr)
		if err != nil || len(tried) != 1 || tried[0] != good || out.Status != 200 {
			t.Fatalf("with bad origins open: %+v %v %v", out, tried, err)
		}
	}
	// Excluding the healthy one leaves a 503-style error with the reason.
	if _, err := u.Pick("", []string{good}); !errors.Is(err, ErrAllUnavailable) || !strings.Contains(err.Error(), "5 circuit breaker open") {
		t.Fatalf("all open: %v", err)
	}

	// flaky recovers; after the open period its probe closes its breaker,
	// while the others' probes fail and reopen theirs.
	o.flakyHealthy.Store(true)
	clk.Advance(30 * time.Second)
	for i := 0; statusOf(t, u, addrOf(o.flaky)).Breaker != BreakerClosed; i++ {
		if i == 200 {
			t.Fatalf("flaky never closed: %+v", statusOf(t, u, addrOf(o.flaky)))
		}
		request(u, tr)
	}
	for _, a := range []string{o.refused, addrOf(o.hang), addrOf(o.resetHeaders)} {
		for i := 0; statusOf(t, u, a).Breaker != BreakerOpen; i++ {
			if i == 200 {
				t.Fatalf("%s never reopened: %+v", a, statusOf(t, u, a))
			}
			request(u, tr)
		}
	}
	ev := strings.Join(rec.take(), "\n")
	for _, want := range []string{
		"breaker files " + addrOf(o.flaky) + " closed->open",
		"breaker files " + addrOf(o.flaky) + " half-open->closed",
		"breaker files " + o.refused + " half-open->open",
		"retry files 1 allowed",
	} {
		if !strings.Contains(ev, want) {
			t.Fatalf("events lack %q:\n%s", want, ev)
		}
	}
}
