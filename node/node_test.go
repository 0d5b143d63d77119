package node_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/lxzan/gws"
	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/node"
	"github.com/pmhq/pm/node/nodetest"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

const wait = 5 * time.Second

// team is a tenant with a project and one user per role, connected to a
// one-node cluster.
type team struct {
	c                       *nodetest.Cluster
	tenant                  string
	admin, editor, viewer   uuid.UUID
	outsider                uuid.UUID // same tenant, no role in the project
	project                 string
	adminConn, editorConn   *nodetest.Conn
	viewerConn, outsideConn *nodetest.Conn
}

func newTeam(t *testing.T, opts nodetest.Options) *team {
	t.Helper()
	c := nodetest.Start(t, opts)
	tm := &team{
		c: c, tenant: "acme-" + uuid.NewString()[:8],
		admin: uuid.New(), editor: uuid.New(), viewer: uuid.New(), outsider: uuid.New(),
	}
	url := c.Nodes[0].URL()
	tm.adminConn = nodetest.Dial(t, url, c.Token(tm.tenant, tm.admin))
	tm.editorConn = nodetest.Dial(t, url, c.Token(tm.tenant, tm.editor))
	tm.viewerConn = nodetest.Dial(t, url, c.Token(tm.tenant, tm.viewer))
	tm.outsideConn = nodetest.Dial(t, url, c.Token(tm.tenant, tm.outsider))
	project := mustCreate(t, tm.adminConn, &pmv1.CreateWorkItemRequest{
		ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "Apollo",
	})
	tm.project = project.Id
	for user, role := range map[uuid.UUID]pmv1.ProjectRole{
		tm.editor: pmv1.ProjectRole_PROJECT_ROLE_EDITOR,
		tm.viewer: pmv1.ProjectRole_PROJECT_ROLE_VIEWER,
	} {
		resp, _ := tm.adminConn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_AddProjectMemberRequest{
			AddProjectMemberRequest: &pmv1.AddProjectMemberRequest{ProjectId: tm.project, UserId: user.String(), Role: role},
		}})
		if resp.GetProjectMemberChanged() == nil {
			t.Fatalf("add member: %v", resp)
		}
	}
	return tm
}

func create(conn *nodetest.Conn, r *pmv1.CreateWorkItemRequest) *pmv1.WebSocketMessage {
	resp, _ := conn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{CreateWorkItemRequest: r}})
	return resp
}

func mustCreate(t *testing.T, conn *nodetest.Conn, r *pmv1.CreateWorkItemRequest) *pmv1.WorkItem {
	t.Helper()
	resp := create(conn, r)
	if resp.GetWorkItemCreated() == nil {
		t.Fatalf("create %q: got %v", r.Title, resp)
	}
	return resp.GetWorkItemCreated().WorkItem
}

func update(conn *nodetest.Conn, r *pmv1.UpdateWorkItemRequest) *pmv1.WebSocketMessage {
	resp, _ := conn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_UpdateWorkItemRequest{UpdateWorkItemRequest: r}})
	return resp
}

func del(conn *nodetest.Conn, id string, version int64) *pmv1.WebSocketMessage {
	resp, _ := conn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_DeleteWorkItemRequest{
		DeleteWorkItemRequest: &pmv1.DeleteWorkItemRequest{WorkItemId: id, ExpectedVersion: version},
	}})
	return resp
}

func get(conn *nodetest.Conn, r *pmv1.GetWorkItemsRequest) *pmv1.WebSocketMessage {
	resp, _ := conn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_GetWorkItemsRequest{GetWorkItemsRequest: r}})
	return resp
}

func subscribe(t *testing.T, conn *nodetest.Conn, projects ...string) *pmv1.SubscribeAck {
	t.Helper()
	resp, _ := conn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_Subscribe{Subscribe: &pmv1.Subscribe{ProjectIds: projects}}})
	if resp.GetSubscribeAck() == nil {
		t.Fatalf("subscribe: %v", resp)
	}
	return resp.GetSubscribeAck()
}

// wantError checks that resp is an Error with code and, if given, field.
func wantError(t *testing.T, resp *pmv1.WebSocketMessage, code, field string) *pmv1.Error {
	t.Helper()
	e := resp.GetError()
	if e == nil {
		t.Fatalf("want %s error, got %v", code, resp)
	}
	if e.Code != code || (field != "" && e.Field != field) {
		t.Fatalf("want %s on %q, got %s on %q: %s", code, field, e.Code, e.Field, e.Message)
	}
	if e.Message == "" {
		t.Fatalf("%s error without a message", code)
	}
	return e
}

