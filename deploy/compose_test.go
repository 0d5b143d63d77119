package deploy_test

import (
	"bufio"
	"context"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// loadCompose loads docker-compose.yml as `docker compose` would, with the
// compose-spec schema validation, and an empty environment (the defaults of
// its ${…:-…} variables apply).
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, "docker-compose.yml")}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) { o.SetProjectName("pm", true) })
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	return p
}

// env returns a service's environment with unset values as "".
func env(s types.ServiceConfig) map[string]string {
	out := map[string]string{}
	for k, v := range s.Environment {
		if v != nil {
			out[k] = *v
		} else {
			out[k] = ""
		}
	}
	return out
}

// haproxyServer is a `server NAME HOST:PORT … check port ADMIN` line.
var haproxyServer = regexp.MustCompile(`^\s*server\s+(\S+)\s+([^:\s]+):(\d+)\s.*\bcheck\b.*\bport\s+(\d+)`)

// The compose cluster: it loads under the compose-spec schema; every PM_*
// variable is one pm-node reads; a one-shot migration runs `pm-node
// migrate` once Postgres is healthy, and two nodes with PM_MIGRATE=false
// start after it succeeds; the init script makes the role the nodes log in
// as, with the password they use; HAProxy's configuration checks and names
// each node on its client port, with its health check on the admin port.
func TestCompose(t *testing.T) {
	p := loadCompose(t)
	known := flagEnvs(t)
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		checkEnvNames(t, "docker-compose.yml: service "+name, sortedKeys(env(p.Services[name])), known)
	}

	migrate, ok := p.Services["migrate"]
	if !ok {
		t.Fatal("no migrate service")
	}
	if !slices.Equal([]string(migrate.Command), []string{"migrate"}) {
		t.Errorf("the migrate service runs %q, want [migrate]", migrate.Command)
	}
	if migrate.DependsOn["postgres"].Condition != types.ServiceConditionHealthy {
		t.Errorf("the migrate service does not wait for Postgres to be healthy")
	}
	var nodes []string
	for name, s := range p.Services {
		if s.Image == migrate.Image && name != "migrate" {
			nodes = append(nodes, name)
		}
	}
	slices.Sort(nodes)
	if len(nodes) != 2 {
		t.Fatalf("%d node services (%v), want 2", len(nodes), nodes)
	}
	nodeEnv := map[string]map[string]string{}
	for _, name := range nodes {
		s := p.Services[name]
		e := env(s)
		nodeEnv[name] = e
		if e["PM_MIGRATE"] != "false" {
			t.Errorf("%s runs with PM_MIGRATE=%q, want false", name, e["PM_MIGRATE"])
		}
		if len(s.Command) != 0 {
			t.Errorf("%s runs %q: a node runs with no arguments", name, s.Command)
		}
		if s.DependsOn["migrate"].Condition != types.ServiceConditionCompletedSuccessfully {
			t.Errorf("%s does not wait for the migration to succeed", name)
		}
		if e["PM_JWT_SECRET"] == "" || e["PM_DATABASE_URL"] != env(migrate)["PM_DATABASE_URL"] {
			t.Errorf("%s: no JWT secret, or another database than the migration's", name)
		}
	}

	// The database role: made by the init script, with the password the
	// nodes use.
	pg := p.Services["postgres"]
	u, err := url.Parse(nodeEnv[nodes[0]]["PM_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	if u.User.Username() != "pm_app" || u.Hostname() != "postgres" || env(pg)["POSTGRES_APP_PASSWORD"] != pw {
		t.Errorf("the nodes log in as %s at %s; the init script makes pm_app with another password, or Postgres is elsewhere", u.User.Username(), u.Host)
	}
	initScript := ""
	for _, v := range pg.Volumes {
		if strings.HasPrefix(v.Target, "/docker-entrypoint-initdb.d/") {
			initScript = v.Source
		}
	}
	b, err := os.ReadFile(initScript)
	if err != nil {
		t.Fatalf("the Postgres init script: %v", err)
	}
	if !strings.Contains(string(b), "CREATE ROLE pm_app LOGIN NOSUPERUSER NOBYPASSRLS") {
		t.Error("the init script does not create pm_app as a NOSUPERUSER NOBYPASSRLS role")
	}

	// HAProxy: its configuration, and a server line per node on the node's
	// ports.
	hap := p.Services["haproxy"]
	cfg := ""
	for _, v := range hap.Volumes {
		if strings.HasSuffix(v.Target, "haproxy.cfg") {
			cfg = v.Source
		}
	}
	f, err := os.Open(cfg)
	if err != nil {
		t.Fatalf("HAProxy's configuration: %v", err)
	}
	defer f.Close()
	servers := map[string][2]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := haproxyServer.FindStringSubmatch(sc.Text()); m != nil {
			servers[m[2]] = [2]string{m[3], m[4]}
		}
	}
	if len(servers) != len(nodes) {
		t.Errorf("HAProxy has servers %v, want one per node %v", sortedKeys(servers), nodes)
	}
	for _, name := range nodes {
		ports, ok := servers[name]
		if !ok {
			t.Errorf("HAProxy has no server for %s", name)
			continue
		}
		listen := portOf(t, name+" PM_LISTEN_ADDR", nodeEnv[name]["PM_LISTEN_ADDR"])
		admin := portOf(t, name+" PM_ADMIN_ADDR", nodeEnv[name]["PM_ADMIN_ADDR"])
		if ports != [2]string{listen, admin} {
			t.Errorf("HAProxy reaches %s on %s (check port %s); it serves %s (admin %s)", name, ports[0], ports[1], listen, admin)
		}
	}
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("haproxy is not on PATH (make services installs it): its configuration cannot be checked")
	}
	if out, err := exec.Command(haproxy, "-c", "-f", cfg).CombinedOutput(); err != nil {
		t.Errorf("haproxy -c -f %s: %v\n%s", cfg, err, out)
	}
}
