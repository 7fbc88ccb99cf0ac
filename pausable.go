package coordinator

import (
	"context"
	"fmt"
	"slices"
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
//
// Capacity counts slots from acceptance until they are applied, so a
// channel never holds more than capacity slots, taken or not. Writers that
// find it full wait in FIFO order; each batch of slots applied admits that
// many of them, from the front.
type queue[W, R any] struct {
	// What a writer touches on every write comes first, packed into as few
	// cache lines as possible: each write moves them to its core.
	mu sync.Mutex
	// Slots in use are accepted + granted - appliedSlots: slots accepted
	// and not yet applied, plus slots granted to blocked writers that have
	// not appended yet; at most capacity. Writers pay no atomic operation
	// for this; the coordinator publishes appliedSlots once per turn.
	accepted uint64 // protected by mu: slots accepted
	granted  uint64 // protected by mu
	// appliedSeen is the last appliedSlots a writer read (protected by
	// mu). It only lags, so it overstates the slots in use: the fast path
	// trusts it while it shows room, and reads appliedSlots otherwise.
	appliedSeen uint64
	items       []op[W, R] // protected by mu: accepted, not yet taken
	capacity    int64
	paused      bool // protected by mu
	// nblocked counts listed writers. A writer raises it (under mu) before
	// reading appliedSlots; releaseSlots stores appliedSlots before reading
	// it: one of the two always sees the other.
	nblocked atomic.Int32
	// depth counts writes accepted and not yet applied (queued + held).
	depth atomic.Int64
	// listed is set while the queue is on the ready list. It changes only
	// when a channel becomes busy or goes idle, so it sits with what
	// writers read, away from what the coordinator writes every turn.
	listed atomic.Bool
	p      *pipeline
	ready  *readyList[W, R] // the coordinator's list of channels with work

	name      string
	budget    *budget     // nil without Config.MaxBytes
	spare     []op[W, R]  // protected by mu: recycled buffer for items
	closedErr error       // protected by mu: non-nil once no more writes are accepted
	blocked   waitList    // protected by mu: writers waiting for a slot, FIFO
	cache     waiterCache // protected by mu

	pausedFlag atomic.Bool // paused, readable without mu

	// appliedSlots mirrors slotsApplied for writers. The coordinator
	// stores it every turn; writers read it only when the queue looks
	// full, so it has a cache line of its own.
	_            [64]byte
	appliedSlots atomic.Uint64
	_            [56]byte

	// Owned by the coordinator goroutine.
	//
	// applyMu is held by the coordinator goroutine while it applies writes
	// of this queue; Pause takes it so that after Pause returns nothing more
	// of this queue is applied.
	applyMu sync.Mutex
	// held are slots taken from items and not yet applied, from position
	// heldPos on.
	held    []op[W, R]
	heldPos int
	// slotsApplied counts slots applied (or failed while applying).
	// Compared with accepted by drain.
	slotsApplied uint64
	nextReady    *queue[W, R] // link in the ready list; see readyList
	idleRounds   int          // rounds in a row found without writes; see round

	// Counters for Stats.
	applied, applyErrors                                           atomic.Uint64
	rejectedFull, rejectedBudget, rejectedCanceled, rejectedClosed atomic.Uint64
}

// usedLocked returns the slots in use, reading the coordinator's progress.
func (q *queue[W, R]) usedLocked() int64 {
	q.appliedSeen = q.appliedSlots.Load()
	return q.usedAsSeenLocked()
}

// usedAsSeenLocked returns the slots in use as of the coordinator's
// progress last read: never fewer than are.
func (q *queue[W, R]) usedAsSeenLocked() int64 {
	return int64(q.accepted + q.granted - q.appliedSeen)
}

// roomLocked reports whether a new writer may take a slot now: nobody is
// waiting before it and a slot is free.
func (q *queue[W, R]) roomLocked() bool {
	if q.nblocked.Load() > 0 {
		return false
	}
	return q.usedAsSeenLocked() < q.capacity || q.usedLocked() < q.capacity
}

// acceptedSlots returns the number of slots accepted so far.
func (q *queue[W, R]) acceptedSlots() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.accepted
}

