// Package coordinator is a generic write coordinator for storage engines:
// it turns many concurrent writers into one ordered stream of epochs,
// batches that stream into in-memory deltas, hands frozen deltas to a
// background flusher, and tells every writer when its write is applied,
// written and durable. It plays the role of the commit pipeline of an LSM
// tree (think pebble's commit.go or bbolt's DB.Batch), with the data model
// left to you.
//
// You implement two interfaces: a [Delta], the mutable in-memory batch that
// writes are applied to, and a [Flusher], which persists frozen deltas and
// makes storage durable. [New] infers every type parameter from them:
//
//	c, err := coordinator.New(coordinator.Config{}, newDelta, initialContext, snapshot, flusher)
//	c.Start()
//	defer c.Stop(ctx)
//	h, err := c.Channel("default").Write(ctx, write)
//	result, err := h.Wait(ctx, coordinator.Durable)
//
// Usage rules:
//   - Writes enter through named, bounded [Channel] queues. [Channel.TryWrite]
//     never blocks; [Channel.Write] waits for room or for its context.
//   - Every applied write gets the next epoch, starting at 1 (or
//     [Config.FirstEpoch]). A [WriteHandle] waits for the write to reach
//     [Applied], [Written] or [Durable]; waiting for Written or Durable is
//     itself a request to flush.
//   - Readers call [Coordinator.View] (or [Coordinator.Subscribe]) and never
//     block writers; views are published copy-on-write.
//   - [Coordinator.Stop] applies, flushes and syncs everything accepted, and
//     returns the first error; its context bounds only the wait.
//     [Coordinator.Abort] gives up on the flusher instead.
//   - Once the flusher fails for good, or user code panics, the
//     coordinator is failed: every affected waiter and every later call
//     gets an error wrapping the cause (see [FlushError]).
//
// Every blocking call takes a [context.Context] and returns its error,
// wrapped, when it is done.
//
// The pipeline, with the goroutine that runs each step:
//
//	writers        Channel.Write ──▶ bounded queue per channel
//	coordinator    epoch = next++ ─▶ Delta.Apply ─▶ Applied
//	               Delta.Freeze ──▶ View{Frozen: +delta} ─▶ flush queue
//	flusher        Flusher.FlushDelta ─▶ View{Snapshot} ─▶ Written
//	               Flusher.FlushStorage ─▶ Durable
//
// See [Coordinator] for the invariants and the design choices behind them,
// and the README for the guarantees in full.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Delta is the mutable in-memory batch that writes are applied to. The
// coordinator owns it and calls it from one goroutine at a time, so it needs
// no locking of its own except what its readers (DV) need.
//
// Type parameters, which [New] infers from your implementation:
//   - W: a write, as submitted through a [Channel].
//   - R: what applying a write returns to its writer (use struct{} for none).
//   - C: the context carried from one delta to the next: ID counters,
//     dictionaries, anything that must continue across freezes.
//   - F: a frozen delta, consumed by [Flusher.FlushDelta].
//   - FV: a cheap read view of a frozen delta, kept in [View.Frozen] until
//     the delta is written.
//   - DV: a read view of the live delta, [View.Current]; it must observe
//     writes as they are applied (and so must be safe for concurrent use
//     with Apply).
type Delta[W, R, C, F, FV, DV any] interface {
	// Apply applies one write. An error rejects the write: it keeps its
	// epoch but must leave the delta unchanged, and reaches the writer as
	// an [*ApplyError].
	Apply(write W) (R, error)
	// EstimateSize returns the delta's size in bytes; when it reaches
	// [Config.FlushSize] the delta is frozen.
	EstimateSize() int
	// Freeze ends the delta's life: it returns the data to flush, a read
	// view of the same data, and the context for the next delta, which the
	// coordinator creates with the function given to [New].
	Freeze() (frozen F, view FV, next C)
	// Reader returns a read view of the live delta.
	Reader() DV
}

// Flusher persists frozen deltas. Its methods are called from one
// goroutine, in epoch order, never concurrently with each other.
//
// S is the storage snapshot type: opaque state the flusher produces after
// each delta (a read transaction, a manifest version, a map), published in
// [View.Snapshot].
type Flusher[F, S any] interface {
	// FlushDelta writes one frozen delta holding epochs and returns the
	// snapshot that includes it. It is retried on error according to
	// [Config.Retry], so it must be safe to call again with the same delta.
	FlushDelta(ctx context.Context, frozen F, epochs EpochRange) (S, error)
	// FlushStorage makes everything written so far durable (fsync).
	FlushStorage(ctx context.Context) error
}

// SyncPolicy says when the coordinator calls [Flusher.FlushStorage] on its
// own. Independently of the policy, FlushStorage runs whenever a goroutine
// waits for [Durable] (or calls [Coordinator.Flush] with Durable) and once
// more at [Coordinator.Stop].
type SyncPolicy uint8

const (
	// SyncOnDemand syncs only when someone waits for Durable. Concurrent
	// requests coalesce: a request made while a sync is running is served
	// by the next one.
	SyncOnDemand SyncPolicy = iota
	// SyncAlways syncs after every written delta.
	SyncAlways
)

// RetryPolicy bounds how the coordinator retries a failing flusher call
// before it gives up and fails. Panics are never retried.
type RetryPolicy struct {
	// Attempts is the total number of tries per call; 0 or 1 means no retry.
	Attempts int
	// Backoff is the wait before the first retry; it doubles each time up
	// to MaxBackoff. Defaults: 10ms and 1s.
	Backoff, MaxBackoff time.Duration
	// Retryable reports whether an error is worth retrying; nil means all.
	Retryable func(error) bool
}

