package pubsub

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// tracerName names the hub's tracer (the instrumentation scope).
const tracerName = "github.com/pmhq/pm/pubsub"

// traceContext is W3C trace context, the format of BusEvent's traceparent
// and tracestate.
var traceContext propagation.TraceContext

// injectTrace writes the trace context of ctx, if any, into ev.
func injectTrace(ctx context.Context, ev *pmv1.BusEvent) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		traceContext.Inject(ctx, ev.TraceCarrier())
	}
}

// fanOut hands an event's frame to the local subscribers of t but its
// origin: it records the revision for the head check, observes the event's
// age (pm_event_delivery_age_seconds) when anyone got it, and, for an event
// that carries a trace context, does it in one "fanout" span, a child of the
// publishing node's span: one per event and node, whatever the number of
// subscribers.
func (h *Hub) fanOut(t *topic, ev *pmv1.BusEvent, frame []byte) {
	t.observe(ev.Revision)
	var span trace.Span
	if ev.Traceparent != "" && h.tracer != nil {
		ctx := traceContext.Extract(context.Background(), ev.TraceCarrier())
		_, span = h.tracer.Start(ctx, "fanout", trace.WithSpanKind(trace.SpanKindConsumer))
	}
	n := h.deliver(t, ev.Origin, frame)
	if n > 0 && ev.CommittedAtUnixNano != 0 {
		h.m.deliveryAge.Observe(max(0, time.Since(time.Unix(0, ev.CommittedAtUnixNano)).Seconds()))
	}
	if span != nil {
		if span.IsRecording() {
			span.SetAttributes(
				attribute.String("pm.tenant", t.key.Tenant),
				attribute.String("pm.project_id", t.key.Project.String()),
				attribute.Int64("pm.revision", ev.Revision),
				attribute.Int("pm.subscribers", n),
				attribute.String("messaging.destination.name", t.name),
			)
		}
		span.End()
	}
}
