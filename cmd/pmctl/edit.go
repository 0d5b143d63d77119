package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm/client"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// enumFlag maps a lower-case name ("in_progress") to an enum value of a
// generated type whose value names carry prefix.
func enumFlag[E ~int32](f *flags, name, value, prefix string, values map[string]int32) (E, error) {
	v, ok := values[prefix+strings.ToUpper(value)]
	if !ok || strings.HasSuffix(strings.ToUpper(value), "UNSPECIFIED") {
		var names []string
		for n, num := range values {
			if num != 0 {
				names = append(names, strings.ToLower(strings.TrimPrefix(n, prefix)))
			}
		}
		return 0, f.fail("-%s %q: want one of %s", name, value, strings.Join(names, ", "))
	}
	return E(v), nil
}

// createCmd creates a work item (or a project) and prints it.
func createCmd(ctx context.Context, e env, args []string) error {
	f := newFlags(e, "create", "-token T -type task|story|epic|project -title TITLE [-project UUID] [-parent UUID] …")
	var c connFlags
	var project, parent, typ, title, desc, status, priority, assignee string
	var points int
	f.conn(&c, "edit the project", 30*time.Second)
	f.str(&project, "project", "PM_PROJECT", "", "project UUID (not for a new project)")
	f.str(&parent, "parent", "", "", "parent UUID (default: the project)")
	f.str(&typ, "type", "", "task", "project, epic, story or task")
	f.str(&title, "title", "", "", "title")
	f.str(&desc, "description", "", "", "description")
	f.str(&status, "status", "", "backlog", "backlog, todo, in_progress, review or done")
	f.str(&priority, "priority", "", "medium", "low, medium, high or critical")
	f.str(&assignee, "assignee", "", "", "assignee's user UUID")
	f.IntVar(&points, "points", -1, "story points (-1: none)")
	if err := f.parse(args); err != nil {
		return err
	}
	if err := f.required(map[string]string{"token": c.token, "title": title}); err != nil {
		return err
	}
	req := &pmv1.CreateWorkItemRequest{ProjectId: project, ParentId: parent, Title: title, Description: desc, AssigneeId: assignee}
	var err error
	if req.ItemType, err = enumFlag[pmv1.WorkItemType](f, "type", typ, "WORK_ITEM_TYPE_", pmv1.WorkItemType_value); err != nil {
		return err
	}
	if req.Status, err = enumFlag[pmv1.WorkItemStatus](f, "status", status, "WORK_ITEM_STATUS_", pmv1.WorkItemStatus_value); err != nil {
		return err
	}
	if req.Priority, err = enumFlag[pmv1.WorkItemPriority](f, "priority", priority, "WORK_ITEM_PRIORITY_", pmv1.WorkItemPriority_value); err != nil {
		return err
	}
	if points >= 0 {
		req.StoryPoints = proto.Int32(int32(points))
	}
	cl, ctx, cancel, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	defer cl.Close()
	item, err := cl.CreateWorkItem(ctx, req)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "created %s %s %q (revision %d)\n", itemType(item.ItemType), item.Id, item.Title, item.Revision)
	return nil
}

// findItem reads the project and returns the live item with id.
func findItem(ctx context.Context, cl *client.Client, project, id string) (*pmv1.WorkItem, error) {
	list, err := cl.GetWorkItems(ctx, &pmv1.GetWorkItemsRequest{ProjectId: project})
	if err != nil {
		return nil, err
	}
	for _, it := range list.WorkItems {
		if it.Id == id {
			return it, nil
		}
	}
	return nil, fmt.Errorf("no live work item %s in project %s", id, project)
}

