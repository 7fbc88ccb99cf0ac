package coordinator

// Tests of the contracts the reference did not test, or got wrong: the
// handle and subscriber contracts, pause and flush semantics, Stop,
// configuration, batches and cancellation.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"
)

// ctResult is the outcome of a blocking call run on another goroutine.
type ctResult struct {
	epoch uint64
	err   error
}

// ctAsync runs f on a new goroutine and returns a channel that receives
// its result.
func ctAsync(f func() (uint64, error)) <-chan ctResult {
	ch := make(chan ctResult, 1)
	go func() {
		e, err := f()
		ch <- ctResult{e, err}
	}()
	return ch
}

// ctParked waits until n goroutines are parked on m. Parking is not
// observable through the API; this spins briefly on the watermark's own
// count so that the test can then make a deterministic assertion.
func ctParked(m *watermark, n int) {
	for ctPending(m) < n {
		runtime.Gosched()
	}
}

// ctPending returns how many goroutines are parked on m.
func ctPending(m *watermark) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.waiters)
}

// ctRejectingDelta rejects writes whose key starts with "bad".
type ctRejectingDelta struct{ *testDelta }

func (d ctRejectingDelta) Apply(wr testWrite) (struct{}, error) {
	if strings.HasPrefix(wr.key, "bad") {
		return struct{}{}, fmt.Errorf("rejected %s", wr.key)
	}
	return d.testDelta.Apply(wr)
}

func newCtRejectingCoordinator(t testing.TB, cfg Config, f *testFlusher) *testCoordinator {
	t.Helper()
	c, err := New(cfg, func(ctx testContext) ctRejectingDelta { return ctRejectingDelta{newTestDelta(ctx)} },
		testContext{}, f.storage.snapshot(), f)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	stopAtCleanup(t, c, testDeadline)
	return c
}

// ============================================================================
// Write handles
// ============================================================================

func TestContractEpochRepeatedAndConcurrent(t *testing.T) {
	c := newTestCoordinator(t, testConfig(), testContext{}, newTestFlusher())
	ch := c.Channel("default")
	h := refTryWrite(t, ch, w("a", 1, 10))

	// Callers block before the write is sequenced (not started yet), then
	// all see the same epoch, as many times as they ask.
	const callers, calls = 8, 5
	results := make(chan ctResult, callers*calls)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for range calls {
				e, err := h.Epoch(deadlineCtx(t))
				results <- ctResult{e, err}
			}
		})
	}
	if h.Applied() {
		t.Fatal("Applied() = true before Start")
	}
	c.Start()
	within(t, "the Epoch() callers", wg.Wait)
	close(results)
	n := 0
	for r := range results {
		n++
		if r.epoch != 1 || r.err != nil {
			t.Fatalf("concurrent Epoch() = %d, %v; want 1, nil", r.epoch, r.err)
		}
	}
	if n != callers*calls {
		t.Fatalf("got %d results; want %d", n, callers*calls)
	}
	for range 3 {
		if e := refEpoch(t, h); e != 1 {
			t.Fatalf("Epoch() again = %d; want 1", e)
		}
	}
	if e := refEpoch(t, refTryWrite(t, ch, w("b", 2, 10))); e != 2 {
		t.Fatalf("Epoch() of the next write = %d; want 2", e)
	}
	stop(t, c)
}

func TestContractWaitReturnsApplyErrorAtEveryLevel(t *testing.T) {
	for _, level := range []Durability{Applied, Written, Durable} {
		t.Run(level.String(), func(t *testing.T) {
			c := newTestCoordinator(t, testConfig(), testContext{err: errors.New("apply error")}, newTestFlusher())
			c.Start()
			h := refTryWrite(t, c.Channel("default"), w("a", 1, 10))

			_, err := h.Wait(deadlineCtx(t), level)
			var ae *ApplyError
			if !errors.As(err, &ae) || ae.Epoch != 1 || ae.Err.Error() != "apply error" {
				t.Fatalf("Wait(%v) = %v; want *ApplyError{Epoch: 1, Err: apply error}", level, err)
			}
			// The error comes back as soon as the write is applied: the
			// rejected write was not flushed for the wait.
			if got := c.Watermarks(); got.Applied != 1 || got.Written != 0 {
				t.Fatalf("Watermarks() = %+v after Wait(%v); want Applied 1, Written 0", got, level)
			}
			// Every later wait, at any level, reports the same error.
			for _, again := range []Durability{Applied, Written, Durable} {
				if _, err := h.Wait(deadlineCtx(t), again); !errors.As(err, &ae) || ae.Epoch != 1 {
					t.Fatalf("Wait(%v) after Wait(%v) = %v; want *ApplyError at epoch 1", again, level, err)
				}
			}
			stop(t, c)
		})
	}
}

