package inject

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestParseUpstreams(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []Upstream
		err  string
	}{
		{in: "files", want: []Upstream{{Service: "files", Host: "files"}}},
		{in: " files ;\n\n api=/api ", want: []Upstream{
			{Service: "files", Host: "files"}, {Service: "api", PathPrefix: "/api"}}},
		{in: "search=search.internal/v2 tags=v2,eu dc=eu1 consul=search-svc protocol=h2c", want: []Upstream{
			{Service: "search", Host: "search.internal", PathPrefix: "/v2", Tags: []string{"v2", "eu"}, Datacenter: "eu1", ConsulService: "search-svc", Protocol: "h2c"}}},
		{in: "all=* endpoints=a:1,b.svc:2", want: []Upstream{
			{Service: "all", Endpoints: []string{"a:1", "b.svc:2"}}}},
		{in: "api=/api; api=api.internal tags=v1", want: []Upstream{
			{Service: "api", PathPrefix: "/api", Tags: []string{"v1"}}, {Service: "api", Host: "api.internal", Tags: []string{"v1"}}}},
		{in: "", want: nil},

		{in: "files=files:80", err: `entry 1 "files=files:80": invalid host "files:80"`},
		{in: "files,api", err: `invalid service name "files,api"`},
		{in: "files=a..b", err: `entry 1 "files=a..b": invalid host "a..b"`},
		{in: "a=/x; b=/x/", err: `entry 2 "b=/x/": same match as entry 1`},
		{in: "a=*; b", err: `entry 2 "b": entry 1 already matches every request`},
		// ferry matches in order and refuses a route an earlier one shadows.
		{in: "api=/api; v2=/api/v2", err: `entry 2 "v2=/api/v2": entry 1 already matches every request it would`},
		{in: "files; filesapi=files/api", err: `entry 2 "filesapi=files/api": entry 1 already matches every request it would`},
		{in: "a=/a/; b=/a/x", err: `entry 2 "b=/a/x": entry 1 already matches every request it would`},
		{in: "filesapi=files/api; v2=/api/v2; api=/api; files", want: []Upstream{
			{Service: "filesapi", Host: "files", PathPrefix: "/api"}, {Service: "v2", PathPrefix: "/api/v2"}, {Service: "api", PathPrefix: "/api"}, {Service: "files", Host: "files"}}},
		{in: "a=/", want: []Upstream{{Service: "a", PathPrefix: "/"}}}, // a catch-all alone is fine
		{in: "a tags=x endpoints=h:1", err: "either static endpoints or Consul options"},
		{in: "a=/a tags=x; a=/b tags=y", err: "option tags=y disagrees with x"},
		{in: "a=/a endpoints=h:1; a=/b tags=y", err: "either static endpoints or Consul options"},
		{in: "a protocol=h3", err: `unknown protocol "h3"`},
		{in: "a endpoints=h:0", err: `invalid port in "h:0"`},
		{in: "a endpoints=h:1,h:1", err: "h:1 is listed twice"},
		// ferry's config refuses one endpoint written two ways; so must this.
		{in: "a endpoints=[::1]:80,[0:0::1]:80", err: "[0:0::1]:80 is listed twice"},
		{in: "a endpoints=H:1,h:1", err: "h:1 is listed twice"},
		{in: "a weight=3", err: `unknown option "weight"`},
		{in: "a tags", err: `option "tags": want key=value`},
		{in: "a tags=", err: "option tags: empty value"},
		{in: "a tags=x tags=y", err: "option tags given twice"},
		{in: "a=", err: "empty match"},
		{in: "a=http://x", err: `invalid host "http:"`},
		// A DNS label is at most 63 bytes and a name 253: ferry's config
		// refuses a route host past either, so the injector must too.
		{in: strings.Repeat("a", 64), err: `service name "` + strings.Repeat("a", 64) + `" cannot be the route's host`},
		{in: "a." + strings.Repeat("a", 64), err: `cannot be the route's host`},
		{in: "a=" + strings.Repeat("a", 64) + ".svc", err: `invalid host`},
		{in: "a=" + strings.Repeat("abcdefg.", 32) + "x", err: `invalid host`},
		{in: strings.Repeat("a", 63) + "=" + strings.Repeat("a", 63) + "." + strings.Repeat("b", 63), want: []Upstream{{Service: strings.Repeat("a", 63), Host: strings.Repeat("a", 63) + "." + strings.Repeat("b", 63)}}},
		{in: "a=/with space", err: `option "space": want key=value`},
		// ferry's config refuses a datacenter Consul cannot have (lower-case
		// letters, digits, - and _ only); so must this.
		{in: "a dc=EU1", err: `option dc: "EU1" is not a Consul datacenter name`},
		{in: "a dc=eu_1-b", want: []Upstream{{Service: "a", Host: "a", Datacenter: "eu_1-b"}}},
	} {
		got, err := ParseUpstreams(tc.in)
		if tc.err != "" || err != nil {
			if err == nil || !strings.Contains(err.Error(), tc.err) || tc.err == "" {
				t.Errorf("ParseUpstreams(%q) error %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseUpstreams(%q) =\n %+v\nwant\n %+v", tc.in, got, tc.want)
		}
	}
}

