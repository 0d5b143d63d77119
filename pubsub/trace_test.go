package pubsub

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// histogram returns the sample count and sum of a histogram.
func histogram(t *testing.T, h prometheus.Histogram) (uint64, float64) {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

// fanouts returns the fan-out spans a recorder holds.
func fanouts(rec *tracetest.SpanRecorder) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "fanout" {
			out = append(out, s)
		}
	}
	return out
}

// An event published within a trace is fanned out on every node in one
// span per node, whatever its number of subscribers, each a child of the
// publisher's span; every node that delivers it observes its age since
// commit once. An untraced event makes no span, and a node without a
// tracer provider delivers traced events all the same.
func TestFanoutJoinsThePublishersTraceAndObservesAge(t *testing.T) {
	prefix := MustPrefix(t)
	recA, recB := tracetest.NewSpanRecorder(), tracetest.NewSpanRecorder()
	tpA := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recA))
	tpB := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recB))
	a := MustHub(t, HubConfig{Redis: MustClient(t, ""), Prefix: prefix, TracerProvider: tpA})
	b := MustHub(t, HubConfig{Redis: MustClient(t, ""), Prefix: prefix, TracerProvider: tpB})
	untraced := MustHub(t, HubConfig{Redis: MustClient(t, ""), Prefix: prefix}) // no provider
	key := newKey()
	author, neighbour := newRecorder(uuid.New()), newRecorder(uuid.New())
	remote1, remote2 := newRecorder(uuid.New()), newRecorder(uuid.New())
	subscribe(t, a, key, author)
	subscribe(t, a, key, neighbour)
	subscribe(t, b, key, remote1)
	subscribe(t, b, key, remote2)
	remote3 := newRecorder(uuid.New())
	subscribe(t, untraced, key, remote3)

	ctx, write := tpA.Tracer("test").Start(context.Background(), "write")
	committed := time.Now().Add(-time.Second)
	if err := a.Publish(ctx, key, 1, author.id, []byte("traced"), committed); err != nil {
		t.Fatal(err)
	}
	write.End()
	if err := a.Publish(context.Background(), key, 2, author.id, []byte("untraced"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	everyone := []*recorder{neighbour, remote1, remote2, remote3}
	waitFor(t, "both events everywhere", func() bool {
		return !slices.ContainsFunc(everyone, func(r *recorder) bool { return !r.has("untraced") })
	})

	for name, c := range map[string]struct {
		h   *Hub
		rec *tracetest.SpanRecorder
		n   int64
	}{"A": {a, recA, 1}, "B": {b, recB, 2}} {
		// Only the event with a commit time has an age: at least the
		// second between its commit and its publish.
		if n, sum := histogram(t, c.h.m.deliveryAge); n != 1 || sum < 1 {
			t.Errorf("%s: delivery age: %d samples summing to %vs, want 1 of at least 1s", name, n, sum)
		}
		spans := fanouts(c.rec)
		if len(spans) != 1 {
			t.Fatalf("%s: %d fan-out spans, want 1 (the traced event, once for all its subscribers)", name, len(spans))
		}
		s := spans[0]
		if s.Parent().SpanID() != write.SpanContext().SpanID() || s.SpanContext().TraceID() != write.SpanContext().TraceID() {
			t.Errorf("%s: fan-out span's parent %v, want the publisher's span %v", name, s.Parent(), write.SpanContext())
		}
		if s.SpanKind() != trace.SpanKindConsumer {
			t.Errorf("%s: fan-out span kind %v", name, s.SpanKind())
		}
		for _, kv := range s.Attributes() {
			if kv.Key == "pm.subscribers" && kv.Value.AsInt64() != c.n {
				t.Errorf("%s: pm.subscribers %d, want %d", name, kv.Value.AsInt64(), c.n)
			}
		}
	}
	// A node without a provider delivers traced events all the same.
	if n, _ := histogram(t, untraced.m.deliveryAge); n != 1 {
		t.Errorf("node without tracing: delivery age: %d samples, want 1", n)
	}
	if n, sum := histogram(t, a.m.publishSeconds); n != 2 || sum <= 0 {
		t.Errorf("A: publish duration: %d samples summing to %vs, want 2 above 0", n, sum)
	}
	if n, _ := histogram(t, b.m.publishSeconds); n != 0 {
		t.Errorf("B: publish duration: %d samples, want none", n)
	}
}

// When Redis refuses a publish, the node's own subscribers still get the
// event, within its trace and with its age observed.
func TestLocalDeliveryWithoutRedisIsTracedAndAged(t *testing.T) {
	p := MustProxy(t)
	p.Stop()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	h := MustHub(t, HubConfig{Redis: p.Client(t), Prefix: MustPrefix(t), TracerProvider: tp})
	key := newKey()
	neighbour := newRecorder(uuid.New())
	sctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_ = h.Subscribe(sctx, key, neighbour) // Redis is down: registered, not confirmed
	cancel()

	ctx, write := tp.Tracer("test").Start(context.Background(), "write")
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := h.Publish(pctx, key, 1, "", []byte("local"), time.Now()); err == nil {
		t.Fatal("Publish with Redis down succeeded")
	}
	write.End()
	if got := frames(neighbour); !slices.Equal(got, []string{"local"}) {
		t.Fatalf("neighbour got %q", got)
	}
	if n, _ := histogram(t, h.m.deliveryAge); n != 1 {
		t.Errorf("delivery age: %d samples, want 1", n)
	}
	if n, _ := histogram(t, h.m.publishSeconds); n != 1 {
		t.Errorf("publish duration: %d samples, want 1 (the failed attempt)", n)
	}
	spans := fanouts(rec)
	if len(spans) != 1 || spans[0].Parent().SpanID() != write.SpanContext().SpanID() {
		t.Errorf("fan-out spans %v, want one, the write's child", spans)
	}
}
