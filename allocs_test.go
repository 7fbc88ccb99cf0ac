package coordinator

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// countDelta counts its writes and allocates nothing.
type countDelta struct{ n int }

func (d *countDelta) Apply(int) (struct{}, error)       { d.n++; return struct{}{}, nil }
func (d *countDelta) EstimateSize() int                 { return d.n }
func (d *countDelta) Freeze() (int, struct{}, struct{}) { return d.n, struct{}{}, struct{}{} }
func (d *countDelta) Reader() struct{}                  { return struct{}{} }
func newCountDelta(struct{}) *countDelta                { return &countDelta{} }
func (countFlusher) FlushDelta(context.Context, int, EpochRange) (struct{}, error) {
	return struct{}{}, nil
}
func (countFlusher) FlushStorage(context.Context) error { return nil }

type countFlusher struct{}

// startCountCoordinator starts a coordinator of countDeltas that freezes
// only when asked, and returns its default channel.
func startCountCoordinator(t *testing.T) *Channel[int, struct{}] {
	c, err := New(Config{FlushSize: 1 << 30}, newCountDelta, struct{}{}, struct{}{}, countFlusher{})
	require.NoError(t, err)
	stopAtCleanup(t, c, testDeadline)
	c.Start()
	return c.Channel(defaultChannel)
}

// allocsPerWrite warms the pools, then returns the allocations of a write
// to ch and a wait for it at level with waitCtx, one write at a time. It
// measures on another goroutine, failing t if that does not finish within
// testDeadline: waitCtx may have no deadline.
func allocsPerWrite(t *testing.T, ch *Channel[int, struct{}], level Durability, waitCtx context.Context) (allocs float64) {
	ctx := deadlineCtx(t)
	var failed error
	write := func() {
		if failed != nil {
			return
		}
		h, err := ch.Write(ctx, 1)
		if err == nil {
			_, err = h.Wait(waitCtx, level)
		}
		failed = err
	}
	within(t, fmt.Sprintf("writes waited for at %v", level), func() {
		for range 100 {
			write()
		}
		allocs = testing.AllocsPerRun(1000, write)
	})
	require.NoError(t, failed)
	return allocs
}

// In the steady state a write costs one allocation, its handle: the
// coordinator reuses each channel's buffers, the waiters and the turn's
// bookkeeping. Measured over writes that are each applied before the next
// is made, so that every write is a turn of its own.
func TestWritePathAllocations(t *testing.T) {
	ch := startCountCoordinator(t)
	allocs := allocsPerWrite(t, ch, Applied, deadlineCtx(t))
	t.Logf("%.3f allocations per write", allocs)
	assert.LessOrEqual(t, allocs, 1.1, "allocations per write, waited for at Applied")
}

// A wait that parks with a context that can be canceled costs nothing more
// than one with a context that cannot: the waiter selects on the context's
// channel rather than registering with the context. Measured at Durable,
// where every wait parks until its write's delta is written and synced.
func TestParkedWaitAllocations(t *testing.T) {
	ch := startCountCoordinator(t)
	ctx := deadlineCtx(t)
	require.NotNil(t, ctx.Done(), "a context that can be canceled")
	background := allocsPerWrite(t, ch, Durable, context.Background())
	cancelable := allocsPerWrite(t, ch, Durable, ctx)
	t.Logf("%.3f allocations per durable write with context.Background, %.3f with a deadline", background, cancelable)
	assert.LessOrEqual(t, cancelable, background+0.1, "allocations per durable write: a deadline against none")
}
