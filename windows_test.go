package coordinator

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// Tests that hold a race window open: each sets up, step by step, the
// interleaving in which a check that looks redundant is the one that keeps
// a guarantee, so that dropping or inverting the check fails every run.

// A write that arrives while its channel is being delisted (after the
// writer found the channel still listed, so it did not list it) is applied:
// delist looks at the queue again after clearing the mark.
func TestWindowWriteAsChannelIsDelisted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.Channels = []string{"busy", "idle"}
		c := newTestCoordinator(t, cfg, testContext{}, newTestFlusher())
		busy, idle := c.Channel("busy"), c.Channel("idle")
		ctx := t.Context()

		type delisted struct {
			late        *WriteHandle[struct{}]
			err         error
			stillListed bool // the writer found the channel listed
		}
		hooked := make(chan delisted, 1)
		// Set before Start, run by the coordinator goroutine.
		c.delisting = func(name string) {
			if name != "idle" || len(hooked) > 0 {
				return
			}
			d := delisted{stillListed: idle.q.listed.Load()}
			d.late, d.err = idle.TryWrite(w("late", 1, 1))
			hooked <- d
		}
		c.Start()

		h, err := idle.Write(ctx, w("first", 1, 1))
		require.NoError(t, err)
		_, err = h.Wait(ctx, Applied)
		require.NoError(t, err)
		// Rounds go on while the other channel is busy; the idle one is
		// delisted after idleRoundsToDelist of them.
		var d delisted
		for i := 0; ; i++ {
			select {
			case d = <-hooked:
			default:
				require.Less(t, i, 10*idleRoundsToDelist, "the idle channel was never delisted while the other one worked")
				h, err := busy.Write(ctx, w(fmt.Sprint("b", i), 1, 1))
				require.NoError(t, err)
				_, err = h.Wait(ctx, Applied)
				require.NoError(t, err)
				continue
			}
			break
		}
		require.True(t, d.stillListed, "the channel is still marked listed when delist begins")
		require.NoError(t, d.err)
		late := d.late
		// A stranded write would wait for the next write to that channel:
		// a minute of the bubble's clock is long enough to tell.
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		_, err = late.Wait(wctx, Applied)
		require.NoError(t, err, "the write made as its channel was delisted")
	})
}

// A writer that was granted a slot and is waiting for byte budget holds
// that slot: a further write to the full channel is refused as full, not
// admitted beyond QueueCapacity.
func TestWindowGrantedSlotHeldWhileWaitingForBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, x, y, waiting := startBudgetWaiter(t, 1)
		ctx := t.Context()
		// The writer has y's only slot and waits for bytes.
		_, err := y.TryWrite(regSW("one-too-many", 0))
		require.ErrorIs(t, err, ErrBackpressure)
		st := channelStats(t, c.Stats(), "y")
		require.Equal(t, uint64(1), st.RejectedFull, "refused because the slot is taken")
		require.Zero(t, st.RejectedBudget)
		require.Zero(t, st.Accepted, "y accepted nothing yet: its one slot is held by the writer waiting for bytes")

		x.Resume() // the held bytes are applied, frozen for the budget and released
		r := <-waiting
		require.NoError(t, r.err)
		_, err = r.h.Wait(ctx, Applied)
		require.NoError(t, err)
	})
}

type budgetWaiterResult struct {
	h   *WriteHandle[struct{}]
	err error
}

// startBudgetWaiter starts a coordinator with channels x and y, each of
// queueCapacity slots, and a byte budget of 10, of which x (paused) holds 8,
// and a writer of 8 bytes to y; it returns once that writer waits for bytes.
// The writer's result arrives on waiting.
func startBudgetWaiter(t *testing.T, queueCapacity int) (c *regSizedCoordinator, x, y *Channel[regSizedWrite, struct{}], waiting <-chan budgetWaiterResult) {
	cfg := testConfig()
	cfg.Channels = []string{"x", "y"}
	cfg.QueueCapacity = queueCapacity
	cfg.MaxBytes = 10
	c = newRegSized(t, cfg, newRegFlusher())
	x, y = c.Channel("x"), c.Channel("y")
	c.Start()
	x.Pause()
	_, err := x.Write(t.Context(), regSW("holds-bytes", 8))
	require.NoError(t, err)
	result := make(chan budgetWaiterResult, 1)
	go func() {
		h, err := y.Write(t.Context(), regSW("waits-for-bytes", 8))
		result <- budgetWaiterResult{h, err}
	}()
	synctest.Wait()
	return c, x, y, result
}

