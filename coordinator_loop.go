// This file is the coordinator goroutine: its loop, the round-robin turns
// that take writes from the channel queues, Apply, Freeze, explicit flush
// requests and shutdown. It runs on that one goroutine (or, after a
// runtime.Goexit in user code, on the goroutine that takes over from it)
// and owns the Coordinator fields listed under "Owned by the coordinator
// goroutine": eng, next, deltaStart, timer, active, flushReqs, lastSize,
// liveBytes, rejected and turnWrites. It is the only sender on flushQ and
// closes it.

package coordinator

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"time"
)

// run is the coordinator goroutine.
func (c *Coordinator[W, R, FV, DV, S]) run() {
	c.supervise("coordinator goroutine", c.runDone, c.loop, c.failedLoop)
}

func (c *Coordinator[W, R, FV, DV, S]) loop() {
	defer c.timer.Stop()
	spin := false // the last round applied writes; see spinForWork
	for {
		if c.p.isFailed() {
			c.failedLoop()
			return
		}
		if c.p.timerFired.Load() {
			c.freeze(FlushInterval)
		}
		worked := c.round()
		froze := c.freezeOnDemand()
		if c.p.attn.Load() != 0 {
			// A Flush caller or Stop is waiting: serve it between turns
			// so that writers cannot starve it.
			select {
			case req := <-c.ctrl:
				c.handleFlush(req)
			case <-c.stopping:
				c.shutdown()
				return
			default:
			}
		}
		if worked {
			// The writers waiting for a freeze come back after a sync,
			// not within microseconds: no spinning for them.
			spin = !froze
			continue
		}
		if spin {
			spin = false
			if !froze && c.spinForWork() {
				continue
			}
		}
		c.p.sleeping.Store(true)
		if c.hasWork() || c.p.timerFired.Load() {
			c.p.sleeping.Store(false)
			continue
		}
		if c.p.attn.Load() == 0 {
			<-c.p.wake
		} else {
			select {
			case <-c.p.wake:
			case req := <-c.ctrl:
				c.handleFlush(req)
			case <-c.stopping:
				c.p.sleeping.Store(false)
				c.shutdown()
				return
			}
		}
		c.p.sleeping.Store(false)
	}
}

// spinForWork is called when a round finds no writes after one that
// applied some. Writers the last turns completed usually write again
// within a microsecond or two, often on the same processor: yielding to
// them a few times before sleeping spares both sides a sleep and a
// wake-up. It reports whether there is work (or the timer, a Flush or
// Stop) to serve.
//
// While yields are slow (pipeline.yieldsSlow) it does not spin, but
// probes them when a probe is due (probeYields).
func (c *Coordinator[W, R, FV, DV, S]) spinForWork() bool {
	if c.p.yieldsSlow.Load() {
		return c.probeYields() || c.workArrived()
	}
	timed := timedYields()
	var start time.Time
	if timed {
		start = time.Now()
	}
	for range idleYields {
		runtime.Gosched()
		if c.workArrived() {
			return true
		}
	}
	if timed {
		c.p.sawYields(start, 0) // they brought no write
	}
	return false
}

// probeYields finds out, once a probe is due, whether yields are still
// slow: it yields once, applies what the yield brought and clears
// yieldsSlow unless the yield was slow (slowYield). The first probe comes
// minProbe after the coordinator first finds yields slow, each further one
// twice as long after the last, up to maxProbe: a probe that finds yields
// slow costs the coordinator a time slice of each busy goroutine. It
// reports whether it applied writes.
func (c *Coordinator[W, R, FV, DV, S]) probeYields() bool {
	start := time.Now()
	if c.probeEvery == 0 {
		c.probeEvery, c.probeAt = minProbe, start.Add(minProbe)
		return false
	}
	if start.Before(c.probeAt) {
		return false
	}
	before := c.next
	yield(c.probeYield)
	c.round()
	if !slowYield(time.Since(start), c.next-before) {
		c.p.yieldsSlow.Store(false)
		c.probeEvery = 0
	} else {
		c.probeEvery = min(2*c.probeEvery, maxProbe)
		c.probeAt = time.Now().Add(c.probeEvery)
	}
	return c.next != before
}

