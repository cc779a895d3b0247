package webhook_test

import (
	"encoding/json"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"

	"github.com/ferrymesh/ferry/deploy/inject"
	"github.com/ferrymesh/ferry/deploy/inject/apiservertest"
	"github.com/ferrymesh/ferry/deploy/webhook"
)

// A pod whose pod-level requests (spec.resources, as the API server sent
// it: already defaulted) the app containers use up: the webhook still
// injects ferry, and the pod its patch makes is one the API server
// accepts (ferry requests no cpu or memory of its own, and says so in a
// warning), where ferry's usual requests would have made the API server
// refuse it, and with it every pod of the workload.
func TestPodLevelResourcesPatchStaysValid(t *testing.T) {
	s := startServer(t, webhook.Options{})
	review, _ := readFixture(t)
	var sent []byte
	review = withRequest(t, review, func(req map[string]any) {
		spec := req["object"].(map[string]any)["spec"].(map[string]any)
		// The app container requests cpu 250m and memory 256Mi.
		spec["resources"] = map[string]any{
			"requests": map[string]any{"cpu": "250m", "memory": "256Mi"},
			"limits":   map[string]any{"cpu": "1", "memory": "512Mi"},
		}
		var err error
		if sent, err = json.Marshal(req["object"]); err != nil {
			t.Fatal(err)
		}
	})
	resp := s.review(t, review)
	if !resp.Allowed || resp.Patch == nil {
		t.Fatalf("want a patch, got %+v", resp)
	}
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := patch.Apply(sent)
	if err != nil {
		t.Fatalf("patch does not apply: %v\n%s", err, resp.Patch)
	}
	var pod corev1.Pod
	if err := json.Unmarshal(patched, &pod); err != nil {
		t.Fatal(err)
	}
	apiservertest.DefaultPod(&pod) // as the API server does after a webhook's patch
	if errs := apiservertest.ValidatePodResources(&pod.Spec); len(errs) > 0 {
		t.Errorf("the API server refuses the patched pod:\n  %s", strings.Join(errs, "\n  "))
	}
	if len(pod.Spec.InitContainers) == 0 || pod.Spec.InitContainers[0].Name != inject.ContainerName {
		t.Fatalf("no ferry init container: %+v", pod.Spec.InitContainers)
	}
	req := pod.Spec.InitContainers[0].Resources.Requests
	if cpu, mem := req[corev1.ResourceCPU], req[corev1.ResourceMemory]; !cpu.IsZero() || !mem.IsZero() {
		t.Errorf("ferry requests %v, want cpu and memory 0 (the pod's budget is used up)", req)
	}
	if !strings.Contains(strings.Join(resp.Warnings, "\n"), "spec.resources.requests.cpu") {
		t.Errorf("warnings %q do not say what to raise", resp.Warnings)
	}
	// The patch touches nothing but what ferry adds.
	var ops []map[string]any
	json.Unmarshal(resp.Patch, &ops)
	for _, op := range ops {
		if p := op["path"].(string); strings.HasPrefix(p, "/spec/resources") {
			t.Errorf("the patch changes the pod-level resources: %v", op)
		}
	}
}