func channelStats(t testing.TB, s Stats, name string) ChannelStats {
	t.Helper()
	for _, cs := range s.Channels {
		if cs.Name == name {
			return cs
		}
	}
	t.Fatalf("no stats for channel %q", name)
	return ChannelStats{}
}

// Under SyncAlways a pass of the flusher with nothing newly written does
// not sync: a Durable waiter that kicked the flusher during the sync that
// serves it costs no second FlushStorage.
func TestWindowSyncAlwaysSkipsAPassWithNothingWritten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.Sync = SyncAlways
		cfg.FlushSize = 1 // every write is frozen at once
		c, f, syncStarted, release := regBlockedFirstSync(t, cfg)
		ch := c.Channel(defaultChannel)
		ctx := t.Context()

		h, err := ch.Write(ctx, w("k", 1, 1))
		require.NoError(t, err)
		<-syncStarted // written, and SyncAlways syncs it
		require.Equal(t, uint64(1), c.Watermarks().Written)
		done := make(chan error, 1)
		go func() {
			_, err := h.Wait(ctx, Durable) // written already: kicks the flusher
			done <- err
		}()
		synctest.Wait()
		release()
		require.NoError(t, <-done)
		synctest.Wait() // the flusher takes the kick and goes idle
		require.Equal(t, int64(1), f.storageCalls.Load(), "FlushStorage calls")
		require.Equal(t, uint64(1), c.Watermarks().Durable)
	})
}

// A waiter the watermark unlisted (it is satisfied, its wake-up not yet
// sent) whose context ends before the wake-up arrives reports success: the
// epoch was reached, whatever the context says.
func TestWindowSatisfiedWaiterWhoseContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var m watermark
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- m.wait(ctx, Durable, 5) }()
		synctest.Wait()

		satisfied := m.raise(5) // unlisted, not woken yet
		require.Equal(t, 1, satisfied.n)
		cancel()
		synctest.Wait() // the waiter saw its context end and waits for the wake-up
		select {
		case err := <-done:
			t.Fatalf("wait returned %v before the wake-up of the raise that unlisted it", err)
		default:
		}
		require.Equal(t, 1, satisfied.wake())
		require.NoError(t, <-done, "the epoch was reached before the context ended")

		// And a waiter whose context ends before the epoch is reached
		// reports the context's error.
		ctx2, cancel2 := context.WithCancel(t.Context())
		go func() { done <- m.wait(ctx2, Durable, 6) }()
		synctest.Wait()
		cancel2()
		require.ErrorIs(t, <-done, context.Canceled)
		require.Zero(t, m.nwait.Load(), "the waiter that gave up is unlisted")
	})
}

// minWait and maxWait are the smallest and largest epoch a listed waiter
// waits for, exactly, as waiters come and go.
func TestWatermarkBoundsFollowTheListedWaiters(t *testing.T) {
	m := watermark{trackMax: true}
	ws := map[uint64]*waiter{}
	bounds := func(lo, hi uint64, what string) {
		t.Helper()
		require.Equal(t, lo, m.minWait.Load(), "minWait %s", what)
		require.Equal(t, hi, m.maxWait.Load(), "maxWait %s", what)
	}
	for _, e := range []uint64{5, 3, 9, 7, 1, 8} {
		w := m.pool.get()
		require.True(t, m.list(w, e))
		ws[e] = w
	}
	bounds(1, 9, "with 1 3 5 7 8 9 listed")
	require.True(t, m.unlist(ws[9]))
	bounds(1, 8, "after 9 left")
	require.True(t, m.unlist(ws[1]))
	bounds(3, 8, "after 1 left")
	require.True(t, m.unlist(ws[8]))
	bounds(3, 7, "after 8 left")

	woken := m.raise(4)
	require.Equal(t, 1, woken.n, "waiters 4 satisfies")
	require.Same(t, ws[3], woken.head)
	bounds(5, 7, "after the raise to 4")
	require.False(t, m.unlist(ws[3]), "a waiter the raise unlisted")

	woken = m.raise(7)
	require.Equal(t, 2, woken.n)
	bounds(0, 0, "with nobody listed")
	require.Zero(t, m.nwait.Load())
}

