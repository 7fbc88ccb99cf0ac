package linearizability

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/groupcommit/coordinator"
)

// This file holds the store under test: a key-value Delta and a Flusher
// over an in-memory "disk" that survives restarts. Written records sit in
// the disk's page cache until FlushStorage makes them durable; a crash
// drops what was not synced.

// brokenMode selects a deliberately wrong store, to show that the check can
// fail (TestLinearizableDetectsBrokenDelta).
type brokenMode int

const (
	notBroken brokenMode = iota
	// hideLatest: the live delta's reader hides the latest write of each
	// key (it returns the value that write replaced in the delta, or
	// nothing).
	hideLatest
	// dropDelta: the flusher drops every other delta and reports success.
	dropDelta
)

func (m brokenMode) String() string {
	switch m {
	case notBroken:
		return "correct"
	case hideLatest:
		return "hide-latest-write"
	case dropDelta:
		return "drop-delta"
	}
	return fmt.Sprintf("brokenMode(%d)", int(m))
}

// env is shared by everything of one run: the logical clock that orders
// the history, and the broken mode.
type env struct {
	clock  atomic.Int64
	vals   atomic.Int64 // the last value written: every write has its own
	broken brokenMode
}

// now returns the next logical time. A timestamp taken after an event
// happened is larger than every timestamp taken before it began.
func (e *env) now() int64 { return e.clock.Add(1) }

// put is the write type: a key and a value unique across the run. An empty
// key is rejected by Apply.
type put struct {
	key string
	val int64
}

// Size implements coordinator.Sizer, for eras that set Config.MaxBytes.
func (put) Size() int { return 16 }

// rec is a stored value with the epoch of the write that stored it.
type rec struct {
	val   int64
	epoch uint64
}

var errEmptyKey = errors.New("empty key")

// deltaCtx is the context carried from delta to delta: the epoch of the
// next write, so that the delta knows every write's epoch (and the test
// checks it against the coordinator's).
type deltaCtx struct {
	env  *env
	next uint64
}

type delta struct {
	ctx   deltaCtx
	first uint64
	mu    *sync.RWMutex
	data  map[string]rec // protected by mu
	prev  map[string]rec // protected by mu: what each key's latest write replaced in this delta
	size  int
}

func newDelta(c deltaCtx) *delta {
	return &delta{ctx: c, first: c.next, mu: new(sync.RWMutex), data: map[string]rec{}, prev: map[string]rec{}}
}

// Apply stores the write and returns its epoch as the delta counts them. A
// rejected write consumes its epoch, as the coordinator's does, and changes
// no data.
func (d *delta) Apply(p put) (uint64, error) {
	e := d.ctx.next
	d.ctx.next++
	if p.key == "" {
		return e, errEmptyKey
	}
	d.mu.Lock()
	if old, ok := d.data[p.key]; ok {
		d.prev[p.key] = old
	}
	d.data[p.key] = rec{p.val, e}
	d.mu.Unlock()
	d.size++
	return e, nil
}

// EstimateSize counts writes, so FlushSize is a number of writes.
func (d *delta) EstimateSize() int { return d.size }

func (d *delta) Freeze() (*frozenDelta, *frozenView, deltaCtx) {
	epochs := coordinator.EpochRange{Start: d.first, End: d.ctx.next}
	// data is never written again: the frozen delta, its view and the
	// readers of views taken earlier share it.
	return &frozenDelta{epochs: epochs, data: d.data},
		&frozenView{epochs: epochs, data: d.data, stamp: d.ctx.env.now()},
		d.ctx
}

func (d *delta) Reader() *reader {
	return &reader{mu: d.mu, data: d.data, prev: d.prev, hide: d.ctx.env.broken == hideLatest}
}

// reader reads the live delta while writes are applied.
type reader struct {
	mu         *sync.RWMutex
	data, prev map[string]rec
	hide       bool // broken: hide the latest write of each key
}

func (r *reader) get(key string) (rec, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, ok := r.data[key]
	if ok && r.hide {
		v, ok = r.prev[key]
	}
	return v, ok
}

func (r *reader) all() map[string]rec {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return maps.Clone(r.data)
}

// frozenDelta is what the flusher writes.
type frozenDelta struct {
	epochs coordinator.EpochRange
	data   map[string]rec
}

// frozenView is the read view of a frozen delta. stamp is the logical time
// of the freeze: the view that shows it first is published after it.
type frozenView struct {
	epochs coordinator.EpochRange
	data   map[string]rec
	stamp  int64
}

// snapshot is the storage state after a written delta. stamp is taken in
// FlushDelta, before the view that shows it is published.
type snapshot struct {
	data    map[string]rec
	written uint64
	stamp   int64
}

// KV is the coordinator of this store.
type KV = coordinator.Coordinator[put, uint64, *frozenView, *reader, *snapshot]

// KVView is a view of it.
type KVView = coordinator.View[*frozenView, *reader, *snapshot]

// record is one written delta on the disk.
type record struct {
	epochs coordinator.EpochRange
	data   map[string]rec
}

