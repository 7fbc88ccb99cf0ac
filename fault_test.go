package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// This file injects faults into every user hook the coordinator calls
// (Apply, Freeze, FlushDelta, FlushStorage) and checks, for every API path,
// that each waiter returns with the right error and that the coordinator's
// state stays sane. Every test runs in a synctest bubble: time is fake, so a
// waiter that would hang forever sees its patience context expire at once
// and the test reports it instead of timing out.

// faultPatience is the deadline every wait of these tests gets. It is fake
// time: only a hang ever reaches it.
const faultPatience = time.Hour

var errFault = errors.New("fault: injected error")

const faultPanicValue = "fault: injected panic"

// faultAction is what an injected fault does to the call it hits.
type faultAction uint8

const (
	faultPass     faultAction = iota // run the call normally
	faultFail                        // return an error wrapping errFault
	faultPanic                       // panic with faultPanicValue
	faultSlow                        // wait delay (or ctx), then run normally
	faultHangCtx                     // block until ctx is done, return its error
	faultHangChan                    // block until the test releases it, ignoring ctx, then run normally
)

// faultRule applies action to calls from..to (numbered from 1 per method;
// to == 0 means every later call) of op: "Apply", "Freeze", "FlushDelta"
// or "FlushStorage".
type faultRule struct {
	op       string
	from, to int
	action   faultAction
	delay    time.Duration
	fired    int // calls this rule matched
}

// faultCall names one call of a hooked method.
type faultCall struct {
	op string
	n  int
}

// faultInjector decides, for each call of a user hook, whether to inject a
// fault. It is shared by a faultDelta and a faultFlusher.
type faultInjector struct {
	release     chan struct{} // closed by unblock: faultHangChan calls go on
	releaseOnce sync.Once
	// applyHook, if set before the coordinator starts, sees every write
	// passed to Apply.
	applyHook func(testWrite)

	mu      sync.Mutex
	rules   []faultRule
	calls   map[string]int
	firedAt map[faultCall]faultAction // the action injected into each call
	// ctxErrs records, for calls that hung, the flusher context's error
	// when they stopped hanging.
	ctxErrs []error
}

func newFaultInjector() *faultInjector {
	return &faultInjector{release: make(chan struct{}), calls: map[string]int{},
		firedAt: map[faultCall]faultAction{}}
}

// unblock lets every faultHangChan call, present and future, go on.
func (inj *faultInjector) unblock() { inj.releaseOnce.Do(func() { close(inj.release) }) }

func (inj *faultInjector) add(r faultRule) int {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	inj.rules = append(inj.rules, r)
	return len(inj.rules) - 1
}

// armNext makes the next count calls of op (0: every later call) do
// action, and returns the rule's index.
func (inj *faultInjector) armNext(op string, action faultAction, count int) int {
	inj.mu.Lock()
	from := inj.calls[op] + 1
	inj.mu.Unlock()
	to := 0
	if count > 0 {
		to = from + count - 1
	}
	return inj.add(faultRule{op: op, from: from, to: to, action: action})
}

// ruleFired returns how many calls rule i matched.
func (inj *faultInjector) ruleFired(i int) int {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	return inj.rules[i].fired
}

// actionAt returns the action injected into call n of op (faultPass if
// none).
func (inj *faultInjector) actionAt(op string, n int) faultAction {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	return inj.firedAt[faultCall{op, n}]
}

func (inj *faultInjector) callCount(op string) int {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	return inj.calls[op]
}

func (inj *faultInjector) hungCtxErrs() []error {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	return slices.Clone(inj.ctxErrs)
}

func faultSeverity(a faultAction) int {
	switch a {
	case faultPanic:
		return 2
	case faultFail:
		return 1
	}
	return 0
}

// hit is called first thing in every hooked method.
func (inj *faultInjector) hit(ctx context.Context, op string) error {
	inj.mu.Lock()
	inj.calls[op]++
	n := inj.calls[op]
	// Every matching rule counts the call; the most severe one acts
	// (a panic over an error over the rest).
	var rule *faultRule
	for i := range inj.rules {
		r := &inj.rules[i]
		if r.op == op && n >= r.from && (r.to == 0 || n <= r.to) && r.action != faultPass {
			r.fired++
			if rule == nil || faultSeverity(r.action) > faultSeverity(rule.action) {
				rule = r
			}
		}
	}
	if rule != nil {
		inj.firedAt[faultCall{op, n}] = rule.action
	}
	inj.mu.Unlock()
	if rule == nil {
		return nil
	}
	switch rule.action {
	case faultFail:
		return fmt.Errorf("%s call %d: %w", op, n, errFault)
	case faultPanic:
		panic(faultPanicValue)
	case faultSlow:
		t := time.NewTimer(rule.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	case faultHangCtx:
		<-ctx.Done()
		inj.mu.Lock()
		inj.ctxErrs = append(inj.ctxErrs, ctx.Err())
		inj.mu.Unlock()
		return ctx.Err()
	case faultHangChan:
		<-inj.release
		inj.mu.Lock()
		inj.ctxErrs = append(inj.ctxErrs, ctx.Err())
		inj.mu.Unlock()
	}
	return nil
}

// faultDelta is a testDelta whose Apply and Freeze go through an injector.
// Freeze cannot return an error, so only panics apply to it.
type faultDelta struct {
	*testDelta
	inj *faultInjector
}

// Apply fails or panics when a rule says so, else applies w.
func (d *faultDelta) Apply(w testWrite) (struct{}, error) {
	if d.inj.applyHook != nil {
		d.inj.applyHook(w)
	}
	if err := d.inj.hit(context.Background(), "Apply"); err != nil {
		return struct{}{}, err
	}
	return d.testDelta.Apply(w)
}

// Freeze panics when a rule says so, else freezes the delta.
func (d *faultDelta) Freeze() (frozenTestDelta, map[string]uint64, testContext) {
	_ = d.inj.hit(context.Background(), "Freeze")
	return d.testDelta.Freeze()
}

// faultFlusher is a testFlusher whose calls go through an injector.
type faultFlusher struct {
	*testFlusher
	inj *faultInjector
}

// FlushDelta injects the fault a rule says, else writes the delta.
func (f *faultFlusher) FlushDelta(ctx context.Context, frozen frozenTestDelta, epochs EpochRange) (memSnapshot, error) {
	if err := f.inj.hit(ctx, "FlushDelta"); err != nil {
		return nil, err
	}
	return f.testFlusher.FlushDelta(ctx, frozen, epochs)
}

// FlushStorage injects the fault a rule says, else syncs.
func (f *faultFlusher) FlushStorage(ctx context.Context) error {
	if err := f.inj.hit(ctx, "FlushStorage"); err != nil {
		return err
	}
	return f.testFlusher.FlushStorage(ctx)
}

// faultNewCoordinator builds a coordinator over a faultDelta and a
// faultFlusher sharing inj. It is stopped at cleanup.
func faultNewCoordinator(t testing.TB, cfg Config, inj *faultInjector) (*testCoordinator, *faultFlusher) {
	t.Helper()
	fl := &faultFlusher{testFlusher: newTestFlusher(), inj: inj}
	newDelta := func(ctx testContext) *faultDelta { return &faultDelta{testDelta: newTestDelta(ctx), inj: inj} }
	c, err := New(cfg, newDelta, testContext{}, fl.storage.snapshot(), fl)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	stopAtCleanup(t, c, faultPatience)
	return c, fl
}

// faultObserver records the events the tests look at.
type faultObserver struct {
	NopObserver
	mu      sync.Mutex
	flushed []FlushInfo
	synced  []SyncInfo
	slow    []faultSlowEvent
}

type faultSlowEvent struct {
	op      string
	epochs  EpochRange
	running time.Duration
}

// Flushed records i.
func (o *faultObserver) Flushed(i FlushInfo) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.flushed = append(o.flushed, i)
}

