package node

import (
	"time"

	"github.com/google/uuid"

	"github.com/pmhq/pm"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// Conversions between the wire types of proto/pm/v1 and the domain types of pm.

var itemTypes = map[pmv1.WorkItemType]pm.ItemType{
	pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT: pm.TypeProject,
	pmv1.WorkItemType_WORK_ITEM_TYPE_EPIC:    pm.TypeEpic,
	pmv1.WorkItemType_WORK_ITEM_TYPE_STORY:   pm.TypeStory,
	pmv1.WorkItemType_WORK_ITEM_TYPE_TASK:    pm.TypeTask,
}

var statuses = map[pmv1.WorkItemStatus]pm.Status{
	pmv1.WorkItemStatus_WORK_ITEM_STATUS_BACKLOG:     pm.StatusBacklog,
	pmv1.WorkItemStatus_WORK_ITEM_STATUS_TODO:        pm.StatusTodo,
	pmv1.WorkItemStatus_WORK_ITEM_STATUS_IN_PROGRESS: pm.StatusInProgress,
	pmv1.WorkItemStatus_WORK_ITEM_STATUS_REVIEW:      pm.StatusReview,
	pmv1.WorkItemStatus_WORK_ITEM_STATUS_DONE:        pm.StatusDone,
}

var priorities = map[pmv1.WorkItemPriority]pm.Priority{
	pmv1.WorkItemPriority_WORK_ITEM_PRIORITY_LOW:      pm.PriorityLow,
	pmv1.WorkItemPriority_WORK_ITEM_PRIORITY_MEDIUM:   pm.PriorityMedium,
	pmv1.WorkItemPriority_WORK_ITEM_PRIORITY_HIGH:     pm.PriorityHigh,
	pmv1.WorkItemPriority_WORK_ITEM_PRIORITY_CRITICAL: pm.PriorityCritical,
}

var roles = map[pmv1.ProjectRole]pm.Role{
	pmv1.ProjectRole_PROJECT_ROLE_VIEWER: pm.RoleViewer,
	pmv1.ProjectRole_PROJECT_ROLE_EDITOR: pm.RoleEditor,
	pmv1.ProjectRole_PROJECT_ROLE_ADMIN:  pm.RoleAdmin,
}

var actions = map[pm.Action]pmv1.ActivityAction{
	pm.ActionCreated:           pmv1.ActivityAction_ACTIVITY_ACTION_CREATED,
	pm.ActionUpdated:           pmv1.ActivityAction_ACTIVITY_ACTION_UPDATED,
	pm.ActionDeleted:           pmv1.ActivityAction_ACTIVITY_ACTION_DELETED,
	pm.ActionMemberAdded:       pmv1.ActivityAction_ACTIVITY_ACTION_MEMBER_ADDED,
	pm.ActionMemberRoleChanged: pmv1.ActivityAction_ACTIVITY_ACTION_MEMBER_ROLE_CHANGED,
	pm.ActionMemberRemoved:     pmv1.ActivityAction_ACTIVITY_ACTION_MEMBER_REMOVED,
}

// invert returns the reverse of a one-to-one map.
func invert[K, V comparable](m map[K]V) map[V]K {
	r := make(map[V]K, len(m))
	for k, v := range m {
		r[v] = k
	}
	return r
}

var (
	itemTypesToWire  = invert(itemTypes)
	statusesToWire   = invert(statuses)
	prioritiesToWire = invert(priorities)
	rolesToWire      = invert(roles)
)

// enumValue maps a wire enum to its domain value. UNSPECIFIED gives the
// zero value (a default, where the field allows one); an unknown number is
// a VALIDATION_ERROR on field.
func enumValue[W comparable, D any](m map[W]D, w W, field string) (D, error) {
	var zero D
	var unspecified W
	if w == unspecified {
		return zero, nil
	}
	d, ok := m[w]
	if !ok {
		return zero, pm.FieldErrorf(field, "%s has an unknown value %v", field, w)
	}
	return d, nil
}

func idText(id uuid.UUID) string {
	if id == uuid.Nil {
		return ""
	}
	return id.String()
}

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func wireWorkItem(w *pm.WorkItem) *pmv1.WorkItem {
	return &pmv1.WorkItem{
		Id:          w.ID.String(),
		ProjectId:   w.ProjectID.String(),
		ParentId:    idText(w.ParentID),
		ItemType:    itemTypesToWire[w.Type],
		Title:       w.Title,
		Description: w.Description,
		Status:      statusesToWire[w.Status],
		Priority:    prioritiesToWire[w.Priority],
		AssigneeId:  idText(w.AssigneeID),
		Position:    w.Position,
		StoryPoints: w.StoryPoints,
		Version:     w.Version,
		Revision:    w.Revision,
		CreatedAt:   millis(w.CreatedAt),
		UpdatedAt:   millis(w.UpdatedAt),
		DeletedAt:   millis(w.DeletedAt),
		CreatedBy:   idText(w.CreatedBy),
		UpdatedBy:   idText(w.UpdatedBy),
	}
}

func wireChanges(changes []pm.FieldChange) []*pmv1.FieldChange {
	out := make([]*pmv1.FieldChange, len(changes))
	for i, c := range changes {
		out[i] = &pmv1.FieldChange{FieldName: c.Field, OldValue: c.Old, NewValue: c.New}
	}
	return out
}

func wireMembers(project uuid.UUID, members []pm.Member) *pmv1.ProjectMembersList {
	list := &pmv1.ProjectMembersList{ProjectId: project.String(), Members: make([]*pmv1.ProjectMember, len(members))}
	for i := range members {
		list.Members[i] = wireMember(&members[i])
	}
	return list
}

func wireMember(m *pm.Member) *pmv1.ProjectMember {
	return &pmv1.ProjectMember{
		ProjectId:   m.ProjectID.String(),
		UserId:      m.UserID.String(),
		Role:        rolesToWire[m.Role],
		AddedAt:     millis(m.AddedAt),
		AddedBy:     idText(m.AddedBy),
		DisplayName: m.Profile.Name,
		Email:       m.Profile.Email,
	}
}

// wireProjects lists projects with their counts in the order of pm.Statuses.
func wireProjects(projects []pm.ProjectSummary) *pmv1.ProjectsList {
	list := &pmv1.ProjectsList{Projects: make([]*pmv1.ProjectSummary, len(projects))}
	for i := range projects {
		p := &projects[i]
		summary := &pmv1.ProjectSummary{Project: wireWorkItem(&p.Project), Role: rolesToWire[p.Role], Revision: p.Revision}
		for _, status := range pm.Statuses {
			if n := p.Counts[status]; n > 0 {
				summary.Counts = append(summary.Counts, &pmv1.StatusCount{Status: statusesToWire[status], Count: n})
			}
		}
		list.Projects[i] = summary
	}
	return list
}

func wireActivity(e *pm.ActivityEntry) *pmv1.ActivityEntry {
	return &pmv1.ActivityEntry{
		Id:           e.ID,
		ProjectId:    e.ProjectID.String(),
		WorkItemId:   idText(e.WorkItemID),
		ActorId:      idText(e.ActorID),
		Action:       actions[e.Action],
		Changes:      wireChanges(e.Changes),
		Revision:     e.Revision,
		CreatedAt:    millis(e.CreatedAt),
		MemberUserId: idText(e.MemberUserID),
	}
}

func wireError(e *pm.Error) *pmv1.Error {
	return &pmv1.Error{
		Code:           e.Code,
		Message:        e.Message,
		Field:          e.Field,
		CurrentVersion: e.CurrentVersion,
		RetryAfterMs:   e.RetryAfterMillis,
	}
}

// newWorkItem reads a create request into the domain's form.
func newWorkItem(r *pmv1.CreateWorkItemRequest) (pm.NewWorkItem, error) {
	var in pm.NewWorkItem
	var err error
	if in.ID, err = pm.ParseID("work_item_id", r.WorkItemId, true); err != nil {
		return in, err
	}
	if in.ProjectID, err = pm.ParseID("project_id", r.ProjectId, true); err != nil {
		return in, err
	}
	if in.ParentID, err = pm.ParseID("parent_id", r.ParentId, true); err != nil {
		return in, err
	}
	if in.AssigneeID, err = pm.ParseID("assignee_id", r.AssigneeId, true); err != nil {
		return in, err
	}
	if in.Type, err = enumValue(itemTypes, r.ItemType, "item_type"); err != nil {
		return in, err
	}
	if in.Status, err = enumValue(statuses, r.Status, "status"); err != nil {
		return in, err
	}
	if in.Priority, err = enumValue(priorities, r.Priority, "priority"); err != nil {
		return in, err
	}
	in.Title, in.Description, in.Position, in.StoryPoints = r.Title, r.Description, r.Position, r.StoryPoints
	return in, in.Normalize()
}

// workItemPatch reads an update request into the domain's form.
func workItemPatch(r *pmv1.UpdateWorkItemRequest) (pm.WorkItemPatch, error) {
	p := pm.WorkItemPatch{
		Title:            r.Title,
		Description:      r.Description,
		Position:         r.Position,
		StoryPoints:      r.StoryPoints,
		ClearStoryPoints: r.ClearStoryPoints,
	}
	if r.Status != nil {
		s, err := enumValue(statuses, *r.Status, "status")
		if err != nil {
			return p, err
		}
		if s == "" {
			return p, pm.FieldErrorf("status", "status cannot be unspecified")
		}
		p.Status = &s
	}
	if r.Priority != nil {
		v, err := enumValue(priorities, *r.Priority, "priority")
		if err != nil {
			return p, err
		}
		if v == "" {
			return p, pm.FieldErrorf("priority", "priority cannot be unspecified")
		}
		p.Priority = &v
	}
	if r.AssigneeId != nil {
		id, err := pm.ParseID("assignee_id", *r.AssigneeId, true)
		if err != nil {
			return p, err
		}
		p.AssigneeID = &id
	}
	if r.ParentId != nil {
		id, err := pm.ParseID("parent_id", *r.ParentId, false)
		if err != nil {
			return p, err
		}
		p.ParentID = &id
	}
	if err := p.Normalize(); err != nil {
		return p, err
	}
	if p.Empty() {
		return p, pm.FieldErrorf("work_item_id", "the update changes no field")
	}
	return p, nil
}