// workArrived reports whether the loop has something to serve.
func (c *Coordinator[W, R, FV, DV, S]) workArrived() bool {
	return c.hasWork() || c.p.timerFired.Load() || c.p.attn.Load() != 0
}

const (
	// idleYields is how many times spinForWork yields.
	idleYields = 4
	// minProbe and maxProbe bound the time between two probes of
	// probeYields. A probe that finds yields slow costs the coordinator a
	// time slice of each busy goroutine.
	minProbe = time.Millisecond
	maxProbe = time.Second
)

// hasWork reports whether an unpaused channel has writes or a waiter's
// demand can be served now.
func (c *Coordinator[W, R, FV, DV, S]) hasWork() bool {
	return !c.ready.empty() || c.activeWork() || c.demandReady() || c.p.isFailed()
}

// demandReady reports whether the live delta should be frozen for a waiter
// or for writers waiting for byte budget: it holds writes and the flusher
// is idle.
func (c *Coordinator[W, R, FV, DV, S]) demandReady() bool {
	return c.next > c.deltaStart && c.p.busy.Load() == 0 &&
		((!c.p.lazy && c.p.freezeDemand()) || c.budgetStarved())
}

// budgetStarved reports whether writers wait for byte budget that only a
// freeze of the live delta can release.
func (c *Coordinator[W, R, FV, DV, S]) budgetStarved() bool {
	return c.budget != nil && c.liveBytes > 0 && c.budget.isStarved()
}

// freezeOnDemand freezes the live delta if demandReady, and reports
// whether it froze.
func (c *Coordinator[W, R, FV, DV, S]) freezeOnDemand() bool {
	if !c.demandReady() || c.p.isFailed() {
		return false
	}
	if c.budgetStarved() {
		c.freeze(FlushBudget)
		return true
	}
	c.gatherReturning()
	if c.demandReady() { // gathering may have frozen by size
		c.freeze(FlushWait)
	}
	return true
}

// gatherReturning lets the writers the flusher woke join the group about
// to be frozen. A writer woken at Durable usually writes again at once, but
// it runs only after the coordinator: the flusher wakes the coordinator
// last, so the scheduler runs it first. Freezing right away would take only
// the writes that arrived during the sync, and leave the woken writers to
// the next group: the writers would split into two cohorts that
// alternate, each synced every other time. (With one processor it is
// worse: each group holds the one writer that ran, while the others wait
// in the run queue behind the coordinator and the flusher.) So the
// coordinator yields, letting runnable goroutines (the woken writers) run,
// and applies what they wrote; it yields again while writers the flusher
// woke have not written again (pipeline.returning). It stops as soon as a
// yield brings no new write, so a freeze with nobody else about costs one
// yield (a fraction of a microsecond, against a flush), and each further
// yield costs at least one write. The first yield is unconditional: the
// count misses writers that became runnable otherwise, such as new ones,
// and with one processor a single run of the queue admits them all.
//
// It also stops once it has gathered for as long as the last sync took.
// Gathering delays the whole group to save the writers it gathers a wait
// for the next sync; when the writers' own work takes longer than a sync
// (many writers, or a fast disk), the pipeline does better to sync what it
// has and let the work of the rest overlap that sync.
func (c *Coordinator[W, R, FV, DV, S]) gatherReturning() {
	if c.p.yieldsSlow.Load() {
		// Each yield would cost a time slice of every busy goroutine;
		// now and then, find out whether that is still so.
		if c.probeYields(); c.p.yieldsSlow.Load() {
			return
		}
	}
	budget := time.Duration(c.p.lastSync.Load())
	start := time.Now()
	for !c.p.isFailed() {
		before, yielded := c.next, time.Now()
		yield(c.gatherYield)
		c.round()
		if c.p.sawYields(yielded, c.next-before) {
			return
		}
		if c.next == before || c.p.returning.Load() == 0 || time.Since(start) >= budget {
			return
		}
	}
}

