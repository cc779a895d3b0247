package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/ferrymesh/ferry/discovery/consultest"
)

// records is a slog handler that keeps every record, with its attributes
// as strings.
type records struct {
	mu   sync.Mutex
	list []map[string]string
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *records) WithGroup(string) slog.Handler            { return r }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	m := map[string]string{"level": rec.Level.String(), "msg": rec.Message}
	rec.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	r.mu.Lock()
	r.list = append(r.list, m)
	r.mu.Unlock()
	return nil
}

// leftOut returns the warnings naming an instance left out.
func (r *records) leftOut() []map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]string
	for _, m := range r.list {
		if m["level"] == "WARN" && m["instance"] != "" {
			out = append(out, m)
		}
	}
	return out
}

// runLogged runs a watch of service "api" on f's answers with its log kept.
func runLogged(t *testing.T, f *fakeConsul) (*watch, *records) {
	rec := &records{}
	w := f.watch(NewService("api", "consul"))
	w.log = slog.New(rec)
	f.run(t, w)
	return w, rec
}

// answer decodes a health answer as the client does.
func answer(t *testing.T, text string) []*consulServiceEntry {
	t.Helper()
	var entries []*consulServiceEntry
	if err := json.Unmarshal([]byte(text), &entries); err != nil {
		t.Fatal(err)
	}
	return entries
}

// An instance ferry leaves out of the routing table (no address, one no
// dial can use, a port outside 1-65535) is named in a warning with the
// service, its ID, its node and the reason, once: not again on every
// answer that still lists it the same way, again when its reason changes
// or when it leaves the answer and comes back. It was dropped without a
// word, so an operator could not tell why an instance got no traffic.
func TestConsulLeftOutInstancesLogged(t *testing.T) {
	const good = `{"Node":{"Node":"n1","Address":"192.0.2.1"},"Service":{"ID":"api-1","Port":80}}`
	const good2 = `{"Node":{"Node":"n4","Address":"192.0.2.4"},"Service":{"ID":"api-4","Port":80}}`
	portZero := `{"Node":{"Node":"n2","Address":"192.0.2.2"},"Service":{"ID":"api-2","Port":0}}`
	portHigh := `{"Node":{"Node":"n2","Address":"192.0.2.2"},"Service":{"ID":"api-2","Port":70000}}`
	bracketed := `{"Node":{"Node":"n3","Address":"192.0.2.3"},"Service":{"ID":"api-3","Address":"[::6]","Port":80}}`
	noAddr := `{"Node":{"Node":"n5"},"Service":{"ID":"api-5","Port":80}}`
	list := func(e ...string) []*consulServiceEntry { return answer(t, "["+strings.Join(e, ",")+"]") }
	f := newFakeConsul(
		scripted{index: 10, entries: list(good, portZero, bracketed, noAddr)},        // 0: three left out: three warnings
		scripted{index: 10, entries: list(good, portZero, bracketed, noAddr)},        // 1: timeout: nothing
		scripted{index: 11, entries: list(good, good2, portZero, bracketed, noAddr)}, // 2: another instance: nothing new
		scripted{index: 12, entries: list(good, good2, portHigh, bracketed, noAddr)}, // 3: api-2's reason changed
		scripted{index: 13, entries: list(good, good2, bracketed, noAddr)},           // 4: api-2 gone
		scripted{index: 14, entries: list(good, good2, portHigh, bracketed, noAddr)}, // 5: api-2 back: again
	)
	w, rec := runLogged(t, f)

	if got := addrs(w.svc.Snapshot()); got != "192.0.2.1:80,192.0.2.4:80" {
		t.Fatalf("endpoints %q", got)
	}
	var got []string
	for _, m := range rec.leftOut() {
		if m["service"] != "api" || m["node"] == "" || m["reason"] == "" {
			t.Errorf("warning without the service, node or reason: %v", m)
		}
		got = append(got, fmt.Sprintf("%s@%s: %s", m["instance"], m["node"], m["reason"]))
	}
	want := []string{
		"api-2@n2: port 0 is outside 1-65535",
		`api-3@n3: address "[::6]" (the instance's own) cannot be dialled`,
		"api-5@n5: no address: neither the instance nor its node has one",
		"api-2@n2: port 70000 is outside 1-65535",
		"api-2@n2: port 70000 is outside 1-65535",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("left-out warnings:\n%s\nwant:\n%s\nall records: %v", strings.Join(got, "\n"), strings.Join(want, "\n"), rec.list)
	}
}

// A reload's watch of the same service starts from what the one it
// replaces learnt: an instance that one already named is not named again
// for the same reason; one whose reason changed is.
func TestConsulLeftOutNotRepeatedAcrossReload(t *testing.T) {
	portZero := `{"Node":{"Node":"n2","Address":"192.0.2.2"},"Service":{"ID":"api-2","Port":0}}`
	noAddr := `{"Node":{"Node":"n5"},"Service":{"ID":"api-5","Port":80}}`
	noAddrPortZero := `{"Node":{"Node":"n5"},"Service":{"ID":"api-5","Port":0}}`
	good := `{"Node":{"Node":"n1","Address":"192.0.2.1"},"Service":{"ID":"api-1","Port":80}}`
	first := newFakeConsul(scripted{index: 10, entries: answer(t, "["+good+","+portZero+","+noAddr+"]")})
	old := first.watch(NewService("api", "consul"))
	old.log = slog.New(&records{})
	first.run(t, old)
	m := old.mem.Load()

	second := newFakeConsul(scripted{index: 10, entries: answer(t, "["+good+","+portZero+","+noAddrPortZero+"]")})
	rec := &records{}
	w := second.watch(NewService("api", "consul"))
	w.log = slog.New(rec)
	w.inherit(&watchMemory{seen: m.seen, resetAt: m.resetAt, last: old.svc.Snapshot(), leftOut: m.leftOut})
	second.run(t, w)
	got := rec.leftOut()
	if len(got) != 1 || got[0]["instance"] != "api-5" || got[0]["reason"] != "no address: neither the instance nor its node has one; port 0 is outside 1-65535" {
		t.Fatalf("after the reload: %v; want only api-5, whose reason changed", got)
	}
}

