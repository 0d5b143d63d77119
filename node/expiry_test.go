package node

import (
	"testing"
	"time"
)

// A refresh and the expiry timer never race: the timer armed for the old
// token, firing once a refresh has armed a new one (as when it fired while
// the refresh held the connection's lock), closes nothing; the new one
// closes with 4500. A refresh after the close was decided is refused.
func TestStaleExpiryTimerDoesNotClose(t *testing.T) {
	c := &session{srv: newFlushServer(t), progress: make(chan struct{}, 1)}
	c.mu.Lock()
	c.armExpiryLocked(time.Now().Add(time.Hour))
	old := c.expiryGen
	c.mu.Unlock()
	if !c.extend(time.Now().Add(2 * time.Hour)) {
		t.Fatal("extend refused on an open connection")
	}
	c.expire(old)
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if closing {
		t.Fatal("the old token's timer closed a refreshed connection")
	}
	c.expire(c.expiryGen)
	c.mu.Lock()
	closing, code := c.closing, c.closeCode
	c.mu.Unlock()
	if !closing || code != CloseTokenExpired {
		t.Fatalf("current timer: closing %v with %d, want %d", closing, code, CloseTokenExpired)
	}
	if c.extend(time.Now().Add(3 * time.Hour)) {
		t.Fatal("a refresh extended a connection already closing for expiry")
	}
	c.mu.Lock()
	c.expiry.Stop()
	c.mu.Unlock()
}
