// This file holds the state the goroutines share: the pipeline (watermarks,
// demand, wake-ups, the failure), which writers, waiters, the coordinator
// goroutine and the flusher goroutine all touch through atomics and the
// watermarks' locks, and the types that cross from the coordinator
// goroutine to the flusher (the engine's flush functions, flushJob,
// flushReq). No goroutine owns anything here.

package coordinator

import (
	"context"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// pipeline is the part of the coordinator's state that does not depend on
// the type parameters; handles hold a pointer to it.
type pipeline struct {
	// marks are the three watermarks. Their waiters are the demand: a
	// listed Written or Durable waiter asks for a freeze (see freezeDemand)
	// and a listed Durable waiter whose epoch is written asks for a sync
	// (see syncDemand). A wait that ends takes its demand with it.
	marks    levels
	syncReq  atomic.Uint64 // number of explicit sync requests made
	syncDone watermark     // number of explicit sync requests served
	// waiters recycles the waiters of the watermarks and the handles.
	waiters waiterPool

	// frozenThrough is the last epoch handed to the flusher. Written by
	// the coordinator goroutine.
	frozenThrough atomic.Uint64
	// busy counts frozen deltas queued for or in the flusher (low 32 bits)
	// and running syncs (busySync each), in one word so that a reader
	// sees both at the same instant. The coordinator freezes for waiters
	// only when it is 0, so that writes arriving during a flush are
	// grouped into the next.
	busy atomic.Int64

	// returning counts writers the flusher woke (Written and Durable
	// waiters) that have not written again: the flusher adds the waiters
	// each pass wakes, and the coordinator takes off the writes it applies,
	// never below zero. A writer woken at Written or Durable usually writes
	// again at once, and the coordinator lets those writes join the group
	// it is about to freeze (see Coordinator.gatherReturning).
	returning atomic.Int64
	// lastSync is how long the last FlushStorage took, in nanoseconds:
	// gathering returning writers for longer than a sync costs more than
	// it saves. Set by the flusher.
	lastSync atomic.Int64

	// yieldsSlow is set while yielding the processor has been seen to
	// take long: other goroutines (CPU-bound ones, say) want it, and a
	// yield puts the yielder behind every one of them, each running up to
	// a time slice first, where a goroutine that blocks and is woken runs
	// next. Waiters then park at once, and the coordinator neither spins
	// before sleeping nor gathers before freezing. Set by whoever times a
	// slow yield; cleared by the coordinator (see Coordinator.probeYields).
	yieldsSlow atomic.Bool
	// spinYield, if set before Start, replaces the yields of a waiter on
	// a write handle: the tests make them take as long as they like. Nil
	// otherwise.
	spinYield func()

	sleeping atomic.Bool // the coordinator goroutine is about to block
	// attn counts Flush callers about to hand over a request, plus a large
	// constant once Stop began. While it is 0 the coordinator sleeps on wake
	// alone: a one-channel receive is much cheaper than a select.
	attn       atomic.Int32
	timerFired atomic.Bool   // the flush interval elapsed; set by the timer
	wake       chan struct{} // buffer of 1: a pending wake-up for the coordinator
	kick       chan struct{} // buffer of 1: a pending wake-up for the flusher
	lazy       bool          // Config.DisableFlushOnWait

	failOnce   sync.Once
	failErr    error         // written once, before failedFlag is set
	failedFlag atomic.Bool   // set once the failure is published
	failed     chan struct{} // closed together with failedFlag
}

const busySync = 1 << 32 // added to pipeline.busy while FlushStorage runs

// spinYields returns how many times a waiter on a write handle yields
// before it parks: spinYields, or 0 while yields are slow.
func (p *pipeline) spinYields() int {
	if p.yieldsSlow.Load() {
		return 0
	}
	return spinYields
}

// timedYields reports whether a goroutine about to yield should time its
// yields, to find out whether they have become slow: one in
// yieldSampleRate, so that the clock costs little.
func timedYields() bool { return rand.Uint32()%yieldSampleRate == 0 }

// sawYields records that a goroutine's spell of yields, begun at start,
// brought writes writes (applied meanwhile, or found queued), and reports
// whether it found them slow.
func (p *pipeline) sawYields(start time.Time, writes uint64) bool {
	if !slowYield(time.Since(start), writes) {
		return false
	}
	p.yieldsSlow.Store(true)
	return true
}

// yield yields the processor, or calls hook instead if a test set one.
func yield(hook func()) {
	if hook == nil {
		runtime.Gosched()
	} else {
		hook()
	}
}

// slowYield reports whether yields (and any rounds between them) that took
// d and brought writes writes were slow: they took longer than slowYields
// plus yieldPerWrite per write, so they went to goroutines other than the
// writers.
func slowYield(d time.Duration, writes uint64) bool {
	return d > slowYields+time.Duration(writes)*yieldPerWrite
}

const (
	// slowYields is how long yields that bring no write may take before
	// they count as slow. Yielding to writers that each run a few
	// microseconds costs far less; one time slice of a goroutine that never
	// blocks costs far more (10 ms).
	slowYields = time.Millisecond
	// yieldPerWrite is what a write may add to the time of yields before
	// they count as slow: far more than a writer's work, so that however
	// many writers run meanwhile, only yields that also ran something else
	// count.
	yieldPerWrite = 20 * time.Microsecond
	// yieldSampleRate: one spell of yields in this many is timed. Each
	// coordinator learns on its own that yields are slow, paying for up to
	// this many slow spells on average first (BenchmarkBusy, one writer:
	// 4.0–6.6 µs per round trip at 4, 1–34 ms at 16); timing costs two
	// clock reads (a one-writer round trip: +3.6% at 4 against 16).
	yieldSampleRate = 4
)

func (p *pipeline) wakeCoordinator() {
	if p.sleeping.Load() && p.sleeping.CompareAndSwap(true, false) {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// forceWake wakes the coordinator whether or not it announced sleeping;
// used for the rare events (timer, Flush, Stop, failure).
func (p *pipeline) forceWake() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *pipeline) kickFlusher() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// expectReturning records that the flusher just woke n waiters, writers
// that may be about to write again.
func (p *pipeline) expectReturning(n int) {
	p.returning.Add(int64(n))
}

// returned takes n writes applied off the returning writers, down to 0.
func (p *pipeline) returned(n int) {
	for {
		old := p.returning.Load()
		if old == 0 {
			return
		}
		if p.returning.CompareAndSwap(old, max(old-int64(n), 0)) {
			return
		}
	}
}

func (p *pipeline) isFailed() bool { return p.failedFlag.Load() }

// err returns the failure, or nil.
func (p *pipeline) err() error {
	if p.isFailed() {
		return p.failErr
	}
	return nil
}

// recordFailure records err as the failure if it is the first; it reports
// whether it was. Nobody learns of the failure until announceFailure.
func (p *pipeline) recordFailure(err error) bool {
	first := false
	p.failOnce.Do(func() {
		p.failErr = err
		first = true
	})
	return first
}

// announceFailure makes the recorded failure visible: to Err, to writers
// (every later write is refused) and to every waiter. It runs after the
// failed view is published, so whoever learns of the failure sees it.
func (p *pipeline) announceFailure() {
	p.failedFlag.Store(true)
	close(p.failed)
	p.marks.written.fail(p.failErr)
	p.marks.durable.fail(p.failErr)
	p.syncDone.fail(p.failErr)
	p.kickFlusher()
	p.forceWake()
}

// freezeDemand reports whether a waiter asks for a freeze: someone waits
// for Written, or for Durable beyond what is written. Meaningful when the
// flusher is idle (busy == 0): every frozen delta is then written, so each
// such waiter's epoch is in the live delta or not yet assigned.
func (p *pipeline) freezeDemand() bool {
	return p.marks.written.minWait.Load() != 0 ||
		p.marks.durable.maxWait.Load() > p.marks.written.Load()
}

// syncDemand reports whether a Durable waiter is waiting for an epoch that
// is written: a sync now satisfies at least the oldest one.
func (p *pipeline) syncDemand() bool {
	m := p.marks.durable.minWait.Load()
	return m != 0 && m <= p.marks.written.Load()
}

// writtenWaiter is called when a goroutine starts waiting for Written: it
// wakes the coordinator, which freezes when the flusher is idle. While the
// flusher is busy it will wake the coordinator itself once idle.
func (p *pipeline) writtenWaiter(uint64) {
	if !p.lazy && p.busy.Load() == 0 {
		p.wakeCoordinator()
	}
}

// durableWaiter is called when a goroutine starts waiting for Durable at e.
// An epoch already written needs only a sync: kick the flusher. Otherwise
// the write needs a freeze first, and the flusher syncs once it has
// written e (it checks syncDemand after every batch of deltas).
func (p *pipeline) durableWaiter(e uint64) {
	if e <= p.marks.written.Load() {
		p.kickFlusher()
		return
	}
	p.writtenWaiter(e)
}

func raiseTo(v *atomic.Uint64, e uint64) bool {
	for {
		old := v.Load()
		if old >= e {
			return false
		}
		if v.CompareAndSwap(old, e) {
			return true
		}
	}
}

// waitLevel waits until epoch e reaches level; the wait itself is the
// demand that makes the pipeline get it there.
func (p *pipeline) waitLevel(ctx context.Context, level Durability, e uint64) error {
	return p.marks.get(level).wait(ctx, level, e) // returns at once if e is reached
}

// engine is the live delta with its types erased down to what the
// coordinator goroutine needs; it hides the context and frozen types.
type engine[W, R, FV, DV, S any] interface {
	apply(W) (R, error)
	size() int
	reader() DV
	// freeze freezes the live delta, starts the next one, and returns a
	// function that flushes the frozen delta, and its read view.
	freeze() (flushFunc[S], FV)
}

type flushFunc[S any] func(ctx context.Context, epochs EpochRange) (S, error)

type deltaEngine[D Delta[W, R, C, F, FV, DV], W, R, C, F, FV, DV, S any] struct {
	d        D
	newDelta func(C) D
	flusher  Flusher[F, S]
}

func (e *deltaEngine[D, W, R, C, F, FV, DV, S]) apply(w W) (R, error) { return e.d.Apply(w) }
func (e *deltaEngine[D, W, R, C, F, FV, DV, S]) size() int            { return e.d.EstimateSize() }
func (e *deltaEngine[D, W, R, C, F, FV, DV, S]) reader() DV           { return e.d.Reader() }
func (e *deltaEngine[D, W, R, C, F, FV, DV, S]) freeze() (flushFunc[S], FV) {
	frozen, view, next := e.d.Freeze()
	e.d = e.newDelta(next)
	fl := e.flusher
	return func(ctx context.Context, epochs EpochRange) (S, error) {
		return fl.FlushDelta(ctx, frozen, epochs)
	}, view
}

// flushJob is a frozen delta on its way through the flusher.
type flushJob[S any] struct {
	epochs   EpochRange
	reason   FlushReason
	bytes    int
	reserved int64 // byte budget to release once written
	flush    flushFunc[S]
}

// flushReq asks the coordinator goroutine to freeze the live delta.
type flushReq struct {
	reply chan flushReply // buffer of 1 so the coordinator never blocks replying
}

type flushReply struct {
	epoch uint64
	err   error
}
