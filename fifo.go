package coordinator

import "context"

// fifoWaiter is a writer blocked for room in a queue or for byte budget.
// It waits on a channel of its own, made per wait: blocking is the slow
// path, and a channel select on ctx needs no registration with the context
// (context.AfterFunc takes the parent context's lock, which thousands of
// writers sharing one context would contend on).
type fifoWaiter struct {
	next, prev *fifoWaiter
	bytes      int64         // budget waiters: the bytes wanted
	owner      any           // budget waiters: the queue of the writer
	granted    bool          // protected by the list owner's mutex
	ready      chan struct{} // buffer of 1: granted, or unlisted without a grant
}

// waiterCache recycles fifoWaiters within one coordinator. The cache is
// per coordinator, never process-wide: a channel belongs to the synctest
// bubble it was made in, and a coordinator's writers all live in one. The
// owner's mutex protects it.
type waiterCache struct{ free []*fifoWaiter }

const waiterCacheMax = 1024

func (c *waiterCache) get() *fifoWaiter {
	if n := len(c.free); n > 0 {
		w := c.free[n-1]
		c.free[n-1] = nil
		c.free = c.free[:n-1]
		return w
	}
	return &fifoWaiter{ready: make(chan struct{}, 1)}
}

// put recycles w, which is unlisted, so that no wake for it can come.
func (c *waiterCache) put(w *fifoWaiter) {
	if len(c.free) >= waiterCacheMax {
		return
	}
	select {
	case <-w.ready: // a wake that came after ctx ended
	default:
	}
	*w = fifoWaiter{ready: w.ready}
	c.free = append(c.free, w)
}

// wake tells the waiter it was granted or unlisted. Called once, under the
// list owner's mutex, after the waiter was unlisted.
func (w *fifoWaiter) wake() { w.ready <- struct{}{} }

// park blocks until wake or ctx is done.
func (w *fifoWaiter) park(ctx context.Context) {
	select {
	case <-w.ready:
	case <-ctx.Done():
	}
}

// waitList is a FIFO of fifoWaiters. Its owner protects it with a mutex.
type waitList struct {
	head, tail *fifoWaiter
}

func (l *waitList) pushBack(w *fifoWaiter) {
	w.next, w.prev = nil, l.tail
	if l.tail != nil {
		l.tail.next = w
	} else {
		l.head = w
	}
	l.tail = w
}

// contains reports whether w is listed.
func (l *waitList) contains(w *fifoWaiter) bool { return w.prev != nil || l.head == w }

func (l *waitList) remove(w *fifoWaiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		l.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		l.tail = w.prev
	}
	w.next, w.prev = nil, nil
}
