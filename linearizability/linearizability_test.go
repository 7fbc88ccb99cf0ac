package linearizability

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	"github.com/groupcommit/coordinator"
)

var (
	long    = flag.Bool("long", false, "run TestLinearizable for much longer (more eras, more operations)")
	vizFlag = flag.String("lin.viz", "", "write porcupine's visualization here when a history is not linearizable (default: a new file in the system's temporary directory)")
	seed    = flag.Uint64("lin.seed", 1, "seed of the operation mix and of each era's configuration")
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	// callTimeout bounds every blocking call. A call that hits it is a
	// hang: the test fails with a goroutine dump.
	callTimeout = 5 * time.Second
	// eraTimeout is the backstop for calls that take no context
	// (Channel.Pause): an era that does not finish fails the test with a
	// goroutine dump instead of hanging it.
	eraTimeout = 2 * time.Minute
	// checkTimeout bounds porcupine on one era's history.
	checkTimeout = 2 * time.Minute
)

// runConfig bounds a run.
type runConfig struct {
	eras         int // coordinator lifetimes, each ended by a stop, crash, failure or abort
	workers      int // goroutines writing and reading
	opsPerWorker int // per era
	keys         int
	subscribers  int // per era
	seed         uint64
	broken       brokenMode
	vizFlag      string // -lin.viz
	vizDir       string // where to write visualizations when vizFlag is empty; "" is os.TempDir()
}

func shortRun() runConfig {
	return runConfig{eras: 20, workers: 8, opsPerWorker: 300, keys: 12, subscribers: 2, seed: *seed, vizFlag: *vizFlag}
}

func longRun() runConfig {
	return runConfig{eras: 100, workers: 12, opsPerWorker: 1500, keys: 16, subscribers: 3, seed: *seed, vizFlag: *vizFlag}
}

// TestLinearizable runs eras of concurrent writers, readers (through View
// and through subscribers) and a chaos goroutine (flushes at every level,
// pauses, transient flusher faults), each era ended by Stop, a crash, a
// permanent flusher failure or Abort and followed by a restart from the
// disk. It checks with porcupine that every era's reads are linearizable
// with respect to the Applied acknowledgements, and directly that a reader
// woken at Written finds its write in the view's snapshot and that a
// restart recovers every Durable write (see README.md).
func TestLinearizable(t *testing.T) {
	rc := shortRun()
	if *long {
		rc = longRun()
	}
	start := time.Now()
	res := run(t, rc)
	var ends []string
	for k := range numEndKinds {
		ends = append(ends, fmt.Sprintf("%v ×%d", k, res.ends[k]))
	}
	t.Logf("seed %d: %d eras (%s), %d operations checked (%d reads of failed views left out) in %v; porcupine took %v",
		rc.seed, res.eras, strings.Join(ends, ", "), res.ops, res.excluded, time.Since(start).Round(time.Millisecond), res.checkTime.Round(time.Millisecond))
	var counts []string
	for _, k := range sortedKeys(res.counts) {
		counts = append(counts, fmt.Sprintf("%s: %d", k, res.counts[k]))
	}
	t.Logf("%s", strings.Join(counts, "; "))
	require.Empty(t, res.violations, "direct checks failed:\n%s", strings.Join(res.violations, "\n"))
	require.Equal(t, porcupine.Ok, res.check.result,
		"era %d: history of %d operations is not linearizable (porcupine: %v); visualization: %s (error writing it: %v)",
		res.failedEra, res.check.ops, res.check.result, res.check.viz, res.check.vizErr)
}

// TestLinearizableDetectsBrokenDelta runs the same workload on stores that
// are wrong on purpose and requires porcupine to reject the history, so
// that the check above is not vacuous.
func TestLinearizableDetectsBrokenDelta(t *testing.T) {
	for _, mode := range []brokenMode{hideLatest, dropDelta} {
		t.Run(mode.String(), func(t *testing.T) {
			rc := shortRun()
			rc.eras, rc.broken, rc.vizFlag, rc.vizDir = 3, mode, "", t.TempDir()
			res := run(t, rc)
			require.Equal(t, porcupine.Illegal, res.check.result,
				"porcupine accepted %d operations of a %v store", res.ops, mode)
			require.NoError(t, res.check.vizErr)
			info, err := os.Stat(res.check.viz)
			require.NoError(t, err)
			require.Positive(t, info.Size(), "visualization %s is empty", res.check.viz)
			t.Logf("%v: porcupine says %v for era %d (%d operations); the direct checks found %d violations",
				mode, res.check.result, res.failedEra, res.check.ops, len(res.violations))
		})
	}
}

// runResult is what a run found.
type runResult struct {
	eras       int
	ends       [numEndKinds]int // eras by how they ended
	ops        int              // operations given to porcupine
	excluded   int              // reads of failed views, not checked
	checkTime  time.Duration
	check      checkResult // the first era porcupine rejected, or Ok
	failedEra  int
	violations []string // direct checks
	counts     map[string]int
}