// Config configures a [Coordinator]. The zero value is valid: zero fields
// take the documented defaults. [New] validates it.
type Config struct {
	// Channels names the input channels. Default: one channel, "default".
	Channels []string
	// QueueCapacity bounds each channel's queue, in slots (a write or a
	// batch), from acceptance until the slot is applied. Default 20,000.
	QueueCapacity int
	// FlushInterval freezes the live delta when this long passed since
	// the last freeze (or Start). Default 10s.
	FlushInterval time.Duration
	// FlushSize freezes the live delta once its EstimateSize reaches it.
	// Default 64 MiB.
	FlushSize int
	// FirstEpoch is the epoch of the first write. A store that reopens
	// persisted data sets it to one past the last epoch it recovered, so
	// epochs keep growing across restarts and can serve as durable
	// sequence numbers; the watermarks start at FirstEpoch-1. Default 1.
	FirstEpoch uint64
	// MaxPendingFlushes is how many frozen deltas may wait for the flusher
	// beside the one it is writing; when they are all taken, the
	// coordinator stops applying writes until one is written, and queues
	// fill up (backpressure). Default 2.
	MaxPendingFlushes int
	// MaxBytes, if positive, is a byte budget for writes that are queued,
	// in the live delta, or in frozen deltas not yet written; the write
	// type must implement [Sizer]. When it is exhausted, TryWrite fails
	// with ErrBackpressure, Write waits (in FIFO order), and the coordinator
	// freezes the live delta so the flusher can release its bytes. A single
	// write larger than the budget is admitted when nothing else is held.
	// Negative sizes are refused with ErrInvalidSize.
	// Default 0: no byte budget (memory is bounded by counts; see the
	// README's memory section).
	MaxBytes int64
	// Sync is the sync policy. Default SyncOnDemand.
	Sync SyncPolicy
	// DisableFlushOnWait stops waits for Written and Durable from
	// triggering a flush: deltas are then frozen only by size, interval,
	// Flush and Stop. Durable waits still trigger syncs.
	DisableFlushOnWait bool
	// Retry is the retry policy for flusher errors. Default: no retry.
	Retry RetryPolicy
	// SubscriberBuffer is how many views a [Subscriber] buffers before it
	// lags. Default 16.
	SubscriberBuffer int
	// SlowFlushThreshold reports (log, Stats, Observer) a flusher call still
	// running after this long. Default 30s; negative disables it.
	SlowFlushThreshold time.Duration
	// Observer, if set, receives events for metrics.
	Observer Observer
	// Logger, if set, receives flush failures, retries, slow flushes and
	// shutdown. Nil means silent.
	Logger *slog.Logger
}

const (
	defaultChannel     = "default"
	defaultQueueCap    = 20_000
	defaultInterval    = 10 * time.Second
	defaultFlushSize   = 64 << 20
	defaultPending     = 2
	defaultSubBuffer   = 16
	defaultSlowFlush   = 30 * time.Second
	defaultBackoff     = 10 * time.Millisecond
	defaultMaxBackoff  = time.Second
	maxWritesPerTurn   = 4096 // queue slots applied per channel per turn
	maxConfiguredQueue = 1 << 30
	stopAttention      = 1 << 24 // added to pipeline.attn by Stop
)

func (cfg Config) withDefaults() (Config, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(cfg.Channels) == 0 {
		cfg.Channels = []string{defaultChannel}
	}
	seen := make(map[string]bool, len(cfg.Channels))
	for _, name := range cfg.Channels {
		if name == "" {
			bad("empty channel name")
		} else if seen[name] {
			bad("duplicate channel name %q", name)
		}
		seen[name] = true
	}
	cfg.Channels = append([]string(nil), cfg.Channels...)
	switch {
	case cfg.QueueCapacity < 0 || cfg.QueueCapacity > maxConfiguredQueue:
		bad("QueueCapacity %d out of range [0, %d]", cfg.QueueCapacity, maxConfiguredQueue)
	case cfg.QueueCapacity == 0:
		cfg.QueueCapacity = defaultQueueCap
	}
	switch {
	case cfg.FlushInterval < 0:
		bad("FlushInterval %v is negative", cfg.FlushInterval)
	case cfg.FlushInterval == 0:
		cfg.FlushInterval = defaultInterval
	}
	switch {
	case cfg.FlushSize < 0:
		bad("FlushSize %d is negative", cfg.FlushSize)
	case cfg.FlushSize == 0:
		cfg.FlushSize = defaultFlushSize
	}
	switch {
	case cfg.MaxPendingFlushes < 0:
		bad("MaxPendingFlushes %d is negative", cfg.MaxPendingFlushes)
	case cfg.MaxPendingFlushes == 0:
		cfg.MaxPendingFlushes = defaultPending
	}
	if cfg.FirstEpoch == 0 {
		cfg.FirstEpoch = 1
	}
	if cfg.FirstEpoch > 1<<62 {
		bad("FirstEpoch %d is too large", cfg.FirstEpoch)
	}
	if cfg.MaxBytes < 0 {
		bad("MaxBytes %d is negative", cfg.MaxBytes)
	}
	if cfg.Sync > SyncAlways {
		bad("unknown SyncPolicy %d", cfg.Sync)
	}
	switch {
	case cfg.SubscriberBuffer < 0:
		bad("SubscriberBuffer %d is negative", cfg.SubscriberBuffer)
	case cfg.SubscriberBuffer == 0:
		cfg.SubscriberBuffer = defaultSubBuffer
	}
	if cfg.SlowFlushThreshold == 0 {
		cfg.SlowFlushThreshold = defaultSlowFlush
	}
	r := &cfg.Retry
	if r.Attempts < 0 || r.Backoff < 0 || r.MaxBackoff < 0 {
		bad("Retry has a negative field: %+v", *r)
	}
	if r.Attempts == 0 {
		r.Attempts = 1
	}
	if r.Backoff == 0 {
		r.Backoff = defaultBackoff
	}
	if r.MaxBackoff == 0 {
		r.MaxBackoff = max(defaultMaxBackoff, r.Backoff)
	}
	if r.MaxBackoff < r.Backoff {
		bad("Retry.MaxBackoff %v is below Retry.Backoff %v", r.MaxBackoff, r.Backoff)
	}
	if cfg.Observer == nil {
		cfg.Observer = NopObserver{}
	}
	if len(errs) > 0 {
		return cfg, fmt.Errorf("coordinator: invalid config: %w", errors.Join(errs...))
	}
	return cfg, nil
}

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

	// frozenThrough is the last epoch handed to the flusher. Written by
	// the coordinator goroutine.
	frozenThrough atomic.Uint64
	// busy counts frozen deltas queued for or in the flusher (low 32 bits)
	// and running syncs (busySync each), in one word so that a reader
	// sees both at the same instant. The coordinator freezes for waiters
	// only when it is 0, so that writes arriving during a flush are
	// grouped into the next.
	busy atomic.Int64

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
	m := p.marks.get(level)
	if m.Load() >= e {
		return nil
	}
	return m.wait(ctx, level, e)
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

