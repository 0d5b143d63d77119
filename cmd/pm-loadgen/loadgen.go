package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/client"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// setupConns is how many admin connections seed the data in parallel: the
// nodes limit requests per connection (PM_RATE_PER_SECOND, 50 by default).
const setupConns = 16

// loadgen is one load run.
type loadgen struct {
	cfg    config
	tenant string
	secret []byte
	stderr io.Writer
	log    *slog.Logger // captures the SDK's connection events

	projects []string // project ids

	// The measured window, unix nanoseconds; a write counts when its send
	// time lies in [from, to). Atomic: subscribers read them on their own
	// goroutines.
	from, to atomic.Int64

	delivery, request histogram

	writesAll    atomic.Uint64   // successful writes, warm-up included (progress)
	deliveredAll atomic.Uint64   // events received, warm-up included (progress)
	writes       []atomic.Uint64 // measured successful writes by project
	deliveries   atomic.Uint64   // measured events received
	skipped      atomic.Uint64   // open loop: sends the generator could not start (every item busy)
	maxRev       []atomic.Int64  // highest revision a writer saw, by project

	reconnects, disconnects, resyncPushes, overflows atomic.Uint64
	connectTook                                      time.Duration // to open and subscribe every subscriber

	mu         sync.Mutex
	errs       map[string]uint64 // write errors by code
	closeCodes map[string]uint64 // connection losses by close code
}

// stamp is what a write puts in the item's description: its send time and writer.
func stamp(sent time.Time, writer int) string {
	return "pm-loadgen sent=" + strconv.FormatInt(sent.UnixNano(), 10) + " writer=" + strconv.Itoa(writer)
}

// parseStamp returns the send time a description carries, in unix nanoseconds.
func parseStamp(desc string) (int64, bool) {
	rest, ok := strings.CutPrefix(desc, "pm-loadgen sent=")
	if !ok {
		return 0, false
	}
	num, _, _ := strings.Cut(rest, " ")
	n, err := strconv.ParseInt(num, 10, 64)
	return n, err == nil
}

func (lg *loadgen) measured(sent int64) bool {
	from := lg.from.Load()
	return from != 0 && sent >= from && sent < lg.to.Load()
}

func (lg *loadgen) countError(code string) {
	lg.mu.Lock()
	lg.errs[code]++
	lg.mu.Unlock()
}

// loadRun runs the load against the target and returns the report.
func loadRun(ctx context.Context, cfg config, stderr io.Writer) (*report, error) {
	if cfg.target == targetCentrifugo {
		return runCentrifugo(ctx, cfg, stderr)
	}
	return runPM(ctx, cfg, stderr)
}

// newLoadgen returns a run's state, named loadgen-xxxxxxxx.
func newLoadgen(cfg config, stderr io.Writer) *loadgen {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return &loadgen{
		cfg: cfg, tenant: "loadgen-" + hex.EncodeToString(b), secret: []byte(cfg.secret), stderr: stderr,
		writes: make([]atomic.Uint64, cfg.projects), maxRev: make([]atomic.Int64, cfg.projects),
		errs: map[string]uint64{}, closeCodes: map[string]uint64{},
	}
}

