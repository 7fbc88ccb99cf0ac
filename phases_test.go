package coordinator

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBenchCyclePhases checks the arithmetic that BenchmarkDurable -phases
// (benchCycle) does on the Observer's events, which the README tells
// applications to repeat, on a pipeline whose phases have known lengths.
// In a synctest bubble only sleeps move the clock: FlushDelta sleeps 2 ms,
// FlushStorage 5 ms, and the writer 1 ms after each Durable wait before it
// writes again, so every write is 2 ms, every sync 5 ms, every gather 1 ms,
// and waking and the hand-off take no time.
func TestBenchCyclePhases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			write  = 2 * time.Millisecond
			sync   = 5 * time.Millisecond
			gather = time.Millisecond
			writes = 4
		)
		f := newTestFlusher()
		f.failDelta = func(int, EpochRange) error { time.Sleep(write); return nil }
		f.failStorage = func(int) error { time.Sleep(sync); return nil }
		cyc := new(benchCycle)
		c := newTestCoordinator(t, cyc.observe(testConfig()), testContext{}, f)
		c.Start()
		ctx := deadlineCtx(t)
		ch := c.Channel(defaultChannel)
		for i := range writes {
			if i > 0 {
				time.Sleep(gather)
			}
			h, err := ch.Write(ctx, w(fmt.Sprint("k", i), 1, 1))
			require.NoError(t, err)
			_, err = h.Wait(ctx, Durable)
			require.NoError(t, err)
		}
		synctest.Wait() // the flusher's last pass is over
		cyc.mu.Lock()
		defer cyc.mu.Unlock()
		each := func(d time.Duration, n int) []time.Duration {
			s := make([]time.Duration, n)
			for i := range s {
				s[i] = d
			}
			return s
		}
		require.Equal(t, each(write, writes), cyc.writes, "write")
		require.Equal(t, each(sync, writes), cyc.syncs, "sync")
		require.Equal(t, each(0, writes), cyc.wake, "wake")
		require.Equal(t, each(0, writes), cyc.handoff, "handoff")
		require.Equal(t, each(gather, writes-1), cyc.gather, "gather (none before the first sync)")
	})
}
