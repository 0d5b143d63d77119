package node

import (
	"context"
	"errors"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/pmhq/pm"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// tracerName names the node's tracer (the instrumentation scope).
const tracerName = "github.com/pmhq/pm/node"

// traceContext is W3C trace context, the format of the envelope's
// traceparent and tracestate. An invalid traceparent is ignored, as the W3C
// recommendation asks: the request starts a new trace.
var traceContext propagation.TraceContext

// payloadOneof is the envelope's payload oneof: the name of the message set
// in it names a request's span.
var payloadOneof = (&pmv1.WebSocketMessage{}).ProtoReflect().Descriptor().Oneofs().ByName("payload")

// startRequestSpan starts the span of one request, named by its payload type
// (e.g. "UpdateWorkItemRequest"): a child of the client's trace context if
// the envelope carries one, else a new trace.
func (c *session) startRequestSpan(ctx context.Context, req *pmv1.WebSocketMessage) (context.Context, trace.Span) {
	if req.Traceparent != "" {
		ctx = traceContext.Extract(ctx, req.TraceCarrier())
	}
	name := "unknown"
	fd := req.ProtoReflect().WhichOneof(payloadOneof)
	if fd != nil {
		name = string(fd.Message().Name())
	}
	ctx, span := c.srv.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer))
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("pm.message_id", req.MessageId),
			attribute.String("pm.tenant", c.actor.Tenant),
			attribute.String("enduser.id", c.actor.User.String()),
			attribute.String("pm.conn", c.id),
		)
		if fd != nil && fd.Message() != nil {
			p := req.ProtoReflect().Get(fd).Message()
			if f := p.Descriptor().Fields().ByName("project_id"); f != nil && f.Kind() == protoreflect.StringKind {
				if id := p.Get(f).String(); id != "" {
					span.SetAttributes(attribute.String("pm.project_id", id))
				}
			}
		}
	}
	return ctx, span
}

// endRequestSpan records a request's outcome on its span: the outcome, the
// project and revision of the change it published, and an error status
// for the failures that are the server's (UNAVAILABLE, INTERNAL).
func endRequestSpan(span trace.Span, outcome string, ev *event) {
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(attribute.String("pm.outcome", outcome))
	if ev != nil {
		span.SetAttributes(attribute.String("pm.project_id", ev.key.Project.String()))
		if ev.msg != nil {
			span.SetAttributes(attribute.Int64("pm.revision", ev.revision))
		}
	}
	switch outcome {
	case pm.EUnavailable, pm.EInternal:
		span.SetStatus(codes.Error, outcome)
	}
}

// startPublishSpan starts the "publish" span of an event, when ctx is part
// of a trace.
func (c *session) startPublishSpan(ctx context.Context, ev *event) (context.Context, trace.Span) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, trace.SpanFromContext(ctx) // a no-op span
	}
	ctx, span := c.srv.tracer.Start(ctx, "publish", trace.WithSpanKind(trace.SpanKindProducer))
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("messaging.system", "redis"),
			attribute.String("pm.project_id", ev.key.Project.String()),
			attribute.Int64("pm.revision", ev.revision),
		)
	}
	return ctx, span
}

// withSpanOf returns base carrying the span of from, if from is traced: work
// that outlives a request's context (its own deadline) stays in its trace.
func withSpanOf(base, from context.Context) context.Context {
	if span := trace.SpanFromContext(from); span.SpanContext().IsValid() {
		return trace.ContextWithSpan(base, span)
	}
	return base
}

// recordError marks span as failed by err.
func recordError(span trace.Span, err error) {
	if span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
}

// tracedStore wraps a Store so that each call made within a traced request
// runs in a child span of the request's: one database transaction each.
// Calls outside requests (profiles, role rechecks, readiness) make no span.
type tracedStore struct {
	Store
	tracer trace.Tracer
}

var dbSystem = attribute.String("db.system.name", "postgresql")

func (s tracedStore) start(ctx context.Context, name string) (context.Context, trace.Span) {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, nil
	}
	return s.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(dbSystem))
}

