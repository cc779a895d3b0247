package resilience

import (
	"testing"
	"time"
)

func TestBudgetFloorPerSecond(t *testing.T) {
	clk := NewManualClock(epoch)
	b := NewBudget(BudgetSettings{Ratio: 0.2, MinPerSecond: 3, Window: 10 * time.Second}, clk)
	for sec := range 5 {
		n := 0
		for withdraw(b) {
			n++
			if n > 100 {
				t.Fatal("no cap without traffic")
			}
		}
		if n != 3 {
			t.Fatalf("second %d: %d retries without traffic, want the floor 3", sec, n)
		}
		clk.Advance(time.Second)
	}
}

func TestBudgetRatio(t *testing.T) {
	clk := NewManualClock(epoch)
	b := NewBudget(BudgetSettings{Ratio: 0.2, MinPerSecond: 0, Window: 10 * time.Second}, clk)
	for range 100 {
		b.Deposit()
	}
	n := 0
	for n <= 100 && withdraw(b) {
		n++
	}
	if n != 20 {
		t.Fatalf("%d retries for 100 requests at ratio 0.2", n)
	}
	// Nine seconds later the requests still count, and the retries too.
	clk.Advance(9 * time.Second)
	if withdraw(b) {
		t.Fatal("budget refilled inside the window")
	}
	// Once the window has passed, both are forgotten.
	clk.Advance(time.Second)
	if req, ret := b.Counts(); req != 0 || ret != 0 {
		t.Fatalf("after the window: %d requests, %d retries", req, ret)
	}
	if withdraw(b) {
		t.Fatal("retry allowed with no traffic and no floor")
	}
}

// The ratio's share of the requests is whole retries whenever it is a
// whole number: 0.29 of 100 requests allows 29 (in floating point the
// share came out as 28.999999999999996 and allowed 28), for every ratio in
// hundredths and request count whose product is whole.
func TestBudgetRatioShareIsExact(t *testing.T) {
	for pct := 1; pct <= 100; pct++ {
		for _, requests := range []int{100, 300, 1000} {
			clk := NewManualClock(epoch)
			b := NewBudget(BudgetSettings{Ratio: float64(pct) / 100, MinPerSecond: 0, Window: 10 * time.Second}, clk)
			for range requests {
				b.Deposit()
			}
			n := 0
			for n <= requests && withdraw(b) {
				n++
			}
			if want := pct * requests / 100; n != want {
				t.Errorf("ratio %.2f of %d requests: %d retries, want %d", float64(pct)/100, requests, n, want)
			}
		}
	}
}

func TestBudgetSlidesAcrossJumps(t *testing.T) {
	clk := NewManualClock(epoch)
	b := NewBudget(BudgetSettings{Ratio: 1, Window: 3 * time.Second}, clk)
	b.Deposit()
	clk.Advance(time.Second)
	b.Deposit()
	clk.Advance(time.Second)
	b.Deposit()
	if req, _ := b.Counts(); req != 3 {
		t.Fatalf("requests = %d, want 3", req)
	}
	clk.Advance(time.Second) // the first second falls out
	if req, _ := b.Counts(); req != 2 {
		t.Fatalf("requests = %d, want 2", req)
	}
	clk.Advance(time.Hour) // a long jump expires everything
	if req, _ := b.Counts(); req != 0 {
		t.Fatalf("requests after an hour = %d", req)
	}
	clk.Advance(-time.Minute) // a clock stepping back does not corrupt counts
	b.Deposit()
	if req, _ := b.Counts(); req != 1 {
		t.Fatalf("requests after a step back = %d", req)
	}
}

