package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// report is what a load run measured; the table and the JSON show the same.
type report struct {
	Target      string   `json:"target"` // pm or centrifugo
	Tenant      string   `json:"tenant"` // the run's name: pm's tenant, Centrifugo's channel prefix
	URLs        []string `json:"urls"`
	Conns       int      `json:"conns"`
	Projects    int      `json:"projects"`
	Writers     int      `json:"writers"`
	Rate        float64  `json:"rate,omitempty"`     // writes/s asked for (open loop)
	Inflight    int      `json:"inflight,omitempty"` // requests in flight (closed loop)
	Mix         *mix     `json:"mix,omitempty"`      // pm only
	DurationSec float64  `json:"duration_s"`
	WarmupSec   float64  `json:"warmup_s"`
	DrainSec    float64  `json:"drain_s"`               // how long the subscribers took to catch up
	DrainEnded  bool     `json:"drain_ended,omitempty"` // the drain ran out with subscribers still behind
	ConnectSec  float64  `json:"connect_s"`             // to open and subscribe every subscriber connection
	HoldSec     float64  `json:"hold_s"`                // the subscribed connections held idle before the load

	Writes             uint64  `json:"writes"` // successful writes sent in the measured window
	WritesPerSec       float64 `json:"writes_per_s"`
	Skipped            uint64  `json:"skipped"`    // open loop: scheduled writes not sent, the writers a second behind
	Deliveries         uint64  `json:"deliveries"` // events of those writes received by subscribers
	ExpectedDeliveries uint64  `json:"expected_deliveries"`
	DeliveriesPerSec   float64 `json:"deliveries_per_s"`
	DeliveryLatency    summary `json:"delivery_latency"` // writer's send → subscriber's receipt
	RequestLatency     summary `json:"request_latency"`  // writer's send → its answer

	// pm: revisions after each subscriber's first load, up to the head at
	// the end; Centrifugo: acknowledged publications on each subscriber's
	// channel. Summed over subscribers, warm-up included.
	RevisionsLive     int64 `json:"revisions_live"`       // arrived as events (publications)
	RevisionsResynced int64 `json:"revisions_resynced"`   // pm: caught up by the SDK's resync instead
	Losses            int64 `json:"losses"`               // never reached the subscriber
	SubscribersLosing int   `json:"subscribers_losing"`   // subscribers with at least one loss
	Duplicates        int64 `json:"duplicates,omitempty"` // Centrifugo: publications received twice

	Errors         map[string]uint64 `json:"errors"`      // write errors by code, warm-up included
	CloseCodes     map[string]uint64 `json:"close_codes"` // connection losses by close code
	Disconnects    uint64            `json:"disconnects"`
	Reconnects     uint64            `json:"reconnects"`
	ResyncRequired uint64            `json:"resync_required"` // ResyncRequired pushes received
	BufferOverflow uint64            `json:"buffer_overflows"`
}

// baseReport fills in what every target reports; subscribers are counted
// by the project or channel they follow.
func (lg *loadgen) baseReport(subscribersOf []int, drained time.Duration) *report {
	cfg := lg.cfg
	r := &report{
		Target: cfg.target, Tenant: lg.tenant, URLs: cfg.urls, Conns: cfg.conns, Projects: cfg.projects, Writers: cfg.writers,
		Rate: cfg.rate, Inflight: cfg.inflight,
		DurationSec: cfg.duration.Seconds(), WarmupSec: cfg.warmup.Seconds(), DrainSec: drained.Seconds(),
		DrainEnded: cfg.writers > 0 && drained >= cfg.drain,
		ConnectSec: lg.connectTook.Seconds(), HoldSec: cfg.hold.Seconds(),
		Skipped: lg.skipped.Load(), Deliveries: lg.deliveries.Load(),
		DeliveryLatency: lg.delivery.Summary(), RequestLatency: lg.request.Summary(),
		Disconnects: lg.disconnects.Load(), Reconnects: lg.reconnects.Load(),
		ResyncRequired: lg.resyncPushes.Load(), BufferOverflow: lg.overflows.Load(),
	}
	if cfg.target == targetPM {
		r.Mix = &cfg.mix
	}
	if cfg.writers == 0 {
		r.DurationSec, r.WarmupSec = 0, 0
	}
	for p := range lg.writes {
		w := lg.writes[p].Load()
		r.Writes += w
		r.ExpectedDeliveries += w * uint64(subscribersOf[p])
	}
	if r.DurationSec > 0 {
		r.WritesPerSec = float64(r.Writes) / r.DurationSec
		r.DeliveriesPerSec = float64(r.Deliveries) / r.DurationSec
	}
	lg.mu.Lock()
	r.Errors = copyMap(lg.errs)
	r.CloseCodes = copyMap(lg.closeCodes)
	lg.mu.Unlock()
	return r
}