// Synced records i.
func (o *faultObserver) Synced(i SyncInfo) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.synced = append(o.synced, i)
}

// SlowFlush records the event.
func (o *faultObserver) SlowFlush(op string, epochs EpochRange, running time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.slow = append(o.slow, faultSlowEvent{op, epochs, running})
}

func (o *faultObserver) events() ([]FlushInfo, []SyncInfo, []faultSlowEvent) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.flushed), slices.Clone(o.synced), slices.Clone(o.slow)
}

// faultLog is a concurrency-safe buffer for a slog text handler.
type faultLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (l *faultLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns everything written.
func (l *faultLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// faultKind is one fatal fault of the table: the hook that fails and how.
type faultKind struct {
	name   string
	op     string
	action faultAction
}

var faultKinds = []faultKind{
	{"FlushDeltaError", "FlushDelta", faultFail},
	{"FlushDeltaPanic", "FlushDelta", faultPanic},
	{"FlushStorageError", "FlushStorage", faultFail},
	{"FlushStoragePanic", "FlushStorage", faultPanic},
	{"ApplyPanic", "Apply", faultPanic},
	{"FreezePanic", "Freeze", faultPanic},
}

// faultPre is the number of epochs applied before the fault is armed:
// three single writes and a batch of two, on channel "a".
const faultPre = 5

// faultFixture is one case of the table: a coordinator with channels "a"
// (live) and "b" (paused, its queue full), faultPre applied writes, and a
// fault armed on the next call of kind.op.
type faultFixture struct {
	t    *testing.T
	kind faultKind
	inj  *faultInjector
	c    *testCoordinator
	ctx  context.Context
	a, b *Channel[testWrite, struct{}]

	pre         []*WriteHandle[struct{}] // epochs 1..3
	preBatch    *BatchHandle[struct{}]   // epochs 4..5
	queued      []*WriteHandle[struct{}] // two writes queued on paused b
	queuedBatch *BatchHandle[struct{}]   // a batch of two queued on paused b
	poison      *WriteHandle[struct{}]   // ApplyPanic: the write whose Apply panicked

	keys map[*WriteHandle[struct{}]]testWrite
}

func faultSetup(t *testing.T, kind faultKind) *faultFixture {
	t.Helper()
	inj := newFaultInjector()
	cfg := testConfig()
	cfg.Channels = []string{"a", "b"}
	cfg.QueueCapacity = 3
	cfg.SubscriberBuffer = 1
	c, _ := faultNewCoordinator(t, cfg, inj)
	c.Start()
	ctx, cancel := context.WithTimeout(context.Background(), faultPatience)
	t.Cleanup(cancel)
	fx := &faultFixture{t: t, kind: kind, inj: inj, c: c, ctx: ctx, a: c.Channel("a"), b: c.Channel("b"),
		keys: map[*WriteHandle[struct{}]]testWrite{}}

	for i := range 3 {
		wr := w(fmt.Sprintf("a%d", i), uint64(100+i), 1)
		h, err := fx.a.Write(ctx, wr)
		if err != nil {
			t.Fatalf("Write(%v) = %v; want nil", wr, err)
		}
		fx.pre = append(fx.pre, h)
		fx.keys[h] = wr
	}
	bh, err := fx.a.WriteBatch(ctx, []testWrite{w("a3", 103, 1), w("a4", 104, 1)})
	if err != nil {
		t.Fatalf("WriteBatch = %v; want nil", err)
	}
	fx.preBatch = bh
	fx.b.Pause()
	for i := range 2 {
		wr := w(fmt.Sprintf("b%d", i), uint64(200+i), 1)
		h, err := fx.b.TryWrite(wr)
		if err != nil {
			t.Fatalf("TryWrite(%v) on paused b = %v; want nil", wr, err)
		}
		fx.queued = append(fx.queued, h)
		fx.keys[h] = wr
	}
	if fx.queuedBatch, err = fx.b.WriteBatch(ctx, []testWrite{w("b2", 202, 1), w("b3", 203, 1)}); err != nil {
		t.Fatalf("WriteBatch on paused b = %v; want nil", err)
	}
	synctest.Wait()
	for i, h := range fx.pre {
		if e, err := h.Epoch(ctx); e != uint64(i+1) || err != nil {
			t.Fatalf("pre-write %d: Epoch() = %d, %v; want %d, nil", i, e, err, i+1)
		}
	}
	if r, err := fx.preBatch.Epochs(ctx); r != (EpochRange{4, 6}) || err != nil {
		t.Fatalf("pre-batch: Epochs() = %v, %v; want [4, 6), nil", r, err)
	}
	if _, err := fx.b.TryWrite(w("b-full", 1, 1)); !errors.Is(err, ErrBackpressure) {
		t.Fatalf("TryWrite on full paused b = %v; want ErrBackpressure", err)
	}
	inj.armNext(kind.op, kind.action, 0)
	return fx
}

// trigger makes the armed fault happen through the most direct call and
// checks that call's error.
func (fx *faultFixture) trigger() {
	t, c, ctx := fx.t, fx.c, fx.ctx
	t.Helper()
	switch fx.kind.op {
	case "FlushDelta":
		_, err := c.Flush(ctx, Written)
		fx.wantFailure("trigger Flush(Written)", err)
	case "FlushStorage":
		_, err := c.Flush(ctx, Durable)
		fx.wantFailure("trigger Flush(Durable)", err)
	case "Freeze":
		_, err := c.Flush(ctx, Applied)
		fx.wantFailure("trigger Flush(Applied)", err)
	case "Apply":
		wr := w("poison", 999, 1)
		h, err := fx.a.Write(ctx, wr)
		if err != nil {
			t.Fatalf("Write(%v) = %v; want nil", wr, err)
		}
		fx.poison = h
		fx.keys[h] = wr
		e, err := h.Epoch(ctx)
		fx.wantFailure("poison Epoch()", err)
		if want := c.Watermarks().Applied; e != want || e <= faultPre {
			t.Errorf("poison Epoch() = %d; want the last applied epoch %d (> %d)", e, want, faultPre)
		}
	}
	synctest.Wait()
}

// wantFailure checks that err reports the injected fault.
func (fx *faultFixture) wantFailure(what string, err error) {
	t := fx.t
	t.Helper()
	if err == nil {
		t.Errorf("%s = nil; want an error reporting %s", what, fx.kind.name)
		return
	}
	if !errors.Is(err, ErrFailed) {
		t.Errorf("%s = %v; want an error wrapping ErrFailed", what, err)
	}
	switch fx.kind.action {
	case faultFail:
		var fe *FlushError
		if !errors.As(err, &fe) {
			t.Errorf("%s = %v; want an error wrapping *FlushError", what, err)
			return
		}
		if fe.Op != fx.kind.op || !errors.Is(err, errFault) || fe.Attempts != 1 {
			t.Errorf("%s = %#v; want Op %q, Attempts 1, wrapping the flusher's error", what, fe, fx.kind.op)
		}
		// The failed call covered everything not yet written (FlushDelta)
		// or not yet durable (FlushStorage).
		wm := fx.c.Watermarks()
		want := EpochRange{Start: 1, End: wm.Applied + 1}
		if fx.kind.op == "FlushStorage" {
			want = EpochRange{Start: 1, End: wm.Written + 1}
		}
		if fe.Epochs != want {
			t.Errorf("%s: FlushError.Epochs = %v; want %v (watermarks %+v)", what, fe.Epochs, want, wm)
		}
	case faultPanic:
		var pe *PanicError
		if !errors.As(err, &pe) {
			t.Errorf("%s = %v; want an error wrapping *PanicError", what, err)
			return
		}
		if pe.Op != fx.kind.op || pe.Value != faultPanicValue || !bytes.Contains(pe.Stack, []byte("faultInjector")) {
			t.Errorf("%s = PanicError{Op: %q, Value: %v}; want Op %q, Value %q and the injector in the stack",
				what, pe.Op, pe.Value, fx.kind.op, faultPanicValue)
		}
	}
}

// wantLevel checks the outcome of a wait for epoch at level once the
// coordinator has settled: success exactly when the watermark reached it.
func (fx *faultFixture) wantLevel(what string, err error, level Durability, epoch uint64) {
	fx.t.Helper()
	reached := epoch > 0 && fx.c.Watermarks().Get(level) >= epoch
	switch {
	case reached && err != nil:
		fx.t.Errorf("%s = %v; want nil: epoch %d is %v (watermarks %+v)", what, err, epoch, level, fx.c.Watermarks())
	case !reached:
		fx.wantFailure(what, err)
	}
}

// async runs f in a goroutine of the bubble and returns its result channel.
func faultAsync(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

// epochOf returns the epoch of a settled handle (0 if never applied).
func (fx *faultFixture) epochOf(h *WriteHandle[struct{}]) uint64 {
	if !h.Applied() {
		return 0
	}
	e, _ := h.Epoch(fx.ctx)
	return e
}

// checkFailedState checks the state a failure leaves, then stops the
// coordinator and checks Stop's result.
func (fx *faultFixture) checkFailedState() {
	t, c := fx.t, fx.c
	t.Helper()
	synctest.Wait()
	wm := c.Watermarks()
	if wm.Applied < wm.Written || wm.Written < wm.Durable {
		t.Errorf("Watermarks() = %+v; want Applied >= Written >= Durable", wm)
	}
	switch fx.kind.op {
	case "FlushDelta", "Freeze":
		if wm.Written != 0 {
			t.Errorf("Watermarks().Written = %d after a failed first %s; want 0", wm.Written, fx.kind.op)
		}
	case "FlushStorage":
		if wm.Durable != 0 {
			t.Errorf("Watermarks().Durable = %d after a failed first FlushStorage; want 0", wm.Durable)
		}
	}
	fx.wantFailure("Err()", c.Err())
	if st := c.Stats(); st.Err != c.Err() {
		t.Errorf("Stats().Err = %v; want Err() = %v", st.Err, c.Err())
	}
	v := c.View()
	fx.wantFailure("View().Err", v.Err)
	if len(v.Frozen) != 0 || v.Current.data == nil || len(v.Current.keys()) != 0 {
		t.Errorf("failed View() has %d frozen deltas and live data %v; want none, and a usable empty Current", len(v.Frozen), v.Current.data)
	}
	if v.Written != wm.Written {
		t.Errorf("failed View().Written = %d; want the written watermark %d", v.Written, wm.Written)
	}
	want := map[string]seqValue{}
	for h, wr := range fx.keys {
		if e := fx.epochOf(h); e > 0 && e <= wm.Written {
			want[wr.key] = seqValue{e - 1, wr.value}
		}
	}
	for i, wr := range []testWrite{w("a3", 103, 1), w("a4", 104, 1)} {
		if e := uint64(4 + i); e <= wm.Written {
			want[wr.key] = seqValue{e - 1, wr.value}
		}
	}
	if b, _ := fx.queuedBatch.Epochs(fx.ctx); b.Len() == 2 && b.Last() <= wm.Written {
		want["b2"], want["b3"] = seqValue{b.Start - 1, 202}, seqValue{b.Start, 203}
	}
	assertRows(t, v.Snapshot, want)

	err := c.Stop(fx.ctx)
	fx.wantFailure("Stop()", err)
	if err2 := c.Stop(fx.ctx); err2 != err {
		t.Errorf("second Stop() = %v; want the same error %v", err2, err)
	}
	if got := c.Watermarks(); got != wm {
		t.Errorf("Watermarks() after Stop = %+v; want unchanged %+v", got, wm)
	}
	if got := c.View(); got != v {
		t.Errorf("View() changed after Stop of a failed coordinator")
	}
}

// faultPath exercises one API path around a failure: during starts calls
// that are in flight when the fault happens and returns a check for them;
// after calls the path on the failed coordinator. stopTriggers replaces the
// trigger by Stop.
type faultPath struct {
	name         string
	stopTriggers bool
	during       func(fx *faultFixture) func()
	after        func(fx *faultFixture)
}

func faultPaths() []faultPath {
	paths := []faultPath{
		{
			name: "Write",
			during: func(fx *faultFixture) func() {
				res := faultAsync(func() error { _, err := fx.b.Write(fx.ctx, w("b-blocked", 1, 1)); return err })
				return func() { fx.wantFailure("Write blocked on a full paused queue", <-res) }
			},
			after: func(fx *faultFixture) {
				h, err := fx.a.Write(fx.ctx, w("late", 1, 1))
				if h != nil {
					fx.t.Errorf("Write after failure returned a handle")
				}
				fx.wantFailure("Write after failure", err)
			},
		},
		{
			name: "TryWrite",
			during: func(fx *faultFixture) func() {
				if _, err := fx.b.TryWrite(w("b-full", 1, 1)); !errors.Is(err, ErrBackpressure) || errors.Is(err, ErrFailed) {
					fx.t.Errorf("TryWrite on a full paused queue before the fault = %v; want ErrBackpressure", err)
				}
				return func() {}
			},
			after: func(fx *faultFixture) {
				for _, ch := range []*Channel[testWrite, struct{}]{fx.a, fx.b} {
					h, err := ch.TryWrite(w("late", 1, 1))
					if h != nil || errors.Is(err, ErrBackpressure) {
						fx.t.Errorf("TryWrite(%s) after failure = %v, %v; want no handle and the failure, not backpressure", ch.Name(), h, err)
					}
					fx.wantFailure("TryWrite("+ch.Name()+") after failure", err)
				}
			},
		},
		{
			name: "WriteBatch",
			during: func(fx *faultFixture) func() {
				res := faultAsync(func() error {
					_, err := fx.b.WriteBatch(fx.ctx, []testWrite{w("bb0", 1, 1), w("bb1", 1, 1)})
					return err
				})
				return func() { fx.wantFailure("WriteBatch blocked on a full paused queue", <-res) }
			},
			after: func(fx *faultFixture) {
				_, err := fx.a.WriteBatch(fx.ctx, []testWrite{w("late0", 1, 1), w("late1", 1, 1)})
				fx.wantFailure("WriteBatch after failure", err)
				// b stayed paused: the queued batch was dropped.
				_, err = fx.queuedBatch.Wait(fx.ctx, Applied)
				fx.wantFailure("queued batch Wait(Applied)", err)
				r, err := fx.queuedBatch.Epochs(fx.ctx)
				fx.wantFailure("queued batch Epochs()", err)
				if r.Len() != 0 {
					fx.t.Errorf("dropped batch Epochs() = %v; want empty", r)
				}
			},
		},
		{
			name: "Epoch",
			during: func(fx *faultFixture) func() {
				res := faultAsync(func() error {
					e, err := fx.queued[0].Epoch(fx.ctx)
					if e != 0 {
						return fmt.Errorf("epoch %d of a dropped write; want 0 (%v)", e, err)
					}
					return err
				})
				return func() { fx.wantFailure("Epoch() of a write queued on a paused channel", <-res) }
			},
			after: func(fx *faultFixture) {
				for i, h := range fx.pre {
					if e, err := h.Epoch(fx.ctx); e != uint64(i+1) || err != nil {
						fx.t.Errorf("Epoch() of applied write %d after failure = %d, %v; want %d, nil", i, e, err, i+1)
					}
				}
				if r, err := fx.preBatch.Epochs(fx.ctx); r != (EpochRange{4, 6}) || err != nil {
					fx.t.Errorf("Epochs() of the applied batch after failure = %v, %v; want [4, 6), nil", r, err)
				}
			},
		},
		{
			name: "Subscribe",
			during: func(fx *faultFixture) func() {
				fx.subscribed(fx.c.Subscribe())
				// A second subscriber reads nothing until the failure: with
				// a buffer of one view it lags by every view published.
				published := fx.c.hub.published.Load()
				idle := fx.c.Subscribe()
				idle.Initialize()
				return func() {
					ctx, cancel := context.WithCancel(fx.ctx)
					cancel()
					missed := fx.c.hub.published.Load() - published
					v, err := idle.Next(ctx)
					var lag *LagError
					switch {
					case missed > 1 && (!errors.As(err, &lag) || lag.Missed != missed):
						fx.t.Errorf("Next() of a subscriber %d views behind with a buffer of 1 = %v; want LagError{Missed: %d}", missed, err, missed)
						return
					case missed > 1:
						v = idle.Initialize()
					case err != nil:
						fx.t.Errorf("Next() of a subscriber one view behind = %v; want the failed view", err)
						return
					}
					fx.wantFailure("the lagging subscriber's view", v.Err)
				}
			},
			after: func(fx *faultFixture) {
				s := fx.c.Subscribe()
				v := s.Initialize()
				fx.wantFailure("Initialize() of a subscription made after failure", v.Err)
				if len(v.Frozen) != 0 {
					fx.t.Errorf("Initialize() after failure has %d frozen deltas; want 0", len(v.Frozen))
				}
				ctx, cancel := context.WithCancel(fx.ctx)
				cancel()
				if v, err := s.Next(ctx); !errors.Is(err, context.Canceled) {
					fx.t.Errorf("Next() on a failed coordinator with nothing new = %v, %v; want context.Canceled", v, err)
				}
			},
		},
		{
			name: "PauseResume",
			during: func(fx *faultFixture) func() {
				res := faultAsync(func() error {
					for range 3 {
						fx.a.Pause()
						fx.a.Resume()
					}
					return nil
				})
				return func() { <-res }
			},
			after: func(fx *faultFixture) {
				before := fx.c.Watermarks()
				fx.a.Pause()
				fx.b.Resume()
				fx.b.Pause()
				fx.a.Resume()
				fx.b.Resume()
				synctest.Wait()
				if got := fx.c.Watermarks(); got != before {
					t := fx.t
					t.Errorf("Resume after failure moved watermarks from %+v to %+v; want nothing applied", before, got)
				}
				if fx.b.Len() != 0 {
					fx.t.Errorf("b.Len() = %d after failure; want 0 (queued writes dropped)", fx.b.Len())
				}
			},
		},
		{
			name:         "Stop",
			stopTriggers: true,
			during: func(fx *faultFixture) func() {
				r1 := faultAsync(func() error { return fx.c.Stop(fx.ctx) })
				r2 := faultAsync(func() error { return fx.c.Stop(fx.ctx) })
				return func() {
					e1, e2 := <-r1, <-r2
					fx.wantFailure("Stop()", e1)
					if e1 != e2 {
						fx.t.Errorf("concurrent Stop() = %v and %v; want the same error", e1, e2)
					}
					// Stop applied the paused channel's writes; with an
					// Apply fault the first of them panicked.
					e0 := fx.epochOf(fx.queued[0])
					_, err := fx.queued[0].Epoch(fx.ctx)
					if fx.kind.op == "Apply" {
						fx.wantFailure("Epoch() of the write whose Apply panicked", err)
						if e0 != faultPre+1 {
							fx.t.Errorf("Epoch() of the panicking write = %d; want %d", e0, faultPre+1)
						}
					} else if e0 != faultPre+1 || err != nil {
						fx.t.Errorf("Epoch() of a paused write after Stop = %d, %v; want %d, nil", e0, err, faultPre+1)
					}
				}
			},
		},
	}
	for _, level := range []Durability{Applied, Written, Durable} {
		paths = append(paths,
			faultPath{
				name: "Flush" + level.String(),
				during: func(fx *faultFixture) func() {
					var epoch uint64
					res := faultAsync(func() (err error) { epoch, err = fx.c.Flush(fx.ctx, level); return err })
					return func() {
						err := <-res
						if err == nil {
							if epoch != faultPre {
								fx.t.Errorf("Flush(%v) = %d, nil; want epoch %d", level, epoch, faultPre)
							}
							fx.wantLevel(fmt.Sprintf("Flush(%v) in flight", level), err, level, epoch)
						} else {
							fx.wantFailure(fmt.Sprintf("Flush(%v) in flight", level), err)
						}
					}
				},
				after: func(fx *faultFixture) {
					_, err := fx.c.Flush(fx.ctx, level)
					fx.wantFailure(fmt.Sprintf("Flush(%v) after failure", level), err)
				},
			},
			faultPath{
				name: "Wait" + level.String(),
				during: func(fx *faultFixture) func() {
					r0 := faultAsync(func() error { _, err := fx.pre[0].Wait(fx.ctx, level); return err })
					rb := faultAsync(func() error { _, err := fx.preBatch.Wait(fx.ctx, level); return err })
					rq := faultAsync(func() error { _, err := fx.queued[1].Wait(fx.ctx, level); return err })
					return func() {
						fx.wantLevel(fmt.Sprintf("Wait(%v) of epoch 1", level), <-r0, level, 1)
						fx.wantLevel(fmt.Sprintf("batch Wait(%v) of epochs [4, 6)", level), <-rb, level, 5)
						fx.wantFailure(fmt.Sprintf("Wait(%v) of a dropped write", level), <-rq)
					}
				},
				after: func(fx *faultFixture) {
					// A second wait gets the same answer as the first.
					_, err := fx.pre[0].Wait(fx.ctx, level)
					fx.wantLevel(fmt.Sprintf("Wait(%v) of epoch 1 after failure", level), err, level, 1)
					_, err = fx.preBatch.Wait(fx.ctx, level)
					fx.wantLevel(fmt.Sprintf("batch Wait(%v) after failure", level), err, level, 5)
					if fx.poison != nil {
						_, err = fx.poison.Wait(fx.ctx, level)
						fx.wantFailure(fmt.Sprintf("Wait(%v) of the write whose Apply panicked", level), err)
					}
				},
			},
			faultPath{
				name: "WaitFor" + level.String(),
				during: func(fx *faultFixture) func() {
					r1 := faultAsync(func() error { return fx.c.WaitFor(fx.ctx, level, 1) })
					if level == Applied {
						// WaitFor(Applied) of a future epoch hangs until
						// Stop: see TestFaultWaitForAppliedAfterFailure.
						return func() { fx.wantLevel("WaitFor(Applied, 1)", <-r1, level, 1) }
					}
					rf := faultAsync(func() error { return fx.c.WaitFor(fx.ctx, level, 100) })
					return func() {
						fx.wantLevel(fmt.Sprintf("WaitFor(%v, 1)", level), <-r1, level, 1)
						fx.wantFailure(fmt.Sprintf("WaitFor(%v, 100) of an epoch never assigned", level), <-rf)
					}
				},
				after: func(fx *faultFixture) {
					if level != Applied {
						fx.wantFailure(fmt.Sprintf("WaitFor(%v, 100) after failure", level), fx.c.WaitFor(fx.ctx, level, 100))
					}
				},
			},
		)
	}
	return paths
}

// subscribed drains s in the background until it ends, checking each
// view, and checks the result after Stop.
func (fx *faultFixture) subscribed(s *Subscriber[map[string]uint64, testReader, memSnapshot]) {
	first := s.Initialize()
	var views []*View[map[string]uint64, testReader, memSnapshot]
	res := faultAsync(func() error {
		views = append(views, first)
		for {
			v, err := s.Next(fx.ctx)
			var lag *LagError
			switch {
			case errors.As(err, &lag):
				if lag.Missed == 0 {
					return fmt.Errorf("LagError with Missed 0")
				}
				views = append(views, s.Initialize())
			case err != nil:
				return err
			default:
				views = append(views, v)
			}
		}
	})
	fx.t.Cleanup(func() {
		// Runs after Stop (cleanups run last-in first-out, and the
		// fixture's checks stop the coordinator).
		_ = fx.c.Stop(fx.ctx)
		if err := <-res; !errors.Is(err, ErrClosed) {
			fx.t.Errorf("subscriber Next() after Stop = %v; want ErrClosed", err)
		}
		for i := 1; i < len(views); i++ {
			if err := modelViewStep(views[i-1], views[i]); err != nil {
				fx.t.Errorf("subscriber view %d: %v", i, err)
			}
		}
		last := views[len(views)-1]
		fx.wantFailure("last view's Err", last.Err)
		if len(last.Frozen) != 0 {
			fx.t.Errorf("last view has %d frozen deltas; want 0", len(last.Frozen))
		}
	})
}

// TestFaultEveryPath injects each fatal fault and exercises every API path
// around it: calls in flight when it happens, calls after it, Stop.
func TestFaultEveryPath(t *testing.T) {
	cases := 0
	for _, kind := range faultKinds {
		for _, path := range faultPaths() {
			cases++
			t.Run(kind.name+"/"+path.name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					fx := faultSetup(t, kind)
					check := path.during(fx)
					synctest.Wait()
					if !path.stopTriggers {
						fx.trigger()
					}
					check()
					if path.after != nil {
						path.after(fx)
					}
					fx.checkFailedState()
				})
			})
		}
	}
	t.Logf("%d fault cases", cases)
}

