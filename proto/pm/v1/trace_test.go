package pmv1_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// A W3C propagator writes a span context into an envelope and reads it back
// from a bus event that copied the fields: the two messages carry it alike.
func TestTraceCarrierRoundTrip(t *testing.T) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
	})
	state, err := trace.ParseTraceState("vendor=value")
	if err != nil {
		t.Fatal(err)
	}
	sc = sc.WithTraceState(state)
	var tc propagation.TraceContext
	m := &pmv1.WebSocketMessage{}
	tc.Inject(trace.ContextWithSpanContext(context.Background(), sc), m.TraceCarrier())
	if want := "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01"; m.Traceparent != want || m.Tracestate != "vendor=value" {
		t.Fatalf("envelope: traceparent %q tracestate %q; want %q and vendor=value", m.Traceparent, m.Tracestate, want)
	}
	ev := &pmv1.BusEvent{Traceparent: m.Traceparent, Tracestate: m.Tracestate}
	got := trace.SpanContextFromContext(tc.Extract(context.Background(), ev.TraceCarrier()))
	if !got.Equal(sc.WithRemote(true)) {
		t.Errorf("extracted %v, want %v", got, sc)
	}
	c := ev.TraceCarrier()
	c.Set("baggage", "ignored")
	if c.Get("baggage") != "" || len(c.Keys()) != 2 {
		t.Errorf("the carrier holds other keys: %v", c.Keys())
	}
}
