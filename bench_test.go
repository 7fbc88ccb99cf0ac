package coordinator

// Benchmarks of the write path. Every workload writes 8-byte keys and
// 100-byte values into a map-backed delta. Each benchmark runs the
// coordinator and one or more baselines as sibling sub-benchmarks
// (impl=...), so that benchstat can compare them directly:
//
//	go test -run '^$' -bench . -benchmem -count=5 -benchtime=300ms . > new.txt
//	benchstat -col /impl new.txt
//
// ns/op is always per write: wall-clock time for b.N writes spread over the
// writer goroutines, measured until the last write reached the level the
// benchmark is about.

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	benchKeySize    = 8
	benchValueSize  = 100
	benchRecordSize = benchKeySize + benchValueSize
	benchQueueCap   = 10_000 // the coordinator's default QueueCapacity
	benchBatchSize  = 256    // writes per WriteBatch
	benchBatchDepth = 16     // batches in flight per writer
)

// benchSimSync, when set, makes the durable benchmarks sleep that long
// instead of calling fsync, in every implementation alike, so that group
// formation can be compared without the drift of a real disk:
//
//	go test -run '^$' -bench 'Durable/writers=256/' -simsync=1ms .
var benchSimSync = flag.Duration("simsync", 0, "durable benchmarks: sleep this long instead of fsync (0: real fsync)")

// benchSync makes f durable: fsync, or the simulated sync's sleep.
func benchSync(f *os.File) error {
	if d := *benchSimSync; d > 0 {
		time.Sleep(d)
		return nil
	}
	return f.Sync()
}

// benchPhases, when set, makes the durable benchmarks report where the
// time between two syncs goes, as the median per sync of each phase (see
// benchCycle):
//
//	go test -run '^$' -bench 'Durable$/writers=4096/' -phases .
var benchPhases = flag.Bool("phases", false, "durable benchmarks: report the median time of each phase between two syncs")

// benchCycle records the phases of the cycles between two syncs. The
// coordinator's are taken from its Observer, so the same can be measured
// in any embedding: wake is from the end of FlushStorage to the Synced
// event (the flusher wakes the group in between); gather from there to
// the next Frozen event (the writers write again, the coordinator applies
// and freezes); handoff from Frozen to the start of FlushDelta; write is
// FlushDelta, and sync FlushStorage. The ideal's are timed in its loop:
// gather is taking the queued writes, write encoding and writing them.
type benchCycle struct {
	NopObserver
	mu                            sync.Mutex
	frozen, flushed, woken        time.Time // the last of each event
	wake, gather, handoff, writes []time.Duration
	syncs                         []time.Duration
}

func (p *benchCycle) Frozen(FlushReason, EpochRange, int, time.Duration) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.woken.IsZero() && p.frozen.Before(p.woken) { // the first freeze since
		p.gather = append(p.gather, now.Sub(p.woken))
	}
	p.frozen = now
}

func (p *benchCycle) Flushed(info FlushInfo) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.frozen.IsZero() {
		p.handoff = append(p.handoff, now.Sub(p.frozen)-info.Duration)
	}
	p.writes = append(p.writes, info.Duration)
	p.flushed = now
}

func (p *benchCycle) Synced(info SyncInfo) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.flushed.After(p.woken) { // a delta was written since the last sync
		p.wake = append(p.wake, now.Sub(p.flushed)-info.Duration)
	}
	p.syncs = append(p.syncs, info.Duration)
	p.woken = now
}

// report reports the median of each phase, in microseconds.
func (p *benchCycle) report(b *testing.B) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ph := range []struct {
		name string
		d    []time.Duration
	}{{"wake", p.wake}, {"gather", p.gather}, {"handoff", p.handoff}, {"write", p.writes}, {"sync", p.syncs}} {
		if len(ph.d) > 0 {
			slices.Sort(ph.d)
			b.ReportMetric(float64(ph.d[len(ph.d)/2])/1e3, ph.name+"-µs")
		}
	}
}

// newBenchCycle returns a benchCycle if -phases is set, else nil.
func newBenchCycle() *benchCycle {
	if !*benchPhases {
		return nil
	}
	return new(benchCycle)
}

// observe sets cfg's Observer to p, if p is not nil.
func (p *benchCycle) observe(cfg Config) Config {
	if p != nil {
		cfg.Observer = p
	}
	return cfg
}

// benchValue is the value of every write; writes share it so that the
// benchmarks measure the pipeline, not the allocation of values.
var benchValue = make([]byte, benchValueSize)

// benchWrite is one write: an 8-byte key and a 100-byte value.
type benchWrite struct {
	key   [benchKeySize]byte
	value []byte
}

