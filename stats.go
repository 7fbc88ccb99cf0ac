package coordinator

import (
	"fmt"
	"iter"
	"sync/atomic"
	"time"
)

// FlushReason says why a delta was frozen and flushed.
type FlushReason uint8

const (
	FlushSize     FlushReason = iota // the delta reached [Config.FlushSize]
	FlushInterval                    // [Config.FlushInterval] passed without a flush
	FlushExplicit                    // [Coordinator.Flush] was called
	FlushWait                        // a goroutine waits for Written or Durable
	FlushShutdown                    // [Coordinator.Stop]
	FlushBudget                      // writers wait for [Config.MaxBytes] budget
	numFlushReasons
)

// String returns the reason's metric label: "size", "interval", ...
func (r FlushReason) String() string {
	switch r {
	case FlushSize:
		return "size"
	case FlushInterval:
		return "interval"
	case FlushExplicit:
		return "explicit"
	case FlushWait:
		return "wait"
	case FlushShutdown:
		return "shutdown"
	case FlushBudget:
		return "budget"
	}
	return "unknown"
}

// FlushCounts counts frozen deltas by [FlushReason], one field per reason.
// It is a plain value: the zero value is valid and it may be copied. Read a
// field by name (s.Flushes.Wait), by reason ([FlushCounts.Of]), or all of
// them in reason order ([FlushCounts.All]); it prints as
// "size=0 interval=0 explicit=0 wait=29 shutdown=0 budget=0".
type FlushCounts struct {
	Size     uint64 // [FlushSize]
	Interval uint64 // [FlushInterval]
	Explicit uint64 // [FlushExplicit]
	Wait     uint64 // [FlushWait]
	Shutdown uint64 // [FlushShutdown]
	Budget   uint64 // [FlushBudget]
}

// field returns the counter of reason r, or nil for an unknown reason.
func (n *FlushCounts) field(r FlushReason) *uint64 {
	switch r {
	case FlushSize:
		return &n.Size
	case FlushInterval:
		return &n.Interval
	case FlushExplicit:
		return &n.Explicit
	case FlushWait:
		return &n.Wait
	case FlushShutdown:
		return &n.Shutdown
	case FlushBudget:
		return &n.Budget
	}
	return nil
}

// Of returns the count of reason r; 0 for a reason it does not know.
func (n FlushCounts) Of(r FlushReason) uint64 {
	if p := n.field(r); p != nil {
		return *p
	}
	return 0
}

// All yields every reason and its count, in the order of the FlushReason
// constants (size, interval, explicit, wait, shutdown, budget), zero counts
// included: a metrics exporter labels each count with the reason's String.
func (n FlushCounts) All() iter.Seq2[FlushReason, uint64] {
	return func(yield func(FlushReason, uint64) bool) {
		for r := range numFlushReasons {
			if !yield(r, n.Of(r)) {
				return
			}
		}
	}
}

// Total returns the number of frozen deltas, whatever the reason.
func (n FlushCounts) Total() uint64 {
	var t uint64
	for _, c := range n.All() {
		t += c
	}
	return t
}

// String returns the counts labelled by reason, in reason order:
// "size=0 interval=0 explicit=0 wait=29 shutdown=0 budget=0".
func (n FlushCounts) String() string {
	b := make([]byte, 0, 64)
	for r, c := range n.All() {
		if len(b) > 0 {
			b = append(b, ' ')
		}
		b = fmt.Appendf(b, "%s=%d", r, c)
	}
	return string(b)
}

// Timing accumulates durations of one kind of operation.
type Timing struct {
	Count uint64
	Total time.Duration
	Max   time.Duration
}

type timing struct {
	count, total, max atomic.Int64
}

