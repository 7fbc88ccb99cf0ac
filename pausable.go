package coordinator

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// op is one queue slot: a single write or a batch. Slots are stored by
// value so that queueing allocates nothing beyond the handle.
type op[W, R any] struct {
	write W
	h     *WriteHandle[R]
	batch []W
	bh    *BatchHandle[R]
	bytes int64 // charged against the byte budget, if any
}

func (o *op[W, R]) writes() int {
	if o.bh != nil {
		return len(o.batch)
	}
	return 1
}

// fail completes the slot's handle with err without applying it.
func (o *op[W, R]) fail(err error) {
	if o.bh != nil {
		o.bh.err = err
		o.bh.done.complete()
		return
	}
	var zero R
	o.h.finish(0, zero, err)
}

// queue is one named input channel: a bounded FIFO with a pause switch.
//
// Writers append under mu. The coordinator goroutine takes everything queued
// in one step (swapping buffers), so the per-write cost of the hand-off is
// one uncontended lock on each side, and the coordinator's share is paid
// per batch.
type queue[W, R any] struct {
	name     string
	capacity int
	p        *pipeline
	budget   *budget       // nil without Config.MaxBytes
	closedCh chan struct{} // closed by close, to wake writers waiting for budget

	mu        sync.Mutex
	items     []op[W, R]    // protected by mu: accepted, not yet taken
	spare     []op[W, R]    // protected by mu: recycled buffer for items
	closedErr error         // protected by mu: non-nil once no more writes are accepted
	paused    bool          // protected by mu
	room      chan struct{} // protected by mu: closed when space frees up; nil if nobody waits

	// depth counts writes accepted and not yet applied (queued + held).
	depth atomic.Int64

	// applyMu is held by the coordinator goroutine while it applies writes
	// of this queue; Pause takes it so that after Pause returns nothing more
	// of this queue is applied.
	applyMu sync.Mutex

	// held are slots taken from items and not yet applied, from position
	// heldPos on. Owned by the coordinator goroutine.
	held    []op[W, R]
	heldPos int
	// slotsApplied counts slots applied (or failed while applying); owned
	// by the coordinator goroutine. Compared with accepted by drain.
	slotsApplied uint64

	// Counters for Stats.
	accepted, rejectedFull, rejectedBudget, rejectedCanceled, rejectedClosed atomic.Uint64
	applied, applyErrors                                                     atomic.Uint64
}

// push appends o, waiting for room if block is set.
func (q *queue[W, R]) push(ctx context.Context, o op[W, R], block bool) error {
	q.mu.Lock()
	for {
		if q.closedErr != nil {
			err := q.closedErr
			q.mu.Unlock()
			q.rejectedClosed.Add(1)
			return err
		}
		var budgetRoom <-chan struct{}
		if len(q.items) < q.capacity {
			if q.budget != nil && !q.budget.tryAcquire(o.bytes) {
				q.mu.Unlock()
				q.p.wakeCoordinator() // it frees bytes by freezing the live delta
				if !block {
					q.rejectedBudget.Add(1)
					return fmt.Errorf("channel %q: byte budget exhausted: %w", q.name, ErrBackpressure)
				}
				budgetRoom = q.budget.wait()
				if q.budget.tryAcquire(o.bytes) {
					q.budget.release(o.bytes) // raced with a release: retry from the top
				}
				select {
				case <-budgetRoom:
				case <-q.closedCh:
				case <-ctx.Done():
					q.rejectedCanceled.Add(1)
					return fmt.Errorf("channel %q: waiting for byte budget: %w", q.name, ctx.Err())
				}
				q.mu.Lock()
				continue
			}
			q.items = append(q.items, o)
			q.depth.Add(int64(o.writes()))
			q.accepted.Add(1) // under mu: a drain that reads it finds the slot queued
			q.mu.Unlock()
			q.p.wakeCoordinator()
			return nil
		}
		if !block {
			q.mu.Unlock()
			q.rejectedFull.Add(1)
			return fmt.Errorf("channel %q: %w", q.name, ErrBackpressure)
		}
		if q.room == nil {
			q.room = make(chan struct{})
		}
		room := q.room
		q.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			q.rejectedCanceled.Add(1)
			return fmt.Errorf("channel %q: waiting for queue room: %w", q.name, ctx.Err())
		}
		q.mu.Lock()
	}
}

// take moves everything queued into held, unless the queue is paused and
// ignorePause is not set. It reports whether held has slots to apply.
// Called by the coordinator goroutine with applyMu held.
func (q *queue[W, R]) take(ignorePause bool) bool {
	if q.heldPos < len(q.held) {
		if !ignorePause {
			q.mu.Lock()
			paused := q.paused
			q.mu.Unlock()
			if paused {
				return false
			}
		}
		return true
	}
	if q.depth.Load() == 0 {
		return false
	}
	q.mu.Lock()
	if (q.paused && !ignorePause) || len(q.items) == 0 {
		q.mu.Unlock()
		return false
	}
	q.recycleLocked()
	q.held, q.items, q.spare = q.items, q.spare[:0], nil
	q.heldPos = 0
	if q.room != nil {
		close(q.room)
		q.room = nil
	}
	q.mu.Unlock()
	return true
}

