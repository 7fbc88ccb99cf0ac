package coordinator

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
)

// Durability is how far a write has progressed through the pipeline. The
// levels are ordered: a write that is Durable is also Written and Applied.
type Durability uint8

const (
	// Applied: the write has been sequenced and applied to the live delta;
	// readers of [Coordinator.View] see it.
	Applied Durability = iota + 1
	// Written: the delta holding the write has been persisted by
	// [Flusher.FlushDelta] and the view's snapshot includes it.
	Written
	// Durable: [Flusher.FlushStorage] completed after the write was written.
	Durable
)

// String returns "Applied", "Written" or "Durable".
func (d Durability) String() string {
	switch d {
	case Applied:
		return "Applied"
	case Written:
		return "Written"
	case Durable:
		return "Durable"
	}
	return fmt.Sprintf("Durability(%d)", uint8(d))
}

func (d Durability) valid() bool { return d >= Applied && d <= Durable }

// EpochRange is the half-open range of epochs [Start, End). It is a plain
// value: the zero value is the empty range, and copies are independent.
type EpochRange struct {
	Start, End uint64
}

// Contains reports whether e is in the range.
func (r EpochRange) Contains(e uint64) bool { return r.Start <= e && e < r.End }

// Len is the number of epochs in the range.
func (r EpochRange) Len() uint64 { return r.End - r.Start }

// Last is the last epoch in the range; it is meaningless for an empty range.
func (r EpochRange) Last() uint64 { return r.End - 1 }

// String formats the range as "[start, end)".
func (r EpochRange) String() string { return fmt.Sprintf("[%d, %d)", r.Start, r.End) }

// waiter is a parked goroutine. It blocks on a channel of its own, so that
// a wait with a context is one select: no registration with the context
// (context.AfterFunc allocates, and takes the parent context's lock, which
// thousands of writers sharing one context contend on).
//
// Waiters are recycled per coordinator (see waiterPool), never
// process-wide: a channel belongs to the synctest bubble it was made in,
// and a coordinator and the goroutines using it live in one bubble (its
// own channels already do), so a recycled waiter never reaches another.
//
// A waiter is signalled at most once per listing, and its channel is empty
// whenever it is recycled: a wait that ends without the signal either
// unlists the waiter (no signal will come) or finds it taken off the list
// and receives the signal that is coming (settle).
type waiter struct {
	ready chan struct{} // buffer of 1: the signal

	epoch  uint64  // the epoch awaited
	listed bool    // in a watermark's waiters; protected by that watermark's mu
	next   *waiter // link in a completion's list, or in a wakeList
	// then is the watermark a waiter on a write handle moves to when the
	// write is applied, instead of waking (see completion.completeAt).
	then *watermark
	// moved is set while the waiter is listed at then (completeAt), and
	// read by the waiter once signalled.
	moved bool
}

// waiterPool recycles the waiters of one coordinator, so that waiting
// allocates nothing in the steady state. The nil pool recycles nothing.
type waiterPool struct{ pool sync.Pool }

func (wp *waiterPool) get() *waiter {
	if wp != nil {
		if w, _ := wp.pool.Get().(*waiter); w != nil {
			return w
		}
	}
	return &waiter{ready: make(chan struct{}, 1)}
}

// put recycles w. Only call it once w can no longer be signalled and its
// signal, if any, was received.
func (wp *waiterPool) put(w *waiter) {
	w.next, w.then, w.moved = nil, nil, false
	if wp != nil {
		wp.pool.Put(w)
	}
}

// signal wakes the waiter. It never blocks: a waiter is signalled at most
// once per listing.
func (w *waiter) signal() { w.ready <- struct{}{} }

// park blocks until signal was called or ctx is done, and reports whether
// it was signalled.
func (w *waiter) park(ctx context.Context) bool {
	done := ctx.Done()
	if done == nil {
		<-w.ready
		return true
	}
	select {
	case <-w.ready:
		return true
	case <-done:
		select { // signalled as well: the wait is served
		case <-w.ready:
			return true
		default:
			return false
		}
	}
}

// settle receives a signal that is known to be coming (the signaller took
// w off its list), so that w can be recycled safely.
func (w *waiter) settle() { <-w.ready }

