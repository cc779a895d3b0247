package inject

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferrymesh/ferry/discovery"
	"github.com/ferrymesh/ferry/internal/dialhost"
)

// plan is everything the injection of one pod needs, read from the
// annotations over the injector's options.
type plan struct {
	upstreams       []Upstream
	inboundPort     int32 // 0: no inbound listener
	inboundProtocol string
	inboundHost     string // the app's host (AnnotationInboundHost)
	register        *registration
	consulAddr      string
	consulToken     *secretKeySelector
	otelEndpoint    string
	image           string
	resources       resourceRequirements
	// annotated names the annotation each of ferry's resources came from,
	// by "requests/cpu", "limits/memory"...; absent: the injector's default.
	annotated     map[string]string
	native        bool
	preStopSleep  time.Duration
	shutdownDelay time.Duration
	shutdownGrace time.Duration
	logLevel      string
}

type registration struct {
	name string
	tags []string
	meta map[string]string
}

// usesConsul reports whether the generated config talks to Consul.
func (p *plan) usesConsul() bool {
	if p.register != nil {
		return true
	}
	for _, u := range p.upstreams {
		if len(u.Endpoints) == 0 {
			return true
		}
	}
	return false
}

// annotationError names the annotation whose value is wrong.
func annotationError(key, value string, err error) error {
	return fmt.Errorf("invalid annotation %s=%q: %w", key, value, err)
}

