package pubsub

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/pmhq/pm"
)

// MustCluster starts a throwaway single-node Redis Cluster owning every slot
// and returns its address; it is stopped at cleanup. Without redis-server
// on PATH the test is skipped, or fails under CI.
func MustCluster(tb testing.TB) string {
	tb.Helper()
	return MustClusterNodes(tb, 1)[0]
}

// MustClusterNodes starts a throwaway Redis Cluster of n masters, the slots
// split evenly in order, and returns their addresses.
func MustClusterNodes(tb testing.TB, n int) []string {
	tb.Helper()
	addrs := make([]string, n)
	clients := make([]*redis.Client, n)
	for i := range n {
		addrs[i] = startRedis(tb, "--cluster-enabled", "yes", "--cluster-node-timeout", "2000")
		clients[i] = redis.NewClient(&redis.Options{Addr: addrs[i]})
		defer clients[i].Close()
	}
	ctx := context.Background()
	for i, c := range clients {
		lo, hi := i*16384/n, (i+1)*16384/n-1
		if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err(); err != nil {
			tb.Fatalf("CLUSTER ADDSLOTSRANGE: %v", err)
		}
		if i > 0 {
			host, port, _ := net.SplitHostPort(addrs[i])
			if err := clients[0].ClusterMeet(ctx, host, port).Err(); err != nil {
				tb.Fatalf("CLUSTER MEET: %v", err)
			}
		}
	}
	for _, c := range clients {
		waitFor(tb, "cluster_state:ok", func() bool {
			info, err := c.ClusterInfo(ctx).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok") &&
				strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(n)+"\r")
		})
	}
	return addrs
}

// startRedis starts a redis-server with args on a free port and returns its
// address; it is stopped at cleanup. Without redis-server on PATH the test
// is skipped, or fails under CI (see missing).
func startRedis(tb testing.TB, args ...string) string {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		missing(tb, "sharded mode needs redis-server on PATH to start a throwaway Redis Cluster (`make services` installs it)")
	}
	port := freePort(tb)
	dir := tb.TempDir()
	cmd := exec.Command(bin, append([]string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
		"--save", "", "--appendonly", "no", "--dir", dir,
	}, args...)...)
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start redis-server: %v", err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	waitFor(tb, "redis-server to answer", func() bool { return c.Ping(context.Background()).Err() == nil })
	return addr
}

// freePort finds a port whose cluster bus port (+10000) is free as well.
func freePort(tb testing.TB) int {
	tb.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		if port+10000 > 65535 {
			continue
		}
		bus, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
		if err != nil {
			continue
		}
		_ = bus.Close()
		return port
	}
	tb.Fatal("no free port pair for a Redis Cluster node")
	return 0
}

func mustClusterClient(tb testing.TB, addr string) *redis.ClusterClient {
	tb.Helper()
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{addr}, ContextTimeoutEnabled: true})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

