package telemetry

import (
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ferrymesh/ferry/internal/dialhost"
)

// Config is the `telemetry:` section of ferry's config file. Every field is
// optional: a zero value means "take it from the standard OTEL_* environment
// variable named in the field comment, else the default". A set field
// overrides the environment.
type Config struct {
	// ServiceName is the service.name resource attribute.
	// Env OTEL_SERVICE_NAME; default "ferry".
	ServiceName string `yaml:"service_name"`

	// ResourceAttributes are added to the resource; they override the
	// same keys of OTEL_RESOURCE_ATTRIBUTES (k1=v1,k2=v2, percent-encoded).
	ResourceAttributes map[string]string `yaml:"resource_attributes"`

	// TracesExporter is "otlp" or "none". Env OTEL_TRACES_EXPORTER.
	// Default: "otlp" when an OTLP endpoint is configured, else "none":
	// ferry does not export to a guessed localhost collector.
	TracesExporter string `yaml:"traces_exporter"`

	// Endpoint is the OTLP base URL (http://host:4317 for grpc,
	// http://host:4318 for http/protobuf; "/v1/traces" is appended for
	// http/protobuf). An http:// scheme means plaintext.
	// Env OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as is), then
	// OTEL_EXPORTER_OTLP_ENDPOINT.
	Endpoint string `yaml:"endpoint"`

	// Protocol is "grpc" or "http/protobuf". Env
	// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, then OTEL_EXPORTER_OTLP_PROTOCOL;
	// default "grpc".
	Protocol string `yaml:"protocol"`

	// Sampler is one of always_on, always_off, traceidratio,
	// parentbased_always_on, parentbased_always_off, parentbased_traceidratio.
	// Env OTEL_TRACES_SAMPLER; default parentbased_always_on, which keeps the
	// caller's sampling decision.
	Sampler string `yaml:"sampler"`

	// SamplerArg is the ratio for the traceidratio samplers, in [0, 1].
	// Env OTEL_TRACES_SAMPLER_ARG; default 1.
	SamplerArg *float64 `yaml:"sampler_arg"`

	// Propagators lists tracecontext, baggage, b3 (single header), b3multi or
	// none. Env OTEL_PROPAGATORS; default [tracecontext, baggage].
	Propagators []string `yaml:"propagators"`

	// QueueSize bounds the finished spans waiting for export; beyond it spans
	// are dropped and counted. Env OTEL_BSP_MAX_QUEUE_SIZE; default 2048.
	QueueSize int `yaml:"queue_size"`

	// BatchSize is the most spans sent in one export.
	// Env OTEL_BSP_MAX_EXPORT_BATCH_SIZE; default 512 (at most QueueSize).
	BatchSize int `yaml:"batch_size"`

	// BatchTimeout is the longest a finished span waits before export.
	// Env OTEL_BSP_SCHEDULE_DELAY (milliseconds); default 5s.
	BatchTimeout time.Duration `yaml:"batch_timeout"`

	// ExportTimeout bounds one export call.
	// Env OTEL_BSP_EXPORT_TIMEOUT (milliseconds); default 30s.
	ExportTimeout time.Duration `yaml:"export_timeout"`

	// AccessLog is "stderr" (default), "stdout", "off", or a file path
	// (opened for append).
	AccessLog string `yaml:"access_log"`
}

// Defaults applied when neither the config nor the environment say otherwise.
const (
	DefaultServiceName   = "ferry"
	DefaultQueueSize     = 2048
	DefaultBatchSize     = 512
	DefaultBatchTimeout  = 5 * time.Second
	DefaultExportTimeout = 30 * time.Second
)

// Sampler names accepted in Config.Sampler and OTEL_TRACES_SAMPLER.
const (
	SamplerAlwaysOn                = "always_on"
	SamplerAlwaysOff               = "always_off"
	SamplerTraceIDRatio            = "traceidratio"
	SamplerParentBasedAlwaysOn     = "parentbased_always_on"
	SamplerParentBasedAlwaysOff    = "parentbased_always_off"
	SamplerParentBasedTraceIDRatio = "parentbased_traceidratio"
)

// Protocols accepted in Config.Protocol and OTEL_EXPORTER_OTLP_PROTOCOL.
const (
	ProtocolGRPC         = "grpc"
	ProtocolHTTPProtobuf = "http/protobuf"
)

// Validate checks the config's own keys, leaving the environment out (New
// reads it): the error, if any, names its key ("telemetry.sampler: ...").
func (c Config) Validate() error {
	_, err := resolve(c, func(string) string { return "" })
	return err
}

// settings is the effective configuration after environment and overrides.
type settings struct {
	serviceName   string
	resource      map[string]string
	tracing       bool
	endpoint      *url.URL // full URL the exporter sends to
	protocol      string
	sampler       string
	samplerArg    float64
	propagators   []string
	queueSize     int
	batchSize     int
	batchTimeout  time.Duration
	exportTimeout time.Duration
	otlp          otlpSettings // exporter environment, read when tracing
	spanLimits    spanLimits   // OTEL_*_LIMIT, read when tracing
	accessLog     string
}

