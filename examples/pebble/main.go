// Command pebble embeds the write coordinator in front of an existing LSM
// engine, cockroachdb/pebble: writers send puts and deletes through the
// coordinator, each frozen delta is committed as one pebble batch without
// sync (Written), and a WAL sync makes every batch so far durable at once
// (Durable). Readers see the live delta, the frozen deltas and a pebble
// snapshot through a view. The last epoch is stored in each batch, so a
// reopened store continues the epochs.
//
// Usage:
//
//	go run . [-dir DIR] [-writers N] [-keys N]
//
// Without -dir the database goes to a temporary directory that is removed
// on exit. The command writes, waits for every op to be durable, reads it
// back, closes, reopens, checks every key and the epochs, and prints one
// line.
package main

import (
	"bytes"
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
	dir := flag.String("dir", "", "pebble directory (default: a temporary directory, removed on exit)")
	writers := flag.Int("writers", 8, "concurrent writers")
	keys := flag.Int("keys", 200, "ops per writer, each waited for until durable; every tenth deletes a key")
	flag.Parse()
	r, err := run(context.Background(), *dir, *writers, *keys)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r)
}

// report is what run found.
type report struct {
	writers, ops   int
	elapsed        time.Duration
	batches, syncs uint64
	resumed        uint64 // the last epoch in the database before this run
	last           uint64 // the last epoch this run wrote
	lastBatch      uint64 // the number of the last batch this run wrote
	next           uint64 // the epoch of the first write after reopening
	present, gone  int    // keys found and found absent after reopening
}

func (r report) String() string {
	return fmt.Sprintf("pebble: OK: %d ops from %d writers durable in %v as %d batches with %d WAL syncs; "+
		"epochs %d-%d, reopened at %d (batch %d), next epoch %d; %d keys present, %d absent",
		r.ops, r.writers, r.elapsed.Round(time.Millisecond), r.batches, r.syncs,
		r.resumed+1, r.last, r.last, r.lastBatch, r.next, r.present, r.gone)
}

// key and value name the i-th op of a writer. Op i%10 == 9 deletes key
// i-5 instead of putting key i, so keys i%10 == 4 end deleted and keys
// i%10 == 9 are never written.
func key(w, i int) string   { return fmt.Sprintf("w%03d/k%06d", w, i) }
func value(w, i int) []byte { return fmt.Appendf(nil, "value %d of writer %d", i, w) }
func opOf(w, i int) (Op, string) {
	if i%10 == 9 {
		return Delete(key(w, i-5)), key(w, i-5)
	}
	return Put(key(w, i), value(w, i)), key(w, i)
}

// want returns the final value of key(w, i), or nil if it does not exist.
func want(w, i, ops int) []byte {
	if i%10 == 9 || i%10 == 4 && i+5 < ops {
		return nil
	}
	return value(w, i)
}

func run(ctx context.Context, dir string, writers, ops int) (report, error) {
	r := report{writers: writers, ops: writers * ops}
	if writers < 1 || ops < 1 {
		return r, fmt.Errorf("need at least one writer and one op; have %d and %d", writers, ops)
	}
	if dir == "" {
		tmp, err := os.MkdirTemp("", "pebble-example-")
		if err != nil {
			return r, err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}

	st, err := Open(dir, nil, coordinator.Config{})
	if err != nil {
		return r, err
	}
	defer st.Close(ctx)
	r.resumed, _ = st.Resumed()

	// Every writer waits for each op to be durable, then reads it back
	// through a pinned view. The coordinator groups the concurrent waits
	// into few batches and fewer WAL syncs.
	start := time.Now()
	// The first writer to fail cancels the others' context; Wait returns
	// its error.
	g, gctx := errgroup.WithContext(ctx)
	for w := range writers {
		g.Go(func() error {
			for i := range ops {
				op, k := opOf(w, i)
				if _, err := st.Write(gctx, op, coordinator.Durable); err != nil {
					return err
				}
				if err := check(st, k, op.Value); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return r, err
	}
	r.elapsed = time.Since(start)
	s := st.Coordinator().Stats()
	r.batches, r.syncs, r.last = s.FlushDelta.Count, s.Syncs, s.Watermarks.Durable
	r.lastBatch = st.Coordinator().View().Snapshot.Batch
	if r.last != r.resumed+uint64(r.ops) {
		return r, fmt.Errorf("durable through epoch %d after %d ops from epoch %d", r.last, r.ops, r.resumed+1)
	}
	if err := st.Close(ctx); err != nil {
		return r, err
	}

	// Reopen: the epochs and batch numbers continue, and every key is there.
	st, err = Open(dir, nil, coordinator.Config{})
	if err != nil {
		return r, err
	}
	defer st.Close(ctx)
	if epoch, batch := st.Resumed(); epoch != r.last || batch != r.lastBatch {
		return r, fmt.Errorf("reopened at epoch %d, batch %d; want %d, %d", epoch, batch, r.last, r.lastBatch)
	}
	for w := range writers {
		for i := range ops {
			v := want(w, i, ops)
			if err := check(st, key(w, i), v); err != nil {
				return r, fmt.Errorf("after reopening: %w", err)
			}
			if v == nil {
				r.gone++
			} else {
				r.present++
			}
		}
	}
	if r.next, err = st.Write(ctx, Put("last-run", nil), coordinator.Durable); err != nil {
		return r, err
	}
	if r.next != r.last+1 {
		return r, fmt.Errorf("first write after reopening has epoch %d; want %d", r.next, r.last+1)
	}
	return r, st.Close(ctx)
}

// check reads key through a pinned view and compares it with want (nil:
// absent).
func check(st *Store, key string, want []byte) error {
	rd, err := st.Read()
	if err != nil {
		return err
	}
	defer rd.Close()
	got, ok, err := rd.Get(key)
	switch {
	case err != nil:
		return fmt.Errorf("Get(%q): %w", key, err)
	case want == nil && ok:
		return fmt.Errorf("Get(%q) = %q; want deleted", key, got)
	case want != nil && (!ok || !bytes.Equal(got, want)):
		return fmt.Errorf("Get(%q) = %q, %v; want %q", key, got, ok, want)
	}
	return nil
}