func TestUpgradeRefusals(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{Configure: func(cfg *node.Config) {
		cfg.AllowedOrigins = []string{"https://board.example"}
	}})
	n := c.Nodes[0]
	user := uuid.NewString()
	valid := jwt.MapClaims{"sub": user, "tenant_id": "acme", "exp": time.Now().Add(time.Hour).Unix()}
	with := func(change func(jwt.MapClaims)) jwt.MapClaims {
		m := jwt.MapClaims{}
		for k, v := range valid {
			m[k] = v
		}
		change(m)
		return m
	}
	noneToken, err := jwt.NewWithClaims(jwt.SigningMethodNone, valid).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := jwt.NewWithClaims(jwt.SigningMethodHS256, valid).SignedString([]byte("not the secret"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		header http.Header
		query  string
		status int
	}{
		{"no token", nil, "", http.StatusUnauthorized},
		{"forged signature", bearer(forged), "", http.StatusUnauthorized},
		{"alg none", bearer(noneToken), "", http.StatusUnauthorized},
		{"expired", bearer(c.TokenWith(with(func(m jwt.MapClaims) { m["exp"] = time.Now().Add(-time.Hour).Unix() }))), "", http.StatusUnauthorized},
		{"no exp", bearer(c.TokenWith(with(func(m jwt.MapClaims) { delete(m, "exp") }))), "", http.StatusUnauthorized},
		{"sub not a UUID", bearer(c.TokenWith(with(func(m jwt.MapClaims) { m["sub"] = "alice" }))), "", http.StatusUnauthorized},
		{"no tenant", bearer(c.TokenWith(with(func(m jwt.MapClaims) { delete(m, "tenant_id") }))), "", http.StatusUnauthorized},
		{"tenant with a colon", bearer(c.TokenWith(with(func(m jwt.MapClaims) { m["tenant_id"] = "a:b" }))), "", http.StatusUnauthorized},
		{"not bearer", http.Header{"Authorization": {"Basic " + c.TokenWith(valid)}}, "", http.StatusUnauthorized},
		{"foreign origin", http.Header{"Authorization": {"Bearer " + c.TokenWith(valid)}, "Origin": {"https://evil.example"}}, "", http.StatusForbidden},
		{"valid header", bearer(c.TokenWith(valid)), "", http.StatusSwitchingProtocols},
		{"valid query parameter", nil, "?access_token=" + url.QueryEscape(c.TokenWith(valid)), http.StatusSwitchingProtocols},
		{"allowed origin", http.Header{"Authorization": {"Bearer " + c.TokenWith(valid)}, "Origin": {"https://board.example"}}, "", http.StatusSwitchingProtocols},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, resp, err := nodetest.TryDial(t, n.URL()+tt.query, tt.header)
			if tt.status == http.StatusSwitchingProtocols {
				if err != nil {
					t.Fatalf("want upgrade, got %v", err)
				}
				conn.Close()
				return
			}
			if err == nil {
				t.Fatal("upgrade succeeded; want refusal")
			}
			if resp == nil || resp.StatusCode != tt.status {
				t.Fatalf("want HTTP %d, got %v (%v)", tt.status, resp, err)
			}
		})
	}
}

func TestWrongAudienceIsRefused(t *testing.T) {
	var secret []byte
	c := nodetest.Start(t, nodetest.Options{Configure: func(cfg *node.Config) {}})
	secret = c.Secret
	c2 := nodetest.Start(t, nodetest.Options{Configure: func(cfg *node.Config) {
		auth, err := node.NewAuthenticator(context.Background(), node.AuthConfig{HMACSecret: secret, Audience: "pm"})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Auth = auth
	}})
	claims := func(aud string) jwt.MapClaims {
		return jwt.MapClaims{"sub": uuid.NewString(), "tenant_id": "acme", "aud": aud, "exp": time.Now().Add(time.Hour).Unix()}
	}
	if _, resp, err := nodetest.TryDial(t, c2.Nodes[0].URL(), bearer(c.TokenWith(claims("other")))); err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong audience: want 401, got %v %v", resp, err)
	}
	if _, _, err := nodetest.TryDial(t, c2.Nodes[0].URL(), bearer(c.TokenWith(claims("pm")))); err != nil {
		t.Fatalf("right audience: %v", err)
	}
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

func TestMalformedFramesKeepTheConnection(t *testing.T) {
	tm := newTeam(t, nodetest.Options{})
	conn := tm.editorConn
	payloadOnly, _ := proto.Marshal(&pmv1.WebSocketMessage{MessageId: "m-1"})
	eventAsRequest, _ := proto.Marshal(&pmv1.WebSocketMessage{MessageId: "m-2", Payload: &pmv1.WebSocketMessage_WorkItemCreated{}})
	noID, _ := proto.Marshal(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_GetWorkItemsRequest{}})
	longID, _ := proto.Marshal(&pmv1.WebSocketMessage{MessageId: strings.Repeat("x", 200), Payload: &pmv1.WebSocketMessage_GetWorkItemsRequest{}})
	tests := []struct {
		name   string
		opcode gws.Opcode
		data   []byte
		id     string
		field  string
	}{
		{"garbage", gws.OpcodeBinary, []byte{0xff, 0xff, 0xff, 0x01, 0x02}, "", ""},
		{"text frame", gws.OpcodeText, []byte(`{"hello":1}`), "", ""},
		{"no payload", gws.OpcodeBinary, payloadOnly, "m-1", "payload"},
		{"event sent as request", gws.OpcodeBinary, eventAsRequest, "m-2", "payload"},
		{"no message_id", gws.OpcodeBinary, noID, "", "message_id"},
		{"message_id too long", gws.OpcodeBinary, longID, "", "message_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn.SendRaw(tt.opcode, tt.data)
			resp := conn.Next(wait)
			e := wantError(t, resp, pm.EInvalid, tt.field)
			if resp.MessageId != tt.id {
				t.Fatalf("error carries message_id %q, want %q (%s)", resp.MessageId, tt.id, e.Message)
			}
			// The connection still works.
			if got := get(conn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project}); got.GetWorkItemsList() == nil {
				t.Fatalf("after %s: %v", tt.name, got)
			}
		})
	}
}

