package node

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// operation names a request's payload for logs and metrics; "" for a
// payload that is not a request.
func operation(m *pmv1.WebSocketMessage) string {
	switch m.Payload.(type) {
	case *pmv1.WebSocketMessage_Subscribe:
		return "subscribe"
	case *pmv1.WebSocketMessage_Unsubscribe:
		return "unsubscribe"
	case *pmv1.WebSocketMessage_CreateWorkItemRequest:
		return "create_work_item"
	case *pmv1.WebSocketMessage_UpdateWorkItemRequest:
		return "update_work_item"
	case *pmv1.WebSocketMessage_DeleteWorkItemRequest:
		return "delete_work_item"
	case *pmv1.WebSocketMessage_GetWorkItemsRequest:
		return "get_work_items"
	case *pmv1.WebSocketMessage_AddProjectMemberRequest:
		return "add_project_member"
	case *pmv1.WebSocketMessage_RemoveProjectMemberRequest:
		return "remove_project_member"
	case *pmv1.WebSocketMessage_ListProjectMembersRequest:
		return "list_project_members"
	case *pmv1.WebSocketMessage_GetActivityRequest:
		return "get_activity"
	case *pmv1.WebSocketMessage_ListProjectsRequest:
		return "list_projects"
	case *pmv1.WebSocketMessage_RefreshTokenRequest:
		return "refresh_token"
	}
	return ""
}

// mutating lists the operations that change data: they are idempotent by
// message_id.
var mutating = map[string]bool{
	"create_work_item": true, "update_work_item": true, "delete_work_item": true,
	"add_project_member": true, "remove_project_member": true,
}

// replayable says whether an error response is the request's final answer
// (stored for replays) or a passing failure worth running again.
func replayable(code string) bool {
	switch code {
	case pm.EUnavailable, pm.EInternal, pm.ERateLimited:
		return false
	}
	return true
}

// outcomeUndelivered is the outcome of a request whose answer the
// connection closed before taking in full.
const outcomeUndelivered = "undelivered"

// subscribeWait bounds the wait for Redis to confirm a new subscription.
const subscribeWait = 3 * time.Second

// event is a committed change to publish after the response.
type event struct {
	key       pm.ProjectKey
	revision  int64
	msg       *pmv1.WebSocketMessage // the payload subscribers receive
	removed   uuid.UUID              // a member removed from the project, instead of msg
	committed time.Time              // when the change committed (events with msg)
}

// handle runs one request: idempotency claim, validation, authorization and
// work (in dispatch), the response with the request's message_id, and the
// event publication after commit. It logs one line per request.
func (c *session) handle(req *pmv1.WebSocketMessage) {
	start := c.srv.cfg.Now()
	op := operation(req)
	ctx, cancel := c.requestContext()
	defer cancel()
	ctx, span := c.startRequestSpan(ctx, req)
	defer span.End()

	outcome, frame, ev := c.respond(ctx, op, req)
	if frame != nil {
		c.enqueue(frame)
	}
	elapsed := c.srv.cfg.Now().Sub(start) // until the response is queued
	if ev != nil {
		c.publish(ctx, ev)
	}

	endRequestSpan(span, outcome, ev)
	c.srv.metrics.requests.WithLabelValues(op, outcome).Inc()
	c.srv.metrics.requestSeconds.WithLabelValues(op).Observe(elapsed.Seconds())
	c.srv.log.InfoContext(ctx, "request",
		"message_id", req.MessageId, "tenant", c.actor.Tenant, "user", c.actor.User,
		"op", op, "outcome", outcome, "duration_ms", float64(elapsed.Microseconds())/1000, "conn", c.id)
}