// Coordinator sequences writes from many goroutines into epochs, applies
// them to a [Delta], and drives a [Flusher]. Create it with [New], then
// [Coordinator.Start] it; [Coordinator.Stop] it when done. All methods are
// safe for concurrent use. The zero value is not usable, and a Coordinator
// must not be copied.
//
// Type parameters: W write, R apply result, FV frozen-delta view, DV live
// delta view, S storage snapshot (see [Delta] and [Flusher]). They are
// inferred by [New]; give the instantiation a name with a type alias:
//
//	type KV = coordinator.Coordinator[Put, struct{}, *Segment, *Reader, *Manifest]
//
// # Design
//
// Two goroutines do the work; writers and readers only touch queues,
// handles, watermarks and an atomic view pointer.
//
//	writers ──TryWrite/Write──▶ channel queues (bounded, pausable, one per name)
//	                                 │ coordinator goroutine: takes each queue's
//	                                 │ contents in turn (round robin)
//	                                 ▼
//	        sequence (epoch = next++) → Delta.Apply → applied watermark → complete handles
//	                                 │ size ≥ FlushSize, interval, Flush, a waiter, Stop
//	                                 ▼
//	        Freeze → next delta from context → publish view (frozen += FV)
//	                                 │ flush queue (MaxPendingFlushes; full = backpressure)
//	                                 ▼ flusher goroutine
//	        FlushDelta → publish view (snapshot, frozen -= FV) → written watermark
//	                                 │ a Durable waiter, Flush(Durable), SyncAlways, Stop
//	                                 ▼
//	        FlushStorage → durable watermark
//
// Invariants:
//
//  1. Epochs start at 1 and are assigned consecutively in apply order; a
//     frozen delta holds exactly the contiguous range [first, last+1), and
//     ranges reach the flusher in order.
//  2. A watermark moves only forward, and Applied ≥ Written ≥ Durable.
//  3. A view is published before the watermark that announces its content:
//     a goroutine woken at Written sees a view whose snapshot includes its
//     write; a handle reports Applied only once the applied watermark
//     covers it.
//  4. Once a channel's Pause returns, nothing more from it is applied until
//     Resume: the coordinator holds the channel's apply lock while it
//     applies that channel's writes, and Pause takes it.
//  5. Every accepted write is applied and flushed by Stop, or its handle
//     reports an error. No waiter blocks forever: a failure fails every
//     watermark beyond its current value, and Stop fails what is left with
//     ErrClosed.
//  6. After a failure no view claims data that will not be written: the
//     final view keeps only the last snapshot, and it is published before
//     anyone can learn of the failure (Err, a waiter's error, a refused
//     write). From that moment every new write is refused.
//  7. Liveness: every wait finishes. Demand is the set of waiters still
//     waiting (the watermarks' heaps), never a remembered maximum, so a
//     wait that ends asks for nothing more. With a healthy flusher a
//     Written or Durable wait on an applied epoch returns within a bounded
//     number of flusher calls: its delta is frozen when the flusher is
//     idle (or by size), reaches the flusher behind at most
//     MaxPendingFlushes+1 others, and the flusher syncs right after the
//     batch of deltas (at most MaxPendingFlushes+1) in which the oldest
//     Durable waiter's epoch is written. So a Written wait sees at most
//     MaxPendingFlushes+2 FlushDelta calls, and a Durable wait at most
//     2*(MaxPendingFlushes+1) before the FlushStorage that serves it
//     starts, however many deltas keep coming. (With DisableFlushOnWait
//     the freeze waits for size or interval instead.)
//  8. Costs follow the work: blocked writers are admitted in FIFO order,
//     one per freed slot (or as many as fit in freed budget bytes), and
//     the coordinator visits only channels that have writes (a ready
//     list), so idle channels and parked writers cost nothing per write.
//
// Group commit: a goroutine waiting for Written or Durable is a demand. The
// coordinator freezes the live delta for a demand only when the flusher is
// idle, so everything that arrives while a flush (and sync) is in flight is
// written by the next one; and the flusher syncs once for every durability
// request made before the sync started — Durable waiters and
// Flush(Durable) calls alike.
//
// Rejected designs: a Go channel per input merged with reflect.Select
// (slow, and costs a lock per write on the consumer side where swapping a
// slice under one lock takes a whole batch); a per-write channel for the
// result (an allocation per write; handles use a pooled waiter only when
// someone actually blocks); waking all waiters on every watermark change
// (waiters sit in a heap ordered by epoch, so each wake-up is O(log n) and
// only satisfied waiters run); letting Stop drop queued writes, or leaving
// waiters to hang after a flush error, as the original did; a select over
// the timer, control and wake channels in the idle loop (selectgo was a
// third of the CPU of a one-writer round trip); moving a Durable waiter
// from its handle straight onto the watermark when the write is applied,
// so it parks once (measured: no gain at 256 writers, 28% slower at 16,
// because the demand arrives before other writers' writes and splits the
// group).
type Coordinator[W, R, FV, DV, S any] struct {
	cfg      Config
	p        *pipeline
	queues   []*queue[W, R]
	channels map[string]*Channel[W, R]
	hub      viewHub[FV, DV, S]
	stats    stats
	syncFn   func(context.Context) error
	// timed is set when the user gave an Observer: only then is each apply
	// batch timed, because two clock reads per batch are a measurable share
	// of a write when batches are small.
	timed bool

	budget *budget // nil without Config.MaxBytes

	// ready lists the channels that have writes to apply, so the
	// coordinator's work follows the busy channels, not the configured ones.
	ready readyList[W, R]
	// emptyReader reads an empty delta; a failed view shows it as Current.
	emptyReader DV

	ctrl   chan flushReq     // unbuffered: a request is taken only by the coordinator goroutine
	flushQ chan *flushJob[S] // capacity MaxPendingFlushes

	// flushCtx is passed to flusher calls; Abort cancels it.
	flushCtx    context.Context
	cancelFlush context.CancelFunc

	startOnce, stopOnce sync.Once
	stopping            chan struct{} // closed by Stop
	runDone, flushDone  chan struct{} // closed when each goroutine exits
	done                chan struct{} // closed when shutdown is complete
	stopErr             error         // written before done is closed

	// Owned by the coordinator goroutine.
	eng        engine[W, R, FV, DV, S]
	next       uint64 // the next epoch to assign
	deltaStart uint64 // the first epoch of the live delta
	timer      *time.Timer
	active     []*queue[W, R] // listed channels taken from the ready list
	flushReqs  []flushReq     // handleFlush's buffer
	lastSize   int            // the live delta's EstimateSize after the last apply
	liveBytes  int64          // byte budget held by writes applied to the live delta
	rejected   int            // writes Apply rejected in the current turn
	turnWrites int            // writes of the slots consumed in the current turn
}

