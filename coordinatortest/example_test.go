package coordinatortest_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"

	"github.com/groupcommit/coordinator"
	"github.com/groupcommit/coordinator/coordinatortest"
)

// put appends a value to what a key holds.
type put struct{ key, value string }

// kvDelta is the live delta of a small store of strings that writes append
// to.
type kvDelta struct {
	mu sync.RWMutex
	m  map[string]string // protected by mu: what the delta appends to each key
}

func newKVDelta(struct{}) *kvDelta { return &kvDelta{m: map[string]string{}} }

func (d *kvDelta) Apply(p put) (struct{}, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.m[p.key] += p.value
	return struct{}{}, nil
}

func (d *kvDelta) EstimateSize() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return 32 * len(d.m)
}

// Freeze hands the delta's map on: nothing writes it any more.
func (d *kvDelta) Freeze() (map[string]string, map[string]string, struct{}) {
	return d.m, d.m, struct{}{}
}

func (d *kvDelta) Reader() *kvDelta { return d }

func (d *kvDelta) get(key string) string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.m[key]
}

// kvDisk stands for a directory's files: the store's state as written, and
// as last synced.
type kvDisk struct {
	mu              sync.Mutex
	written, synced map[string]string
	last, syncLast  uint64
}

// kvFlusher writes deltas to a disk. It skips a delta it already wrote, so
// that a retry does not append it twice, unless appendOnRetry is set.
type kvFlusher struct {
	d             *kvDisk
	appendOnRetry bool
}

func (f *kvFlusher) FlushDelta(_ context.Context, frozen map[string]string, epochs coordinator.EpochRange) (map[string]string, error) {
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	if epochs.Last() > f.d.last || f.appendOnRetry {
		for k, v := range frozen {
			f.d.written[k] += v
		}
		f.d.last = epochs.Last()
	}
	return maps.Clone(f.d.written), nil
}

func (f *kvFlusher) FlushStorage(context.Context) error {
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	f.d.synced, f.d.syncLast = maps.Clone(f.d.written), f.d.last
	return nil
}

var kvKeys = []string{"a", "b", "c"}

// kvHarness describes the store to the kit.
func kvHarness(appendOnRetry bool) coordinatortest.Harness[put, struct{}, struct{}, map[string]string, map[string]string, *kvDelta, map[string]string, map[string]string] {
	disks := map[string]*kvDisk{}
	return coordinatortest.Harness[put, struct{}, struct{}, map[string]string, map[string]string, *kvDelta, map[string]string, map[string]string]{
		Open: func(dir string) (*coordinatortest.Store[put, struct{}, struct{}, map[string]string, map[string]string, *kvDelta, map[string]string], error) {
			d := disks[dir]
			if d == nil {
				d = &kvDisk{written: map[string]string{}, synced: map[string]string{}}
				disks[dir] = d
			}
			st := coordinatortest.NewStore(newKVDelta, struct{}{}, maps.Clone(d.written), &kvFlusher{d: d, appendOnRetry: appendOnRetry}, d.last)
			st.Crash = func() error { // a power loss: only what was synced survives
				d.written, d.last = maps.Clone(d.synced), d.syncLast
				return nil
			}
			return st, nil
		},
		Write: func(r *rand.Rand) put {
			return put{kvKeys[r.IntN(len(kvKeys))], []string{"x", "y"}[r.IntN(2)]}
		},
		Init: func() map[string]string { return map[string]string{} },
		Apply: func(m map[string]string, p put) map[string]string {
			m[p.key] += p.value
			return m
		},
		Read: func(v *coordinator.View[map[string]string, *kvDelta, map[string]string]) (map[string]string, error) {
			out := map[string]string{}
			for _, k := range kvKeys {
				val := v.Snapshot[k] // oldest first, since writes append
				for i := len(v.Frozen) - 1; i >= 0; i-- {
					val += v.Frozen[i].View[k]
				}
				if val += v.Current.get(k); val != "" {
					out[k] = val
				}
			}
			return out, nil
		},
	}
}

// A store is checked from a test with Run; Check returns the same report
// as an error. The second store's FlushDelta appends values, so a retry
// after a lost acknowledgement doubles them, and the kit says so.
func ExampleCheck() {
	err := coordinatortest.Check(kvHarness(false))
	fmt.Println("correct store:", err)

	err = coordinatortest.Check(kvHarness(true), coordinatortest.Seed(1), coordinatortest.Iterations(30))
	var f *coordinatortest.Failure
	if errors.As(err, &f) {
		fmt.Println("appending store:", f.Contract)
	}
	// Output:
	// correct store: <nil>
	// appending store: FlushDelta retry
}
