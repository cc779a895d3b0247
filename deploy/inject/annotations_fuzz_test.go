package inject

import (
	"encoding/json"
	"testing"
)

// FuzzAnnotations: whatever the pod's ferry annotations say, the injector
// either refuses the pod (or leaves it alone) or injects a ferry whose
// config ferry's own parser loads once kubelet expanded it
// (checkInjectedTemplate): an injected ferry that exits at start holds the
// pod back forever.
func FuzzAnnotations(f *testing.F) {
	f.Add("files", "", "", "", "", "", "")
	f.Add("files endpoints=files.shop.svc:8080", "8080", "http1", "", "", "", "::1")
	f.Add("api=/api tags=v2 protocol=h2c\nsearch=search.internal/v2 consul=search-svc dc=eu1", "", "", "web", "a,b", "k=v", "$(POD_IP)")
	f.Add("legacy=legacy.local endpoints=legacy.shop.svc:8080,legacy-b.shop.svc:8080", "9000", "auto", "", "", "", "")
	f.Add("* endpoints=10.0.0.1:080", "", "", "", "", "", "")
	f.Add("", "8080", "h2c", "web", "", "version=1,zone=a", "app.shop.svc")
	inj, err := New(testOptions)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, upstreams, inboundPort, inboundProtocol, consulService, consulTags, consulMeta, inboundHost string) {
		ann := map[string]string{}
		for k, v := range map[string]string{
			AnnotationUpstreams: upstreams, AnnotationInboundPort: inboundPort, AnnotationInboundProtocol: inboundProtocol,
			AnnotationConsulService: consulService, AnnotationConsulTags: consulTags, AnnotationConsulMeta: consulMeta,
			AnnotationInboundHost: inboundHost,
		} {
			if v != "" {
				ann[k] = v
			}
		}
		raw, err := json.Marshal(appPod(ann))
		if err != nil {
			return // not UTF-8: no API server stores it
		}
		out, reps, err := inj.InjectJSON(raw)
		if err != nil || len(reps) != 1 || reps[0].Outcome != Injected {
			return
		}
		checkInjectedTemplate(t, decodeStrict(t, out)[0])
	})
}
