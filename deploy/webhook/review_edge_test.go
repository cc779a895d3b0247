package webhook_test

import (
	"encoding/json"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/ferrymesh/ferry/deploy/webhook"
)

// applyPatch applies a response's JSONPatch to the pod with an independent
// implementation.
func applyPatch(t *testing.T, resp *admissionv1.AdmissionResponse, pod []byte) []byte {
	t.Helper()
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch type %v, want JSONPatch", resp.PatchType)
	}
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("patch does not decode: %v\n%s", err, resp.Patch)
	}
	out, err := patch.Apply(pod)
	if err != nil {
		t.Fatalf("patch does not apply: %v\n%s", err, resp.Patch)
	}
	return out
}

// TestReviewEdgeCases: operations other than CREATE are allowed without a
// patch, the uid echoed; a dry run gets the patch (sideEffects None); a pod
// whose annotations or init containers are null, absent or already there
// gets a JSONPatch that applies with an independent implementation and
// puts ferry first; and that pod, sent again once patched (a
// reinvocation), is allowed unchanged without a warning.
func TestReviewEdgeCases(t *testing.T) {
	s := startServer(t, webhook.Options{})
	review, _ := readFixture(t)

	for _, op := range []string{"DELETE", "CONNECT"} {
		t.Run(op, func(t *testing.T) {
			resp := s.review(t, withRequest(t, review, func(req map[string]any) {
				req["operation"] = op
				req["oldObject"] = req["object"]
				delete(req, "object")
			}))
			if !resp.Allowed || resp.Patch != nil || resp.PatchType != nil || resp.UID != "0df28fbd-5f5f-11e8-bc74-36e6bb280816" {
				t.Errorf("%s: %+v", op, resp)
			}
		})
	}

	t.Run("dry run", func(t *testing.T) {
		// sideEffects None: a dry run gets the same patch, so a server-side
		// dry run shows the pod as it would be created.
		var pod []byte
		rev := withRequest(t, review, func(req map[string]any) {
			req["dryRun"] = true
			pod, _ = json.Marshal(req["object"])
		})
		resp := s.review(t, rev)
		applyPatch(t, resp, pod)
	})

	for _, tc := range []struct {
		name string
		edit func(obj map[string]any)
	}{
		{"null annotations", func(obj map[string]any) {
			meta := obj["metadata"].(map[string]any)
			meta["annotations"] = nil
		}},
		{"no annotations", func(obj map[string]any) {
			meta := obj["metadata"].(map[string]any)
			delete(meta, "annotations")
		}},
		{"null initContainers", func(obj map[string]any) {
			obj["spec"].(map[string]any)["initContainers"] = nil
		}},
		{"existing initContainers", func(obj map[string]any) {
			obj["spec"].(map[string]any)["initContainers"] = []any{map[string]any{"name": "migrate", "image": "migrate:1"}}
		}},
		{"no apiVersion and kind", func(obj map[string]any) {
			delete(obj, "apiVersion")
			delete(obj, "kind")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pod []byte
			rev := withRequest(t, review, func(req map[string]any) {
				obj := req["object"].(map[string]any)
				tc.edit(obj)
				pod, _ = json.Marshal(obj)
			})
			resp := s.review(t, rev)
			if resp.Patch == nil {
				t.Fatalf("no patch: %+v", resp.Result)
			}
			patched := applyPatch(t, resp, pod)
			var p map[string]any
			json.Unmarshal(patched, &p)
			inits := p["spec"].(map[string]any)["initContainers"].([]any)
			if inits[0].(map[string]any)["name"] != "ferry" {
				t.Errorf("ferry is not the first init container: %v", inits)
			}
			// Sent again, as a reinvocation or a re-creation would: no change.
			again := s.review(t, withRequest(t, review, func(req map[string]any) {
				var obj map[string]any
				json.Unmarshal(patched, &obj)
				req["object"] = obj
			}))
			if !again.Allowed || again.Patch != nil || len(again.Warnings) != 0 || !strings.Contains(again.Result.Message, "already injected") {
				t.Errorf("injected pod sent again: %+v", again)
			}
		})
	}
}
