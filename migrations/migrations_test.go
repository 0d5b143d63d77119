package migrations_test

import (
	"io/fs"
	"regexp"
	"strings"
	"testing"

	"github.com/pmhq/pm/migrations"
	"github.com/pmhq/pm/repo"
	"github.com/pmhq/pm/repo/repotest"
)

var fileName = regexp.MustCompile(`^(\d{4})_[a-z0-9_]+\.(up|down)\.sql$`)

// TestFiles checks that every version has an up and a down file and that
// version 1 is there. Versions ascend but may skip a number: one reserved by
// work on another branch (0002 while this branch adds 0003).
func TestFiles(t *testing.T) {
	names, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	ups, downs := map[string]string{}, map[string]string{}
	for _, n := range names {
		m := fileName.FindStringSubmatch(n)
		if m == nil {
			t.Errorf("%s: name is not NNNN_name.up.sql or NNNN_name.down.sql", n)
			continue
		}
		files := ups
		if m[2] == "down" {
			files = downs
		}
		if other := files[m[1]]; other != "" {
			t.Errorf("version %s has two %s files: %s and %s", m[1], m[2], other, n)
		}
		files[m[1]] = n
	}
	if len(ups) == 0 {
		t.Fatal("no migrations embedded")
	}
	if ups["0001"] == "" {
		t.Error("version 0001 is missing")
	}
	for v := range ups {
		if downs[v] == "" {
			t.Errorf("version %s has no down file", v)
		}
	}
	for v := range downs {
		if ups[v] == "" {
			t.Errorf("version %s has no up file", v)
		}
	}
}

// TestUpDownUp applies every up file, then every down file, then the up
// files again, as the application role, and checks what the schema holds.
func TestUpDownUp(t *testing.T) {
	dsn := repotest.MustDatabaseURL(t)
	pool := repotest.MustPool(t, dsn)
	run := func(suffix string, reverse bool) {
		names, err := fs.Glob(migrations.FS, "*."+suffix+".sql")
		if err != nil {
			t.Fatal(err)
		}
		if reverse {
			for i, j := 0, len(names)-1; i < j; i, j = i+1, j-1 {
				names[i], names[j] = names[j], names[i]
			}
		}
		for _, n := range names {
			sql, err := fs.ReadFile(migrations.FS, n)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pool.Exec(t.Context(), string(sql)); err != nil {
				t.Fatalf("%s: %v", n, err)
			}
		}
	}
	tables := func() []string {
		rows, err := pool.Query(t.Context(), `SELECT c.relname || ':' || c.relrowsecurity || ':' || c.relforcerowsecurity
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		return out
	}
	run("up", false)
	want := "activity_log:true:true project_members:true:true project_revisions:true:true users:true:true work_items:true:true"
	if got := strings.Join(tables(), " "); got != want {
		t.Errorf("after up: tables %q, want %q (row-level security enabled and forced)", got, want)
	}
	run("down", true)
	if got := tables(); len(got) != 0 {
		t.Errorf("after down: tables %v remain", got)
	}
	run("up", false)
	if got := strings.Join(tables(), " "); got != want {
		t.Errorf("after up again: tables %q", got)
	}
	// And golang-migrate accepts the files too.
	fresh := repotest.MustDatabaseURL(t)
	if err := repo.Migrate(t.Context(), fresh, nil); err != nil {
		t.Fatal(err)
	}
}
