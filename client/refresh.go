package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// Refreshes start when between refreshFrom and refreshFrom+refreshJitter of
// the token's remaining lifetime has passed: early enough to retry a few
// times before the node closes the connection with 4500, and spread so that
// clients that connected together do not refresh together.
const (
	refreshFrom   = 0.70
	refreshJitter = 0.10
)

// refreshDelay is the wait before refreshing a token that expires in
// remaining.
func refreshDelay(remaining time.Duration) time.Duration {
	if remaining <= 0 {
		return 0
	}
	return time.Duration(float64(remaining) * (refreshFrom + refreshJitter*rand.Float64()))
}

// tokenExpiry reads a JWT's exp claim without verifying the token (the
// node does that); ok is false for a token that is no JWT or has no exp.
func tokenExpiry(token string) (exp time.Time, ok bool) {
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &claims); err != nil || claims.ExpiresAt == nil {
		return time.Time{}, false
	}
	return claims.ExpiresAt.Time, true
}

// refreshLoop keeps a connection's token fresh through Options.TokenSource:
// ahead of the token's expiry it asks the source for a new token and hands
// it to the node in band (RefreshTokenRequest), so the connection outlives
// its first token. A failure (the source's, or the node refusing the token)
// is retried with the reconnect backoff until the connection ends; if the
// token expires meanwhile, the node closes with 4500 and the client
// reconnects with a token from the source. It runs for the connection's
// life and only with a token source.
func (cn *conn) refreshLoop() {
	defer cn.wg.Done()
	c := cn.c
	exp, ok := tokenExpiry(cn.token)
	if !ok {
		c.log.Debug("pm: the token has no readable exp; it is not refreshed in band")
		return
	}
	t := time.NewTimer(refreshDelay(time.Until(exp)))
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-t.C:
		case <-cn.lost:
			return
		}
		next, err := cn.refresh(exp)
		switch {
		case err == nil:
			failures = 0
			exp = next
			t.Reset(refreshDelay(time.Until(exp)))
			continue
		case cn.gone():
			return
		}
		d := c.opts.Reconnect.Delay(failures)
		if perr, ok := errors.AsType[*pm.Error](err); ok && perr.RetryAfterMillis > 0 {
			d = max(d, time.Duration(perr.RetryAfterMillis)*time.Millisecond)
		}
		failures++
		c.log.Warn("pm: token refresh failed; retrying", "err", err, "retry_in", d, "expires_in", time.Until(exp).Round(time.Millisecond))
		t.Reset(d)
	}
}

// errNotNewer says that the token source returned no token that outlives
// the connection's.
var errNotNewer = errors.New("client: the token source returned no token that expires later than the connection's")

// refresh asks the source for a token that expires after exp and sends it
// on this connection. It returns the new expiry.
func (cn *conn) refresh(exp time.Time) (time.Time, error) {
	c := cn.c
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.DialTimeout)
	defer cancel()
	token, err := c.token(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if next, ok := tokenExpiry(token); !ok || !next.After(exp) {
		return time.Time{}, errNotNewer
	}
	resp, err := cn.request(ctx, &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_RefreshTokenRequest{
		RefreshTokenRequest: &pmv1.RefreshTokenRequest{Token: token},
	}})
	if err != nil {
		return time.Time{}, err
	}
	r := resp.GetTokenRefreshed()
	if r == nil {
		return time.Time{}, unexpected("TokenRefreshed", resp)
	}
	// The reconnect after a close compares the source's next token with
	// this one; run reads it only after the connection's goroutines ended.
	cn.token = token
	c.log.Debug("pm: token refreshed", "expires_at", time.UnixMilli(r.ExpiresAt))
	return time.UnixMilli(r.ExpiresAt), nil
}

// request sends m on this connection only and waits for its answer; an
// Error answer is a *pm.Error. Unlike Do it never re-sends on another
// connection: a refresh belongs to the connection it extends.
func (cn *conn) request(ctx context.Context, m *pmv1.WebSocketMessage) (*pmv1.WebSocketMessage, error) {
	c := cn.c
	m.MessageId, m.Timestamp = newMessageID(), time.Now().UnixMilli()
	frame, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	w := newWaiter()
	c.mu.Lock()
	c.pending[m.MessageId] = w
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, m.MessageId)
		c.mu.Unlock()
	}()
	if err := cn.write(frame); err != nil {
		return nil, err
	}
	select {
	case resp := <-w.answer:
		if e := resp.GetError(); e != nil {
			return nil, errorOf(e)
		}
		return resp, nil
	case <-cn.lost:
		return nil, errConnLost
	case <-ctx.Done():
		return nil, c.callError(ctx, ctx.Err())
	}
}

// errConnLost says that the connection ended before the answer came.
var errConnLost = errors.New("client: the connection was lost before the answer")

// gone reports whether the connection's reader has stopped.
func (cn *conn) gone() bool {
	select {
	case <-cn.lost:
		return true
	default:
		return false
	}
}
