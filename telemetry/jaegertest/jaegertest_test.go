package jaegertest

import (
	"testing"
)

func TestStartAndQueryEmpty(t *testing.T) {
	j := Start(t)
	traces, err := j.Traces(t.Context(), "nobody")
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	if len(traces) != 0 {
		t.Fatalf("%d traces for an unknown service", len(traces))
	}
}
