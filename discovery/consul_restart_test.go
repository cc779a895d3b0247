package discovery

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/discovery/consultest"
	"github.com/hashicorp/consul/api"
)

// An agent that restarts with its state reset (a -dev agent, a single
// server that lost its data) between two queries of a watch: the next
// blocking query carries the index the old agent gave, which is above
// anything the new one has, and Consul makes such a query wait out its
// whole wait before answering with its lower index. The watch was blind
// for a wait_time (60s by default) while taking itself for current. The
// restart is put between two queries by the watch's pace between them,
// with a real agent; the reset must be seen long before the 20s wait.
func TestConsulWatchSeesAgentRestartBetweenQueries(t *testing.T) {
	agent := consultest.Start(t)
	cc := agent.Client()
	for i := range 40 { // an index no fresh agent starts at
		registerTTL(t, cc, "api", "api-1", 9001, api.HealthPassing, fmt.Sprintf("v%d", i))
	}
	cl := testConsulClient(t, ConsulConfig{Address: agent.HTTPAddr})
	svc := NewService("api", "consul")
	var once sync.Once
	var lostBefore uint64
	w := &watch{
		svc:       svc,
		service:   "api",
		query:     cl.healthService,
		waitTime:  20 * time.Second,
		maxStale:  time.Hour,
		backoff:   func(int) time.Duration { return 50 * time.Millisecond },
		pace:      time.Hour, // every quick answer is followed by a call to sleep
		resetHold: time.Hour,
		sleep: func(ctx context.Context, d time.Duration) error {
			if d > time.Minute { // the pace after the first, quick, answer
				once.Do(func() {
					lostBefore = cl.connsLost()
					agent.Restart()
				})
			}
			return ctx.Err()
		},
		now:       time.Now,
		scrub:     func(s string) string { return s },
		log:       testLogger(),
		connsLost: cl.connsLost,
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); w.run(ctx) }()
	defer func() { cancel(); <-stopped }()

	first, _ := waitSnapshot(t, svc, 10*time.Second, "the first answer", hasAddrs("127.0.0.1:9001"))
	s, took := waitSnapshot(t, svc, 10*time.Second, "the reset seen after the restart", func(s *Snapshot) bool {
		return s.Stale && strings.Contains(s.Err, "went backwards")
	})
	if lostBefore != 0 {
		t.Fatalf("%d connections counted as closed by the agent before it restarted", lostBefore)
	}
	if idx := w.stats.lastIndex.Load(); idx >= first.Index {
		t.Fatalf("index %d after the restart, %d before", idx, first.Index)
	}
	t.Logf("reset seen %s after the first answer: %+v", took.Round(time.Millisecond), s)
}

// connsLost counts connections the agent closed, not the ones ferry closed
// itself (a query cut short, idle connections let go).
func TestConsulClientCountsConnectionsTheAgentClosed(t *testing.T) {
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("index") {
			select { // a blocking query
			case <-hang:
			case <-r.Context().Done():
			}
			return
		}
		w.Header().Set("X-Consul-Index", "3")
		io.WriteString(w, "[]")
	}))
	defer srv.Close()
	defer close(hang)
	cl := testConsulClient(t, ConsulConfig{Address: strings.TrimPrefix(srv.URL, "http://")})
	query := func(ctx context.Context, index uint64) error {
		_, _, err := cl.healthService(ctx, "api", nil, &consulQuery{WaitIndex: index})
		return err
	}
	if err := query(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := query(ctx, 3); err == nil {
		t.Fatal("the blocking query was answered")
	}
	cl.transport.CloseIdleConnections()
	if n := cl.connsLost(); n != 0 {
		t.Fatalf("%d connections counted as closed by the agent after ferry's own closes", n)
	}
	if err := query(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	srv.CloseClientConnections() // the agent goes away
	waitUntil(t, 5*time.Second, "the agent's close counted", func() bool { return cl.connsLost() == 1 })
}