// waitEntry is a listed waiter with its epoch, kept beside it so that
// ordering the waiters reads one array rather than every waiter.
type waitEntry struct {
	epoch uint64
	w     *waiter
}

// waitHeap is a binary min-heap of waiters by epoch. Waiters are mostly
// listed in the order of their epochs (the coordinator lists each write's
// waiter as it applies it), and a push in order costs one comparison.
type waitHeap []waitEntry

func (h *waitHeap) push(e waitEntry) {
	*h = append(*h, e)
	a := *h
	a[a.up(len(a)-1, e.epoch)] = e
}

// up moves the parents of position i with epochs above epoch down, one
// level each, and returns the position left free for it.
func (h waitHeap) up(i int, epoch uint64) int {
	for i > 0 {
		parent := (i - 1) / 2
		if h[parent].epoch <= epoch {
			break
		}
		h[i] = h[parent]
		i = parent
	}
	return i
}

// removeAt removes the entry at i and returns it.
func (h *waitHeap) removeAt(i int) waitEntry {
	a := *h
	e := a[i]
	last := len(a) - 1
	moved := a[last]
	a[last] = waitEntry{}
	a = a[:last]
	*h = a
	if i == last {
		return e
	}
	// Put moved at i, then sift it up or down.
	i = a.up(i, moved.epoch)
	for {
		child := 2*i + 1
		if child >= last {
			break
		}
		if right := child + 1; right < last && a[right].epoch < a[child].epoch {
			child = right
		}
		if moved.epoch <= a[child].epoch {
			break
		}
		a[i] = a[child]
		i = child
	}
	a[i] = moved
	return e
}

// indexOf returns the position of w, which must be in h.
func (h waitHeap) indexOf(w *waiter) int {
	for i := range h {
		if h[i].w == w {
			return i
		}
	}
	panic("coordinator: internal error: listed waiter not in its watermark's heap")
}

// maxEpoch returns the largest epoch in h, 0 if h is empty.
func (h waitHeap) maxEpoch() uint64 {
	var hi uint64
	for i := range h {
		hi = max(hi, h[i].epoch)
	}
	return hi
}

// watermark is a monotonically increasing epoch that goroutines can wait on.
// Reads are a single atomic load. Advancing wakes exactly the waiters whose
// epoch was reached, so the cost is O(log n) per waiter, never per epoch;
// listing a waiter in epoch order costs O(1), and a waiter that gives up
// O(n) (a scan of one array).
//
// The waiters are also the demand the pipeline serves: minWait (and, with
// trackMax, maxWait) give the smallest and largest epoch still awaited, so
// a wait that ends — satisfied, failed or abandoned — stops asking for
// anything.
//
// The zero value is a watermark at 0 with no waiters. A watermark can be
// failed: waiters beyond the current value then return the failure, and so
// does every later wait beyond it.
type watermark struct {
	v atomic.Uint64

	// nwait counts waiters registered or registering. advance reads it
	// after raising v and takes mu only if it is non-zero, so advancing
	// with nobody waiting is lock-free. A waiter raises it (under mu)
	// before reading v: one of the two always sees the other.
	nwait atomic.Int32

	// minWait and maxWait are the smallest and largest epoch a listed
	// waiter waits for, 0 when none; written under mu, read without it.
	// maxWait is kept only with trackMax.
	minWait, maxWait atomic.Uint64
	trackMax         bool
	// parked, if set, is called after a waiter is listed and before it
	// parks: the pipeline uses it to act on the new demand.
	parked func(e uint64)
	// advanced, if set before the watermark is used, is called by raise
	// right after the value rose to e, before any waiter is woken: the
	// tests check there what must hold by then (the view announcing e is
	// published, invariant 3), at that instant rather than by luck. Nil
	// otherwise.
	advanced func(e uint64)
	// pool recycles the waiters; set before the watermark is used. Nil
	// recycles nothing.
	pool *waiterPool

	mu      sync.Mutex
	waiters waitHeap // protected by mu
	// unsorted is set while waiters, a heap, may not also be sorted by
	// epoch; protected by mu. Listing in epoch order keeps the array
	// sorted, and then a raise takes the waiters it satisfies as a prefix
	// rather than popping them one by one, each pop a sift through the
	// heap. A listing out of order or a pop clears sortedness until the
	// heap is empty again.
	unsorted bool
	// most is the largest epoch in waiters with trackMax, 0 when it is
	// empty; protected by mu. A listing can only raise it, and a raise
	// that unlists waiters leaves it alone unless it unlists them all,
	// so only a waiter that gives up may have to look for the next
	// largest.
	most uint64
	err  error // protected by mu; terminal error for epochs > v
}

