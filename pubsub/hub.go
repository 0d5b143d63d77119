package pubsub

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// Reasons the hub gives to pm.Subscriber.ResyncRequired; see the package doc.
const (
	ReasonEventsDropped    = "events dropped"
	ReasonRedisReconnected = "redis reconnected"
	ReasonLateConfirmation = "subscription confirmed late"
	ReasonMissedEvents     = "missed events"
)

// ReasonMemberRemoved is the reason the hub gives to
// pm.Subscriber.SubscriptionRevoked when the subscriber's user was removed
// from the project.
const ReasonMemberRemoved = "removed from project"

// ErrClosed is returned by the Hub's methods after Close.
var ErrClosed = errors.New("pubsub: hub closed")

// HeadReader reads the current revision ("head") of projects, for the hub's
// periodic check for silently lost events (implemented by repo.Store).
type HeadReader interface {
	// ProjectHeads returns the head revision of each project it knows; a
	// project missing from the map is skipped.
	ProjectHeads(ctx context.Context, keys []pm.ProjectKey) (map[pm.ProjectKey]int64, error)
}

// HubConfig configures a Hub.
type HubConfig struct {
	// Redis publishes and subscribes; required. The hub does not close it.
	Redis redis.UniversalClient
	// Prefix starts every channel name. Zero means "pm:".
	Prefix string
	// Sharded selects sharded pub/sub (SSUBSCRIBE/SPUBLISH) for Redis Cluster,
	// with one subscriber connection per master when Redis is a
	// *redis.ClusterClient. Zero (false) means PUBLISH/SUBSCRIBE over one
	// subscriber connection.
	Sharded bool
	// HandoffSize bounds the queue between the Redis reader and the fan-out
	// goroutine, in messages. Zero means 4096.
	HandoffSize int
	// HeadCheckInterval is the period of the head check (see the package
	// doc). Zero means 30s; negative disables the check.
	HeadCheckInterval time.Duration
	// Heads reads project heads for the head check. Nil disables the check.
	Heads HeadReader
	// Logger gets warnings about Redis. Nil discards them.
	Logger *slog.Logger
	// Registerer gets the pm_pubsub_* metrics and
	// pm_event_delivery_age_seconds. Nil registers them nowhere.
	Registerer prometheus.Registerer
	// TracerProvider makes the span of each traced event's fan-out on this
	// node. Nil means none: no spans, and the fan-out does not even read
	// an event's trace context (publishes still carry the one they are
	// given).
	TracerProvider trace.TracerProvider

	// Test hooks. fanoutGate, when set, holds the fan-out goroutine before
	// each message until it can receive from the channel (close it to let
	// everything through). pingInterval (default 5s) is how long the
	// subscriber connection may stay silent before the hub sends a PING;
	// pongTimeout (default 3s) how long it then waits for traffic before
	// declaring the connection dead.
	fanoutGate   <-chan struct{}
	pingInterval time.Duration
	pongTimeout  time.Duration
}

// Defaults of HubConfig.
const (
	DefaultPrefix            = "pm:"
	DefaultHandoffSize       = 4096
	DefaultHeadCheckInterval = 30 * time.Second

	defaultPingInterval = 5 * time.Second
	defaultPongTimeout  = 3 * time.Second
	commandTimeout      = 5 * time.Second // for (S)SUBSCRIBE commands and head reads
)

// Hub carries project events between nodes through Redis pub/sub and holds
// this node's subscription table. It implements node.Fanout. Its methods are
// safe for concurrent use; Close stops its goroutines.
type Hub struct {
	rdb       redis.UniversalClient
	cluster   *redis.ClusterClient // set in sharded mode on a cluster
	sharded   bool
	prefix    string
	heads     HeadReader
	headEvery time.Duration
	log       *slog.Logger
	m         *hubMetrics
	tracer    trace.Tracer // nil without a TracerProvider: no fan-out spans

	gate         <-chan struct{}
	pingInterval time.Duration
	pongTimeout  time.Duration

	queue      chan handoff
	ctx        context.Context // cancelled by Close
	cancel     context.CancelFunc
	done       chan struct{} // closed by Close
	closeOnce  sync.Once
	wg         sync.WaitGroup
	wakeSync   chan struct{} // wakes the reconciler
	wakeNotify chan struct{} // wakes the notifier

	mu       sync.RWMutex
	closed   bool
	topics   map[string]*topic      // by channel name
	subs     map[string]*subscriber // by SubscriberID
	conns    map[string]*subConn    // by shard address ("" unless sharded on a cluster)
	dirty    []*topic               // topics the reconciler must look at
	detached map[*subConn][]string  // channels to drop from a PubSub's resubscribe set
	notices  map[*topic]string      // pending ResyncRequired notices
	reload   bool                   // reload the cluster map before routing
}

