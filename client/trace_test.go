package client_test

import (
	"context"
	"sync"
	"testing"

	"github.com/lxzan/gws"
	"go.opentelemetry.io/otel/trace"

	"github.com/pmhq/pm/client"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// A call made within a span sends the span's W3C trace context in the
// envelope; one made without sends none, and a traceparent the caller set
// is kept.
func TestDoSendsTheCallersTraceContext(t *testing.T) {
	var (
		mu   sync.Mutex
		seen = map[string][2]string{} // message_id → traceparent, tracestate
	)
	f := startFake(t, func(_ int, ws *gws.Conn, req *pmv1.WebSocketMessage) {
		mu.Lock()
		seen[req.MessageId] = [2]string{req.Traceparent, req.Tracestate}
		mu.Unlock()
		send(t, ws, &pmv1.WebSocketMessage{MessageId: req.MessageId, Payload: &pmv1.WebSocketMessage_ProjectsList{ProjectsList: &pmv1.ProjectsList{}}})
	})
	c := dialFake(t, f, client.Options{})
	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	state, _ := trace.ParseTraceState("vendor=value")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled, TraceState: state})
	traced := trace.ContextWithSpanContext(testContext(t), sc)

	list := func(ctx context.Context, m *pmv1.WebSocketMessage) string {
		t.Helper()
		m.Payload = &pmv1.WebSocketMessage_ListProjectsRequest{ListProjectsRequest: &pmv1.ListProjectsRequest{}}
		if _, err := c.Do(ctx, m); err != nil {
			t.Fatal(err)
		}
		return m.MessageId
	}
	withSpan := list(traced, &pmv1.WebSocketMessage{})
	without := list(testContext(t), &pmv1.WebSocketMessage{})
	own := list(traced, &pmv1.WebSocketMessage{Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})

	mu.Lock()
	defer mu.Unlock()
	for id, want := range map[string][2]string{
		withSpan: {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "vendor=value"},
		without:  {"", ""},
		own:      {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", ""},
	} {
		if seen[id] != want {
			t.Errorf("request %s carried %q, want %q", id, seen[id], want)
		}
	}
}