// Load returns the current value.
func (m *watermark) Load() uint64 { return m.v.Load() }

// pushLocked lists w.
func (m *watermark) pushLocked(w *waiter) {
	w.listed = true
	if n := len(m.waiters); n > 0 && m.waiters[n-1].epoch > w.epoch {
		m.unsorted = true
	}
	m.waiters.push(waitEntry{w.epoch, w})
	if m.trackMax {
		m.most = max(m.most, w.epoch)
	}
	m.boundsLocked()
}

// popLocked unlists the waiter with the smallest epoch.
func (m *watermark) popLocked() *waiter {
	m.unsorted = true // the last entry moves to the root
	w := m.waiters.removeAt(0).w
	w.listed = false
	m.nwait.Add(-1)
	return w
}

// removeLocked unlists w, which must be listed.
func (m *watermark) removeLocked(w *waiter) {
	if i := m.waiters.indexOf(w); m.unsorted {
		m.waiters.removeAt(i)
	} else {
		m.waiters = slices.Delete(m.waiters, i, i+1) // still sorted, so still a heap
	}
	w.listed = false
	m.nwait.Add(-1)
	if m.trackMax && w.epoch == m.most {
		m.most = m.waiters.maxEpoch()
	}
	m.boundsLocked()
}

func (m *watermark) boundsLocked() {
	var lo uint64
	if len(m.waiters) > 0 {
		lo = m.waiters[0].epoch
	} else {
		m.most = 0
		m.unsorted = false
	}
	m.minWait.Store(lo)
	if m.trackMax {
		m.maxWait.Store(m.most)
	}
}

// advance raises the watermark to e (never lowers it), wakes the waiters
// it satisfies and returns how many it woke.
func (m *watermark) advance(e uint64) int { return m.raise(e).wake() }

// raise raises the watermark to e (never lowers it) and unlists the
// waiters it satisfies; the caller wakes them with wake, after releasing
// any lock it holds: waking a large group one by one takes long, and
// neither the watermark's lock (which the next group's waiters take to
// list themselves) nor the caller's needs to be held for it. A waiter
// unlisted here is not woken by fail, and one whose context ends waits
// for this wake-up before it returns (waiter.settle).
func (m *watermark) raise(e uint64) wakeList {
	if !raiseTo(&m.v, e) {
		return wakeList{}
	}
	if m.advanced != nil {
		m.advanced(e)
	}
	if m.nwait.Load() == 0 {
		return wakeList{}
	}
	var l wakeList
	m.mu.Lock()
	v := m.v.Load()
	if m.trackMax && m.most <= v { // most is 0 with nobody listed
		// Every waiter is satisfied, as when a sync serves a whole
		// group: take them all at once rather than popping them one by
		// one.
		l = m.takeAllLocked()
	}
	tail := &l.head
	if !m.unsorted {
		// The satisfied waiters are a prefix; what is left stays sorted.
		a := m.waiters
		k := sort.Search(len(a), func(i int) bool { return a[i].epoch > v })
		for _, x := range a[:k] {
			x.w.listed = false
			*tail = x.w
			tail = &x.w.next
		}
		n := copy(a, a[k:])
		clear(a[n:])
		m.waiters = a[:n]
		m.nwait.Add(int32(-k))
		l.n += k
	}
	for len(m.waiters) > 0 && m.waiters[0].epoch <= v {
		w := m.popLocked()
		*tail = w
		tail = &w.next
		l.n++
	}
	if l.n > 0 {
		m.boundsLocked()
	}
	m.mu.Unlock()
	return l
}

// takeAllLocked unlists every waiter and returns them, in no particular
// order.
func (m *watermark) takeAllLocked() wakeList {
	var l wakeList
	for _, e := range m.waiters {
		e.w.listed = false
		e.w.next = l.head
		l.head = e.w
	}
	l.n = len(m.waiters)
	clear(m.waiters)
	m.waiters = m.waiters[:0]
	m.nwait.Add(int32(-l.n))
	return l
}

