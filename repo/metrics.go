package repo

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// storeCollector reports the connection pool's statistics (pgxpool.Stat)
// and the circuit breaker's state at each scrape.
type storeCollector struct {
	pool *pgxpool.Pool
	b    *breaker
}

var (
	descAcquiredConns = prometheus.NewDesc("pm_db_pool_acquired_conns",
		"Database connections in use by an operation.", nil, nil)
	descIdleConns = prometheus.NewDesc("pm_db_pool_idle_conns",
		"Database connections idle in the pool.", nil, nil)
	descTotalConns = prometheus.NewDesc("pm_db_pool_total_conns",
		"Database connections in the pool: acquired, idle and being opened.", nil, nil)
	descMaxConns = prometheus.NewDesc("pm_db_pool_max_conns",
		"Largest number of database connections the pool opens.", nil, nil)
	descAcquires = prometheus.NewDesc("pm_db_pool_acquires_total",
		"Successful acquisitions of a pooled database connection.", nil, nil)
	descAcquireWait = prometheus.NewDesc("pm_db_pool_acquire_wait_seconds_total",
		"Time spent in successful acquisitions of a pooled connection (rate / rate of acquires = mean wait).", nil, nil)
	descEmptyAcquires = prometheus.NewDesc("pm_db_pool_empty_acquires_total",
		"Successful acquisitions that found no idle connection and waited for one to be released or opened.", nil, nil)
	descEmptyAcquireWait = prometheus.NewDesc("pm_db_pool_empty_acquire_wait_seconds_total",
		"Time spent in acquisitions that found no idle connection.", nil, nil)
	descCanceledAcquires = prometheus.NewDesc("pm_db_pool_canceled_acquires_total",
		"Acquisitions that ended without a connection: the acquire timeout or the request's context ran out first.", nil, nil)
	descBreakerState = prometheus.NewDesc("pm_db_breaker_state",
		"The database circuit breaker's state: 1 for the current one of closed, half_open and open, 0 for the others.", []string{"state"}, nil)
)

// Describe implements prometheus.Collector.
func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descAcquiredConns, descIdleConns, descTotalConns, descMaxConns, descAcquires,
		descAcquireWait, descEmptyAcquires, descEmptyAcquireWait, descCanceledAcquires, descBreakerState,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.pool.Stat()
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(descAcquiredConns, float64(st.AcquiredConns()))
	gauge(descIdleConns, float64(st.IdleConns()))
	gauge(descTotalConns, float64(st.TotalConns()))
	gauge(descMaxConns, float64(st.MaxConns()))
	counter(descAcquires, float64(st.AcquireCount()))
	counter(descAcquireWait, st.AcquireDuration().Seconds())
	counter(descEmptyAcquires, float64(st.EmptyAcquireCount()))
	counter(descEmptyAcquireWait, st.EmptyAcquireWaitTime().Seconds())
	counter(descCanceledAcquires, float64(st.CanceledAcquireCount()))
	current := c.b.state()
	for _, s := range []gobreaker.State{gobreaker.StateClosed, gobreaker.StateHalfOpen, gobreaker.StateOpen} {
		v := 0.0
		if s == current {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descBreakerState, prometheus.GaugeValue, v, stateName(s))
	}
}

// register registers the store's metrics with reg; nil registers nothing.
func (s *Store) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{storeCollector{s.pool, s.breaker}, s.breaker.rejections, s.breaker.transitions} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
