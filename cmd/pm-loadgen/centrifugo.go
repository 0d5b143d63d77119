package main

// The Centrifugo target (-target centrifugo) puts the same load on a
// Centrifugo cluster as on pm, for the side-by-side comparison of
// scripts/compare-centrifugo.sh: subscribers connect round-robin over the
// URLs (ws://host:port/connection/websocket), authenticate with an HS256
// token (-secret, Centrifugo's client.token.hmac_secret_key) and subscribe
// to one channel each (subscriber i to channel i mod -projects); writers
// publish from the client, one lane per channel as pm's writers own one item
// per project, and the reply to a publish is the request latency. The
// channels are <namespace>:loadgen-xxxxxxxx-N, fresh for each run; the
// namespace (-namespace, default loadgen) must allow subscribe and publish
// for clients (allow_subscribe_for_client, allow_publish_for_client).
//
// Each publication carries its send time, writer and sequence number. A
// subscriber counts a loss for every acknowledged publication on its channel
// it did not receive: every subscriber is subscribed before the first
// publication, so it must receive them all. Connections are not reconnected:
// a lost one loses what follows, and its close code is reported.
//
// The client is pm-loadgen's own, on gws: one reader goroutine per
// connection, which timestamps a frame when it reads it.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
)

// Like the pm SDK's defaults.
const (
	cfDialTimeout    = 5 * time.Second
	cfRequestTimeout = 10 * time.Second
)

// cfConn is one connection to Centrifugo.
type cfConn struct {
	ws     *gws.Conn
	onPub  func(now time.Time, channel string, pub *cfPublication) // on the reader goroutine
	onLost func(code uint16, reason string)                        // the server or network ended the connection

	mu      sync.Mutex
	nextID  uint32
	pending map[uint32]chan *cfReply
	lost    error // once the connection has ended: why, and calls fail with it

	closing atomic.Bool   // Close was called: the end is not a loss
	done    chan struct{} // closed when the reader has stopped
}

// cfClosedError is a call's error when the connection ended before the reply.
type cfClosedError struct {
	Code   uint16
	Reason string
}

func (e *cfClosedError) Error() string {
	return fmt.Sprintf("connection closed (%d %s)", e.Code, e.Reason)
}

// dialCF opens a connection and sends the connect command with token.
func dialCF(ctx context.Context, url, token string, onPub func(time.Time, string, *cfPublication), onLost func(uint16, string)) (*cfConn, error) {
	c := &cfConn{onPub: onPub, onLost: onLost, pending: map[uint32]chan *cfReply{}, done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(ctx, cfDialTimeout)
	defer cancel()
	// gws's handshake takes no context: the TCP connection is closed if ctx
	// ends first.
	var release func() bool
	dialer := dialFunc(func(network, addr string) (net.Conn, error) {
		var nd net.Dialer
		nc, err := nd.DialContext(ctx, network, addr)
		if err == nil {
			release = context.AfterFunc(ctx, func() { _ = nc.Close() })
		}
		return nc, err
	})
	ws, resp, err := gws.NewClient(c, &gws.ClientOption{
		Addr:             url,
		HandshakeTimeout: cfDialTimeout,
		Recovery:         gws.Recovery,
		NewDialer:        func() (gws.Dialer, error) { return dialer, nil },
	})
	if release != nil && !release() && err == nil {
		_ = ws.NetConn().Close()
		err = ctx.Err()
	}
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("centrifugo: dial %s: HTTP %d: %w", url, resp.StatusCode, err)
		}
		return nil, fmt.Errorf("centrifugo: dial %s: %w", url, err)
	}
	c.ws = ws
	go func() {
		defer close(c.done)
		ws.ReadLoop()
	}()
	if _, err := c.call(ctx, &cfCommand{Connect: &cfConnectRequest{Token: token}}); err != nil {
		c.Close()
		return nil, fmt.Errorf("centrifugo: connect %s: %w", url, err)
	}
	return c, nil
}

// dialFunc adapts a function to gws.Dialer.
type dialFunc func(network, addr string) (net.Conn, error)

func (f dialFunc) Dial(network, addr string) (net.Conn, error) { return f(network, addr) }