// TestFaultRetry checks the retry policy with fake time: a flusher call
// that fails twice and then succeeds is retried with doubling backoff.
func TestFaultRetry(t *testing.T) {
	for _, op := range []string{"FlushDelta", "FlushStorage"} {
		t.Run(op, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				inj := newFaultInjector()
				inj.add(faultRule{op: op, from: 1, to: 2, action: faultFail})
				obs := &faultObserver{}
				var log faultLog
				cfg := testConfig()
				cfg.Retry = RetryPolicy{Attempts: 3, Backoff: 10 * time.Millisecond}
				cfg.Observer = obs
				cfg.Logger = slog.New(slog.NewTextHandler(&log, nil))
				c, fl := faultNewCoordinator(t, cfg, inj)
				c.Start()
				ctx, cancel := context.WithTimeout(t.Context(), faultPatience)
				defer cancel()
				h, err := c.Channel("default").Write(ctx, w("k", 1, 1))
				if err != nil {
					t.Fatalf("Write = %v", err)
				}
				if _, err := h.Wait(ctx, Durable); err != nil {
					t.Fatalf("Wait(Durable) with %s failing twice and Attempts 3 = %v; want nil", op, err)
				}
				if got := c.Stats().Retries; got != 2 {
					t.Errorf("Stats().Retries = %d; want 2", got)
				}
				if got := inj.callCount(op); got != 3 {
					t.Errorf("%s calls = %d; want 3", op, got)
				}
				flushed, synced, _ := obs.events()
				// Backoff 10ms, then 20ms: the retried call took 30ms of
				// fake time.
				switch op {
				case "FlushDelta":
					if len(flushed) != 1 || flushed[0].Attempts != 3 || flushed[0].Err != nil || flushed[0].Duration != 30*time.Millisecond {
						t.Errorf("Flushed events = %+v; want one with Attempts 3, Duration 30ms, no error", flushed)
					}
				case "FlushStorage":
					if len(synced) != 1 || synced[0].Attempts != 3 || synced[0].Err != nil || synced[0].Duration != 30*time.Millisecond {
						t.Errorf("Synced events = %+v; want one with Attempts 3, Duration 30ms, no error", synced)
					}
				}
				if n := strings.Count(log.String(), "retrying"); n != 2 {
					t.Errorf("log has %d retry lines; want 2:\n%s", n, log.String())
				}
				if err := c.Stop(ctx); err != nil {
					t.Fatalf("Stop() = %v; want nil", err)
				}
				assertRows(t, fl.storage.snapshot(), map[string]seqValue{"k": {0, 1}})
			})
		})
	}
}

