package coordinator

// This file ports the 42 tests of the reference (Rust) coordinator one by
// one, keeping their names (should_x_y → TestXY), their scenarios and their
// assertions. Where the Go API differs, the test says how.
//
// One difference runs through the file: waiting for Written or Durable is
// itself a request to flush in Go (group commit, see
// Config.DisableFlushOnWait). Every test below that counts flushed deltas
// after such a wait has already frozen the write (by Flush, size or
// interval) before it waits, so the wait adds no freeze and the counts are
// the reference's, deterministically.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// refTryWrite queues wr on ch and fails the test if it is refused.
func refTryWrite(t testing.TB, ch *Channel[testWrite, struct{}], wr testWrite) *WriteHandle[struct{}] {
	t.Helper()
	h, err := ch.TryWrite(wr)
	if err != nil {
		t.Fatalf("TryWrite(%+v) = %v; want nil", wr, err)
	}
	if h == nil {
		t.Fatalf("TryWrite(%+v) returned a nil handle and no error", wr)
	}
	return h
}

// refEpoch returns the epoch of h, failing the test on error.
func refEpoch(t testing.TB, h *WriteHandle[struct{}]) uint64 {
	t.Helper()
	e, err := h.Epoch(deadlineCtx(t))
	if err != nil {
		t.Fatalf("Epoch() = %d, %v; want nil error", e, err)
	}
	return e
}

// refWait waits for h to reach level, failing the test on error.
func refWait(t testing.TB, h *WriteHandle[struct{}], level Durability) {
	t.Helper()
	if _, err := h.Wait(deadlineCtx(t), level); err != nil {
		t.Fatalf("Wait(%v) = %v; want nil", level, err)
	}
}

// refSettled lets every goroutine of the synctest bubble settle, then
// checks that h reached level. It never blocks in a handle wait: waiters
// are pooled across the process, and one created in a bubble crashes the
// runtime when reused outside it (see
// TestLibraryBugWaiterPoolCrossesSynctestBubbles), so bubbles here only
// call Wait once it is already satisfied.
func refSettled(t testing.TB, c *testCoordinator, h *WriteHandle[struct{}], level Durability) uint64 {
	t.Helper()
	synctest.Wait()
	if !h.Applied() {
		t.Fatalf("write not applied once the bubble settled")
	}
	e := refEpoch(t, h)
	if got := c.Watermarks().Get(level); got < e {
		t.Fatalf("Watermarks().Get(%v) = %d once the bubble settled; want >= %d", level, got, e)
	}
	refWait(t, h, level)
	return e
}

// refFlush calls Flush at level and returns the epoch it covers.
func refFlush(t testing.TB, c *testCoordinator, level Durability) uint64 {
	t.Helper()
	e, err := c.Flush(deadlineCtx(t), level)
	if err != nil {
		t.Fatalf("Flush(%v) = %d, %v; want nil error", level, e, err)
	}
	return e
}

// refEventCount asserts how many deltas the flusher wrote.
func refEventCount(t testing.TB, f *testFlusher, want int) []flushEvent {
	t.Helper()
	events := f.flushedEvents()
	if len(events) != want {
		t.Fatalf("flushed %d deltas %+v; want %d", len(events), events, want)
	}
	return events
}

// refSmallQueue is the reference's config for the backpressure tests.
func refSmallQueue(capacity int) Config {
	cfg := testConfig()
	cfg.QueueCapacity = capacity
	return cfg
}

// ============================================================================
// Basic write flow
// ============================================================================

// Ports should_assign_monotonic_epochs.
func TestAssignMonotonicEpochs(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	h1 := refTryWrite(t, ch, w("a", 1, 10))
	h2 := refTryWrite(t, ch, w("b", 2, 10))
	h3 := refTryWrite(t, ch, w("c", 3, 10))
	e1, e2, e3 := refEpoch(t, h1), refEpoch(t, h2), refEpoch(t, h3)

	if !(e1 < e2 && e2 < e3) {
		t.Fatalf("epochs %d, %d, %d; want strictly increasing", e1, e2, e3)
	}
	// Go also promises epochs start at 1 and are consecutive.
	if e1 != 1 || e2 != 2 || e3 != 3 {
		t.Fatalf("epochs %d, %d, %d; want 1, 2, 3", e1, e2, e3)
	}
	stop(t, c)
}

// Ports should_apply_writes_in_order.
func TestApplyWritesInOrder(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	refTryWrite(t, ch, w("a", 1, 10))
	refTryWrite(t, ch, w("a", 2, 10))
	last := refTryWrite(t, ch, w("a", 3, 10))
	refFlush(t, c, Applied)
	refWait(t, last, Written)

	events := refEventCount(t, f, 1)
	// Writing "a" three times overwrites; the last write wins with seq 2.
	got, ok := events[0].frozen.writes["a"]
	if want := (seqValue{seq: 2, value: 3}); !ok || got != want {
		t.Fatalf("flushed writes[%q] = %+v, %v; want %+v", "a", got, ok, want)
	}
	stop(t, c)
}

