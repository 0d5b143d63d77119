package node

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/position"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// largestItem is a work item with every field at the largest the domain
// allows.
func largestItem() *pm.WorkItem {
	points := int32(pm.StoryPointsMax)
	far := time.UnixMilli(math.MaxInt64 / 2)
	return &pm.WorkItem{
		ID: uuid.New(), ProjectID: uuid.New(), ParentID: uuid.New(), Type: pm.TypeStory,
		Title:       strings.Repeat("\U0010FFFF", pm.TitleMaxRunes), // 4 bytes a rune
		Description: strings.Repeat("d", pm.DescriptionMaxBytes),
		Status:      pm.StatusInProgress, Priority: pm.PriorityCritical, AssigneeID: uuid.New(),
		Position:    "a" + strings.Repeat("z", position.MaxKeyLength-1),
		StoryPoints: &points, Version: math.MaxInt64, Revision: math.MaxInt64,
		CreatedAt: far, UpdatedAt: far, DeletedAt: far, CreatedBy: uuid.New(), UpdatedBy: uuid.New(),
	}
}

// Every chunk holds at least one item: the largest item the domain allows,
// in a chunk with the longest message_id, is far below the limit.
func TestLargestItemFitsInAChunk(t *testing.T) {
	w := wireWorkItem(largestItem())
	frame, err := proto.Marshal(&pmv1.WebSocketMessage{
		MessageId: strings.Repeat("m", pm.MessageIDMaxBytes), Timestamp: math.MaxInt64,
		Payload: &pmv1.WebSocketMessage_WorkItemsList{WorkItemsList: &pmv1.WorkItemsList{
			ProjectId: uuid.NewString(), AsOfRevision: math.MaxInt64, AsOfTimestamp: math.MaxInt64,
			Complete: true, WorkItems: []*pmv1.WorkItem{w},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(frame) > maxChunkBytes/3 {
		t.Fatalf("a chunk of the largest item is %d bytes; the limit is %d", len(frame), maxChunkBytes)
	}
	t.Logf("largest item: %d bytes in a chunk of %d", proto.Size(w), len(frame))
}

// The chunker fills chunks up to the limit, never over it, and keeps every
// item once, in order, with the head on every chunk.
func TestChunkerCutsAtTheLimit(t *testing.T) {
	const limit = 100 << 10 // more than the largest item, less than two
	rng := rand.New(rand.NewPCG(1, 2))
	head := &pmv1.WorkItemsList{ProjectId: uuid.NewString(), AsOfRevision: 1 << 40, AsOfTimestamp: time.Now().UnixMilli()}
	msgID := strings.Repeat("i", pm.MessageIDMaxBytes)
	var (
		frames [][]byte
		lists  []*pmv1.WorkItemsList
	)
	k := &chunker{limit: limit, send: func(list *pmv1.WorkItemsList) error {
		b, err := proto.Marshal(&pmv1.WebSocketMessage{MessageId: msgID, Timestamp: time.Now().UnixMilli(),
			Payload: &pmv1.WebSocketMessage_WorkItemsList{WorkItemsList: list}})
		if err != nil {
			return err
		}
		var back pmv1.WebSocketMessage
		if err := proto.Unmarshal(b, &back); err != nil {
			return err
		}
		frames, lists = append(frames, b), append(lists, back.GetWorkItemsList())
		return nil
	}}
	k.start(msgID, head)
	var want []string
	for i := range 2000 {
		w := largestItem()
		w.Title = "t"
		w.Description = strings.Repeat("x", rng.IntN(3)*rng.IntN(20000)) // many small, some up to 40 KB
		if i%97 == 0 {
			w.Description = strings.Repeat("y", pm.DescriptionMaxBytes)
		}
		want = append(want, w.ID.String())
		if err := k.add(wireWorkItem(w)); err != nil {
			t.Fatal(err)
		}
	}
	if err := k.finish(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for i, list := range lists {
		if len(frames[i]) > limit {
			t.Fatalf("chunk %d is %d bytes; limit %d", i, len(frames[i]), limit)
		}
		if list.ProjectId != head.ProjectId || list.AsOfRevision != head.AsOfRevision || list.AsOfTimestamp != head.AsOfTimestamp {
			t.Fatalf("chunk %d head %v, want %v", i, list, head)
		}
		if list.Complete != (i == len(lists)-1) {
			t.Fatalf("chunk %d of %d: complete %v", i, len(lists), list.Complete)
		}
		if len(list.WorkItems) == 0 {
			t.Fatalf("chunk %d is empty", i)
		}
		// Full: the next chunk's first item would not have fitted.
		if i < len(lists)-1 {
			next := proto.Size(lists[i+1].WorkItems[0]) + 4
			if len(frames[i])+next < limit-32 {
				t.Fatalf("chunk %d is %d bytes; the next item (%d bytes) would have fitted", i, len(frames[i]), next)
			}
		}
		for _, w := range list.WorkItems {
			got = append(got, w.Id)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d items out, %d in", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("item %d is %s, want %s", i, got[i], want[i])
		}
	}
	// Nothing at all: one empty chunk, complete.
	lists, frames = nil, nil
	k = &chunker{limit: limit, send: k.send}
	k.start(msgID, head)
	if err := k.finish(); err != nil || len(lists) != 1 || len(lists[0].WorkItems) != 0 || !lists[0].Complete {
		t.Fatalf("empty load: %v, %v", lists, err)
	}
}
