package e2e

import (
	"bufio"
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
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pmhq/pm/repo/repotest"
)

// Deadlines of the harness. Generous: `make test` runs other packages'
// tests beside these on a small machine; waits end as soon as the
// condition holds.
const (
	startWait = 60 * time.Second // a process becomes ready (migrations included)
	stopWait  = 20 * time.Second // a process exits after SIGTERM
)

// options configures a cluster. Zero values are fine.
type options struct {
	// nodes is how many pm-node processes to start. Default 2.
	nodes int
	// headCheck is PM_HEAD_CHECK_INTERVAL; zero keeps the node's default.
	headCheck time.Duration
	// lb starts HAProxy in front of the nodes when haproxy is on PATH.
	lb bool
	// env holds more PM_* settings for every node ("PM_LOG_LEVEL=debug").
	env []string
}

// cluster is a running pm cluster of one test: N pm-node processes sharing
// a fresh database and a private redis-server, optionally behind HAProxy.
type cluster struct {
	t       *testing.T
	opts    options
	dbURL   string        // the application role's DSN
	admin   *pgxpool.Pool // superuser pool on the same database, for reading the truth
	secret  []byte        // PM_JWT_SECRET
	prefix  string        // PM_REDIS_PREFIX
	redis   *redisServer
	nodes   []*node
	lb      *haproxy // nil without HAProxy
	lbNote  string   // why there is no HAProxy
	started time.Time
}

// startCluster starts a cluster and stops everything when the test ends.
// All nodes start at once against the empty database, so their migrations
// race for the lock every time.
func startCluster(t *testing.T, opts options) *cluster {
	t.Helper()
	if opts.nodes == 0 {
		opts.nodes = 2
	}
	c := &cluster{t: t, opts: opts, started: time.Now()}
	if opts.lb {
		// Outside CI the cluster runs without HAProxy then; under CI the test fails.
		if c.lbNote = haproxyMissing(); c.lbNote != "" && underCI() {
			missing(t, c.lbNote)
		}
	}
	c.dbURL = repotest.MustDatabaseURL(t)
	c.secret = []byte(randomHex(16))
	c.prefix = "pme2e-" + randomHex(6) + ":"
	c.admin = repotest.MustPool(t, repotest.AdminDatabaseURL(t, c.dbURL))
	c.redis = startRedis(t)
	for i := range opts.nodes {
		c.nodes = append(c.nodes, &node{c: c, id: fmt.Sprintf("node-%d", i+1), out: &logBuffer{}})
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs()
		}
	})
	// Registered before the nodes start, so that it runs after any other
	// cleanup of the test (clients first).
	t.Cleanup(c.stopNodes)
	for _, n := range c.nodes {
		if err := n.start(); err != nil {
			t.Fatalf("e2e: %v", err)
		}
	}
	for _, n := range c.nodes {
		if err := n.waitReady(startWait); err != nil {
			t.Fatalf("e2e: %v\n%s", err, n.out.tail(40))
		}
	}
	if opts.lb {
		if c.lbNote != "" {
			t.Logf("e2e: %s; running against the nodes directly", c.lbNote)
		} else {
			c.lb = startHAProxy(t, c)
		}
	}
	behind := ""
	if c.lb != nil {
		behind = " behind HAProxy"
	}
	t.Logf("e2e: %d node(s)%s up in %v", len(c.nodes), behind, time.Since(c.started).Round(time.Millisecond))
	return c
}

// URL is where clients connect: HAProxy, or node 1 without it.
func (c *cluster) URL() string {
	if c.lb != nil {
		return c.lb.URL()
	}
	return c.nodes[0].URL()
}

// stopNodes stops every node still running, gracefully.
func (c *cluster) stopNodes() {
	for _, n := range c.nodes {
		start := time.Now()
		n.stop()
		if d := time.Since(start); d > 2*time.Second {
			c.t.Logf("e2e: %s took %v to stop", n.id, d.Round(time.Millisecond))
		}
	}
}

// dumpLogs prints the end of every process's output.
func (c *cluster) dumpLogs() {
	for _, n := range c.nodes {
		c.t.Logf("=== %s (last lines) ===\n%s", n.id, n.out.tail(60))
	}
	c.t.Logf("=== redis-server (last lines) ===\n%s", c.redis.out.tail(20))
	if c.lb != nil {
		c.t.Logf("=== haproxy (last lines) ===\n%s", c.lb.out.tail(30))
	}
}

