package coordinator

// This file checks documented guarantees one by one, each in the way that
// fails when that guarantee alone is broken: the flush interval restarting
// after every freeze, syncs that start after the Flush they serve,
// invariant 3 at the instant a handle completes, FlushSize reached
// exactly, waits served as soon as the flusher is free, untorn watermarks,
// Pause against writes already taken, the byte budget after a failure, and
// the timings' maximum. Every blocking call carries a deadline or runs in a
// synctest bubble.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// frozenLog is an Observer that records every freeze.
type frozenLog struct {
	NopObserver
	mu     sync.Mutex
	frozen []frozenEvent
}

type frozenEvent struct {
	reason FlushReason
	epochs EpochRange
}

func (l *frozenLog) Frozen(reason FlushReason, epochs EpochRange, _ int, _ time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.frozen = append(l.frozen, frozenEvent{reason, epochs})
}

func (l *frozenLog) events() []frozenEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]frozenEvent(nil), l.frozen...)
}

// mustTryWrite queues wr on the default channel of c.
func mustTryWrite(t testing.TB, c *testCoordinator, wr testWrite) *WriteHandle[struct{}] {
	t.Helper()
	h, err := c.Channel(defaultChannel).TryWrite(wr)
	require.NoError(t, err, "TryWrite(%+v)", wr)
	return h
}

// The flush interval counts from the last freeze, whatever its reason: it
// fires again and again while writes keep arriving, and a freeze by Flush
// (or size, or a waiter) pushes the next interval flush back.
func TestGuaranteeFlushIntervalRestartsAfterEveryFreeze(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Second
		log := &frozenLog{}
		cfg := testConfig()
		cfg.FlushInterval = interval
		cfg.Observer = log
		c := newTestCoordinator(t, cfg, testContext{}, newTestFlusher())
		c.Start()
		start := time.Now()

		// Three intervals in a row, one write in each: each is frozen by
		// its own interval flush.
		var want []frozenEvent
		for i := range uint64(3) {
			mustTryWrite(t, c, w(fmt.Sprint("k", i), i, 1))
			time.Sleep(interval - time.Millisecond)
			synctest.Wait()
			require.Equal(t, want, log.events(), "freezes %v after the write of interval %d", time.Since(start), i)
			time.Sleep(time.Millisecond)
			synctest.Wait()
			want = append(want, frozenEvent{FlushInterval, EpochRange{i + 1, i + 2}})
			require.Equal(t, want, log.events(), "freezes %v after the write of interval %d", time.Since(start), i)
		}

		// A freeze by Flush halfway through an interval restarts it.
		time.Sleep(interval / 2)
		mustTryWrite(t, c, w("explicit", 4, 1))
		_, err := c.Flush(deadlineCtx(t), Applied)
		require.NoError(t, err, "Flush(Applied)")
		want = append(want, frozenEvent{FlushExplicit, EpochRange{4, 5}})
		mustTryWrite(t, c, w("after", 5, 1))
		time.Sleep(interval - time.Millisecond)
		synctest.Wait()
		require.Equal(t, want, log.events(), "freezes one interval less 1ms after the Flush")
		time.Sleep(time.Millisecond)
		synctest.Wait()
		want = append(want, frozenEvent{FlushInterval, EpochRange{5, 6}})
		require.Equal(t, want, log.events(), "freezes one interval after the Flush")
	})
}

// A Flush(Durable) made while FlushStorage runs is not served by that
// sync, which may have started before the Flush's writes were written: a
// FlushStorage that starts after the Flush was called must complete first.
func TestGuaranteeFlushDurableWaitsForASyncStartedAfterIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, f, syncStarted, release := regBlockedFirstSync(t, testConfig())
		ctx := deadlineCtx(t)

		h := mustTryWrite(t, c, w("a", 1, 1))
		waited := make(chan error, 1) // buffer of 1: the waiter never blocks
		go func() {
			_, err := h.Wait(ctx, Durable)
			waited <- err
		}()
		<-syncStarted // the first FlushStorage runs, blocked
		synctest.Wait()

		flushed := make(chan error, 1)
		go func() {
			_, err := c.Flush(ctx, Durable)
			flushed <- err
		}()
		synctest.Wait()
		require.Equal(t, uint64(1), c.p.syncReq.Load(), "sync requests once Flush(Durable) is blocked")
		startedBefore := f.storageCalls.Load()
		require.Equal(t, int64(1), startedBefore, "FlushStorage calls started before the Flush")

		release()
		require.NoError(t, <-waited, "Wait(Durable) of the write the first sync covers")
		require.NoError(t, <-flushed, "Flush(Durable)")
		assert.Equal(t, int64(2), f.storageCalls.Load(),
			"FlushStorage calls when Flush(Durable) returned; want one more than had started when it was called")
		assert.Equal(t, 2, f.syncCount(), "FlushStorage calls completed when Flush(Durable) returned")
	})
}

