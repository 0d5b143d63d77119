package main

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/pmhq/pm/client"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// demoItem is one work item of the demo project. Its id derives from the
// project id and key, so re-running the seed finds the same items.
type demoItem struct {
	key      string
	parent   string // key of the parent; "" for a child of the project
	typ      pmv1.WorkItemType
	title    string
	status   pmv1.WorkItemStatus
	priority pmv1.WorkItemPriority
	points   int32 // 0: no estimate
	editor   bool  // assigned to the editor
}

// demoItems lists the demo board, parents before children.
var demoItems = []demoItem{
	{key: "epic/board", typ: epic, title: "Real-time board", status: inProgress, priority: high},
	{key: "story/drag", parent: "epic/board", typ: story, title: "Drag cards between columns", status: inProgress, priority: high, points: 5, editor: true},
	{key: "task/positions", parent: "story/drag", typ: task, title: "Compute fractional positions", status: done, priority: medium, points: 2, editor: true},
	{key: "task/drop", parent: "story/drag", typ: task, title: "Animate the drop", status: inProgress, priority: medium, points: 1, editor: true},
	{key: "story/presence", parent: "epic/board", typ: story, title: "Show who is looking at a card", status: todo, priority: medium, points: 3},
	{key: "task/presence-events", parent: "story/presence", typ: task, title: "Send presence events", status: todo, priority: low, points: 2},
	{key: "epic/ops", typ: epic, title: "Operations", status: todo, priority: medium},
	{key: "story/dashboards", parent: "epic/ops", typ: story, title: "Dashboards for the nodes", status: review, priority: medium, points: 3},
	{key: "task/latency-panel", parent: "story/dashboards", typ: task, title: "Request latency panel", status: review, priority: medium, points: 1, editor: true},
	{key: "task/slow-consumers", parent: "story/dashboards", typ: task, title: "Alert on slow consumers", status: backlog, priority: high, points: 1},
	{key: "story/load-test", parent: "epic/ops", typ: story, title: "Load test at 10k connections", status: backlog, priority: critical, points: 8},
	{key: "task/loadgen", parent: "story/load-test", typ: task, title: "Write the load generator", status: backlog, priority: high, points: 5},
}

const (
	epic       = pmv1.WorkItemType_WORK_ITEM_TYPE_EPIC
	story      = pmv1.WorkItemType_WORK_ITEM_TYPE_STORY
	task       = pmv1.WorkItemType_WORK_ITEM_TYPE_TASK
	backlog    = pmv1.WorkItemStatus_WORK_ITEM_STATUS_BACKLOG
	todo       = pmv1.WorkItemStatus_WORK_ITEM_STATUS_TODO
	inProgress = pmv1.WorkItemStatus_WORK_ITEM_STATUS_IN_PROGRESS
	review     = pmv1.WorkItemStatus_WORK_ITEM_STATUS_REVIEW
	done       = pmv1.WorkItemStatus_WORK_ITEM_STATUS_DONE
	low        = pmv1.WorkItemPriority_WORK_ITEM_PRIORITY_LOW
	medium     = pmv1.WorkItemPriority_WORK_ITEM_PRIORITY_MEDIUM
	high       = pmv1.WorkItemPriority_WORK_ITEM_PRIORITY_HIGH
	critical   = pmv1.WorkItemPriority_WORK_ITEM_PRIORITY_CRITICAL
)

// demoItemID derives a demo item's id from its project and key.
func demoItemID(project uuid.UUID, key string) uuid.UUID {
	return uuid.NewSHA1(project, []byte("pm-demo/"+key))
}

// demoCmd seeds the demo project through a node. Every id is fixed (the
// project's is given, the items' derive from it), so a re-run finds what the
// first run made and changes nothing.
func demoCmd(ctx context.Context, e env, args []string) error {
	f := newFlags(e, "demo", "-url ws://host:port/ws -token T -project UUID [-editor UUID] [-viewer UUID]")
	var c connFlags
	var project, editor, viewer, title string
	f.conn(&c, "own the demo project (see pmctl token)", time.Minute)
	f.str(&project, "project", "PM_PROJECT", "", "id of the demo project")
	f.str(&editor, "editor", "", "", "user UUID to add as editor (and assign some tasks to)")
	f.str(&viewer, "viewer", "", "", "user UUID to add as viewer")
	f.str(&title, "title", "", "Demo project", "title of the project when it is created")
	if err := f.parse(args); err != nil {
		return err
	}
	if err := f.required(map[string]string{"token": c.token, "project": project}); err != nil {
		return err
	}
	projectID, err := f.uuidFlag("project", project, false)
	if err != nil {
		return err
	}
	editorID, err := f.uuidFlag("editor", editor, true)
	if err != nil {
		return err
	}
	viewerID, err := f.uuidFlag("viewer", viewer, true)
	if err != nil {
		return err
	}

	cl, ctx, cancel, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	defer cl.Close()
	n, err := seedDemo(ctx, cl, projectID, title, editorID, viewerID)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "pmctl demo: project %s has its %d demo work items\n", projectID, n)
	_, err = fmt.Fprintln(e.stdout, projectID)
	return err
}

// seedDemo makes (or finds) the demo project, its members and its items,
// and returns the number of items.
func seedDemo(ctx context.Context, c *client.Client, project uuid.UUID, title string, editor, viewer uuid.UUID) (int, error) {
	_, err := c.CreateWorkItem(ctx, &pmv1.CreateWorkItemRequest{
		WorkItemId: project.String(),
		ItemType:   pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT,
		Title:      title,
		Status:     inProgress,
	})
	if err != nil {
		return 0, fmt.Errorf("create project %s: %w", project, err)
	}
	for _, m := range []struct {
		user uuid.UUID
		role pmv1.ProjectRole
	}{{editor, pmv1.ProjectRole_PROJECT_ROLE_EDITOR}, {viewer, pmv1.ProjectRole_PROJECT_ROLE_VIEWER}} {
		if m.user == uuid.Nil {
			continue
		}
		_, err := c.AddProjectMember(ctx, &pmv1.AddProjectMemberRequest{
			ProjectId: project.String(), UserId: m.user.String(), Role: m.role,
		})
		if err != nil {
			return 0, fmt.Errorf("add member %s: %w", m.user, err)
		}
	}
	for _, it := range demoItems {
		r := &pmv1.CreateWorkItemRequest{
			WorkItemId: demoItemID(project, it.key).String(),
			ProjectId:  project.String(),
			ItemType:   it.typ,
			Title:      it.title,
			Status:     it.status,
			Priority:   it.priority,
		}
		if it.parent != "" {
			r.ParentId = demoItemID(project, it.parent).String()
		}
		if it.points > 0 {
			r.StoryPoints = &it.points
		}
		if it.editor && editor != uuid.Nil {
			r.AssigneeId = editor.String()
		}
		if _, err := c.CreateWorkItem(ctx, r); err != nil {
			return 0, fmt.Errorf("create %q: %w", it.title, err)
		}
	}
	return len(demoItems), nil
}