var (
	metaKeyRE = lazyRegexp(`^[A-Za-z0-9_-]{1,128}$`)
	// A Secret name is a DNS-1123 subdomain and a key a ConfigMap key, as
	// the API server checks a secretKeyRef (at most 253 characters each;
	// checkSecretKeySelector).
	secretNameRE = lazyRegexp(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	secretKeyRE  = lazyRegexp(`^[-._a-zA-Z0-9]+$`)
)

// makePlan reads the annotations of one pod. ann is the merged annotation
// set; spec is the pod spec (for the inbound port).
func (o *Options) makePlan(ann map[string]string, spec *podSpec) (*plan, []error) {
	p := &plan{
		inboundProtocol: "auto",
		inboundHost:     "127.0.0.1",
		consulAddr:      o.ConsulAddr,
		otelEndpoint:    o.OTelEndpoint,
		image:           o.Image,
		resources:       o.resources.clone(),
		native:          !o.DisableNativeSidecar,
		preStopSleep:    o.PreStopSleep,
		shutdownDelay:   o.ShutdownDelay,
		shutdownGrace:   o.ShutdownGrace,
	}
	get := func(k string) (string, bool) {
		v, ok := ann[k]
		return strings.TrimSpace(v), ok
	}
	var errs []error
	bad := func(err error) { errs = append(errs, err) }
	var err error
	if v, ok := get(AnnotationUpstreams); ok {
		if p.upstreams, err = ParseUpstreams(v); err != nil {
			p.upstreams = nil
			bad(annotationError(AnnotationUpstreams, v, err))
		}
	}
	if p.inboundPort, err = inboundPort(ann, spec); err != nil {
		bad(err)
	}
	if v, ok := get(AnnotationInboundProtocol); ok {
		if err := checkProtocol(v); err != nil {
			bad(annotationError(AnnotationInboundProtocol, v, err))
		}
		p.inboundProtocol = v
	}
	if v, ok := get(AnnotationInboundHost); ok {
		// No brackets in an IPv6 zone (which netip takes): the address
		// gets its own. A '$' is escaped when rendered (inboundApp).
		if v != podIPRef && (!dialhost.Valid(v) || strings.ContainsAny(v, "[]")) {
			bad(annotationError(AnnotationInboundHost, v, fmt.Errorf("want an IP address, a host name or %s", podIPRef)))
		}
		p.inboundHost = v
	}
	errs = append(errs, p.readRegistration(get)...)
	if v, ok := get(AnnotationConsulAddr); ok {
		if err := checkConsulAddr(v); err != nil {
			bad(annotationError(AnnotationConsulAddr, v, err))
		}
		p.consulAddr = v
	}
	if v, ok := get(AnnotationConsulTokenSecret); ok {
		name, key, found := strings.Cut(v, ":")
		if !found {
			bad(annotationError(AnnotationConsulTokenSecret, v, fmt.Errorf("want SECRET-NAME:KEY")))
		} else if err := checkSecretKeySelector(name, key); err != nil {
			bad(annotationError(AnnotationConsulTokenSecret, v, err))
		}
		p.consulToken = &secretKeySelector{Name: name, Key: key}
	}
	if v, ok := get(AnnotationOTelEndpoint); ok {
		if err := checkOTelEndpoint(v); err != nil {
			bad(annotationError(AnnotationOTelEndpoint, v, err))
		}
		p.otelEndpoint = v
	}
	if v, ok := get(AnnotationImage); ok {
		if v == "" || strings.ContainsAny(v, " \t\n$") {
			bad(annotationError(AnnotationImage, v, fmt.Errorf("not an image reference")))
		}
		p.image = v
	}
	errs = append(errs, p.readResources(get)...)
	if v, ok := get(AnnotationNativeSidecar); ok {
		switch v {
		case "true":
			p.native = true
		case "false":
			p.native = false
		default:
			bad(annotationError(AnnotationNativeSidecar, v, fmt.Errorf("want true or false")))
		}
	}
	if v, ok := get(AnnotationPreStopSleep); ok {
		if p.preStopSleep, err = ParsePreStopSleep(v); err != nil {
			bad(annotationError(AnnotationPreStopSleep, v, err))
		}
	}
	for _, d := range []struct {
		key string
		dst *time.Duration
	}{
		{AnnotationShutdownDelay, &p.shutdownDelay},
		{AnnotationShutdownGrace, &p.shutdownGrace},
	} {
		if v, ok := get(d.key); ok {
			if *d.dst, err = parseDuration(v, false); err != nil {
				bad(annotationError(d.key, v, err))
			} else if d.key == AnnotationShutdownGrace && *d.dst == 0 {
				// ferry's config cannot say "no grace": it reads 0 as 30s.
				bad(annotationError(d.key, v, errZeroGrace))
			}
		}
	}
	if v, ok := get(AnnotationLogLevel); ok {
		switch v {
		case "debug", "info", "warn", "error":
			p.logLevel = v
		default:
			bad(annotationError(AnnotationLogLevel, v, fmt.Errorf("want debug, info, warn or error")))
		}
	}
	return p, errs
}

func (p *plan) readRegistration(get func(string) (string, bool)) []error {
	name, ok := get(AnnotationConsulService)
	if !ok {
		var errs []error
		for _, k := range []string{AnnotationConsulTags, AnnotationConsulMeta} {
			if _, set := get(k); set {
				errs = append(errs, fmt.Errorf("annotation %s needs %s (the name to register)", k, AnnotationConsulService))
			}
		}
		return errs
	}
	var errs []error
	if !serviceNameRE().MatchString(name) {
		errs = append(errs, annotationError(AnnotationConsulService, name, fmt.Errorf("invalid Consul service name: letters, digits, '.', '_' and '-'")))
	}
	r := &registration{name: name, meta: map[string]string{}}
	if v, ok := get(AnnotationConsulTags); ok {
		for _, t := range splitList(v) {
			if !tagRE().MatchString(t) {
				errs = append(errs, annotationError(AnnotationConsulTags, v, fmt.Errorf("invalid tag %q", t)))
				break
			}
			if !slices.Contains(r.tags, t) {
				r.tags = append(r.tags, t)
			}
		}
	}
	if v, ok := get(AnnotationConsulMeta); ok {
		if err := r.readMeta(v); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errs
	}
	p.register = r
	return nil
}

// readMeta reads AnnotationConsulMeta's value v into r.meta.
func (r *registration) readMeta(v string) error {
	for _, kv := range splitList(v) {
		k, val, found := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		switch {
		case !found:
			return annotationError(AnnotationConsulMeta, v, fmt.Errorf("%q: want key=value", kv))
		case !metaKeyRE().MatchString(k):
			return annotationError(AnnotationConsulMeta, v, fmt.Errorf("invalid key %q: letters, digits, '_' and '-', at most 128", k))
		case k == metaNamespace || k == metaPod:
			return annotationError(AnnotationConsulMeta, v, fmt.Errorf("key %q is set by ferry", k))
		}
		if _, dup := r.meta[k]; dup {
			return annotationError(AnnotationConsulMeta, v, fmt.Errorf("key %q given twice", k))
		}
		r.meta[k] = strings.TrimSpace(val)
	}
	// Beside ferry's own keys (their values stand in for what kubelet
	// puts there: a namespace and a pod name, within Consul's limits).
	all := maps.Clone(r.meta)
	all[metaNamespace], all[metaPod] = "namespace", "pod"
	if _, err := discovery.CheckMeta(all); err != nil {
		return annotationError(AnnotationConsulMeta, v, err)
	}
	return nil
}

// Registration meta keys ferry always sets.
const (
	metaNamespace = "k8s-namespace"
	metaPod       = "k8s-pod"
)

func (p *plan) readResources(get func(string) (string, bool)) []error {
	var errs []error
	annotations := []struct {
		key  string
		list *resourceList
		name string
		what string
	}{
		{AnnotationCPURequest, &p.resources.Requests, "cpu", "requests"},
		{AnnotationCPULimit, &p.resources.Limits, "cpu", "limits"},
		{AnnotationMemoryRequest, &p.resources.Requests, "memory", "requests"},
		{AnnotationMemoryLimit, &p.resources.Limits, "memory", "limits"},
	}
	for _, r := range annotations {
		v, ok := get(r.key)
		if !ok {
			continue
		}
		q, err := parseQuantity(v)
		if err != nil {
			errs = append(errs, annotationError(r.key, v, fmt.Errorf("not a quantity such as 100m or 128Mi")))
			continue
		}
		if q.Sign() <= 0 {
			errs = append(errs, annotationError(r.key, v, fmt.Errorf("must be positive")))
			continue
		}
		if *r.list == nil {
			*r.list = resourceList{}
		}
		(*r.list)[r.name] = q
		if p.annotated == nil {
			p.annotated = map[string]string{}
		}
		p.annotated[r.what+"/"+r.name] = r.key
	}
	if len(errs) > 0 {
		return errs
	}
	// A limit below its request: name the annotation that set it, and
	// the other one when it is the default.
	for _, name := range []string{"cpu", "memory"} {
		req, hasReq := p.resources.Requests[name]
		lim, hasLim := p.resources.Limits[name]
		if !hasReq || !hasLim || lim.Cmp(req) >= 0 {
			continue
		}
		var reqKey, limKey string
		for _, r := range annotations {
			if r.name == name && r.what == "requests" {
				reqKey = r.key
			} else if r.name == name {
				limKey = r.key
			}
		}
		_, reqSet := p.annotated["requests/"+name]
		limValue, limSet := get(limKey)
		reqValue, _ := get(reqKey)
		switch {
		case limSet && reqSet:
			errs = append(errs, annotationError(limKey, limValue, fmt.Errorf("below %s=%q", reqKey, reqValue)))
		case limSet:
			errs = append(errs, annotationError(limKey, limValue, fmt.Errorf("below ferry's default %s request %s (set %s too)", name, req, reqKey)))
		default:
			errs = append(errs, annotationError(reqKey, reqValue, fmt.Errorf("above ferry's default %s limit %s (set %s too)", name, lim, limKey)))
		}
	}
	return errs
}

// inboundPort resolves AnnotationInboundPort, or the default container's
// first TCP port when it is absent.
func inboundPort(ann map[string]string, spec *podSpec) (int32, error) {
	v, ok := ann[AnnotationInboundPort]
	v = strings.TrimSpace(v)
	if !ok {
		c := defaultContainer(ann, spec)
		if c == nil {
			return 0, nil
		}
		for _, port := range c.Ports {
			if port.Protocol == "" || port.Protocol == "TCP" {
				return port.ContainerPort, nil
			}
		}
		return 0, nil
	}
	if v == "none" {
		return 0, nil
	}
	if n, isNumber, err := portNumber(v); isNumber {
		if err != nil {
			return 0, annotationError(AnnotationInboundPort, v, err)
		}
		return n, nil
	}
	for _, c := range spec.Containers {
		for _, port := range c.Ports {
			if port.Name == v {
				return port.ContainerPort, nil
			}
		}
	}
	return 0, annotationError(AnnotationInboundPort, v, fmt.Errorf("no container declares a port of that name (want a number, a port name or none)"))
}

// portNumber reads a port number as Kubernetes writes one: plain decimal
// digits, 1-65535. isNumber reports a value meant as a number (digits,
// signed or not), which is never a port name: a name has a letter and no
// sign. A sign or a leading zero is refused rather than read past ("+80",
// "080" as 80: another reader may take 080 for octal, or refuse it).
func portNumber(v string) (n int32, isNumber bool, err error) {
	digits := strings.TrimLeft(v, "+-")
	if digits == "" || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, false, nil
	}
	switch {
	case digits != v:
		return 0, true, fmt.Errorf("a port number has no sign: want plain digits 1-65535")
	case len(v) > 1 && v[0] == '0':
		return 0, true, fmt.Errorf("a port number has no leading zero: want plain digits 1-65535")
	}
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 || p > 65535 {
		return 0, true, fmt.Errorf("not a port (1-65535)")
	}
	return int32(p), true, nil
}

