package coordinator

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Model-based randomized testing: random operation sequences run against
// the coordinator and a small sequential model of it, with the invariants
// checked after every step. TestModelRandom draws sequences from a seed;
// FuzzOperations decodes them from the fuzzer's bytes. Both go through
// modelRun.
//
// A sequence runs in a synctest bubble, in one of two modes chosen by its
// first byte. Settled (most runs): after each step the test waits until
// every goroutine of the bubble is idle, so the model knows exactly which
// writes were applied, with which epochs, and whether the injected fault
// fired. Concurrent: steps follow each other while the coordinator works,
// and only the invariants that hold at every instant are checked.
//
// Liveness. In a sequence whose header has the live flag (0x40 in its first
// byte), Await ops start waits that run on their own goroutines (handle
// waits, WaitFor and Flush, at every level) and Abandon ops cancel them.
// After the last operation the flusher is made healthy (faults that have
// not fired are disarmed, paused channels resumed), probe waits at every
// level are added, and every outstanding wait must return within
// modelLiveBound flusher calls, counted by modelFlusher, never in time.
// TestModelSustainedLoad uses the same model under a sustained load: while
// a Durable waiter exists, FlushDelta calls between two FlushStorage calls
// are bounded. Sequences without the live flag decode and run as before.

var (
	modelSeed  = flag.Int64("model.seed", 1, "seed of the first random operation sequence; 0 picks one from the clock")
	modelRuns  = flag.Int("model.runs", 500, "number of random operation sequences")
	modelSteps = flag.Int("model.steps", 60, "operations per random sequence")
)

const (
	// modelBlock bounds every call of a step. It is fake time: calls the
	// model expects to block (a Write into a full paused queue) return
	// after it, and a hang shows up as an unexpected deadline error.
	modelBlock    = time.Minute
	modelInterval = time.Hour // Config.FlushInterval; the Tick op sleeps it
	modelMaxSteps = 200       // FuzzOperations truncates longer inputs
)

type modelView = View[map[string]uint64, testReader, memSnapshot]

type modelOpKind uint8

const (
	modelOpTryWrite modelOpKind = iota
	modelOpWrite
	modelOpWriteBatch
	modelOpFlush
	modelOpWait
	modelOpEpoch
	modelOpPause
	modelOpResume
	modelOpSubscribe
	modelOpDrain
	modelOpFault
	modelOpTick
	modelOpAwait   // start a wait on its own goroutine (live sequences only)
	modelOpAbandon // cancel a wait started by Await (live sequences only)
)

var modelOpNames = [...]string{"TryWrite", "Write", "WriteBatch", "Flush", "Wait", "Epoch", "Pause", "Resume",
	"Subscribe", "Drain", "Fault", "Tick", "Await", "Abandon"}

// modelOpMix maps an op byte to a kind, writes being the most common.
var modelOpMix = [...]modelOpKind{
	modelOpTryWrite, modelOpTryWrite, modelOpTryWrite,
	modelOpWrite, modelOpWrite, modelOpWrite,
	modelOpWriteBatch, modelOpWriteBatch,
	modelOpFlush, modelOpFlush,
	modelOpWait, modelOpWait,
	modelOpEpoch,
	modelOpPause, modelOpPause,
	modelOpResume, modelOpResume,
	modelOpSubscribe,
	modelOpDrain, modelOpDrain,
	modelOpFault,
	modelOpTick,
}

// modelOpMixLive is the mix of live sequences: modelOpMix, then the ops of
// the liveness checks. A sequence without the live flag decodes with
// modelOpMix alone, so the existing corpus keeps its meaning.
var modelOpMixLive = [...]modelOpKind{
	modelOpTryWrite, modelOpTryWrite, modelOpTryWrite,
	modelOpWrite, modelOpWrite, modelOpWrite,
	modelOpWriteBatch, modelOpWriteBatch,
	modelOpFlush, modelOpFlush,
	modelOpWait, modelOpWait,
	modelOpEpoch,
	modelOpPause, modelOpPause,
	modelOpResume, modelOpResume,
	modelOpSubscribe,
	modelOpDrain, modelOpDrain,
	modelOpFault,
	modelOpTick,
	modelOpAwait, modelOpAwait, modelOpAwait,
	modelOpAbandon,
}

// modelOp is one operation; arg picks its channel, level, target, ...
type modelOp struct {
	kind modelOpKind
	arg  uint8
}

// String names the op and its argument, as in the failure traces.
func (op modelOp) String() string { return fmt.Sprintf("%s(%d)", modelOpNames[op.kind], op.arg) }

// modelFaults are the faults the Fault op arms, indexed by arg/4. count
// is the number of calls that fail (0: every later call).
var modelFaults = [...]struct {
	op     string
	action faultAction
	count  int
}{
	{"FlushDelta", faultFail, 0},
	{"FlushDelta", faultPanic, 1},
	{"FlushStorage", faultFail, 0},
	{"FlushStorage", faultPanic, 1},
	{"Apply", faultPanic, 1},
	{"Freeze", faultPanic, 1},
	{"FlushDelta", faultFail, 1},
	{"FlushDelta", faultFail, 2},
	{"FlushStorage", faultFail, 1},
	{"Apply", faultFail, 1}, // an ApplyError, not a failure
}

// modelConfig is the configuration of one sequence, from its first bytes.
type modelConfig struct {
	channels, queueCap, flushSize, pending, subBuf, attempts int
	first                                                    uint64 // Config.FirstEpoch
	sync                                                     SyncPolicy
	lazy, settle                                             bool
	live                                                     bool // Await and Abandon ops, liveness checks at the end
}

const modelHeader = 3

func modelDecode(data []byte) (modelConfig, []modelOp) {
	var h [modelHeader]byte
	data = data[copy(h[:], data):]
	cfg := modelConfig{
		channels:  2 + int(h[0]&1),
		lazy:      h[0]&2 != 0,
		settle:    h[0]&(8|16) != 0,
		queueCap:  1 + int(h[1]%4),
		pending:   1 + int(h[1]>>2)%2,
		subBuf:    1 + int(h[1]>>3)%3,
		flushSize: []int{2, 3, 5, 1 << 40}[h[2]%4],
		attempts:  1 + int(h[2]>>2)%3,
		first:     1,
	}
	if h[0]&32 != 0 {
		cfg.first = 1_000_000
	}
	if h[0]&4 != 0 {
		cfg.sync = SyncAlways
	}
	cfg.live = h[0]&64 != 0
	var ops []modelOp
	for ; len(data) >= 2; data = data[2:] {
		ops = append(ops, modelOp{cfg.mix()[int(data[0])%len(cfg.mix())], data[1]})
	}
	return cfg, ops
}

func (mc modelConfig) mix() []modelOpKind {
	if mc.live {
		return modelOpMixLive[:]
	}
	return modelOpMix[:]
}

// modelEncode is the inverse of modelDecode, for hand-written seeds.
func modelEncode(header [modelHeader]byte, ops ...modelOp) []byte {
	cfg, _ := modelDecode(header[:])
	data := header[:]
	for _, op := range ops {
		i := slices.Index(cfg.mix(), op.kind)
		if i < 0 {
			panic(fmt.Sprintf("modelEncode: %v needs the live flag in the header", op))
		}
		data = append(data, byte(i), op.arg)
	}
	return data
}

func (mc modelConfig) config() Config {
	names := []string{"c0", "c1", "c2"}[:mc.channels]
	return Config{
		Channels:           names,
		QueueCapacity:      mc.queueCap,
		FlushInterval:      modelInterval,
		FlushSize:          mc.flushSize,
		FirstEpoch:         mc.first,
		MaxPendingFlushes:  mc.pending,
		Sync:               mc.sync,
		DisableFlushOnWait: mc.lazy,
		SubscriberBuffer:   mc.subBuf,
		Retry:              RetryPolicy{Attempts: mc.attempts, Backoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond},
		SlowFlushThreshold: -1,
	}
}

// modelWrite is one accepted write.
type modelWrite struct {
	id int
	wr testWrite
	ch int
	h  *WriteHandle[struct{}]
	bh *BatchHandle[struct{}] // or a member of a batch
	bi int                    // its index in the batch
	// held (settled mode): queued while its channel was paused, so it may
	// not be applied until Resume or Stop.
	held bool
}

// modelOutcome is what a write's handle says once it completed.
type modelOutcome struct {
	done  bool
	epoch uint64 // 0: never applied
	err   error
}

type modelSub struct {
	s    *Subscriber[map[string]uint64, testReader, memSnapshot]
	last *modelView
}

// modelFault is the one fatal fault a sequence may arm. Once its rule has
// matched a call, the coordinator must fail: a panic is never retried, and
// the rule fails every retry of the call it hit.
type modelFault struct {
	op     string
	action faultAction
	rule   int
}

// modelCalls is a reading of modelFlusher's call counters.
type modelCalls struct{ deltas, syncs int64 }

