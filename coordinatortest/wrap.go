package coordinatortest

// This file holds the wrappers Run puts around the user's Delta and Flusher:
// they check the contracts that are visible call by call (EstimateSize,
// contexts, epoch ranges, retry errors), inject flusher failures and hold
// the flusher back on request. They run on the coordinator's goroutines and
// report to a watch, which the driver reads between operations.

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/groupcommit/coordinator"
)

// errInjected is the error of an injected flusher failure.
var errInjected = errors.New("coordinatortest: injected flusher failure")

// failure is a broken contract: what was broken, how, and during which
// operation of the workload.
type failure struct {
	contract string
	detail   string
	op       int // index in the workload; see the op* positions below
}

// Positions of failures that happen outside the workload's operations.
const (
	atFirstOpen = -1 // opening the empty directory
	atFinal     = -2 // the final stop and reopen
)

func (f *failure) Error() string { return f.contract + ": " + f.detail }

// watch is shared by the driver and the wrappers of one workload.
type watch struct {
	mu sync.Mutex
	op int // the operation being run; protected by mu

	failure *failure // the first failure found by a wrapper; protected by mu

	// Fault injection, protected by mu.
	armed     faultKind
	remaining int // failures left to inject for armed
	// streak counts the calls of each kind (FlushDelta, FlushStorage) that
	// the kit failed in a row. A single injected failure must not meet a
	// retry of a call it already failed and so exhaust the retry policy:
	// the runner arms faults while the flusher may still be retrying.
	streak [2]int
	// Ranges whose FlushDelta succeeded but was failed by the kit, so that
	// the coordinator retried it (or gave up): a later error or doubled data
	// for them points at retry safety.
	lostAcks     []coordinator.EpochRange
	storageAfter bool // a FlushStorage succeeded and was failed by the kit
	// written counts the calls of the user's FlushDelta that succeeded,
	// per range: more than one means the range was written again.
	written map[coordinator.EpochRange]int

	// onFreeze, set for each coordinator before it starts, reads a view
	// just frozen and returns a check that reads it again; rechecks holds
	// those checks in freeze order, until FlushDelta receives their delta.
	// Both protected by mu.
	onFreeze func(fv any) func()
	rechecks []func()

	gate chan struct{} // non-nil while the flusher is held; protected by mu

	// Epoch ranges, protected by mu.
	nextStart uint64
	cur       coordinator.EpochRange

	// Contexts, protected by mu.
	haveNext bool
	next     any // the context the last Freeze returned
	deltas   int // deltas created in the era
}

func (w *watch) setOp(i int) {
	w.mu.Lock()
	w.op = i
	w.mu.Unlock()
}

func (w *watch) fail(contract, format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failure == nil {
		w.failure = &failure{contract: contract, detail: fmt.Sprintf(format, args...), op: w.op}
	}
}

func (w *watch) first() *failure {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failure
}

// startEra resets the per-coordinator state before a coordinator is created
// whose first epoch is first.
func (w *watch) startEra(first uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.remaining = 0
	w.gate = nil
	w.nextStart, w.cur = first, coordinator.EpochRange{}
	w.haveNext, w.next, w.deltas = false, nil, 0
	w.onFreeze, w.rechecks = nil, nil
}

// frozen records a view just frozen.
func (w *watch) frozen(fv any) {
	w.mu.Lock()
	onFreeze := w.onFreeze
	w.mu.Unlock()
	var recheck func()
	if onFreeze != nil {
		recheck = onFreeze(fv)
	}
	w.mu.Lock()
	w.rechecks = append(w.rechecks, recheck)
	w.mu.Unlock()
}

// recheck reads the oldest frozen view not yet given to FlushDelta again,
// and forgets it.
func (w *watch) recheck() {
	w.mu.Lock()
	if len(w.rechecks) == 0 {
		w.mu.Unlock()
		return
	}
	f := w.rechecks[0]
	w.mu.Unlock()
	if f != nil {
		f()
	}
	w.mu.Lock()
	w.rechecks = w.rechecks[1:]
	w.mu.Unlock()
}

