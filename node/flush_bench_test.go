package node

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/lxzan/gws"
	dto "github.com/prometheus/client_model/go"
)

// countingClient counts the frames its connection receives and signals
// when the count reaches want.
type countingClient struct {
	gws.BuiltinEventHandler
	got     *atomic.Int64
	want    *atomic.Int64
	reached chan struct{}
}

func (c countingClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	m.Close()
	if c.got.Add(1) == c.want.Load() {
		c.reached <- struct{}{}
	}
}

// BenchmarkDeliver measures what the node does for each subscriber of an
// event from the moment the hub hands it over: Deliver (the non-blocking
// enqueue) on n sessions with real loopback WebSockets, their flushers'
// writes, until every client has read it. The clients run in the same
// process, as pm-loadgen's share the machine with the nodes. With burst=k,
// each op hands over k events back to back before waiting: a connection
// then has several frames queued when its flusher runs, and frames/write
// says how many each system call carried.
func BenchmarkDeliver(b *testing.B) {
	for _, tc := range []struct{ subscribers, burst int }{{1, 1}, {100, 1}, {1000, 1}, {1000, 8}} {
		b.Run(fmt.Sprintf("subscribers=%d/burst=%d", tc.subscribers, tc.burst), func(b *testing.B) {
			srv := newFlushServer(b)
			got, want := new(atomic.Int64), new(atomic.Int64)
			reached := make(chan struct{}, 1)
			sessions := make([]*session, tc.subscribers)
			for i := range sessions {
				sessions[i] = newFlushSession(b, wsPair(b, countingClient{got: got, want: want, reached: reached}), srv)
			}
			frame := make([]byte, 388) // an update event's size
			b.ReportAllocs()
			var ops int64
			for b.Loop() {
				ops++
				want.Store(ops * int64(tc.subscribers*tc.burst))
				for range tc.burst {
					for _, s := range sessions {
						s.Deliver(frame)
					}
				}
				<-reached
			}
			for _, s := range sessions {
				s.wg.Wait()
			}
			var h dto.Metric
			if err := srv.metrics.framesPerWrite.Write(&h); err != nil {
				b.Fatal(err)
			}
			deliveries := float64(got.Load())
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
			b.ReportMetric(h.GetHistogram().GetSampleSum()/float64(h.GetHistogram().GetSampleCount()), "frames/write")
		})
	}
}
