package node

import (
	"encoding/binary"
	"net"
	"strconv"
	"sync"
	"time"
)

// A connection's frames are written by a flusher: a goroutine that exists
// only while the connection has something to send. It takes everything
// queued at that moment (events, answers, a due ping) and writes it in one
// vectored write: the WebSocket headers are built here, the payloads are
// the queued frames themselves, shared with every other subscriber of the
// same event and never copied. Under load, frames accumulate while the
// previous write is under way, so the busier the node, the more frames each
// system call carries.

// pingFrame is an unmasked WebSocket ping without payload (FIN, opcode 9).
var pingFrame = []byte{0x89, 0x00}

// maxHeaderBytes is the longest header of an unmasked server frame.
const maxHeaderBytes = 10

// appendHeader appends the header of an unmasked, final binary frame with
// a payload of n bytes (RFC 6455 §5.2).
func appendHeader(b []byte, n int) []byte {
	const finBinary = 0x82
	switch {
	case n < 126:
		return append(b, finBinary, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, finBinary, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, finBinary, 127), uint64(n))
	}
}

// batch is a flusher's scratch space, pooled between flushes so that an
// idle connection holds none.
type batch struct {
	frames  [][]byte
	headers []byte
	bufs    net.Buffers
	out     net.Buffers // bufs as the write consumes them
}

var batches = sync.Pool{New: func() any { return new(batch) }}

// build fills b.bufs with frames, each behind its header, after a ping
// when ping is set.
func (b *batch) build(frames [][]byte, ping bool) {
	b.headers = b.headers[:0]
	b.bufs = b.bufs[:0]
	if ping {
		b.bufs = append(b.bufs, pingFrame)
	}
	// Headers first, in one array that never grows while bufs points into it.
	if need := maxHeaderBytes * len(frames); cap(b.headers) < need {
		b.headers = make([]byte, 0, need)
	}
	for _, f := range frames {
		start := len(b.headers)
		b.headers = appendHeader(b.headers, len(f))
		b.bufs = append(b.bufs, b.headers[start:len(b.headers):len(b.headers)], f)
	}
}

// release clears the references b holds and returns it to the pool; a
// batch that grew for a burst is dropped rather than kept.
func (b *batch) release() {
	const keep = 256
	if cap(b.frames) > keep {
		return
	}
	clear(b.frames[:cap(b.frames)])
	clear(b.bufs[:cap(b.bufs)])
	b.frames, b.bufs, b.out = b.frames[:0], b.bufs[:0], nil
	batches.Put(b)
}

// startFlushLocked starts the flusher unless it runs, the connection is not
// up yet (run starts it then) or gone. c.mu is held.
func (c *session) startFlushLocked() {
	if c.flushing || c.ended || !c.live {
		return
	}
	c.flushing = true
	c.wg.Add(1)
	go c.flush()
}

// flush writes what is queued, batch after batch, until the queue is empty,
// then returns; after a close was requested it writes the close frame last
// and ends the connection.
func (c *session) flush() {
	defer c.wg.Done()
	for {
		b := batches.Get().(*batch)
		c.mu.Lock()
		if c.ended {
			c.flushing = false
			c.mu.Unlock()
			b.release()
			return
		}
		b.frames = append(b.frames, c.queue...)
		clear(c.queue)
		c.queue = c.queue[:0]
		size := c.queuedBytes
		c.sending, c.queuedBytes = size, 0
		ping := c.pingDue
		c.pingDue = false
		if len(b.frames) == 0 && !ping {
			closing, code, reason := c.closing, c.closeCode, c.closeReason
			if !closing {
				c.flushing = false
			}
			c.mu.Unlock()
			b.release()
			if closing {
				c.writeClose(code, reason)
			}
			return
		}
		c.mu.Unlock()
		c.signalProgress()

		b.build(b.frames, ping)
		b.out = b.bufs // the write consumes out; bufs keeps the array
		c.extendWriteDeadline()
		err := c.nc.writeBuffers(&b.out)
		n := len(b.frames)
		b.release()
		if err != nil {
			c.writeFailed("frames", size, err)
			c.mu.Lock()
			c.flushing = false
			c.mu.Unlock()
			return
		}
		c.srv.metrics.framesPerWrite.Observe(float64(n))
		c.mu.Lock()
		c.sending = 0
		c.mu.Unlock()
		c.written.Add(uint64(n))
		c.signalProgress()
	}
}

// extendWriteDeadline gives the next write at least half of WriteTimeout:
// when less than that is left, the deadline moves to WriteTimeout from now.
// Setting it on every write would cost a timer update per write for nothing.
// Only the flusher writes frames, and one flusher runs at a time.
func (c *session) extendWriteDeadline() {
	now := c.srv.cfg.Now()
	if c.writeDeadline.Sub(now) >= c.srv.cfg.WriteTimeout/2 {
		return
	}
	c.writeDeadline = now.Add(c.srv.cfg.WriteTimeout)
	_ = c.nc.SetWriteDeadline(c.writeDeadline)
}

// writeClose writes the close frame (through gws, which then refuses every
// other write) after everything queued before it. The write side is then
// shut: the reader ends when the client answers, or after the linger. The
// flusher stays marked as running, so nothing else is written.
func (c *session) writeClose(code uint16, reason string) {
	// Counted first: a client that has read the close frame finds it counted.
	c.srv.metrics.closes.WithLabelValues(strconv.Itoa(int(code))).Inc()
	_ = c.nc.SetWriteDeadline(c.srv.cfg.Now().Add(time.Second))
	_ = c.conn.WriteClose(code, []byte(reason))
}

// ping queues a ping for the flusher and sets the next one; it runs on
// its own timer, so an idle connection needs no goroutine for its pings.
func (c *session) ping() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.ended {
		return
	}
	c.pingDue = true
	c.startFlushLocked()
	c.pinger.Reset(c.srv.cfg.PingInterval)
}