func TestOversizedFrameClosesOnlyItsConnection(t *testing.T) {
	tm := newTeam(t, nodetest.Options{Configure: func(cfg *node.Config) { cfg.MaxFrameBytes = 4 << 10 }})
	big, _ := proto.Marshal(&pmv1.WebSocketMessage{MessageId: "big", Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{
		CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK,
			Title: "big", Description: strings.Repeat("x", 8<<10)},
	}})
	tm.editorConn.SendRaw(gws.OpcodeBinary, big)
	if code := tm.editorConn.WaitClosed(wait); code != 1009 {
		t.Fatalf("close code %d, want 1009", code)
	}
	if got := get(tm.viewerConn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project}); got.GetWorkItemsList() == nil {
		t.Fatalf("other connection: %v", got)
	}
}

// A client that writes a whole oversized frame before it reads (as
// browsers and Node's ws do) reads the 1009 close frame: the node stops
// reading the frame but drains and discards the rest of it for a while
// before it closes the socket, instead of closing with unread input, which
// resets the connection and destroys the close frame on its way.
func TestOversizedFrameCloseFrameReachesTheClient(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{})
	url := c.Nodes[0].URL()
	for i := range 3 {
		conn, br := rawDial(t, url, c.Token("acme", uuid.New()))
		frame := maskedFrame(byte(gws.OpcodeBinary), make([]byte, 4<<20))
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(frame); err != nil {
			t.Fatalf("attempt %d: writing a 4 MiB frame: %v", i, err)
		}
		code, err := readCloseFrame(br)
		if err != nil {
			t.Fatalf("attempt %d: reading the close frame: %v", i, err)
		}
		if code != node.CloseTooBig {
			t.Fatalf("attempt %d: close code %d, want %d", i, code, node.CloseTooBig)
		}
		conn.Close()
	}
}

// The node's patience with a client that keeps sending after the close
// frame is bounded: it closes the socket after a few MiB or seconds.
func TestClosingConnectionDrainIsBounded(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{})
	conn, br := rawDial(t, c.Nodes[0].URL(), c.Token("acme", uuid.New()))
	endless := maskedFrame(byte(gws.OpcodeBinary), make([]byte, 64<<20))
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	start := time.Now()
	n, err := conn.Write(endless)
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the node read all of a 64 MiB frame after closing (%v)", err)
	}
	t.Logf("the node closed after %d bytes, %v: %v", n, time.Since(start).Round(time.Millisecond), err)
	if code, err := readCloseFrame(br); err == nil && code != node.CloseTooBig {
		t.Fatalf("close code %d, want %d", code, node.CloseTooBig)
	}
}

// A frame the client sends right behind its upgrade request, before the
// answer, is not lost: the bytes the HTTP server read ahead go to the
// WebSocket.
func TestFrameSentWithTheUpgradeRequest(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{})
	req, _ := proto.Marshal(&pmv1.WebSocketMessage{MessageId: "early", Payload: &pmv1.WebSocketMessage_GetWorkItemsRequest{
		GetWorkItemsRequest: &pmv1.GetWorkItemsRequest{ProjectId: uuid.NewString()}}})
	conn, br := rawDial(t, c.Nodes[0].URL(), c.Token("acme", uuid.New()), maskedFrame(byte(gws.OpcodeBinary), req))
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	opcode, payload, err := readFrame(br)
	if err != nil {
		t.Fatalf("no answer to the early frame: %v", err)
	}
	var resp pmv1.WebSocketMessage
	if err := proto.Unmarshal(payload, &resp); err != nil || opcode != byte(gws.OpcodeBinary) || resp.MessageId != "early" {
		t.Fatalf("answer: opcode %d, %v (%v)", opcode, &resp, err)
	}
}

