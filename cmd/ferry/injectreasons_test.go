package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestInjectNamesEveryBadAnnotation: a pod with several bad annotations is
// refused with one line for each, naming the object, the annotation and
// what is wrong, so that one run tells the user everything to fix. Only the
// first was reported: fixing a manifest took as many runs as it had
// mistakes.
func TestInjectNamesEveryBadAnnotation(t *testing.T) {
	for _, tc := range []struct {
		name     string
		manifest string
		want     []string // one stderr line each, after "ferry inject: stdin: "
	}{
		{"values", `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  annotations:
    ferry.io/log-level: loud
spec:
  template:
    metadata:
      annotations:
        ferry.io/upstreams: "files=files:80"
        ferry.io/inbound-protocol: h3
        ferry.io/consul-service: "bad name!"
        ferry.io/proxy-cpu-request: lots
        ferry.io/native-sidecar: maybe
        ferry.io/shutdown-grace: "0s"
        ferry.io/otel-endpoint: collector:4318
        ferry.io/inbound-port: "99999"
    spec:
      containers:
      - name: app
        image: app
        ports: [{containerPort: 8080}]
`, []string{
			`deployment shop/web: not injected: invalid annotation ferry.io/upstreams="files=files:80": `,
			`deployment shop/web: not injected: invalid annotation ferry.io/inbound-port="99999": `,
			`deployment shop/web: not injected: invalid annotation ferry.io/inbound-protocol="h3": `,
			`deployment shop/web: not injected: invalid annotation ferry.io/consul-service="bad name!": `,
			`deployment shop/web: not injected: invalid annotation ferry.io/otel-endpoint="collector:4318": `,
			`deployment shop/web: not injected: invalid annotation ferry.io/proxy-cpu-request="lots": `,
			`deployment shop/web: not injected: invalid annotation ferry.io/native-sidecar="maybe": `,
			`deployment shop/web: not injected: invalid annotation ferry.io/shutdown-grace="0s": `,
			`deployment shop/web: not injected: invalid annotation ferry.io/log-level="loud": `,
		}},
		{"not strings", `apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations:
    ferry.io/inbound-port: 8080
    ferry.io/native-sidecar: false
    ferry.io/log-level: debug
spec:
  containers:
  - name: app
    image: app
`, []string{
			`pod web: not injected: annotation ferry.io/inbound-port on the pod template is the number 8080, not a string`,
			`pod web: not injected: annotation ferry.io/native-sidecar on the pod template is the bool false, not a string`,
		}},
		{"no effect", `apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations:
    ferry.io/upstreams: "files endpoints=files:80"
    ferry.io/inbound-port: none
    ferry.io/inbound-protocol: h2c
    ferry.io/inbound-host: "::1"
    ferry.io/consul-addr: consul:8500
spec:
  containers:
  - name: app
    image: app
`, []string{
			`pod web: not injected: annotation ferry.io/inbound-protocol has no effect: `,
			`pod web: not injected: annotation ferry.io/inbound-host has no effect: `,
			`pod web: not injected: annotation ferry.io/consul-addr has no effect: `,
		}},
	} {
		var out, errb bytes.Buffer
		if code := cmdInject(nil, strings.NewReader(tc.manifest), &out, &errb); code != exitOK {
			t.Fatalf("%s: exit %d: %s", tc.name, code, errb.String())
		}
		if out.String() != tc.manifest {
			t.Errorf("%s: a refused object was changed:\n%s", tc.name, out.String())
		}
		lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
		if len(lines) != len(tc.want)+1 {
			t.Errorf("%s: %d lines on stderr, want %d (one per bad annotation, then the count):\n%s", tc.name, len(lines), len(tc.want)+1, errb.String())
		}
		for _, w := range tc.want {
			found := false
			for _, l := range lines {
				if strings.HasPrefix(l, "ferry inject: stdin: "+w) {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: no line starting %q in:\n%s", tc.name, "ferry inject: stdin: "+w, errb.String())
			}
		}
		if last := lines[len(lines)-1]; last != "ferry inject: 0 injected, 1 not injected, 0 other objects passed through" {
			t.Errorf("%s: last line %q", tc.name, last)
		}
	}
}
