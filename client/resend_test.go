package client_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/client"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

func dialFake(t *testing.T, f *fakeNode, opts client.Options) *client.Client {
	t.Helper()
	if opts.Token == "" && opts.TokenSource == nil {
		opts.Token = "t"
	}
	opts.Reconnect = client.Backoff{Min: time.Millisecond, Max: 10 * time.Millisecond}
	c, err := client.Dial(testContext(t), f.URL(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func list(id string) *pmv1.WebSocketMessage {
	return &pmv1.WebSocketMessage{MessageId: id, Payload: &pmv1.WebSocketMessage_WorkItemsList{
		WorkItemsList: &pmv1.WorkItemsList{AsOfRevision: 7, Complete: true},
	}}
}

func get() *pmv1.WebSocketMessage {
	return &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_GetWorkItemsRequest{
		GetWorkItemsRequest: &pmv1.GetWorkItemsRequest{ProjectId: "6f1c2d4e-0000-4000-8000-000000000001"},
	}}
}

func TestRequestResentWithSameIDAfterDrop(t *testing.T) {
	f := startFake(t, func(conn int, ws *gws.Conn, req *pmv1.WebSocketMessage) {
		if conn == 1 {
			_ = ws.NetConn().Close() // lost before the answer
			return
		}
		send(t, ws, list(req.MessageId))
	})
	c := dialFake(t, f, client.Options{})
	resp, err := c.Do(testContext(t), get())
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetWorkItemsList().GetAsOfRevision() != 7 {
		t.Fatalf("answer %v", resp)
	}
	ids := f.seenIDs()
	if len(ids) != 2 || ids[0] != ids[1] || ids[0] != resp.MessageId {
		t.Fatalf("message ids sent: %v; want the same id on both connections", ids)
	}
}

func TestBusyAnswersAreRetried(t *testing.T) {
	var n atomic.Int32
	f := startFake(t, func(_ int, ws *gws.Conn, req *pmv1.WebSocketMessage) {
		code := []string{pm.ERateLimited, pm.EUnavailable, ""}[min(n.Add(1)-1, 2)]
		if code == "" {
			send(t, ws, list(req.MessageId))
			return
		}
		send(t, ws, &pmv1.WebSocketMessage{MessageId: req.MessageId, Payload: &pmv1.WebSocketMessage_Error{
			Error: &pmv1.Error{Code: code, Message: "busy", RetryAfterMs: 5},
		}})
	})
	c := dialFake(t, f, client.Options{})
	if _, err := c.Do(testContext(t), get()); err != nil {
		t.Fatalf("Do: %v", err)
	}
	if ids := f.seenIDs(); len(ids) != 3 || ids[0] != ids[2] {
		t.Fatalf("sent %v; want three sends of one id", ids)
	}

	n.Store(0)
	noRetry := dialFake(t, f, client.Options{NoBusyRetry: true})
	_, err := noRetry.Do(testContext(t), get())
	var perr *pm.Error
	if !errors.As(err, &perr) || perr.Code != pm.ERateLimited || perr.RetryAfterMillis != 5 {
		t.Fatalf("with NoBusyRetry: %v; want the RATE_LIMITED error with its retry_after", err)
	}
}

func TestCloseCodes(t *testing.T) {
	for _, tc := range []struct {
		code      uint16
		reconnect bool
	}{{1001, true}, {4000, true}, {1011, true}, {1008, false}, {4500, false}, {4999, false}} {
		var closed atomic.Bool
		f := startFake(t, func(conn int, ws *gws.Conn, req *pmv1.WebSocketMessage) {
			if conn == 1 && closed.CompareAndSwap(false, true) {
				_ = ws.WriteClose(tc.code, []byte("bye"))
				return
			}
			send(t, ws, list(req.MessageId))
		})
		c := dialFake(t, f, client.Options{})
		_, err := c.Do(testContext(t), get())
		if tc.reconnect {
			if err != nil {
				t.Errorf("close %d: %v; want an answer after a reconnect", tc.code, err)
			}
			continue
		}
		var ce *client.CloseError
		if !errors.As(err, &ce) || ce.Code != tc.code || ce.Reason != "bye" || !errors.Is(c.Err(), err) {
			t.Errorf("close %d: Do %v, Err %v; want the CloseError", tc.code, err, c.Err())
		}
		select {
		case <-c.Done():
		default:
			t.Errorf("close %d: client not done", tc.code)
		}
	}
}

func TestPermanentCloseWithTokenSource(t *testing.T) {
	var closed atomic.Bool
	f := startFake(t, func(conn int, ws *gws.Conn, req *pmv1.WebSocketMessage) {
		if closed.CompareAndSwap(false, true) {
			_ = ws.WriteClose(4500, []byte("token expired"))
			return
		}
		send(t, ws, list(req.MessageId))
	})
	var tokens atomic.Int32
	c := dialFake(t, f, client.Options{TokenSource: func(context.Context) (string, error) {
		return []string{"first", "second"}[min(tokens.Add(1)-1, 1)], nil
	}})
	if _, err := c.Do(testContext(t), get()); err != nil {
		t.Fatalf("Do: %v", err)
	}
	f.mu.Lock()
	auth := append([]string(nil), f.auth...)
	f.mu.Unlock()
	if len(auth) != 2 || auth[0] != "Bearer first" || auth[1] != "Bearer second" {
		t.Fatalf("connections authenticated with %v", auth)
	}

	// A token source that returns the same token again: the client stops.
	closed.Store(false)
	same := dialFake(t, f, client.Options{TokenSource: func(context.Context) (string, error) { return "same", nil }})
	var ce *client.CloseError
	if _, err := same.Do(testContext(t), get()); !errors.As(err, &ce) || ce.Code != 4500 {
		t.Fatalf("Do: %v; want CloseError 4500", err)
	}
}

func TestRefusedAtReconnect(t *testing.T) {
	var dropped atomic.Bool
	f := startFake(t, func(_ int, ws *gws.Conn, _ *pmv1.WebSocketMessage) {
		dropped.Store(true)
		_ = ws.NetConn().Close()
	})
	var calls atomic.Int32
	c := dialFake(t, f, client.Options{TokenSource: func(context.Context) (string, error) {
		if calls.Add(1) == 1 {
			return "ok", nil
		}
		return "refused", nil
	}})
	_, err := c.Do(testContext(t), get())
	if pm.ErrorCode(err) != pm.EUnauthorized || pm.ErrorCode(c.Err()) != pm.EUnauthorized {
		t.Fatalf("Do %v, Err %v; want UNAUTHORIZED", err, c.Err())
	}
}

func TestKeepalive(t *testing.T) {
	var pings atomic.Int32
	f := startFake(t, nil)
	f.onPing = func() { pings.Add(1) }
	c := dialFake(t, f, client.Options{PingInterval: 20 * time.Millisecond})
	ctx := testContext(t)
	for pings.Load() < 5 {
		select {
		case <-ctx.Done():
			t.Fatal("no pings")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if f.connections() != 1 || !c.Connected() {
		t.Fatalf("%d connections; a node that answers pings must keep its connection", f.connections())
	}

	// A node that goes silent is dropped after two intervals and reconnected.
	f.silent.Store(true)
	for f.connections() < 2 {
		select {
		case <-ctx.Done():
			t.Fatal("a silent connection was kept")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestResyncRequiredPush(t *testing.T) {
	const project = "6f1c2d4e-0000-4000-8000-000000000001"
	const later = "6f1c2d4e-0000-4000-8000-000000000002"
	var sinces []int64
	var mu sync.Mutex
	f := startFake(t, func(_ int, ws *gws.Conn, req *pmv1.WebSocketMessage) {
		switch p := req.Payload.(type) {
		case *pmv1.WebSocketMessage_Subscribe:
			send(t, ws, &pmv1.WebSocketMessage{MessageId: req.MessageId, Payload: &pmv1.WebSocketMessage_SubscribeAck{
				SubscribeAck: &pmv1.SubscribeAck{ProjectIds: p.Subscribe.ProjectIds, Revisions: map[string]int64{project: 1}},
			}})
		case *pmv1.WebSocketMessage_GetWorkItemsRequest:
			since := p.GetWorkItemsRequest.SinceRevision
			mu.Lock()
			sinces = append(sinces, since)
			mu.Unlock()
			l := &pmv1.WorkItemsList{ProjectId: project, AsOfRevision: 1, Complete: true, WorkItems: []*pmv1.WorkItem{
				{Id: project, ProjectId: project, Revision: 1, Title: "P"},
			}}
			if since > 0 {
				l = &pmv1.WorkItemsList{ProjectId: project, AsOfRevision: 3, Complete: true, WorkItems: []*pmv1.WorkItem{
					{Id: later, ProjectId: project, Revision: 3, Title: "missed"},
				}}
			}
			send(t, ws, &pmv1.WebSocketMessage{MessageId: req.MessageId, Payload: &pmv1.WebSocketMessage_WorkItemsList{WorkItemsList: l}})
			if since == 0 {
				send(t, ws, &pmv1.WebSocketMessage{MessageId: "srv-1", Payload: &pmv1.WebSocketMessage_ResyncRequired{
					ResyncRequired: &pmv1.ResyncRequired{ProjectIds: []string{project}, Reason: "events dropped"},
				}})
			}
		}
	})
	var pushes atomic.Int32
	c := dialFake(t, f, client.Options{OnEvent: func(m *pmv1.WebSocketMessage) {
		if m.GetResyncRequired() != nil {
			pushes.Add(1)
		}
	}})
	ps, err := c.Subscribe(testContext(t), project)
	if err != nil {
		t.Fatal(err)
	}
	p := ps[0]
	if err := p.WaitRevision(testContext(t), 3); err != nil {
		t.Fatalf("no resync after ResyncRequired: %v", err)
	}
	if p.Get(later) == nil || p.Get(project) == nil || pushes.Load() != 1 {
		t.Fatalf("replica %v / %v, %d pushes seen", p.Get(later), p.Get(project), pushes.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sinces) != 2 || sinces[0] != 0 || sinces[1] != 1 {
		t.Fatalf("fetches since %v; want a full load then since 1", sinces)
	}
}

func TestDialGivesUpWithItsContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	held := make(chan net.Conn, 1)
	go func() {
		// Accept and never answer the handshake.
		if c, err := ln.Accept(); err == nil {
			held <- c
		}
	}()
	ctx, cancel := context.WithTimeout(testContext(t), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = client.Dial(ctx, "ws://"+ln.Addr().String()+"/ws", client.Options{Token: "t", DialTimeout: time.Minute})
	if err == nil {
		t.Fatal("Dial succeeded against a silent server")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Dial took %v after its context ended", d)
	}
	select {
	case c := <-held:
		c.Close()
	default:
	}
}

func TestDialTriesTheOtherURLs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "ws://" + ln.Addr().String() + "/ws"
	ln.Close() // nothing listens there any more
	f := startFake(t, func(_ int, ws *gws.Conn, req *pmv1.WebSocketMessage) { send(t, ws, list(req.MessageId)) })
	c, err := client.Dial(testContext(t), dead, client.Options{Token: "t", URLs: []string{f.URL()}})
	if err != nil {
		t.Fatalf("Dial with a live second URL: %v", err)
	}
	defer c.Close()
	if _, err := c.Do(testContext(t), get()); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Dial(testContext(t), dead, client.Options{Token: "t"}); err == nil {
		t.Fatal("Dial to a dead address succeeded")
	}
}