// benchKey returns a key unique to (writer, i).
func benchKey(writer, i int) (k [benchKeySize]byte) {
	binary.BigEndian.PutUint64(k[:], uint64(writer)<<40|uint64(i))
	return k
}

func benchWriteOf(writer, i int) benchWrite {
	return benchWrite{key: benchKey(writer, i), value: benchValue}
}

// benchMap is the data of a delta: what it freezes into.
type benchMap = map[[benchKeySize]byte][]byte

// benchDelta is a minimal map-backed Delta. Nothing reads the live delta
// in the benchmarks, so its reader (and its frozen view) are empty.
type benchDelta struct {
	m    benchMap
	size int
}

func newBenchDelta(struct{}) *benchDelta { return &benchDelta{m: make(benchMap)} }

func (d *benchDelta) Apply(w benchWrite) (struct{}, error) {
	d.m[w.key] = w.value
	d.size += benchRecordSize
	return struct{}{}, nil
}

func (d *benchDelta) EstimateSize() int { return d.size }

func (d *benchDelta) Freeze() (benchMap, struct{}, struct{}) { return d.m, struct{}{}, struct{}{} }

func (d *benchDelta) Reader() struct{} { return struct{}{} }

// benchFlusher discards frozen deltas, or, with a file, appends their
// records to it in FlushDelta and fsyncs it in FlushStorage.
type benchFlusher struct {
	f     *os.File // nil: discard
	buf   []byte
	syncs atomic.Int64
}

func (f *benchFlusher) FlushDelta(_ context.Context, m benchMap, _ EpochRange) (struct{}, error) {
	if f.f == nil {
		return struct{}{}, nil
	}
	f.buf = benchAppendMap(f.buf[:0], m)
	_, err := f.f.Write(f.buf)
	return struct{}{}, err
}

func (f *benchFlusher) FlushStorage(context.Context) error {
	f.syncs.Add(1)
	if f.f == nil {
		return nil
	}
	return benchSync(f.f)
}

func benchAppendMap(buf []byte, m benchMap) []byte {
	for k, v := range m {
		buf = append(buf, k[:]...)
		buf = append(buf, v...)
	}
	return buf
}

func benchAppendRecord(buf []byte, w benchWrite) []byte {
	buf = append(buf, w.key[:]...)
	return append(buf, w.value...)
}

// benchLogDelta is a Delta that only logs, the work the ideal group commit
// does: Apply appends the write's record to a buffer, and
// benchLogFlusher.FlushDelta writes the buffer as it is. benchDelta also
// indexes its writes in a map, which the ideal does not: comparing the two
// tells the coordinator's own cost from the delta's. Buffers go back to
// the pool, the delta's context, once written.
type benchLogDelta struct {
	buf  *[]byte
	bufs *sync.Pool
}

func newBenchLogDelta(bufs *sync.Pool) *benchLogDelta {
	buf, _ := bufs.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	return &benchLogDelta{buf: buf, bufs: bufs}
}

func (d *benchLogDelta) Apply(w benchWrite) (struct{}, error) {
	*d.buf = benchAppendRecord(*d.buf, w)
	return struct{}{}, nil
}

func (d *benchLogDelta) EstimateSize() int { return len(*d.buf) }

func (d *benchLogDelta) Freeze() (*[]byte, struct{}, *sync.Pool) { return d.buf, struct{}{}, d.bufs }

func (d *benchLogDelta) Reader() struct{} { return struct{}{} }

// benchLogFlusher appends the frozen benchLogDeltas' records to f and
// fsyncs it in FlushStorage.
type benchLogFlusher struct {
	f     *os.File
	bufs  *sync.Pool
	syncs atomic.Int64
}

func (f *benchLogFlusher) FlushDelta(_ context.Context, buf *[]byte, _ EpochRange) (struct{}, error) {
	_, err := f.f.Write(*buf)
	*buf = (*buf)[:0]
	f.bufs.Put(buf)
	return struct{}{}, err
}

func (f *benchLogFlusher) FlushStorage(context.Context) error {
	f.syncs.Add(1)
	return benchSync(f.f)
}

// benchCoordinator is the coordinator instantiated for the benchmarks.
type benchCoordinator = Coordinator[benchWrite, struct{}, struct{}, struct{}, struct{}]

func newBenchCoordinator(b *testing.B, cfg Config, fl *benchFlusher) *benchCoordinator {
	b.Helper()
	c, err := New(cfg, newBenchDelta, struct{}{}, struct{}{}, fl)
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	c.Start()
	return c
}

