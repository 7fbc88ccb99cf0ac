package coordinator

// Regression tests for liveness and scale defects: each test failed on the
// code before its fix. Tests whose failure on that code was a hang bound the
// hanging call with regHang and fail with a goroutine dump naming it.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// regHang is the patience for calls that hung before their fix: short, so
// that such a test fails quickly, and far above any legitimate wait.
const regHang = 5 * time.Second

// regGo runs f on a new goroutine; the channel receives its result.
func regGo(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

// regSpin yields until cond holds, failing t with a goroutine dump if ctx
// ends first. It is for conditions only observable by polling (counters).
func regSpin(t testing.TB, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if ctx.Err() != nil {
			t.Fatalf("%s: still false when the test deadline passed; goroutines:\n%s", what, goroutineDump())
		}
		runtime.Gosched()
	}
}

// regStopAtCleanup stops c when the test ends, with a bounded wait so that a
// coordinator that cannot stop does not hang the test run.
func regStopAtCleanup[W, R, FV, DV, S any](t testing.TB, c *Coordinator[W, R, FV, DV, S]) {
	hangs.watch(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), regHang)
		defer cancel()
		_ = c.Stop(ctx)
	})
}

// regFlusher is a testFlusher that counts its calls and runs optional hooks
// first. The hooks are set before the coordinator starts; n counts the calls
// of each method from 1.
type regFlusher struct {
	*testFlusher
	deltaCalls, storageCalls atomic.Int64

	beforeDelta   func(ctx context.Context, n int64, epochs EpochRange) error
	beforeStorage func(ctx context.Context, n int64) error
}

func newRegFlusher() *regFlusher { return &regFlusher{testFlusher: newTestFlusher()} }

func (f *regFlusher) FlushDelta(ctx context.Context, frozen frozenTestDelta, epochs EpochRange) (memSnapshot, error) {
	n := f.deltaCalls.Add(1)
	if f.beforeDelta != nil {
		if err := f.beforeDelta(ctx, n, epochs); err != nil {
			return nil, err
		}
	}
	return f.testFlusher.FlushDelta(ctx, frozen, epochs)
}

func (f *regFlusher) FlushStorage(ctx context.Context) error {
	n := f.storageCalls.Add(1)
	if f.beforeStorage != nil {
		if err := f.beforeStorage(ctx, n); err != nil {
			return err
		}
	}
	return f.testFlusher.FlushStorage(ctx)
}

// regNew builds a coordinator over testDelta and f, stopped at cleanup.
func regNew(t testing.TB, cfg Config, f *regFlusher) *testCoordinator {
	t.Helper()
	c, err := New(cfg, newTestDelta, testContext{}, f.storage.snapshot(), f)
	require.NoError(t, err)
	regStopAtCleanup(t, c)
	return c
}

// regBlockFirst returns a hook that blocks the first call until release is
// called (or its ctx ends), closing started when that call begins.
func regBlockFirst() (hook func(ctx context.Context, n int64) error, started <-chan struct{}, release func()) {
	st, rel := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hook = func(ctx context.Context, n int64) error {
		if n != 1 {
			return nil
		}
		close(st)
		select {
		case <-rel:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return hook, st, func() { once.Do(func() { close(rel) }) }
}

// regBlockedFirstSync starts a coordinator with cfg whose first
// FlushStorage blocks until release is called (or its ctx ends); started
// is closed when that call begins.
func regBlockedFirstSync(t testing.TB, cfg Config) (c *testCoordinator, f *regFlusher, started <-chan struct{}, release func()) {
	t.Helper()
	f = newRegFlusher()
	f.beforeStorage, started, release = regBlockFirst()
	c = regNew(t, cfg, f)
	c.Start()
	return c, f, started, release
}

// regSink keeps regWork from being optimised away.
var regSink atomic.Uint64

// regWork burns a little CPU: the "little work" of a flush, counted in
// iterations rather than time.
func regWork(n int) {
	x := uint64(88172645463325252)
	for range n {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	regSink.Add(x)
}

// ============================================================================
// 1. Durable waits under sustained load
// ============================================================================

// A steady stream of deltas must not postpone a requested sync without bound.
//
// Four writers write 20,000 writes as fast as the queue takes them (deltas
// are frozen by size every 8 writes, MaxPendingFlushes is 2, FlushDelta does
// a little work), and every 16th write gets a goroutine that waits for it to
// be Durable. For each such wait the test counts the FlushDelta calls made
// from the moment the wait was listed on the durable watermark until the
// first FlushStorage that covers it (both recorded inside the coordinator
// and the flusher, so that neither the waiter goroutine's start nor its
// wake-up latency counts). The load is finite so that a starving
// coordinator fails the bound instead of hanging.
func TestRegressionDurableWaitBoundedUnderLoad(t *testing.T) {
	const (
		writers   = 4
		perWriter = 5_000
		every     = 16
		pending   = 2
		bound     = 2 * (pending + 1)
	)
	ctx := deadlineCtx(t)
	defer failIfHung(t, ctx)

	type syncMark struct {
		deltas  int64  // FlushDelta calls made before this FlushStorage
		written uint64 // last epoch written before it
	}
	var (
		lastWritten atomic.Uint64
		marksMu     sync.Mutex
		marks       []syncMark
	)
	f := newRegFlusher()
	f.beforeDelta = func(_ context.Context, _ int64, epochs EpochRange) error {
		regWork(100_000)
		lastWritten.Store(epochs.Last())
		return nil
	}
	f.beforeStorage = func(context.Context, int64) error {
		marksMu.Lock()
		marks = append(marks, syncMark{f.deltaCalls.Load(), lastWritten.Load()})
		marksMu.Unlock()
		return nil
	}
	cfg := testConfig()
	cfg.QueueCapacity = 64
	cfg.FlushSize = 8
	cfg.MaxPendingFlushes = pending
	c := regNew(t, cfg, f)
	// Note, per measured epoch, the FlushDelta calls made when its wait
	// was listed. A measured waiter stores -1 for its epoch first.
	var listedAt sync.Map
	parked := c.p.marks.durable.parked
	c.p.marks.durable.parked = func(e uint64) {
		listedAt.CompareAndSwap(e, int64(-1), f.deltaCalls.Load())
		parked(e)
	}
	c.Start()
	ch := c.Channel("default")

	type waitRecord struct {
		epoch uint64
		start int64 // FlushDelta calls made when the wait was listed; -1 if it never was
		err   error
	}
	records := make(chan waitRecord, writers*(perWriter/every+1))
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range perWriter {
				h, err := ch.Write(ctx, w(fmt.Sprintf("k%d", (g*perWriter+i)%64), uint64(i), 1))
				if err != nil {
					records <- waitRecord{err: fmt.Errorf("Write: %w", err)}
					return
				}
				if i%every != every-1 {
					continue
				}
				wg.Go(func() {
					e, err := h.Epoch(ctx)
					if err != nil {
						records <- waitRecord{err: fmt.Errorf("Epoch: %w", err)}
						return
					}
					listedAt.Store(e, int64(-1))
					_, err = h.Wait(ctx, Durable)
					start, _ := listedAt.LoadAndDelete(e)
					records <- waitRecord{epoch: e, start: start.(int64), err: err}
				})
			}
		})
	}
	within(t, "the writers and their Durable waiters", wg.Wait)
	close(records)

	marksMu.Lock()
	defer marksMu.Unlock()
	worst, worstEpoch, waits := int64(-1), uint64(0), 0
	for r := range records {
		require.NoError(t, r.err)
		waits++
		if r.start < 0 {
			continue // durable before its wait was listed
		}
		i := slices.IndexFunc(marks, func(m syncMark) bool { return m.written >= r.epoch })
		require.GreaterOrEqual(t, i, 0, "no FlushStorage covered epoch %d, yet its Durable wait returned", r.epoch)
		if n := marks[i].deltas - r.start; n > worst {
			worst, worstEpoch = n, r.epoch
		}
	}
	require.Equal(t, writers*(perWriter/every), waits)
	require.LessOrEqual(t, worst, int64(bound),
		"the Durable wait for epoch %d spanned %d FlushDelta calls before a FlushStorage covered it; want at most %d (%d syncs for %d deltas in all)",
		worstEpoch, worst, bound, len(marks), f.deltaCalls.Load())
}