// Invariant 3: a handle reports Applied (Applied, Epoch, Wait(Applied))
// only once Watermarks().Applied covers its epoch. The check runs on the
// coordinator goroutine right after each handle is completed, so it does
// not depend on catching a tiny window by luck.
func TestGuaranteeAppliedHandleIsCoveredByTheAppliedWatermark(t *testing.T) {
	f := newRegFlusher()
	c := regNew(t, testConfig(), f)
	ch := c.Channel(defaultChannel)

	var (
		handles []*WriteHandle[struct{}]
		batches []*BatchHandle[struct{}]
		checked atomic.Int64
		bad     atomic.Pointer[string]
	)
	const writes, batchesOf3 = 40, 5
	for i := range writes {
		h, err := ch.TryWrite(w(fmt.Sprint("k", i), uint64(i), 1))
		require.NoError(t, err)
		handles = append(handles, h)
		if i%(writes/batchesOf3) == 0 {
			bh, err := ch.WriteBatch(deadlineCtx(t), []testWrite{w("b1", 1, 1), w("b2", 2, 1), w("b3", 3, 1)})
			require.NoError(t, err)
			batches = append(batches, bh)
		}
	}
	allChecked := make(chan struct{})
	// Set before Start, read by the coordinator goroutine only.
	c.handleDone = func() {
		n := checked.Add(1)
		applied := c.Watermarks().Applied
		for i, h := range handles {
			if h.Applied() && h.epoch > applied {
				msg := fmt.Sprintf("write %d reports Applied at epoch %d while Watermarks().Applied = %d", i, h.epoch, applied)
				bad.CompareAndSwap(nil, &msg)
			}
		}
		for i, bh := range batches {
			if bh.done.done() && bh.epochs.Last() > applied {
				msg := fmt.Sprintf("batch %d reports Applied at epochs %v while Watermarks().Applied = %d", i, bh.epochs, applied)
				bad.CompareAndSwap(nil, &msg)
			}
		}
		if n == writes+batchesOf3 {
			close(allChecked) // after the last check, which the test reads next
		}
	}
	c.Start()
	ctx := deadlineCtx(t)
	for i, h := range handles {
		e, err := h.Epoch(ctx)
		require.NoError(t, err, "Epoch() of write %d", i)
		assert.LessOrEqual(t, e, c.Watermarks().Applied, "write %d: epoch once Epoch returned", i)
	}
	for i, bh := range batches {
		_, err := bh.Wait(ctx, Applied)
		require.NoError(t, err, "Wait(Applied) of batch %d", i)
	}
	// The coordinator checks each handle right after completing it: the
	// last check may still be running when the last wait returns.
	await(t, "the check after every handle's completion", allChecked)
	require.Equal(t, int64(writes+batchesOf3), checked.Load(), "handles completed")
	if msg := bad.Load(); msg != nil {
		t.Fatal(*msg)
	}
}