func TestContractDurabilityOrdering(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()

	ctx, canceled := deadlineCtx(t), canceledContext()
	const writers, perWriter = 4, 10
	var eg errgroup.Group
	for g := range writers {
		eg.Go(func() error {
			for i := range perWriter {
				key := fmt.Sprintf("g%d-%d", g, i)
				h, err := ch.Write(ctx, w(key, uint64(i), 1))
				if err != nil {
					return fmt.Errorf("Write(%s) = %v", key, err)
				}
				if _, err := h.Wait(ctx, Durable); err != nil {
					return fmt.Errorf("Wait(Durable) = %v", err)
				}
				e, _ := h.Epoch(ctx)
				m := c.Watermarks()
				if m.Durable < e || m.Written < m.Durable || m.Applied < m.Written {
					return fmt.Errorf("Watermarks() = %+v after epoch %d became Durable", m, e)
				}
				// Lower levels are reached: waiting for them cannot block.
				for _, lower := range []Durability{Applied, Written} {
					if _, err := h.Wait(canceled, lower); err != nil {
						return fmt.Errorf("Wait(%v) with a canceled context after Durable = %v", lower, err)
					}
				}
				// The view announced by Written holds the write.
				if v := c.View(); v.Written < e || v.Snapshot[key].value != uint64(i) {
					return fmt.Errorf("View() after Durable: Written %d, row %+v; want >= %d with value %d",
						v.Written, v.Snapshot[key], e, i)
				}
			}
			return nil
		})
	}
	var err error
	within(t, "the writers", func() { err = eg.Wait() })
	require.NoError(t, err)
	if m := c.Watermarks(); m != (Watermarks{writers * perWriter, writers * perWriter, writers * perWriter}) {
		t.Fatalf("Watermarks() = %+v; want all at %d", m, writers*perWriter)
	}
	stop(t, c)
}

func canceledContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// ============================================================================
// Flush, pause, Stop
// ============================================================================

func TestContractFlushWhilePaused(t *testing.T) {
	f := newTestFlusher()
	cfg := testConfig()
	cfg.Channels = []string{"a", "b"}
	c := newTestCoordinator(t, cfg, testContext{}, f)
	chA, chB := c.Channel("a"), c.Channel("b")
	c.Start()

	chA.Pause()
	ha := refTryWrite(t, chA, w("pa", 1, 1))
	// Not waited for: Flush must cover writes accepted before it is called.
	hb1 := refTryWrite(t, chB, w("b1", 2, 1))
	hb2 := refTryWrite(t, chB, w("b2", 3, 1))

	epoch := refFlush(t, c, Written)
	if epoch != 2 {
		t.Fatalf("Flush(Written) with a paused channel = %d; want 2", epoch)
	}
	for _, h := range []*WriteHandle[struct{}]{hb1, hb2} {
		if !h.Applied() {
			t.Fatal("a write accepted on an unpaused channel before Flush was not applied")
		}
		if e := refEpoch(t, h); e > epoch {
			t.Fatalf("write at epoch %d not covered by Flush = %d", e, epoch)
		}
	}
	if ha.Applied() {
		t.Fatal("Flush applied a write of the paused channel")
	}
	events := refEventCount(t, f, 1)
	if want := (EpochRange{1, 3}); events[0].epochs != want {
		t.Fatalf("flushed %v; want %v", events[0].epochs, want)
	}
	assertRows(t, f.storage.snapshot(), map[string]seqValue{"b1": {0, 2}, "b2": {1, 3}})

	chA.Resume()
	if e := refEpoch(t, ha); e != 3 {
		t.Fatalf("Epoch() of the resumed write = %d; want 3", e)
	}
	refFlush(t, c, Written)
	assertRows(t, f.storage.snapshot(), map[string]seqValue{"b1": {0, 2}, "b2": {1, 3}, "pa": {2, 1}})
	stop(t, c)
}

