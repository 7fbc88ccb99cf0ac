package coordinatortest

// This file holds the driver that executes one workload against the real
// coordinator: opening and stopping stores, performing operations, and the
// goroutine that reads views meanwhile.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/groupcommit/coordinator"
)

// record is a write the coordinator applied.
type record[W any] struct {
	w        W
	rejected bool
}

// pending is a write or batch waiting for its epochs.
type pending[W, R any] struct {
	ws    []W
	one   *coordinator.WriteHandle[R]
	batch *coordinator.BatchHandle[R]
}

// frozenKey names a reading of the frozen deltas from epochs.End-1 down,
// over the snapshot of the epochs through written.
type frozenKey struct {
	epochs  coordinator.EpochRange
	written uint64
}

// runner executes one workload. Its fields are owned by the driver, the
// goroutine that calls execute; the coordinator's goroutines and the
// reading goroutine touch only w (guarded by its own lock), h (read-only)
// and values captured before they started.
type runner[W, R, C, F, FV, DV, S, M any] struct {
	h   Harness[W, R, C, F, FV, DV, S, M]
	o   options
	dir string
	w   *watch

	hist    map[uint64]record[W] // every applied write still in the store's history
	applied uint64               // the last epoch applied
	durable uint64               // the last epoch acknowledged Durable
	clean   bool                 // the last coordinator stopped without error
	frozen  map[frozenKey]M      // readings of frozen layers, to see them change

	// The current era: one store and its coordinator.
	store      *Store[W, R, C, F, FV, DV, S]
	c          *coordinator.Coordinator[W, R, FV, DV, S]
	era        eraConfig
	first      uint64
	paused     []bool
	queued     [][]pending[W, R]
	empty      DV
	readerKick chan struct{} // capacity 1: a kick waiting is enough
	readerStop chan struct{}
	readerDone chan struct{}
}

// execute runs one workload in a new directory under tmp and returns the
// first broken contract, or nil. Whatever happens, it stops what it started.
func execute[W, R, C, F, FV, DV, S, M any](h Harness[W, R, C, F, FV, DV, S, M], o options, tmp string, wl workload[W]) (f *failure) {
	dir, err := os.MkdirTemp(tmp, "store-")
	if err != nil {
		return &failure{contract: "setup", detail: err.Error(), op: atFirstOpen}
	}
	defer os.RemoveAll(dir)
	r := &runner[W, R, C, F, FV, DV, S, M]{
		h: h, o: o, dir: dir, w: &watch{},
		hist: map[uint64]record[W]{}, clean: true, frozen: map[frozenKey]M{},
	}
	defer func() {
		if f != nil {
			r.abandon()
		}
	}()
	r.w.setOp(atFirstOpen)
	if f := r.open(wl.first); f != nil {
		return r.located(f, atFirstOpen)
	}
	for i, o := range wl.ops {
		r.w.setOp(i)
		r.kickReader()
		if f := r.do(o); f != nil {
			return r.located(f, i)
		}
		if f := r.w.first(); f != nil {
			return f
		}
		if f := r.check(); f != nil {
			return r.located(f, i)
		}
	}
	r.w.setOp(atFinal)
	if f := r.restart(false, r.era); f != nil {
		return r.located(f, atFinal)
	}
	return r.located(r.shutdown(false), atFinal)
}

// located returns the failure to report for f, found during operation op:
// the first one a wrapper recorded, if any, since it saw the cause.
func (r *runner[W, R, C, F, FV, DV, S, M]) located(f *failure, op int) *failure {
	if f == nil {
		return nil
	}
	if wf := r.w.first(); wf != nil {
		return wf // a wrapper saw the cause first
	}
	f.op = op
	return f
}

// fail returns a failure; execute locates it.
func (r *runner[W, R, C, F, FV, DV, S, M]) fail(contract, format string, args ...any) *failure {
	return &failure{contract: contract, detail: fmt.Sprintf(format, args...)}
}

// ctx returns a context bounding one blocking call.
func (r *runner[W, R, C, F, FV, DV, S, M]) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), r.o.timeout)
}

// callFailed turns the error of a coordinator call into a failure: a hang,
// a flusher failure, or something else.
func (r *runner[W, R, C, F, FV, DV, S, M]) callFailed(call string, err error) *failure {
	if errors.Is(err, context.DeadlineExceeded) {
		return r.fail("liveness", "%s did not return within %v (a Delta or Flusher call that blocks holds the whole pipeline)\n%s", call, r.o.timeout, goroutines())
	}
	var fe *coordinator.FlushError
	if errors.As(err, &fe) {
		return r.fail("Flusher", "%s failed: %v%s", call, err, r.retryHint())
	}
	var pe *coordinator.PanicError
	if errors.As(err, &pe) {
		return r.fail("panic", "%s failed: %s panicked: %v\n%s", call, pe.Op, pe.Value, pe.Stack)
	}
	return r.fail("coordinator", "%s failed: %v", call, err)
}

