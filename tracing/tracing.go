// Package tracing owns pm-node's OpenTelemetry setup: a tracer provider that
// exports spans by OTLP over HTTP/protobuf, configured by the standard OTEL_*
// environment variables and off unless an OTLP endpoint is set, and a
// slog.Handler that writes the trace and span ids of a traced request into
// every log line made within it. The spans themselves are made by node and
// pubsub, which get a trace.TracerProvider through their configs.
package tracing

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Enabled says whether the environment asks for tracing: an OTLP endpoint
// is set (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT)
// and OTEL_SDK_DISABLED is not true.
func Enabled(getenv func(string) string) bool {
	if v, _ := strconv.ParseBool(getenv("OTEL_SDK_DISABLED")); v {
		return false
	}
	return tracesURL(getenv) != ""
}

// tracesURL is where spans go: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as it is,
// or OTEL_EXPORTER_OTLP_ENDPOINT with /v1/traces appended.
func tracesURL(getenv func(string) string) string {
	if u := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); u != "" {
		return u
	}
	if u := getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); u != "" {
		return strings.TrimSuffix(u, "/") + "/v1/traces"
	}
	return ""
}

// New returns a tracer provider that batches spans and exports them by OTLP
// over HTTP/protobuf to the endpoint getenv names (see Enabled), sampling
// as OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG say (default
// parentbased_always_on). Its resource is service.name (OTEL_SERVICE_NAME,
// default "pm-node"), service.instance.id (instance) and
// OTEL_RESOURCE_ATTRIBUTES. The exporter's other settings (headers,
// timeout, compression, certificates) and the batching (OTEL_BSP_*) come
// from the process environment, as the OpenTelemetry SDK reads them.
// Shutdown flushes and stops it.
func New(ctx context.Context, getenv func(string) string, instance string) (*sdktrace.TracerProvider, error) {
	url := tracesURL(getenv)
	if url == "" {
		return nil, fmt.Errorf("tracing: no OTLP endpoint: set OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	switch p := cmp.Or(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), "http/protobuf"); p {
	case "http/protobuf":
	default:
		return nil, fmt.Errorf("tracing: OTEL_EXPORTER_OTLP_PROTOCOL %q: pm-node exports http/protobuf only", p)
	}
	sampler, err := newSampler(getenv("OTEL_TRACES_SAMPLER"), getenv("OTEL_TRACES_SAMPLER_ARG"))
	if err != nil {
		return nil, err
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(url))
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter for %s: %w", url, err)
	}
	res, err := resource.New(ctx,
		resource.WithFromEnv(), resource.WithTelemetrySDK(),
		resource.WithAttributes(
			attribute.String("service.name", cmp.Or(getenv("OTEL_SERVICE_NAME"), "pm-node")),
			attribute.String("service.instance.id", instance),
		))
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithSampler(sampler),
		sdktrace.WithResource(res),
	), nil
}

// newSampler reads the sampler the way the OpenTelemetry specification
// defines OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, refusing what it
// does not know instead of ignoring it.
func newSampler(name, arg string) (sdktrace.Sampler, error) {
	ratio := func() (float64, error) {
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, fmt.Errorf("tracing: OTEL_TRACES_SAMPLER_ARG %q: want a ratio from 0 to 1", arg)
		}
		return r, nil
	}
	switch name {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio", "parentbased_traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		if name == "traceidratio" {
			return sdktrace.TraceIDRatioBased(r), nil
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), nil
	}
	return nil, fmt.Errorf("tracing: OTEL_TRACES_SAMPLER %q: want always_on, always_off, traceidratio or their parentbased_ forms", name)
}

// LogHandler wraps h so that every record logged with a context that
// carries a span gets that span's trace_id and span_id.
func LogHandler(h slog.Handler) slog.Handler { return logHandler{h} }

type logHandler struct{ slog.Handler }

func (h logHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return logHandler{h.Handler.WithAttrs(as)}
}

func (h logHandler) WithGroup(name string) slog.Handler {
	return logHandler{h.Handler.WithGroup(name)}
}

// errorLogEvery spaces the log lines of OpenTelemetry's own errors: an
// unreachable collector fails every export, and the node keeps serving.
const errorLogEvery = 30 * time.Second

// ErrorHandler routes the OpenTelemetry SDK's errors (e.g. a collector out
// of reach) into the node's structured log as warnings, at most one line
// per 30 s with the count of the errors it held back, instead of the SDK's
// default unstructured line on stderr per failure. Install it with
// otel.SetErrorHandler.
func ErrorHandler(log *slog.Logger) otel.ErrorHandler {
	return &errorHandler{log: log, now: time.Now}
}

type errorHandler struct {
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex
	last    time.Time // of the last line logged
	skipped int       // errors since then, not logged
}

func (h *errorHandler) Handle(err error) {
	h.mu.Lock()
	now := h.now()
	if !h.last.IsZero() && now.Sub(h.last) < errorLogEvery {
		h.skipped++
		h.mu.Unlock()
		return
	}
	skipped := h.skipped
	h.last, h.skipped = now, 0
	h.mu.Unlock()
	h.log.Warn("tracing: OpenTelemetry error; the node serves on, spans may be lost", "err", err, "errors_not_logged", skipped)
}