// recycleLocked hands the fully applied held buffer back for reuse.
func (q *queue[W, R]) recycleLocked() {
	if q.held != nil && q.spare == nil {
		clear(q.held) // drop references to writes and handles
		q.spare = q.held[:0]
	}
	q.held, q.heldPos = nil, 0
}

// close stops accepting writes. If drop is set, everything accepted but not
// applied is failed with err and returned count of failed writes; otherwise
// it stays queued for the coordinator to apply.
func (q *queue[W, R]) close(err error, drop bool) {
	q.mu.Lock()
	if q.closedErr == nil {
		q.closedErr = err
		close(q.closedCh)
	}
	if q.room != nil {
		close(q.room)
		q.room = nil
	}
	var dropped []op[W, R]
	if drop {
		dropped = q.items
		q.items = nil
	}
	q.mu.Unlock()
	if !drop {
		return
	}
	// held is owned by the coordinator goroutine, the only caller with
	// drop set.
	for i := range dropped {
		q.dropOp(&dropped[i], err)
	}
	for i := q.heldPos; i < len(q.held); i++ {
		q.dropOp(&q.held[i], err)
	}
	q.held, q.heldPos = nil, 0
}

func (q *queue[W, R]) dropOp(o *op[W, R], err error) {
	q.depth.Add(-int64(o.writes()))
	if q.budget != nil {
		q.budget.release(o.bytes)
	}
	o.fail(err)
}

func (q *queue[W, R]) setPaused(paused bool) {
	if paused {
		q.applyMu.Lock()
		defer q.applyMu.Unlock()
	}
	q.mu.Lock()
	q.paused = paused
	q.mu.Unlock()
	if !paused {
		q.p.wakeCoordinator()
	}
}

func (q *queue[W, R]) isPaused() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.paused
}

// Channel is a named input queue of a [Coordinator], obtained with
// [Coordinator.Channel]. Each channel is bounded by [Config.QueueCapacity]
// and can be paused on its own; the coordinator merges all channels fairly,
// taking in turn everything each unpaused channel has queued.
//
// A Channel is safe for concurrent use by any number of goroutines. Copying
// the pointer is fine; the zero value is not usable.
type Channel[W, R any] struct {
	q      *queue[W, R]
	sizeOf func(W) int64 // set only with Config.MaxBytes
}

func (ch *Channel[W, R]) op(w W, h *WriteHandle[R]) op[W, R] {
	o := op[W, R]{write: w, h: h}
	if ch.sizeOf != nil {
		o.bytes = ch.sizeOf(w)
	}
	return o
}

// Name returns the channel's name.
func (ch *Channel[W, R]) Name() string { return ch.q.name }

// TryWrite queues w without blocking. If the queue is full it fails at
// once with an error wrapping [ErrBackpressure]; the caller still holds w
// and may retry. After Stop began it fails with [ErrClosed], and after a
// failure with the failure.
func (ch *Channel[W, R]) TryWrite(w W) (*WriteHandle[R], error) {
	h := &WriteHandle[R]{p: ch.q.p}
	if err := ch.q.push(context.Background(), ch.op(w, h), false); err != nil {
		return nil, err
	}
	return h, nil
}

// Write queues w, waiting for room in the queue while it is full. It
// returns the context's error (wrapped) if ctx is done first; w was then not
// queued. Use [context.WithTimeout] for a bounded wait.
func (ch *Channel[W, R]) Write(ctx context.Context, w W) (*WriteHandle[R], error) {
	h := &WriteHandle[R]{p: ch.q.p}
	if err := ch.q.push(ctx, ch.op(w, h), true); err != nil {
		return nil, err
	}
	return h, nil
}

// WriteBatch queues ws as one slot of the queue, waiting for room like
// [Channel.Write]. The writes are applied back to back with consecutive
// epochs, each with its own result. ws must not be modified until the
// batch is applied. An empty batch completes at once with no epochs.
func (ch *Channel[W, R]) WriteBatch(ctx context.Context, ws []W) (*BatchHandle[R], error) {
	bh := &BatchHandle[R]{p: ch.q.p}
	if len(ws) == 0 {
		bh.done.complete()
		return bh, nil
	}
	o := op[W, R]{batch: ws, bh: bh}
	if ch.sizeOf != nil {
		for _, w := range ws {
			o.bytes += ch.sizeOf(w)
		}
	}
	if err := ch.q.push(ctx, o, true); err != nil {
		return nil, err
	}
	return bh, nil
}

// Pause stops the coordinator from consuming this channel. When Pause
// returns, no further write of this channel is applied until [Channel.Resume]
// (if the coordinator was applying a batch of this channel, Pause waits for
// that batch to finish). Writes keep queueing until the queue is full; other
// channels keep flowing; [Coordinator.Flush] still works. [Coordinator.Stop]
// applies and flushes the writes of paused channels too.
func (ch *Channel[W, R]) Pause() { ch.q.setPaused(true) }

// Resume lets the coordinator consume the channel again.
func (ch *Channel[W, R]) Resume() { ch.q.setPaused(false) }

// Paused reports whether the channel is paused.
func (ch *Channel[W, R]) Paused() bool { return ch.q.isPaused() }

// Len returns the number of writes accepted on this channel and not yet
// applied.
func (ch *Channel[W, R]) Len() int { return int(ch.q.depth.Load()) }
