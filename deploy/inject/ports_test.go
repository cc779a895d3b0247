package inject

import (
	"strings"
	"testing"
)

// podWithPorts is appPod whose app container declares ports.
func podWithPorts(ann map[string]string, ports ...map[string]any) map[string]any {
	pod := appPod(ann)
	list := make([]any, len(ports))
	for i, p := range ports {
		list[i] = p
	}
	pod["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["ports"] = list
	return pod
}

// ferry's ports are TCP. A pod may declare the same number with another
// protocol (the API keys a container's ports by containerPort and
// protocol), and a UDP or SCTP socket does not take the TCP port: an app
// container declaring UDP or SCTP 15000, 15001 or 15006 was refused as a
// conflict. TCP, and no protocol (TCP by default), still conflict.
func TestPortConflictIsTCPOnly(t *testing.T) {
	inj := newTestInjector(t)
	for _, c := range []struct {
		port     int
		protocol string // "": not set
		conflict bool
	}{
		{15000, "UDP", false}, {15001, "UDP", false}, {15006, "UDP", false},
		{15000, "SCTP", false}, {15006, "SCTP", false},
		{15000, "TCP", true}, {15001, "TCP", true}, {15006, "TCP", true},
		{15000, "", true}, {15006, "", true},
	} {
		p := map[string]any{"containerPort": c.port}
		if c.protocol != "" {
			p["protocol"] = c.protocol
		}
		rep, ferry := injectJSONPod(t, inj, podWithPorts(nil, map[string]any{"containerPort": 8080}, p))
		switch {
		case c.conflict && ferry != nil:
			t.Errorf("%d/%q: injected beside the app's port ferry listens on", c.port, c.protocol)
		case c.conflict && !strings.Contains(rep.Reason, "which ferry listens on"):
			t.Errorf("%d/%q: refused for another reason: %s", c.port, c.protocol, rep.Reason)
		case !c.conflict && ferry == nil:
			t.Errorf("%d/%q: refused: %s", c.port, c.protocol, rep.Reason)
		}
	}
}

// ferry.io/inbound-port is a port number as Kubernetes writes one, plain
// decimal digits 1-65535, a container port name, or none. A sign or a
// leading zero was read by strconv.Atoi: "+80" and "080" became port 80;
// a number too large for Atoi was taken for a port name. Each is refused
// naming the annotation and saying what is wrong.
func TestInboundPortAnnotationIsPlainDecimal(t *testing.T) {
	inj := newTestInjector(t)
	named := map[string]any{"containerPort": 8080, "name": "http"}
	for _, c := range []struct {
		value string
		want  string // in the refusal; "": injected
	}{
		{"8080", ""}, {" 8080 ", ""}, {"http", ""}, {"1", ""}, {"65535", ""},
		{"+80", "sign"}, {"-80", "sign"}, {"+8080", "sign"}, {"080", "leading zero"}, {"0080", "leading zero"},
		{"0", "1-65535"}, {"65536", "1-65535"}, {"99999999999999999999", "1-65535"},
		{"htp", "no container declares a port of that name"}, {"+http", "no container declares a port of that name"},
	} {
		rep, ferry := injectJSONPod(t, inj, podWithPorts(map[string]string{AnnotationInboundPort: c.value}, named))
		switch {
		case c.want == "" && ferry == nil:
			t.Errorf("%q refused: %s", c.value, rep.Reason)
		case c.want != "" && ferry != nil:
			t.Errorf("%q injected", c.value)
		case c.want != "" && (!strings.Contains(rep.Reason, AnnotationInboundPort) || !strings.Contains(rep.Reason, c.want)):
			t.Errorf("%q: refusal %q does not name %s and say %q", c.value, rep.Reason, AnnotationInboundPort, c.want)
		}
	}
}

// An app container port outside 1-65535 (which the API server refuses)
// was taken as the default inbound port: containerPort 70000 was injected
// with inbound.app 127.0.0.1:70000, a config ferry refuses at start. The
// pod is refused naming the field.
func TestContainerPortOutOfRangeRefused(t *testing.T) {
	inj := newTestInjector(t)
	for _, port := range []int{70000, 65536, 0, -80} {
		rep, ferry := injectJSONPod(t, inj, podWithPorts(nil, map[string]any{"containerPort": port}))
		if ferry != nil {
			t.Errorf("containerPort %d: injected", port)
			continue
		}
		if want := "spec.containers[0].ports[0].containerPort"; !strings.Contains(rep.Reason, want) || !strings.Contains(rep.Reason, "1-65535") {
			t.Errorf("containerPort %d: reason %q does not name %s and 1-65535", port, rep.Reason, want)
		}
	}
}