// Ports should_update_applied_watermark_after_each_write.
func TestUpdateAppliedWatermarkAfterEachWrite(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	h := refTryWrite(t, ch, w("a", 1, 10))
	refWait(t, h, Applied)
	if got := c.Watermarks().Applied; got < 1 {
		t.Fatalf("Watermarks().Applied = %d after Wait(Applied); want >= 1", got)
	}
	stop(t, c)
}

// Ports should_propagate_apply_error_to_handle.
func TestPropagateApplyErrorToHandle(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{err: errors.New("apply error")}, f)
	ch := c.Channel("default")
	c.Start()

	h := refTryWrite(t, ch, w("a", 1, 10))
	epoch, err := h.Epoch(deadlineCtx(t))

	var ae *ApplyError
	if !errors.As(err, &ae) {
		t.Fatalf("Epoch() = %d, %v; want an *ApplyError", epoch, err)
	}
	if ae.Epoch != 1 || ae.Err == nil || ae.Err.Error() != "apply error" {
		t.Fatalf("ApplyError = {Epoch: %d, Err: %v}; want {Epoch: 1, Err: apply error}", ae.Epoch, ae.Err)
	}
	if epoch != 1 {
		t.Fatalf("Epoch() = %d with the ApplyError; want 1", epoch)
	}
	stop(t, c)
}

// ============================================================================
// Manual flush
// ============================================================================

// Ports should_flush_on_command.
func TestFlushOnCommand(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	h := refTryWrite(t, ch, w("a", 1, 10))
	refFlush(t, c, Applied)
	refWait(t, h, Written)

	refEventCount(t, f, 1)
	stop(t, c)
}

// Ports should_wait_on_flush_handle.
func TestWaitOnFlushHandle(t *testing.T) {
	// The Rust flush handle is the epoch Flush returns; waiting on it is
	// Coordinator.WaitFor.
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	refTryWrite(t, ch, w("a", 1, 10))
	epoch := refFlush(t, c, Applied)
	if err := c.WaitFor(deadlineCtx(t), Written, epoch); err != nil {
		t.Fatalf("WaitFor(Written, %d) = %v; want nil", epoch, err)
	}

	refEventCount(t, f, 1)
	stop(t, c)
}

// Ports should_return_correct_epoch_from_flush_handle.
func TestReturnCorrectEpochFromFlushHandle(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	refTryWrite(t, ch, w("a", 1, 10))
	h2 := refTryWrite(t, ch, w("b", 2, 10))
	flushEpoch := refFlush(t, c, Applied)

	if e2 := refEpoch(t, h2); flushEpoch != e2 {
		t.Fatalf("Flush(Applied) = %d; want the last write's epoch %d", flushEpoch, e2)
	}
	stop(t, c)
}

// Ports should_include_all_pending_writes_in_flush.
func TestIncludeAllPendingWritesInFlush(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	refTryWrite(t, ch, w("a", 1, 10))
	refTryWrite(t, ch, w("b", 2, 10))
	last := refTryWrite(t, ch, w("c", 3, 10))
	refFlush(t, c, Applied)
	refWait(t, last, Written)

	events := refEventCount(t, f, 1)
	if n := len(events[0].frozen.writes); n != 3 {
		t.Fatalf("flushed delta holds %d writes %v; want 3", n, events[0].frozen.writes)
	}
	assertRows(t, f.storage.snapshot(), map[string]seqValue{"a": {0, 1}, "b": {1, 2}, "c": {2, 3}})
	stop(t, c)
}

// Ports should_skip_flush_when_no_new_writes.
func TestSkipFlushWhenNoNewWrites(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	h := refTryWrite(t, ch, w("a", 1, 10))
	refFlush(t, c, Applied)
	refWait(t, h, Written)

	// A second flush with no new writes: Go's Flush answers after the
	// request was handled, and still reports the last epoch.
	if e := refFlush(t, c, Applied); e != 1 {
		t.Fatalf("second Flush(Applied) = %d; want 1", e)
	}
	// As in the reference, a later write proves the request was processed.
	probe := refTryWrite(t, ch, w("sync", 0, 1))
	refEpoch(t, probe)

	refEventCount(t, f, 1)
	stop(t, c)
}

// Ports should_update_written_watermark_after_flush.
func TestUpdateWrittenWatermarkAfterFlush(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	h := refTryWrite(t, ch, w("a", 1, 10))
	refFlush(t, c, Applied)
	refWait(t, h, Written)

	if got := c.FlushedEpoch(); got < 1 {
		t.Fatalf("FlushedEpoch() = %d after Wait(Written); want >= 1", got)
	}
	stop(t, c)
}

