package coordinator

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
)

// Sizer is implemented by write types that know their size in bytes. It is
// required when [Config.MaxBytes] is set: the coordinator charges each
// write's Size against the byte budget from the moment it is accepted
// until the delta holding it has been written. A negative Size is refused
// with [ErrInvalidSize].
type Sizer interface {
	Size() int
}

// budget bounds the bytes of writes that are queued, in the live delta, or
// in frozen deltas not yet written. Reserving is one atomic operation while
// nobody waits; writers that find it exhausted queue up in FIFO order, and
// each release admits as many of them, from the front, as now fit.
//
// Accounting cannot overflow: a reservation n is admitted only if
// n <= max-used (or nothing is held), so used never exceeds
// max(max, the largest single write).
type budget struct {
	max  int64
	p    *pipeline // to wake the coordinator when a writer starts waiting
	used atomic.Int64

	// nblocked counts listed writers. A writer raises it (under mu) before
	// reading used; release lowers used before reading it: one of the two
	// always sees the other.
	nblocked atomic.Int32
	// starved is set when TryWrite found the budget exhausted; the
	// coordinator then freezes the live delta so its bytes can be
	// released. It is cleared by the freeze.
	starved atomic.Bool

	mu      sync.Mutex
	blocked waitList    // protected by mu
	cache   waiterCache // protected by mu
}

// fits reports whether n more bytes may be reserved when used are. A write
// larger than the whole budget fits when nothing else is reserved, so it
// cannot wait forever.
func (b *budget) fits(used, n int64) bool { return used <= 0 || n <= b.max-used }

// isStarved reports whether writers wait for bytes (or TryWrite found none).
func (b *budget) isStarved() bool { return b.nblocked.Load() > 0 || b.starved.Load() }

// tryAcquire reserves n bytes if they fit and no writer waits before it.
func (b *budget) tryAcquire(n int64) bool {
	if b.nblocked.Load() == 0 {
		for {
			used := b.used.Load()
			if !b.fits(used, n) {
				break
			}
			if b.used.CompareAndSwap(used, used+n) {
				return true
			}
		}
	}
	b.starved.Store(true)
	return false
}

// acquire reserves n bytes, waiting in FIFO order behind earlier writers.
// owner is the writer's queue: closing it (cancel) ends the wait. It reports
// whether the bytes were reserved; if not, ctx is done or owner was closed.
func (b *budget) acquire(ctx context.Context, n int64, owner any) bool {
	b.mu.Lock()
	w := b.cache.get()
	w.bytes, w.owner = n, owner
	b.blocked.pushBack(w)
	b.nblocked.Add(1)
	b.grantLocked()
	if !w.granted {
		b.mu.Unlock()
		b.p.wakeCoordinator() // it frees bytes by freezing the live delta
		w.park(ctx)
		b.mu.Lock()
		if b.blocked.contains(w) {
			// ctx is done: give up the place; the writers behind may fit
			// now.
			b.unlistLocked(w)
			b.grantLocked()
		}
	}
	granted := w.granted
	b.cache.put(w)
	b.mu.Unlock()
	return granted
}

func (b *budget) unlistLocked(w *fifoWaiter) {
	b.blocked.remove(w)
	b.nblocked.Add(-1)
}

// grantLocked admits writers from the front of the line while they fit.
func (b *budget) grantLocked() {
	for w := b.blocked.head; w != nil; w = b.blocked.head {
		used, n := b.used.Load(), w.bytes
		if !b.fits(used, n) {
			return
		}
		if !b.used.CompareAndSwap(used, used+n) {
			continue
		}
		b.unlistLocked(w)
		w.granted = true
		w.wake()
	}
}

// cancel ends the wait of every writer of owner, which was closed.
func (b *budget) cancel(owner any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for w := b.blocked.head; w != nil; {
		next := w.next
		if w.owner == owner {
			b.unlistLocked(w)
			w.wake()
		}
		w = next
	}
	b.grantLocked()
}

func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.used.Add(-n)
	if b.nblocked.Load() > 0 {
		b.mu.Lock()
		b.grantLocked()
		b.mu.Unlock()
	}
}

// sizeOf returns a function giving a write's size, or nil if W does not
// implement Sizer.
func sizeOf[W any]() func(W) int64 {
	var zero W
	if _, ok := any(zero).(Sizer); !ok {
		if _, ok := any(&zero).(Sizer); !ok {
			return nil
		}
		return func(w W) int64 { return int64(any(&w).(Sizer).Size()) }
	}
	return func(w W) int64 { return int64(any(w).(Sizer).Size()) }
}

// addSize adds a write's size to a running total, reporting false for a
// negative size or an overflow.
func addSize(total, n int64) (int64, bool) {
	if n < 0 || total > math.MaxInt64-n {
		return total, false
	}
	return total + n, true
}