// seededWait, with -seeded-file, writes the file once the tenant is seeded
// and waits until something removes it (at most a minute), so that a script
// can measure the nodes between seeding and connecting.
func (lg *loadgen) seededWait(ctx context.Context) error {
	f := lg.cfg.seeded
	if f == "" {
		return nil
	}
	if err := os.WriteFile(f, []byte("seeded\n"), 0o644); err != nil {
		return fmt.Errorf("seeded file: %w", err)
	}
	lg.progressf("seeded; waiting for %s to be removed", f)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(f); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("seeded file %s still there after a minute", f)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// subscribed records how long opening and subscribing every subscriber
// took, writes -ready-file, and holds the connections idle for -hold.
func (lg *loadgen) subscribed(ctx context.Context, took time.Duration) error {
	lg.connectTook = took
	lg.progressf("connected and subscribed %d in %.2fs", lg.cfg.conns, took.Seconds())
	if f := lg.cfg.ready; f != "" {
		line := fmt.Sprintf("connected and subscribed %d in %.3fs\n", lg.cfg.conns, took.Seconds())
		if err := os.WriteFile(f, []byte(line), 0o644); err != nil {
			return fmt.Errorf("ready file: %w", err)
		}
	}
	if lg.cfg.hold > 0 {
		lg.progressf("holding %d subscriber connection(s) for %v", lg.cfg.conns, lg.cfg.hold)
		t := time.NewTimer(lg.cfg.hold)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return ctx.Err()
}

// runPM seeds a tenant, loads, drains and checks, and returns the report.
func runPM(ctx context.Context, cfg config, stderr io.Writer) (*report, error) {
	lg := newLoadgen(cfg, stderr)
	lg.log = slog.New(&sdkEvents{lg: lg})
	if cfg.rate > 50*float64(cfg.writers) {
		fmt.Fprintf(stderr, "pm-loadgen: note: %g writes/s on %d writer connection(s) exceeds the nodes' default limit of 50 requests/s per connection (PM_RATE_PER_SECOND); expect RATE_LIMITED, or add -writers\n", cfg.rate, cfg.writers)
	}
	lg.progressf("tenant %s: seeding %d project(s), %d subscriber(s), %d writer(s)", lg.tenant, cfg.projects, cfg.conns, cfg.writers)

	var all []*client.Client
	defer func() { closeAll(all) }()
	admins, err := lg.dialMany(ctx, setupConns, uuid.New(), nil)
	all = append(all, admins...)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	for i := range cfg.projects {
		p, err := admins[0].CreateWorkItem(ctx, &pmv1.CreateWorkItemRequest{
			WorkItemId: uuid.NewString(), ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT,
			Title: fmt.Sprintf("pm-loadgen project %d", i+1),
		})
		if err != nil {
			return nil, fmt.Errorf("create project: %w", err)
		}
		lg.projects = append(lg.projects, p.Id)
	}

	// Users, and their memberships through the admin connections.
	subUsers := make([]uuid.UUID, cfg.conns)
	for i := range subUsers {
		subUsers[i] = uuid.New()
	}
	writerUsers := make([]uuid.UUID, cfg.writers)
	for i := range writerUsers {
		writerUsers[i] = uuid.New()
	}
	type member struct {
		project string
		user    uuid.UUID
		role    pmv1.ProjectRole
	}
	var members []member
	for i, u := range subUsers {
		members = append(members, member{lg.projects[i%cfg.projects], u, pmv1.ProjectRole_PROJECT_ROLE_VIEWER})
	}
	for _, u := range writerUsers {
		for _, p := range lg.projects {
			members = append(members, member{p, u, pmv1.ProjectRole_PROJECT_ROLE_EDITOR})
		}
	}
	err = parallel(ctx, len(members), len(admins), func(worker, i int) error {
		m := members[i]
		_, err := admins[worker].AddProjectMember(ctx, &pmv1.AddProjectMemberRequest{ProjectId: m.project, UserId: m.user.String(), Role: m.role})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("add members: %w", err)
	}

	// Writers and their items.
	writers := make([]*writer, cfg.writers)
	err = parallel(ctx, cfg.writers, setupConns, func(_, i int) error {
		c, err := lg.dial(ctx, i, writerUsers[i], nil, true, 0)
		if err != nil {
			return err
		}
		w := &writer{id: i + 1, c: c}
		writers[i] = w
		for p, project := range lg.projects {
			it, err := c.CreateWorkItem(ctx, &pmv1.CreateWorkItemRequest{
				WorkItemId: uuid.NewString(), ProjectId: project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK,
				Title: fmt.Sprintf("pm-loadgen writer %d", i+1), Status: pmv1.WorkItemStatus_WORK_ITEM_STATUS_TODO,
			})
			if err != nil {
				return fmt.Errorf("create item: %w", err)
			}
			w.items = append(w.items, &item{id: it.Id, project: p, version: it.Version, status: it.Status})
		}
		return nil
	})
	for _, w := range writers {
		if w != nil {
			all = append(all, w.c)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("writers: %w", err)
	}

	// Subscribers, once every seed write is done: each follows one project.
	if err := lg.seededWait(ctx); err != nil {
		return nil, err
	}
	connecting := time.Now()
	subs := make([]*subscriber, cfg.conns)
	err = parallel(ctx, cfg.conns, setupConns, func(_, i int) error {
		s := &subscriber{lg: lg, project: i % cfg.projects}
		if i < cfg.slow {
			s.delay = cfg.slowDelay
		}
		buffer := 0
		if s.delay > 0 {
			buffer = slowEventBuffer
		}
		c, err := lg.dial(ctx, i, subUsers[i], s.onEvent, false, buffer)
		if err != nil {
			return err
		}
		s.c = c
		subs[i] = s
		replicas, err := c.Subscribe(ctx, lg.projects[s.project])
		if err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
		s.replica = replicas[0]
		s.base = s.replica.Revision()
		return nil
	})
	for _, s := range subs {
		if s != nil {
			all = append(all, s.c)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("subscribers: %w", err)
	}
	if err := lg.subscribed(ctx, time.Since(connecting)); err != nil {
		return nil, err
	}
	if cfg.writers == 0 {
		return lg.report(subs, nil, 0), nil
	}

	// Load: warm-up, then the measured window.
	start := time.Now()
	lg.from.Store(start.Add(cfg.warmup).UnixNano())
	lg.to.Store(start.Add(cfg.warmup + cfg.duration).UnixNano())
	end := start.Add(cfg.warmup + cfg.duration)
	stopProgress := lg.startProgress(start)
	var lanes []lane
	for _, w := range writers {
		for _, it := range w.items {
			lanes = append(lanes, &itemLane{lg: lg, w: w, it: it, r: mrand.New(mrand.NewPCG(uint64(w.id), uint64(it.project)))})
		}
	}
	lg.load(ctx, lanes, end)
	if ctx.Err() != nil {
		stopProgress()
		return nil, ctx.Err()
	}

	// Drain: every subscriber's replica must reach its project's head.
	heads := make([]int64, cfg.projects)
	for p, project := range lg.projects {
		list, err := admins[0].GetWorkItems(ctx, &pmv1.GetWorkItemsRequest{ProjectId: project, SinceRevision: lg.maxRev[p].Load()})
		if err != nil {
			stopProgress()
			return nil, fmt.Errorf("read head of project %s: %w", project, err)
		}
		heads[p] = list.AsOfRevision
	}
	drained := lg.drain(ctx, subs, heads)
	stopProgress()
	return lg.report(subs, heads, drained), nil
}

// dial connects one client of user, round-robin over the URLs from index i.
// slowEventBuffer is the SDK's event buffer of a -slow subscriber: small,
// so that falling behind soon overflows it, and the SDK drops what it
// cannot queue and resyncs, as a client that cannot keep up should.
const slowEventBuffer = 64

// dial connects client i of user; eventBuffer 0 is the SDK's default.
func (lg *loadgen) dial(ctx context.Context, i int, user uuid.UUID, onEvent func(*pmv1.WebSocketMessage), writer bool, eventBuffer int) (*client.Client, error) {
	ttl := lg.cfg.hold + lg.cfg.warmup + lg.cfg.duration + lg.cfg.drain + time.Hour
	token, err := client.NewToken(lg.secret, lg.tenant, user, ttl)
	if err != nil {
		return nil, err
	}
	urls := lg.cfg.urls
	first := urls[i%len(urls)]
	var others []string
	for j := 1; j < len(urls); j++ {
		others = append(others, urls[(i+j)%len(urls)])
	}
	opts := client.Options{
		Token: token, URLs: others, Logger: lg.log, OnEvent: onEvent, EventBuffer: eventBuffer,
		// A writer's RATE_LIMITED or UNAVAILABLE is an error in the report,
		// not a silent retry.
		NoBusyRetry: writer,
		OnConnectionChange: func(connected bool, _ string) {
			if connected {
				lg.reconnects.Add(1)
			} else {
				lg.disconnects.Add(1)
			}
		},
	}
	// A node that refuses for a limit (its connection rate, while many
	// clients connect at once) is asked again after its Retry-After, with
	// jitter, as a client should.
	for {
		c, err := client.Dial(ctx, first, opts)
		ref, refused := errors.AsType[*client.RefusedError](err)
		if !refused {
			return c, err
		}
		wait := max(ref.RetryAfter, 100*time.Millisecond)
		select {
		case <-time.After(wait + mrand.N(wait/2+1)):
		case <-ctx.Done():
			return nil, err
		}
	}
}

// dialMany dials n clients of one user.
func (lg *loadgen) dialMany(ctx context.Context, n int, user uuid.UUID, onEvent func(*pmv1.WebSocketMessage)) ([]*client.Client, error) {
	cs := make([]*client.Client, n)
	err := parallel(ctx, n, n, func(_, i int) error {
		c, err := lg.dial(ctx, i, user, onEvent, false, 0)
		cs[i] = c
		return err
	})
	var ok []*client.Client
	for _, c := range cs {
		if c != nil {
			ok = append(ok, c)
		}
	}
	return ok, err
}

// closeAll closes clients, a few at a time.
func closeAll(cs []*client.Client) {
	_ = parallel(context.Background(), len(cs), 32, func(_, i int) error { return cs[i].Close() })
}

// parallel runs f(worker, i) for i in [0, n) on at most workers goroutines
// and returns the first error; after one, the remaining calls are skipped.
func parallel(ctx context.Context, n, workers int, f func(worker, i int) error) error {
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
		failed  atomic.Bool
	)
	for w := range min(workers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || failed.Load() || ctx.Err() != nil {
					return
				}
				if err := f(w, i); err != nil {
					errOnce.Do(func() { first = err })
					failed.Store(true)
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}

// sdkEvents is a slog.Handler that counts the SDK's connection losses by
// close code and its event buffer overflows; it prints nothing.
type sdkEvents struct{ lg *loadgen }

func (h *sdkEvents) Enabled(context.Context, slog.Level) bool { return true }
func (h *sdkEvents) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *sdkEvents) WithGroup(string) slog.Handler            { return h }

func (h *sdkEvents) Handle(_ context.Context, r slog.Record) error {
	switch {
	case r.Message == "pm: connection lost":
		code := "?"
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "code" {
				code = a.Value.String()
				return false
			}
			return true
		})
		h.lg.mu.Lock()
		h.lg.closeCodes[code]++
		h.lg.mu.Unlock()
	case strings.HasPrefix(r.Message, "pm: event buffer overflowed"):
		h.lg.overflows.Add(1)
	}
	return nil
}

// subscriber is one subscriber connection following one project.
type subscriber struct {
	lg      *loadgen
	c       *client.Client
	project int
	replica *client.Project
	base    int64         // the replica's revision once subscribed
	delay   time.Duration // -slow: time taken over every event

	mu   sync.Mutex
	seen []uint64 // bit r: revision r arrived as an event
}

// onEvent runs on the client's sync goroutine for every pushed message.
func (s *subscriber) onEvent(m *pmv1.WebSocketMessage) {
	now := time.Now()
	var w *pmv1.WorkItem
	switch p := m.Payload.(type) {
	case *pmv1.WebSocketMessage_WorkItemCreated:
		w = p.WorkItemCreated.WorkItem
	case *pmv1.WebSocketMessage_WorkItemUpdated:
		w = p.WorkItemUpdated.WorkItem
	case *pmv1.WebSocketMessage_ResyncRequired:
		s.lg.resyncPushes.Add(1)
		return
	default:
		return
	}
	if w == nil || w.Revision <= 0 {
		return
	}
	s.mark(w.Revision)
	s.lg.deliveredAll.Add(1)
	if sent, ok := parseStamp(w.Description); ok && s.lg.measured(sent) {
		s.lg.deliveries.Add(1)
		s.lg.delivery.Record(now.Sub(time.Unix(0, sent)))
	}
	if s.delay > 0 {
		time.Sleep(s.delay) // a client busy with something else, not a wait for anything
	}
}

func (s *subscriber) mark(rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	word := int(rev / 64)
	for len(s.seen) <= word {
		s.seen = append(s.seen, 0)
	}
	s.seen[word] |= 1 << (rev % 64)
}

// check counts, among the revisions after the subscriber's first load up to
// head, those it received as events, those its replica caught up on through
// a resync instead, and those it never got.
func (s *subscriber) check(head int64) (live, repaired, lost int64) {
	applied := s.replica.Revision()
	s.mu.Lock()
	defer s.mu.Unlock()
	for r := s.base + 1; r <= head; r++ {
		word := int(r / 64)
		switch {
		case word < len(s.seen) && s.seen[word]&(1<<(r%64)) != 0:
			live++
		case r <= applied:
			repaired++
		default:
			lost++
		}
	}
	return live, repaired, lost
}

// writer is one writer connection and the items it owns.
type writer struct {
	id    int
	c     *client.Client
	items []*item
}

// item is a work item one writer owns: only its worker touches it.
type item struct {
	id      string
	project int
	version int64
	status  pmv1.WorkItemStatus
	n       int // writes so far
}

// job is one write to send; at is when (open loop: the schedule's time).
type job struct{ at time.Time }

// lane is where a writer sends its writes one at a time: a pm item, or a
// Centrifugo writer's channel. send makes one write whose send time is sent
// and records its outcome.
type lane interface {
	send(ctx context.Context, sent time.Time)
}

// load runs the writers until end: one worker per lane, fed by a fixed-rate
// schedule (open loop) or by the completions (closed loop).
func (lg *loadgen) load(ctx context.Context, lanes []lane, end time.Time) {
	// The open loop's queue holds up to a second of writes waiting for a
	// free lane (their latency counts from the schedule); past that the
	// generator itself is the bottleneck, and skips.
	jobs := make(chan job, max(len(lanes), lg.cfg.inflight, min(int(lg.cfg.rate), 100_000)))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, l := range lanes {
		wg.Go(func() { lg.work(ctx, l, jobs, stop, end) })
	}
	if lg.cfg.inflight > 0 {
		for range lg.cfg.inflight {
			jobs <- job{}
		}
		t := time.NewTimer(time.Until(end))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	} else {
		lg.schedule(ctx, jobs, end)
	}
	close(stop)
	wg.Wait()
}

// schedule sends jobs at the fixed rate until end. A job that finds the
// queue full (a second's worth behind) is skipped and counted.
func (lg *loadgen) schedule(ctx context.Context, jobs chan<- job, end time.Time) {
	interval := time.Duration(float64(time.Second) / lg.cfg.rate)
	next := time.Now()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		now := time.Now()
		for ; !next.After(now); next = next.Add(interval) {
			if !next.Before(end) {
				return
			}
			select {
			case jobs <- job{at: next}:
			default:
				lg.skipped.Add(1)
			}
		}
		t.Reset(time.Until(next))
	}
}

// work is the worker of one lane: it sends a write per job.
func (lg *loadgen) work(ctx context.Context, l lane, jobs chan job, stop <-chan struct{}, end time.Time) {
	closed := lg.cfg.inflight > 0
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case j := <-jobs:
			sent := j.at
			if closed {
				sent = time.Now()
				if !sent.Before(end) {
					return
				}
			}
			l.send(ctx, sent)
			if closed {
				jobs <- job{} // never blocks: a ticket back in a channel that held it
			}
		}
	}
}

