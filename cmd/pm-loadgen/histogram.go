package main

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// subBits sets the histogram's precision: each power of two is split into
// 2^subBits buckets, so a recorded value is reported within 1/2^subBits
// (1.6%) of what it was. Values below 2^subBits are exact.
const (
	subBits  = 6
	subCount = 1 << subBits
	// buckets covers every non-negative int64: the exact values below
	// subCount, then subCount buckets for each higher power of two up to 2^62.
	buckets = subCount + (63-subBits)*subCount
)

// histogram is a log-linear histogram of durations in nanoseconds, in the
// manner of HdrHistogram: a fixed array of counters (29 KiB) whatever is
// recorded, safe for concurrent Record calls without a lock.
type histogram struct {
	counts [buckets]atomic.Uint64
	total  atomic.Uint64
	max    atomic.Int64
}

// bucketOf returns the bucket of a non-negative value.
func bucketOf(v int64) int {
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - subBits - 1
	mantissa := int(v >> shift) // in [subCount, 2*subCount)
	return subCount + shift*subCount + mantissa - subCount
}

// bucketHigh returns the highest value that falls in bucket i.
func bucketHigh(i int) int64 {
	if i < subCount {
		return int64(i)
	}
	shift := (i - subCount) / subCount
	mantissa := int64(i%subCount + subCount)
	if i == buckets-1 {
		return math.MaxInt64
	}
	return (mantissa+1)<<shift - 1
}

// Record adds one duration; a negative one (clocks went backwards) counts as 0.
func (h *histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucketOf(v)].Add(1)
	h.total.Add(1)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// Count returns how many durations were recorded.
func (h *histogram) Count() uint64 { return h.total.Load() }

// Max returns the largest recorded duration, exactly.
func (h *histogram) Max() time.Duration { return time.Duration(h.max.Load()) }

// Quantile returns the duration below or at which a fraction q (0..1) of the
// recorded ones lie: the highest value of the bucket that holds the
// ceil(q·count)-th smallest, never more than Max. It returns 0 when empty.
func (h *histogram) Quantile(q float64) time.Duration {
	total := h.Count()
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	rank = min(max(rank, 1), total)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return min(time.Duration(bucketHigh(i)), h.Max())
		}
	}
	return h.Max()
}

// summary is what the report shows of a histogram.
type summary struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// Summary returns the histogram's count and percentiles in milliseconds
// (rounded to the microsecond).
func (h *histogram) Summary() summary {
	return summary{
		Count: h.Count(),
		P50:   ms(h.Quantile(0.50)),
		P90:   ms(h.Quantile(0.90)),
		P99:   ms(h.Quantile(0.99)),
		P999:  ms(h.Quantile(0.999)),
		Max:   ms(h.Max()),
	}
}