// ============================================================================
// Timer-based flush
// ============================================================================

// Ports should_flush_on_flush_interval.
func TestFlushOnFlushInterval(t *testing.T) {
	// Fake time: the synctest bubble's clock only moves when every goroutine
	// in it is blocked.
	synctest.Test(t, func(t *testing.T) {
		f := newTestFlusher()
		cfg := testConfig()
		cfg.FlushInterval = 100 * time.Millisecond
		c := newTestCoordinator(t, cfg, testContext{}, f)
		ch := c.Channel("default")
		c.Start()
		synctest.Wait() // let the coordinator goroutine reach its loop

		h := refTryWrite(t, ch, w("a", 1, 10))
		refSettled(t, c, h, Applied)

		// No flush yet: the interval counts from Start.
		refEventCount(t, f, 0)

		time.Sleep(150 * time.Millisecond) // advances the fake clock
		synctest.Wait()

		events := refEventCount(t, f, 1)
		if want := (EpochRange{1, 2}); events[0].epochs != want {
			t.Fatalf("interval flush covered %v; want %v", events[0].epochs, want)
		}
		assertRows(t, f.storage.snapshot(), map[string]seqValue{"a": {0, 1}})
		require.Equal(t, uint64(1), c.Stats().Flushes.Interval, "Stats().Flushes.Interval")
		stop(t, c)
	})
}

// ============================================================================
// Size-threshold flush
// ============================================================================

