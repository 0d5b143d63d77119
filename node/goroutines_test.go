package node_test

import (
	"bytes"
	"runtime"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pmhq/pm/node/nodetest"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// sessionGoroutines counts the goroutines running each of a connection's
// loops: the reader (run), the worker and the flusher.
func sessionGoroutines() (readers, workers, flushers int) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		switch {
		case bytes.Contains(g, []byte("node.(*session).work(")):
			workers++
		case bytes.Contains(g, []byte("node.(*session).flush(")):
			flushers++
		case bytes.Contains(g, []byte("node.(*session).run(")):
			readers++
		}
	}
	return readers, workers, flushers
}

// A connection that has answered and delivered everything holds one
// goroutine, its reader: the worker and the flusher exist only while
// there is work, and pings run on a timer.
func TestIdleConnectionsHoldOnlyTheirReader(t *testing.T) {
	tm := newTeam(t, nodetest.Options{})
	url := tm.c.Nodes[0].URL()
	const extra = 20
	conns := []*nodetest.Conn{tm.adminConn, tm.editorConn, tm.viewerConn, tm.outsideConn}
	for range extra {
		user := uuid.New()
		addMember(t, tm.adminConn, tm.project, user, pmv1.ProjectRole_PROJECT_ROLE_VIEWER)
		conn := nodetest.Dial(t, url, tm.c.Token(tm.tenant, user))
		subscribe(t, conn, tm.project)
		conns = append(conns, conn)
	}
	// Every subscriber gets an event: each connection's flusher has run.
	mustCreate(t, tm.editorConn, &pmv1.CreateWorkItemRequest{ProjectId: tm.project,
		ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "wake everyone"})
	for _, conn := range conns[4:] {
		if m := conn.Next(wait); m.GetWorkItemCreated() == nil {
			t.Fatalf("subscriber got %v, want the event", m)
		}
	}
	// The worker and flusher return right after their last frame; wait for that.
	deadline := time.Now().Add(wait)
	for {
		readers, workers, flushers := sessionGoroutines()
		if readers == len(conns) && workers == 0 && flushers == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d idle connections hold %d readers, %d workers, %d flushers; want %d, 0, 0",
				len(conns), readers, workers, flushers, len(conns))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
