package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/client"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
	"github.com/pmhq/pm/repo/repotest"
)

// The browser tests: Chromium (Debian's, headless) driven by playwright-core
// from web/browser-tests/*.test.mjs, run by node's test runner against a real
// cluster of this suite — two pm-node processes behind HAProxy. The Go side
// starts the cluster, seeds a tenant, and serves the scripts a small control
// API on loopback (to kill and restart nodes); the scripts open the board as
// people would and assert what they see. Screenshots go to
// e2e/artifacts/browser/ (PM_ARTIFACTS overrides), kept after the run.

const chromium = "/usr/bin/chromium"

// browserMissing says why the browser tests cannot run here, or "".
func browserMissing() string {
	if _, err := exec.LookPath("node"); err != nil {
		return "node (Node.js) is not on PATH (`make services` installs it, as root)"
	}
	if _, err := os.Stat(chromium); err != nil {
		return chromium + " is missing (`make services` installs Debian's chromium, as root)"
	}
	if _, err := os.Stat(filepath.Join("..", "web", "node_modules", "playwright-core")); err != nil {
		return "web/node_modules has no playwright-core: run `make web-deps` (npm ci in web/)"
	}
	return ""
}

// browserUser is a seeded user as the scripts see it.
type browserUser struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
	Role  string `json:"role"`
	Token string `json:"token"`
}