// Ports should_flush_when_size_threshold_exceeded.
func TestFlushWhenSizeThresholdExceeded(t *testing.T) {
	f := newTestFlusher()
	cfg := testConfig()
	cfg.FlushSize = 100
	c := newTestCoordinator(t, cfg, testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	// The write is frozen by size in the turn that applies it, before the
	// Written wait below could ask for a flush of its own.
	h := refTryWrite(t, ch, w("a", 1, 150))
	refWait(t, h, Written)

	refEventCount(t, f, 1)
	require.Equal(t, uint64(1), c.Stats().Flushes.Size, "Stats().Flushes.Size")
	stop(t, c)
}

// Ports should_accumulate_until_threshold.
func TestAccumulateUntilThreshold(t *testing.T) {
	f := newTestFlusher()
	cfg := testConfig()
	cfg.FlushSize = 100
	c := newTestCoordinator(t, cfg, testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	for i := range 5 {
		h := refTryWrite(t, ch, w(fmt.Sprintf("key%d", i), uint64(i), 15))
		refWait(t, h, Applied)
	}
	// 75 bytes < 100: nothing flushed.
	refEventCount(t, f, 0)

	final := refTryWrite(t, ch, w("final", 999, 30))
	refWait(t, final, Written)

	// 105 bytes >= 100: one flush holding all six writes.
	events := refEventCount(t, f, 1)
	if want := (EpochRange{1, 7}); events[0].epochs != want {
		t.Fatalf("size flush covered %v; want %v", events[0].epochs, want)
	}
	require.Equal(t, uint64(1), c.Stats().Flushes.Size, "Stats().Flushes.Size")
	stop(t, c)
}

// ============================================================================
// Non-blocking flush (concurrency)
// ============================================================================

// Ports should_accept_writes_during_flush.
func TestAcceptWritesDuringFlush(t *testing.T) {
	f, started, unblock := newControlledFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	h1 := refTryWrite(t, ch, w("a", 1, 10))
	refFlush(t, c, Applied)
	await(t, "FlushDelta starts", started) // FlushDelta is now in progress and blocked

	h2 := refTryWrite(t, ch, w("b", 2, 10))
	if e1, e2 := refEpoch(t, h1), refEpoch(t, h2); e2 <= e1 {
		t.Fatalf("epoch during flush %d; want > %d", e2, e1)
	}

	close(unblock)
	stop(t, c)
}

// Ports should_assign_new_epochs_during_flush.
func TestAssignNewEpochsDuringFlush(t *testing.T) {
	f, started, unblock := newControlledFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	refTryWrite(t, ch, w("a", 1, 10))
	refFlush(t, c, Applied)
	await(t, "FlushDelta starts", started)

	h1 := refTryWrite(t, ch, w("b", 2, 10))
	h2 := refTryWrite(t, ch, w("c", 3, 10))
	if e1, e2 := refEpoch(t, h1), refEpoch(t, h2); e1 >= e2 {
		t.Fatalf("epochs during flush %d, %d; want increasing", e1, e2)
	}

	close(unblock)
	stop(t, c)
}

// ============================================================================
// Backpressure
// ============================================================================

// Ports should_return_backpressure_when_queue_full.
func TestReturnBackpressureWhenQueueFull(t *testing.T) {
	// The coordinator is not started; the cleanup's Stop starts and drains it.
	f := newTestFlusher()
	c := newTestCoordinator(t, refSmallQueue(2), testContext{}, f)
	ch := c.Channel("default")

	refTryWrite(t, ch, w("a", 1, 10))
	refTryWrite(t, ch, w("b", 2, 10))
	h, err := ch.TryWrite(w("c", 3, 10))

	if !errors.Is(err, ErrBackpressure) || h != nil {
		t.Fatalf("TryWrite on a full queue = %v, %v; want nil, ErrBackpressure", h, err)
	}
}

// Ports should_accept_writes_after_queue_drains.
func TestAcceptWritesAfterQueueDrains(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, refSmallQueue(2), testContext{}, f)
	ch := c.Channel("default")

	refTryWrite(t, ch, w("a", 1, 10))
	hb := refTryWrite(t, ch, w("b", 2, 10))
	if _, err := ch.TryWrite(w("c", 3, 10)); !errors.Is(err, ErrBackpressure) {
		t.Fatalf("TryWrite on a full queue = %v; want ErrBackpressure", err)
	}

	c.Start()
	refWait(t, hb, Applied)

	hc := refTryWrite(t, ch, w("c", 3, 10))
	if e := refEpoch(t, hc); e != 3 {
		t.Fatalf("Epoch() of the write after draining = %d; want 3", e)
	}
	stop(t, c)
}

// ============================================================================
// Shutdown
// ============================================================================

// Ports should_shutdown_cleanly_when_stop_called.
func TestShutdownCleanlyWhenStopCalled(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	c.Start()

	if err := c.Stop(deadlineCtx(t)); err != nil {
		t.Fatalf("Stop() = %v; want nil", err)
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Done() is not closed after Stop returned")
	}
}

// Ports should_flush_pending_writes_on_shutdown.
func TestFlushPendingWritesOnShutdown(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	h := refTryWrite(t, ch, w("a", 1, 10))
	epoch := refEpoch(t, h)
	stop(t, c)

	events := refEventCount(t, f, 1)
	if !events[0].epochs.Contains(epoch) {
		t.Fatalf("shutdown flush covered %v; want it to contain epoch %d", events[0].epochs, epoch)
	}
}

// Ports should_return_shutdown_error_after_coordinator_stops.
func TestReturnShutdownErrorAfterCoordinatorStops(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()
	stop(t, c)

	h, err := ch.TryWrite(w("a", 1, 10))
	if !errors.Is(err, ErrClosed) || h != nil {
		t.Fatalf("TryWrite after Stop = %v, %v; want nil, ErrClosed", h, err)
	}
}

// ============================================================================
// Epoch range tracking
// ============================================================================

// Ports should_track_epoch_range_in_flush_event.
func TestTrackEpochRangeInFlushEvent(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	refTryWrite(t, ch, w("a", 1, 10))
	refTryWrite(t, ch, w("b", 2, 10))
	last := refTryWrite(t, ch, w("c", 3, 10))
	refFlush(t, c, Applied)
	refWait(t, last, Written)

	events := refEventCount(t, f, 1)
	// End is exclusive: one past the last epoch (3).
	if want := (EpochRange{Start: 1, End: 4}); events[0].epochs != want {
		t.Fatalf("flushed epochs %v; want %v", events[0].epochs, want)
	}
	stop(t, c)
}

// Ports should_have_contiguous_epoch_ranges.
func TestHaveContiguousEpochRanges(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	refTryWrite(t, ch, w("a", 1, 10))
	h2 := refTryWrite(t, ch, w("b", 2, 10))
	refFlush(t, c, Applied)
	refWait(t, h2, Written)

	h3 := refTryWrite(t, ch, w("c", 3, 10))
	refFlush(t, c, Applied)
	refWait(t, h3, Written)

	events := refEventCount(t, f, 2)
	r1, r2 := events[0].epochs, events[1].epochs
	if r1.End != r2.Start {
		t.Fatalf("ranges %v and %v are not contiguous", r1, r2)
	}
	if want := (EpochRange{1, 3}); r1 != want {
		t.Fatalf("first range %v; want %v", r1, want)
	}
	if want := (EpochRange{3, 4}); r2 != want {
		t.Fatalf("second range %v; want %v", r2, want)
	}
	stop(t, c)
}

// Ports should_include_exact_epochs_in_range.
func TestIncludeExactEpochsInRange(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	e1 := refEpoch(t, refTryWrite(t, ch, w("a", 1, 10)))
	h2 := refTryWrite(t, ch, w("b", 2, 10))
	e2 := refEpoch(t, h2)
	refFlush(t, c, Applied)
	refWait(t, h2, Written)

	events := refEventCount(t, f, 1)
	r := events[0].epochs
	if r.Start != e1 || r.End != e2+1 {
		t.Fatalf("flushed epochs %v; want [%d, %d)", r, e1, e2+1)
	}
	if !r.Contains(e1) || !r.Contains(e2) {
		t.Fatalf("flushed epochs %v do not contain %d and %d", r, e1, e2)
	}
	stop(t, c)
}

// ============================================================================
// State carry-over (ID allocation)
// ============================================================================

// Ports should_preserve_context_across_flushes.
func TestPreserveContextAcrossFlushes(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	h1 := refTryWrite(t, ch, w("a", 1, 10))
	refFlush(t, c, Applied)
	refWait(t, h1, Written)

	h2 := refTryWrite(t, ch, w("a", 2, 10))
	refFlush(t, c, Applied)
	refWait(t, h2, Written)

	events := refEventCount(t, f, 2)
	for i, want := range []seqValue{{0, 1}, {1, 2}} {
		if got, ok := events[i].frozen.writes["a"]; !ok || got != want {
			t.Fatalf("delta %d: writes[%q] = %+v, %v; want %+v", i, "a", got, ok, want)
		}
	}
	stop(t, c)
}

// ============================================================================
// Subscribe
// ============================================================================

// refSubscribed creates a coordinator with an initialized subscriber,
// subscribed before Start as the reference's tests do, and starts it.
func refSubscribed(t *testing.T) (*testFlusher, *testCoordinator, *Subscriber[map[string]uint64, testReader, memSnapshot]) {
	t.Helper()
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	sub := c.Subscribe()
	t.Cleanup(sub.Close)
	if v := sub.Initialize(); v == nil {
		t.Fatal("Initialize() = nil; want the current view")
	}
	c.Start()
	return f, c, sub
}

// refNext receives the next view, failing the test on error.
func refNext(t testing.TB, sub *Subscriber[map[string]uint64, testReader, memSnapshot]) *View[map[string]uint64, testReader, memSnapshot] {
	t.Helper()
	v, err := sub.Next(deadlineCtx(t))
	if err != nil {
		t.Fatalf("Next() = %v; want a view", err)
	}
	if v == nil {
		t.Fatal("Next() returned a nil view and no error")
	}
	return v
}

// Ports should_receive_view_on_subscribe.
func TestReceiveViewOnSubscribe(t *testing.T) {
	_, c, sub := refSubscribed(t)
	ch := c.Channel("default")

	refTryWrite(t, ch, w("a", 1, 10))
	refFlush(t, c, Applied)

	// The first view is published on freeze.
	refNext(t, sub)
	stop(t, c)
}

// Ports should_include_snapshot_in_view_after_flush.
func TestIncludeSnapshotInViewAfterFlush(t *testing.T) {
	_, c, sub := refSubscribed(t)
	ch := c.Channel("default")

	refTryWrite(t, ch, w("a", 1, 10))
	refFlush(t, c, Applied)

	refNext(t, sub)      // freeze: frozen delta added
	v := refNext(t, sub) // written: snapshot updated
	assertRows(t, v.Snapshot, map[string]seqValue{"a": {0, 1}})
	stop(t, c)
}

// Ports should_include_delta_in_view_after_flush.
func TestIncludeDeltaInViewAfterFlush(t *testing.T) {
	_, c, sub := refSubscribed(t)
	ch := c.Channel("default")

	refTryWrite(t, ch, w("a", 42, 10))
	refFlush(t, c, Applied)

	refNext(t, sub)
	v := refNext(t, sub)
	if v.LastWritten == nil {
		t.Fatal("view after the flush has LastWritten == nil")
	}
	if got, ok := v.LastWritten.View["a"]; !ok || got != 42 {
		t.Fatalf("LastWritten.View[%q] = %d, %v; want 42, true", "a", got, ok)
	}
	stop(t, c)
}

// Ports should_include_epoch_range_in_view_after_flush.
func TestIncludeEpochRangeInViewAfterFlush(t *testing.T) {
	_, c, sub := refSubscribed(t)
	ch := c.Channel("default")

	h1 := refTryWrite(t, ch, w("a", 1, 10))
	h2 := refTryWrite(t, ch, w("b", 2, 10))
	refFlush(t, c, Applied)

	refNext(t, sub)
	v := refNext(t, sub)
	if v.LastWritten == nil {
		t.Fatal("view after the flush has LastWritten == nil")
	}
	r := v.LastWritten.Epochs
	e1, e2 := refEpoch(t, h1), refEpoch(t, h2)
	if !r.Contains(e1) || !r.Contains(e2) {
		t.Fatalf("LastWritten.Epochs = %v; want it to contain %d and %d", r, e1, e2)
	}
	if r.Start != e1 || r.End != e2+1 {
		t.Fatalf("LastWritten.Epochs = %v; want [%d, %d)", r, e1, e2+1)
	}
	stop(t, c)
}

// Ports should_broadcast_frozen_delta_on_freeze.
func TestBroadcastFrozenDeltaOnFreeze(t *testing.T) {
	_, c, sub := refSubscribed(t)
	ch := c.Channel("default")

	refTryWrite(t, ch, w("a", 1, 10))
	refFlush(t, c, Applied)

	v := refNext(t, sub)
	if len(v.Frozen) != 1 {
		t.Fatalf("view on freeze has %d frozen deltas; want 1", len(v.Frozen))
	}
	if _, ok := v.Frozen[0].View["a"]; !ok {
		t.Fatalf("frozen delta %v does not hold %q", v.Frozen[0].View, "a")
	}
	stop(t, c)
}

// Ports should_remove_frozen_delta_after_flush_complete.
func TestRemoveFrozenDeltaAfterFlushComplete(t *testing.T) {
	_, c, sub := refSubscribed(t)
	ch := c.Channel("default")

	refTryWrite(t, ch, w("a", 1, 10))
	refFlush(t, c, Applied)

	if v := refNext(t, sub); len(v.Frozen) != 1 {
		t.Fatalf("view on freeze has %d frozen deltas; want 1", len(v.Frozen))
	}
	v := refNext(t, sub)
	if len(v.Frozen) != 0 {
		t.Fatalf("view after the flush has %d frozen deltas; want 0", len(v.Frozen))
	}
	if v.LastWritten == nil {
		t.Fatal("view after the flush has LastWritten == nil")
	}
	stop(t, c)
}

// Ports should_recover_from_message_lost_subscriber.
func TestRecoverFromMessageLostSubscriber(t *testing.T) {
	// The reference recovers by subscribing again; Go also lets the same
	// subscriber recover by calling Initialize again. Both are tested.
	for _, recovery := range []string{"resubscribe", "reinitialize"} {
		t.Run(recovery, func(t *testing.T) {
			f, c, sub := refSubscribed(t)
			ch := c.Channel("default")

			// 20 flushes publish 40 views; the subscriber reads none,
			// so its 16-view buffer overflows.
			for i := range 20 {
				refTryWrite(t, ch, w(fmt.Sprintf("key_%d", i), uint64(i), 10))
				refFlush(t, c, Applied)
			}
			epoch := refFlush(t, c, Durable)
			if err := c.WaitFor(deadlineCtx(t), Durable, epoch); err != nil {
				t.Fatalf("WaitFor(Durable, %d) = %v; want nil", epoch, err)
			}

			_, err := sub.Next(deadlineCtx(t))
			var lag *LagError
			if !errors.As(err, &lag) {
				t.Fatalf("Next() after overflow = %v; want a *LagError", err)
			}
			if lag.Missed == 0 {
				t.Fatalf("LagError.Missed = 0; want > 0")
			}

			switch recovery {
			case "resubscribe":
				sub = c.Subscribe()
				t.Cleanup(sub.Close)
			case "reinitialize":
				if _, err := sub.Next(deadlineCtx(t)); !errors.Is(err, ErrNotInitialized) {
					t.Fatalf("Next() after a LagError = %v; want ErrNotInitialized", err)
				}
			}
			v := sub.Initialize()

			// The fresh view reflects all 20 writes.
			if n := len(v.Snapshot); n < 20 {
				t.Fatalf("recovered view's snapshot has %d rows; want >= 20", n)
			}
			want := make(map[string]seqValue, 20)
			for i := range 20 {
				want[fmt.Sprintf("key_%d", i)] = seqValue{uint64(i), uint64(i)}
			}
			assertRows(t, v.Snapshot, want)
			refEventCount(t, f, 20)

			// Delivery resumes.
			refTryWrite(t, ch, w("post_recovery", 100, 10))
			refFlush(t, c, Applied)
			next := refNext(t, sub)
			if len(next.Frozen) != 1 || !next.Frozen[0].Epochs.Contains(21) {
				t.Fatalf("view after recovery has frozen %+v; want one delta holding epoch 21", next.Frozen)
			}
			stop(t, c)
		})
	}
}

// ============================================================================
// Durable flush
// ============================================================================

// Ports should_flush_even_when_no_writes_if_flush_storage.
func TestFlushEvenWhenNoWritesIfFlushStorage(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	c.Start()

	epoch := refFlush(t, c, Durable)
	if err := c.WaitFor(deadlineCtx(t), Durable, epoch); err != nil {
		t.Fatalf("WaitFor(Durable, %d) = %v; want nil", epoch, err)
	}

	// FlushStorage ran, but no delta was written.
	refEventCount(t, f, 0)
	if n := f.syncCount(); n != 1 {
		t.Fatalf("FlushStorage ran %d times; want 1", n)
	}
	stop(t, c)
}

// Ports should_advance_durable_watermark.
func TestAdvanceDurableWatermark(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	h := refTryWrite(t, ch, w("a", 1, 10))
	epoch := refFlush(t, c, Durable)
	if err := c.WaitFor(deadlineCtx(t), Durable, epoch); err != nil {
		t.Fatalf("WaitFor(Durable, %d) = %v; want nil", epoch, err)
	}
	refWait(t, h, Durable)

	refEventCount(t, f, 1)
	if got := c.Watermarks().Durable; got < 1 {
		t.Fatalf("Watermarks().Durable = %d; want >= 1", got)
	}
	stop(t, c)
}

// Ports should_see_applied_write_via_view.
func TestSeeAppliedWriteViaView(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	h := refTryWrite(t, ch, w("a", 42, 10))
	refWait(t, h, Applied)

	if got, ok := c.View().Current.get("a"); !ok || got != 42 {
		t.Fatalf("View().Current.get(%q) = %d, %v; want 42, true", "a", got, ok)
	}
	stop(t, c)
}

// ============================================================================
// Multiple channels
// ============================================================================

// Ports should_flush_writes_from_multiple_channels.
func TestFlushWritesFromMultipleChannels(t *testing.T) {
	f := newTestFlusher()
	cfg := testConfig()
	cfg.Channels = []string{"ch1", "ch2"}
	c := newTestCoordinator(t, cfg, testContext{}, f)
	ch1, ch2 := c.Channel("ch1"), c.Channel("ch2")
	c.Start()

	// Wait for each write to be applied so the order is deterministic.
	w1 := refTryWrite(t, ch1, w("a", 10, 10))
	refWait(t, w1, Applied)
	w2 := refTryWrite(t, ch2, w("b", 20, 10))
	refWait(t, w2, Applied)
	w3 := refTryWrite(t, ch1, w("c", 30, 10))
	refWait(t, w3, Applied)

	refFlush(t, c, Applied)
	refWait(t, w3, Written)

	assertRows(t, f.storage.snapshot(), map[string]seqValue{"a": {0, 10}, "b": {1, 20}, "c": {2, 30}})
	stop(t, c)
}

// ============================================================================
// Write with timeout (Write with a context deadline, in fake time)
// ============================================================================

// Ports should_succeed_with_write_timeout_when_queue_has_space.
func TestSucceedWithWriteTimeoutWhenQueueHasSpace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newTestFlusher()
		c := newTestCoordinator(t, testConfig(), testContext{}, f)
		ch := c.Channel("default")
		c.Start()

		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		h, err := ch.Write(ctx, w("a", 1, 10))
		if err != nil {
			t.Fatalf("Write with a 1s timeout = %v; want nil", err)
		}
		refSettled(t, c, h, Applied)
		stop(t, c)
	})
}

