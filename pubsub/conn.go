package pubsub

import (
	"context"
	"errors"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"
)

// subConn is one subscriber connection: the only one when unsharded, one per
// master in sharded mode. Its reader goroutine is the only caller of
// ps.Receive*; the reconciler is the only one to change its subscriptions.
type subConn struct {
	addr   string // master address in sharded mode on a cluster
	ps     *redis.PubSub
	refs   int         // topics whose conn it is; under Hub.mu
	up     atomic.Bool // has received something since it last broke
	closed atomic.Bool // set before ps.Close by the hub
}

// handoff is a message on its way from a reader to the fan-out.
type handoff struct {
	channel, payload string
}

// read receives from sc until the hub closes it.
//
// go-redis reconnects and resubscribes by itself when a read or write fails,
// but drops whatever was published in between, so every failure resets the
// topics sc carries (see topic). A connection silent for pingInterval gets a
// PING, and the next read is bounded by pongTimeout with a context deadline,
// which go-redis treats as a broken connection (unlike ReceiveTimeout's own
// timeout), so a half-open connection is replaced too.
func (h *Hub) read(sc *subConn) {
	defer h.wg.Done()
	var (
		probing  bool // a PING is out
		failures int  // consecutive connection failures
	)
	for {
		var (
			msg any
			err error
		)
		if probing {
			ctx, cancel := context.WithTimeout(h.ctx, h.pongTimeout)
			msg, err = sc.ps.Receive(ctx)
			cancel()
		} else {
			msg, err = sc.ps.ReceiveTimeout(h.ctx, h.pingInterval)
		}
		if sc.closed.Load() {
			return
		}
		if err != nil {
			var reply redis.Error
			switch {
			case !probing && isTimeout(err) && !isDial(err):
				if err := sc.ps.Ping(h.ctx); err != nil {
					// go-redis replaced the connection (or has none).
					h.connLost(sc, err)
				} else {
					probing = true
				}
				continue
			case errors.As(err, &reply):
				// An error reply; the connection is fine.
				probing = false
				h.replyError(sc, reply)
				continue
			}
			probing = false
			h.connLost(sc, err)
			failures++
			if !h.pause(backoff(failures)) {
				return
			}
			continue
		}
		probing, failures = false, 0
		sc.up.Store(true)
		switch m := msg.(type) {
		case *redis.Message:
			h.received(m)
		case *redis.Subscription:
			h.confirmed(sc, m.Kind, m.Channel)
		}
	}
}

// connLost handles a broken subscriber connection.
func (h *Hub) connLost(sc *subConn, err error) {
	if sc.up.Swap(false) {
		h.m.reconnects.Inc()
		h.log.Warn("redis pub/sub connection broke; resubscribing", "shard", sc.addr, "err", err)
	} else {
		h.log.Debug("redis pub/sub connection still down", "shard", sc.addr, "err", err)
	}
	h.mu.Lock()
	h.resetLocked(sc)
	h.mu.Unlock()
}

// replyError handles an error reply read from sc.
func (h *Hub) replyError(sc *subConn, reply redis.Error) {
	msg := reply.Error()
	switch {
	case strings.HasPrefix(msg, "CROSSSLOT"):
		// After reconnecting, go-redis resubscribed every shard channel of
		// sc in one SSUBSCRIBE, which Redis Cluster refuses when they span
		// slots: resubscribe slot by slot.
		h.log.Debug("redis pub/sub: resubscribing shard channels slot by slot", "shard", sc.addr)
		if sc.up.Swap(false) {
			h.m.reconnects.Inc()
		}
		h.mu.Lock()
		h.resetLocked(sc)
		for _, t := range h.topics {
			if t.conn == sc && t.requested {
				t.resend = true
				h.markDirtyLocked(t)
			}
		}
		h.mu.Unlock()
	case strings.HasPrefix(msg, "MOVED ") || strings.HasPrefix(msg, "ASK "):
		// A slot sc subscribed has another master now.
		f := strings.Fields(msg)
		s, err := strconv.Atoi(f[1])
		if err != nil {
			h.log.Warn("redis pub/sub: unreadable redirect", "shard", sc.addr, "reply", msg)
			return
		}
		moved := 0
		h.mu.Lock()
		for _, t := range h.topics {
			if t.conn == sc && t.slot == s {
				h.detachLocked(t)
				moved++
			}
		}
		h.mu.Unlock()
		if moved > 0 {
			h.log.Info("redis pub/sub: slot moved; resubscribing its channels on their new master",
				"shard", sc.addr, "slot", s, "channels", moved)
		}
	default:
		h.log.Warn("redis pub/sub: error reply", "shard", sc.addr, "reply", msg)
	}
}