// A delta is frozen by size once EstimateSize reaches FlushSize: at
// exactly FlushSize, not only beyond it.
func TestGuaranteeFlushSizeReachedExactlyFreezes(t *testing.T) {
	for _, tc := range []struct {
		sizes  []int
		frozen []frozenEvent
	}{
		{[]int{99}, nil},
		{[]int{100}, []frozenEvent{{FlushSize, EpochRange{1, 2}}}},
		{[]int{60, 39}, nil},
		{[]int{60, 40}, []frozenEvent{{FlushSize, EpochRange{1, 3}}}},
		{[]int{60, 40, 100}, []frozenEvent{{FlushSize, EpochRange{1, 3}}, {FlushSize, EpochRange{3, 4}}}},
	} {
		t.Run(fmt.Sprint(tc.sizes), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				log := &frozenLog{}
				cfg := testConfig()
				cfg.FlushSize = 100
				cfg.Observer = log
				c := newTestCoordinator(t, cfg, testContext{}, newTestFlusher())
				c.Start()
				for i, n := range tc.sizes {
					mustTryWrite(t, c, w(fmt.Sprint("k", i), 1, n))
					synctest.Wait()
				}
				assert.Equal(t, tc.frozen, log.events(), "freezes after writes of sizes %v with FlushSize 100", tc.sizes)
			})
		})
	}
}

// A Written or Durable wait that starts while the flusher is busy is
// served by the next flush as soon as the flusher is free: not at the next
// interval (an hour here) nor at the next write. Real time, real channels:
// a fake clock would jump to the interval and hide a missed wake-up.
func TestGuaranteeWaitDuringFlushServedWhenFlusherFrees(t *testing.T) {
	for _, level := range []Durability{Written, Durable} {
		t.Run(level.String(), func(t *testing.T) {
			f := newRegFlusher()
			block, deltaStarted, release := regBlockFirst()
			f.beforeDelta = func(ctx context.Context, n int64, _ EpochRange) error { return block(ctx, n) }
			log := &frozenLog{}
			cfg := testConfig() // FlushInterval: an hour
			cfg.Observer = log
			c := regNew(t, cfg, f)
			c.Start()
			ctx := deadlineCtx(t)

			ha := mustTryWrite(t, c, w("a", 1, 1))
			_, err := c.Flush(ctx, Applied)
			require.NoError(t, err, "Flush(Applied) of the first write")
			await(t, "FlushDelta of the first delta starts", deltaStarted)

			h := mustTryWrite(t, c, w("b", 2, 1))
			waited := make(chan error, 1) // buffer of 1: the waiter never blocks
			go func() {
				_, err := h.Wait(ctx, level)
				waited <- err
			}()
			regSpin(t, ctx, fmt.Sprintf("the %v wait is listed", level), func() bool {
				return c.p.marks.get(level).minWait.Load() == 2
			})

			release()
			_, err = ha.Wait(ctx, level)
			require.NoError(t, err, "Wait(%v) of the first write", level)
			require.NoError(t, await(t, fmt.Sprintf("Wait(%v) that started during a flush", level), waited))
			assert.Equal(t, []frozenEvent{{FlushExplicit, EpochRange{1, 2}}, {FlushWait, EpochRange{2, 3}}}, log.events(), "freezes")
		})
	}
}

// Watermarks never returns a torn triple: Applied >= Written >= Durable in
// every read while they move. levels are advanced in pipeline order as
// fast as possible, as the coordinator and flusher do, while another
// goroutine reads; a read that loads them in the wrong order is caught
// when the two goroutines run in parallel. The same check then runs
// through a coordinator under load.
func TestGuaranteeWatermarksNeverTorn(t *testing.T) {
	check := func(t *testing.T, reads int, read func() Watermarks, move func(stop <-chan struct{})) {
		t.Helper()
		stop, moved := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(moved)
			move(stop)
		}()
		defer func() {
			close(stop)
			await(t, "the watermarks stop moving", moved)
		}()
		var last Watermarks
		for i := range reads {
			m := read()
			if m.Applied < m.Written || m.Written < m.Durable {
				t.Fatalf("read %d: Watermarks() = %+v; want Applied >= Written >= Durable", i, m)
			}
			if m.Applied < last.Applied || m.Written < last.Written || m.Durable < last.Durable {
				t.Fatalf("read %d: Watermarks() = %+v after %+v; want no watermark to move back", i, m, last)
			}
			last = m
		}
	}
	if runtime.GOMAXPROCS(0) < 2 {
		t.Log("GOMAXPROCS < 2: a torn read is caught only if the reader is preempted between its loads")
	}

	t.Run("levels", func(t *testing.T) {
		var l levels
		check(t, 2_000_000, l.snapshot, func(stop <-chan struct{}) {
			for e := uint64(1); ; e++ {
				select {
				case <-stop:
					return
				default:
				}
				l.applied.advance(e)
				l.written.advance(e)
				l.durable.advance(e)
			}
		})
	})

	t.Run("coordinator", func(t *testing.T) {
		c := regNew(t, testConfig(), newRegFlusher())
		c.Start()
		ctx := deadlineCtx(t)
		check(t, 200_000, c.Watermarks, func(stop <-chan struct{}) {
			ch := c.Channel(defaultChannel)
			for i := uint64(0); ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				h, err := ch.Write(ctx, w("k", i, 1))
				if err != nil {
					return
				}
				if _, err := h.Wait(ctx, Durable); err != nil {
					return
				}
			}
		})
		require.NoError(t, ctx.Err(), "writers stopped by the test deadline")
	})
}