// since returns the calls made from b to a (none if a is earlier).
func (a modelCalls) since(b modelCalls) modelCalls {
	return modelCalls{max(a.deltas-b.deltas, 0), max(a.syncs-b.syncs, 0)}
}

// latest returns the later of two readings (counters only grow).
func (a modelCalls) latest(b modelCalls) modelCalls {
	return modelCalls{max(a.deltas, b.deltas), max(a.syncs, b.syncs)}
}

func (a modelCalls) String() string {
	return fmt.Sprintf("%d FlushDelta, %d FlushStorage", a.deltas, a.syncs)
}

// modelLiveBound is the liveness bound, in flusher calls: with a healthy
// flusher, a wait returns within this many FlushDelta and FlushStorage
// calls of the moment it can be served, and under a sustained load no more
// than this many FlushDelta calls run between two FlushStorage calls while
// a Durable waiter exists. It is the one place to adjust the bound.
//
// FlushDelta: up to MaxPendingFlushes queued deltas and the one being
// written are ahead of the wait's delta, which is written next; twice that
// and two more leaves room for a retried call and a freeze racing the wait.
// FlushStorage: one may be running, one may serve an earlier demand, and
// one covers the wait. On today's code TestModelRandom sees at most 5 and 3
// over 10,000 seeds (TestModelRandom logs the most it saw).
func modelLiveBound(cfg modelConfig) modelCalls {
	return modelCalls{deltas: int64(2*(cfg.pending+1) + 2), syncs: 3}
}

// modelFlusher is the model's flusher: a faultFlusher whose calls are
// counted as the coordinator makes them (every attempt, before any fault
// is injected).
type modelFlusher struct {
	*faultFlusher
	deltas, syncs atomic.Int64
	// quiet, if set before the coordinator starts, runs on the flusher
	// goroutine before every call is counted; onCall, after.
	quiet, onCall func(op string)
}

func (f *modelFlusher) calls() modelCalls { return modelCalls{f.deltas.Load(), f.syncs.Load()} }

func (f *modelFlusher) begin(op string, n *atomic.Int64) {
	if f.quiet != nil {
		f.quiet(op)
	}
	n.Add(1)
	if f.onCall != nil {
		f.onCall(op)
	}
}

func (f *modelFlusher) FlushDelta(ctx context.Context, frozen frozenTestDelta, epochs EpochRange) (memSnapshot, error) {
	f.begin("FlushDelta", &f.deltas)
	return f.faultFlusher.FlushDelta(ctx, frozen, epochs)
}

func (f *modelFlusher) FlushStorage(ctx context.Context) error {
	f.begin("FlushStorage", &f.syncs)
	return f.faultFlusher.FlushStorage(ctx)
}

// modelNewCoordinator is faultNewCoordinator with a modelFlusher.
func modelNewCoordinator(t testing.TB, cfg Config, inj *faultInjector) (*testCoordinator, *modelFlusher) {
	t.Helper()
	fl := &modelFlusher{faultFlusher: &faultFlusher{testFlusher: newTestFlusher(), inj: inj}}
	newDelta := func(ctx testContext) *faultDelta { return &faultDelta{testDelta: newTestDelta(ctx), inj: inj} }
	c, err := New(cfg, newDelta, testContext{}, fl.storage.snapshot(), fl)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	stopAtCleanup(t, c, 24*time.Hour) // fake time
	return c, fl
}

// modelWaitKind is the call a modelWaiter waits with.
type modelWaitKind uint8

const (
	modelWaitHandle modelWaitKind = iota // WriteHandle.Wait or BatchHandle.Wait
	modelWaitFor                         // Coordinator.WaitFor
	modelWaitFlush                       // Coordinator.Flush
)

// modelWaiter is a wait running on its own goroutine, started by an Await
// op or as a probe of the liveness check.
type modelWaiter struct {
	what      string
	kind      modelWaitKind
	level     Durability
	w         *modelWrite // modelWaitHandle: the write (or batch) waited on
	epoch     uint64      // modelWaitFor: the epoch waited for
	cancel    context.CancelFunc
	abandoned bool       // its ctx was canceled by the model
	start     modelCalls // flusher calls when the wait began
	done      chan struct{}

	// Set before done is closed.
	end     modelCalls // flusher calls when it returned
	flushed uint64     // modelWaitFlush: the epoch Flush returned
	err     error
}

type model struct {
	t      *testing.T
	cfg    modelConfig
	inj    *faultInjector
	fl     *modelFlusher
	c      *testCoordinator
	chans  []*Channel[testWrite, struct{}]
	paused []bool
	writes []*modelWrite
	subs   []*modelSub

	// Settled mode: the next epoch to assign, the slots queued on paused
	// channels (FIFO), and the writes of this step to check, in the order
	// the coordinator must apply them.
	next      uint64
	slots     [][][]*modelWrite
	toResolve []*modelWrite

	fatal     *modelFault
	transient map[string]bool
	marks     Watermarks
	view      *modelView
	stopped   bool
	step      int
	trace     []string

	// Written by the Apply hook on the coordinator goroutine.
	pausedFlag []atomic.Bool // set once Pause returned, cleared before Resume
	stopping   atomic.Bool
	violMu     sync.Mutex
	violations []string
	appliedAt  map[int]modelCalls // by write id: flusher calls when it was applied; under violMu

	// Liveness: the waits running, the flusher calls when the flusher was
	// made healthy after the last operation, and what the checks saw.
	waiters  []*modelWaiter
	quiesce  atomic.Bool   // the flusher lets the bubble settle before each call
	gate     chan struct{} // held by whoever calls synctest.Wait: one at a time
	liveFrom modelCalls
	liveMax  modelCalls // the most calls a live wait took, per counter
	liveN    int        // waits checked against the bound
}

// modelTotals accumulates what the runs of a test did, to show that the
// sequences exercise what they claim.
type modelTotals struct {
	runs, settled, steps, writes, epochs, failed, faultsArmed, cleanStops int
	live, liveWaits                                                       int
	liveMax                                                               modelCalls
}

// modelRun runs one encoded sequence and returns the number of steps run.
func modelRun(t *testing.T, data []byte) int { return modelRunTotals(t, data, nil) }

func modelRunTotals(t *testing.T, data []byte, totals *modelTotals) int {
	cfg, ops := modelDecode(data)
	if len(ops) > modelMaxSteps {
		ops = ops[:modelMaxSteps]
	}
	synctest.Test(t, func(t *testing.T) {
		m := newModel(t, cfg)
		defer func() {
			if t.Failed() {
				t.Logf("config %+v\nsteps: %s", cfg, strings.Join(m.trace, " "))
			}
		}()
		m.c.Start()
		m.check()
		for i, op := range ops {
			m.step = i
			m.trace = append(m.trace, op.String())
			m.do(op)
			if cfg.settle {
				m.settle()
			}
			m.check()
			if t.Failed() {
				return
			}
		}
		m.step = len(ops)
		if cfg.live {
			m.live()
			if t.Failed() {
				return
			}
			m.step++
		}
		m.trace = append(m.trace, "Stop")
		stopErr := m.stop()
		if totals != nil {
			if cfg.live {
				totals.live++
				totals.liveWaits += m.liveN
				totals.liveMax = totals.liveMax.latest(m.liveMax)
			}
			totals.runs++
			totals.steps += len(ops) + 1
			totals.writes += len(m.writes)
			totals.epochs += int(m.c.Watermarks().Applied - (cfg.first - 1))
			if cfg.settle {
				totals.settled++
			}
			if stopErr != nil {
				totals.failed++
			} else {
				totals.cleanStops++
			}
			if m.fatal != nil || len(m.transient) > 0 {
				totals.faultsArmed++
			}
		}
	})
	return len(ops) + 1
}

// newModel builds the model of cfg and its coordinator, not started.
func newModel(t *testing.T, cfg modelConfig) *model {
	m := &model{t: t, cfg: cfg, inj: newFaultInjector(), next: cfg.first, transient: map[string]bool{},
		slots: make([][][]*modelWrite, cfg.channels), paused: make([]bool, cfg.channels),
		pausedFlag: make([]atomic.Bool, cfg.channels), appliedAt: map[int]modelCalls{}, gate: make(chan struct{}, 1)}
	m.inj.applyHook = m.onApply
	m.c, m.fl = modelNewCoordinator(t, cfg.config(), m.inj)
	m.c.p.marks.written.advanced = m.onWritten
	t.Cleanup(func() { m.quiesce.Store(false) }) // before the Stop of the cleanup above
	m.fl.quiet = func(string) {
		if m.quiesce.Load() {
			m.gate <- struct{}{}
			if m.quiesce.Load() {
				synctest.Wait()
			}
			<-m.gate
		}
	}
	for i := range cfg.channels {
		m.chans = append(m.chans, m.c.Channel(fmt.Sprintf("c%d", i)))
	}
	return m
}

