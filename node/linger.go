package node

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// How long, and for how many bytes, a closing connection keeps reading what
// its client still sends. Closing a TCP socket with unread input makes the
// kernel reset the connection, and the reset destroys the close frame on
// its way (the client sees 1006 instead of, say, 1009): so the node shuts
// its write side, lets the client read the close frame and finish what it
// was sending, and closes once the client closes too, or at these bounds.
const (
	lingerTime  = 2 * time.Second
	lingerBytes = 8 << 20
)

// errLingerLimit ends reading a closing connection after lingerBytes.
var errLingerLimit = errors.New("node: closing connection: linger byte limit reached")

// lingerConn is the connection gws serves a WebSocket on. Its Close is
// graceful: it shuts the write side (a FIN follows the close frame) and
// bounds further reading by lingerTime and lingerBytes, but keeps the socket
// open; linger, called once the reader has stopped, drains the rest and
// closes the socket. abort closes at once.
type lingerConn struct {
	net.Conn

	pending   []byte // what the HTTP server had read ahead; read first (reader only)
	discarded int64  // bytes read since Close (reader only)

	closing atomic.Bool // Close was called: reads are bounded

	mu     sync.Mutex // serialises Close, abort and read deadlines
	closed bool       // the socket is closed

	// wmu keeps writes whole: gws writes each of its frames (pongs, the
	// close frame) in one Write, the flusher its batches in one
	// writeBuffers, from different goroutines.
	wmu sync.Mutex
}

func newLingerConn(c net.Conn, readAhead []byte) *lingerConn {
	return &lingerConn{Conn: c, pending: readAhead}
}

// Read reads from the client; after Close, at most lingerBytes in all.
func (l *lingerConn) Read(p []byte) (int, error) {
	if len(l.pending) > 0 {
		n := copy(p, l.pending)
		l.pending = l.pending[n:]
		return n, nil
	}
	if !l.closing.Load() {
		return l.Conn.Read(p)
	}
	if l.discarded >= lingerBytes {
		return 0, errLingerLimit
	}
	p = p[:min(int64(len(p)), lingerBytes-l.discarded)]
	n, err := l.Conn.Read(p)
	l.discarded += int64(n)
	return n, err
}

// Write writes p whole, never interleaved with another write.
func (l *lingerConn) Write(p []byte) (int, error) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	return l.Conn.Write(p)
}

// writeBuffers writes bufs whole, in one vectored write when the socket
// supports it (TCP does), never interleaved with another write.
func (l *lingerConn) writeBuffers(bufs *net.Buffers) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	_, err := bufs.WriteTo(l.Conn)
	return err
}

// Close shuts the write side after what was written and ends reading by
// lingerTime from now. Safe to call more than once.
func (l *lingerConn) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing.Load() || l.closed {
		return nil
	}
	l.closing.Store(true)
	cw, ok := l.Conn.(interface{ CloseWrite() error })
	if !ok {
		l.closed = true
		return l.Conn.Close()
	}
	_ = l.Conn.SetReadDeadline(time.Now().Add(lingerTime))
	return cw.CloseWrite()
}

// SetReadDeadline sets the read deadline, until Close set the last one.
func (l *lingerConn) SetReadDeadline(t time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing.Load() {
		return nil
	}
	return l.Conn.SetReadDeadline(t)
}

// SetDeadline sets both deadlines; after Close, only the write deadline.
func (l *lingerConn) SetDeadline(t time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing.Load() {
		return l.Conn.SetWriteDeadline(t)
	}
	return l.Conn.SetDeadline(t)
}

// linger, once nothing else reads the connection, closes it gracefully
// (Close) if that has not happened yet, discards what the client still
// sends until it closes its side or the linger bounds are reached, and
// closes the socket.
func (l *lingerConn) linger() {
	_ = l.Close()
	_, _ = io.Copy(io.Discard, l)
	l.abort()
}

// abort closes the socket at once, unsent and unread data or not: for a
// connection that is broken anyway. Safe to call more than once.
func (l *lingerConn) abort() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		l.closing.Store(true)
		_ = l.Conn.Close()
	}
}