// updateCmd changes the fields given on the command line. Without -version
// it reads the item's current version first.
func updateCmd(ctx context.Context, e env, args []string) error {
	f := newFlags(e, "update", "-token T -project UUID -item UUID [-title …] [-status …] [-priority …] [-points N] [-assignee UUID] [-parent UUID] [-version N]")
	var c connFlags
	var project, item string
	var version int64
	f.conn(&c, "edit the project", 30*time.Second)
	f.str(&project, "project", "PM_PROJECT", "", "project UUID")
	f.str(&item, "item", "", "", "work item UUID")
	f.Int64Var(&version, "version", 0, "expected version (default: the current one)")
	f.String("title", "", "new title")
	f.String("description", "", "new description")
	f.String("status", "", "new status: backlog, todo, in_progress, review or done")
	f.String("priority", "", "new priority: low, medium, high or critical")
	f.String("assignee", "", `new assignee's user UUID ("none" to unassign)`)
	f.String("parent", "", "new parent UUID (same project)")
	f.String("points", "", `new story points ("none" to clear)`)
	if err := f.parse(args); err != nil {
		return err
	}
	if err := f.required(map[string]string{"token": c.token, "project": project, "item": item}); err != nil {
		return err
	}
	req := &pmv1.UpdateWorkItemRequest{WorkItemId: item, ExpectedVersion: version}
	var err error
	f.Visit(func(fl *flag.Flag) {
		if err != nil {
			return
		}
		v := fl.Value.String()
		switch fl.Name {
		case "title":
			req.Title = proto.String(v)
		case "description":
			req.Description = proto.String(v)
		case "status":
			var s pmv1.WorkItemStatus
			if s, err = enumFlag[pmv1.WorkItemStatus](f, "status", v, "WORK_ITEM_STATUS_", pmv1.WorkItemStatus_value); err == nil {
				req.Status = s.Enum()
			}
		case "priority":
			var p pmv1.WorkItemPriority
			if p, err = enumFlag[pmv1.WorkItemPriority](f, "priority", v, "WORK_ITEM_PRIORITY_", pmv1.WorkItemPriority_value); err == nil {
				req.Priority = p.Enum()
			}
		case "assignee":
			req.AssigneeId = proto.String(strings.TrimPrefix(v, "none"))
		case "parent":
			req.ParentId = proto.String(v)
		case "points":
			if v == "none" {
				req.ClearStoryPoints = true
				return
			}
			var n int32
			if _, scanErr := fmt.Sscan(v, &n); scanErr != nil {
				err = f.fail("-points %q: want a number or none", v)
				return
			}
			req.StoryPoints = proto.Int32(n)
		}
	})
	if err != nil {
		return err
	}
	cl, ctx, cancel, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	defer cl.Close()
	if req.ExpectedVersion == 0 {
		current, err := findItem(ctx, cl, project, item)
		if err != nil {
			return err
		}
		req.ExpectedVersion = current.Version
	}
	upd, err := cl.UpdateWorkItem(ctx, req)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "updated %s %s to version %d (revision %d)%s\n", itemType(upd.WorkItem.ItemType),
		upd.WorkItem.Id, upd.WorkItem.Version, upd.WorkItem.Revision, describeChanges(upd.Changes))
	return nil
}

// deleteCmd soft-deletes a work item.
func deleteCmd(ctx context.Context, e env, args []string) error {
	f := newFlags(e, "delete", "-token T -item UUID [-version N]")
	var c connFlags
	var item string
	var version int64
	f.conn(&c, "edit the project", 30*time.Second)
	f.str(&item, "item", "", "", "work item UUID")
	f.Int64Var(&version, "version", 0, "expected version (0: any)")
	if err := f.parse(args); err != nil {
		return err
	}
	if err := f.required(map[string]string{"token": c.token, "item": item}); err != nil {
		return err
	}
	cl, ctx, cancel, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	defer cl.Close()
	del, err := cl.DeleteWorkItem(ctx, &pmv1.DeleteWorkItemRequest{WorkItemId: item, ExpectedVersion: version})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "deleted %s (revision %d)\n", del.WorkItemId, del.Revision)
	return nil
}

func describeChanges(changes []*pmv1.FieldChange) string {
	if len(changes) == 0 {
		return ": nothing changed"
	}
	parts := make([]string, len(changes))
	for i, ch := range changes {
		parts[i] = fmt.Sprintf("%s: %s → %s", ch.FieldName, changeValue(ch.OldValue), changeValue(ch.NewValue))
	}
	return ": " + strings.Join(parts, ", ")
}