// New creates a coordinator. newDelta creates a delta that continues from a
// context: New calls it with initial for the first delta, and the
// coordinator calls it with the context each Freeze returns. snapshot is the
// storage state to start from (View.Snapshot until the first flush).
//
// New also calls newDelta(initial) a second time, for an empty delta that
// is never written to: its Reader is the Current of a failed view.
//
// New validates cfg and returns an error describing every invalid field.
// The coordinator does nothing until [Coordinator.Start]; writes may be
// queued before.
func New[D Delta[W, R, C, F, FV, DV], W, R, C, F, FV, DV, S any](
	cfg Config, newDelta func(C) D, initial C, snapshot S, flusher Flusher[F, S],
) (*Coordinator[W, R, FV, DV, S], error) {
	timed := cfg.Observer != nil
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if newDelta == nil || flusher == nil {
		return nil, errors.New("coordinator: New needs a newDelta function and a flusher")
	}
	p := &pipeline{
		wake:   make(chan struct{}, 1),
		kick:   make(chan struct{}, 1),
		failed: make(chan struct{}),
		lazy:   cfg.DisableFlushOnWait,
	}
	p.marks.written.parked = p.writtenWaiter
	p.marks.durable.parked = p.durableWaiter
	p.marks.durable.trackMax = true
	eng := &deltaEngine[D, W, R, C, F, FV, DV, S]{newDelta: newDelta, flusher: flusher}
	eng.d = newDelta(initial)
	// A delta that is never written to: its reader is the Current of a
	// failed view, so that reading a failed view never meets a nil reader.
	emptyReader := newDelta(initial).Reader()
	c := &Coordinator[W, R, FV, DV, S]{
		cfg:         cfg,
		timed:       timed,
		p:           p,
		channels:    make(map[string]*Channel[W, R], len(cfg.Channels)),
		syncFn:      flusher.FlushStorage,
		ctrl:        make(chan flushReq),
		flushQ:      make(chan *flushJob[S], cfg.MaxPendingFlushes),
		stopping:    make(chan struct{}),
		runDone:     make(chan struct{}),
		flushDone:   make(chan struct{}),
		done:        make(chan struct{}),
		eng:         eng,
		emptyReader: emptyReader,
		next:        cfg.FirstEpoch,
		deltaStart:  cfg.FirstEpoch,
	}
	if base := cfg.FirstEpoch - 1; base > 0 {
		p.marks.applied.v.Store(base)
		p.marks.written.v.Store(base)
		p.marks.durable.v.Store(base)
		p.frozenThrough.Store(base)
	}
	var size func(W) int64
	if cfg.MaxBytes > 0 {
		if size = sizeOf[W](); size == nil {
			var zero W
			return nil, fmt.Errorf("coordinator: Config.MaxBytes is set but the write type %T does not implement Sizer", zero)
		}
		c.budget = &budget{max: cfg.MaxBytes, p: p}
	}
	c.flushCtx, c.cancelFlush = context.WithCancel(context.Background())
	for _, name := range cfg.Channels {
		q := &queue[W, R]{name: name, capacity: int64(cfg.QueueCapacity), p: p, budget: c.budget, ready: &c.ready}
		c.queues = append(c.queues, q)
		c.channels[name] = &Channel[W, R]{q: q, sizeOf: size}
	}
	c.hub.cur.Store(&View[FV, DV, S]{Current: eng.reader(), Snapshot: snapshot, Written: cfg.FirstEpoch - 1})
	return c, nil
}

// Channel returns the named input channel. It panics if the name was not
// in [Config.Channels]: that is a programming error.
func (c *Coordinator[W, R, FV, DV, S]) Channel(name string) *Channel[W, R] {
	ch, ok := c.channels[name]
	if !ok {
		panic(fmt.Sprintf("coordinator: unknown channel %q", name))
	}
	return ch
}

// Start starts the coordinator's goroutines. Calling it again, or after
// Stop, does nothing. The flush interval starts counting now.
func (c *Coordinator[W, R, FV, DV, S]) Start() {
	c.startOnce.Do(func() {
		c.timer = time.AfterFunc(c.cfg.FlushInterval, func() {
			c.p.timerFired.Store(true)
			c.p.forceWake()
		})
		go c.run()
		go c.runFlusher()
		go c.finish()
	})
}

// beginStop starts the shutdown once.
func (c *Coordinator[W, R, FV, DV, S]) beginStop() {
	c.stopOnce.Do(func() {
		c.Start()
		for _, q := range c.queues {
			q.close(fmt.Errorf("coordinator: write not accepted: %w", ErrClosed), nil)
		}
		c.p.attn.Add(stopAttention)
		close(c.stopping)
		c.p.forceWake()
	})
}

// Stop shuts the coordinator down: it stops accepting writes (they fail
// with [ErrClosed]), applies every write already accepted — on paused
// channels too —, flushes it, syncs storage, stops its goroutines and
// returns the first error the coordinator met (nil if none). A coordinator
// that was never started is started for this. Stop is idempotent: later
// calls wait for the same shutdown and return the same error.
//
// Like [net/http.Server.Shutdown], ctx bounds only the waiting: if ctx ends
// first, Stop returns ctx's error and the shutdown goes on in the
// background, still writing everything accepted; a later Stop waits for it
// again. To give up on the flusher, call [Coordinator.Abort].
func (c *Coordinator[W, R, FV, DV, S]) Stop(ctx context.Context) error {
	c.beginStop()
	select {
	case <-c.done:
		return c.stopErr
	case <-ctx.Done():
		return fmt.Errorf("coordinator: stop: %w", ctx.Err())
	}
}

// Abort begins the shutdown, as Stop does, and cancels the context the
// coordinator passes to the flusher, so that a flusher call that honours
// its context returns at once and no retry is attempted. It does not wait:
// call Stop to wait for the shutdown to finish and to learn its result.
//
// A flusher call that fails because of the cancellation fails the
// coordinator (every waiter and Stop then get an error wrapping
// [ErrFailed] and [context.Canceled]); writes the flusher still completes
// are kept. Abort is idempotent and safe to call at any time, also while
// another goroutine waits in Stop.
func (c *Coordinator[W, R, FV, DV, S]) Abort() {
	c.beginStop()
	c.cancelFlush()
}

// Done returns a channel closed when the coordinator has shut down.
func (c *Coordinator[W, R, FV, DV, S]) Done() <-chan struct{} { return c.done }

// Err returns the error the coordinator failed with, or nil. Once it is
// non-nil, [Coordinator.View] returns the failed view and every new write is
// refused.
func (c *Coordinator[W, R, FV, DV, S]) Err() error { return c.p.err() }

// View returns the latest published view. It never blocks.
func (c *Coordinator[W, R, FV, DV, S]) View() *View[FV, DV, S] { return c.hub.load() }

// Subscribe returns a subscriber that receives every view published from
// now on; the current view is captured atomically with the subscription
// (see [Subscriber.Initialize]).
func (c *Coordinator[W, R, FV, DV, S]) Subscribe() *Subscriber[FV, DV, S] {
	return c.hub.subscribe(c.cfg.SubscriberBuffer)
}

// Watermarks returns the current watermarks without blocking.
func (c *Coordinator[W, R, FV, DV, S]) Watermarks() Watermarks { return c.p.marks.snapshot() }

// FlushedEpoch returns the written watermark: every epoch up to it is in
// storage.
func (c *Coordinator[W, R, FV, DV, S]) FlushedEpoch() uint64 { return c.p.marks.written.Load() }

// WaitFor waits until epoch reaches level. Like [WriteHandle.Wait], waiting
// for Written or Durable requests a flush, for as long as the wait lasts: a
// wait for an epoch not yet assigned keeps asking for every write applied
// meanwhile to be flushed as soon as the flusher is idle, until it returns.
func (c *Coordinator[W, R, FV, DV, S]) WaitFor(ctx context.Context, level Durability, epoch uint64) error {
	if !level.valid() {
		return fmt.Errorf("coordinator: invalid durability level %d", uint8(level))
	}
	return c.p.waitLevel(ctx, level, epoch)
}

