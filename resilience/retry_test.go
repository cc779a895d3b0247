package resilience

import (
	"fmt"
	"math"
	"testing"
	"time"
)

func TestRetryDecide(t *testing.T) {
	def := DefaultRetryPolicy()
	withPost := DefaultRetryPolicy()
	withPost.Methods = append(withPost.Methods, "POST")
	for _, tc := range []struct {
		name    string
		p       *RetryPolicy
		attempt int
		method  string
		sent    int64
		hasBody bool
		o       Outcome
		want    RetryDecision
	}{
		{"GET refused", &def, 1, "GET", 0, false, refuse, RetryAllowed},
		{"GET 503", &def, 1, "GET", 0, false, bad503, RetryAllowed},
		{"GET 500 not in on_statuses", &def, 1, "GET", 0, false, Outcome{Result: Responded, Status: 500}, RetryNotNeeded},
		{"GET 200", &def, 1, "GET", 0, false, ok200, RetryNotNeeded},
		{"GET timeout before headers", &def, 2, "GET", 0, false, Outcome{Result: TimedOut}, RetryAllowed},
		{"GET body idle timeout after headers", &def, 1, "GET", 0, false, Outcome{Result: TimedOut, Status: 200}, RetryNotNeeded},
		{"GET reset before headers", &def, 1, "GET", 0, false, Outcome{Result: TransportFailed}, RetryAllowed},
		{"GET body broke mid-stream", &def, 1, "GET", 0, false, Outcome{Result: BodyBroken, Status: 200}, RetryNotNeeded},
		{"GET canceled by client", &def, 1, "GET", 0, false, cancel, RetryNotNeeded},
		{"GET third retry of two", &def, 3, "GET", 0, false, refuse, RetryExhausted},
		{"attempt 0 is not a retry", &def, 0, "GET", 0, false, refuse, RetryExhausted},
		{"POST refused, nothing sent", &def, 1, "POST", 0, true, refuse, RetryAllowed},
		{"POST reset, nothing sent", &def, 1, "POST", 0, true, Outcome{Result: TransportFailed}, RetryMethodNotAllowed},
		{"POST 503", &def, 1, "POST", 0, true, bad503, RetryMethodNotAllowed},
		{"POST partly sent, reset", &withPost, 1, "POST", 1, true, Outcome{Result: TransportFailed}, RetryNotReplayable},
		{"POST partly sent, refused", &withPost, 1, "POST", 512, true, refuse, RetryNotReplayable},
		{"POST partly sent, 503", &withPost, 1, "POST", 10 << 20, true, bad503, RetryNotReplayable},
		{"POST configured, nothing sent", &withPost, 1, "POST", 0, true, Outcome{Result: TransportFailed}, RetryAllowed},
		{"PUT partly sent", &def, 1, "PUT", 3, true, Outcome{Result: TimedOut}, RetryNotReplayable},
		{"DELETE without body", &def, 1, "DELETE", 0, false, Outcome{Result: TimedOut}, RetryAllowed},
		{"retries off", &RetryPolicy{OnStatuses: []int{503}}, 1, "GET", 0, false, refuse, RetryExhausted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.Decide(tc.attempt, tc.method, tc.sent, tc.hasBody, tc.o); got != tc.want {
				t.Fatalf("Decide = %s, want %s", got, tc.want)
			}
			if tc.attempt == 1 {
				if got, want := tc.p.Allowed(tc.method, tc.sent, tc.hasBody, tc.o), tc.want == RetryAllowed; got != want {
					t.Fatalf("Allowed = %v, want %v", got, want)
				}
			}
		})
	}
}

// A POST whose body was partly sent is never retried, whatever the
// configuration, the outcome or the attempt.
func TestPartlySentPostNeverRetried(t *testing.T) {
	p := DefaultRetryPolicy()
	p.Methods = []string{"POST", "GET"}
	p.OnStatuses = []int{500, 502, 503, 504}
	p.MaxRetries = 10
	results := []Result{Responded, ConnectFailed, TimedOut, TransportFailed, BodyBroken, Canceled}
	for _, r := range results {
		for _, status := range []int{0, 200, 500, 503} {
			for attempt := 1; attempt <= 10; attempt++ {
				o := Outcome{Result: r, Status: status}
				if d := p.Decide(attempt, "POST", 1, true, o); d == RetryAllowed {
					t.Fatalf("POST with 1 byte sent retried after %+v (attempt %d)", o, attempt)
				}
				if p.Allowed("POST", 1, true, o) {
					t.Fatalf("Allowed POST with 1 byte sent after %+v", o)
				}
			}
		}
	}
	// Same through Upstream.Retry, which must not even spend the budget.
	u, _, rec := newTestUpstream(t, func(s *Settings) { s.Retry = p }, "a:1", "b:1")
	if _, _, d := u.Retry(1, "POST", 4096, true, Outcome{Result: TransportFailed}); d != RetryNotReplayable {
		t.Fatalf("Upstream.Retry = %s", d)
	}
	if _, retries := u.Budget().Counts(); retries != 0 {
		t.Fatalf("budget spent on a refused retry: %d", retries)
	}
	if ev := rec.take(); len(ev) != 1 || ev[0] != "retry files 1 body_sent" {
		t.Fatalf("events = %q", ev)
	}
}