// retryHint names the flusher calls the kit failed after they had
// succeeded, which a failure may come from.
func (r *runner[W, R, C, F, FV, DV, S, M]) retryHint() string {
	acks := r.w.acks()
	if len(acks) == 0 {
		return ""
	}
	parts := make([]string, len(acks))
	for i, a := range acks {
		parts[i] = a.String()
	}
	return fmt.Sprintf(" (the kit failed FlushDelta after the store's FlushDelta had written epochs %s, and the coordinator called it again: FlushDelta must be safe to call again with the same delta)", strings.Join(parts, ", "))
}

func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// open opens the store in r.dir, starts a coordinator on it and checks what
// it recovered.
func (r *runner[W, R, C, F, FV, DV, S, M]) open(era eraConfig) *failure {
	st, err := r.h.Open(r.dir)
	if err != nil {
		return r.fail("Open", "Open(%q) = %v%s", r.dir, err, r.retryHint())
	}
	if st == nil || st.NewDelta == nil || st.Flusher == nil {
		return r.fail("Open", "Open returned a Store without NewDelta or Flusher")
	}
	r.store, r.era = st, era // abandon closes it if what follows fails
	r.first = st.LastEpoch + 1
	cfg := era.config()
	cfg.FirstEpoch = r.first
	r.w.startEra(r.first)
	c, err := coordinator.New(cfg, wrapNewDelta(r.w, st.NewDelta), st.Initial, st.Snapshot, coordinator.Flusher[F, S](&checkedFlusher[F, S]{f: st.Flusher, w: r.w}))
	if err != nil {
		return r.fail("Open", "coordinator.New with FirstEpoch %d = %v", r.first, err)
	}
	r.c = c
	r.empty = st.NewDelta(st.Initial).Reader()
	r.w.mu.Lock()
	r.w.onFreeze = r.freezeHook(c, r.empty)
	r.w.mu.Unlock()
	r.paused = make([]bool, era.channels)
	r.queued = make([][]pending[W, R], era.channels)
	if f := r.checkRecovered(st.LastEpoch); f != nil {
		return f
	}
	c.Start()
	r.readerKick, r.readerStop, r.readerDone = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	go r.readLoop(c, r.readerKick, r.readerStop, r.readerDone)
	return nil
}

// freezeHook returns the watch's onFreeze for coordinator c: it reads a
// frozen view over the view of the moment, before the coordinator publishes
// it, and returns a check that reads the same layers again and fails if
// they read differently. It runs on the coordinator goroutine, and the
// check on the flusher goroutine.
func (r *runner[W, R, C, F, FV, DV, S, M]) freezeHook(c *coordinator.Coordinator[W, R, FV, DV, S], empty DV) func(any) func() {
	read, equal := r.h.Read, r.equal
	return func(x any) func() {
		fv := x.(FV)
		v := c.View()
		if v.Err != nil {
			return nil
		}
		stack := coordinator.View[FV, DV, S]{
			Current:  empty,
			Frozen:   append([]coordinator.FrozenDelta[FV]{{View: fv}}, v.Frozen...),
			Snapshot: v.Snapshot,
			Written:  v.Written,
		}
		before, err := read(&stack)
		if err != nil {
			return nil
		}
		return func() {
			after, err := read(&stack)
			if err == nil && !equal(before, after) {
				r.w.fail("Freeze", "a frozen view, over the snapshot of epochs through %d, read %s when Freeze returned it, and %s when its delta reached FlushDelta, after the next delta had been created and taken writes: a frozen view must not share state with the next delta",
					v.Written, short(before), short(after))
			}
		}
	}
}

// readLoop reads views while the workload writes, so that the race
// detector sees Read (and so Reader) run concurrently with Apply. It reads
// a few views each time the driver starts an operation, rather than
// spinning, so that a store with costly reads does not starve the
// goroutines it races with.
func (r *runner[W, R, C, F, FV, DV, S, M]) readLoop(c *coordinator.Coordinator[W, R, FV, DV, S], kick, stop, done chan struct{}) {
	defer close(done)
	defer func() {
		if p := recover(); p != nil {
			r.w.fail("Reader", "Read panicked on a view read while writes were applied: %v", p)
		}
	}()
	for {
		select {
		case <-stop:
			return
		case <-kick:
		}
		for range readsPerOp {
			_, _ = r.h.Read(c.View()) // errors are allowed: the view may be stale
			runtime.Gosched()
		}
	}
}