// Under a full outage (every attempt fails and asks for a retry), the budget
// keeps retries to ratio x requests plus the floor.
func TestBudgetCapsRetriesUnderFullOutage(t *testing.T) {
	u, clk, _ := newTestUpstream(t, func(s *Settings) {
		s.Breaker.ConsecutiveFailures = 0
		s.Outlier.Consecutive5xx = 0
		s.Retry.MaxRetries = 3
		s.Retry.Budget = BudgetSettings{Ratio: 0.2, MinPerSecond: 5, Window: 10 * time.Second}
	}, "a:1", "b:1", "c:1", "d:1")
	const perSecond, seconds = 200, 20
	requests, attempts := 0, 0
	for range seconds {
		for range perSecond {
			requests++
			var tried []string
			for attempt := 0; ; attempt++ {
				p := mustPick(t, u, "", tried...)
				attempts++
				p.Done(refuse)
				tried = append(tried, p.Addr())
				if _, _, d := u.Retry(attempt+1, "GET", 0, false, refuse); d != RetryAllowed {
					break
				}
			}
		}
		clk.Advance(time.Second)
	}
	retries := attempts - requests
	limit := int(0.2*float64(requests)) + 5*seconds
	if retries > limit {
		t.Fatalf("%d retries for %d requests: over the budget of %d", retries, requests, limit)
	}
	// Without a budget, 3 retries per request would have been 3x the load.
	if retries < requests/10 {
		t.Fatalf("only %d retries for %d requests: the budget is too tight", retries, requests)
	}
	t.Logf("%d requests, %d retries (limit %d)", requests, retries, limit)
}

// withdraw takes a retry from b, dropping its token.
func withdraw(b *Budget) bool {
	_, ok := b.TryWithdraw()
	return ok
}

// A refund that comes in the second after the withdrawal (a retry given up
// at the end of its backoff) still gives the token back.
func TestBudgetRefundAcrossSecond(t *testing.T) {
	clk := NewManualClock(epoch)
	b := NewBudget(BudgetSettings{Ratio: 0, MinPerSecond: 1, Window: 10 * time.Second}, clk)
	tok, ok := b.TryWithdraw()
	if !ok {
		t.Fatal("first retry refused")
	}
	clk.Advance(time.Second)
	b.Refund(tok)
	if _, ret := b.Counts(); ret != 0 {
		t.Fatalf("%d retries counted after the refund", ret)
	}
}

// spendTwoSeconds returns a budget allowing one retry a second (no ratio)
// over window, after a retry taken in each of its first two seconds, with
// the token of the first.
func spendTwoSeconds(t *testing.T, window time.Duration) (*Budget, *ManualClock, RetryToken) {
	t.Helper()
	clk := NewManualClock(epoch)
	b := NewBudget(BudgetSettings{Ratio: 0, MinPerSecond: 1, Window: window}, clk)
	first, ok := b.TryWithdraw()
	if !ok {
		t.Fatal("second 0: retry refused")
	}
	clk.Advance(time.Second)
	if !withdraw(b) {
		t.Fatal("second 1: retry refused")
	}
	return b, clk, first
}

// A refund goes back to the second its withdrawal was taken from, not to
// the newest second that spent a retry: crediting a later second would let
// it retry beyond its floor while the earlier one kept its spend.
func TestBudgetRefundGoesToTheWithdrawalsSecond(t *testing.T) {
	b, _, first := spendTwoSeconds(t, 10*time.Second)
	b.Refund(first)
	if _, ret := b.Counts(); ret != 1 {
		t.Fatalf("%d retries counted after the refund, want 1", ret)
	}
	if withdraw(b) {
		t.Fatal("second 1 allowed a retry over its floor of 1 after a refund of second 0's")
	}
	// The zero token names no withdrawal.
	b.Refund(RetryToken{})
	if _, ret := b.Counts(); ret != 1 {
		t.Fatalf("the zero token refunded: %d retries counted", ret)
	}
}

// A refund whose withdrawal's second has left the window is dropped: that
// spend no longer counts, and no other second may be credited for it.
func TestBudgetRefundOfExpiredSecondIsDropped(t *testing.T) {
	b, clk, old := spendTwoSeconds(t, 2*time.Second)
	clk.Advance(time.Second) // second 0 leaves the window
	b.Refund(old)
	if _, ret := b.Counts(); ret != 1 {
		t.Fatalf("%d retries counted, want second 1's only", ret)
	}
	// Long after, when the bucket of second 0 holds another second, the
	// token still names none.
	clk.Advance(10 * time.Second)
	if !withdraw(b) {
		t.Fatal("retry refused in a fresh window")
	}
	b.Refund(old)
	if _, ret := b.Counts(); ret != 1 {
		t.Fatalf("a stale token refunded a later second: %d retries counted", ret)
	}
}

