package discovery

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNextWaitIndex(t *testing.T) {
	for _, tc := range []struct {
		name      string
		prev, got uint64
		next      uint64
		fresh     bool
	}{
		{"first answer", 0, 10, 10, true},
		{"timeout", 10, 10, 10, false},
		{"change", 10, 12, 12, true},
		{"backwards resets", 100, 5, 5, true},
		{"zero is never waited on", 10, 0, 1, true},
		{"zero on first answer", 0, 0, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next, fresh := nextWaitIndex(tc.prev, tc.got)
			if next != tc.next || fresh != tc.fresh {
				t.Fatalf("nextWaitIndex(%d, %d) = %d, %t; want %d, %t", tc.prev, tc.got, next, fresh, tc.next, tc.fresh)
			}
		})
	}
}

// scripted is one answer of the fake Consul.
type scripted struct {
	index       uint64
	lastContact time.Duration
	entries     []*consulServiceEntry
	err         error
}

// call is what the watch sent, and the snapshot it held when it sent it
// (which reflects every earlier answer: the loop is sequential).
type call struct {
	waitIndex  uint64
	allowStale bool
	waitTime   time.Duration
	tags       []string
	dc         string
	snap       *Snapshot
}

type fakeConsul struct {
	mu      sync.Mutex
	script  []scripted
	calls   []call
	sleeps  []time.Duration
	drained chan struct{}
}

func newFakeConsul(script ...scripted) *fakeConsul {
	return &fakeConsul{script: script, drained: make(chan struct{})}
}

func (f *fakeConsul) watch(svc *Service) *watch {
	return &watch{
		svc:        svc,
		service:    svc.Name(),
		tags:       []string{"v2"},
		datacenter: "dc9",
		query: func(ctx context.Context, _ string, tags []string, q *consulQuery) ([]*consulServiceEntry, *consulQueryMeta, error) {
			f.mu.Lock()
			f.calls = append(f.calls, call{q.WaitIndex, q.AllowStale, q.WaitTime, tags, q.Datacenter, svc.Snapshot()})
			if len(f.script) == 0 {
				f.mu.Unlock()
				close(f.drained)
				<-ctx.Done()
				return nil, nil, ctx.Err()
			}
			s := f.script[0]
			f.script = f.script[1:]
			f.mu.Unlock()
			if s.err != nil {
				return nil, nil, s.err
			}
			return s.entries, &consulQueryMeta{LastIndex: s.index, LastContact: s.lastContact}, nil
		},
		waitTime: 7 * time.Second,
		maxStale: 2 * time.Second,
		backoff:  func(attempt int) time.Duration { return time.Duration(attempt) * time.Second },
		sleep: func(ctx context.Context, d time.Duration) error {
			f.mu.Lock()
			f.sleeps = append(f.sleeps, d)
			f.mu.Unlock()
			return ctx.Err()
		},
		now:   func() time.Time { return time.Unix(1000, 0).Add(time.Duration(len(f.calls)) * time.Second) },
		scrub: func(s string) string { return scrubToken(s, "tok-123") },
		log:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// run drives the watch through the whole script and stops it.
func (f *fakeConsul) run(t *testing.T, w *watch) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(ctx)
	}()
	select {
	case <-f.drained:
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not consume the script")
	}
	cancel()
	<-done
}

func entry(addr string, port int, nodeAddr string, weight int, tags ...string) *consulServiceEntry {
	return &consulServiceEntry{
		Node:    &consulNode{Node: "node-" + nodeAddr, Address: nodeAddr},
		Service: &consulService{Address: addr, Port: port, Weights: consulWeights{Passing: weight}, Tags: tags},
	}
}

func addrs(s *Snapshot) string {
	var b []string
	for _, e := range s.Endpoints {
		b = append(b, e.Addr)
	}
	return strings.Join(b, ",")
}