// NewHub starts a hub: its Redis reader, reconciler, fan-out, notifier and
// head-check goroutines. Close stops them.
func NewHub(cfg HubConfig) (*Hub, error) {
	if cfg.Redis == nil {
		return nil, errors.New("pubsub: HubConfig.Redis is required")
	}
	if cfg.HandoffSize < 0 {
		return nil, fmt.Errorf("pubsub: HubConfig.HandoffSize %d is negative", cfg.HandoffSize)
	}
	h := &Hub{
		rdb:          cfg.Redis,
		sharded:      cfg.Sharded,
		prefix:       cmp.Or(cfg.Prefix, DefaultPrefix),
		heads:        cfg.Heads,
		headEvery:    cmp.Or(cfg.HeadCheckInterval, DefaultHeadCheckInterval),
		log:          cfg.Logger,
		gate:         cfg.fanoutGate,
		pingInterval: cmp.Or(cfg.pingInterval, defaultPingInterval),
		pongTimeout:  cmp.Or(cfg.pongTimeout, defaultPongTimeout),
		queue:        make(chan handoff, cmp.Or(cfg.HandoffSize, DefaultHandoffSize)),
		done:         make(chan struct{}),
		wakeSync:     make(chan struct{}, 1),
		wakeNotify:   make(chan struct{}, 1),
		topics:       make(map[string]*topic),
		subs:         make(map[string]*subscriber),
		conns:        make(map[string]*subConn),
		detached:     make(map[*subConn][]string),
		notices:      make(map[*topic]string),
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if cfg.TracerProvider != nil {
		h.tracer = cfg.TracerProvider.Tracer(tracerName)
	}
	if cc, ok := cfg.Redis.(*redis.ClusterClient); ok && cfg.Sharded {
		h.cluster = cc
	}
	m, err := newHubMetrics(cfg.Registerer, func() float64 { return float64(len(h.queue)) })
	if err != nil {
		return nil, err
	}
	h.m = m
	h.ctx, h.cancel = context.WithCancel(context.Background())

	if !h.sharded {
		// The one subscriber connection; it connects right away and
		// stays for the hub's life.
		sc := &subConn{ps: h.rdb.Subscribe(h.ctx)}
		h.conns[""] = sc
		h.wg.Add(1)
		go h.read(sc)
	}
	h.wg.Add(3)
	go h.reconcileLoop()
	go h.fanoutLoop()
	go h.notifyLoop()
	if h.heads != nil && h.headEvery > 0 {
		h.wg.Add(1)
		go h.headCheckLoop()
	}
	return h, nil
}

// Close stops the hub and waits for its goroutines. Subscribe calls still
// waiting return ErrClosed. It is safe to call more than once.
func (h *Hub) Close() error {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		h.closed = true
		conns := make([]*subConn, 0, len(h.conns))
		for _, sc := range h.conns {
			sc.closed.Store(true)
			conns = append(conns, sc)
		}
		h.mu.Unlock()
		close(h.done)
		h.cancel()
		for _, sc := range conns {
			_ = sc.ps.Close()
		}
		h.wg.Wait()
	})
	return nil
}

// Subscribe adds sub to the subscribers of the project on this node and
// returns once Redis has confirmed the project's channel, so that every event
// published afterwards reaches sub. If ctx ends first, Subscribe returns an
// error wrapping ctx.Err() but sub stays registered: the hub keeps trying, and
// once Redis confirms, the project's subscribers get ResyncRequired. Callers
// that give up instead call Unsubscribe. Subscribing twice is harmless.
func (h *Hub) Subscribe(ctx context.Context, key pm.ProjectKey, sub pm.Subscriber) error {
	if !pm.ValidTenant(key.Tenant) {
		return fmt.Errorf("pubsub: subscribe: invalid tenant %q", key.Tenant)
	}
	name := h.channel(key)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return ErrClosed
	}
	t := h.topics[name]
	if t == nil {
		t = newTopic(key, name)
		h.topics[name] = t
	}
	id := sub.SubscriberID()
	s := h.subs[id]
	if s == nil {
		s = &subscriber{topics: make(map[string]*topic)}
		h.subs[id] = s
	}
	if s.topics[name] == nil {
		s.topics[name] = t
		t.add(member{id: id, user: sub.UserID(), sub: sub})
		h.m.subscriptions.Inc()
		h.settleLocked(t)
	}
	live, ready := t.live, t.ready
	h.mu.Unlock()
	if live {
		h.baseline(ctx, t)
		return nil
	}

	select {
	case <-ready:
		h.baseline(ctx, t)
		return nil
	case <-h.done:
		return ErrClosed
	case <-ctx.Done():
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if t.live {
		return nil
	}
	if h.topics[name] == t && t.resync == "" {
		t.resync = ReasonLateConfirmation
	}
	return fmt.Errorf("pubsub: subscribe %s: Redis has not confirmed yet (subscriber stays registered and gets ResyncRequired once it does): %w", key, ctx.Err())
}

// baseline starts the head check of a topic that has just gone live at the
// project's head now: whatever commits later must arrive through Redis, so a
// change lost right after subscribing is caught too. If the read fails, the
// next head check sets the baseline instead.
func (h *Hub) baseline(ctx context.Context, t *topic) {
	if h.heads == nil || h.headEvery <= 0 || t.headBase.Load() {
		return
	}
	heads, err := h.heads.ProjectHeads(ctx, []pm.ProjectKey{t.key})
	if err != nil {
		return
	}
	if head, ok := heads[t.key]; ok && t.headBase.CompareAndSwap(false, true) {
		t.observe(head)
		t.headPrev.Store(head)
	}
}

