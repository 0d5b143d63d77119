package repo_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/repo"
	"github.com/pmhq/pm/repo/repotest"
)

// proxied is a store that reaches its database through a proxy, with its
// metrics in reg. Its pool holds one connection, so that the failures an
// outage causes are the same whatever the pool held before it: each read
// fails once, on its connection or its dial.
type proxied struct {
	*fixture
	proxy *repotest.Proxy
	reg   *prometheus.Registry
}

func newProxied(t *testing.T, cfg repo.Config) *proxied {
	t.Helper()
	var url string
	p := &proxied{reg: prometheus.NewRegistry()}
	p.proxy, url = repotest.MustProxy(t, repotest.MustMigratedDatabaseURL(t))
	cfg.DatabaseURL, cfg.Registerer, cfg.MaxConns = url, p.reg, 1
	p.fixture = newFixtureOn(t, repotest.MustOpen(t, cfg))
	return p
}

// metric returns the value of the series of name with labels, 0 if absent.
func (p *proxied) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	families, err := p.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for i := 0; i < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
				}
				if !found {
					continue series
				}
			}
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return 0
}

// state returns the breaker's state as its metric says.
func (p *proxied) state(t *testing.T) string {
	t.Helper()
	for _, s := range []string{"closed", "half_open", "open"} {
		if p.metric(t, "pm_db_breaker_state", "state", s) == 1 {
			return s
		}
	}
	t.Fatal("pm_db_breaker_state has no current state")
	return ""
}

// read reads the project as the editor, within a second.
func (p *proxied) read(t *testing.T) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	_, err := p.s.GetWorkItem(ctx, p.editor, p.project.ID)
	return err
}

// wantOpenRefusal checks that err is the breaker's immediate UNAVAILABLE
// and returns its retry hint.
func wantOpenRefusal(t *testing.T, err error, open time.Duration) time.Duration {
	t.Helper()
	perr, ok := errors.AsType[*pm.Error](err)
	if !ok || perr.Code != pm.EUnavailable {
		t.Fatalf("got %v, want UNAVAILABLE", err)
	}
	coe, ok := errors.AsType[*repo.CircuitOpenError](err)
	if !ok {
		t.Fatalf("got %v, want a *repo.CircuitOpenError in the chain", err)
	}
	if perr.RetryAfterMillis <= 0 || perr.RetryAfterMillis > open.Milliseconds() || perr.RetryAfterMillis != max(coe.RetryAfter.Milliseconds(), 1) {
		t.Fatalf("retry after %d ms (cause says %v), want (0, %d] and agreeing", perr.RetryAfterMillis, coe.RetryAfter, open.Milliseconds())
	}
	return coe.RetryAfter
}

// After BreakerFailures consecutive failures of a database that stopped,
// every operation, readiness pings included, fails at once with UNAVAILABLE
// and the time until the next probe, without touching the network: even a
// database back meanwhile is not tried before the open period ends.
func TestBreakerOpensAfterConsecutiveFailures(t *testing.T) {
	const failures, open = 3, time.Hour
	p := newProxied(t, repo.Config{BreakerFailures: failures, BreakerOpen: open})
	if err := p.read(t); err != nil {
		t.Fatal(err)
	}
	if s := p.state(t); s != "closed" {
		t.Fatalf("state %s before the outage, want closed", s)
	}

	p.proxy.Down()
	for i := range failures {
		err := p.read(t)
		if pm.ErrorCode(err) != pm.EUnavailable {
			t.Fatalf("read %d in the outage: %v, want UNAVAILABLE", i+1, err)
		}
		if _, refused := errors.AsType[*repo.CircuitOpenError](err); refused {
			t.Fatalf("read %d refused by the breaker after %d failures, want it to try (threshold %d)", i+1, i, failures)
		}
	}
	if s := p.state(t); s != "open" {
		t.Fatalf("state %s after %d failures, want open", s, failures)
	}
	if got := p.metric(t, "pm_db_breaker_transitions_total", "from", "closed", "to", "open"); got != 1 {
		t.Fatalf("closed→open transitions %v, want 1", got)
	}

	p.proxy.Up() // the database is back, but the breaker waits for its open period
	start := time.Now()
	const refusals = 100
	for range refusals {
		wantOpenRefusal(t, p.read(t), open)
	}
	t.Logf("%d refusals by the open breaker took %v (%v each)", refusals, time.Since(start), time.Since(start)/refusals)
	_, _, err := p.s.CreateWorkItem(t.Context(), p.editor, pm.NewWorkItem{
		ProjectID: p.project.ID, Type: pm.TypeTask, Title: "while open"})
	wantOpenRefusal(t, err, open)
	err = p.s.Ping(t.Context())
	wantOpenRefusal(t, err, open)
	if got := p.metric(t, "pm_db_breaker_rejections_total"); got != refusals+2 {
		t.Fatalf("rejections %v, want %d", got, refusals+2)
	}
	if s := p.state(t); s != "open" {
		t.Fatalf("state %s, want open", s)
	}
}

