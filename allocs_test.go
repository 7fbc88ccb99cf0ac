package coordinator

import (
	"context"
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

// In the steady state a write costs one allocation, its handle: the
// coordinator reuses each channel's buffers, the waiters and the turn's
// bookkeeping. Measured over writes that are each applied before the next
// is made, so that every write is a turn of its own.
func TestWritePathAllocations(t *testing.T) {
	c, err := New(Config{FlushSize: 1 << 30}, newCountDelta, struct{}{}, struct{}{}, countFlusher{})
	require.NoError(t, err)
	stopAtCleanup(t, c, testDeadline)
	c.Start()
	ch := c.Channel(defaultChannel)
	ctx := deadlineCtx(t)
	write := func() {
		h, err := ch.Write(ctx, 1)
		if err == nil {
			_, err = h.Wait(ctx, Applied)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for range 100 { // warm the pools
		write()
	}
	allocs := testing.AllocsPerRun(1000, write)
	t.Logf("%.3f allocations per write", allocs)
	assert.LessOrEqual(t, allocs, 1.1, "allocations per write, waited for at Applied")
}
