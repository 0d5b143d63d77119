package node_test

import (
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/node"
	"github.com/pmhq/pm/node/nodetest"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// requestSpan waits for the ended span of the request with messageID and
// returns it with the other spans of its trace.
func requestSpan(t *testing.T, rec *tracetest.SpanRecorder, messageID string) (sdktrace.ReadOnlySpan, []sdktrace.ReadOnlySpan) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, s := range rec.Ended() {
			if attr(s, "pm.message_id") != messageID {
				continue
			}
			var trace []sdktrace.ReadOnlySpan
			for _, o := range rec.Ended() {
				if o.SpanContext().TraceID() == s.SpanContext().TraceID() && o != s {
					trace = append(trace, o)
				}
			}
			return s, trace
		}
		if time.Now().After(deadline) {
			t.Fatalf("no span of request %s within 10s", messageID)
		}
		time.Sleep(10 * time.Millisecond) // polling a recorder: nothing to wait on
	}
}

func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.String()
		}
	}
	return ""
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return out
}

// Requests that fail or carry no usable trace context are traced as a user
// would want to read them: a client error is an outcome, not a failed span,
// and spans only what ran (no database span for a request refused by
// validation, no publish span for a write that changed nothing); an invalid
// traceparent starts a new trace instead of failing the request; the
// database work of connections (profiles) makes no span outside a request.
func TestRequestSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tm := newTeam(t, nodetest.Options{Configure: func(c *node.Config) { c.TracerProvider = tp }})
	task := mustCreate(t, tm.editorConn, &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "t"})

	// A stale update: CONFLICT from the database transaction.
	stale := &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_UpdateWorkItemRequest{UpdateWorkItemRequest: &pmv1.UpdateWorkItemRequest{
		WorkItemId: task.Id, ExpectedVersion: task.Version + 5, Title: new("x"),
	}}}
	resp, _ := tm.editorConn.Request(stale)
	wantError(t, resp, pm.EConflict, "expected_version")
	req, others := requestSpan(t, rec, stale.MessageId)
	if req.Name() != "UpdateWorkItemRequest" || attr(req, "pm.outcome") != pm.EConflict || req.Status().Code == codes.Error {
		t.Errorf("stale update: span %q outcome %q status %v", req.Name(), attr(req, "pm.outcome"), req.Status())
	}
	if len(others) != 1 || others[0].Name() != "db UpdateWorkItem" || attr(others[0], "pm.error_code") != pm.EConflict ||
		others[0].Parent().SpanID() != req.SpanContext().SpanID() {
		t.Errorf("stale update: other spans %v, want its database transaction with the CONFLICT", names(others))
	}

	// Refused by validation: the database is never asked.
	invalid := &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{
		ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK,
	}}}
	resp, _ = tm.editorConn.Request(invalid)
	wantError(t, resp, pm.EValidation, "title")
	req, others = requestSpan(t, rec, invalid.MessageId)
	if attr(req, "pm.outcome") != pm.EValidation || attr(req, "pm.project_id") != tm.project || len(others) != 0 {
		t.Errorf("invalid create: outcome %q project %q, other spans %v", attr(req, "pm.outcome"), attr(req, "pm.project_id"), names(others))
	}

	// An invalid traceparent: served, in a new trace with the whole write.
	bad := &pmv1.WebSocketMessage{Traceparent: "00-not-a-trace-01", Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{
		CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "u"},
	}}
	resp, _ = tm.editorConn.Request(bad)
	if resp.GetWorkItemCreated() == nil {
		t.Fatalf("create with a bad traceparent: %v", resp)
	}
	req, others = requestSpan(t, rec, bad.MessageId)
	if req.Parent().IsValid() || attr(req, "pm.outcome") != "ok" || attr(req, "pm.revision") == "" {
		t.Errorf("bad traceparent: parent %v outcome %q revision %q", req.Parent(), attr(req, "pm.outcome"), attr(req, "pm.revision"))
	}
	got := map[string]bool{}
	for _, s := range others {
		got[s.Name()] = s.Parent().SpanID() == req.SpanContext().SpanID()
	}
	if len(others) != 2 || !got["db CreateWorkItem"] || !got["publish"] {
		t.Errorf("bad traceparent: other spans %v, want the transaction and the publish, children of the request", names(others))
	}

	// Every database span belongs to a request: none for the profiles
	// recorded when the team connected.
	for _, s := range rec.Ended() {
		if strings.HasPrefix(s.Name(), "db ") && !s.Parent().IsValid() {
			t.Errorf("database span %q outside any request", s.Name())
		}
		if s.Name() == "db RecordProfile" {
			t.Errorf("profile recorded in a span")
		}
	}
}