func TestContractPauseStopsApplyingWhileWritesArrive(t *testing.T) {
	const capacity = 16
	cfg := testConfig()
	cfg.Channels = []string{"a", "b"}
	cfg.QueueCapacity = capacity
	c := newTestCoordinator(t, cfg, testContext{}, newTestFlusher())
	chA, chB := c.Channel("a"), c.Channel("b")
	c.Start()

	// A writer streams writes into a; it blocks when a's queue is full.
	writerCtx, stopWriter := context.WithCancel(deadlineCtx(t))
	var (
		mu      sync.Mutex
		handles []*WriteHandle[struct{}]
	)
	wrote := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			h, err := chA.Write(writerCtx, w(fmt.Sprintf("a%d", i), uint64(i), 1))
			if err != nil {
				return
			}
			mu.Lock()
			handles = append(handles, h)
			mu.Unlock()
			select {
			case wrote <- struct{}{}:
			default:
			}
		}
	})
	defer func() { stopWriter(); wg.Wait() }()
	for {
		await(t, "a write into a", wrote)
		mu.Lock()
		n := len(handles)
		mu.Unlock()
		if n >= 100 {
			break
		}
	}

	chA.Pause()
	// Every key is written once and nothing is frozen, so the live delta
	// holds exactly the writes applied so far. (The applied watermark may
	// still be catching up with them here: it is published after the
	// channel's apply lock is released.)
	appliedKeys := c.View().Current.keys()
	appliedMark := uint64(len(appliedKeys))

	// Let writes keep arriving until a's queue is full: all of them
	// arrived after Pause returned.
	for chA.Len() < capacity {
		await(t, "a write into a", wrote)
	}
	// The coordinator keeps running: each of these is applied by a round
	// that also visits a.
	const bWrites = 5
	for i := range bWrites {
		refWait(t, refTryWrite(t, chB, w(fmt.Sprintf("b%d", i), uint64(i), 1)), Applied)
	}

	if got := c.Watermarks().Applied; got != appliedMark+bWrites {
		t.Fatalf("applied watermark while a is paused = %d; want %d (only b's writes)", got, appliedMark+bWrites)
	}
	got := c.View().Current.keys()
	for k := range got {
		if strings.HasPrefix(k, "a") && !appliedKeys[k] {
			t.Fatalf("key %q of the paused channel was applied after Pause returned", k)
		}
	}
	mu.Lock()
	for i, h := range handles {
		if h.Applied() && !appliedKeys[fmt.Sprintf("a%d", i)] {
			mu.Unlock()
			t.Fatalf("write a%d of the paused channel reports Applied after Pause returned", i)
		}
	}
	mu.Unlock()

	chA.Resume()
	stopWriter()
	within(t, "the writer stopping", wg.Wait)
	mu.Lock()
	defer mu.Unlock()
	for i, h := range handles {
		if _, err := h.Wait(deadlineCtx(t), Applied); err != nil {
			t.Fatalf("write a%d after Resume: Wait(Applied) = %v", i, err)
		}
	}
	keys := c.View().Current.keys()
	for i := range handles {
		if !keys[fmt.Sprintf("a%d", i)] {
			t.Fatalf("key a%d missing after Resume", i)
		}
	}
	stop(t, c)
}

func TestContractStopAppliesQueuedWrites(t *testing.T) {
	for _, started := range []bool{false, true} {
		t.Run(fmt.Sprintf("started=%v", started), func(t *testing.T) {
			f := newTestFlusher()
			cfg := testConfig()
			cfg.Channels = []string{"a", "b"}
			c := newTestCoordinator(t, cfg, testContext{}, f)
			chA, chB := c.Channel("a"), c.Channel("b")
			if started {
				c.Start()
			}
			// a is paused: Stop applies its writes anyway.
			chA.Pause()
			var hs []*WriteHandle[struct{}]
			for i := range 5 {
				hs = append(hs, refTryWrite(t, chA, w(fmt.Sprintf("a%d", i), uint64(i), 1)))
				hs = append(hs, refTryWrite(t, chB, w(fmt.Sprintf("b%d", i), uint64(i), 1)))
			}
			stop(t, c)

			seen := map[uint64]bool{}
			for i, h := range hs {
				if _, err := h.Wait(deadlineCtx(t), Durable); err != nil {
					t.Fatalf("write %d: Wait(Durable) after Stop = %v; want nil", i, err)
				}
				seen[refEpoch(t, h)] = true
			}
			if len(seen) != len(hs) {
				t.Fatalf("%d distinct epochs for %d writes", len(seen), len(hs))
			}
			if m := c.Watermarks(); m != (Watermarks{10, 10, 10}) {
				t.Fatalf("Watermarks() after Stop = %+v; want all 10", m)
			}
			if got := len(f.storage.snapshot()); got != 10 {
				t.Fatalf("storage holds %d rows after Stop; want 10", got)
			}
			if f.syncCount() < 1 {
				t.Fatal("Stop did not call FlushStorage")
			}
		})
	}
}

func TestContractStopIdempotentStartAfterStopNoop(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	ch := c.Channel("default")
	c.Start()
	h := refTryWrite(t, ch, w("a", 1, 10))

	errs := make(chan error, 4)
	for range 4 {
		go func() { errs <- c.Stop(deadlineCtx(t)) }()
	}
	for range 4 {
		if err := await(t, "a concurrent Stop()", errs); err != nil {
			t.Fatalf("concurrent Stop() = %v; want nil", err)
		}
	}
	if err := c.Stop(deadlineCtx(t)); err != nil {
		t.Fatalf("Stop() again = %v; want nil", err)
	}
	refWait(t, h, Durable)

	c.Start() // a no-op
	if _, err := ch.TryWrite(w("b", 2, 10)); !errors.Is(err, ErrClosed) {
		t.Fatalf("TryWrite after Stop and Start = %v; want ErrClosed", err)
	}
	if err := c.Stop(deadlineCtx(t)); err != nil {
		t.Fatalf("Stop() after Start after Stop = %v; want nil", err)
	}
	refEventCount(t, f, 1)

	// Stopping a coordinator that never started is fine too.
	c2 := newTestCoordinator(t, testConfig(), testContext{}, newTestFlusher())
	if err := c2.Stop(deadlineCtx(t)); err != nil {
		t.Fatalf("Stop() of a never-started coordinator = %v; want nil", err)
	}
	await(t, "Done() of a coordinator stopped before Start", c2.Done())
}

