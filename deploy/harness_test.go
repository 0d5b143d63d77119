package deploy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pmhq/pm/repo/repotest"
)

// Deadlines of the harness: generous, since other tests share the machine;
// every wait ends as soon as its condition holds.
const (
	startWait = 60 * time.Second // a node serves (migrations included)
	stopWait  = 30 * time.Second // a node exits after SIGTERM
)

// repoRoot is the pm module's directory, where the Dockerfile is.
const repoRoot = ".."

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "deploy: goroutines left behind:", err)
			code = 1
		}
	}
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// The pm-node binary of the tests, built once per test binary with the
// Dockerfile's own build command (image_test.go): the manifests are checked
// against the binary the image ships.
var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// nodeBinary returns the path of pm-node built as the Dockerfile builds it.
func nodeBinary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		df, err := parseDockerfile(filepath.Join(repoRoot, "Dockerfile"))
		if err != nil {
			buildErr = err
			return
		}
		// World-readable: the image test runs the binary as the
		// Dockerfile's unprivileged user.
		if binDir, err = os.MkdirTemp("", "pm-deploy-"); err != nil {
			buildErr = err
			return
		}
		if err = os.Chmod(binDir, 0o755); err != nil {
			buildErr = err
			return
		}
		// The build sees what docker would send: the repository minus
		// .dockerignore.
		ctxDir := filepath.Join(binDir, "context")
		if buildErr = copyBuildContext(repoRoot, ctxDir); buildErr != nil {
			return
		}
		binPath, buildErr = df.build(ctxDir, binDir)
	})
	if buildErr != nil {
		tb.Fatalf("build pm-node with the Dockerfile's command: %v", buildErr)
	}
	return binPath
}

// flagEnvs returns every PM_* variable the binary reads, from its own
// `pm-node -h`, which names each flag's variable in parentheses.
func flagEnvs(tb testing.TB) map[string]bool {
	tb.Helper()
	out, err := exec.Command(nodeBinary(tb), "-h").CombinedOutput()
	if err != nil {
		tb.Fatalf("pm-node -h: %v\n%s", err, out)
	}
	envs := map[string]bool{}
	for _, m := range regexp.MustCompile(`\((PM_[A-Z0-9_]+)\)`).FindAllStringSubmatch(string(out), -1) {
		envs[m[1]] = true
	}
	for _, must := range []string{"PM_DATABASE_URL", "PM_REDIS_URL", "PM_JWT_SECRET", "PM_LISTEN_ADDR", "PM_ADMIN_ADDR", "PM_MIGRATE"} {
		if !envs[must] {
			tb.Fatalf("pm-node -h does not name %s; the output was:\n%s", must, out)
		}
	}
	return envs
}

// checkEnvNames fails for every PM_* name that the binary does not read.
func checkEnvNames(t *testing.T, where string, names []string, known map[string]bool) {
	t.Helper()
	for _, name := range names {
		if strings.HasPrefix(name, "PM_") && !known[name] {
			t.Errorf("%s sets %s, which pm-node does not read (pm-node -h)", where, name)
		}
	}
}

// redisURL is the Redis the tests use (PM_TEST_REDIS_URL, as the other
// packages' tests; default the local one). Each node gets a prefix of its
// own.
func redisURL() string {
	if u := os.Getenv("PM_TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// testEnv is what every node of a test needs besides its settings under
// test: a fresh database (as the application role), Redis with a private
// prefix, a JWT secret.
func testEnv(t *testing.T) map[string]string {
	t.Helper()
	return map[string]string{
		"PM_DATABASE_URL": repotest.MustDatabaseURL(t),
		"PM_REDIS_URL":    redisURL(),
		"PM_REDIS_PREFIX": "pmdeploy-" + randomHex(6) + ":",
		"PM_JWT_SECRET":   randomHex(16),
		"PM_LOG_FORMAT":   "text",
	}
}

// syncBuffer is a process's output, written by exec's copier goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// process is a started pm-node.
type process struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
	err    error // set before exited closes
}

// startProcess starts bin with args and env only (no PM_* setting of the
// test's own environment leaks in), as cred's user if cred is not nil. It
// is stopped with SIGTERM when the test ends, and must exit cleanly then.
func startProcess(t *testing.T, bin string, env map[string]string, cred *syscall.Credential, args ...string) *process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = "/"
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PM_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &process{cmd: cmd, out: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.WaitDelay = 5 * time.Second
	// The kernel kills the node if the test binary dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: cred}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		if err := p.stop(); err != nil {
			t.Errorf("pm-node did not stop cleanly: %v\n%s", err, p.out)
		}
	})
	return p
}

// stop sends SIGTERM and waits for the exit; it kills the process when the
// wait runs out.
func (p *process) stop() error {
	select {
	case <-p.exited:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.err
	case <-time.After(stopWait):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("still running %v after SIGTERM: killed", stopWait)
	}
}

// wait waits for the process to exit on its own, for one-shot commands.
func (p *process) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("still running after %v:\n%s", timeout, p.out)
		return nil
	}
}

// servingLine is the node's log line with its bound addresses.
var servingLine = regexp.MustCompile(`msg=serving .*listen_addr=(\S+) admin_addr=(\S+)`)

// waitServing waits until the node logs its addresses and its /readyz says
// 200, and returns the client and admin addresses.
func (p *process) waitServing(t *testing.T) (listen, admin string) {
	t.Helper()
	err := poll(startWait, func() bool {
		select {
		case <-p.exited:
			return true
		default:
		}
		m := servingLine.FindStringSubmatch(p.out.String())
		if m == nil {
			return false
		}
		listen, admin = m[1], m[2]
		status, _, _ := httpGet("http://" + admin + "/readyz")
		return status == http.StatusOK
	})
	select {
	case <-p.exited:
		t.Fatalf("pm-node exited at start (%v):\n%s", p.err, p.out)
	default:
	}
	if err != nil {
		t.Fatalf("pm-node not ready: %v\n%s", err, p.out)
	}
	return listen, admin
}

// httpGet returns the status and body of a GET, without keeping the
// connection.
func httpGet(url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// poll calls cond every 20ms until it holds (nil) or timeout passes.
func poll(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("condition not met within %v", timeout)
		}
		<-tick.C
	}
	return nil
}

// portOf returns the port of a listen address such as ":8080".
func portOf(t *testing.T, what, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" || port == "0" {
		t.Fatalf("%s: %q is not an address with a fixed port", what, addr)
	}
	return port
}

// sortedKeys returns m's keys in order, for stable messages.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