var (
	errCrashed  = errors.New("disk: this incarnation crashed")
	errInjected = errors.New("disk: injected fault")
)

// disk survives restarts. A flusher is bound to one incarnation; a crash
// (or a reopen) ends it, and its later calls fail.
type disk struct {
	env *env

	mu          sync.Mutex
	records     []record
	synced      int // records[:synced] are durable
	incarnation int
	// Injected faults: calls of each kind still to fail; -1: all of them.
	failDelta, failStorage int
	// The last call of each kind failed: a retry may be pending, so no
	// transient fault is armed (three in a row would exhaust the retries).
	deltaFailed, storageFailed bool
	deltaCalls                 int // FlushDelta calls that got past the checks, for dropDelta
	problems                   []string
}

func (d *disk) problem(format string, args ...any) {
	d.problems = append(d.problems, fmt.Sprintf(format, args...))
}

// takeProblems returns the contract violations the disk saw (deltas out of
// order, data outside a delta's epoch range) and forgets them.
func (d *disk) takeProblems() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.problems
	d.problems = nil
	return p
}

// fold returns the state the records hold and their last epoch.
func fold(records []record) (map[string]rec, uint64) {
	state := map[string]rec{}
	var last uint64
	for _, r := range records {
		maps.Copy(state, r.data)
		last = r.epochs.Last()
	}
	return state, last
}

// recovered returns what a process that starts now finds on the disk.
func (d *disk) recovered() (map[string]rec, uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return fold(d.records)
}

// open starts a new incarnation, as a process does when it starts: it
// recovers the state, and returns a flusher bound to the incarnation and
// the initial snapshot. Faults are cleared.
func (d *disk) open() (*flusher, *snapshot) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.incarnation++
	d.failDelta, d.failStorage = 0, 0
	d.deltaFailed, d.storageFailed = false, false
	state, last := fold(d.records)
	f := &flusher{d: d, inc: d.incarnation, state: state, written: last}
	return f, &snapshot{data: state, written: last, stamp: d.env.now()}
}

// crash loses everything written since the last FlushStorage and ends the
// current incarnation.
func (d *disk) crash() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.records = d.records[:d.synced]
	d.incarnation++
}

// arm makes the next n calls of FlushDelta (storage false) or FlushStorage
// (storage true) fail; n == -1 makes all of them fail, replacing any armed
// fault, and n == 0 disarms. A transient fault (n > 0) is armed only if no
// fault of that kind is armed and the last call of that kind succeeded, so
// that transient faults never add up to more failures in a row than the
// retry policy absorbs; arm reports whether it armed one.
func (d *disk) arm(storage bool, n int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, failed := &d.failDelta, d.deltaFailed
	if storage {
		p, failed = &d.failStorage, d.storageFailed
	}
	if n > 0 && (*p != 0 || failed) {
		return false
	}
	*p = n
	return true
}

// flusher is the Flusher of one incarnation. state is what it has written,
// synced or not (the page cache); snapshots are immutable copies of it.
type flusher struct {
	d       *disk
	inc     int
	state   map[string]rec // owned by the flusher goroutine
	written uint64
}

// enter checks, with the disk locked, whether a call may proceed.
func (f *flusher) enter(ctx context.Context, failures *int, failed *bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if f.inc != f.d.incarnation {
		return errCrashed
	}
	if *failures != 0 {
		if *failures > 0 {
			*failures--
		}
		*failed = true
		return errInjected
	}
	*failed = false
	return nil
}

func (f *flusher) FlushDelta(ctx context.Context, fd *frozenDelta, epochs coordinator.EpochRange) (*snapshot, error) {
	d := f.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := f.enter(ctx, &d.failDelta, &d.deltaFailed); err != nil {
		return nil, err
	}
	if fd.epochs != epochs {
		d.problem("FlushDelta: delta holds epochs %v, coordinator says %v", fd.epochs, epochs)
	}
	if epochs.Start != f.written+1 || epochs.End <= epochs.Start {
		d.problem("FlushDelta: epochs %v do not follow epoch %d", epochs, f.written)
	}
	for k, r := range fd.data {
		if !epochs.Contains(r.epoch) {
			d.problem("FlushDelta: key %q has epoch %d outside the delta %v", k, r.epoch, epochs)
		}
	}
	d.deltaCalls++
	f.written = epochs.Last()
	if d.env.broken == dropDelta && d.deltaCalls%2 == 0 {
		// Broken: report success without writing the delta.
		return &snapshot{data: f.state, written: f.written, stamp: d.env.now()}, nil
	}
	d.records = append(d.records, record{epochs: epochs, data: fd.data})
	next := maps.Clone(f.state)
	maps.Copy(next, fd.data)
	f.state = next
	return &snapshot{data: next, written: f.written, stamp: d.env.now()}, nil
}

func (f *flusher) FlushStorage(ctx context.Context) error {
	d := f.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := f.enter(ctx, &d.failStorage, &d.storageFailed); err != nil {
		return err
	}
	d.synced = len(d.records)
	return nil
}

// sortedKeys returns m's keys in order, for stable messages.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