func TestContractOperationsAfterStopReturnErrClosed(t *testing.T) {
	c := newTestCoordinator(t, testConfig(), testContext{}, newTestFlusher())
	ch := c.Channel("default")
	c.Start()
	stop(t, c)

	ops := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"TryWrite", func(context.Context) error { _, err := ch.TryWrite(w("a", 1, 1)); return err }},
		{"Write", func(ctx context.Context) error { _, err := ch.Write(ctx, w("a", 1, 1)); return err }},
		{"WriteBatch", func(ctx context.Context) error {
			_, err := ch.WriteBatch(ctx, []testWrite{w("a", 1, 1)})
			return err
		}},
		{"Flush(Applied)", func(ctx context.Context) error { _, err := c.Flush(ctx, Applied); return err }},
		{"Flush(Written)", func(ctx context.Context) error { _, err := c.Flush(ctx, Written); return err }},
		{"Flush(Durable)", func(ctx context.Context) error { _, err := c.Flush(ctx, Durable); return err }},
		{"WaitFor(Written, 1)", func(ctx context.Context) error { return c.WaitFor(ctx, Written, 1) }},
	}
	for _, op := range ops {
		if err := op.call(deadlineCtx(t)); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Stop = %v; want ErrClosed", op.name, err)
		}
	}
}

// ============================================================================
// Configuration and misuse
// ============================================================================

func TestContractNewRejectsInvalidConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"negative QueueCapacity", Config{QueueCapacity: -1}},
		{"negative FlushInterval", Config{FlushInterval: -time.Second}},
		{"negative FlushSize", Config{FlushSize: -1}},
		{"negative MaxPendingFlushes", Config{MaxPendingFlushes: -1}},
		{"negative SubscriberBuffer", Config{SubscriberBuffer: -1}},
		{"duplicate channel names", Config{Channels: []string{"a", "b", "a"}}},
		{"empty channel name", Config{Channels: []string{"a", ""}}},
		{"MaxBackoff below Backoff", Config{Retry: RetryPolicy{Attempts: 3, Backoff: time.Second, MaxBackoff: time.Millisecond}}},
		{"negative Retry.Attempts", Config{Retry: RetryPolicy{Attempts: -1}}},
		{"unknown SyncPolicy", Config{Sync: SyncAlways + 1}},
	}
	for _, tt := range tests {
		f := newTestFlusher()
		c, err := New(tt.cfg, newTestDelta, testContext{}, f.storage.snapshot(), f)
		if err == nil || c != nil {
			if c != nil {
				_ = c.Stop(deadlineCtx(t))
			}
			t.Errorf("New(%s: %+v) = %v, %v; want nil, error", tt.name, tt.cfg, c, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), "coordinator:") {
			t.Errorf("New(%s) error %q; want the coordinator: prefix", tt.name, err)
		}
	}

	// The zero Config is valid.
	f := newTestFlusher()
	c, err := New(Config{}, newTestDelta, testContext{}, f.storage.snapshot(), f)
	if err != nil {
		t.Fatalf("New(Config{}) = %v; want nil", err)
	}
	stop(t, c)
}

func TestContractUnknownChannelPanics(t *testing.T) {
	c := newTestCoordinator(t, testConfig(), testContext{}, newTestFlusher())
	defer func() {
		r := recover()
		msg, ok := r.(string)
		if !ok || !strings.HasPrefix(msg, "coordinator:") || !strings.Contains(msg, "nope") {
			t.Fatalf("Channel(%q) panicked with %#v; want a string with the coordinator: prefix naming it", "nope", r)
		}
	}()
	c.Channel("nope")
	t.Fatal("Channel of an unknown name did not panic")
}

// ============================================================================
// Subscribers and monitors
// ============================================================================

func TestContractNextBeforeInitialize(t *testing.T) {
	c := newTestCoordinator(t, testConfig(), testContext{}, newTestFlusher())
	sub := c.Subscribe()
	defer sub.Close()
	if v, err := sub.Next(deadlineCtx(t)); !errors.Is(err, ErrNotInitialized) || v != nil {
		t.Fatalf("Next() before Initialize = %v, %v; want nil, ErrNotInitialized", v, err)
	}
}

// ctFlushes makes n deltas of one write each and waits until each is
// written: every flush publishes exactly two views (frozen, written).
func ctFlushes(t testing.TB, c *testCoordinator, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		refTryWrite(t, c.Channel("default"), w(fmt.Sprintf("k%d", i), uint64(i), 1))
		refFlush(t, c, Written)
	}
}

