// Package client is pm's Go client SDK. It owns one WebSocket connection to
// a pm node and everything a program needs on top of it: request/response
// correlation by message_id, typed calls with errors as *pm.Error,
// reconnection with backoff (to any node behind the load balancer or of a
// list) that re-sends the requests in flight under their message_id, token
// refresh in band ahead of expiry through a token source, and
// local replicas of subscribed projects that it keeps ordered and gap-free
// by revision, resyncing from the last applied revision whenever an event is
// missing, the node asks for it, or the connection was lost.
//
// A Client is safe for concurrent use. Close it when done.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/pmhq/pm"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// Options configures a Client. Zero values take the documented defaults.
type Options struct {
	// Token is the bearer token sent at every (re)connect, unless
	// TokenSource is set.
	Token string
	// TokenSource, if set, is asked for a token at every (re)connect, and
	// ahead of the connection's token expiry (from its exp claim, when 70–80%
	// of its remaining lifetime has passed): a token that expires later is
	// sent in band (RefreshTokenRequest), so the connection outlives its
	// first token; a failure is retried until the connection ends. With it
	// the client also reconnects after the node closed with 1008 or
	// 4500–4999 (e.g. 4500 token expired), provided it returns a different
	// token; without it those closes stop the client, and a static Token is
	// never refreshed.
	TokenSource func(ctx context.Context) (string, error)
	// URLs are more node addresses (ws:// or wss://…/ws) beside the one
	// given to Dial; reconnects try them in turn. Behind a load balancer one
	// address is enough.
	URLs []string
	// Logger receives the client's connection events. Default: none.
	Logger *slog.Logger
	// Reconnect is the reconnect policy. Default 100ms to 10s.
	Reconnect Backoff
	// RequestTimeout bounds each call, re-sends included, unless its context
	// ends sooner. Default 10s; negative: only the context bounds it.
	RequestTimeout time.Duration
	// DialTimeout bounds one connection attempt, handshake included.
	// Default 5s.
	DialTimeout time.Duration
	// PingInterval is how often the client pings the node; a connection
	// silent for two intervals is dropped and reconnected. Default 20s.
	PingInterval time.Duration
	// NoBusyRetry disables the automatic re-send (same message_id) of a
	// request answered RATE_LIMITED or UNAVAILABLE after the node's
	// retry_after_ms; with it such answers are returned as errors.
	NoBusyRetry bool
	// MaxFrameBytes is the largest request the client sends; a larger one
	// fails with ErrFrameTooLarge instead of making the node close the
	// connection (1009). Default 256 KiB, the node's default limit.
	MaxFrameBytes int
	// MaxMessageBytes is the largest message the client reads. Default 64 MiB.
	MaxMessageBytes int
	// EventBuffer bounds the events waiting for the replicas. On overflow
	// events are dropped and every replica resyncs. Default 10000.
	EventBuffer int
	// OnEvent, if set, is called for every message the node pushes
	// (WorkItemCreated/Updated/Deleted of subscribed projects,
	// ResyncRequired, SubscriptionRevoked), in arrival order, after the
	// replicas applied it. It runs on the client's sync goroutine: it must
	// return quickly and must not call the Client.
	OnEvent func(*pmv1.WebSocketMessage)
	// OnConnectionChange, if set, is called when the connection is lost
	// (connected false, the lost node's URL) and when a reconnect succeeds
	// (connected true, the new node's URL), e.g. to show "reconnecting" in a
	// UI. It runs on the client's connection goroutine: it must return
	// quickly and must not call the Client.
	OnConnectionChange func(connected bool, url string)
	// Header adds request headers to the upgrade (e.g. for a proxy).
	Header http.Header
}