// ---------------------------------------------------------------- nodes

// node is one pm-node process. Its ports are chosen by the kernel at the
// first start and kept across restarts (HAProxy's server lines name them).
type node struct {
	c      *cluster
	id     string
	out    *logBuffer
	proc   *proc
	listen string   // host:port of /ws
	admin  string   // host:port of /readyz, /metrics
	offset int      // out's length at the last start
	env    []string // more PM_* settings of this node alone
}

var servingLine = regexp.MustCompile(`msg=serving .*listen_addr=(\S+) admin_addr=(\S+)`)

// start starts the process; waitReady waits for it to serve.
func (n *node) start() error {
	c := n.c
	listen, admin := n.listen, n.admin
	if listen == "" {
		listen, admin = "127.0.0.1:0", "127.0.0.1:0"
	}
	env := []string{
		"PM_DATABASE_URL=" + c.dbURL,
		"PM_REDIS_URL=" + c.redis.URL(),
		"PM_REDIS_PREFIX=" + c.prefix,
		"PM_JWT_SECRET=" + string(c.secret),
		"PM_LISTEN_ADDR=" + listen,
		"PM_ADMIN_ADDR=" + admin,
		// No PM_NODE_ID, as the README starts nodes: every node of the
		// suite runs on this host under the same default name.
		"PM_MIGRATE=true",
		"PM_LOG_FORMAT=text",
		"PM_SHUTDOWN_TIMEOUT=5s",
		// A race-enabled node would otherwise sleep a second at exit.
		"GORACE=atexit_sleep_ms=0",
	}
	if c.opts.headCheck != 0 {
		env = append(env, "PM_HEAD_CHECK_INTERVAL="+c.opts.headCheck.String())
	}
	env = append(env, c.opts.env...)
	env = append(env, n.env...)
	n.offset = n.out.Len()
	n.out.mark("starting %s", n.id)
	p, err := startProc(n.id, n.out, env, nodeBin)
	if err != nil {
		return err
	}
	n.proc = p
	return nil
}

// waitReady waits until the node has logged its addresses and answers
// /readyz with 200.
func (n *node) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var status int
	err := poll(timeout, func() bool {
		if !n.proc.running() {
			return true
		}
		m := servingLine.FindStringSubmatch(n.out.since(n.offset))
		if m == nil {
			return false
		}
		n.listen, n.admin = m[1], m[2]
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		status, _, _ = httpGet(ctx, "http://"+n.admin+"/readyz")
		return status == http.StatusOK
	})
	if !n.proc.running() {
		return fmt.Errorf("%s exited at start (%v)", n.id, n.proc.err)
	}
	if err != nil {
		return fmt.Errorf("%s not ready (last /readyz status %d): %w", n.id, status, err)
	}
	return nil
}

// URL is the node's WebSocket endpoint.
func (n *node) URL() string { return "ws://" + n.listen + "/ws" }

// stop stops the node gracefully (SIGTERM: it closes its clients with
// 1001) and checks that it exited cleanly and without data races.
func (n *node) stop() {
	if n.proc == nil || !n.proc.running() {
		n.checkLog()
		return
	}
	t := n.c.t
	err := n.proc.signal(syscall.SIGTERM, stopWait)
	n.out.mark("%s stopped: %v", n.id, err)
	if err != nil {
		t.Errorf("e2e: %s did not stop cleanly: %v\n%s", n.id, err, n.out.tail(30))
	}
	n.checkLog()
}

// kill ends the node with SIGKILL, as a crash would.
func (n *node) kill() {
	_ = n.proc.signal(syscall.SIGKILL, stopWait)
	n.out.mark("%s killed", n.id)
}

// restart starts a stopped node again on the same ports.
func (n *node) restart() {
	t := n.c.t
	t.Helper()
	if n.proc.running() {
		t.Fatalf("e2e: restart %s: still running", n.id)
	}
	if err := n.start(); err != nil {
		t.Fatalf("e2e: %v", err)
	}
	if err := n.waitReady(startWait); err != nil {
		t.Fatalf("e2e: %v\n%s", err, n.out.tail(40))
	}
}