// Pause holds for writes the coordinator already took from the queue but
// has not applied: here a turn stops at FlushSize and the coordinator
// blocks on a full flush queue with the channel's remaining writes taken.
// Once Pause returns, none of them is applied until Resume.
func TestGuaranteePauseHoldsWritesAlreadyTaken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newRegFlusher()
		block, deltaStarted, release := regBlockFirst()
		f.beforeDelta = func(ctx context.Context, n int64, _ EpochRange) error { return block(ctx, n) }
		cfg := testConfig()
		cfg.FlushSize = 10 // every write fills a delta
		cfg.MaxPendingFlushes = 1
		c := regNew(t, cfg, f)
		ch := c.Channel(defaultChannel)

		// Queued before Start, so that the first turn takes them all.
		const writes = 6
		var hs []*WriteHandle[struct{}]
		for i := range writes {
			hs = append(hs, mustTryWrite(t, c, w(fmt.Sprint("k", i), uint64(i), 10)))
		}
		c.Start()
		<-deltaStarted
		synctest.Wait()
		// Epoch 1 is in FlushDelta, 2 queued for it, 3 frozen and waiting
		// for room: the coordinator holds writes 4 to 6, taken.
		require.Equal(t, uint64(3), c.Watermarks().Applied, "applied once the flush queue is full")
		require.Equal(t, writes-3, ch.Len(), "writes accepted and not applied")

		within(t, "Pause", ch.Pause)
		release()
		synctest.Wait()
		assert.Equal(t, uint64(3), c.Watermarks().Applied, "applied after Pause and the flusher freed room")
		for i, h := range hs[3:] {
			assert.False(t, h.Applied(), "write %d applied while paused", i+3)
		}

		ch.Resume()
		synctest.Wait()
		assert.Equal(t, uint64(writes), c.Watermarks().Applied, "applied after Resume")
	})
}

// After a failure the byte budget held by writes is released, wherever
// they were: queued, in the live delta, in frozen deltas waiting for the
// flusher, or in the delta that failed.
func TestGuaranteeBudgetReleasedAfterFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newRegFlusher()
		deltaStarted, fail := make(chan struct{}), make(chan struct{})
		f.beforeDelta = func(ctx context.Context, n int64, _ EpochRange) error {
			if n != 1 {
				return nil
			}
			close(deltaStarted)
			<-fail
			return errors.New("disk on fire")
		}
		cfg := testConfig()
		cfg.MaxBytes = 1000
		cfg.MaxPendingFlushes = 2 // room for both deltas behind the failing one
		c := newRegSized(t, cfg, f)
		ch := c.Channel(defaultChannel)
		c.Start()
		ctx := deadlineCtx(t)

		// The failing delta, one frozen behind it, and one live delta.
		for _, n := range []int{10, 20, 40} {
			_, err := ch.Write(ctx, regSW(fmt.Sprint("k", n), n))
			require.NoError(t, err)
			_, err = c.Flush(ctx, Applied)
			require.NoError(t, err, "Flush(Applied) of the %d-byte write", n)
			if n == 10 {
				<-deltaStarted
			}
		}
		// One held, and one queued on a paused channel.
		_, err := ch.Write(ctx, regSW("live", 80))
		require.NoError(t, err)
		synctest.Wait()
		ch.Pause()
		_, err = ch.Write(ctx, regSW("queued", 160))
		require.NoError(t, err)
		require.Equal(t, int64(10+20+40+80+160), c.Stats().BudgetBytes, "BudgetBytes before the failure")

		close(fail)
		synctest.Wait()
		require.Error(t, c.Err(), "Err() once FlushDelta failed")
		assert.Equal(t, int64(0), c.Stats().BudgetBytes, "BudgetBytes once the coordinator failed")
		require.Error(t, c.Stop(ctx), "Stop() of the failed coordinator")
		assert.Equal(t, int64(0), c.Stats().BudgetBytes, "BudgetBytes after Stop")
	})
}

