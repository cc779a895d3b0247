package webhook_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/ferrymesh/ferry/deploy/inject"
	"github.com/ferrymesh/ferry/deploy/webhook"
	"github.com/ferrymesh/ferry/deploy/webhook/webhooktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is a webhook over real TLS on loopback.
type server struct {
	url    string
	client *http.Client
	certs  webhooktest.Certs
	dir    string
}

func startServer(t *testing.T, opts webhook.Options) *server {
	t.Helper()
	dir := t.TempDir()
	certs := webhooktest.Write(t, dir)
	loader, err := webhook.NewCertLoader(certs.CertFile, certs.KeyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	inj, err := inject.New(inject.Options{Image: "ferrymesh/ferry:test"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := webhook.NewServer(webhook.NewHandler(inj, opts), loader, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- webhook.Serve(ctx, srv, ln, 0, 5*time.Second) }()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: certs.Pool}}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		tr.CloseIdleConnections()
	})
	return &server{url: "https://" + ln.Addr().String(), client: &http.Client{Transport: tr, Timeout: 10 * time.Second}, certs: certs, dir: dir}
}

func (s *server) post(t *testing.T, body []byte, contentType string) (int, []byte) {
	t.Helper()
	resp, err := s.client.Post(s.url+webhook.Path, contentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// review posts an AdmissionReview and decodes the answer.
func (s *server) review(t *testing.T, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	code, b := s.post(t, body, "application/json")
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, b)
	}
	var rev admissionv1.AdmissionReview
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rev); err != nil {
		t.Fatalf("response is not an AdmissionReview: %v\n%s", err, b)
	}
	if rev.APIVersion != "admission.k8s.io/v1" || rev.Kind != "AdmissionReview" || rev.Response == nil {
		t.Fatalf("response: %s", b)
	}
	// The handler's own types encode the review as k8s.io/api does.
	if again, err := json.Marshal(rev); err != nil || !bytes.Equal(again, b) {
		t.Errorf("the answer is not encoded as admissionv1.AdmissionReview encodes it (%v):\n got %s\nwant %s", err, b, again)
	}
	return rev.Response
}

func readFixture(t *testing.T) (review []byte, pod []byte) {
	t.Helper()
	review, err := os.ReadFile("testdata/review-pod.json")
	if err != nil {
		t.Fatal(err)
	}
	var rev admissionv1.AdmissionReview
	if err := json.Unmarshal(review, &rev); err != nil {
		t.Fatal(err)
	}
	return review, rev.Request.Object.Raw
}

