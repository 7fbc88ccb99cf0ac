package coordinator

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// Tests of slow yields (pipeline.yieldsSlow): when other goroutines want
// the processor, a yield costs a time slice of each, and waiters must park
// instead of yielding, the coordinator sleep instead of spinning, and
// freeze without gathering. BenchmarkBusy measures the effect; these check
// the decisions, in fake time.

// A spell of yields counts as slow once it took longer than slowYields.
func TestYieldsSlowAfterASlowSpell(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &pipeline{}
		start := time.Now()
		time.Sleep(slowYields)
		p.sawYields(start, 0)
		require.False(t, p.yieldsSlow.Load(), "a spell of exactly slowYields")
		require.Equal(t, spinYields, p.spinYields(), "waiter's yields while yields are fast")
		time.Sleep(time.Nanosecond)
		p.sawYields(start, 1)
		require.False(t, p.yieldsSlow.Load(), "a spell that brought a write")
		p.sawYields(start, 0)
		require.True(t, p.yieldsSlow.Load(), "a spell longer than slowYields that brought none")
		require.Zero(t, p.spinYields(), "waiter's yields while yields are slow")
	})
}

// While yields are slow the coordinator yields only to probe them: first
// minProbe after it finds them slow, then after twice as long as the last
// wait each time a probe finds them still slow (a yield longer than
// slowYields that brought no write), up to maxProbe; a probe that finds
// them fast clears the flag.
func TestProbeYieldsBacksOffUntilYieldsAreFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCoordinator(t, testConfig(), testContext{}, newTestFlusher())
		probes := 0
		probeTakes := slowYields + time.Nanosecond // how long the next probe's yield takes
		c.probeYield = func() {
			probes++
			time.Sleep(probeTakes)
		}
		c.p.yieldsSlow.Store(true)

		c.probeYields()
		require.Zero(t, probes, "no probe as soon as yields are found slow")
		time.Sleep(minProbe - time.Nanosecond)
		c.probeYields()
		require.Zero(t, probes, "no probe before minProbe")

		wait := minProbe
		for want := 1; wait < maxProbe; want++ {
			time.Sleep(time.Nanosecond) // probeAt is reached
			c.probeYields()
			require.Equal(t, want, probes, "a probe once its time came (wait %v)", wait)
			require.True(t, c.p.yieldsSlow.Load(), "a slow probe leaves yields slow")
			wait = min(2*wait, maxProbe)
			time.Sleep(wait - time.Nanosecond)
			c.probeYields()
			require.Equal(t, want, probes, "no probe before %v after the last", wait)
		}
		require.Equal(t, maxProbe, c.probeEvery, "the wait stops growing at maxProbe")

		probeTakes = slowYields
		time.Sleep(time.Nanosecond)
		c.probeYields()
		require.False(t, c.p.yieldsSlow.Load(), "a probe whose yield took slowYields")
		require.Zero(t, c.probeEvery, "the next slow spell starts from minProbe again")
	})
}

// While yields are slow the coordinator freezes for a waiter without
// gathering: each yield would cost a time slice of every busy goroutine.
func TestGatherNotWhileYieldsAreSlow(t *testing.T) {
	r := newGatherRun(t, 3, time.Hour, 1, 1, 1)
	r.c.p.yieldsSlow.Store(true)
	require.Zero(t, r.gather(), "writes gathered")
	require.Zero(t, r.yields)
	require.Equal(t, int64(3), r.c.p.returning.Load())
}

// While yields are slow, spinForWork probes instead of spinning: with the
// probe not yet due it returns at once, reporting whether work is there.
func TestSpinForWorkOnlyProbesWhileYieldsAreSlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCoordinator(t, testConfig(), testContext{}, newTestFlusher())
		probes := 0
		c.probeYield = func() { probes++ }
		c.p.yieldsSlow.Store(true)
		require.False(t, c.spinForWork(), "no work")
		require.Zero(t, probes)
		mustTryWrite(t, c, w("k", 1, 1))
		require.True(t, c.spinForWork(), "a write queued")
		require.Zero(t, probes)
		time.Sleep(minProbe)
		require.True(t, c.spinForWork(), "a write queued")
		require.Equal(t, 1, probes, "a probe once minProbe passed")
		require.Equal(t, uint64(2), c.next, "the probe applied the write")
		require.False(t, c.p.yieldsSlow.Load(), "the probe's yield came back at once")
	})
}

// A gathering yield that takes longer than slowYields plus yieldPerWrite
// for each write it brought went to goroutines other than the writers:
// yields are slow from then on, and the gathering stops.
func TestGatherFindsYieldsSlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newGatherRun(t, 10, time.Hour, 2, 1, 5)
		r.sleep = slowYields + 2*yieldPerWrite // the allowance of a yield that brings 2 writes
		require.Equal(t, 3, r.gather(), "writes gathered")
		require.Equal(t, 2, r.yields, "the second yield, with one write, was slow")
		require.True(t, r.c.p.yieldsSlow.Load())
	})
}

// The gathering probes slow yields too, so that a coordinator that only
// ever freezes for waiters learns when they are fast again.
func TestGatherProbesSlowYields(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newGatherRun(t, 3, time.Hour, 1, 1, 1)
		r.c.probeYield = func() {}
		r.c.p.yieldsSlow.Store(true)
		require.Zero(t, r.gather(), "first sight of slow yields: no probe yet")
		time.Sleep(minProbe)
		require.Equal(t, 3, r.gather(), "after a probe that found yields fast")
		require.False(t, r.c.p.yieldsSlow.Load())
	})
}

// A waiter on a write handle times some of its spells of yields (one in
// yieldSampleRate); one that took longer than slowYields makes yields slow
// for everyone, and the next waits park without yielding.
func TestWaiterFindsYieldsSlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCoordinator(t, testConfig(), testContext{}, newTestFlusher())
		yields := 0
		c.p.spinYield = func() {
			yields++
			time.Sleep(slowYields / spinYields) // a spell of spinYields: just past slowYields
			time.Sleep(time.Nanosecond)
		}
		ch := c.Channel(defaultChannel)
		c.Start()
		ctx := t.Context()
		// (3/4)^200: the chance that no spell is timed is below 1e-24.
		for i := 0; i < 200 && !c.p.yieldsSlow.Load(); i++ {
			ch.Pause()
			h, err := ch.Write(ctx, w(fmt.Sprint("k", i), 1, 1))
			require.NoError(t, err)
			done := make(chan error, 1)
			go func() {
				_, err := h.Wait(ctx, Applied)
				done <- err
			}()
			time.Sleep(2 * slowYields) // its yields take fake time
			synctest.Wait()            // it yielded spinYields times, then parked
			require.Equal(t, spinYields*(i+1), yields, "yields of wait %d", i)
			ch.Resume()
			require.NoError(t, <-done)
		}
		require.True(t, c.p.yieldsSlow.Load(), "yields slow after a timed slow spell")
		before := yields
		ch.Pause()
		h, err := ch.Write(ctx, w("last", 1, 1))
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() {
			_, err := h.Wait(ctx, Applied)
			done <- err
		}()
		time.Sleep(2 * slowYields)
		synctest.Wait()
		require.Equal(t, before, yields, "a wait while yields are slow parks without yielding")
		ch.Resume()
		require.NoError(t, <-done)
	})
}