func (o *Options) setDefaults() error {
	if o.Token == "" && o.TokenSource == nil {
		return errors.New("client: Options.Token or Options.TokenSource is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Reconnect.setDefaults()
	if o.RequestTimeout == 0 {
		o.RequestTimeout = 10 * time.Second
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.PingInterval <= 0 {
		o.PingInterval = 20 * time.Second
	}
	if o.MaxFrameBytes <= 0 {
		o.MaxFrameBytes = 256 << 10
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = 64 << 20
	}
	if o.EventBuffer <= 0 {
		o.EventBuffer = 10000
	}
	return nil
}

// Client is a connection to pm that survives the loss of its node.
type Client struct {
	opts  Options
	addrs []string
	log   *slog.Logger

	ctx    context.Context // ends at Close or when the client stops for good
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup // the connection manager and the sync goroutine

	mu       sync.Mutex
	cur      *conn         // nil while disconnected
	up       chan struct{} // closed when a connection is up; replaced when it drops
	pending  map[string]*waiter
	projects map[string]*Project

	inbox inbox // pushes and commands for the sync goroutine

	closeOnce sync.Once
}

// Dial connects to a node (ws://host:port/ws or wss://…; then, if that
// fails, to each of Options.URLs in turn) and returns a Client. A refused
// token is a *pm.Error with code UNAUTHORIZED; a node refusing for a limit
// (HTTP 503 or 429) is a *RefusedError, whose RetryAfter says when to try
// again; failing to connect at all returns the last network error. Once connected, the client reconnects by
// itself until Close.
func Dial(ctx context.Context, url string, opts Options) (*Client, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	c := &Client{
		opts:     opts,
		addrs:    append([]string{url}, opts.URLs...),
		log:      opts.Logger,
		up:       make(chan struct{}),
		pending:  make(map[string]*waiter),
		projects: make(map[string]*Project),
	}
	c.inbox.init(opts.EventBuffer)
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	token, err := c.token(ctx)
	if err != nil {
		c.cancel(err)
		return nil, err
	}
	var cn *conn
	for idx := range c.addrs {
		cn, err = c.dial(ctx, idx, token)
		if _, refused := errors.AsType[*pm.Error](err); err == nil || refused || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		c.cancel(err)
		return nil, err
	}
	c.wg.Add(2)
	go c.run(cn)
	go c.syncLoop()
	return c, nil
}

// Close closes the connection with 1000, stops reconnecting, fails the
// calls in flight with ErrClosed, ends the replicas and waits for the
// client's goroutines. Safe to call more than once.
func (c *Client) Close() error {
	c.closeOnce.Do(func() { c.cancel(ErrClosed) })
	c.wg.Wait()
	return nil
}

// Done is closed when the client stops: Close was called, or the node
// refused it for good (a rejected token, a close code 1008 or 4500–4999). Err
// says why.
func (c *Client) Done() <-chan struct{} { return c.ctx.Done() }

// Err returns why the client stopped (ErrClosed after Close, a *CloseError,
// a *pm.Error UNAUTHORIZED), or nil while it runs.
func (c *Client) Err() error {
	if c.ctx.Err() == nil {
		return nil
	}
	return context.Cause(c.ctx)
}

// Connected reports whether a connection is up right now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur != nil
}

// token returns the token for the next connection.
func (c *Client) token(ctx context.Context) (string, error) {
	if c.opts.TokenSource == nil {
		return c.opts.Token, nil
	}
	t, err := c.opts.TokenSource(ctx)
	if err != nil {
		return "", fmt.Errorf("client: token source: %w", err)
	}
	return t, nil
}

// run owns the connections: it publishes each, waits for it to end, then
// decides whether and where to reconnect. It returns when the client stops.
func (c *Client) run(cn *conn) {
	defer c.wg.Done()
	for {
		c.setConn(cn)
		select {
		case <-cn.lost:
		case <-c.ctx.Done():
			cn.close(1000, "client closed")
			<-cn.lost
		}
		c.clearConn(cn)
		cn.wait()
		if c.ctx.Err() != nil {
			return
		}
		code, reason := cn.closeStatus()
		c.log.Info("pm: connection lost", "url", redactURL(cn.url), "code", code, "reason", reason)
		c.connectionChanged(false, cn.url)
		next, err := c.reconnect(cn, code, reason)
		if err != nil {
			c.log.Warn("pm: client stopped", "err", err)
			c.cancel(err)
			return
		}
		if next == nil { // closed meanwhile
			return
		}
		cn = next
		c.connectionChanged(true, cn.url)
		c.inbox.command(cmdReconnected)
	}
}

func (c *Client) connectionChanged(connected bool, url string) {
	if c.opts.OnConnectionChange != nil {
		c.opts.OnConnectionChange(connected, url)
	}
}

// permanent reports whether a close code means "don't reconnect until
// something changes".
func permanent(code uint16) bool {
	return code == 1008 || code >= 4500 && code <= 4999
}

// reconnect dials again with backoff, trying the addresses in turn starting
// after the lost one. It returns nil, nil when the client was closed, and an
// error when it must stop for good.
func (c *Client) reconnect(lost *conn, code uint16, reason string) (*conn, error) {
	if code == 1009 {
		c.log.Error("pm: the node closed the connection for an oversized frame; lower Options.MaxFrameBytes to the node's limit")
	}
	var notBefore time.Duration // a refused upgrade's Retry-After
	for attempt := 0; ; attempt++ {
		// Even the first attempt waits a little: the clients of a node that
		// shuts down (1001) spread their reconnects. A permanent close with
		// a new token is the exception. After a refusal for a limit, the
		// wait is at least the node's Retry-After, plus up to half of it
		// again at random, so refused clients do not come back together.
		delay := retryDelay(c.opts.Reconnect.Delay(attempt), notBefore)
		notBefore = 0
		if (attempt > 0 || !permanent(code)) && !c.sleep(delay) {
			return nil, nil
		}
		ctx, cancel := context.WithTimeout(c.ctx, c.opts.DialTimeout)
		token, err := c.token(ctx)
		cancel()
		if err != nil {
			if c.ctx.Err() != nil {
				return nil, nil
			}
			c.log.Warn("pm: token source failed", "err", err)
			continue
		}
		if permanent(code) && (c.opts.TokenSource == nil || token == lost.token) {
			return nil, &CloseError{Code: code, Reason: reason}
		}
		code = 0 // only the first attempt after the close is special
		idx := (lost.idx + 1 + attempt) % len(c.addrs)
		cn, err := c.dial(c.ctx, idx, token)
		if err == nil {
			c.log.Info("pm: reconnected", "url", redactURL(cn.url), "attempt", attempt+1)
			return cn, nil
		}
		if c.ctx.Err() != nil {
			return nil, nil
		}
		if _, refused := errors.AsType[*pm.Error](err); refused {
			return nil, err
		}
		if ref, ok := errors.AsType[*RefusedError](err); ok {
			notBefore = ref.RetryAfter
		}
		c.log.Info("pm: reconnect failed", "url", redactURL(c.addrs[idx]), "attempt", attempt+1, "err", err)
	}
}

// retryDelay is the wait before a reconnect attempt: the backoff's, or
// after a refused upgrade at least the node's Retry-After plus up to half of
// it again at random, whichever is longer.
func retryDelay(backoff, retryAfter time.Duration) time.Duration {
	if retryAfter <= 0 {
		return backoff
	}
	return max(backoff, retryAfter+rand.N(retryAfter/2+1))
}

// sleep waits d, or returns false when the client stops first.
func (c *Client) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

func (c *Client) setConn(cn *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cur = cn
	close(c.up)
}

func (c *Client) clearConn(cn *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == cn {
		c.cur = nil
		c.up = make(chan struct{})
	}
}

// waitConn returns the current connection, waiting for one if needed.
func (c *Client) waitConn(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		cn, up := c.cur, c.up
		c.mu.Unlock()
		if cn != nil {
			return cn, nil
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.ctx.Done():
			return nil, context.Cause(c.ctx)
		}
	}
}

// received routes a message read from the node: the answer to a pending
// request (or a chunk of it) goes to its caller; work item changes (answers
// included, as the node does not echo a connection's own changes to it) and
// pushes go to the sync goroutine. Called on a connection's read goroutine;
// never blocks.
func (c *Client) received(m *pmv1.WebSocketMessage) {
	c.mu.Lock()
	waiter := c.pending[m.MessageId]
	c.mu.Unlock()
	if waiter != nil {
		waiter.deliver(m)
	}
	switch m.Payload.(type) {
	case *pmv1.WebSocketMessage_WorkItemCreated, *pmv1.WebSocketMessage_WorkItemUpdated,
		*pmv1.WebSocketMessage_WorkItemDeleted:
		c.inbox.push(m, waiter == nil)
	case *pmv1.WebSocketMessage_ResyncRequired, *pmv1.WebSocketMessage_SubscriptionRevoked:
		c.inbox.push(m, true)
	case *pmv1.WebSocketMessage_Error:
		if waiter == nil {
			e := m.GetError()
			c.log.Warn("pm: error for no pending request", "message_id", m.MessageId, "code", e.Code, "message", e.Message)
		}
	}
}

// newMessageID returns a fresh request id.
func newMessageID() string { return uuid.NewString() }
