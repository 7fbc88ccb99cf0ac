package coordinator

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"unsafe"
	"weak"
)

// Overload soak: writers offer far more than a slow flusher can absorb, in
// a synctest bubble where the flusher's sleeps are fake time and cost
// nothing, so the writers outrun it as fast as the CPU lets them. The test
// checks that backpressure holds, that memory stays within the bound
// computed from MaxBytes, that no accepted write is lost, and that the
// coordinator serves new writes once the load drops. It asserts no timing.

var soakLong = flag.Bool("soak.long", false, "run the overload soak with many more writes")

// soakPayload is the size of every write; soakWrite.Size reports it.
const soakPayload = 1024

// soakWrite carries a payload whose bytes derive from id, so the flusher
// can check it arrived intact.
type soakWrite struct {
	id      uint32
	payload []byte
}

// Size is the payload length, charged against Config.MaxBytes.
func (w soakWrite) Size() int { return len(w.payload) }

func soakMakeWrite(id uint32) soakWrite {
	p := make([]byte, soakPayload)
	for i := range p {
		p[i] = byte(id) + byte(i)
	}
	return soakWrite{id: id, payload: p}
}

func soakIntact(w soakWrite) bool {
	if len(w.payload) != soakPayload {
		return false
	}
	for i, b := range w.payload {
		if b != byte(w.id)+byte(i) {
			return false
		}
	}
	return true
}

// soakDelta holds the writes applied to it: their payloads are what the
// byte budget bounds. Its view counts them.
type soakDelta struct {
	writes  []soakWrite
	size    int
	applied *atomic.Int64 // shared by every delta: writes applied so far
	count   *atomic.Int64 // this delta's writes, for its reader
}

func newSoakDelta(applied *atomic.Int64) *soakDelta {
	return &soakDelta{applied: applied, count: new(atomic.Int64)}
}

// Apply keeps w.
func (d *soakDelta) Apply(w soakWrite) (struct{}, error) {
	d.writes = append(d.writes, w)
	d.size += w.Size()
	d.count.Add(1)
	d.applied.Add(1)
	return struct{}{}, nil
}

// EstimateSize is the payload bytes held.
func (d *soakDelta) EstimateSize() int { return d.size }

// Freeze hands over the writes; the next delta shares the applied counter.
func (d *soakDelta) Freeze() ([]soakWrite, int, *atomic.Int64) {
	return d.writes, len(d.writes), d.applied
}

// Reader counts the writes of this delta.
func (d *soakDelta) Reader() *atomic.Int64 { return d.count }

// soakFlusher records the epoch of every write by id (in a slice allocated
// up front, so that storage does not grow the heap while it is measured)
// and sleeps delay per call.
type soakFlusher struct {
	delay   time.Duration
	epochs  []atomic.Uint64 // by write id; 0 if not written
	flushed atomic.Int64    // payload bytes written
	bad     atomic.Int64    // writes that arrived damaged, or epochs that do not match
}

// FlushDelta sleeps, checks the writes and records their epochs.
func (f *soakFlusher) FlushDelta(ctx context.Context, frozen []soakWrite, epochs EpochRange) (int, error) {
	time.Sleep(f.delay)
	if uint64(len(frozen)) != epochs.Len() {
		f.bad.Add(1)
	}
	var bytes int64
	for i, w := range frozen {
		if !soakIntact(w) || int(w.id) >= len(f.epochs) || !f.epochs[w.id].CompareAndSwap(0, epochs.Start+uint64(i)) {
			f.bad.Add(1)
			continue
		}
		bytes += int64(w.Size())
	}
	f.flushed.Add(bytes)
	return len(frozen), nil
}

// FlushStorage sleeps half the delay.
func (f *soakFlusher) FlushStorage(ctx context.Context) error {
	time.Sleep(f.delay / 2)
	return nil
}

// soakBound is the memory bound of the soak's configuration, above the
// heap measured before the writers start:
//
//	MaxBytes                                    writes accepted and not yet written
//	+ channels × QueueCapacity × (3 × op + handle + payload)
//	                                            queue buffers (items, spare, held) and
//	                                            the handles their slots keep; held slots
//	                                            keep their payload until the channel's next
//	                                            take, after the budget was released
//	+ (MaxBytes / payload) × 2 × sizeof(write)  delta slices (append doubles)
//	+ writers × payload                         payloads built, not yet accepted
//	+ slack                                     views, timers, waiters, runtime
func soakBound(cfg Config, writers int) (bound int64, formula string) {
	const slack = 512 << 10
	op := int64(unsafe.Sizeof(op[soakWrite, struct{}]{}))
	handle := int64(unsafe.Sizeof(WriteHandle[struct{}]{}))
	write := int64(unsafe.Sizeof(soakWrite{}))
	perSlot := 3*op + handle + soakPayload
	slots := int64(len(cfg.Channels) * cfg.QueueCapacity)
	inDeltas := cfg.MaxBytes / soakPayload * 2 * write
	bound = cfg.MaxBytes + slots*perSlot + inDeltas + int64(writers)*soakPayload + slack
	formula = fmt.Sprintf("MaxBytes %d + %d slots × (3×%d + %d + %d) + %d + %d writers × %d + slack %d",
		cfg.MaxBytes, slots, op, handle, soakPayload, inDeltas, writers, soakPayload, slack)
	return bound, formula
}

func soakHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// TestSoakOverload drives writers much faster than the flusher, with a
// byte budget, and checks backpressure, the memory bound, that no write is
// lost, and recovery.
func TestSoakOverload(t *testing.T) {
	total := 20_000
	if *soakLong {
		total = 500_000
	}
	if testing.Short() {
		total = 5_000
	}
	// Deltas frozen by size, or only when writers starve for budget.
	for _, flushSize := range []int{256 << 10, 64 << 20} {
		t.Run(fmt.Sprintf("FlushSize=%d", flushSize), func(t *testing.T) { soakOverload(t, total, flushSize) })
	}
}

func soakOverload(t *testing.T, total, flushSize int) {
	const perChannel = 4
	synctest.Test(t, func(t *testing.T) {
		cfg := Config{
			Channels:           []string{"c0", "c1", "c2"},
			QueueCapacity:      64,
			FlushInterval:      time.Hour,
			FlushSize:          flushSize,
			MaxPendingFlushes:  2,
			MaxBytes:           1 << 20,
			SlowFlushThreshold: -1,
		}
		writers := perChannel * len(cfg.Channels)
		recovery := 100 * len(cfg.Channels)
		fl := &soakFlusher{delay: 10 * time.Millisecond, epochs: make([]atomic.Uint64, total+recovery)}
		accepted := make([]atomic.Bool, total+recovery)
		var applied atomic.Int64
		c, err := New(cfg, newSoakDelta, &applied, 0, Flusher[[]soakWrite, int](fl))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		stopAtCleanup(t, c, 24*time.Hour) // fake time
		c.Start()
		ctx, cancel := context.WithTimeout(t.Context(), 24*time.Hour) // fake time: only a hang reaches it
		defer cancel()

		base := soakHeap()
		bound, formula := soakBound(cfg, writers)

		var (
			next, acceptedBytes, tryRejects, inWrite atomic.Int64
			finished                                 = make(chan struct{}, writers)
		)
		for i := range writers {
			ch := c.Channel(cfg.Channels[i%len(cfg.Channels)])
			go func() {
				defer func() { finished <- struct{}{} }()
				for n := 0; ; n++ {
					id := next.Add(1) - 1
					if id >= int64(total) {
						return
					}
					wr := soakMakeWrite(uint32(id))
					var err error
					if n%2 == 0 {
						if _, err = ch.TryWrite(wr); errors.Is(err, ErrBackpressure) {
							tryRejects.Add(1)
						}
					}
					if n%2 == 1 || err != nil {
						inWrite.Add(1)
						_, err = ch.Write(ctx, wr)
						inWrite.Add(-1)
					}
					if err != nil {
						t.Errorf("Write(%d) = %v", id, err)
						return
					}
					accepted[id].Store(true)
					acceptedBytes.Add(soakPayload)
				}
			}()
		}

		// The sampler wakes in fake time, which passes only when every
		// goroutine is blocked; synctest.Wait then makes sure none is
		// between two steps, so the counters below are exact.
		var (
			peak, samples, blockedSamples int64
			budgetErrs                    []string
			stopSampler, samplerDone      = make(chan struct{}), make(chan struct{})
		)
		go func() {
			defer close(samplerDone)
			for {
				select {
				case <-stopSampler:
					return
				case <-time.After(20 * time.Millisecond):
				}
				synctest.Wait()
				samples++
				peak = max(peak, soakHeap()-base)
				if inWrite.Load() > 0 {
					blockedSamples++
				}
				st := c.Stats()
				held := acceptedBytes.Load() - fl.flushed.Load()
				if st.BudgetBytes != held || st.BudgetBytes > cfg.MaxBytes {
					budgetErrs = append(budgetErrs, fmt.Sprintf("budget %d of %d; writes accepted and not written hold %d bytes",
						st.BudgetBytes, cfg.MaxBytes, held))
				}
			}
		}()
		for range writers {
			<-finished
		}
		close(stopSampler)
		<-samplerDone

		st := c.Stats()
		var rejectedFull, rejectedBudget uint64
		for _, cs := range st.Channels {
			rejectedFull += cs.RejectedFull
			rejectedBudget += cs.RejectedBudget
		}
		var reasons []string
		for r, n := range st.Flushes.All() {
			if n > 0 {
				reasons = append(reasons, fmt.Sprintf("%v=%d", r, n))
			}
		}
		t.Logf("%d writes by %d writers: %d TryWrite rejections (%d queue full, %d budget), %d samples, "+
			"%d with writers blocked in Write, deltas frozen %v, fake time %v",
			total, writers, tryRejects.Load(), rejectedFull, rejectedBudget, samples, blockedSamples,
			reasons, time.Since(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)))
		t.Logf("heap peak %d bytes above the %d-byte baseline; bound %d = %s", peak, base, bound, formula)
		if tryRejects.Load() == 0 || rejectedFull+rejectedBudget != uint64(tryRejects.Load()) {
			t.Errorf("TryWrite rejections: %d counted by writers, %d by Stats; want some, and equal",
				tryRejects.Load(), rejectedFull+rejectedBudget)
		}
		if blockedSamples == 0 {
			t.Errorf("no sample saw a writer blocked in Write; want backpressure to block Write")
		}
		if samples == 0 || peak > bound {
			t.Errorf("heap peak %d bytes over %d samples; want within the bound %d", peak, samples, bound)
		}
		for i, e := range budgetErrs {
			if i == 5 {
				t.Errorf("... and %d more budget errors", len(budgetErrs)-5)
				break
			}
			t.Errorf("budget accounting: %s", e)
		}

		// The load drops: a round of writes on every channel goes through
		// and becomes durable.
		var hs []*WriteHandle[struct{}]
		for i := range recovery {
			id := total + i
			h, err := c.Channel(cfg.Channels[i%len(cfg.Channels)]).Write(ctx, soakMakeWrite(uint32(id)))
			if err != nil {
				t.Fatalf("recovery Write(%d) = %v", id, err)
			}
			accepted[id].Store(true)
			hs = append(hs, h)
		}
		for i, h := range hs {
			if _, err := h.Wait(ctx, Durable); err != nil {
				t.Fatalf("recovery write %d: Wait(Durable) = %v", i, err)
			}
		}

		if err := c.Stop(ctx); err != nil {
			t.Fatalf("Stop() = %v", err)
		}
		if n := fl.bad.Load(); n != 0 {
			t.Errorf("flusher saw %d damaged, duplicated or misnumbered writes", n)
		}
		seen := make([]bool, total+recovery+1)
		for id := range accepted {
			e := fl.epochs[id].Load()
			switch {
			case !accepted[id].Load():
				t.Errorf("write %d was never accepted", id)
			case e == 0 || e > uint64(total+recovery):
				t.Errorf("accepted write %d is not in storage (epoch %d)", id, e)
			case seen[e]:
				t.Errorf("epoch %d stored twice", e)
			default:
				seen[e] = true
			}
		}
		if wm := c.Watermarks(); wm.Durable != uint64(total+recovery) || applied.Load() != int64(total+recovery) {
			t.Errorf("after Stop: watermarks %+v, %d applied; want all %d durable", wm, applied.Load(), total+recovery)
		}
	})
}