// TestFaultRetryGivesUp checks the cases where the retry policy fails the
// coordinator: attempts exhausted, an error the policy refuses, a panic.
func TestFaultRetryGivesUp(t *testing.T) {
	tests := []struct {
		name         string
		action       faultAction
		retryable    func(error) bool
		wantAttempts int
	}{
		{"exhausted", faultFail, nil, 3},
		{"not retryable", faultFail, func(err error) bool { return !errors.Is(err, errFault) }, 1},
		{"panic", faultPanic, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				inj := newFaultInjector()
				inj.add(faultRule{op: "FlushDelta", from: 1, action: tt.action})
				cfg := testConfig()
				cfg.Retry = RetryPolicy{Attempts: 3, Backoff: time.Millisecond, Retryable: tt.retryable}
				c, _ := faultNewCoordinator(t, cfg, inj)
				c.Start()
				ctx, cancel := context.WithTimeout(t.Context(), faultPatience)
				defer cancel()
				h, err := c.Channel("default").Write(ctx, w("k", 1, 1))
				if err != nil {
					t.Fatalf("Write = %v", err)
				}
				_, err = h.Wait(ctx, Written)
				if !errors.Is(err, ErrFailed) {
					t.Fatalf("Wait(Written) = %v; want the failure", err)
				}
				if got := inj.callCount("FlushDelta"); got != tt.wantAttempts {
					t.Errorf("FlushDelta calls = %d; want %d", got, tt.wantAttempts)
				}
				if got := c.Stats().Retries; got != uint64(tt.wantAttempts-1) {
					t.Errorf("Stats().Retries = %d; want %d", got, tt.wantAttempts-1)
				}
				var fe *FlushError
				if errors.As(err, &fe) && fe.Attempts != tt.wantAttempts {
					t.Errorf("FlushError.Attempts = %d; want %d", fe.Attempts, tt.wantAttempts)
				}
				if tt.action == faultPanic && !errors.As(err, new(*PanicError)) {
					t.Errorf("Wait(Written) = %v; want a *PanicError", err)
				}
				if stopErr := c.Stop(ctx); !errors.Is(stopErr, ErrFailed) {
					t.Errorf("Stop() = %v; want the failure", stopErr)
				}
			})
		})
	}
}

