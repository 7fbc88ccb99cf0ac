package coordinator

// Liveness under load: writers keep several channels busy while other
// goroutines wait for their writes to become durable, give up on waits,
// pause and resume a channel and call Flush at every level. The flusher
// counts its calls, and every Durable wait measures how many flusher calls
// it spanned: a Durable wait must return within a few flush cycles however
// busy the coordinator is. The test counts flusher calls, never time; its
// only clock is the budget that bounds how long the load runs.
//
//	go test -race -run TestLoadLiveness .          # CI-sized
//	go test -race -run TestLoadLiveness . -long    # much longer

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var loadLong = flag.Bool("long", false, "run the liveness load test much longer, with many more writes")

// loadMaxDeltasPerDurableWait is the most FlushDelta calls a Durable wait
// may span before the FlushStorage call that serves it starts, as the
// package documents: the delta being written and the MaxPendingFlushes
// queued behind it, the delta holding the write, and the rest of the batch
// the flusher writes before it syncs (MaxPendingFlushes more).
func loadMaxDeltasPerDurableWait(cfg Config) int64 { return 2 * int64(cfg.MaxPendingFlushes+1) }

// loadMaxSyncsPerDurableWait is the most FlushStorage calls that may start
// during a Durable wait, counting the one that serves it: one per flusher
// batch at most (explicit Flush(Durable) calls may add syncs), and there are
// at most three batches in the span above.
func loadMaxSyncsPerDurableWait() int64 { return 3 }

// loadFlushEvery is how many writes are applied between two explicit
// Flush calls. Flush(Durable) always syncs, so frequent calls would hide a
// starved Durable wait.
const loadFlushEvery = 20_000

// loadFlushWork is the number of rounds of busy work per FlushDelta call,
// on top of copying the delta.
const loadFlushWork = 5_000

// loadFlushLatency is how long each FlushDelta call waits, standing for the
// storage I/O a real flusher waits for; it synchronises nothing. With CPU
// work alone, on a small shared machine the flusher takes the CPU the
// coordinator needs to refill the flush queue, the queue runs empty, and
// the flusher syncs then, which hides a starved Durable wait.
const loadFlushLatency = 200 * time.Microsecond

// loadDelta keeps the ids of the writes applied to it.
type loadDelta struct{ writes []uint64 }

func newLoadDelta(struct{}) *loadDelta { return &loadDelta{} }

func (d *loadDelta) Apply(id uint64) (struct{}, error) {
	d.writes = append(d.writes, id)
	return struct{}{}, nil
}

func (d *loadDelta) EstimateSize() int { return 8 * len(d.writes) }

func (d *loadDelta) Freeze() ([]uint64, int, struct{}) { return d.writes, len(d.writes), struct{}{} }

func (d *loadDelta) Reader() struct{} { return struct{}{} }

// loadFlusher copies every delta, does a little work on it and waits for
// loadFlushLatency, counts its calls, and checks that deltas arrive whole and in epoch order. Its
// snapshot is the last epoch written.
type loadFlusher struct {
	deltas, syncs atomic.Int64 // calls, counted as they start
	bad           atomic.Int64 // deltas out of order or of the wrong length
	sum           atomic.Uint64

	next uint64   // the first epoch of the next delta; flusher goroutine only
	buf  []uint64 // flusher goroutine only

	mu     sync.Mutex
	synced []loadSync // every FlushStorage call, in order
}

// loadSync is one FlushStorage call: the FlushDelta calls made before it
// and the last epoch written when it started, which it makes durable.
type loadSync struct {
	deltas  int64
	written uint64
}

// serving returns the index of the first FlushStorage call that made epoch
// durable, and that call, or false if none did.
func (f *loadFlusher) serving(epoch uint64) (int, loadSync, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := sort.Search(len(f.synced), func(i int) bool { return f.synced[i].written >= epoch })
	if i == len(f.synced) {
		return 0, loadSync{}, false
	}
	return i, f.synced[i], true
}

