package node

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/lxzan/gws"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

const sessionKey = "pm.session"

// inboxSize bounds the decoded requests waiting for a connection's worker;
// when it is full the reader stops reading, which pushes back on the client.
const inboxSize = 32

// session is one client connection. Its reader is gws's ReadLoop, on the
// HTTP handler's goroutine; it answers bad frames itself and queues requests
// for the worker. The worker, which runs requests one at a time in arrival
// order, and the flusher, which writes the byte-bounded send queue, exist
// only while they have work (see kickWorker and startFlushLocked); pings and
// the token's expiry run on timers. So a connection that is neither
// requesting nor receiving holds one goroutine: its reader. The reader
// returns only after the other two.
type session struct {
	srv     *Server
	id      string // unique in the cluster: process instance / sequence
	actor   pm.Actor
	expires time.Time  // the token's expiry; c.mu guards it once run has started
	profile pm.Profile // from the token; the worker's own, and it records it
	limiter *rate.Limiter
	refused int  // frames refused by limiter in a row; the reader's own
	counted bool // the Quota counts the connection toward its tenant's cap
	conn    *gws.Conn
	nc      *lingerConn // conn's socket

	inbox   chan *pmv1.WebSocketMessage
	recheck chan uuid.UUID // projects whose role the worker checks again
	done    chan struct{}  // closed when the reader has stopped
	wg      sync.WaitGroup // the worker and the flusher, while they run

	// ctx is the parent of every request's context; it ends with the
	// connection (cancel) or the node.
	ctx    context.Context
	cancel context.CancelFunc

	pinger *time.Timer // queues the next ping

	mu          sync.Mutex
	expiry      *time.Timer // closes the connection when its token expires
	expiryGen   uint64      // bumped by every arming of expiry (see armExpiryLocked)
	live        bool        // run has the connection: the worker and the flusher may start
	working     bool        // the worker runs
	flushing    bool        // the flusher runs
	queue       [][]byte
	queuedBytes int    // bytes in queue
	sending     int    // bytes the flusher took and is writing
	queued      uint64 // frames ever queued; the last one's sequence number
	pingDue     bool   // a ping waits for the flusher
	closing     bool   // a close frame is pending or sent; nothing more is queued
	ended       bool   // the connection is gone; nothing is queued or written
	closeCode   uint16
	closeReason string
	written     atomic.Uint64 // frames written, in queue order
	progress    chan struct{} // capacity 1: the flusher took or wrote frames

	recorded      bool      // the profile was recorded; the worker's own
	writeDeadline time.Time // the socket's write deadline; the flusher's own

	subMu sync.Mutex
	subs  map[uuid.UUID]struct{}
}

var _ pm.Subscriber = (*session)(nil)

func (s *Server) newSession(id Identity) *session {
	sess := &session{
		srv:     s,
		id:      s.instance + "/" + strconv.FormatUint(s.seq.Add(1), 10),
		actor:   id.Actor,
		expires: id.Expires,
		profile: id.Profile,
		inbox:   make(chan *pmv1.WebSocketMessage, inboxSize),
		recheck: make(chan uuid.UUID, inboxSize),
		done:    make(chan struct{}),
		subs:    make(map[uuid.UUID]struct{}),
	}
	sess.ctx, sess.cancel = context.WithCancel(s.ctx)
	if s.cfg.RatePerSecond > 0 {
		sess.limiter = rate.NewLimiter(rate.Limit(s.cfg.RatePerSecond), s.cfg.RateBurst)
	}
	sess.progress = make(chan struct{}, 1)
	return sess
}

