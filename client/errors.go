package client

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/pmhq/pm"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// Errors the client returns besides *pm.Error (a node's answer) and context
// errors.
var (
	// ErrClosed: Close was called.
	ErrClosed = errors.New("client: closed")
	// ErrUnsubscribed ends a replica that Unsubscribe removed.
	ErrUnsubscribed = errors.New("client: unsubscribed")
	// ErrSubscriptionRevoked ends a replica whose subscription the node
	// revoked (e.g. the user was removed from the project).
	ErrSubscriptionRevoked = errors.New("client: subscription revoked")
	// ErrFrameTooLarge: a request is larger than Options.MaxFrameBytes.
	ErrFrameTooLarge = errors.New("client: request frame too large")
)

// CloseError is the close that stopped the client for good: a code the
// node uses for "don't reconnect until something changes" (1008, 4500–4999,
// e.g. 4500 token expired), with the node's reason.
type CloseError struct {
	Code   uint16
	Reason string
}

// Error implements the error interface.
func (e *CloseError) Error() string {
	return fmt.Sprintf("client: connection closed by the node with %d: %s", e.Code, e.Reason)
}

// RefusedError is an upgrade the node refused for a limit: HTTP 503 (the
// node is full, busy with a surge of new connections, or shutting down) or
// 429 (the tenant holds its cap of connections). Reconnects wait at least
// RetryAfter, plus jitter, before the next attempt.
type RefusedError struct {
	Status     int
	RetryAfter time.Duration // from the Retry-After header; 0 without one
}

// Error implements the error interface.
func (e *RefusedError) Error() string {
	if e.RetryAfter <= 0 {
		return fmt.Sprintf("client: the node refused the connection (HTTP %d)", e.Status)
	}
	return fmt.Sprintf("client: the node refused the connection (HTTP %d), retry after %v", e.Status, e.RetryAfter)
}

// refusal reads a refused upgrade's status and Retry-After (seconds).
func refusal(resp *http.Response) *RefusedError {
	if resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusTooManyRequests {
		return nil
	}
	e := &RefusedError{Status: resp.StatusCode}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		e.RetryAfter = time.Duration(secs) * time.Second
	}
	return e
}

// errorOf converts a wire Error to a *pm.Error.
func errorOf(e *pmv1.Error) *pm.Error {
	return &pm.Error{
		Code:             e.Code,
		Message:          e.Message,
		Field:            e.Field,
		CurrentVersion:   e.CurrentVersion,
		RetryAfterMillis: e.RetryAfterMs,
	}
}

// unexpected reports a response of the wrong type.
func unexpected(want string, m *pmv1.WebSocketMessage) error {
	return fmt.Errorf("client: expected %s in the response, got %T", want, m.Payload)
}
