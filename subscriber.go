package coordinator

import (
	"context"
	"fmt"
	"sync"
)

// Subscriber receives every view the coordinator publishes (one when a
// delta is frozen, one when it is written) through a bounded buffer of
// [Config.SubscriberBuffer] views. Create one with [Coordinator.Subscribe].
//
// The view current at subscription is captured atomically with it: call
// [Subscriber.Initialize] to take it, then [Subscriber.Next] for each later
// view. A subscriber that falls behind by more than its buffer gets a
// [*LagError] saying how many views it missed; it recovers by calling
// Initialize again, which returns the current view and resumes delivery
// from there.
//
// A subscriber also carries its own Applied/Written/Durable watermarks,
// which it advances with [Subscriber.Advance] as it processes views, and
// which other goroutines wait on through its [Monitor].
//
// Next must be called by one goroutine at a time; the other methods are
// safe for concurrent use. Call Close when done; the zero value is not
// usable.
type Subscriber[FV, DV, S any] struct {
	hub    *viewHub[FV, DV, S]
	notify chan struct{} // buffer of 1: a pending "something changed" signal
	marks  levels

	mu          sync.Mutex
	initial     *View[FV, DV, S]   // protected by mu: view captured at (re)initialization
	initialized bool               // protected by mu
	recapture   bool               // protected by mu: Initialize must capture the current view
	buf         []*View[FV, DV, S] // protected by mu: ring buffer
	head, n     int                // protected by mu
	missed      uint64             // protected by mu: views dropped since the last Initialize
	closed      bool               // protected by mu: no more views will be delivered
}

// deliver is called by the hub, under the hub's lock, for every new view.
func (s *Subscriber[FV, DV, S]) deliver(v *View[FV, DV, S]) {
	s.mu.Lock()
	switch {
	case s.closed:
	case s.missed > 0:
		s.missed++
	case s.n == len(s.buf):
		s.missed = uint64(s.n) + 1
		clear(s.buf)
		s.head, s.n = 0, 0
	default:
		s.buf[(s.head+s.n)%len(s.buf)] = v
		s.n++
	}
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func (s *Subscriber[FV, DV, S]) closeFeed() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Initialize returns the view to start from. The first call returns the
// view captured when the subscription was made, and views published since
// then follow from Next. Later calls (after a [*LagError], or to skip ahead)
// capture the current view and drop anything buffered, atomically with
// respect to publication.
func (s *Subscriber[FV, DV, S]) Initialize() *View[FV, DV, S] {
	s.mu.Lock()
	if !s.initialized && !s.recapture {
		s.initialized = true
		v := s.initial
		s.mu.Unlock()
		return v
	}
	s.mu.Unlock()

	// Hold the hub's lock so no view is published between capturing the
	// current one and clearing the buffer.
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initial = s.hub.cur.Load()
	s.initialized, s.recapture = true, false
	clear(s.buf)
	s.head, s.n, s.missed = 0, 0, 0
	return s.initial
}

// Next returns the next view, waiting for one if none is buffered. It
// returns [ErrNotInitialized] before Initialize, a [*LagError] if views were
// dropped (call Initialize to recover), and [ErrClosed] once the
// subscription or the coordinator is closed and the buffer is drained.
func (s *Subscriber[FV, DV, S]) Next(ctx context.Context) (*View[FV, DV, S], error) {
	for {
		s.mu.Lock()
		switch {
		case !s.initialized:
			s.mu.Unlock()
			return nil, ErrNotInitialized
		case s.missed > 0:
			err := &LagError{Missed: s.missed}
			s.initialized, s.recapture = false, true
			s.mu.Unlock()
			return nil, err
		case s.n > 0:
			v := s.buf[s.head]
			s.buf[s.head] = nil
			s.head = (s.head + 1) % len(s.buf)
			s.n--
			s.mu.Unlock()
			return v, nil
		case s.closed:
			s.mu.Unlock()
			// Every view has been handed out and processed: the
			// subscriber's watermarks cannot move any more, so release
			// Monitor waiters beyond them.
			s.marks.fail(ErrClosed)
			return nil, ErrClosed
		}
		s.mu.Unlock()
		select {
		case <-s.notify:
		case <-ctx.Done():
			return nil, fmt.Errorf("coordinator: waiting for view: %w", ctx.Err())
		}
	}
}

// Advance records that the subscriber has processed everything up to
// epoch at level (and so at every lower level). Monitor waiters whose
// epoch is reached wake up.
func (s *Subscriber[FV, DV, S]) Advance(level Durability, epoch uint64) {
	switch level {
	case Durable:
		s.marks.durable.advance(epoch)
		fallthrough
	case Written:
		s.marks.written.advance(epoch)
		fallthrough
	case Applied:
		s.marks.applied.advance(epoch)
	}
}

// Watermarks returns the subscriber's own watermarks.
func (s *Subscriber[FV, DV, S]) Watermarks() Watermarks { return s.marks.snapshot() }

// Monitor returns a handle other goroutines use to wait on this
// subscriber's watermarks.
func (s *Subscriber[FV, DV, S]) Monitor() *Monitor { return &Monitor{marks: &s.marks} }

// Close ends the subscription. Buffered views can still be read; Monitor
// waiters whose epoch was not reached return an error wrapping [ErrClosed].
// Close is idempotent. Close a subscriber you stop using (for instance
// after replacing it with a new [Coordinator.Subscribe]): its Monitor
// waiters are released only by Close, or by Next returning ErrClosed once
// the coordinator has stopped and every buffered view was read.
func (s *Subscriber[FV, DV, S]) Close() {
	s.hub.unsubscribe(s)
	s.closeFeed()
	s.marks.fail(ErrClosed)
}

// Monitor waits on a [Subscriber]'s watermarks. It is safe for concurrent
// use and may be copied.
type Monitor struct {
	marks *levels
}

// Wait blocks until the subscriber's watermark at level reaches epoch. It
// returns an error wrapping [ErrClosed] if the subscriber is closed first,
// or ctx's error.
func (m *Monitor) Wait(ctx context.Context, level Durability, epoch uint64) error {
	if !level.valid() {
		return fmt.Errorf("coordinator: invalid durability level %d", uint8(level))
	}
	return m.marks.get(level).wait(ctx, level, epoch)
}

// Watermarks returns the subscriber's watermarks.
func (m *Monitor) Watermarks() Watermarks { return m.marks.snapshot() }
