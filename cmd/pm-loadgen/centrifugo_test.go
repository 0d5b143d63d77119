package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lxzan/gws"
)

func TestCFEncodeCommand(t *testing.T) {
	sent := time.Unix(1700000000, 5)
	for _, tc := range []struct {
		cmd  cfCommand
		want string
	}{
		{cfCommand{ID: 1, Connect: &cfConnectRequest{Token: "tok"}}, `{"id":1,"connect":{"token":"tok"}}`},
		{cfCommand{ID: 2, Subscribe: &cfSubscribeRequest{Channel: "loadgen:x-1"}}, `{"id":2,"subscribe":{"channel":"loadgen:x-1"}}`},
		{
			cfCommand{ID: 3, Publish: &cfPublishRequest{Channel: "loadgen:x-1", Data: newCFStamp(sent, 2, 7)}},
			`{"id":3,"publish":{"channel":"loadgen:x-1","data":{"sent":1700000000000000005,"writer":2,"seq":7,` +
				`"title":"pm-loadgen writer 2, write 7","description":"pm-loadgen sent=1700000000000000005 writer=2"}}}`,
		},
	} {
		b, err := encodeCommand(&tc.cmd)
		if err != nil || string(b) != tc.want {
			t.Errorf("encodeCommand = %s, %v\nwant %s", b, err, tc.want)
		}
	}
}

