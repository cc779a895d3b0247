package resilience

import (
	"math"
	"sync"
	"time"
)

// BudgetSettings configure the retry budget (Linkerd's model): retries may
// add at most Ratio of the requests seen over Window, plus a floor of
// MinPerSecond retries in any second so a quiet service can still retry.
// Under a full outage retries therefore add at most Ratio to the load
// instead of multiplying it.
type BudgetSettings struct {
	// Ratio is the share of recent requests that may be retried. Default
	// 0.2; 0 leaves only the floor.
	Ratio float64 `yaml:"ratio"`
	// MinPerSecond retries are allowed in every second whatever the
	// traffic. Default 10.
	MinPerSecond int `yaml:"min_per_second"`
	// Window is how far back requests are counted, in whole seconds.
	// Default 10s; between 1s and 300s.
	Window time.Duration `yaml:"window"`
}

// DefaultBudgetSettings returns the documented defaults.
func DefaultBudgetSettings() BudgetSettings {
	return BudgetSettings{Ratio: 0.2, MinPerSecond: 10, Window: 10 * time.Second}
}

func (b *BudgetSettings) validate(f *fieldErrors) {
	if !(b.Ratio >= 0 && b.Ratio <= 1) { // NaN too
		f.add("ratio", "must be in [0,1], got %v", b.Ratio)
	}
	if b.MinPerSecond < 0 {
		f.add("min_per_second", "must be >= 0, got %d", b.MinPerSecond)
	}
	if b.Window < time.Second || b.Window > 300*time.Second || b.Window%time.Second != 0 {
		f.add("window", "must be whole seconds between 1s and 300s, got %s", b.Window)
	}
}

// Budget tracks requests and retries over a sliding window of one-second
// buckets. It is safe for concurrent use; every call takes one short lock
// and never allocates.
type Budget struct {
	ratio    int64 // Ratio in millionths (see ratioPPM)
	floor    int64
	clock    Clock
	mu       sync.Mutex
	buckets  []budgetBucket
	requests int64 // sum over buckets
	retries  int64 // sum over buckets
	last     int64 // the newest second with a bucket
}

type budgetBucket struct {
	second   int64
	requests int64
	retries  int64
}

// NewBudget returns an empty budget. A nil clock means the wall clock.
func NewBudget(s BudgetSettings, clock Clock) *Budget {
	if clock == nil {
		clock = SystemClock{}
	}
	return &Budget{
		ratio:   ratioPPM(s.Ratio),
		floor:   int64(s.MinPerSecond),
		clock:   clock,
		buckets: make([]budgetBucket, windowSeconds(s)),
	}
}

// ratioPPM is a budget ratio in millionths. The budget compares retries
// with the ratio's share of requests in integers: in floating point a
// share such as 0.29 x 100 comes out just below 29 and cost a retry.
func ratioPPM(r float64) int64 { return int64(math.Round(r * 1e6)) }

// windowSeconds is the number of one-second buckets of s's window.
func windowSeconds(s BudgetSettings) int {
	return max(int(s.Window/time.Second), 1)
}

// adopt makes b judge by s from now on, keeping the requests and retries
// it counted in the seconds that s's window still covers: a reload that
// changes the budget's settings (or any other setting of the service)
// neither forgets the spend of the window so far nor starts a new one.
func (b *Budget) adopt(s BudgetSettings) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.current() // expire what left the window in force until now
	b.ratio, b.floor = ratioPPM(s.Ratio), int64(s.MinPerSecond)
	n := windowSeconds(s)
	if n == len(b.buckets) {
		return
	}
	old := b.buckets
	b.buckets = make([]budgetBucket, n)
	b.requests, b.retries = 0, 0
	// Each bucket is its second's, as currentAt and Refund take it, the
	// current one above all: one left unnamed (second 0) would count the
	// rest of this second where a refund looks in vain, and a later adopt
	// would drop it.
	for sec := b.last - int64(n) + 1; sec <= b.last; sec++ {
		b.buckets[uint64(sec)%uint64(n)].second = sec
	}
	for _, bk := range old {
		// A bucket with nothing counted may be one never used (second
		// 0): it must not take the place of one in the window.
		if bk.requests == 0 && bk.retries == 0 || bk.second <= b.last-int64(n) {
			continue
		}
		b.buckets[uint64(bk.second)%uint64(n)] = bk
		b.requests += bk.requests
		b.retries += bk.retries
	}
}

// current returns the bucket for the clock's current second, expiring the
// seconds that fell out of the window. A clock that steps back keeps using
// the latest bucket. The caller holds b.mu.
func (b *Budget) current() *budgetBucket {
	return b.currentAt(b.clock.Now().Unix())
}

func (b *Budget) currentAt(sec int64) *budgetBucket {
	n := int64(len(b.buckets))
	if sec > b.last {
		steps := min(sec-b.last, n)
		for s := sec - steps + 1; s <= sec; s++ {
			bk := &b.buckets[uint64(s)%uint64(n)]
			b.requests -= bk.requests
			b.retries -= bk.retries
			*bk = budgetBucket{second: s}
		}
		b.last = sec
	}
	return &b.buckets[uint64(b.last)%uint64(n)]
}

// Deposit counts one request (a first attempt).
func (b *Budget) Deposit() {
	b.mu.Lock()
	b.current().requests++
	b.requests++
	b.mu.Unlock()
}

// depositAt is Deposit at a clock reading the caller already has (UnixNano
// of the same clock).
func (b *Budget) depositAt(nanos int64) {
	sec := nanos / int64(time.Second)
	if nanos < 0 && nanos%int64(time.Second) != 0 {
		sec-- // floor, as time.Time.Unix does
	}
	b.mu.Lock()
	b.currentAt(sec).requests++
	b.requests++
	b.mu.Unlock()
}

// RetryToken names the one-second bucket a withdrawal was taken from, so
// that its refund goes back to that bucket. The zero RetryToken names none.
type RetryToken struct {
	second int64 // the bucket's second plus one
}

// TryWithdraw takes one retry from the budget; false means the budget is
// spent and the request must not be retried. The token is for Refund.
func (b *Budget) TryWithdraw() (RetryToken, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	bk := b.current()
	if bk.retries >= b.floor && (b.retries+1)*1e6 > b.ratio*b.requests {
		return RetryToken{}, false
	}
	bk.retries++
	b.retries++
	return RetryToken{second: bk.second + 1}, true
}

// Refund gives back a retry taken with TryWithdraw that did not happen
// (no endpoint was left to retry on, or the exchange ended during the
// backoff), to the second it was taken from; once that second has left
// the window the withdrawal no longer counts and the refund is dropped.
// Another second is never credited: that would let it retry beyond its
// share while the withdrawal's own second kept its spend.
func (b *Budget) Refund(t RetryToken) {
	if t.second == 0 {
		return
	}
	sec := t.second - 1
	b.mu.Lock()
	defer b.mu.Unlock()
	b.current()
	n := int64(len(b.buckets))
	if bk := &b.buckets[uint64(sec)%uint64(n)]; bk.second == sec && bk.retries > 0 {
		bk.retries--
		b.retries--
	}
}

// Counts returns the requests and retries counted in the window.
func (b *Budget) Counts() (requests, retries int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.current()
	return b.requests, b.retries
}