// Flush freezes the live delta and hands it to the flusher, then waits
// until it reaches level, and returns the epoch it covers: the last epoch
// assigned. level Applied returns once the delta is frozen; Written once
// the flusher wrote it; Durable once a FlushStorage that started after the
// call began completed — Durable always calls FlushStorage, even when there
// was nothing new to write. Concurrent Durable flushes share syncs: one
// FlushStorage serves every Flush (and every Durable waiter) whose request
// was made before it started.
//
// Flush covers every write accepted on an unpaused channel before Flush
// was called: the coordinator applies what is queued on those channels
// before freezing. Writes queued on paused channels are not covered. A
// flush with nothing new to write freezes nothing. If ctx ends after the
// request was taken, the flush still happens; only the wait is abandoned.
func (c *Coordinator[W, R, FV, DV, S]) Flush(ctx context.Context, level Durability) (uint64, error) {
	if !level.valid() {
		return 0, fmt.Errorf("coordinator: invalid durability level %d", uint8(level))
	}
	var syncN uint64
	if level == Durable {
		// Register the sync request now, so that any sync that starts from
		// here on serves it, whatever the coordinator is busy with.
		syncN = c.p.syncReq.Add(1)
	}
	req := flushReq{reply: make(chan flushReply, 1)}
	c.p.attn.Add(1)
	c.p.forceWake()
	defer c.p.attn.Add(-1)
	select {
	case c.ctrl <- req:
	case <-c.stopping:
		return 0, fmt.Errorf("coordinator: flush: %w", ErrClosed)
	case <-c.p.failed:
		return 0, fmt.Errorf("coordinator: flush: %w", c.p.failErr)
	case <-ctx.Done():
		return 0, fmt.Errorf("coordinator: flush: %w", ctx.Err())
	}
	var r flushReply
	select {
	case r = <-req.reply:
	case <-c.p.failed:
		return 0, fmt.Errorf("coordinator: flush: %w", c.p.failErr)
	case <-ctx.Done():
		return 0, fmt.Errorf("coordinator: flush: %w", ctx.Err())
	}
	if r.err != nil {
		return r.epoch, fmt.Errorf("coordinator: flush: %w", r.err)
	}
	if level == Durable {
		c.p.kickFlusher()
		if err := c.p.syncDone.wait(ctx, Durable, syncN); err != nil {
			return r.epoch, err
		}
	}
	if level >= Written {
		if err := c.p.waitLevel(ctx, level, r.epoch); err != nil {
			return r.epoch, err
		}
	}
	return r.epoch, nil
}

// Stats returns a snapshot of the coordinator's counters.
func (c *Coordinator[W, R, FV, DV, S]) Stats() Stats {
	busy := c.p.busy.Load()
	s := Stats{
		Watermarks:     c.Watermarks(),
		Channels:       make([]ChannelStats, len(c.queues)),
		DeltaBytes:     int(c.stats.deltaBytes.Load()),
		PendingFlushes: int(busy % busySync),
		Syncing:        busy >= busySync,
		Syncs:          c.stats.syncs.Load(),
		Retries:        c.stats.retries.Load(),
		SlowFlushes:    c.stats.slowFlushes.Load(),
		Apply:          c.stats.apply.load(),
		Freeze:         c.stats.freeze.load(),
		Dispatch:       c.stats.dispatch.load(),
		FlushDelta:     c.stats.flushDelta.load(),
		FlushStorage:   c.stats.flushStorage.load(),
		Err:            c.p.err(),
	}
	if c.budget != nil {
		s.BudgetBytes, s.BudgetMax = c.budget.used.Load(), c.budget.max
	}
	for i := range s.Flushes {
		s.Flushes[i] = c.stats.flushes[i].Load()
	}
	for i, q := range c.queues {
		s.Channels[i] = ChannelStats{
			Name:             q.name,
			Depth:            int(q.depth.Load()),
			Paused:           q.isPaused(),
			Accepted:         q.acceptedSlots(),
			RejectedFull:     q.rejectedFull.Load(),
			RejectedBudget:   q.rejectedBudget.Load(),
			Applied:          q.applied.Load(),
			ApplyErrors:      q.applyErrors.Load(),
			RejectedCanceled: q.rejectedCanceled.Load(),
			RejectedClosed:   q.rejectedClosed.Load(),
		}
	}
	return s
}

func (c *Coordinator[W, R, FV, DV, S]) logger() *slog.Logger { return c.cfg.Logger }

// fail fails the coordinator with err, unless it failed already. In this
// order: the failure is recorded, the failed view is published, and only
// then are Err, writers and waiters told (invariant 6).
func (c *Coordinator[W, R, FV, DV, S]) fail(err error) {
	if !c.hub.fail(err, c.emptyReader, c.p.recordFailure) {
		return
	}
	c.p.announceFailure()
	if l := c.logger(); l != nil {
		l.Error("coordinator failed", "err", err)
	}
}

// goexitError is the failure for user code that called runtime.Goexit.
func goexitError(op string) error {
	return &PanicError{Op: op, Value: ErrGoexit, Stack: debug.Stack()}
}

// guard runs f, turning a panic into a *PanicError. If f calls
// runtime.Goexit, which cannot be stopped, guard fails the coordinator
// before the goroutine unwinds; the goroutine's own guard (see run and
// runFlusher) hands its duties to a new goroutine.
func (c *Coordinator[W, R, FV, DV, S]) guard(op string, f func() error) (err error) {
	returned := false
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Op: op, Value: r, Stack: debug.Stack()}
		} else if !returned {
			c.fail(goexitError(op))
		}
	}()
	err = f()
	returned = true
	return err
}

// run is the coordinator goroutine.
func (c *Coordinator[W, R, FV, DV, S]) run() {
	c.supervise("coordinator goroutine", c.runDone, c.loop, c.failedLoop)
}

// supervise runs body on the calling goroutine, then closes done. If user
// code ends the goroutine with runtime.Goexit, which cannot be stopped, the
// coordinator fails (the failure is recorded where it happened, or here if
// it came from elsewhere) and takeover serves the failed state on a new
// goroutine before done is closed.
func (c *Coordinator[W, R, FV, DV, S]) supervise(name string, done chan struct{}, body, takeover func()) {
	returned := false
	defer func() {
		if !returned {
			c.fail(goexitError(name))
			go func() {
				takeover()
				close(done)
			}()
		}
	}()
	body()
	returned = true
	close(done)
}

func (c *Coordinator[W, R, FV, DV, S]) loop() {
	defer c.timer.Stop()
	for {
		if c.p.isFailed() {
			c.failedLoop()
			return
		}
		if c.p.timerFired.Load() {
			c.freeze(FlushInterval)
		}
		worked := c.round()
		c.freezeOnDemand()
		if c.p.attn.Load() > 0 {
			// A Flush caller or Stop is waiting: serve it between turns
			// so that writers cannot starve it.
			select {
			case req := <-c.ctrl:
				c.handleFlush(req)
			case <-c.stopping:
				c.shutdown()
				return
			default:
			}
		}
		if worked {
			continue
		}
		c.p.sleeping.Store(true)
		if c.hasWork() || c.p.timerFired.Load() {
			c.p.sleeping.Store(false)
			continue
		}
		if c.p.attn.Load() == 0 {
			<-c.p.wake
		} else {
			select {
			case <-c.p.wake:
			case req := <-c.ctrl:
				c.handleFlush(req)
			case <-c.stopping:
				c.p.sleeping.Store(false)
				c.shutdown()
				return
			}
		}
		c.p.sleeping.Store(false)
	}
}

