package coordinatortest_test

// This file holds a small counter store used by the kit's tests, correct by
// default, with one switch per mistake the kit must catch.

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

// mistakes plants one or more mistakes in the counter store.
type mistakes struct {
	retryUnsafe  bool   // FlushDelta adds the delta again when retried
	aliasFreeze  bool   // the next delta reuses the frozen delta's map
	aliasData    bool   // as aliasFreeze, but only for the data given to FlushDelta
	lostContext  bool   // Freeze hands the next delta a new, empty dictionary
	racyReader   bool   // the live reader reads without the delta's lock
	noSync       bool   // FlushStorage does nothing
	negativeSize bool   // EstimateSize counts down
	negativeKey  string // EstimateSize goes negative once this key is written
	flatSize     bool   // EstimateSize is always 0
	forgetEpoch  bool   // Open reports LastEpoch 0 whatever the store holds
	lastOnly     bool   // FlushDelta's snapshot holds only the delta it wrote
	hangFlush    bool   // FlushDelta blocks until its context is canceled
}

// add adds N to the counter Key. An empty key is rejected.
type add struct {
	Key string
	N   int
}

// dict assigns counter IDs to keys; it is the delta context, shared by
// every delta and the storage of one store, and only grows.
type dict struct {
	mu  sync.Mutex
	ids map[string]int
}

func (d *dict) assign(key string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	id, ok := d.ids[key]
	if !ok {
		id = len(d.ids)
		d.ids[key] = id
	}
	return id
}

func (d *dict) lookup(key string) (int, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	id, ok := d.ids[key]
	return id, ok
}

func (d *dict) clone() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.ids)
}

// counterCtx is carried from delta to delta.
type counterCtx struct {
	dict  *dict
	reuse *table // a table for the next delta to reuse (aliasFreeze)
}

// table holds counter sums by ID. The live delta writes it; readers read
// it concurrently.
type table struct {
	mu   sync.Mutex
	sums map[int]int // protected by mu
}

func (t *table) get(id int, locked bool) int {
	if locked {
		t.mu.Lock()
		defer t.mu.Unlock()
	}
	return t.sums[id]
}

type counterDelta struct {
	m    *mistakes
	dict *dict
	t    *table
	size int // owned by the coordinator goroutine
}

func newCounterDelta(m *mistakes) func(counterCtx) *counterDelta {
	return func(c counterCtx) *counterDelta {
		t := &table{sums: map[int]int{}}
		if c.reuse != nil {
			t = c.reuse
			t.mu.Lock()
			clear(t.sums)
			t.mu.Unlock()
		}
		return &counterDelta{m: m, dict: c.dict, t: t}
	}
}

func (d *counterDelta) Apply(a add) (struct{}, error) {
	if a.Key == "" {
		return struct{}{}, errors.New("empty key")
	}
	id := d.dict.assign(a.Key)
	d.t.mu.Lock()
	d.t.sums[id] += a.N
	d.t.mu.Unlock()
	switch {
	case d.m.negativeSize, a.Key == d.m.negativeKey:
		d.size -= 1000
	case !d.m.flatSize:
		d.size += 8
	}
	return struct{}{}, nil
}

func (d *counterDelta) EstimateSize() int { return d.size }

func (d *counterDelta) Freeze() (*counterFrozen, *counterFrozen, counterCtx) {
	next := counterCtx{dict: d.dict}
	f := &counterFrozen{t: d.t}
	if d.m.aliasFreeze || d.m.aliasData {
		next.reuse = d.t
	} else {
		d.t.mu.Lock()
		f.t = &table{sums: maps.Clone(d.t.sums)}
		d.t.mu.Unlock()
	}
	if d.m.lostContext {
		next.dict = &dict{ids: map[string]int{}}
	}
	if d.m.aliasData {
		d.t.mu.Lock()
		defer d.t.mu.Unlock()
		return f, &counterFrozen{t: &table{sums: maps.Clone(d.t.sums)}}, next
	}
	return f, f, next
}

func (d *counterDelta) Reader() *counterReader { return &counterReader{d: d} }

type counterReader struct{ d *counterDelta }

func (r *counterReader) get(id int) int { return r.d.t.get(id, !r.d.m.racyReader) }

// counterFrozen is a frozen delta and its view. With aliasFreeze, t is the
// table the next delta writes to.
type counterFrozen struct{ t *table }

// counterSnap is an immutable copy of the written sums.
type counterSnap struct{ sums map[int]int }

// disk is the storage of one store: what was written (the page cache) and
// what was synced. It survives reopens.
type disk struct {
	mu               sync.Mutex
	sums, syncedSums map[int]int
	last, syncedLast uint64
	ids, syncedIDs   map[string]int
}

type counterFlusher struct {
	m    *mistakes
	disk *disk
}