// call sends a command and waits for its reply; an error reply is a *cfError.
func (c *cfConn) call(ctx context.Context, cmd *cfCommand) (*cfReply, error) {
	ch := make(chan *cfReply, 1)
	c.mu.Lock()
	if c.lost != nil {
		err := c.lost
		c.mu.Unlock()
		return nil, err
	}
	c.nextID++
	cmd.ID = c.nextID
	c.pending[cmd.ID] = ch
	c.mu.Unlock()
	b, err := encodeCommand(cmd)
	if err == nil {
		err = c.ws.WriteMessage(gws.OpcodeText, b)
	}
	if err != nil {
		c.forget(cmd.ID)
		c.mu.Lock()
		if c.lost != nil {
			err = c.lost
		}
		c.mu.Unlock()
		return nil, fmt.Errorf("centrifugo: send: %w", err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			c.mu.Lock()
			defer c.mu.Unlock()
			return nil, c.lost
		}
		if r.Error != nil {
			return r, r.Error
		}
		return r, nil
	case <-ctx.Done():
		c.forget(cmd.ID)
		return nil, ctx.Err()
	}
}

func (c *cfConn) forget(id uint32) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

func (c *cfConn) subscribe(ctx context.Context, channel string) error {
	if _, err := c.call(ctx, &cfCommand{Subscribe: &cfSubscribeRequest{Channel: channel}}); err != nil {
		return fmt.Errorf("centrifugo: subscribe %s: %w", channel, err)
	}
	return nil
}

func (c *cfConn) publish(ctx context.Context, channel string, data cfStamp) error {
	_, err := c.call(ctx, &cfCommand{Publish: &cfPublishRequest{Channel: channel, Data: data}})
	return err
}

// Close ends the connection (close code 1000) and waits for its reader.
func (c *cfConn) Close() {
	c.closing.Store(true)
	_ = c.ws.WriteClose(1000, nil)
	<-c.done
}

// OnOpen implements gws.Event.
func (c *cfConn) OnOpen(*gws.Conn) {}

// OnClose implements gws.Event: it fails the calls still waiting and, unless
// Close was called, reports the loss.
func (c *cfConn) OnClose(_ *gws.Conn, err error) {
	lost := &cfClosedError{Code: 1006, Reason: "connection lost"}
	if ce, ok := errors.AsType[*gws.CloseError](err); ok {
		lost.Code, lost.Reason = ce.Code, string(ce.Reason)
	} else if err != nil {
		lost.Reason = err.Error()
	}
	c.mu.Lock()
	c.lost = lost
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	c.mu.Unlock()
	if !c.closing.Load() && c.onLost != nil {
		c.onLost(lost.Code, lost.Reason)
	}
}

// OnPing implements gws.Event.
func (c *cfConn) OnPing(_ *gws.Conn, payload []byte) { _ = c.ws.WriteMessage(gws.OpcodePong, payload) }

// OnPong implements gws.Event.
func (c *cfConn) OnPong(*gws.Conn, []byte) {}

// OnMessage implements gws.Event: it routes replies to their calls, hands
// publications to onPub and answers pings.
func (c *cfConn) OnMessage(_ *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	now := time.Now()
	err := decodeFrame(msg.Bytes(), func(r *cfReply, ping bool) {
		switch {
		case ping:
			_ = c.ws.WriteMessage(gws.OpcodeText, cfPing)
		case r.ID > 0:
			c.mu.Lock()
			ch := c.pending[r.ID]
			delete(c.pending, r.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- r // buffered for one: never blocks
			}
		case r.Push != nil && r.Push.Pub != nil && c.onPub != nil:
			c.onPub(now, r.Push.Channel, r.Push.Pub)
		}
	})
	if err != nil {
		_ = c.ws.WriteClose(1007, []byte("undecodable"))
	}
}

// closeCF closes connections, a few at a time.
func closeCF(cs []*cfConn) {
	_ = parallel(context.Background(), len(cs), 32, func(_, i int) error {
		if cs[i] != nil {
			cs[i].Close()
		}
		return nil
	})
}

// cfSubscriber is one subscriber connection on one channel.
type cfSubscriber struct {
	lg      *loadgen
	c       *cfConn
	channel int
	got     atomic.Int64 // distinct publications received

	mu         sync.Mutex
	seen       [][]uint64 // by writer: bit q set when publication q arrived
	duplicates int64
}