// run runs rc.eras eras on one disk. It fails t at once if a call hangs or
// returns an unexpected error; linearizability and the direct checks are
// reported in the result (the broken variants expect them to fail).
func run(t *testing.T, rc runConfig) runResult {
	t.Helper()
	ev := &env{broken: rc.broken}
	d := &disk{env: ev}
	keys := make([]string, rc.keys)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%02d", i)
	}
	res := runResult{counts: map[string]int{}}
	state, last := map[string]rec{}, uint64(0) // what the disk held when the era began
	for n := range rc.eras {
		e := newEra(t, n, rc, ev, d, keys, state, last)
		e.run(t)
		res.eras++
		res.ends[e.kind]++
		res.excluded += e.excluded
		for k, n := range e.counts {
			res.counts[k] += n
		}
		res.counts["rejected writes"] += len(e.rejected)
		res.violations = append(res.violations, e.violations...)
		for _, p := range d.takeProblems() {
			res.violations = append(res.violations, fmt.Sprintf("era %d: %s", n, p))
		}
		got, gotLast := d.recovered()
		res.counts["epochs recovered"] += int(gotLast - last)
		res.violations = append(res.violations, e.checkRecovery(got, gotLast)...)
		state, last = got, gotLast

		cr := checkHistory(e.ops, e.notes, checkTimeout,
			vizFile(rc.vizFlag, rc.vizDir, fmt.Sprintf("linearizability-era%d", n)))
		res.ops += cr.ops
		res.checkTime += cr.duration
		if cr.result != porcupine.Ok {
			res.check, res.failedEra = cr, n
			return res
		}
	}
	res.check.result = porcupine.Ok
	return res
}

// endKind is how an era ends.
type endKind int

const (
	endStop             endKind = iota // Stop: everything accepted is written and synced
	endCrash                           // crash: unsynced records are lost; Abort and Stop the old coordinator
	endFailDelta                       // FlushDelta fails for good; reopen without a crash
	endFailStorageCrash                // FlushStorage fails for good, then a crash
	endAbort                           // Abort: the flusher's context is canceled; reopen without a crash
	numEndKinds
)

func (k endKind) String() string {
	return [...]string{"stop", "crash", "FlushDelta failure", "FlushStorage failure + crash", "abort"}[k]
}

// era is one coordinator's lifetime.
type era struct {
	n        int
	rc       runConfig
	env      *env
	disk     *disk
	keys     []string
	channels []string
	kind     endKind
	cfg      coordinator.Config
	c        *KV
	first    uint64         // FirstEpoch
	prev     map[string]rec // recovered at the start
	prevLast uint64

	total    int64         // worker operations in the era
	done     atomic.Int64  // worker operations done
	progress chan struct{} // a worker finished an operation (buffer of 1)
	endAt    atomic.Int64  // logical time the end event began; 0 before

	// Set by the chaos goroutine at the end event.
	finalApplied uint64

	// Merged from the recorders when the era's goroutines end.
	mergeMu    sync.Mutex
	ops        []porcupine.Operation
	notes      []porcupine.Annotation
	applied    []appliedWrite
	rejected   []uint64
	durable    uint64
	failures   []failedCall
	pauses     []pauseSpan
	violations []string
	excluded   int
	counts     map[string]int
}

// recorder is one goroutine's part of the history, merged into the era when
// the goroutine ends (so that recording adds no synchronisation between the
// goroutines under test).
type recorder struct {
	e          *era
	client     int
	ops        []porcupine.Operation
	notes      []porcupine.Annotation
	applied    []appliedWrite
	rejected   []uint64
	durable    uint64
	failures   []failedCall
	pauses     []pauseSpan
	violations []string
	excluded   int
	counts     map[string]int // what happened, for the summary
}

type appliedWrite struct {
	key       string
	val       int64
	epoch     uint64
	ch        int
	call, ret int64
}

type failedCall struct {
	what string
	ret  int64
	err  error
}

type pauseSpan struct {
	ch       int
	from, to int64 // after Pause returned, before Resume was called
}