// respond produces the encoded response frame, the outcome for the log
// ("ok", "replayed", "undelivered" or an error code) and the event to
// publish, if any. A handler that sent its answer itself (a chunked load)
// leaves no frame to queue.
func (c *session) respond(ctx context.Context, op string, req *pmv1.WebSocketMessage) (outcome string, frame []byte, ev *event) {
	var (
		key     = pm.RequestKey{Tenant: c.actor.Tenant, User: c.actor.User, MessageID: req.MessageId}
		ledger  = c.srv.cfg.Idempotency
		token   string
		claimed bool
	)
	if perr := c.allowTenantRequest(ctx); perr != nil {
		return perr.Code, c.encode(req.MessageId, errorPayload(perr)), nil
	}
	if mutating[op] && ledger != nil {
		key.Digest = requestDigest(req)
		tok, replay, err := ledger.Claim(ctx, key, c.srv.cfg.IdempotencyWait)
		var perr *pm.Error
		switch {
		case err == nil && replay != nil:
			return "replayed", c.replay(ctx, replay), nil
		case err == nil:
			token, claimed = tok, true
		case errors.As(err, &perr):
			return perr.Code, c.encode(req.MessageId, errorPayload(perr)), nil
		default:
			c.srv.log.WarnContext(ctx, "idempotency ledger unavailable; running request without it",
				"message_id", req.MessageId, "op", op, "err", err)
		}
	}

	resp, ev, err := c.dispatch(ctx, req)
	outcome = "ok"
	switch {
	case errors.Is(err, errUndelivered):
		return outcomeUndelivered, nil, nil
	case err == nil && resp == nil:
		return outcome, nil, ev // sent by the handler
	}
	if err != nil && ctx.Err() != nil && c.gone() {
		// The connection ended under the request, which its context
		// then cut short: nothing committed, and nobody to answer.
		if claimed {
			c.settleClaim(ctx, key, token, nil)
		}
		return outcomeUndelivered, nil, nil
	}
	if err != nil {
		perr := c.publicError(ctx, op, req.MessageId, err)
		resp, ev, outcome = errorPayload(perr), nil, perr.Code
	}
	frame = c.encode(req.MessageId, resp)
	if claimed {
		var record []byte // none: a passing failure, which a retry runs again
		if outcome == "ok" || replayable(outcome) {
			record = c.record(resp, frame)
		}
		c.settleClaim(ctx, key, token, record)
	}
	return outcome, frame, ev
}

// settleClaim ends an idempotency claim: it stores record as the request's
// outcome, or, with none, releases the claim so that a retry runs again.
// The ledger gets its own short deadline: the request's (ctx) may be spent.
func (c *session) settleClaim(reqCtx context.Context, key pm.RequestKey, token string, record []byte) {
	ctx, cancel := context.WithTimeout(withSpanOf(c.srv.ctx, reqCtx), time.Second)
	defer cancel()
	ledger := c.srv.cfg.Idempotency
	var err error
	if record != nil {
		err = ledger.Complete(ctx, key, token, record)
	} else {
		err = ledger.Release(ctx, key, token)
	}
	if err != nil {
		c.srv.log.WarnContext(ctx, "idempotency ledger: could not record the outcome", "message_id", key.MessageID, "err", err)
	}
}

// gone says whether the connection has ended (its reader stopped).
func (c *session) gone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// publicError turns any error into what the client may see. Timeouts are
// UNAVAILABLE; errors without a *pm.Error are logged and become INTERNAL.
func (c *session) publicError(ctx context.Context, op, messageID string, err error) *pm.Error {
	var perr *pm.Error
	if errors.As(err, &perr) {
		return perr
	}
	if ctx.Err() != nil {
		return &pm.Error{Code: pm.EUnavailable, Message: "the request timed out; retry", RetryAfterMillis: 1000}
	}
	c.srv.log.ErrorContext(ctx, "request failed", "message_id", messageID, "op", op, "conn", c.id, "err", err)
	return pm.AsError(err)
}

func errorPayload(e *pm.Error) *pmv1.WebSocketMessage {
	return &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_Error{Error: wireError(e)}}
}

// encode sets the envelope of a response and encodes it.
func (c *session) encode(messageID string, m *pmv1.WebSocketMessage) []byte {
	m.MessageId = messageID
	m.Timestamp = c.srv.cfg.Now().UnixMilli()
	frame, err := proto.Marshal(m)
	if err != nil { // cannot happen for messages the node builds
		c.srv.log.Error("encode response", "message_id", messageID, "err", err)
		frame, _ = proto.Marshal(&pmv1.WebSocketMessage{MessageId: messageID, Payload: &pmv1.WebSocketMessage_Error{
			Error: &pmv1.Error{Code: pm.EInternal, Message: "internal error"},
		}})
	}
	return frame
}

