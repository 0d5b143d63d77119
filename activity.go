package pm

import (
	"time"

	"github.com/google/uuid"
)

// Action says what an activity entry records.
type Action string

// The actions.
const (
	ActionCreated           Action = "created"
	ActionUpdated           Action = "updated"
	ActionDeleted           Action = "deleted"
	ActionMemberAdded       Action = "member_added"
	ActionMemberRoleChanged Action = "member_role_changed"
	ActionMemberRemoved     Action = "member_removed"
)

// ActivityEntry records one change: who did what to which item or member,
// which fields changed, and the project revision it produced (membership
// changes do not bump the revision and record the revision they saw).
type ActivityEntry struct {
	ID           int64
	ProjectID    uuid.UUID
	WorkItemID   uuid.UUID // Nil for membership changes
	MemberUserID uuid.UUID // Nil for work item changes
	ActorID      uuid.UUID
	Action       Action
	Changes      []FieldChange
	Revision     int64
	CreatedAt    time.Time
}

// Activity page sizes.
const (
	ActivityPageDefault = 50
	ActivityPageMax     = 200
)

// ActivityQuery selects a page of a project's history, or one item's, newest first.
type ActivityQuery struct {
	ProjectID  uuid.UUID
	WorkItemID uuid.UUID // Nil: the whole project
	Limit      int       // 1..ActivityPageMax; 0 means ActivityPageDefault
	BeforeID   int64     // 0: from the newest; else entries with ID < BeforeID
}

// WorkItemQuery selects the items of a project: every live item, or those
// changed after SinceRevision, or after SinceTime (tombstones included for both).
type WorkItemQuery struct {
	ProjectID     uuid.UUID
	SinceRevision int64
	SinceTime     time.Time
}
