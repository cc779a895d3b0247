package discovery

import (
	"bytes"
	"encoding/json"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/ferrymesh/ferry/internal/dialhost"
)

// Whatever a Consul health answer holds, ferry decodes every answer the
// official client decodes, and endpointsOf makes only endpoints that can
// be dialled: host:port with a host and a port 1-65535, a weight of at
// least 1, sorted by address.
func FuzzConsulAnswer(f *testing.F) {
	for _, s := range []string{
		`[]`,
		`null`,
		`[{"Node":{"Node":"web-7","Address":"192.0.2.7"},"Service":{"Port":9000,"Tags":["v2"],"Weights":{"Passing":3,"Warning":1}}}]`,
		`[{"Node":{"Node":"n","Address":"192.0.2.8"},"Service":{"Address":"2001:db8::1","Port":9000}},null,{"Service":null}]`,
		`[{"Node":{"Node":"web-9"},"Service":{"Port":9000}},{"Node":{"Address":"192.0.2.10"},"Service":{}}]`,
		`[{"Node":{"Address":"192.0.2.11"},"Service":{"Port":70000}}]`,
		`[{"Node":{"Address":"192.0.2.12"},"Service":{"Port":-1,"Weights":{"Passing":-5}}}]`,
		`[{"Service":{"Address":"a.example","Port":1,"Weights":{"Passing":0}}},{"Service":{"Address":"a.example","Port":1}}]`,
		`[{"Service":{"Address":"::1","Port":1}},{"Service":{"Address":"0:0::1","Port":1}},{"Service":{"Address":"A.example","Port":1}}]`,
		`[{"Node":{"Node":"n","Address":"192.0.2.13"},"Service":{"ID":"a","Address":"[::6]","Port":0}},{"Node":null,"Service":{"ID":"b","Port":80}}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, answer []byte) {
		// As healthService decodes the body.
		var ours []*consulServiceEntry
		oerr := json.NewDecoder(bytes.NewReader(answer)).Decode(&ours)
		var theirs []*api.ServiceEntry
		terr := json.NewDecoder(bytes.NewReader(answer)).Decode(&theirs)
		if terr == nil && oerr != nil {
			t.Fatalf("%q: the official client decodes it, ferry refuses it: %v", answer, oerr)
		}
		if oerr != nil {
			return
		}
		eps, out := readAnswer(ours)
		// Every instance is an endpoint or left out with a reason: none
		// is dropped without a word.
		listed := map[string]bool{}
		for _, ep := range eps {
			listed[ep.Addr] = true
		}
		instances := 0
		for _, e := range ours {
			if e == nil || e.Service == nil {
				continue
			}
			instances++
			host := e.Service.Address
			if host == "" && e.Node != nil {
				host = e.Node.Address
			}
			if listed[dialhost.Key(net.JoinHostPort(host, strconv.Itoa(e.Service.Port)))] {
				instances--
			}
		}
		if instances != len(out) {
			t.Fatalf("%q: %d instances make no endpoint, %d left out with a reason (%v)", answer, instances, len(out), out)
		}
		for _, o := range out {
			if o.reason == "" {
				t.Fatalf("%q: instance left out without a reason: %+v", answer, o)
			}
		}
		if len(eps) > len(ours) {
			t.Fatalf("%q: %d endpoints from %d entries", answer, len(eps), len(ours))
		}
		if !slices.IsSortedFunc(eps, func(a, b Endpoint) int { return strings.Compare(a.Addr, b.Addr) }) {
			t.Fatalf("%q: endpoints not sorted: %v", answer, eps)
		}
		for i := 1; i < len(eps); i++ {
			if eps[i].Addr == eps[i-1].Addr {
				t.Fatalf("%q: endpoint %q listed twice", answer, eps[i].Addr)
			}
		}
		for _, ep := range eps {
			host, port, err := net.SplitHostPort(ep.Addr)
			if err != nil || !dialhost.Valid(host) {
				t.Fatalf("%q: endpoint %q is not a dialable host:port (%v)", answer, ep.Addr, err)
			}
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				t.Fatalf("%q: endpoint %q has no port 1-65535", answer, ep.Addr)
			}
			if ep.Weight < 1 {
				t.Fatalf("%q: endpoint %q weight %d", answer, ep.Addr, ep.Weight)
			}
		}
	})
}
