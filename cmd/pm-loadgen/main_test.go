package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pmhq/pm/node"
	"github.com/pmhq/pm/node/nodetest"
)

func TestCheckLoopback(t *testing.T) {
	for _, u := range []string{
		"ws://127.0.0.1:8080/ws", "ws://127.1.2.3/ws", "ws://localhost:8080/ws", "ws://LOCALHOST/ws",
		"ws://[::1]:8080/ws", "wss://127.0.0.1/ws",
	} {
		if err := checkLoopback(u); err != nil {
			t.Errorf("%s refused: %v", u, err)
		}
	}
	for _, u := range []string{
		"ws://10.0.0.1:8080/ws", "ws://192.168.1.5/ws", "ws://example.com/ws", "ws://localhost.example.com/ws",
		"ws://[::2]/ws", "ws://0.0.0.0/ws", "ws://128.0.0.1/ws", "http://127.0.0.1/ws", "127.0.0.1:8080", "ws:///ws",
	} {
		if err := checkLoopback(u); err == nil {
			t.Errorf("%s accepted", u)
		}
	}
}

// runCmd runs pm-loadgen with env as its environment.
func runCmd(ctx context.Context, env map[string]string, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(ctx, args, func(k string) string { return env[k] }, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestRefusesARemoteTarget(t *testing.T) {
	code, _, stderr := runCmd(t.Context(), map[string]string{"PM_JWT_SECRET": "s"}, "-url", "ws://127.0.0.1:1/ws,ws://203.0.113.7:8080/ws")
	if code != 2 || !strings.Contains(stderr, "only loads this machine") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runCmd(t.Context(), map[string]string{"PM_JWT_SECRET": "s", "PM_LOADGEN_URL": "ws://pm.example.com/ws"})
	if code != 2 || !strings.Contains(stderr, "only loads this machine") {
		t.Fatalf("from the environment: exit %d, stderr %q", code, stderr)
	}
}

func TestParseFlags(t *testing.T) {
	parse := func(env map[string]string, args ...string) (config, error) {
		var stderr bytes.Buffer
		return parseFlags(args, func(k string) string { return env[k] }, &stderr)
	}
	cfg, err := parse(map[string]string{"PM_JWT_SECRET": "s"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.rate != 100 || cfg.inflight != 0 || cfg.duration != 10*time.Second || cfg.conns != 100 || cfg.writers != 2 ||
		cfg.projects != 1 || cfg.mix != (mix{Update: 100}) || cfg.secret != "s" || len(cfg.urls) != 1 ||
		cfg.target != targetPM || cfg.urls[0] != "ws://127.0.0.1:8080/ws" || cfg.hold != 0 || cfg.ready != "" {
		t.Fatalf("defaults: %+v", cfg)
	}
	// Slow subscribers: at most every subscriber, pm only.
	if cfg, err := parse(map[string]string{"PM_JWT_SECRET": "s"}, "-conns", "10", "-slow", "3", "-slow-delay", "5ms"); err != nil || cfg.slow != 3 || cfg.slowDelay != 5*time.Millisecond {
		t.Fatalf("-slow: %+v, %v", cfg, err)
	}
	for _, args := range [][]string{{"-conns", "2", "-slow", "3"}, {"-slow", "-1"}, {"-slow", "1", "-target", "centrifugo", "-secret", "c"}} {
		if _, err := parse(map[string]string{"PM_JWT_SECRET": "s"}, args...); err != errUsage {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	// Centrifugo: its own default URL, and no fallback to pm's secret.
	cfg, err = parse(map[string]string{"PM_LOADGEN_TARGET": "centrifugo", "PM_LOADGEN_SECRET": "c"})
	if err != nil || cfg.target != targetCentrifugo || cfg.urls[0] != "ws://127.0.0.1:8000/connection/websocket" ||
		cfg.secret != "c" || cfg.namespace != "loadgen" {
		t.Fatalf("centrifugo defaults: %+v, %v", cfg, err)
	}
	if _, err := parse(map[string]string{"PM_JWT_SECRET": "s"}, "-target", "centrifugo"); err != errUsage {
		t.Errorf("centrifugo with PM_JWT_SECRET only: %v, want a usage error", err)
	}
	// Idle: no writers, hold, ready file.
	cfg, err = parse(map[string]string{"PM_JWT_SECRET": "s", "PM_LOADGEN_HOLD": "20s", "PM_LOADGEN_READY_FILE": "r"}, "-writers", "0")
	if err != nil || cfg.writers != 0 || cfg.rate != 0 || cfg.inflight != 0 || cfg.hold != 20*time.Second || cfg.ready != "r" {
		t.Fatalf("idle: %+v, %v", cfg, err)
	}

	env := map[string]string{
		"PM_LOADGEN_URL": "ws://127.0.0.1:1/ws, ws://localhost:2/ws", "PM_LOADGEN_SECRET": "env-secret", "PM_JWT_SECRET": "other",
		"PM_LOADGEN_CONNS": "7", "PM_LOADGEN_PROJECTS": "3", "PM_LOADGEN_WRITERS": "4", "PM_LOADGEN_INFLIGHT": "5",
		"PM_LOADGEN_DURATION": "3s", "PM_LOADGEN_WARMUP": "0s", "PM_LOADGEN_MIX": "update=90,create=5,move=5",
		"PM_LOADGEN_JSON": "out.json",
	}
	cfg, err = parse(env)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.urls) != 2 || cfg.urls[1] != "ws://localhost:2/ws" || cfg.secret != "env-secret" || cfg.conns != 7 || cfg.projects != 3 ||
		cfg.writers != 4 || cfg.inflight != 5 || cfg.rate != 0 || cfg.duration != 3*time.Second || cfg.warmup != 0 ||
		cfg.mix != (mix{90, 5, 5}) || cfg.jsonFile != "out.json" {
		t.Fatalf("from the environment: %+v", cfg)
	}
	// Flags win over the environment.
	cfg, err = parse(env, "-conns", "9", "-secret", "flag-secret", "-inflight", "0", "-rate", "12.5")
	if err != nil || cfg.conns != 9 || cfg.secret != "flag-secret" || cfg.rate != 12.5 || cfg.inflight != 0 {
		t.Fatalf("flags: %+v, %v", cfg, err)
	}

	ok := map[string]string{"PM_JWT_SECRET": "s"}
	for _, bad := range [][]string{
		{"-rate", "10", "-inflight", "2"},
		{"-rate", "0"},
		{"-rate", "fast"},
		{"-inflight", "5"}, // more than writers×projects = 2
		{"-conns", "0"},
		{"-duration", "0s"},
		{"-duration", "2h"},
		{"-mix", "update=0"},
		{"-mix", "delete=5"},
		{"-mix", "update"},
		{"-url", ""},
		{"-url", "ws://192.0.2.1/ws"},
		{"-target", "nats"},
		{"-writers", "-1"},
		{"-writers", "0", "-rate", "10"},
		{"-writers", "0", "-inflight", "1"},
		{"-hold", "-1s"},
		{"-target", "centrifugo", "-namespace", "a:b"},
		{"extra"},
		{"-nope"},
	} {
		if _, err := parse(ok, bad...); err != errUsage {
			t.Errorf("%v: %v, want a usage error", bad, err)
		}
	}
	if _, err := parse(nil); err != errUsage {
		t.Errorf("no secret: %v, want a usage error", err)
	}
	if _, err := parse(map[string]string{"PM_JWT_SECRET": "s", "PM_LOADGEN_CONNS": "many"}); err != errUsage {
		t.Errorf("bad PM_LOADGEN_CONNS: %v, want a usage error", err)
	}
	// Help shows no secret from the environment.
	code, _, stderr := runCmd(t.Context(), map[string]string{"PM_JWT_SECRET": "hush", "PM_LOADGEN_SECRET": "hush"}, "-h")
	if code != 0 || !strings.Contains(stderr, "PM_LOADGEN_RATE") || strings.Contains(stderr, "hush") {
		t.Fatalf("-h: exit %d, stderr %q", code, stderr)
	}
}

func TestStamp(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	got, ok := parseStamp(stamp(at, 3))
	if !ok || got != at.UnixNano() {
		t.Fatalf("parseStamp(stamp) = %d, %v", got, ok)
	}
	for _, s := range []string{"", "hello", "pm-loadgen sent=x writer=1"} {
		if _, ok := parseStamp(s); ok {
			t.Errorf("parseStamp(%q) ok", s)
		}
	}
}

// TestLoad runs a tiny load against two real in-process nodes: every
// write reaches every subscriber, as an event, and nothing is lost. It
// asserts no latency figure, only that there are some.
func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Postgres and Redis")
	}
	// No per-connection rate limit: the closed loop writes as fast as the
	// nodes answer, which the default 50 requests/s would refuse.
	cl := nodetest.Start(t, nodetest.Options{Nodes: 2, Configure: func(cfg *node.Config) { cfg.RatePerSecond = -1 }})
	jsonFile := filepath.Join(t.TempDir(), "report.json")
	env := map[string]string{"PM_JWT_SECRET": string(cl.Secret)}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	code, stdout, stderr := runCmd(ctx, env,
		"-url", cl.Nodes[0].URL()+","+cl.Nodes[1].URL(),
		"-conns", "10", "-writers", "2", "-rate", "40", "-duration", "2s", "-warmup", "500ms",
		"-mix", "update=80,create=10,move=10", "-json", jsonFile)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout, stderr)
	b, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Writes == 0 || r.Deliveries != r.Writes*10 || r.ExpectedDeliveries != r.Deliveries {
		t.Errorf("writes %d, deliveries %d (expected %d), want deliveries = writes × 10", r.Writes, r.Deliveries, r.ExpectedDeliveries)
	}
	if r.Losses != 0 || r.SubscribersLosing != 0 || r.RevisionsResynced != 0 {
		t.Errorf("losses %d (%d subscribers), %d revisions by resync, want none", r.Losses, r.SubscribersLosing, r.RevisionsResynced)
	}
	if len(r.Errors) != 0 || r.Disconnects != 0 {
		t.Errorf("errors %v, disconnects %d, want none", r.Errors, r.Disconnects)
	}
	for name, s := range map[string]summary{"delivery": r.DeliveryLatency, "request": r.RequestLatency} {
		if s.P50 <= 0 || s.P50 > s.P99 || s.P99 > s.Max || s.Count == 0 {
			t.Errorf("%s latency %+v: want 0 < p50 ≤ p99 ≤ max", name, s)
		}
	}
	if r.DeliveryLatency.Count != r.Deliveries || r.RequestLatency.Count != r.Writes {
		t.Errorf("latency counts %d, %d; want %d deliveries, %d writes", r.DeliveryLatency.Count, r.RequestLatency.Count, r.Deliveries, r.Writes)
	}
	for _, want := range []string{"delivery", "request", "p99.9", "writes", "lost", "connected and subscribed 10 in"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q", want)
		}
	}
	if !strings.Contains(stderr, "measuring") {
		t.Errorf("no progress line on stderr: %q", stderr)
	}

	// Closed loop, two projects: each subscriber gets its own project's writes.
	code, stdout, stderr = runCmd(ctx, env, "-url", cl.Nodes[1].URL(), "-quiet", "-json", jsonFile,
		"-conns", "5", "-projects", "2", "-writers", "2", "-inflight", "3", "-duration", "1s", "-warmup", "0s")
	if code != 0 || stderr != "" {
		t.Fatalf("closed loop: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if b, err = os.ReadFile(jsonFile); err != nil {
		t.Fatal(err)
	}
	r = report{}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Writes == 0 || r.Deliveries != r.ExpectedDeliveries || r.Losses != 0 || len(r.Errors) != 0 || r.Inflight != 3 {
		t.Errorf("closed loop: %+v", r)
	}

	// Idle: connect, subscribe, hold, and say when they are subscribed;
	// after seeding, wait for the seeded file to go before connecting.
	ready := filepath.Join(t.TempDir(), "ready")
	seeded := filepath.Join(t.TempDir(), "seeded")
	removed := make(chan error, 1)
	go func() {
		for {
			if _, err := os.Stat(seeded); err == nil {
				_, err := os.Stat(ready)
				if err == nil {
					removed <- errors.New("subscribed before the seeded file was removed")
					return
				}
				removed <- os.Remove(seeded)
				return
			}
			select {
			case <-ctx.Done():
				removed <- ctx.Err()
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	code, stdout, stderr = runCmd(ctx, env, "-url", cl.Nodes[0].URL(), "-quiet", "-json", jsonFile,
		"-conns", "4", "-writers", "0", "-hold", "200ms", "-ready-file", ready, "-seeded-file", seeded)
	if err := <-removed; err != nil {
		t.Fatalf("seeded file: %v", err)
	}
	if code != 0 || stderr != "" {
		t.Fatalf("idle: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if b, err := os.ReadFile(ready); err != nil || !strings.HasPrefix(string(b), "connected and subscribed 4 in ") {
		t.Errorf("ready file: %q, %v", b, err)
	}
	if r = readReport(t, jsonFile); r.Target != "pm" || r.Writers != 0 || r.Writes != 0 || r.ConnectSec <= 0 || r.HoldSec != 0.2 || r.Disconnects != 0 {
		t.Errorf("idle: %+v", r)
	}
	if !strings.Contains(stdout, "connected and subscribed 4 in") || !strings.Contains(stdout, "no writes (idle)") {
		t.Errorf("idle table:\n%s", stdout)
	}
}

// A drain that runs out says so: what was still on its way shows as lost.
func TestReportSaysWhenTheDrainRanOut(t *testing.T) {
	var out strings.Builder
	r := &report{Target: targetPM, Writers: 1, DurationSec: 1, DrainSec: 5, DrainEnded: true, Losses: 3}
	r.writeTable(&out)
	if !strings.Contains(out.String(), "NOT all caught up after the 5.00s drain") {
		t.Errorf("table:\n%s", out.String())
	}
	out.Reset()
	r.DrainEnded, r.DrainSec = false, 0.5
	r.writeTable(&out)
	if !strings.Contains(out.String(), "subscribers caught up in 0.50s") {
		t.Errorf("table:\n%s", out.String())
	}
}