// onPub records one publication, on the connection's reader goroutine.
func (s *cfSubscriber) onPub(now time.Time, _ string, pub *cfPublication) {
	st := pub.Data
	s.lg.deliveredAll.Add(1)
	if s.mark(st.Writer, st.Seq) {
		s.got.Add(1)
	}
	if s.lg.measured(st.Sent) {
		s.lg.deliveries.Add(1)
		s.lg.delivery.Record(now.Sub(time.Unix(0, st.Sent)))
	}
}

// mark records publication seq of writer and says whether it is new.
func (s *cfSubscriber) mark(writer int, seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if writer < 0 || writer >= len(s.seen) || seq == 0 {
		return false // not one of this run's writers
	}
	if !setBit(&s.seen[writer], seq) {
		s.duplicates++
		return false
	}
	return true
}

// setBit sets bit i of a growing bitmap and says whether it was clear.
func setBit(bm *[]uint64, i uint64) bool {
	word := int(i / 64)
	for len(*bm) <= word {
		*bm = append(*bm, 0)
	}
	bit := uint64(1) << (i % 64)
	if (*bm)[word]&bit != 0 {
		return false
	}
	(*bm)[word] |= bit
	return true
}

func hasBit(bm []uint64, i uint64) bool {
	word := int(i / 64)
	return word < len(bm) && bm[word]&(1<<(i%64)) != 0
}

// cfLane is one writer's publications to one channel, one at a time.
type cfLane struct {
	lg      *loadgen
	c       *cfConn
	writer  int
	channel int
	name    string // the channel's name
	seq     uint64 // the last sequence number sent

	mu    sync.Mutex
	acked []uint64 // bit q set when publication q was acknowledged
	n     atomic.Int64
}

func (l *cfLane) send(ctx context.Context, sent time.Time) {
	l.seq++
	seq := l.seq
	callCtx, cancel := context.WithTimeout(ctx, cfRequestTimeout)
	err := l.c.publish(callCtx, l.name, newCFStamp(sent, l.writer, seq))
	cancel()
	took := time.Since(sent)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		l.lg.countError(cfErrorCode(err))
		return
	}
	l.mu.Lock()
	setBit(&l.acked, seq)
	l.mu.Unlock()
	l.n.Add(1)
	l.lg.writesAll.Add(1)
	if l.lg.measured(sent.UnixNano()) {
		l.lg.writes[l.channel].Add(1)
		l.lg.request.Record(took)
	}
}

// cfErrorCode names an error for the report: Centrifugo's code and message,
// or what else it is.
func cfErrorCode(err error) string {
	var ce *cfError
	var closed *cfClosedError
	switch {
	case errors.As(err, &ce):
		return strconv.Itoa(int(ce.Code)) + " " + ce.Message
	case errors.As(err, &closed):
		return "CLOSED_" + strconv.Itoa(int(closed.Code))
	case errors.Is(err, context.DeadlineExceeded):
		return "TIMEOUT"
	}
	return "OTHER"
}