// rawDial opens a WebSocket by hand, for tests of what goes over the wire.
// Frames in early are sent right behind the request, without waiting for
// the answer.
func rawDial(t *testing.T, wsURL, token string, early ...[]byte) (net.Conn, *bufio.Reader) {
	t.Helper()
	u, err := url.Parse(wsURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(wait))
	req := fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer %s\r\n\r\n",
		u.RequestURI(), u.Host, token)
	if _, err := conn.Write(slices.Concat(append([][]byte{req}, early...)...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: HTTP %d", resp.StatusCode)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, br
}

// maskedFrame encodes one final client frame.
func maskedFrame(opcode byte, payload []byte) []byte {
	b := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	// The mask bit is set, as servers require; a zero masking key leaves
	// the payload as it is.
	b = append(b, 0, 0, 0, 0)
	return append(b, payload...)
}

// readFrame reads one (unfragmented) server frame.
func readFrame(br *bufio.Reader) (opcode byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(br, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}

// readCloseFrame reads server frames until a close frame and returns its code.
func readCloseFrame(br *bufio.Reader) (uint16, error) {
	for {
		opcode, payload, err := readFrame(br)
		if err != nil {
			return 0, err
		}
		if opcode == byte(gws.OpcodeCloseConnection) {
			if len(payload) < 2 {
				return 0, fmt.Errorf("close frame without a code")
			}
			return binary.BigEndian.Uint16(payload), nil
		}
	}
}

func TestWorkItemLifecycle(t *testing.T) {
	tm := newTeam(t, nodetest.Options{})
	sub := subscribe(t, tm.viewerConn, tm.project)
	rev0 := sub.Revisions[tm.project]

	epic := mustCreate(t, tm.editorConn, &pmv1.CreateWorkItemRequest{
		ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_EPIC, Title: "  Launch  ",
	})
	if epic.Title != "Launch" || epic.Version != 1 || epic.Revision != rev0+1 || epic.ParentId != tm.project ||
		epic.Status != pmv1.WorkItemStatus_WORK_ITEM_STATUS_BACKLOG || epic.Priority != pmv1.WorkItemPriority_WORK_ITEM_PRIORITY_MEDIUM ||
		epic.CreatedBy != tm.editor.String() || epic.Position == "" {
		t.Fatalf("created epic: %v", epic)
	}
	// The viewer's subscription gets the event with a server-made id.
	ev := tm.viewerConn.Next(wait)
	if ev.GetWorkItemCreated().GetWorkItem().GetId() != epic.Id || !strings.HasPrefix(ev.MessageId, "srv-") {
		t.Fatalf("event: %v", ev)
	}

	story := mustCreate(t, tm.editorConn, &pmv1.CreateWorkItemRequest{
		ParentId: epic.Id, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_STORY, Title: "Countdown",
		StoryPoints: proto.Int32(5), AssigneeId: tm.editor.String(),
	})
	task := mustCreate(t, tm.editorConn, &pmv1.CreateWorkItemRequest{
		ParentId: story.Id, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "Fuel",
	})
	if story.ProjectId != tm.project || task.ProjectId != tm.project || task.Revision != epic.Revision+2 {
		t.Fatalf("story %v task %v", story, task)
	}

	resp := update(tm.editorConn, &pmv1.UpdateWorkItemRequest{
		WorkItemId: task.Id, ExpectedVersion: 1,
		Status: pmv1.WorkItemStatus_WORK_ITEM_STATUS_IN_PROGRESS.Enum(), Title: proto.String("Fuel up"),
	})
	upd := resp.GetWorkItemUpdated()
	if upd == nil || upd.WorkItem.Version != 2 || upd.WorkItem.Title != "Fuel up" {
		t.Fatalf("update: %v", resp)
	}
	changes := map[string][2]string{}
	for _, ch := range upd.Changes {
		changes[ch.FieldName] = [2]string{ch.OldValue, ch.NewValue}
	}
	if changes["title"] != [2]string{"Fuel", "Fuel up"} || changes["status"] != [2]string{"backlog", "in_progress"} || len(changes) != 2 {
		t.Fatalf("changes: %v", upd.Changes)
	}

	// Stale version: CONFLICT with the current version, nothing changed.
	e := wantError(t, update(tm.editorConn, &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, ExpectedVersion: 1, Title: proto.String("lost")}), pm.EConflict, "")
	if e.CurrentVersion != 2 || !strings.Contains(e.Message, "2") {
		t.Fatalf("conflict: %v", e)
	}

	// Delete blocked while the story has a live child.
	e = wantError(t, del(tm.editorConn, story.Id, 0), pm.EDeleteBlocked, "")
	if !strings.Contains(e.Message, "1") {
		t.Fatalf("delete blocked message should say how many: %q", e.Message)
	}
	gone := del(tm.editorConn, task.Id, 2).GetWorkItemDeleted()
	if gone == nil || gone.WorkItem.DeletedAt == 0 || gone.WorkItemId != task.Id {
		t.Fatalf("delete: %v", gone)
	}
	if got := del(tm.editorConn, story.Id, 0); got.GetWorkItemDeleted() == nil {
		t.Fatalf("delete story after its task: %v", got)
	}

	// The viewer saw every change, in revision order, with no gaps.
	last := epic.Revision
	for range 5 { // story, task, update, delete task, delete story
		m := tm.viewerConn.Next(wait)
		var rev int64
		switch {
		case m.GetWorkItemCreated() != nil:
			rev = m.GetWorkItemCreated().WorkItem.Revision
		case m.GetWorkItemUpdated() != nil:
			rev = m.GetWorkItemUpdated().WorkItem.Revision
		case m.GetWorkItemDeleted() != nil:
			rev = m.GetWorkItemDeleted().Revision
		default:
			t.Fatalf("unexpected push %v", m)
		}
		if rev != last+1 {
			t.Fatalf("event revision %d after %d", rev, last)
		}
		last = rev
	}

	// Reads: everything live; since a revision (tombstones included).
	list := get(tm.viewerConn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project}).GetWorkItemsList()
	if list.AsOfRevision != last || len(list.WorkItems) != 2 { // project + epic
		t.Fatalf("full list at %d: %d items, as of %d", last, len(list.WorkItems), list.AsOfRevision)
	}
	since := get(tm.viewerConn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project, SinceRevision: epic.Revision}).GetWorkItemsList()
	if len(since.WorkItems) != 2 { // story and task, both tombstones
		t.Fatalf("since revision: %v", since.WorkItems)
	}
	for _, w := range since.WorkItems {
		if w.DeletedAt == 0 {
			t.Fatalf("want tombstone, got %v", w)
		}
	}
	byTime := get(tm.viewerConn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project, SinceTimestamp: epic.CreatedAt - 1}).GetWorkItemsList()
	if len(byTime.WorkItems) != 3 || byTime.AsOfTimestamp == 0 {
		t.Fatalf("since timestamp: %d items", len(byTime.WorkItems))
	}
}