// itemLane is a pm item as a lane: its writer's writes to it.
type itemLane struct {
	lg *loadgen
	w  *writer
	it *item
	r  *mrand.Rand // picks the kind of each write
}

func (l *itemLane) send(ctx context.Context, sent time.Time) { l.lg.write(ctx, l.w, l.it, sent, l.r) }

// write sends one write of the mix's kinds and records its outcome.
func (lg *loadgen) write(ctx context.Context, w *writer, it *item, sent time.Time, r *mrand.Rand) {
	desc := stamp(sent, w.id)
	m := lg.cfg.mix
	pick := r.IntN(m.Update + m.Create + m.Move)
	var (
		rev int64
		err error
	)
	it.n++
	switch {
	case pick < m.Update:
		title := fmt.Sprintf("pm-loadgen writer %d, write %d", w.id, it.n)
		var up *pmv1.WorkItemUpdated
		up, err = w.c.UpdateWorkItem(ctx, &pmv1.UpdateWorkItemRequest{WorkItemId: it.id, ExpectedVersion: it.version, Title: &title, Description: &desc})
		if err == nil {
			it.version, rev = up.WorkItem.Version, up.WorkItem.Revision
		}
	case pick < m.Update+m.Create:
		var created *pmv1.WorkItem
		created, err = w.c.CreateWorkItem(ctx, &pmv1.CreateWorkItemRequest{
			WorkItemId: uuid.NewString(), ProjectId: lg.projects[it.project], ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK,
			Title: fmt.Sprintf("pm-loadgen writer %d, new %d", w.id, it.n), Description: desc,
		})
		if err == nil {
			rev = created.Revision
		}
	default:
		status := nextStatus(it.status)
		var up *pmv1.WorkItemUpdated
		up, err = w.c.UpdateWorkItem(ctx, &pmv1.UpdateWorkItemRequest{WorkItemId: it.id, ExpectedVersion: it.version, Status: &status, Description: &desc})
		if err == nil {
			it.version, it.status, rev = up.WorkItem.Version, up.WorkItem.Status, up.WorkItem.Revision
		}
	}
	took := time.Since(sent)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		lg.countError(errorCode(err))
		if e, ok := errors.AsType[*pm.Error](err); ok && e.Code == pm.EConflict && e.CurrentVersion > 0 {
			it.version = e.CurrentVersion
		}
		return
	}
	for {
		m := lg.maxRev[it.project].Load()
		if rev <= m || lg.maxRev[it.project].CompareAndSwap(m, rev) {
			break
		}
	}
	lg.writesAll.Add(1)
	if lg.measured(sent.UnixNano()) {
		lg.writes[it.project].Add(1)
		lg.request.Record(took)
	}
}