// resolve merges cfg over the environment read through getenv (os.Getenv
// when nil). Errors name the config key ("telemetry.sampler") or the
// environment variable they came from.
func resolve(cfg Config, getenv func(string) string) (settings, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	s := settings{}

	// Service name and resource.
	s.serviceName = firstNonEmpty(cfg.ServiceName, getenv("OTEL_SERVICE_NAME"), DefaultServiceName)
	res, err := parseResourceAttributes(getenv("OTEL_RESOURCE_ATTRIBUTES"))
	if err != nil {
		return s, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	for k, v := range cfg.ResourceAttributes {
		if strings.TrimSpace(k) == "" {
			return s, fmt.Errorf("telemetry.resource_attributes: empty key")
		}
		res[k] = v
	}
	s.resource = res

	// Protocol.
	protoKey, proto := pick(cfg.Protocol, "telemetry.protocol", getenv,
		"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
	switch proto {
	case "":
		proto = ProtocolGRPC
	case ProtocolGRPC, ProtocolHTTPProtobuf:
	default:
		return s, fmt.Errorf("%s: unknown %q (want %q or %q)", protoKey, proto, ProtocolGRPC, ProtocolHTTPProtobuf)
	}
	s.protocol = proto

	// Endpoint. The signal-specific variable is a full URL; the generic one
	// (and the config key) is a base URL.
	var endpoint *url.URL
	if cfg.Endpoint != "" {
		if endpoint, err = parseEndpoint(cfg.Endpoint, proto, true); err != nil {
			return s, fmt.Errorf("telemetry.endpoint: %w", err)
		}
	} else if v := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); v != "" {
		if endpoint, err = parseEndpoint(v, proto, false); err != nil {
			return s, fmt.Errorf("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: %w", err)
		}
	} else if v := getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); v != "" {
		if endpoint, err = parseEndpoint(v, proto, true); err != nil {
			return s, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w", err)
		}
	}

	// Exporter: on when asked for, or when an endpoint is configured.
	expKey, exp := pick(cfg.TracesExporter, "telemetry.traces_exporter", getenv, "OTEL_TRACES_EXPORTER")
	switch exp {
	case "":
		s.tracing = endpoint != nil
	case "otlp":
		s.tracing = true
	case "none":
		s.tracing = false
	default:
		return s, fmt.Errorf("%s: unknown %q (want \"otlp\" or \"none\")", expKey, exp)
	}
	if v := getenv("OTEL_SDK_DISABLED"); v != "" {
		disabled, perr := parseEnvBool(v)
		if perr != nil {
			return s, fmt.Errorf("OTEL_SDK_DISABLED: %w", perr)
		}
		if disabled && cfg.TracesExporter == "" {
			s.tracing = false
		}
	}
	if s.tracing && endpoint == nil {
		def := "http://localhost:4317"
		if proto == ProtocolHTTPProtobuf {
			def = "http://localhost:4318"
		}
		endpoint, _ = parseEndpoint(def, proto, true)
	}
	s.endpoint = endpoint
	s.spanLimits = defaultSpanLimits()
	if s.tracing {
		if s.otlp, err = resolveOTLP(getenv, nil); err != nil {
			return s, err
		}
		if s.spanLimits, err = resolveSpanLimits(getenv); err != nil {
			return s, err
		}
	}

	// Sampler.
	smpKey, smp := pick(cfg.Sampler, "telemetry.sampler", getenv, "OTEL_TRACES_SAMPLER")
	switch smp {
	case "":
		smp = SamplerParentBasedAlwaysOn
	case SamplerAlwaysOn, SamplerAlwaysOff, SamplerTraceIDRatio,
		SamplerParentBasedAlwaysOn, SamplerParentBasedAlwaysOff, SamplerParentBasedTraceIDRatio:
	default:
		return s, fmt.Errorf("%s: unknown %q", smpKey, smp)
	}
	s.sampler = smp
	s.samplerArg = 1
	switch {
	case cfg.SamplerArg != nil:
		s.samplerArg = *cfg.SamplerArg
		if !(s.samplerArg >= 0 && s.samplerArg <= 1) { // NaN too
			return s, fmt.Errorf("telemetry.sampler_arg: %v is outside [0, 1]", s.samplerArg)
		}
	case getenv("OTEL_TRACES_SAMPLER_ARG") != "":
		v := getenv("OTEL_TRACES_SAMPLER_ARG")
		f, perr := strconv.ParseFloat(v, 64)
		if perr != nil || !(f >= 0 && f <= 1) { // NaN too
			return s, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG: %q is not a ratio in [0, 1]", v)
		}
		s.samplerArg = f
	}

	// Propagators.
	propKey := "telemetry.propagators"
	props := cfg.Propagators
	if len(props) == 0 {
		propKey = "OTEL_PROPAGATORS"
		for _, p := range strings.Split(getenv("OTEL_PROPAGATORS"), ",") {
			if p = strings.TrimSpace(p); p != "" {
				props = append(props, p)
			}
		}
	}
	if len(props) == 0 {
		props = []string{"tracecontext", "baggage"}
	}
	for _, p := range props {
		switch p {
		case "tracecontext", "baggage", "b3", "b3multi", "none":
		default:
			return s, fmt.Errorf("%s: unknown %q (want tracecontext, baggage, b3, b3multi or none)", propKey, p)
		}
	}
	s.propagators = props

	// Batch processor.
	if s.queueSize, err = pickInt(cfg.QueueSize, "telemetry.queue_size", getenv, "OTEL_BSP_MAX_QUEUE_SIZE", DefaultQueueSize); err != nil {
		return s, err
	}
	if s.batchSize, err = pickInt(cfg.BatchSize, "telemetry.batch_size", getenv, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DefaultBatchSize); err != nil {
		return s, err
	}
	s.batchSize = min(s.batchSize, s.queueSize)
	if s.batchTimeout, err = pickMillis(cfg.BatchTimeout, "telemetry.batch_timeout", getenv, "OTEL_BSP_SCHEDULE_DELAY", DefaultBatchTimeout); err != nil {
		return s, err
	}
	if s.exportTimeout, err = pickMillis(cfg.ExportTimeout, "telemetry.export_timeout", getenv, "OTEL_BSP_EXPORT_TIMEOUT", DefaultExportTimeout); err != nil {
		return s, err
	}

	s.accessLog = cfg.AccessLog
	if s.accessLog == "" {
		s.accessLog = "stderr"
	}
	return s, nil
}

