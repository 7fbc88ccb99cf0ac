package coordinator

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// spinYields is how many times a waiter yields before it parks.
const spinYields = 4

// completion is a one-shot event that any number of goroutines can wait on
// with a context. Completing it costs one atomic operation when nobody is
// waiting; waiting allocates nothing in the steady state.
type completion struct {
	flags   atomic.Uint32
	mu      sync.Mutex
	waiters *waiter // protected by mu
}

const (
	completionDone    = 1 << iota // the result fields are set
	completionWaiters             // waiters is (or was) non-empty
)

// complete publishes the result fields written before it and wakes waiters.
func (c *completion) complete() { c.completeAt(0) }

// completeAt is complete for a write applied at epoch e (0: none, or
// rejected). A waiter that waits for a later level (its then watermark)
// is listed there, for e, instead of being woken: the writer parks once
// per write. The move happens under mu, so a waiter that gives up and
// finds itself off the list (under mu) finds it on then, or is about to
// be signalled.
func (c *completion) completeAt(e uint64) {
	if c.flags.Or(completionDone)&completionWaiters == 0 {
		return
	}
	c.mu.Lock()
	var wake *waiter
	for w := c.waiters; w != nil; {
		next := w.next
		w.next = nil
		// moved is written before the listing that publishes w to then's
		// signaller, so the woken waiter reads it after its signal.
		w.moved = w.then != nil && e != 0
		if !w.moved || !w.then.list(w, e) {
			w.moved = false
			w.next = wake
			wake = w
		}
		w = next
	}
	c.waiters = nil
	c.mu.Unlock()
	for w := wake; w != nil; {
		next := w.next // read before signalling: the woken waiter reuses w
		w.signal()
		w = next
	}
}

func (c *completion) done() bool { return c.flags.Load()&completionDone != 0 }

// wait blocks until complete was called or ctx is done. With then set,
// a waiter still parked when the write is applied moves on to wait at then
// (see completeAt); the caller's wait at then is over at once unless ctx
// ended. wait reports served when it was moved and then reached the
// write's epoch: the write was applied without error and its wait at then
// is over, so the caller need not read what the coordinator wrote into the
// handle (a cache line another processor wrote last) to know it.
func (c *completion) wait(ctx context.Context, then *watermark, p *pipeline) (served bool, err error) {
	// The coordinator usually completes a handle within a microsecond of
	// the write being queued; yielding a few times first is cheaper than
	// parking and being woken, unless yields are slow (see
	// pipeline.yieldsSlow). Not so for a wait that goes on to a later
	// level: it parks once either way, and its yields would only take turns
	// from the goroutines the group waits for.
	if then == nil && !c.done() {
		if spin := p.spinYields(); spin > 0 {
			timed := timedYields()
			var (
				start   time.Time
				applied uint64
			)
			if timed {
				start, applied = time.Now(), p.marks.applied.Load()
			}
			for i := 0; i < spin && !c.done(); i++ {
				yield(p.spinYield)
			}
			if timed {
				p.sawYields(start, p.marks.applied.Load()-applied)
			}
		}
	}
	if c.done() {
		return false, nil
	}
	if err := ctx.Err(); err != nil {
		return false, err // given up already: not listed, so never moved to then
	}
	w := p.waiters.get()
	w.then = then
	c.mu.Lock()
	w.next = c.waiters
	c.waiters = w
	if c.flags.Or(completionWaiters)&completionDone != 0 {
		// Completed before we registered. A completer that saw an earlier
		// waiter takes the list only after we unlock, so unlinking w now
		// guarantees nobody will signal it.
		c.removeLocked(w)
		c.mu.Unlock()
		p.waiters.put(w)
		return false, nil
	}
	c.mu.Unlock()
	if w.park(ctx) {
		// Signalled by then's raise (or fail) if moved, by complete if not.
		served = w.moved && then.v.Load() >= w.epoch
		p.waiters.put(w)
		return served, nil
	}
	c.mu.Lock()
	listed := c.removeLocked(w)
	c.mu.Unlock()
	if !listed && (then == nil || !then.unlist(w)) {
		// complete took the list with w on it, and did not move it to
		// then (or then's advance or fail took it): its signal is coming.
		w.settle()
	}
	p.waiters.put(w)
	if c.done() {
		return false, nil
	}
	return false, ctx.Err()
}

// removeLocked unlinks w if it is still listed and reports whether it was.
func (c *completion) removeLocked(w *waiter) bool {
	for p := &c.waiters; *p != nil; p = &(*p).next {
		if *p == w {
			*p = w.next
			w.next = nil
			return true
		}
	}
	return false
}

