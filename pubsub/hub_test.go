package pubsub

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/pmhq/pm"
)

func frames(r *recorder) []string {
	var out []string
	for _, f := range r.Frames() {
		out = append(out, string(f))
	}
	return out
}

func TestPublishReachesEveryNodeButTheOrigin(t *testing.T) {
	prefix := MustPrefix(t)
	a := MustHub(t, HubConfig{Redis: MustClient(t, ""), Prefix: prefix})
	b := MustHub(t, HubConfig{Redis: MustClient(t, ""), Prefix: prefix})
	key, elsewhere := newKey(), newKey()
	author, neighbour := newRecorder(uuid.New()), newRecorder(uuid.New())
	remote1, remote2 := newRecorder(uuid.New()), newRecorder(uuid.New())
	bystander := newRecorder(uuid.New())
	subscribe(t, a, key, author)
	subscribe(t, a, key, neighbour)
	subscribe(t, b, key, remote1)
	subscribe(t, b, key, remote2)
	subscribe(t, b, elsewhere, bystander)

	ctx := context.Background()
	for i, ev := range []struct{ origin, frame string }{
		{author.id, "first"}, {neighbour.id, "second"}, {"", "third"},
	} {
		if err := a.Publish(ctx, key, int64(i+1), ev.origin, []byte(ev.frame), time.Time{}); err != nil {
			t.Fatalf("Publish %s: %v", ev.frame, err)
		}
	}
	everyone := []*recorder{author, neighbour, remote1, remote2}
	waitFor(t, "the third event everywhere", func() bool {
		return !slices.ContainsFunc(everyone, func(r *recorder) bool { return !r.has("third") })
	})
	// Events of a project reach a node's subscribers in order, so nothing
	// else is on its way.
	for _, c := range []struct {
		r    *recorder
		want []string
	}{
		{author, []string{"second", "third"}},
		{neighbour, []string{"first", "third"}},
		{remote1, []string{"first", "second", "third"}},
		{remote2, []string{"first", "second", "third"}},
		{bystander, nil},
	} {
		if got := frames(c.r); !slices.Equal(got, c.want) {
			t.Errorf("subscriber got %q, want %q", got, c.want)
		}
	}
	// One decoded frame, shared by every subscriber of the node.
	f1, f2 := remote1.Frames(), remote2.Frames()
	for i := range f1 {
		if unsafe.SliceData(f1[i]) != unsafe.SliceData(f2[i]) {
			t.Errorf("frame %d: subscribers of one node got different copies", i)
		}
	}
	waitFor(t, "delivery counts", func() bool {
		return value(a.m.delivered) == 4 && value(b.m.delivered) == 6
	})
	if got := value(b.m.received); got != 3 {
		t.Errorf("hub b received %v events, want 3", got)
	}
	if got := value(b.m.channels); got != 2 {
		t.Errorf("hub b subscribes %v channels, want 2", got)
	}
}

// channels lists the channels of prefix that Redis has subscribers for.
func channels(t *testing.T, admin *redis.Client, prefix string) []string {
	t.Helper()
	got, err := admin.PubSubChannels(context.Background(), prefix+"*").Result()
	if err != nil {
		t.Fatalf("PUBSUB CHANNELS: %v", err)
	}
	slices.Sort(got)
	return got
}