// pick returns the config value when set, else the first set environment
// variable, with the key it came from.
func pick(cfgVal, cfgKey string, getenv func(string) string, envKeys ...string) (key, val string) {
	if cfgVal != "" {
		return cfgKey, strings.TrimSpace(cfgVal)
	}
	for _, k := range envKeys {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			return k, v
		}
	}
	return cfgKey, ""
}

func pickInt(cfgVal int, cfgKey string, getenv func(string) string, envKey string, def int) (int, error) {
	if cfgVal != 0 {
		if cfgVal < 0 {
			return 0, fmt.Errorf("%s: %d must be positive", cfgKey, cfgVal)
		}
		return cfgVal, nil
	}
	v := strings.TrimSpace(getenv(envKey))
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s: %q is not a positive integer", envKey, v)
	}
	return n, nil
}

func pickMillis(cfgVal time.Duration, cfgKey string, getenv func(string) string, envKey string, def time.Duration) (time.Duration, error) {
	if cfgVal != 0 {
		if cfgVal < 0 {
			return 0, fmt.Errorf("%s: %v must be positive", cfgKey, cfgVal)
		}
		return cfgVal, nil
	}
	v := strings.TrimSpace(getenv(envKey))
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s: %q is not a positive number of milliseconds", envKey, v)
	}
	return time.Duration(n) * time.Millisecond, nil
}

// parseEndpoint checks an OTLP endpoint URL. A base URL for http/protobuf
// gets "/v1/traces" appended.
func parseEndpoint(raw, proto string, base bool) (*url.URL, error) {
	u, err := url.Parse(bracketHost(strings.TrimSpace(raw)))
	if err != nil {
		return nil, fmt.Errorf("invalid URL %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("invalid URL %q: scheme must be http or https", raw)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("invalid URL %q: no host", raw)
	}
	if port := u.Port(); port != "" {
		if p, perr := strconv.Atoi(port); perr != nil || p <= 0 || p > 65535 {
			return nil, fmt.Errorf("invalid URL %q: bad port", raw)
		}
	}
	if proto == ProtocolHTTPProtobuf && base {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
	}
	return u, nil
}

// bracketHost puts brackets around an IPv6 address written with its port
// and without them ("http://fd00::2:4318", what the injector's
// http://$(HOST_IP):4318 becomes on an IPv6 node); any other text is
// returned as it is.
func bracketHost(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	host, path, _ := strings.Cut(rest, "/")
	if b := dialhost.Bracket(host); b != host {
		raw = scheme + "://" + b
		if len(host) < len(rest) {
			raw += "/" + path
		}
	}
	return raw
}

// parseResourceAttributes parses the OTEL_RESOURCE_ATTRIBUTES format:
// comma-separated key=value pairs, values percent-encoded.
func parseResourceAttributes(v string) (map[string]string, error) {
	out := map[string]string{}
	for _, pair := range strings.Split(v, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		k, val, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value", pair)
		}
		dec, err := url.PathUnescape(strings.TrimSpace(val))
		if err != nil {
			return nil, fmt.Errorf("value of %q: %w", k, err)
		}
		out[k] = dec
	}
	return out, nil
}

// parseEnvBool reads a boolean variable as the OpenTelemetry specification
// defines them: true only for a case-insensitive "true" (no other value may
// mean true), false for "false"; anything else is an error here rather than
// a silent false.
func parseEnvBool(v string) (bool, error) {
	switch v = strings.TrimSpace(v); {
	case strings.EqualFold(v, "true"):
		return true, nil
	case strings.EqualFold(v, "false"):
		return false, nil
	}
	return false, fmt.Errorf("not a boolean %q (want \"true\" or \"false\")", v)
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}