func TestWatchIndexLoop(t *testing.T) {
	two := []*consulServiceEntry{entry("10.0.0.2", 80, "n", 1), entry("10.0.0.1", 80, "n", 3, "v2")}
	three := append([]*consulServiceEntry{entry("", 81, "10.0.0.9", 0)}, two...)
	boom := errors.New("dial tcp 127.0.0.1:8500: connection refused token=tok-123")
	f := newFakeConsul(
		scripted{index: 10, entries: two},                              // 0: first answer
		scripted{index: 10, entries: two},                              // 1: timeout
		scripted{index: 12, entries: two},                              // 2: new index, same endpoints: dropped
		scripted{index: 13, entries: three},                            // 3: change
		scripted{err: boom},                                            // 4: Consul down: stale
		scripted{err: boom},                                            // 5: still down: nothing new
		scripted{index: 5, entries: three},                             // 6: back, index went backwards
		scripted{index: 6, lastContact: 3 * time.Second, entries: two}, // 7: too stale: ask the leader
		scripted{index: 6, entries: two},                               // 8: leader's answer
		scripted{index: 0, entries: two},                               // 9: index 0: wait on 1 next
	)
	svc := NewService("api", "consul")
	w := f.watch(svc)
	f.run(t, w)

	wantWait := []uint64{0, 10, 10, 12, 13, 0, 0, 5, 5, 6, 1}
	if len(f.calls) != len(wantWait) {
		t.Fatalf("%d queries, want %d", len(f.calls), len(wantWait))
	}
	for i, want := range wantWait {
		if got := f.calls[i].waitIndex; got != want {
			t.Errorf("query %d WaitIndex = %d, want %d", i, got, want)
		}
		if c := f.calls[i]; c.waitTime != 7*time.Second || c.dc != "dc9" || strings.Join(c.tags, ",") != "v2" {
			t.Errorf("query %d options = %+v", i, c)
		}
	}
	for i, c := range f.calls {
		if want := i != 8; c.allowStale != want {
			t.Errorf("query %d AllowStale = %t, want %t", i, c.allowStale, want)
		}
	}
	if s := f.calls[0].snap; s.Ready || s.Err != "" {
		t.Fatalf("before the first answer: %+v", s)
	}
	s1 := f.calls[1].snap
	if !s1.Ready || s1.Stale || s1.Index != 10 || addrs(s1) != "10.0.0.1:80,10.0.0.2:80" {
		t.Fatalf("after first answer: %+v", s1)
	}
	if s1.Endpoints[0].Weight != 3 || s1.Endpoints[1].Weight != 1 || strings.Join(s1.Endpoints[0].Tags, ",") != "v2" {
		t.Fatalf("weights/tags not carried: %+v", s1.Endpoints)
	}
	if f.calls[2].snap != s1 || f.calls[3].snap != s1 {
		t.Fatal("timeout or unchanged answer published a new snapshot")
	}
	s4 := f.calls[4].snap
	if s4.Index != 13 || addrs(s4) != "10.0.0.1:80,10.0.0.2:80,10.0.0.9:81" || s4.Endpoints[2].Weight != 1 {
		t.Fatalf("after change: %+v", s4)
	}
	s5 := f.calls[5].snap
	if !s5.Ready || !s5.Stale || addrs(s5) != addrs(s4) || s5.Index != 13 || s5.Updated != s4.Updated {
		t.Fatalf("after error: %+v", s5)
	}
	if !strings.Contains(s5.Err, "connection refused") || strings.Contains(s5.Err, "tok-123") {
		t.Fatalf("stale error %q: want the cause without the token", s5.Err)
	}
	if f.calls[6].snap != s5 {
		t.Fatal("a repeated error published again")
	}
	s7 := f.calls[7].snap
	if !s7.Ready || s7.Stale || s7.Err != "" || s7.Index != 5 || addrs(s7) != addrs(s4) || s7.Updated != s4.Updated {
		t.Fatalf("after recovery: %+v (updated %v, want %v)", s7, s7.Updated, s4.Updated)
	}
	if f.calls[8].snap != s7 {
		t.Fatal("an answer older than max_stale was used")
	}
	if s9 := f.calls[9].snap; s9.Index != 6 || addrs(s9) != addrs(s1) {
		t.Fatalf("after the leader's answer: %+v", s9)
	}
	if want := []time.Duration{time.Second, 2 * time.Second}; len(f.sleeps) != 2 || f.sleeps[0] != want[0] || f.sleeps[1] != want[1] {
		t.Fatalf("backoff sleeps = %v, want %v", f.sleeps, want)
	}
	if q, e, r := w.stats.queries.Load(), w.stats.errors.Load(), w.stats.staleRetries.Load(); q != 11 || e != 2 || r != 1 {
		t.Fatalf("stats queries=%d errors=%d staleRetries=%d", q, e, r)
	}
}

