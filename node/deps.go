package node

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/pmhq/pm"
)

// Store is what the node needs from the database (implemented by repo.Store).
// Every method checks the actor's project role inside its own transaction and
// returns *pm.Error values for every failure a client may see: UNAUTHORIZED,
// NOT_FOUND, CONFLICT, DELETE_BLOCKED, VALIDATION_ERROR, and UNAVAILABLE when
// the database is slow or down.
type Store interface {
	// CreateWorkItem creates an item (editor role) or a project (any actor,
	// who becomes its admin). With a client-chosen ID that exists already and
	// was created by the same actor in the same project, it returns that item
	// and created=false, changing nothing.
	CreateWorkItem(ctx context.Context, actor pm.Actor, in pm.NewWorkItem) (item pm.WorkItem, created bool, err error)
	// UpdateWorkItem applies a patch to the item at expectedVersion (editor
	// role) and returns the new state and the fields that changed.
	UpdateWorkItem(ctx context.Context, actor pm.Actor, id uuid.UUID, expectedVersion int64, patch pm.WorkItemPatch) (pm.WorkItem, []pm.FieldChange, error)
	// DeleteWorkItem soft-deletes an item without live children (editor role);
	// expectedVersion 0 accepts any version. It returns the tombstone.
	DeleteWorkItem(ctx context.Context, actor pm.Actor, id uuid.UUID, expectedVersion int64) (pm.WorkItem, error)
	// GetWorkItem reads one item as it is now, tombstones included (viewer role).
	GetWorkItem(ctx context.Context, actor pm.Actor, id uuid.UUID) (pm.WorkItem, error)
	// StreamWorkItems reads a project (viewer role) in one snapshot, ordered
	// by position then id, and hands the items to page a page at a time: at
	// least once (an empty result is one empty page), every time with the
	// same snapshot. Pages are bounded in items and bytes; page must not keep
	// the slice (it may keep the items' strings). An error from page ends the
	// read and is returned in the chain of the result. Once a page was handed
	// out, a failure is returned, never retried from the start.
	StreamWorkItems(ctx context.Context, actor pm.Actor, q pm.WorkItemQuery, page func(pm.Snapshot, []pm.WorkItem) error) error
	// ProjectRevision checks that the actor may view the project and returns
	// its current revision.
	ProjectRevision(ctx context.Context, actor pm.Actor, project uuid.UUID) (int64, error)
	// PutMember adds a member or changes a member's role (admin role) and
	// returns the member after the change; demoting the last admin fails.
	PutMember(ctx context.Context, actor pm.Actor, project, user uuid.UUID, role pm.Role) (pm.Member, error)
	// RemoveMember removes a member (admin role) and returns it as it was;
	// removing the last admin fails.
	RemoveMember(ctx context.Context, actor pm.Actor, project, user uuid.UUID) (pm.Member, error)
	// ListMembers lists a project's members by user id, with their
	// profiles (viewer role).
	ListMembers(ctx context.Context, actor pm.Actor, project uuid.UUID) ([]pm.Member, error)
	// ListActivity reads a page of history, newest first (viewer role).
	ListActivity(ctx context.Context, actor pm.Actor, q pm.ActivityQuery) ([]pm.ActivityEntry, error)
	// ListProjects lists every live project the actor is a member of, by
	// title then id, with the actor's role, the project's revision and its
	// live items counted by status.
	ListProjects(ctx context.Context, actor pm.Actor) ([]pm.ProjectSummary, error)
	// RecordProfile stores the actor's name and email in the tenant: each
	// non-empty field replaces the stored one. Unchanged, it writes nothing.
	RecordProfile(ctx context.Context, actor pm.Actor, p pm.Profile) error
	// Ping checks that the database answers.
	Ping(ctx context.Context) error
}

// Fanout carries committed events to subscribers on every node (implemented
// by pubsub.Hub). Events are encoded frames, forwarded byte for byte.
type Fanout interface {
	// Publish sends an event frame of a project to its subscribers on every
	// node, except the subscriber whose ID is origin. committed is when the
	// change committed, for the event's age at delivery; the trace context
	// of ctx, if any, goes with the event.
	Publish(ctx context.Context, key pm.ProjectKey, revision int64, origin string, frame []byte, committed time.Time) error
	// PublishMemberRemoved tells every node to drop user's subscriptions to
	// the project and to tell them so.
	PublishMemberRemoved(ctx context.Context, key pm.ProjectKey, user uuid.UUID) error
	// Subscribe adds a local subscriber of a project and returns once events
	// of the project are flowing to this node.
	Subscribe(ctx context.Context, key pm.ProjectKey, sub pm.Subscriber) error
	// Unsubscribe removes a subscriber from a project.
	Unsubscribe(key pm.ProjectKey, sub pm.Subscriber)
	// UnsubscribeAll removes a subscriber from every project.
	UnsubscribeAll(sub pm.Subscriber)
}

// Idempotency remembers the outcomes of mutating requests by pm.RequestKey,
// across nodes (implemented by pubsub.Ledger). A key's Digest tells requests
// that reuse a message_id apart: a claim of a key whose record has another
// digest is refused with a VALIDATION_ERROR on message_id.
type Idempotency interface {
	// Claim reserves the request's key and returns a token that proves the
	// claim. If a response was stored for the key, Claim returns it as replay
	// and the request must not run again. If another attempt still runs,
	// Claim waits up to wait for its response and otherwise returns an
	// UNAVAILABLE *pm.Error. Any other error means the ledger is out of
	// reach: the caller proceeds without it.
	Claim(ctx context.Context, key pm.RequestKey, wait time.Duration) (token string, replay []byte, err error)
	// Complete stores the record of a request's outcome (what a replay
	// needs), if the claim is still token's.
	Complete(ctx context.Context, key pm.RequestKey, token string, response []byte) error
	// Release gives up a claim without a response (the request failed in a
	// way worth retrying), so that a retry runs again.
	Release(ctx context.Context, key pm.RequestKey, token string) error
}

// Quota keeps the limits that span the cluster (implemented by
// quota.Limiter): connections per tenant on every node, and each tenant's
// request rate. Each method bounds its own Redis calls. An error means the
// limit could not be checked: the node lets the connection or request
// through (fails open), logs and counts it.
type Quota interface {
	// AcquireConnection counts one more connection of tenant, unless the
	// tenant holds max connections in the cluster already (max 0: no cap);
	// then ok is false and nothing is counted. A connection let in (ok, or
	// an error) is released once with ReleaseConnection.
	AcquireConnection(ctx context.Context, tenant string, max int) (ok bool, err error)
	// ReleaseConnection un-counts a connection AcquireConnection let in.
	ReleaseConnection(tenant string)
	// AllowRequest takes one request from the tenant's cluster-wide budget
	// of perSecond a second with bursts of burst. Refused, it returns how
	// long until a request would be allowed; allowed, zero.
	AllowRequest(ctx context.Context, tenant string, perSecond, burst int) (retryAfter time.Duration, err error)
}