// Stats timings report the largest duration observed as Max, with Count
// and Total beside it, whatever the order of the observations.
func TestGuaranteeTimingMaxIsTheMaximum(t *testing.T) {
	t.Run("timing", func(t *testing.T) {
		for _, ds := range [][]time.Duration{{3, 7, 5}, {7, 5, 3}, {3, 5, 7}, {0}, {5, 5}} {
			var tm timing
			var total, longest time.Duration
			for _, d := range ds {
				tm.observe(d)
				total += d
				longest = max(longest, d)
			}
			assert.Equal(t, Timing{Count: uint64(len(ds)), Total: total, Max: longest}, tm.load(), "after observing %v", ds)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		var tm timing
		var wg sync.WaitGroup
		const goroutines, each = 4, 1000
		for g := range goroutines {
			wg.Go(func() {
				for i := range each {
					tm.observe(time.Duration(i*goroutines + g))
				}
			})
		}
		within(t, "concurrent observers", wg.Wait)
		got := tm.load()
		assert.Equal(t, uint64(goroutines*each), got.Count, "Count")
		assert.Equal(t, time.Duration(goroutines*each-1), got.Max, "Max")
	})

	t.Run("flusher calls", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			// Fake time: each call lasts exactly as long as it sleeps.
			deltaTimes := []time.Duration{2 * time.Second, 5 * time.Second, 3 * time.Second}
			syncTimes := []time.Duration{4 * time.Second, time.Second, 6 * time.Second}
			f := newRegFlusher()
			f.beforeDelta = func(_ context.Context, n int64, _ EpochRange) error {
				if n <= int64(len(deltaTimes)) {
					time.Sleep(deltaTimes[n-1])
				}
				return nil
			}
			f.beforeStorage = func(_ context.Context, n int64) error {
				if n <= int64(len(syncTimes)) { // Stop's sync is instant
					time.Sleep(syncTimes[n-1])
				}
				return nil
			}
			c := regNew(t, testConfig(), f)
			c.Start()
			for i := range deltaTimes {
				mustTryWrite(t, c, w(fmt.Sprint("k", i), 1, 1))
				_, err := c.Flush(deadlineCtx(t), Durable)
				require.NoError(t, err, "Flush(Durable) %d", i)
				// Let the flusher take the kick this Flush left, so that
				// it cannot serve the next Flush's sync request before that
				// Flush's delta is written (an extra, correct, sync).
				synctest.Wait()
			}
			st := c.Stats()
			assert.Equal(t, Timing{Count: 3, Total: 10 * time.Second, Max: 5 * time.Second}, st.FlushDelta, "Stats().FlushDelta")
			assert.Equal(t, Timing{Count: 3, Total: 11 * time.Second, Max: 6 * time.Second}, st.FlushStorage, "Stats().FlushStorage")
		})
	})
}

// appliedLog is an Observer that counts the writes reported applied.
type appliedLog struct {
	NopObserver
	writes atomic.Int64
}

func (l *appliedLog) Applied(_ string, writes int, _ time.Duration) { l.writes.Add(int64(writes)) }

// With an Observer, every batch applied is reported to it, each write
// once.
func TestGuaranteeObserverSeesEveryApply(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		obs := &appliedLog{}
		cfg := testConfig()
		cfg.Observer = obs
		c := newTestCoordinator(t, cfg, testContext{}, newTestFlusher())
		c.Start()
		for i := range 5 {
			mustTryWrite(t, c, w(fmt.Sprint("k", i), 1, 1))
			synctest.Wait()
		}
		_, err := c.Channel(defaultChannel).WriteBatch(deadlineCtx(t), []testWrite{w("b1", 1, 1), w("b2", 2, 1)})
		require.NoError(t, err)
		synctest.Wait()
		assert.Equal(t, int64(7), obs.writes.Load(), "writes reported to Observer.Applied")
		assert.Equal(t, uint64(7), c.Stats().Channels[0].Applied, "Stats().Channels[0].Applied")
	})
}