func TestContractLagErrorReportsMissedAndRecovers(t *testing.T) {
	cfg := testConfig()
	cfg.SubscriberBuffer = 2
	c := newTestCoordinator(t, cfg, testContext{}, newTestFlusher())
	c.Start()
	sub := c.Subscribe()
	defer sub.Close()
	sub.Initialize()
	mon := sub.Monitor()

	ctFlushes(t, c, 0, 3) // six views into a buffer of two

	_, err := sub.Next(deadlineCtx(t))
	var lag *LagError
	if !errors.As(err, &lag) {
		t.Fatalf("Next() after overflow = %v; want *LagError", err)
	}
	// All six views were dropped, the two that were buffered included.
	if lag.Missed != 6 {
		t.Fatalf("LagError.Missed = %d; want 6", lag.Missed)
	}
	if _, err := sub.Next(deadlineCtx(t)); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("Next() after a LagError = %v; want ErrNotInitialized", err)
	}

	v := sub.Initialize()
	if v.Written != 3 || len(v.Frozen) != 0 || len(v.Snapshot) != 3 {
		t.Fatalf("Initialize() after lag = Written %d, %d frozen, %d rows; want 3, 0, 3", v.Written, len(v.Frozen), len(v.Snapshot))
	}

	// The monitor survives the recovery.
	res := ctAsync(func() (uint64, error) { return 0, mon.Wait(deadlineCtx(t), Written, 3) })
	ctParked(&sub.marks.written, 1)
	sub.Advance(Written, v.Written)
	if r := await(t, "Monitor.Wait(Written, 3)", res); r.err != nil {
		t.Fatalf("Monitor.Wait(Written, 3) after Advance = %v; want nil", r.err)
	}

	// Delivery resumes with the next view.
	ctFlushes(t, c, 3, 1)
	next, err := sub.Next(deadlineCtx(t))
	if err != nil || len(next.Frozen) != 1 || next.Frozen[0].Epochs != (EpochRange{4, 5}) {
		t.Fatalf("Next() after Initialize = %+v, %v; want the view freezing [4, 5)", next, err)
	}
}

func TestContractSubscriberBufferHonoured(t *testing.T) {
	for _, tt := range []struct{ config, want int }{{2, 2}, {4, 4}, {0, 16}} {
		t.Run(fmt.Sprintf("SubscriberBuffer=%d", tt.config), func(t *testing.T) {
			cfg := testConfig()
			cfg.SubscriberBuffer = tt.config
			c := newTestCoordinator(t, cfg, testContext{}, newTestFlusher())
			c.Start()
			reader, idle := c.Subscribe(), c.Subscribe()
			defer reader.Close()
			defer idle.Close()
			reader.Initialize()
			idle.Initialize()

			// Exactly a buffer's worth of views: nothing is lost.
			ctFlushes(t, c, 0, tt.want/2)
			for i := range tt.want {
				if _, err := reader.Next(deadlineCtx(t)); err != nil {
					t.Fatalf("Next() #%d of %d buffered views = %v; want a view", i+1, tt.want, err)
				}
			}
			if _, err := reader.Next(canceledContext()); !errors.Is(err, context.Canceled) {
				t.Fatalf("Next() with nothing buffered = %v; want context.Canceled", err)
			}

			// Two more: the subscriber that read keeps up, the idle one
			// overflows.
			ctFlushes(t, c, tt.want/2, 1)
			for range 2 {
				if _, err := reader.Next(deadlineCtx(t)); err != nil {
					t.Fatalf("Next() of a drained subscriber = %v; want a view", err)
				}
			}
			_, err := idle.Next(deadlineCtx(t))
			var lag *LagError
			if !errors.As(err, &lag) || lag.Missed != uint64(tt.want+2) {
				t.Fatalf("Next() after %d views = %v; want *LagError{Missed: %d}", tt.want+2, err, tt.want+2)
			}
		})
	}
}

func TestContractMonitorWaitAdvanceAndClose(t *testing.T) {
	c := newTestCoordinator(t, testConfig(), testContext{}, newTestFlusher())
	sub := c.Subscribe()
	mon := sub.Monitor()

	written := ctAsync(func() (uint64, error) { return 0, mon.Wait(deadlineCtx(t), Written, 5) })
	ctParked(&sub.marks.written, 1)
	sub.Advance(Written, 4)
	if n := ctPending(&sub.marks.written); n != 1 {
		t.Fatalf("Monitor.Wait(Written, 5) woke at 4 (%d parked)", n)
	}
	sub.Advance(Durable, 5) // Durable implies Written
	if r := await(t, "Monitor.Wait(Written, 5)", written); r.err != nil {
		t.Fatalf("Monitor.Wait(Written, 5) after Advance(Durable, 5) = %v; want nil", r.err)
	}
	if got := mon.Watermarks(); got != (Watermarks{5, 5, 5}) {
		t.Fatalf("Monitor.Watermarks() = %+v; want all 5", got)
	}

	pending := ctAsync(func() (uint64, error) { return 0, mon.Wait(deadlineCtx(t), Applied, 10) })
	ctParked(&sub.marks.applied, 1)
	sub.Close()
	sub.Close() // idempotent
	if r := await(t, "Monitor.Wait(Applied, 10)", pending); !errors.Is(r.err, ErrClosed) {
		t.Fatalf("Monitor.Wait(Applied, 10) across Close = %v; want ErrClosed", r.err)
	}
	if err := mon.Wait(deadlineCtx(t), Durable, 5); err != nil {
		t.Fatalf("Monitor.Wait(Durable, 5) after Close, reached before = %v; want nil", err)
	}
	if err := mon.Wait(deadlineCtx(t), Durable, 6); !errors.Is(err, ErrClosed) {
		t.Fatalf("Monitor.Wait(Durable, 6) after Close = %v; want ErrClosed", err)
	}
}

