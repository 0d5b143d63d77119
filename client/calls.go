package client

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// Do sends a request and returns its answer. A request without a
// message_id gets a fresh one, written into m, so that sending the same m
// again is recognised by the node as the same request. The answer to a
// GetWorkItemsRequest comes in WorkItemsList chunks; Do reads them until the
// one marked complete and returns them as one WorkItemsList. If the
// connection drops before the whole answer, Do sends the request again,
// with the same message_id, on the next connection, and drops any chunks of
// the first; the node's idempotency makes that safe. Answers RATE_LIMITED and UNAVAILABLE are retried the same way after
// the node's retry_after_ms (unless Options.NoBusyRetry). An Error answer is
// returned as a *pm.Error. Do gives up when ctx ends, after
// Options.RequestTimeout, or when the client stops. If ctx carries an
// OpenTelemetry span and m no traceparent, Do sends the span's W3C trace
// context with the request, so that the node's spans join the caller's trace.
func (c *Client) Do(ctx context.Context, m *pmv1.WebSocketMessage) (*pmv1.WebSocketMessage, error) {
	if m.MessageId == "" {
		m.MessageId = newMessageID()
	}
	if m.Traceparent == "" && trace.SpanContextFromContext(ctx).IsValid() {
		propagation.TraceContext{}.Inject(ctx, m.TraceCarrier())
	}
	if c.opts.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.RequestTimeout)
		defer cancel()
	}
	m.Timestamp = time.Now().UnixMilli()
	frame, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("client: encode request: %w", err)
	}
	if len(frame) > c.opts.MaxFrameBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, len(frame), c.opts.MaxFrameBytes)
	}
	id := m.MessageId
	w := newWaiter()
	c.mu.Lock()
	if _, dup := c.pending[id]; dup {
		c.mu.Unlock()
		return nil, fmt.Errorf("client: message_id %q is already in flight", id)
	}
	c.pending[id] = w
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()

	busy := 0
	for {
		cn, err := c.waitConn(ctx)
		if err != nil {
			return nil, c.callError(ctx, err)
		}
		var resp *pmv1.WebSocketMessage
		// Chunks of an answer cut off with an earlier connection (whose
		// reader has stopped) are no part of this one.
		w.reset()
		if err := cn.write(frame); err != nil {
			// The connection is going: send again on the next one.
			select {
			case <-cn.lost:
				continue
			case <-ctx.Done():
				return nil, c.callError(ctx, ctx.Err())
			case <-c.ctx.Done():
				return nil, context.Cause(c.ctx)
			}
		}
		select {
		case resp = <-w.answer:
		case <-cn.lost:
			select {
			case resp = <-w.answer: // answered just before the loss
			default:
				continue // send again on the next connection
			}
		case <-ctx.Done():
			return nil, c.callError(ctx, ctx.Err())
		case <-c.ctx.Done():
			return nil, context.Cause(c.ctx)
		}
		e := resp.GetError()
		if e == nil {
			return resp, nil
		}
		perr := errorOf(e)
		if c.opts.NoBusyRetry || perr.Code != pm.ERateLimited && perr.Code != pm.EUnavailable {
			return nil, perr
		}
		if !c.pause(ctx, busyDelay(perr.RetryAfterMillis, busy)) {
			if c.ctx.Err() != nil {
				return nil, context.Cause(c.ctx)
			}
			return nil, perr
		}
		busy++
	}
}

// callError prefers the client's stop reason to a context error.
func (c *Client) callError(ctx context.Context, err error) error {
	if c.ctx.Err() != nil {
		return context.Cause(c.ctx)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("client: no answer: %w", ctx.Err())
	}
	return err
}

// busyDelay is the wait before re-sending a request the node was too busy
// for: its retry_after_ms (at least 10ms), growing with repeated refusals,
// at most 5s, with jitter.
func busyDelay(retryAfterMillis int64, attempt int) time.Duration {
	d := max(time.Duration(retryAfterMillis)*time.Millisecond, 10*time.Millisecond)
	d <<= min(attempt, 8)
	d = min(d, 5*time.Second)
	return d + rand.N(d/2+1)
}

// pause waits d unless ctx ends or the client stops.
func (c *Client) pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-c.ctx.Done():
		return false
	}
}

