package coordinator

import (
	"sync"
	"sync/atomic"
)

// Sizer is implemented by write types that know their size in bytes. It is
// required when [Config.MaxBytes] is set: the coordinator charges each
// write's Size against the byte budget from the moment it is accepted
// until the delta holding it has been written.
type Sizer interface {
	Size() int
}

// budget bounds the bytes of writes that are queued, in the live delta, or
// in frozen deltas not yet written. Reserving is one atomic add; only
// writers that find it exhausted touch the mutex.
type budget struct {
	max  int64
	used atomic.Int64

	mu   sync.Mutex
	room chan struct{} // protected by mu: closed when bytes are released; nil if nobody waits
	// starved is set when a writer found the budget exhausted; the
	// coordinator then freezes the live delta so its bytes can be released.
	starved atomic.Bool
}

// tryAcquire reserves n bytes if they fit. A write larger than the whole
// budget is admitted when nothing else is reserved, so it cannot wait
// forever.
func (b *budget) tryAcquire(n int64) bool {
	for {
		used := b.used.Load()
		if used+n > b.max && used > 0 {
			b.starved.Store(true)
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

// wait returns a channel closed at the next release.
func (b *budget) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.room == nil {
		b.room = make(chan struct{})
	}
	return b.room
}

func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.used.Add(-n)
	b.mu.Lock()
	if b.room != nil {
		close(b.room)
		b.room = nil
	}
	b.mu.Unlock()
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
