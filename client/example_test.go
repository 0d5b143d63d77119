package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/pmhq/pm/client"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// A program that keeps a live copy of a project's board and moves a card.
func Example() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "ws://127.0.0.1:8080/ws", client.Options{
		// Asked at every (re)connect, so a long-running program can refresh it.
		TokenSource: func(context.Context) (string, error) { return "<jwt>", nil },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	projects, err := c.Subscribe(ctx, "9b2f8c1e-6a0d-4f55-8f1e-2a7d3c4b5e6f")
	if err != nil {
		log.Fatal(err)
	}
	board := projects[0]
	items, rev := board.Items()
	fmt.Printf("%d items at revision %d\n", len(items), rev)

	// Writes answer with the new state; a stale version is a *pm.Error
	// CONFLICT carrying the current version.
	status := pmv1.WorkItemStatus_WORK_ITEM_STATUS_DONE
	card := items[len(items)-1]
	up, err := c.UpdateWorkItem(ctx, &pmv1.UpdateWorkItemRequest{
		WorkItemId: card.Id, ExpectedVersion: card.Version, Status: &status,
	})
	if err != nil {
		log.Fatal(err)
	}
	// The replica follows every change, other users' included.
	wait, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := board.WaitRevision(wait, up.WorkItem.Revision); err != nil {
		log.Fatal(err)
	}
	fmt.Println(board.Get(card.Id).Status)
}