func (f *loadFlusher) FlushDelta(_ context.Context, frozen []uint64, epochs EpochRange) (uint64, error) {
	f.deltas.Add(1)
	if epochs.Start != f.next || uint64(len(frozen)) != epochs.Len() {
		f.bad.Add(1)
	}
	f.next = epochs.End
	f.buf = append(f.buf[:0], frozen...)
	x := epochs.Start
	for _, id := range f.buf {
		x = x*6364136223846793005 + id
	}
	for range loadFlushWork {
		x = x*6364136223846793005 + 1442695040888963407
	}
	f.sum.Add(x)
	time.Sleep(loadFlushLatency)
	return epochs.Last(), nil
}

func (f *loadFlusher) FlushStorage(context.Context) error {
	f.mu.Lock()
	f.synced = append(f.synced, loadSync{deltas: f.deltas.Load(), written: f.next - 1})
	f.mu.Unlock()
	f.syncs.Add(1)
	return nil
}

// loadSpan is what one Durable wait spanned, in flusher calls.
type loadSpan struct{ deltas, syncs int64 }

// loadResult collects the measurements and failures of the load's
// goroutines.
type loadResult struct {
	mu        sync.Mutex
	waits     int      // Durable waits that returned
	maxDeltas loadSpan // the wait that spanned the most FlushDelta calls
	maxSyncs  loadSpan // the wait that spanned the most FlushStorage calls
	over      int      // waits beyond a bound
	hung      sync.Once
}

func (r *loadResult) record(s loadSpan, maxDeltas, maxSyncs int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waits++
	if s.deltas > r.maxDeltas.deltas {
		r.maxDeltas = s
	}
	if s.syncs > r.maxSyncs.syncs {
		r.maxSyncs = s
	}
	if s.deltas > maxDeltas || s.syncs > maxSyncs {
		r.over++
	}
}

// check reports err, with a goroutine dump (once) if a call hit its
// deadline: that call hung.
func (r *loadResult) check(t *testing.T, what string, err error) bool {
	t.Helper()
	if err == nil {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) {
		r.hung.Do(func() {
			t.Errorf("%s did not return within %v: %v; goroutines:\n%s", what, testDeadline, err, goroutineDump())
		})
		return false
	}
	assert.NoError(t, err, what)
	return false
}

