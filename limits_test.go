package coordinator

// This file checks the documented limits at their exact edges: a byte
// budget filled to the byte, sizes that add up to the largest int64,
// FirstEpoch at its maximum, the recycled waiter cache at its bound, and
// that the budget, once writers stop waiting for it, neither freezes nor
// refuses anything.

import (
	"fmt"
	"math"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A write fits when it fills the byte budget exactly; one more byte does
// not.
func TestLimitBudgetFilledExactly(t *testing.T) {
	cfg := testConfig()
	cfg.MaxBytes = 100
	c := newRegSized(t, cfg, newRegFlusher())
	ch := c.Channel(defaultChannel)
	// Not started: nothing is released, so the budget only fills.
	for _, n := range []int{60, 40} {
		_, err := ch.TryWrite(regSW(fmt.Sprint("k", n), n))
		require.NoError(t, err, "TryWrite of %d bytes with %d held of 100", n, c.Stats().BudgetBytes)
	}
	_, err := ch.TryWrite(regSW("over", 1))
	require.ErrorIs(t, err, ErrBackpressure, "TryWrite of 1 byte with the budget full")
	assert.Equal(t, int64(100), c.Stats().BudgetBytes, "BudgetBytes")
}

// While no writer waits for budget and TryWrite found room, the budget
// asks for no freeze; once writers waited and were admitted, it refuses
// nothing that fits.
func TestLimitBudgetIdleAfterWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := &frozenLog{}
		cfg := testConfig()
		cfg.MaxBytes = 10
		cfg.Observer = log
		c := newRegSized(t, cfg, newRegFlusher())
		ch := c.Channel(defaultChannel)
		c.Start()
		ctx := deadlineCtx(t)

		for i := range 3 {
			_, err := ch.TryWrite(regSW(fmt.Sprint("small", i), 1))
			require.NoError(t, err)
		}
		synctest.Wait()
		require.Empty(t, log.events(), "freezes with 3 of 10 budget bytes held and nobody waiting")

		// Fill the budget; a writer waits for it and is admitted once the
		// live delta is frozen and written.
		_, err := ch.TryWrite(regSW("fill", 7))
		require.NoError(t, err)
		admitted := make(chan error, 1) // buffer of 1: the writer never blocks
		go func() {
			_, err := ch.Write(ctx, regSW("waits", 10))
			admitted <- err
		}()
		synctest.Wait()
		require.NoError(t, await(t, "the Write waiting for budget", admitted))
		_, err = c.Flush(ctx, Written)
		require.NoError(t, err, "Flush(Written)")
		require.Equal(t, int64(0), c.Stats().BudgetBytes, "BudgetBytes once everything is written")

		_, err = ch.TryWrite(regSW("after", 10))
		assert.NoError(t, err, "TryWrite of the whole budget once it is free again")
	})
}

// addSize sums sizes up to the largest int64 and refuses negative sizes
// and overflow.
func TestLimitAddSize(t *testing.T) {
	for _, tc := range []struct {
		total, n, want int64
		ok             bool
	}{
		{0, 0, 0, true},
		{5, 0, 5, true},
		{5, 1, 6, true},
		{0, -1, 0, false},
		{5, -1, 5, false},
		{math.MaxInt64 - 5, 5, math.MaxInt64, true},
		{math.MaxInt64 - 4, 5, math.MaxInt64 - 4, false},
		{math.MaxInt64, 0, math.MaxInt64, true},
		{math.MaxInt64, 1, math.MaxInt64, false},
	} {
		got, ok := addSize(tc.total, tc.n)
		assert.Equal(t, tc.want, got, "addSize(%d, %d)", tc.total, tc.n)
		assert.Equal(t, tc.ok, ok, "addSize(%d, %d) ok", tc.total, tc.n)
	}
}

// A batch of zero-size writes is accepted; a batch whose sizes overflow,
// or with a negative size, is refused, saying which.
func TestLimitBatchSizes(t *testing.T) {
	cfg := testConfig()
	cfg.MaxBytes = 100
	c := newRegSized(t, cfg, newRegFlusher())
	ch := c.Channel(defaultChannel)
	_, err := ch.WriteBatch(deadlineCtx(t), []regSizedWrite{regSW("a", 0), regSW("b", 0)})
	require.NoError(t, err, "WriteBatch of zero-size writes")
	_, err = ch.WriteBatch(deadlineCtx(t), []regSizedWrite{regSW("a", math.MaxInt), regSW("b", 1)})
	require.ErrorIs(t, err, ErrInvalidSize, "WriteBatch whose sizes overflow")
	assert.ErrorContains(t, err, "add up past the int64 range", "WriteBatch whose sizes overflow")
	_, err = ch.WriteBatch(deadlineCtx(t), []regSizedWrite{regSW("a", 1), regSW("b", -1)})
	require.ErrorIs(t, err, ErrInvalidSize, "WriteBatch with a negative size")
	assert.ErrorContains(t, err, "write size -1", "WriteBatch with a negative size")
}