// TestGeneratedConfigAlwaysParses throws random annotation values at the
// injector: whatever it accepts must give a config ferry's own parser
// accepts, and whatever it refuses must come with a reason naming the
// annotation.
func TestGeneratedConfigAlwaysParses(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	names := []string{"files", "api", "a.b", "x_y", "Up-1", "bad name", "-x", "x/y", "$x", "files"}
	matches := []string{"", "=*", "=/", "=/api", "=/api/", "=host", "=Host.", "=h/p", "=h:1", "=", "=/a$b", "=/ünï", "=a..b"}
	opts := []string{"", " tags=a,b", " endpoints=h:1", " endpoints=h:1,h2:2", " consul=other", " dc=eu1", " dc=EU1",
		" protocol=h2c", " protocol=x", " endpoints=:1", " tags=$(POD_IP)", " endpoints=h$:1", " bogus=1"}
	in := newTestInjector(t)
	injected, refused := 0, 0
	for i := 0; i < 3000; i++ {
		var entries []string
		for n := r.IntN(4); n >= 0; n-- {
			entries = append(entries, pick(names...)+pick(matches...)+pick(opts...))
		}
		ann := map[string]any{AnnotationUpstreams: strings.Join(entries, pick(";", "\n", " ; "))}
		if r.IntN(3) == 0 {
			ann[AnnotationConsulService] = pick("web", "bad name", "w$eb")
			ann[AnnotationConsulMeta] = pick("a=b", "a=$(POD_IP)", "k8s-pod=x", "=x", "a=b,c=d$$")
		}
		if r.IntN(4) == 0 {
			ann[AnnotationInboundPort] = pick("none", "8080", "http", "0", "15006", "99999")
		}
		pod := map[string]any{
			"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{"name": "p", "annotations": ann},
			"spec": map[string]any{"containers": []any{map[string]any{
				"name": "app", "image": "app", "ports": []any{map[string]any{"name": "http", "containerPort": 8080}},
			}}},
		}
		changed, reps := in.InjectObject(pod)
		if !changed {
			refused++
			if reps[0].Outcome != Refused || !strings.Contains(reps[0].Reason, "ferry.io/") {
				t.Fatalf("annotations %v: %s", ann, reps[0])
			}
			continue
		}
		injected++
		raw, _ := json.Marshal(pod)
		var p corev1.Pod
		if err := json.Unmarshal(raw, &p); err != nil {
			t.Fatal(err)
		}
		checkInjectedTemplate(t, &corev1.PodTemplateSpec{ObjectMeta: p.ObjectMeta, Spec: p.Spec})
	}
	t.Logf("%d injected, %d refused", injected, refused)
	if injected < 100 || refused < 100 {
		t.Errorf("the generator is lopsided: %d injected, %d refused", injected, refused)
	}
}
