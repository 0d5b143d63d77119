package nodetest

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lxzan/gws"
	"google.golang.org/protobuf/proto"

	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// Conn is a raw WebSocket connection to a node for protocol tests: it
// sends frames as given and hands over every frame it receives, in order.
type Conn struct {
	tb     testing.TB
	ws     *gws.Conn
	frames chan frame
	closed chan struct{}
	close  *gws.CloseError // set before closed is closed

	mu     sync.Mutex
	paused chan struct{} // while not nil, the reader waits for it to close
}

type frame struct {
	opcode gws.Opcode
	data   []byte
}

// Dial connects to url with token as a bearer token ("" sends none). It
// fails the test unless the upgrade succeeds.
func Dial(tb testing.TB, url, token string) *Conn {
	tb.Helper()
	c, resp, err := TryDial(tb, url, http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		tb.Fatalf("nodetest: dial %s: %v (HTTP %d)", url, err, status)
	}
	return c
}

// TryDial connects with the given request headers and returns the HTTP
// response of a refused upgrade. The connection is closed when the test ends.
func TryDial(tb testing.TB, url string, header http.Header) (*Conn, *http.Response, error) {
	c := &Conn{tb: tb, frames: make(chan frame, 1024), closed: make(chan struct{})}
	ws, resp, err := gws.NewClient(c, &gws.ClientOption{
		Addr: url, RequestHeader: header, HandshakeTimeout: 5 * time.Second,
		ReadMaxPayloadSize: 64 << 20, WriteMaxPayloadSize: 64 << 20,
	})
	if err != nil {
		return nil, resp, err
	}
	c.ws = ws
	go ws.ReadLoop()
	tb.Cleanup(c.Close)
	return c, resp, nil
}

// OnOpen implements gws.Event.
func (c *Conn) OnOpen(*gws.Conn) {}

// OnClose implements gws.Event.
func (c *Conn) OnClose(_ *gws.Conn, err error) {
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		c.close = ce
	}
	close(c.closed)
}

// OnPing implements gws.Event.
func (c *Conn) OnPing(ws *gws.Conn, payload []byte) { _ = ws.WritePong(payload) }

// OnPong implements gws.Event.
func (c *Conn) OnPong(*gws.Conn, []byte) {}

// OnMessage implements gws.Event.
func (c *Conn) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	c.mu.Lock()
	paused := c.paused
	c.mu.Unlock()
	if paused != nil {
		select {
		case <-paused:
		case <-c.closed:
		}
	}
	data := append([]byte(nil), m.Bytes()...)
	select {
	case c.frames <- frame{m.Opcode, data}:
	case <-c.closed:
	}
}

// Pause stops reading from the connection, as a client too slow to keep up
// would; the node's frames pile up in the socket buffers and its queue.
func (c *Conn) Pause() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paused == nil {
		c.paused = make(chan struct{})
	}
}

// Resume reads again after Pause.
func (c *Conn) Resume() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paused != nil {
		close(c.paused)
		c.paused = nil
	}
}

// SendRaw writes one frame as given.
func (c *Conn) SendRaw(opcode gws.Opcode, data []byte) {
	c.tb.Helper()
	if err := c.TrySendRaw(opcode, data); err != nil {
		c.tb.Fatalf("nodetest: write: %v", err)
	}
}

// TrySendRaw writes one frame as given and returns the write's error (e.g.
// when the node has closed the connection).
func (c *Conn) TrySendRaw(opcode gws.Opcode, data []byte) error {
	return c.ws.WriteMessage(opcode, data)
}

// Send writes a message, giving it a fresh message_id if it has none, and
// returns the message_id.
func (c *Conn) Send(m *pmv1.WebSocketMessage) string {
	c.tb.Helper()
	if m.MessageId == "" {
		m.MessageId = uuid.NewString()
	}
	data, err := proto.Marshal(m)
	if err != nil {
		c.tb.Fatalf("nodetest: encode: %v", err)
	}
	c.SendRaw(gws.OpcodeBinary, data)
	return m.MessageId
}

// Next returns the next message received, failing the test after timeout.
func (c *Conn) Next(timeout time.Duration) *pmv1.WebSocketMessage {
	c.tb.Helper()
	m, err := c.next(timeout)
	if err != nil {
		c.tb.Fatal(err)
	}
	return m
}

func (c *Conn) next(timeout time.Duration) (*pmv1.WebSocketMessage, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case f := <-c.frames:
		var m pmv1.WebSocketMessage
		if err := proto.Unmarshal(f.data, &m); err != nil {
			return nil, fmt.Errorf("nodetest: undecodable frame from the node: %v", err)
		}
		return &m, nil
	case <-c.closed:
		return nil, fmt.Errorf("nodetest: connection closed (%v) while waiting for a message", c.close)
	case <-timer.C:
		return nil, fmt.Errorf("nodetest: no message within %v", timeout)
	}
}

// NextOrClose returns the next message, or nil and the close code (0 for
// none) once the node has closed the connection and every message before the
// close was returned. It fails the test after timeout.
func (c *Conn) NextOrClose(timeout time.Duration) (*pmv1.WebSocketMessage, uint16) {
	c.tb.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var f frame
	select {
	case f = <-c.frames:
	case <-c.closed:
		// The reader has stopped: what it received is all in frames.
		select {
		case f = <-c.frames:
		default:
			if c.close == nil {
				return nil, 0
			}
			return nil, c.close.Code
		}
	case <-timer.C:
		c.tb.Fatalf("nodetest: no message and no close within %v", timeout)
	}
	var m pmv1.WebSocketMessage
	if err := proto.Unmarshal(f.data, &m); err != nil {
		c.tb.Fatalf("nodetest: undecodable frame from the node: %v", err)
	}
	return &m, 0
}

// Request sends m and waits for the message that answers it (same
// message_id); messages received meanwhile (events) are returned too.
func (c *Conn) Request(m *pmv1.WebSocketMessage) (resp *pmv1.WebSocketMessage, others []*pmv1.WebSocketMessage) {
	c.tb.Helper()
	id := c.Send(m)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := c.next(time.Until(deadline))
		if err != nil {
			c.tb.Fatalf("waiting for the answer to %s: %v", id, err)
		}
		if got.MessageId == id {
			return got, others
		}
		others = append(others, got)
	}
}

// TryRequest is Request for any goroutine: it returns an error instead of
// failing the test when no answer comes within timeout or the connection
// closes.
func (c *Conn) TryRequest(m *pmv1.WebSocketMessage, timeout time.Duration) (*pmv1.WebSocketMessage, error) {
	if m.MessageId == "" {
		m.MessageId = uuid.NewString()
	}
	data, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("nodetest: encode: %w", err)
	}
	if err := c.TrySendRaw(gws.OpcodeBinary, data); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		got, err := c.next(time.Until(deadline))
		if err != nil {
			return nil, fmt.Errorf("waiting for the answer to %s: %w", m.MessageId, err)
		}
		if got.MessageId == m.MessageId {
			return got, nil
		}
	}
}

// WaitClosed waits for the node to close the connection and returns the
// close code (0 when the connection ended without a close frame).
func (c *Conn) WaitClosed(timeout time.Duration) uint16 {
	c.tb.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case <-c.frames: // drain what came before the close
		case <-c.closed:
			if c.close == nil {
				return 0
			}
			return c.close.Code
		case <-deadline:
			c.tb.Fatalf("nodetest: connection still open after %v", timeout)
		}
	}
}

// Close closes the connection (normal closure). Safe to call more than once.
func (c *Conn) Close() {
	_ = c.ws.WriteClose(1000, nil)
	<-c.closed
}
