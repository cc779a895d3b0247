package deploy

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"

	"github.com/ferrymesh/ferry/deploy/inject"
	"github.com/ferrymesh/ferry/deploy/webhook"
)

// TestHelmReinvocationPolicy: the chart wrote reinvocationPolicy Never
// with no way to change it. It is now webhook.reinvocationPolicy (Never by
// default, or IfNeeded), checked by the schema. What IfNeeded would bring
// is checked here too: the API server calls ferry again after a later
// webhook changed a pod ferry injected, and ferry's injection is
// idempotent, so the pod, with the containers the later webhook added, is
// allowed as it is, without a patch or a warning. Nothing of ferry's
// injection depends on the other containers (ferry is put first and
// leaves the others alone), so there is nothing to redo and Never stays
// the default; IfNeeded only lets ferry inject a pod it left alone on its
// first call for a reason a later webhook removed.
func TestHelmReinvocationPolicy(t *testing.T) {
	policy := func(r *rendered) admissionregistrationv1.ReinvocationPolicyType {
		t.Helper()
		p := r.webhooks[0].Webhooks[0].ReinvocationPolicy
		if p == nil {
			t.Fatal("no reinvocationPolicy rendered")
		}
		return *p
	}
	if got := policy(render(t, "mesh")); got != admissionregistrationv1.NeverReinvocationPolicy {
		t.Errorf("default reinvocationPolicy %s, want Never", got)
	}
	if got := policy(render(t, "mesh", "--set", "webhook.reinvocationPolicy=IfNeeded")); got != admissionregistrationv1.IfNeededReinvocationPolicy {
		t.Errorf("webhook.reinvocationPolicy=IfNeeded rendered %s", got)
	}
	for _, v := range []string{"Always", "ifneeded", ""} {
		out, err := helm(t, "template", "rel", chartDir, "--set-string", "webhook.reinvocationPolicy="+v)
		if err == nil || !strings.Contains(out, "/webhook/reinvocationPolicy") {
			t.Errorf("webhook.reinvocationPolicy=%q: err %v, want an error naming /webhook/reinvocationPolicy:\n%.400s", v, err, out)
		}
	}

	for _, native := range []bool{true, false} {
		inj, err := inject.New(inject.Options{Image: "ferrymesh/ferry:test", DisableNativeSidecar: !native})
		if err != nil {
			t.Fatal(err)
		}
		h := webhook.NewHandler(inj, webhook.Options{})
		pod := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","annotations":{"ferry.io/upstreams":"api"}},
			"spec":{"containers":[{"name":"app","image":"app","ports":[{"containerPort":8080}]}]}}`)
		injected, reps, err := inj.InjectJSON(pod)
		if err != nil || len(reps) != 1 || reps[0].Outcome != inject.Injected {
			t.Fatalf("native %v: %v %v", native, err, reps)
		}
		// What a later webhook does: a container and an init container
		// added after ferry's, and an annotation.
		var obj map[string]any
		if err := json.Unmarshal(injected, &obj); err != nil {
			t.Fatal(err)
		}
		spec := obj["spec"].(map[string]any)
		spec["containers"] = append(spec["containers"].([]any), map[string]any{"name": "vault-agent", "image": "vault"})
		inits, _ := spec["initContainers"].([]any)
		spec["initContainers"] = append(inits, map[string]any{"name": "vault-agent-init", "image": "vault"})
		obj["metadata"].(map[string]any)["annotations"].(map[string]any)["vault.example/injected"] = "true"

		patch, warnings, msg := reviewAll(t, h, obj)
		if patch || len(warnings) != 0 || !strings.Contains(msg, "already injected") {
			t.Errorf("native %v: an injected pod another webhook changed, sent again: patch %v, warnings %q, message %q; want it allowed unchanged, without a warning",
				native, patch, warnings, msg)
		}
	}
}

// reviewAll sends pod to the webhook handler and returns whether it was
// patched, the warnings and the status message.
func reviewAll(t *testing.T, h http.Handler, pod map[string]any) (bool, []string, string) {
	t.Helper()
	body, err := json.Marshal(map[string]any{
		"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
		"request": map[string]any{
			"uid": "1", "kind": map[string]any{"group": "", "version": "v1", "kind": "Pod"},
			"resource":  map[string]any{"group": "", "version": "v1", "resource": "pods"},
			"namespace": "shop", "operation": "CREATE", "object": pod,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, webhook.Path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var resp struct {
		Response struct {
			Allowed  bool     `json:"allowed"`
			Patch    []byte   `json:"patch"`
			Warnings []string `json:"warnings"`
			Status   struct {
				Message string `json:"message"`
			} `json:"status"`
		} `json:"response"`
	}
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &resp) != nil || !resp.Response.Allowed {
		t.Fatalf("webhook answered %d %s", rec.Code, rec.Body.String())
	}
	return len(resp.Response.Patch) > 0, resp.Response.Warnings, resp.Response.Status.Message
}
