package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestBucketsCoverEveryValue(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 63, 64, 65, 127, 128, 129, 1000, 1 << 20, 1<<40 + 12345, math.MaxInt64 - 1, math.MaxInt64} {
		i := bucketOf(v)
		if i < prev || i >= buckets {
			t.Fatalf("bucketOf(%d) = %d after %d (of %d)", v, i, prev, buckets)
		}
		prev = i
		if high := bucketHigh(i); high < v {
			t.Fatalf("bucketHigh(%d) = %d < %d", i, high, v)
		}
		if i > 0 && bucketHigh(i-1) >= v {
			t.Fatalf("value %d also fits bucket %d (high %d)", v, i-1, bucketHigh(i-1))
		}
	}
	// Consecutive buckets tile the line without holes.
	for i := 1; i < buckets; i++ {
		if got := bucketOf(bucketHigh(i-1) + 1); got != i {
			t.Fatalf("bucketOf(bucketHigh(%d)+1) = %d, want %d", i-1, got, i)
		}
	}
}

func TestQuantilesMatchSortedSamples(t *testing.T) {
	var h histogram
	r := rand.New(rand.NewPCG(1, 2))
	samples := make([]time.Duration, 100000)
	for i := range samples {
		// Log-normal-ish: microseconds to seconds.
		samples[i] = time.Duration(math.Exp(r.NormFloat64()*2+13)) + 1
		h.Record(samples[i])
	}
	slices.Sort(samples)
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
		rank := max(int(math.Ceil(q*float64(len(samples)))), 1)
		want := samples[rank-1]
		got := h.Quantile(q)
		if got < want || float64(got-want) > float64(want)/subCount {
			t.Errorf("q%v = %v, want %v within 1/%d", q, got, want, subCount)
		}
	}
	if h.Max() != samples[len(samples)-1] || h.Count() != uint64(len(samples)) {
		t.Errorf("max %v count %d, want %v %d", h.Max(), h.Count(), samples[len(samples)-1], len(samples))
	}
}

func TestHistogramSmallAndEmpty(t *testing.T) {
	var h histogram
	if h.Quantile(0.5) != 0 || h.Max() != 0 || h.Summary().Count != 0 {
		t.Fatal("empty histogram is not all zero")
	}
	for _, v := range []time.Duration{3, 1, 2, -5} { // -5: a clock step, counted as 0
		h.Record(v)
	}
	if got := h.Quantile(0.5); got != 1 {
		t.Errorf("p50 = %v, want 1ns", got)
	}
	if got := h.Quantile(1); got != 3 {
		t.Errorf("p100 = %v, want 3ns", got)
	}
	h.Record(1500 * time.Microsecond)
	if s := h.Summary(); s.Max != 1.5 || s.Count != 5 {
		t.Errorf("summary %+v, want max 1.5 ms of 5", s)
	}
}

func TestHistogramConcurrent(t *testing.T) {
	var h histogram
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				h.Record(time.Duration(g*1000 + i))
			}
		})
	}
	wg.Wait()
	if h.Count() != 8000 || h.Max() != 7999 {
		t.Fatalf("count %d max %v", h.Count(), h.Max())
	}
}