// end ends span, recording err: a client's error (a *pm.Error other than
// UNAVAILABLE or INTERNAL) as its code, anything else as a failure.
func (tracedStore) end(span trace.Span, err error) {
	if span == nil {
		return
	}
	var perr *pm.Error
	switch {
	case err == nil:
	case errors.As(err, &perr) && perr.Code != pm.EUnavailable && perr.Code != pm.EInternal:
		span.SetAttributes(attribute.String("pm.error_code", perr.Code))
	default:
		recordError(span, err)
	}
	span.End()
}

func (s tracedStore) CreateWorkItem(ctx context.Context, actor pm.Actor, in pm.NewWorkItem) (pm.WorkItem, bool, error) {
	ctx, span := s.start(ctx, "db CreateWorkItem")
	item, created, err := s.Store.CreateWorkItem(ctx, actor, in)
	s.end(span, err)
	return item, created, err
}

func (s tracedStore) UpdateWorkItem(ctx context.Context, actor pm.Actor, id uuid.UUID, expectedVersion int64, patch pm.WorkItemPatch) (pm.WorkItem, []pm.FieldChange, error) {
	ctx, span := s.start(ctx, "db UpdateWorkItem")
	item, changes, err := s.Store.UpdateWorkItem(ctx, actor, id, expectedVersion, patch)
	s.end(span, err)
	return item, changes, err
}

func (s tracedStore) DeleteWorkItem(ctx context.Context, actor pm.Actor, id uuid.UUID, expectedVersion int64) (pm.WorkItem, error) {
	ctx, span := s.start(ctx, "db DeleteWorkItem")
	item, err := s.Store.DeleteWorkItem(ctx, actor, id, expectedVersion)
	s.end(span, err)
	return item, err
}

func (s tracedStore) GetWorkItem(ctx context.Context, actor pm.Actor, id uuid.UUID) (pm.WorkItem, error) {
	ctx, span := s.start(ctx, "db GetWorkItem")
	item, err := s.Store.GetWorkItem(ctx, actor, id)
	s.end(span, err)
	return item, err
}

func (s tracedStore) StreamWorkItems(ctx context.Context, actor pm.Actor, q pm.WorkItemQuery, page func(pm.Snapshot, []pm.WorkItem) error) error {
	ctx, span := s.start(ctx, "db StreamWorkItems")
	err := s.Store.StreamWorkItems(ctx, actor, q, page)
	s.end(span, err)
	return err
}

func (s tracedStore) ProjectRevision(ctx context.Context, actor pm.Actor, project uuid.UUID) (int64, error) {
	ctx, span := s.start(ctx, "db ProjectRevision")
	rev, err := s.Store.ProjectRevision(ctx, actor, project)
	s.end(span, err)
	return rev, err
}

func (s tracedStore) PutMember(ctx context.Context, actor pm.Actor, project, user uuid.UUID, role pm.Role) (pm.Member, error) {
	ctx, span := s.start(ctx, "db PutMember")
	m, err := s.Store.PutMember(ctx, actor, project, user, role)
	s.end(span, err)
	return m, err
}

func (s tracedStore) RemoveMember(ctx context.Context, actor pm.Actor, project, user uuid.UUID) (pm.Member, error) {
	ctx, span := s.start(ctx, "db RemoveMember")
	m, err := s.Store.RemoveMember(ctx, actor, project, user)
	s.end(span, err)
	return m, err
}

func (s tracedStore) ListMembers(ctx context.Context, actor pm.Actor, project uuid.UUID) ([]pm.Member, error) {
	ctx, span := s.start(ctx, "db ListMembers")
	ms, err := s.Store.ListMembers(ctx, actor, project)
	s.end(span, err)
	return ms, err
}

func (s tracedStore) ListActivity(ctx context.Context, actor pm.Actor, q pm.ActivityQuery) ([]pm.ActivityEntry, error) {
	ctx, span := s.start(ctx, "db ListActivity")
	es, err := s.Store.ListActivity(ctx, actor, q)
	s.end(span, err)
	return es, err
}

func (s tracedStore) ListProjects(ctx context.Context, actor pm.Actor) ([]pm.ProjectSummary, error) {
	ctx, span := s.start(ctx, "db ListProjects")
	ps, err := s.Store.ListProjects(ctx, actor)
	s.end(span, err)
	return ps, err
}