// errorCode names an error for the report: its pm code, or what else it is.
func errorCode(err error) string {
	var ce *client.CloseError
	switch {
	case errors.As(err, &ce):
		return "CLOSED_" + strconv.Itoa(int(ce.Code))
	case errors.Is(err, context.DeadlineExceeded):
		return "TIMEOUT"
	case errors.Is(err, client.ErrClosed):
		return "CLIENT_CLOSED"
	}
	if _, ok := errors.AsType[*pm.Error](err); ok {
		return pm.ErrorCode(err)
	}
	return "OTHER"
}

// nextStatus moves a card one column right, wrapping around.
func nextStatus(s pmv1.WorkItemStatus) pmv1.WorkItemStatus {
	if s >= pmv1.WorkItemStatus_WORK_ITEM_STATUS_DONE || s < pmv1.WorkItemStatus_WORK_ITEM_STATUS_BACKLOG {
		return pmv1.WorkItemStatus_WORK_ITEM_STATUS_BACKLOG
	}
	return s + 1
}

// drain waits up to -drain until every subscriber's replica has reached its
// project's head, and returns how long that took.
func (lg *loadgen) drain(ctx context.Context, subs []*subscriber, heads []int64) time.Duration {
	start := time.Now()
	deadline := start.Add(lg.cfg.drain)
	for {
		behind := 0
		for _, s := range subs {
			if s.replica.Revision() < heads[s.project] {
				behind++
			}
		}
		if behind == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startProgress prints a line a second on stderr until the returned func is called.
func (lg *loadgen) startProgress(start time.Time) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var lastW, lastD uint64
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				w, d := lg.writesAll.Load(), lg.deliveredAll.Load()
				phase := "measuring"
				switch n := now.UnixNano(); {
				case n < lg.from.Load():
					phase = "warm-up"
				case n >= lg.to.Load():
					phase = "draining"
				}
				lg.mu.Lock()
				var errs uint64
				for _, n := range lg.errs {
					errs += n
				}
				lg.mu.Unlock()
				lg.progressf("%3.0fs %-9s writes/s %6d  deliveries/s %8d  errors %d  skipped %d  disconnects %d  delivery p99 %.1fms",
					now.Sub(start).Seconds(), phase, w-lastW, d-lastD, errs, lg.skipped.Load(), lg.disconnects.Load(), ms(lg.delivery.Quantile(0.99)))
				lastW, lastD = w, d
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func (lg *loadgen) progressf(format string, a ...any) {
	if lg.cfg.progress {
		fmt.Fprintf(lg.stderr, "pm-loadgen: "+format+"\n", a...)
	}
}