func (m *model) errorf(format string, args ...any) {
	m.t.Helper()
	m.t.Errorf("step %d (%s): %s", m.step, m.trace[len(m.trace)-1], fmt.Sprintf(format, args...))
}

func (m *model) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), modelBlock)
}

// onApply runs on the coordinator goroutine for every write applied: it
// checks invariant 4 directly, since a handle completes only after its
// channel's apply lock is released.
func (m *model) onApply(w testWrite) {
	if !m.cfg.settle {
		runtime.Gosched() // widen the windows the concurrent mode looks into
	}
	ch := int(w.value % 8)
	calls := m.fl.calls()
	m.violMu.Lock()
	defer m.violMu.Unlock()
	m.appliedAt[int(w.value/8)] = calls
	if m.pausedFlag[ch].Load() && !m.stopping.Load() {
		m.violations = append(m.violations, fmt.Sprintf("%s applied while channel c%d is paused", w.key, ch))
	}
}

// onWritten runs on the flusher goroutine each time the written watermark
// rises to e, before any waiter is woken: the view announcing e must be
// published already (invariant 3). Checked at that instant, a view
// published late is caught in every run, not only when a woken reader
// happens to look first.
func (m *model) onWritten(e uint64) {
	if v := m.c.View(); v.Err == nil && v.Written < e {
		m.violMu.Lock()
		defer m.violMu.Unlock()
		m.violations = append(m.violations, fmt.Sprintf("written watermark rose to %d while View().Written = %d", e, v.Written))
	}
}

// settle waits until the bubble is idle and no flusher call is pending
// (a retry backoff is a timer: fake time must pass for it to end).
func (m *model) settle() {
	synctest.Wait()
	busy := func() bool { st := m.c.Stats(); return st.PendingFlushes > 0 || st.Syncing }
	for i := 0; busy(); i++ {
		if i == 1000 {
			m.t.Fatalf("step %d: flusher still busy after 1000 settles: %+v", m.step, m.c.Stats())
		}
		time.Sleep(time.Millisecond) // fake time: lets a retry backoff run out
		synctest.Wait()
	}
}

func (m *model) do(op modelOp) {
	ch := int(op.arg) % m.cfg.channels
	switch op.kind {
	case modelOpTryWrite, modelOpWrite:
		m.write(op.kind, ch, 1)
	case modelOpWriteBatch:
		m.write(op.kind, ch, 1+int(op.arg>>4)%3)
	case modelOpFlush:
		m.flush(Durability(1 + op.arg%3))
	case modelOpWait:
		if len(m.writes) > 0 {
			m.wait(m.writes[len(m.writes)-1-int(op.arg/3)%len(m.writes)], Durability(1+op.arg%3))
		}
	case modelOpEpoch:
		if len(m.writes) > 0 {
			m.epoch(m.writes[len(m.writes)-1-int(op.arg)%len(m.writes)])
		}
	case modelOpPause:
		m.chans[ch].Pause()
		m.pausedFlag[ch].Store(true)
		if !m.paused[ch] && m.cfg.settle {
			for _, w := range m.writes {
				if w.ch == ch && !m.outcome(w).done {
					m.errorf("write %d on c%d not applied before Pause in a settled state", w.id, ch)
				}
			}
		}
		m.paused[ch] = true
	case modelOpResume:
		m.pausedFlag[ch].Store(false)
		m.chans[ch].Resume()
		m.paused[ch] = false
		for _, slot := range m.slots[ch] {
			for _, w := range slot {
				w.held = false
				m.toResolve = append(m.toResolve, w)
			}
		}
		m.slots[ch] = nil
	case modelOpSubscribe:
		if len(m.subs) < 3 {
			s := m.c.Subscribe()
			v := s.Initialize()
			if err := modelViewStep(m.view, v); err != nil {
				m.errorf("Initialize() of a new subscription: %v", err)
			}
			m.subs = append(m.subs, &modelSub{s: s, last: v})
		}
	case modelOpDrain:
		if len(m.subs) > 0 {
			m.drain(m.subs[int(op.arg)%len(m.subs)])
		}
	case modelOpFault:
		// Only one Fault op in four arms a fault, so that about half of
		// the sequences end without a failure.
		if op.arg&3 == 0 {
			m.arm(int(op.arg>>2) % len(modelFaults))
		}
	case modelOpTick:
		time.Sleep(modelInterval) // fake time: the interval flush fires
	case modelOpAwait:
		m.await(op.arg)
	case modelOpAbandon:
		if len(m.waiters) > 0 {
			wt := m.waiters[int(op.arg)%len(m.waiters)]
			wt.abandoned = true
			wt.cancel()
			// Giving up needs no flusher call: it returns now.
			await(m.t, wt.what+" returning once abandoned", wt.done)
		}
	}
}

func (m *model) write(kind modelOpKind, ch, n int) {
	failedBefore := m.cfg.settle && m.c.Err() != nil
	pausedFull := m.cfg.settle && m.paused[ch] && len(m.slots[ch]) >= m.cfg.queueCap
	ws := make([]*modelWrite, n)
	for i := range ws {
		id := len(m.writes) + i
		ws[i] = &modelWrite{id: id, ch: ch, wr: w(fmt.Sprintf("c%d-w%d", ch, id), uint64(id*8+ch), 1)}
	}
	ctx, cancel := m.ctx()
	defer cancel()
	var err error
	switch kind {
	case modelOpTryWrite:
		ws[0].h, err = m.chans[ch].TryWrite(ws[0].wr)
	case modelOpWrite:
		ws[0].h, err = m.chans[ch].Write(ctx, ws[0].wr)
	case modelOpWriteBatch:
		batch := make([]testWrite, n)
		for i, w := range ws {
			batch[i] = w.wr
		}
		var bh *BatchHandle[struct{}]
		bh, err = m.chans[ch].WriteBatch(ctx, batch)
		for i, w := range ws {
			w.bh, w.bi = bh, i
		}
	}
	what := fmt.Sprintf("%s on c%d", modelOpNames[kind], ch)
	if err != nil {
		switch {
		case errors.Is(err, ErrFailed):
			if m.c.Err() == nil {
				m.errorf("%s = %v, but the coordinator has not failed", what, err)
			}
		case errors.Is(err, ErrBackpressure):
			if kind != modelOpTryWrite || (m.cfg.settle && !pausedFull) {
				m.errorf("%s = %v; want no backpressure (queued slots %d, capacity %d)", what, err, len(m.slots[ch]), m.cfg.queueCap)
			}
		case errors.Is(err, context.DeadlineExceeded):
			if kind == modelOpTryWrite || !m.paused[ch] || (m.cfg.settle && !pausedFull) {
				m.errorf("%s = %v; want no wait", what, err)
			}
		default:
			m.errorf("%s = %v; want nil, backpressure, a deadline or the failure", what, err)
		}
		if failedBefore && !errors.Is(err, ErrFailed) {
			m.errorf("%s on a failed coordinator = %v; want the failure", what, err)
		}
		return
	}
	if failedBefore || pausedFull {
		m.errorf("%s accepted; want it rejected (failed %v, paused queue full %v)", what, failedBefore, pausedFull)
	}
	m.writes = append(m.writes, ws...)
	if !m.cfg.settle {
		return
	}
	if m.paused[ch] {
		for _, w := range ws {
			w.held = true
		}
		m.slots[ch] = append(m.slots[ch], ws)
	} else {
		m.toResolve = append(m.toResolve, ws...)
	}
}

// outcome reads what w's handle reports, without blocking.
func (m *model) outcome(w *modelWrite) modelOutcome {
	bg := context.Background()
	if w.h != nil {
		if !w.h.Applied() {
			return modelOutcome{}
		}
		e, err := w.h.Epoch(bg)
		return modelOutcome{true, e, err}
	}
	if !w.bh.done.done() {
		return modelOutcome{}
	}
	r, err := w.bh.Epochs(bg)
	if err != nil {
		if uint64(w.bi) < r.Len() {
			return modelOutcome{true, r.Start + uint64(w.bi), err}
		}
		return modelOutcome{true, 0, err}
	}
	res, err := w.bh.Wait(bg, Applied)
	if err != nil || len(res) <= w.bi {
		return modelOutcome{true, 0, fmt.Errorf("batch Wait(Applied) = %d results, %v after Epochs() = %v, nil", len(res), err, r)}
	}
	if res[w.bi].Epoch != r.Start+uint64(w.bi) {
		return modelOutcome{true, 0, fmt.Errorf("batch result epoch %d; want %d", res[w.bi].Epoch, r.Start+uint64(w.bi))}
	}
	return modelOutcome{true, res[w.bi].Epoch, res[w.bi].Err}
}

// handleErr is the error a wait on w's handle (the whole batch) returns
// before any level is considered, once it completed.
func (m *model) handleErr(w *modelWrite) error {
	if w.h != nil {
		_, err := w.h.Epoch(context.Background())
		return err
	}
	_, err := w.bh.Epochs(context.Background())
	return err
}

