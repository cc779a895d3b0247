package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httputil"

	"github.com/ferrymesh/ferry/bench/internal/nodes"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// withOTel wraps the stdlib proxy in otelhttp (a server span per request,
// a client span per upstream request), sampling everything and exporting
// over OTLP/HTTP to endpoint (a base URL such as http://127.0.0.1:4318).
func withOTel(rp *httputil.ReverseProxy, endpoint string) (http.Handler, error) {
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(endpoint+"/v1/traces"))
	if err != nil {
		return nil, fmt.Errorf("otlp exporter for %s: %w", endpoint, err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	rp.Transport = otelhttp.NewTransport(rp.Transport)
	return otelhttp.NewHandler(rp, "proxy"), nil
}

// serveStdProxyOTel is the stdlib baseline wrapped in otelhttp.
func serveStdProxyOTel(listen, upstream, otlpEndpoint string) error {
	rp, err := nodes.StdProxy(upstream)
	if err != nil {
		return err
	}
	h, err := withOTel(rp, otlpEndpoint)
	if err != nil {
		return fmt.Errorf("stdproxy-otel: %w", err)
	}
	return nodes.Serve(listen, h)
}
