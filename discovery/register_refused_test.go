package discovery

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/localnet/localnettest"
	"github.com/ferrymesh/ferry/internal/syncbuf"
)

// A registration whose connection to the agent was refused never reached
// it: Deregister has nothing to warn of. It warned 'consul registration
// sent before deregistering got no answer; the agent may still apply it,
// then its TTL check expires' on every drain of a ferry whose agent was
// down (connection refused), sending an operator to look for a
// registration the agent never saw.
func TestDeregisterAfterARefusedRegistrationWarnsOfNothing(t *testing.T) {
	var logged syncbuf.Buffer
	log := slog.New(slog.NewJSONHandler(&logged, nil))
	text := logged.String
	c, err := NewConsul(context.Background(), ConsulConfig{Address: localnettest.RefusedAddr(t)}, ConsulOptions{
		Logger: log, Backoff: func(int) time.Duration { return time.Hour },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	reg, err := c.NewRegistrar(Registration{Name: "self", ID: "self-1", Port: 7000, TTL: 3 * time.Second}, func() error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- reg.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-runDone })
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(text(), "consul registration failing") {
		if time.Now().After(deadline) {
			t.Fatalf("the refused registration was not logged within 10s:\n%s", text())
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not synchronising
	}
	if !strings.Contains(text(), "connection refused") {
		t.Fatalf("the registration failed otherwise than refused:\n%s", text())
	}
	if err := reg.Deregister(context.Background()); err == nil {
		t.Fatal("a deregistration from a refusing agent succeeded")
	}
	if out := text(); strings.Contains(out, "got no answer") {
		t.Fatalf("Deregister warned of a registration the agent never received:\n%s", out)
	}
}