// hasWork reports whether an unpaused channel has writes or a waiter's
// demand can be served now.
func (c *Coordinator[W, R, FV, DV, S]) hasWork() bool {
	return !c.ready.empty() || c.activeWork() || c.demandReady() || c.p.isFailed()
}

// demandReady reports whether the live delta should be frozen for a waiter
// or for writers waiting for byte budget: it holds writes and the flusher
// is idle.
func (c *Coordinator[W, R, FV, DV, S]) demandReady() bool {
	return c.next > c.deltaStart && c.p.busy.Load() == 0 &&
		((!c.p.lazy && c.p.freezeDemand()) || c.budgetStarved())
}

// budgetStarved reports whether writers wait for byte budget that only a
// freeze of the live delta can release.
func (c *Coordinator[W, R, FV, DV, S]) budgetStarved() bool {
	return c.budget != nil && c.liveBytes > 0 && c.budget.isStarved()
}

func (c *Coordinator[W, R, FV, DV, S]) freezeOnDemand() {
	if c.demandReady() && !c.p.isFailed() {
		if c.budgetStarved() {
			c.freeze(FlushBudget)
		} else {
			c.freeze(FlushWait)
		}
	}
}

// round gives every active channel one turn, in the order they became
// ready. Channels stay active while they have writes, and for a few rounds
// after (so that a channel its writers keep refilling is not listed and
// delisted on every turn); then they leave the list, and their next write
// lists them again. The cost of a round follows the channels that had work
// lately, not the configured ones.
func (c *Coordinator[W, R, FV, DV, S]) round() bool {
	if !c.ready.empty() {
		c.active = c.ready.take(c.active)
	}
	worked := false
	kept := c.active[:0]
	for _, q := range c.active {
		switch {
		case c.turn(q, false, maxWritesPerTurn) > 0:
			worked = true
			q.idleRounds = 0
		case q.pausedFlag.Load():
			q.idleRounds = idleRoundsToDelist // paused: delist now
		case q.depth.Load() == 0:
			q.idleRounds++
		}
		if q.idleRounds >= idleRoundsToDelist && !c.delist(q) {
			continue
		}
		kept = append(kept, q)
	}
	clear(c.active[len(kept):])
	c.active = kept
	return worked
}

// idleRoundsToDelist is how many rounds in a row a channel is found without
// writes before it leaves the active list.
const idleRoundsToDelist = 16

// delist takes q off the ready list, unless writes arrived meanwhile; it
// reports whether q stays listed. Writers list a channel when they find
// it unlisted, so clearing the mark before looking at depth leaves no
// write behind.
func (c *Coordinator[W, R, FV, DV, S]) delist(q *queue[W, R]) bool {
	q.listed.Store(false)
	q.idleRounds = 0
	if q.depth.Load() > 0 && !q.pausedFlag.Load() && q.listed.CompareAndSwap(false, true) {
		return true
	}
	return false
}

// activeWork reports whether an active channel has writes to apply.
func (c *Coordinator[W, R, FV, DV, S]) activeWork() bool {
	for _, q := range c.active {
		if q.depth.Load() > 0 && !q.pausedFlag.Load() {
			return true
		}
	}
	return false
}

// drain applies every slot accepted before it began on the unpaused
// channels (all channels when ignorePause is set). Slots accepted later
// may be applied too, but do not keep it going, so writers that keep
// writing cannot make it run forever.
func (c *Coordinator[W, R, FV, DV, S]) drain(ignorePause bool) {
	qs := c.queues
	if !ignorePause {
		// Only listed channels have unpaused writes; the others are idle
		// or paused.
		if !c.ready.empty() {
			c.active = c.ready.take(c.active)
		}
		qs = c.active
	}
	for _, q := range qs {
		want := q.acceptedSlots()
		for q.slotsApplied < want && c.turn(q, ignorePause, 0) > 0 {
		}
	}
}

// turn applies up to limit slots (0: no limit) of q and returns how many it
// applied. It freezes the delta when it reaches FlushSize.
func (c *Coordinator[W, R, FV, DV, S]) turn(q *queue[W, R], ignorePause bool, limit int) int {
	if q.heldPos >= len(q.held) && q.depth.Load() == 0 || c.p.isFailed() {
		return 0
	}
	q.applyMu.Lock()
	if !q.take(ignorePause) {
		q.applyMu.Unlock()
		return 0
	}
	t := applyTurn[W, R]{q: q, first: c.next}
	if c.timed {
		t.start = time.Now()
	}
	c.rejected, c.turnWrites = 0, 0
	lo, hi := q.heldPos, len(q.held)
	if limit > 0 && hi-lo > limit {
		hi = lo + limit
	}
	t.ops = q.held[lo:hi]
	full := c.applyOps(&t)
	c.endTurn(&t)
	if t.panicErr == nil && full {
		c.freeze(FlushSize)
	}
	return t.n
}

// applyTurn is one turn's progress, kept outside applyOps's frame so that
// the turn can be finished even when user code ends the goroutine.
type applyTurn[W, R any] struct {
	q        *queue[W, R]
	ops      []op[W, R]
	n        int    // ops consumed, including one that panicked
	first    uint64 // the first epoch of the turn
	start    time.Time
	panicErr error
}

// applyOps applies t.ops in order until they are done or the delta reaches
// FlushSize, and reports the latter. It records in t how many ops it
// consumed and the panic, if any. Handles get their results but are not
// completed. If Apply calls runtime.Goexit, applyOps finishes the turn
// itself before the goroutine unwinds.
func (c *Coordinator[W, R, FV, DV, S]) applyOps(t *applyTurn[W, R]) (full bool) {
	returned := false
	defer func() {
		if returned {
			return
		}
		r := recover()
		var err error
		if r != nil {
			err = &PanicError{Op: "Apply", Value: r, Stack: debug.Stack()}
		} else {
			err = goexitError("Apply")
		}
		t.panicErr = err
		o := &t.ops[t.n]
		if o.bh != nil {
			o.bh.epochs.End = c.next
			o.bh.err = err
		} else {
			o.h.epoch, o.h.err = c.next-1, err
		}
		t.n++
		if r == nil {
			c.endTurn(t) // Goexit: nothing after this frame will run
		}
	}()
	limit := c.cfg.FlushSize
	ops := t.ops
	for ; t.n < len(ops); t.n++ {
		o := &ops[t.n]
		// Account for the slot as it is consumed, before Apply can panic.
		c.turnWrites += o.writes()
		c.liveBytes += o.bytes // 0 without a byte budget
		if o.bh == nil {
			e := c.next
			c.next++
			r, err := c.eng.apply(o.write)
			o.h.epoch, o.h.result = e, r
			if err != nil {
				o.h.err = &ApplyError{Epoch: e, Err: err}
				c.rejected++
			}
		} else {
			bh := o.bh
			bh.results = make([]Result[R], len(o.batch))
			bh.epochs = EpochRange{Start: c.next, End: c.next}
			for i, w := range o.batch {
				e := c.next
				c.next++
				bh.epochs.End = c.next
				r, err := c.eng.apply(w)
				bh.results[i] = Result[R]{Epoch: e, Value: r}
				if err != nil {
					bh.results[i].Err = &ApplyError{Epoch: e, Err: err}
					c.rejected++
				}
			}
		}
		if c.lastSize = c.eng.size(); c.lastSize >= limit {
			t.n++
			returned = true
			return true
		}
	}
	returned = true
	return false
}