func newEra(t *testing.T, n int, rc runConfig, ev *env, d *disk, keys []string, state map[string]rec, last uint64) *era {
	t.Helper()
	rng := rand.New(rand.NewPCG(rc.seed, uint64(n)))
	e := &era{
		n: n, rc: rc, env: ev, disk: d, keys: keys,
		channels: []string{"a", "b", "c"},
		kind:     endKind(n % int(numEndKinds)),
		first:    last + 1,
		prev:     state,
		prevLast: last,
		total:    int64(rc.workers * rc.opsPerWorker),
		progress: make(chan struct{}, 1),
	}
	interval := time.Hour
	if rng.IntN(3) == 0 {
		interval = 2 * time.Millisecond
	}
	e.cfg = coordinator.Config{
		Channels:           e.channels,
		QueueCapacity:      4 + rng.IntN(32),
		FlushInterval:      interval,
		FlushSize:          2 + rng.IntN(30),
		FirstEpoch:         e.first,
		MaxPendingFlushes:  1 + rng.IntN(3),
		Sync:               coordinator.SyncPolicy(rng.IntN(2)),
		DisableFlushOnWait: interval < time.Hour && rng.IntN(2) == 0,
		Retry:              coordinator.RetryPolicy{Attempts: 3, Backoff: 100 * time.Microsecond, MaxBackoff: time.Millisecond},
		SubscriberBuffer:   1 + rng.IntN(8),
		SlowFlushThreshold: -1,
	}
	if rng.IntN(3) == 0 {
		e.cfg.MaxBytes = int64(16 * (8 + rng.IntN(56)))
	}
	// Each key starts at what was recovered, before anything else of the
	// era: before the initial snapshot's stamp, too, since a subscriber's
	// read of the initial view starts at that stamp.
	t0 := ev.now()
	for _, k := range keys {
		e.ops = append(e.ops, porcupine.Operation{
			ClientId: rc.workers + 1 + rc.subscribers,
			Input:    input{kind: opInit, key: k, val: state[k].val, via: "disk"},
			Call:     t0, Return: t0,
		})
	}
	f, snap := d.open()
	c, err := coordinator.New(e.cfg, newDelta, deltaCtx{env: ev, next: e.first}, snap, f)
	require.NoError(t, err, "era %d: New", n)
	e.c = c
	// A reopened coordinator continues the epochs of the disk.
	want := coordinator.Watermarks{Applied: last, Written: last, Durable: last}
	require.Equal(t, want, c.Watermarks(), "era %d: watermarks of a coordinator opened with FirstEpoch %d", n, e.first)
	require.Equal(t, last, c.View().Written, "era %d: initial view", n)
	return e
}

// run runs the era's goroutines and waits for them; a hang or an
// unexpected error fails t.
func (e *era) run(t *testing.T) {
	t.Helper()
	defer func() {
		// Normally the chaos goroutine stopped the coordinator; make sure,
		// so that nothing leaks when the era failed early.
		e.c.Abort()
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		_ = e.c.Stop(ctx)
	}()
	subs := make([]*coordinator.Subscriber[*frozenView, *reader, *snapshot], e.rc.subscribers)
	for i := range subs {
		subs[i] = e.c.Subscribe()
	}
	e.c.Start()
	g, ctx := errgroup.WithContext(context.Background())
	for i := range e.rc.workers {
		g.Go(func() error { return e.worker(ctx, i) })
	}
	g.Go(func() error { return e.chaos(ctx, e.rc.workers) })
	for i, s := range subs {
		g.Go(func() error { return e.subscriber(ctx, e.rc.workers+1+i, s) })
	}
	done := make(chan error, 1)
	go func() { done <- g.Wait() }()
	timer := time.NewTimer(eraTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		require.NoError(t, err, "era %d (%v, config %+v)", e.n, e.kind, e.cfg)
	case <-timer.C:
		t.Fatalf("era %d did not finish within %v; goroutines:\n%s", e.n, eraTimeout, goroutineDump())
	}
}

func (e *era) recorder(client int) *recorder {
	return &recorder{e: e, client: client, counts: map[string]int{}}
}

func (e *era) rng(client int) *rand.Rand {
	return rand.New(rand.NewPCG(e.rc.seed, uint64(e.n)<<20|uint64(client+1)))
}

// merge adds r to the era. It runs when r's goroutine ends, before the
// errgroup's Wait returns.
func (e *era) merge(r *recorder) {
	e.mergeMu.Lock()
	defer e.mergeMu.Unlock()
	e.ops = append(e.ops, r.ops...)
	e.notes = append(e.notes, r.notes...)
	e.applied = append(e.applied, r.applied...)
	e.rejected = append(e.rejected, r.rejected...)
	e.durable = max(e.durable, r.durable)
	e.failures = append(e.failures, r.failures...)
	e.pauses = append(e.pauses, r.pauses...)
	e.violations = append(e.violations, r.violations...)
	e.excluded += r.excluded
	if e.counts == nil {
		e.counts = map[string]int{}
	}
	for k, n := range r.counts {
		e.counts[k] += n
	}
	for _, op := range r.ops {
		in := op.Input.(input)
		e.counts[fmt.Sprintf("%s via %s", [...]string{"init", "put", "get"}[in.kind], in.via)]++
	}
}

func (r *recorder) violate(format string, args ...any) {
	r.violations = append(r.violations, fmt.Sprintf("era %d, client %d: ", r.e.n, r.client)+fmt.Sprintf(format, args...))
}

func (r *recorder) note(call, ret int64, format string, args ...any) {
	r.notes = append(r.notes, porcupine.Annotation{
		ClientId: r.client, Start: call, End: ret, Description: fmt.Sprintf(format, args...),
		BackgroundColor: "#eeeeee",
	})
}

func (r *recorder) put(key string, val int64, via string, call, ret int64) {
	r.ops = append(r.ops, porcupine.Operation{
		ClientId: r.client, Input: input{kind: opPut, key: key, val: val, via: via},
		Output: output{}, Call: call, Return: ret,
	})
}