// run serves the connection until it closes.
func (c *session) run(conn *gws.Conn) {
	log := c.srv.log.With("conn", c.id, "tenant", c.actor.Tenant, "user", c.actor.User)
	c.srv.metrics.connections.Inc()
	defer c.srv.metrics.connections.Dec()
	log.Info("connected", "remote", conn.RemoteAddr().String())

	// The session is tracked (Shutdown may close it) before it runs: what
	// was queued or closed meanwhile goes out now.
	c.mu.Lock()
	c.conn, c.live = conn, true
	c.pinger = time.AfterFunc(c.srv.cfg.PingInterval, c.ping)
	c.armExpiryLocked(c.expires)
	if c.closing || len(c.queue) > 0 {
		c.startFlushLocked()
	}
	c.mu.Unlock()
	c.kickWorker() // records the profile before any request
	_ = conn.SetReadDeadline(c.srv.cfg.Now().Add(2 * c.srv.cfg.PingInterval))
	conn.ReadLoop() // returns when the connection is closed, by either side
	c.mu.Lock()
	c.ended, c.queue, c.queuedBytes = true, nil, 0
	c.pinger.Stop()
	c.expiry.Stop()
	c.mu.Unlock()
	close(c.done)
	c.cancel() // the request under way, if any, ends (after done: see gone)
	c.wg.Wait()
	// Only now: until the worker has returned, a subscribe under way could
	// still register the connection.
	c.srv.cfg.Fanout.UnsubscribeAll(c)
	log.Info("disconnected")
}

// events adapts gws's callbacks to sessions. gws recovers panics only in
// OnMessage; the other callbacks do nothing that can panic.
type events struct{}

func sessionOf(conn *gws.Conn) *session {
	v, _ := conn.Session().Load(sessionKey)
	return v.(*session)
}

func (events) OnOpen(*gws.Conn) {}

func (events) OnClose(*gws.Conn, error) {}

func (events) OnPing(conn *gws.Conn, payload []byte) {
	c := sessionOf(conn)
	c.refreshDeadline()
	// The writer set the deadline at its last frame; give the pong its own.
	_ = conn.SetWriteDeadline(c.srv.cfg.Now().Add(c.srv.cfg.WriteTimeout))
	_ = conn.WritePong(payload)
}

func (events) OnPong(conn *gws.Conn, _ []byte) { sessionOf(conn).refreshDeadline() }

// OnMessage decodes a frame and hands it to the worker. Bad frames are
// answered here, so a flood of garbage cannot queue up work; every frame,
// valid or not, counts against the connection's rate limit.
func (events) OnMessage(conn *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	c := sessionOf(conn)
	if c.isClosing() {
		return // requests that cross the close frame are not run
	}
	c.refreshDeadline()
	if !c.allow(msg) {
		return
	}
	if msg.Opcode != gws.OpcodeBinary {
		c.srv.metrics.invalidFrames.Inc()
		c.sendError("", &pm.Error{Code: pm.EInvalid, Message: "frames must be binary protobuf WebSocketMessage"})
		return
	}
	req, perr := decodeRequest(msg.Bytes())
	if perr != nil {
		c.srv.metrics.invalidFrames.Inc()
		c.sendError(replyID(req), perr)
		return
	}
	select {
	case c.inbox <- req:
		c.kickWorker()
	case <-c.done:
	}
}

// allow applies the rate limit to a frame. A refused frame is answered
// RATE_LIMITED (with its message_id when it has a readable one); a client
// that goes on sending twice a burst's worth of frames (at least 20) in a row
// while refused is closed with 1008.
func (c *session) allow(msg *gws.Message) bool {
	if c.limiter == nil || c.limiter.Allow() {
		c.refused = 0
		return true
	}
	c.refused++
	limit := max(2*c.srv.cfg.RateBurst, 20)
	if c.refused > limit+1 {
		return false // closing already; the rest is dropped unread
	}
	var req *pmv1.WebSocketMessage
	if msg.Opcode == gws.OpcodeBinary {
		req, _ = decodeRequest(msg.Bytes())
	}
	op := "invalid"
	if req != nil && operation(req) != "" {
		op = operation(req)
	}
	c.srv.metrics.requests.WithLabelValues(op, pm.ERateLimited).Inc()
	if c.refused > limit {
		c.srv.metrics.rateLimitCloses.Inc()
		c.srv.log.Warn("closing a connection that ignores the rate limit", "conn", c.id, "tenant", c.actor.Tenant, "user", c.actor.User)
		c.close(ClosePolicy, "rate limit exceeded repeatedly")
		return false
	}
	c.sendError(replyID(req), &pm.Error{
		Code: pm.ERateLimited, Message: "too many requests on this connection",
		RetryAfterMillis: max(int64(1000/c.srv.cfg.RatePerSecond), 1),
	})
	return false
}