// ============================================================================
// 2. Abandoned waits
// ============================================================================

// A wait that gave up must not keep its demand and switch group commit off.
//
// After a far-future WaitFor is abandoned, writes that nobody waits on beyond
// Applied are grouped as usual, not each frozen (and synced) on its own.
func TestRegressionAbandonedWaitKeepsGroupCommit(t *testing.T) {
	for _, level := range []Durability{Written, Durable} {
		t.Run(level.String(), func(t *testing.T) {
			// The bubble makes "the wait is parked" and "the pipeline is
			// idle" observable with synctest.Wait.
			synctest.Test(t, func(t *testing.T) {
				ctx := deadlineCtx(t)
				f := newRegFlusher()
				c := regNew(t, testConfig(), f)
				c.Start()

				wctx, cancel := context.WithCancel(ctx)
				res := regGo(func() error { return c.WaitFor(wctx, level, 1<<40) })
				synctest.Wait() // the wait is parked
				cancel()
				require.ErrorIs(t, await(t, "the abandoned WaitFor", res), context.Canceled)

				ch := c.Channel("default")
				const writes = 50
				for i := range writes {
					h, err := ch.TryWrite(w(fmt.Sprintf("k%d", i), uint64(i), 1))
					require.NoError(t, err)
					_, err = h.Wait(ctx, Applied)
					require.NoError(t, err)
				}
				synctest.Wait() // the coordinator and the flusher are idle
				st := c.Stats()
				require.Equal(t, uint64(writes), st.Watermarks.Applied)
				require.Zero(t, st.Flushes.Wait,
					"%d writes waited only for Applied after a %v wait was abandoned: %d were frozen for a waiter (FlushDelta calls: %d, FlushStorage calls: %d); want none",
					writes, level, st.Flushes.Wait, f.deltaCalls.Load(), f.storageCalls.Load())
				require.Zero(t, f.deltaCalls.Load(), "FlushDelta calls")
				require.Zero(t, f.storageCalls.Load(), "FlushStorage calls")
				require.NoError(t, c.Stop(ctx))
			})
		})
	}
}

// ============================================================================
// 3. FIFO wake-up of blocked writers
// ============================================================================

// regSizedWrite is a write with a size for the byte budget.
type regSizedWrite struct {
	w testWrite
	n int
}

func (s regSizedWrite) Size() int { return s.n }

// regSizedDelta applies regSizedWrites to a testDelta.
type regSizedDelta struct{ *testDelta }

func (d regSizedDelta) Apply(s regSizedWrite) (struct{}, error) { return d.testDelta.Apply(s.w) }

type regSizedCoordinator = Coordinator[regSizedWrite, struct{}, map[string]uint64, testReader, memSnapshot]

func newRegSized(t testing.TB, cfg Config, f *regFlusher) *regSizedCoordinator {
	t.Helper()
	c, err := New(cfg, func(ctx testContext) regSizedDelta { return regSizedDelta{newTestDelta(ctx)} },
		testContext{}, f.storage.snapshot(), f)
	require.NoError(t, err)
	regStopAtCleanup(t, c)
	return c
}

func regSW(key string, n int) regSizedWrite { return regSizedWrite{w: w(key, 1, 1), n: n} }

type regEpochResult struct {
	epoch uint64
	err   error
}