// ============================================================================
// Batches
// ============================================================================

func TestContractWriteBatch(t *testing.T) {
	f := newTestFlusher()
	c := newCtRejectingCoordinator(t, testConfig(), f)
	ch := c.Channel("default")
	c.Start()

	refWait(t, refTryWrite(t, ch, w("first", 1, 1)), Applied)
	bh, err := ch.WriteBatch(deadlineCtx(t), []testWrite{w("x", 10, 1), w("bad", 20, 1), w("y", 30, 1)})
	if err != nil {
		t.Fatalf("WriteBatch = %v; want nil", err)
	}
	epochs, err := bh.Epochs(deadlineCtx(t))
	if err != nil || epochs != (EpochRange{2, 5}) {
		t.Fatalf("Epochs() = %v, %v; want [2, 5), nil", epochs, err)
	}
	results, err := bh.Wait(deadlineCtx(t), Written)
	if err != nil {
		t.Fatalf("Wait(Written) = %v; want nil (per-write errors are in the results)", err)
	}
	if len(results) != 3 {
		t.Fatalf("Wait returned %d results; want 3", len(results))
	}
	for i, r := range results {
		if want := uint64(2 + i); r.Epoch != want {
			t.Fatalf("results[%d].Epoch = %d; want %d", i, r.Epoch, want)
		}
		var ae *ApplyError
		if i == 1 {
			if !errors.As(r.Err, &ae) || ae.Epoch != 3 {
				t.Fatalf("results[1].Err = %v; want *ApplyError at epoch 3", r.Err)
			}
		} else if r.Err != nil {
			t.Fatalf("results[%d].Err = %v; want nil", i, r.Err)
		}
	}
	assertRows(t, f.storage.snapshot(), map[string]seqValue{"first": {0, 1}, "x": {1, 10}, "y": {2, 30}})

	// An empty batch completes at once with no epochs.
	empty, err := ch.WriteBatch(deadlineCtx(t), nil)
	if err != nil {
		t.Fatalf("WriteBatch(nil) = %v; want nil", err)
	}
	if r, err := empty.Epochs(canceledContext()); err != nil || r.Len() != 0 {
		t.Fatalf("empty batch Epochs() = %v, %v; want an empty range at once", r, err)
	}
	stop(t, c)
}

func TestContractConcurrentBatchesAreContiguous(t *testing.T) {
	c := newTestCoordinator(t, testConfig(), testContext{}, newTestFlusher())
	ch := c.Channel("default")
	c.Start()

	const goroutines, batches, size = 4, 10, 5
	ranges := make(chan EpochRange, goroutines*batches)
	ctx := deadlineCtx(t)
	var eg errgroup.Group
	for g := range goroutines {
		eg.Go(func() error {
			for b := range batches {
				ws := make([]testWrite, size)
				for i := range ws {
					ws[i] = w(fmt.Sprintf("g%d-b%d-%d", g, b, i), uint64(i), 1)
				}
				bh, err := ch.WriteBatch(ctx, ws)
				if err != nil {
					return err
				}
				results, err := bh.Wait(ctx, Applied)
				if err != nil {
					return err
				}
				r, _ := bh.Epochs(ctx)
				for i, res := range results {
					if res.Epoch != r.Start+uint64(i) || res.Err != nil {
						return fmt.Errorf("batch %v: results[%d] = %+v", r, i, res)
					}
				}
				ranges <- r
			}
			return nil
		})
	}
	var err error
	within(t, "the batch writers", func() { err = eg.Wait() })
	require.NoError(t, err)
	close(ranges)
	covered := map[uint64]bool{}
	for r := range ranges {
		if r.Len() != size {
			t.Fatalf("batch range %v; want %d epochs", r, size)
		}
		for e := r.Start; e < r.End; e++ {
			if covered[e] {
				t.Fatalf("epoch %d in two batches", e)
			}
			covered[e] = true
		}
	}
	for e := uint64(1); e <= goroutines*batches*size; e++ {
		if !covered[e] {
			t.Fatalf("epoch %d in no batch", e)
		}
	}
	stop(t, c)
}

// ============================================================================
// Cancellation
// ============================================================================

// In each case the call can only return through its context (the queue
// never drains, the flusher is stuck, the coordinator is not running), so
// a result after cancel shows it honoured the context promptly.

