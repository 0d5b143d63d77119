package repo

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestPgbenchWriteScript checks that scripts/pgbench-write.sh still runs the
// statements of an update, so that its TPS remains the figure pm's update
// rate is compared with. The script names the parameters; the update's
// NULLs and empty description are literals there.
func TestPgbenchWriteScript(t *testing.T) {
	script, err := os.ReadFile("../scripts/pgbench-write.sh")
	if err != nil {
		t.Fatal(err)
	}
	space := regexp.MustCompile(`\s+`)
	norm := func(s string) string { return space.ReplaceAllString(strings.TrimSpace(s), " ") }
	body := norm(string(script))
	param := regexp.MustCompile(`\$(\d+)`)
	for _, tc := range []struct {
		name, sql string
		params    []string // the script's name for $1, $2, …
	}{
		{"begin", "BEGIN ISOLATION LEVEL READ COMMITTED", nil},
		{"tenant", `SELECT set_config('app.tenant_id', $1, true)`, []string{":tenant"}},
		{"writeMembersSQL", writeMembersSQL, []string{":tenant", ":item", ":users"}},
		{"lockItemSQL", lockItemSQL, []string{":tenant", ":item"}},
		{"updateItemSQL", updateItemSQL, []string{":tenant", ":item", ":version", ":title", "''", ":status",
			":priority", "NULL::uuid", ":project", ":position", "NULL::integer", ":user", ":project", ":action", ":changes"}},
		{"commit", "COMMIT", nil},
	} {
		want := param.ReplaceAllStringFunc(tc.sql, func(p string) string {
			n, _ := strconv.Atoi(p[1:])
			return tc.params[n-1]
		})
		if !strings.Contains(strings.ToUpper(body), strings.ToUpper(norm(want)+";")) {
			t.Errorf("scripts/pgbench-write.sh lacks pm's %s:\n%s", tc.name, norm(want))
		}
	}
	if !strings.Contains(body, "-M prepared") || !strings.Contains(body, `\startpipeline`) {
		t.Errorf("scripts/pgbench-write.sh no longer runs prepared statements in pipelines")
	}
}
