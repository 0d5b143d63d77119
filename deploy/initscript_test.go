package deploy_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// initScript is the Postgres init script of the dev overlay and the compose
// file.
const initScript = "kubernetes/overlays/dev/postgres-init.sh"

// postgresBin returns the directory of the Postgres server programs.
func postgresBin(t *testing.T) string {
	t.Helper()
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir
		}
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(found) == 0 {
		t.Fatal("initdb is not installed (make services installs Postgres): the init script cannot be run")
	}
	slices.Sort(found)
	return filepath.Dir(found[len(found)-1])
}

// The init script, run as the official image runs it on a fresh server,
// makes a role the nodes accept: `pm-node migrate` applies the schema as it
// into the database it owns, and a node (which refuses a superuser or
// BYPASSRLS role) then serves on it with PM_MIGRATE=false — the compose and
// dev overlay sequence.
func TestPostgresInitScript(t *testing.T) {
	bin := postgresBin(t)
	var cred *syscall.Credential
	dir, err := os.MkdirTemp("", "pm-deploy-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if os.Getuid() == 0 { // Postgres refuses to run as root: run it as postgres.
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, and no postgres user to run Postgres as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	pg := startProcess(t, filepath.Join(bin, "postgres"), nil, cred,
		"-D", data, "-p", port, "-k", dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off")
	if err := poll(startWait, func() bool {
		return exec.Command(filepath.Join(bin, "pg_isready"), "-q", "-h", "127.0.0.1", "-p", port).Run() == nil
	}); err != nil {
		t.Fatalf("the private Postgres does not start: %v\n%s", err, pg.out)
	}

	password := randomHex(8)
	script, err := filepath.Abs(initScript)
	if err != nil {
		t.Fatal(err)
	}
	sh := exec.Command("sh", script)
	sh.Env = append(os.Environ(), "POSTGRES_USER=postgres", "POSTGRES_APP_PASSWORD="+password, "PGHOST=127.0.0.1", "PGPORT="+port)
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("the init script: %v\n%s", err, out)
	}
	out, err := exec.Command("psql", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", "postgres", "-Atc",
		`SELECT r.rolsuper, r.rolbypassrls, r.rolcanlogin, pg_get_userbyid(d.datdba)
		FROM pg_roles r, pg_database d WHERE r.rolname = 'pm_app' AND d.datname = 'pm'`).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "f|f|t|pm_app" {
		t.Fatalf("pm_app (superuser|bypassrls|login|owner of pm) = %q, %v; want f|f|t|pm_app", out, err)
	}
	// Without the password the script refuses, rather than make a role
	// anyone may log in as.
	noPassword := exec.Command("sh", script)
	noPassword.Env = append(os.Environ(), "POSTGRES_USER=postgres", "PGHOST=127.0.0.1", "PGPORT="+port)
	if out, err := noPassword.CombinedOutput(); err == nil || !strings.Contains(string(out), "POSTGRES_APP_PASSWORD") {
		t.Errorf("the init script without POSTGRES_APP_PASSWORD: %v, %q; want a refusal naming it", err, out)
	}

	env := map[string]string{
		"PM_DATABASE_URL": fmt.Sprintf("postgres://pm_app:%s@127.0.0.1:%s/pm?sslmode=disable", password, port),
		"PM_REDIS_URL":    redisURL(),
		"PM_REDIS_PREFIX": "pmdeploy-" + randomHex(6) + ":",
		"PM_JWT_SECRET":   randomHex(16),
		"PM_LOG_FORMAT":   "text",
		"PM_LISTEN_ADDR":  "127.0.0.1:0",
		"PM_ADMIN_ADDR":   "127.0.0.1:0",
	}
	migrate := startProcess(t, nodeBinary(t), env, nil, "migrate")
	if err := migrate.wait(t, startWait); err != nil {
		t.Fatalf("pm-node migrate as pm_app: %v\n%s", err, migrate.out)
	}
	env["PM_MIGRATE"] = "false"
	node := startProcess(t, nodeBinary(t), env, nil)
	node.waitServing(t)
	if err := node.stop(); err != nil {
		t.Errorf("the node did not stop cleanly: %v\n%s", err, node.out)
	}
}