func (f *counterFlusher) FlushDelta(ctx context.Context, fr *counterFrozen, epochs coordinator.EpochRange) (*counterSnap, error) {
	d := f.disk
	if f.m.hangFlush {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if f.m.lastOnly {
		return &counterSnap{sums: f.sumsOf(fr)}, nil
	}
	if epochs.Last() > d.last || f.m.retryUnsafe {
		fr.t.mu.Lock()
		for id, n := range fr.t.sums {
			d.sums[id] += n
		}
		fr.t.mu.Unlock()
		d.last = epochs.Last()
	}
	return &counterSnap{sums: maps.Clone(d.sums)}, nil
}

// sumsOf returns the sums of one frozen delta.
func (f *counterFlusher) sumsOf(fr *counterFrozen) map[int]int {
	fr.t.mu.Lock()
	defer fr.t.mu.Unlock()
	return maps.Clone(fr.t.sums)
}

func (f *counterFlusher) FlushStorage(ctx context.Context) error {
	d := f.disk
	d.mu.Lock()
	defer d.mu.Unlock()
	if !f.m.noSync {
		d.syncedSums, d.syncedLast, d.syncedIDs = maps.Clone(d.sums), d.last, maps.Clone(d.ids)
	}
	return nil
}

// counterStores opens counter stores, one disk per directory.
type counterStores struct {
	m     mistakes
	mu    sync.Mutex
	disks map[string]*disk // protected by mu
}

var counterKeys = []string{"a", "b", "c", "d", "e", "f"}

func (cs *counterStores) open(dir string) (*coordinatortest.Store[add, struct{}, counterCtx, *counterFrozen, *counterFrozen, *counterReader, *counterSnap], error) {
	cs.mu.Lock()
	d := cs.disks[dir]
	if d == nil {
		d = &disk{sums: map[int]int{}, syncedSums: map[int]int{}, ids: map[string]int{}, syncedIDs: map[string]int{}}
		cs.disks[dir] = d
	}
	cs.mu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	shared := &dict{ids: maps.Clone(d.ids)}
	last := d.last
	if cs.m.forgetEpoch {
		last = 0
	}
	st := coordinatortest.NewStore(newCounterDelta(&cs.m), counterCtx{dict: shared}, &counterSnap{sums: maps.Clone(d.sums)},
		&counterFlusher{m: &cs.m, disk: d}, last)
	// The dictionary is written with the data: a real store would persist
	// new keys with the delta that introduced them.
	persist := func() error {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.ids = shared.clone()
		return nil
	}
	st.Close = persist
	st.Crash = func() error {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.sums, d.last, d.ids = maps.Clone(d.syncedSums), d.syncedLast, maps.Clone(d.syncedIDs)
		return nil
	}
	// Sync the dictionary with the sums it names.
	f := st.Flusher
	st.Flusher = &dictSyncer{Flusher: f, shared: shared, disk: d}
	return st, nil
}

// dictSyncer writes the dictionary along with every delta.
type dictSyncer struct {
	coordinator.Flusher[*counterFrozen, *counterSnap]
	shared *dict
	disk   *disk
}

func (s *dictSyncer) FlushDelta(ctx context.Context, fr *counterFrozen, epochs coordinator.EpochRange) (*counterSnap, error) {
	snap, err := s.Flusher.FlushDelta(ctx, fr, epochs)
	if err == nil {
		ids := s.shared.clone()
		s.disk.mu.Lock()
		s.disk.ids = ids
		s.disk.mu.Unlock()
	}
	return snap, err
}

type counterHarness = coordinatortest.Harness[add, struct{}, counterCtx, *counterFrozen, *counterFrozen, *counterReader, *counterSnap, map[string]int]

// newCounterHarness returns the harness of the counter store with the
// given mistakes.
func newCounterHarness(m mistakes) counterHarness {
	cs := &counterStores{m: m, disks: map[string]*disk{}}
	return counterHarness{
		Open: cs.open,
		Write: func(r *rand.Rand) add {
			if r.IntN(20) == 0 {
				return add{N: 1} // rejected
			}
			return add{Key: counterKeys[r.IntN(len(counterKeys))], N: 1 + r.IntN(9)}
		},
		Init: func() map[string]int { return map[string]int{} },
		Apply: func(m map[string]int, a add) map[string]int {
			m[a.Key] += a.N
			return m
		},
		Read: readCounters,
	}
}

// readCounters reads every counter through a view; the live delta's
// dictionary names the counters of every layer.
func readCounters(v *coordinator.View[*counterFrozen, *counterReader, *counterSnap]) (map[string]int, error) {
	if v.Current == nil || v.Snapshot == nil {
		return nil, fmt.Errorf("incomplete view %+v", v)
	}
	out := map[string]int{}
	for _, key := range counterKeys {
		id, ok := v.Current.d.dict.lookup(key)
		if !ok {
			continue
		}
		n := v.Snapshot.sums[id] + v.Current.get(id)
		for _, fd := range v.Frozen {
			n += fd.View.t.get(id, true)
		}
		if n != 0 {
			out[key] = n
		}
	}
	return out, nil
}