// target is the epoch a wait on w's handle waits for: its own, or the
// last of its batch.
func (m *model) target(w *modelWrite) uint64 {
	if w.h != nil {
		e, _ := w.h.Epoch(context.Background())
		return e
	}
	r, _ := w.bh.Epochs(context.Background())
	if r.Len() == 0 {
		return 0
	}
	return r.Last()
}

func (m *model) flush(level Durability) {
	var covered []*modelWrite
	for _, w := range m.writes {
		if !m.paused[w.ch] {
			covered = append(covered, w)
		}
	}
	ctx, cancel := m.ctx()
	defer cancel()
	e, err := m.c.Flush(ctx, level)
	if err != nil {
		if !errors.Is(err, ErrFailed) || m.c.Err() == nil {
			m.errorf("Flush(%v) = %d, %v; want nil or the failure", level, e, err)
		}
		return
	}
	for _, w := range covered {
		o := m.outcome(w)
		if !o.done || o.epoch == 0 || o.epoch > e {
			m.errorf("Flush(%v) = %d, nil, but write %d on unpaused c%d has outcome %+v", level, e, w.id, w.ch, o)
		}
	}
	if level >= Written {
		if got := m.c.Watermarks().Get(level); got < e {
			m.errorf("Flush(%v) = %d, nil, but the %v watermark is %d", level, e, level, got)
		}
	}
	if m.cfg.settle && e != m.next-1 {
		// Everything was applied and resolved when the step began.
		m.errorf("Flush(%v) = %d; want the last assigned epoch %d", level, e, m.next-1)
	}
}

func (m *model) wait(w *modelWrite, level Durability) {
	before := m.outcome(w)
	pausedAtCall := m.paused[w.ch]
	wm := m.c.Watermarks()
	ctx, cancel := m.ctx()
	defer cancel()
	var err error
	if w.h != nil {
		_, err = w.h.Wait(ctx, level)
	} else {
		_, err = w.bh.Wait(ctx, level)
	}
	if v := m.c.View(); err == nil && level >= Written && v.Err == nil && v.Written < m.target(w) {
		m.errorf("invariant 3: Wait(%v) of epoch %d returned, but View().Written is %d", level, m.target(w), v.Written)
	}
	after := m.outcome(w)
	what := fmt.Sprintf("Wait(%v) of write %d (outcome %+v)", level, w.id, after)
	var herr error
	if after.done {
		herr = m.handleErr(w)
	}
	switch {
	case err == nil:
		if !after.done || herr != nil {
			m.errorf("%s = nil; want the handle's error", what)
		} else if got := m.c.Watermarks().Get(level); got < m.target(w) {
			m.errorf("%s = nil, but the %v watermark is %d", what, level, got)
		}
	case herr != nil && err == herr:
	case errors.Is(err, context.DeadlineExceeded):
		notApplied := !before.done && pausedAtCall
		lazy := m.cfg.lazy && level >= Written && after.done && m.target(w) > wm.Written
		if !notApplied && !lazy {
			m.errorf("%s = %v; want no wait (watermarks at call %+v)", what, err, wm)
		}
	case errors.Is(err, ErrFailed) && m.c.Err() != nil:
	default:
		m.errorf("%s = %v; want nil, the handle's error %v, or the failure", what, err, herr)
	}
}

func (m *model) epoch(w *modelWrite) {
	before := m.outcome(w)
	pausedAtCall := m.paused[w.ch]
	ctx, cancel := m.ctx()
	defer cancel()
	var err error
	if w.h != nil {
		_, err = w.h.Epoch(ctx)
	} else {
		_, err = w.bh.Epochs(ctx)
	}
	if errors.Is(err, context.DeadlineExceeded) && (before.done || !pausedAtCall) {
		m.errorf("Epoch() of write %d = %v; want no wait (outcome %+v, paused %v)", w.id, err, before, pausedAtCall)
	}
}

// await starts a wait on its own goroutine. arg%3 picks the level, arg/3%3
// the call, arg/9 the target: a recent write for a handle wait; for
// WaitFor, an epoch from the first write's to one past the last accepted
// write's, or (arg/9 >= 24) one far in the future, which the liveness check
// abandons. Its context ends only when the model abandons it: a Tick sleeps
// longer than any deadline.
func (m *model) await(arg uint8) {
	wt := &modelWaiter{kind: modelWaitKind(arg / 3 % 3), level: Durability(1 + arg%3)}
	n := len(m.writes)
	switch wt.kind {
	case modelWaitHandle:
		if n == 0 {
			return
		}
		wt.w = m.writes[n-1-int(arg/9)%n]
		wt.what = fmt.Sprintf("Wait(%v) of write %d", wt.level, wt.w.id)
	case modelWaitFor:
		if back := int(arg / 9); back >= 24 {
			wt.epoch = m.cfg.first + 1<<30
		} else {
			wt.epoch = m.cfg.first + uint64(n) - uint64(back%(n+1))
		}
		wt.what = fmt.Sprintf("WaitFor(%v, %d)", wt.level, wt.epoch)
	case modelWaitFlush:
		wt.what = fmt.Sprintf("Flush(%v)", wt.level)
	}
	wt.what += fmt.Sprintf(" started at step %d", m.step)
	ctx, cancel := context.WithCancel(context.Background())
	m.t.Cleanup(cancel)
	wt.cancel = cancel
	m.startWait(ctx, wt)
}

// startWait runs wt on its own goroutine and adds it to the outstanding
// waits.
func (m *model) startWait(ctx context.Context, wt *modelWaiter) {
	wt.done = make(chan struct{})
	wt.start = m.fl.calls()
	go func() {
		defer close(wt.done)
		switch wt.kind {
		case modelWaitHandle:
			if wt.w.h != nil {
				_, wt.err = wt.w.h.Wait(ctx, wt.level)
			} else {
				_, wt.err = wt.w.bh.Wait(ctx, wt.level)
			}
		case modelWaitFor:
			wt.err = m.c.WaitFor(ctx, wt.level, wt.epoch)
		case modelWaitFlush:
			wt.flushed, wt.err = m.c.Flush(ctx, wt.level)
		}
		wt.end = m.fl.calls()
	}()
	m.waiters = append(m.waiters, wt)
}

// collect checks the waits that returned and drops them from the
// outstanding ones.
func (m *model) collect() {
	m.waiters = slices.DeleteFunc(m.waiters, func(wt *modelWaiter) bool {
		select {
		case <-wt.done:
			m.checkWaiter(wt, false)
			return true
		default:
			return false
		}
	})
}

// writeAt returns the accepted write applied at epoch e, if any.
func (m *model) writeAt(e uint64) *modelWrite {
	if e == 0 {
		return nil
	}
	for _, w := range m.writes {
		if o := m.outcome(w); o.done && o.epoch == e {
			return w
		}
	}
	return nil
}

// checkWaiter checks what a wait that returned reports (safety) and, for a
// wait outstanding when the liveness check began (live), that it took at
// most modelLiveBound flusher calls from the moment it could be served:
// the latest of its start, the end of the sequence (flusher healthy,
// channels resumed) and the apply of the epoch it waits for, to its
// return.
func (m *model) checkWaiter(wt *modelWaiter, live bool) {
	err, target := wt.err, wt.epoch
	var herr error
	switch wt.kind {
	case modelWaitHandle:
		if m.outcome(wt.w).done { // else it was abandoned or failed before its write was applied
			herr, target = m.handleErr(wt.w), m.target(wt.w)
		}
	case modelWaitFlush:
		target = wt.flushed
	}
	what := fmt.Sprintf("%s (outstanding at the end %v)", wt.what, live)
	switch {
	case err == nil:
		if wt.kind == modelWaitHandle && (!m.outcome(wt.w).done || herr != nil) {
			m.errorf("%s = nil; want the handle's error %v", what, herr)
		} else if got := m.c.Watermarks().Get(wt.level); got < target {
			m.errorf("%s = nil for epoch %d, but the %v watermark is %d", what, target, wt.level, got)
		} else if v := m.c.View(); wt.level >= Written && v.Err == nil && v.Written < target {
			m.errorf("invariant 3: %s returned for epoch %d, but View().Written is %d", what, target, v.Written)
		}
	case herr != nil && err == herr:
	case wt.abandoned && errors.Is(err, context.Canceled):
	case errors.Is(err, ErrFailed) && m.c.Err() != nil:
	case errors.Is(err, context.DeadlineExceeded):
		m.errorf("%s = %v: it never returned; goroutines:\n%s", what, err, goroutineDump())
	default:
		m.errorf("%s = %v; want nil, the handle's error %v, the failure or (abandoned %v) its ctx's error",
			what, err, herr, wt.abandoned)
	}
	if !live {
		return
	}
	from := wt.start.latest(m.liveFrom)
	if w := m.writeAt(target); w != nil {
		m.violMu.Lock()
		at, ok := m.appliedAt[w.id]
		m.violMu.Unlock()
		if ok {
			from = from.latest(at)
		}
	}
	used := wt.end.since(from)
	m.liveN++
	m.liveMax = m.liveMax.latest(used)
	if b := modelLiveBound(m.cfg); used.deltas > b.deltas || used.syncs > b.syncs {
		m.errorf("liveness: %s = %v after %v calls from when it could be served; bound %v "+
			"(calls when it began: %v, when it could be served: %v, when it returned: %v)",
			what, err, used, b, wt.start, from, wt.end)
	}
}