// WriteHandle tracks one write through the pipeline. It is returned by
// [Channel.Write] and [Channel.TryWrite].
//
// A WriteHandle is safe for concurrent use and its methods may be called any
// number of times. Only the coordinator creates them: the zero value is not
// usable, and a WriteHandle must not be copied.
type WriteHandle[R any] struct {
	done completion
	p    *pipeline

	// Set by the coordinator goroutine before done.complete; read only
	// after done is observed.
	epoch  uint64
	result R
	err    error
}

// Epoch waits until the write has been sequenced and returns its epoch.
// If Apply rejected the write, the epoch is returned together with an
// [*ApplyError]. If the write was never applied (the coordinator failed or
// stopped first) the epoch is 0 and the error says why.
func (h *WriteHandle[R]) Epoch(ctx context.Context) (uint64, error) {
	if _, err := h.done.wait(ctx, nil, h.p); err != nil {
		return 0, fmt.Errorf("coordinator: waiting for epoch: %w", err)
	}
	return h.epoch, h.err
}

// Wait waits until the write reaches level and returns Apply's result.
//
// An error from Apply is returned as an [*ApplyError] as soon as the write
// is applied, whatever the level. If the write's delta cannot reach level
// because the flusher failed, the error wraps the [*FlushError]; if the
// coordinator stopped first, it wraps [ErrClosed]. Waiting for Written or
// Durable asks the coordinator to flush (and sync) the write soon, unless
// [Config.DisableFlushOnWait] is set.
func (h *WriteHandle[R]) Wait(ctx context.Context, level Durability) (R, error) {
	var zero R
	if !level.valid() {
		return zero, fmt.Errorf("coordinator: invalid durability level %d", uint8(level))
	}
	// A wait for Written or Durable that parks before the write is applied
	// moves to that level's watermark when it is, and wakes only there.
	var then *watermark
	if level > Applied {
		then = h.p.marks.get(level)
	}
	served, err := h.done.wait(ctx, then, h.p)
	if err != nil {
		return zero, fmt.Errorf("coordinator: waiting for %v: %w", level, err)
	}
	if served {
		return h.result, nil
	}
	if h.err != nil {
		return h.result, h.err
	}
	if err := h.p.waitLevel(ctx, level, h.epoch); err != nil {
		return h.result, err
	}
	return h.result, nil
}

// Applied reports, without blocking, whether the write has been sequenced.
func (h *WriteHandle[R]) Applied() bool { return h.done.done() }

// complete completes the handle of an applied write: waiters for a later
// level move on to its watermark.
func (h *WriteHandle[R]) complete() {
	if h.err != nil {
		h.done.complete()
		return
	}
	h.done.completeAt(h.epoch)
}

func (h *WriteHandle[R]) finish(epoch uint64, r R, err error) {
	h.epoch, h.result, h.err = epoch, r, err
	h.done.complete()
}

// Result is the outcome of one write of a batch.
type Result[R any] struct {
	Epoch uint64 // the write's epoch; 0 if it was never applied
	Value R      // what Apply returned
	Err   error  // an [*ApplyError] if Apply rejected the write
}

// BatchHandle tracks a batch submitted with [Channel.WriteBatch]. The writes
// of a batch are applied one after another with consecutive epochs and no
// write from another batch in between.
//
// A BatchHandle is safe for concurrent use. Only the coordinator creates
// them: the zero value is not usable, and a BatchHandle must not be copied.
type BatchHandle[R any] struct {
	done completion
	p    *pipeline

	// Set by the coordinator goroutine before done.complete.
	epochs  EpochRange
	results []Result[R]
	err     error // the whole batch was not applied
}

// Epochs waits until the batch is applied and returns its epoch range.
func (h *BatchHandle[R]) Epochs(ctx context.Context) (EpochRange, error) {
	if _, err := h.done.wait(ctx, nil, h.p); err != nil {
		return EpochRange{}, fmt.Errorf("coordinator: waiting for epochs: %w", err)
	}
	return h.epochs, h.err
}

// Wait waits until every write of the batch reaches level and returns the
// per-write results. Writes that Apply rejected have an [*ApplyError] in
// their Result and do not make Wait fail; the error is for the batch as a
// whole (not applied, flush failed, stopped, ctx done). The returned slice
// is shared by every caller and must not be modified.
func (h *BatchHandle[R]) Wait(ctx context.Context, level Durability) ([]Result[R], error) {
	if !level.valid() {
		return nil, fmt.Errorf("coordinator: invalid durability level %d", uint8(level))
	}
	if _, err := h.done.wait(ctx, nil, h.p); err != nil {
		return nil, fmt.Errorf("coordinator: waiting for %v: %w", level, err)
	}
	if h.err != nil {
		return nil, h.err
	}
	if h.epochs.Len() == 0 {
		return h.results, nil
	}
	if err := h.p.waitLevel(ctx, level, h.epochs.Last()); err != nil {
		return h.results, err
	}
	return h.results, nil
}