// Ports should_timeout_when_queue_full.
func TestTimeoutWhenQueueFull(t *testing.T) {
	// The coordinator is not started; the cleanup's Stop starts and drains it
	// inside the bubble.
	synctest.Test(t, func(t *testing.T) {
		f := newTestFlusher()
		c := newTestCoordinator(t, refSmallQueue(2), testContext{}, f)
		ch := c.Channel("default")

		refTryWrite(t, ch, w("a", 1, 10))
		refTryWrite(t, ch, w("b", 2, 10))

		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
		defer cancel()
		start := time.Now()
		h, err := ch.Write(ctx, w("c", 3, 10))

		if !errors.Is(err, context.DeadlineExceeded) || h != nil {
			t.Fatalf("Write on a full queue = %v, %v; want nil, DeadlineExceeded", h, err)
		}
		// Fake time: Write waited exactly for its deadline.
		if waited := time.Since(start); waited != 10*time.Millisecond {
			t.Fatalf("Write waited %v; want 10ms", waited)
		}
		if n := ch.Len(); n != 2 {
			t.Fatalf("Len() after the timed-out Write = %d; want 2", n)
		}
	})
}

// Ports should_return_write_in_timeout_error.
func TestReturnWriteInTimeoutError(t *testing.T) {
	// Go returns no write: the caller still holds its value, and retrying the
	// same value succeeds once there is room.
	synctest.Test(t, func(t *testing.T) {
		f := newTestFlusher()
		c := newTestCoordinator(t, refSmallQueue(1), testContext{}, f)
		ch := c.Channel("default")

		first := refTryWrite(t, ch, w("a", 1, 10))

		retry := w("retry_me", 42, 10)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
		defer cancel()
		h, err := ch.Write(ctx, retry)
		if !errors.Is(err, context.DeadlineExceeded) || h != nil {
			t.Fatalf("Write on a full queue = %v, %v; want nil, DeadlineExceeded", h, err)
		}
		if retry.key != "retry_me" || retry.value != 42 {
			t.Fatalf("write after the timeout = %+v; want key retry_me, value 42", retry)
		}

		// Make room and retry the same value.
		c.Start()
		refSettled(t, c, first, Applied)
		h, err = ch.Write(deadlineCtx(t), retry)
		if err != nil {
			t.Fatalf("retried Write(%+v) = %v; want nil", retry, err)
		}
		refSettled(t, c, h, Applied)
		if got, ok := c.View().Current.get("retry_me"); !ok || got != 42 {
			t.Fatalf("View().Current.get(%q) = %d, %v; want 42, true", "retry_me", got, ok)
		}
		stop(t, c)
	})
}