func TestCFDecodeFrame(t *testing.T) {
	// As Centrifugo batches them: replies, a ping and a push in one frame.
	frame := `{"id":1,"connect":{"client":"c1","version":"0.0.0","ping":25,"pong":true}}` + "\n" +
		`{}` + "\n" +
		`{"push":{"channel":"loadgen:x-1","pub":{"data":{"sent":42,"writer":3,"seq":9,"title":"t"},"info":{"user":"u","client":"c"}}}}` + "\n" +
		`{"id":4,"error":{"code":103,"message":"permission denied"}}` + "\n" +
		`{"id":5,"publish":{}}` + "\n"
	var got []string
	err := decodeFrame([]byte(frame), func(r *cfReply, ping bool) {
		switch {
		case ping:
			got = append(got, "ping")
		case r.Connect != nil:
			got = append(got, fmt.Sprintf("connect %d %s ping=%d pong=%v", r.ID, r.Connect.Client, r.Connect.Ping, r.Connect.Pong))
		case r.Error != nil:
			got = append(got, fmt.Sprintf("error %d %v", r.ID, r.Error))
		case r.Push != nil && r.Push.Pub != nil:
			d := r.Push.Pub.Data
			got = append(got, fmt.Sprintf("pub %s sent=%d writer=%d seq=%d", r.Push.Channel, d.Sent, d.Writer, d.Seq))
		case r.Publish != nil:
			got = append(got, fmt.Sprintf("publish %d", r.ID))
		default:
			got = append(got, fmt.Sprintf("other %+v", r))
		}
	})
	want := []string{
		"connect 1 c1 ping=25 pong=true",
		"ping",
		"pub loadgen:x-1 sent=42 writer=3 seq=9",
		"error 4 error 103: permission denied",
		"publish 5",
	}
	if err != nil || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("decodeFrame: %v\ngot:\n%s\nwant:\n%s", err, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if err := decodeFrame([]byte(`{"id":1}`+"\n"+`{nope`), func(*cfReply, bool) {}); err == nil {
		t.Error("a malformed object decoded")
	}
	// A publication as a writer sends it comes back as a push.
	st := newCFStamp(time.Unix(0, 123), 4, 5)
	b, _ := json.Marshal(cfPush{Channel: "c", Pub: &cfPublication{Data: st}})
	var back cfStamp
	_ = decodeFrame([]byte(`{"push":`+string(b)+`}`), func(r *cfReply, _ bool) { back = r.Push.Pub.Data })
	if back != st {
		t.Errorf("round trip: %+v, want %+v", back, st)
	}
}

func TestCFToken(t *testing.T) {
	s, err := cfToken([]byte("secret"), "user-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var claims jwt.RegisteredClaims
	tok, err := jwt.ParseWithClaims(s, &claims, func(*jwt.Token) (any, error) { return []byte("secret"), nil },
		jwt.WithValidMethods([]string{"HS256"}))
	if err != nil || !tok.Valid || claims.Subject != "user-1" || claims.ExpiresAt == nil {
		t.Fatalf("token %q: %v, claims %+v", s, err, claims)
	}
	if _, err := cfToken(nil, "u", time.Minute); err == nil {
		t.Error("a token without a secret")
	}
}

// TestCFLossCounting checks each subscriber against the acknowledged
// publications on its channel: duplicates, publications that were never
// acknowledged and writers of another run count as neither live nor lost.
func TestCFLossCounting(t *testing.T) {
	lg := newLoadgen(config{target: targetCentrifugo, projects: 2, writers: 2, duration: time.Second}, nil)
	lane := func(writer, channel int, acked ...uint64) *cfLane {
		l := &cfLane{lg: lg, writer: writer, channel: channel}
		for _, q := range acked {
			setBit(&l.acked, q)
			l.n.Add(1)
		}
		return l
	}
	lanes := []*cfLane{
		lane(1, 0, 1, 2, 3, 4, 5),
		lane(2, 0, 1, 2), // its 3rd failed
		lane(1, 1, 1, 2, 3, 64, 130),
		lane(2, 1),
	}
	sub := func(channel int, seen ...[2]int) *cfSubscriber {
		s := &cfSubscriber{lg: lg, channel: channel, seen: make([][]uint64, 3)}
		for _, wq := range seen {
			s.onPub(time.Now(), "", &cfPublication{Data: cfStamp{Writer: wq[0], Seq: uint64(wq[1])}})
		}
		return s
	}
	subs := []*cfSubscriber{
		// All of channel 0, writer 2's unacknowledged 3rd, one duplicate.
		sub(0, [2]int{1, 1}, [2]int{1, 2}, [2]int{1, 2}, [2]int{1, 3}, [2]int{1, 4}, [2]int{1, 5}, [2]int{2, 1}, [2]int{2, 2}, [2]int{2, 3}),
		// Three of channel 0's seven missing.
		sub(0, [2]int{1, 1}, [2]int{1, 2}, [2]int{1, 4}, [2]int{2, 2}),
		// All of channel 1, and publications of writers it does not know.
		sub(1, [2]int{1, 1}, [2]int{1, 2}, [2]int{1, 3}, [2]int{1, 64}, [2]int{1, 130}, [2]int{9, 1}, [2]int{0, 0}),
	}
	if got := subs[0].got.Load(); got != 8 {
		t.Errorf("subscriber 0 got %d distinct, want 8", got)
	}
	r := cfReport(lg, subs, lanes, 0)
	if r.RevisionsLive != 7+4+5 || r.Losses != 3 || r.SubscribersLosing != 1 || r.Duplicates != 1 {
		t.Errorf("live %d, lost %d, losing %d, duplicates %d; want 16, 3, 1, 1", r.RevisionsLive, r.Losses, r.SubscribersLosing, r.Duplicates)
	}
	if r.Target != targetCentrifugo || r.Mix != nil {
		t.Errorf("target %q, mix %v", r.Target, r.Mix)
	}
}

// fakeCF is a one-node stand-in for Centrifugo: it speaks the JSON protocol
// (connect, subscribe, publish, ping), fans publications out to the
// channel's subscribers, and drops the first publication to the first
// subscriber, which the report must count as one loss.
type fakeCF struct {
	t      *testing.T
	srv    *httptest.Server
	secret []byte
	pongs  atomic.Int64

	mu      sync.Mutex
	subs    map[string][]*gws.Conn
	dropped bool
}

func startFakeCF(t *testing.T, secret string) *fakeCF {
	f := &fakeCF{t: t, secret: []byte(secret), subs: map[string][]*gws.Conn{}}
	up := gws.NewUpgrader(f, &gws.ServerOption{})
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/connection/websocket" {
			http.NotFound(w, r)
			return
		}
		ws, err := up.Upgrade(w, r)
		if err != nil {
			return
		}
		ws.ReadLoop()
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeCF) URL() string {
	return "ws" + strings.TrimPrefix(f.srv.URL, "http") + "/connection/websocket"
}

func (f *fakeCF) OnOpen(*gws.Conn)              {}
func (f *fakeCF) OnClose(*gws.Conn, error)      {}
func (f *fakeCF) OnPing(ws *gws.Conn, p []byte) { _ = ws.WritePong(p) }
func (f *fakeCF) OnPong(*gws.Conn, []byte)      {}
func (f *fakeCF) reply(ws *gws.Conn, format string, a ...any) {
	_ = ws.WriteMessage(gws.OpcodeText, fmt.Appendf(nil, format, a...))
}

func (f *fakeCF) OnMessage(ws *gws.Conn, m *gws.Message) {
	defer m.Close()
	for line := range bytes.SplitSeq(m.Bytes(), []byte("\n")) {
		if string(line) == "{}" {
			f.pongs.Add(1)
			continue
		}
		var cmd struct {
			ID      uint32 `json:"id"`
			Connect *struct {
				Token string `json:"token"`
			} `json:"connect"`
			Subscribe *struct {
				Channel string `json:"channel"`
			} `json:"subscribe"`
			Publish *struct {
				Channel string          `json:"channel"`
				Data    json.RawMessage `json:"data"`
			} `json:"publish"`
		}
		if err := json.Unmarshal(line, &cmd); err != nil {
			f.t.Errorf("fake centrifugo: undecodable command %q: %v", line, err)
			return
		}
		switch {
		case cmd.Connect != nil:
			_, err := jwt.Parse(cmd.Connect.Token, func(*jwt.Token) (any, error) { return f.secret, nil }, jwt.WithValidMethods([]string{"HS256"}))
			if err != nil {
				_ = ws.WriteClose(3500, []byte("invalid token"))
				return
			}
			// The reply and a ping in one frame, as the server may batch them.
			f.reply(ws, `{"id":%d,"connect":{"client":"c","version":"0.0.0","ping":25,"pong":true}}`+"\n{}", cmd.ID)
		case cmd.Subscribe != nil:
			if !strings.HasPrefix(cmd.Subscribe.Channel, "loadgen:") {
				f.reply(ws, `{"id":%d,"error":{"code":103,"message":"permission denied"}}`, cmd.ID)
				continue
			}
			f.mu.Lock()
			f.subs[cmd.Subscribe.Channel] = append(f.subs[cmd.Subscribe.Channel], ws)
			f.mu.Unlock()
			f.reply(ws, `{"id":%d,"subscribe":{}}`, cmd.ID)
		case cmd.Publish != nil:
			f.mu.Lock()
			subs := f.subs[cmd.Publish.Channel]
			drop := !f.dropped && len(subs) > 0
			f.dropped = true
			f.mu.Unlock()
			push := fmt.Appendf(nil, `{"push":{"channel":%q,"pub":{"data":%s,"info":{"user":"w","client":"c"}}}}`, cmd.Publish.Channel, cmd.Publish.Data)
			for i, s := range subs {
				if i == 0 && drop {
					continue
				}
				_ = s.WriteMessage(gws.OpcodeText, push)
			}
			f.reply(ws, `{"id":%d,"publish":{}}`, cmd.ID)
		}
	}
}

// TestCentrifugoTargetOnAFake runs the Centrifugo target against fakeCF:
// open and closed loop, two channels, and an idle run with a ready file.
func TestCentrifugoTargetOnAFake(t *testing.T) {
	f := startFakeCF(t, "cf-secret")
	env := map[string]string{"PM_LOADGEN_SECRET": "cf-secret", "PM_LOADGEN_TARGET": "centrifugo"}
	jsonFile := filepath.Join(t.TempDir(), "report.json")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	code, stdout, stderr := runCmd(ctx, env, "-url", f.URL()+","+f.URL(), "-conns", "6", "-projects", "2", "-writers", "2",
		"-rate", "100", "-duration", "1s", "-warmup", "200ms", "-drain", "1s", "-json", jsonFile)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	r := readReport(t, jsonFile)
	// 3 subscribers per channel; the first subscriber misses one publication.
	if r.Target != "centrifugo" || r.Writes == 0 || r.ExpectedDeliveries != 3*r.Writes || r.Losses != 1 || r.SubscribersLosing != 1 {
		t.Errorf("report: %+v", r)
	}
	if r.Deliveries != r.ExpectedDeliveries && r.Deliveries != r.ExpectedDeliveries-1 {
		t.Errorf("deliveries %d, expected %d (one dropped, maybe in the warm-up)", r.Deliveries, r.ExpectedDeliveries)
	}
	if r.DeliveryLatency.Count != r.Deliveries || r.RequestLatency.Count != r.Writes || r.ConnectSec <= 0 || len(r.Errors) != 0 {
		t.Errorf("latency counts %d, %d, connect %gs, errors %v", r.DeliveryLatency.Count, r.RequestLatency.Count, r.ConnectSec, r.Errors)
	}
	if got := f.pongs.Load(); got != 6+2 {
		t.Errorf("%d pongs, want one per connection (8)", got)
	}
	for _, want := range []string{"centrifugo", "connected and subscribed 6 in", "publications", "1 lost (1 subscriber(s) losing)"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, stdout)
		}
	}

	code, stdout, stderr = runCmd(ctx, env, "-url", f.URL(), "-quiet", "-json", jsonFile,
		"-conns", "4", "-writers", "2", "-inflight", "2", "-duration", "500ms", "-warmup", "0s")
	if r = readReport(t, jsonFile); code != 0 || stderr != "" || r.Writes == 0 || r.Inflight != 2 || r.Losses != 0 || r.Deliveries != r.ExpectedDeliveries {
		t.Errorf("closed loop: exit %d, stderr %q, report %+v\n%s", code, stderr, r, stdout)
	}

	ready := filepath.Join(t.TempDir(), "ready")
	code, stdout, stderr = runCmd(ctx, env, "-url", f.URL(), "-quiet", "-json", jsonFile,
		"-conns", "5", "-writers", "0", "-hold", "300ms", "-ready-file", ready)
	r = readReport(t, jsonFile)
	if b, err := os.ReadFile(ready); code != 0 || err != nil || !strings.HasPrefix(string(b), "connected and subscribed 5 in ") {
		t.Errorf("idle: exit %d, stderr %q, ready file %q, %v", code, stderr, b, err)
	}
	if r.Writers != 0 || r.HoldSec != 0.3 || r.ConnectSec <= 0 || r.Writes != 0 || !strings.Contains(stdout, "held them idle for 0.3s") {
		t.Errorf("idle: %+v\n%s", r, stdout)
	}

	// A channel the server refuses, and a wrong secret, fail the run.
	code, _, stderr = runCmd(ctx, env, "-url", f.URL(), "-quiet", "-conns", "1", "-writers", "1", "-duration", "100ms", "-namespace", "")
	if code != 1 || !strings.Contains(stderr, "103: permission denied") {
		t.Errorf("refused channel: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runCmd(ctx, map[string]string{"PM_LOADGEN_SECRET": "wrong"}, "-target", "centrifugo", "-url", f.URL(), "-quiet", "-conns", "1", "-writers", "0")
	if code != 1 || !strings.Contains(stderr, "3500 invalid token") {
		t.Errorf("wrong secret: exit %d, stderr %q", code, stderr)
	}
}

func readReport(t *testing.T, name string) report {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestCentrifugoBinary runs the Centrifugo target against a real
// Centrifugo: two nodes on the Redis engine at 127.0.0.1:6379 (a fresh
// prefix). It runs only when PM_CENTRIFUGO_BIN names the binary, e.g.
//
//	GOBIN=/tmp/centrifugo/bin go install github.com/centrifugal/centrifugo/v6@v6.9.1
//	PM_CENTRIFUGO_BIN=/tmp/centrifugo/bin/centrifugo go test ./cmd/pm-loadgen -run Binary -v
//
// CI never installs Centrifugo: there the test is skipped.
func TestCentrifugoBinary(t *testing.T) {
	bin := os.Getenv("PM_CENTRIFUGO_BIN")
	if bin == "" {
		t.Skip("PM_CENTRIFUGO_BIN is not set")
	}
	dir := t.TempDir()
	secret := fmt.Sprintf("test-%d", time.Now().UnixNano())
	var urls []string
	for i := range 2 {
		port := freePort(t)
		conf := map[string]any{
			"http_server": map[string]any{"address": "127.0.0.1", "port": port},
			"log":         map[string]any{"level": "warn"},
			"client":      map[string]any{"token": map[string]any{"hmac_secret_key": secret}},
			"channel": map[string]any{"namespaces": []map[string]any{{
				"name": "loadgen", "allow_subscribe_for_client": true, "allow_publish_for_client": true,
			}}},
			"engine": map[string]any{"type": "redis", "redis": map[string]any{
				"address": []string{"redis://127.0.0.1:6379"}, "prefix": "pm_loadgen_test_" + secret,
			}},
			"http_api":    map[string]any{"disabled": true},
			"health":      map[string]any{"enabled": true},
			"usage_stats": map[string]any{"disabled": true},
		}
		b, _ := json.Marshal(conf)
		file := filepath.Join(dir, fmt.Sprintf("config-%d.json", i))
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "--config", file)
		var log bytes.Buffer
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			if t.Failed() {
				t.Logf("centrifugo %d:\n%s", i, log.String())
			}
		})
		waitHealthy(t, fmt.Sprintf("http://127.0.0.1:%d/health", port))
		urls = append(urls, fmt.Sprintf("ws://127.0.0.1:%d/connection/websocket", port))
	}
	jsonFile := filepath.Join(dir, "report.json")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	code, stdout, stderr := runCmd(ctx, map[string]string{"PM_LOADGEN_SECRET": secret},
		"-target", "centrifugo", "-url", strings.Join(urls, ","), "-conns", "20", "-projects", "2", "-writers", "2",
		"-rate", "50", "-duration", "2s", "-warmup", "500ms", "-json", jsonFile)
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout, stderr)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	r := readReport(t, jsonFile)
	if r.Writes == 0 || r.Deliveries != r.Writes*10 || r.ExpectedDeliveries != r.Deliveries || r.Losses != 0 || r.RevisionsLive == 0 {
		t.Errorf("writes %d, deliveries %d (expected %d), live %d, lost %d: want every write × 10 subscribers, nothing lost",
			r.Writes, r.Deliveries, r.ExpectedDeliveries, r.RevisionsLive, r.Losses)
	}
	if len(r.Errors) != 0 || r.Disconnects != 0 || r.DeliveryLatency.P50 <= 0 || r.RequestLatency.P50 <= 0 {
		t.Errorf("errors %v, disconnects %d, latency %+v, %+v", r.Errors, r.Disconnects, r.DeliveryLatency, r.RequestLatency)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitHealthy(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy after 15s: %v", url, errors.Join(err))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