// An answer that leaves out more instances than maxLeftOutWarnings names
// that many one by one and counts the rest in one line, by reason with one
// instance of each; the next answer listing them the same way names none.
func TestConsulLeftOutWarningsCapped(t *testing.T) {
	var e []string
	for i := range 25 {
		port := 0
		if i%5 == 0 {
			port = 70000
		}
		e = append(e, fmt.Sprintf(`{"Node":{"Node":"n%d","Address":"192.0.2.%d"},"Service":{"ID":"api-%d","Port":%d}}`, i, i+1, i, port))
	}
	e = append(e, `{"Node":{"Node":"ok","Address":"192.0.2.200"},"Service":{"ID":"api-ok","Port":80}}`)
	list := answer(t, "["+strings.Join(e, ",")+"]")
	f := newFakeConsul(scripted{index: 10, entries: list}, scripted{index: 11, entries: list})
	w, rec := runLogged(t, f)
	if got := addrs(w.svc.Snapshot()); got != "192.0.2.200:80" {
		t.Fatalf("endpoints %q", got)
	}
	if got := rec.leftOut(); len(got) != maxLeftOutWarnings {
		t.Fatalf("%d instances named one by one, want %d: %v", len(got), maxLeftOutWarnings, got)
	}
	var summaries []map[string]string
	rec.mu.Lock()
	for _, m := range rec.list {
		if m["not_named"] != "" {
			summaries = append(summaries, m)
		}
	}
	rec.mu.Unlock()
	// 25 left out, 10 named: api-10..api-24 remain, api-10, 15 and 20 on
	// port 70000.
	want := "12: port 0 is outside 1-65535 (e.g. api-11@n11); 3: port 70000 is outside 1-65535 (e.g. api-10@n10)"
	if len(summaries) != 1 || summaries[0]["not_named"] != "15" || summaries[0]["reasons"] != want || summaries[0]["service"] != "api" || summaries[0]["level"] != "WARN" {
		t.Fatalf("summaries %v; want one WARN with not_named 15 and reasons %q", summaries, want)
	}
}

// Against a real agent: instances Consul accepts but no dial could reach
// (a port of 0, an address with brackets, one with a port in it) are
// each named once, with their ID and node, while the answers that follow
// other changes to the service do not name them again.
func TestConsulLeftOutInstancesLoggedByAgent(t *testing.T) {
	agent := consultest.Start(t)
	cc := agent.Client()
	for _, s := range []*api.AgentService{
		{ID: "good-1", Service: "web", Address: "127.0.0.5", Port: 8001},
		{ID: "port-zero", Service: "web", Address: "127.0.0.6", Port: 0},
		{ID: "bracketed", Service: "web", Address: "[::6]", Port: 8002},
		{ID: "with-port", Service: "web", Address: "127.0.0.7:9999", Port: 8003},
	} {
		if _, err := cc.Catalog().Register(&api.CatalogRegistration{Node: "web-node", Address: "127.0.0.42", Service: s}, nil); err != nil {
			t.Fatalf("register %s: %v", s.ID, err)
		}
	}
	rec := &records{}
	c, err := NewConsul(context.Background(), ConsulConfig{Address: agent.HTTPAddr, WaitTime: 10 * time.Second}, ConsulOptions{Logger: slog.New(rec)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	svc, _ := c.Service("web")
	waitSnapshot(t, svc, 10*time.Second, "web at good-1", hasAddrs("127.0.0.5:8001"))
	// Two more answers, each after a change to the service.
	for i, port := range []int{8004, 8005} {
		id := fmt.Sprintf("good-%d", i+2)
		if _, err := cc.Catalog().Register(&api.CatalogRegistration{Node: "web-node", Address: "127.0.0.42", Service: &api.AgentService{ID: id, Service: "web", Address: "127.0.0.5", Port: port}}, nil); err != nil {
			t.Fatalf("register %s: %v", id, err)
		}
		want := []string{"127.0.0.5:8001", "127.0.0.5:8004", "127.0.0.5:8005"}[:i+2]
		waitSnapshot(t, svc, 10*time.Second, "web with "+id, hasAddrs(want...))
	}
	got := map[string]string{}
	for _, m := range rec.leftOut() {
		if _, twice := got[m["instance"]]; twice {
			t.Errorf("%s named twice: %v", m["instance"], rec.leftOut())
		}
		if m["node"] != "web-node" || m["service"] != "web" {
			t.Errorf("warning without the node or service: %v", m)
		}
		got[m["instance"]] = m["reason"]
	}
	want := map[string]string{
		"port-zero": "port 0 is outside 1-65535",
		"bracketed": `address "[::6]" (the instance's own) cannot be dialled`,
		"with-port": `address "127.0.0.7:9999" (the instance's own) cannot be dialled`,
	}
	if !maps.Equal(got, want) {
		t.Fatalf("left-out warnings %v, want %v", got, want)
	}
}
