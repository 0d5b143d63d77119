package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	neturl "net/url"
	"sync"
	"time"

	"github.com/lxzan/gws"
	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// conn is one WebSocket connection. Two goroutines serve it: the reader
// (gws's ReadLoop), which routes every message to the client without
// blocking, and the pinger; with a token source, a third refreshes its
// token (refreshLoop). lost is closed when the reader has stopped;
// wait returns when both have.
type conn struct {
	c     *Client
	ws    *gws.Conn
	url   string
	idx   int    // index of url in the client's addresses
	token string // the token the connection was opened with, or refreshed to

	lost     chan struct{}
	wg       sync.WaitGroup
	closeErr error // why the reader stopped; set before lost is closed
}

// dial opens a connection to the address at idx and starts its goroutines.
// A 401 at the upgrade is a *pm.Error UNAUTHORIZED.
func (c *Client) dial(ctx context.Context, idx int, token string) (*conn, error) {
	url := c.addrs[idx]
	cn := &conn{c: c, url: url, idx: idx, token: token, lost: make(chan struct{})}
	header := http.Header{}
	for k, v := range c.opts.Header {
		header[k] = append([]string(nil), v...)
	}
	header.Set("Authorization", "Bearer "+token)
	ctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	defer cancel()
	// gws's handshake takes no context: the TCP connection is closed if ctx
	// ends before the handshake does, so that Close never waits for it.
	var release func() bool
	dialer := dialFunc(func(network, addr string) (net.Conn, error) {
		var nd net.Dialer
		nc, err := nd.DialContext(ctx, network, addr)
		if err == nil {
			release = context.AfterFunc(ctx, func() { _ = nc.Close() })
		}
		return nc, err
	})
	ws, resp, err := gws.NewClient(cn, &gws.ClientOption{
		Addr:                url,
		RequestHeader:       header,
		HandshakeTimeout:    c.opts.DialTimeout,
		ReadMaxPayloadSize:  c.opts.MaxMessageBytes,
		WriteMaxPayloadSize: max(c.opts.MaxFrameBytes, 1<<20),
		Recovery:            gws.Recovery,
		Logger:              gwsLogger{c.log},
		NewDialer:           func() (gws.Dialer, error) { return dialer, nil },
	})
	if release != nil && !release() && err == nil {
		_ = ws.NetConn().Close()
		err = ctx.Err()
	}
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			return nil, &pm.Error{Code: pm.EUnauthorized, Message: "the node refused the token (HTTP 401)"}
		}
		if resp != nil {
			if ref := refusal(resp); ref != nil {
				return nil, fmt.Errorf("client: dial %s: %w", url, ref)
			}
			return nil, fmt.Errorf("client: dial %s: HTTP %d: %w", url, resp.StatusCode, err)
		}
		return nil, fmt.Errorf("client: dial %s: %w", url, err)
	}
	cn.ws = ws
	cn.refreshDeadline()
	cn.wg.Add(2)
	if c.opts.TokenSource != nil {
		cn.wg.Add(1)
		go cn.refreshLoop()
	}
	go func() {
		defer cn.wg.Done()
		ws.ReadLoop()
		// Unpublished before lost is closed, so that no caller that sees
		// lost picks this connection again.
		c.clearConn(cn)
		close(cn.lost)
	}()
	go cn.pingLoop()
	c.log.Debug("pm: connected", "url", redactURL(url))
	return cn, nil
}

// dialFunc adapts a function to gws.Dialer.
type dialFunc func(network, addr string) (net.Conn, error)

func (f dialFunc) Dial(network, addr string) (net.Conn, error) { return f(network, addr) }

// wait waits for the connection's goroutines; call it after lost.
func (cn *conn) wait() { cn.wg.Wait() }

// close sends a close frame and ends the connection.
func (cn *conn) close(code uint16, reason string) {
	_ = cn.ws.SetWriteDeadline(time.Now().Add(time.Second))
	_ = cn.ws.WriteClose(code, []byte(reason))
}

// writeTimeout bounds writing one frame; a write that takes longer ends
// the connection (and the client reconnects).
const writeTimeout = 10 * time.Second

// write sends one binary frame.
func (cn *conn) write(frame []byte) error { return cn.writeFrame(gws.OpcodeBinary, frame) }

// writeFrame sends one frame under a fresh write deadline. Every write sets
// its own: a deadline left over from an earlier write would fail this one.
func (cn *conn) writeFrame(op gws.Opcode, payload []byte) error {
	_ = cn.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	return cn.ws.WriteMessage(op, payload)
}

// closeStatus returns the node's close code and reason; 1006 (abnormal
// closure) when the connection ended without a close frame.
func (cn *conn) closeStatus() (uint16, string) {
	if ce, ok := errors.AsType[*gws.CloseError](cn.closeErr); ok {
		return ce.Code, string(ce.Reason)
	}
	if cn.closeErr != nil {
		return 1006, cn.closeErr.Error()
	}
	return 1006, "connection lost"
}

func (cn *conn) pingLoop() {
	defer cn.wg.Done()
	t := time.NewTicker(cn.c.opts.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := cn.writeFrame(gws.OpcodePing, nil); err != nil {
				_ = cn.ws.NetConn().Close()
				return
			}
		case <-cn.lost:
			return
		}
	}
}

// refreshDeadline gives the node two ping intervals to show it is alive.
func (cn *conn) refreshDeadline() {
	_ = cn.ws.SetReadDeadline(time.Now().Add(2 * cn.c.opts.PingInterval))
}

// OnOpen implements gws.Event.
func (cn *conn) OnOpen(*gws.Conn) {}

// OnClose implements gws.Event; it runs on the reader just before it stops.
func (cn *conn) OnClose(_ *gws.Conn, err error) { cn.closeErr = err }

// OnPing implements gws.Event.
func (cn *conn) OnPing(_ *gws.Conn, payload []byte) {
	cn.refreshDeadline()
	_ = cn.writeFrame(gws.OpcodePong, payload)
}

// OnPong implements gws.Event.
func (cn *conn) OnPong(*gws.Conn, []byte) { cn.refreshDeadline() }

// OnMessage implements gws.Event: it decodes a frame and routes it.
func (cn *conn) OnMessage(_ *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	cn.refreshDeadline()
	m := new(pmv1.WebSocketMessage)
	// Unmarshal copies what it keeps, so msg's buffer may be reused.
	if err := proto.Unmarshal(msg.Bytes(), m); err != nil {
		cn.c.log.Warn("pm: undecodable frame from the node", "url", redactURL(cn.url), "err", err)
		return
	}
	cn.c.received(m)
}

// gwsLogger routes gws's internal errors (e.g. recovered panics) to slog.
type gwsLogger struct{ log *slog.Logger }

func (l gwsLogger) Error(v ...any) { l.log.Error("pm: websocket", "detail", fmt.Sprint(v...)) }

// redactURL hides an access_token query parameter, so that a URL that
// carries one can be logged.
func redactURL(raw string) string {
	u, err := neturl.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	q := u.Query()
	if !q.Has("access_token") {
		return raw
	}
	q.Set("access_token", "REDACTED")
	u.RawQuery = q.Encode()
	return u.String()
}
