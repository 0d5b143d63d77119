package pubsub

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// counter is a pm.Subscriber that only counts frames and their bytes, as
// cheap as a real connection's non-blocking enqueue can be.
type counter struct {
	id            string
	frames, bytes *atomic.Int64
}

func newCounter(id string, frames, bytes *atomic.Int64) counter {
	return counter{id: id, frames: frames, bytes: bytes}
}

func (c counter) SubscriberID() string { return c.id }
func (c counter) UserID() uuid.UUID    { return uuid.Nil }
func (c counter) Deliver(frame []byte) {
	c.frames.Add(1)
	c.bytes.Add(int64(len(frame)))
}
func (c counter) ResyncRequired(uuid.UUID, string)      {}
func (c counter) SubscriptionRevoked(uuid.UUID, string) {}

// BenchmarkFanout measures one event from another node handed to n local
// subscribers, as the hub's fan-out loop does with what Redis sent: decode
// once, deliver the same bytes n times. Redis is only in the setup.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			h := MustHub(b, HubConfig{Redis: MustClient(b, "")})
			key := newKey()
			frames, bytes := new(atomic.Int64), new(atomic.Int64)
			for i := range n {
				subscribe(b, h, key, newCounter(fmt.Sprint("s", i), frames, bytes))
			}
			// The origin is a connection of another node: every local
			// subscriber gets the event.
			payload, err := proto.Marshal(&pmv1.BusEvent{Revision: 1, Origin: "elsewhere", Kind: &pmv1.BusEvent_Frame{Frame: make([]byte, 512)}})
			if err != nil {
				b.Fatal(err)
			}
			it := handoff{channel: h.channel(key), payload: string(payload)}
			b.ReportAllocs()
			for b.Loop() {
				h.dispatch(it)
			}
			if got, want := frames.Load(), int64(b.N)*int64(n); got != want {
				b.Fatalf("%d deliveries, want %d", got, want)
			}
			reportDeliveries(b, frames.Load(), bytes.Load())
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(frames.Load()), "ns/delivery")
		})
	}
}

// reportDeliveries reports the frames and bytes delivered per op.
func reportDeliveries(b *testing.B, frames, bytes int64) {
	b.ReportMetric(float64(frames)/float64(b.N), "deliveries/op")
	b.ReportMetric(float64(bytes)/float64(b.N), "delivered-B/op")
}

// BenchmarkPublishRoundTrip measures a Publish through Redis until the last of
// n local subscribers has the event.
func BenchmarkPublishRoundTrip(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			h := MustHub(b, HubConfig{Redis: MustClient(b, "")})
			key := newKey()
			frames, bytes := new(atomic.Int64), new(atomic.Int64)
			for i := range n {
				subscribe(b, h, key, newCounter(fmt.Sprint("s", i), frames, bytes))
			}
			frame := make([]byte, 512)
			ctx := context.Background()
			b.ReportAllocs()
			var want int64
			for b.Loop() {
				if err := h.Publish(ctx, key, 1, "", frame, time.Now()); err != nil {
					b.Fatal(err)
				}
				want += int64(n)
				for frames.Load() < want {
					runtime.Gosched() // the wait is the measurement
				}
			}
			reportDeliveries(b, frames.Load(), bytes.Load())
		})
	}
}

// BenchmarkLedgerClaimComplete measures the idempotency ledger's part of a
// mutating request on Redis: Claim a fresh key, then Complete it with a
// typical response record (two round trips, one of them a script).
func BenchmarkLedgerClaimComplete(b *testing.B) {
	// A short TTL: what the cleanup's scan misses expires soon.
	l := MustLedger(b, MustClient(b, ""), LedgerConfig{TTL: time.Minute})
	key := pm.RequestKey{Tenant: "bench", User: uuid.New(), Digest: strings.Repeat("d", 64)}
	record := make([]byte, 300) // about an encoded WorkItemUpdated
	ctx := context.Background()
	prefix := "m-" + randomHex(4) + "-"
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		key.MessageID = prefix + strconv.Itoa(i)
		token, replay, err := l.Claim(ctx, key, 0)
		if err != nil || replay != nil {
			b.Fatalf("Claim: %v (replay %q)", err, replay)
		}
		if err := l.Complete(ctx, key, token, record); err != nil {
			b.Fatalf("Complete: %v", err)
		}
	}
}
