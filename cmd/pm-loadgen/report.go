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
	Tenant      string   `json:"tenant"`
	URLs        []string `json:"urls"`
	Conns       int      `json:"conns"`
	Projects    int      `json:"projects"`
	Writers     int      `json:"writers"`
	Rate        float64  `json:"rate,omitempty"`     // writes/s asked for (open loop)
	Inflight    int      `json:"inflight,omitempty"` // requests in flight (closed loop)
	Mix         mix      `json:"mix"`
	DurationSec float64  `json:"duration_s"`
	WarmupSec   float64  `json:"warmup_s"`
	DrainSec    float64  `json:"drain_s"` // how long the subscribers took to catch up

	Writes             uint64  `json:"writes"` // successful writes sent in the measured window
	WritesPerSec       float64 `json:"writes_per_s"`
	Skipped            uint64  `json:"skipped"`    // open loop: scheduled writes not sent, the writers a second behind
	Deliveries         uint64  `json:"deliveries"` // events of those writes received by subscribers
	ExpectedDeliveries uint64  `json:"expected_deliveries"`
	DeliveriesPerSec   float64 `json:"deliveries_per_s"`
	DeliveryLatency    summary `json:"delivery_latency"` // writer's send → subscriber's receipt
	RequestLatency     summary `json:"request_latency"`  // writer's send → its answer

	// Revisions after each subscriber's first load, up to the head at the end,
	// summed over subscribers (warm-up included).
	RevisionsLive     int64 `json:"revisions_live"`     // arrived as events
	RevisionsResynced int64 `json:"revisions_resynced"` // caught up by the SDK's resync instead
	Losses            int64 `json:"losses"`             // never reached the subscriber
	SubscribersLosing int   `json:"subscribers_losing"`

	Errors         map[string]uint64 `json:"errors"`      // write errors by code, warm-up included
	CloseCodes     map[string]uint64 `json:"close_codes"` // connection losses by close code
	Disconnects    uint64            `json:"disconnects"`
	Reconnects     uint64            `json:"reconnects"`
	ResyncRequired uint64            `json:"resync_required"` // ResyncRequired pushes received
	BufferOverflow uint64            `json:"buffer_overflows"`
}

func (lg *loadgen) report(subs []*subscriber, heads []int64, drained time.Duration) *report {
	cfg := lg.cfg
	r := &report{
		Tenant: lg.tenant, URLs: cfg.urls, Conns: cfg.conns, Projects: cfg.projects, Writers: cfg.writers,
		Rate: cfg.rate, Inflight: cfg.inflight, Mix: cfg.mix,
		DurationSec: cfg.duration.Seconds(), WarmupSec: cfg.warmup.Seconds(), DrainSec: drained.Seconds(),
		Skipped: lg.skipped.Load(), Deliveries: lg.deliveries.Load(),
		DeliveryLatency: lg.delivery.Summary(), RequestLatency: lg.request.Summary(),
		Disconnects: lg.disconnects.Load(), Reconnects: lg.reconnects.Load(),
		ResyncRequired: lg.resyncPushes.Load(), BufferOverflow: lg.overflows.Load(),
	}
	for p := range lg.writes {
		r.Writes += lg.writes[p].Load()
	}
	for _, s := range subs {
		r.ExpectedDeliveries += lg.writes[s.project].Load()
		live, repaired, lost := s.check(heads[s.project])
		r.RevisionsLive += live
		r.RevisionsResynced += repaired
		r.Losses += lost
		if lost > 0 {
			r.SubscribersLosing++
		}
	}
	r.WritesPerSec = float64(r.Writes) / cfg.duration.Seconds()
	r.DeliveriesPerSec = float64(r.Deliveries) / cfg.duration.Seconds()
	lg.mu.Lock()
	r.Errors = copyMap(lg.errs)
	r.CloseCodes = copyMap(lg.closeCodes)
	lg.mu.Unlock()
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
	fmt.Fprintf(w, "pm-loadgen: tenant %s, %d subscriber(s) on %d project(s), %d writer(s), %s, mix %s\n",
		r.Tenant, r.Conns, r.Projects, r.Writers, load, r.Mix)
	fmt.Fprintf(w, "measured %gs after %gs of warm-up; subscribers caught up in %.2fs\n\n", r.DurationSec, r.WarmupSec, r.DrainSec)
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
	fmt.Fprintf(tw, "deliveries\t%d\t(%.1f/s; expected %d = each write × its project's subscribers)\n", r.Deliveries, r.DeliveriesPerSec, r.ExpectedDeliveries)
	fmt.Fprintf(tw, "revisions\t%d live\t%d by resync, %d lost (%d subscriber(s) losing)\n", r.RevisionsLive, r.RevisionsResynced, r.Losses, r.SubscribersLosing)
	fmt.Fprintf(tw, "errors\t%s\t\n", counts(r.Errors))
	fmt.Fprintf(tw, "close codes\t%s\t\n", counts(r.CloseCodes))
	fmt.Fprintf(tw, "connections\t%d lost\t%d reconnected, %d ResyncRequired, %d buffer overflows\n", r.Disconnects, r.Reconnects, r.ResyncRequired, r.BufferOverflow)
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