func TestContractCancelBlockedWrite(t *testing.T) {
	c := newTestCoordinator(t, refSmallQueue(1), testContext{}, newTestFlusher())
	ch := c.Channel("default")
	first := refTryWrite(t, ch, w("a", 1, 1))

	ctx, cancel := context.WithCancel(deadlineCtx(t))
	res := ctAsync(func() (uint64, error) {
		h, err := ch.Write(ctx, w("b", 2, 1))
		if h != nil {
			return 1, err
		}
		return 0, err
	})
	cancel()
	r := await(t, "the canceled Write", res)
	if !errors.Is(r.err, context.Canceled) || r.epoch != 0 {
		t.Fatalf("blocked Write after cancel = handle %v, %v; want nil, context.Canceled", r.epoch == 1, r.err)
	}
	if n := ch.Len(); n != 1 {
		t.Fatalf("Len() after the canceled Write = %d; want 1", n)
	}
	if got := c.Stats().Channels[0].RejectedCanceled; got != 1 {
		t.Fatalf("Stats().Channels[0].RejectedCanceled = %d; want 1", got)
	}

	c.Start()
	refWait(t, first, Applied)
	if e := refFlush(t, c, Applied); e != 1 {
		t.Fatalf("Flush(Applied) = %d; want 1 (the canceled write was not queued)", e)
	}
	stop(t, c)
}

func TestContractCancelBlockedEpochAndFlush(t *testing.T) {
	c := newTestCoordinator(t, testConfig(), testContext{}, newTestFlusher())
	ch := c.Channel("default")
	h := refTryWrite(t, ch, w("a", 1, 1))

	// Not started: nothing sequences the write or takes the flush request.
	ctx, cancel := context.WithCancel(deadlineCtx(t))
	epoch := ctAsync(func() (uint64, error) { return h.Epoch(ctx) })
	flush := ctAsync(func() (uint64, error) { return c.Flush(ctx, Applied) })
	cancel()
	for name, res := range map[string]<-chan ctResult{"Epoch": epoch, "Flush(Applied)": flush} {
		if r := await(t, name, res); !errors.Is(r.err, context.Canceled) || r.epoch != 0 {
			t.Fatalf("blocked %s after cancel = %d, %v; want 0, context.Canceled", name, r.epoch, r.err)
		}
	}

	c.Start()
	if e := refEpoch(t, h); e != 1 {
		t.Fatalf("Epoch() after Start = %d; want 1", e)
	}
	// The canceled flush froze nothing.
	require.Zero(t, c.Stats().Flushes.Explicit, "Stats().Flushes.Explicit after a canceled Flush")
	stop(t, c)
}

func TestContractCancelBlockedWaitAndFlushOnStuckFlusher(t *testing.T) {
	calls := []struct {
		name string
		call func(ctx context.Context, c *testCoordinator, h *WriteHandle[struct{}]) (uint64, error)
	}{
		{"Wait(Written)", func(ctx context.Context, _ *testCoordinator, h *WriteHandle[struct{}]) (uint64, error) {
			_, err := h.Wait(ctx, Written)
			return 0, err
		}},
		{"Wait(Durable)", func(ctx context.Context, _ *testCoordinator, h *WriteHandle[struct{}]) (uint64, error) {
			_, err := h.Wait(ctx, Durable)
			return 0, err
		}},
		{"Flush(Written)", func(ctx context.Context, c *testCoordinator, _ *WriteHandle[struct{}]) (uint64, error) {
			return c.Flush(ctx, Written)
		}},
		{"Flush(Durable)", func(ctx context.Context, c *testCoordinator, _ *WriteHandle[struct{}]) (uint64, error) {
			return c.Flush(ctx, Durable)
		}},
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			f, started, unblock := newControlledFlusher()
			c := newTestCoordinator(t, testConfig(), testContext{}, f)
			c.Start()
			h := refTryWrite(t, c.Channel("default"), w("a", 1, 1))
			refWait(t, h, Applied)

			ctx, cancel := context.WithCancel(deadlineCtx(t))
			res := ctAsync(func() (uint64, error) { return tc.call(ctx, c, h) })
			await(t, "FlushDelta starts", started) // the flush it asked for is stuck in FlushDelta
			cancel()
			if r := await(t, tc.name, res); !errors.Is(r.err, context.Canceled) {
				t.Fatalf("blocked %s after cancel = %v; want context.Canceled", tc.name, r.err)
			}
			if m := c.Watermarks(); m.Written != 0 || m.Durable != 0 {
				t.Fatalf("Watermarks() after the canceled %s = %+v; want Written 0, Durable 0", tc.name, m)
			}

			// The pipeline is intact: once the flusher moves, the write
			// becomes durable.
			close(unblock)
			refWait(t, h, Durable)
			refEventCount(t, f, 1)
			stop(t, c)
		})
	}
}

func TestContractCancelBlockedNext(t *testing.T) {
	c := newTestCoordinator(t, testConfig(), testContext{}, newTestFlusher())
	c.Start()
	sub := c.Subscribe()
	defer sub.Close()
	sub.Initialize()

	ctx, cancel := context.WithCancel(deadlineCtx(t))
	res := ctAsync(func() (uint64, error) { _, err := sub.Next(ctx); return 0, err })
	cancel()
	if r := await(t, "the canceled Next()", res); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("blocked Next() after cancel = %v; want context.Canceled", r.err)
	}
	// Nothing was consumed: the next view still arrives.
	ctFlushes(t, c, 0, 1)
	if v := refNext(t, sub); len(v.Frozen) != 1 {
		t.Fatalf("Next() after a canceled Next = %d frozen deltas; want 1", len(v.Frozen))
	}
	stop(t, c)
}