// publish sends a committed change to every subscriber of its project, on
// every node. The event is encoded once; subscribers get these bytes. It
// runs in a "publish" span, a child of the request's (reqCtx), whose trace
// context travels with the event.
func (c *session) publish(reqCtx context.Context, ev *event) {
	// Its own short deadline: with Redis out of reach, a publish must not
	// hold up the connection's next request for long (the fan-out then
	// delivers on this node, and other nodes catch up by resync).
	ctx, cancel := context.WithTimeout(withSpanOf(c.srv.ctx, reqCtx), c.srv.cfg.PublishTimeout)
	defer cancel()
	ctx, span := c.startPublishSpan(ctx, ev)
	defer span.End()
	fanout := c.srv.cfg.Fanout
	var err error
	if ev.msg != nil {
		frame, merr := proto.Marshal(c.push(ev.msg))
		if merr != nil {
			c.srv.log.ErrorContext(ctx, "encode event", "err", merr)
			return
		}
		err = fanout.Publish(ctx, ev.key, ev.revision, c.id, frame, ev.committed)
		c.srv.metrics.eventsPublished.Inc()
	} else {
		err = fanout.PublishMemberRemoved(ctx, ev.key, ev.removed)
	}
	if err != nil {
		c.srv.metrics.publishErrors.Inc()
		recordError(span, err)
		c.srv.log.WarnContext(ctx, "publish failed; other nodes' subscribers catch up by resync",
			"project", ev.key.Project, "revision", ev.revision, "err", err)
	}
}

// dispatch validates, authorizes (in the Store's transaction) and runs a
// request, returning the response payload and the event to publish.
func (c *session) dispatch(ctx context.Context, req *pmv1.WebSocketMessage) (*pmv1.WebSocketMessage, *event, error) {
	switch p := req.Payload.(type) {
	case *pmv1.WebSocketMessage_Subscribe:
		return c.subscribe(ctx, p.Subscribe)
	case *pmv1.WebSocketMessage_Unsubscribe:
		return c.unsubscribe(p.Unsubscribe)
	case *pmv1.WebSocketMessage_CreateWorkItemRequest:
		return c.createWorkItem(ctx, p.CreateWorkItemRequest)
	case *pmv1.WebSocketMessage_UpdateWorkItemRequest:
		return c.updateWorkItem(ctx, p.UpdateWorkItemRequest)
	case *pmv1.WebSocketMessage_DeleteWorkItemRequest:
		return c.deleteWorkItem(ctx, p.DeleteWorkItemRequest)
	case *pmv1.WebSocketMessage_GetWorkItemsRequest:
		return c.getWorkItems(ctx, req.MessageId, p.GetWorkItemsRequest)
	case *pmv1.WebSocketMessage_AddProjectMemberRequest:
		return c.addMember(ctx, p.AddProjectMemberRequest)
	case *pmv1.WebSocketMessage_RemoveProjectMemberRequest:
		return c.removeMember(ctx, p.RemoveProjectMemberRequest)
	case *pmv1.WebSocketMessage_ListProjectMembersRequest:
		return c.listMembers(ctx, p.ListProjectMembersRequest)
	case *pmv1.WebSocketMessage_GetActivityRequest:
		return c.getActivity(ctx, p.GetActivityRequest)
	case *pmv1.WebSocketMessage_ListProjectsRequest:
		return c.listProjects(ctx)
	case *pmv1.WebSocketMessage_RefreshTokenRequest:
		return c.refreshToken(p.RefreshTokenRequest)
	}
	// checkEnvelope lets only requests through.
	return nil, nil, fmt.Errorf("dispatch: unexpected payload %T", req.Payload)
}