func TestSharded(t *testing.T) {
	addr := MustCluster(t)
	admin := redis.NewClient(&redis.Options{Addr: addr})
	defer admin.Close()
	ctx := context.Background()
	prefix := MustPrefix(t)
	a := MustHub(t, HubConfig{Redis: mustClusterClient(t, addr), Prefix: prefix, Sharded: true})
	b := MustHub(t, HubConfig{Redis: mustClusterClient(t, addr), Prefix: prefix, Sharded: true})

	// Several projects, so that their channels span slots.
	keys := make([]pm.ProjectKey, 4)
	slots := make(map[int]bool)
	for i := range keys {
		keys[i] = newKey()
		name := a.channel(keys[i])
		want, err := admin.ClusterKeySlot(ctx, name).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := slot(name); int64(got) != want {
			t.Fatalf("slot(%q) = %d, Redis says %d", name, got, want)
		}
		slots[slot(name)] = true
	}
	if len(slots) < 2 {
		t.Fatalf("test channels share a slot; want several")
	}
	author := newRecorder(uuid.New())
	neighbours := make([]*recorder, len(keys))
	remotes := make([]*recorder, len(keys))
	for i, k := range keys {
		neighbours[i], remotes[i] = newRecorder(uuid.New()), newRecorder(uuid.New())
		subscribe(t, a, k, author)
		subscribe(t, a, k, neighbours[i])
		subscribe(t, b, k, remotes[i])
	}
	got, err := admin.PubSubShardChannels(ctx, prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(keys) {
		t.Fatalf("shard channels %q, want %d", got, len(keys))
	}

	publishAll := func(frame string) {
		t.Helper()
		for i, k := range keys {
			if err := a.Publish(ctx, k, int64(i+1), author.id, []byte(frame+k.String()), time.Time{}); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, frame+" everywhere", func() bool {
			for i, k := range keys {
				if !neighbours[i].has(frame+k.String()) || !remotes[i].has(frame+k.String()) {
					return false
				}
			}
			return true
		})
	}
	publishAll("before")
	if fs := author.Frames(); len(fs) != 0 {
		t.Errorf("the author got its own events: %q", fs)
	}

	// go-redis resubscribes all of b's shard channels in one SSUBSCRIBE,
	// which the cluster refuses (CROSSSLOT); the hub resubscribes per slot.
	if err := admin.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "resync notices", func() bool {
		for i, k := range keys {
			if !remotes[i].resynced(k.Project, ReasonRedisReconnected) || !neighbours[i].resynced(k.Project, ReasonRedisReconnected) {
				return false
			}
		}
		return true
	})
	publishAll("after")

	// The last local subscriber leaves: the channel goes, and so does the
	// shard connection once it carries nothing.
	for i, k := range keys {
		b.Unsubscribe(k, remotes[i])
	}
	waitFor(t, "b's shard connection to close", func() bool {
		b.mu.RLock()
		defer b.mu.RUnlock()
		return len(b.conns) == 0 && len(b.topics) == 0
	})
	waitFor(t, "only a's subscriptions left", func() bool {
		n, err := admin.Do(ctx, "PUBSUB", "SHARDNUMSUB", a.channel(keys[0])).Slice()
		return err == nil && len(n) == 2 && n[1] == int64(1)
	})
	if !slices.ContainsFunc(keys, func(k pm.ProjectKey) bool { return a.lookup(a.channel(k)) != nil }) {
		t.Error("a lost its topics")
	}
}

