package pm

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/pmhq/pm/position"
)

// Validation limits, enforced on every request and documented in docs/protocol.md.
const (
	TitleMaxRunes       = 500      // after trimming; at least one rune
	DescriptionMaxBytes = 64 << 10 // UTF-8 bytes
	StoryPointsMin      = 0        // inclusive
	StoryPointsMax      = 1000     // inclusive
	PositionMaxBytes    = 256      // of a client's position; half of position.MaxKeyLength
	MessageIDMaxBytes   = 128      // a request's message_id
	// TimestampMaxMillis is the largest unix-millisecond time a request may
	// carry: 9999-12-31T23:59:59.999Z, within Postgres's and JavaScript's range.
	TimestampMaxMillis = 253402300799999
)

// ItemType is the level of a work item.
type ItemType string

// The item types, highest rank first.
const (
	TypeProject ItemType = "project"
	TypeEpic    ItemType = "epic"
	TypeStory   ItemType = "story"
	TypeTask    ItemType = "task"
)

// Rank orders item types: project 4 > epic 3 > story 2 > task 1; 0 for an
// unknown type.
func (t ItemType) Rank() int {
	switch t {
	case TypeProject:
		return 4
	case TypeEpic:
		return 3
	case TypeStory:
		return 2
	case TypeTask:
		return 1
	}
	return 0
}

// Valid reports whether t is a known item type.
func (t ItemType) Valid() bool { return t.Rank() > 0 }

// CanParent reports whether an item of type parent may have a child of type
// child: the child ranks strictly below. Because ranks strictly fall along
// every parent chain, the rule also makes cycles impossible.
func CanParent(parent, child ItemType) bool {
	return parent.Valid() && child.Valid() && parent.Rank() > child.Rank()
}

// Status is a work item's board column.
type Status string

// The statuses, in board order.
const (
	StatusBacklog    Status = "backlog"
	StatusTodo       Status = "todo"
	StatusInProgress Status = "in_progress"
	StatusReview     Status = "review"
	StatusDone       Status = "done"
)

// Statuses lists the statuses in board order.
var Statuses = []Status{StatusBacklog, StatusTodo, StatusInProgress, StatusReview, StatusDone}

// Valid reports whether s is a known status.
func (s Status) Valid() bool {
	switch s {
	case StatusBacklog, StatusTodo, StatusInProgress, StatusReview, StatusDone:
		return true
	}
	return false
}

// Priority is how urgent a work item is.
type Priority string

// The priorities, lowest first.
const (
	PriorityLow      Priority = "low"
	PriorityMedium   Priority = "medium"
	PriorityHigh     Priority = "high"
	PriorityCritical Priority = "critical"
)

// Valid reports whether p is a known priority.
func (p Priority) Valid() bool {
	switch p {
	case PriorityLow, PriorityMedium, PriorityHigh, PriorityCritical:
		return true
	}
	return false
}

// WorkItem is a project, epic, story or task. A project's ProjectID is its
// own ID. uuid.Nil means "none" for ParentID and AssigneeID; a zero DeletedAt
// means the item is live.
type WorkItem struct {
	ID          uuid.UUID
	ProjectID   uuid.UUID
	ParentID    uuid.UUID
	Type        ItemType
	Title       string
	Description string
	Status      Status
	Priority    Priority
	AssigneeID  uuid.UUID
	Position    string
	StoryPoints *int32
	Version     int64
	Revision    int64
	CreatedAt   time.Time
	UpdatedAt   time.Time
	DeletedAt   time.Time
	CreatedBy   uuid.UUID
	UpdatedBy   uuid.UUID
}

// Deleted reports whether the item is a tombstone.
func (w *WorkItem) Deleted() bool { return !w.DeletedAt.IsZero() }

// ProjectSummary is one of a user's projects as a list shows it: the
// project's item, the user's role, how many live items of the project (the
// project item not counted) each status holds, and the project's revision
// when they were counted. A status without items is absent from Counts.
type ProjectSummary struct {
	Project  WorkItem
	Role     Role
	Counts   map[Status]int64
	Revision int64
}

// NewWorkItem is a request to create a work item. Zero values mean defaults:
// a new ID, backlog, medium, a position after the last item of its column.
type NewWorkItem struct {
	ID          uuid.UUID // client-chosen; uuid.Nil: the server picks one
	ProjectID   uuid.UUID // may be Nil when ParentID is set; Nil for a new project
	ParentID    uuid.UUID // Nil: the project itself is the parent (none for a project)
	Type        ItemType
	Title       string
	Description string
	Status      Status
	Priority    Priority
	AssigneeID  uuid.UUID
	Position    string
	StoryPoints *int32
}