// FirstEpoch may be as large as 1<<62, not beyond.
func TestLimitFirstEpoch(t *testing.T) {
	for _, tc := range []struct {
		first uint64
		ok    bool
	}{{1 << 62, true}, {1<<62 + 1, false}} {
		cfg := testConfig()
		cfg.FirstEpoch = tc.first
		f := newTestFlusher()
		c, err := New(cfg, newTestDelta, testContext{}, f.storage.snapshot(), f)
		if c != nil {
			stopAtCleanup(t, c, testDeadline)
		}
		if tc.ok {
			require.NoError(t, err, "New with FirstEpoch %d", tc.first)
			assert.Equal(t, Watermarks{tc.first - 1, tc.first - 1, tc.first - 1}, c.Watermarks(), "Watermarks() with FirstEpoch %d", tc.first)
		} else {
			require.Error(t, err, "New with FirstEpoch %d", tc.first)
		}
	}
}

// The waiter cache keeps at most waiterCacheMax waiters and hands them
// back.
func TestLimitWaiterCache(t *testing.T) {
	var c waiterCache
	for range waiterCacheMax + 10 {
		c.put(&fifoWaiter{ready: make(chan struct{}, 1)})
	}
	require.Len(t, c.free, waiterCacheMax, "cached waiters after %d puts", waiterCacheMax+10)
	w := c.free[len(c.free)-1]
	assert.Same(t, w, c.get(), "get() returns the last waiter put")
	assert.Len(t, c.free, waiterCacheMax-1, "cached waiters after a get")
}

// A starved budget asks for a freeze only when the live delta holds budget
// bytes to release: here the budget is held by writes queued on a paused
// channel, and the live delta holds only writes of size 0.
func TestLimitBudgetFreezesOnlyWhatReleasesBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := &frozenLog{}
		cfg := testConfig()
		cfg.Channels = []string{"paused", "free"}
		cfg.MaxBytes = 10
		cfg.Observer = log
		c := newRegSized(t, cfg, newRegFlusher())
		paused, free := c.Channel("paused"), c.Channel("free")
		paused.Pause()
		c.Start()

		_, err := paused.TryWrite(regSW("held", 10))
		require.NoError(t, err)
		_, err = free.TryWrite(regSW("empty", 0))
		require.NoError(t, err)
		synctest.Wait()
		_, err = free.TryWrite(regSW("refused", 1))
		require.ErrorIs(t, err, ErrBackpressure, "TryWrite with the budget held by a paused channel")
		synctest.Wait()
		assert.Empty(t, log.events(), "freezes of a live delta holding no budget bytes")
	})
}

// A writer waiting for budget bytes holds its queue slot: the queue is
// full for the writers behind it, who are refused as such.
func TestLimitWriterWaitingForBytesHoldsItsSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.QueueCapacity = 2
		cfg.MaxBytes = 10
		c := newRegSized(t, cfg, newRegFlusher())
		ch := c.Channel(defaultChannel)
		// Not started: nothing is applied, so nothing is released.
		_, err := ch.TryWrite(regSW("fills the budget", 10))
		require.NoError(t, err)
		go func() { _, _ = ch.Write(deadlineCtx(t), regSW("waits for bytes", 5)) }()
		synctest.Wait()

		_, err = ch.TryWrite(regSW("behind", 0))
		require.ErrorIs(t, err, ErrBackpressure, "TryWrite with one slot accepted and one held by a writer waiting for bytes")
		st := c.Stats().Channels[0]
		assert.Equal(t, uint64(1), st.RejectedFull, "RejectedFull")
		assert.Equal(t, uint64(0), st.RejectedBudget, "RejectedBudget")
	})
}

// Once the writers blocked on a full queue are admitted, the queue takes
// writes again without blocking.
func TestLimitQueueFreeAfterBlockedWriters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.QueueCapacity = 1
		c := newTestCoordinator(t, cfg, testContext{}, newTestFlusher())
		ch := c.Channel(defaultChannel)
		mustTryWrite(t, c, w("fills the queue", 1, 1))
		admitted := make(chan error, 1) // buffer of 1: the writer never blocks
		go func() {
			_, err := ch.Write(deadlineCtx(t), w("blocked", 2, 1))
			admitted <- err
		}()
		synctest.Wait()
		c.Start()
		require.NoError(t, await(t, "the blocked Write", admitted))
		synctest.Wait()
		_, err := ch.TryWrite(w("after", 3, 1))
		assert.NoError(t, err, "TryWrite once the blocked writer was admitted and applied")
	})
}

// EpochRange is half-open: it contains Start, not End.
func TestLimitEpochRange(t *testing.T) {
	r := EpochRange{Start: 3, End: 6}
	for e, want := range map[uint64]bool{2: false, 3: true, 5: true, 6: false} {
		assert.Equal(t, want, r.Contains(e), "%v.Contains(%d)", r, e)
	}
	assert.Equal(t, uint64(3), r.Len(), "%v.Len()", r)
	assert.Equal(t, uint64(5), r.Last(), "%v.Last()", r)
	assert.Equal(t, "[3, 6)", r.String(), "String()")
	assert.False(t, EpochRange{Start: 4, End: 4}.Contains(4), "an empty range contains nothing")
}