// TestFaultRetryBackoffEndsAtAbort checks that Abort, called while the
// flusher waits out a long backoff, cancels the wait; Stop's own context
// ending does not.
func TestFaultRetryBackoffEndsAtAbort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inj := newFaultInjector()
		inj.add(faultRule{op: "FlushDelta", from: 1, to: 1, action: faultFail})
		cfg := testConfig()
		cfg.Retry = RetryPolicy{Attempts: 5, Backoff: 24 * time.Hour}
		c, _ := faultNewCoordinator(t, cfg, inj)
		c.Start()
		h, err := c.Channel("default").TryWrite(w("k", 1, 1))
		if err != nil {
			t.Fatalf("TryWrite = %v", err)
		}
		if _, err := c.Flush(deadlineCtx(t), Applied); err != nil {
			t.Fatalf("Flush(Applied) = %v", err)
		}
		synctest.Wait() // the flusher failed once and sleeps for a day
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if err := c.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Stop(1s) during a day-long backoff = %v; want DeadlineExceeded", err)
		}
		c.Abort()
		err = c.Stop(deadlineCtx(t))
		var fe *FlushError
		if !errors.As(err, &fe) || fe.Attempts != 1 || !errors.Is(err, errFault) {
			t.Fatalf("second Stop() = %v; want the FlushError of the one attempt", err)
		}
		if _, err := h.Wait(deadlineCtx(t), Written); !errors.Is(err, ErrFailed) {
			t.Errorf("Wait(Written) = %v; want the failure", err)
		}
		if elapsed := time.Since(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)); elapsed >= 24*time.Hour {
			t.Errorf("Stop waited %v of fake time; want it to cut the backoff short", elapsed)
		}
	})
}