// Stats reports the frozen deltas queued for or in the flusher, and
// whether FlushStorage runs, as they are.
func TestGuaranteeStatsPendingAndSyncing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newRegFlusher()
		blockDelta, deltaStarted, releaseDelta := regBlockFirst()
		f.beforeDelta = func(ctx context.Context, n int64, _ EpochRange) error { return blockDelta(ctx, n) }
		blockSync, syncStarted, releaseSync := regBlockFirst()
		f.beforeStorage = blockSync
		c := regNew(t, testConfig(), f)
		c.Start()
		ctx := deadlineCtx(t)

		for i := range 2 {
			mustTryWrite(t, c, w(fmt.Sprint("k", i), 1, 1))
			_, err := c.Flush(ctx, Applied)
			require.NoError(t, err)
		}
		<-deltaStarted
		synctest.Wait()
		st := c.Stats()
		assert.Equal(t, 2, st.PendingFlushes, "PendingFlushes with one delta in FlushDelta and one queued")
		assert.False(t, st.Syncing, "Syncing before any FlushStorage")

		durable := make(chan error, 1) // buffer of 1: the flusher never blocks
		go func() {
			_, err := c.Flush(ctx, Durable)
			durable <- err
		}()
		releaseDelta()
		<-syncStarted
		synctest.Wait()
		st = c.Stats()
		assert.Equal(t, 0, st.PendingFlushes, "PendingFlushes while FlushStorage runs")
		assert.True(t, st.Syncing, "Syncing while FlushStorage runs")

		releaseSync()
		require.NoError(t, <-durable, "Flush(Durable)")
		// The sync wakes Flush before the flusher counts the sync as
		// over: wait for the flusher to go idle.
		synctest.Wait()
		st = c.Stats()
		assert.Equal(t, 0, st.PendingFlushes, "PendingFlushes once idle")
		assert.False(t, st.Syncing, "Syncing once idle")
	})
}

// Flush is served between the coordinator's turns: writes that keep it
// busy without a pause cannot starve a Flush. Here every write applied
// queues another, so the coordinator is never idle.
func TestGuaranteeFlushServedWhileWritesNeverStop(t *testing.T) {
	inj := newFaultInjector()
	var (
		c    *testCoordinator
		more atomic.Bool
	)
	more.Store(true)
	defer more.Store(false)
	inj.applyHook = func(testWrite) {
		if more.Load() {
			// Refused once the queue is full or closed: it is busy anyway.
			_, _ = c.Channel(defaultChannel).TryWrite(w("more", 1, 1))
		}
	}
	c, _ = faultNewCoordinator(t, testConfig(), inj)
	c.Start()
	mustTryWrite(t, c, w("first", 1, 1))
	e, err := c.Flush(deadlineCtx(t), Applied)
	require.NoError(t, err, "Flush(Applied) while writes never stop")
	assert.Positive(t, e, "epoch the Flush covers")
}

// Flush covers every write accepted on an unpaused channel before it was
// called, also those queued while the coordinator was applying others:
// it applies them before it freezes.
func TestGuaranteeFlushCoversWritesQueuedDuringATurn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inj := newFaultInjector()
		applying, release := make(chan struct{}), make(chan struct{})
		inj.applyHook = func(wr testWrite) {
			if wr.key == "first" {
				close(applying)
				<-release
			}
		}
		c, _ := faultNewCoordinator(t, testConfig(), inj)
		c.Start()
		mustTryWrite(t, c, w("first", 1, 1))
		<-applying // the coordinator is in the middle of a turn
		mustTryWrite(t, c, w("second", 2, 1))
		mustTryWrite(t, c, w("third", 3, 1))

		type flushResult struct {
			epoch uint64
			err   error
		}
		flushed := make(chan flushResult, 1) // buffer of 1: the caller never blocks
		go func() {
			e, err := c.Flush(deadlineCtx(t), Applied)
			flushed <- flushResult{e, err}
		}()
		synctest.Wait() // Flush waits for the coordinator
		close(release)
		r := <-flushed
		require.NoError(t, r.err, "Flush(Applied)")
		assert.Equal(t, uint64(3), r.epoch, "epoch Flush(Applied) covers; want the last write accepted before it")
	})
}