func TestBrowserBoard(t *testing.T) {
	if why := browserMissing(); why != "" {
		missing(t, why)
	}
	if why := haproxyMissing(); why != "" {
		missing(t, why)
	}
	c := startCluster(t, options{lb: true})

	// The people and their project.
	tenant := newTenant()
	people := map[string]*browserUser{}
	var alice user
	for _, p := range []struct{ key, name, role string }{
		{"alice", "Alice Adams", "admin"}, {"bob", "Bob Brown", "editor"}, {"carol", "Carol Clark", "viewer"},
		{"dora", "Dora Diaz", "editor"},
	} {
		u := newUser(tenant, p.key)
		if p.key == "alice" {
			alice = u
		}
		email := p.key + "@example.test"
		tok, err := client.NewTokenWithProfile(c.secret, tenant, u.id, time.Hour, pm.Profile{Name: p.name, Email: email})
		if err != nil {
			t.Fatal(err)
		}
		people[p.key] = &browserUser{ID: u.id.String(), Name: p.name, Email: email, Role: p.role, Token: tok}
	}
	admin := c.dial(t, c.URL(), alice)
	project := createProject(t, admin, "Apollo")
	for key, role := range map[string]pmv1.ProjectRole{
		"bob": pmv1.ProjectRole_PROJECT_ROLE_EDITOR, "carol": pmv1.ProjectRole_PROJECT_ROLE_VIEWER, "dora": pmv1.ProjectRole_PROJECT_ROLE_EDITOR,
	} {
		u := user{name: key, tenant: tenant}
		if err := u.id.UnmarshalText([]byte(people[key].ID)); err != nil {
			t.Fatal(err)
		}
		addMember(t, admin, project.Id, u, role)
	}
	// A big board, to time the first render of 2,000 cards.
	big := createProject(t, admin, "Big board")
	statuses := []pm.Status{pm.StatusBacklog, pm.StatusTodo, pm.StatusInProgress, pm.StatusReview, pm.StatusDone}
	repotest.MustInsertItems(t, c.dbURL, pm.Actor{Tenant: tenant, User: alice.id}, uuid.MustParse(big.Id), 2000, func(i int, w *pm.WorkItem) {
		w.Title = fmt.Sprintf("Card %d of the big board", i+1)
		w.Status = statuses[i%len(statuses)]
	})
	_ = admin.Close() // the scripts count the pages' connections per node

	// One more node, outside HAProxy, whose board gets its tokens from an
	// endpoint (PM_BOARD_TOKEN_URL) on another origin.
	tokenURL := startTokenEndpoint(t, c, tenant, people["dora"])
	tokenNode := &node{c: c, id: "node-token-url", out: &logBuffer{}, env: []string{"PM_BOARD_TOKEN_URL=" + tokenURL}}
	t.Cleanup(tokenNode.stop)
	if err := tokenNode.start(); err != nil {
		t.Fatalf("e2e: %v", err)
	}
	if err := tokenNode.waitReady(startWait); err != nil {
		t.Fatalf("e2e: %v\n%s", err, tokenNode.out.tail(40))
	}

	control := startControl(t, c, tenant, people)
	artifacts := os.Getenv("PM_ARTIFACTS")
	if artifacts == "" {
		artifacts = filepath.Join("artifacts", "browser")
	}
	artifacts, _ = filepath.Abs(artifacts)
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	nodeURLs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		nodeURLs[i] = "http://" + n.listen
	}
	seed, err := json.Marshal(map[string]any{
		"board":      "http://" + c.lb.addr,
		"tokenBoard": map[string]string{"url": "http://" + tokenNode.listen, "endpoint": tokenURL},
		"nodes":      nodeURLs,
		"control":    control,
		"tenant":     tenant,
		"project":    project.Id,
		"big":        big.Id,
		"people":     people,
		"artifacts":  artifacts,
		"chromium":   chromium,
	})
	if err != nil {
		t.Fatal(err)
	}

	scripts, err := filepath.Glob(filepath.Join("..", "web", "browser-tests", "*.test.mjs"))
	if err != nil || len(scripts) == 0 {
		t.Fatalf("no browser test scripts in web/browser-tests (%v)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	args := append([]string{"--test", "--test-reporter=spec", "--test-concurrency=1"}, scripts...)
	cmd := exec.CommandContext(ctx, "node", args...)
	cmd.Env = append(os.Environ(), "PM_BROWSER_SEED="+string(seed))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		t.Log(sc.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("browser tests failed (%v); screenshots in %s", err, artifacts)
	}
	t.Logf("screenshots in %s", artifacts)
}

// startControl serves the browser scripts' control API on loopback:
// POST /nodes/{i}/kill (SIGKILL) and /nodes/{i}/restart, i from 1; GET
// /nodes/{i}/connections (the node's open WebSocket count); GET
// /tokens/{who}?ttl=5s (a fresh token of a seeded person). It returns the
// API's base URL.
func startControl(t *testing.T, c *cluster, tenant string, people map[string]*browserUser) string {
	t.Helper()
	var mu sync.Mutex // one control action at a time
	node := func(w http.ResponseWriter, r *http.Request) *node {
		i, err := strconv.Atoi(r.PathValue("i"))
		if err != nil || i < 1 || i > len(c.nodes) {
			http.Error(w, "no such node", http.StatusNotFound)
			return nil
		}
		return c.nodes[i-1]
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /nodes/{i}/kill", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if n := node(w, r); n != nil {
			n.kill()
			fmt.Fprintln(w, "killed")
		}
	})
	mux.HandleFunc("POST /nodes/{i}/restart", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if n := node(w, r); n != nil {
			if err := n.start(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			if err := n.waitReady(startWait); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			fmt.Fprintln(w, "ready")
		}
	})
	mux.HandleFunc("GET /nodes/{i}/connections", func(w http.ResponseWriter, r *http.Request) {
		if n := node(w, r); n != nil {
			v, err := n.metric("pm_connections")
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, strings.TrimSuffix(strconv.FormatFloat(v, 'f', -1, 64), ".0"))
		}
	})
	mux.HandleFunc("GET /tokens/{who}", func(w http.ResponseWriter, r *http.Request) {
		p := people[r.PathValue("who")]
		ttl, err := time.ParseDuration(r.URL.Query().Get("ttl"))
		if p == nil || err != nil || ttl <= 0 {
			http.Error(w, "want a seeded person and ?ttl=<duration>", http.StatusBadRequest)
			return
		}
		tok, err := client.NewTokenWithProfile(c.secret, tenant, uuid.MustParse(p.ID), ttl, pm.Profile{Name: p.Name, Email: p.Email})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, tok)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// startTokenEndpoint serves an identity service's token endpoint on
// loopback, as PM_BOARD_TOKEN_URL names one: GET /token answers a browser
// that holds the session cookie pm_session=<who's id> with a 20-second
// token of who, as JSON {"token": …}, with CORS for credentialed requests
// from loopback origins; anyone else gets 401. It returns the endpoint's
// URL.
func startTokenEndpoint(t *testing.T, c *cluster, tenant string, who *browserUser) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /token", func(w http.ResponseWriter, r *http.Request) {
		if origin := r.Header.Get("Origin"); strings.HasPrefix(origin, "http://127.0.0.1:") {
			w.Header().Set("Access-Control-Allow-Origin", origin)
			w.Header().Set("Access-Control-Allow-Credentials", "true")
			w.Header().Set("Vary", "Origin")
		}
		if cookie, err := r.Cookie("pm_session"); err != nil || cookie.Value != who.ID {
			http.Error(w, `{"error":"login_required"}`, http.StatusUnauthorized)
			return
		}
		tok, err := client.NewTokenWithProfile(c.secret, tenant, uuid.MustParse(who.ID), 20*time.Second, pm.Profile{Name: who.Name, Email: who.Email})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(map[string]string{"token": tok})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String() + "/token"
}
