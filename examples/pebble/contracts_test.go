package main

import (
	"context"
	"errors"
	"flag"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/groupcommit/coordinator"
	"github.com/groupcommit/coordinator/coordinatortest"
)

var long = flag.Bool("long", false, "run the contract checks with many more workloads")

// keySpace is the set of keys the contract checks write: small, so that
// writes overwrite and delete each other.
var keySpace = []string{"a", "b", "c", "d", "e", "f"}

// TestContracts runs the store's Delta and Flusher through coordinatortest:
// random workloads with flushes, injected flusher failures, crashes and
// reopens, checked against a map. On disk, a crash keeps what pebble wrote
// (a killed process); on pebble's crashable in-memory file system it keeps
// only what FlushStorage synced (a power loss).
func TestContracts(t *testing.T) {
	iterations := 4
	if *long {
		iterations = 60
	}
	t.Run("disk", func(t *testing.T) {
		runContracts(t, func(dir string) (*pebble.Options, func()) { return &pebble.Options{}, nil }, iterations)
	})
	t.Run("power loss", func(t *testing.T) {
		var mu sync.Mutex
		fss := map[string]*vfs.MemFS{} // one file system per store, replaced by its crash clone
		runContracts(t, func(dir string) (*pebble.Options, func()) {
			mu.Lock()
			defer mu.Unlock()
			fs := fss[dir]
			if fs == nil {
				fs = vfs.NewCrashableMem()
				fss[dir] = fs
			}
			crash := func() {
				mu.Lock()
				defer mu.Unlock()
				fss[dir] = fs.CrashClone(vfs.CrashCloneCfg{}) // exactly what was synced
			}
			return &pebble.Options{FS: fs}, crash
		}, iterations)
	})
}

// runContracts runs the kit on stores opened with the options optionsFor
// returns for a directory, and its crash function, if any, which takes the
// state the next open of the directory finds.
func runContracts(t *testing.T, optionsFor func(dir string) (*pebble.Options, func()), iterations int) {
	coordinatortest.Run(t, coordinatortest.Harness[Op, struct{}, uint64, *Frozen, *Frozen, *LiveReader, *Snapshot, map[string]string]{
		Open: func(dir string) (*coordinatortest.Store[Op, struct{}, uint64, *Frozen, *Frozen, *LiveReader, *Snapshot], error) {
			opts, crash := optionsFor(dir)
			opts.Logger = quietLogger{}
			f, initial, err := openFlusher(dir, opts, nil)
			if err != nil {
				return nil, err
			}
			st := coordinatortest.NewStore(NewDelta, f.written.Batch+1, initial, f, f.written.Epoch)
			st.Close = func() error { return errors.Join(f.snaps.closeAll(), f.db.Close()) }
			if crash != nil {
				st.Crash = func() error {
					crash()
					return st.Close()
				}
			}
			return st, nil
		},
		Write: func(r *rand.Rand) Op {
			key := keySpace[r.IntN(len(keySpace))]
			switch n := r.IntN(10); {
			case n == 0:
				return Op{Key: reservedPrefix + key} // a reserved key: rejected
			case n < 3:
				return Delete(key)
			default:
				return Put(key, []byte{byte('a' + r.IntN(26))})
			}
		},
		Init: func() map[string]string { return map[string]string{} },
		Apply: func(m map[string]string, op Op) map[string]string {
			if op.Delete {
				delete(m, op.Key)
			} else {
				m[op.Key] = string(op.Value)
			}
			return m
		},
		// Read returns ErrReleased for a view whose pebble snapshot the
		// flusher released since; the kit then reads a newer view.
		Read: func(v *coordinator.View[*Frozen, *LiveReader, *Snapshot]) (map[string]string, error) {
			m := map[string]string{}
			for _, k := range keySpace {
				val, ok, err := Get(v, k)
				if err != nil {
					return nil, err
				}
				if ok {
					m[k] = string(val)
				}
			}
			return m, nil
		},
	}, coordinatortest.Iterations(iterations))
}

// TestFlushDeltaAgainAfterSuccess calls FlushDelta a second time with the
// same delta, as the coordinator does when the first call's success is
// lost: it must succeed, with the snapshot of the first commit.
func TestFlushDeltaAgainAfterSuccess(t *testing.T) {
	db, err := pebble.Open("db", &pebble.Options{FS: vfs.NewMem(), Logger: quietLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	snaps := newSnapshots(db)
	defer func() {
		if err := errors.Join(snaps.closeAll(), db.Close()); err != nil {
			t.Error(err)
		}
	}()
	f := &Flusher{db: db, snaps: snaps, last: snaps.take(0, 0)}
	d := NewDelta(1)
	if _, err := d.Apply(Put("k", []byte("v"))); err != nil {
		t.Fatal(err)
	}
	frozen, _, _ := d.Freeze()
	epochs := coordinator.EpochRange{Start: 1, End: 2}
	first, err := f.FlushDelta(context.Background(), frozen, epochs)
	if err != nil {
		t.Fatalf("FlushDelta = %v", err)
	}
	again, err := f.FlushDelta(context.Background(), frozen, epochs)
	if err != nil || again != first {
		t.Fatalf("FlushDelta again = %p, %v; want the first call's snapshot %p", again, err, first)
	}
}
