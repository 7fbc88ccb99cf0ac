// Command timeseries is a small time-series store built on the write
// coordinator: writers send samples through the coordinator, a Delta
// aggregates them per series and time bucket (allocating series IDs from a
// dictionary carried from delta to delta), and the Flusher writes each
// frozen delta to SQLite in one transaction. Readers query a View — live
// delta, frozen deltas and a snapshot of the database — and see every
// applied sample, flushed or not.
//
// Usage:
//
//	go run . [-dir DIR] [-hosts N] [-minutes N]
//
// Without -dir the database goes to a temporary directory that is removed
// on exit.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/groupcommit/coordinator"
	"golang.org/x/sync/errgroup"
)

func main() {
	dir := flag.String("dir", "", "directory for timeseries.db (default: a temporary directory, removed on exit)")
	hosts := flag.Int("hosts", 4, "number of series (one writer goroutine each)")
	minutes := flag.Int("minutes", 120, "minutes of samples to write, one sample every 10s per series")
	flag.Parse()
	if err := run(*dir, *hosts, *minutes); err != nil {
		log.Fatal(err)
	}
}

func run(dir string, hosts, minutes int) error {
	if dir == "" {
		tmp, err := os.MkdirTemp("", "timeseries-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	ctx := context.Background()
	opts := Options{Coordinator: coordinator.Config{FlushSize: 16 << 10}}
	st, err := Open(ctx, dir, opts)
	if err != nil {
		return err
	}
	defer st.Close(ctx)
	fmt.Printf("database %s/timeseries.db, %v buckets, %d series known\n", dir, st.BucketWidth(), st.Dict().Len())

	// Each host's writer sends one sample every 10s of simulated time with
	// value i%100, so every number below can be checked by hand.
	const step = 10_000 // ms
	perHost := minutes * 60_000 / step
	// The first writer to fail cancels the others' context; Wait returns
	// its error.
	g, gctx := errgroup.WithContext(ctx)
	for h := range hosts {
		g.Go(func() error {
			ch := st.Coordinator().Channel("default")
			labels := Labels{"host": fmt.Sprintf("h%d", h), "dc": "eu"}
			var last *coordinator.WriteHandle[SeriesID]
			for i := range perHost {
				hd, err := ch.Write(gctx, Sample{Metric: "cpu_load", Labels: labels, T: int64(i) * step, V: float64(i % 100)})
				if err != nil {
					return err
				}
				last = hd
			}
			_, err := last.Wait(gctx, coordinator.Applied)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}

	window := int64(minutes) * 60_000
	show := func(when string) error {
		v := st.Coordinator().View()
		a, err := st.Query(ctx, v, "cpu_load", Labels{"dc": "eu", "host": "h0"}, 0, window)
		if err != nil {
			return err
		}
		fmt.Printf("%-26s cpu_load{host=h0} [0, %dm): count=%d sum=%g min=%g max=%g last=%g@%ds  (view: live delta + %d frozen + snapshot gen %d)\n",
			when, minutes, a.Count, a.Sum, a.Min, a.Max, a.Last, a.LastT/1000, len(v.Frozen), v.Snapshot.Gen)
		return nil
	}
	if err := show("applied, partly flushed:"); err != nil {
		return err
	}
	start := time.Now()
	epoch, err := st.Coordinator().Flush(ctx, coordinator.Durable)
	if err != nil {
		return err
	}
	s := st.Coordinator().Stats()
	fmt.Printf("durable through epoch %d in %v: %d deltas written (%d by size), %d checkpoints\n",
		epoch, time.Since(start).Round(time.Millisecond), s.FlushDelta.Count, s.Flushes.Size, s.Syncs)
	if err := show("durable:"); err != nil {
		return err
	}
	if err := st.Close(ctx); err != nil {
		return err
	}

	// Reopen: the dictionary and the generation come back from SQLite, and
	// a query sees the same numbers from storage alone.
	st, err = Open(ctx, dir, Options{})
	if err != nil {
		return err
	}
	defer st.Close(ctx)
	id, _ := st.Dict().Lookup(SeriesKey("cpu_load", Labels{"host": "h0", "dc": "eu"}))
	fmt.Printf("reopened: %d series, cpu_load{host=h0} is series %d, generation %d\n",
		st.Dict().Len(), id, st.Coordinator().View().Snapshot.Gen)
	if err := show("after restart:"); err != nil {
		return err
	}
	return st.Close(ctx)
}
