package node_test

import (
	"net/http"
	"strings"
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

// Input an outside review sent: each gets a clear error (or refusal), never
// INTERNAL, and leaves the board usable for everybody else.

func TestEditorsCannotRenameOrDeleteTheProject(t *testing.T) {
	tm := newTeam(t, nodetest.Options{})
	wantError(t, update(tm.editorConn, &pmv1.UpdateWorkItemRequest{WorkItemId: tm.project, ExpectedVersion: 1, Title: proto.String("mine now")}), pm.EUnauthorized, "")
	wantError(t, del(tm.editorConn, tm.project, 0), pm.EUnauthorized, "")
	if got := update(tm.adminConn, &pmv1.UpdateWorkItemRequest{WorkItemId: tm.project, ExpectedVersion: 1, Title: proto.String("Apollo 2")}); got.GetWorkItemUpdated() == nil {
		t.Fatalf("admin renames the project: %v", got)
	}
}

func TestExtremePositionsCannotBlockAColumn(t *testing.T) {
	tm := newTeam(t, nodetest.Options{})
	task := func(pos string) *pmv1.WebSocketMessage {
		return create(tm.editorConn, &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK,
			Title: "t", Status: pmv1.WorkItemStatus_WORK_ITEM_STATUS_TODO, Position: pos})
	}
	for _, pos := range []string{strings.Repeat("z", 512), strings.Repeat("z", 27), "A" + strings.Repeat("0", 26) + "1", "a" + strings.Repeat("V", 300)} {
		wantError(t, task(pos), pm.EValidation, "position")
	}
	// The highest position a client may give still leaves room after it.
	top := "y" + strings.Repeat("z", 25) + strings.Repeat("z", 100)
	if got := task(top).GetWorkItemCreated(); got == nil {
		t.Fatal("the highest allowed position was refused")
	}
	for range 3 {
		got := task("").GetWorkItemCreated().GetWorkItem()
		if got == nil || got.Position <= top {
			t.Fatalf("default placement after the top: %v", got)
		}
	}
}

func TestNULAndOutOfRangeTimestampsAreValidationErrors(t *testing.T) {
	tm := newTeam(t, nodetest.Options{})
	wantError(t, create(tm.editorConn, &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "a\x00b"}), pm.EValidation, "title")
	wantError(t, create(tm.editorConn, &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "t", Description: "x\x00"}), pm.EValidation, "description")
	task := mustCreate(t, tm.editorConn, &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "t"})
	wantError(t, update(tm.editorConn, &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, ExpectedVersion: 1, Title: proto.String("\x00")}), pm.EValidation, "title")
	wantError(t, update(tm.editorConn, &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, ExpectedVersion: 1, Description: proto.String("\x00")}), pm.EValidation, "description")
	for _, ts := range []int64{1e16, pm.TimestampMaxMillis + 1} {
		wantError(t, get(tm.viewerConn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project, SinceTimestamp: ts}), pm.EValidation, "since_timestamp")
	}
	if got := get(tm.viewerConn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project, SinceTimestamp: pm.TimestampMaxMillis}); got.GetWorkItemsList() == nil {
		t.Fatalf("the largest since_timestamp: %v", got)
	}
}

// Invalid frames count against the rate limit like requests, and a client
// that keeps sending while refused is closed (1008).
func TestFloodsOfFramesAreLimitedAndClosed(t *testing.T) {
	tm := newTeam(t, nodetest.Options{Configure: func(cfg *node.Config) { cfg.RatePerSecond, cfg.RateBurst = 1, 5 }})
	n := tm.c.Nodes[0]
	for range 200 {
		if tm.viewerConn.TrySendRaw(gws.OpcodeBinary, []byte{0xff, 0xff, 0xff}) != nil {
			break // closed already
		}
	}
	var invalid, limited int
	for {
		m, code := tm.viewerConn.NextOrClose(wait)
		if m == nil {
			if code != node.ClosePolicy {
				t.Fatalf("closed with %d, want %d", code, node.ClosePolicy)
			}
			break
		}
		switch m.GetError().GetCode() {
		case pm.EInvalid:
			invalid++
		case pm.ERateLimited:
			limited++
		default:
			t.Fatalf("unexpected %v", m)
		}
	}
	if invalid > 6 || limited == 0 {
		t.Fatalf("%d frames answered INVALID_MESSAGE and %d RATE_LIMITED; want at most the burst through", invalid, limited)
	}
	if got := n.Metric("pm_connection_closes_total"); got < 1 {
		t.Fatalf("closes counted: %v", got)
	}
	// The others carry on.
	if got := get(tm.editorConn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project}); got.GetWorkItemsList() == nil {
		t.Fatalf("another connection: %v", got)
	}
}

func TestTokenPolicy(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{})
	n := c.Nodes[0]
	user := uuid.New()
	now := time.Now()
	claims := func(change func(jwt.MapClaims)) jwt.MapClaims {
		m := jwt.MapClaims{"sub": user.String(), "tenant_id": "acme", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		change(m)
		return m
	}
	refused := map[string]jwt.MapClaims{
		"sub in upper case":          claims(func(m jwt.MapClaims) { m["sub"] = strings.ToUpper(user.String()) }),
		"sub in braces":              claims(func(m jwt.MapClaims) { m["sub"] = "{" + user.String() + "}" }),
		"sub as a URN":               claims(func(m jwt.MapClaims) { m["sub"] = "urn:uuid:" + user.String() }),
		"sub without hyphens":        claims(func(m jwt.MapClaims) { m["sub"] = strings.ReplaceAll(user.String(), "-", "") }),
		"ten-year token":             claims(func(m jwt.MapClaims) { m["exp"] = now.Add(10 * 365 * 24 * time.Hour).Unix() }),
		"issued long ago":            claims(func(m jwt.MapClaims) { m["iat"] = now.Add(-48 * time.Hour).Unix() }),
		"no iat, expires in 30 days": claims(func(m jwt.MapClaims) { delete(m, "iat"); m["exp"] = now.Add(30 * 24 * time.Hour).Unix() }),
	}
	for name, cl := range refused {
		t.Run(name, func(t *testing.T) {
			if _, resp, err := nodetest.TryDial(t, n.URL(), bearer(c.TokenWith(cl))); err == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("want 401, got %v %v", resp, err)
			}
		})
	}
	for name, cl := range map[string]jwt.MapClaims{
		"canonical sub":   claims(func(jwt.MapClaims) {}),
		"24 h, no iat":    claims(func(m jwt.MapClaims) { delete(m, "iat"); m["exp"] = now.Add(24 * time.Hour).Unix() }),
		"24 h lifetime":   claims(func(m jwt.MapClaims) { m["exp"] = now.Add(24 * time.Hour).Unix() }),
		"refreshed often": claims(func(m jwt.MapClaims) { m["iat"] = now.Add(-time.Hour).Unix() }),
	} {
		t.Run(name, func(t *testing.T) {
			conn, _, err := nodetest.TryDial(t, n.URL(), bearer(c.TokenWith(cl)))
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			conn.Close()
		})
	}
}
