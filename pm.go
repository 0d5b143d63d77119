// Package pm holds the domain of pm, a real-time project-management backend:
// work items and their hierarchy, statuses, priorities, project roles, the
// validation rules and limits, field-change tracking, activity entries, the
// coded Error type, and the small interfaces the transport layers share.
//
// It does no I/O. The packages that do — node (WebSocket), repo (Postgres)
// and pubsub (Redis) — import it and never each other; cmd/ wires them.
package pm

import (
	"time"

	"github.com/google/uuid"
)

// Actor is the authenticated caller of an operation: a user of a tenant.
type Actor struct {
	Tenant string
	User   uuid.UUID
}

// ProjectKey names a project across tenants: the unit of subscription and of
// the revision counter.
type ProjectKey struct {
	Tenant  string
	Project uuid.UUID
}

// String returns "tenant:project", as in the Redis channel name.
func (k ProjectKey) String() string { return k.Tenant + ":" + k.Project.String() }

// RequestKey identifies one request of one user, for idempotency: a repeated
// message_id from the same user is the same request.
type RequestKey struct {
	Tenant    string
	User      uuid.UUID
	MessageID string
	// Digest identifies the request's content (a hash of its payload): the
	// same MessageID with another Digest is another request, which is
	// refused rather than answered with the first one's outcome.
	Digest string
}

// Snapshot says what state a read saw: the project's revision and the
// database time of the read.
type Snapshot struct {
	Revision int64
	Time     time.Time
}

// Subscriber receives the events of the projects it subscribed to. It is a
// client connection on this node. Its methods must not block: a subscriber
// bounds its own queue and disconnects itself when it falls behind.
type Subscriber interface {
	// SubscriberID is unique in the cluster; an event whose origin equals it
	// is not delivered (the author already has the response).
	SubscriberID() string
	// UserID is the authenticated user, for membership removals.
	UserID() uuid.UUID
	// Deliver queues an encoded event frame.
	Deliver(frame []byte)
	// ResyncRequired says that events of the project may have been lost.
	ResyncRequired(project uuid.UUID, reason string)
	// SubscriptionRevoked says the subscription to the project has ended.
	SubscriptionRevoked(project uuid.UUID, reason string)
}