// checkLog fails the test if the node reported a data race or a panic.
func (n *node) checkLog() {
	out := n.out.String()
	for _, bad := range []string{"WARNING: DATA RACE", "panic:", "fatal error:"} {
		if i := strings.Index(out, bad); i >= 0 {
			end := min(len(out), i+4000)
			n.c.t.Errorf("e2e: %s reported %q:\n%s", n.id, bad, out[i:end])
			return
		}
	}
}

// metric returns the value of an unlabelled metric on the node's /metrics.
func (n *node) metric(name string) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	status, body, err := httpGet(ctx, "http://"+n.admin+"/metrics")
	if err != nil {
		return 0, err
	}
	if status != http.StatusOK {
		return 0, fmt.Errorf("/metrics: HTTP %d", status)
	}
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("metric %s not found", name)
}

// ---------------------------------------------------------------- Redis

// redisServer is a private redis-server, so that tests can stop and
// restart it without disturbing anything else that uses Redis.
type redisServer struct {
	t    *testing.T
	bin  string
	port int
	dir  string
	out  *logBuffer
	proc *proc
}

func startRedis(t *testing.T) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("e2e: redis-server is not on PATH: install and start the services with `make services`")
	}
	r := &redisServer{t: t, bin: bin, dir: t.TempDir(), out: &logBuffer{}}
	t.Cleanup(r.stop)
	// A free port may be taken before redis-server binds it: try a few.
	for attempt := 0; ; attempt++ {
		r.port = freePort(t)
		err := r.start()
		if err == nil {
			return r
		}
		if attempt == 4 {
			t.Fatalf("e2e: %v\n%s", err, r.out.tail(20))
		}
	}
}

// URL is the nodes' PM_REDIS_URL.
func (r *redisServer) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