// Ports should_return_write_in_backpressure_error.
func TestReturnWriteInBackpressureError(t *testing.T) {
	// As above, the caller keeps the write and the retry succeeds once there
	// is room.
	f := newTestFlusher()
	c := newTestCoordinator(t, refSmallQueue(1), testContext{}, f)
	ch := c.Channel("default")

	first := refTryWrite(t, ch, w("a", 1, 10))

	retry := w("retry_me", 42, 10)
	h, err := ch.TryWrite(retry)
	if !errors.Is(err, ErrBackpressure) || h != nil {
		t.Fatalf("TryWrite on a full queue = %v, %v; want nil, ErrBackpressure", h, err)
	}
	if retry.key != "retry_me" || retry.value != 42 {
		t.Fatalf("write after backpressure = %+v; want key retry_me, value 42", retry)
	}

	c.Start()
	refWait(t, first, Applied)
	h = refTryWrite(t, ch, retry)
	refWait(t, h, Applied)
	if got, ok := c.View().Current.get("retry_me"); !ok || got != 42 {
		t.Fatalf("View().Current.get(%q) = %d, %v; want 42, true", "retry_me", got, ok)
	}
	stop(t, c)
}

// Ports should_succeed_when_queue_drains_within_timeout.
func TestSucceedWhenQueueDrainsWithinTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newTestFlusher()
		c := newTestCoordinator(t, refSmallQueue(2), testContext{}, f)
		ch := c.Channel("default")

		refTryWrite(t, ch, w("a", 1, 10))
		refTryWrite(t, ch, w("b", 2, 10))

		c.Start()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		h, err := ch.Write(ctx, w("c", 3, 10))
		if err != nil {
			t.Fatalf("Write while the queue drains = %v; want nil", err)
		}
		if e := refSettled(t, c, h, Applied); e != 3 {
			t.Fatalf("Epoch() = %d; want 3", e)
		}
		stop(t, c)
	})
}