// The count of Flush callers that the coordinator serves between turns
// returns to zero once they leave, whether served or given up: a count
// left raised would have the coordinator look for requests after every
// turn from then on.
func TestFlushCallersLeaveNoAttention(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _, syncStarted, release := regBlockedFirstSync(t, testConfig())
		ch := c.Channel(defaultChannel)
		ctx := t.Context()

		_, err := ch.Write(ctx, w("k", 1, 1))
		require.NoError(t, err)
		_, err = c.Flush(ctx, Applied)
		require.NoError(t, err)
		require.Zero(t, c.p.attn.Load(), "after a served Flush(Applied)")

		// A Flush(Durable) that gives up while the sync runs.
		gaveUp, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, err := c.Flush(gaveUp, Durable)
			done <- err
		}()
		<-syncStarted
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
		require.Zero(t, c.p.attn.Load(), "after a Flush(Durable) that gave up")
		release()
		_, err = c.Flush(ctx, Durable)
		require.NoError(t, err)
		require.Zero(t, c.p.attn.Load(), "after a served Flush(Durable)")
	})
}

// Closing one channel ends the wait for byte budget of that channel's
// writers only; the others keep their place in line.
func TestBudgetCancelEndsOnlyTheOwnersWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &budget{max: 10, p: &pipeline{}}
		require.True(t, b.tryAcquire(10))
		ctx := t.Context()
		results := map[string]chan bool{"a": make(chan bool, 1), "b": make(chan bool, 1)}
		for _, owner := range []string{"a", "b"} {
			go func() { results[owner] <- b.acquire(ctx, 5, owner) }()
			synctest.Wait() // listed in this order
		}
		b.cancel("a")
		synctest.Wait()
		select {
		case ok := <-results["a"]:
			require.False(t, ok, "a's wait ends without bytes")
		default:
			t.Fatal("cancel(a) did not end a's wait")
		}
		select {
		case ok := <-results["b"]:
			t.Fatalf("cancel(a) ended b's wait (granted %v)", ok)
		default:
		}
		require.Equal(t, int32(1), b.nblocked.Load(), "b still waits")
		b.release(10)
		require.True(t, <-results["b"], "b is granted its bytes once they are released")
	})
}

// Stop refuses the writers blocked for room and leaves none counted as
// blocked: the count is what tells the coordinator to admit writers after
// each turn and refuses newcomers their turn ahead of them.
func TestStopRefusesBlockedWritersAndForgetsThem(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.QueueCapacity = 1
		c := newTestCoordinator(t, cfg, testContext{}, newTestFlusher())
		ch := c.Channel(defaultChannel)
		c.Start()
		ctx := t.Context()
		ch.Pause()
		_, err := ch.Write(ctx, w("fills", 1, 1))
		require.NoError(t, err)
		errs := make(chan error, 2)
		for i := range 2 {
			go func() {
				_, err := ch.Write(ctx, w(fmt.Sprint("blocked", i), 1, 1))
				errs <- err
			}()
		}
		synctest.Wait()
		require.Equal(t, int32(2), ch.q.nblocked.Load(), "writers blocked for room")
		require.NoError(t, c.Stop(ctx))
		for range 2 {
			require.ErrorIs(t, <-errs, ErrClosed)
		}
		require.Zero(t, ch.q.nblocked.Load(), "writers counted as blocked after Stop")
	})
}

// A raise to the value the watermark already has, or below it, is not an
// advance: the advanced hook, which checks what must hold once the value
// rose, runs once per rise.
func TestWatermarkRaiseOnlyWhenItRises(t *testing.T) {
	var m watermark
	var rises []uint64
	m.advanced = func(e uint64) { rises = append(rises, e) }
	for _, e := range []uint64{3, 3, 2, 5, 5, 4, 6} {
		m.raise(e).wake()
	}
	require.Equal(t, []uint64{3, 5, 6}, rises)
	require.Equal(t, uint64(6), m.Load())
}

// A wait for Durable that parks before its write is applied parks once:
// the coordinator lists it on the durable watermark as it completes the
// handle, rather than waking it to list itself. Run on one processor, so
// that a waiter woken instead could not have listed itself by the time
// the coordinator checks.
func TestDurableWaitParkedOnTheHandleMovesToTheWatermark(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for _, level := range []Durability{Written, Durable} {
		t.Run(level.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c := newTestCoordinator(t, testConfig(), testContext{}, newTestFlusher())
				ch := c.Channel(defaultChannel)
				mark := c.p.marks.get(level)
				var listedAtCompletion []int32
				c.handleDone = func() { listedAtCompletion = append(listedAtCompletion, mark.nwait.Load()) }
				c.Start()
				ctx := t.Context()
				ch.Pause()
				h, err := ch.Write(ctx, w("k", 1, 1))
				require.NoError(t, err)
				done := make(chan error, 1)
				go func() {
					_, err := h.Wait(ctx, level)
					done <- err
				}()
				synctest.Wait() // parked on the handle
				require.Zero(t, mark.nwait.Load())
				ch.Resume()
				require.NoError(t, <-done)
				require.Equal(t, []int32{1}, listedAtCompletion, "waiters listed at %v as the handle completed", level)
			})
		})
	}
}