// TestLoadLiveness runs writers, Durable waiters, waiters that give up, a
// pauser and Flush callers together, and fails if a Durable wait spans more
// flush cycles than loadMaxDeltasPerDurableWait and
// loadMaxSyncsPerDurableWait allow. The load runs for a time budget or a
// number of writes, whichever ends first, and then every goroutine stops,
// so that a starved wait shows up as a failure, not as a hang.
func TestLoadLiveness(t *testing.T) {
	budget, maxWrites := 2*time.Second, int64(5_000_000)
	if *loadLong {
		budget, maxWrites = 2*time.Minute, 500_000_000
	}
	if testing.Short() {
		budget, maxWrites = 500*time.Millisecond, 100_000
	}
	cfg := Config{
		Channels:           []string{"c0", "c1", "c2", "c3"},
		QueueCapacity:      256,
		FlushInterval:      time.Hour,
		FlushSize:          8 * 64, // 64 writes: deltas are frozen by size all the time
		MaxPendingFlushes:  2,
		SlowFlushThreshold: -1,
	}
	maxDeltas, maxSyncs := loadMaxDeltasPerDurableWait(cfg), loadMaxSyncsPerDurableWait()
	fl := &loadFlusher{next: 1}
	c, err := New(cfg, newLoadDelta, struct{}{}, uint64(0), Flusher[[]uint64, uint64](fl))
	require.NoError(t, err)
	stopAtCleanup(t, c, testDeadline)
	// A Durable wait begins when it is listed on the durable watermark:
	// note the FlushDelta calls made by then, per epoch. (Between the
	// waiter's call and that moment lies only the scheduler.)
	// Only the measured waits are noted: a measured waiter stores -1 for
	// its epoch before it waits.
	var listedAt sync.Map // epoch -> FlushDelta calls when its wait was listed
	parked := c.p.marks.durable.parked
	c.p.marks.durable.parked = func(e uint64) {
		listedAt.CompareAndSwap(e, int64(-1), fl.deltas.Load())
		parked(e)
	}
	c.Start()

	// run ends the load; calls that must complete get their own deadline.
	run, endRun := context.WithTimeout(context.Background(), budget)
	defer endRun()
	deadline := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), testDeadline)
	}
	var (
		res      loadResult
		nextID   atomic.Uint64
		accepted atomic.Int64
		wg       sync.WaitGroup
		counts   struct{ gaveUp, flushes, pauses atomic.Int64 }
	)
	// write queues one write on ch; false once the load is over. (Write
	// looks at its context only while it waits for room.)
	write := func(ch *Channel[uint64, struct{}]) (*WriteHandle[struct{}], bool) {
		if accepted.Load() >= maxWrites {
			endRun()
		}
		if run.Err() != nil {
			return nil, false
		}
		h, err := ch.Write(run, nextID.Add(1))
		if err != nil {
			if run.Err() == nil {
				res.check(t, "Write", err)
			}
			return nil, false
		}
		accepted.Add(1)
		return h, true
	}
	spawn := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}

	// Writers: two per channel, writing as fast as the queues take.
	for i := range 2 * len(cfg.Channels) {
		ch := c.Channel(cfg.Channels[i%len(cfg.Channels)])
		spawn(func() {
			for {
				if _, ok := write(ch); !ok {
					return
				}
			}
		})
	}

	// Durable waiters: write, wait until applied, then wait until durable
	// and count the flusher calls in between. A wait is measured from the
	// moment it is listed (after its write is applied, so time spent on a
	// paused channel does not count) to the start of the FlushStorage call
	// that made its write durable, read from the flusher's log: how soon the
	// waiter goroutine runs again afterwards is the scheduler's business.
	// Durable waits run to the end even after the load stopped.
	for i := range len(cfg.Channels) {
		ch := c.Channel(cfg.Channels[i])
		spawn(func() {
			for {
				h, ok := write(ch)
				if !ok {
					return
				}
				ctx, cancel := deadline()
				epoch, err := h.Epoch(ctx)
				if !res.check(t, "Epoch", err) {
					cancel()
					return
				}
				s0 := fl.syncs.Load()
				listedAt.Store(epoch, int64(-1))
				_, err = h.Wait(ctx, Durable)
				cancel()
				if !res.check(t, "Wait(Durable)", err) {
					return
				}
				d0, _ := listedAt.LoadAndDelete(epoch)
				if d0.(int64) < 0 {
					continue // durable before the wait was listed
				}
				i, sync, ok := fl.serving(epoch)
				if !assert.True(t, ok, "no FlushStorage call made epoch %d durable", epoch) {
					return
				}
				res.record(loadSpan{deltas: max(0, sync.deltas-d0.(int64)), syncs: max(0, int64(i+1)-s0)}, maxDeltas, maxSyncs)
			}
		})
	}

	// Waiters that give up: WaitFor Written or Durable, for an epoch just
	// ahead or far ahead, abandoned when a short context ends or when
	// canceled right after the wait began.
	for i := range 2 {
		rng := rand.New(rand.NewPCG(uint64(i), 8))
		spawn(func() {
			for run.Err() == nil {
				level := Written + Durability(rng.IntN(2))
				ahead := uint64(1 + rng.IntN(1000))
				if rng.IntN(4) == 0 {
					ahead = 1 << 40
				}
				epoch := c.Watermarks().Applied + ahead
				var err error
				if rng.IntN(2) == 0 {
					ctx, cancel := context.WithTimeout(run, time.Duration(rng.IntN(1000))*time.Microsecond)
					err = c.WaitFor(ctx, level, epoch)
					cancel()
				} else {
					// Canceled by another goroutine while it waits; a wait
					// that ignored it would keep the load from stopping.
					ctx, cancel := context.WithCancel(run)
					go func() {
						runtime.Gosched()
						cancel()
					}()
					err = c.WaitFor(ctx, level, epoch)
					cancel()
				}
				if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
					assert.NoError(t, err, "abandoned WaitFor(%v, %d)", level, epoch)
					return
				}
				counts.gaveUp.Add(1)
			}
		})
	}

	// The pauser pauses c3 while one write on c0 gets written, then resumes
	// it until one write on c3 is applied.
	spawn(func() {
		paused, other := c.Channel("c3"), c.Channel("c0")
		defer paused.Resume()
		for {
			paused.Pause()
			h, ok := write(other)
			if !ok {
				return
			}
			ctx, cancel := deadline()
			_, err := h.Wait(ctx, Written)
			cancel()
			if !res.check(t, "Wait(Written) while c3 is paused", err) {
				return
			}
			paused.Resume()
			counts.pauses.Add(1)
			if h, ok = write(paused); !ok {
				return
			}
			ctx, cancel = deadline()
			_, err = h.Wait(ctx, Applied)
			cancel()
			if !res.check(t, "Wait(Applied) after Resume", err) {
				return
			}
		}
	})

	// The flush caller flushes at each level in turn, then lets
	// loadFlushEvery writes be applied before the next.
	spawn(func() {
		for i := 0; run.Err() == nil; i++ {
			level := Applied + Durability(i%3)
			ctx, cancel := deadline()
			_, err := c.Flush(ctx, level)
			cancel()
			if !res.check(t, fmt.Sprintf("Flush(%v)", level), err) {
				return
			}
			counts.flushes.Add(1)
			if err := c.WaitFor(run, Applied, c.Watermarks().Applied+loadFlushEvery); err != nil {
				if run.Err() == nil {
					res.check(t, "WaitFor(Applied) between flushes", err)
				}
				return
			}
		}
	})

	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	awaitFor(t, budget+testDeadline, "the load's goroutines to stop", done)

	stopCtx, cancel := deadline()
	defer cancel()
	var stopErr error
	within(t, "Stop", func() { stopErr = c.Stop(stopCtx) })

	st := c.Stats()
	t.Logf("%d writes accepted, %d Durable waits, %d waits abandoned, %d explicit flushes, %d pauses; "+
		"%d FlushDelta and %d FlushStorage calls (syncs %d, deltas frozen %v)",
		accepted.Load(), res.waits, counts.gaveUp.Load(), counts.flushes.Load(), counts.pauses.Load(),
		fl.deltas.Load(), fl.syncs.Load(), st.Syncs, st.Flushes)
	t.Logf("largest Durable wait: %d FlushDelta calls (and %d FlushStorage); %d FlushStorage calls (and %d FlushDelta); "+
		"%d waits beyond the bounds of %d FlushDelta and %d FlushStorage calls",
		res.maxDeltas.deltas, res.maxDeltas.syncs, res.maxSyncs.syncs, res.maxSyncs.deltas, res.over, maxDeltas, maxSyncs)

	require.NoError(t, stopErr, "Stop")
	require.Zero(t, fl.bad.Load(), "deltas out of order or of the wrong length")
	wm := c.Watermarks()
	require.Equal(t, uint64(accepted.Load()), wm.Durable, "durable watermark after Stop; watermarks %+v", wm)
	require.Positive(t, res.waits, "Durable waits")
	require.LessOrEqual(t, res.maxDeltas.deltas, maxDeltas, "FlushDelta calls during one Durable wait")
	require.LessOrEqual(t, res.maxSyncs.syncs, maxSyncs, "FlushStorage calls during one Durable wait")
}
