package repo_test

import (
	"maps"
	"testing"

	"github.com/google/uuid"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/repo/repotest"
)

func TestProjectHeads(t *testing.T) {
	s := repotest.MustStore(t)
	a, b := repotest.NewActor(), repotest.NewActor()
	pa1, pa2, pb := repotest.MustProject(t, s, a), repotest.MustProject(t, s, a), repotest.MustProject(t, s, b)
	for range 3 {
		if _, _, err := s.CreateWorkItem(t.Context(), a, pm.NewWorkItem{ProjectID: pa2.ID, Type: pm.TypeTask, Title: "t"}); err != nil {
			t.Fatal(err)
		}
	}
	key := func(tenant string, p uuid.UUID) pm.ProjectKey { return pm.ProjectKey{Tenant: tenant, Project: p} }
	keys := []pm.ProjectKey{
		key(a.Tenant, pa1.ID), key(a.Tenant, pa2.ID), key(b.Tenant, pb.ID),
		key(a.Tenant, pb.ID),      // b's project asked for under a: absent
		key(b.Tenant, uuid.New()), // missing
		key("bad:tenant", pa1.ID), // invalid tenant: absent
	}
	heads, err := s.ProjectHeads(t.Context(), keys)
	if err != nil {
		t.Fatal(err)
	}
	want := map[pm.ProjectKey]int64{key(a.Tenant, pa1.ID): 1, key(a.Tenant, pa2.ID): 4, key(b.Tenant, pb.ID): 1}
	if !maps.Equal(heads, want) {
		t.Errorf("heads = %v, want %v", heads, want)
	}
	heads, err = s.ProjectHeads(t.Context(), nil)
	if err != nil || len(heads) != 0 {
		t.Errorf("no keys: %v, %v", heads, err)
	}
}