func TestAuthorRespondsOnlyOnce(t *testing.T) {
	tm := newTeam(t, nodetest.Options{})
	subscribe(t, tm.editorConn, tm.project)
	subscribe(t, tm.viewerConn, tm.project)
	resp, others := tm.editorConn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{
		CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "mine"},
	}})
	if resp.GetWorkItemCreated() == nil || len(others) != 0 {
		t.Fatalf("resp %v others %v", resp, others)
	}
	// Once the viewer on the same node has the event, the fan-out has passed
	// the author too; a marker request then shows nothing was queued for it.
	if ev := tm.viewerConn.Next(wait); ev.GetWorkItemCreated() == nil {
		t.Fatalf("viewer: %v", ev)
	}
	_, others = tm.editorConn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_GetWorkItemsRequest{
		GetWorkItemsRequest: &pmv1.GetWorkItemsRequest{ProjectId: tm.project},
	}})
	if len(others) != 0 {
		t.Fatalf("author got its own event: %v", others)
	}
}

func TestValidationNamesTheField(t *testing.T) {
	tm := newTeam(t, nodetest.Options{})
	epic := mustCreate(t, tm.editorConn, &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_EPIC, Title: "E"})
	task := mustCreate(t, tm.editorConn, &pmv1.CreateWorkItemRequest{ParentId: epic.Id, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "T"})
	other := mustCreate(t, tm.adminConn, &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "Other"})
	otherEpic := mustCreate(t, tm.adminConn, &pmv1.CreateWorkItemRequest{ProjectId: other.Id, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_EPIC, Title: "OE"})
	task2 := pmv1.WorkItemType_WORK_ITEM_TYPE_TASK
	creates := []struct {
		name  string
		req   *pmv1.CreateWorkItemRequest
		field string
	}{
		{"blank title", &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: task2, Title: "   "}, "title"},
		{"long title", &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: task2, Title: strings.Repeat("é", 501)}, "title"},
		{"huge description", &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: task2, Title: "x", Description: strings.Repeat("d", 64<<10+1)}, "description"},
		{"no type", &pmv1.CreateWorkItemRequest{ProjectId: tm.project, Title: "x"}, "item_type"},
		{"unknown type", &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: 99, Title: "x"}, "item_type"},
		{"unknown status", &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: task2, Title: "x", Status: 42}, "status"},
		{"unknown priority", &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: task2, Title: "x", Priority: 42}, "priority"},
		{"negative points", &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: task2, Title: "x", StoryPoints: proto.Int32(-1)}, "story_points"},
		{"too many points", &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: task2, Title: "x", StoryPoints: proto.Int32(1001)}, "story_points"},
		{"bad project id", &pmv1.CreateWorkItemRequest{ProjectId: "nope", ItemType: task2, Title: "x"}, "project_id"},
		{"bad work item id", &pmv1.CreateWorkItemRequest{ProjectId: tm.project, WorkItemId: "123", ItemType: task2, Title: "x"}, "work_item_id"},
		{"bad position", &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: task2, Title: "x", Position: "a00"}, "position"},
		{"no project", &pmv1.CreateWorkItemRequest{ItemType: task2, Title: "x"}, "project_id"},
		{"epic under a task", &pmv1.CreateWorkItemRequest{ParentId: task.Id, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_EPIC, Title: "x"}, "parent_id"},
		{"task under a task", &pmv1.CreateWorkItemRequest{ParentId: task.Id, ItemType: task2, Title: "x"}, "parent_id"},
		{"parent in another project", &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ParentId: otherEpic.Id, ItemType: task2, Title: "x"}, "parent_id"},
		{"project with a parent", &pmv1.CreateWorkItemRequest{ParentId: epic.Id, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "x"}, "parent_id"},
		{"assignee not a member", &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: task2, Title: "x", AssigneeId: uuid.NewString()}, "assignee_id"},
	}
	for _, tt := range creates {
		t.Run("create/"+tt.name, func(t *testing.T) {
			wantError(t, create(tm.editorConn, tt.req), pm.EValidation, tt.field)
		})
	}
	updates := []struct {
		name  string
		req   *pmv1.UpdateWorkItemRequest
		field string
	}{
		{"no version", &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, Title: proto.String("x")}, "expected_version"},
		{"nothing to change", &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, ExpectedVersion: 1}, ""},
		{"blank title", &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, ExpectedVersion: 1, Title: proto.String(" ")}, "title"},
		{"unspecified status", &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, ExpectedVersion: 1, Status: pmv1.WorkItemStatus_WORK_ITEM_STATUS_UNSPECIFIED.Enum()}, "status"},
		{"points and clear", &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, ExpectedVersion: 1, StoryPoints: proto.Int32(3), ClearStoryPoints: true}, "clear_story_points"},
		{"re-parent epic under its own task", &pmv1.UpdateWorkItemRequest{WorkItemId: epic.Id, ExpectedVersion: 1, ParentId: proto.String(task.Id)}, "parent_id"},
		{"re-parent to itself", &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, ExpectedVersion: 1, ParentId: proto.String(task.Id)}, "parent_id"},
		{"re-parent to another project", &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, ExpectedVersion: 1, ParentId: proto.String(otherEpic.Id)}, "parent_id"},
		{"empty parent", &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, ExpectedVersion: 1, ParentId: proto.String("")}, "parent_id"},
		{"bad id", &pmv1.UpdateWorkItemRequest{WorkItemId: "x", ExpectedVersion: 1, Title: proto.String("x")}, "work_item_id"},
	}
	for _, tt := range updates {
		t.Run("update/"+tt.name, func(t *testing.T) {
			wantError(t, update(tm.editorConn, tt.req), pm.EValidation, tt.field)
		})
	}
	// None of that changed anything.
	list := get(tm.viewerConn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project}).GetWorkItemsList()
	if len(list.WorkItems) != 3 || list.AsOfRevision != task.Revision {
		t.Fatalf("after refused requests: %d items at revision %d", len(list.WorkItems), list.AsOfRevision)
	}
}