// TestFaultSlowFlush checks that flusher calls running past
// SlowFlushThreshold are counted, observed and logged, and fast ones not.
func TestFaultSlowFlush(t *testing.T) {
	tests := []struct {
		name      string
		op        string
		delay     time.Duration
		threshold time.Duration
		wantSlow  uint64
	}{
		{"slow FlushDelta", "FlushDelta", 25 * time.Second, 10 * time.Second, 1},
		{"slow FlushStorage", "FlushStorage", 25 * time.Second, 10 * time.Second, 1},
		{"fast", "FlushDelta", 5 * time.Second, 10 * time.Second, 0},
		{"disabled", "FlushDelta", 30 * time.Minute, -1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				inj := newFaultInjector()
				inj.add(faultRule{op: tt.op, from: 1, action: faultSlow, delay: tt.delay})
				obs := &faultObserver{}
				var log faultLog
				cfg := testConfig()
				cfg.SlowFlushThreshold = tt.threshold
				cfg.Observer = obs
				cfg.Logger = slog.New(slog.NewTextHandler(&log, nil))
				c, _ := faultNewCoordinator(t, cfg, inj)
				c.Start()
				ctx, cancel := context.WithTimeout(t.Context(), faultPatience)
				defer cancel()
				ch := c.Channel("default")
				for i := range 3 {
					if _, err := ch.Write(ctx, w(fmt.Sprint(i), 1, 1)); err != nil {
						t.Fatalf("Write = %v", err)
					}
				}
				// Written first, so that the Durable flush makes exactly
				// one FlushStorage call, covering all three epochs.
				if _, err := c.Flush(ctx, Written); err != nil {
					t.Fatalf("Flush(Written) = %v; want nil", err)
				}
				if _, err := c.Flush(ctx, Durable); err != nil {
					t.Fatalf("Flush(Durable) = %v; want nil", err)
				}
				if got := c.Stats().SlowFlushes; got != tt.wantSlow {
					t.Errorf("Stats().SlowFlushes = %d; want %d", got, tt.wantSlow)
				}
				_, _, slow := obs.events()
				if uint64(len(slow)) != tt.wantSlow {
					t.Fatalf("Observer.SlowFlush events = %+v; want %d", slow, tt.wantSlow)
				}
				if n := uint64(strings.Count(log.String(), "slow flush")); n != tt.wantSlow {
					t.Errorf("log has %d slow-flush lines; want %d:\n%s", n, tt.wantSlow, log.String())
				}
				if tt.wantSlow == 0 {
					return
				}
				want := faultSlowEvent{op: tt.op, epochs: EpochRange{1, 4}, running: tt.threshold}
				if slow[0] != want {
					t.Errorf("Observer.SlowFlush(%+v); want %+v", slow[0], want)
				}
				if !strings.Contains(log.String(), "op="+tt.op) {
					t.Errorf("slow-flush log does not name %s:\n%s", tt.op, log.String())
				}
			})
		})
	}
}