// round gives every active channel one turn, in the order they became
// ready. Channels stay active while they have writes, and for a few rounds
// after (so that a channel its writers keep refilling is not listed and
// delisted on every turn); then they leave the list, and their next write
// lists them again. The cost of a round follows the channels that had work
// lately, not the configured ones.
func (c *Coordinator[W, R, FV, DV, S]) round() bool {
	if !c.ready.empty() {
		c.active = c.ready.take(c.active)
	}
	worked := false
	kept := c.active[:0]
	for _, q := range c.active {
		switch {
		case c.turn(q, false, maxWritesPerTurn) > 0:
			worked = true
			q.idleRounds = 0
		case q.pausedFlag.Load():
			q.idleRounds = idleRoundsToDelist // paused: delist now
		case q.depth.Load() == 0:
			q.idleRounds++
		}
		if q.idleRounds >= idleRoundsToDelist && !c.delist(q) {
			continue
		}
		kept = append(kept, q)
	}
	clear(c.active[len(kept):])
	c.active = kept
	return worked
}

// idleRoundsToDelist is how many rounds in a row a channel is found without
// writes before it leaves the active list.
const idleRoundsToDelist = 16

// delist takes q off the ready list, unless writes arrived meanwhile; it
// reports whether q stays listed. Writers list a channel when they find
// it unlisted, so clearing the mark before looking at depth leaves no
// write behind.
func (c *Coordinator[W, R, FV, DV, S]) delist(q *queue[W, R]) bool {
	if c.delisting != nil {
		c.delisting(q.name)
	}
	q.listed.Store(false)
	q.idleRounds = 0
	if q.depth.Load() > 0 && !q.pausedFlag.Load() && q.listed.CompareAndSwap(false, true) {
		return true
	}
	return false
}

// activeWork reports whether an active channel has writes to apply.
func (c *Coordinator[W, R, FV, DV, S]) activeWork() bool {
	for _, q := range c.active {
		if q.depth.Load() > 0 && !q.pausedFlag.Load() {
			return true
		}
	}
	return false
}

// drain applies every slot accepted before it began on the unpaused
// channels (all channels when ignorePause is set). Slots accepted later
// may be applied too, but do not keep it going, so writers that keep
// writing cannot make it run forever.
func (c *Coordinator[W, R, FV, DV, S]) drain(ignorePause bool) {
	qs := c.queues
	if !ignorePause {
		// Only listed channels have unpaused writes; the others are idle
		// or paused.
		if !c.ready.empty() {
			c.active = c.ready.take(c.active)
		}
		qs = c.active
	}
	for _, q := range qs {
		want := q.acceptedSlots()
		for q.slotsApplied < want && c.turn(q, ignorePause, 0) > 0 {
		}
	}
}

// turn applies up to limit slots (0: no limit) of q and returns how many it
// applied. It freezes the delta when it reaches FlushSize.
func (c *Coordinator[W, R, FV, DV, S]) turn(q *queue[W, R], ignorePause bool, limit int) int {
	if q.heldPos >= len(q.held) && q.depth.Load() == 0 || c.p.isFailed() {
		return 0
	}
	q.applyMu.Lock()
	if !q.take(ignorePause) {
		q.applyMu.Unlock()
		return 0
	}
	t := applyTurn[W, R]{q: q, first: c.next}
	if c.timed {
		t.start = time.Now()
	}
	c.rejected, c.turnWrites = 0, 0
	lo, hi := q.heldPos, len(q.held)
	if limit > 0 && hi-lo > limit {
		hi = lo + limit
	}
	t.ops = q.held[lo:hi]
	full := c.applyOps(&t)
	c.endTurn(&t)
	if t.panicErr == nil && full {
		c.freeze(FlushSize)
	}
	return t.n
}

// applyTurn is one turn's progress, kept outside applyOps's frame so that
// the turn can be finished even when user code ends the goroutine.
type applyTurn[W, R any] struct {
	q        *queue[W, R]
	ops      []op[W, R]
	n        int    // ops consumed, including one that panicked
	first    uint64 // the first epoch of the turn
	start    time.Time
	panicErr error
}

