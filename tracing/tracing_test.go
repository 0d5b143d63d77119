package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// Tracing is on only with an endpoint, and not when the SDK is disabled;
// the base endpoint gets the traces path, the traces endpoint is used as is.
func TestEnabledAndEndpoint(t *testing.T) {
	for _, c := range []struct {
		env map[string]string
		on  bool
		url string
	}{
		{map[string]string{}, false, ""},
		{map[string]string{"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, false, ""},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, true, "http://c:4318/v1/traces"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, true, "http://c:4318/v1/traces"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/spans"}, true, "http://t:1/spans"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, false, "http://c:4318/v1/traces"},
	} {
		if got := Enabled(envOf(c.env)); got != c.on {
			t.Errorf("Enabled(%v) = %v, want %v", c.env, got, c.on)
		}
		if got := tracesURL(envOf(c.env)); got != c.url {
			t.Errorf("tracesURL(%v) = %q, want %q", c.env, got, c.url)
		}
	}
}

// The sampler settings of the specification are honoured; anything else is
// refused with the variable's name.
func TestSampler(t *testing.T) {
	for _, c := range []struct {
		name, arg, desc string
	}{
		{"", "", "ParentBased{root:AlwaysOnSampler"},
		{"always_off", "", "AlwaysOffSampler"},
		{"traceidratio", "0.25", "TraceIDRatioBased{0.25}"},
		{"parentbased_traceidratio", "", "ParentBased{root:TraceIDRatioBased{1}"},
	} {
		s, err := newSampler(c.name, c.arg)
		if err != nil || !strings.HasPrefix(s.Description(), c.desc) {
			t.Errorf("sampler %q %q: %v, %v; want %s", c.name, c.arg, s, err, c.desc)
		}
	}
	for _, c := range []struct{ name, arg, want string }{
		{"jaeger_remote", "", "OTEL_TRACES_SAMPLER"},
		{"traceidratio", "half", "OTEL_TRACES_SAMPLER_ARG"},
		{"parentbased_traceidratio", "-0.1", "OTEL_TRACES_SAMPLER_ARG"},
	} {
		if _, err := newSampler(c.name, c.arg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("sampler %q %q: %v, want an error naming %s", c.name, c.arg, err, c.want)
		}
	}
}

// A record logged within a span carries its trace and span ids, also
// through loggers made With attributes; one logged without carries neither.
func TestLogHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(LogHandler(slog.NewJSONHandler(&buf, nil))).With("node", "n1")
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("test").Start(context.Background(), "request")
	defer span.End()
	log.InfoContext(ctx, "traced", "k", "v")
	log.InfoContext(context.Background(), "untraced")
	log.Info("no context")
	log.InfoContext(trace.ContextWithSpanContext(context.Background(), trace.SpanContext{}), "invalid span")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines: %q", len(lines), buf.String())
	}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		if m["node"] != "n1" {
			t.Errorf("line %d lost the logger's attributes: %s", i, l)
		}
		if i == 0 {
			if m["trace_id"] != span.SpanContext().TraceID().String() || m["span_id"] != span.SpanContext().SpanID().String() || m["k"] != "v" {
				t.Errorf("traced line: %s", l)
			}
			continue
		}
		if _, ok := m["trace_id"]; ok {
			t.Errorf("line %d has a trace_id: %s", i, l)
		}
	}
}

// OpenTelemetry's errors reach the node's log as warnings, one line per
// interval, saying how many were held back.
func TestErrorHandlerLogsAtIntervals(t *testing.T) {
	var buf bytes.Buffer
	h := ErrorHandler(slog.New(slog.NewJSONHandler(&buf, nil))).(*errorHandler)
	now := time.Unix(1000, 0)
	h.now = func() time.Time { return now }
	export := errors.New(`traces export: dial tcp 127.0.0.1:4318: connect: connection refused`)
	h.Handle(export)
	for range 5 {
		now = now.Add(time.Second)
		h.Handle(export)
	}
	now = now.Add(errorLogEvery)
	h.Handle(export)

	var lines []map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON log line: %q", l)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("%d lines for 7 errors within two intervals, want 2:\n%s", len(lines), buf.String())
	}
	for i, want := range []float64{0, 5} {
		if lines[i]["level"] != "WARN" || lines[i]["err"] != export.Error() || lines[i]["errors_not_logged"] != want {
			t.Errorf("line %d: %v; want WARN, the error, errors_not_logged=%v", i, lines[i], want)
		}
	}
}