// endTurn publishes what a turn applied: it releases the channel, advances
// the applied watermark, fails the coordinator if user code panicked, and
// only then completes the handles (invariant 3).
func (c *Coordinator[W, R, FV, DV, S]) endTurn(t *applyTurn[W, R]) {
	q, n := t.q, t.n
	q.heldPos += n
	writes := int(c.next - t.first)
	q.depth.Add(-int64(c.turnWrites))
	q.applyMu.Unlock()

	if c.next > t.first {
		c.p.marks.applied.advance(c.next - 1)
	}
	if t.panicErr != nil {
		c.fail(t.panicErr)
	}
	ops := t.ops[:n]
	for i := range ops {
		if o := &ops[i]; o.bh != nil {
			o.bh.done.complete()
		} else {
			o.h.done.complete()
		}
	}
	// Drop the references to applied writes now, so an idle channel does
	// not keep them (and their handles) alive beyond the byte budget.
	clear(ops)
	q.slotsApplied += uint64(n)
	q.releaseSlots()
	q.applied.Add(uint64(writes))
	if c.rejected > 0 {
		q.applyErrors.Add(uint64(c.rejected))
	}
	if c.timed {
		d := time.Since(t.start)
		c.stats.apply.observe(d)
		c.cfg.Observer.Applied(q.name, writes, d)
	} else {
		c.stats.apply.count.Add(1)
	}
	if t.panicErr == nil {
		c.stats.deltaBytes.Store(int64(c.lastSize))
	}
}

// freeze freezes the live delta, if it holds any write, publishes the view
// and hands the frozen delta to the flusher, waiting for room in the flush
// queue. It resets the flush interval either way.
func (c *Coordinator[W, R, FV, DV, S]) freeze(reason FlushReason) {
	defer func() {
		c.p.timerFired.Store(false)
		c.timer.Reset(c.cfg.FlushInterval)
	}()
	if c.next == c.deltaStart || c.p.isFailed() {
		return
	}
	epochs := EpochRange{Start: c.deltaStart, End: c.next}
	start := time.Now()
	var (
		flush   flushFunc[S]
		fv      FV
		current DV
		bytes   int
	)
	err := c.guard("Freeze", func() error {
		bytes = c.eng.size()
		flush, fv = c.eng.freeze()
		current = c.eng.reader()
		return nil
	})
	if err != nil {
		c.fail(err)
		return
	}
	c.deltaStart = c.next
	c.hub.freeze(FrozenDelta[FV]{View: fv, Epochs: epochs}, current)
	c.p.frozenThrough.Store(epochs.Last())
	c.lastSize = 0
	c.stats.deltaBytes.Store(0)
	d := time.Since(start)
	c.stats.freeze.observe(d)
	c.stats.flushes[reason].Add(1)
	c.cfg.Observer.Frozen(reason, epochs, bytes, d)

	c.p.busy.Add(1)
	job := &flushJob[S]{epochs: epochs, reason: reason, bytes: bytes, reserved: c.liveBytes, flush: flush}
	c.liveBytes = 0
	if c.budget != nil {
		c.budget.starved.Store(false)
	}
	start = time.Now()
	select {
	case c.flushQ <- job:
	default:
		// The pipeline is full: this is where backpressure starts.
		c.flushQ <- job
	}
	wait := time.Since(start)
	c.stats.dispatch.observe(wait)
	c.cfg.Observer.Dispatched(epochs, wait)
}

// handleFlush serves req together with every other Flush request already
// waiting to be taken: one drain and one freeze cover them all, so that
// concurrent flushes share a delta, and Durable ones the sync after it.
func (c *Coordinator[W, R, FV, DV, S]) handleFlush(req flushReq) {
	reqs := append(c.flushReqs[:0], req)
	for more := true; more; {
		select {
		case r := <-c.ctrl:
			reqs = append(reqs, r)
		default:
			more = false
		}
	}
	c.drain(false)
	c.freeze(FlushExplicit)
	reply := flushReply{epoch: c.next - 1}
	if err := c.p.err(); err != nil {
		reply = flushReply{err: err}
	}
	for _, r := range reqs {
		r.reply <- reply
	}
	clear(reqs)
	c.flushReqs = reqs[:0]
}

// shutdown applies everything accepted, freezes it and closes the flush
// queue. The queues were closed by Stop, so draining ends.
func (c *Coordinator[W, R, FV, DV, S]) shutdown() {
	for !c.p.isFailed() {
		before := c.next
		c.drain(true)
		if c.next == before && c.queuesEmpty() {
			break
		}
	}
	c.freeze(FlushShutdown)
	if err := c.p.err(); err != nil {
		c.dropAll(err)
	}
	close(c.flushQ)
}

func (c *Coordinator[W, R, FV, DV, S]) queuesEmpty() bool {
	for _, q := range c.queues {
		if q.depth.Load() > 0 {
			return false
		}
	}
	return true
}

// dropAll refuses every later write, fails every accepted write that was
// not applied, and fails the applied watermark: nothing more will be
// applied. Called by the coordinator goroutine after a failure.
func (c *Coordinator[W, R, FV, DV, S]) dropAll(err error) {
	refused := fmt.Errorf("coordinator: write not accepted: %w", err)
	dropped := fmt.Errorf("coordinator: write not applied: %w", err)
	for _, q := range c.queues {
		q.applyMu.Lock()
		q.close(refused, dropped)
		q.applyMu.Unlock()
	}
	c.p.marks.applied.fail(err)
}

// failedLoop runs after a failure: it fails every queued write and answers
// requests with the failure until Stop.
func (c *Coordinator[W, R, FV, DV, S]) failedLoop() {
	err := c.p.failErr
	c.dropAll(err)
	if c.budget != nil {
		c.budget.release(c.liveBytes) // the live delta is lost with the failure
		c.liveBytes = 0
	}
	for {
		select {
		case req := <-c.ctrl:
			req.reply <- flushReply{err: err}
		case <-c.stopping:
			close(c.flushQ)
			return
		}
	}
}