// received hands an event to the fan-out without ever waiting for it.
func (h *Hub) received(m *redis.Message) {
	h.m.received.Inc()
	select {
	case h.queue <- handoff{channel: m.Channel, payload: m.Payload}:
		return
	default:
	}
	h.m.drops.Inc()
	t := h.lookup(m.Channel)
	if t == nil {
		return
	}
	if user, ok := removedUser(m.Payload); ok {
		// Never drop a removal: the removed user must stop hearing.
		h.applyRemoval(t, user)
		return
	}
	h.mu.Lock()
	h.noticeLocked(t, ReasonEventsDropped)
	h.mu.Unlock()
}

// removedUser reports whether payload is a BusEvent about a removed member,
// without decoding the rest of it.
func removedUser(payload string) (string, bool) {
	b := []byte(payload)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", false
		}
		b = b[n:]
		if num == 11 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", false
			}
			return string(v), true
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return "", false
		}
		b = b[n:]
	}
	return "", false
}

// reconcileLoop runs the reconciler: the only goroutine that changes what the
// subscriber connections subscribe, so that the commands for a channel reach
// Redis in the order they were decided.
func (h *Hub) reconcileLoop() {
	defer h.wg.Done()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	var delay time.Duration
	for {
		select {
		case <-h.done:
			return
		case <-h.wakeSync:
		case <-retry.C:
		}
		if h.reconcile() {
			delay = min(max(2*delay, 100*time.Millisecond), 5*time.Second)
			retry.Reset(delay)
		} else {
			delay = 0
		}
	}
}

// reconcile brings the subscriber connections in line with the dirty topics.
// It reports whether some topic could not be routed and needs another try.
func (h *Hub) reconcile() (retry bool) {
	type pendingSub struct {
		t     *topic
		route bool // has no connection yet
	}
	var (
		subs     []pendingSub
		unsubs   = make(map[*subConn][]string)
		resends  = make(map[*subConn][]string)
		detached map[*subConn][]string
		reload   bool
	)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return false
	}
	dirty := h.dirty
	h.dirty = nil
	for _, t := range dirty {
		t.dirty = false
		if h.topics[t.name] != t {
			continue
		}
		wanted := t.wanted()
		switch {
		case wanted && !t.requested:
			subs = append(subs, pendingSub{t: t, route: t.conn == nil})
		case !wanted && t.requested:
			t.requested = false
			h.m.channels.Dec()
			t.resend = false
			t.pending++
			unsubs[t.conn] = append(unsubs[t.conn], t.name)
			h.settleLocked(t)
		case t.requested && t.resend:
			t.resend = false
			t.pending++
			resends[t.conn] = append(resends[t.conn], t.name)
		}
	}
	detached, h.detached = h.detached, make(map[*subConn][]string)
	reload, h.reload = h.reload, false
	h.mu.Unlock()

	// Route new channels (I/O in sharded mode on a cluster). After a MOVED
	// the cluster map is reloading: route on the next pass, a little later.
	routes := make(map[*topic]string, len(subs))
	var unrouted []*topic
	if reload && h.cluster != nil {
		h.cluster.ReloadState(h.ctx)
	}
	for _, s := range subs {
		if !s.route {
			continue
		}
		if reload && h.cluster != nil {
			unrouted = append(unrouted, s.t)
			continue
		}
		addr, err := h.route(s.t.name)
		if err != nil {
			h.log.Warn("redis pub/sub: cannot route channel", "channel", s.t.name, "err", err)
			unrouted = append(unrouted, s.t)
			continue
		}
		routes[s.t] = addr
	}

	adds := make(map[*subConn][]string)
	var fresh []*subConn
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return false
	}
	for _, t := range unrouted {
		if !t.dirty {
			t.dirty = true
			h.dirty = append(h.dirty, t) // retried by the timer
		}
	}
	for _, s := range subs {
		t := s.t
		if h.topics[t.name] != t || !t.wanted() || t.requested {
			continue // changed meanwhile
		}
		if t.conn == nil {
			addr, ok := routes[t]
			if !ok {
				continue
			}
			sc := h.conns[addr]
			if sc == nil {
				sc = &subConn{addr: addr, ps: h.newPubSub()}
				h.conns[addr] = sc
				fresh = append(fresh, sc)
			}
			t.conn = sc
			sc.refs++
		}
		t.requested = true
		h.m.channels.Inc()
		t.pending++
		adds[t.conn] = append(adds[t.conn], t.name)
		h.settleLocked(t)
	}
	h.mu.Unlock()

	for sc, names := range detached {
		h.send(sc, false, names, nil)
	}
	for sc, names := range unsubs {
		h.send(sc, false, names, func(failed []string) {
			// No confirmation will come for an UNSUBSCRIBE that did not
			// go out (go-redis has already forgotten the channel).
			h.mu.Lock()
			defer h.mu.Unlock()
			for _, name := range failed {
				if t := h.topics[name]; t != nil && t.conn == sc && t.pending > 0 {
					t.pending--
					h.settleLocked(t)
				}
			}
		})
	}
	// A (S)SUBSCRIBE that fails needs nothing: the channel is in the
	// PubSub's set, so go-redis subscribes it with the next connection.
	for sc, names := range adds {
		h.send(sc, true, names, nil)
	}
	for sc, names := range resends {
		h.send(sc, true, names, nil)
	}
	h.mu.Lock()
	for _, sc := range fresh {
		// Start reading only now: a sharded PubSub picks its node from
		// its first channels.
		if !h.closed {
			h.wg.Add(1)
			go h.read(sc)
		}
	}
	h.mu.Unlock()
	h.closeIdle()
	return len(unrouted) > 0
}

