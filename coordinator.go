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
//
// # When New does not compile
//
// New infers its type parameters from its arguments, so when two arguments
// disagree the compiler reports a mismatch against a type it inferred from
// another argument, not against the argument that is wrong. The common
// messages (Go 1.26), for a Delta *Delta whose Freeze returns (Frozen,
// Frozen, int), and a flusher *Store whose FlushDelta returns *Snap:
//
// A flusher with pointer-receiver methods passed by value:
//
//	in call to coordinator.New, type Store of Store{} does not match inferred type coordinator.Flusher[F, *Snap] for coordinator.Flusher[F, S]
//
// Pass a pointer: &Store{}.
//
// A snapshot of another type than FlushDelta returns: the snapshot
// argument decides S, and the flusher is blamed for not matching it.
//
//	in call to coordinator.New, type *Store of &Store{} does not match inferred type coordinator.Flusher[Frozen, Snap] for coordinator.Flusher[F, S]
//
// Pass the type FlushDelta returns (&Snap{} here, not Snap{}); the same
// message with map[string]string in place of Snap means a map was passed.
//
// A newDelta that returns the delta by value while its methods have pointer
// receivers:
//
//	in call to coordinator.New, D (type Delta) does not satisfy coordinator.Delta[W, R, C, F, FV, DV] (method Apply has pointer receiver)
//
// Return a pointer: func NewDelta(int) *Delta.
//
// Freeze's first result is not exactly the type FlushDelta takes (here
// FlushDelta takes map[string]string and Freeze returns Frozen, a named map
// type): the Delta is blamed.
//
//	in call to coordinator.New, D (type *Delta) does not satisfy coordinator.Delta[W, R, C, F, FV, DV] (wrong type for method Freeze)
//		have Freeze() (Frozen, Frozen, int)
//		want Freeze() (F, FV, C)
//
// Use one type on both sides. The same "wrong type for method" message
// names any method whose signature differs from [Delta]'s, such as an
// EstimateSize returning int64.
//
// An initial context of another type than newDelta's parameter:
//
//	in call to coordinator.New, type int64 of version does not match inferred type int for C
//
// Convert it (int(version)); an untyped constant of the wrong kind reads
// instead: cannot use "v1" (untyped string constant) as int value in
// argument to coordinator.New.
//
// A newDelta that takes no context:
//
//	in call to coordinator.New, type func() *Delta of NewDelta does not match func(C) D (cannot infer D, W, R, C, F, FV, DV, and S)
//
// newDelta takes exactly one argument; use struct{} when nothing is carried
// from one delta to the next.
//
// To have the compiler name the culprit directly, assert each
// implementation on its own, with the types you mean:
//
//	var _ coordinator.Delta[Put, struct{}, int, Frozen, Frozen, map[string]string] = (*Delta)(nil)
//	var _ coordinator.Flusher[Frozen, *Snap] = (*Store)(nil)
//
// Asserting Store{}, a flusher by value, then reports: Store does not
// implement coordinator.Flusher[Frozen, *Snap] (method FlushDelta has
// pointer receiver).
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
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
// The source follows the owners: coordinator_loop.go is the coordinator
// goroutine (it alone owns the live delta and the epoch counter),
// flusher_loop.go the flusher goroutine, pipeline.go the state they share
// through atomics, pausable.go and budget.go the writers' side of the
// queues, watermarks.go and handle.go the waiters' side, view.go and
// subscriber.go the readers' side, and config.go the configuration.
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
//     idle (or by size) — after the coordinator gathered the writers
//     ready to join it, which takes at most one yield without a new write
//     and never longer than the last sync —, reaches the flusher behind at most
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
// Group formation: the writers a sync wakes are the next group's best
// members, since a writer that waits for Durable usually writes again at
// once; but the coordinator, woken last by the flusher, would run before
// them and freeze only what arrived during the sync. The writers then
// split into two cohorts that alternate, each synced every other time
// (with 256 writers and a simulated 1 ms sync: 131 writes per sync). With
// one processor it was worse still once waits parked once: each group held
// the one writer that ran, while the woken ones waited in the run queue
// behind the coordinator and the flusher (1.3 writes per sync with 16
// writers). So before a freeze for a waiter the coordinator yields and
// applies what the yield let in, and yields again while the writers the
// flusher woke (counted in pipeline.returning) have not all written again
// and each yield brings some (gatherReturning): about 200 writes per sync
// in the same setting (1.35× the ideal group fsync's throughput, against
// 0.89× before), and 15.5 instead of 8 with 16 writers (one processor or
// two), where a write's latency drops from two syncs to one; see the
// README's Performance section for the whole curve. Gathering stops
// after as long as the last sync took: with N writers each needing c of
// CPU per write and a sync of S, full groups cycle in S+N·c and
// alternating cohorts in max(S, N·c/2) (their work overlaps the other's
// sync), so gathering pays only while N·c < S. A freeze for size,
// interval, Flush, byte budget or Stop does not wait. The flusher wakes a
// group one waiter at a time, which takes tens of microseconds for a few
// hundred; it does so after releasing the watermark's lock and the view
// hub's (watermark.raise), because the coordinator needs the first to list
// the returning writers' waits and the second to publish the next freeze
// (traces at 256 writers: the gap between syncs 320–352 → 251–313 µs; an
// interleaved throughput comparison, three rounds with a 1 ms simulated
// sync, measured 0.96× at 256 writers and 0.97× at 4,096, within the
// rounds' spread). When a sync satisfies every waiter, as group commit
// does, they are unlisted at once instead of popped one by one from both
// heaps (1.08× at 4,096 writers, 1.03× at 256). The waiters then moved from
// two container/heap heaps (a min-heap and a max-heap, each with its index
// in every waiter) to one array of (epoch, waiter) kept as a min-heap, the
// largest epoch kept as a value: the coordinator lists each waiter it
// moves off a handle in epoch order, which the max-heap sifted to its root
// every time, and at 4,096 writers listing and raising fell from 11–12% of
// the CPU profile to 4% (watermark).
//
// Hand-offs without sleeping: after a round that applied writes, and did
// not freeze for their waiters, the coordinator yields up to four times
// before it sleeps (spinForWork): writers waiting for Applied write again
// within microseconds, often on the same processor, and a sleep made each
// round trip pay a sleep and a wake-up on both sides (one writer: -18%
// ns/op, p99 -39%, interleaved rounds). A yield is cheap only while
// nothing else wants the processor: it puts the goroutine behind every
// runnable one, each running up to a 10 ms time slice, where a goroutine
// that blocks and is woken runs next. With four goroutines that never
// block beside one writer (BenchmarkBusy), a round trip to Applied took
// 35–40 ms, spent in the waiter's yields. So one spell of yields in 4 is
// timed (the clock costs ~30 ns), and a spell that took more than 1 ms plus
// 20 µs per write it brought sets pipeline.yieldsSlow: waiters then park
// at once, the coordinator sleeps without spinning and freezes without
// gathering, and it probes now and then (1 ms after, then twice as long
// each time a probe finds yields still slow, up to 1 s) whether they are
// fast again (probeYields). The same round trip then takes 5.0–7.1 µs on
// average, learning included, with a p50 of 0.8–0.9 µs and a p99 of
// 1.7–1.9 µs (a channel hand-off with an acknowledgement: 1.7–1.8 µs,
// p99 1.2–1.3 µs; three runs).
//
// Parking: a waiter blocks on a channel of its own (buffer of 1, one
// signal per listing) and, with a context that can be canceled, selects
// on its Done as well. It used to wait on a sync.Cond and register a
// context.AfterFunc to broadcast on cancellation, which cost three
// allocations per parked wait and, with one context shared by thousands of
// writers, contention on that context's lock: 4,096 durable writers took
// 1.78 µs per write with a context each and 2.10 µs sharing one, against
// 1.32 µs with Background; now 1.46, 1.59 and 1.31 µs (four interleaved
// rounds, 1 ms simulated sync). Since a channel belongs to the synctest
// bubble it was made in, waiters are recycled per coordinator
// (waiterPool), never process-wide. A sync that satisfies a group
// unlists it as a prefix of the waiters' array while every listing came
// in epoch order, as the coordinator's moves off handles do, instead of
// popping each through the heap (4,096 writers: p50 -6.9%).
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
// so it parks once, while the coordinator froze as soon as it saw demand
// (measured: no gain at 256 writers, 28% slower at 16, because the demand
// arrives before other writers' writes and splits the group; with group
// formation gathering the returning writers, it is kept: see
// completion.completeAt; alone it measured 0.99–1.04×, and it is what lets
// such a wait park without yielding first, +16% at 16 writers and +28% at
// 256 with a 1 ms simulated sync); a wait for Written or Durable parking without
// yielding first while it still parked twice (-simsync=1ms, 256 writers:
// 171–173 writes per sync against 184–192; kept once it parks once, where
// it gives 201–212 against 174–178); waking a large group as a tree, each
// woken waiter waking half of what its waker had left, so the flusher is
// free after O(log n) wake-ups (-simsync=1ms, three interleaved rounds:
// 0.96× at 256 writers, 0.91–1.22× at 4,096, with fewer writes per sync:
// 202 against 207, and 2,441 against 3,747); bounding the gathering by
// the last sync's duration counted from that sync's end rather than from
// the start of gathering, so that the time spent waking the group counts
// (no change: 0.99× at 256 writers, 1.03× at 4,096; with thousands of
// writers the group forms while the flusher is still waking the last one);
// ending the sync's busy count before waking its group, so that the
// coordinator can freeze the next group while the flusher wakes this one
// (three rounds, 1 ms simulated sync: 1.00× at 16 writers, 1.02× at 256,
// 0.98× at 4,096, where groups shrank from 3,928 to 2,845 writes without
// gaining throughput); splitting large groups into cohorts on purpose,
// by waking a group from a goroutine of its own so that the flusher can
// take the next group at once, and by freezing without gathering when the
// returning writers would take longer than a sync to come back (two
// runs, 1 ms simulated sync: 256 / 1,024 / 4,096 writers at 0.63–0.96× /
// 0.70–1.01× / 0.85–0.99× the throughput of gathering whole groups;
// between syncs the pipeline is CPU-bound, so overlapping a sync saves
// less than the smaller groups cost); polling for work before
// sleeping without yielding (the writer just completed often runs on the
// coordinator's processor, which the poll holds: a round trip took
// 2.4–7.7 µs instead of 1.0); and moving a channel's depth counter onto
// the cache line writers lock, since the coordinator's atomic decrement
// after applying was the hottest line of a one-writer round trip (no
// change, p=0.94: the decrement waits for the map insert's stores to
// drain, not for the line); leaving a recycled waiter's links as they are
// rather than clearing them, so that the waiter's cache line stays with
// the signaller that wrote it last (4,096 and 1,024 durable writers:
// +2.7% and +2.2% ns/op, p ≥ 0.13); moving a turn's waiters onto their
// watermark under one hold of its lock, up to 64 at a time, instead of
// locking, counting and publishing the bounds once per waiter (-simsync=1ms,
// two runs of six interleaved rounds: 16 writers -1.3%, p=0.002; 256
// -0.7% and -1.8%; 4,096 -2.4% and -2.6%, p ≥ 0.065; not worth a
// coordinator that holds a watermark's lock while it takes completions');
// eight yields instead of four before a waiter for Applied parks (six
// interleaved rounds: one writer 1.134 against 1.131 µs, p99 5.2 against
// 5.0 µs, p ≥ 0.8); taking the depth counter's atomic out of the writers'
// critical section, probed by moving it (and the listing) after the
// unlock, which is unsafe but shows the most it could save (1,024 and
// 4,096 durable writers: -2.1% and -1.2%, p ≥ 0.17): not worth changing
// the listing protocol; and freezing without gathering
// whenever more than 1,000 writers are returning, so that two cohorts
// alternate the way the ideal group fsync's do (one processor or two:
// 4,096 writers 1,226–1,231 / 1,130–1,179 ns per write against
// 1,156–1,244 / 1,090–1,204 gathering, 1,024 writers 2,998–3,002 /
// 3,001–3,079 against 1,908–1,912 / 2,217–2,231). With one processor
// and 4,096 writers, a CPU profile finds the processor idle 20% of the
// time with whole groups (during the sync, when every writer waits for
// it) and the ideal's 4%. Without gathering, though, groups alternated
// between 1 write and all 4,096, not cohorts: a yield puts the
// coordinator behind every runnable writer, so after freezing the first
// write it runs again only once all the others have written. Without
// gathering and without the coordinator's yields before sleeping, real
// cohorts form (1,700–1,900 writes per sync) but the coordinator sleeps
// and is woken for almost every write: 1,428–1,486 / 1,374–1,469 ns per
// write against 1,166–1,248 / 1,156–1,171 with whole groups (one
// processor / two, three runs each, the logging delta). So what is left
// is the CPU per write, not the grouping.
//
// Cohorts once more, with the coordinator out of the writers' way (two
// processors, the logging delta, real fsync, interleaved rounds): a
// coordinator that dozes while the flusher is busy (writes do not wake
// it; a waiter for Applied, a half-full channel or the flusher going idle
// do), and skips gathering when the returning writers would take longer
// to gather, at the last gather's cost per write, than the last sync
// took, forms cohorts of the ideal's size (2,038–2,097 writes per sync at
// 4,096 writers, 551–605 at 1,024) without being woken per write. 4,096
// writers: 941–1,068 against 988–1,108 ns per write with whole groups
// (two rounds); 1,024: 1,372–1,509 against 1,349–1,412 (three). Adding a
// tree wake-up and going straight to sleep after handing a group to the
// flusher cut the time from a sync's end to the next FlushDelta from
// ~210 to ~70 µs at 1,024 writers, but groups shrank to 341–454 writes
// and a write took 1,297–1,468 ns against 1,240–1,291 (three rounds, with
// and without gathering), 1,221–1,412 against 1,090–1,149 at 4,096. Run
// for a fixed 2,000,000 writes at 4,096 writers (three runs alternating
// with the ideal, /usr/bin/time), the coordinator's pipeline used
// 3.14–3.17 s of CPU and the ideal 2.45–2.67 s (0.81×, median of the
// per-run ratios; each includes the benchmark's own setup and its sort of
// the latencies, ~0.15 s), while their throughputs were 937–968 and 735–768 ns
// per write (0.79×), both keeping 125–142% of the two processors busy:
// throughput follows CPU per write. Of the ~0.35 µs per write (CPU
// profiles of the same runs), the writers take 0.32 (writing 0.215 µs
// against the ideal's append at 0.05, the handle's allocation 0.055 of
// it; waiting 0.34 against the ideal's channel receive at 0.195: reading
// the handle after the wake-up, the pooled waiter), the coordinator
// goroutine 0.09, and the flusher 0.065 less than the ideal's goroutine
// (half as many syncs). Also dropped:
// a WriteAndWait that recycles its handle, with a waiter of its own (no
// allocation per write; 4,096 writers 1,133–1,236 against 1,081–1,155 ns,
// four rounds: a recycled handle's lines are colder than a new one's);
// the signaller clearing a woken waiter's links so that the woken writer
// does not write them (six rounds: -0.3%, p ≥ 0.29); counting the
// returning writers before waking them instead of after the pass, which
// makes the count exact (after the pass, a write applied during the
// wake-up is taken off before it was added, and with 4,096 writers the
// count was seen at 8,190) but cost 1.9% and 2.4% at 1,024 and 4,096
// writers (six and eight rounds, 7 of the 8 below 1): the overcount keeps
// gathering going one yield longer, and that pays; and gathering without
// its time bound (4,096 writers: p99 11.6–12.5 against 10.0–10.6 ms,
// throughput -3%, four rounds).
//
// Fewer cache lines per write. A writer woken at its Durable watermark
// after its waiter was moved there read its handle to learn the write's
// error and epoch, a line the coordinator wrote last on the other
// processor (0.11 of the 0.19 s the CPU profile put in WriteHandle.Wait
// itself, 2,000,000 writes at 4,096 writers). The move is now recorded in
// the waiter, which the woken writer reads anyway: moved and the watermark
// at or past the waiter's epoch means applied without error and durable,
// so the handle is read only for the result (nothing when R is empty).
// Six interleaved rounds: +3.0% at 4,096 and +2.9% at 1,024 writers,
// +7.9% at 256, p99 -3% to -10%.
//
// The shape's own curve. BenchmarkDurable's sequenced-ideal is the ideal
// group fsync with this pipeline's shape and nothing else: writers wake a
// sequencing goroutine, which hands groups to a syncing one whenever it is
// idle. With a real fsync it falls as writers grow just as the coordinator
// does (1.03, 0.98, 0.85, 0.79, 0.70 of group-fsync-ideal at 1, 16, 256,
// 1,024 and 4,096 writers; the coordinator with the logging delta 1.00,
// 1.80, 1.01, 0.82, 0.73; five interleaved rounds), and uses more CPU
// (4,096 writers: 3.02–3.15 s per 2,000,000 writes against 2.90–2.92 s
// and the ideal's 2.32–2.45 s), mostly in waking the sequencer. With a
// 1 ms simulated sync its cohorts reach 1.21x at 4,096 writers against
// the coordinator's 0.93x (below that, whole groups win: 1.89x against
// 0.97x at 16). Cohorts in the coordinator were tried again there:
// gathering skipped when the returning writers would take longer than a
// sync, and sleeping instead of yielding before sleeping, gave 2,110
// writes per sync and 1,192 against 1,046 ns per write (three rounds); a
// round of one or two writes (1,309 rounds and 490 sleeps per sync,
// against 12 and 1.6 with whole groups) costs more than the sequencer's
// wake-up. Batching the applies while the flusher is busy (after a
// gathering that ran into its time bound, the next freezes skip
// gathering and the coordinator dozes: a write wakes it only as the 64th
// queued on its channel, at half its capacity or with the flusher idle; a
// wait for Applied at once) formed cohorts too (2,212 writes per sync)
// and measured, four interleaved rounds against the code without it: 1 ms
// sync 1.03x at 4,096 writers, 0.97x at 1,024, 0.98x at 256; fsync 0.95x,
// 1.00x, 0.98x. Not kept; it also delays a write nobody waits for until
// the flusher is idle.
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
	probeAt    time.Time      // when probeYields may yield next
	probeEvery time.Duration  // the wait after probeAt's probe

	// handleDone, if set before Start, is called by the coordinator
	// goroutine right after it completes each handle of a turn, before the
	// next: the tests check invariant 3 there, at the instant a handle
	// starts to report Applied. Nil otherwise, which costs one predictable
	// branch per handle.
	handleDone func()
	// delisting, if set before Start, is called by the coordinator
	// goroutine as a channel is about to leave the active list, before
	// delist clears its mark: the tests write to the channel there, the
	// instant a writer finds it still listed and so does not list it.
	// Nil otherwise; a channel is delisted at most once per idle spell.
	delisting func(channel string)
	// gatherYield, if set before Start, replaces gatherReturning's yield:
	// the tests make the returning writers' writes there, one yield at a
	// time. Nil otherwise.
	gatherYield func()
	// probeYield, if set before Start, replaces probeYields's yield: the
	// tests make it take as long as they like. Nil otherwise.
	probeYield func()
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
//
// In tests with [testing/synctest], create the coordinator in the bubble
// whose goroutines use it: its goroutines and its callers wake each other
// through channels, and a channel belongs to the bubble it was made in.
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
	for _, m := range []*watermark{&p.marks.applied, &p.marks.written, &p.marks.durable, &p.syncDone} {
		m.pool = &p.waiters
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
	base := cfg.FirstEpoch - 1 // every watermark starts just before the first epoch
	p.marks.applied.v.Store(base)
	p.marks.written.v.Store(base)
	p.marks.durable.v.Store(base)
	p.frozenThrough.Store(base)
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
// in [Config.Channels]: that is a programming error. Use
// [Coordinator.LookupChannel] when the name comes from outside the program.
func (c *Coordinator[W, R, FV, DV, S]) Channel(name string) *Channel[W, R] {
	ch, ok := c.channels[name]
	if !ok {
		panic(fmt.Sprintf("coordinator: unknown channel %q", name))
	}
	return ch
}

// LookupChannel returns the named input channel and true, or nil and false
// if the name was not in [Config.Channels]. It never panics.
func (c *Coordinator[W, R, FV, DV, S]) LookupChannel(name string) (*Channel[W, R], bool) {
	ch, ok := c.channels[name]
	return ch, ok
}

// Channels returns the names of the input channels in the order of
// [Config.Channels] (["default"] when none were configured). The slice is
// a copy: the caller may keep and modify it.
func (c *Coordinator[W, R, FV, DV, S]) Channels() []string {
	return slices.Clone(c.cfg.Channels)
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
	if err := ctx.Err(); err != nil {
		// Given up already: a request now would be served for nobody.
		return 0, fmt.Errorf("coordinator: flush: %w", err)
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
		Flushes:        c.stats.flushCounts(),
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