// The coordinator applies at most maxWritesPerTurn writes of a channel per
// turn, then gives the next channel its turn: a long queue on one channel
// delays a write on another by one turn at most.
func TestGuaranteeTurnsAreBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.Channels = []string{"long", "short"}
		cfg.QueueCapacity = 2 * maxWritesPerTurn
		c := newTestCoordinator(t, cfg, testContext{}, newTestFlusher())
		long, short := c.Channel("long"), c.Channel("short")
		// Queued before Start: the long channel is listed first.
		const longWrites = maxWritesPerTurn + maxWritesPerTurn/2
		var last *WriteHandle[struct{}]
		for i := range longWrites {
			var err error
			last, err = long.TryWrite(w(fmt.Sprint("l", i), 1, 1))
			require.NoError(t, err)
		}
		h, err := short.TryWrite(w("s", 1, 1))
		require.NoError(t, err)
		c.Start()
		synctest.Wait()

		e, err := h.Epoch(deadlineCtx(t))
		require.NoError(t, err)
		assert.Equal(t, uint64(maxWritesPerTurn+1), e, "epoch of the short channel's write; want right after the long channel's first turn")
		e, err = last.Epoch(deadlineCtx(t))
		require.NoError(t, err)
		assert.Equal(t, uint64(longWrites+1), e, "epoch of the long channel's last write")
	})
}

// Stats counts the writes Apply rejected, single and in batches, beside
// those applied.
func TestGuaranteeStatsCountApplyErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCoordinator(t, testConfig(), testContext{err: errors.New("rejected")}, newTestFlusher())
		ch := c.Channel(defaultChannel)
		c.Start()
		for i := range 2 {
			mustTryWrite(t, c, w(fmt.Sprint("k", i), 1, 1))
			synctest.Wait()
		}
		_, err := ch.WriteBatch(deadlineCtx(t), []testWrite{w("b1", 1, 1), w("b2", 2, 1), w("b3", 3, 1)})
		require.NoError(t, err)
		synctest.Wait()
		st := c.Stats().Channels[0]
		assert.Equal(t, uint64(5), st.Applied, "Stats().Channels[0].Applied")
		assert.Equal(t, uint64(5), st.ApplyErrors, "Stats().Channels[0].ApplyErrors")
	})
}

// Stats().DeltaBytes follows the live delta's EstimateSize after each
// batch, and drops to 0 when the delta is frozen.
func TestGuaranteeStatsDeltaBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCoordinator(t, testConfig(), testContext{}, newTestFlusher())
		c.Start()
		want := 0
		for _, n := range []int{3, 4} {
			mustTryWrite(t, c, w(fmt.Sprint("k", n), 1, n))
			synctest.Wait()
			want += n
			assert.Equal(t, want, c.Stats().DeltaBytes, "DeltaBytes after a write of %d bytes", n)
		}
		_, err := c.Flush(deadlineCtx(t), Applied)
		require.NoError(t, err)
		assert.Equal(t, 0, c.Stats().DeltaBytes, "DeltaBytes once the delta is frozen")
	})
}

// With SyncAlways, every written delta is followed by a FlushStorage,
// though nobody waits for Durable.
func TestGuaranteeSyncAlwaysSyncsEveryDelta(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newTestFlusher()
		cfg := testConfig()
		cfg.Sync = SyncAlways
		c := newTestCoordinator(t, cfg, testContext{}, f)
		c.Start()
		for i := range uint64(3) {
			mustTryWrite(t, c, w(fmt.Sprint("k", i), i, 1))
			_, err := c.Flush(deadlineCtx(t), Written)
			require.NoError(t, err, "Flush(Written) %d", i)
			synctest.Wait()
			assert.Equal(t, Watermarks{i + 1, i + 1, i + 1}, c.Watermarks(), "Watermarks() after delta %d was written", i)
			assert.Equal(t, int(i+1), f.syncCount(), "FlushStorage calls after delta %d was written", i)
		}
	})
}
