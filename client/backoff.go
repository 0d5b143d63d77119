package client

import (
	"math/rand/v2"
	"time"
)

// Backoff is the reconnect policy: exponential delays from Min to Max, each
// drawn at random from its upper half ("equal jitter") so that clients of a
// stopped node spread their reconnects.
type Backoff struct {
	// Min is the first delay. Default 100ms.
	Min time.Duration
	// Max caps the delay. Default 10s.
	Max time.Duration
}

func (b *Backoff) setDefaults() {
	if b.Min <= 0 {
		b.Min = 100 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = 10 * time.Second
	}
	b.Max = max(b.Max, b.Min)
}

// Delay returns the wait before retry number attempt (0 for the first).
func (b Backoff) Delay(attempt int) time.Duration {
	b.setDefaults()
	d := b.Max
	if attempt < 32 {
		d = min(b.Min<<attempt, b.Max)
		if d <= 0 { // overflow
			d = b.Max
		}
	}
	half := d / 2
	return half + rand.N(d-half+1)
}