// ============================================================================
// Regressions
// ============================================================================

// TestRegressionWaitersAcrossSynctestBubbles guards against a crash: the
// waiters of handle and watermark waits come from a process-wide sync.Pool.
// They used to park on a channel made where the pool allocated it, so a
// waiter allocated inside a testing/synctest bubble and reused outside it
// (or in another bubble) made the runtime abort the whole process with
// "fatal error: select on synctest channel from outside bubble". Waiters now
// park on a sync.Cond, which belongs to no bubble.
func TestRegressionWaitersAcrossSynctestBubbles(t *testing.T) {
	blockOnWaits := func(t *testing.T) {
		c := newTestCoordinator(t, testConfig(), testContext{}, newTestFlusher())
		ch := c.Channel("default")
		var wg sync.WaitGroup
		ctx := deadlineCtx(t)
		for i := range 64 {
			h := refTryWrite(t, ch, w(fmt.Sprintf("k%d", i), uint64(i), 1))
			wg.Go(func() { _, _ = h.Wait(ctx, Applied) })
		}
		c.Start()
		within(t, "the Wait(Applied) callers", wg.Wait)
		stop(t, c)
	}
	for range 5 {
		synctest.Test(t, blockOnWaits) // allocates waiters inside a bubble
		blockOnWaits(t)                // reuses them outside: fatal error
	}
}

// TestContractFirstEpoch: a store reopening persisted data continues its
// epochs; the watermarks start just below FirstEpoch.
func TestContractFirstEpoch(t *testing.T) {
	ctx := deadlineCtx(t)
	f := newTestFlusher()
	cfg := testConfig()
	cfg.FirstEpoch = 101
	c := newTestCoordinator(t, cfg, testContext{}, f)
	if got, want := c.Watermarks(), (Watermarks{100, 100, 100}); got != want {
		t.Fatalf("Watermarks() before any write = %+v; want %+v", got, want)
	}
	if got := c.View().Written; got != 100 {
		t.Fatalf("View().Written = %d; want 100", got)
	}
	c.Start()
	ch := c.Channel("default")
	h1, err := ch.TryWrite(w("a", 1, 1))
	if err != nil {
		t.Fatal(err)
	}
	h2, err := ch.TryWrite(w("b", 2, 1))
	if err != nil {
		t.Fatal(err)
	}
	if e, err := h1.Epoch(ctx); e != 101 || err != nil {
		t.Fatalf("first Epoch() = %d, %v; want 101, nil", e, err)
	}
	if _, err := h2.Wait(ctx, Durable); err != nil {
		t.Fatalf("Wait(Durable) = %v", err)
	}
	ev := f.flushedEvents()
	if len(ev) != 1 || ev[0].epochs != (EpochRange{101, 103}) {
		t.Fatalf("flushed %+v; want one delta with epochs [101, 103)", ev)
	}
	stop(t, c)

	if _, err := New(Config{FirstEpoch: 1 << 63}, newTestDelta, testContext{}, memSnapshot{}, newTestFlusher()); err == nil {
		t.Fatalf("New(FirstEpoch: 1<<63) = nil error; want an error")
	}
}

// TestContractMonitorReleasedWhenFeedEnds: once the coordinator stopped and
// the subscriber read every view, Next returns ErrClosed and Monitor
// waiters beyond the subscriber's watermarks return instead of hanging.
func TestContractMonitorReleasedWhenFeedEnds(t *testing.T) {
	ctx := deadlineCtx(t)
	c := newTestCoordinator(t, testConfig(), testContext{}, newTestFlusher())
	sub := c.Subscribe()
	defer sub.Close()
	sub.Initialize()
	mon := sub.Monitor()
	c.Start()
	if _, err := c.Channel("default").TryWrite(w("a", 1, 1)); err != nil {
		t.Fatal(err)
	}
	stop(t, c)

	waitErr := make(chan error, 1) // buffered: the waiter never blocks sending
	go func() { waitErr <- mon.Wait(ctx, Written, 100) }()
	for {
		v, err := sub.Next(ctx)
		if errors.Is(err, ErrClosed) {
			break
		}
		if err != nil {
			t.Fatalf("Next() = %v", err)
		}
		sub.Advance(Written, v.Written)
	}
	if err := await(t, "Monitor.Wait(Written, 100)", waitErr); !errors.Is(err, ErrClosed) {
		t.Fatalf("Monitor.Wait(Written, 100) after the feed ended = %v; want ErrClosed", err)
	}
	if got := sub.Watermarks().Written; got != 1 {
		t.Fatalf("subscriber Written = %d; want 1", got)
	}
}