// CreateWorkItem creates a work item, or a project (item_type project, no
// parent). If r.WorkItemId is empty it is set to a new UUID (in r) first,
// so that neither the client's re-sends nor the caller's retries of r can
// create a second item: a retried create returns the item made first.
func (c *Client) CreateWorkItem(ctx context.Context, r *pmv1.CreateWorkItemRequest) (*pmv1.WorkItem, error) {
	if r.WorkItemId == "" {
		r.WorkItemId = uuid.NewString()
	}
	resp, err := c.Do(ctx, &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{CreateWorkItemRequest: r}})
	if err != nil {
		return nil, err
	}
	created := resp.GetWorkItemCreated()
	if created.GetWorkItem() == nil {
		return nil, unexpected("WorkItemCreated", resp)
	}
	return created.WorkItem, nil
}

// UpdateWorkItem changes the fields set in r. A stale expected_version is a
// *pm.Error CONFLICT whose CurrentVersion is the item's version.
func (c *Client) UpdateWorkItem(ctx context.Context, r *pmv1.UpdateWorkItemRequest) (*pmv1.WorkItemUpdated, error) {
	resp, err := c.Do(ctx, &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_UpdateWorkItemRequest{UpdateWorkItemRequest: r}})
	if err != nil {
		return nil, err
	}
	updated := resp.GetWorkItemUpdated()
	if updated.GetWorkItem() == nil {
		return nil, unexpected("WorkItemUpdated", resp)
	}
	return updated, nil
}

// DeleteWorkItem soft-deletes a work item without live children (else
// DELETE_BLOCKED).
func (c *Client) DeleteWorkItem(ctx context.Context, r *pmv1.DeleteWorkItemRequest) (*pmv1.WorkItemDeleted, error) {
	resp, err := c.Do(ctx, &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_DeleteWorkItemRequest{DeleteWorkItemRequest: r}})
	if err != nil {
		return nil, err
	}
	deleted := resp.GetWorkItemDeleted()
	if deleted == nil {
		return nil, unexpected("WorkItemDeleted", resp)
	}
	return deleted, nil
}

// GetWorkItems reads a project: every live item, or with since_revision
// every item changed after it, tombstones included. It reads every chunk of
// the node's answer and returns them joined, complete set: one snapshot, as
// of AsOfRevision. A load cut off by a reconnect is read again whole.
func (c *Client) GetWorkItems(ctx context.Context, r *pmv1.GetWorkItemsRequest) (*pmv1.WorkItemsList, error) {
	resp, err := c.Do(ctx, &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_GetWorkItemsRequest{GetWorkItemsRequest: r}})
	if err != nil {
		return nil, err
	}
	list := resp.GetWorkItemsList()
	if list == nil {
		return nil, unexpected("WorkItemsList", resp)
	}
	return list, nil
}

// AddProjectMember adds a member or changes a member's role; it returns
// the member after the change.
func (c *Client) AddProjectMember(ctx context.Context, r *pmv1.AddProjectMemberRequest) (*pmv1.ProjectMember, error) {
	changed, err := c.memberChange(ctx, &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_AddProjectMemberRequest{AddProjectMemberRequest: r}})
	return changed.GetMember(), err
}

// RemoveProjectMember removes a member; it returns the member as it was.
func (c *Client) RemoveProjectMember(ctx context.Context, r *pmv1.RemoveProjectMemberRequest) (*pmv1.ProjectMember, error) {
	changed, err := c.memberChange(ctx, &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_RemoveProjectMemberRequest{RemoveProjectMemberRequest: r}})
	return changed.GetMember(), err
}

func (c *Client) memberChange(ctx context.Context, m *pmv1.WebSocketMessage) (*pmv1.ProjectMemberChanged, error) {
	resp, err := c.Do(ctx, m)
	if err != nil {
		return nil, err
	}
	changed := resp.GetProjectMemberChanged()
	if changed == nil {
		return nil, unexpected("ProjectMemberChanged", resp)
	}
	return changed, nil
}

// ListProjectMembers lists a project's members.
func (c *Client) ListProjectMembers(ctx context.Context, r *pmv1.ListProjectMembersRequest) (*pmv1.ProjectMembersList, error) {
	return c.members(ctx, &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_ListProjectMembersRequest{ListProjectMembersRequest: r}})
}

func (c *Client) members(ctx context.Context, m *pmv1.WebSocketMessage) (*pmv1.ProjectMembersList, error) {
	resp, err := c.Do(ctx, m)
	if err != nil {
		return nil, err
	}
	list := resp.GetProjectMembersList()
	if list == nil {
		return nil, unexpected("ProjectMembersList", resp)
	}
	return list, nil
}