// Normalize trims the title, fills in defaults and checks every field that
// can be checked without the database. It returns a VALIDATION_ERROR naming
// the first offending field.
func (n *NewWorkItem) Normalize() error {
	n.Title = strings.TrimSpace(n.Title)
	if n.Status == "" {
		n.Status = StatusBacklog
	}
	if n.Priority == "" {
		n.Priority = PriorityMedium
	}
	if !n.Type.Valid() {
		return FieldErrorf("item_type", "item_type is required: project, epic, story or task")
	}
	if n.Type == TypeProject {
		if n.ParentID != uuid.Nil {
			return FieldErrorf("parent_id", "a project has no parent")
		}
		if n.ProjectID != uuid.Nil && n.ProjectID != n.ID {
			return FieldErrorf("project_id", "a new project takes no project_id")
		}
	} else if n.ProjectID == uuid.Nil && n.ParentID == uuid.Nil {
		return FieldErrorf("project_id", "project_id or parent_id is required for a %s", n.Type)
	}
	if err := ValidateTitle(n.Title); err != nil {
		return err
	}
	if err := ValidateDescription(n.Description); err != nil {
		return err
	}
	if !n.Status.Valid() {
		return FieldErrorf("status", "unknown status %q", n.Status)
	}
	if !n.Priority.Valid() {
		return FieldErrorf("priority", "unknown priority %q", n.Priority)
	}
	if err := ValidateStoryPoints(n.StoryPoints); err != nil {
		return err
	}
	if n.Position != "" {
		if err := ValidatePosition(n.Position); err != nil {
			return err
		}
	}
	return nil
}

// Changes lists every field a newly created item sets, for its activity entry.
func (w *WorkItem) Changes() []FieldChange {
	all := []FieldChange{
		{Field: "item_type", New: string(w.Type)},
		{Field: "title", New: w.Title},
		{Field: "description", New: w.Description},
		{Field: "status", New: string(w.Status)},
		{Field: "priority", New: string(w.Priority)},
		{Field: "assignee_id", New: uuidText(w.AssigneeID)},
		{Field: "parent_id", New: uuidText(w.ParentID)},
		{Field: "position", New: w.Position},
		{Field: "story_points", New: pointsText(w.StoryPoints)},
	}
	changes := all[:0]
	for _, c := range all {
		if c.New != "" {
			changes = append(changes, c)
		}
	}
	return changes
}

// WorkItemPatch changes the fields that are set (non-nil). A pointer to
// uuid.Nil unassigns; ClearStoryPoints removes the estimate.
type WorkItemPatch struct {
	Title            *string
	Description      *string
	Status           *Status
	Priority         *Priority
	AssigneeID       *uuid.UUID
	ParentID         *uuid.UUID
	Position         *string
	StoryPoints      *int32
	ClearStoryPoints bool
}

// Normalize trims the title and checks every set field. It returns a
// VALIDATION_ERROR naming the first offending field.
func (p *WorkItemPatch) Normalize() error {
	if p.Title != nil {
		t := strings.TrimSpace(*p.Title)
		p.Title = &t
		if err := ValidateTitle(t); err != nil {
			return err
		}
	}
	if p.Description != nil {
		if err := ValidateDescription(*p.Description); err != nil {
			return err
		}
	}
	if p.Status != nil && !p.Status.Valid() {
		return FieldErrorf("status", "unknown status %q", *p.Status)
	}
	if p.Priority != nil && !p.Priority.Valid() {
		return FieldErrorf("priority", "unknown priority %q", *p.Priority)
	}
	if p.ParentID != nil && *p.ParentID == uuid.Nil {
		return FieldErrorf("parent_id", "parent_id cannot be emptied; only a project has no parent")
	}
	if p.Position != nil {
		if err := ValidatePosition(*p.Position); err != nil {
			return err
		}
	}
	if p.StoryPoints != nil && p.ClearStoryPoints {
		return FieldErrorf("clear_story_points", "clear_story_points and story_points exclude each other")
	}
	return ValidateStoryPoints(p.StoryPoints)
}

// Empty reports whether the patch sets no field.
func (p *WorkItemPatch) Empty() bool {
	return p.Title == nil && p.Description == nil && p.Status == nil && p.Priority == nil &&
		p.AssigneeID == nil && p.ParentID == nil && p.Position == nil && p.StoryPoints == nil &&
		!p.ClearStoryPoints
}