// Ports should_return_shutdown_on_write_timeout_after_coordinator_stops.
func TestReturnShutdownOnWriteTimeoutAfterCoordinatorStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newTestFlusher()
		c := newTestCoordinator(t, testConfig(), testContext{}, f)
		ch := c.Channel("default")
		c.Start()
		stop(t, c)

		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		start := time.Now()
		h, err := ch.Write(ctx, w("a", 1, 10))
		if !errors.Is(err, ErrClosed) || h != nil {
			t.Fatalf("Write after Stop = %v, %v; want nil, ErrClosed", h, err)
		}
		if waited := time.Since(start); waited != 0 {
			t.Fatalf("Write after Stop waited %v; want it to fail at once", waited)
		}
	})
}

// ============================================================================
// Pause
// ============================================================================

// Ports should_pause_and_resume_write_channel.
func TestPauseAndResumeWriteChannel(t *testing.T) {
	// The reference pauses before Start to dodge a race in its receiver; Go
	// has none, but the scenario is kept as it was.
	f := newTestFlusher()
	cfg := testConfig()
	cfg.Channels = []string{"a", "b"}
	cfg.FlushInterval = 24 * time.Hour
	c := newTestCoordinator(t, cfg, testContext{}, f)
	chA, chB := c.Channel("a"), c.Channel("b")

	chA.Pause()
	c.Start()

	ha := refTryWrite(t, chA, w("a", 1, 1))
	want := make(map[string]bool, 1001)
	for i := range 1000 {
		key := fmt.Sprintf("b%d", i)
		refWait(t, refTryWrite(t, chB, w(key, uint64(i), 1)), Applied)
		want[key] = true
	}

	// Only b's keys were applied: a was never consumed.
	if got := c.View().Current.keys(); !maps.Equal(got, want) {
		t.Fatalf("applied keys = %d keys, a present: %v; want the 1000 keys of b only", len(got), got["a"])
	}
	if ha.Applied() {
		t.Fatal("the paused channel's write was applied")
	}

	chA.Resume()
	refWait(t, ha, Applied)
	want["a"] = true
	if got := c.View().Current.keys(); !maps.Equal(got, want) {
		t.Fatalf("applied keys after Resume = %d keys, a present: %v; want b's 1000 keys and a", len(got), got["a"])
	}
	stop(t, c)
}