// runFlusher is the flusher goroutine.
func (c *Coordinator[W, R, FV, DV, S]) runFlusher() {
	c.supervise("flusher goroutine", c.flushDone, c.flushLoop, c.discardFlushes)
}

// discardFlushes takes the frozen deltas of a failed coordinator until the
// flush queue is closed, releasing what they hold.
func (c *Coordinator[W, R, FV, DV, S]) discardFlushes() {
	for job := range c.flushQ {
		c.flushDelta(job) // returns at once: the coordinator failed
	}
}

func (c *Coordinator[W, R, FV, DV, S]) flushLoop() {
	for {
		select {
		case job, ok := <-c.flushQ:
			if !ok {
				c.finalSync()
				return
			}
			c.flushDelta(job)
		case <-c.p.kick:
		}
		// Write what is already queued before syncing, so the sync covers
		// it. The queue is bounded, so a sync waits at most that long.
		for n := len(c.flushQ); n > 0; n-- {
			job, ok := <-c.flushQ
			if !ok {
				c.finalSync()
				return
			}
			c.flushDelta(job)
		}
		c.maybeSync()
		if c.p.busy.Load() == 0 {
			c.p.wakeCoordinator()
		}
	}
}

// finalSync is Stop's last FlushStorage, unless the coordinator failed.
func (c *Coordinator[W, R, FV, DV, S]) finalSync() {
	if !c.p.isFailed() {
		c.sync()
	}
}

// flushDelta writes one frozen delta, publishes the view, then advances the
// written watermark (invariant 3).
func (c *Coordinator[W, R, FV, DV, S]) flushDelta(job *flushJob[S]) {
	defer c.p.busy.Add(-1)
	if c.budget != nil {
		defer c.budget.release(job.reserved)
	}
	if c.p.isFailed() {
		return // lost with the failure; its waiters were failed already
	}
	var snap S
	attempts, d, err := c.call("FlushDelta", job.epochs, func(ctx context.Context) error {
		var err error
		snap, err = job.flush(ctx, job.epochs)
		return err
	})
	c.stats.flushDelta.observe(d)
	info := FlushInfo{Reason: job.reason, Epochs: job.epochs, Bytes: job.bytes, Duration: d, Attempts: attempts}
	if err != nil {
		fe := &FlushError{Op: "FlushDelta", Epochs: job.epochs, Attempts: attempts, Err: err}
		info.Err = fe
		c.cfg.Observer.Flushed(info)
		c.fail(fe)
		return
	}
	c.hub.written(job.epochs, snap, func() { c.p.marks.written.advance(job.epochs.Last()) })
	c.cfg.Observer.Flushed(info)
}

// maybeSync calls FlushStorage if the policy or a waiter asks for it. It
// runs after every batch of deltas the flusher writes, and a Durable waiter
// whose epoch is written is reason enough: however many deltas keep
// coming, a sync waits for at most one batch (MaxPendingFlushes+1 deltas)
// after its waiter's delta is written.
func (c *Coordinator[W, R, FV, DV, S]) maybeSync() {
	if c.p.isFailed() {
		return
	}
	forced := c.p.syncReq.Load() > c.p.syncDone.Load()
	always := c.cfg.Sync == SyncAlways && c.p.marks.written.Load() > c.p.marks.durable.Load()
	if forced || always || c.p.syncDemand() {
		c.sync()
	}
}

// sync calls FlushStorage and advances the durable watermark to what was
// written before it started.
func (c *Coordinator[W, R, FV, DV, S]) sync() {
	c.p.busy.Add(busySync)
	defer c.p.busy.Add(-busySync)
	req := c.p.syncReq.Load()
	written, durable := c.p.marks.written.Load(), c.p.marks.durable.Load()
	epochs := EpochRange{Start: durable + 1, End: written + 1}
	attempts, d, err := c.call("FlushStorage", epochs, c.syncFn)
	c.stats.flushStorage.observe(d)
	info := SyncInfo{Durable: written, Duration: d, Attempts: attempts}
	if err != nil {
		fe := &FlushError{Op: "FlushStorage", Epochs: epochs, Attempts: attempts, Err: err}
		info.Err = fe
		c.cfg.Observer.Synced(info)
		c.fail(fe)
		return
	}
	c.stats.syncs.Add(1)
	c.hub.unlessFailed(func() {
		c.p.marks.durable.advance(written)
		c.p.syncDone.advance(req)
	})
	c.cfg.Observer.Synced(info)
}

// call runs a flusher method with panic recovery, slow-call reporting and
// the retry policy. It returns the attempts made and the total time.
func (c *Coordinator[W, R, FV, DV, S]) call(op string, epochs EpochRange, f func(context.Context) error) (int, time.Duration, error) {
	start := time.Now()
	if c.cfg.SlowFlushThreshold > 0 {
		t := time.AfterFunc(c.cfg.SlowFlushThreshold, func() {
			c.stats.slowFlushes.Add(1)
			c.cfg.Observer.SlowFlush(op, epochs, time.Since(start))
			if l := c.logger(); l != nil {
				l.Warn("coordinator: slow flush", "op", op, "epochs", epochs.String(), "running", time.Since(start))
			}
		})
		defer t.Stop()
	}
	backoff := c.cfg.Retry.Backoff
	for attempt := 1; ; attempt++ {
		err := c.guard(op, func() error { return f(c.flushCtx) })
		if err == nil {
			return attempt, time.Since(start), nil
		}
		var pe *PanicError
		retry := attempt < c.cfg.Retry.Attempts && !errors.As(err, &pe) && c.flushCtx.Err() == nil &&
			(c.cfg.Retry.Retryable == nil || c.cfg.Retry.Retryable(err))
		if !retry {
			return attempt, time.Since(start), err
		}
		c.stats.retries.Add(1)
		if l := c.logger(); l != nil {
			l.Warn("coordinator: flusher call failed, retrying", "op", op, "epochs", epochs.String(),
				"attempt", attempt, "backoff", backoff, "err", err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-c.flushCtx.Done():
			t.Stop()
			return attempt, time.Since(start), err
		}
		backoff = min(2*backoff, c.cfg.Retry.MaxBackoff)
	}
}

// finish waits for both goroutines and settles what is left.
func (c *Coordinator[W, R, FV, DV, S]) finish() {
	<-c.runDone
	<-c.flushDone
	c.stopErr = c.p.err()
	// Whatever was not reached now never will be.
	c.p.marks.fail(ErrClosed)
	c.p.syncDone.fail(ErrClosed)
	c.hub.close()
	c.cancelFlush()
	if l := c.logger(); l != nil {
		l.Info("coordinator stopped", "watermarks", fmt.Sprintf("%+v", c.Watermarks()), "err", c.stopErr)
	}
	close(c.done)
}