// refusedLocked returns the error for a write that cannot be accepted
// because the channel is closed or the coordinator failed, or nil.
func (q *queue[W, R]) refusedLocked() error {
	if q.closedErr != nil {
		return q.closedErr
	}
	if q.p.isFailed() {
		// From the moment the failure is announced every write is
		// refused, even before the coordinator goroutine closes the
		// queue.
		return fmt.Errorf("coordinator: write not accepted: %w", q.p.failErr)
	}
	return nil
}

// push appends o, waiting for room if block is set.
func (q *queue[W, R]) push(ctx context.Context, o op[W, R], block bool) error {
	q.mu.Lock()
	if err := q.refusedLocked(); err != nil {
		q.mu.Unlock()
		q.rejectedClosed.Add(1)
		return err
	}
	if !q.roomLocked() {
		if !block {
			q.mu.Unlock()
			q.rejectedFull.Add(1)
			return fmt.Errorf("channel %q: %w", q.name, ErrBackpressure)
		}
		if err := q.awaitSlot(ctx); err != nil {
			return err // mu released
		}
		// A slot was granted: it is ours until we append or give it back.
		q.granted--
		if err := q.refusedLocked(); err != nil {
			q.grantLocked()
			q.mu.Unlock()
			q.rejectedClosed.Add(1)
			return err
		}
	}
	// There is room; mu is held.
	if q.budget != nil && !q.budget.tryAcquire(o.bytes) {
		if !block {
			q.mu.Unlock()
			q.p.wakeCoordinator() // it frees bytes by freezing the live delta
			q.rejectedBudget.Add(1)
			return fmt.Errorf("channel %q: byte budget exhausted: %w", q.name, ErrBackpressure)
		}
		// Hold the slot while waiting for bytes.
		q.granted++
		q.mu.Unlock()
		ok := q.budget.acquire(ctx, o.bytes, q)
		q.mu.Lock()
		q.granted--
		err := q.refusedLocked()
		if !ok || err != nil {
			q.grantLocked()
			q.mu.Unlock()
			if ok {
				q.budget.release(o.bytes)
			}
			if err != nil {
				q.rejectedClosed.Add(1)
				return err
			}
			q.rejectedCanceled.Add(1)
			return fmt.Errorf("channel %q: waiting for byte budget: %w", q.name, ctx.Err())
		}
	}
	q.items = append(q.items, o)
	q.depth.Add(int64(o.writes()))
	q.accepted++ // under mu: a drain that reads it finds the slot queued
	if len(q.items) == 1 && !q.paused {
		// The first write since the coordinator took the queue lists it
		// (later ones find it listed, or about to be taken). Under mu, so
		// that a channel with writes is always listed by the time the
		// coordinator can see them: it never sleeps on work.
		q.ready.add(q)
	}
	q.mu.Unlock()
	q.p.wakeCoordinator()
	return nil
}

// awaitSlot waits, with mu held, for a slot to be granted to this writer.
// It returns nil with mu held and the slot counted, or an error with mu
// released.
func (q *queue[W, R]) awaitSlot(ctx context.Context) error {
	w := q.cache.get()
	q.blocked.pushBack(w)
	q.nblocked.Add(1)
	q.grantLocked() // room may have been freed since the caller looked
	if !w.granted {
		q.mu.Unlock()
		w.park(ctx)
		q.mu.Lock()
	}
	granted := w.granted
	if !granted && q.blocked.contains(w) {
		q.blocked.remove(w)
		q.nblocked.Add(-1)
	}
	q.cache.put(w)
	if granted {
		return nil
	}
	err := q.refusedLocked()
	q.mu.Unlock()
	if err != nil {
		q.rejectedClosed.Add(1)
		return err
	}
	q.rejectedCanceled.Add(1)
	return fmt.Errorf("channel %q: waiting for queue room: %w", q.name, ctx.Err())
}

