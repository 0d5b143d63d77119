package pubsub

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// counter is a pm.Subscriber that only counts frames, as cheap as a real
// connection's non-blocking enqueue can be.
type counter struct {
	id     string
	frames *atomic.Int64
}

func (c counter) SubscriberID() string                  { return c.id }
func (c counter) UserID() uuid.UUID                     { return uuid.Nil }
func (c counter) Deliver([]byte)                        { c.frames.Add(1) }
func (c counter) ResyncRequired(uuid.UUID, string)      {}
func (c counter) SubscriptionRevoked(uuid.UUID, string) {}

// BenchmarkFanout measures one event handed to n local subscribers: decode
// once, deliver the same bytes n times.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			h := MustHub(b, HubConfig{Redis: MustClient(b, "")})
			key := newKey()
			frames := new(atomic.Int64)
			for i := range n {
				subscribe(b, h, key, counter{id: fmt.Sprint("s", i), frames: frames})
			}
			payload, err := proto.Marshal(&pmv1.BusEvent{Revision: 1, Origin: "s0", Kind: &pmv1.BusEvent_Frame{Frame: make([]byte, 512)}})
			if err != nil {
				b.Fatal(err)
			}
			it := handoff{channel: h.channel(key), payload: string(payload)}
			b.ReportAllocs()
			for b.Loop() {
				h.dispatch(it)
			}
			if got, want := frames.Load(), int64(b.N)*int64(n-1); got != want {
				b.Fatalf("%d deliveries, want %d", got, want)
			}
		})
	}
}

// BenchmarkPublishRoundTrip measures a Publish through Redis until the last of
// n local subscribers has the event.
func BenchmarkPublishRoundTrip(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			h := MustHub(b, HubConfig{Redis: MustClient(b, "")})
			key := newKey()
			frames := new(atomic.Int64)
			for i := range n {
				subscribe(b, h, key, counter{id: fmt.Sprint("s", i), frames: frames})
			}
			frame := make([]byte, 512)
			ctx := context.Background()
			b.ReportAllocs()
			var want int64
			for b.Loop() {
				if err := h.Publish(ctx, key, 1, "", frame); err != nil {
					b.Fatal(err)
				}
				want += int64(n)
				for frames.Load() < want {
					runtime.Gosched() // the wait is the measurement
				}
			}
		})
	}
}