// Writers blocked on a full queue or an exhausted byte budget are admitted in FIFO order.
//
// Writers are started one at a time, each only once the previous one is
// parked (synctest.Wait inside a bubble), then room is freed; the epochs of
// their writes give the order in which they were admitted.
func TestRegressionBlockedWritersAdmittedInOrder(t *testing.T) {
	const writers = 8
	checkOrder := func(t *testing.T, results []<-chan regEpochResult, first int) {
		t.Helper()
		got := make([]int, len(results))
		want := make([]int, len(results))
		for i, ch := range results {
			r := await(t, fmt.Sprintf("writer %d's epoch", i), ch)
			require.NoError(t, r.err, "writer %d", i)
			got[i], want[i] = int(r.epoch), first+i
		}
		require.Equal(t, want, got, "epochs of the writers, in the order they blocked")
	}

	t.Run("queue", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx := deadlineCtx(t)
			cfg := testConfig()
			cfg.QueueCapacity = 1 // one slot frees at a time
			c := regNew(t, cfg, newRegFlusher())
			c.Start()
			ch := c.Channel("default")
			ch.Pause()
			_, err := ch.TryWrite(w("fill", 0, 1))
			require.NoError(t, err)

			results := make([]<-chan regEpochResult, writers)
			for i := range writers {
				res := make(chan regEpochResult, 1)
				go func() {
					h, err := ch.Write(ctx, w(fmt.Sprintf("w%d", i), uint64(i), 1))
					if err != nil {
						res <- regEpochResult{err: err}
						return
					}
					e, err := h.Epoch(ctx)
					res <- regEpochResult{e, err}
				}()
				synctest.Wait() // writer i is parked on the full queue
				require.Equal(t, 1, ch.Len(), "writer %d got in", i)
				results[i] = res
			}
			ch.Resume()
			checkOrder(t, results, 2)
		})
	})

	t.Run("budget", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx := deadlineCtx(t)
			f := newRegFlusher()
			hook, started, release := regBlockFirst()
			f.beforeDelta = func(ctx context.Context, n int64, _ EpochRange) error { return hook(ctx, n) }
			defer release()
			cfg := testConfig()
			cfg.MaxBytes = 10 // each write takes the whole budget
			c := newRegSized(t, cfg, f)
			c.Start()
			ch := c.Channel("default")
			h0, err := ch.TryWrite(regSW("w0", 10))
			require.NoError(t, err)
			_, err = h0.Wait(ctx, Applied)
			require.NoError(t, err)

			results := make([]<-chan regEpochResult, writers)
			for i := range writers {
				res := make(chan regEpochResult, 1)
				go func() {
					h, err := ch.Write(ctx, regSW(fmt.Sprintf("w%d", i+1), 10))
					if err != nil {
						res <- regEpochResult{err: err}
						return
					}
					e, err := h.Epoch(ctx)
					res <- regEpochResult{e, err}
				}()
				synctest.Wait() // writer i is parked on the exhausted budget
				results[i] = res
			}
			await(t, "the first FlushDelta, which holds w0's bytes", started)
			release()
			checkOrder(t, results, 2)
		})
	})
}

// ============================================================================
// 4. Idle channels
// ============================================================================

// The coordinator's work follows the channels that have writes, not the
// configured ones: with 10,000 channels and one busy, only the busy one is
// ever on the ready list the coordinator works from. This checks the
// mechanism; BenchmarkChannels measures the cost (170 µs per round trip
// with 10,000 channels before the fix, 130× one channel).
func TestRegressionIdleChannelsAreNotVisited(t *testing.T) {
	ctx := deadlineCtx(t)
	defer failIfHung(t, ctx)
	cfg := testConfig()
	for i := range 10_000 {
		cfg.Channels = append(cfg.Channels, fmt.Sprint("c", i))
	}
	c := regNew(t, cfg, newRegFlusher())
	c.Start()
	busy := c.Channel("c5000")
	for i := range 200 {
		h, err := busy.Write(ctx, w(fmt.Sprint(i), uint64(i), 1))
		require.NoError(t, err)
		_, err = h.Wait(ctx, Applied)
		require.NoError(t, err)
		for _, q := range c.queues {
			if q.listed.Load() && q.name != "c5000" {
				t.Fatalf("idle channel %s is on the ready list after round trip %d", q.name, i)
			}
		}
	}
	require.NoError(t, c.Stop(ctx))
}

// ============================================================================
// 5. Write sizes
// ============================================================================