// recheckAll reads every frozen view not yet given to FlushDelta again.
func (w *watch) recheckAll() {
	w.mu.Lock()
	fs := append([]func(){}, w.rechecks...)
	w.mu.Unlock()
	for _, f := range fs {
		if f != nil {
			f()
		}
	}
}

func (w *watch) arm(kind faultKind, times int) {
	w.mu.Lock()
	w.armed, w.remaining = kind, times
	w.mu.Unlock()
}

// take reports whether the call about to be made (a FlushDelta if delta)
// must fail, and where.
func (w *watch) take(delta bool) (faultKind, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	isDelta := w.armed == faultBeforeDelta || w.armed == faultAfterDelta
	k := 0
	if !delta {
		k = 1
	}
	if w.remaining == 0 || isDelta != delta ||
		(w.remaining < retryAttempts && w.streak[k]+1 >= retryAttempts) {
		w.streak[k] = 0
		return 0, false
	}
	w.remaining--
	w.streak[k]++
	return w.armed, true
}

func (w *watch) hold() {
	w.mu.Lock()
	w.gate = make(chan struct{})
	w.mu.Unlock()
}

func (w *watch) release() {
	w.mu.Lock()
	if w.gate != nil {
		close(w.gate)
		w.gate = nil
	}
	w.mu.Unlock()
}

// held blocks while the flusher is held.
func (w *watch) held(ctx context.Context) error {
	w.mu.Lock()
	gate := w.gate
	w.mu.Unlock()
	if gate == nil {
		return nil
	}
	select {
	case <-gate:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *watch) lostAck(r coordinator.EpochRange) {
	w.mu.Lock()
	w.lostAcks = append(w.lostAcks, r)
	w.mu.Unlock()
}

func (w *watch) acks() []coordinator.EpochRange {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]coordinator.EpochRange(nil), w.lostAcks...)
}

// rewritten returns the ranges the user's FlushDelta wrote more than once,
// with the number of times.
func (w *watch) rewritten() map[coordinator.EpochRange]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[coordinator.EpochRange]int{}
	for r, n := range w.written {
		if n > 1 {
			out[r] = n
		}
	}
	return out
}

func (w *watch) wasLost(r coordinator.EpochRange) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range w.lostAcks {
		if l == r {
			return true
		}
	}
	return false
}

// checkedDelta wraps the user's Delta.
type checkedDelta[W, R, C, F, FV, DV any] struct {
	d         coordinator.Delta[W, R, C, F, FV, DV]
	w         *watch
	startSize int
	accepted  int
}

// wrapNewDelta returns the newDelta function the kit gives the coordinator.
func wrapNewDelta[W, R, C, F, FV, DV any](w *watch, newDelta func(C) coordinator.Delta[W, R, C, F, FV, DV]) func(C) *checkedDelta[W, R, C, F, FV, DV] {
	return func(c C) *checkedDelta[W, R, C, F, FV, DV] {
		w.mu.Lock()
		if w.haveNext && !sameContext(any(c), w.next) {
			w.mu.Unlock()
			w.fail("Freeze context", "delta %d of this coordinator was created from context %+v, not from %+v, the context the previous Freeze returned", w.deltas+1, c, w.next)
			w.mu.Lock()
		}
		w.deltas++
		w.mu.Unlock()
		d := &checkedDelta[W, R, C, F, FV, DV]{d: newDelta(c), w: w}
		d.startSize = d.d.EstimateSize()
		if d.startSize < 0 {
			w.fail("EstimateSize", "returned %d for a new, empty delta; sizes are never negative", d.startSize)
		}
		return d
	}
}

// sameContext reports whether two contexts are the same value. A context
// that cannot be compared, even with itself (it holds a func, or an
// interface holding a slice), passes.
func sameContext(a, b any) (same bool) {
	defer func() {
		if recover() != nil {
			same = true
		}
	}()
	if t := reflect.TypeOf(a); t == nil || t.Comparable() {
		return a == b
	}
	return reflect.DeepEqual(a, b) || !reflect.DeepEqual(b, b)
}

