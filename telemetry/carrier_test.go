package telemetry

import (
	"context"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/contrib/propagators/autoprop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// headerCarrier reads and writes what propagation.HeaderCarrier does, for
// every propagator ferry can be configured with.
func TestHeaderCarrierAsHeaderCarrier(t *testing.T) {
	prop, err := autoprop.TextMapPropagator("tracecontext", "baggage", "b3", "b3multi", "jaeger")
	if err != nil {
		t.Fatal(err)
	}
	in := http.Header{
		"Traceparent":   {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"Tracestate":    {"congo=t61rcWkgMzE"},
		"Baggage":       {"a=1,b=2", "c=3"},
		"B3":            {"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"},
		"Uber-Trace-Id": {"4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1"},
		"X-Other":       {"x"},
	}
	mine := prop.Extract(context.Background(), headerCarrier{in})
	ref := prop.Extract(context.Background(), propagation.HeaderCarrier(in))
	if !trace.SpanContextFromContext(mine).Equal(trace.SpanContextFromContext(ref)) || !trace.SpanContextFromContext(ref).IsValid() {
		t.Fatalf("span context %v; HeaderCarrier reads %v", trace.SpanContextFromContext(mine), trace.SpanContextFromContext(ref))
	}
	a, b := http.Header{}, http.Header{}
	prop.Inject(mine, headerCarrier{a})
	prop.Inject(ref, propagation.HeaderCarrier(b))
	// Baggage members come out in map order: compare them as sets.
	for _, h := range []http.Header{a, b} {
		members := strings.Split(h.Get("Baggage"), ",")
		slices.Sort(members)
		h.Set("Baggage", strings.Join(members, ","))
	}
	if !reflect.DeepEqual(a, b) || len(a) == 0 {
		t.Fatalf("injected %v; HeaderCarrier writes %v", a, b)
	}
	// A field outside the map still reads canonically; Keys is lower case.
	c := headerCarrier{http.Header{"X-Custom": {"v"}}}
	if c.Get("x-custom") != "v" || !slices.Equal(c.Keys(), []string{"x-custom"}) || c.Values("X-CUSTOM")[0] != "v" {
		t.Fatalf("get %q, keys %v", c.Get("x-custom"), c.Keys())
	}
}
