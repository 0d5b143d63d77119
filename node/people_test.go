package node_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/node"
	"github.com/pmhq/pm/node/nodetest"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// tokenOf returns a token of user in tenant with extra claims.
func tokenOf(c *nodetest.Cluster, tenant string, user uuid.UUID, extra jwt.MapClaims) string {
	claims := jwt.MapClaims{"sub": user.String(), "tenant_id": tenant, "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range extra {
		claims[k] = v
	}
	return c.TokenWith(claims)
}

func listMembers(t *testing.T, conn *nodetest.Conn, project string) map[string]*pmv1.ProjectMember {
	t.Helper()
	resp, _ := conn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_ListProjectMembersRequest{
		ListProjectMembersRequest: &pmv1.ListProjectMembersRequest{ProjectId: project}}})
	if resp.GetProjectMembersList() == nil {
		t.Fatalf("list members: %v", resp)
	}
	members := map[string]*pmv1.ProjectMember{}
	for _, m := range resp.GetProjectMembersList().GetMembers() {
		members[m.GetUserId()] = m
	}
	return members
}

// The name and email claims of the tokens users connect with show up as
// their members' display_name and email; claims unfit to show are ignored,
// and the token is accepted all the same.
func TestMemberProfiles(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{})
	url := c.Nodes[0].URL()
	tenant := "acme-" + uuid.NewString()[:8]
	alice, bob, carol, dave := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	aliceConn := nodetest.Dial(t, url, tokenOf(c, tenant, alice, jwt.MapClaims{"name": "Alice Adams", "email": "alice@demo.test"}))
	// Requests on a connection run after its profile is recorded: the
	// answer to the first one says it is.
	project := mustCreate(t, aliceConn, &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "People"})
	bobConn := nodetest.Dial(t, url, tokenOf(c, tenant, bob, jwt.MapClaims{"name": 42, "email": " bob@demo.test "}))
	carolConn := nodetest.Dial(t, url, tokenOf(c, tenant, carol, jwt.MapClaims{"name": "Carol\x00Clark", "email": strings.Repeat("c", 250) + "@demo.test"}))
	for _, user := range []uuid.UUID{bob, carol, dave} {
		resp, _ := aliceConn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_AddProjectMemberRequest{
			AddProjectMemberRequest: &pmv1.AddProjectMemberRequest{ProjectId: project.Id, UserId: user.String(), Role: pmv1.ProjectRole_PROJECT_ROLE_VIEWER}}})
		if resp.GetProjectMemberChanged() == nil {
			t.Fatalf("add member: %v", resp)
		}
	}
	for _, conn := range []*nodetest.Conn{bobConn, carolConn} {
		listMembers(t, conn, project.Id) // its profile is recorded by now
	}
	members := listMembers(t, aliceConn, project.Id)
	for user, want := range map[uuid.UUID][2]string{
		alice: {"Alice Adams", "alice@demo.test"},
		bob:   {"", "bob@demo.test"},
		carol: {"", ""},
		dave:  {"", ""}, // never connected
	} {
		m := members[user.String()]
		if got := [2]string{m.GetDisplayName(), m.GetEmail()}; got != want {
			t.Errorf("member %s: display_name, email = %q, want %q", user, got, want)
		}
	}

	// A new token with a new name: the newest is shown, also in
	// ProjectMemberChanged; a token without the claims changes nothing.
	renamed := nodetest.Dial(t, url, tokenOf(c, tenant, bob, jwt.MapClaims{"name": "Bob Brown"}))
	listMembers(t, renamed, project.Id)
	listMembers(t, nodetest.Dial(t, url, tokenOf(c, tenant, bob, nil)), project.Id)
	resp, _ := aliceConn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_AddProjectMemberRequest{
		AddProjectMemberRequest: &pmv1.AddProjectMemberRequest{ProjectId: project.Id, UserId: bob.String(), Role: pmv1.ProjectRole_PROJECT_ROLE_EDITOR}}})
	if m := resp.GetProjectMemberChanged().GetMember(); m.GetDisplayName() != "Bob Brown" || m.GetEmail() != "bob@demo.test" {
		t.Errorf("ProjectMemberChanged.member = %v, want Bob Brown <bob@demo.test>", m)
	}
	// Per tenant: Alice's id in another tenant is nobody there.
	other := "globex-" + uuid.NewString()[:8]
	mallory := nodetest.Dial(t, url, tokenOf(c, other, alice, jwt.MapClaims{"name": "Mallory"}))
	p := mustCreate(t, mallory, &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "Other"})
	if m := listMembers(t, mallory, p.Id)[alice.String()]; m.GetDisplayName() != "Mallory" {
		t.Errorf("in the other tenant: %v", m)
	}
	if m := listMembers(t, aliceConn, project.Id)[alice.String()]; m.GetDisplayName() != "Alice Adams" {
		t.Errorf("another tenant's token renamed Alice to %q", m.GetDisplayName())
	}
}

// failingProfiles fails every RecordProfile.
type failingProfiles struct {
	node.Store
	calls chan pm.Profile
}

func (s *failingProfiles) RecordProfile(_ context.Context, _ pm.Actor, p pm.Profile) error {
	s.calls <- p
	return errors.New("database on fire")
}

// lockedBuffer is a bytes.Buffer for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// A profile that cannot be recorded is logged; the connection serves.
func TestProfileFailureIsNotFatal(t *testing.T) {
	logs := &lockedBuffer{}
	store := &failingProfiles{calls: make(chan pm.Profile, 1)}
	c := nodetest.Start(t, nodetest.Options{Logs: logs, Configure: func(cfg *node.Config) {
		store.Store = cfg.Store
		cfg.Store = store
	}})
	conn := nodetest.Dial(t, c.Nodes[0].URL(), tokenOf(c, "acme", uuid.New(), jwt.MapClaims{"name": "Erin", "email": "erin@demo.test"}))
	if p := <-store.calls; p != (pm.Profile{Name: "Erin", Email: "erin@demo.test"}) {
		t.Errorf("recorded %+v", p)
	}
	mustCreate(t, conn, &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "Still works"})
	if !strings.Contains(logs.String(), "could not record the user's name and email") || !strings.Contains(logs.String(), "database on fire") {
		t.Errorf("the failure is not logged:\n%s", logs.String())
	}
	// A token without a name or email records nothing.
	conn2 := nodetest.Dial(t, c.Nodes[0].URL(), c.Token("acme", uuid.New()))
	mustCreate(t, conn2, &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "No profile"})
	select {
	case p := <-store.calls:
		t.Errorf("a token without claims recorded %+v", p)
	default:
	}
}