// Apply changes w by the patch and returns the fields whose value actually
// changed, in a fixed order. Setting a field to its current value is no change.
// It does not check the hierarchy: a new parent must be checked by the caller.
func (p *WorkItemPatch) Apply(w *WorkItem) []FieldChange {
	var changes []FieldChange
	set := func(field, old, new string) bool {
		if old == new {
			return false
		}
		changes = append(changes, FieldChange{Field: field, Old: old, New: new})
		return true
	}
	if p.Title != nil && set("title", w.Title, *p.Title) {
		w.Title = *p.Title
	}
	if p.Description != nil && set("description", w.Description, *p.Description) {
		w.Description = *p.Description
	}
	if p.Status != nil && set("status", string(w.Status), string(*p.Status)) {
		w.Status = *p.Status
	}
	if p.Priority != nil && set("priority", string(w.Priority), string(*p.Priority)) {
		w.Priority = *p.Priority
	}
	if p.AssigneeID != nil && set("assignee_id", uuidText(w.AssigneeID), uuidText(*p.AssigneeID)) {
		w.AssigneeID = *p.AssigneeID
	}
	if p.ParentID != nil && set("parent_id", uuidText(w.ParentID), uuidText(*p.ParentID)) {
		w.ParentID = *p.ParentID
	}
	if p.Position != nil && set("position", w.Position, *p.Position) {
		w.Position = *p.Position
	}
	switch {
	case p.StoryPoints != nil:
		if set("story_points", pointsText(w.StoryPoints), pointsText(p.StoryPoints)) {
			v := *p.StoryPoints
			w.StoryPoints = &v
		}
	case p.ClearStoryPoints:
		if set("story_points", pointsText(w.StoryPoints), "") {
			w.StoryPoints = nil
		}
	}
	return changes
}

// FieldChange is one field's old and new value as text: enums by name, ids as
// UUID text, "" for none.
type FieldChange struct {
	Field string `json:"field"`
	Old   string `json:"old,omitempty"`
	New   string `json:"new,omitempty"`
}

// ValidateTitle checks a trimmed title: 1..TitleMaxRunes runes of valid
// UTF-8, no NUL (which Postgres text cannot hold).
func ValidateTitle(title string) error {
	switch {
	case !utf8.ValidString(title):
		return FieldErrorf("title", "title is not valid UTF-8")
	case strings.IndexByte(title, 0) >= 0:
		return FieldErrorf("title", "title must not contain NUL characters")
	case title == "":
		return FieldErrorf("title", "title is required")
	case utf8.RuneCountInString(title) > TitleMaxRunes:
		return FieldErrorf("title", "title is longer than %d characters", TitleMaxRunes)
	}
	return nil
}

// ValidateDescription checks a description: valid UTF-8 without NUL, at
// most DescriptionMaxBytes bytes.
func ValidateDescription(d string) error {
	switch {
	case !utf8.ValidString(d):
		return FieldErrorf("description", "description is not valid UTF-8")
	case strings.IndexByte(d, 0) >= 0:
		return FieldErrorf("description", "description must not contain NUL characters")
	case len(d) > DescriptionMaxBytes:
		return FieldErrorf("description", "description is longer than %d bytes", DescriptionMaxBytes)
	}
	return nil
}

// ValidateStoryPoints checks an estimate: none, or StoryPointsMin..StoryPointsMax.
func ValidateStoryPoints(points *int32) error {
	if points != nil && (*points < StoryPointsMin || *points > StoryPointsMax) {
		return FieldErrorf("story_points", "story_points must be between %d and %d", StoryPointsMin, StoryPointsMax)
	}
	return nil
}

// ValidatePosition checks a fractional-index key a client sends: well
// formed, at most PositionMaxBytes, and not in the two outermost integer
// ranges (heads 'A' and 'z'), which no sequence of real moves reaches and
// past which no key could be added: so the server can always append to a
// column and a client can always prepend, whatever positions others gave.
func ValidatePosition(key string) error {
	if err := position.Validate(key); err != nil {
		return FieldErrorf("position", "position is not a valid fractional index key: %v", err)
	}
	if len(key) > PositionMaxBytes {
		return FieldErrorf("position", "position is longer than %d bytes", PositionMaxBytes)
	}
	if key[0] == 'A' || key[0] == 'z' {
		return FieldErrorf("position", "position is at the very edge of the key space (starts with %q); use keys between your neighbours' (fractional indexing)", key[0])
	}
	return nil
}

// ParseID parses a UUID sent in field; "" is uuid.Nil when optional, an
// error otherwise.
func ParseID(field, s string, optional bool) (uuid.UUID, error) {
	if s == "" {
		if optional {
			return uuid.Nil, nil
		}
		return uuid.Nil, FieldErrorf(field, "%s is required", field)
	}
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		return uuid.Nil, FieldErrorf(field, "%s is not a UUID", field)
	}
	return id, nil
}

func uuidText(id uuid.UUID) string {
	if id == uuid.Nil {
		return ""
	}
	return id.String()
}

func pointsText(p *int32) string {
	if p == nil {
		return ""
	}
	return strconv.Itoa(int(*p))
}