func (c *session) createWorkItem(ctx context.Context, r *pmv1.CreateWorkItemRequest) (*pmv1.WebSocketMessage, *event, error) {
	in, err := newWorkItem(r)
	if err != nil {
		return nil, nil, err
	}
	item, created, err := c.srv.cfg.Store.CreateWorkItem(ctx, c.actor, in)
	if err != nil {
		return nil, nil, err
	}
	msg := func() *pmv1.WebSocketMessage {
		return &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_WorkItemCreated{
			WorkItemCreated: &pmv1.WorkItemCreated{WorkItem: wireWorkItem(&item)},
		}}
	}
	if !created { // a retry of a create that already happened: nothing new to tell
		return msg(), nil, nil
	}
	return msg(), c.changeEvent(item.ProjectID, item.Revision, msg()), nil
}

func (c *session) updateWorkItem(ctx context.Context, r *pmv1.UpdateWorkItemRequest) (*pmv1.WebSocketMessage, *event, error) {
	id, err := pm.ParseID("work_item_id", r.WorkItemId, false)
	if err != nil {
		return nil, nil, err
	}
	if r.ExpectedVersion < 1 {
		return nil, nil, pm.FieldErrorf("expected_version", "expected_version is required (the version you last saw)")
	}
	patch, err := workItemPatch(r)
	if err != nil {
		return nil, nil, err
	}
	item, changes, err := c.srv.cfg.Store.UpdateWorkItem(ctx, c.actor, id, r.ExpectedVersion, patch)
	if err != nil {
		return nil, nil, err
	}
	msg := func() *pmv1.WebSocketMessage {
		return &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_WorkItemUpdated{
			WorkItemUpdated: &pmv1.WorkItemUpdated{WorkItem: wireWorkItem(&item), Changes: wireChanges(changes)},
		}}
	}
	if len(changes) == 0 { // every field already had its value: nothing committed
		return msg(), nil, nil
	}
	return msg(), c.changeEvent(item.ProjectID, item.Revision, msg()), nil
}

func (c *session) deleteWorkItem(ctx context.Context, r *pmv1.DeleteWorkItemRequest) (*pmv1.WebSocketMessage, *event, error) {
	id, err := pm.ParseID("work_item_id", r.WorkItemId, false)
	if err != nil {
		return nil, nil, err
	}
	if r.ExpectedVersion < 0 {
		return nil, nil, pm.FieldErrorf("expected_version", "expected_version cannot be negative")
	}
	item, err := c.srv.cfg.Store.DeleteWorkItem(ctx, c.actor, id, r.ExpectedVersion)
	if err != nil {
		return nil, nil, err
	}
	msg := func() *pmv1.WebSocketMessage {
		return &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_WorkItemDeleted{
			WorkItemDeleted: &pmv1.WorkItemDeleted{
				WorkItemId: item.ID.String(), Revision: item.Revision,
				ProjectId: item.ProjectID.String(), WorkItem: wireWorkItem(&item),
			},
		}}
	}
	return msg(), c.changeEvent(item.ProjectID, item.Revision, msg()), nil
}

func (c *session) changeEvent(project uuid.UUID, revision int64, msg *pmv1.WebSocketMessage) *event {
	return &event{key: pm.ProjectKey{Tenant: c.actor.Tenant, Project: project}, revision: revision, msg: msg, committed: c.srv.cfg.Now()}
}