// decodeRequest decodes a binary frame into a request. On failure it
// returns an INVALID_MESSAGE error and, when the frame decoded, the message
// (for its message_id).
func decodeRequest(data []byte) (*pmv1.WebSocketMessage, *pm.Error) {
	var req pmv1.WebSocketMessage
	if err := proto.Unmarshal(data, &req); err != nil {
		return nil, &pm.Error{Code: pm.EInvalid, Message: "frame is not a valid WebSocketMessage"}
	}
	if err := checkEnvelope(&req); err != nil {
		return &req, err
	}
	return &req, nil
}

// checkEnvelope checks what every request needs: a usable message_id and a
// payload a client may send.
func checkEnvelope(m *pmv1.WebSocketMessage) *pm.Error {
	switch {
	case m.MessageId == "":
		return &pm.Error{Code: pm.EInvalid, Field: "message_id", Message: "message_id is required"}
	case len(m.MessageId) > pm.MessageIDMaxBytes:
		return &pm.Error{Code: pm.EInvalid, Field: "message_id", Message: "message_id is longer than " + strconv.Itoa(pm.MessageIDMaxBytes) + " bytes"}
	case !validMessageID(m.MessageId):
		return &pm.Error{Code: pm.EInvalid, Field: "message_id", Message: "message_id must be printable ASCII"}
	}
	if operation(m) == "" {
		return &pm.Error{Code: pm.EInvalid, Field: "payload", Message: "unknown or missing payload: not a request"}
	}
	return nil
}

func validMessageID(id string) bool {
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// replyID is the message_id to answer with: the request's, when it is usable.
func replyID(m *pmv1.WebSocketMessage) string {
	if m != nil && len(m.MessageId) <= pm.MessageIDMaxBytes && validMessageID(m.MessageId) {
		return m.MessageId
	}
	return ""
}

func (c *session) refreshDeadline() {
	_ = c.conn.SetReadDeadline(c.srv.cfg.Now().Add(2 * c.srv.cfg.PingInterval))
}

// kickWorker starts the worker unless it runs, the connection is not up
// yet (run starts it) or gone.
func (c *session) kickWorker() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.working || c.ended || !c.live {
		return
	}
	c.working = true
	c.wg.Add(1)
	go c.work()
}