// readsPerOp is how many views the reading goroutine reads per operation.
const readsPerOp = 4

// kickReader lets the reading goroutine read while an operation runs.
func (r *runner[W, R, C, F, FV, DV, S, M]) kickReader() {
	select {
	case r.readerKick <- struct{}{}:
	default: // still reading
	}
}

func (r *runner[W, R, C, F, FV, DV, S, M]) stopReader() {
	if r.readerStop != nil {
		close(r.readerStop)
		<-r.readerDone
		r.readerStop = nil
	}
}

// do performs one operation.
func (r *runner[W, R, C, F, FV, DV, S, M]) do(o op[W]) *failure {
	ch := o.ch % r.era.channels
	switch o.kind {
	case opWrite, opBatch:
		return r.write(ch, o.ws, o.kind == opBatch)
	case opPause:
		r.c.Channel(channelName(ch)).Pause()
		r.paused[ch] = true
	case opResume:
		r.c.Channel(channelName(ch)).Resume()
		r.paused[ch] = false
		return r.resolve(ch, false)
	case opFlush:
		ctx, cancel := r.ctx()
		defer cancel()
		e, err := r.c.Flush(ctx, o.level)
		if err != nil {
			return r.callFailed(fmt.Sprintf("Flush(%v)", o.level), err)
		}
		if o.level == coordinator.Durable {
			r.durable = max(r.durable, e)
		}
	case opWait:
		if r.applied < r.first {
			return nil // nothing applied by this coordinator yet
		}
		ctx, cancel := r.ctx()
		defer cancel()
		if err := r.c.WaitFor(ctx, o.level, r.applied); err != nil {
			return r.callFailed(fmt.Sprintf("WaitFor(%v, %d)", o.level, r.applied), err)
		}
		if o.level == coordinator.Durable {
			r.durable = max(r.durable, r.applied)
		}
	case opFreezeOver:
		return r.freezeOver(ch, o.ws)
	case opFault:
		r.w.arm(o.fault, 1)
	case opFatal:
		return r.fatal(o.era)
	case opRestart, opCrash:
		return r.restart(o.kind == opCrash, o.era)
	}
	return nil
}

func (r *runner[W, R, C, F, FV, DV, S, M]) write(ch int, ws []W, batch bool) *failure {
	if r.paused[ch] && len(r.queued[ch]) >= pausedLimit {
		return nil // keep the paused queue from filling up
	}
	ctx, cancel := r.ctx()
	defer cancel()
	c := r.c.Channel(channelName(ch))
	p := pending[W, R]{ws: ws}
	var err error
	if batch {
		p.batch, err = c.WriteBatch(ctx, ws)
	} else {
		p.one, err = c.Write(ctx, ws[0])
	}
	if err != nil {
		return r.callFailed("Write", err)
	}
	r.queued[ch] = append(r.queued[ch], p)
	if r.paused[ch] {
		return nil
	}
	return r.resolve(ch, false)
}

// resolve waits for the epochs of the writes queued on ch and records them.
// With lenient, writes that were never applied are dropped silently (the
// coordinator failed or was aborted).
func (r *runner[W, R, C, F, FV, DV, S, M]) resolve(ch int, lenient bool) *failure {
	ctx, cancel := r.ctx()
	defer cancel()
	for _, p := range r.queued[ch] {
		if p.one != nil {
			e, err := p.one.Epoch(ctx)
			var ae *coordinator.ApplyError
			switch {
			case err == nil || errors.As(err, &ae):
				r.add(e, p.ws[0], err != nil)
			case errors.Is(err, context.DeadlineExceeded):
				return r.callFailed("waiting for a write to be applied", err)
			case !lenient:
				return r.callFailed("Write", err)
			}
			continue
		}
		_, err := p.batch.Epochs(ctx)
		switch {
		case err == nil:
			res, err := p.batch.Wait(ctx, coordinator.Applied)
			if err != nil {
				return r.callFailed("WriteBatch", err)
			}
			for i, x := range res {
				r.add(x.Epoch, p.ws[i], x.Err != nil)
			}
		case errors.Is(err, context.DeadlineExceeded):
			return r.callFailed("waiting for a batch to be applied", err)
		case !lenient:
			return r.callFailed("WriteBatch", err)
		}
	}
	r.queued[ch] = r.queued[ch][:0]
	return nil
}

func (r *runner[W, R, C, F, FV, DV, S, M]) add(e uint64, w W, rejected bool) {
	r.hist[e] = record[W]{w: w, rejected: rejected}
	r.applied = max(r.applied, e)
}