// projectIDs parses a Subscribe/Unsubscribe list: 1..limit UUIDs, duplicates
// folded.
func projectIDs(ids []string, limit int) ([]uuid.UUID, error) {
	if len(ids) == 0 {
		return nil, pm.FieldErrorf("project_ids", "project_ids is required")
	}
	if len(ids) > limit {
		return nil, pm.FieldErrorf("project_ids", "at most %d projects per connection", limit)
	}
	seen := make(map[uuid.UUID]bool, len(ids))
	out := make([]uuid.UUID, 0, len(ids))
	for i, s := range ids {
		id, err := pm.ParseID(fmt.Sprintf("project_ids[%d]", i), s, false)
		if err != nil {
			return nil, err
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out, nil
}

// subscribe registers the connection for every project first and only
// then reads each project's revision, which checks the view role: a removal
// that commits before a read fails it, and one that commits after is
// published after the registration, so it revokes the subscription. A
// revocation that arrives during the subscribe fails it too. It is all or
// nothing: on any failure the projects it added are dropped again.
func (c *session) subscribe(ctx context.Context, r *pmv1.Subscribe) (*pmv1.WebSocketMessage, *event, error) {
	ids, err := projectIDs(r.ProjectIds, c.srv.cfg.MaxSubscriptions)
	if err != nil {
		return nil, nil, err
	}
	store, fanout := c.srv.cfg.Store, c.srv.cfg.Fanout
	var fresh []uuid.UUID
	c.subMu.Lock()
	for _, id := range ids {
		if _, ok := c.subs[id]; !ok {
			fresh = append(fresh, id)
		}
	}
	if len(c.subs)+len(fresh) > c.srv.cfg.MaxSubscriptions {
		c.subMu.Unlock()
		return nil, nil, pm.FieldErrorf("project_ids", "at most %d projects per connection", c.srv.cfg.MaxSubscriptions)
	}
	// Listed before they are registered, so that SubscriptionRevoked,
	// which can come as soon as they are, finds and removes them.
	for _, id := range fresh {
		c.subs[id] = struct{}{}
	}
	c.subMu.Unlock()
	undo := func() {
		for _, id := range fresh {
			fanout.Unsubscribe(pm.ProjectKey{Tenant: c.actor.Tenant, Project: id}, c)
		}
		c.subMu.Lock()
		for _, id := range fresh {
			delete(c.subs, id)
		}
		c.subMu.Unlock()
	}

	for _, id := range fresh {
		key := pm.ProjectKey{Tenant: c.actor.Tenant, Project: id}
		sctx, cancel := context.WithTimeout(ctx, subscribeWait)
		err := fanout.Subscribe(sctx, key, c)
		cancel()
		if err != nil && ctx.Err() == nil && sctx.Err() != nil {
			// Redis has not confirmed yet. The subscription stays registered
			// and the fan-out sends ResyncRequired once it is live (which
			// also checks the role again), so the client is served now and
			// repaired then.
			c.srv.log.WarnContext(ctx, "subscription not yet confirmed by Redis; continuing degraded", "project", id, "conn", c.id, "err", err)
			err = nil
		}
		if err != nil {
			undo()
			return nil, nil, fmt.Errorf("subscribe %s: %w", id, err)
		}
	}

	ack := &pmv1.SubscribeAck{Revisions: make(map[string]int64, len(ids))}
	for _, id := range ids {
		rev, err := store.ProjectRevision(ctx, c.actor, id)
		if err != nil {
			undo()
			return nil, nil, err
		}
		ack.ProjectIds = append(ack.ProjectIds, id.String())
		ack.Revisions[id.String()] = rev
	}
	c.subMu.Lock()
	for _, id := range ids {
		if _, ok := c.subs[id]; !ok {
			c.subMu.Unlock()
			undo()
			return nil, nil, &pm.Error{Code: pm.EUnauthorized, Field: "project_ids",
				Message: "access to project " + id.String() + " was revoked during the subscribe"}
		}
	}
	c.subMu.Unlock()
	return &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_SubscribeAck{SubscribeAck: ack}}, nil, nil
}

func (c *session) unsubscribe(r *pmv1.Unsubscribe) (*pmv1.WebSocketMessage, *event, error) {
	ids, err := projectIDs(r.ProjectIds, c.srv.cfg.MaxSubscriptions)
	if err != nil {
		return nil, nil, err
	}
	ack := &pmv1.UnsubscribeAck{}
	for _, id := range ids {
		c.srv.cfg.Fanout.Unsubscribe(pm.ProjectKey{Tenant: c.actor.Tenant, Project: id}, c)
		c.subMu.Lock()
		delete(c.subs, id)
		c.subMu.Unlock()
		ack.ProjectIds = append(ack.ProjectIds, id.String())
	}
	return &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_UnsubscribeAck{UnsubscribeAck: ack}}, nil, nil
}

func memberIDs(projectID, userID string) (project, user uuid.UUID, err error) {
	if project, err = pm.ParseID("project_id", projectID, false); err != nil {
		return
	}
	user, err = pm.ParseID("user_id", userID, false)
	return
}