// TestFaultHungFlusher checks that a flusher that never returns leaves
// every blocking call bounded by its context, is reported as slow, and
// that Stop cancels its context and can be waited for again.
func TestFaultHungFlusher(t *testing.T) {
	for _, action := range []faultAction{faultHangCtx, faultHangChan} {
		name := map[faultAction]string{faultHangCtx: "until ctx done", faultHangChan: "ignoring ctx"}[action]
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				inj := newFaultInjector()
				inj.add(faultRule{op: "FlushDelta", from: 1, to: 1, action: action})
				cfg := testConfig()
				cfg.QueueCapacity = 1
				cfg.MaxPendingFlushes = 1
				cfg.SlowFlushThreshold = 5 * time.Second
				c, fl := faultNewCoordinator(t, cfg, inj)
				t.Cleanup(inj.unblock) // runs before the Stop cleanup
				c.Start()
				ch := c.Channel("default")
				bg := t.Context() // fake time: a hang fails the bubble at once
				// Epoch 1 hangs in the flusher, epoch 2 waits in the flush
				// queue, epoch 3 is applied and frozen by a size-less
				// Flush that blocks the coordinator, epoch 4 fills the
				// queue.
				var hs []*WriteHandle[struct{}]
				for i := range 2 {
					h, err := ch.Write(bg, w(fmt.Sprint(i), uint64(i), 1))
					if err != nil {
						t.Fatalf("Write %d = %v", i, err)
					}
					hs = append(hs, h)
					if _, err := c.Flush(bg, Applied); err != nil {
						t.Fatalf("Flush(Applied) %d = %v", i, err)
					}
					synctest.Wait()
				}
				h, err := ch.Write(bg, w("2", 2, 1))
				if err != nil {
					t.Fatalf("Write 2 = %v", err)
				}
				hs = append(hs, h)
				short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(bg, time.Second) }
				ctx, cancel := short()
				if _, err := c.Flush(ctx, Applied); !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Flush(Applied) with the pipeline full = %v; want DeadlineExceeded", err)
				}
				cancel()
				synctest.Wait()
				if h, err := ch.TryWrite(w("3", 3, 1)); err != nil {
					t.Fatalf("TryWrite into the empty queue = %v", err)
				} else {
					hs = append(hs, h)
				}

				calls := []struct {
					name string
					call func(ctx context.Context) error
				}{
					{"Write on a full queue", func(ctx context.Context) error { _, err := ch.Write(ctx, w("x", 1, 1)); return err }},
					{"WriteBatch on a full queue", func(ctx context.Context) error {
						_, err := ch.WriteBatch(ctx, []testWrite{w("x", 1, 1)})
						return err
					}},
					{"Wait(Applied) of a queued write", func(ctx context.Context) error { _, err := hs[3].Wait(ctx, Applied); return err }},
					{"Epoch() of a queued write", func(ctx context.Context) error { _, err := hs[3].Epoch(ctx); return err }},
					{"Wait(Written)", func(ctx context.Context) error { _, err := hs[0].Wait(ctx, Written); return err }},
					{"Wait(Durable)", func(ctx context.Context) error { _, err := hs[1].Wait(ctx, Durable); return err }},
					{"Flush(Applied)", func(ctx context.Context) error { _, err := c.Flush(ctx, Applied); return err }},
					{"Flush(Durable)", func(ctx context.Context) error { _, err := c.Flush(ctx, Durable); return err }},
					{"WaitFor(Written, 1)", func(ctx context.Context) error { return c.WaitFor(ctx, Written, 1) }},
					{"Subscriber.Next", func(ctx context.Context) error {
						s := c.Subscribe()
						defer s.Close()
						s.Initialize()
						_, err := s.Next(ctx)
						return err
					}},
				}
				for _, call := range calls {
					ctx, cancel := short()
					if err := call.call(ctx); !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("%s with a hung flusher = %v; want DeadlineExceeded", call.name, err)
					}
					cancel()
				}
				if _, err := ch.TryWrite(w("x", 1, 1)); !errors.Is(err, ErrBackpressure) {
					t.Errorf("TryWrite with a hung flusher = %v; want ErrBackpressure", err)
				}
				ch.Pause()
				ch.Resume()
				if got := c.Stats().SlowFlushes; got != 1 {
					t.Errorf("Stats().SlowFlushes = %d with a hung flusher; want 1", got)
				}
				if wm := c.Watermarks(); wm.Written != 0 || wm.Applied < 2 {
					t.Errorf("Watermarks() = %+v; want Written 0 and Applied >= 2", wm)
				}

				ctx, cancel = short()
				if err := c.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Stop(1s) with a hung flusher = %v; want DeadlineExceeded", err)
				}
				cancel()
				synctest.Wait()
				// Stop's ctx bounds only its wait: the flusher's context
				// is cancelled by Abort alone.
				if errs := inj.hungCtxErrs(); len(errs) != 0 {
					t.Errorf("flusher saw ctx errors %v after Stop's ctx ended; want none before Abort", errs)
				}
				c.Abort()
				synctest.Wait()
				switch action {
				case faultHangCtx:
					// The canceled flusher gave up; the coordinator failed
					// with its error and Stop returns it.
					if errs := inj.hungCtxErrs(); len(errs) != 1 || !errors.Is(errs[0], context.Canceled) {
						t.Errorf("flusher saw ctx errors %v; want one context.Canceled", errs)
					}
					err := c.Stop(bg)
					var fe *FlushError
					if !errors.As(err, &fe) || fe.Op != "FlushDelta" || fe.Epochs != (EpochRange{1, 2}) || !errors.Is(err, context.Canceled) {
						t.Errorf("Stop() after the canceled flush = %v; want a FlushDelta FlushError for [1, 2) wrapping context.Canceled", err)
					}
					for i, h := range hs {
						if _, err := h.Wait(bg, Written); !errors.Is(err, ErrFailed) {
							t.Errorf("Wait(Written) of write %d = %v; want the failure", i, err)
						}
					}
				case faultHangChan:
					select {
					case <-c.Done():
						t.Fatalf("Done() closed while the flusher still hangs")
					default:
					}
					ctx, cancel = short()
					if err := c.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("second Stop(1s) = %v; want DeadlineExceeded", err)
					}
					cancel()
					res := faultAsync(func() error { return c.Stop(bg) })
					synctest.Wait()
					select {
					case err := <-res:
						t.Fatalf("Stop() = %v before the flusher returned; want it to wait", err)
					default:
					}
					inj.unblock()
					if err := <-res; err != nil {
						t.Fatalf("Stop() after the flusher returned = %v; want nil", err)
					}
					if errs := inj.hungCtxErrs(); len(errs) != 1 || !errors.Is(errs[0], context.Canceled) {
						t.Errorf("flusher ctx when released = %v; want context.Canceled", errs)
					}
					want := map[string]seqValue{}
					for i := range 4 {
						want[fmt.Sprint(i)] = seqValue{uint64(i), uint64(i)}
						if _, err := hs[i].Wait(bg, Durable); err != nil {
							t.Errorf("Wait(Durable) of write %d after Stop = %v; want nil", i, err)
						}
					}
					assertRows(t, fl.storage.snapshot(), want)
				}
			})
		})
	}
}

