package inject

import (
	"fmt"
	"strings"
)

// Outcome is what the injector did with one object.
type Outcome int

const (
	// Injected: the ferry container was added.
	Injected Outcome = iota
	// Refused: a workload that ferry could inject, left untouched for the
	// Report's Reason.
	Refused
	// Skipped: not a workload (a Service, a ConfigMap, an unknown kind);
	// passed through untouched.
	Skipped
)

func (o Outcome) String() string {
	switch o {
	case Injected:
		return "injected"
	case Refused:
		return "not injected"
	case Skipped:
		return "skipped"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Report says what happened to one object, and why.
type Report struct {
	// Kind, Namespace and Name identify the object; Name is the
	// generateName followed by "*" when the object has no name yet.
	Kind      string
	Namespace string
	Name      string
	Outcome   Outcome
	// Reason explains a refusal or a skip; empty when injected. A
	// refusal for several bad annotations joins them with "; ".
	Reason string
	// Reasons lists those reasons one by one when there are several
	// (nil otherwise), for a reader that shows one line each.
	Reasons []string
	// Warnings are worth telling the user even when ferry was injected
	// (an unknown ferry.io/ annotation, a shutdown longer than the pod's
	// grace period).
	Warnings []string
	// optedOut marks the refusals that are the pod's normal state rather
	// than a problem: injection disabled, or already injected.
	optedOut bool
}

// OptedOut reports whether the object was refused because its annotation
// disables injection or because it is already injected: expected states,
// which the webhook does not warn about.
func (r Report) OptedOut() bool { return r.optedOut }

// Object names the object: "deployment shop/web", "pod web".
func (r Report) Object() string {
	kind := strings.ToLower(r.Kind)
	if kind == "" {
		kind = "object"
	}
	name := r.Name
	if name == "" {
		name = "(unnamed)"
	}
	if r.Namespace != "" {
		name = r.Namespace + "/" + name
	}
	return kind + " " + name
}

// String is one line: "deployment web: not injected: hostNetwork pod ...".
// A refusal for several reasons gives them all, joined with "; "; Lines
// gives one line for each.
func (r Report) String() string {
	s := r.Object() + ": " + r.Outcome.String()
	if r.Reason != "" {
		s += ": " + r.Reason
	}
	return s
}

// Lines is String as one line per reason: a refusal for several bad
// annotations names the object on each.
func (r Report) Lines() []string {
	if len(r.Reasons) < 2 {
		return []string{r.String()}
	}
	out := make([]string, len(r.Reasons))
	for i, reason := range r.Reasons {
		out[i] = r.Object() + ": " + r.Outcome.String() + ": " + reason
	}
	return out
}