// resolveFaults makes the flusher healthy: every fault rule that has not
// fired yet is disarmed. A rule that fired runs its course, so the model's
// expectations (this fault fails the coordinator, that one is retried)
// still hold.
func (m *model) resolveFaults() {
	m.inj.mu.Lock()
	defer m.inj.mu.Unlock()
	for i := range m.inj.rules {
		if r := &m.inj.rules[i]; r.fired == 0 {
			r.action = faultPass
		}
	}
}

// live is the liveness check after the last operation of a live sequence.
// With the flusher made healthy and every channel resumed, each wait still
// running, and probes at every level with each call (handle, WaitFor of
// the last accepted write's epoch, Flush), must return within
// modelLiveBound flusher calls. WaitFor waits for epochs no accepted write
// will reach are abandoned, and must return too. The probes have a
// deadline context, the other waits are awaited with one: a wait that
// never returns fails with a goroutine dump.
func (m *model) live() {
	m.trace = append(m.trace, "Live")
	m.resolveFaults()
	for ch := range m.paused {
		if m.paused[ch] {
			m.trace = append(m.trace, fmt.Sprintf("Resume(%d)", ch))
			m.do(modelOp{modelOpResume, uint8(ch)})
			if m.cfg.settle {
				m.settle()
			}
			m.check()
		}
	}
	m.trace = append(m.trace, "Probes")
	// From now on, before each flusher call every other goroutine runs
	// until it blocks: a wait that can return does so, and reads the
	// counters, before the next call. Counts are then exact, not skewed by
	// a woken goroutine that has not run yet.
	m.quiesce.Store(true)
	m.liveFrom = m.fl.calls()
	last := m.cfg.first - 1 + uint64(len(m.writes))
	for _, wt := range m.waiters {
		if wt.kind == modelWaitFor && wt.epoch > last && !wt.abandoned {
			wt.abandoned = true
			wt.cancel()
		}
	}
	// The probes. In lazy mode the Flush probes are what freezes the live
	// delta for the Written and Durable waits.
	ctx := deadlineCtx(m.t)
	for level := Applied; level <= Durable; level++ {
		if n := len(m.writes); n > 0 {
			w := m.writes[n-1]
			m.startWait(ctx, &modelWaiter{kind: modelWaitHandle, level: level, w: w,
				what: fmt.Sprintf("probe Wait(%v) of write %d", level, w.id)})
		}
		m.startWait(ctx, &modelWaiter{kind: modelWaitFor, level: level, epoch: last,
			what: fmt.Sprintf("probe WaitFor(%v, %d)", level, last)})
		m.startWait(ctx, &modelWaiter{kind: modelWaitFlush, level: level, what: fmt.Sprintf("probe Flush(%v)", level)})
	}
	for _, wt := range m.waiters {
		await(m.t, wt.what, wt.done)
		m.checkWaiter(wt, true)
	}
	m.waiters = nil
	// Stop quiescing; once the gate is free, no flusher call is in
	// synctest.Wait, and settle may call it.
	m.quiesce.Store(false)
	m.gate <- struct{}{}
	<-m.gate
	if m.cfg.settle {
		m.settle()
	}
	m.check()
}

func (m *model) drain(sub *modelSub) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // take what is buffered, never wait
	for range 1000 {
		v, err := sub.s.Next(ctx)
		var lag *LagError
		switch {
		case err == nil:
		case errors.As(err, &lag):
			if lag.Missed == 0 {
				m.errorf("LagError with Missed 0")
			}
			v = sub.s.Initialize()
		case errors.Is(err, context.Canceled):
			return
		case errors.Is(err, ErrClosed) && m.stopped:
			return
		default:
			m.errorf("Subscriber.Next() = %v", err)
			return
		}
		if err := modelViewStep(sub.last, v); err != nil {
			m.errorf("subscriber view: %v", err)
		}
		m.checkViewContent("subscriber view", v)
		sub.last = v
	}
	m.errorf("Subscriber.Next() returned 1000 views without running dry")
}

// arm arms fault i unless it would make the expected failure ambiguous.
func (m *model) arm(i int) {
	f := modelFaults[i]
	flusher := f.op == "FlushDelta" || f.op == "FlushStorage"
	fatal := f.action == faultPanic || (flusher && (f.count == 0 || f.count >= m.cfg.attempts))
	switch {
	case fatal && m.fatal != nil:
		return
	case !fatal && flusher:
		// One transient fault per method: two could add up to a fatal
		// one on a call that is being retried.
		if m.transient[f.op] {
			return
		}
		m.transient[f.op] = true
	}
	rule := m.inj.armNext(f.op, f.action, f.count)
	if fatal {
		m.fatal = &modelFault{op: f.op, action: f.action, rule: rule}
	}
}

// fatalFired reports whether the armed fatal fault has hit a call: once
// the coordinator is idle, it has failed exactly if so.
func (m *model) fatalFired() bool {
	return m.fatal != nil && m.inj.ruleFired(m.fatal.rule) > 0
}

// wantFatal checks that err reports the armed fatal fault.
func (m *model) wantFatal(what string, err error) {
	m.t.Helper()
	f := m.fatal
	if f == nil {
		m.errorf("%s = %v with no fatal fault armed", what, err)
		return
	}
	if !errors.Is(err, ErrFailed) {
		m.errorf("%s = %v; want an error wrapping ErrFailed", what, err)
	}
	switch f.action {
	case faultPanic:
		var pe *PanicError
		if !errors.As(err, &pe) || pe.Op != f.op || pe.Value != faultPanicValue {
			m.errorf("%s = %v; want a PanicError in %s", what, err, f.op)
		}
	case faultFail:
		var fe *FlushError
		if !errors.As(err, &fe) || fe.Op != f.op || !errors.Is(err, errFault) {
			m.errorf("%s = %v; want a FlushError of %s wrapping the injected error", what, err, f.op)
		}
	}
}

// resolve checks, in settled mode, the writes that completed in this step
// against the order the model predicts: each gets the next epoch, until
// one is dropped by a failure, and then every later one is dropped too.
func (m *model) resolve() {
	order := m.toResolve
	m.toResolve = nil
	if m.c.Err() != nil || m.stopped {
		for ch := range m.slots {
			for _, slot := range m.slots[ch] {
				for _, w := range slot {
					w.held = false
					order = append(order, w)
				}
			}
			m.slots[ch] = nil
		}
	}
	dropping := false
	for _, w := range order {
		o := m.outcome(w)
		switch {
		case !o.done:
			m.errorf("write %d on c%d not applied after the coordinator settled", w.id, w.ch)
		case o.epoch == 0:
			dropping = true
		case dropping:
			// A drain that failed on one channel must not apply the
			// next channels' writes (TestFaultNoApplyAfterFailure).
			m.errorf("write %d got epoch %d after an earlier write was dropped", w.id, o.epoch)
		case o.epoch != m.next:
			m.errorf("write %d on c%d got epoch %d; want %d", w.id, w.ch, o.epoch, m.next)
		default:
			m.next++
		}
	}
}

// check checks every invariant; it runs after each step.
func (m *model) check() {
	m.t.Helper()
	if m.cfg.settle {
		m.resolve()
	}
	m.violMu.Lock()
	for _, v := range m.violations {
		m.errorf("invariant 4: %s", v)
	}
	m.violations = nil
	m.violMu.Unlock()
	m.collect()

	// Failure.
	err := m.c.Err()
	switch {
	case m.cfg.settle && (err != nil) != m.fatalFired():
		m.errorf("Err() = %v; the armed fault %+v fired %v", err, m.fatal, m.fatalFired())
	case err != nil && !m.fatalFired():
		m.errorf("Err() = %v before the armed fault %+v fired", err, m.fatal)
	case err != nil:
		m.wantFatal("Err()", err)
		if st := m.c.Stats(); st.Err != err {
			m.errorf("Stats().Err = %v; want Err() = %v", st.Err, err)
		}
	}

	// Views, read after the watermarks they must cover, and after Err: the
	// failed view is published before Err reports the failure.
	errBefore := m.c.Err()
	before := m.c.Watermarks()
	v := m.c.View()
	if err := modelViewStep(m.view, v); err != nil {
		m.errorf("View(): %v", err)
	}
	if v.Err == nil && v.Written < before.Written {
		m.errorf("invariant 3: View().Written = %d < the written watermark %d read before it", v.Written, before.Written)
	}
	if errBefore != nil && v.Err == nil {
		m.errorf("invariant 6: Err() = %v, but the View() read after it has no Err", errBefore)
	}
	m.view = v

	// Handles, then the watermarks that must cover them.
	byEpoch := m.checkHandles()
	wm := m.c.Watermarks()
	if wm.Applied < wm.Written || wm.Written < wm.Durable {
		m.errorf("Watermarks() = %+v; want Applied >= Written >= Durable", wm)
	}
	if wm.Applied < m.marks.Applied || wm.Written < m.marks.Written || wm.Durable < m.marks.Durable {
		m.errorf("Watermarks() went from %+v back to %+v", m.marks, wm)
	}
	m.marks = wm
	for e := range byEpoch {
		if e > wm.Applied {
			m.errorf("a handle reports epoch %d, above the applied watermark %d", e, wm.Applied)
		}
	}
	if m.cfg.settle && wm.Applied != m.next-1 {
		m.errorf("applied watermark %d; the model assigned epochs up to %d", wm.Applied, m.next-1)
	}
	m.checkViewContent("View()", v)
}