func (c *session) addMember(ctx context.Context, r *pmv1.AddProjectMemberRequest) (*pmv1.WebSocketMessage, *event, error) {
	project, user, err := memberIDs(r.ProjectId, r.UserId)
	if err != nil {
		return nil, nil, err
	}
	role, err := enumValue(roles, r.Role, "role")
	if err != nil {
		return nil, nil, err
	}
	if role == "" {
		return nil, nil, pm.FieldErrorf("role", "role is required: viewer, editor or admin")
	}
	member, err := c.srv.cfg.Store.PutMember(ctx, c.actor, project, user, role)
	if err != nil {
		return nil, nil, err
	}
	return memberChanged(&member, false), nil, nil
}

func (c *session) removeMember(ctx context.Context, r *pmv1.RemoveProjectMemberRequest) (*pmv1.WebSocketMessage, *event, error) {
	project, user, err := memberIDs(r.ProjectId, r.UserId)
	if err != nil {
		return nil, nil, err
	}
	member, err := c.srv.cfg.Store.RemoveMember(ctx, c.actor, project, user)
	if err != nil {
		return nil, nil, err
	}
	ev := &event{key: pm.ProjectKey{Tenant: c.actor.Tenant, Project: project}, removed: user}
	return memberChanged(&member, true), ev, nil
}

func memberChanged(m *pm.Member, removed bool) *pmv1.WebSocketMessage {
	return &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_ProjectMemberChanged{
		ProjectMemberChanged: &pmv1.ProjectMemberChanged{Member: wireMember(m), Removed: removed},
	}}
}

func (c *session) listMembers(ctx context.Context, r *pmv1.ListProjectMembersRequest) (*pmv1.WebSocketMessage, *event, error) {
	project, err := pm.ParseID("project_id", r.ProjectId, false)
	if err != nil {
		return nil, nil, err
	}
	members, err := c.srv.cfg.Store.ListMembers(ctx, c.actor, project)
	if err != nil {
		return nil, nil, err
	}
	return membersPayload(project, members), nil, nil
}

func membersPayload(project uuid.UUID, members []pm.Member) *pmv1.WebSocketMessage {
	return &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_ProjectMembersList{
		ProjectMembersList: wireMembers(project, members),
	}}
}

func (c *session) listProjects(ctx context.Context) (*pmv1.WebSocketMessage, *event, error) {
	projects, err := c.srv.cfg.Store.ListProjects(ctx, c.actor)
	if err != nil {
		return nil, nil, err
	}
	return &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_ProjectsList{ProjectsList: wireProjects(projects)}}, nil, nil
}

func (c *session) getActivity(ctx context.Context, r *pmv1.GetActivityRequest) (*pmv1.WebSocketMessage, *event, error) {
	project, err := pm.ParseID("project_id", r.ProjectId, false)
	if err != nil {
		return nil, nil, err
	}
	item, err := pm.ParseID("work_item_id", r.WorkItemId, true)
	if err != nil {
		return nil, nil, err
	}
	if r.Limit < 0 || r.Limit > pm.ActivityPageMax {
		return nil, nil, pm.FieldErrorf("limit", "limit must be between 1 and %d (0: %d)", pm.ActivityPageMax, pm.ActivityPageDefault)
	}
	q := pm.ActivityQuery{ProjectID: project, WorkItemID: item, Limit: int(r.Limit)}
	if q.Limit == 0 {
		q.Limit = pm.ActivityPageDefault
	}
	if r.PageToken != "" {
		before, err := strconv.ParseInt(r.PageToken, 10, 64)
		if err != nil || before < 1 {
			return nil, nil, pm.FieldErrorf("page_token", "page_token is not one this server gave")
		}
		q.BeforeID = before
	}
	entries, err := c.srv.cfg.Store.ListActivity(ctx, c.actor, q)
	if err != nil {
		return nil, nil, err
	}
	list := &pmv1.ActivityList{Entries: make([]*pmv1.ActivityEntry, len(entries))}
	for i := range entries {
		list.Entries[i] = wireActivity(&entries[i])
	}
	if len(entries) == q.Limit {
		list.NextPageToken = strconv.FormatInt(entries[len(entries)-1].ID, 10)
	}
	return &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_ActivityList{ActivityList: list}}, nil, nil
}