func TestRolesAndTenants(t *testing.T) {
	tm := newTeam(t, nodetest.Options{})
	item := mustCreate(t, tm.editorConn, &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "t"})
	strangerTenant := nodetest.Dial(t, tm.c.Nodes[0].URL(), tm.c.Token("globex", tm.admin)) // same user id, other tenant
	createTask := func() *pmv1.WebSocketMessage {
		return &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{
			ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "x"}}}
	}
	addMember := func() *pmv1.WebSocketMessage {
		return &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_AddProjectMemberRequest{AddProjectMemberRequest: &pmv1.AddProjectMemberRequest{
			ProjectId: tm.project, UserId: uuid.NewString(), Role: pmv1.ProjectRole_PROJECT_ROLE_VIEWER}}}
	}
	read := func() *pmv1.WebSocketMessage {
		return &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_GetWorkItemsRequest{GetWorkItemsRequest: &pmv1.GetWorkItemsRequest{ProjectId: tm.project}}}
	}
	sub := func() *pmv1.WebSocketMessage {
		return &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_Subscribe{Subscribe: &pmv1.Subscribe{ProjectIds: []string{tm.project}}}}
	}
	updateItem := func() *pmv1.WebSocketMessage {
		return &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_UpdateWorkItemRequest{UpdateWorkItemRequest: &pmv1.UpdateWorkItemRequest{
			WorkItemId: item.Id, ExpectedVersion: 1, Title: proto.String("x")}}}
	}
	tests := []struct {
		name string
		conn *nodetest.Conn
		req  func() *pmv1.WebSocketMessage
		code string
	}{
		{"viewer creates", tm.viewerConn, createTask, pm.EUnauthorized},
		{"viewer updates", tm.viewerConn, updateItem, pm.EUnauthorized},
		{"editor adds a member", tm.editorConn, addMember, pm.EUnauthorized},
		{"outsider reads", tm.outsideConn, read, pm.EUnauthorized},
		{"outsider subscribes", tm.outsideConn, sub, pm.EUnauthorized},
		{"other tenant reads", strangerTenant, read, pm.ENotFound},
		{"other tenant subscribes", strangerTenant, sub, pm.ENotFound},
		{"other tenant updates", strangerTenant, updateItem, pm.ENotFound},
		{"viewer reads", tm.viewerConn, read, ""},
		{"viewer subscribes", tm.viewerConn, sub, ""},
		{"editor creates", tm.editorConn, createTask, ""},
		{"admin adds a member", tm.adminConn, addMember, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, _ := tt.conn.Request(tt.req())
			if tt.code == "" {
				if resp.GetError() != nil {
					t.Fatalf("want success, got %v", resp.GetError())
				}
				return
			}
			wantError(t, resp, tt.code, "")
		})
	}
}