// withObject returns the fixture review with its object (and optionally
// other request fields) replaced.
func withRequest(t *testing.T, review []byte, edit func(req map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(review, &m); err != nil {
		t.Fatal(err)
	}
	edit(m["request"].(map[string]any))
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func jsonValue(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	return v
}

// TestPodGetsThePatchTheCLIWouldMake: a real AdmissionReview over TLS; the
// patch, applied by an independent JSON Patch implementation to the pod
// the API server sent, gives exactly what the injection library (the one
// `ferry inject` uses) makes of that pod.
func TestPodGetsThePatchTheCLIWouldMake(t *testing.T) {
	s := startServer(t, webhook.Options{})
	review, pod := readFixture(t)
	resp := s.review(t, review)
	if resp.UID != "0df28fbd-5f5f-11e8-bc74-36e6bb280816" || !resp.Allowed {
		t.Fatalf("uid %q allowed %v", resp.UID, resp.Allowed)
	}
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch || len(resp.Patch) == 0 {
		t.Fatalf("no JSONPatch: %+v", resp)
	}
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("patch does not decode: %v\n%s", err, resp.Patch)
	}
	patched, err := patch.Apply(pod)
	if err != nil {
		t.Fatalf("patch does not apply: %v\n%s", err, resp.Patch)
	}
	inj, err := inject.New(inject.Options{Image: "ferrymesh/ferry:test"})
	if err != nil {
		t.Fatal(err)
	}
	want, reps, err := inj.InjectJSON(pod)
	if err != nil || len(reps) != 1 || reps[0].Outcome != inject.Injected {
		t.Fatalf("library: %v %v", err, reps)
	}
	if got, want := jsonValue(t, patched), jsonValue(t, want); !reflect.DeepEqual(got, want) {
		t.Errorf("patched pod differs from the library's injection:\n got %v\nwant %v", got, want)
	}
	// The patch only adds: the annotation and the init container list.
	var ops []map[string]any
	json.Unmarshal(resp.Patch, &ops)
	paths := []string{}
	for _, op := range ops {
		if op["op"] != "add" {
			t.Errorf("unexpected operation %v", op)
		}
		paths = append(paths, op["path"].(string))
	}
	if strings.Join(paths, " ") != "/metadata/annotations/ferry.io~1injected /spec/initContainers" {
		t.Errorf("patch paths %v", paths)
	}
}

func TestSkippedAndRefusedAreAllowedWithoutPatch(t *testing.T) {
	s := startServer(t, webhook.Options{})
	review, _ := readFixture(t)
	for _, tc := range []struct {
		name    string
		edit    func(req map[string]any)
		message string
		warned  bool
	}{
		{"disabled", func(req map[string]any) {
			meta := req["object"].(map[string]any)["metadata"].(map[string]any)
			meta["annotations"].(map[string]any)["ferry.io/inject"] = "disabled"
		}, "ferry: not injected: annotation ferry.io/inject=disabled", false},
		{"already injected", func(req map[string]any) {
			spec := req["object"].(map[string]any)["spec"].(map[string]any)
			spec["initContainers"] = []any{map[string]any{"name": "ferry", "image": "ferrymesh/ferry:0.9"}}
		}, `already injected: the pod has a container named "ferry"`, false},
		{"hostNetwork", func(req map[string]any) {
			req["object"].(map[string]any)["spec"].(map[string]any)["hostNetwork"] = true
		}, "hostNetwork pod", true},
		{"bad annotation", func(req map[string]any) {
			meta := req["object"].(map[string]any)["metadata"].(map[string]any)
			meta["annotations"].(map[string]any)["ferry.io/upstreams"] = "files=files:80"
		}, `invalid annotation ferry.io/upstreams="files=files:80"`, true},
		{"update", func(req map[string]any) { req["operation"] = "UPDATE" }, "operation UPDATE: ferry injects on CREATE only", false},
		{"not a pod", func(req map[string]any) {
			req["kind"] = map[string]any{"group": "apps", "version": "v1", "kind": "Deployment"}
		}, "apps/v1, Kind=Deployment is not a v1 Pod", false},
		{"object not an object", func(req map[string]any) { req["object"] = []any{1, 2} }, "cannot decode the pod", true},
		{"no object", func(req map[string]any) { delete(req, "object") }, "the request carries no object", true},
		{"unreadable pod-level resources", func(req map[string]any) {
			spec := req["object"].(map[string]any)["spec"].(map[string]any)
			spec["resources"] = map[string]any{"requests": map[string]any{"cpu": "all of it"}}
		}, "cannot read spec.resources", true},
		{"pod without containers field types", func(req map[string]any) {
			req["object"].(map[string]any)["spec"].(map[string]any)["containers"] = "web"
		}, "cannot read the pod template", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := s.review(t, withRequest(t, review, tc.edit))
			if !resp.Allowed || resp.Patch != nil || resp.PatchType != nil {
				t.Fatalf("want allowed without patch, got %+v", resp)
			}
			if resp.Result == nil || !strings.Contains(resp.Result.Message, tc.message) {
				t.Errorf("message %+v, want it to contain %q", resp.Result, tc.message)
			}
			if got := len(resp.Warnings) > 0; got != tc.warned {
				t.Errorf("warnings %q, want some: %v", resp.Warnings, tc.warned)
			}
		})
	}
}

