package node

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// received is what the test's WebSocket client read.
type received struct {
	frames chan []byte
	pings  chan struct{}
}

func (r *received) OnOpen(*gws.Conn)         {}
func (r *received) OnClose(*gws.Conn, error) {}
func (r *received) OnPong(*gws.Conn, []byte) {}
func (r *received) OnPing(*gws.Conn, []byte) { r.pings <- struct{}{} }
func (r *received) OnMessage(_ *gws.Conn, m *gws.Message) {
	r.frames <- bytes.Clone(m.Bytes())
	m.Close()
}

// flushPair returns a session whose socket is one end of a real WebSocket
// connection, its flusher not started, and a gws client on the other end.
func flushPair(t *testing.T) (*session, *received) {
	t.Helper()
	r := &received{frames: make(chan []byte, 64), pings: make(chan struct{}, 8)}
	server := wsPair(t, r)
	return newFlushSession(t, server, newFlushServer(t)), r
}

// newFlushServer returns the little of a Server a session's writing needs.
func newFlushServer(t testing.TB) *Server {
	t.Helper()
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return &Server{metrics: m, cfg: Config{Now: time.Now, WriteTimeout: 5 * time.Second, SendQueueBytes: 4 << 20}}
}

func newFlushSession(_ testing.TB, server net.Conn, srv *Server) *session {
	return &session{srv: srv, nc: newLingerConn(server, nil), progress: make(chan struct{}, 1), live: true}
}

// wsPair opens a WebSocket connection on loopback whose client end is
// served by a gws client calling h, and returns the server end's socket.
func wsPair(t testing.TB, h gws.Event) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		// The server half of the opening handshake (RFC 6455 §4.2.2).
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			c.Close()
			accepted <- nil
			return
		}
		sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			base64.StdEncoding.EncodeToString(sum[:]))
		accepted <- c
	}()
	client, _, err := gws.NewClient(h, &gws.ClientOption{Addr: "ws://" + ln.Addr().String(), ReadMaxPayloadSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	go client.ReadLoop()
	t.Cleanup(func() { client.NetConn().Close() })
	server := <-accepted
	if server == nil {
		t.Fatal("handshake failed")
	}
	t.Cleanup(func() { server.Close() })
	return server
}

// Frames queued together go out in one write, whole and in order, with
// every header length (7-bit, 16-bit, 64-bit) a reader must decode, and a
// due ping before them.
func TestQueuedFramesGoOutInOneWrite(t *testing.T) {
	c, r := flushPair(t)
	sizes := []int{0, 1, 125, 126, 127, 65535, 65536, 300000}
	var want [][]byte
	c.mu.Lock()
	for i, n := range sizes {
		f := bytes.Repeat([]byte{byte('a' + i)}, n)
		want = append(want, f)
		c.queue = append(c.queue, f)
		c.queuedBytes += n
		c.queued++
	}
	c.pingDue = true
	c.startFlushLocked()
	c.mu.Unlock()

	select {
	case <-r.pings:
	case <-time.After(10 * time.Second):
		t.Fatal("no ping")
	}
	for i, w := range want {
		select {
		case got := <-r.frames:
			if !bytes.Equal(got, w) {
				t.Fatalf("frame %d: %d bytes, want %d bytes of %q", i, len(got), len(w), w[:min(len(w), 1)])
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("frame %d of %d never arrived", i, len(want))
		}
	}
	c.wg.Wait() // the flusher returns once the queue is empty
	if got := c.written.Load(); got != uint64(len(sizes)) {
		t.Fatalf("written %d, want %d", got, len(sizes))
	}
	var h dto.Metric
	if err := c.srv.metrics.framesPerWrite.Write(&h); err != nil {
		t.Fatal(err)
	}
	if got := h.GetHistogram().GetSampleCount(); got != 1 {
		t.Fatalf("%d writes, want 1", got)
	}
	if got := h.GetHistogram().GetSampleSum(); got != float64(len(sizes)) {
		t.Fatalf("%v frames in the write, want %d", got, len(sizes))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.flushing || c.queuedBytes != 0 || c.sending != 0 {
		t.Fatalf("after the flush: flushing %v, queued %d B, sending %d B", c.flushing, c.queuedBytes, c.sending)
	}
}

func TestAppendHeader(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x82, 0}},
		{125, []byte{0x82, 125}},
		{126, []byte{0x82, 126, 0, 126}},
		{65535, []byte{0x82, 126, 0xff, 0xff}},
		{65536, []byte{0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	} {
		if got := appendHeader(nil, tc.n); !bytes.Equal(got, tc.want) {
			t.Errorf("appendHeader(%d) = % x, want % x", tc.n, got, tc.want)
		}
	}
}

// A session closed before it runs (the node shuts down between the upgrade
// and the connection's first read) writes nothing until it does: no
// flusher starts on a connection that is not up yet.
func TestCloseBeforeRunStartsNoFlusher(t *testing.T) {
	c, _ := flushPair(t)
	c.live = false // as newSession leaves it, until run
	c.close(CloseGoingAway, "node shutting down")
	c.Deliver([]byte("an event"))
	c.mu.Lock()
	flushing := c.flushing
	c.mu.Unlock()
	c.wg.Wait()
	if flushing {
		t.Fatal("a flusher started before the connection ran")
	}
}
