package sidecar

import (
	"encoding/json"
	"net"
	"net/http"
	"sort"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ferrymesh/ferry/discovery"
	"github.com/ferrymesh/ferry/resilience"
)

// adminWriteTimeout bounds how long the admin server takes to write one
// answer, from the end of its request's headers (http.Server's
// WriteTimeout; per stream over h2c, and a connection no byte could be
// written to for as long is closed): a client that stops reading is let
// go, its handler's goroutine and buffers freed, rather than held until
// shutdown. Every admin answer is made whole and written at once, none
// streams (there is no pprof or other long-running endpoint); the
// largest, /metrics, grows with the endpoints, and a Prometheus scrape
// gives up on it after 10s by default, a third of this. A variable for
// tests.
var adminWriteTimeout = 30 * time.Second

// adminHandler serves the operator endpoints:
//
//	/live       200 while the process runs
//	/ready      200 once every listener is up and every routed service had Consul's first
//	            answer; 503, saying why, before that and while draining
//	/upstreams  JSON: every service a route leads to, its source, staleness, Consul index, and each
//	            endpoint's breaker, ejection and in-flight state
//	/metrics    Prometheus text, or OpenMetrics with exemplars when asked
//	/config     the effective config as YAML, secrets redacted (loopback callers only)
//	/drain      POST: drain and exit, as on SIGTERM (loopback callers only)
//
// The listener may face the cluster (the injector puts it on 0.0.0.0 so
// kubelet can probe it): what ends the process or shows the config is for
// callers on the pod's own loopback (kubectl port-forward and exec arrive
// there); anyone else gets 403.
func (s *Sidecar) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("live\n"))
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if why := s.notReady(); why != "" {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("not ready: " + why + "\n"))
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /upstreams", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(s.upstreamsStatus(time.Now()))
	})
	mux.Handle("GET /metrics", s.tel.MetricsHandler())
	mux.HandleFunc("GET /config", loopbackOnly(func(w http.ResponseWriter, r *http.Request) {
		out, err := yaml.Marshal(s.config())
		if err != nil {
			http.Error(w, "ferry: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(out)
	}))
	mux.HandleFunc("POST /drain", loopbackOnly(func(w http.ResponseWriter, r *http.Request) {
		// The answer goes out before the drain is asked for: a drain with
		// nothing in flight closes the admin listener's connections at
		// once, this one included.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(drainAnswer)))
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(drainAnswer))
		http.NewResponseController(w).Flush()
		select {
		case s.drainReq <- struct{}{}:
		default: // already requested
		}
	}))
	return mux
}

// loopbackOnly serves h to callers from a loopback address and answers
// everyone else 403 with the reason.
func loopbackOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			http.Error(w, "ferry: "+r.URL.Path+" answers loopback callers only", http.StatusForbidden)
			return
		}
		h(w, r)
	}
}

// drainAnswer is the body of POST /drain's 202.
const drainAnswer = "draining\n"

// UpstreamStatus is one service in the admin /upstreams output.
type UpstreamStatus struct {
	Service string    `json:"service"`
	Source  string    `json:"source"`
	Ready   bool      `json:"ready"`
	Stale   bool      `json:"stale"`
	Error   string    `json:"error,omitempty"`
	Index   uint64    `json:"index,omitempty"`
	Updated time.Time `json:"updated,omitzero"`
	// AgeSec is how long the endpoints have gone unconfirmed by Consul,
	// as ferry_consul_snapshot_age_seconds: 0 while the watch waits on an
	// agent that answers (and for static endpoints), growing from the
	// last answer while queries fail. Updated is when the set last changed.
	AgeSec    float64                     `json:"snapshot_age_seconds"`
	InFlight  int64                       `json:"in_flight"`
	Endpoints []resilience.EndpointStatus `json:"endpoints"`
	Consul    *ConsulWatchStatus          `json:"consul,omitempty"`
}

// ConsulWatchStatus is the Consul watch behind a service.
type ConsulWatchStatus struct {
	Queries     uint64    `json:"queries"`
	Errors      uint64    `json:"errors"`
	LastIndex   uint64    `json:"last_index"`
	LastContact time.Time `json:"last_contact,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	Failing     bool      `json:"failing"`
}

func (s *Sidecar) upstreamsStatus(now time.Time) []UpstreamStatus {
	gen := s.state.Load()
	var stats map[string]discovery.ConsulServiceStats
	if gen.consul != nil {
		stats = map[string]discovery.ConsulServiceStats{}
		for _, st := range gen.consul.Stats() {
			stats[st.Name] = st
		}
	}
	out := make([]UpstreamStatus, 0, len(gen.upstreams))
	for name, up := range gen.upstreams {
		snap := up.svc.Snapshot()
		st := UpstreamStatus{
			Service: name, Source: up.svc.Source(), Ready: snap.Ready, Stale: snap.Stale,
			Error: snap.Err, Index: snap.Index, Updated: snap.Updated,
			InFlight: up.res.InFlight(), Endpoints: up.res.Status(),
		}
		if cs, ok := stats[name]; ok {
			st.Consul = &ConsulWatchStatus{Queries: cs.Queries, Errors: cs.Errors, LastIndex: cs.LastIndex, LastContact: cs.LastContact, LastError: cs.LastError, Failing: cs.Failing}
			if cs.Failing && !cs.LastContact.IsZero() {
				st.AgeSec = now.Sub(cs.LastContact).Seconds()
			}
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out
}