// ListProjects lists the projects the user is a member of, by title, each
// with the user's role, its revision and its live items counted by status.
func (c *Client) ListProjects(ctx context.Context) ([]*pmv1.ProjectSummary, error) {
	resp, err := c.Do(ctx, &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_ListProjectsRequest{ListProjectsRequest: &pmv1.ListProjectsRequest{}}})
	if err != nil {
		return nil, err
	}
	list := resp.GetProjectsList()
	if list == nil {
		return nil, unexpected("ProjectsList", resp)
	}
	return list.GetProjects(), nil
}

// GetActivity reads one page of a project's (or an item's) history, newest
// first.
func (c *Client) GetActivity(ctx context.Context, r *pmv1.GetActivityRequest) (*pmv1.ActivityList, error) {
	resp, err := c.Do(ctx, &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_GetActivityRequest{GetActivityRequest: r}})
	if err != nil {
		return nil, err
	}
	list := resp.GetActivityList()
	if list == nil {
		return nil, unexpected("ActivityList", resp)
	}
	return list, nil
}

// Subscribe subscribes to projects and returns their replicas, in the order
// given, once each has its first load (within Options.RequestTimeout). Projects already subscribed return
// their existing replica. The client keeps the replicas (and the
// subscriptions, across reconnects) until Unsubscribe, a revocation, or
// Close. The node answers all or nothing: an error subscribes to none of
// the new projects.
func (c *Client) Subscribe(ctx context.Context, projectIDs ...string) ([]*Project, error) {
	ids := make([]string, len(projectIDs))
	for i, id := range projectIDs {
		u, err := uuid.Parse(id)
		if err != nil {
			return nil, pm.FieldErrorf(fmt.Sprintf("project_ids[%d]", i), "project id %q is not a UUID", id)
		}
		ids[i] = u.String()
	}
	if len(ids) == 0 {
		return nil, pm.FieldErrorf("project_ids", "no project to subscribe to")
	}
	if c.opts.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.RequestTimeout)
		defer cancel()
	}
	c.mu.Lock()
	if c.ctx.Err() != nil {
		c.mu.Unlock()
		return nil, context.Cause(c.ctx)
	}
	replicas := make([]*Project, len(ids))
	var fresh []*Project
	for i, id := range ids {
		p := c.projects[id]
		if p == nil {
			// Registered before the request, so that no event after the
			// acknowledgement can miss its replica.
			p = newProject(id)
			c.projects[id] = p
			fresh = append(fresh, p)
		}
		replicas[i] = p
	}
	c.mu.Unlock()

	if _, err := c.subscribe(ctx, ids); err != nil {
		for _, p := range fresh {
			c.mu.Lock()
			if c.projects[p.id] == p {
				delete(c.projects, p.id)
			}
			c.mu.Unlock()
			p.end(err)
		}
		return nil, err
	}
	for _, p := range fresh {
		c.inbox.load(p)
	}
	for _, p := range replicas {
		select {
		case <-p.ready:
			if err := p.Err(); err != nil {
				return nil, fmt.Errorf("client: load project %s: %w", p.id, err)
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("client: load project %s: %w", p.id, ctx.Err())
		}
	}
	return replicas, nil
}

// subscribe sends one Subscribe request.
func (c *Client) subscribe(ctx context.Context, ids []string) (*pmv1.SubscribeAck, error) {
	resp, err := c.Do(ctx, &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_Subscribe{
		Subscribe: &pmv1.Subscribe{ProjectIds: ids},
	}})
	if err != nil {
		return nil, err
	}
	ack := resp.GetSubscribeAck()
	if ack == nil {
		return nil, unexpected("SubscribeAck", resp)
	}
	return ack, nil
}

// Unsubscribe ends the replicas of projects (with ErrUnsubscribed) and
// stops their events.
func (c *Client) Unsubscribe(ctx context.Context, projectIDs ...string) error {
	ids := make([]string, 0, len(projectIDs))
	for _, id := range projectIDs {
		id = canonicalID(id)
		ids = append(ids, id)
		if p := c.Project(id); p != nil {
			c.dropProject(p, ErrUnsubscribed)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	resp, err := c.Do(ctx, &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_Unsubscribe{
		Unsubscribe: &pmv1.Unsubscribe{ProjectIds: ids},
	}})
	if err != nil {
		return err
	}
	if resp.GetUnsubscribeAck() == nil {
		return unexpected("UnsubscribeAck", resp)
	}
	return nil
}

// canonicalID returns a UUID in its canonical text form (as the node sends
// it), or s unchanged if it is not one.
func canonicalID(s string) string {
	if u, err := uuid.Parse(s); err == nil {
		return u.String()
	}
	return s
}