func TestChannelFollowsLocalSubscribers(t *testing.T) {
	admin := MustClient(t, "")
	h := MustHub(t, HubConfig{Redis: MustClient(t, "")})
	key := newKey()
	name := h.prefix + "events:" + key.Tenant + ":" + key.Project.String()
	if want := h.prefix + "events:" + key.String(); name != want {
		t.Fatalf("channel name %q, want %q", name, want)
	}
	s1, s2 := newRecorder(uuid.New()), newRecorder(uuid.New())

	subscribe(t, h, key, s1)
	// Subscribe returns after Redis confirmed: no waiting here.
	if got := channels(t, admin, h.prefix); !slices.Equal(got, []string{name}) {
		t.Fatalf("after the first subscriber: channels %q, want %q", got, name)
	}
	subscribe(t, h, key, s2)
	subscribe(t, h, key, s2) // twice is harmless
	h.Unsubscribe(key, s1)
	if err := h.Publish(context.Background(), key, 1, "", []byte("still here"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the remaining subscriber's event", func() bool { return s2.has("still here") })
	if got := frames(s2); len(got) != 1 {
		t.Errorf("a subscriber subscribed twice got %q, want one frame", got)
	}
	if got := channels(t, admin, h.prefix); !slices.Equal(got, []string{name}) {
		t.Fatalf("with one subscriber left: channels %q, want %q", got, name)
	}

	h.Unsubscribe(key, s2)
	waitFor(t, "the channel to be unsubscribed", func() bool { return len(channels(t, admin, h.prefix)) == 0 })
	waitFor(t, "the topic to leave the table", func() bool {
		h.mu.RLock()
		defer h.mu.RUnlock()
		return len(h.topics) == 0 && len(h.subs) == 0
	})
	if got := value(h.m.channels); got != 0 {
		t.Errorf("subscribed channels gauge %v, want 0", got)
	}

	// And back again.
	subscribe(t, h, key, s1)
	if got := channels(t, admin, h.prefix); !slices.Equal(got, []string{name}) {
		t.Fatalf("after subscribing again: channels %q, want %q", got, name)
	}
	if err := h.Publish(context.Background(), key, 2, "", []byte("again"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the event after resubscribing", func() bool { return s1.has("again") })
}

func TestUnsubscribeAllLeavesEveryProject(t *testing.T) {
	admin := MustClient(t, "")
	h := MustHub(t, HubConfig{Redis: MustClient(t, "")})
	keys := []pm.ProjectKey{newKey(), newKey(), newKey()}
	leaver, stayer := newRecorder(uuid.New()), newRecorder(uuid.New())
	for _, k := range keys {
		subscribe(t, h, k, leaver)
	}
	subscribe(t, h, keys[0], stayer)
	if got := channels(t, admin, h.prefix); len(got) != 3 {
		t.Fatalf("channels %q, want 3", got)
	}

	h.UnsubscribeAll(leaver)
	want := []string{h.channel(keys[0])}
	waitFor(t, "only the stayer's channel", func() bool { return slices.Equal(channels(t, admin, h.prefix), want) })
	for _, k := range keys {
		if err := h.Publish(context.Background(), k, 1, "", []byte(k.String()), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the stayer's event", func() bool { return stayer.has(keys[0].String()) })
	if got := frames(leaver); len(got) != 0 {
		t.Errorf("after UnsubscribeAll the subscriber got %q", got)
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if _, ok := h.subs[leaver.id]; ok {
		t.Error("the subscriber is still in the table")
	}
}

func TestMemberRemovedRevokesOnlyThatUser(t *testing.T) {
	prefix := MustPrefix(t)
	a := MustHub(t, HubConfig{Redis: MustClient(t, ""), Prefix: prefix})
	b := MustHub(t, HubConfig{Redis: MustClient(t, ""), Prefix: prefix})
	project, other := newKey(), newKey()
	other.Tenant = project.Tenant
	removed, kept := uuid.New(), uuid.New()

	ua1, ua2, ub := newRecorder(removed), newRecorder(removed), newRecorder(removed)
	va, vb := newRecorder(kept), newRecorder(kept)
	subscribe(t, a, project, ua1)
	subscribe(t, a, project, ua2)
	subscribe(t, a, other, ua2)
	subscribe(t, b, project, ub)
	subscribe(t, a, project, va)
	subscribe(t, b, project, vb)

	if err := a.PublishMemberRemoved(context.Background(), project, removed); err != nil {
		t.Fatal(err)
	}
	want := []notice{{project.Project, ReasonMemberRemoved}}
	waitFor(t, "revocations on both nodes", func() bool {
		return slices.Equal(ua1.Revoked(), want) && slices.Equal(ua2.Revoked(), want) && slices.Equal(ub.Revoked(), want)
	})

	ctx := context.Background()
	if err := b.Publish(ctx, project, 1, "", []byte("after"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, other, 1, "", []byte("other project"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "events after the removal", func() bool {
		return va.has("after") && vb.has("after") && ua2.has("other project")
	})
	for _, r := range []*recorder{ua1, ua2, ub} {
		if r.has("after") {
			t.Error("a removed user's subscriber still got the project's event")
		}
	}
	for _, r := range []*recorder{va, vb} {
		if got := r.Revoked(); len(got) != 0 {
			t.Errorf("a member who stays was revoked: %v", got)
		}
	}
}

func TestHandoffOverflowDropsAndResyncs(t *testing.T) {
	prefix := MustPrefix(t)
	gate := make(chan struct{})
	h := MustHub(t, HubConfig{Redis: MustClient(t, ""), Prefix: prefix, HandoffSize: 1, fanoutGate: gate})
	pub := MustHub(t, HubConfig{Redis: MustClient(t, ""), Prefix: prefix})
	key := newKey()
	s := newRecorder(uuid.New())
	subscribe(t, h, key, s)

	const n = 6
	for i := range n {
		if err := pub.Publish(context.Background(), key, int64(i+1), "", []byte{byte('a' + i)}, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	// The fan-out holds one message at the gate and the queue one more; the
	// reader drops the rest without waiting, and the notice does not wait
	// for the fan-out either.
	waitFor(t, "every event read", func() bool { return value(h.m.received) == n })
	waitFor(t, "the resync notice", func() bool { return s.resynced(key.Project, ReasonEventsDropped) })
	drops := int(value(h.m.drops))
	if drops < n-2 {
		t.Fatalf("%d drops, want at least %d", drops, n-2)
	}
	if got := s.Frames(); len(got) != 0 {
		t.Fatalf("frames delivered through a closed gate: %q", got)
	}
	close(gate)
	waitFor(t, "the queued events", func() bool { return len(s.Frames()) == n-drops })
	if got := value(h.m.resyncs.WithLabelValues(ReasonEventsDropped)); got < 1 {
		t.Errorf("resync notices for dropped events: %v", got)
	}

	// A membership removal is applied even when the queue is full.
	gate2 := make(chan struct{})
	defer close(gate2)
	h2 := MustHub(t, HubConfig{Redis: MustClient(t, ""), Prefix: prefix, HandoffSize: 1, fanoutGate: gate2})
	user := uuid.New()
	victim := newRecorder(user)
	subscribe(t, h2, key, victim)
	for i := range 3 {
		if err := pub.Publish(context.Background(), key, int64(n+i+1), "", []byte("filler"), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a full queue", func() bool { return value(h2.m.drops) >= 1 })
	if err := pub.PublishMemberRemoved(context.Background(), key, user); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the revocation past a full queue", func() bool { return len(victim.Revoked()) == 1 })
}

// killPubSub kills the pub/sub connections of the clients named name.
func killPubSub(t *testing.T, admin *redis.Client, name string) {
	t.Helper()
	ctx := context.Background()
	list, err := admin.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
	if err != nil {
		t.Fatalf("CLIENT LIST: %v", err)
	}
	killed := 0
	for line := range strings.Lines(list) {
		var id string
		named := false
		for f := range strings.FieldsSeq(line) {
			if v, ok := strings.CutPrefix(f, "id="); ok {
				id = v
			}
			if f == "name="+name {
				named = true
			}
		}
		if named {
			if err := admin.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
				t.Fatalf("CLIENT KILL ID %s: %v", id, err)
			}
			killed++
		}
	}
	if killed != 1 {
		t.Fatalf("killed %d pub/sub connections named %s, want 1", killed, name)
	}
}

func TestReconnectResyncsAndEventsFlowAgain(t *testing.T) {
	// CLIENT KILL TYPE pubsub would hit other test packages sharing the
	// server, so the test kills its hub's connection by name.
	prefix, name := MustPrefix(t), "pmtest-"+randomHex(6)
	admin := MustClient(t, "")
	a := MustHub(t, HubConfig{Redis: MustClient(t, ""), Prefix: prefix})
	b := MustHub(t, HubConfig{Redis: MustClient(t, name), Prefix: prefix})
	p1, p2 := newKey(), newKey()
	s1, s2, sa := newRecorder(uuid.New()), newRecorder(uuid.New()), newRecorder(uuid.New())
	subscribe(t, b, p1, s1)
	subscribe(t, b, p2, s2)
	subscribe(t, a, p1, sa)

	killPubSub(t, admin, name)
	waitFor(t, "resync notices", func() bool {
		return s1.resynced(p1.Project, ReasonRedisReconnected) && s2.resynced(p2.Project, ReasonRedisReconnected)
	})
	if got := value(b.m.reconnects); got != 1 {
		t.Errorf("reconnects %v, want 1", got)
	}
	if err := a.Publish(context.Background(), p1, 1, "", []byte("after"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an event after the reconnect", func() bool { return s1.has("after") && sa.has("after") })
	if got := sa.Resyncs(); len(got) != 0 {
		t.Errorf("the other node's subscriber was told to resync: %v", got)
	}
	if got := s1.Resyncs(); len(got) != 1 {
		t.Errorf("resync notices %v, want one", got)
	}
}

func TestHalfOpenConnectionIsReplaced(t *testing.T) {
	prefix := MustPrefix(t)
	p := MustProxy(t)
	h := MustHub(t, HubConfig{Redis: p.Client(t), Prefix: prefix, pingInterval: 50 * time.Millisecond, pongTimeout: 100 * time.Millisecond})
	pub := MustHub(t, HubConfig{Redis: MustClient(t, ""), Prefix: prefix})
	key := newKey()
	s := newRecorder(uuid.New())
	subscribe(t, h, key, s)

	p.Freeze() // the connection stays open but nothing comes back
	waitFor(t, "the resync notice", func() bool { return s.resynced(key.Project, ReasonRedisReconnected) })
	if err := pub.Publish(context.Background(), key, 1, "", []byte("after"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an event on the new connection", func() bool { return s.has("after") })
}

func TestRedisUnreachable(t *testing.T) {
	prefix := MustPrefix(t)
	p := MustProxy(t)
	p.Stop()
	h := MustHub(t, HubConfig{Redis: p.Client(t), Prefix: prefix})
	key := newKey()
	author, neighbour := newRecorder(uuid.New()), newRecorder(uuid.New())
	for _, s := range []*recorder{author, neighbour} {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err := h.Subscribe(ctx, key, s)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Subscribe with Redis down: %v, want a deadline error", err)
		}
	}

	start := time.Now()
	err := h.Publish(context.Background(), key, 1, author.id, []byte("local"), time.Time{})
	if err == nil {
		t.Fatal("Publish with Redis down succeeded")
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("Publish took %v with Redis down", time.Since(start))
	}
	// Delivered on this node before Publish returned.
	if got := frames(neighbour); !slices.Equal(got, []string{"local"}) {
		t.Errorf("neighbour got %q, want the event", got)
	}
	if got := frames(author); len(got) != 0 {
		t.Errorf("author got %q", got)
	}
	if got := value(h.m.publishErrors); got != 1 {
		t.Errorf("publish errors %v, want 1", got)
	}
	removed := newRecorder(uuid.New())
	subscribe2 := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		_ = h.Subscribe(ctx, key, removed)
	}
	subscribe2()
	if err := h.PublishMemberRemoved(context.Background(), key, removed.user); err == nil {
		t.Error("PublishMemberRemoved with Redis down succeeded")
	}
	if got := removed.Revoked(); len(got) != 1 {
		t.Errorf("local revocation with Redis down: %v", got)
	}

	// Redis is back: the registered subscribers are confirmed and told
	// that their acknowledged revision may be stale.
	p.Start()
	waitFor(t, "the late confirmation's notice", func() bool {
		return author.resynced(key.Project, ReasonLateConfirmation) && neighbour.resynced(key.Project, ReasonLateConfirmation)
	})
	pub := MustHub(t, HubConfig{Redis: MustClient(t, ""), Prefix: prefix})
	if err := pub.Publish(context.Background(), key, 2, "", []byte("through redis"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "events through Redis", func() bool { return neighbour.has("through redis") })
}

func TestHeadCheck(t *testing.T) {
	hr := &heads{}
	h := MustHub(t, HubConfig{Redis: MustClient(t, ""), Heads: hr, HeadCheckInterval: 100 * time.Millisecond})
	quiet, active, lossy := newKey(), newKey(), newKey()
	hr.set(quiet, 100) // far ahead of anything seen: the first look is only a baseline
	hr.set(active, 0)
	hr.set(lossy, 5)
	sq, sa, sl := newRecorder(uuid.New()), newRecorder(uuid.New()), newRecorder(uuid.New())
	subscribe(t, h, quiet, sq)
	subscribe(t, h, active, sa)
	subscribe(t, h, lossy, sl)
	calls := hr.calls.Load()
	waitFor(t, "a baseline", func() bool { return hr.calls.Load() >= calls+1 })

	// The lossy project moves on without a word on Redis; the active one
	// publishes each revision it commits.
	hr.set(lossy, 7)
	for rev := int64(1); rev <= 3; rev++ {
		hr.set(active, rev)
		if err := h.Publish(context.Background(), active, rev, "", []byte("ev"), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the missed-events notice", func() bool { return sl.resynced(lossy.Project, ReasonMissedEvents) })
	calls = hr.calls.Load()
	waitFor(t, "three more checks", func() bool { return hr.calls.Load() >= calls+3 })
	if got := sq.Resyncs(); len(got) != 0 {
		t.Errorf("quiet project: %v", got)
	}
	if got := sa.Resyncs(); len(got) != 0 {
		t.Errorf("project whose events kept up: %v", got)
	}
	if got := sl.Resyncs(); len(got) != 1 {
		t.Errorf("lossy project: %v, want one notice", got)
	}
	if got := value(h.m.resyncs.WithLabelValues(ReasonMissedEvents)); got != 1 {
		t.Errorf("missed-events notices %v, want 1", got)
	}
}

func TestCloseIsFinal(t *testing.T) {
	p := MustProxy(t)
	p.Stop()
	h, err := NewHub(HubConfig{Redis: p.Client(t), Prefix: MustPrefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	key := newKey()
	waiting := make(chan error)
	go func() { waiting <- h.Subscribe(context.Background(), key, newRecorder(uuid.New())) }()
	waitFor(t, "the subscriber in the table", func() bool { return h.lookup(h.channel(key)) != nil })
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-waiting; !errors.Is(err, ErrClosed) {
		t.Errorf("waiting Subscribe: %v, want ErrClosed", err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := h.Subscribe(context.Background(), key, newRecorder(uuid.New())); !errors.Is(err, ErrClosed) {
		t.Errorf("Subscribe after Close: %v", err)
	}
	if err := h.Publish(context.Background(), key, 1, "", nil, time.Time{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: %v", err)
	}
}

func TestConfig(t *testing.T) {
	if _, err := NewHub(HubConfig{}); err == nil {
		t.Error("NewHub without Redis succeeded")
	}
	if _, err := NewHub(HubConfig{Redis: MustClient(t, ""), HandoffSize: -1}); err == nil {
		t.Error("NewHub with a negative HandoffSize succeeded")
	}
	h := MustHub(t, HubConfig{Redis: MustClient(t, ""), Prefix: DefaultPrefix})
	key := pm.ProjectKey{Tenant: "acme", Project: uuid.MustParse("0b7a3c1e-2f4d-4e5a-9b6c-7d8e9f0a1b2c")}
	if got, want := h.channel(key), "pm:events:acme:0b7a3c1e-2f4d-4e5a-9b6c-7d8e9f0a1b2c"; got != want {
		t.Errorf("channel %q, want %q", got, want)
	}
	if err := h.Subscribe(context.Background(), pm.ProjectKey{Tenant: "a:b", Project: uuid.New()}, newRecorder(uuid.New())); err == nil {
		t.Error("Subscribe with a tenant holding ':' succeeded")
	}
	reg := prometheus.NewRegistry()
	MustHub(t, HubConfig{Redis: MustClient(t, ""), Registerer: reg})
	if _, err := NewHub(HubConfig{Redis: MustClient(t, ""), Registerer: reg}); err == nil {
		t.Error("a second hub registered the same metrics")
	}
}

func TestSlot(t *testing.T) {
	for key, want := range map[string]int{
		"123456789":            12739, // CRC16/XMODEM check value 0x31C3
		"foo":                  12182,
		"{user1000}.following": 3443,
		"{user1000}.followers": 3443,
	} {
		if got := slot(key); got != want {
			t.Errorf("slot(%q) = %d, want %d", key, got, want)
		}
	}
}