// defaultContainer is the container kubectl picks by default: the one named
// by kubectl.kubernetes.io/default-container, else the first.
func defaultContainer(ann map[string]string, spec *podSpec) *appContainer {
	if name := ann["kubectl.kubernetes.io/default-container"]; name != "" {
		for i := range spec.Containers {
			if spec.Containers[i].Name == name {
				return &spec.Containers[i]
			}
		}
	}
	if len(spec.Containers) == 0 {
		return nil
	}
	return &spec.Containers[0]
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// parseDuration accepts a Go duration ("5s", "1m30s") or whole seconds
// ("5"), not negative.
func parseDuration(v string, wholeSeconds bool) (time.Duration, error) {
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		// Bounded before it is multiplied: a large count of seconds
		// would wrap around to any duration, even a short positive one.
		switch {
		case n < 0:
			return 0, fmt.Errorf("must not be negative")
		case n > int64(time.Hour/time.Second):
			return 0, fmt.Errorf("more than an hour")
		}
		d = time.Duration(n) * time.Second
	} else if d, err = time.ParseDuration(v); err != nil {
		return 0, errDurationForm
	}
	if d < 0 {
		return 0, fmt.Errorf("must not be negative")
	}
	if d > time.Hour {
		return 0, fmt.Errorf("more than an hour")
	}
	if wholeSeconds && d%time.Second != 0 {
		return 0, fmt.Errorf("must be a whole number of seconds")
	}
	return d, nil
}