// Write sizes are not trusted: invalid ones are rejected and the budget never overflows.
//
// A negative size, or a batch whose sizes sum past MaxInt64, is rejected with
// ErrInvalidSize; a write of size MaxInt is admitted only when nothing else
// holds budget; BudgetBytes never goes negative or wraps.
func TestRegressionInvalidWriteSizes(t *testing.T) {
	newC := func(t *testing.T) *regSizedCoordinator {
		cfg := testConfig()
		cfg.MaxBytes = 100
		c := newRegSized(t, cfg, newRegFlusher())
		c.Start()
		return c
	}
	budgetOK := func(t *testing.T, c *regSizedCoordinator, what string) int64 {
		t.Helper()
		b := c.Stats().BudgetBytes
		require.GreaterOrEqual(t, b, int64(0), "BudgetBytes %s", what)
		return b
	}

	t.Run("negative", func(t *testing.T) {
		ctx := deadlineCtx(t)
		c := newC(t)
		ch := c.Channel("default")
		_, err := ch.TryWrite(regSW("neg", -1))
		require.ErrorIs(t, err, ErrInvalidSize, "TryWrite of a write of size -1")
		_, err = ch.Write(ctx, regSW("neg", -1))
		require.ErrorIs(t, err, ErrInvalidSize, "Write of a write of size -1")
		_, err = ch.WriteBatch(ctx, []regSizedWrite{regSW("a", 1), regSW("neg", -1)})
		require.ErrorIs(t, err, ErrInvalidSize, "WriteBatch with a write of size -1")
		require.Zero(t, budgetOK(t, c, "after rejected writes"))
		require.Zero(t, c.Stats().Channels[0].Accepted)
		require.NoError(t, c.Stop(ctx))
	})

	t.Run("batch-overflow", func(t *testing.T) {
		ctx := deadlineCtx(t)
		c := newC(t)
		ch := c.Channel("default")
		for _, batch := range [][]regSizedWrite{
			{regSW("a", math.MaxInt), regSW("b", math.MaxInt)},
			{regSW("a", math.MaxInt), regSW("b", 1)},
		} {
			_, err := ch.WriteBatch(ctx, batch)
			require.ErrorIs(t, err, ErrInvalidSize, "WriteBatch of sizes %d and %d", batch[0].n, batch[1].n)
			require.Zero(t, budgetOK(t, c, "after a rejected batch"))
		}
		require.NoError(t, c.Stop(ctx))
	})

	t.Run("huge-after-small", func(t *testing.T) {
		ctx := deadlineCtx(t)
		defer failIfHung(t, ctx)
		c := newC(t)
		ch := c.Channel("default")
		// One byte held (paused, so it stays held): a huge write must wait.
		ch.Pause()
		small, err := ch.TryWrite(regSW("small", 1))
		require.NoError(t, err)
		_, err = ch.TryWrite(regSW("huge", math.MaxInt))
		require.ErrorIs(t, err, ErrBackpressure, "TryWrite of size MaxInt while 1 byte is held")
		require.Equal(t, int64(1), budgetOK(t, c, "with 1 byte held"))

		ch.Resume()
		_, err = small.Wait(ctx, Written)
		require.NoError(t, err)
		regSpin(t, ctx, "budget released after the small write was written", func() bool { return c.Stats().BudgetBytes == 0 })
		require.NoError(t, c.Stop(ctx))
		require.Zero(t, budgetOK(t, c, "after Stop"))
	})

	t.Run("small-after-huge", func(t *testing.T) {
		ctx := deadlineCtx(t)
		defer failIfHung(t, ctx)
		c := newC(t)
		ch := c.Channel("default")
		// Nothing held: the huge write is admitted alone, and nothing fits
		// beside it (paused, so that it stays held while the test looks).
		ch.Pause()
		huge, err := ch.TryWrite(regSW("huge", math.MaxInt))
		require.NoError(t, err, "TryWrite of size MaxInt with nothing held")
		require.Equal(t, int64(math.MaxInt), budgetOK(t, c, "with the huge write held"))
		_, err = ch.TryWrite(regSW("one", 1))
		require.ErrorIs(t, err, ErrBackpressure, "TryWrite of size 1 while a write of size MaxInt is held")
		require.Equal(t, int64(math.MaxInt), budgetOK(t, c, "with the huge write held"))

		ch.Resume()
		_, err = huge.Wait(ctx, Written)
		require.NoError(t, err)
		regSpin(t, ctx, "budget released after the huge write was written", func() bool { return c.Stats().BudgetBytes == 0 })
		require.NoError(t, c.Stop(ctx))
		require.Zero(t, budgetOK(t, c, "after Stop"))
	})
}

// ============================================================================
// 6. runtime.Goexit in user code
// ============================================================================

const regGoexitKey = "goexit"

// regHookDelta is a testDelta whose Apply calls runtime.Goexit on the write
// keyed regGoexitKey, and whose Freeze does once freezeGoexit is set.
type regHookDelta struct {
	*testDelta
	freezeGoexit *atomic.Bool
}

func (d regHookDelta) Apply(wr testWrite) (struct{}, error) {
	if wr.key == regGoexitKey {
		runtime.Goexit()
	}
	return d.testDelta.Apply(wr)
}

func (d regHookDelta) Freeze() (frozenTestDelta, map[string]uint64, testContext) {
	if d.freezeGoexit.CompareAndSwap(true, false) {
		runtime.Goexit()
	}
	return d.testDelta.Freeze()
}

// runtime.Goexit in user code fails the coordinator like a panic, never hangs or loses data.
//
// For Goexit in Apply, Freeze, FlushDelta and FlushStorage: Err() is a
// *PanicError naming the method and wrapping ErrGoexit, every waiter (at
// Applied, Written, Durable, and Flush) gets an error, Pause returns, Stop
// returns the error, and no goroutine is left behind.
func TestRegressionGoexitInUserCode(t *testing.T) {
	for _, op := range []string{"Apply", "Freeze", "FlushDelta", "FlushStorage"} {
		t.Run(op, func(t *testing.T) {
			ignore := goleak.IgnoreCurrent()
			ctx := deadlineCtx(t) // longer than regHang: a hang is reported by regAwait
			var freezeGoexit, deltaGoexit, storageGoexit atomic.Bool
			f := newRegFlusher()
			f.beforeDelta = func(context.Context, int64, EpochRange) error {
				if deltaGoexit.CompareAndSwap(true, false) {
					runtime.Goexit()
				}
				return nil
			}
			f.beforeStorage = func(context.Context, int64) error {
				if storageGoexit.CompareAndSwap(true, false) {
					runtime.Goexit()
				}
				return nil
			}
			cfg := testConfig()
			cfg.Channels = []string{"main", "paused"}
			c, err := New(cfg, func(tc testContext) regHookDelta { return regHookDelta{newTestDelta(tc), &freezeGoexit} },
				testContext{}, f.storage.snapshot(), f)
			require.NoError(t, err)
			regStopAtCleanup(t, c)
			c.Start()

			paused := c.Channel("paused")
			paused.Pause()
			hp, err := paused.Write(ctx, w("p", 1, 1))
			require.NoError(t, err)
			waits := map[string]<-chan error{
				"WaitFor(Written, far)": regGo(func() error { return c.WaitFor(ctx, Written, 1000) }),
				"WaitFor(Durable, far)": regGo(func() error { return c.WaitFor(ctx, Durable, 1000) }),
				"Wait(Applied) of a write queued on a paused channel": regGo(func() error {
					_, err := hp.Wait(ctx, Applied)
					return err
				}),
			}

			key := "x"
			switch op {
			case "Apply":
				key = regGoexitKey
			case "Freeze":
				freezeGoexit.Store(true)
			case "FlushDelta":
				deltaGoexit.Store(true)
			case "FlushStorage":
				storageGoexit.Store(true)
			}
			h, err := c.Channel("main").Write(ctx, w(key, 2, 1))
			require.NoError(t, err)
			waits["Wait(Durable) of the write"] = regGo(func() error {
				_, err := h.Wait(ctx, Durable)
				return err
			})
			for what, ch := range waits {
				err := awaitFor(t, regHang, what+" after Goexit in "+op, ch)
				require.ErrorIs(t, err, ErrFailed, what)
			}

			err = c.Err()
			var pe *PanicError
			require.ErrorAs(t, err, &pe, "Err()")
			require.Equal(t, op, pe.Op)
			require.ErrorIs(t, err, ErrGoexit)
			require.ErrorIs(t, err, ErrFailed)

			flushed := regGo(func() error { _, err := c.Flush(ctx, Durable); return err })
			require.ErrorIs(t, awaitFor(t, regHang, "Flush(Durable) after Goexit in "+op, flushed), ErrFailed)

			withinFor(t, regHang, "Pause after Goexit in "+op, func() { c.Channel("main").Pause() })

			var stopErr error
			withinFor(t, regHang, "Stop after Goexit in "+op, func() { stopErr = c.Stop(ctx) })
			require.ErrorIs(t, stopErr, ErrGoexit, "Stop")
			require.ErrorAs(t, stopErr, &pe, "Stop")
			goleak.VerifyNone(t, ignore)
		})
	}
}

