package inject

import (
	"strings"
	"testing"
)

// An annotation the injected pod would not use must be refused naming it,
// not dropped: ferry.io/inbound-protocol with no inbound listener, and
// ferry.io/consul-addr or ferry.io/consul-token-secret on a pod that does
// not use Consul (static endpoints only, no registration) were accepted
// and had no effect, so a pod meant to talk to Consul through a given
// agent, with a token, ran without either, without a word.
func TestUnusedAnnotationsRefused(t *testing.T) {
	inj := newTestInjector(t)
	static := "files endpoints=10.0.0.1:80"
	for _, c := range []struct {
		ann  map[string]string
		key  string
		used func(env map[string]string) bool
	}{
		{map[string]string{AnnotationUpstreams: static, AnnotationInboundPort: "none", AnnotationInboundProtocol: "h2c"},
			AnnotationInboundProtocol, func(env map[string]string) bool { return strings.Contains(env[ConfigEnv], "protocol: h2c") }},
		{map[string]string{AnnotationUpstreams: static, AnnotationConsulAddr: "10.0.0.5:8500"},
			AnnotationConsulAddr, func(env map[string]string) bool { return env["CONSUL_HTTP_ADDR"] == "10.0.0.5:8500" }},
		{map[string]string{AnnotationUpstreams: static, AnnotationConsulTokenSecret: "consul:token"},
			AnnotationConsulTokenSecret, func(env map[string]string) bool { return env["CONSUL_HTTP_TOKEN"] != "" }},
		// Used: still injected.
		{map[string]string{AnnotationInboundProtocol: "h2c"},
			"", func(env map[string]string) bool { return strings.Contains(env[ConfigEnv], "protocol: h2c") }},
		{map[string]string{AnnotationUpstreams: "files", AnnotationConsulAddr: "10.0.0.5:8500", AnnotationConsulTokenSecret: "consul:token"},
			"", func(env map[string]string) bool {
				return env["CONSUL_HTTP_ADDR"] == "10.0.0.5:8500" && env["CONSUL_HTTP_TOKEN"] != ""
			}},
	} {
		rep, ctr := injectPod(t, inj, c.ann)
		if ctr == nil {
			if c.key == "" {
				t.Errorf("%v: refused: %s", c.ann, rep.Reason)
			} else if !strings.Contains(rep.Reason, c.key) {
				t.Errorf("%v: refused without naming %s: %s", c.ann, c.key, rep.Reason)
			}
			continue
		}
		if env := containerEnv(t, *ctr); !c.used(env) {
			t.Errorf("%v: injected, and %s has no effect on the pod", c.ann, c.key)
		}
	}
}