// Unsubscribe removes sub from the subscribers of the project on this node.
func (h *Hub) Unsubscribe(key pm.ProjectKey, sub pm.Subscriber) {
	name := h.channel(key)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(sub.SubscriberID(), name)
}

// UnsubscribeAll removes sub from every project on this node.
func (h *Hub) UnsubscribeAll(sub pm.Subscriber) {
	id := sub.SubscriberID()
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.subs[id]; s != nil {
		for name := range s.topics {
			h.removeLocked(id, name)
		}
	}
}

// Publish sends an event frame of a project at revision to its subscribers on
// every node except the subscriber whose ID is origin. committed is when the
// change committed (zero: unknown), from which every node measures the
// event's age at delivery; the trace context of ctx, if any, travels with the
// event so that each node's fan-out joins the trace. If Redis fails, it
// still delivers the frame to this node's subscribers, then returns the error.
// (When the failure is a lost reply, the event may also come back through
// Redis: subscribers see a revision twice and ignore the second.)
func (h *Hub) Publish(ctx context.Context, key pm.ProjectKey, revision int64, origin string, frame []byte, committed time.Time) error {
	ev := &pmv1.BusEvent{Revision: revision, Origin: origin, Kind: &pmv1.BusEvent_Frame{Frame: frame}}
	if !committed.IsZero() {
		ev.CommittedAtUnixNano = committed.UnixNano()
	}
	injectTrace(ctx, ev)
	if err := h.publish(ctx, key, ev); err != nil {
		if t := h.lookup(h.channel(key)); t != nil {
			h.fanOut(t, ev, frame)
		}
		return fmt.Errorf("pubsub: publish %s revision %d: %w", key, revision, err)
	}
	return nil
}

// PublishMemberRemoved tells every node, this one included, to drop user's
// subscriptions to the project and call SubscriptionRevoked on each. If Redis
// fails, it still does so on this node, then returns the error.
func (h *Hub) PublishMemberRemoved(ctx context.Context, key pm.ProjectKey, user uuid.UUID) error {
	ev := &pmv1.BusEvent{Kind: &pmv1.BusEvent_RemovedUserId{RemovedUserId: user.String()}}
	if err := h.publish(ctx, key, ev); err != nil {
		if t := h.lookup(h.channel(key)); t != nil {
			h.revoke(t, user)
		}
		return fmt.Errorf("pubsub: publish removal of %s from %s: %w", user, key, err)
	}
	return nil
}

func (h *Hub) publish(ctx context.Context, key pm.ProjectKey, ev *pmv1.BusEvent) error {
	if !pm.ValidTenant(key.Tenant) {
		return fmt.Errorf("invalid tenant %q", key.Tenant)
	}
	select {
	case <-h.done:
		return ErrClosed
	default:
	}
	payload, err := proto.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode bus event: %w", err)
	}
	name := h.channel(key)
	start := time.Now()
	if h.sharded {
		err = h.rdb.SPublish(ctx, name, payload).Err()
	} else {
		err = h.rdb.Publish(ctx, name, payload).Err()
	}
	h.m.publishSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		h.m.publishErrors.Inc()
	}
	return err
}

// channel names a project's channel: <prefix>events:<tenant>:<project>.
func (h *Hub) channel(key pm.ProjectKey) string {
	return h.prefix + "events:" + key.Tenant + ":" + key.Project.String()
}

func (h *Hub) lookup(name string) *topic {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.topics[name]
}

// removeLocked takes subscriber id off the topic named name.
func (h *Hub) removeLocked(id, name string) {
	s := h.subs[id]
	if s == nil {
		return
	}
	t := s.topics[name]
	if t == nil {
		return
	}
	delete(s.topics, name)
	if len(s.topics) == 0 {
		delete(h.subs, id)
	}
	t.remove(id)
	h.m.subscriptions.Dec()
	h.settleLocked(t)
}

// revoke drops user's subscriptions to the topic and tells each subscriber.
func (h *Hub) revoke(t *topic, user uuid.UUID) {
	var gone []member
	h.mu.Lock()
	for _, m := range t.members() {
		if m.user == user {
			gone = append(gone, m)
			h.removeLocked(m.id, t.name)
		}
	}
	h.mu.Unlock()
	for _, m := range gone {
		m.sub.SubscriptionRevoked(t.key.Project, ReasonMemberRemoved)
	}
}

// deliver hands frame to every subscriber of t but origin and returns how
// many got it.
func (h *Hub) deliver(t *topic, origin string, frame []byte) int {
	n := 0
	for _, m := range t.members() {
		if m.id == origin {
			continue
		}
		m.sub.Deliver(frame)
		n++
	}
	if n > 0 {
		h.m.delivered.Add(float64(n))
	}
	return n
}
