package client_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/lxzan/gws"
	"google.golang.org/protobuf/proto"

	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// fakeNode is a scripted WebSocket server for behaviour a real node does
// not produce on demand (a connection dropped between a request and its
// answer). handle runs for every request on every connection, in order;
// conn counts the connections from 1.
type fakeNode struct {
	t      *testing.T
	srv    *httptest.Server
	handle func(conn int, ws *gws.Conn, req *pmv1.WebSocketMessage)

	mu    sync.Mutex
	conns int
	seen  []string // message_ids received, in order
	auth  []string // Authorization headers, per connection

	onPing func()      // called for every ping, if set
	silent atomic.Bool // stop answering pings
}

func startFake(t *testing.T, handle func(conn int, ws *gws.Conn, req *pmv1.WebSocketMessage)) *fakeNode {
	f := &fakeNode{t: t, handle: handle}
	up := gws.NewUpgrader(f, &gws.ServerOption{})
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer refused" {
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		f.mu.Lock()
		f.conns++
		n := f.conns
		f.auth = append(f.auth, r.Header.Get("Authorization"))
		f.mu.Unlock()
		ws, err := up.Upgrade(w, r)
		if err != nil {
			return
		}
		ws.Session().Store("n", n)
		ws.ReadLoop()
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeNode) URL() string { return "ws" + strings.TrimPrefix(f.srv.URL, "http") + "/ws" }

func (f *fakeNode) seenIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

func (f *fakeNode) OnOpen(*gws.Conn)         {}
func (f *fakeNode) OnClose(*gws.Conn, error) {}
func (f *fakeNode) OnPing(ws *gws.Conn, p []byte) {
	if f.onPing != nil {
		f.onPing()
	}
	if !f.silent.Load() {
		_ = ws.WritePong(p)
	}
}

func (f *fakeNode) connections() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns
}
func (f *fakeNode) OnPong(*gws.Conn, []byte) {}
func (f *fakeNode) OnMessage(ws *gws.Conn, m *gws.Message) {
	defer m.Close()
	var req pmv1.WebSocketMessage
	if err := proto.Unmarshal(m.Bytes(), &req); err != nil {
		f.t.Errorf("fake node: undecodable frame: %v", err)
		return
	}
	f.mu.Lock()
	f.seen = append(f.seen, req.MessageId)
	f.mu.Unlock()
	n, _ := ws.Session().Load("n")
	f.handle(n.(int), ws, &req)
}

// send writes a message to the client.
func send(t *testing.T, ws *gws.Conn, m *pmv1.WebSocketMessage) {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Errorf("fake node: encode: %v", err)
		return
	}
	_ = ws.WriteMessage(gws.OpcodeBinary, b)
}