// TestFaultApplyErrorIsNotFatal checks that an error returned by Apply
// reaches only its write.
func TestFaultApplyErrorIsNotFatal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inj := newFaultInjector()
		inj.add(faultRule{op: "Apply", from: 2, to: 2, action: faultFail})
		c, fl := faultNewCoordinator(t, testConfig(), inj)
		c.Start()
		ctx := t.Context() // fake time: a hang fails the bubble at once
		ch := c.Channel("default")
		var hs []*WriteHandle[struct{}]
		for i := range 3 {
			h, err := ch.Write(ctx, w(fmt.Sprint(i), uint64(i), 1))
			if err != nil {
				t.Fatalf("Write = %v", err)
			}
			hs = append(hs, h)
		}
		for i, h := range hs {
			_, err := h.Wait(ctx, Durable)
			var ae *ApplyError
			switch {
			case i == 1 && (!errors.As(err, &ae) || ae.Epoch != 2 || !errors.Is(err, errFault) || errors.Is(err, ErrFailed)):
				t.Errorf("Wait(Durable) of the rejected write = %v; want an ApplyError for epoch 2, not a failure", err)
			case i != 1 && err != nil:
				t.Errorf("Wait(Durable) of write %d = %v; want nil", i, err)
			}
		}
		if err := c.Stop(ctx); err != nil {
			t.Fatalf("Stop() = %v; want nil", err)
		}
		assertRows(t, fl.storage.snapshot(), map[string]seqValue{"0": {0, 0}, "2": {1, 2}})
	})
}

// TestFaultNoProgressAfterFailure checks that nothing reaches Written or
// Durable once the coordinator has failed, even when a flusher call that
// started before the failure completes after it: the final view must not
// lag behind the watermarks, and two waiters on the same epoch must get the
// same answer.
func TestFaultNoProgressAfterFailure(t *testing.T) {
	for _, op := range []string{"FlushDelta", "FlushStorage"} {
		t.Run(op, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				inj := newFaultInjector()
				inj.add(faultRule{op: op, from: 1, to: 1, action: faultHangChan})
				c, _ := faultNewCoordinator(t, testConfig(), inj)
				c.Start()
				ctx, cancel := context.WithTimeout(t.Context(), faultPatience)
				defer cancel()
				ch := c.Channel("default")
				h, err := ch.Write(ctx, w("k", 1, 1))
				if err != nil {
					t.Fatalf("Write = %v", err)
				}
				level := Written
				if op == "FlushStorage" {
					level = Durable
				}
				first := faultAsync(func() error { _, err := h.Wait(ctx, level); return err })
				synctest.Wait() // the flusher hangs in op for epoch 1
				inj.armNext("Apply", faultPanic, 1)
				if _, err := ch.Write(ctx, w("poison", 2, 1)); err != nil {
					t.Fatalf("Write(poison) = %v", err)
				}
				synctest.Wait()
				if err := c.Err(); !errors.As(err, new(*PanicError)) {
					t.Fatalf("Err() = %v; want the Apply panic", err)
				}
				err1 := <-first
				if !errors.Is(err1, ErrFailed) {
					t.Fatalf("Wait(%v) when the coordinator failed = %v; want the failure", level, err1)
				}
				inj.unblock()
				synctest.Wait() // the hung call returns successfully
				_, err2 := h.Wait(ctx, level)
				wm, v := c.Watermarks(), c.View()
				if (err1 == nil) != (err2 == nil) {
					t.Errorf("Wait(%v) of epoch 1 = %v, then %v; want the same answer", level, err1, err2)
				}
				if v.Written < wm.Written {
					t.Errorf("final View().Written = %d < Watermarks().Written = %d: the watermark announces data no view shows", v.Written, wm.Written)
				}
				if wm.Get(level) != 0 {
					t.Errorf("Watermarks() = %+v after failure; want %v to stay 0", wm, level)
				}
				if err := c.Stop(ctx); !errors.Is(err, ErrFailed) {
					t.Errorf("Stop() = %v; want the failure", err)
				}
			})
		})
	}
}

// TestFaultWaitForAppliedAfterFailure checks that waiting for an epoch to
// be applied returns the failure once the coordinator has failed: no epoch
// will ever be applied again.
func TestFaultWaitForAppliedAfterFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inj := newFaultInjector()
		inj.add(faultRule{op: "FlushDelta", from: 1, action: faultFail})
		c, _ := faultNewCoordinator(t, testConfig(), inj)
		c.Start()
		ctx, cancel := context.WithTimeout(t.Context(), faultPatience)
		defer cancel()
		if _, err := c.Channel("default").Write(ctx, w("k", 1, 1)); err != nil {
			t.Fatalf("Write = %v", err)
		}
		if _, err := c.Flush(ctx, Written); !errors.Is(err, ErrFailed) {
			t.Fatalf("Flush(Written) = %v; want the failure", err)
		}
		if err := c.WaitFor(ctx, Applied, 2); !errors.Is(err, ErrFailed) {
			t.Errorf("WaitFor(Applied, 2) on a failed coordinator = %v; want the failure", err)
		}
	})
}

// TestFaultNoApplyAfterFailure checks that once Apply panicked, the
// coordinator calls Apply no more: the delta it would apply to cannot be
// trusted, and the writes not yet applied must fail, not report success.
func TestFaultNoApplyAfterFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inj := newFaultInjector()
		var mu sync.Mutex
		var applied []string
		inj.applyHook = func(w testWrite) {
			mu.Lock()
			defer mu.Unlock()
			applied = append(applied, w.key)
		}
		cfg := testConfig()
		cfg.Channels = []string{"a", "b"}
		c, _ := faultNewCoordinator(t, cfg, inj)
		c.Start()
		ctx, cancel := context.WithTimeout(t.Context(), faultPatience)
		defer cancel()
		a, b := c.Channel("a"), c.Channel("b")
		a.Pause()
		b.Pause()
		ha, err := a.TryWrite(w("a", 1, 1))
		if err != nil {
			t.Fatalf("TryWrite(a) = %v", err)
		}
		hb, err := b.TryWrite(w("b", 2, 1))
		if err != nil {
			t.Fatalf("TryWrite(b) = %v", err)
		}
		inj.armNext("Apply", faultPanic, 1)
		if err := c.Stop(ctx); !errors.As(err, new(*PanicError)) {
			t.Fatalf("Stop() = %v; want the Apply panic", err)
		}
		if _, err := ha.Epoch(ctx); !errors.As(err, new(*PanicError)) {
			t.Errorf("Epoch() of the panicking write = %v; want the PanicError", err)
		}
		if e, err := hb.Epoch(ctx); e != 0 || !errors.Is(err, ErrFailed) {
			t.Errorf("Epoch() of b's write, queued behind the panic = %d, %v; want 0 and the failure", e, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(applied, []string{"a"}) {
			t.Errorf("Apply saw %q; want only the panicking write", applied)
		}
	})
}
