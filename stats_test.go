package coordinator

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFlushCounts checks that each reason's count is found by its field, by
// Of and by All, and that the counts print with their reasons.
func TestFlushCounts(t *testing.T) {
	t.Parallel()
	n := FlushCounts{Size: 1, Interval: 2, Explicit: 3, Wait: 4, Shutdown: 5, Budget: 6}
	want := []struct {
		reason FlushReason
		count  uint64
	}{
		{FlushSize, 1}, {FlushInterval, 2}, {FlushExplicit, 3},
		{FlushWait, 4}, {FlushShutdown, 5}, {FlushBudget, 6},
	}
	i := 0
	for r, c := range n.All() {
		require.Less(t, i, len(want), "All() yields more reasons than there are")
		assert.Equal(t, want[i].reason, r, "All() reason %d", i)
		assert.Equal(t, want[i].count, c, "All() count of %v", r)
		assert.Equal(t, want[i].count, n.Of(r), "Of(%v)", r)
		i++
	}
	assert.Equal(t, len(want), i, "All() reasons")
	assert.Zero(t, n.Of(FlushReason(200)), "Of(an unknown reason)")
	assert.Equal(t, uint64(21), n.Total(), "Total()")
	assert.Equal(t, "size=1 interval=2 explicit=3 wait=4 shutdown=5 budget=6", n.String())
	assert.Equal(t, "size=0 interval=0 explicit=0 wait=29 shutdown=0 budget=0", fmt.Sprint(FlushCounts{Wait: 29}))

	for r := range n.All() {
		if r == FlushBudget {
			break // stopping early must not panic
		}
	}
}

// TestStatsFlushes checks that Stats counts explicit flushes by reason.
func TestStatsFlushes(t *testing.T) {
	t.Parallel()
	c := newTestCoordinator(t, testConfig(), testContext{}, newTestFlusher())
	c.Start()
	ctx := deadlineCtx(t)
	for i := range 3 {
		_, err := c.Channel("default").Write(ctx, w("k", uint64(i), 1))
		require.NoError(t, err, "Write")
		_, err = c.Flush(ctx, Written)
		require.NoError(t, err, "Flush(Written)")
	}
	got := c.Stats().Flushes
	assert.Equal(t, FlushCounts{Explicit: 3}, got, "Stats().Flushes = %v", got)
	stop(t, c)
	assert.Equal(t, uint64(3), c.Stats().Flushes.Total(), "Stats().Flushes.Total() after Stop with nothing left to write")
}

func ExampleFlushCounts() {
	n := FlushCounts{Wait: 29} // as c.Stats().Flushes reports it
	fmt.Println(n)
	fmt.Println(n.Wait, n.Of(FlushWait), n.Total())
	// Output:
	// size=0 interval=0 explicit=0 wait=29 shutdown=0 budget=0
	// 29 29 29
}

// TestFlushCountsAllocs checks that reading the counts by reason, as metrics
// exporters do on every collection, allocates nothing.
func TestFlushCountsAllocs(t *testing.T) {
	n := FlushCounts{Size: 1, Wait: 29}
	var sum uint64
	allocs := testing.AllocsPerRun(100, func() {
		for r, c := range n.All() {
			sum += c + n.Of(r)
		}
		sum += n.Total()
	})
	assert.Zero(t, allocs, "allocations per All, Of and Total")
	assert.NotZero(t, sum) // the loop was not optimized away
}