// Once the open period ends the breaker lets a probe through: a probe that
// fails opens it again, one that succeeds closes it, with no restart.
func TestBreakerClosesByItselfWhenTheDatabaseIsBack(t *testing.T) {
	const open = 200 * time.Millisecond
	p := newProxied(t, repo.Config{BreakerFailures: 2, BreakerOpen: open})
	p.proxy.Down()
	waitState := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for p.state(t) != want {
			if time.Now().After(deadline) {
				t.Fatalf("breaker still %s after 10s, want %s", p.state(t), want)
			}
			time.Sleep(10 * time.Millisecond) // polling the state, which moves on its own clock
		}
	}
	for p.state(t) != "open" {
		if err := p.read(t); pm.ErrorCode(err) != pm.EUnavailable {
			t.Fatalf("read in the outage: %v, want UNAVAILABLE", err)
		}
	}
	waitState("half_open")
	// The probe: the database is still down, so it fails and the breaker
	// opens again.
	if err := p.read(t); pm.ErrorCode(err) != pm.EUnavailable {
		t.Fatalf("probe in the outage: %v, want UNAVAILABLE", err)
	} else if _, refused := errors.AsType[*repo.CircuitOpenError](err); refused {
		t.Fatalf("half-open breaker refused its probe: %v", err)
	}
	if got := p.metric(t, "pm_db_breaker_transitions_total", "from", "half_open", "to", "open"); got != 1 {
		t.Fatalf("half_open→open transitions %v after a failed probe, want 1", got)
	}

	p.proxy.Up()
	waitState("half_open")
	if err := p.read(t); err != nil {
		t.Fatalf("probe with the database back: %v", err)
	}
	if s := p.state(t); s != "closed" {
		t.Fatalf("state %s after a good probe, want closed", s)
	}
	item, _, err := p.s.CreateWorkItem(t.Context(), p.editor, pm.NewWorkItem{
		ProjectID: p.project.ID, Type: pm.TypeTask, Title: "after the outage"})
	if err != nil {
		t.Fatalf("write after the outage: %v", err)
	}
	if item.Revision != p.project.Revision+1 {
		t.Fatalf("revision %d after the outage, want %d: no write of the outage may have counted", item.Revision, p.project.Revision+1)
	}
	for _, tr := range [][2]string{{"closed", "open"}, {"open", "half_open"}, {"half_open", "open"}, {"half_open", "closed"}} {
		if p.metric(t, "pm_db_breaker_transitions_total", "from", tr[0], "to", tr[1]) == 0 {
			t.Errorf("no %s→%s transition counted", tr[0], tr[1])
		}
	}
}

// Answers of the database, however unwelcome, and requests their callers
// gave up on never open the breaker: only a database out of reach does.
func TestBreakerCountsOnlyInfrastructureFailures(t *testing.T) {
	p := newProxied(t, repo.Config{BreakerFailures: 2, BreakerOpen: time.Hour})
	ctx := t.Context()
	for range 5 {
		if _, err := p.s.GetWorkItem(ctx, p.editor, uuid.New()); pm.ErrorCode(err) != pm.ENotFound {
			t.Fatalf("missing item: %v, want NOT_FOUND", err)
		}
		if _, _, err := p.s.CreateWorkItem(ctx, p.outsider, pm.NewWorkItem{
			ProjectID: p.project.ID, Type: pm.TypeTask, Title: "no"}); pm.ErrorCode(err) != pm.EUnauthorized {
			t.Fatalf("outsider's write: %v, want UNAUTHORIZED", err)
		}
		if _, _, err := p.s.UpdateWorkItem(ctx, p.admin, p.project.ID, p.project.Version+7,
			pm.WorkItemPatch{Title: new("stale")}); pm.ErrorCode(err) != pm.EConflict {
			t.Fatalf("stale write: %v, want CONFLICT", err)
		}
		if _, err := p.s.GetWorkItem(ctx, pm.Actor{Tenant: "bad tenant!", User: uuid.New()}, p.project.ID); pm.ErrorCode(err) != pm.EUnauthorized {
			t.Fatalf("invalid tenant: %v, want UNAUTHORIZED", err)
		}
	}
	if s := p.state(t); s != "closed" {
		t.Fatalf("state %s after domain errors, want closed", s)
	}

	p.proxy.Down()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	for range 5 {
		if _, err := p.s.GetWorkItem(cancelled, p.editor, p.project.ID); err == nil {
			t.Fatal("read with a cancelled context succeeded")
		}
	}
	if s := p.state(t); s != "closed" {
		t.Fatalf("state %s after cancelled requests, want closed", s)
	}
	// One failure is below the threshold; a success in between resets the
	// count, so only consecutive failures open the breaker.
	if err := p.read(t); pm.ErrorCode(err) != pm.EUnavailable {
		t.Fatalf("read in the outage: %v", err)
	}
	p.proxy.Up()
	if err := p.read(t); err != nil {
		t.Fatalf("read with the database back: %v", err)
	}
	p.proxy.Down()
	if err := p.read(t); pm.ErrorCode(err) != pm.EUnavailable {
		t.Fatalf("read in the second outage: %v", err)
	}
	if s := p.state(t); s != "closed" {
		t.Fatalf("state %s after failures that were not consecutive, want closed", s)
	}
	if err := p.read(t); pm.ErrorCode(err) != pm.EUnavailable {
		t.Fatalf("read in the second outage: %v", err)
	}
	if s := p.state(t); s != "open" {
		t.Fatalf("state %s after 2 consecutive failures, want open", s)
	}
}

