package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"

	"github.com/ferrymesh/ferry/deploy/inject"
)

// DefaultMaxBodyBytes bounds an AdmissionReview request: a Pod is at most
// about 1.5 MiB in etcd, and the review wraps one of them on CREATE.
const DefaultMaxBodyBytes = 4 << 20

// Path is where the API server sends AdmissionReviews.
const Path = "/inject"

// Options configure the handler. The zero value is usable.
type Options struct {
	// MaxBodyBytes answers 413 above it. Zero: DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Log receives one line per review. Nil: discarded.
	Log *slog.Logger
}

// NewHandler serves
//
//	POST /inject   AdmissionReview v1 in, AdmissionReview with a JSONPatch out
//	GET  /healthz  200 "ok"
//
// A pod the injector refuses, and any object that is not a pod being
// created, is allowed without a patch, with the reason in the response's
// status message, and in a warning unless the pod opted out or is already
// injected. A request that is not a readable
// AdmissionReview gets a 4xx with a plain-text reason, never a 500.
func NewHandler(inj *inject.Injector, opts Options) http.Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	h := &handler{inj: inj, opts: opts}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+Path, h.review)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	return mux
}

type handler struct {
	inj  *inject.Injector
	opts Options
}

func httpError(w http.ResponseWriter, code int, format string, args ...any) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	fmt.Fprintf(w, "ferry webhook: "+format+"\n", args...)
}

func (h *handler) review(w http.ResponseWriter, r *http.Request) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		httpError(w, http.StatusUnsupportedMediaType, "Content-Type %q: want application/json", r.Header.Get("Content-Type"))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpError(w, http.StatusRequestEntityTooLarge, "request body larger than %d bytes", tooBig.Limit)
			return
		}
		httpError(w, http.StatusBadRequest, "reading the request body: %v", err)
		return
	}
	var rev admissionReview
	if err := json.Unmarshal(body, &rev); err != nil {
		httpError(w, http.StatusBadRequest, "malformed AdmissionReview: %v", err)
		return
	}
	if rev.APIVersion != "admission.k8s.io/v1" || rev.Kind != "AdmissionReview" {
		httpError(w, http.StatusBadRequest, "want apiVersion admission.k8s.io/v1 kind AdmissionReview, got %q %q", rev.APIVersion, rev.Kind)
		return
	}
	if rev.Request == nil {
		httpError(w, http.StatusBadRequest, "AdmissionReview has no request")
		return
	}
	if rev.Request.UID == "" {
		httpError(w, http.StatusBadRequest, "AdmissionReview request has no uid")
		return
	}
	resp := h.admit(rev.Request)
	out, err := json.Marshal(admissionReview{Kind: rev.Kind, APIVersion: rev.APIVersion, Response: resp})
	if err != nil {
		// Cannot happen for these types; still answer something readable.
		httpError(w, http.StatusInternalServerError, "encoding the response: %v", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(out)
}

// admit decides one request. It always allows: ferry never blocks a pod.
func (h *handler) admit(req *admissionRequest) *admissionResponse {
	resp := &admissionResponse{UID: req.UID, Allowed: true}
	name := req.Name
	if name == "" {
		name = "(new pod)"
	}
	log := h.opts.Log.With("uid", req.UID, "namespace", req.Namespace, "name", name)
	skip := func(reason string, warn bool) *admissionResponse {
		msg := "ferry: not injected: " + reason
		resp.Result = &status{Message: msg}
		if warn {
			resp.Warnings = append(resp.Warnings, msg)
		}
		log.Info("not injected", "reason", reason)
		return resp
	}
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.Kind.Version != "v1" {
		return skip(fmt.Sprintf("%s is not a v1 Pod", req.Kind.String()), false)
	}
	if req.Operation != operationCreate {
		return skip(fmt.Sprintf("operation %s: ferry injects on CREATE only", req.Operation), false)
	}
	if req.SubResource != "" {
		return skip(fmt.Sprintf("subresource %s", req.SubResource), false)
	}
	if len(req.Object) == 0 {
		return skip("the request carries no object", true)
	}
	orig, err1 := decode(req.Object)
	pod, err2 := decode(req.Object)
	if err := errors.Join(err1, err2); err != nil {
		return skip(fmt.Sprintf("cannot decode the pod: %v", err), true)
	}
	for _, m := range []map[string]any{orig, pod} {
		// The API server sends both; default them so the injector sees a Pod.
		if _, ok := m["apiVersion"]; !ok {
			m["apiVersion"] = "v1"
		}
		if _, ok := m["kind"]; !ok {
			m["kind"] = "Pod"
		}
	}
	if pod["kind"] != "Pod" || pod["apiVersion"] != "v1" {
		return skip(fmt.Sprintf("the object is %v %v, not a v1 Pod", pod["apiVersion"], pod["kind"]), true)
	}
	changed, reps := h.inj.InjectObject(pod)
	rep := reps[0]
	if !changed {
		return skip(rep.Reason, rep.Outcome == inject.Refused && !rep.OptedOut())
	}
	patch, err := json.Marshal(Diff(orig, pod))
	if err != nil {
		return skip(fmt.Sprintf("encoding the patch: %v", err), true)
	}
	pt := patchTypeJSONPatch
	resp.Patch, resp.PatchType = patch, &pt
	resp.Result = &status{Message: "ferry: injected"}
	for _, w := range rep.Warnings {
		resp.Warnings = append(resp.Warnings, "ferry: "+w)
	}
	log.Info("injected", "warnings", strings.Join(rep.Warnings, "; "))
	return resp
}

func decode(raw []byte) (map[string]any, error) {
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errors.New("null object")
	}
	return m, nil
}