func TestMembers(t *testing.T) {
	tm := newTeam(t, nodetest.Options{})
	member := func(conn *nodetest.Conn, m *pmv1.WebSocketMessage) *pmv1.WebSocketMessage {
		resp, _ := conn.Request(m)
		return resp
	}
	list := member(tm.viewerConn, &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_ListProjectMembersRequest{
		ListProjectMembersRequest: &pmv1.ListProjectMembersRequest{ProjectId: tm.project}}}).GetProjectMembersList()
	if len(list.GetMembers()) != 3 {
		t.Fatalf("members: %v", list)
	}
	// Promote the editor, then the last-admin rule holds for demotion and removal.
	promote := member(tm.adminConn, &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_AddProjectMemberRequest{AddProjectMemberRequest: &pmv1.AddProjectMemberRequest{
		ProjectId: tm.project, UserId: tm.editor.String(), Role: pmv1.ProjectRole_PROJECT_ROLE_ADMIN}}})
	if m := promote.GetProjectMemberChanged().GetMember(); m.GetUserId() != tm.editor.String() || m.GetRole() != pmv1.ProjectRole_PROJECT_ROLE_ADMIN {
		t.Fatalf("promote: %v", promote)
	}
	remove := func(conn *nodetest.Conn, user uuid.UUID) *pmv1.WebSocketMessage {
		return member(conn, &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_RemoveProjectMemberRequest{
			RemoveProjectMemberRequest: &pmv1.RemoveProjectMemberRequest{ProjectId: tm.project, UserId: user.String()}}})
	}
	if got := remove(tm.adminConn, tm.admin).GetProjectMemberChanged(); !got.GetRemoved() || got.GetMember().GetUserId() != tm.admin.String() {
		t.Fatalf("admin removes themself while another admin exists: %v", got)
	}
	wantError(t, remove(tm.editorConn, tm.editor), pm.EValidation, "user_id")
	wantError(t, remove(tm.editorConn, uuid.New()), pm.ENotFound, "")
	wantError(t, member(tm.editorConn, &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_AddProjectMemberRequest{AddProjectMemberRequest: &pmv1.AddProjectMemberRequest{
		ProjectId: tm.project, UserId: tm.viewer.String()}}}), pm.EValidation, "role")

	// A removed viewer's subscription ends, and it is told.
	subscribe(t, tm.viewerConn, tm.project)
	if got := remove(tm.editorConn, tm.viewer).GetProjectMemberChanged(); !got.GetRemoved() || got.GetMember().GetRole() != pmv1.ProjectRole_PROJECT_ROLE_VIEWER {
		t.Fatalf("remove viewer: %v", got)
	}
	revoked := tm.viewerConn.Next(wait).GetSubscriptionRevoked()
	if revoked.GetProjectId() != tm.project {
		t.Fatalf("want SubscriptionRevoked, got %v", revoked)
	}
	resp, _ := tm.viewerConn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_GetWorkItemsRequest{GetWorkItemsRequest: &pmv1.GetWorkItemsRequest{ProjectId: tm.project}}})
	wantError(t, resp, pm.EUnauthorized, "")
}

func TestActivityPages(t *testing.T) {
	tm := newTeam(t, nodetest.Options{})
	task := mustCreate(t, tm.editorConn, &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "v1"})
	for v := int64(1); v <= 4; v++ {
		if got := update(tm.editorConn, &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, ExpectedVersion: v, Title: proto.String(strings.Repeat("v", int(v)))}); got.GetWorkItemUpdated() == nil {
			t.Fatalf("update: %v", got)
		}
	}
	page := func(token string) *pmv1.ActivityList {
		resp, _ := tm.viewerConn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_GetActivityRequest{GetActivityRequest: &pmv1.GetActivityRequest{
			ProjectId: tm.project, WorkItemId: task.Id, Limit: 2, PageToken: token}}})
		if resp.GetActivityList() == nil {
			t.Fatalf("activity: %v", resp)
		}
		return resp.GetActivityList()
	}
	var all []*pmv1.ActivityEntry
	for token, first := "", true; first || token != ""; first = false {
		p := page(token)
		all = append(all, p.Entries...)
		token = p.NextPageToken
	}
	if len(all) != 5 || all[0].Action != pmv1.ActivityAction_ACTIVITY_ACTION_UPDATED || all[4].Action != pmv1.ActivityAction_ACTIVITY_ACTION_CREATED {
		t.Fatalf("activity: %v", all)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Revision >= all[i-1].Revision || all[i].ActorId != tm.editor.String() {
			t.Fatalf("not newest first: %v", all)
		}
	}
	if ch := all[0].Changes; len(ch) != 1 || ch[0].FieldName != "title" || ch[0].OldValue != "vvv" || ch[0].NewValue != "vvvv" {
		t.Fatalf("changes: %v", ch)
	}
	resp, _ := tm.viewerConn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_GetActivityRequest{GetActivityRequest: &pmv1.GetActivityRequest{
		ProjectId: tm.project, Limit: 500}}})
	wantError(t, resp, pm.EValidation, "limit")
	resp, _ = tm.viewerConn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_GetActivityRequest{GetActivityRequest: &pmv1.GetActivityRequest{
		ProjectId: tm.project, PageToken: "bogus"}}})
	wantError(t, resp, pm.EValidation, "page_token")
}