// checkHandles checks every completed handle and returns the applied writes
// by epoch.
func (m *model) checkHandles() map[uint64]*modelWrite {
	byEpoch := map[uint64]*modelWrite{}
	last := make([]uint64, m.cfg.channels)
	for _, w := range m.writes {
		o := m.outcome(w)
		switch {
		case !o.done && (m.stopped || (m.cfg.settle && !w.held)):
			m.errorf("write %d on c%d not applied (stopped %v)", w.id, w.ch, m.stopped)
			continue
		case !o.done:
			continue
		case o.epoch == 0:
			if !errors.Is(o.err, ErrFailed) || m.c.Err() == nil {
				m.errorf("write %d has no epoch and error %v; want the failure", w.id, o.err)
			}
			continue
		case w.held:
			m.errorf("write %d got epoch %d while its channel c%d is paused", w.id, o.epoch, w.ch)
		}
		e := o.epoch
		if prev := byEpoch[e]; prev != nil {
			m.errorf("writes %d and %d both got epoch %d", prev.id, w.id, e)
		}
		byEpoch[e] = w
		if e <= last[w.ch] {
			m.errorf("write %d on c%d got epoch %d after epoch %d of an earlier write of the channel", w.id, w.ch, e, last[w.ch])
		}
		last[w.ch] = e
		var pe *PanicError
		var ae *ApplyError
		switch m.inj.actionAt("Apply", int(e-m.cfg.first+1)) { // Apply calls are numbered from 1
		case faultPanic:
			if !errors.As(o.err, &pe) || pe.Op != "Apply" {
				m.errorf("write %d at epoch %d, whose Apply panicked: error %v; want a PanicError", w.id, e, o.err)
			}
		case faultFail:
			if !errors.As(o.err, &ae) || ae.Epoch != e || !errors.Is(o.err, errFault) {
				m.errorf("write %d at epoch %d, whose Apply failed: error %v; want an ApplyError for it", w.id, e, o.err)
			}
		default:
			// A batch fails as a whole when a later write of it panicked.
			panicked := w.bh != nil && errors.As(o.err, &pe) && pe.Op == "Apply"
			if o.err != nil && !panicked {
				m.errorf("write %d at epoch %d: error %v; want nil", w.id, e, o.err)
			}
		}
	}
	return byEpoch
}

// checkViewContent checks that the frozen views and the snapshot of v hold
// exactly the writes of their epochs. Every epoch a view covers was
// applied before the view was published, so its handle has completed.
func (m *model) checkViewContent(what string, v *modelView) {
	byEpoch := map[uint64]*modelWrite{}
	outcomes := map[*modelWrite]modelOutcome{}
	for _, w := range m.writes {
		o := m.outcome(w)
		outcomes[w] = o
		if o.done && o.epoch > 0 {
			byEpoch[o.epoch] = w
		}
	}
	ok := func(e uint64) (*modelWrite, bool) {
		w := byEpoch[e]
		return w, w != nil && outcomes[w].err == nil
	}
	want := map[string]seqValue{}
	var seq uint64
	for e := m.cfg.first; e <= v.Written; e++ {
		w, good := ok(e)
		if w == nil {
			m.errorf("%s: epoch %d is written (Written %d) but no handle reports it", what, e, v.Written)
			return
		}
		if good {
			want[w.wr.key] = seqValue{seq, w.wr.value}
			seq++
		}
	}
	if len(v.Snapshot) != len(want) {
		m.errorf("%s: snapshot at Written %d has %d rows; want %d", what, v.Written, len(v.Snapshot), len(want))
	}
	for k, sv := range want {
		if got, found := v.Snapshot[k]; !found || got != sv {
			m.errorf("%s: snapshot[%q] = %+v, %v; want %+v", what, k, got, found, sv)
		}
	}
	for _, f := range v.Frozen {
		n := 0
		for e := f.Epochs.Start; e < f.Epochs.End; e++ {
			w, good := ok(e)
			if w == nil {
				m.errorf("%s: frozen delta %v holds epoch %d, which no handle reports", what, f.Epochs, e)
				return
			}
			if good {
				n++
				if got, found := f.View[w.wr.key]; !found || got != w.wr.value {
					m.errorf("%s: frozen delta %v: [%q] = %d, %v; want %d", what, f.Epochs, w.wr.key, got, found, w.wr.value)
				}
			}
		}
		if len(f.View) != n {
			m.errorf("%s: frozen delta %v has %d keys; want %d", what, f.Epochs, len(f.View), n)
		}
	}
}

// modelViewStep checks v's shape and that it does not go back from prev
// (nil for none).
func modelViewStep(prev, v *modelView) error {
	if v == nil {
		return errors.New("nil view")
	}
	for i, f := range v.Frozen {
		if f.Epochs.Len() == 0 {
			return fmt.Errorf("frozen delta %d has empty epochs %v", i, f.Epochs)
		}
		if i > 0 && v.Frozen[i-1].Epochs.Start != f.Epochs.End {
			return fmt.Errorf("frozen deltas %v then %v: want contiguous, newest first", v.Frozen[i-1].Epochs, f.Epochs)
		}
	}
	if n := len(v.Frozen); n > 0 && v.Frozen[n-1].Epochs.Start != v.Written+1 {
		return fmt.Errorf("oldest frozen delta %v does not follow Written %d", v.Frozen[n-1].Epochs, v.Written)
	}
	if v.Err != nil && (len(v.Frozen) > 0 || v.Current.data == nil || len(v.Current.keys()) > 0) {
		return fmt.Errorf("failed view (%v) keeps %d frozen deltas and live data", v.Err, len(v.Frozen))
	}
	if prev == nil {
		return nil
	}
	if prev.Err != nil && v != prev {
		return fmt.Errorf("a view was published after the failed view")
	}
	if v.Written < prev.Written {
		return fmt.Errorf("Written went back from %d to %d", prev.Written, v.Written)
	}
	top := func(v *modelView) uint64 {
		if len(v.Frozen) > 0 {
			return v.Frozen[0].Epochs.End
		}
		return v.Written + 1
	}
	if v.Err == nil && top(v) < top(prev) {
		return fmt.Errorf("frozen epochs went back from %d to %d", top(prev), top(v))
	}
	return nil
}