// freezeOver freezes the live delta with the flusher held back, so that the
// frozen delta stays in the view while the next delta takes writes.
func (r *runner[W, R, C, F, FV, DV, S, M]) freezeOver(ch int, ws []W) *failure {
	for range r.era.channels {
		if !r.paused[ch] {
			break
		}
		ch = (ch + 1) % r.era.channels
	}
	if r.paused[ch] {
		return nil
	}
	ctx, cancel := r.ctx()
	defer cancel()
	// An idle flusher first, so that the flush queue has room for the
	// frozen delta and for what size-based freezes add while it is held.
	if _, err := r.c.Flush(ctx, coordinator.Written); err != nil {
		return r.callFailed("Flush(Written)", err)
	}
	r.w.hold()
	defer r.w.release()
	if _, err := r.c.Flush(ctx, coordinator.Applied); err != nil {
		return r.callFailed("Flush(Applied) with the flusher held", err)
	}
	if f := r.check(); f != nil {
		return f
	}
	// Each write may freeze one more delta (FlushSize); the flush queue
	// holds MaxPendingFlushes beside the held one.
	for _, w := range ws[:min(len(ws), r.era.pending)] {
		if f := r.write(ch, []W{w}, false); f != nil {
			return f
		}
	}
	return r.check()
}

// fatal makes FlushDelta fail on every attempt, so that the coordinator
// fails, checks the failed view, and reopens.
func (r *runner[W, R, C, F, FV, DV, S, M]) fatal(era eraConfig) *failure {
	r.w.arm(faultAfterDelta, retryAttempts)
	ctx, cancel := r.ctx()
	defer cancel()
	_, err := r.c.Flush(ctx, coordinator.Written)
	switch {
	case err == nil:
		r.w.arm(0, 0) // nothing was left to write
		return r.restart(false, era)
	case errors.Is(err, context.DeadlineExceeded):
		return r.callFailed("Flush(Written) with FlushDelta failing", err)
	case !errors.Is(err, errInjected):
		return r.callFailed("Flush(Written) with FlushDelta failing", err)
	}
	v := r.c.View()
	if v.Err == nil {
		return r.fail("coordinator", "Flush(Written) failed with %v, but the view has no Err", err)
	}
	if r.h.Init != nil {
		got, err := r.h.Read(v)
		if err != nil {
			return r.fail("Read", "reading the failed view: %v", err)
		}
		if want := r.model(v.Written); !r.equal(got, want) {
			return r.fail("FlushDelta snapshot", "the failed view, whose snapshot holds epochs through %d, reads %s; want %s", v.Written, short(got), short(want))
		}
	}
	return r.restart(false, era)
}

// restart stops (or crashes) the store and opens it again with era.
func (r *runner[W, R, C, F, FV, DV, S, M]) restart(crash bool, era eraConfig) *failure {
	if f := r.shutdown(crash); f != nil {
		return f
	}
	return r.open(era)
}

// shutdown stops the coordinator and releases the store. A crash aborts the
// coordinator first and calls Store.Crash.
func (r *runner[W, R, C, F, FV, DV, S, M]) shutdown(crash bool) *failure {
	r.stopReader()
	failed := r.c.Err() != nil
	if crash {
		r.c.Abort()
	}
	ctx, cancel := r.ctx()
	defer cancel()
	err := r.c.Stop(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return r.callFailed("Stop", err)
	}
	if err != nil && !crash && !failed {
		return r.callFailed("Stop", err)
	}
	for ch := range r.queued {
		if f := r.resolve(ch, true); f != nil {
			return f
		}
	}
	r.clean = err == nil
	if r.clean {
		r.durable = r.applied // Stop wrote and synced everything
	}
	st := r.store
	r.store, r.c = nil, nil
	r.w.arm(0, 0)
	release, what := st.Close, "Close"
	if crash && st.Crash != nil {
		release, what = st.Crash, "Crash"
	}
	if release != nil {
		if err := release(); err != nil {
			return r.fail("Store."+what, "%v", err)
		}
	}
	return nil
}

// abandon releases what a failed workload left running.
func (r *runner[W, R, C, F, FV, DV, S, M]) abandon() {
	r.stopReader()
	r.w.release()
	if r.c != nil {
		r.c.Abort()
		ctx, cancel := r.ctx()
		defer cancel()
		if err := r.c.Stop(ctx); errors.Is(err, context.DeadlineExceeded) {
			return // the store is stuck; leave it rather than hang
		}
	}
	if r.store != nil && r.store.Close != nil {
		_ = r.store.Close()
	}
}
