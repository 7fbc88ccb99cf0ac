package coordinator

import (
	"slices"
	"sync"
	"sync/atomic"
)

// View is a consistent picture of everything the coordinator holds: the
// live delta, the frozen deltas waiting to be written, and the storage
// snapshot the flusher last produced. A reader combines them, newest first
// (Current, then Frozen in order, then Snapshot), to see every applied write
// without blocking writers.
//
// Views are published copy-on-write: a View value is never modified after
// it is published, and callers must not modify it (nor its Frozen slice)
// either. It may be shared freely between goroutines. Frozen and Snapshot
// are fixed; Current is a reader of the live delta, so it keeps showing
// writes applied after the view was taken, until that delta is frozen. A
// point-in-time read therefore needs Current to be read once, or the delta
// view type to offer its own snapshot.
type View[FV, DV, S any] struct {
	// Current reads the live delta; it sees writes as they are applied.
	Current DV
	// Frozen holds the frozen deltas not yet written, newest first. Their
	// epoch ranges are contiguous and descending.
	Frozen []FrozenDelta[FV]
	// Snapshot is the storage state after the last written delta (or the
	// initial snapshot given to [New]).
	Snapshot S
	// LastWritten is the delta whose flush produced Snapshot, or nil.
	LastWritten *FrozenDelta[FV]
	// Written is the last epoch included in Snapshot.
	Written uint64
	// Err is non-nil once the coordinator has failed. Current and Frozen
	// are then empty, because the data they held will never be written:
	// Current reads a delta that holds no write (made with the function
	// given to [New]), so the usual read pattern works unchanged; Snapshot
	// is the last one written.
	Err error
}

// FrozenDelta is a read view of a frozen delta with the epochs it holds.
type FrozenDelta[FV any] struct {
	View   FV
	Epochs EpochRange
}

// viewHub publishes views and fans them out to subscribers.
type viewHub[FV, DV, S any] struct {
	cur atomic.Pointer[View[FV, DV, S]] // the latest view; written under mu

	mu        sync.Mutex
	subs      map[*Subscriber[FV, DV, S]]struct{} // protected by mu
	closed    bool                                // protected by mu
	published atomic.Uint64                       // number of views published
}

func (h *viewHub[FV, DV, S]) load() *View[FV, DV, S] { return h.cur.Load() }

// update derives a new view from the latest one and publishes it. mutate
// receives a shallow copy it may change. A failed view is final: later
// updates are ignored so that no view claims data that will not be written.
func (h *viewHub[FV, DV, S]) update(mutate func(v *View[FV, DV, S])) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.updateLocked(mutate)
}

func (h *viewHub[FV, DV, S]) updateLocked(mutate func(v *View[FV, DV, S])) {
	old := h.cur.Load()
	if old.Err != nil {
		return
	}
	v := *old
	mutate(&v)
	h.publishLocked(&v)
}

func (h *viewHub[FV, DV, S]) publishLocked(v *View[FV, DV, S]) {
	h.cur.Store(v)
	h.published.Add(1)
	for s := range h.subs {
		s.deliver(v)
	}
}

// freeze publishes the view after the live delta was frozen.
func (h *viewHub[FV, DV, S]) freeze(fd FrozenDelta[FV], current DV) {
	h.update(func(v *View[FV, DV, S]) {
		frozen := make([]FrozenDelta[FV], 0, len(v.Frozen)+1)
		frozen = append(frozen, fd)
		v.Frozen = append(frozen, v.Frozen...)
		v.Current = current
	})
}

// written publishes the view after the frozen delta holding epochs was
// written, producing snapshot, then runs announce (which advances the
// written watermark) under the same lock as failLocked: either the write is
// announced before a failure, or not at all (invariants 3 and 6).
func (h *viewHub[FV, DV, S]) written(epochs EpochRange, snapshot S, announce func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cur.Load().Err != nil {
		return
	}
	h.updateLocked(func(v *View[FV, DV, S]) {
		// The written delta is the oldest, hence last; search anyway so a
		// mismatch can never corrupt the view.
		i := slices.IndexFunc(v.Frozen, func(f FrozenDelta[FV]) bool { return f.Epochs == epochs })
		if i >= 0 {
			last := v.Frozen[i]
			v.LastWritten = &last
			v.Frozen = slices.Delete(slices.Clone(v.Frozen), i, i+1)
		}
		v.Snapshot = snapshot
		v.Written = epochs.Last()
	})
	announce()
}

// unlessFailed runs f under the lock failLocked is called with, unless the
// coordinator failed.
func (h *viewHub[FV, DV, S]) unlessFailed(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cur.Load().Err == nil {
		f()
	}
}

// fail runs record and, if it reports the first failure, publishes the
// final view of a failed coordinator, both under the hub's lock. The final
// view shows empty as its Current.
func (h *viewHub[FV, DV, S]) fail(err error, empty DV, record func(error) bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !record(err) {
		return false
	}
	old := h.cur.Load()
	if old.Err != nil {
		return true
	}
	h.publishLocked(&View[FV, DV, S]{
		Current:     empty,
		Snapshot:    old.Snapshot,
		LastWritten: old.LastWritten,
		Written:     old.Written,
		Err:         err,
	})
	return true
}

func (h *viewHub[FV, DV, S]) subscribe(buffer int) *Subscriber[FV, DV, S] {
	s := &Subscriber[FV, DV, S]{hub: h, buf: make([]*View[FV, DV, S], buffer), notify: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	s.initial = h.cur.Load()
	if h.closed {
		s.closed = true
		return s
	}
	if h.subs == nil {
		h.subs = make(map[*Subscriber[FV, DV, S]]struct{})
	}
	h.subs[s] = struct{}{}
	return s
}

func (h *viewHub[FV, DV, S]) unsubscribe(s *Subscriber[FV, DV, S]) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, s)
}

// close ends every subscription; subscribers drain what they have buffered
// and then receive ErrClosed.
func (h *viewHub[FV, DV, S]) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		s.closeFeed()
	}
	h.subs = nil
}