// epochMostlyInOrder returns *next and increments it, or, one time in
// four, an epoch above low that is below *next.
func epochMostlyInOrder(rng *rand.Rand, next *uint64, low uint64) uint64 {
	if gap := *next - low - 1; gap > 0 && rng.IntN(4) == 0 {
		return low + 1 + rng.Uint64N(gap)
	}
	*next++
	return *next - 1
}

// The waiters' heap against a sorted list: pushes in and out of order,
// removals of the smallest and of any entry.
func TestWaitHeapAgainstASortedList(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var h waitHeap
		var ref []uint64 // sorted epochs in h
		ws := map[*waiter]uint64{}
		next := uint64(1)
		for step := range 300 {
			switch op := rng.IntN(10); {
			case op < 5: // push, mostly in epoch order
				e := epochMostlyInOrder(rng, &next, 0)
				w := &waiter{epoch: e}
				ws[w] = e
				h.push(waitEntry{e, w})
				i, _ := slices.BinarySearch(ref, e)
				ref = slices.Insert(ref, i, e)
			case op < 7 && len(h) > 0: // pop the smallest
				e := h.removeAt(0)
				require.Equal(t, ref[0], e.epoch, "round %d step %d: smallest", round, step)
				ref = ref[1:]
				delete(ws, e.w)
			case len(h) > 0: // remove any
				var w *waiter
				for w = range ws {
					break
				}
				e := h.removeAt(h.indexOf(w))
				require.Same(t, w, e.w)
				i, found := slices.BinarySearch(ref, e.epoch)
				require.True(t, found)
				ref = slices.Delete(ref, i, i+1)
				delete(ws, w)
			}
			require.Len(t, h, len(ref))
			if len(ref) > 0 {
				require.Equal(t, ref[0], h[0].epoch, "round %d step %d: top", round, step)
				require.Equal(t, ref[len(ref)-1], h.maxEpoch(), "round %d step %d: max", round, step)
			} else {
				require.Zero(t, h.maxEpoch())
			}
		}
	}
}

// Stop refuses a writer waiting for byte budget without counting bytes it
// never got: once everything is written, the budget is back at zero.
func TestStopRefusesBudgetWaitersWithoutReleasingTheirBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _, _, refused := startBudgetWaiter(t, 100)
		require.Equal(t, int64(8), c.Stats().BudgetBytes)
		require.NoError(t, c.Stop(t.Context()))
		require.ErrorIs(t, (<-refused).err, ErrClosed)
		require.Zero(t, c.Stats().BudgetBytes, "budget after Stop")
	})
}

// A wait whose context has already ended asks for nothing: it is never
// listed, so it neither wakes the coordinator for a freeze nor the flusher
// for a sync, and reports the context's error.
func TestWaitAlreadyGivenUpAsksForNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTestCoordinator(t, testConfig(), testContext{}, newTestFlusher())
		ch := c.Channel(defaultChannel)
		var listed []string
		for _, level := range []Durability{Written, Durable} {
			mark := c.p.marks.get(level)
			demand := mark.parked
			mark.parked = func(e uint64) {
				listed = append(listed, fmt.Sprintf("%v@%d", level, e))
				demand(e)
			}
		}
		c.Start()
		h, err := ch.Write(t.Context(), w("k", 1, 1))
		require.NoError(t, err)
		_, err = h.Wait(t.Context(), Applied)
		require.NoError(t, err)

		ended, cancel := context.WithCancel(t.Context())
		cancel()
		for _, level := range []Durability{Written, Durable} {
			_, err := h.Wait(ended, level)
			require.ErrorIs(t, err, context.Canceled, "Wait(%v)", level)
			_, err = c.Flush(ended, level)
			require.ErrorIs(t, err, context.Canceled, "Flush(%v)", level)
		}
		synctest.Wait()
		require.Empty(t, listed, "waits listed as demand")
		require.Zero(t, c.Stats().Flushes.Total(), "freezes")
		require.Zero(t, c.p.syncReq.Load(), "sync requests")
		require.Equal(t, Watermarks{Applied: 1}, c.Watermarks())
	})
}

