package inject

import (
	"fmt"
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
		{map[string]string{AnnotationUpstreams: static, AnnotationInboundPort: "none", AnnotationInboundHost: "::1"},
			AnnotationInboundHost, func(env map[string]string) bool { return strings.Contains(env[ConfigEnv], "[::1]:") }},
		// Used: still injected.
		{map[string]string{AnnotationInboundHost: "::1"},
			"", func(env map[string]string) bool { return strings.Contains(env[ConfigEnv], "[::1]:") }},
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

// ferry.io/consul-meta follows Consul's limits on a service's meta, which
// ferry's config checks too (a registration breaking one is refused by
// the agent at every attempt): a key starting "consul-", a value over 512
// characters, or more pairs than fit beside ferry's own two are refused
// naming the annotation, never injected into a ferry that refuses its
// config at start.
func TestConsulMetaFollowsConsulLimits(t *testing.T) {
	inj := newTestInjector(t)
	var pairs []string
	for i := range 63 {
		pairs = append(pairs, fmt.Sprintf("k%d=v", i))
	}
	for _, c := range []struct {
		meta string
		ok   bool
	}{
		{"consul-version=1", false},
		{"k=" + strings.Repeat("v", 513), false},
		{strings.Join(pairs, ","), false}, // 63 and ferry's 2
		{strings.Join(pairs[1:], ","), true},
		{"k=" + strings.Repeat("v", 512) + ",version-consul=1", true},
	} {
		rep, ctr := injectPod(t, inj, map[string]string{AnnotationUpstreams: "files", AnnotationConsulService: "web", AnnotationConsulMeta: c.meta})
		switch {
		case c.ok && ctr == nil:
			t.Errorf("meta %.40q...: refused: %s", c.meta, rep.Reason)
		case !c.ok && ctr != nil:
			t.Errorf("meta %.40q...: injected", c.meta)
		case !c.ok && !strings.Contains(rep.Reason, AnnotationConsulMeta):
			t.Errorf("meta %.40q...: refused without naming %s: %s", c.meta, AnnotationConsulMeta, rep.Reason)
		}
	}
}