func TestBudgetRefundAllocatesNothing(t *testing.T) {
	clk := NewManualClock(epoch)
	b := NewBudget(BudgetSettings{Ratio: 0, MinPerSecond: 1, Window: 10 * time.Second}, clk)
	if n := testing.AllocsPerRun(100, func() {
		tok, _ := b.TryWithdraw()
		b.Refund(tok)
	}); n != 0 {
		t.Fatalf("%v allocations per withdrawal and refund", n)
	}
}

// A budget that adopts new settings keeps the counts of the seconds the
// new window covers: a shorter window drops the older seconds, a longer
// one keeps them all, and the new ratio and floor judge from then on.
func TestBudgetAdoptKeepsWindowCounts(t *testing.T) {
	clk := NewManualClock(epoch)
	b := NewBudget(BudgetSettings{Ratio: 1, Window: 10 * time.Second}, clk)
	for sec := range 6 { // one request a second, a retry in the first and last
		b.Deposit()
		if sec == 0 || sec == 5 {
			withdraw(b)
		}
		if sec < 5 {
			clk.Advance(time.Second)
		}
	}
	b.adopt(BudgetSettings{Ratio: 1, Window: 3 * time.Second})
	if req, ret := b.Counts(); req != 3 || ret != 1 {
		t.Fatalf("after a 3s window: %d requests, %d retries; want the last 3 seconds' 3 and 1", req, ret)
	}
	b.adopt(BudgetSettings{Ratio: 0.5, Window: 20 * time.Second})
	if req, ret := b.Counts(); req != 3 || ret != 1 {
		t.Fatalf("after a 20s window: %d requests, %d retries; want 3 and 1 still", req, ret)
	}
	if withdraw(b) {
		t.Fatal("a second retry for 3 requests at ratio 0.5")
	}
	clk.Advance(2 * time.Second) // the two older seconds still count in a 20s window
	if req, _ := b.Counts(); req != 3 {
		t.Fatalf("2s later: %d requests, want 3", req)
	}
	for range 3 {
		b.Deposit()
	}
	if !withdraw(b) {
		t.Fatal("no retry for 6 requests and 1 retry at ratio 0.5")
	}
}

// The seconds a budget counts go on as they were after adopt changed its
// window, whatever was counted before: a retry withdrawn in the second of
// the change and refunded goes back, and what that second counted after
// the change still counts at the next one. Those seconds were left in no
// bucket of their own when nothing had been counted in them before the
// change, so a refund missed its bucket and a second adopt dropped them.
func TestBudgetAdoptKeepsCurrentSecond(t *testing.T) {
	for _, windows := range [][2]time.Duration{{10 * time.Second, 3 * time.Second}, {3 * time.Second, 7 * time.Second}} {
		for offset := range 3 { // where the second falls in the new window
			clk := NewManualClock(epoch.Add(time.Duration(offset) * time.Second))
			b := NewBudget(BudgetSettings{Ratio: 0, MinPerSecond: 1, Window: windows[0]}, clk)
			b.Deposit() // a second before the change
			clk.Advance(time.Second)
			b.adopt(BudgetSettings{Ratio: 0, MinPerSecond: 1, Window: windows[1]})
			tok, ok := b.TryWithdraw()
			if !ok {
				t.Fatalf("windows %v, offset %d: no retry in a second with none", windows, offset)
			}
			b.Refund(tok)
			if _, ret := b.Counts(); ret != 0 {
				t.Errorf("windows %v, offset %d: %d retries counted after the only one was refunded, want 0", windows, offset, ret)
				continue
			}
			if !withdraw(b) {
				t.Fatalf("windows %v, offset %d: the refunded retry did not go back to the floor", windows, offset)
			}
			b.Deposit()
			b.adopt(BudgetSettings{Ratio: 0, MinPerSecond: 1, Window: windows[0]})
			if req, ret := b.Counts(); req != 2 || ret != 1 {
				t.Errorf("windows %v, offset %d: after a second change, %d requests and %d retries; want 2 and 1", windows, offset, req, ret)
			}
		}
	}
}
