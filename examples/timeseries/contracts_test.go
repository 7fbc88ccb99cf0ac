package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/groupcommit/coordinator/coordinatortest"
)

var long = flag.Bool("long", false, "run the contract checks with many more workloads")

// The contract checks write two series over two one-minute buckets, so
// that samples share series and buckets across deltas. (Each read is a
// SQLite query per series and bucket, which the race detector slows down
// a lot: the space is kept small.)
var (
	kitSeries = []struct {
		metric string
		labels Labels
	}{{"cpu", Labels{"host": "a"}}, {"mem", nil}}
	kitBuckets = []int64{0, 60_000}
)

const kitWidth = 60_000 // milliseconds

// bucketKey names a series' bucket in the model.
func bucketKey(metric string, labels Labels, bucket int64) string {
	return fmt.Sprintf("%s@%d", SeriesKey(metric, labels), bucket)
}

// TestContracts runs the store's Delta (with its series dictionary carried
// from delta to delta) and its SQLite Flusher through coordinatortest:
// random workloads with flushes, injected flusher failures, crashes and
// reopens, checked against a map of aggregates computed independently.
func TestContracts(t *testing.T) {
	iterations, steps := 2, 30
	if *long {
		iterations, steps = 40, 40
	}
	coordinatortest.Run(t, coordinatortest.Harness[Sample, SeriesID, *Dict, *Frozen, *Frozen, *LiveReader, Snapshot, map[string]Agg]{
		Open: func(dir string) (*coordinatortest.Store[Sample, SeriesID, *Dict, *Frozen, *Frozen, *LiveReader, Snapshot], error) {
			db, err := openDB(dir)
			if err != nil {
				return nil, err
			}
			series, gen, _, err := loadState(context.Background(), db, kitWidth)
			if err != nil {
				db.Close()
				return nil, err
			}
			// Generations are the store's epochs: the coordinator
			// continues them from gen with Config.FirstEpoch.
			newDelta := func(d *Dict) *Delta { return NewDelta(d, kitWidth) }
			st := coordinatortest.NewStore(newDelta, NewDict(series), Snapshot{DB: db, Gen: gen}, &Flusher{db: db}, gen)
			st.Close = db.Close
			return st, nil
		},
		Write: func(r *rand.Rand) Sample {
			s := kitSeries[r.IntN(len(kitSeries))]
			sample := Sample{Metric: s.metric, Labels: s.labels, T: kitBuckets[r.IntN(len(kitBuckets))] + r.Int64N(3), V: float64(r.IntN(11) - 5)}
			if r.IntN(15) == 0 {
				sample.V = math.NaN() // rejected
			}
			return sample
		},
		Init: func() map[string]Agg { return map[string]Agg{} },
		// Apply aggregates a sample the plain way; integer values keep
		// the sums exact whatever order the layers add them in.
		Apply: func(m map[string]Agg, s Sample) map[string]Agg {
			key := bucketKey(s.Metric, s.Labels, bucketOf(s.T, kitWidth))
			a, ok := m[key]
			if !ok {
				a = Agg{Min: s.V, Max: s.V}
			}
			a.Count++
			a.Sum += s.V
			a.Min, a.Max = min(a.Min, s.V), max(a.Max, s.V)
			if s.T >= a.LastT || a.Count == 1 {
				a.LastT, a.Last = s.T, s.V
			}
			m[key] = a
			return m
		},
		// Read queries every series' buckets as Store.Query does, through
		// the dictionary the live delta carries.
		Read: func(v *View) (map[string]Agg, error) {
			m := map[string]Agg{}
			for _, s := range kitSeries {
				id, ok := v.Current.d.dict.Lookup(SeriesKey(s.metric, s.labels))
				if !ok {
					continue
				}
				for _, b := range kitBuckets {
					a, err := v.Snapshot.Range(context.Background(), id, b, b+kitWidth)
					if err != nil {
						return nil, err
					}
					for i := len(v.Frozen) - 1; i >= 0; i-- {
						a.Merge(v.Frozen[i].View.Range(id, b, b+kitWidth))
					}
					a.Merge(v.Current.Range(id, b, b+kitWidth))
					if a.Count > 0 {
						m[bucketKey(s.metric, s.labels, b)] = a
					}
				}
			}
			return m, nil
		},
	}, coordinatortest.Iterations(iterations), coordinatortest.Steps(steps))
}