func TestBackoffJitterBounds(t *testing.T) {
	p := DefaultRetryPolicy() // 25ms doubling to 250ms
	for _, tc := range []struct {
		attempt int
		ceil    time.Duration
	}{{1, 25 * time.Millisecond}, {2, 50 * time.Millisecond}, {3, 100 * time.Millisecond}, {4, 200 * time.Millisecond}, {5, 250 * time.Millisecond}, {9, 250 * time.Millisecond}} {
		t.Run(fmt.Sprint(tc.attempt), func(t *testing.T) {
			var lo, hi time.Duration = tc.ceil, 0
			for range 2000 {
				d := p.Backoff(tc.attempt)
				if d < 0 || d > tc.ceil {
					t.Fatalf("Backoff(%d) = %s outside [0,%s]", tc.attempt, d, tc.ceil)
				}
				lo, hi = min(lo, d), max(hi, d)
			}
			// Full jitter: the draws spread over the range.
			if lo > tc.ceil/10 || hi < tc.ceil*9/10 {
				t.Fatalf("Backoff(%d) spread [%s,%s], want most of [0,%s]", tc.attempt, lo, hi, tc.ceil)
			}
		})
	}
}

func TestUpstreamRetryReportsAndBacksOff(t *testing.T) {
	u, _, rec := newTestUpstream(t, nil, "a:1", "b:1")
	mustPick(t, u, "").Done(refuse) // deposits one request
	d, _, dec := u.Retry(1, "GET", 0, false, refuse)
	if dec != RetryAllowed || d < 0 || d > 25*time.Millisecond {
		t.Fatalf("Retry = %s, %s", d, dec)
	}
	if _, _, dec := u.Retry(1, "GET", 0, false, ok200); dec != RetryNotNeeded {
		t.Fatalf("Retry after 200 = %s", dec)
	}
	if ev := rec.take(); len(ev) != 1 || ev[0] != "retry files 1 allowed" {
		t.Fatalf("events = %q", ev)
	}
}

// The longest retry intervals a config takes (up to
// 2562047h47m16.854775807s) give a backoff up to max_interval. Doubling
// base_interval overflowed into a negative ceiling, so a retry meant to
// wait up to 2500000h went at once; and a ceiling of the largest duration
// made Backoff call rand.N with ceiling+1, which overflowed to a negative
// number: a panic.
func TestBackoffLongestIntervals(t *testing.T) {
	for _, tc := range []struct {
		base, max time.Duration
		attempt   int
		ceil      time.Duration
	}{
		{2000000 * time.Hour, 2500000 * time.Hour, 1, 2000000 * time.Hour},
		{2000000 * time.Hour, 2500000 * time.Hour, 2, 2500000 * time.Hour},
		{1500000 * time.Hour, math.MaxInt64, 2, math.MaxInt64},
		{1500000 * time.Hour, math.MaxInt64, 10, math.MaxInt64},
		{math.MaxInt64, math.MaxInt64, 1, math.MaxInt64},
		{math.MaxInt64, math.MaxInt64, 3, math.MaxInt64},
	} {
		p := RetryPolicy{MaxRetries: 10, BaseInterval: tc.base, MaxInterval: tc.max}
		if got := p.backoffCeiling(tc.attempt); got != tc.ceil {
			t.Errorf("base %s, max %s: ceiling of attempt %d = %s, want %s", tc.base, tc.max, tc.attempt, got, tc.ceil)
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("base %s, max %s: Backoff(%d) panicked: %v", tc.base, tc.max, tc.attempt, r)
				}
			}()
			if d := p.Backoff(tc.attempt); d < 0 || d > tc.ceil {
				t.Errorf("base %s, max %s: Backoff(%d) = %s outside [0,%s]", tc.base, tc.max, tc.attempt, d, tc.ceil)
			}
		}()
	}
}