func TestWatchNotReadyUntilFirstAnswer(t *testing.T) {
	f := newFakeConsul(
		scripted{err: errors.New("connection refused")},
		scripted{err: errors.New("connection refused")},
		scripted{index: 3},
	)
	svc := NewService("api", "consul")
	f.run(t, f.watch(svc))
	if s := f.calls[1].snap; s.Ready || s.Stale || !strings.Contains(s.Err, `consul watch "api": connection refused`) {
		t.Fatalf("while Consul is down at start: %+v", s)
	}
	if s := f.calls[3].snap; !s.Ready || s.Stale || s.Err != "" || len(s.Endpoints) != 0 {
		t.Fatalf("after an empty first answer: %+v", s)
	}
}

func TestEndpointsOfNeverUsesNodeName(t *testing.T) {
	eps := endpointsOf([]*consulServiceEntry{
		{Node: &consulNode{Node: "web-7", Address: "192.0.2.7"}, Service: &consulService{Port: 9000}},
		{Node: &consulNode{Node: "web-8", Address: "192.0.2.8"}, Service: &consulService{Address: "2001:db8::1", Port: 9000}},
		{Node: &consulNode{Node: "web-9"}, Service: &consulService{Port: 9000}}, // nothing to dial
		{Node: &consulNode{Node: "web-10", Address: "192.0.2.10"}, Service: &consulService{}},
		// Consul takes any string as an address; these fail every dial.
		{Node: &consulNode{Node: "web-11"}, Service: &consulService{Address: "user@192.0.2.11", Port: 9000}},
		{Node: &consulNode{Node: "web-12"}, Service: &consulService{Address: "a b", Port: 9000}},
		{Node: &consulNode{Node: "web-13", Address: "caf\u00e9"}, Service: &consulService{Port: 9000}},
		nil,
	})
	if got := addrs(&Snapshot{Endpoints: eps}); got != "192.0.2.7:9000,[2001:db8::1]:9000" {
		t.Fatalf("endpoints = %q", got)
	}
}

// One instance address written two ways is one endpoint, in the form Go
// dials: Consul keeps the address as it was registered, and without this
// "::1" and "0:0::1" (or "APP.internal" and "app.internal") were two
// endpoints, each with its own breaker and share of requests.
func TestEndpointsOfOneAddressWrittenTwoWays(t *testing.T) {
	eps := endpointsOf([]*consulServiceEntry{
		{Node: &consulNode{Node: "a"}, Service: &consulService{Address: "::1", Port: 8002, Weights: consulWeights{Passing: 3}}},
		{Node: &consulNode{Node: "a"}, Service: &consulService{Address: "0:0::1", Port: 8002}},
		{Node: &consulNode{Node: "b"}, Service: &consulService{Address: "::ffff:192.0.2.7", Port: 9000}},
		{Node: &consulNode{Node: "b"}, Service: &consulService{Address: "192.0.2.7", Port: 9000}},
		{Node: &consulNode{Node: "c"}, Service: &consulService{Address: "APP.internal", Port: 80}},
		{Node: &consulNode{Node: "c"}, Service: &consulService{Address: "app.internal", Port: 80}},
	})
	if got := addrs(&Snapshot{Endpoints: eps}); got != "192.0.2.7:9000,[::1]:8002,app.internal:80" {
		t.Fatalf("endpoints = %q", got)
	}
	if eps[1].Weight != 3 {
		t.Fatalf("[::1]:8002 has weight %d, want the first instance's 3", eps[1].Weight)
	}
}