// wakeList is the waiters a raise unlisted, linked through waiter.next.
type wakeList struct {
	head *waiter
	n    int
}

// wake wakes the listed waiters and returns how many there were.
func (l wakeList) wake() int {
	for w := l.head; w != nil; {
		next := w.next // read before signalling: the woken waiter reuses w
		w.signal()
		w = next
	}
	return l.n
}

// fail makes every current and future wait beyond the current value return
// err. Only the first call has an effect.
func (m *watermark) fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return
	}
	m.err = err
	for len(m.waiters) > 0 {
		m.popLocked().signal()
	}
	m.boundsLocked()
}

// wait blocks until the watermark reaches e, the watermark fails, or ctx is
// done. level only labels errors.
func (m *watermark) wait(ctx context.Context, level Durability, e uint64) error {
	if m.v.Load() >= e {
		return nil
	}
	if ctx.Err() != nil {
		// Given up already: listing would only ask for a freeze or a
		// sync that nobody waits for.
		if err := m.failure(); err != nil {
			return &epochError{level, e, err}
		}
		return gaveUp(ctx, level, e)
	}
	w := m.pool.get()
	if !m.list(w, e) {
		m.pool.put(w)
		return m.result(level, e)
	}
	if !w.park(ctx) {
		if !m.unlist(w) {
			w.settle() // popped by advance or fail: its signal is coming
		}
		m.pool.put(w)
		if m.v.Load() >= e {
			return nil
		}
		return gaveUp(ctx, level, e)
	}
	m.pool.put(w)
	return m.result(level, e)
}

func gaveUp(ctx context.Context, level Durability, e uint64) error {
	return fmt.Errorf("coordinator: waiting for epoch %d to become %v: %w", e, level, ctx.Err())
}

// list lists w as waiting for e and reports true, or reports false
// without listing it if e is reached or the watermark failed.
func (m *watermark) list(w *waiter, e uint64) bool {
	w.epoch = e
	m.mu.Lock()
	m.nwait.Add(1)
	if m.v.Load() >= e || m.err != nil {
		m.nwait.Add(-1)
		m.mu.Unlock()
		return false
	}
	m.pushLocked(w)
	m.mu.Unlock()
	if m.parked != nil {
		m.parked(e)
	}
	return true
}

// unlist unlists w if it is listed and reports whether it was; if it was
// not, whoever unlisted it signals it.
func (m *watermark) unlist(w *waiter) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !w.listed {
		return false
	}
	m.removeLocked(w)
	return true
}

// result is the outcome of a wait for e that is over: nil once e is
// reached, the failure otherwise.
func (m *watermark) result(level Durability, e uint64) error {
	if m.v.Load() >= e {
		return nil
	}
	return &epochError{level, e, m.failure()}
}

// failure returns the error the watermark failed with, nil if it did not.
func (m *watermark) failure() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Watermarks is a snapshot of the three progress markers, a plain value.
// Each is the highest epoch that reached that level; all epochs up to it
// did too. Applied >= Written >= Durable always holds.
type Watermarks struct {
	Applied, Written, Durable uint64
}

// Get returns the watermark of the given level.
func (w Watermarks) Get(level Durability) uint64 {
	switch level {
	case Applied:
		return w.Applied
	case Written:
		return w.Written
	case Durable:
		return w.Durable
	}
	return 0
}

// levels is a set of three watermarks; it backs both the coordinator's
// progress and each [Subscriber]'s.
type levels struct {
	applied, written, durable watermark
}

func (l *levels) get(level Durability) *watermark {
	switch level {
	case Applied:
		return &l.applied
	case Written:
		return &l.written
	case Durable:
		return &l.durable
	}
	panic(fmt.Sprintf("coordinator: invalid durability level %d", uint8(level)))
}

func (l *levels) snapshot() Watermarks {
	// Load in reverse pipeline order so the snapshot respects
	// Applied >= Written >= Durable even while they move.
	d := l.durable.Load()
	w := l.written.Load()
	a := l.applied.Load()
	return Watermarks{Applied: a, Written: w, Durable: d}
}

func (l *levels) fail(err error) {
	l.applied.fail(err)
	l.written.fail(err)
	l.durable.fail(err)
}