// ============================================================================
// 7. Failure is atomic for writers
// ============================================================================

var errRegFlush = errors.New("regression: injected flush error")

// regTally counts kinds of problems over rounds, keeping one example of each.
type regTally struct {
	kinds  []string
	counts map[string]int
	sample map[string]string
}

func (r *regTally) note(kind, sample string) {
	if r.counts == nil {
		r.counts, r.sample = map[string]int{}, map[string]string{}
	}
	if r.counts[kind] == 0 {
		r.kinds = append(r.kinds, kind)
		r.sample[kind] = sample
	}
	r.counts[kind]++
}

func (r *regTally) requireNone(t *testing.T, rounds int) {
	t.Helper()
	var lines []string
	for _, k := range r.kinds {
		line := fmt.Sprintf("%d times in %d rounds: %s", r.counts[k], rounds, k)
		if r.sample[k] != "" {
			line += "; e.g. " + r.sample[k]
		}
		lines = append(lines, line)
	}
	require.Empty(t, lines, "\n%s", strings.Join(lines, "\n"))
}

// regFailRound starts a coordinator whose first FlushDelta fails, with a write
// queued, and returns them.
func regFailRound(t *testing.T) (*testCoordinator, *WriteHandle[struct{}]) {
	t.Helper()
	f := newRegFlusher()
	f.beforeDelta = func(context.Context, int64, EpochRange) error { return errRegFlush }
	c := regNew(t, testConfig(), f)
	c.Start()
	h, err := c.Channel("default").TryWrite(w("a", 1, 1))
	require.NoError(t, err)
	return c, h
}

// From the moment the coordinator fails, every new write is refused as "not accepted".
//
// The refusal wraps ErrFailed. Each round fails a coordinator's first FlushDelta; the goroutine that
// receives the FlushError from its wait then tries TryWrite, Write and
// WriteBatch.
func TestRegressionFailureRefusesWritesAtOnce(t *testing.T) {
	const rounds = 200
	var tally regTally
	for range rounds {
		ctx := deadlineCtx(t)
		c, h := regFailRound(t)
		ch := c.Channel("default")
		type outcome struct {
			waitErr error
			writes  map[string]error
		}
		done := make(chan outcome, 1)
		go func() {
			var o outcome
			_, o.waitErr = h.Wait(ctx, Written)
			o.writes = map[string]error{}
			_, o.writes["TryWrite"] = ch.TryWrite(w("b", 2, 1))
			_, o.writes["Write"] = ch.Write(ctx, w("c", 3, 1))
			_, o.writes["WriteBatch"] = ch.WriteBatch(ctx, []testWrite{w("d", 4, 1)})
			done <- o
		}()
		o := await(t, "the waiter's round", done)
		require.ErrorIs(t, o.waitErr, errRegFlush, "Wait(Written)")
		for _, name := range []string{"TryWrite", "Write", "WriteBatch"} {
			switch err := o.writes[name]; {
			case err == nil:
				tally.note(name+" accepted a write after a waiter had received the FlushError", "")
			case !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "not accepted") ||
				strings.Contains(err.Error(), "not applied"):
				tally.note(name+"'s refusal does not wrap ErrFailed and say \"not accepted\"", err.Error())
			}
		}
		require.ErrorIs(t, c.Stop(ctx), errRegFlush)
	}
	tally.requireNone(t, rounds)
}

// The failed view is published before any goroutine can learn of the failure.
//
// A goroutine that has just received the FlushError, or seen Err() become
// non-nil, finds View().Err set. Each round fails a coordinator's first FlushDelta while eight goroutines
// wait for the write to be Written (more waiters widen the window in which
// some are woken and others not yet) and another watches Err(); each checks
// View().Err the moment it learns of the failure.
func TestRegressionFailedViewPublishedFirst(t *testing.T) {
	const rounds, waiters = 1000, 8
	var tally regTally
	for range rounds {
		ctx := deadlineCtx(t)
		c, h := regFailRound(t)
		polled := make(chan error, 1)
		go func() {
			for c.Err() == nil && ctx.Err() == nil {
				runtime.Gosched()
			}
			polled <- c.View().Err
		}()
		type outcome struct{ waitErr, viewErr, cErr error }
		views := make(chan outcome, waiters)
		for range waiters {
			go func() {
				_, err := h.Wait(ctx, Written)
				views <- outcome{err, c.View().Err, c.Err()}
			}()
		}
		for range waiters {
			o := await(t, "a waiter", views)
			require.ErrorIs(t, o.waitErr, errRegFlush, "Wait(Written)")
			if o.viewErr == nil {
				tally.note("View().Err was nil in a goroutine that had just received the FlushError", "")
			}
			if o.cErr == nil {
				tally.note("Err() was nil in a goroutine that had just received the FlushError", "")
			}
		}
		if v := await(t, "the Err() watcher", polled); v == nil {
			tally.note("View().Err was nil right after Err() became non-nil", "")
		}
		require.ErrorIs(t, c.Stop(ctx), errRegFlush)
	}
	tally.requireNone(t, rounds)
}

