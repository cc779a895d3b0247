package discovery

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/ferrymesh/ferry/discovery/consultest"
)

// The address ferry dials for each form an instance's address takes in a
// real agent's answer: the service's own (an IPv6 one, or a host name),
// else its node's (an IPv6 one too); tagged addresses are not dialled, as
// Consul's DNS answers a query in the local datacenter with the service
// address too. Strings no dial could use (a bracketed IPv6 address, one
// with a port) are left out.
func TestConsulAddressForms(t *testing.T) {
	agent := consultest.Start(t)
	cc := agent.Client()
	for _, reg := range []*api.CatalogRegistration{
		{Node: "v6-node", Address: "fd00::42", Service: &api.AgentService{ID: "node-v6", Service: "web", Port: 8001}},
		{Node: "v4-node", Address: "127.0.0.42", Service: &api.AgentService{ID: "svc-v6", Service: "web", Address: "::1", Port: 8002}},
		{Node: "v4-node", Address: "127.0.0.42", Service: &api.AgentService{ID: "svc-name", Service: "web", Address: "web-3.example", Port: 8003}},
		{Node: "v4-node", Address: "127.0.0.42", Service: &api.AgentService{ID: "tagged", Service: "web", Address: "127.0.0.5", Port: 8004,
			TaggedAddresses: map[string]api.ServiceAddress{"lan_ipv6": {Address: "::5", Port: 8004}, "wan": {Address: "198.51.100.1", Port: 9004}}}},
		{Node: "v4-node", Address: "127.0.0.42", Service: &api.AgentService{ID: "bracketed", Service: "web", Address: "[::6]", Port: 8005}},
		{Node: "v4-node", Address: "127.0.0.42", Service: &api.AgentService{ID: "with-port", Service: "web", Address: "127.0.0.7:9999", Port: 8006}},
	} {
		if _, err := cc.Catalog().Register(reg, nil); err != nil {
			t.Fatalf("register %s: %v", reg.Service.ID, err)
		}
	}
	c := newTestConsul(t, agent, ConsulConfig{})
	svc, _ := c.Service("web")
	waitSnapshot(t, svc, 5*time.Second, "web", hasAddrs("127.0.0.5:8004", "[::1]:8002", "[fd00::42]:8001", "web-3.example:8003"))
}

// ferry registering itself with an IPv6 address: a watch of its service
// (another ferry's) dials it bracketed.
func TestRegistrarIPv6Address(t *testing.T) {
	agent := consultest.Start(t)
	c := newTestConsul(t, agent, ConsulConfig{})
	runRegistrar(t, c, Registration{Name: "self", ID: "self-v6", Address: "::1", Port: 7000})
	self, _ := c.Service("self")
	waitSnapshot(t, self, 5*time.Second, "self at [::1]:7000", hasAddrs("[::1]:7000"))
}

// The injector sets CONSUL_HTTP_ADDR to $(HOST_IP):8500, which kubelet
// expands as text: on a node with an IPv6 address it reads
// "fd00::2:8500", no brackets. ferry reads that as the address and port it
// must be (the address alone could not be dialled: there is no port), and
// reaches the agent.
func TestConsulEnvAddressIPv6WithoutBrackets(t *testing.T) {
	agent := consultest.Start(t)
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	relayTo(t, ln, agent.HTTPAddr)
	registerTTL(t, agent.Client(), "api", "api-1", 9001, api.HealthPassing)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	t.Setenv("CONSUL_HTTP_ADDR", "::1:"+port)

	c, err := NewConsul(context.Background(), ConsulConfig{WaitTime: time.Second}, ConsulOptions{Logger: testLogger()})
	if err != nil {
		t.Fatalf("NewConsul: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	svc, _ := c.Service("api")
	waitSnapshot(t, svc, 5*time.Second, "api through [::1]:"+port, hasAddrs("127.0.0.1:9001"))
}

// relayTo copies every connection ln accepts to and from addr, until the
// test ends.
func relayTo(t *testing.T, ln net.Listener, addr string) {
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				u, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer u.Close()
				wg.Go(func() {
					io.Copy(u, c)
					u.(*net.TCPConn).CloseWrite()
				})
				io.Copy(c, u)
			})
		}
	})
}
