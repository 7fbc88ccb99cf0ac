package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/groupcommit/coordinator"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var errDiskFull = errors.New("no space left on device")

// failingFlusher writes through to a Flusher until fail is set; from then
// on every FlushDelta fails, as on a full disk.
type failingFlusher struct {
	*Flusher
	fail atomic.Bool
}

func (f *failingFlusher) FlushDelta(ctx context.Context, fr *Frozen, epochs coordinator.EpochRange) (*Index, error) {
	if f.fail.Load() {
		return nil, errDiskFull
	}
	return f.Flusher.FlushDelta(ctx, fr, epochs)
}

// TestRecoverAfterFailure follows the recovery recipe: after the flusher
// failed for good, stop the coordinator, close the flusher, reopen the
// directory, and start a new coordinator with FirstEpoch one past the last
// epoch recovered (NewKV sets it). Every write acknowledged Durable before
// the failure is there, the writes whose waits failed are not, and epochs
// continue without reusing one.
func TestRecoverAfterFailure(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	put := func(c *KV, key, value string) (uint64, error) {
		h, err := c.Channel("default").Write(ctx, Put(key, []byte(value)))
		if err != nil {
			return 0, err
		}
		if _, err := h.Wait(ctx, coordinator.Durable); err != nil {
			return 0, err
		}
		return h.Epoch(ctx)
	}

	// A first run writes three keys durably, then storage fails.
	var ff *failingFlusher
	c, f, err := newKV(coordinator.Config{}, mustOpen(t, dir), func(f *Flusher) coordinator.Flusher[*Frozen, *Index] {
		ff = &failingFlusher{Flusher: f}
		return ff
	})
	require.NoError(t, err, "newKV")
	c.Start()
	for i := range 3 {
		e, err := put(c, fmt.Sprintf("durable-%d", i), "v")
		require.NoError(t, err, "put before the failure")
		assert.Equal(t, uint64(i+1), e, "epoch of durable-%d", i)
	}
	ff.fail.Store(true)
	_, err = put(c, "lost", "v")
	require.ErrorIs(t, err, coordinator.ErrFailed, "a Durable wait on a write whose FlushDelta failed")
	require.ErrorIs(t, err, errDiskFull)
	assert.Equal(t, uint64(3), c.Watermarks().Durable, "Durable watermark after the failure")

	// 1. Stop: it reports the failure; nothing is left running.
	err = c.Stop(ctx)
	require.ErrorIs(t, err, coordinator.ErrFailed, "Stop after the failure")
	require.NoError(t, f.Close(), "closing the flusher's files")

	// 2. Reopen storage: only what the segments hold counts.
	rec := mustOpen(t, dir)
	assert.Equal(t, uint64(3), rec.LastEpoch, "last epoch recovered")
	assert.Empty(t, rec.Discarded, "segments set aside")
	wantKeys(t, rec.Index, map[string]string{"durable-0": "v", "durable-1": "v", "durable-2": "v", "lost": ""})

	// 3. A new coordinator with FirstEpoch = LastEpoch+1 (NewKV sets it):
	// the watermarks start at the recovered epoch and epochs continue.
	c2, f2, err := NewKV(coordinator.Config{}, rec)
	require.NoError(t, err, "NewKV after the failure")
	defer f2.Close()
	c2.Start()
	assert.Equal(t, coordinator.Watermarks{Applied: 3, Written: 3, Durable: 3}, c2.Watermarks(), "watermarks of the new coordinator")
	e, err := put(c2, "after", "w")
	require.NoError(t, err, "put after recovery")
	assert.Equal(t, uint64(4), e, "the first epoch after recovery")
	require.NoError(t, c2.Stop(ctx), "Stop")

	rec = mustOpen(t, dir)
	assert.Equal(t, uint64(4), rec.LastEpoch, "last epoch after the second run")
	wantKeys(t, rec.Index, map[string]string{"durable-0": "v", "durable-2": "v", "lost": "", "after": "w"})
}