func TestIdempotentRetries(t *testing.T) {
	tm := newTeam(t, nodetest.Options{})
	req := &pmv1.WebSocketMessage{MessageId: "create-once", Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{
		CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "once"}}}
	first, _ := tm.editorConn.Request(req)
	again, _ := tm.editorConn.Request(req)
	if first.GetWorkItemCreated() == nil || !proto.Equal(first, again) {
		t.Fatalf("replay differs:\n%v\n%v", first, again)
	}
	// Client-chosen ids make creates safe without the ledger too.
	id := uuid.NewString()
	a := mustCreate(t, tm.editorConn, &pmv1.CreateWorkItemRequest{WorkItemId: id, ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "mine"})
	b := mustCreate(t, tm.editorConn, &pmv1.CreateWorkItemRequest{WorkItemId: id, ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "mine"})
	if a.Id != id || b.Id != id || a.Revision != b.Revision {
		t.Fatalf("client id create: %v / %v", a, b)
	}
	// Somebody else can't claim it.
	wantError(t, create(tm.adminConn, &pmv1.CreateWorkItemRequest{WorkItemId: id, ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "theirs"}), pm.EConflict, "")
	list := get(tm.viewerConn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project}).GetWorkItemsList()
	if len(list.WorkItems) != 3 { // project, "once", "mine"
		t.Fatalf("items: %d", len(list.WorkItems))
	}
}

func TestRateLimit(t *testing.T) {
	tm := newTeam(t, nodetest.Options{Configure: func(cfg *node.Config) { cfg.RatePerSecond, cfg.RateBurst = 1, 3 }})
	var limited int
	for range 10 {
		tm.viewerConn.Send(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_GetWorkItemsRequest{GetWorkItemsRequest: &pmv1.GetWorkItemsRequest{ProjectId: tm.project}}})
	}
	for range 10 {
		if e := tm.viewerConn.Next(wait).GetError(); e != nil {
			if e.Code != pm.ERateLimited || e.RetryAfterMs <= 0 {
				t.Fatalf("error %v", e)
			}
			limited++
		}
	}
	if limited < 5 {
		t.Fatalf("only %d of 10 rate limited", limited)
	}
}

func TestSlowConsumerIsDisconnected(t *testing.T) {
	tm := newTeam(t, nodetest.Options{Configure: func(cfg *node.Config) {
		cfg.SendQueueBytes = 256 << 10
		cfg.RatePerSecond = -1
	}})
	n := tm.c.Nodes[0]
	subscribe(t, tm.viewerConn, tm.project)
	tm.viewerConn.Pause() // stops reading: the socket buffers fill, then the node's queue
	desc := strings.Repeat("d", 60<<10)
	for i := 0; n.Metric("pm_slow_consumer_disconnects_total") == 0; i++ {
		if i == 2000 {
			t.Fatal("the paused subscriber was never disconnected")
		}
		mustCreate(t, tm.editorConn, &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK,
			Title: "big", Description: desc})
	}
	tm.viewerConn.Resume() // it reads what the socket holds, then the close frame
	if code := tm.viewerConn.WaitClosed(30 * time.Second); code != node.CloseSlowConsumer {
		t.Fatalf("close code %d, want %d", code, node.CloseSlowConsumer)
	}
	// The author and the node carry on.
	if got := get(tm.editorConn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project}); got.GetWorkItemsList() == nil {
		t.Fatalf("author after slow consumer: %v", got)
	}
}

func TestTokenExpiryClosesTheConnection(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{})
	token := c.TokenWith(jwt.MapClaims{"sub": uuid.NewString(), "tenant_id": "acme", "exp": time.Now().Add(1500 * time.Millisecond).Unix()})
	conn := nodetest.Dial(t, c.Nodes[0].URL(), token)
	if code := conn.WaitClosed(10 * time.Second); code != node.CloseTokenExpired {
		t.Fatalf("close code %d, want %d", code, node.CloseTokenExpired)
	}
}

func TestShutdownClosesWithGoingAway(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{})
	conns := make([]*nodetest.Conn, 5)
	for i := range conns {
		conns[i] = nodetest.Dial(t, c.Nodes[0].URL(), c.Token("acme", uuid.New()))
	}
	var wg sync.WaitGroup
	wg.Go(c.Nodes[0].Stop)
	for _, conn := range conns {
		if code := conn.WaitClosed(wait); code != node.CloseGoingAway {
			t.Fatalf("close code %d, want 1001", code)
		}
	}
	wg.Wait()
	c.Nodes[0].Stop() // twice is fine
}

func TestReadiness(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{})
	n := c.Nodes[0]
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200} {
		resp, err := http.Get(n.HTTPURL() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
	}
}

func addMember(t *testing.T, conn *nodetest.Conn, project string, user uuid.UUID, role pmv1.ProjectRole) {
	t.Helper()
	resp, _ := conn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_AddProjectMemberRequest{AddProjectMemberRequest: &pmv1.AddProjectMemberRequest{
		ProjectId: project, UserId: user.String(), Role: role}}})
	if resp.GetError() != nil {
		t.Fatalf("add member: %v", resp)
	}
}
