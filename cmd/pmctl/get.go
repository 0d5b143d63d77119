package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// getCmd prints a project's board: its live items grouped by status in
// board order, each group ordered by position.
func getCmd(ctx context.Context, e env, args []string) error {
	f := newFlags(e, "get", "-url ws://host:port/ws -token T -project UUID")
	var c connFlags
	var project string
	f.conn(&c, "view the project", 30*time.Second)
	f.str(&project, "project", "PM_PROJECT", "", "project UUID")
	if err := f.parse(args); err != nil {
		return err
	}
	if err := f.required(map[string]string{"token": c.token, "project": project}); err != nil {
		return err
	}
	id, err := f.uuidFlag("project", project, false)
	if err != nil {
		return err
	}
	cl, ctx, cancel, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	defer cl.Close()
	list, err := cl.GetWorkItems(ctx, &pmv1.GetWorkItemsRequest{ProjectId: id.String()})
	if err != nil {
		return err
	}
	return printBoard(e.stdout, list)
}

// printBoard writes the project line, then one table section per status.
func printBoard(w io.Writer, list *pmv1.WorkItemsList) error {
	byStatus := make(map[pmv1.WorkItemStatus][]*pmv1.WorkItem)
	title := list.ProjectId
	for _, it := range list.WorkItems {
		if it.ItemType == pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT {
			title = it.Title
			continue
		}
		byStatus[it.Status] = append(byStatus[it.Status], it)
	}
	fmt.Fprintf(w, "%s  (project %s, revision %d)\n", title, list.ProjectId, list.AsOfRevision)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for s := pmv1.WorkItemStatus_WORK_ITEM_STATUS_BACKLOG; s <= pmv1.WorkItemStatus_WORK_ITEM_STATUS_DONE; s++ {
		items := byStatus[s]
		slices.SortFunc(items, func(a, b *pmv1.WorkItem) int {
			return cmp.Or(cmp.Compare(a.Position, b.Position), cmp.Compare(a.Id, b.Id))
		})
		fmt.Fprintf(tw, "\n%s (%d)\n", strings.ToUpper(statusName(s)), len(items))
		if len(items) == 0 {
			continue
		}
		fmt.Fprintln(tw, "  TYPE\tID\tTITLE\tPRIORITY\tPOINTS\tASSIGNEE\tVERSION")
		for _, it := range items {
			points := "-"
			if it.StoryPoints != nil {
				points = strconv.Itoa(int(*it.StoryPoints))
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%d\n", itemType(it.ItemType), it.Id, it.Title,
				priorityName(it.Priority), points, cmp.Or(it.AssigneeId, "-"), it.Version)
		}
	}
	return tw.Flush()
}

func statusName(s pmv1.WorkItemStatus) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "WORK_ITEM_STATUS_"))
}

func priorityName(p pmv1.WorkItemPriority) string {
	return strings.ToLower(strings.TrimPrefix(p.String(), "WORK_ITEM_PRIORITY_"))
}