// grantLocked admits blocked writers from the front while there are free
// slots.
func (q *queue[W, R]) grantLocked() {
	for w := q.blocked.head; w != nil && q.usedLocked() < q.capacity; w = q.blocked.head {
		q.blocked.remove(w)
		q.nblocked.Add(-1)
		q.granted++
		w.granted = true
		w.wake()
	}
}

// releaseSlots publishes the slots the coordinator applied so far, and
// admits as many blocked writers as they make room for. Called by the
// coordinator goroutine after each turn.
func (q *queue[W, R]) releaseSlots() {
	q.appliedSlots.Store(q.slotsApplied)
	if q.nblocked.Load() > 0 {
		q.mu.Lock()
		q.grantLocked()
		q.mu.Unlock()
	}
}

// take moves everything queued into held, unless the queue is paused and
// ignorePause is not set. It reports whether held has slots to apply.
// Called by the coordinator goroutine with applyMu held.
func (q *queue[W, R]) take(ignorePause bool) bool {
	if q.heldPos < len(q.held) {
		return ignorePause || !q.pausedFlag.Load()
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

// close stops accepting writes: later ones are refused with refused, and
// so are writers waiting for room or budget. If dropped is non-nil,
// everything accepted but not applied is failed with it; otherwise it stays
// queued for the coordinator to apply.
func (q *queue[W, R]) close(refused, dropped error) {
	q.mu.Lock()
	if q.closedErr == nil {
		q.closedErr = refused
	}
	// Wake every blocked writer: each finds the queue closed.
	for w := q.blocked.head; w != nil; w = q.blocked.head {
		q.blocked.remove(w)
		q.nblocked.Add(-1)
		w.wake()
	}
	var items []op[W, R]
	if dropped != nil {
		items = q.items
		q.items = nil
	}
	q.mu.Unlock()
	if q.budget != nil {
		q.budget.cancel(q)
	}
	if dropped == nil {
		return
	}
	// held is owned by the coordinator goroutine, the only caller that
	// drops.
	for i := range items {
		q.dropOp(&items[i], dropped)
	}
	for i := q.heldPos; i < len(q.held); i++ {
		q.dropOp(&q.held[i], dropped)
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
	q.pausedFlag.Store(paused)
	q.mu.Unlock()
	if !paused {
		if q.depth.Load() > 0 {
			q.ready.add(q)
		}
		q.p.wakeCoordinator()
	}
}

func (q *queue[W, R]) isPaused() bool { return q.pausedFlag.Load() }

// readyList is where writers list a channel that got writes while
// unlisted (queue.listed), in the order they got them; the coordinator moves
// them to its active list (see Coordinator.round), where they stay listed.
// Writers push onto a lock-free stack; the coordinator takes the whole
// stack at once (so there is no ABA) and reverses it into arrival order.
type readyList[W, R any] struct {
	head atomic.Pointer[queue[W, R]]
}

func (r *readyList[W, R]) add(q *queue[W, R]) {
	if q.listed.Load() || !q.listed.CompareAndSwap(false, true) {
		return
	}
	for {
		h := r.head.Load()
		q.nextReady = h // only the lister writes it; take reads it after the swap
		if r.head.CompareAndSwap(h, q) {
			return
		}
	}
}

func (r *readyList[W, R]) empty() bool { return r.head.Load() == nil }

// take empties the list and appends its channels to buf, oldest first. The
// channels stay marked listed.
func (r *readyList[W, R]) take(buf []*queue[W, R]) []*queue[W, R] {
	start := len(buf)
	for q := r.head.Swap(nil); q != nil; {
		next := q.nextReady
		q.nextReady = nil
		buf = append(buf, q)
		q = next
	}
	slices.Reverse(buf[start:])
	return buf
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

// size returns w's size for the byte budget (0 without one), or an error
// if it is negative.
func (ch *Channel[W, R]) size(w W) (int64, error) {
	if ch.sizeOf == nil {
		return 0, nil
	}
	n := ch.sizeOf(w)
	if n < 0 {
		return n, ch.sizeError(n)
	}
	return n, nil
}

func (ch *Channel[W, R]) sizeError(n int64) error {
	return fmt.Errorf("channel %q: write size %d: %w", ch.q.name, n, ErrInvalidSize)
}

// Name returns the channel's name.
func (ch *Channel[W, R]) Name() string { return ch.q.name }

// TryWrite queues w without blocking. If the queue is full (or writers are
// waiting for room ahead of it) it fails at once with an error wrapping
// [ErrBackpressure]; the caller still holds w and may retry. After Stop
// began it fails with [ErrClosed], and from the moment the coordinator
// fails with an error wrapping the failure ("write not accepted"). With
// [Config.MaxBytes], a negative Size fails with [ErrInvalidSize].
func (ch *Channel[W, R]) TryWrite(w W) (*WriteHandle[R], error) {
	n, err := ch.size(w)
	if err != nil {
		return nil, err
	}
	h := &WriteHandle[R]{p: ch.q.p}
	if err := ch.q.push(context.Background(), op[W, R]{write: w, h: h, bytes: n}, false); err != nil {
		return nil, err
	}
	return h, nil
}

// Write queues w, waiting for room in the queue while it is full. Blocked
// writers are admitted in the order they blocked, one per slot the
// coordinator frees (and, with [Config.MaxBytes], in the same order as
// budget bytes are released). It returns the context's error (wrapped) if
// ctx is done first; w was then not queued. Use [context.WithTimeout] for
// a bounded wait. Errors are as for [Channel.TryWrite].
func (ch *Channel[W, R]) Write(ctx context.Context, w W) (*WriteHandle[R], error) {
	n, err := ch.size(w)
	if err != nil {
		return nil, err
	}
	h := &WriteHandle[R]{p: ch.q.p}
	if err := ch.q.push(ctx, op[W, R]{write: w, h: h, bytes: n}, true); err != nil {
		return nil, err
	}
	return h, nil
}

// WriteBatch queues ws as one slot of the queue, waiting for room like
// [Channel.Write]. The writes are applied back to back with consecutive
// epochs, each with its own result. ws must not be modified until the
// batch is applied. An empty batch completes at once with no epochs (but
// fails like any write once Stop began or the coordinator failed). With
// [Config.MaxBytes], the batch's sizes are summed; a negative size, or a
// sum past the int64 range, fails with [ErrInvalidSize].
func (ch *Channel[W, R]) WriteBatch(ctx context.Context, ws []W) (*BatchHandle[R], error) {
	bh := &BatchHandle[R]{p: ch.q.p}
	if len(ws) == 0 {
		ch.q.mu.Lock()
		err := ch.q.refusedLocked()
		ch.q.mu.Unlock()
		if err != nil {
			ch.q.rejectedClosed.Add(1)
			return nil, err
		}
		bh.done.complete()
		return bh, nil
	}
	o := op[W, R]{batch: ws, bh: bh}
	if ch.sizeOf != nil {
		for _, w := range ws {
			n := ch.sizeOf(w)
			var ok bool
			if o.bytes, ok = addSize(o.bytes, n); !ok {
				if n >= 0 {
					return nil, fmt.Errorf("channel %q: batch of %d writes: sizes add up past the int64 range: %w", ch.q.name, len(ws), ErrInvalidSize)
				}
				return nil, ch.sizeError(n)
			}
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
// applied. The channel holds at most [Config.QueueCapacity] slots until they
// are applied, so Len stays within it unless batches are written.
func (ch *Channel[W, R]) Len() int { return int(ch.q.depth.Load()) }