// start starts redis-server on r.port and waits until it answers PING.
func (r *redisServer) start() error {
	r.out.mark("starting redis-server on port %d", r.port)
	p, err := startProc("redis-server", r.out, nil, r.bin,
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--protected-mode", "no")
	if err != nil {
		return err
	}
	r.proc = p
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
	err = poll(startWait, func() bool { return !p.running() || redisPing(addr) })
	if !p.running() {
		return fmt.Errorf("redis-server on port %d exited at start (%v)", r.port, p.err)
	}
	return err
}

// stop stops redis-server (SIGTERM, no save).
func (r *redisServer) stop() {
	if r.proc == nil || !r.proc.running() {
		return
	}
	if err := r.proc.signal(syscall.SIGTERM, stopWait); err != nil {
		r.t.Logf("e2e: redis-server stopped: %v", err)
	}
	r.out.mark("redis-server stopped")
}

// redisPing reports whether a Redis at addr answers PING.
func redisPing(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(conn, "PING\r\n"); err != nil {
		return false
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// ---------------------------------------------------------------- HAProxy

// underCI reports whether the tests run in CI (CI set, as .ci/run sets it).
func underCI() bool { return os.Getenv("CI") != "" }

// missing ends a test that cannot run here, for the reason why (a program
// that is not installed): it skips, saying why, except under CI, where it
// fails, so that CI never passes by skipping what it should check.
func missing(tb testing.TB, why string) {
	tb.Helper()
	if underCI() {
		tb.Fatalf("e2e: %s (CI is set: a missing dependency fails the test instead of skipping it)", why)
	}
	tb.Skip(why)
}

// haproxyMissing says why HAProxy cannot run here, or "" when it can.
func haproxyMissing() string {
	if _, err := exec.LookPath("haproxy"); err != nil {
		return "HAProxy was not found: haproxy is not on PATH (`make services` installs it, as root)"
	}
	return ""
}

// haproxy is HAProxy in front of the cluster's nodes, configured from
// deploy/haproxy.cfg with this cluster's server lines and fast health
// checks.
type haproxy struct {
	c     *cluster
	addr  string // frontend host:port
	stats string // stats host:port
	out   *logBuffer
	proc  *proc
}

// The deployed health-check timing (seconds) is replaced by one that
// notices a dead node in a fraction of a second.
var defaultServerLine = regexp.MustCompile(`(?m)^(\s*)default-server .*$`)

func startHAProxy(t *testing.T, c *cluster) *haproxy {
	t.Helper()
	tmpl, err := os.ReadFile(filepath.Join("..", "deploy", "haproxy.cfg"))
	if err != nil {
		t.Fatalf("e2e: read the HAProxy configuration: %v", err)
	}
	cfg, err := renderHAProxy(string(tmpl), c.nodes)
	if err != nil {
		t.Fatalf("e2e: deploy/haproxy.cfg: %v", err)
	}
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	lb := &haproxy{c: c, out: &logBuffer{}}
	t.Cleanup(lb.stop)
	for attempt := 0; ; attempt++ {
		lb.addr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		lb.stats = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		err := lb.start(path)
		if err == nil {
			return lb
		}
		if attempt == 4 {
			t.Fatalf("e2e: %v\n%s", err, lb.out.tail(30))
		}
		lb.stop()
	}
}

// renderHAProxy puts one server line per node between the markers of
// deploy/haproxy.cfg, as scripts/run.sh does, and shortens the health
// checks (a check every 200ms, down after one failure, up after one
// success).
func renderHAProxy(tmpl string, nodes []*node) (string, error) {
	const begin, end = "# BEGIN pm_nodes servers", "# END pm_nodes servers"
	i, j := strings.Index(tmpl, begin), strings.Index(tmpl, end)
	if i < 0 || j < i {
		return "", fmt.Errorf("markers %q … %q not found", begin, end)
	}
	var servers strings.Builder
	for _, n := range nodes {
		_, adminPort, _ := net.SplitHostPort(n.admin)
		fmt.Fprintf(&servers, "    server %s %s check port %s\n", n.id, n.listen, adminPort)
	}
	lineEnd := strings.IndexByte(tmpl[i:], '\n')
	out := tmpl[:i+lineEnd+1] + servers.String() + "    " + tmpl[j:]
	if !defaultServerLine.MatchString(out) {
		return "", fmt.Errorf("no default-server line to speed up the health checks")
	}
	// A check may take longer than the interval on a loaded machine; a dead
	// node refuses the check's connection at once anyway.
	out = defaultServerLine.ReplaceAllString(out, "${1}timeout check 2s\n${1}default-server inter 200ms fall 1 rise 1")
	return out, nil
}

// start runs haproxy in the foreground and waits until every node is UP in
// its backend.
func (lb *haproxy) start(cfg string) error {
	lb.out.mark("starting haproxy on %s", lb.addr)
	p, err := startProc("haproxy", lb.out, []string{"PM_LB_ADDR=" + lb.addr, "PM_LB_STATS_ADDR=" + lb.stats},
		"haproxy", "-db", "-f", cfg)
	if err != nil {
		return err
	}
	lb.proc = p
	err = poll(startWait, func() bool { return !p.running() || lb.allUp() })
	if !p.running() {
		return fmt.Errorf("haproxy exited at start (%v)", p.err)
	}
	return err
}

func (lb *haproxy) stop() {
	if lb.proc != nil && lb.proc.running() {
		_ = lb.proc.signal(syscall.SIGTERM, stopWait)
	}
}

// URL is the WebSocket endpoint through HAProxy.
func (lb *haproxy) URL() string { return "ws://" + lb.addr + "/ws" }

// serverStatus returns the status HAProxy's stats give each node
// ("UP", "DOWN", …).
func (lb *haproxy) serverStatus() (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	status, body, err := httpGet(ctx, "http://"+lb.stats+"/;csv")
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("stats: HTTP %d", status)
	}
	lines := strings.Split(body, "\n")
	header := strings.Split(strings.TrimPrefix(lines[0], "# "), ",")
	col := map[string]int{}
	for i, h := range header {
		col[h] = i
	}
	out := map[string]string{}
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if len(f) > col["status"] && f[col["pxname"]] == "pm_nodes" && strings.HasPrefix(f[col["svname"]], "node-") {
			out[f[col["svname"]]] = f[col["status"]]
		}
	}
	return out, nil
}

// allUp reports whether HAProxy sees every running node UP.
func (lb *haproxy) allUp() bool {
	st, err := lb.serverStatus()
	if err != nil {
		return false
	}
	for _, n := range lb.c.nodes {
		if n.proc.running() && !strings.HasPrefix(st[n.id], "UP") {
			return false
		}
	}
	return true
}

// ---------------------------------------------------------------- helpers

// httpGet GETs url without keeping connections (nothing outlives the call).
func httpGet(ctx context.Context, url string) (status int, body string, err error) {
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// do sends one command to the cluster's Redis and returns its one-line
// reply ("+OK", "-ERR …", ":1"), for tests that reconfigure Redis.
func (r *redisServer) do(args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)), time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}