// ============================================================================
// 8. Stop with an ended context, and Abort
// ============================================================================

// regShutdownFlusher returns a flusher whose FlushDelta, once armed, blocks
// until released or until its context ends, honouring it; entered receives
// the context of that call, left what the call returned.
func regShutdownFlusher() (f *regFlusher, arm func(), entered <-chan context.Context, left <-chan error, release func()) {
	f = newRegFlusher()
	var armed atomic.Bool
	ent, lft, rel := make(chan context.Context, 1), make(chan error, 1), make(chan struct{})
	var once sync.Once
	f.beforeDelta = func(ctx context.Context, _ int64, _ EpochRange) error {
		if !armed.CompareAndSwap(true, false) {
			return nil
		}
		ent <- ctx
		var err error
		select {
		case <-rel:
		case <-ctx.Done():
			err = ctx.Err()
		}
		lft <- err
		return err
	}
	return f, func() { armed.Store(true) }, ent, lft, func() { once.Do(func() { close(rel) }) }
}

// Stop whose ctx ends stops waiting but must not drop accepted writes.
//
// Stop returns ctx's error; the shutdown goes on with the flusher's context
// intact, and a later Stop returns nil with every applied write written and
// durable.
func TestRegressionStopWithEndedContextKeepsWrites(t *testing.T) {
	for _, name := range []string{"canceled", "deadline"} {
		t.Run(name, func(t *testing.T) {
			ctx := deadlineCtx(t)
			defer failIfHung(t, ctx)
			f, arm, entered, _, release := regShutdownFlusher()
			defer release()
			c := regNew(t, testConfig(), f)
			c.Start()
			ch := c.Channel("default")
			const writes = 10
			var last *WriteHandle[struct{}]
			for i := range writes {
				h, err := ch.TryWrite(w(fmt.Sprintf("k%d", i), uint64(i), 1))
				require.NoError(t, err)
				last = h
			}
			_, err := last.Wait(ctx, Applied)
			require.NoError(t, err)

			arm()
			var (
				stopCtx context.Context
				cancel  context.CancelFunc
				want    = context.Canceled
			)
			if name == "deadline" {
				// The flusher is held until released, so this deadline
				// passes before the shutdown can finish, whatever the timing.
				stopCtx, cancel = context.WithTimeout(ctx, time.Millisecond)
				want = context.DeadlineExceeded
			} else {
				stopCtx, cancel = context.WithCancel(ctx)
				cancel()
			}
			defer cancel()
			require.ErrorIs(t, c.Stop(stopCtx), want, "Stop with an ended ctx")
			fctx := await(t, "the shutdown's FlushDelta", entered)
			require.NoError(t, fctx.Err(), "the flusher's context after Stop's own ctx ended")

			release()
			require.NoError(t, c.Stop(ctx), "the later Stop")
			snap := f.storage.snapshot()
			require.Len(t, snap, writes, "rows in storage")
			require.Equal(t, Watermarks{writes, writes, writes}, c.Watermarks())
			require.GreaterOrEqual(t, f.syncCount(), 1, "FlushStorage calls")
		})
	}
}

// Abort, not an ended Stop ctx, is what cancels the flusher's context.
//
// Until Abort the blocked flusher call's context is intact (also during a
// Stop whose ctx ended); after it the call sees context.Canceled, the
// coordinator fails, and Stop returns an error wrapping ErrFailed and
// context.Canceled.
func TestRegressionAbortCancelsFlusher(t *testing.T) {
	for _, name := range []string{"running", "stopping"} {
		t.Run(name, func(t *testing.T) {
			ctx := deadlineCtx(t)
			f, arm, entered, left, release := regShutdownFlusher()
			defer release()
			c := regNew(t, testConfig(), f)
			c.Start()
			h, err := c.Channel("default").TryWrite(w("a", 1, 1))
			require.NoError(t, err)
			_, err = h.Wait(ctx, Applied)
			require.NoError(t, err)
			arm()

			var waited <-chan error
			if name == "running" {
				waited = regGo(func() error { _, err := h.Wait(ctx, Written); return err })
			} else {
				canceled, cancel := context.WithCancel(ctx)
				cancel()
				require.ErrorIs(t, c.Stop(canceled), context.Canceled)
			}
			fctx := await(t, "the blocked FlushDelta", entered)
			require.NoError(t, fctx.Err(), "the flusher's context before Abort")

			c.Abort()
			require.ErrorIs(t, awaitFor(t, regHang, "the blocked FlushDelta returning after Abort", left), context.Canceled)
			if waited != nil {
				require.ErrorIs(t, await(t, "Wait(Written) after Abort", waited), ErrFailed)
			}
			// The flusher call has returned; the coordinator fails right
			// after it, and Stop waits for that.
			stopErr := c.Stop(ctx)
			require.ErrorIs(t, stopErr, ErrFailed, "Stop after Abort")
			require.ErrorIs(t, stopErr, context.Canceled, "Stop after Abort")
			require.ErrorIs(t, c.Err(), ErrFailed, "Err() after Abort")
		})
	}
}

// ============================================================================
// 9. A failed view
// ============================================================================

// regPtrDelta is a testDelta whose Reader returns a pointer, like most real
// delta views.
type regPtrDelta struct{ *testDelta }

func (d regPtrDelta) Reader() *testReader {
	r := d.testDelta.Reader()
	return &r
}

// regGet is the documented read pattern: Current, then Frozen newest first,
// then Snapshot.
func regGet(v *View[map[string]uint64, *testReader, memSnapshot], key string) (uint64, bool) {
	if val, ok := v.Current.get(key); ok {
		return val, true
	}
	for _, f := range v.Frozen {
		if val, ok := f.View[key]; ok {
			return val, true
		}
	}
	sv, ok := v.Snapshot[key]
	return sv.value, ok
}