// runCentrifugo connects, subscribes, loads, drains and checks, and returns
// the report.
func runCentrifugo(ctx context.Context, cfg config, stderr io.Writer) (*report, error) {
	lg := newLoadgen(cfg, stderr)
	channels := make([]string, cfg.projects)
	for i := range channels {
		channels[i] = lg.tenant + "-" + strconv.Itoa(i+1)
		if cfg.namespace != "" {
			channels[i] = cfg.namespace + ":" + channels[i]
		}
	}
	lg.progressf("run %s: %d channel(s) %s…, %d subscriber(s), %d writer(s)", lg.tenant, cfg.projects, channels[0], cfg.conns, cfg.writers)
	ttl := cfg.hold + cfg.warmup + cfg.duration + cfg.drain + time.Hour
	onLost := func(code uint16, _ string) {
		lg.disconnects.Add(1)
		lg.mu.Lock()
		lg.closeCodes[strconv.Itoa(int(code))]++
		lg.mu.Unlock()
	}
	dial := func(i int, user string, onPub func(time.Time, string, *cfPublication)) (*cfConn, error) {
		token, err := cfToken(lg.secret, user, ttl)
		if err != nil {
			return nil, err
		}
		return dialCF(ctx, cfg.urls[i%len(cfg.urls)], token, onPub, onLost)
	}

	var all []*cfConn
	defer func() { closeCF(all) }()
	writers := make([]*cfConn, cfg.writers)
	err := parallel(ctx, cfg.writers, setupConns, func(_, i int) error {
		c, err := dial(i, lg.tenant+"-writer-"+strconv.Itoa(i+1), nil)
		writers[i] = c
		return err
	})
	all = append(all, writers...)
	if err != nil {
		return nil, fmt.Errorf("writers: %w", err)
	}

	if err := lg.seededWait(ctx); err != nil {
		return nil, err
	}
	connecting := time.Now()
	subs := make([]*cfSubscriber, cfg.conns)
	conns := make([]*cfConn, cfg.conns)
	err = parallel(ctx, cfg.conns, setupConns, func(_, i int) error {
		s := &cfSubscriber{lg: lg, channel: i % cfg.projects, seen: make([][]uint64, cfg.writers+1)}
		c, err := dial(i, lg.tenant+"-sub-"+strconv.Itoa(i+1), s.onPub)
		if err != nil {
			return err
		}
		s.c, subs[i], conns[i] = c, s, c
		return c.subscribe(ctx, channels[s.channel])
	})
	all = append(all, conns...)
	if err != nil {
		return nil, fmt.Errorf("subscribers: %w", err)
	}
	if err := lg.subscribed(ctx, time.Since(connecting)); err != nil {
		return nil, err
	}
	if cfg.writers == 0 {
		return cfReport(lg, subs, nil, 0), nil
	}

	var lanes []*cfLane
	var ls []lane
	for w, c := range writers {
		for ch, name := range channels {
			l := &cfLane{lg: lg, c: c, writer: w + 1, channel: ch, name: name}
			lanes = append(lanes, l)
			ls = append(ls, l)
		}
	}
	start := time.Now()
	lg.from.Store(start.Add(cfg.warmup).UnixNano())
	lg.to.Store(start.Add(cfg.warmup + cfg.duration).UnixNano())
	stopProgress := lg.startProgress(start)
	lg.load(ctx, ls, start.Add(cfg.warmup+cfg.duration))
	if ctx.Err() != nil {
		stopProgress()
		return nil, ctx.Err()
	}
	drained := cfDrain(ctx, cfg, subs, lanes)
	stopProgress()
	return cfReport(lg, subs, lanes, drained), nil
}

// cfDrain waits up to -drain until every subscriber has received as many
// publications as were acknowledged on its channel, and returns how long
// that took.
func cfDrain(ctx context.Context, cfg config, subs []*cfSubscriber, lanes []*cfLane) time.Duration {
	want := make([]int64, cfg.projects)
	for _, l := range lanes {
		want[l.channel] += l.n.Load()
	}
	start := time.Now()
	deadline := start.Add(cfg.drain)
	for {
		behind := 0
		for _, s := range subs {
			if s.got.Load() < want[s.channel] {
				behind++
			}
		}
		if behind == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cfReport is the Centrifugo run's report: for every subscriber, each
// acknowledged publication on its channel arrived (live) or not (lost).
func cfReport(lg *loadgen, subs []*cfSubscriber, lanes []*cfLane, drained time.Duration) *report {
	subscribersOf := make([]int, lg.cfg.projects)
	for _, s := range subs {
		subscribersOf[s.channel]++
	}
	r := lg.baseReport(subscribersOf, drained)
	for _, s := range subs {
		live, lost := s.check(lanes)
		r.RevisionsLive += live
		r.Losses += lost
		if lost > 0 {
			r.SubscribersLosing++
		}
		s.mu.Lock()
		r.Duplicates += s.duplicates
		s.mu.Unlock()
	}
	return r
}

// check counts the acknowledged publications on the subscriber's channel it
// received and those it did not.
func (s *cfSubscriber) check(lanes []*cfLane) (live, lost int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range lanes {
		if l.channel != s.channel {
			continue
		}
		l.mu.Lock()
		var seen []uint64
		if l.writer < len(s.seen) {
			seen = s.seen[l.writer]
		}
		for word, bits := range l.acked {
			for b := range 64 {
				if bits&(1<<b) == 0 {
					continue
				}
				if hasBit(seen, uint64(word*64+b)) {
					live++
				} else {
					lost++
				}
			}
		}
		l.mu.Unlock()
	}
	return live, lost
}
