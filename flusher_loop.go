// This file is the flusher goroutine: FlushDelta for each frozen delta in
// order, the syncs (FlushStorage) that Durable demand, SyncAlways and Stop
// ask for, and the retry policy around both. It runs on that one goroutine
// (or on the goroutine that takes over after a runtime.Goexit) and owns no
// Coordinator field of its own: it receives frozen deltas on flushQ, reads
// Config, and publishes through the pipeline (watermarks, busy) and the
// view hub.

package coordinator

import (
	"context"
	"errors"
	"time"
)

// runFlusher is the flusher goroutine.
func (c *Coordinator[W, R, FV, DV, S]) runFlusher() {
	c.supervise("flusher goroutine", c.flushDone, c.flushLoop, c.discardFlushes)
}

// discardFlushes takes the frozen deltas of a failed coordinator until the
// flush queue is closed, releasing what they hold.
func (c *Coordinator[W, R, FV, DV, S]) discardFlushes() {
	for job := range c.flushQ {
		c.flushDelta(job) // returns at once: the coordinator failed
	}
}

func (c *Coordinator[W, R, FV, DV, S]) flushLoop() {
	for {
		woken := 0 // waiters this pass woke
		select {
		case job, ok := <-c.flushQ:
			if !ok {
				c.finalSync()
				return
			}
			woken += c.flushDelta(job)
		case <-c.p.kick:
		}
		// Write what is already queued before syncing, so the sync covers
		// it. The queue is bounded, so a sync waits at most that long.
		for n := len(c.flushQ); n > 0; n-- {
			job, ok := <-c.flushQ
			if !ok {
				c.finalSync()
				return
			}
			woken += c.flushDelta(job)
		}
		woken += c.maybeSync()
		c.p.expectReturning(woken)
		if c.p.busy.Load() == 0 {
			c.p.wakeCoordinator()
		}
	}
}

// finalSync is Stop's last FlushStorage, unless the coordinator failed.
func (c *Coordinator[W, R, FV, DV, S]) finalSync() {
	if !c.p.isFailed() {
		c.sync()
	}
}

// flushDelta writes one frozen delta, publishes the view, then advances the
// written watermark (invariant 3). It returns the number of waiters woken.
func (c *Coordinator[W, R, FV, DV, S]) flushDelta(job *flushJob[S]) (woken int) {
	defer c.p.busy.Add(-1)
	if c.budget != nil {
		defer c.budget.release(job.reserved)
	}
	if c.p.isFailed() {
		return 0 // lost with the failure; its waiters were failed already
	}
	var snap S
	attempts, d, err := c.call("FlushDelta", job.epochs, func(ctx context.Context) error {
		var err error
		snap, err = job.flush(ctx, job.epochs)
		return err
	})
	c.stats.flushDelta.observe(d)
	info := FlushInfo{Reason: job.reason, Epochs: job.epochs, Bytes: job.bytes, Duration: d, Attempts: attempts}
	if err != nil {
		fe := &FlushError{Op: "FlushDelta", Epochs: job.epochs, Attempts: attempts, Err: err}
		info.Err = fe
		c.cfg.Observer.Flushed(info)
		c.fail(fe)
		return 0
	}
	var satisfied wakeList
	c.hub.written(job.epochs, snap, func() { satisfied = c.p.marks.written.raise(job.epochs.Last()) })
	woken = satisfied.wake()
	c.cfg.Observer.Flushed(info)
	return woken
}

// maybeSync calls FlushStorage if the policy or a waiter asks for it. It
// runs after every batch of deltas the flusher writes, and a Durable waiter
// whose epoch is written is reason enough: however many deltas keep
// coming, a sync waits for at most one batch (MaxPendingFlushes+1 deltas)
// after its waiter's delta is written. It returns the number of waiters
// woken.
func (c *Coordinator[W, R, FV, DV, S]) maybeSync() int {
	if c.p.isFailed() {
		return 0
	}
	forced := c.p.syncReq.Load() > c.p.syncDone.Load()
	always := c.cfg.Sync == SyncAlways && c.p.marks.written.Load() > c.p.marks.durable.Load()
	if forced || always || c.p.syncDemand() {
		return c.sync()
	}
	return 0
}

// sync calls FlushStorage and advances the durable watermark to what was
// written before it started. It returns the number of waiters woken.
func (c *Coordinator[W, R, FV, DV, S]) sync() (woken int) {
	c.p.busy.Add(busySync)
	defer c.p.busy.Add(-busySync)
	req := c.p.syncReq.Load()
	written, durable := c.p.marks.written.Load(), c.p.marks.durable.Load()
	epochs := EpochRange{Start: durable + 1, End: written + 1}
	attempts, d, err := c.call("FlushStorage", epochs, c.syncFn)
	c.stats.flushStorage.observe(d)
	c.p.lastSync.Store(int64(d))
	info := SyncInfo{Durable: written, Duration: d, Attempts: attempts}
	if err != nil {
		fe := &FlushError{Op: "FlushStorage", Epochs: epochs, Attempts: attempts, Err: err}
		info.Err = fe
		c.cfg.Observer.Synced(info)
		c.fail(fe)
		return 0
	}
	c.stats.syncs.Add(1)
	var satisfied wakeList
	c.hub.unlessFailed(func() {
		satisfied = c.p.marks.durable.raise(written)
		c.p.syncDone.advance(req)
	})
	woken = satisfied.wake()
	c.cfg.Observer.Synced(info)
	return woken
}

// call runs a flusher method with panic recovery, slow-call reporting and
// the retry policy. It returns the attempts made and the total time.
func (c *Coordinator[W, R, FV, DV, S]) call(op string, epochs EpochRange, f func(context.Context) error) (int, time.Duration, error) {
	start := time.Now()
	if c.cfg.SlowFlushThreshold > 0 {
		t := time.AfterFunc(c.cfg.SlowFlushThreshold, func() {
			c.stats.slowFlushes.Add(1)
			c.cfg.Observer.SlowFlush(op, epochs, time.Since(start))
			if l := c.logger(); l != nil {
				l.Warn("coordinator: slow flush", "op", op, "epochs", epochs.String(), "running", time.Since(start))
			}
		})
		defer t.Stop()
	}
	backoff := c.cfg.Retry.Backoff
	for attempt := 1; ; attempt++ {
		err := c.guard(op, func() error { return f(c.flushCtx) })
		if err == nil {
			return attempt, time.Since(start), nil
		}
		var pe *PanicError
		retry := attempt < c.cfg.Retry.Attempts && !errors.As(err, &pe) && c.flushCtx.Err() == nil &&
			(c.cfg.Retry.Retryable == nil || c.cfg.Retry.Retryable(err))
		if !retry {
			return attempt, time.Since(start), err
		}
		c.stats.retries.Add(1)
		if l := c.logger(); l != nil {
			l.Warn("coordinator: flusher call failed, retrying", "op", op, "epochs", epochs.String(),
				"attempt", attempt, "backoff", backoff, "err", err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-c.flushCtx.Done():
			t.Stop()
			return attempt, time.Since(start), err
		}
		backoff = min(2*backoff, c.cfg.Retry.MaxBackoff)
	}
}