// The documented read pattern must never panic on a failed view.
//
// With a pointer delta view, the failed view's Current reads as empty.
func TestRegressionFailedViewReadable(t *testing.T) {
	ctx := deadlineCtx(t)
	f := newRegFlusher()
	f.beforeDelta = func(context.Context, int64, EpochRange) error { return errRegFlush }
	c, err := New(testConfig(), func(tc testContext) regPtrDelta { return regPtrDelta{newTestDelta(tc)} },
		testContext{}, f.storage.snapshot(), f)
	require.NoError(t, err)
	regStopAtCleanup(t, c)
	c.Start()
	h, err := c.Channel("default").TryWrite(w("a", 1, 1))
	require.NoError(t, err)
	_, err = h.Wait(ctx, Applied)
	require.NoError(t, err)
	_, ok := regGet(c.View(), "a")
	require.True(t, ok, "the applied write, read through the view")

	_, err = h.Wait(ctx, Written)
	require.ErrorIs(t, err, errRegFlush)
	v := c.View()
	require.Error(t, v.Err, "View().Err after the failure")
	require.NotPanics(t, func() { _, ok = regGet(v, "a") }, "the read pattern on a failed view")
	require.False(t, ok, "the failed write, read through the failed view")
	require.NotPanics(t, func() { require.Empty(t, v.Current.keys(), "keys of the failed view's Current") })
	require.ErrorIs(t, c.Stop(ctx), errRegFlush)
}

// ============================================================================
// 10. Flush(Durable) coalescing
// ============================================================================

// Concurrent Flush(ctx, Durable) calls made before a sync starts must coalesce, not sync once each.
//
// Writers keep the pipeline loaded (deltas frozen by size, FlushDelta doing
// a little work, so the flush queue stays full), and the first FlushStorage
// is held. 64 goroutines each signal, then call Flush(ctx, Durable); inside a
// synctest bubble, synctest.Wait then proves that every one of them is
// blocked inside Flush before the sync is released. The test counts the
// FlushStorage calls made after the release until every Flush returned.
func TestRegressionConcurrentDurableFlushesCoalesce(t *testing.T) {
	for round := range 3 { // one round of the unfixed code now and then met the bound
		t.Run(fmt.Sprint("round", round), func(t *testing.T) { synctest.Test(t, regDurableFlushesRound) })
	}
}

func regDurableFlushesRound(t *testing.T) {
	const callers, maxSyncs, maxLoad = 64, 3, 50_000
	ctx := deadlineCtx(t)
	f := newRegFlusher()
	hook, started, release := regBlockFirst()
	f.beforeStorage = hook
	f.beforeDelta = func(context.Context, int64, EpochRange) error {
		regWork(20_000)
		return nil
	}
	defer release()
	cfg := testConfig()
	cfg.FlushSize = 8
	c := regNew(t, cfg, f)
	c.Start()
	ch := c.Channel("default")

	const loaders = 4
	quit, loadDone := make(chan struct{}), make(chan error, loaders)
	for g := range loaders {
		go func() {
			for i := range maxLoad / loaders {
				select {
				case <-quit:
					loadDone <- nil
					return
				default:
				}
				if _, err := ch.Write(ctx, w(fmt.Sprintf("k%d", i%64), uint64(g), 1)); err != nil {
					loadDone <- err
					return
				}
			}
			loadDone <- nil
		}()
	}
	results := make(chan error, callers+1)
	go func() { _, err := c.Flush(ctx, Durable); results <- err }()
	await(t, "the first FlushStorage", started)

	begun := make(chan struct{}, callers)
	for range callers {
		go func() {
			begun <- struct{}{}
			_, err := c.Flush(ctx, Durable)
			results <- err
		}()
	}
	for i := range callers {
		await(t, fmt.Sprintf("caller %d starting Flush", i), begun)
	}
	synctest.Wait() // every caller is blocked inside Flush
	held := f.storageCalls.Load()
	require.Equal(t, int64(1), held, "FlushStorage calls while the first is held")

	release()
	for i := range callers + 1 {
		require.NoError(t, await(t, fmt.Sprintf("Flush(Durable) result %d", i), results))
	}
	syncs := f.storageCalls.Load() - held
	close(quit)
	for range loaders {
		require.NoError(t, await(t, "a load writer", loadDone))
	}
	require.LessOrEqual(t, syncs, int64(maxSyncs),
		"FlushStorage calls after the held one, for %d Flush(Durable) calls that had all begun before it ended (FlushDelta calls in all: %d)",
		callers, f.deltaCalls.Load())
	require.NoError(t, c.Stop(ctx))
}

// ============================================================================
// 11. Waiters and synctest bubbles
// ============================================================================

const regChildEnv = "COORDINATOR_REGRESSION_CHILD"

// A waiter whose context ends as it is woken must not carry a late wake-up into a synctest bubble.
//
// The crash is fatal, so the scenario runs in a child process (this test
// binary, re-executed with regChildEnv set): parallel loops of bubbles, and
// a loop outside any bubble, each with many waits whose contexts are
// canceled while the watermark they wait on advances.
func TestRegressionWaiterReuseAcrossBubbles(t *testing.T) {
	if os.Getenv(regChildEnv) == t.Name() {
		regBubbleChurn(t)
		return
	}
	ctx := deadlineCtx(t)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), regChildEnv+"="+t.Name())
	// A hung child dumps its goroutines (SIGQUIT) before it is killed.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the child did not finish within %v; its output:\n%s", testDeadline, out)
	}
	if i := strings.Index(string(out), "fatal error"); i >= 0 {
		t.Fatalf("the child crashed: %s\n(%v; output from the crash on:)\n%.3000s", regFirstLine(string(out[i:])), err, out[i:])
	}
	require.NoError(t, err, "the child; its output:\n%s", out)
}

func regFirstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// regBubbleChurn runs in the child process.
func regBubbleChurn(t *testing.T) {
	const loops, iterations = 3, 150
	for i := range loops {
		t.Run(fmt.Sprint("bubbles", i), func(t *testing.T) {
			t.Parallel()
			for range iterations {
				synctest.Test(t, func(t *testing.T) { regRacingWaits(t, synctest.Wait) })
			}
		})
	}
	t.Run("outside", func(t *testing.T) {
		t.Parallel()
		for range iterations {
			regRacingWaits(t, func() {})
		}
	})
}