func TestJitterBackoffBounded(t *testing.T) {
	b := JitterBackoff(100*time.Millisecond, time.Second)
	for attempt := 1; attempt < 50; attempt++ {
		step := 100 * time.Millisecond << min(attempt-1, 10)
		if step > time.Second {
			step = time.Second
		}
		for range 20 {
			d := b(attempt)
			if d < step/2 || d > step {
				t.Fatalf("attempt %d: %s outside [%s, %s]", attempt, d, step/2, step)
			}
		}
	}
}

// Answers that come at once are paced (Consul asks clients of blocking
// queries to rate-limit them): a server answering without waiting, on an
// index that does not advance or on index 0, and a service whose endpoints
// change on every answer, make the watch wait out pace from the start of
// one query to the next, never query in a tight loop. The fake clock makes
// every answer take one second.
func TestWatchPacesQuickAnswers(t *testing.T) {
	a := []*consulServiceEntry{entry("10.0.0.1", 80, "n", 1)}
	b := []*consulServiceEntry{entry("10.0.0.1", 80, "n", 1), entry("10.0.0.2", 80, "n", 1)}
	for _, tc := range []struct {
		name  string
		index func(i int) uint64
	}{
		{"index that does not advance", func(int) uint64 { return 10 }},
		{"index 0", func(int) uint64 { return 0 }},
		{"endpoints changing on every answer", func(i int) uint64 { return uint64(10 + i) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var script []scripted
			for i := range 20 {
				e := a
				if i%2 == 1 {
					e = b
				}
				script = append(script, scripted{index: tc.index(i), entries: e})
			}
			f := newFakeConsul(script...)
			w := f.watch(NewService("api", "consul"))
			w.pace = 3 * time.Second
			f.run(t, w)
			if len(f.sleeps) != len(script) {
				t.Fatalf("%d answers, %d pauses (%v); want a pause after each", len(script), len(f.sleeps), f.sleeps)
			}
			for _, d := range f.sleeps {
				if d != 2*time.Second {
					t.Fatalf("pauses %v; want 2s each (pace 3s, answers taking 1s)", f.sleeps)
				}
			}
		})
	}
}

// A cluster without a leader: stale reads come back older than max_stale
// (dropped, and asked again of the leader) and the leader's read fails.
// The dropped answer is no success: the backoff between the failures keeps
// growing instead of starting over at its first step every time.
func TestWatchBacksOffWhileOnlyTooStaleAnswersCome(t *testing.T) {
	noLeader := errors.New("Unexpected response code: 500 (No cluster leader)")
	var script []scripted
	for range 5 {
		script = append(script,
			scripted{index: 10, lastContact: time.Hour, entries: []*consulServiceEntry{entry("10.0.0.1", 80, "n", 1)}},
			scripted{err: noLeader})
	}
	f := newFakeConsul(script...)
	w := f.watch(NewService("api", "consul"))
	f.run(t, w)
	var backoffs []time.Duration
	for _, d := range f.sleeps {
		if d >= time.Second { // the fake backoff; pacing pauses are shorter
			backoffs = append(backoffs, d)
		}
	}
	want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second, 5 * time.Second}
	if !slices.Equal(backoffs, want) {
		t.Fatalf("backoff after each failed leader read = %v, want %v", backoffs, want)
	}
}

// resetConsul is a Consul whose state was reset: after its first answer
// (one instance, index 100) and one failed query, it lists no instance,
// at index 5, for good. A blocking query on the current index is answered
// once its wait is over; the watch's clock moves with the waits and the
// sleeps, so the loop runs as it would in time.
type resetConsul struct {
	clock   time.Time
	limit   time.Time // the query after this blocks until the watch ends
	queries int
	emptied time.Time // when the watch published an empty set
	done    chan struct{}
}