// applyOps applies t.ops in order until they are done or the delta reaches
// FlushSize, and reports the latter. It records in t how many ops it
// consumed and the panic, if any. Handles get their results but are not
// completed. If Apply calls runtime.Goexit, applyOps finishes the turn
// itself before the goroutine unwinds.
func (c *Coordinator[W, R, FV, DV, S]) applyOps(t *applyTurn[W, R]) (full bool) {
	returned := false
	defer func() {
		if returned {
			return
		}
		r := recover()
		var err error
		if r != nil {
			err = &PanicError{Op: "Apply", Value: r, Stack: debug.Stack()}
		} else {
			err = goexitError("Apply")
		}
		t.panicErr = err
		o := &t.ops[t.n]
		if o.bh != nil {
			o.bh.epochs.End = c.next
			o.bh.err = err
		} else {
			o.h.epoch, o.h.err = c.next-1, err
		}
		t.n++
		if r == nil {
			c.endTurn(t) // Goexit: nothing after this frame will run
		}
	}()
	limit := c.cfg.FlushSize
	ops := t.ops
	for ; t.n < len(ops); t.n++ {
		o := &ops[t.n]
		// Account for the slot as it is consumed, before Apply can panic.
		c.turnWrites += o.writes()
		c.liveBytes += o.bytes // 0 without a byte budget
		if o.bh == nil {
			e := c.next
			c.next++
			r, err := c.eng.apply(o.write)
			o.h.epoch, o.h.result = e, r
			if err != nil {
				o.h.err = &ApplyError{Epoch: e, Err: err}
				c.rejected++
			}
		} else {
			bh := o.bh
			bh.results = make([]Result[R], len(o.batch))
			bh.epochs = EpochRange{Start: c.next, End: c.next}
			for i, w := range o.batch {
				e := c.next
				c.next++
				bh.epochs.End = c.next
				r, err := c.eng.apply(w)
				bh.results[i] = Result[R]{Epoch: e, Value: r}
				if err != nil {
					bh.results[i].Err = &ApplyError{Epoch: e, Err: err}
					c.rejected++
				}
			}
		}
		if c.lastSize = c.eng.size(); c.lastSize >= limit {
			t.n++
			returned = true
			return true
		}
	}
	returned = true
	return false
}

// endTurn publishes what a turn applied: it releases the channel, advances
// the applied watermark, fails the coordinator if user code panicked, and
// only then completes the handles (invariant 3).
func (c *Coordinator[W, R, FV, DV, S]) endTurn(t *applyTurn[W, R]) {
	q, n := t.q, t.n
	q.heldPos += n
	writes := int(c.next - t.first)
	q.depth.Add(-int64(c.turnWrites))
	q.applyMu.Unlock()

	c.p.marks.applied.advance(c.next - 1) // no change if the turn applied nothing
	if t.panicErr != nil {
		c.fail(t.panicErr)
	}
	ops := t.ops[:n]
	for i := range ops {
		if o := &ops[i]; o.bh != nil {
			o.bh.done.complete()
		} else {
			o.h.complete()
		}
		if c.handleDone != nil {
			c.handleDone()
		}
	}
	// Drop the references to applied writes now, so an idle channel does
	// not keep them (and their handles) alive beyond the byte budget.
	clear(ops)
	q.slotsApplied += uint64(n)
	q.releaseSlots()
	q.applied.Add(uint64(writes))
	c.p.returned(writes)
	if c.rejected > 0 {
		q.applyErrors.Add(uint64(c.rejected))
	}
	if c.timed {
		d := time.Since(t.start)
		c.stats.apply.observe(d)
		c.cfg.Observer.Applied(q.name, writes, d)
	} else {
		c.stats.apply.count.Add(1)
	}
	if t.panicErr == nil {
		c.stats.deltaBytes.Store(int64(c.lastSize))
	}
}