// checkOTelEndpoint accepts what ferry's telemetry accepts in
// OTEL_EXPORTER_OTLP_ENDPOINT once kubelet expanded it (ferry exits at
// start on anything else): an http(s) URL with a host and, if any, a port
// in 1-65535. It may name $(HOST_IP) for a collector on the node, or the
// pod's other downward-API variables.
func checkOTelEndpoint(v string) error {
	if strings.ContainsAny(v, " \t\n") {
		return fmt.Errorf("want an http:// or https:// URL")
	}
	u, err := url.Parse(expandSample(v))
	if err != nil {
		return fmt.Errorf("want an http:// or https:// URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("want an http:// or https:// URL")
	}
	if u.Host == "" {
		return fmt.Errorf("want an http:// or https:// URL with a host")
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q is not 1-65535", port)
		}
	}
	return nil
}

// checkConsulAddr accepts what ferry's Consul client accepts in
// CONSUL_HTTP_ADDR once kubelet expanded it (ferry exits at start on
// another scheme): host:port, or http://, https:// or unix:// in front.
func checkConsulAddr(v string) error {
	if v == "" || strings.ContainsAny(v, " \t\n") {
		return fmt.Errorf("want host:port, http(s)://host:port or unix:///path")
	}
	if scheme, _, ok := strings.Cut(expandSample(v), "://"); ok {
		switch scheme {
		case "http", "https", "unix":
		default:
			return fmt.Errorf("scheme %q: want host:port, http(s)://host:port or unix:///path", scheme)
		}
	}
	return nil
}

// podIPRef is the pod's own address as kubelet expands it in ferry's
// config (the container defines POD_IP from the downward API).
const podIPRef = "$(POD_IP)"

// inboundApp is inbound.app: the app's host and port. $(POD_IP) goes in
// brackets, which hold an IPv4 address as well as the IPv6 one kubelet
// may put there ("[fd00::5]:8080"; bare, "fd00::5:8080" would not parse).
func (p *plan) inboundApp() string {
	port := strconv.Itoa(int(p.inboundPort))
	if p.inboundHost == podIPRef {
		return "[" + podIPRef + "]:" + port
	}
	return net.JoinHostPort(escapeEnv(p.inboundHost), port)
}

// sampleEnv holds a value of the kind kubelet gives each variable the
// ferry container defines from the downward API.
var sampleEnv = map[string]string{
	"POD_NAME": "pod", "POD_NAMESPACE": "namespace", "POD_IP": "10.0.0.1", "HOST_IP": "10.0.0.2",
}

// expandSample expands $(VAR) as kubelet will, with sampleEnv's values.
func expandSample(s string) string { return expandVars(s, sampleEnv) }

// expandVars does what kubelet does with $(VAR) in an env value or an
// arg: "$$" is "$", $(NAME) of a variable in vars is its value, anything
// else is kept as written.
func expandVars(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '$' && i+1 < len(s) {
			switch s[i+1] {
			case '$':
				b.WriteByte('$')
				i++
				continue
			case '(':
				if j := strings.IndexByte(s[i+2:], ')'); j >= 0 {
					if v, ok := vars[s[i+2:i+2+j]]; ok {
						b.WriteString(v)
						i += 2 + j
						continue
					}
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// checkSecretKeySelector accepts what the API server accepts in an env
// secretKeyRef: a Secret name that is a DNS-1123 subdomain and a key of
// letters, digits, '-', '_' and '.' that is not "." or "..", nor starts
// with "..", each at most 253 characters.
func checkSecretKeySelector(name, key string) error {
	if len(name) > 253 || !secretNameRE().MatchString(name) {
		return fmt.Errorf("want SECRET-NAME:KEY; the Secret name %q is not a DNS subdomain (lower-case letters, digits, '-' and '.' between labels, at most 253 characters)", name)
	}
	if len(key) > 253 || !secretKeyRE().MatchString(key) || key == "." || strings.HasPrefix(key, "..") {
		return fmt.Errorf("want SECRET-NAME:KEY; the key %q is not a Secret key (letters, digits, '-', '_' and '.', not \".\" nor starting with \"..\", at most 253 characters)", key)
	}
	return nil
}