// stop stops the coordinator and checks the end state: every accepted
// write is in storage with its value and sequence number, or its waiter
// got an error.
func (m *model) stop() error {
	m.stopping.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 24*time.Hour)
	defer cancel()
	stopErr := m.c.Stop(ctx)
	m.stopped = true
	for _, w := range m.writes {
		w.held = false
	}
	if m.cfg.settle {
		m.settle()
	}
	if m.fatalFired() != (stopErr != nil) {
		m.errorf("Stop() = %v; the armed fault %+v fired %v", stopErr, m.fatal, m.fatalFired())
	}
	if stopErr != nil {
		m.wantFatal("Stop()", stopErr)
	}
	m.check()
	for _, sub := range m.subs {
		m.drain(sub)
		if _, err := sub.s.Next(ctx); !errors.Is(err, ErrClosed) {
			m.errorf("Subscriber.Next() after Stop = %v; want ErrClosed", err)
		}
	}
	if _, err := m.chans[0].TryWrite(w("late", 0, 1)); !errors.Is(err, ErrClosed) && !errors.Is(err, ErrFailed) {
		m.errorf("TryWrite after Stop = %v; want ErrClosed or the failure", err)
	}

	wm := m.c.Watermarks()
	byEpoch := m.checkHandles()
	if uint64(len(byEpoch)) != wm.Applied-(m.cfg.first-1) {
		m.errorf("%d epochs assigned from %d; the applied watermark is %d: epochs are not contiguous",
			len(byEpoch), m.cfg.first, wm.Applied)
	}
	storage := m.fl.storage.snapshot()
	rows := 0
	var seq uint64
	for e := m.cfg.first; e <= wm.Applied; e++ {
		w := byEpoch[e]
		if w == nil {
			m.errorf("no write has epoch %d <= applied %d", e, wm.Applied)
			continue
		}
		o := m.outcome(w)
		var err error
		if w.h != nil {
			_, err = w.h.Wait(ctx, Durable)
		} else {
			_, err = w.bh.Wait(ctx, Durable)
			if err == nil {
				err = o.err // the write's own ApplyError
			}
		}
		row, stored := storage[w.wr.key]
		switch {
		case err == nil:
			if want := (seqValue{seq, w.wr.value}); !stored || row != want {
				m.errorf("write %d at epoch %d is Durable but storage has %+v, %v; want %+v", w.id, e, row, stored, want)
			}
		case stopErr == nil && !errors.As(err, new(*ApplyError)):
			m.errorf("Wait(Durable) of write %d after a clean Stop = %v; want nil", w.id, err)
		case !errors.Is(err, ErrFailed) && !errors.As(err, new(*ApplyError)):
			m.errorf("Wait(Durable) of write %d after Stop = %v; want nil, its ApplyError or the failure", w.id, err)
		}
		if o.err == nil {
			if stored {
				rows++
				if want := (seqValue{seq, w.wr.value}); row != want {
					m.errorf("storage has %+v for write %d at epoch %d; want %+v", row, w.id, e, want)
				}
			}
			seq++
		}
		// Everything up to the written watermark is stored. Past it, a
		// write may still be stored if the coordinator failed while its
		// FlushDelta was running: the flush is then never announced and
		// its waiters get the failure, which is allowed (unacknowledged,
		// like a timeout); with a clean Stop nothing is stored past it.
		wantStored := o.err == nil && e <= wm.Written
		if stored != wantStored && (!stored || o.err != nil || stopErr == nil) {
			m.errorf("write %d at epoch %d (error %v): stored %v, written watermark %d", w.id, e, o.err, stored, wm.Written)
		}
	}
	if len(storage) != rows {
		m.errorf("storage has %d rows; only %d belong to accepted writes", len(storage), rows)
	}
	v := m.c.View()
	if stopErr == nil {
		if wm.Written != wm.Applied || wm.Durable != wm.Applied || v.Written != wm.Applied || len(v.Frozen) != 0 {
			m.errorf("after a clean Stop: watermarks %+v, view Written %d with %d frozen; want all at Applied", wm, v.Written, len(v.Frozen))
		}
	} else if v.Err == nil {
		m.errorf("final View().Err = nil after a failure")
	}
	return stopErr
}

// TestModelRandom runs random operation sequences against the model.
// Reproduce a failure with the seed it prints:
//
//	go test -run TestModelRandom -model.seed=N -model.runs=1 -v
func TestModelRandom(t *testing.T) {
	seed := *modelSeed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	runs := *modelRuns
	if testing.Short() {
		runs = min(runs, 20)
	}
	var totals modelTotals
	for i := range runs {
		runSeed := seed + int64(i)
		rng := rand.New(rand.NewPCG(uint64(runSeed), 0x6d6f64656c))
		data := make([]byte, modelHeader+2**modelSteps)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		if !t.Run(fmt.Sprintf("seed=%d", runSeed), func(t *testing.T) { modelRunTotals(t, data, &totals) }) {
			t.Fatalf("reproduce with: go test -run 'TestModelRandom' -model.seed=%d -model.runs=1 -v", runSeed)
		}
	}
	t.Logf("seeds %d..%d: %d sequences (%d settled), %d steps, %d writes accepted, %d epochs applied, "+
		"%d with faults armed, %d ended failed, %d stopped cleanly; liveness: %d sequences, %d waits, "+
		"at most %d FlushDelta and %d FlushStorage calls per wait",
		seed, seed+int64(runs)-1, totals.runs, totals.settled, totals.steps, totals.writes, totals.epochs,
		totals.faultsArmed, totals.failed, totals.cleanStops, totals.live, totals.liveWaits,
		totals.liveMax.deltas, totals.liveMax.syncs)
}

// modelFuzzSeeds are hand-written sequences for FuzzOperations' corpus.
func modelFuzzSeeds() [][]byte {
	op := func(k modelOpKind, arg uint8) modelOp { return modelOp{k, arg} }
	settled := [modelHeader]byte{8, 1, 3} // 2 channels, queue 2, no size flush
	concurrent := [modelHeader]byte{1, 6, 0}
	seeds := [][]byte{
		// Writes on two channels, each kind of flush.
		modelEncode(settled, op(modelOpWrite, 0), op(modelOpTryWrite, 1), op(modelOpWriteBatch, 0x20),
			op(modelOpFlush, 0), op(modelOpFlush, 1), op(modelOpWait, 2), op(modelOpFlush, 2)),
		// Pause, overfill, resume, stop with writes still queued.
		modelEncode(settled, op(modelOpPause, 1), op(modelOpTryWrite, 1), op(modelOpWrite, 1),
			op(modelOpTryWrite, 1), op(modelOpWrite, 1), op(modelOpEpoch, 0), op(modelOpResume, 1),
			op(modelOpPause, 0), op(modelOpWriteBatch, 0x10)),
		// A FlushDelta failure with waiters and a subscriber.
		modelEncode(settled, op(modelOpSubscribe, 0), op(modelOpWrite, 0), op(modelOpFault, 0),
			op(modelOpWait, 1), op(modelOpWrite, 1), op(modelOpDrain, 0), op(modelOpFlush, 2)),
		// An Apply panic inside a batch queued on a paused channel.
		modelEncode(settled, op(modelOpPause, 0), op(modelOpWriteBatch, 0x20), op(modelOpFault, 4<<2),
			op(modelOpResume, 0), op(modelOpWait, 0)),
		// Transient flusher errors, retried, with ticks and size flushes.
		modelEncode([modelHeader]byte{8, 0, 2 | 8}, op(modelOpFault, 6<<2), op(modelOpWrite, 0), op(modelOpWrite, 1),
			op(modelOpTick, 0), op(modelOpFault, 8<<2), op(modelOpWait, 2), op(modelOpWriteBatch, 0x21)),
		// Concurrent mode, lagging subscriber, FlushStorage panic.
		modelEncode(concurrent, op(modelOpSubscribe, 0), op(modelOpWrite, 0), op(modelOpFlush, 1),
			op(modelOpWrite, 1), op(modelOpFlush, 1), op(modelOpFault, 3<<2), op(modelOpWait, 2), op(modelOpDrain, 0)),
		// Live: waits at every level and with every call outstanding at
		// the end, one on a paused channel, one abandoned, one far ahead.
		modelEncode([modelHeader]byte{64 | 8, 1, 0}, op(modelOpWrite, 0), op(modelOpWrite, 1),
			op(modelOpAwait, 2), op(modelOpAwait, 3+1), op(modelOpAwait, 6+2), op(modelOpPause, 1),
			op(modelOpWrite, 1), op(modelOpAwait, 0+2), op(modelOpAwait, 24*9+3+2), op(modelOpAwait, 1),
			op(modelOpAbandon, 1), op(modelOpWriteBatch, 0x20), op(modelOpAwait, 6)),
		// Live, concurrent and lazy: Written and Durable waits served by
		// the liveness probes' Flush, a transient FlushDelta fault.
		modelEncode([modelHeader]byte{64 | 2, 5, 2 | 4}, op(modelOpWrite, 0), op(modelOpAwait, 1),
			op(modelOpFault, 6<<2), op(modelOpWrite, 1), op(modelOpAwait, 2), op(modelOpAwait, 3+2),
			op(modelOpWriteBatch, 0x11), op(modelOpAwait, 9+2)),
	}
	for s := range uint64(3) {
		rng := rand.New(rand.NewPCG(s, 1))
		data := make([]byte, modelHeader+2*40)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		seeds = append(seeds, data)
	}
	return seeds
}

// FuzzOperations decodes the fuzzer's bytes into a configuration and an
// operation sequence and runs it against the model.
func FuzzOperations(f *testing.F) {
	for _, seed := range modelFuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) { modelRun(t, data) })
}