// freeze freezes the live delta, if it holds any write, publishes the view
// and hands the frozen delta to the flusher, waiting for room in the flush
// queue. It resets the flush interval either way.
func (c *Coordinator[W, R, FV, DV, S]) freeze(reason FlushReason) {
	defer func() {
		c.p.timerFired.Store(false)
		c.timer.Reset(c.cfg.FlushInterval)
	}()
	if c.next == c.deltaStart || c.p.isFailed() {
		return
	}
	epochs := EpochRange{Start: c.deltaStart, End: c.next}
	start := time.Now()
	var (
		flush   flushFunc[S]
		fv      FV
		current DV
		bytes   int
	)
	err := c.guard("Freeze", func() error {
		bytes = c.eng.size()
		flush, fv = c.eng.freeze()
		current = c.eng.reader()
		return nil
	})
	if err != nil {
		c.fail(err)
		return
	}
	c.deltaStart = c.next
	c.hub.freeze(FrozenDelta[FV]{View: fv, Epochs: epochs}, current)
	c.p.frozenThrough.Store(epochs.Last())
	c.lastSize = 0
	c.stats.deltaBytes.Store(0)
	d := time.Since(start)
	c.stats.freeze.observe(d)
	c.stats.flushes[reason].Add(1)
	c.cfg.Observer.Frozen(reason, epochs, bytes, d)

	c.p.busy.Add(1)
	job := &flushJob[S]{epochs: epochs, reason: reason, bytes: bytes, reserved: c.liveBytes, flush: flush}
	c.liveBytes = 0
	if c.budget != nil {
		c.budget.starved.Store(false)
	}
	start = time.Now()
	select {
	case c.flushQ <- job:
	default:
		// The pipeline is full: this is where backpressure starts.
		c.flushQ <- job
	}
	wait := time.Since(start)
	c.stats.dispatch.observe(wait)
	c.cfg.Observer.Dispatched(epochs, wait)
}

// handleFlush serves req together with every other Flush request already
// waiting to be taken: one drain and one freeze cover them all, so that
// concurrent flushes share a delta, and Durable ones the sync after it.
func (c *Coordinator[W, R, FV, DV, S]) handleFlush(req flushReq) {
	reqs := append(c.flushReqs[:0], req)
	for more := true; more; {
		select {
		case r := <-c.ctrl:
			reqs = append(reqs, r)
		default:
			more = false
		}
	}
	c.drain(false)
	c.freeze(FlushExplicit)
	reply := flushReply{epoch: c.next - 1}
	if err := c.p.err(); err != nil {
		reply = flushReply{err: err}
	}
	for _, r := range reqs {
		r.reply <- reply
	}
	clear(reqs)
	c.flushReqs = reqs[:0]
}

// shutdown applies everything accepted, freezes it and closes the flush
// queue. The queues were closed by Stop, so draining ends.
func (c *Coordinator[W, R, FV, DV, S]) shutdown() {
	for !c.p.isFailed() {
		before := c.next
		c.drain(true)
		if c.next == before && c.queuesEmpty() {
			break
		}
	}
	c.freeze(FlushShutdown)
	if err := c.p.err(); err != nil {
		c.dropAll(err)
	}
	close(c.flushQ)
}

func (c *Coordinator[W, R, FV, DV, S]) queuesEmpty() bool {
	for _, q := range c.queues {
		if q.depth.Load() > 0 {
			return false
		}
	}
	return true
}

// dropAll refuses every later write, fails every accepted write that was
// not applied, and fails the applied watermark: nothing more will be
// applied. Called by the coordinator goroutine after a failure.
func (c *Coordinator[W, R, FV, DV, S]) dropAll(err error) {
	refused := fmt.Errorf("coordinator: write not accepted: %w", err)
	dropped := fmt.Errorf("coordinator: write not applied: %w", err)
	for _, q := range c.queues {
		q.applyMu.Lock()
		q.close(refused, dropped)
		q.applyMu.Unlock()
	}
	c.p.marks.applied.fail(err)
}

// failedLoop runs after a failure: it fails every queued write and answers
// requests with the failure until Stop.
func (c *Coordinator[W, R, FV, DV, S]) failedLoop() {
	err := c.p.failErr
	c.dropAll(err)
	if c.budget != nil {
		c.budget.release(c.liveBytes) // the live delta is lost with the failure
		c.liveBytes = 0
	}
	for {
		select {
		case req := <-c.ctrl:
			req.reply <- flushReply{err: err}
		case <-c.stopping:
			close(c.flushQ)
			return
		}
	}
}