func TestShardedStandalone(t *testing.T) {
	// Sharded pub/sub also works on a Redis that is no cluster, over one
	// connection.
	addr := startRedis(t)
	prefix := MustPrefix(t)
	client := func() *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	a := MustHub(t, HubConfig{Redis: client(), Prefix: prefix, Sharded: true})
	b := MustHub(t, HubConfig{Redis: client(), Prefix: prefix, Sharded: true})
	k1, k2 := newKey(), newKey()
	s1, s2 := newRecorder(uuid.New()), newRecorder(uuid.New())
	subscribe(t, b, k1, s1)
	subscribe(t, b, k2, s2)
	for _, k := range []pm.ProjectKey{k1, k2} {
		if err := a.Publish(context.Background(), k, 1, "", []byte(k.String()), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "both events", func() bool { return s1.has(k1.String()) && s2.has(k2.String()) })
	b.mu.RLock()
	defer b.mu.RUnlock()
	if len(b.conns) != 1 {
		t.Errorf("%d subscriber connections, want 1", len(b.conns))
	}
}

func TestShardedSlotMigration(t *testing.T) {
	addrs := MustClusterNodes(t, 2)
	ctx := context.Background()
	src := redis.NewClient(&redis.Options{Addr: addrs[0]})
	defer src.Close()
	dst := redis.NewClient(&redis.Options{Addr: addrs[1]})
	defer dst.Close()
	srcID, err := src.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		t.Fatal(err)
	}
	dstID, err := dst.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		t.Fatal(err)
	}

	prefix := MustPrefix(t)
	h := MustHub(t, HubConfig{Redis: mustClusterClient(t, addrs[0]), Prefix: prefix, Sharded: true})
	pub := MustHub(t, HubConfig{Redis: mustClusterClient(t, addrs[1]), Prefix: prefix, Sharded: true})
	// A project whose channel lives on the first master, and one that stays.
	var moving, staying pm.ProjectKey
	for moving.Tenant == "" || staying.Tenant == "" {
		k := newKey()
		switch s := slot(h.channel(k)); {
		case s < 8192 && moving.Tenant == "":
			moving = k
		case s < 8192 && slot(h.channel(k)) != slot(h.channel(moving)):
			staying = k
		}
	}
	sm, ss := newRecorder(uuid.New()), newRecorder(uuid.New())
	subscribe(t, h, moving, sm)
	subscribe(t, h, staying, ss)

	// Move the slot (it holds no keys) to the second master.
	s := slot(h.channel(moving))
	for _, step := range []struct {
		c    *redis.Client
		args []any
	}{
		{dst, []any{"CLUSTER", "SETSLOT", s, "IMPORTING", srcID}},
		{src, []any{"CLUSTER", "SETSLOT", s, "MIGRATING", dstID}},
		{dst, []any{"CLUSTER", "SETSLOT", s, "NODE", dstID}},
		{src, []any{"CLUSTER", "SETSLOT", s, "NODE", dstID}},
	} {
		if err := step.c.Do(ctx, step.args...).Err(); err != nil {
			t.Fatalf("%v: %v", step.args, err)
		}
	}
	waitFor(t, "the moved channel's resync notice", func() bool {
		return sm.resynced(moving.Project, ReasonRedisReconnected)
	})
	waitFor(t, "the channel on its new master", func() bool {
		n, err := dst.Do(ctx, "PUBSUB", "SHARDNUMSUB", h.channel(moving)).Slice()
		return err == nil && len(n) == 2 && n[1] == int64(1)
	})
	for _, k := range []pm.ProjectKey{moving, staying} {
		if err := pub.Publish(ctx, k, 1, "", []byte(k.String()), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "events after the move", func() bool { return sm.has(moving.String()) && ss.has(staying.String()) })
	if got := ss.Resyncs(); len(got) != 0 {
		t.Errorf("the project that stayed was told to resync: %v", got)
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if len(h.conns) != 2 {
		t.Errorf("%d shard connections, want one per master", len(h.conns))
	}
}

// missing ends a test that cannot run here, for the reason why (a program
// that is not installed): it skips, saying why, except under CI (CI set, as
// .ci/run sets it), where it fails, so that CI never passes by skipping
// what it should check.
func missing(tb testing.TB, why string) {
	tb.Helper()
	if os.Getenv("CI") != "" {
		tb.Fatalf("%s (CI is set: a missing dependency fails the test instead of skipping it)", why)
	}
	tb.Skip(why)
}

// Without redis-server the sharded tests cannot run: outside CI they skip
// and say why; under CI they fail.
func TestShardedWithoutRedisServer(t *testing.T) {
	if os.Getenv("PM_TEST_CHILD") != "" {
		t.Skip("in the child process")
	}
	for _, tt := range []struct{ ci, want string }{{"", "--- SKIP: TestSharded "}, {"true", "--- FAIL: TestSharded "}} {
		t.Run("CI="+tt.ci, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestSharded$", "-test.v", "-test.count=1")
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "CI=") {
					cmd.Env = append(cmd.Env, kv)
				}
			}
			cmd.Env = append(cmd.Env, "PATH="+t.TempDir(), "CI="+tt.ci, "PM_TEST_CHILD=1")
			out, err := cmd.CombinedOutput()
			if !strings.Contains(string(out), tt.want) || !strings.Contains(string(out), "redis-server") || (err != nil) != (tt.ci != "") {
				t.Fatalf("want %q saying why, and failure only under CI; got %v:\n%s", tt.want, err, out)
			}
		})
	}
}