// A database that accepts connections and never answers (a hung host) costs
// each request its timeout only until the breaker has seen enough of them;
// then requests fail at once.
func TestBreakerBoundsAHungDatabase(t *testing.T) {
	const open = time.Hour
	p := newProxied(t, repo.Config{BreakerFailures: 2, BreakerOpen: open, AcquireTimeout: 300 * time.Millisecond})
	p.proxy.Blackhole()
	t.Cleanup(p.proxy.Up) // before the store closes: its connections are reset, not waited for
	var slow []time.Duration
	deadline := time.Now().Add(60 * time.Second)
	for p.state(t) != "open" {
		if time.Now().After(deadline) {
			t.Fatalf("breaker still %s after %d timed-out reads", p.state(t), len(slow))
		}
		start := time.Now()
		if err := p.read(t); pm.ErrorCode(err) != pm.EUnavailable {
			t.Fatalf("read from a hung database: %v, want UNAVAILABLE", err)
		}
		slow = append(slow, time.Since(start))
	}
	start := time.Now()
	wantOpenRefusal(t, p.read(t), open)
	t.Logf("reads before the breaker opened: %v; the next was refused in %v", slow, time.Since(start))
}

// A negative BreakerFailures disables the breaker: every operation tries
// the database, however often it failed before.
func TestBreakerDisabled(t *testing.T) {
	p := newProxied(t, repo.Config{BreakerFailures: -1})
	p.proxy.Down()
	for range 20 {
		err := p.read(t)
		if pm.ErrorCode(err) != pm.EUnavailable {
			t.Fatalf("read in the outage: %v, want UNAVAILABLE", err)
		}
		if _, refused := errors.AsType[*repo.CircuitOpenError](err); refused {
			t.Fatalf("disabled breaker refused: %v", err)
		}
	}
	p.proxy.Up()
	if err := p.read(t); err != nil {
		t.Fatalf("read with the database back: %v", err)
	}
	if s := p.state(t); s != "closed" {
		t.Fatalf("state %s, want closed", s)
	}
}

// The pool's statistics are on the store's registry as an operator reads
// them: connections in use, idle and in all, the cap, acquisitions and their
// wait, and acquisitions that gave up.
func TestPoolMetrics(t *testing.T) {
	p := newProxied(t, repo.Config{}) // one connection
	if got := p.metric(t, "pm_db_pool_max_conns"); got != 1 {
		t.Fatalf("pm_db_pool_max_conns %v, want 1", got)
	}
	before := p.metric(t, "pm_db_pool_acquires_total")
	if err := p.read(t); err != nil {
		t.Fatal(err)
	}
	if got := p.metric(t, "pm_db_pool_acquires_total"); got != before+1 {
		t.Fatalf("pm_db_pool_acquires_total %v after a read, want %v", got, before+1)
	}
	if p.metric(t, "pm_db_pool_acquire_wait_seconds_total") <= 0 {
		t.Fatal("pm_db_pool_acquire_wait_seconds_total is 0 after acquisitions")
	}
	if idle, total := p.metric(t, "pm_db_pool_idle_conns"), p.metric(t, "pm_db_pool_total_conns"); idle != 1 || total != 1 {
		t.Fatalf("at rest: idle %v, total %v; want 1 and 1", idle, total)
	}

	// A load holds the only connection while its caller takes a page.
	holding, release := make(chan struct{}), make(chan struct{})
	loaded := make(chan error, 1)
	go func() {
		loaded <- p.s.StreamWorkItems(t.Context(), p.viewer, pm.WorkItemQuery{ProjectID: p.project.ID}, func(pm.Snapshot, []pm.WorkItem) error {
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	if got := p.metric(t, "pm_db_pool_acquired_conns"); got != 1 {
		t.Fatalf("pm_db_pool_acquired_conns %v while a load holds the connection, want 1", got)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	_, err := p.s.GetWorkItem(ctx, p.editor, p.project.ID)
	cancel()
	if pm.ErrorCode(err) != pm.EUnavailable {
		t.Fatalf("read without a free connection: %v, want UNAVAILABLE", err)
	}
	if got := p.metric(t, "pm_db_pool_canceled_acquires_total"); got != 1 {
		t.Fatalf("pm_db_pool_canceled_acquires_total %v, want 1", got)
	}
	close(release)
	if err := <-loaded; err != nil {
		t.Fatal(err)
	}
	if s := p.state(t); s != "closed" {
		t.Fatalf("breaker %s after a request that gave up waiting, want closed", s)
	}
}