// send (un)subscribes names on sc, one command per slot in sharded mode
// (Redis Cluster wants that) and in chunks otherwise. failed, if not nil, gets
// the names of commands that returned an error.
func (h *Hub) send(sc *subConn, subscribe bool, names []string, failed func([]string)) {
	if sc.closed.Load() || len(names) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(h.ctx, commandTimeout)
	defer cancel()
	for _, group := range h.groups(names) {
		var err error
		switch {
		case !h.sharded && subscribe:
			err = sc.ps.Subscribe(ctx, group...)
		case !h.sharded:
			err = sc.ps.Unsubscribe(ctx, group...)
		case subscribe:
			err = sc.ps.SSubscribe(ctx, group...)
		default:
			err = sc.ps.SUnsubscribe(ctx, group...)
		}
		if err != nil && !sc.closed.Load() {
			h.log.Debug("redis pub/sub: (un)subscribe not sent; go-redis retries with the next connection",
				"shard", sc.addr, "subscribe", subscribe, "channels", len(group), "err", err)
			if failed != nil {
				failed(group)
			}
		}
	}
}

// groups splits names into commands: per hash slot in sharded mode, in chunks
// of at most 512 channels.
func (h *Hub) groups(names []string) [][]string {
	const chunk = 512
	var out [][]string
	if !h.sharded {
		for c := range slices.Chunk(names, chunk) {
			out = append(out, c)
		}
		return out
	}
	bySlot := make(map[int][]string)
	for _, n := range names {
		bySlot[slot(n)] = append(bySlot[slot(n)], n)
	}
	for _, s := range slices.Sorted(maps.Keys(bySlot)) {
		for c := range slices.Chunk(bySlot[s], chunk) {
			out = append(out, c)
		}
	}
	return out
}

// closeIdle closes shard connections no topic uses any more.
func (h *Hub) closeIdle() {
	if !h.sharded {
		return
	}
	var idle []*subConn
	h.mu.Lock()
	for addr, sc := range h.conns {
		if sc.refs == 0 {
			delete(h.conns, addr)
			delete(h.detached, sc)
			sc.closed.Store(true)
			idle = append(idle, sc)
		}
	}
	h.mu.Unlock()
	for _, sc := range idle {
		_ = sc.ps.Close()
	}
}

// route returns the address of the master that owns channel's slot, or ""
// when there is only one subscriber connection.
func (h *Hub) route(channel string) (string, error) {
	if h.cluster == nil {
		return "", nil
	}
	ctx, cancel := context.WithTimeout(h.ctx, commandTimeout)
	defer cancel()
	c, err := h.cluster.MasterForKey(ctx, channel)
	if err != nil {
		return "", err
	}
	return c.Options().Addr, nil
}

func (h *Hub) newPubSub() *redis.PubSub {
	if h.sharded {
		return h.rdb.SSubscribe(h.ctx)
	}
	return h.rdb.Subscribe(h.ctx)
}

// pause waits d, or until the hub closes (reporting false).
func (h *Hub) pause(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-h.done:
		return false
	}
}

// backoff is the wait after the n-th consecutive connection failure: none
// after the first (go-redis has usually reconnected already), then from
// 100ms doubling to 2s.
func backoff(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	return min(100*time.Millisecond<<min(n-2, 5), 2*time.Second)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isDial reports whether err is a failure to connect.
func isDial(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// slot is the Redis Cluster hash slot of key: CRC16 (XMODEM) of the key, or
// of its first non-empty {hash tag}, modulo 16384.
func slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}
