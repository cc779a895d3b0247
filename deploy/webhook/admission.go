package webhook

import "bytes"

// The AdmissionReview v1 shapes the handler reads and writes, as its own
// types so that the binary does not carry the Kubernetes API packages.
// Field names, JSON tags and order follow k8s.io/api/admission/v1 (a test
// decodes every answer strictly with those types and checks that they
// encode it byte for byte the same). The request declares every field of
// AdmissionRequest, so a review with a field of the wrong type is refused
// as before; the objects stay raw JSON.

type admissionReview struct {
	Kind       string             `json:"kind,omitempty"`
	APIVersion string             `json:"apiVersion,omitempty"`
	Request    *admissionRequest  `json:"request,omitempty"`
	Response   *admissionResponse `json:"response,omitempty"`
}

type groupVersionKind struct {
	Group   string `json:"group"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
}

// String is how the Kubernetes API writes a GroupVersionKind.
func (k groupVersionKind) String() string {
	return k.Group + "/" + k.Version + ", Kind=" + k.Kind
}

type groupVersionResource struct {
	Group    string `json:"group"`
	Version  string `json:"version"`
	Resource string `json:"resource"`
}

type userInfo struct {
	Username string              `json:"username,omitempty"`
	UID      string              `json:"uid,omitempty"`
	Groups   []string            `json:"groups,omitempty"`
	Extra    map[string][]string `json:"extra,omitempty"`
}

// rawObject is a runtime.RawExtension: any JSON value, null read as none.
type rawObject []byte

func (r *rawObject) UnmarshalJSON(b []byte) error {
	if !bytes.Equal(b, []byte("null")) {
		*r = append((*r)[:0], b...)
	}
	return nil
}

func (r rawObject) MarshalJSON() ([]byte, error) {
	if r == nil {
		return []byte("null"), nil
	}
	return r, nil
}

type admissionRequest struct {
	UID                string                `json:"uid"`
	Kind               groupVersionKind      `json:"kind"`
	Resource           groupVersionResource  `json:"resource"`
	SubResource        string                `json:"subResource,omitempty"`
	RequestKind        *groupVersionKind     `json:"requestKind,omitempty"`
	RequestResource    *groupVersionResource `json:"requestResource,omitempty"`
	RequestSubResource string                `json:"requestSubResource,omitempty"`
	Name               string                `json:"name,omitempty"`
	Namespace          string                `json:"namespace,omitempty"`
	Operation          string                `json:"operation"`
	UserInfo           userInfo              `json:"userInfo"`
	Object             rawObject             `json:"object,omitempty"`
	OldObject          rawObject             `json:"oldObject,omitempty"`
	DryRun             *bool                 `json:"dryRun,omitempty"`
	Options            rawObject             `json:"options,omitempty"`
}

// status is the part of a metav1.Status the handler sets: the API server
// shows the message. metav1.Status always encodes its (empty) list
// metadata.
type status struct {
	Metadata struct{} `json:"metadata"`
	Message  string   `json:"message,omitempty"`
}

type admissionResponse struct {
	UID       string   `json:"uid"`
	Allowed   bool     `json:"allowed"`
	Result    *status  `json:"status,omitempty"`
	Patch     []byte   `json:"patch,omitempty"`
	PatchType *string  `json:"patchType,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
}

// patchTypeJSONPatch is the only patch type of admission v1.
const patchTypeJSONPatch = "JSONPatch"

// operationCreate is the admission operation ferry injects on.
const operationCreate = "CREATE"