func (d *checkedDelta[W, R, C, F, FV, DV]) Apply(write W) (R, error) {
	r, err := d.d.Apply(write)
	if err == nil {
		d.accepted++
	}
	if n := d.d.EstimateSize(); n < 0 {
		d.w.fail("EstimateSize", "returned %d after Apply(%+v); sizes are never negative", n, write)
	}
	return r, err
}

func (d *checkedDelta[W, R, C, F, FV, DV]) EstimateSize() int { return d.d.EstimateSize() }

func (d *checkedDelta[W, R, C, F, FV, DV]) Freeze() (F, FV, C) {
	if size := d.d.EstimateSize(); d.accepted > 0 && size <= d.startSize {
		d.w.fail("EstimateSize", "a delta holding %d accepted writes reports %d, no more than it did empty (%d): it must grow with writes, or Config.FlushSize never freezes the delta", d.accepted, size, d.startSize)
	}
	f, fv, next := d.d.Freeze()
	d.w.mu.Lock()
	d.w.haveNext, d.w.next = true, any(next)
	d.w.mu.Unlock()
	d.w.frozen(fv)
	return f, fv, next
}

func (d *checkedDelta[W, R, C, F, FV, DV]) Reader() DV { return d.d.Reader() }

// checkedFlusher wraps the user's Flusher.
type checkedFlusher[F, S any] struct {
	f coordinator.Flusher[F, S]
	w *watch
}

func (cf *checkedFlusher[F, S]) FlushDelta(ctx context.Context, frozen F, epochs coordinator.EpochRange) (S, error) {
	var zero S
	if err := cf.w.held(ctx); err != nil {
		return zero, err
	}
	w := cf.w
	w.mu.Lock()
	prev, want := w.cur, w.nextStart
	w.cur, w.nextStart = epochs, epochs.End
	w.mu.Unlock()
	if epochs != prev {
		// The next delta may have taken writes since this one was frozen:
		// its view must read as it did then.
		w.recheck()
	}
	switch {
	case epochs.End <= epochs.Start:
		w.fail("FlushDelta ranges", "FlushDelta received the empty epoch range %v", epochs)
	case epochs != prev && epochs.Start != want:
		w.fail("FlushDelta ranges", "FlushDelta received epochs %v after %v; want a range starting at %d", epochs, prev, want)
	}
	kind, inject := w.take(true)
	if inject && kind == faultBeforeDelta {
		return zero, errInjected
	}
	s, err := cf.f.FlushDelta(ctx, frozen, epochs)
	if err != nil {
		if ctx.Err() == nil && w.wasLost(epochs) {
			w.fail("FlushDelta retry", "FlushDelta(%v) failed when called again after a call that had succeeded (the kit discarded its result, as a lost acknowledgement would): %v; FlushDelta is retried with the same delta and must be safe to call again", epochs, err)
		}
		return s, err
	}
	w.mu.Lock()
	if w.written == nil {
		w.written = map[coordinator.EpochRange]int{}
	}
	w.written[epochs]++
	w.mu.Unlock()
	if inject {
		w.lostAck(epochs)
		return zero, errInjected
	}
	return s, nil
}

func (cf *checkedFlusher[F, S]) FlushStorage(ctx context.Context) error {
	w := cf.w
	kind, inject := w.take(false)
	if inject && kind == faultBeforeStorage {
		return errInjected
	}
	err := cf.f.FlushStorage(ctx)
	if err != nil {
		w.mu.Lock()
		after := w.storageAfter
		w.mu.Unlock()
		if after && ctx.Err() == nil {
			w.fail("FlushStorage retry", "FlushStorage failed when called again after a call that had succeeded (the kit discarded its result): %v; it must be safe to call again", err)
		}
		return err
	}
	if inject {
		w.mu.Lock()
		w.storageAfter = true
		w.mu.Unlock()
		return errInjected
	}
	return nil
}