// TestModelFlushCoversWritesQueuedBehindHeld checks Flush's promise to cover
// every write accepted on an unpaused channel before the call, in the case
// the model found: the coordinator holds the rest of a turn that stopped at
// FlushSize when the Flush request arrives, and more writes are queued
// behind it.
func TestModelFlushCoversWritesQueuedBehindHeld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inj := newFaultInjector()
		inj.add(faultRule{op: "FlushDelta", from: 1, to: 1, action: faultHangChan})
		cfg := testConfig()
		cfg.FlushSize = 2
		cfg.MaxPendingFlushes = 1
		c, _ := faultNewCoordinator(t, cfg, inj)
		t.Cleanup(inj.unblock)
		c.Start()
		ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
		defer cancel()
		ch := c.Channel("default")
		// Delta [1, 2) hangs in the flusher, [2, 3) fills the flush queue.
		for i := range 2 {
			if _, err := ch.Write(ctx, w(fmt.Sprint("x", i), 0, 1)); err != nil {
				t.Fatalf("Write = %v", err)
			}
			if _, err := c.Flush(ctx, Applied); err != nil {
				t.Fatalf("Flush(Applied) = %v", err)
			}
			synctest.Wait()
		}
		// Three writes taken in one turn: the second fills the delta, whose
		// freeze blocks on the full flush queue with the third held.
		ch.Pause()
		for i := range 3 {
			if _, err := ch.TryWrite(w(fmt.Sprint("w", i), 0, 1)); err != nil {
				t.Fatalf("TryWrite = %v", err)
			}
		}
		ch.Resume()
		synctest.Wait()
		late, err := ch.TryWrite(w("late", 0, 1))
		if err != nil {
			t.Fatalf("TryWrite(late) = %v", err)
		}
		var flushed uint64
		res := faultAsync(func() (err error) { flushed, err = c.Flush(ctx, Applied); return err })
		synctest.Wait()
		inj.unblock()
		if err := <-res; err != nil {
			t.Fatalf("Flush(Applied) = %v", err)
		}
		e, err := late.Epoch(ctx)
		if err != nil || e > flushed {
			t.Errorf("Flush(Applied) = %d, but the write accepted before it got epoch %d, %v", flushed, e, err)
		}
	})
}

// modelLoad is a sustained-load schedule for TestModelSustainedLoad.
type modelLoad struct {
	name    string
	header  [modelHeader]byte // the configuration, as in a sequence
	writers int               // goroutines that write without waiting
	writes  int               // writes per writer
	clients int               // goroutines that write, then wait for Durable
	rounds  int               // writes per client
	// abandon starts the load with a WaitFor(Durable) of a far epoch whose
	// context ends at once: an abandoned wait must not keep demand raised.
	abandon bool
}

// TestModelSustainedLoad runs the model's coordinator under sustained
// load: writers keep writing while clients wait for Durable on their own
// writes, and FlushDelta takes a little (fake) time, so that the
// coordinator keeps the flush queue full. While a Durable waiter exists,
// no more than modelLiveBound FlushDelta calls may run between two
// FlushStorage calls. Every goroutine stops after a bounded number of
// writes, so a starved sync shows up as a count, not a hang; the model's
// end-of-run checks then run as for a sequence.
func TestModelSustainedLoad(t *testing.T) {
	const (
		twoChannels = 0     // header[0]: 2 channels, concurrent, SyncOnDemand
		syncAlways  = 4     // header[0]: SyncAlways
		pending2    = 1 | 4 // header[1]: QueueCapacity 2, MaxPendingFlushes 2
		pending1    = 1     // header[1]: QueueCapacity 2, MaxPendingFlushes 1
		flushSize2  = 0     // header[2]: FlushSize 2, no retry
	)
	for _, ld := range []modelLoad{
		{name: "clients", header: [modelHeader]byte{twoChannels, pending2, flushSize2},
			writers: 2, writes: 200, clients: 16, rounds: 10},
		{name: "clients/pending=1", header: [modelHeader]byte{twoChannels, pending1, flushSize2},
			writers: 2, writes: 200, clients: 16, rounds: 10},
		{name: "abandoned-demand", header: [modelHeader]byte{twoChannels, pending2, flushSize2},
			writers: 2, writes: 200, clients: 1, rounds: 20, abandon: true},
		// Controls, which hold today: one Durable waiter at a time, and
		// SyncAlways, which syncs after every batch of deltas.
		{name: "one-client", header: [modelHeader]byte{twoChannels, pending2, flushSize2},
			writers: 2, writes: 200, clients: 1, rounds: 20},
		{name: "clients/SyncAlways", header: [modelHeader]byte{syncAlways, pending2, flushSize2},
			writers: 2, writes: 200, clients: 16, rounds: 10},
	} {
		t.Run(ld.name, func(t *testing.T) { synctest.Test(t, ld.run) })
	}
}

func (ld modelLoad) run(t *testing.T) {
	cfg, _ := modelDecode(ld.header[:])
	m := newModel(t, cfg)
	m.trace = append(m.trace, fmt.Sprintf("Load(%+v)", ld))
	defer func() {
		if t.Failed() {
			t.Logf("config %+v", cfg)
		}
	}()
	// FlushDelta takes a millisecond of fake time: meanwhile every other
	// goroutine runs until it blocks, the coordinator on a full flush queue.
	m.inj.add(faultRule{op: "FlushDelta", from: 1, action: faultSlow, delay: time.Millisecond})

	// On the flusher goroutine: the FlushDelta calls since the last
	// FlushStorage during which a Durable waiter existed, and the most.
	var durableWaiters, run, longest atomic.Int64
	m.fl.onCall = func(op string) {
		switch {
		case op == "FlushStorage" || durableWaiters.Load() == 0:
			run.Store(0)
		default:
			longest.Store(max(longest.Load(), run.Add(1)))
		}
	}
	m.c.Start()
	ctx := deadlineCtx(t)

	if ld.abandon {
		actx, cancel := context.WithCancel(ctx)
		res := faultAsync(func() error { return m.c.WaitFor(actx, Durable, cfg.first+1<<30) })
		synctest.Wait() // it waits, its demand raised
		cancel()
		if err := await(t, "an abandoned WaitFor(Durable)", res); !errors.Is(err, context.Canceled) {
			t.Fatalf("abandoned WaitFor(Durable) = %v; want context.Canceled", err)
		}
	}

	var (
		mu       sync.Mutex
		accepted []*modelWrite
		nextID   atomic.Int64
		waitMax  atomic.Int64 // the most FlushDelta calls one Durable wait spanned
		wg       sync.WaitGroup
	)
	errs := make(chan error, ld.writers+ld.clients)
	write := func(ch int) (*modelWrite, error) {
		id := int(nextID.Add(1) - 1)
		mw := &modelWrite{id: id, ch: ch, wr: w(fmt.Sprintf("c%d-w%d", ch, id), uint64(id*8+ch), 1)}
		h, err := m.chans[ch].Write(ctx, mw.wr)
		if err != nil {
			return nil, fmt.Errorf("Write on c%d: %w", ch, err)
		}
		mw.h = h
		mu.Lock()
		accepted = append(accepted, mw)
		mu.Unlock()
		return mw, nil
	}
	for i := range ld.writers {
		wg.Go(func() {
			for range ld.writes {
				if _, err := write(i % cfg.channels); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for i := range ld.clients {
		wg.Go(func() {
			for range ld.rounds {
				mw, err := write(i % cfg.channels)
				if err != nil {
					errs <- err
					return
				}
				// A Durable waiter exists once its write is applied: its
				// demand is registered from then on.
				if _, err := mw.h.Epoch(ctx); err != nil {
					errs <- fmt.Errorf("Epoch() of write %d: %w", mw.id, err)
					return
				}
				durableWaiters.Add(1)
				start := m.fl.calls()
				_, err = mw.h.Wait(ctx, Durable)
				used := m.fl.calls().since(start)
				durableWaiters.Add(-1)
				waitMax.Store(max(waitMax.Load(), used.deltas))
				if err != nil {
					errs <- fmt.Errorf("Wait(Durable) of write %d: %w", mw.id, err)
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	await(t, "the load's writers and clients", done)
	close(errs)
	for err := range errs {
		t.Errorf("%s: %v", ld.name, err)
	}

	calls := m.fl.calls()
	if b := modelLiveBound(cfg); longest.Load() > b.deltas {
		t.Errorf("liveness: while a Durable waiter existed, %d FlushDelta calls ran without a FlushStorage; "+
			"bound %d (MaxPendingFlushes %d). The longest Durable wait spanned %d FlushDelta calls; "+
			"in all, %d writes, %v calls",
			longest.Load(), b.deltas, cfg.pending, waitMax.Load(), len(accepted), calls)
	} else {
		t.Logf("at most %d FlushDelta calls between FlushStorage calls while a Durable waiter existed "+
			"(bound %d); the longest Durable wait spanned %d FlushDelta calls; %d writes, %v calls",
			longest.Load(), b.deltas, waitMax.Load(), len(accepted), calls)
	}

	// The model's end-of-run checks, with the writes in epoch order once
	// all are applied.
	if _, err := m.c.Flush(ctx, Applied); err != nil {
		t.Fatalf("Flush(Applied) after the load = %v", err)
	}
	slices.SortFunc(accepted, func(a, b *modelWrite) int { return cmp.Compare(m.outcome(a).epoch, m.outcome(b).epoch) })
	m.writes = accepted
	m.check()
	m.trace = append(m.trace, "Stop")
	if err := m.stop(); err != nil {
		t.Errorf("Stop() = %v", err)
	}
}