func (t *timing) observe(d time.Duration) {
	t.count.Add(1)
	t.total.Add(int64(d))
	for {
		m := t.max.Load()
		if int64(d) <= m || t.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

func (t *timing) load() Timing {
	return Timing{Count: uint64(t.count.Load()), Total: time.Duration(t.total.Load()), Max: time.Duration(t.max.Load())}
}

// ChannelStats describes one input channel.
type ChannelStats struct {
	Name   string
	Depth  int  // writes accepted and not yet applied
	Paused bool // whether the channel is paused
	// Accepted counts queue slots accepted (a batch is one slot).
	Accepted uint64
	// Rejected counts writes refused, by reason: queue full or byte
	// budget exhausted (TryWrite), context done while waiting for room
	// (Write), closed or failed.
	RejectedFull, RejectedBudget, RejectedCanceled, RejectedClosed uint64
	// Applied counts writes applied (each write of a batch counts);
	// ApplyErrors counts those Apply rejected.
	Applied, ApplyErrors uint64
}

// Stats is a point-in-time snapshot of the coordinator's counters, for
// metrics exporters and debugging. Counters only grow; durations are
// measured per batch, not per write.
type Stats struct {
	Watermarks Watermarks
	Channels   []ChannelStats
	// DeltaBytes is the live delta's EstimateSize after the last batch.
	DeltaBytes int
	// BudgetBytes is the byte budget currently held by writes, out of
	// BudgetMax ([Config.MaxBytes]); both are 0 without a budget.
	BudgetBytes, BudgetMax int64
	// PendingFlushes is the number of frozen deltas queued for or being
	// processed by the flusher.
	PendingFlushes int
	// Syncing reports whether FlushStorage is running.
	Syncing bool
	// Flushes counts frozen deltas by reason.
	Flushes FlushCounts
	// Syncs counts completed FlushStorage calls.
	Syncs uint64
	// Retries counts flusher calls that failed and were retried.
	Retries uint64
	// SlowFlushes counts FlushDelta and FlushStorage calls that took
	// longer than [Config.SlowFlushThreshold].
	SlowFlushes uint64
	// Apply counts the batches of writes applied in one turn each; their
	// durations (Total, Max) are measured only when [Config.Observer] is
	// set.
	Apply Timing
	// Freeze times Delta.Freeze plus creating the next delta.
	Freeze Timing
	// Dispatch times how long the coordinator waited to hand a frozen
	// delta to the flusher (the pipeline's backpressure).
	Dispatch Timing
	// FlushDelta and FlushStorage time the flusher's calls.
	FlushDelta, FlushStorage Timing
	// Err is the failure, if the coordinator has failed.
	Err error
}

// FlushInfo describes one frozen delta's trip through the flusher.
type FlushInfo struct {
	Reason   FlushReason
	Epochs   EpochRange
	Bytes    int           // EstimateSize of the delta when frozen
	Duration time.Duration // time spent in FlushDelta, retries included
	Attempts int
	Err      error
}

// SyncInfo describes one FlushStorage call.
type SyncInfo struct {
	Durable  uint64 // the durable watermark it established
	Duration time.Duration
	Attempts int
	Err      error
}

// Observer receives events from the coordinator, for metrics and tracing.
// Methods are called synchronously from the coordinator's goroutines and
// must be fast and must not call back into the coordinator. Embed
// [NopObserver] to implement only some methods.
type Observer interface {
	// Applied is called after each batch of writes applied in one turn.
	Applied(channel string, writes int, d time.Duration)
	// Frozen is called when a delta is frozen, before it is handed to the
	// flusher.
	Frozen(reason FlushReason, epochs EpochRange, bytes int, d time.Duration)
	// Dispatched is called when a frozen delta was handed to the flusher,
	// with how long the coordinator waited for room in the flush queue
	// (the pipeline's backpressure).
	Dispatched(epochs EpochRange, wait time.Duration)
	// Flushed is called when FlushDelta finished (or finally failed).
	Flushed(FlushInfo)
	// Synced is called when FlushStorage finished (or finally failed).
	Synced(SyncInfo)
	// SlowFlush is called while a flusher call has been running longer
	// than [Config.SlowFlushThreshold]; op is "FlushDelta" or
	// "FlushStorage".
	SlowFlush(op string, epochs EpochRange, running time.Duration)
}

// NopObserver implements [Observer] and ignores every event.
type NopObserver struct{}

// Applied implements [Observer].
func (NopObserver) Applied(string, int, time.Duration) {}

// Frozen implements [Observer].
func (NopObserver) Frozen(FlushReason, EpochRange, int, time.Duration) {}

// Dispatched implements [Observer].
func (NopObserver) Dispatched(EpochRange, time.Duration) {}

// Flushed implements [Observer].
func (NopObserver) Flushed(FlushInfo) {}

// Synced implements [Observer].
func (NopObserver) Synced(SyncInfo) {}

// SlowFlush implements [Observer].
func (NopObserver) SlowFlush(string, EpochRange, time.Duration) {}

// flushCounts loads the per-reason counters. Each is read atomically; the
// set is not one atomic snapshot, as with every counter in Stats.
func (s *stats) flushCounts() FlushCounts {
	var n FlushCounts
	for r := range numFlushReasons {
		*n.field(r) = s.flushes[r].Load()
	}
	return n
}

type stats struct {
	deltaBytes                                        atomic.Int64
	flushes                                           [numFlushReasons]atomic.Uint64
	syncs                                             atomic.Uint64
	retries                                           atomic.Uint64
	slowFlushes                                       atomic.Uint64
	apply, freeze, dispatch, flushDelta, flushStorage timing
}
