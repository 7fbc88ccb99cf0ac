package coordinator

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// Tests of group formation before a freeze for a waiter
// (Coordinator.gatherReturning). Each calls it on a coordinator that is not
// started, the test goroutine standing in for the coordinator goroutine,
// and makes the returning writers' writes in place of its yields, so the
// number of yields and the group they gather are exact.

type gatherRun struct {
	c        *testCoordinator
	yields   int
	writes   int // writes made so far by the yields
	perYield []int
	sleep    time.Duration // fake time each yield takes
}

// newGatherRun prepares a coordinator whose flusher last synced for
// lastSync and woke returning writers; the i-th yield makes perYield[i]
// writes (none past the end of perYield).
func newGatherRun(t *testing.T, returning int64, lastSync time.Duration, perYield ...int) *gatherRun {
	c := newTestCoordinator(t, testConfig(), testContext{}, newTestFlusher())
	ch := c.Channel(defaultChannel)
	r := &gatherRun{c: c, perYield: perYield}
	c.p.returning.Store(returning)
	c.p.lastSync.Store(int64(lastSync))
	c.gatherYield = func() {
		if r.yields < len(r.perYield) {
			for range r.perYield[r.yields] {
				_, err := ch.TryWrite(w(fmt.Sprint("k", r.writes), 1, 1))
				require.NoError(t, err)
				r.writes++
			}
		}
		r.yields++
		if r.sleep > 0 {
			time.Sleep(r.sleep)
		}
	}
	return r
}

// gather runs gatherReturning and returns how many writes it applied.
func (r *gatherRun) gather() int {
	before := r.c.next
	r.c.gatherReturning()
	return int(r.c.next - before)
}

// It keeps yielding while writers it expects have not written again, and
// stops once they all have, though others may still come.
func TestGatherUntilTheReturningWritersWrote(t *testing.T) {
	r := newGatherRun(t, 3, time.Hour, 1, 1, 1, 1, 1)
	require.Equal(t, 3, r.gather(), "writes gathered")
	require.Equal(t, 3, r.yields)
	require.Zero(t, r.c.p.returning.Load(), "returning writers left")
}

// Writes count against the returning writers whatever their number per
// yield, never below zero.
func TestGatherCountsEveryWriteAgainstTheReturning(t *testing.T) {
	r := newGatherRun(t, 3, time.Hour, 2, 4, 1)
	require.Equal(t, 6, r.gather())
	require.Equal(t, 2, r.yields)
	require.Zero(t, r.c.p.returning.Load())
}

// A yield that brings no write ends the gathering, though writers are
// still expected.
func TestGatherStopsAtAYieldWithoutWrites(t *testing.T) {
	r := newGatherRun(t, 5, time.Hour, 1, 1, 0, 1)
	require.Equal(t, 2, r.gather())
	require.Equal(t, 3, r.yields)
	require.Equal(t, int64(3), r.c.p.returning.Load())
}

// The first yield is made even with no writer expected: it admits writers
// the count does not know of.
func TestGatherYieldsOnceWithNobodyExpected(t *testing.T) {
	r := newGatherRun(t, 0, time.Hour, 2, 1)
	require.Equal(t, 2, r.gather())
	require.Equal(t, 1, r.yields)
}

// It gathers for no longer than the last sync took.
func TestGatherForAtMostTheLastSync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newGatherRun(t, 100, 2*time.Millisecond, 1, 1, 1, 1, 1)
		r.sleep = time.Millisecond
		require.Equal(t, 2, r.gather(), "writes gathered in 2ms, a yield per millisecond")
		require.Equal(t, 2, r.yields)
	})
}

// The flusher counts the Durable waiters each sync wakes as returning
// writers, and the coordinator takes their writes off the count.
func TestReturningCountsTheWokenWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCoordinator(t, testConfig(), testContext{}, newTestFlusher())
		ch := c.Channel(defaultChannel)
		c.Start()
		ctx := t.Context()
		const writers = 3
		done := make(chan error, writers)
		ch.Pause() // every waiter is parked before any write is applied
		for i := range writers {
			h, err := ch.Write(ctx, w(fmt.Sprint("k", i), 1, 1))
			require.NoError(t, err)
			go func() {
				_, err := h.Wait(ctx, Durable)
				done <- err
			}()
		}
		synctest.Wait()
		ch.Resume()
		for range writers {
			require.NoError(t, <-done)
		}
		synctest.Wait()
		require.Equal(t, int64(writers), c.p.returning.Load(), "woken Durable waiters")
		h, err := ch.Write(ctx, w("again", 1, 1))
		require.NoError(t, err)
		_, err = h.Wait(ctx, Applied)
		require.NoError(t, err)
		synctest.Wait() // the coordinator counts it after completing the handle
		require.Equal(t, int64(writers-1), c.p.returning.Load(), "after one of them wrote again")
	})
}