func TestMalformedRequestsGetReadableErrors(t *testing.T) {
	s := startServer(t, webhook.Options{})
	review, _ := readFixture(t)
	for _, tc := range []struct {
		name, body, ctype string
		code              int
		text              string
	}{
		{"not JSON", "{not json", "application/json", 400, "malformed AdmissionReview"},
		{"empty", "", "application/json", 400, "malformed AdmissionReview"},
		{"wrong version", `{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}`, "application/json", 400, "want apiVersion admission.k8s.io/v1"},
		{"no request", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, "application/json", 400, "has no request"},
		{"no uid", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}`, "application/json", 400, "has no uid"},
		{"wrong type", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}`, "application/json", 400, "malformed AdmissionReview"},
		{"wrong type deeper", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","userInfo":{"groups":"admins"}}}`, "application/json", 400, "malformed AdmissionReview"},
		{"wrong kind type", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","kind":"Pod"}}`, "application/json", 400, "malformed AdmissionReview"},
		{"content type", string(review), "text/plain", 415, "want application/json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := s.post(t, []byte(tc.body), tc.ctype)
			if code != tc.code || !strings.Contains(string(body), tc.text) {
				t.Errorf("got %d %q, want %d with %q", code, body, tc.code, tc.text)
			}
		})
	}
	resp, err := s.client.Get(s.url + webhook.Path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET %s: %d", webhook.Path, resp.StatusCode)
	}
}

func TestOversizeBodyIs413(t *testing.T) {
	s := startServer(t, webhook.Options{MaxBodyBytes: 16 << 10})
	review, _ := readFixture(t)
	big := withRequest(t, review, func(req map[string]any) {
		meta := req["object"].(map[string]any)["metadata"].(map[string]any)
		meta["annotations"].(map[string]any)["filler"] = strings.Repeat("x", 32<<10)
	})
	code, body := s.post(t, big, "application/json")
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "larger than 16384 bytes") {
		t.Errorf("got %d %q", code, body)
	}
	// A review under the bound still works on a fresh request.
	if resp := s.review(t, review); resp.Patch == nil {
		t.Errorf("a normal review after the oversize one got no patch")
	}
}

func TestHealthzAndTLSOnly(t *testing.T) {
	s := startServer(t, webhook.Options{})
	resp, err := s.client.Get(s.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok\n" {
		t.Errorf("/healthz: %d %q", resp.StatusCode, b)
	}
	plain := &http.Client{Timeout: 5 * time.Second}
	resp, err = plain.Get("http://" + strings.TrimPrefix(s.url, "https://") + "/healthz")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("plain HTTP was served")
		}
	}
	// An unverified certificate is refused by a client that checks.
	strict := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	if resp, err := strict.Get(s.url + "/healthz"); err == nil {
		resp.Body.Close()
		t.Errorf("a client without the CA accepted the certificate")
	}
	strict.CloseIdleConnections()
}

// TestCertificateReload: renewed files (as cert-manager writes them) are
// served on the next handshake without a restart.
func TestCertificateReload(t *testing.T) {
	s := startServer(t, webhook.Options{})
	serial := func(pool *tls.Config) string {
		conn, err := tls.Dial("tcp", strings.TrimPrefix(s.url, "https://"), pool)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	if got := serial(&tls.Config{RootCAs: s.certs.Pool}); got != s.certs.Serial.String() {
		t.Fatalf("serving serial %s, want %s", got, s.certs.Serial)
	}
	renewed := webhooktest.Write(t, s.dir)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := serial(&tls.Config{RootCAs: renewed.Pool})
		if got == renewed.Serial.String() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still serving %s after the renewal", got)
		}
		// mtime granularity: touch the cert again to make the change visible.
		os.Chtimes(renewed.CertFile, time.Now(), time.Now())
	}
	// Broken files keep the last good certificate.
	os.WriteFile(s.certs.CertFile, []byte("garbage"), 0o600)
	if got := serial(&tls.Config{RootCAs: renewed.Pool}); got != renewed.Serial.String() {
		t.Errorf("after a broken renewal serving %s", got)
	}
}