func (f *resetConsul) watch(svc *Service, wait, hold time.Duration) *watch {
	return &watch{
		svc:     svc,
		service: svc.Name(),
		query: func(ctx context.Context, _ string, _ []string, q *consulQuery) ([]*consulServiceEntry, *consulQueryMeta, error) {
			if s := svc.Snapshot(); s.Ready && len(s.Endpoints) == 0 && f.emptied.IsZero() {
				f.emptied = f.clock
			}
			f.queries++
			if f.clock.After(f.limit) || !f.emptied.IsZero() {
				close(f.done)
				<-ctx.Done()
				return nil, nil, ctx.Err()
			}
			switch f.queries {
			case 1:
				return []*consulServiceEntry{entry("10.0.0.1", 80, "n", 1)}, &consulQueryMeta{LastIndex: 100}, nil
			case 2:
				return nil, nil, errors.New("connection refused")
			}
			if q.WaitIndex == 5 {
				f.clock = f.clock.Add(q.WaitTime) // nothing changes: the wait runs out
			}
			return nil, &consulQueryMeta{LastIndex: 5}, nil
		},
		waitTime:  wait,
		maxStale:  time.Hour,
		resetHold: hold,
		backoff:   func(int) time.Duration { return time.Second },
		pace:      minQueryInterval,
		sleep: func(ctx context.Context, d time.Duration) error {
			f.clock = f.clock.Add(d)
			return ctx.Err()
		},
		now:   func() time.Time { return f.clock },
		scrub: func(s string) string { return s },
		log:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// The hold after a state reset lasts indexResetHold, not until the first
// blocking query that ends after it: with a wait_time longer than what is
// left of the hold, a genuinely empty service was still served its old
// endpoints a whole wait_time later (wait_time may be up to 10m).
func TestConsulStateResetHoldEndsOnTime(t *testing.T) {
	for _, wait := range []time.Duration{90 * time.Second, 10 * time.Minute} {
		t.Run(wait.String(), func(t *testing.T) {
			const hold = 2 * time.Minute
			f := &resetConsul{clock: time.Unix(1000, 0), done: make(chan struct{})}
			f.limit = f.clock.Add(time.Hour)
			w := f.watch(NewService("api", "consul"), wait, hold)
			runUntil(t, w, f.done)
			if f.emptied.IsZero() {
				t.Fatal("the service was never emptied")
			}
			// The reset was seen one backoff (1s) after the failure at 1000.
			resetAt := time.Unix(1001, 0)
			if late := f.emptied.Sub(resetAt.Add(hold)); late > 5*time.Second {
				t.Fatalf("empty service published %s after the reset: %s past the %s hold", f.emptied.Sub(resetAt), late, hold)
			}
		})
	}
}

// While a hold serves the last endpoints after a state reset, the snapshot
// ages from Consul's last confirmation of them (failing, with the last
// contact before the reset): an answer held back confirms nothing. The age
// fell back to 0 on every held answer, once per wait_time, and read 0 while
// the re-ask of an emptying answer was out.
func TestConsulStateResetHoldAges(t *testing.T) {
	f := &resetConsul{clock: time.Unix(1000, 0), done: make(chan struct{})}
	f.limit = f.clock.Add(90 * time.Second) // inside the hold
	svc := NewService("api", "consul")
	w := f.watch(svc, 20*time.Second, 2*time.Minute)
	query := w.query
	type seen struct {
		failing bool
		contact time.Time
	}
	var held []seen
	w.query = func(ctx context.Context, name string, tags []string, q *consulQuery) ([]*consulServiceEntry, *consulQueryMeta, error) {
		if s := svc.Snapshot(); s.Stale && strings.Contains(s.Err, "went backwards") {
			held = append(held, seen{w.stats.failing.Load(), time.Unix(0, w.stats.lastContact.Load())})
		}
		return query(ctx, name, tags, q)
	}
	runUntil(t, w, f.done)
	if len(held) < 4 {
		t.Fatalf("%d queries during the hold; want several", len(held))
	}
	for i, s := range held {
		if !s.failing || !s.contact.Equal(time.Unix(1000, 0)) {
			t.Fatalf("query %d of the hold: failing %t, last contact %v; want failing since the last confirmation at %v (all: %+v)", i, s.failing, s.contact, time.Unix(1000, 0), held)
		}
	}
}

// runUntil runs w until done is closed (at most 10 s), then stops it and
// waits for its loop to return.
func runUntil(t *testing.T, w *watch, done <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); w.run(ctx) }()
	defer func() { cancel(); <-stopped }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not finish")
	}
}