// A waiter is not listed for an epoch the watermark has reached, nor on a
// failed watermark: nothing would raise the watermark to that epoch again
// to wake it.
func TestWatermarkDoesNotListAReachedEpoch(t *testing.T) {
	var m watermark
	m.raise(5)
	w := m.pool.get()
	require.False(t, m.list(w, 5), "epoch 5 at 5")
	require.False(t, m.list(w, 4), "epoch 4 at 5")
	require.Zero(t, m.nwait.Load())
	require.True(t, m.list(w, 6), "epoch 6 at 5")
	require.Equal(t, int32(1), m.nwait.Load())
	m.fail(errors.New("disk on fire"))
	require.Zero(t, m.nwait.Load(), "fail unlists every waiter")
	w2 := m.pool.get()
	require.False(t, m.list(w2, 7), "on a failed watermark")
	require.Zero(t, m.nwait.Load())
}

// A raise wakes exactly the listed waiters it satisfies, whether they were
// listed in epoch order (it then takes them as a prefix of the sorted
// array) or not (it pops them from the heap), and leaves the bounds right.
// Checked against a reference set over random listings, mostly in order,
// departures and raises.
func TestRaiseWakesExactlyTheSatisfiedWaiters(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	sortedRaises := 0
	for round := range 200 {
		m := watermark{trackMax: round%2 == 0}
		listed := map[*waiter]bool{}
		next := uint64(1)
		for step := range 200 {
			switch op := rng.IntN(10); {
			case op < 6: // list, mostly in epoch order
				e := epochMostlyInOrder(rng, &next, m.Load())
				w := m.pool.get()
				require.True(t, m.list(w, e), "round %d step %d: list %d at %d", round, step, e, m.Load())
				listed[w] = true
			case op < 7 && len(listed) > 0: // a waiter gives up
				for w := range listed {
					require.True(t, m.unlist(w))
					delete(listed, w)
					break
				}
			default: // raise
				v := m.Load() + rng.Uint64N(next-m.Load()+1)
				if !m.unsorted {
					sortedRaises++
				}
				l := m.raise(v)
				next = max(next, v+1)
				var last uint64
				for w := l.head; w != nil; w = w.next {
					require.True(t, listed[w], "round %d step %d: woke a waiter that was not listed", round, step)
					require.LessOrEqual(t, w.epoch, v, "round %d step %d: woke epoch %d at %d", round, step, w.epoch, v)
					require.False(t, w.listed)
					if !m.trackMax {
						require.GreaterOrEqual(t, w.epoch, last, "round %d step %d: woken in epoch order", round, step)
					}
					last = w.epoch
					delete(listed, w)
				}
				for w := range listed {
					require.Greater(t, w.epoch, v, "round %d step %d: epoch %d left listed at %d", round, step, w.epoch, v)
				}
			}
			var lo, hi uint64
			for w := range listed {
				if lo == 0 || w.epoch < lo {
					lo = w.epoch
				}
				hi = max(hi, w.epoch)
			}
			require.Equal(t, int32(len(listed)), m.nwait.Load(), "round %d step %d: nwait", round, step)
			if len(listed) == 0 {
				require.False(t, m.unsorted, "round %d step %d: sorted again once empty", round, step)
			}
			require.Equal(t, lo, m.minWait.Load(), "round %d step %d: minWait", round, step)
			if m.trackMax {
				require.Equal(t, hi, m.maxWait.Load(), "round %d step %d: maxWait", round, step)
			}
		}
	}
	require.Greater(t, sortedRaises, 1000, "raises that took a sorted prefix")
}

// Listings that each come below the last one leave the heap unsorted from
// the third on ([1, 5, 3]): a raise must still find every satisfied waiter.
func TestRaiseAfterListingsInReverseOrder(t *testing.T) {
	var m watermark
	ws := map[uint64]*waiter{}
	for _, e := range []uint64{5, 3, 1} {
		ws[e] = m.pool.get()
		require.True(t, m.list(ws[e], e))
	}
	l := m.raise(3)
	var woken []uint64
	for w := l.head; w != nil; w = w.next {
		woken = append(woken, w.epoch)
	}
	require.ElementsMatch(t, []uint64{1, 3}, woken)
	require.Equal(t, uint64(5), m.minWait.Load())
	require.True(t, ws[5].listed)
}