func benchStop(b *testing.B, c *benchCoordinator) {
	b.Helper()
	if err := c.Stop(context.Background()); err != nil {
		b.Fatalf("Stop() = %v; want nil", err)
	}
}

// benchTempFile creates a log file in a fresh temporary directory.
func benchTempFile(b *testing.B) *os.File {
	b.Helper()
	f, err := os.Create(filepath.Join(b.TempDir(), "log"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// benchShare is writer id's share of n writes among writers.
func benchShare(id, writers, n int) int {
	s := n / writers
	if id < n%writers {
		s++
	}
	return s
}

// benchRun runs write(id, count) on writers goroutines that share n writes
// and waits for them all.
func benchRun(writers, n int, write func(id, count int)) {
	var wg sync.WaitGroup
	for id := range writers {
		if count := benchShare(id, writers, n); count > 0 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				write(id, count)
			}()
		}
	}
	wg.Wait()
}

// benchLatencies records one latency per write, per writer, allocated up
// front so that recording allocates nothing.
type benchLatencies [][]time.Duration

func newBenchLatencies(writers, n int) benchLatencies {
	l := make(benchLatencies, writers)
	for id := range l {
		l[id] = make([]time.Duration, 0, benchShare(id, writers, n))
	}
	return l
}

// report adds the p50-ns and p99-ns metrics. Call it with the timer stopped.
func (l benchLatencies) report(b *testing.B) {
	var all []time.Duration
	for _, s := range l {
		all = append(all, s...)
	}
	if len(all) == 0 {
		return
	}
	slices.Sort(all)
	at := func(q float64) float64 { return float64(all[int(q*float64(len(all)-1))]) }
	b.ReportMetric(at(0.50), "p50-ns")
	b.ReportMetric(at(0.99), "p99-ns")
}

// benchAck is a write handed to a baseline consumer together with the
// channel it acknowledges on.
type benchAck struct {
	w   benchWrite
	ack chan struct{}
}

// benchApplier is the floor of the applied workloads: one goroutine that
// receives writes from a buffered channel and inserts them into a map,
// starting a new map at the same size the coordinator freezes at.
type benchApplier struct {
	in        chan benchAck
	done      chan struct{}
	flushSize int
}

func newBenchApplier(flushSize int) *benchApplier {
	a := &benchApplier{in: make(chan benchAck, benchQueueCap), done: make(chan struct{}), flushSize: flushSize}
	go a.run()
	return a
}

func (a *benchApplier) run() {
	defer close(a.done)
	m, size := make(benchMap), 0
	for r := range a.in {
		m[r.w.key] = r.w.value
		if size += benchRecordSize; size >= a.flushSize {
			m, size = make(benchMap), 0
		}
		if r.ack != nil {
			r.ack <- struct{}{}
		}
	}
}

// close stops the consumer after it applied everything sent, and waits.
func (a *benchApplier) close() {
	close(a.in)
	<-a.done
}

// BenchmarkApplied measures throughput: writers submit without waiting,
// and the clock stops when every write is applied. map-only (writers=1
// only) inserts into the map with no hand-off at all: the cost of Apply
// itself, a ceiling for every implementation.
func BenchmarkApplied(b *testing.B) {
	for _, impl := range []string{"coordinator", "coordinator-batch", "chan-limit", "map-only"} {
		for _, writers := range []int{1, 4, 64} {
			if impl == "map-only" && writers > 1 {
				continue
			}
			b.Run(fmt.Sprintf("impl=%s/writers=%d", impl, writers), func(b *testing.B) {
				b.ReportAllocs()
				switch impl {
				case "coordinator":
					benchAppliedCoordinator(b, Config{}, writers)
				case "coordinator-batch":
					benchAppliedBatch(b, writers)
				case "chan-limit":
					benchAppliedChan(b, writers)
				case "map-only":
					benchAppliedMap(b)
				}
			})
		}
	}
}

// benchAppliedCoordinator submits b.N writes with Channel.Write (which
// blocks only while the queue is full) and waits for the applied
// watermark. Writer id sends its i-th write to channel (id+i) mod the
// number of channels.
func benchAppliedCoordinator(b *testing.B, cfg Config, writers int) {
	c := newBenchCoordinator(b, cfg, &benchFlusher{})
	defer benchStop(b, c)
	ctx := context.Background()
	names := cfg.Channels
	if len(names) == 0 {
		names = []string{defaultChannel}
	}
	chans := make([]*Channel[benchWrite, struct{}], len(names))
	for i, name := range names {
		chans[i] = c.Channel(name)
	}
	b.ResetTimer()
	benchRun(writers, b.N, func(id, count int) {
		for i := range count {
			if _, err := chans[(id+i)%len(chans)].Write(ctx, benchWriteOf(id, i)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	if err := c.WaitFor(ctx, Applied, uint64(b.N)); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
}

func benchAppliedBatch(b *testing.B, writers int) {
	c := newBenchCoordinator(b, Config{}, &benchFlusher{})
	defer benchStop(b, c)
	ctx := context.Background()
	ch := c.Channel(defaultChannel)
	// Each writer cycles through benchBatchDepth buffers; a buffer is
	// reused once the batch it held is applied.
	bufs := make([][][]benchWrite, writers)
	for id := range bufs {
		bufs[id] = make([][]benchWrite, benchBatchDepth)
		for k := range bufs[id] {
			bufs[id][k] = make([]benchWrite, 0, benchBatchSize)
		}
	}
	b.ResetTimer()
	benchRun(writers, b.N, func(id, count int) {
		var handles [benchBatchDepth]*BatchHandle[struct{}]
		for i, k := 0, 0; i < count; k++ {
			slot := k % benchBatchDepth
			if h := handles[slot]; h != nil {
				if _, err := h.Epochs(ctx); err != nil {
					b.Error(err)
					return
				}
			}
			buf := bufs[id][slot][:0]
			for n := min(benchBatchSize, count-i); len(buf) < n; i++ {
				buf = append(buf, benchWriteOf(id, i))
			}
			h, err := ch.WriteBatch(ctx, buf)
			if err != nil {
				b.Error(err)
				return
			}
			handles[slot] = h
		}
	})
	if err := c.WaitFor(ctx, Applied, uint64(b.N)); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
}

func benchAppliedChan(b *testing.B, writers int) {
	a := newBenchApplier(defaultFlushSize)
	b.ResetTimer()
	benchRun(writers, b.N, func(id, count int) {
		for i := range count {
			a.in <- benchAck{w: benchWriteOf(id, i)}
		}
	})
	a.close()
	b.StopTimer()
}

func benchAppliedMap(b *testing.B) {
	d := newBenchDelta(struct{}{})
	for i := range b.N {
		d.Apply(benchWriteOf(0, i))
		if d.EstimateSize() >= defaultFlushSize {
			d = newBenchDelta(struct{}{})
		}
	}
}

// BenchmarkRoundTrip measures latency: each writer submits a write and
// waits until it is applied before the next.
func BenchmarkRoundTrip(b *testing.B) {
	for _, impl := range []string{"coordinator", "chan-ack"} {
		for _, writers := range []int{1, 64} {
			b.Run(fmt.Sprintf("impl=%s/writers=%d", impl, writers), func(b *testing.B) {
				b.ReportAllocs()
				switch impl {
				case "coordinator":
					benchRoundTripCoordinator(b, Config{}, writers)
				case "chan-ack":
					benchRoundTripChan(b, writers)
				}
			})
		}
	}
}

func benchRoundTripCoordinator(b *testing.B, cfg Config, writers int) {
	c := newBenchCoordinator(b, cfg, &benchFlusher{})
	defer benchStop(b, c)
	lat := newBenchLatencies(writers, b.N)
	benchWriteAndWait(b, c, benchBackground(writers), Applied, lat)
	lat.report(b)
}

// benchBackground returns a context.Background for each of writers.
func benchBackground(writers int) []context.Context {
	ctxs := make([]context.Context, writers)
	for id := range ctxs {
		ctxs[id] = context.Background()
	}
	return ctxs
}

// benchWriteAndWait has one writer per context of ctxs share b.N writes,
// each written and then waited for at level with the writer's context,
// recording each write's latency in lat.
func benchWriteAndWait(b *testing.B, c *benchCoordinator, ctxs []context.Context, level Durability, lat benchLatencies) {
	ch := c.Channel(defaultChannel)
	b.ResetTimer()
	benchRun(len(ctxs), b.N, func(id, count int) {
		ctx := ctxs[id]
		for i := range count {
			start := time.Now()
			h, err := ch.Write(ctx, benchWriteOf(id, i))
			if err == nil {
				_, err = h.Wait(ctx, level)
			}
			if err != nil {
				b.Error(err)
				return
			}
			lat[id] = append(lat[id], time.Since(start))
		}
	})
	b.StopTimer()
}

func benchRoundTripChan(b *testing.B, writers int) {
	a := newBenchApplier(defaultFlushSize)
	defer a.close()
	lat := newBenchLatencies(writers, b.N)
	b.ResetTimer()
	benchRun(writers, b.N, func(id, count int) {
		ack := make(chan struct{}, 1)
		for i := range count {
			start := time.Now()
			a.in <- benchAck{w: benchWriteOf(id, i), ack: ack}
			<-ack
			lat[id] = append(lat[id], time.Since(start))
		}
	})
	b.StopTimer()
	lat.report(b)
}

// BenchmarkBusy repeats the round trip (wait for Applied) and the durable
// benchmark while benchBusyGoroutines goroutines that never block run
// beside the writers, as compactions or queries would in a database. A
// goroutine that yields the processor (runtime.Gosched) goes behind every
// one of them, each running up to a 10 ms time slice first; one that
// blocks and is woken runs next. Wait for the tail.
func BenchmarkBusy(b *testing.B) {
	for _, writers := range []int{1, 64} {
		for _, impl := range []string{"coordinator", "chan-ack"} {
			b.Run(fmt.Sprintf("roundtrip/impl=%s/writers=%d", impl, writers), func(b *testing.B) {
				b.ReportAllocs()
				defer benchBusy(benchBusyGoroutines)()
				switch impl {
				case "coordinator":
					benchRoundTripCoordinator(b, Config{}, writers)
				case "chan-ack":
					benchRoundTripChan(b, writers)
				}
			})
		}
	}
	for _, writers := range []int{16, 256} {
		for _, impl := range []string{"coordinator", "group-fsync-ideal"} {
			b.Run(fmt.Sprintf("durable/impl=%s/writers=%d", impl, writers), func(b *testing.B) {
				defer benchBusy(benchBusyGoroutines)()
				benchDurable(b, impl, benchBackground(writers))
			})
		}
	}
}

// BenchmarkDurableContext is the coordinator's side of BenchmarkDurable
// with the writers' context varied: context.Background, one cancelable
// context shared by every writer (as from signal.NotifyContext), or one
// per writer (as a server's per-request contexts). A wait that parks with
// a cancelable context registers a callback on it (context.AfterFunc),
// which allocates, and on a shared context contends for its lock.
//
//	go test -run '^$' -bench DurableContext -simsync=1ms .
func BenchmarkDurableContext(b *testing.B) {
	for _, writers := range []int{1, 256, 4096} {
		for _, kind := range []string{"background", "shared-cancel", "own-cancel"} {
			b.Run(fmt.Sprintf("writers=%d/ctx=%s", writers, kind), func(b *testing.B) {
				ctxs := make([]context.Context, writers)
				shared, cancel := context.WithCancel(context.Background())
				defer cancel()
				for id := range ctxs {
					switch kind {
					case "background":
						ctxs[id] = context.Background()
					case "shared-cancel":
						ctxs[id] = shared
					case "own-cancel":
						var cancelOwn context.CancelFunc
						ctxs[id], cancelOwn = context.WithCancel(shared)
						defer cancelOwn()
					}
				}
				benchDurable(b, "coordinator", ctxs)
			})
		}
	}
}

// benchBusyGoroutines is how many goroutines BenchmarkBusy keeps running.
const benchBusyGoroutines = 4

// benchBusy starts n goroutines that compute until the returned function
// is called, which stops them and waits for them.
func benchBusy(n int) (stop func()) {
	var (
		quit atomic.Bool
		wg   sync.WaitGroup
	)
	for range n {
		wg.Go(func() {
			x := 0
			for !quit.Load() {
				for i := range 100_000 {
					x += i
				}
			}
			_ = x
		})
	}
	return func() {
		quit.Store(true)
		wg.Wait()
	}
}

// BenchmarkDurable measures group commit: each writer submits a write and
// waits until it is durable (appended to a file and fsynced, or with
// -simsync a simulated sync) before the next.
//
// The implementations of one writer count run next to each other, so that
// a ratio compares runs minutes apart at most; fsync latency drifts more
// than that on a shared machine. scripts/durable-rounds.sh goes further:
// it runs -count=1 rounds, alternating the order of the implementations,
// and reports the median of the per-round ratios. naive-fsync syncs once
// per write whatever the writer count, so it runs only up to 256 writers.
// coordinator-log is the coordinator with a delta that only logs, as the
// ideal does (see benchLogDelta).
func BenchmarkDurable(b *testing.B) {
	for _, writers := range []int{1, 16, 256, 1024, 4096} {
		for _, impl := range []string{"coordinator", "coordinator-log", "sequenced-ideal", "group-fsync-ideal", "naive-fsync"} {
			if impl == "naive-fsync" && writers > 256 {
				continue
			}
			b.Run(fmt.Sprintf("writers=%d/impl=%s", writers, impl), func(b *testing.B) {
				benchDurable(b, impl, benchBackground(writers))
			})
		}
	}
}

// benchDurable runs one durable benchmark of impl with a writer per
// context of ctxs (only the coordinator's writers use them) and reports
// latencies and writes per sync.
func benchDurable(b *testing.B, impl string, ctxs []context.Context) {
	b.ReportAllocs()
	f := benchTempFile(b)
	writers := len(ctxs)
	var syncs int64
	lat := newBenchLatencies(writers, b.N)
	cyc := newBenchCycle()
	switch impl {
	case "coordinator":
		syncs = benchDurableCoordinator(b, f, ctxs, lat, cyc)
	case "coordinator-log":
		syncs = benchDurableLog(b, f, ctxs, lat, cyc)
	case "group-fsync-ideal":
		syncs = benchDurableGroup(b, f, writers, lat, cyc)
	case "sequenced-ideal":
		syncs = benchDurableSequenced(b, f, writers, lat)
	case "naive-fsync":
		syncs = benchDurableNaive(b, f, writers, lat)
	}
	lat.report(b)
	cyc.report(b)
	if syncs > 0 {
		b.ReportMetric(float64(b.N)/float64(syncs), "writes/sync")
	}
}

// benchDurableCoordinator returns the number of fsyncs made while timing.
func benchDurableCoordinator(b *testing.B, f *os.File, ctxs []context.Context, lat benchLatencies, cyc *benchCycle) int64 {
	fl := &benchFlusher{f: f}
	c := newBenchCoordinator(b, cyc.observe(Config{}), fl)
	defer benchStop(b, c)
	benchWriteAndWait(b, c, ctxs, Durable, lat)
	return fl.syncs.Load()
}

// benchDurableLog is benchDurableCoordinator with benchLogDeltas.
func benchDurableLog(b *testing.B, f *os.File, ctxs []context.Context, lat benchLatencies, cyc *benchCycle) int64 {
	bufs := new(sync.Pool)
	fl := &benchLogFlusher{f: f, bufs: bufs}
	c, err := New(cyc.observe(Config{}), newBenchLogDelta, bufs, struct{}{}, fl)
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	c.Start()
	defer benchStop(b, c)
	benchWriteAndWait(b, c, ctxs, Durable, lat)
	return fl.syncs.Load()
}

// benchGroupSyncer is the ideal group commit: one goroutine takes every
// write queued, appends them all with one write, fsyncs once and wakes
// their writers.
type benchGroupSyncer struct {
	benchQueue
	cyc  *benchCycle // nil unless -phases
	f    *os.File
	quit chan struct{}
	done chan struct{}

	syncs int64
}

// benchQueue is the ideals' queue: writers append under a lock and wake
// the one goroutine that takes them.
type benchQueue struct {
	wake chan struct{} // buffer of 1: writes are pending

	mu      sync.Mutex
	pending []benchAck // protected by mu
}

func newBenchQueue() benchQueue { return benchQueue{wake: make(chan struct{}, 1)} }

func (q *benchQueue) submit(r benchAck) {
	q.mu.Lock()
	q.pending = append(q.pending, r)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take returns the pending writes and leaves buf, emptied, in their place.
func (q *benchQueue) take(buf []benchAck) []benchAck {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch := q.pending
	q.pending = buf[:0]
	return batch
}

func (g *benchGroupSyncer) run(b *testing.B) {
	defer close(g.done)
	var batch []benchAck
	var buf []byte
	var woken time.Time // when the last group was woken; with -phases
	for {
		select {
		case <-g.wake:
		case <-g.quit:
			return
		}
		batch = g.take(batch)
		if len(batch) == 0 {
			continue
		}
		var t [4]time.Time // taken, written, synced, woken; with -phases
		g.clock(&t[0])
		buf = buf[:0]
		for _, r := range batch {
			buf = benchAppendRecord(buf, r.w)
		}
		if _, err := g.f.Write(buf); err != nil {
			b.Error(err)
		}
		g.clock(&t[1])
		if err := benchSync(g.f); err != nil {
			b.Error(err)
		}
		g.clock(&t[2])
		g.syncs++
		for _, r := range batch {
			r.ack <- struct{}{}
		}
		if g.cyc != nil {
			g.clock(&t[3])
			p := g.cyc
			p.mu.Lock()
			if !woken.IsZero() {
				p.gather = append(p.gather, t[0].Sub(woken))
			}
			p.writes = append(p.writes, t[1].Sub(t[0]))
			p.syncs = append(p.syncs, t[2].Sub(t[1]))
			p.wake = append(p.wake, t[3].Sub(t[2]))
			p.mu.Unlock()
			woken = t[3]
		}
	}
}

// clock sets *t to the time with -phases.
func (g *benchGroupSyncer) clock(t *time.Time) {
	if g.cyc != nil {
		*t = time.Now()
	}
}

func benchDurableGroup(b *testing.B, f *os.File, writers int, lat benchLatencies, cyc *benchCycle) int64 {
	g := &benchGroupSyncer{benchQueue: newBenchQueue(), cyc: cyc, f: f, quit: make(chan struct{}), done: make(chan struct{})}
	go g.run(b)
	benchSubmitAndWait(b, writers, lat, g.submit)
	close(g.quit)
	<-g.done
	return g.syncs
}

// benchSequencer is the ideal group commit with the coordinator's shape:
// writers queue under a lock and wake one sequencing goroutine, which
// appends each write's record to the open group (the logging delta's
// work) and hands the group to a syncing goroutine whenever that one is
// idle; the syncer appends the group with one write, fsyncs once and wakes
// its writers. It is the simplest pipeline with two goroutines between
// the writers and the disk, with nothing the coordinator adds to that
// shape (handles, epochs, watermarks, views, budgets, pausing): set beside
// group-fsync-ideal, it shows what the shape itself costs, apart from the
// coordinator's implementation of it.
type benchSequencer struct {
	benchQueue
	f     *os.File
	idle  chan struct{} // buffer of 1: the syncer finished a group
	next  chan *benchSeqGroup
	free  chan *benchSeqGroup // recycled groups
	quit  chan struct{}
	done  chan struct{}
	synct chan struct{} // closed when the syncer exits

	syncs int64 // written by the syncer, read after it exits
}

type benchSeqGroup struct {
	buf  []byte
	acks []chan struct{}
}

// sequence is the sequencing goroutine.
func (s *benchSequencer) sequence() {
	defer close(s.done)
	defer close(s.next)
	var batch []benchAck
	g := new(benchSeqGroup)
	syncerIdle := true
	for {
		select {
		case <-s.wake:
		case <-s.idle:
			syncerIdle = true
		case <-s.quit:
			return
		}
		batch = s.take(batch)
		for _, r := range batch {
			g.buf = benchAppendRecord(g.buf, r.w)
			g.acks = append(g.acks, r.ack)
		}
		if syncerIdle && len(g.acks) > 0 {
			s.next <- g // buffer of 1, and the syncer has taken the last one
			syncerIdle = false
			select {
			case g = <-s.free:
				g.buf, g.acks = g.buf[:0], g.acks[:0]
			default:
				g = new(benchSeqGroup)
			}
		}
	}
}

// syncGroups is the syncing goroutine.
func (s *benchSequencer) syncGroups(b *testing.B) {
	defer close(s.synct)
	for g := range s.next {
		if _, err := s.f.Write(g.buf); err != nil {
			b.Error(err)
		}
		if err := benchSync(s.f); err != nil {
			b.Error(err)
		}
		s.syncs++
		for _, ack := range g.acks {
			ack <- struct{}{}
		}
		select {
		case s.free <- g:
		default:
		}
		s.idle <- struct{}{} // buffer of 1: taken before the next group comes
	}
}

func benchDurableSequenced(b *testing.B, f *os.File, writers int, lat benchLatencies) int64 {
	s := &benchSequencer{
		benchQueue: newBenchQueue(), f: f, idle: make(chan struct{}, 1),
		next: make(chan *benchSeqGroup, 1), free: make(chan *benchSeqGroup, 2),
		quit: make(chan struct{}), done: make(chan struct{}), synct: make(chan struct{}),
	}
	go s.sequence()
	go s.syncGroups(b)
	benchSubmitAndWait(b, writers, lat, s.submit)
	close(s.quit)
	<-s.done
	<-s.synct
	return s.syncs
}

// benchSubmitAndWait times writers writers, each submitting its writes
// one at a time with submit and waiting for the acknowledgement.
func benchSubmitAndWait(b *testing.B, writers int, lat benchLatencies, submit func(benchAck)) {
	b.ResetTimer()
	benchRun(writers, b.N, func(id, count int) {
		ack := make(chan struct{}, 1)
		for i := range count {
			start := time.Now()
			submit(benchAck{w: benchWriteOf(id, i), ack: ack})
			<-ack
			lat[id] = append(lat[id], time.Since(start))
		}
	})
	b.StopTimer()
}

func benchDurableNaive(b *testing.B, f *os.File, writers int, lat benchLatencies) int64 {
	var (
		mu    sync.Mutex
		syncs int64
	)
	b.ResetTimer()
	benchRun(writers, b.N, func(id, count int) {
		var rec [benchRecordSize]byte
		for i := range count {
			start := time.Now()
			mu.Lock()
			_, err := f.Write(benchAppendRecord(rec[:0], benchWriteOf(id, i)))
			if err == nil {
				err = benchSync(f)
			}
			syncs++
			mu.Unlock()
			if err != nil {
				b.Error(err)
				return
			}
			lat[id] = append(lat[id], time.Since(start))
		}
	})
	b.StopTimer()
	return syncs
}

// BenchmarkScaling measures the cost per write as the number of channels,
// the number of concurrent writers and the delta size grow.
//
//   - channels=C: 4 writers submit without waiting, each spreading its
//     writes round-robin over C channels; until all applied.
//   - writers=W: W goroutines each write and wait until applied (round
//     trip), sharing b.N writes.
//   - flush-size=S: 4 writers submit without waiting with FlushSize S (the
//     flusher discards deltas); until all applied. Small deltas measure the
//     cost of freezing and handing deltas over.
func BenchmarkScaling(b *testing.B) {
	for _, n := range []int{1, 4, 16, 64} {
		b.Run(fmt.Sprintf("channels=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			cfg := Config{}
			for i := range n {
				cfg.Channels = append(cfg.Channels, "c"+strconv.Itoa(i))
			}
			benchAppliedCoordinator(b, cfg, 4)
		})
	}
	for _, n := range []int{1, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("writers=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			benchRoundTripCoordinator(b, Config{}, n)
		})
	}
	for _, s := range []struct {
		name string
		size int
	}{{"64KiB", 64 << 10}, {"1MiB", 1 << 20}, {"64MiB", 64 << 20}} {
		b.Run("flush-size="+s.name, func(b *testing.B) {
			b.ReportAllocs()
			benchAppliedCoordinator(b, Config{FlushSize: s.size}, 4)
		})
	}
}

// BenchmarkBlockedWriters measures the cost of draining a full queue while
// many writers are blocked on it: writers=W goroutines loop on
// Channel.Write to one channel with QueueCapacity benchBlockedQueueCap, so
// about W of them are blocked at any time. Before the timer starts the
// channel is paused until the queue is full and every writer has called
// Write; then it is resumed and the clock stops when b.N writes are
// applied. ns/write is per write drained; it should not grow with W: a
// take that frees room for k writes should wake about k writers, not all W.
// Before that held, the 100k case took about 0.3-0.8 ms per write: run the
// benchmark with a fixed count,
//
//	go test -run '^$' -bench BlockedWriters -count=3 -benchtime=20000x .
func BenchmarkBlockedWriters(b *testing.B) {
	for _, writers := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			b.ReportAllocs()
			benchBlockedWriters(b, writers)
		})
	}
}

// benchBlockedQueueCap is the queue capacity of BenchmarkBlockedWriters.
const benchBlockedQueueCap = 64

func benchBlockedWriters(b *testing.B, writers int) {
	c := newBenchCoordinator(b, Config{QueueCapacity: benchBlockedQueueCap}, &benchFlusher{})
	defer benchStop(b, c)
	ch := c.Channel(defaultChannel)
	ch.Pause()
	// The writers stop when ctx is canceled: those blocked in Write then
	// return its error, the others at their next loop.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		started atomic.Int64 // writers that made their first call to Write
		wg      sync.WaitGroup
	)
	for id := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started.Add(1)
			for i := 0; ctx.Err() == nil; i++ {
				if _, err := ch.Write(ctx, benchWriteOf(id, i)); err != nil {
					if ctx.Err() == nil {
						b.Error(err)
					}
					return
				}
			}
		}()
	}
	// Every writer called Write and all but QueueCapacity of them block on
	// the full queue. A writer counted in started may still be on its way
	// to park; it parks as soon as it runs again.
	for started.Load() < int64(writers) || c.Stats().Channels[0].Depth < benchBlockedQueueCap {
		runtime.Gosched()
	}
	b.ResetTimer()
	ch.Resume()
	if err := c.WaitFor(context.Background(), Applied, uint64(b.N)); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/write")
	cancel()
	wg.Wait()
}

// BenchmarkChannels measures the round trip of one writer (write, then
// wait until applied) on one busy channel among channels=C configured
// channels, the others idle. The cost should follow the busy channels, not
// the configured ones.
func BenchmarkChannels(b *testing.B) {
	for _, n := range []int{1, 100, 10_000} {
		b.Run(fmt.Sprintf("channels=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			cfg := Config{Channels: []string{defaultChannel}}
			for i := 1; i < n; i++ {
				cfg.Channels = append(cfg.Channels, "idle"+strconv.Itoa(i))
			}
			benchRoundTripCoordinator(b, cfg, 1)
		})
	}
}
