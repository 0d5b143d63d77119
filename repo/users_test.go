package repo_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/repo"
	"github.com/pmhq/pm/repo/repotest"
)

// A user's profile: recorded per tenant, shown with their memberships,
// written only when it changes, each field kept until a token says otherwise.
func TestRecordProfile(t *testing.T) {
	ctx := t.Context()
	dsn := repotest.MustMigratedDatabaseURL(t)
	s := repotest.MustOpen(t, repo.Config{DatabaseURL: dsn})
	admin := repotest.MustPool(t, repotest.AdminDatabaseURL(t, dsn))
	f := newFixtureOn(t, s)
	stored := func(user uuid.UUID) (p pm.Profile, updated time.Time, xmin uint32) {
		t.Helper()
		err := admin.QueryRow(ctx, `SELECT name, email, updated_at, xmin::text::bigint FROM users WHERE tenant_id = $1 AND user_id = $2`,
			f.admin.Tenant, user).Scan(&p.Name, &p.Email, &updated, &xmin)
		if err != nil {
			t.Fatalf("read users row: %v", err)
		}
		return p, updated, xmin
	}
	member := func(user uuid.UUID) pm.Member {
		t.Helper()
		members, err := s.ListMembers(ctx, f.viewer, f.project.ID)
		if err != nil {
			t.Fatal(err)
		}
		m := find(members, user)
		if m == nil {
			t.Fatalf("user %s is not listed", user)
		}
		return *m
	}

	// Never connected: listed without a profile.
	if got := member(f.editor.User).Profile; got != (pm.Profile{}) {
		t.Errorf("profile before any record = %+v, want none", got)
	}
	alice := pm.Profile{Name: "Alice Adams", Email: "alice@demo.test"}
	if err := s.RecordProfile(ctx, f.editor, alice); err != nil {
		t.Fatal(err)
	}
	if got := member(f.editor.User).Profile; got != alice {
		t.Errorf("listed profile = %+v, want %+v", got, alice)
	}
	_, updated, xmin := stored(f.editor.User)

	// The same claims again: nothing is written.
	if err := s.RecordProfile(ctx, f.editor, alice); err != nil {
		t.Fatal(err)
	}
	if _, u, x := stored(f.editor.User); u != updated || x != xmin {
		t.Errorf("recording the same profile rewrote the row (updated_at %v→%v, xmin %d→%d)", updated, u, xmin, x)
	}
	// Only a name: the email stays. Nothing at all: nothing changes.
	if err := s.RecordProfile(ctx, f.editor, pm.Profile{Name: "Alice A. Adams"}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordProfile(ctx, f.editor, pm.Profile{}); err != nil {
		t.Fatal(err)
	}
	want := pm.Profile{Name: "Alice A. Adams", Email: "alice@demo.test"}
	if got, u, _ := stored(f.editor.User); got != want || !u.After(updated) {
		t.Errorf("after a name-only record: %+v updated %v, want %+v updated after %v", got, u, want, updated)
	}

	// Member changes answer with the profile too.
	if err := s.RecordProfile(ctx, f.outsider, pm.Profile{Email: "bob@demo.test"}); err != nil {
		t.Fatal(err)
	}
	added, err := s.PutMember(ctx, f.admin, f.project.ID, f.outsider.User, pm.RoleViewer)
	if err != nil || added.Profile != (pm.Profile{Email: "bob@demo.test"}) {
		t.Errorf("PutMember = %+v, %v; want bob's email", added, err)
	}
	removed, err := s.RemoveMember(ctx, f.admin, f.project.ID, f.outsider.User)
	if err != nil || removed.Profile != added.Profile {
		t.Errorf("RemoveMember = %+v, %v; want bob's email", removed, err)
	}

	// Per tenant: the same user id in another tenant is another person.
	other := pm.Actor{Tenant: repotest.NewActor().Tenant, User: f.editor.User}
	if err := s.RecordProfile(ctx, other, pm.Profile{Name: "Mallory"}); err != nil {
		t.Fatal(err)
	}
	if got := member(f.editor.User).Profile; got != want {
		t.Errorf("another tenant's record changed the profile to %+v", got)
	}
}