// TestSoakWrittenWritesAreReleased checks that the coordinator keeps no
// reference to a write once it is written: otherwise memory is not bounded
// by MaxBytes, which only counts writes until they are written.
func TestSoakWrittenWritesAreReleased(t *testing.T) {
	fl := &soakFlusher{epochs: make([]atomic.Uint64, 2)}
	var applied atomic.Int64
	c, err := New(Config{MaxBytes: 4 << 20, FlushInterval: time.Hour}, newSoakDelta, &applied, 0, Flusher[[]soakWrite, int](fl))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	stopAtCleanup(t, c, testDeadline)
	c.Start()
	ctx := deadlineCtx(t)
	ch := c.Channel("default")
	// write queues a 1 MiB payload and returns a weak pointer to it.
	write := func(id uint32) weak.Pointer[[1 << 20]byte] {
		p := new([1 << 20]byte)
		h, err := ch.Write(ctx, soakWrite{id: id, payload: p[:soakPayload:soakPayload]})
		if err != nil {
			t.Fatalf("Write = %v", err)
		}
		if _, err := h.Wait(ctx, Durable); err != nil {
			t.Fatalf("Wait(Durable) = %v", err)
		}
		return weak.Make(p)
	}
	first := write(0)
	runtime.GC()
	runtime.GC()
	if first.Value() != nil {
		t.Errorf("a durable write's payload is still reachable while its channel is idle")
		write(1)
		runtime.GC()
		runtime.GC()
		t.Logf("after the channel's next write, the first payload is released: %v", first.Value() == nil)
	}
}
