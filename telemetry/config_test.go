package telemetry

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestResolve(t *testing.T) {
	half := 0.5
	cases := []struct {
		name  string
		cfg   Config
		env   env
		check func(t *testing.T, s settings)
		err   string
	}{
		{name: "defaults: tracing off, w3c, parent-based", check: func(t *testing.T, s settings) {
			if s.tracing || s.serviceName != "ferry" || s.sampler != SamplerParentBasedAlwaysOn ||
				strings.Join(s.propagators, ",") != "tracecontext,baggage" || s.queueSize != 2048 ||
				s.batchSize != 512 || s.batchTimeout != 5*time.Second || s.accessLog != "stderr" {
				t.Errorf("%+v", s)
			}
		}},
		{name: "endpoint turns tracing on, grpc", env: env{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"},
			check: func(t *testing.T, s settings) {
				if !s.tracing || s.protocol != "grpc" || s.endpoint.String() != "http://collector:4317" {
					t.Errorf("%v %s %v", s.tracing, s.protocol, s.endpoint)
				}
			}},
		{name: "http/protobuf base endpoint gets /v1/traces",
			env: env{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
			check: func(t *testing.T, s settings) {
				if s.endpoint.String() != "http://collector:4318/v1/traces" {
					t.Errorf("%v", s.endpoint)
				}
			}},
		{name: "signal endpoint used as is", env: env{
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c:443/custom", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://ignored:1",
			"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
			check: func(t *testing.T, s settings) {
				if s.endpoint.String() != "https://c:443/custom" || s.protocol != "http/protobuf" {
					t.Errorf("%v %s", s.endpoint, s.protocol)
				}
			}},
		{name: "otlp exporter without endpoint uses localhost", env: env{"OTEL_TRACES_EXPORTER": "otlp"},
			check: func(t *testing.T, s settings) {
				if !s.tracing || s.endpoint.String() != "http://localhost:4317" {
					t.Errorf("%v %v", s.tracing, s.endpoint)
				}
			}},
		{name: "exporter none wins over endpoint", env: env{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"},
			check: func(t *testing.T, s settings) {
				if s.tracing {
					t.Error("tracing on")
				}
			}},
		{name: "sdk disabled", env: env{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"},
			check: func(t *testing.T, s settings) {
				if s.tracing {
					t.Error("tracing on")
				}
			}},
		{name: "config overrides env", cfg: Config{ServiceName: "files-sidecar", Sampler: "traceidratio", SamplerArg: &half,
			Propagators: []string{"b3"}, Endpoint: "http://cfg:4317", QueueSize: 10, BatchSize: 50, ResourceAttributes: map[string]string{"team": "b"}},
			env: env{"OTEL_SERVICE_NAME": "env", "OTEL_TRACES_SAMPLER": "always_off", "OTEL_TRACES_SAMPLER_ARG": "0.1",
				"OTEL_PROPAGATORS": "tracecontext", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4317",
				"OTEL_RESOURCE_ATTRIBUTES": "team=a,region=eu%2Dwest"},
			check: func(t *testing.T, s settings) {
				if s.serviceName != "files-sidecar" || s.sampler != "traceidratio" || s.samplerArg != 0.5 ||
					strings.Join(s.propagators, ",") != "b3" || s.endpoint.Host != "cfg:4317" || s.queueSize != 10 ||
					s.batchSize != 10 || s.resource["team"] != "b" || s.resource["region"] != "eu-west" {
					t.Errorf("%+v", s)
				}
			}},
		{name: "env sampler and bsp", env: env{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25",
			"OTEL_PROPAGATORS": "tracecontext, b3multi", "OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_SCHEDULE_DELAY": "250"},
			check: func(t *testing.T, s settings) {
				if s.sampler != "parentbased_traceidratio" || s.samplerArg != 0.25 || s.queueSize != 100 || s.batchSize != 100 ||
					s.batchTimeout != 250*time.Millisecond || strings.Join(s.propagators, ",") != "tracecontext,b3multi" {
					t.Errorf("%+v", s)
				}
			}},
		{name: "bad config sampler", cfg: Config{Sampler: "x"}, err: `telemetry.sampler: unknown "x"`},
		{name: "bad env sampler", env: env{"OTEL_TRACES_SAMPLER": "sometimes"}, err: `OTEL_TRACES_SAMPLER: unknown "sometimes"`},
		{name: "bad sampler arg", env: env{"OTEL_TRACES_SAMPLER_ARG": "2"}, err: `OTEL_TRACES_SAMPLER_ARG: "2" is not a ratio`},
		{name: "bad config sampler arg", cfg: Config{SamplerArg: new(float64(-1))}, err: "telemetry.sampler_arg: -1 is outside"},
		{name: "bad protocol", env: env{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, err: `OTEL_EXPORTER_OTLP_PROTOCOL: unknown "http/json"`},
		{name: "bad config protocol", cfg: Config{Protocol: "udp"}, err: `telemetry.protocol: unknown "udp"`},
		{name: "bad endpoint scheme", cfg: Config{Endpoint: "collector:4317"}, err: "telemetry.endpoint: invalid URL"},
		{name: "bad env endpoint", env: env{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://:99999"}, err: "OTEL_EXPORTER_OTLP_ENDPOINT: invalid URL"},
		{name: "bad propagator", cfg: Config{Propagators: []string{"tracecontext", "xray2"}}, err: `telemetry.propagators: unknown "xray2"`},
		{name: "bad env propagator", env: env{"OTEL_PROPAGATORS": "jaegerish"}, err: `OTEL_PROPAGATORS: unknown "jaegerish"`},
		{name: "bad exporter", cfg: Config{TracesExporter: "zipkin"}, err: `telemetry.traces_exporter: unknown "zipkin"`},
		{name: "bad resource attrs", env: env{"OTEL_RESOURCE_ATTRIBUTES": "novalue"}, err: "OTEL_RESOURCE_ATTRIBUTES: \"novalue\" is not key=value"},
		{name: "bad queue size", env: env{"OTEL_BSP_MAX_QUEUE_SIZE": "-3"}, err: "OTEL_BSP_MAX_QUEUE_SIZE: \"-3\" is not a positive integer"},
		{name: "bad config queue size", cfg: Config{QueueSize: -1}, err: "telemetry.queue_size: -1 must be positive"},
		{name: "bad sdk disabled", env: env{"OTEL_SDK_DISABLED": "maybe"}, err: "OTEL_SDK_DISABLED: not a boolean"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := resolve(tc.cfg, tc.env.get)
			if tc.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
					t.Fatalf("error %v, want prefix %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, s)
		})
	}
}

func TestConfigFromYAMLSection(t *testing.T) {
	doc := `
telemetry:
  service_name: files
  endpoint: http://jaeger:4318
  protocol: http/protobuf
  sampler: parentbased_traceidratio
  sampler_arg: 0.1
  propagators: [tracecontext, baggage, b3]
  queue_size: 4096
  batch_timeout: 2s
  access_log: "off"
`
	var file struct {
		Telemetry Config `yaml:"telemetry"`
	}
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		t.Fatal(err)
	}
	s, err := resolve(file.Telemetry, env{}.get)
	if err != nil {
		t.Fatal(err)
	}
	if s.serviceName != "files" || s.endpoint.String() != "http://jaeger:4318/v1/traces" || s.samplerArg != 0.1 ||
		s.queueSize != 4096 || s.batchTimeout != 2*time.Second || s.accessLog != "off" || len(s.propagators) != 3 || !s.tracing {
		t.Errorf("%+v", s)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	_, err := New(t.Context(), Config{Sampler: "x"}, WithEnv(env{}.get))
	if err == nil || err.Error() != `telemetry.sampler: unknown "x"` {
		t.Fatalf("error %v", err)
	}
}