// regRacingWaits parks waiters on the applied watermark and on handles, then
// cancels their contexts while the writes that wake them are applied.
// settle lets the waiters park (synctest.Wait in a bubble).
func regRacingWaits(t *testing.T, settle func()) {
	const waiters = 16
	c := regNew(t, testConfig(), newRegFlusher())
	c.Start()
	ch := c.Channel("default")
	ctx := deadlineCtx(t)
	for round := range uint64(3) {
		ch.Pause()
		h, err := ch.TryWrite(w("k", round, 1))
		require.NoError(t, err)
		errs := make(chan error, 2*waiters)
		cancels := make([]context.CancelFunc, 0, 2*waiters)
		for range waiters {
			wctx, cancel := context.WithCancel(ctx)
			hctx, hcancel := context.WithCancel(ctx)
			cancels = append(cancels, cancel, hcancel)
			go func() { errs <- c.WaitFor(wctx, Applied, round+1) }()
			go func() { _, err := h.Wait(hctx, Applied); errs <- err }()
		}
		settle()
		go func() {
			for _, cancel := range cancels {
				cancel()
			}
		}()
		ch.Resume()
		for range 2 * waiters {
			if err := await(t, "a canceled wait", errs); err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("wait: %v", err)
			}
		}
	}
	require.NoError(t, c.Stop(ctx))
}

// ============================================================================
// 12. Smaller defects
// ============================================================================

// A channel's Len() must never exceed QueueCapacity.
//
// It holds even while the coordinator has taken the whole queue and is
// blocked handing a delta to a full flush queue.
func TestRegressionLenWithinQueueCapacity(t *testing.T) {
	const capacity = 4
	ctx := deadlineCtx(t)
	defer failIfHung(t, ctx)
	f := newRegFlusher()
	hook, started, release := regBlockFirst()
	f.beforeDelta = func(ctx context.Context, n int64, _ EpochRange) error { return hook(ctx, n) }
	defer release()
	cfg := testConfig()
	cfg.QueueCapacity = capacity
	cfg.FlushSize = 1 // every write is frozen on its own
	cfg.MaxPendingFlushes = 1
	c := regNew(t, cfg, f)
	c.Start()
	ch := c.Channel("default")

	// Write 1 is held in FlushDelta, write 2's delta fills the flush queue.
	_, err := ch.TryWrite(w("k1", 1, 1))
	require.NoError(t, err)
	await(t, "the first FlushDelta", started)
	_, err = ch.TryWrite(w("k2", 2, 1))
	require.NoError(t, err)
	require.NoError(t, c.WaitFor(ctx, Applied, 2))
	// The applied watermark moves before the turn frees its queue slots.
	regSpin(t, ctx, "the slots of writes 1 and 2 freed", func() bool { return ch.q.appliedSlots.Load() == 2 })

	// A full queue, taken whole by the coordinator, which applies one write
	// and then blocks handing its delta to the full flush queue.
	ch.Pause()
	accepted := 2
	for i := range capacity {
		_, err := ch.TryWrite(w(fmt.Sprintf("q%d", i), 0, 1))
		require.NoError(t, err)
		accepted++
	}
	require.Equal(t, capacity, ch.Len())
	ch.Resume()
	require.NoError(t, c.WaitFor(ctx, Applied, 3))

	for i := range 2 * capacity {
		_, err := ch.TryWrite(w(fmt.Sprintf("more%d", i), 0, 1))
		if err != nil {
			require.ErrorIs(t, err, ErrBackpressure)
		} else {
			accepted++
		}
		require.LessOrEqual(t, ch.Len(), capacity, "Len() after %d more TryWrite calls", i+1)
	}
	release()
	require.NoError(t, c.Stop(ctx))
	require.Equal(t, uint64(accepted), c.Watermarks().Durable)
}

// Stats().PendingFlushes is never negative, whatever it races with.
//
// Four readers call Stats() in a loop while up to 10,000 Flush(ctx, Durable)
// calls each run a FlushStorage with nothing else pending: every sync starts
// from an idle flusher, the moment a torn read would show -1. The loop ends
// early once a reader saw a negative value.
func TestRegressionPendingFlushesNeverNegative(t *testing.T) {
	const syncs, readers = 10_000, 4
	ctx := deadlineCtx(t)
	defer failIfHung(t, ctx)
	f := newRegFlusher()
	c := regNew(t, testConfig(), f)
	c.Start()

	quit := make(chan struct{})
	lows := make(chan int, readers)
	var negative atomic.Bool
	for range readers {
		go func() {
			low := 0
			for {
				select {
				case <-quit:
					lows <- low
					return
				default:
				}
				if p := c.Stats().PendingFlushes; p < low {
					low = p
					negative.Store(true)
				}
			}
		}()
	}
	for range syncs {
		if negative.Load() {
			break
		}
		_, err := c.Flush(ctx, Durable)
		require.NoError(t, err)
	}
	close(quit)
	for range readers {
		low := await(t, "a Stats reader", lows)
		require.GreaterOrEqual(t, low, 0, "lowest Stats().PendingFlushes seen during %d syncs", f.storageCalls.Load())
	}
	require.NoError(t, c.Stop(ctx))
}

// WriteBatch with no writes after Stop fails with ErrClosed, like every other call.
func TestRegressionEmptyWriteBatchAfterStop(t *testing.T) {
	ctx := deadlineCtx(t)
	c := regNew(t, testConfig(), newRegFlusher())
	c.Start()
	require.NoError(t, c.Stop(ctx))
	ch := c.Channel("default")
	_, err := ch.WriteBatch(ctx, nil)
	require.ErrorIs(t, err, ErrClosed, "WriteBatch(ctx, nil) after Stop")
	_, err = ch.WriteBatch(ctx, []testWrite{})
	require.ErrorIs(t, err, ErrClosed, "WriteBatch(ctx, []) after Stop")
}