func (r *recorder) get(key, via string, o output, call, ret int64) {
	r.ops = append(r.ops, porcupine.Operation{
		ClientId: r.client, Input: input{kind: opGet, key: key, via: via},
		Output: o, Call: call, Return: ret,
	})
}

func callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, callTimeout)
}

func goroutineDump() string {
	buf := make([]byte, 4<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

func hung(what string, err error) error {
	return fmt.Errorf("%s did not return within %v (%v); goroutines:\n%s", what, callTimeout, err, goroutineDump())
}

// refused handles the error of a call made with cctx (derived from ctx):
// the call's own deadline is a hang (an error with a goroutine dump); the
// run being canceled ends the goroutine quietly; the coordinator being
// stopped or failed is recorded (it must not happen before the era's end
// event, which checkRecovery verifies); anything else is an error.
func (r *recorder) refused(ctx, cctx context.Context, what string, err error) error {
	switch {
	case errors.Is(cctx.Err(), context.DeadlineExceeded):
		return hung(fmt.Sprintf("era %d, client %d: %s", r.e.n, r.client, what), err)
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, coordinator.ErrClosed) || errors.Is(err, coordinator.ErrFailed):
		r.failures = append(r.failures, failedCall{what: what, ret: r.e.env.now(), err: err})
		r.counts["refused (stopped or failed)"]++
		return nil
	default:
		return fmt.Errorf("era %d, client %d: %s: unexpected error: %w", r.e.n, r.client, what, err)
	}
}

func (e *era) pickKey(rng *rand.Rand, last string) string {
	if last != "" && rng.IntN(2) == 0 {
		return last // read your write, or overwrite it
	}
	return e.keys[rng.IntN(len(e.keys))]
}

// worker runs the era's share of writes and reads.
func (e *era) worker(ctx context.Context, id int) error {
	r := e.recorder(id)
	defer e.merge(r)
	rng := e.rng(id)
	var last string
	for range e.rc.opsPerWorker {
		if ctx.Err() != nil {
			return nil
		}
		var err error
		switch p := rng.IntN(100); {
		case p < 42:
			err = e.writeOne(ctx, r, rng, &last, true)
		case p < 52:
			err = e.writeBatch(ctx, r, rng, &last)
		default:
			e.readView(r, e.pickKey(rng, last), "view")
		}
		if err != nil {
			return err
		}
		e.done.Add(1)
		select {
		case e.progress <- struct{}{}:
		default:
		}
	}
	return nil
}

// writeOne writes one key (an invalid one, 2% of the time, if invalid is
// set), waits for Applied, and sometimes for Written or Durable.
func (e *era) writeOne(ctx context.Context, r *recorder, rng *rand.Rand, last *string, invalid bool) error {
	key := e.pickKey(rng, *last)
	if invalid && rng.IntN(50) == 0 {
		key = "" // Apply rejects it
	}
	val := e.env.vals.Add(1)
	ch := rng.IntN(len(e.channels))
	call := e.env.now()
	wctx, cancel := callCtx(ctx)
	h, err := e.c.Channel(e.channels[ch]).Write(wctx, put{key, val})
	cancel()
	if err != nil {
		return r.refused(ctx, wctx, "Write", err)
	}
	actx, cancel := callCtx(ctx)
	res, err := h.Wait(actx, coordinator.Applied)
	cancel()
	ret := e.env.now()
	if key == "" {
		var ae *coordinator.ApplyError
		switch {
		case errors.As(err, &ae):
			if !errors.Is(err, errEmptyKey) || ae.Epoch < e.first || res != ae.Epoch {
				r.violate("rejected write: %v (Apply counted epoch %d)", err, res)
			}
			r.rejected = append(r.rejected, ae.Epoch)
			return nil
		case err == nil:
			r.violate("a write Apply rejected was reported applied")
			return nil
		}
		return r.refused(ctx, actx, "Wait(Applied)", err)
	}
	if err != nil {
		return r.refused(ctx, actx, "Wait(Applied)", err)
	}
	ectx, cancel := callCtx(ctx)
	epoch, err := h.Epoch(ectx)
	cancel()
	if err != nil {
		return fmt.Errorf("era %d: Epoch of an applied write: %w", e.n, err)
	}
	if res != epoch {
		r.violate("write %s=%d: Apply counted epoch %d, the coordinator assigned %d", key, val, res, epoch)
	}
	r.put(key, val, "write", call, ret)
	r.applied = append(r.applied, appliedWrite{key: key, val: val, epoch: epoch, ch: ch, call: call, ret: ret})
	*last = key
	wait := func(ctx context.Context, lvl coordinator.Durability) error {
		_, err := h.Wait(ctx, lvl)
		return err
	}
	switch p := rng.IntN(100); {
	case p < 15:
		return e.awaitLevel(ctx, r, wait, []keyEpoch{{key, epoch}}, coordinator.Written)
	case p < 25:
		return e.awaitLevel(ctx, r, wait, []keyEpoch{{key, epoch}}, coordinator.Durable)
	}
	return nil
}

// writeBatch writes 2 or 3 distinct keys as one batch.
func (e *era) writeBatch(ctx context.Context, r *recorder, rng *rand.Rand, last *string) error {
	perm := rng.Perm(len(e.keys))[:2+rng.IntN(2)]
	ws := make([]put, len(perm))
	for i, k := range perm {
		ws[i] = put{e.keys[k], e.env.vals.Add(1)}
	}
	ch := rng.IntN(len(e.channels))
	call := e.env.now()
	wctx, cancel := callCtx(ctx)
	bh, err := e.c.Channel(e.channels[ch]).WriteBatch(wctx, ws)
	cancel()
	if err != nil {
		return r.refused(ctx, wctx, "WriteBatch", err)
	}
	actx, cancel := callCtx(ctx)
	results, err := bh.Wait(actx, coordinator.Applied)
	cancel()
	ret := e.env.now()
	if err != nil {
		return r.refused(ctx, actx, "batch Wait(Applied)", err)
	}
	ectx, cancel := callCtx(ctx)
	epochs, err := bh.Epochs(ectx)
	cancel()
	if err != nil {
		return fmt.Errorf("era %d: Epochs of an applied batch: %w", e.n, err)
	}
	if len(results) != len(ws) || epochs.Len() != uint64(len(ws)) {
		r.violate("batch of %d writes: %d results, epochs %v", len(ws), len(results), epochs)
		return nil
	}
	kes := make([]keyEpoch, len(ws))
	for i, res := range results {
		w := ws[i]
		if res.Err != nil || res.Epoch != epochs.Start+uint64(i) || res.Value != res.Epoch {
			r.violate("batch write %d of %v: result %+v", i, epochs, res)
			continue
		}
		r.put(w.key, w.val, "batch", call, ret)
		r.applied = append(r.applied, appliedWrite{key: w.key, val: w.val, epoch: res.Epoch, ch: ch, call: call, ret: ret})
		kes[i] = keyEpoch{w.key, res.Epoch}
	}
	*last = ws[len(ws)-1].key
	wait := func(ctx context.Context, lvl coordinator.Durability) error {
		_, err := bh.Wait(ctx, lvl)
		return err
	}
	switch p := rng.IntN(100); {
	case p < 10:
		return e.awaitLevel(ctx, r, wait, kes, coordinator.Written)
	case p < 15:
		return e.awaitLevel(ctx, r, wait, kes, coordinator.Durable)
	}
	return nil
}

type keyEpoch struct {
	key   string
	epoch uint64
}

// waitFunc waits for a write or a batch to reach a level.
type waitFunc func(context.Context, coordinator.Durability) error

// awaitLevel waits for a write (or batch) to reach Written or Durable. A
// goroutine woken at Written must find the write in the snapshot of the
// view it takes next; a Durable one is remembered for the recovery check.
func (e *era) awaitLevel(ctx context.Context, r *recorder, wait waitFunc, kes []keyEpoch, lvl coordinator.Durability) error {
	call := e.env.now()
	wctx, cancel := callCtx(ctx)
	err := wait(wctx, lvl)
	cancel()
	ret := e.env.now()
	top := kes[len(kes)-1].epoch
	r.note(call, ret, "Wait(%v) epoch %d: %v", lvl, top, errText(err))
	if err != nil {
		return r.refused(ctx, wctx, fmt.Sprintf("Wait(%v)", lvl), err)
	}
	v := e.c.View()
	e.checkView(r, v, "view after Wait")
	for _, ke := range kes {
		if ke.key == "" {
			continue
		}
		got, ok := v.Snapshot.data[ke.key]
		if v.Written < ke.epoch || !ok || got.epoch < ke.epoch {
			r.violate("woken at %v for %s at epoch %d, the view's snapshot (written through %d) holds %s=%+v (present %v)",
				lvl, ke.key, ke.epoch, v.Written, ke.key, got, ok)
		}
	}
	if lvl == coordinator.Durable {
		r.durable = max(r.durable, top)
	}
	r.counts[fmt.Sprintf("woken at %v", lvl)]++
	return nil
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// readKey reads key through v as the View documentation says: Current,
// then Frozen newest first, then Snapshot.
func readKey(v *KVView, key string) output {
	if x, ok := v.Current.get(key); ok {
		return output{val: x.val, epoch: x.epoch, src: "current"}
	}
	for _, f := range v.Frozen {
		if x, ok := f.View.data[key]; ok {
			return output{val: x.val, epoch: x.epoch, src: "frozen " + f.Epochs.String()}
		}
	}
	if x, ok := v.Snapshot.data[key]; ok {
		return output{val: x.val, epoch: x.epoch, src: fmt.Sprintf("snapshot through %d", v.Written)}
	}
	return output{src: "nowhere"}
}

// readView reads key through View(). Reads of a failed view are left out
// of the history: a failed view drops applied writes that were not
// written, by design.
func (e *era) readView(r *recorder, key, via string) {
	call := e.env.now()
	v := e.c.View()
	o := readKey(v, key)
	ret := e.env.now()
	e.checkView(r, v, "View()")
	if v.Err != nil {
		r.excluded++
		return
	}
	r.get(key, via, o, call, ret)
}

// checkView checks a view's structure: frozen deltas contiguous and
// newest first, starting right after the snapshot; every value inside
// the epochs of the part that holds it; a failed view showing no live or
// frozen data.
func (e *era) checkView(r *recorder, v *KVView, where string) {
	if v.Snapshot == nil {
		r.violate("%s: no snapshot", where)
		return
	}
	if v.Snapshot.written != v.Written {
		r.violate("%s: View.Written %d, but the snapshot was produced by the delta ending at %d", where, v.Written, v.Snapshot.written)
	}
	if v.LastWritten != nil && v.LastWritten.Epochs.Last() != v.Written {
		r.violate("%s: LastWritten %v, Written %d", where, v.LastWritten.Epochs, v.Written)
	}
	for k, x := range v.Snapshot.data {
		if x.epoch > v.Written {
			r.violate("%s: snapshot through %d holds %s at epoch %d", where, v.Written, k, x.epoch)
		}
	}
	next := v.Written + 1
	for i := len(v.Frozen) - 1; i >= 0; i-- {
		f := v.Frozen[i]
		if f.Epochs.Start != next || f.Epochs.End <= f.Epochs.Start || f.View.epochs != f.Epochs {
			r.violate("%s: frozen delta %d holds %v (its view says %v), expected to start at %d (written through %d)",
				where, i, f.Epochs, f.View.epochs, next, v.Written)
		}
		for k, x := range f.View.data {
			if !f.Epochs.Contains(x.epoch) {
				r.violate("%s: frozen delta %v holds %s at epoch %d", where, f.Epochs, k, x.epoch)
			}
		}
		next = f.Epochs.End
	}
	cur := v.Current.all()
	if v.Err != nil {
		if len(v.Frozen) > 0 || len(cur) > 0 {
			r.violate("%s: failed view (%v) shows %d frozen deltas and %d live keys", where, v.Err, len(v.Frozen), len(cur))
		}
		return
	}
	for k, x := range cur {
		if x.epoch < next {
			r.violate("%s: live delta holds %s at epoch %d, below its start %d", where, k, x.epoch, next)
		}
	}
}

// viewStamp is a logical time no later than v's publication: the view is
// published after its newest frozen delta was frozen and after its
// snapshot was produced, and both were stamped then.
func viewStamp(v *KVView) int64 {
	s := v.Snapshot.stamp
	if len(v.Frozen) > 0 {
		s = max(s, v.Frozen[0].View.stamp)
	}
	return s
}

// subscriber reads every view it receives. A view may have been published
// long before Next returns it, so a read's interval starts at the view's
// stamp, not at the call of Next.
func (e *era) subscriber(ctx context.Context, id int, sub *coordinator.Subscriber[*frozenView, *reader, *snapshot]) error {
	r := e.recorder(id)
	defer e.merge(r)
	defer sub.Close()
	rng := e.rng(id)
	v := sub.Initialize()
	var written uint64
	for {
		e.checkView(r, v, "subscriber view")
		if v.Written < written {
			r.violate("subscriber: view written through %d after one written through %d", v.Written, written)
		}
		written = v.Written
		if v.Err != nil {
			r.excluded++
		} else {
			call := viewStamp(v)
			for range 1 + rng.IntN(2) {
				key := e.keys[rng.IntN(len(e.keys))]
				o := readKey(v, key)
				r.get(key, "subscriber", o, call, e.env.now())
			}
		}
		nctx, cancel := callCtx(ctx)
		next, err := sub.Next(nctx)
		cancel()
		var lag *coordinator.LagError
		switch {
		case err == nil:
			v = next
		case errors.As(err, &lag):
			now := e.env.now()
			r.note(now, now, "lagged: %d views missed", lag.Missed)
			r.counts["subscriber lagged"]++
			v = sub.Initialize()
		case errors.Is(err, coordinator.ErrClosed):
			// Every view was delivered, or the last Initialize took the
			// final one.
			if final := e.c.View(); v != final {
				r.violate("subscriber ended on the view written through %d, the coordinator's last view is written through %d (err %v)",
					v.Written, final.Written, final.Err)
			}
			return nil
		case errors.Is(nctx.Err(), context.DeadlineExceeded):
			return hung(fmt.Sprintf("era %d: Subscriber.Next", e.n), err)
		case ctx.Err() != nil:
			return nil
		default:
			return fmt.Errorf("era %d: Subscriber.Next: %w", e.n, err)
		}
	}
}

// chaos flushes, pauses, injects transient faults and checks the
// watermarks while the workers run, then ends the era once a random share
// of their operations is done.
func (e *era) chaos(ctx context.Context, id int) error {
	r := e.recorder(id)
	defer e.merge(r)
	rng := e.rng(id)
	threshold := e.total * int64(40+rng.IntN(41)) / 100
	var prev coordinator.Watermarks
	for e.done.Load() < threshold {
		pctx, cancel := callCtx(ctx)
		select {
		case <-e.progress:
			cancel()
		case <-pctx.Done():
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			return hung(fmt.Sprintf("era %d: waiting for the workers' progress", e.n), pctx.Err())
		}
		w := e.c.Watermarks()
		if w.Applied < w.Written || w.Written < w.Durable || w.Applied < prev.Applied || w.Written < prev.Written || w.Durable < prev.Durable {
			r.violate("watermarks %+v after %+v", w, prev)
		}
		prev = w
		if rng.IntN(4) != 0 {
			continue
		}
		var err error
		switch rng.IntN(6) {
		case 0, 1:
			err = e.flush(ctx, r, coordinator.Durability(1+rng.IntN(3)))
		case 2, 3:
			err = e.pause(ctx, r, rng)
		case 4:
			storage := rng.IntN(2) == 0
			if e.disk.arm(storage, 1) {
				r.counts["transient faults"]++
				now := e.env.now()
				r.note(now, now, "transient fault armed (storage %v)", storage)
			}
		case 5:
			e.readView(r, e.keys[rng.IntN(len(e.keys))], "view")
		}
		if err != nil {
			return err
		}
	}
	return e.end(ctx, r, rng)
}

// flush calls Flush at lvl and checks what it promises.
func (e *era) flush(ctx context.Context, r *recorder, lvl coordinator.Durability) error {
	call := e.env.now()
	fctx, cancel := callCtx(ctx)
	ep, err := e.c.Flush(fctx, lvl)
	cancel()
	ret := e.env.now()
	r.note(call, ret, "Flush(%v) -> %d: %v", lvl, ep, errText(err))
	if err != nil {
		return r.refused(ctx, fctx, fmt.Sprintf("Flush(%v)", lvl), err)
	}
	v := e.c.View()
	e.checkView(r, v, "view after Flush")
	if v.Err != nil {
		return nil
	}
	switch lvl {
	case coordinator.Applied:
		// Frozen: the live delta starts after ep.
		start := v.Written + 1
		if len(v.Frozen) > 0 {
			start = v.Frozen[0].Epochs.End
		}
		if start <= ep {
			r.violate("Flush(Applied) returned %d, but the live delta starts at %d", ep, start)
		}
	default:
		if v.Written < ep {
			r.violate("Flush(%v) returned %d, but the view is written through %d", lvl, ep, v.Written)
		}
	}
	if lvl == coordinator.Durable {
		r.durable = max(r.durable, ep)
	}
	r.counts[fmt.Sprintf("Flush(%v)", lvl)]++
	return nil
}

// pause pauses a channel, flushes or reads while it is paused, and resumes
// it. Pause takes no context: the era's watchdog covers it.
func (e *era) pause(ctx context.Context, r *recorder, rng *rand.Rand) error {
	ch := rng.IntN(len(e.channels))
	c := e.c.Channel(e.channels[ch])
	c.Pause()
	from := e.env.now()
	var err error
	if rng.IntN(2) == 0 {
		err = e.flush(ctx, r, coordinator.Durability(1+rng.IntN(3)))
	} else {
		e.readView(r, e.keys[rng.IntN(len(e.keys))], "view")
	}
	to := e.env.now()
	c.Resume()
	r.pauses = append(r.pauses, pauseSpan{ch: ch, from: from, to: to})
	r.counts["pauses"]++
	r.note(from, to, "channel %s paused", e.channels[ch])
	return err
}

// end ends the era as e.kind says and checks what Stop reports.
func (e *era) end(ctx context.Context, r *recorder, rng *rand.Rand) error {
	at := e.env.now()
	e.endAt.Store(at)
	var stopErr error
	// stop calls Stop, leaves its result in stopErr, and returns an error
	// only if Stop hung.
	stop := func() error {
		sctx, cancel := callCtx(ctx)
		defer cancel()
		stopErr = e.c.Stop(sctx)
		if errors.Is(sctx.Err(), context.DeadlineExceeded) {
			return hung(fmt.Sprintf("era %d: Stop", e.n), stopErr)
		}
		return nil
	}
	switch e.kind {
	case endStop:
		if err := stop(); err != nil {
			return err
		}
		if stopErr != nil {
			r.violate("Stop after a healthy run: %v", stopErr)
		}
		w := e.c.Watermarks()
		if w.Applied != w.Written || w.Written != w.Durable {
			r.violate("after Stop: watermarks %+v", w)
		}
		e.finalApplied = w.Applied
	case endCrash:
		e.disk.crash()
		e.c.Abort()
		if err := stop(); err != nil {
			return err
		}
		if !errors.Is(stopErr, coordinator.ErrFailed) {
			r.violate("Stop after a crash: %v, want an error wrapping ErrFailed", stopErr)
		}
	case endFailDelta, endFailStorageCrash:
		storage := e.kind == endFailStorageCrash
		e.disk.arm(storage, -1)
		lvl := coordinator.Durable // always calls FlushStorage
		if !storage {
			// A write after the fault is armed needs a FlushDelta.
			var last string
			if err := e.writeOne(ctx, r, rng, &last, false); err != nil {
				return err
			}
			lvl = coordinator.Written
		}
		fctx, cancel := callCtx(ctx)
		_, err := e.c.Flush(fctx, lvl)
		cancel()
		if errors.Is(fctx.Err(), context.DeadlineExceeded) {
			return hung(fmt.Sprintf("era %d: Flush(%v) with a failing flusher", e.n, lvl), err)
		}
		if !errors.Is(err, coordinator.ErrFailed) || !errors.Is(e.c.Err(), errInjected) {
			r.violate("Flush(%v) with a failing flusher: %v; Err() = %v", lvl, err, e.c.Err())
		}
		if storage {
			e.disk.crash()
		}
		if err := stop(); err != nil {
			return err
		}
		if !errors.Is(stopErr, errInjected) || !errors.Is(stopErr, coordinator.ErrFailed) {
			r.violate("Stop after the flusher failed: %v", stopErr)
		}
	case endAbort:
		e.disk.arm(false, 0)
		e.disk.arm(true, 0)
		e.c.Abort()
		if err := stop(); err != nil {
			return err
		}
		// The flusher honours its context, and Stop always calls it. A
		// transient fault that hit just before Abort is not retried, so
		// it may be the failure instead.
		if !errors.Is(stopErr, coordinator.ErrFailed) || !errors.Is(stopErr, context.Canceled) && !errors.Is(stopErr, errInjected) {
			r.violate("Stop after Abort: %v, want an error wrapping ErrFailed and context.Canceled", stopErr)
		}
	}
	r.note(at, e.env.now(), "end: %v (Stop: %v)", e.kind, errText(stopErr))
	return nil
}

// checkRecovery checks the disk after the era: it holds exactly the era's
// starting state plus the era's writes up to the last epoch it recovered,
// in epoch order; nothing synced was lost; every Durable acknowledgement is
// covered. It also checks the era's own records: epochs unique and all
// accounted for, no failure before the end event, no write applied while
// its channel was paused.
func (e *era) checkRecovery(got map[string]rec, last uint64) []string {
	var v []string
	bad := func(format string, args ...any) {
		v = append(v, fmt.Sprintf("era %d (%v): ", e.n, e.kind)+fmt.Sprintf(format, args...))
	}
	if last < e.prevLast {
		bad("the disk recovered through epoch %d, the previous era recovered through %d: synced data lost", last, e.prevLast)
	}
	if last < e.durable {
		bad("epoch %d was acknowledged Durable, the disk recovered only through %d", e.durable, last)
	}
	if e.kind == endStop && last != e.finalApplied {
		bad("after Stop the disk holds epochs through %d, applied through %d", last, e.finalApplied)
	}

	// Epochs: unique, and every epoch the disk holds is one the test saw
	// acknowledged (applied or rejected).
	seen := map[uint64]bool{}
	for _, ep := range e.rejected {
		seen[ep] = true
	}
	writes := slices.Clone(e.applied)
	slices.SortFunc(writes, func(a, b appliedWrite) int { return cmp.Compare(a.epoch, b.epoch) })
	for _, w := range writes {
		if seen[w.epoch] {
			bad("epoch %d acknowledged twice", w.epoch)
		}
		seen[w.epoch] = true
		if w.epoch < e.first {
			bad("write %s=%d got epoch %d, below FirstEpoch %d", w.key, w.val, w.epoch, e.first)
		}
	}
	for ep := e.prevLast + 1; ep <= last; ep++ {
		if !seen[ep] {
			bad("the disk holds epoch %d, which no acknowledged write has", ep)
			break
		}
	}

	want := maps.Clone(e.prev)
	for _, w := range writes {
		if w.epoch <= last {
			want[w.key] = rec{w.val, w.epoch}
		}
	}
	for _, k := range sortedKeys(want) {
		if got[k] != want[k] {
			bad("recovered %s=%+v, want %+v (disk through epoch %d)", k, got[k], want[k], last)
		}
	}
	for _, k := range sortedKeys(got) {
		if _, ok := want[k]; !ok {
			bad("recovered %s=%+v, which was never written", k, got[k])
		}
	}

	endAt := e.endAt.Load()
	for _, f := range e.failures {
		if endAt == 0 || f.ret < endAt {
			bad("%s failed before the era's end event: %v", f.what, f.err)
		}
	}
	for _, w := range e.applied {
		for _, p := range e.pauses {
			if w.ch == p.ch && w.call > p.from && w.ret < p.to {
				bad("write %s=%d (epoch %d) on channel %s was written and applied while the channel was paused",
					w.key, w.val, w.epoch, e.channels[w.ch])
			}
		}
	}
	return v
}