// report is the pm run's report; heads are the projects' head revisions at
// the end (nil: nothing was written, nothing to check).
func (lg *loadgen) report(subs []*subscriber, heads []int64, drained time.Duration) *report {
	subscribersOf := make([]int, lg.cfg.projects)
	for _, s := range subs {
		subscribersOf[s.project]++
	}
	r := lg.baseReport(subscribersOf, drained)
	for _, s := range subs {
		if heads == nil {
			break
		}
		live, repaired, lost := s.check(heads[s.project])
		r.RevisionsLive += live
		r.RevisionsResynced += repaired
		r.Losses += lost
		if lost > 0 {
			r.SubscribersLosing++
		}
	}
	return r
}

func copyMap(m map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// writeTable prints the report for people.
func (r *report) writeTable(w io.Writer) {
	load := fmt.Sprintf("open loop, %g writes/s", r.Rate)
	if r.Inflight > 0 {
		load = fmt.Sprintf("closed loop, %d in flight", r.Inflight)
	}
	if r.Writers == 0 {
		load = "no writes (idle)"
	}
	if r.Target == targetCentrifugo {
		fmt.Fprintf(w, "pm-loadgen: centrifugo, run %s, %d subscriber(s) on %d channel(s), %d writer(s), %s\n",
			r.Tenant, r.Conns, r.Projects, r.Writers, load)
	} else {
		fmt.Fprintf(w, "pm-loadgen: pm, tenant %s, %d subscriber(s) on %d project(s), %d writer(s), %s, mix %s\n",
			r.Tenant, r.Conns, r.Projects, r.Writers, load, r.Mix)
	}
	fmt.Fprintf(w, "connected and subscribed %d in %.3fs", r.Conns, r.ConnectSec)
	if r.HoldSec > 0 {
		fmt.Fprintf(w, ", then held them idle for %gs", r.HoldSec)
	}
	fmt.Fprintln(w)
	if r.Writers == 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "close codes\t%s\t\n", counts(r.CloseCodes))
		fmt.Fprintf(tw, "connections\t%d lost\t\n", r.Disconnects)
		_ = tw.Flush()
		return
	}
	if r.DrainEnded {
		fmt.Fprintf(w, "measured %gs after %gs of warm-up; subscribers NOT all caught up after the %.2fs drain:\n"+
			"what was still on its way to them counts as lost below (a longer -drain tells)\n\n", r.DurationSec, r.WarmupSec, r.DrainSec)
	} else {
		fmt.Fprintf(w, "measured %gs after %gs of warm-up; subscribers caught up in %.2fs\n\n", r.DurationSec, r.WarmupSec, r.DrainSec)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "latency (ms)\tcount\tp50\tp90\tp99\tp99.9\tmax\t")
	for _, row := range []struct {
		name string
		s    summary
	}{{"delivery", r.DeliveryLatency}, {"request", r.RequestLatency}} {
		fmt.Fprintf(tw, "%s\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t\n", row.name, row.s.Count, row.s.P50, row.s.P90, row.s.P99, row.s.P999, row.s.Max)
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "writes\t%d\t(%.1f/s; %d not sent: the writers were a second behind)\n", r.Writes, r.WritesPerSec, r.Skipped)
	follows := "project"
	if r.Target == targetCentrifugo {
		follows = "channel"
	}
	fmt.Fprintf(tw, "deliveries\t%d\t(%.1f/s; expected %d = each write × its %s's subscribers)\n", r.Deliveries, r.DeliveriesPerSec, r.ExpectedDeliveries, follows)
	if r.Target == targetCentrifugo {
		fmt.Fprintf(tw, "publications\t%d live\t%d lost (%d subscriber(s) losing), %d duplicate(s)\n", r.RevisionsLive, r.Losses, r.SubscribersLosing, r.Duplicates)
	} else {
		fmt.Fprintf(tw, "revisions\t%d live\t%d by resync, %d lost (%d subscriber(s) losing)\n", r.RevisionsLive, r.RevisionsResynced, r.Losses, r.SubscribersLosing)
	}
	fmt.Fprintf(tw, "errors\t%s\t\n", counts(r.Errors))
	fmt.Fprintf(tw, "close codes\t%s\t\n", counts(r.CloseCodes))
	if r.Target == targetCentrifugo {
		fmt.Fprintf(tw, "connections\t%d lost\t(not reconnected)\n", r.Disconnects)
	} else {
		fmt.Fprintf(tw, "connections\t%d lost\t%d reconnected, %d ResyncRequired, %d buffer overflows\n", r.Disconnects, r.Reconnects, r.ResyncRequired, r.BufferOverflow)
	}
	_ = tw.Flush()
}

// counts prints a map of counts as "A 3, B 1", or "none".
func counts(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// writeJSONFile writes the report as indented JSON.
func (r *report) writeJSONFile(name string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(name, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
