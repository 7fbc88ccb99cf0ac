package main

import (
	"sync"
)

// Agg summarizes the samples of one series in one or more time buckets.
// The zero value is the empty aggregate.
type Agg struct {
	Count    int64
	Sum      float64
	Min, Max float64 // meaningless when Count is 0
	LastT    int64   // time of the latest sample
	Last     float64 // value of the latest sample (the later applied on ties)
}

// Mean returns Sum/Count, or 0 for an empty aggregate.
func (a Agg) Mean() float64 {
	if a.Count == 0 {
		return 0
	}
	return a.Sum / float64(a.Count)
}

func (a *Agg) add(t int64, v float64) {
	a.Merge(Agg{Count: 1, Sum: v, Min: v, Max: v, LastT: t, Last: v})
}

// Merge folds b into a. b must hold samples applied after a's, so that it
// wins ties for Last.
func (a *Agg) Merge(b Agg) {
	switch {
	case b.Count == 0:
		return
	case a.Count == 0:
		*a = b
		return
	}
	a.Count += b.Count
	a.Sum += b.Sum
	a.Min = min(a.Min, b.Min)
	a.Max = max(a.Max, b.Max)
	if b.LastT >= a.LastT {
		a.LastT, a.Last = b.LastT, b.Last
	}
}

// bucketOf returns the start of the bucket of width w holding t.
func bucketOf(t, w int64) int64 {
	b := t - t%w
	if t < 0 && t%w != 0 {
		b -= w
	}
	return b
}

// buckets holds one aggregate per bucket start, for each series.
type buckets map[SeriesID]map[int64]Agg

// rangeAgg merges the aggregates of series id whose bucket starts in
// [from, to).
func (bs buckets) rangeAgg(id SeriesID, from, to int64) Agg {
	var out Agg
	for start, a := range bs[id] {
		if from <= start && start < to {
			// Buckets are disjoint in time, so merge order only matters
			// for Last ties, which cannot happen across buckets.
			out.Merge(a)
		}
	}
	return out
}

// Delta is the live in-memory batch of samples: for each series, one
// aggregate per time bucket. It implements [coordinator.Delta] with the
// series dictionary as its context, so IDs survive freezes.
//
// The coordinator calls Apply, EstimateSize and Freeze from one goroutine;
// readers go through [LiveReader], which is why the aggregates are guarded.
type Delta struct {
	dict  *Dict
	width int64 // bucket width, in milliseconds

	mu   sync.RWMutex
	aggs buckets // protected by mu (written by Apply, read by LiveReader)

	series []Series // series created by this delta, in ID order
	size   int
}

// NewDelta returns an empty delta that allocates series IDs from dict and
// aggregates samples in buckets of width milliseconds.
func NewDelta(dict *Dict, width int64) *Delta {
	return &Delta{dict: dict, width: width, aggs: buckets{}}
}

// Per-entry size estimates, for EstimateSize.
const (
	seriesOverhead = 64
	bucketOverhead = 80
)

// Apply adds a sample and returns the ID of its series. An invalid sample
// is rejected before anything changes, so the dictionary gives out no ID
// for it.
func (d *Delta) Apply(s Sample) (SeriesID, error) {
	if err := s.validate(); err != nil {
		return 0, err
	}
	labels := CanonicalLabels(s.Labels)
	id, created := d.dict.assign(s.Metric + "{" + labels + "}")
	if created {
		d.series = append(d.series, Series{ID: id, Metric: s.Metric, Labels: labels})
		d.size += seriesOverhead + len(s.Metric) + len(labels)
	}
	start := bucketOf(s.T, d.width)

	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.aggs[id]
	if m == nil {
		m = map[int64]Agg{}
		d.aggs[id] = m
	}
	a, ok := m[start]
	if !ok {
		d.size += bucketOverhead
	}
	a.add(s.T, s.V)
	m[start] = a
	return id, nil
}

// EstimateSize returns an estimate of the delta's memory in bytes.
func (d *Delta) EstimateSize() int { return d.size }

// Freeze ends the delta. The frozen delta serves both as the data to flush
// and as its read view, since nothing modifies it any more; the dictionary
// goes on to the next delta.
func (d *Delta) Freeze() (*Frozen, *Frozen, *Dict) {
	f := &Frozen{Series: d.series, aggs: d.aggs, width: d.width}
	return f, f, d.dict
}

// Reader returns a view of the live delta that sees samples as they are
// applied.
func (d *Delta) Reader() *LiveReader { return &LiveReader{d: d} }

// LiveReader reads a delta while it is being written. It is safe for
// concurrent use.
type LiveReader struct{ d *Delta }

// Range returns the aggregate of series id over the buckets starting in
// [from, to). A nil reader (the view of a failed coordinator) is empty.
func (r *LiveReader) Range(id SeriesID, from, to int64) Agg {
	if r == nil {
		return Agg{}
	}
	r.d.mu.RLock()
	defer r.d.mu.RUnlock()
	return r.d.aggs.rangeAgg(id, from, to)
}

// Frozen is a frozen delta: immutable, so safe for concurrent reads.
type Frozen struct {
	Series []Series // series created in this delta, to insert before its aggregates
	aggs   buckets
	width  int64
}

// Range returns the aggregate of series id over the buckets starting in
// [from, to).
func (f *Frozen) Range(id SeriesID, from, to int64) Agg { return f.aggs.rangeAgg(id, from, to) }

// Rows returns the number of (series, bucket) aggregates.
func (f *Frozen) Rows() int {
	n := 0
	for _, m := range f.aggs {
		n += len(m)
	}
	return n
}
