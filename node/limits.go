package node

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/pmhq/pm"
)

// Refusals at the upgrade for a limit: the upgrades metric's result, the
// HTTP status, the plain-text reason, and the Retry-After range in seconds
// (from min to min+spread, at random, so that refused clients come back
// spread out rather than together).
type refusal struct {
	result string
	status int
	reason string
	min    int
	spread int
}

var (
	refuseNodeFull = refusal{"node_full", http.StatusServiceUnavailable,
		"node full: it holds as many connections as it may; retry later, with jitter (another node may have room)", 1, 4}
	refuseConnectRate = refusal{"connect_rate", http.StatusServiceUnavailable,
		"node busy: too many new connections at once; retry after Retry-After seconds, with jitter", 1, 2}
	refuseTenantFull = refusal{"tenant_full", http.StatusTooManyRequests,
		"tenant connection limit reached: close another connection of this tenant, or retry later", 10, 10}
)

// refuse answers an upgrade with a refusal and counts it.
func (s *Server) refuse(w http.ResponseWriter, ref refusal) {
	s.metrics.upgrades.WithLabelValues(ref.result).Inc()
	w.Header().Set("Retry-After", strconv.Itoa(ref.min+rand.IntN(ref.spread+1)))
	http.Error(w, ref.reason, ref.status)
}

// admitTenant applies the per-tenant connection cap across the cluster. It
// returns false when the tenant is at its cap; true when the connection is
// let in, and then whether the Quota counted it (to be released).
func (s *Server) admitTenant(ctx context.Context, tenant string) (ok, counted bool) {
	if s.cfg.Quota == nil || s.cfg.TenantMaxConnections <= 0 {
		return true, false
	}
	ok, err := s.cfg.Quota.AcquireConnection(ctx, tenant, s.cfg.TenantMaxConnections)
	if err != nil {
		s.failOpen("tenant_connections", err)
		return true, true
	}
	return ok, ok
}

// allowTenantRequest applies the tenant's request rate across the cluster:
// a RATE_LIMITED error with retry_after_ms when its budget is spent.
func (c *session) allowTenantRequest(ctx context.Context) *pm.Error {
	s := c.srv
	if s.cfg.Quota == nil || s.cfg.TenantRatePerSecond <= 0 {
		return nil
	}
	wait, err := s.cfg.Quota.AllowRequest(ctx, c.actor.Tenant, s.cfg.TenantRatePerSecond, s.cfg.TenantRateBurst)
	if err != nil {
		s.failOpen("tenant_requests", err)
		return nil
	}
	if wait <= 0 {
		return nil
	}
	s.metrics.tenantRateLimited.Inc()
	return &pm.Error{
		Code: pm.ERateLimited, Message: "too many requests for this tenant across the cluster",
		RetryAfterMillis: max((wait + time.Millisecond - 1).Milliseconds(), 1),
	}
}

// failOpenLogEvery spaces the log lines of limits that fail open: while
// Redis is down every upgrade and request would log one.
const failOpenLogEvery = 10 * time.Second

// failOpen counts a limit that could not be checked and let its connection
// or request through, and logs it at most once per failOpenLogEvery.
func (s *Server) failOpen(limit string, err error) {
	s.metrics.failOpen.WithLabelValues(limit).Inc()
	now := time.Now().UnixNano()
	last := s.failOpenLogged.Load()
	if now-last < int64(failOpenLogEvery) || !s.failOpenLogged.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("cluster-wide limits unavailable; letting connections and requests through", "limit", limit, "err", err)
}
