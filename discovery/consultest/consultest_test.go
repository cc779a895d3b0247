package consultest

import (
	"testing"

	"github.com/hashicorp/consul/api"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestAgentStartStopRestart(t *testing.T) {
	a := Start(t)
	c := a.Client()
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "x1", Name: "x", Port: 1234}); err != nil {
		t.Fatalf("register: %v", err)
	}
	svcs, err := c.Agent().Services()
	if err != nil || svcs["x1"] == nil {
		t.Fatalf("services = %v, %v", svcs, err)
	}
	a.Stop()
	if a.Running() {
		t.Fatal("running after Stop")
	}
	if _, err := c.Agent().Services(); err == nil {
		t.Fatal("agent still answers after Stop")
	}
	a.Restart()
	svcs, err = c.Agent().Services()
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if svcs["x1"] != nil {
		t.Fatal("a -dev agent kept a registration across restart")
	}
	if a.HTTPAddr == "" || a.HTTPPort == 0 {
		t.Fatal("no address")
	}
}
