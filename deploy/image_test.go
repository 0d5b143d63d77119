package deploy_test

import (
	"bufio"
	"context"
	"debug/elf"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pmhq/pm/client"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int    // where it starts
	cmd  string // upper case: FROM, RUN, ENV, …
	args string
}

// stage is one FROM … section.
type stage struct {
	from  string // the base image
	name  string // AS name, if any
	insts []instruction
}

// dockerfile is a parsed Dockerfile: its stages in order.
type dockerfile struct {
	path   string
	stages []stage
}

// parseDockerfile reads the subset of the Dockerfile syntax the file uses:
// comments, `\` continuations, one instruction per logical line.
func parseDockerfile(path string) (*dockerfile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	df := &dockerfile{path: path}
	sc := bufio.NewScanner(f)
	var cur strings.Builder
	start, n := 0, 0
	for sc.Scan() {
		n++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur.WriteString(strings.TrimSuffix(trimmed, `\`) + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		cur.Reset()
		in := instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			fields := strings.Fields(in.args)
			st := stage{from: fields[0]}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				st.name = fields[2]
			} else if len(fields) != 1 {
				return nil, fmt.Errorf("%s:%d: FROM %s: want IMAGE [AS NAME]", path, start, in.args)
			}
			df.stages = append(df.stages, st)
			continue
		}
		if len(df.stages) == 0 {
			return nil, fmt.Errorf("%s:%d: %s before the first FROM", path, start, in.cmd)
		}
		st := &df.stages[len(df.stages)-1]
		st.insts = append(st.insts, in)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("%s: ends in a continuation line", path)
	}
	if len(df.stages) == 0 {
		return nil, fmt.Errorf("%s: no FROM", path)
	}
	return df, nil
}

// all returns the instructions cmd of st.
func (st stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range st.insts {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// env returns the stage's ENV settings (KEY=VALUE form, values unquoted).
func (st stage) env() (map[string]string, error) {
	env := map[string]string{}
	for _, in := range st.all("ENV") {
		for _, kv := range strings.Fields(in.args) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, fmt.Errorf("line %d: ENV %s: use the KEY=VALUE form", in.line, in.args)
			}
			if uq, err := strconv.Unquote(v); err == nil {
				v = uq
			}
			env[k] = v
		}
	}
	return env, nil
}

// goBuild returns the build stage's `go build` RUN command: exactly one.
func (df *dockerfile) goBuild() (stage, string, error) {
	var found []string
	var st stage
	for _, s := range df.stages {
		for _, in := range s.all("RUN") {
			if strings.HasPrefix(in.args, "go build ") {
				found = append(found, in.args)
				st = s
			}
		}
	}
	if len(found) != 1 {
		return st, "", fmt.Errorf("%s: %d `RUN go build` lines, want 1: %q", df.path, len(found), found)
	}
	return st, found[0], nil
}

// outputFlag is the -o argument of the build command.
var outputFlag = regexp.MustCompile(`(^|\s)-o\s+(\S+)`)

// build runs the Dockerfile's go build command with its stage's ENV, in
// src (the build context: the build stage's WORKDIR holds a copy of it),
// writing the binary into dir instead of the image path. It returns the
// binary's path.
func (df *dockerfile) build(src, dir string) (string, error) {
	st, cmdline, err := df.goBuild()
	if err != nil {
		return "", err
	}
	m := outputFlag.FindStringSubmatch(cmdline)
	if m == nil {
		return "", fmt.Errorf("%s: the build command %q has no -o", df.path, cmdline)
	}
	out := filepath.Join(dir, filepath.Base(m[2]))
	cmdline = strings.Replace(cmdline, m[0], m[1]+"-o "+out, 1)
	env, err := st.env()
	if err != nil {
		return "", err
	}
	root, err := filepath.Abs(src)
	if err != nil {
		return "", err
	}
	cmd := exec.Command("sh", "-c", cmdline)
	cmd.Dir = root
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("sh -c %q: %w\n%s", cmdline, err, b)
	}
	return out, nil
}

// readDockerignore returns the patterns of .dockerignore in root.
func readDockerignore(root string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		return nil, err
	}
	var patterns []string
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			return nil, fmt.Errorf(".dockerignore: %s: exceptions are not supported by this test's matcher", line)
		}
		patterns = append(patterns, path.Clean(strings.TrimPrefix(line, "/")))
	}
	return patterns, nil
}

// ignored reports whether .dockerignore patterns exclude rel (a slash path
// relative to the context root): a pattern matches the path or one of its
// parent directories; `**` matches any number of directories.
func ignored(patterns []string, rel string) bool {
	for _, p := range patterns {
		parts := strings.Split(rel, "/")
		for i := range parts {
			if globMatch(strings.Split(p, "/"), parts[:i+1]) {
				return true
			}
		}
	}
	return false
}

func globMatch(pattern, name []string) bool {
	if len(pattern) == 0 {
		return len(name) == 0
	}
	if pattern[0] == "**" {
		for i := 0; i <= len(name); i++ {
			if globMatch(pattern[1:], name[i:]) {
				return true
			}
		}
		return false
	}
	if len(name) == 0 {
		return false
	}
	ok, err := path.Match(pattern[0], name[0])
	return err == nil && ok && globMatch(pattern[1:], name[1:])
}

// copyBuildContext copies the files of root that .dockerignore leaves in
// the build context into dst.
func copyBuildContext(root, dst string) error {
	patterns, err := readDockerignore(root)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if ignored(patterns, rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, filepath.FromSlash(rel))
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, 0o644)
		}
		return nil // symlinks and the like: docker sends them, the build needs none
	})
}

// finalUser returns the uid and gid of the last stage's USER, which must be
// numeric (scratch has no passwd file) and not root.
func (df *dockerfile) finalUser() (uid, gid uint32, err error) {
	last := df.stages[len(df.stages)-1]
	users := last.all("USER")
	if len(users) == 0 {
		return 0, 0, fmt.Errorf("%s: the final stage has no USER: the image would run as root", df.path)
	}
	u := users[len(users)-1].args
	us, gs, hasGroup := strings.Cut(u, ":")
	if !hasGroup {
		gs = us
	}
	uid64, err1 := strconv.ParseUint(us, 10, 32)
	gid64, err2 := strconv.ParseUint(gs, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%s: USER %s: want a numeric uid[:gid]", df.path, u)
	}
	if uid64 == 0 || gid64 == 0 {
		return 0, 0, fmt.Errorf("%s: USER %s is root", df.path, u)
	}
	return uint32(uid64), uint32(gid64), nil
}

// The Dockerfile's shape: official images named without a registry host, a
// static CGO_ENABLED=0 build, a scratch final stage that gets CA
// certificates from the builder, a numeric non-root user, no HEALTHCHECK
// (Kubernetes probes), and the binary as the entrypoint.
func TestDockerfile(t *testing.T) {
	df, err := parseDockerfile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if len(df.stages) < 2 {
		t.Fatalf("%d stages: want a build stage and a final one", len(df.stages))
	}
	names := map[string]bool{}
	for _, st := range df.stages {
		if st.name != "" {
			names[st.name] = true
		}
	}
	for _, st := range df.stages {
		if names[st.from] || st.from == "scratch" {
			continue
		}
		// A registry host is the first path element when it has a dot or a
		// port, or is localhost.
		if first, _, found := strings.Cut(st.from, "/"); found && (strings.ContainsAny(first, ".:") || first == "localhost") {
			t.Errorf("FROM %s names a registry host: use the official library name", st.from)
		}
		if !strings.Contains(st.from, ":") || strings.HasSuffix(st.from, ":latest") {
			t.Errorf("FROM %s: pin a tag", st.from)
		}
		for _, in := range st.insts {
			if in.cmd == "HEALTHCHECK" {
				t.Errorf("line %d: HEALTHCHECK: probes come from Kubernetes", in.line)
			}
		}
	}
	build, cmdline, err := df.goBuild()
	if err != nil {
		t.Fatal(err)
	}
	env, err := build.env()
	if err != nil {
		t.Fatal(err)
	}
	if env["CGO_ENABLED"] != "0" {
		t.Errorf("the build stage's ENV sets CGO_ENABLED=%q: want 0 (a static binary)", env["CGO_ENABLED"])
	}
	if !strings.HasSuffix(strings.TrimSpace(cmdline), "./cmd/pm-node") {
		t.Errorf("the build command %q does not build ./cmd/pm-node", cmdline)
	}

	final := df.stages[len(df.stages)-1]
	for _, in := range final.insts {
		if in.cmd == "HEALTHCHECK" {
			t.Errorf("line %d: HEALTHCHECK: probes come from Kubernetes", in.line)
		}
	}
	if final.from == "scratch" {
		certs := false
		for _, in := range final.all("COPY") {
			certs = certs || (strings.Contains(in.args, "--from=") && strings.Contains(in.args, "/etc/ssl/certs/ca-certificates.crt"))
		}
		if !certs {
			t.Error("the scratch stage copies no /etc/ssl/certs/ca-certificates.crt from the builder: https (JWKS) would fail")
		}
	}
	if _, _, err := df.finalUser(); err != nil {
		t.Error(err)
	}
	entry := final.all("ENTRYPOINT")
	if len(entry) != 1 || entry[0].args != `["/pm-node"]` {
		t.Errorf("ENTRYPOINT %v: want exactly [\"/pm-node\"] (exec form: no shell in the image)", entry)
	}
	binPath := ""
	for _, in := range final.all("COPY") {
		if strings.HasSuffix(in.args, " /pm-node") {
			binPath = in.args
		}
	}
	if binPath == "" {
		t.Error("the final stage copies nothing to /pm-node")
	}
}

// The Dockerfile's build command makes a static ELF: no program
// interpreter, no shared libraries, so that it runs on scratch.
func TestImageBinaryIsStatic(t *testing.T) {
	f, err := elf.Open(nodeBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has a program interpreter (PT_INTERP): it is dynamically linked")
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) > 0 {
		t.Errorf("the binary needs shared libraries (DT_NEEDED): %v", libs)
	}
}

// The image's binary, run as the image's user against a real database (as
// the application role) and Redis, serves: /healthz and /readyz on the
// admin port, the board at /, and a WebSocket at /ws for a valid token
// (and 401 without one).
func TestImageBinaryServesAsItsUser(t *testing.T) {
	df, err := parseDockerfile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	uid, gid, err := df.finalUser()
	if err != nil {
		t.Fatal(err)
	}
	var cred *syscall.Credential
	if os.Getuid() == 0 {
		cred = &syscall.Credential{Uid: uid, Gid: gid}
	} else {
		t.Logf("not root: running as uid %d (non-root too), not the image's %d", os.Getuid(), uid)
	}
	env := testEnv(t)
	env["PM_LISTEN_ADDR"] = "127.0.0.1:0"
	env["PM_ADMIN_ADDR"] = "127.0.0.1:0"
	p := startProcess(t, nodeBinary(t), env, cred)
	listen, admin := p.waitServing(t)
	if cred != nil {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		want := regexp.MustCompile(fmt.Sprintf(`(?m)^Uid:\s+%d\s+%d\s`, uid, uid))
		if !want.Match(b) {
			t.Fatalf("the node does not run as uid %d:\n%s", uid, b)
		}
	}

	for _, c := range []struct{ url, want string }{
		{"http://" + admin + "/healthz", ""},
		{"http://" + admin + "/readyz", "ready"},
		{"http://" + listen + "/", "<!doctype html>"},
	} {
		status, body, err := httpGet(c.url)
		if err != nil || status != http.StatusOK {
			t.Errorf("GET %s: HTTP %d, %v; want 200", c.url, status, err)
			continue
		}
		if !strings.Contains(strings.ToLower(body), c.want) {
			t.Errorf("GET %s: body %.200q does not hold %q", c.url, body, c.want)
		}
	}

	// No token: refused at the upgrade.
	status, _, err := httpGet("http://" + listen + "/ws")
	if err != nil || status != http.StatusUnauthorized {
		t.Errorf("GET /ws without a token: HTTP %d, %v; want 401", status, err)
	}
	cl := dial(t, "ws://"+listen+"/ws", env["PM_JWT_SECRET"])
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	projects, err := cl.ListProjects(ctx)
	if err != nil {
		t.Fatalf("a request over the WebSocket: %v", err)
	}
	if len(projects) != 0 {
		t.Fatalf("a new tenant has %d projects, want 0", len(projects))
	}
}

// dial connects an SDK client with a fresh user of a fresh tenant, closed
// when the test ends.
func dial(t *testing.T, url, secret string) *client.Client {
	t.Helper()
	tok, err := client.NewToken([]byte(secret), "deploy-"+randomHex(4), uuid.New(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, url, client.Options{
		Token:  tok,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatalf("WebSocket upgrade with a valid token at %s: %v", url, err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// The .dockerignore matcher follows docker's rules for the patterns the
// file uses.
func TestDockerignoreMatcher(t *testing.T) {
	patterns := []string{"**/*_test.go", "web/src", "*.md", ".git", "**/testdata"}
	for rel, want := range map[string]bool{
		"pm_test.go":               true,
		"node/server_test.go":      true,
		"node/server.go":           false,
		"web/src":                  true,
		"web/src/board/app.ts":     true,
		"web/dist/index.html":      false,
		"README.md":                true,
		"docs/operations.md":       false, // *.md is the root only
		".git/HEAD":                true,
		"node/testdata/fuzz/x":     true,
		"migrations/0001_init.sql": false,
	} {
		if got := ignored(patterns, rel); got != want {
			t.Errorf("ignored(%q) = %v, want %v", rel, got, want)
		}
	}
}