// work records the user's profile the first time, then runs requests (and
// role checks) in arrival order until there are none or the reader stops.
// Whoever queues work calls kickWorker after: the worker decides that it is
// out of work under c.mu, so work queued before that decision is run, and
// work queued after it starts a new worker.
func (c *session) work() {
	defer c.wg.Done()
	if !c.recorded {
		c.recorded = true
		c.recordProfile()
	}
	for {
		select {
		case <-c.done:
			c.stopWorking()
			return
		default:
		}
		select {
		case req := <-c.inbox:
			c.handle(req)
			continue
		case project := <-c.recheck:
			c.recheckRole(project)
			continue
		default:
		}
		c.mu.Lock()
		if len(c.inbox) == 0 && len(c.recheck) == 0 || c.ended {
			c.working = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}

func (c *session) stopWorking() {
	c.mu.Lock()
	c.working = false
	c.mu.Unlock()
}

// recordProfile stores the name and email of the connection's token, off
// the upgrade's path but before the connection's first request, so that the
// user's own requests already see them. The store writes only what changed.
// A failure costs the profile only: it is logged, and the connection serves.
func (c *session) recordProfile() {
	if c.profile.Empty() {
		return
	}
	ctx, cancel := c.requestContext()
	defer cancel()
	if err := c.srv.cfg.Store.RecordProfile(ctx, c.actor, c.profile); err != nil && c.ctx.Err() == nil {
		c.srv.log.Warn("could not record the user's name and email", "conn", c.id,
			"tenant", c.actor.Tenant, "user", c.actor.User, "err", err)
	}
}

// writeFailed logs and counts a write the connection could not take (it
// timed out, the peer went away, or gws refused the frame) and ends the
// connection: frames behind it would arrive out of context.
func (c *session) writeFailed(what string, bytes int, err error) {
	c.srv.metrics.writeErrors.Inc()
	c.srv.log.Warn("write failed; dropping the connection", "conn", c.id, "write", what, "bytes", bytes, "err", err)
	c.abort()
}

// abort ends the connection without a close handshake; the reader sees
// the error and stops.
func (c *session) abort() { c.nc.abort() }

// isClosing reports whether a close frame is pending or sent.
func (c *session) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// enqueue queues a frame for the writer without blocking. A connection
// whose queue would exceed its byte limit is a slow consumer: its queue is
// dropped and it is closed with 4000, so it reconnects and resyncs.
func (c *session) enqueue(frame []byte) {
	c.mu.Lock()
	if c.closing || c.ended {
		c.mu.Unlock()
		return
	}
	// A frame larger than the whole limit still goes out alone, after the
	// queue drained; the frames being written count until they are.
	if c.queuedBytes > 0 && c.queuedBytes+c.sending+len(frame) > c.srv.cfg.SendQueueBytes {
		c.queue, c.queuedBytes = nil, 0
		c.closing, c.closeCode, c.closeReason = true, CloseSlowConsumer, closeReasonTooSlow
		c.srv.metrics.slowConsumers.Inc()
		c.srv.log.Warn("slow consumer disconnected", "conn", c.id, "limit_bytes", c.srv.cfg.SendQueueBytes)
		c.startFlushLocked()
		c.mu.Unlock()
		return
	}
	c.queue = append(c.queue, frame)
	c.queuedBytes += len(frame)
	c.queued++
	c.startFlushLocked()
	c.mu.Unlock()
}

// errUndelivered says that the connection closed before an answer was
// queued or written in full.
var errUndelivered = errors.New("the connection closed before the answer was delivered")

// enqueueWait queues one frame of a streamed answer (a chunked load) once
// the send queue has room for it: the queue is empty, or stays within half
// of SendQueueBytes with the frame, which leaves the other half to events
// and their non-blocking slow-consumer rule. It returns the frame's
// sequence number (for waitWritten), errUndelivered when the connection is
// closing or closed, and ctx's error when ctx ends first. Only the worker
// waits.
func (c *session) enqueueWait(ctx context.Context, frame []byte) (uint64, error) {
	for {
		c.mu.Lock()
		if c.closing || c.ended {
			c.mu.Unlock()
			return 0, errUndelivered
		}
		pending := c.queuedBytes + c.sending
		if pending == 0 || pending+len(frame) <= c.srv.cfg.SendQueueBytes/2 {
			c.queue = append(c.queue, frame)
			c.queuedBytes += len(frame)
			c.queued++
			seq := c.queued
			c.startFlushLocked()
			c.mu.Unlock()
			return seq, nil
		}
		c.mu.Unlock()
		select {
		case <-c.progress:
		case <-c.done:
			return 0, errUndelivered
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// waitWritten waits until the writer has written the frame with sequence
// number seq. It returns errUndelivered when the connection closes first
// (e.g. its queue was dropped as a slow consumer's), and ctx's error when
// ctx ends first. Only the worker waits.
func (c *session) waitWritten(ctx context.Context, seq uint64) error {
	for c.written.Load() < seq {
		select {
		case <-c.progress:
		case <-c.done:
			if c.written.Load() >= seq {
				return nil
			}
			return errUndelivered
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// close sends a close frame with code after the frames already queued.
func (c *session) close(code uint16, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(code, reason)
}

// closeLocked is close with c.mu held.
func (c *session) closeLocked(code uint16, reason string) {
	if c.closing || c.ended {
		return
	}
	c.closing, c.closeCode, c.closeReason = true, code, reason
	c.startFlushLocked()
}

func (c *session) signalProgress() {
	select {
	case c.progress <- struct{}{}:
	default:
	}
}

// send encodes and queues a message.
func (c *session) send(m *pmv1.WebSocketMessage) {
	frame, err := proto.Marshal(m)
	if err != nil {
		c.srv.log.Error("encode message", "conn", c.id, "err", err)
		return
	}
	c.enqueue(frame)
}

func (c *session) sendError(messageID string, e *pm.Error) {
	c.send(&pmv1.WebSocketMessage{
		MessageId: messageID,
		Timestamp: c.srv.cfg.Now().UnixMilli(),
		Payload:   &pmv1.WebSocketMessage_Error{Error: wireError(e)},
	})
}

// SubscriberID implements pm.Subscriber.
func (c *session) SubscriberID() string { return c.id }

// UserID implements pm.Subscriber.
func (c *session) UserID() uuid.UUID { return c.actor.User }

// Deliver implements pm.Subscriber: the frame is shared, never modified.
func (c *session) Deliver(frame []byte) { c.enqueue(frame) }

// ResyncRequired implements pm.Subscriber. Events may have been lost, and a
// membership removal is an event too: the worker also checks the
// connection's role in the project again.
func (c *session) ResyncRequired(project uuid.UUID, reason string) {
	c.send(c.push(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_ResyncRequired{
		ResyncRequired: &pmv1.ResyncRequired{ProjectIds: []string{project.String()}, Reason: reason},
	}}))
	select {
	case c.recheck <- project:
		c.kickWorker()
	default: // checks already queued; the client's resync request is checked anyway
	}
}

// recheckRole ends the subscription to a project the user may no longer view.
func (c *session) recheckRole(project uuid.UUID) {
	c.subMu.Lock()
	_, subscribed := c.subs[project]
	c.subMu.Unlock()
	if !subscribed {
		return
	}
	ctx, cancel := c.requestContext()
	defer cancel()
	_, err := c.srv.cfg.Store.ProjectRevision(ctx, c.actor, project)
	switch pm.ErrorCode(err) {
	case pm.EUnauthorized, pm.ENotFound:
		c.srv.cfg.Fanout.Unsubscribe(pm.ProjectKey{Tenant: c.actor.Tenant, Project: project}, c)
		c.SubscriptionRevoked(project, "no longer a member of the project")
	}
}

// SubscriptionRevoked implements pm.Subscriber.
func (c *session) SubscriptionRevoked(project uuid.UUID, reason string) {
	c.subMu.Lock()
	delete(c.subs, project)
	c.subMu.Unlock()
	c.send(c.push(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_SubscriptionRevoked{
		SubscriptionRevoked: &pmv1.SubscriptionRevoked{ProjectId: project.String(), Reason: reason},
	}}))
}

// push stamps a server-initiated message with a fresh message_id, so that
// clients can tell it from the response to one of their requests.
func (c *session) push(m *pmv1.WebSocketMessage) *pmv1.WebSocketMessage {
	return stampPush(m, c.srv.cfg.Now())
}

func stampPush(m *pmv1.WebSocketMessage, now time.Time) *pmv1.WebSocketMessage {
	m.MessageId = "srv-" + uuid.NewString()
	m.Timestamp = now.UnixMilli()
	return m
}

// requestContext bounds one request's work; it ends early when the
// connection closes or the node shuts down.
func (c *session) requestContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.ctx, c.srv.cfg.RequestTimeout)
}
