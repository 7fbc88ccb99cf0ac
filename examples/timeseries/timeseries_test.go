package main

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/groupcommit/coordinator"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// quiet is a coordinator config under which deltas are frozen only by the
// test: by Flush, or by waiting for Written or Durable.
func quiet() coordinator.Config {
	return coordinator.Config{FlushInterval: time.Hour}
}

func openStore(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	st, err := Open(context.Background(), dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return st
}

// write writes samples and waits until each reaches level.
func write(t *testing.T, st *Store, level coordinator.Durability, samples ...Sample) []SeriesID {
	t.Helper()
	ctx := context.Background()
	ch := st.Coordinator().Channel("default")
	ids := make([]SeriesID, len(samples))
	for i, s := range samples {
		h, err := ch.Write(ctx, s)
		if err != nil {
			t.Fatalf("Write(%+v) = %v", s, err)
		}
		if ids[i], err = h.Wait(ctx, level); err != nil {
			t.Fatalf("Write(%+v).Wait(%v) = %v", s, level, err)
		}
	}
	return ids
}

func query(t *testing.T, st *Store, v *View, metric string, labels Labels, from, to int64) Agg {
	t.Helper()
	a, err := st.Query(context.Background(), v, metric, labels, from, to)
	if err != nil {
		t.Fatalf("Query(%s, %v, [%d, %d)) = %v", metric, labels, from, to, err)
	}
	return a
}

// check compares query results for a table of ranges with the expected
// aggregates.
type rangeWant struct {
	from, to int64
	want     Agg
}

func checkRanges(t *testing.T, st *Store, v *View, stage string, labels Labels, cases []rangeWant) {
	t.Helper()
	for _, c := range cases {
		if got := query(t, st, v, "cpu", labels, c.from, c.to); got != c.want {
			t.Errorf("%s: Query(cpu, %v, [%d, %d)) = %+v; want %+v", stage, labels, c.from, c.to, got, c.want)
		}
	}
}

// flushGate holds the first FlushDelta until released.
type flushGate struct {
	once             sync.Once
	started, release chan struct{}
}

func newFlushGate() *flushGate {
	return &flushGate{started: make(chan struct{}), release: make(chan struct{})}
}

func (g *flushGate) hook(ctx context.Context) error {
	first := false
	g.once.Do(func() { first = true; close(g.started) })
	if !first {
		return nil
	}
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestQueryAcrossLayers follows samples from the live delta to a frozen
// delta to SQLite and through a restart, checking exact aggregates at every
// stage, including through a view taken before the flush (whose snapshot
// generation must hide the rows written after it).
func TestQueryAcrossLayers(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	gate := newFlushGate()
	st := openStore(t, dir, Options{Coordinator: quiet(), beforeFlush: gate.hook})
	a := Labels{"host": "a"}
	b := Labels{"host": "b"}

	// Bucket 0 = [0, 60s), bucket 1 = [60s, 120s).
	write(t, st, coordinator.Applied,
		Sample{"cpu", a, 1_000, 1},
		Sample{"cpu", a, 2_000, 5},
		Sample{"cpu", b, 3_000, 100},
		Sample{"cpu", a, 61_000, 2},
	)
	live := []rangeWant{
		{0, 60_000, Agg{Count: 2, Sum: 6, Min: 1, Max: 5, LastT: 2_000, Last: 5}},
		{60_000, 120_000, Agg{Count: 1, Sum: 2, Min: 2, Max: 2, LastT: 61_000, Last: 2}},
		{0, 120_000, Agg{Count: 3, Sum: 8, Min: 1, Max: 5, LastT: 61_000, Last: 2}},
		{120_000, 180_000, Agg{}},
	}
	liveView := st.Coordinator().View()
	v := liveView
	if len(v.Frozen) != 0 || v.Snapshot.Gen != 0 {
		t.Fatalf("view before any flush: %d frozen, gen %d; want 0, 0", len(v.Frozen), v.Snapshot.Gen)
	}
	checkRanges(t, st, v, "live", a, live)

	// Freeze: the flusher is held, so the delta sits in the view's Frozen.
	if _, err := st.Coordinator().Flush(ctx, coordinator.Applied); err != nil {
		t.Fatal(err)
	}
	<-gate.started
	frozenView := st.Coordinator().View()
	if len(frozenView.Frozen) != 1 || frozenView.Snapshot.Gen != 0 {
		t.Fatalf("view after freeze: %d frozen, gen %d; want 1, 0", len(frozenView.Frozen), frozenView.Snapshot.Gen)
	}
	checkRanges(t, st, frozenView, "frozen", a, live)

	// New samples land in the next live delta, on top of the frozen one.
	write(t, st, coordinator.Applied,
		Sample{"cpu", a, 59_000, -3},
		Sample{"cpu", a, 61_000, 7}, // same time as an older sample: applied later, so it is Last
	)
	both := []rangeWant{
		{0, 60_000, Agg{Count: 3, Sum: 3, Min: -3, Max: 5, LastT: 59_000, Last: -3}},
		{0, 120_000, Agg{Count: 5, Sum: 12, Min: -3, Max: 7, LastT: 61_000, Last: 7}},
	}
	checkRanges(t, st, st.Coordinator().View(), "frozen+live", a, both)
	checkRanges(t, st, st.Coordinator().View(), "frozen+live", b,
		[]rangeWant{{0, 60_000, Agg{Count: 1, Sum: 100, Min: 100, Max: 100, LastT: 3_000, Last: 100}}})

	// Write the frozen delta, then the live one.
	close(gate.release)
	if _, err := st.Coordinator().Flush(ctx, coordinator.Written); err != nil {
		t.Fatal(err)
	}
	v = st.Coordinator().View()
	if len(v.Frozen) != 0 || v.Snapshot.Gen != 6 {
		t.Fatalf("view after flush: %d frozen, gen %d; want 0, 6", len(v.Frozen), v.Snapshot.Gen)
	}
	checkRanges(t, st, v, "written", a, both)
	// The view taken while the first delta was frozen still answers as it
	// did: its snapshot (gen 0) excludes the rows now in SQLite, and its
	// frozen delta and live reader supply them instead.
	checkRanges(t, st, frozenView, "old view after flush", a, []rangeWant{
		{0, 120_000, Agg{Count: 5, Sum: 12, Min: -3, Max: 7, LastT: 61_000, Last: 7}},
	})
	// The view taken before the freeze reads everything from its live
	// reader: the first delta, frozen and written since, and nothing else.
	checkRanges(t, st, liveView, "live view after flush", a, live)

	// After a restart the same answers come from storage alone.
	if err := st.Close(ctx); err != nil {
		t.Fatal(err)
	}
	st2 := openStore(t, dir, Options{Coordinator: quiet()})
	v = st2.Coordinator().View()
	if v.Snapshot.Gen != 6 {
		t.Fatalf("reopened snapshot gen = %d; want 6", v.Snapshot.Gen)
	}
	checkRanges(t, st2, v, "reopened", a, both)
	// New writes continue the generations and merge with the stored rows.
	write(t, st2, coordinator.Written, Sample{"cpu", a, 0, 10})
	if gen := st2.Coordinator().View().Snapshot.Gen; gen != 7 {
		t.Errorf("gen after one more write = %d; want 7", gen)
	}
	checkRanges(t, st2, st2.Coordinator().View(), "reopened+1", a,
		[]rangeWant{{0, 60_000, Agg{Count: 4, Sum: 13, Min: -3, Max: 10, LastT: 59_000, Last: -3}}})
}

// TestReaderSeesEverySample writes samples one at a time while deltas are
// frozen by size and flushed to SQLite concurrently, and after each one
// checks that a fresh view counts exactly the samples applied so far; a
// concurrent reader checks that successive views never go back.
func TestReaderSeesEverySample(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, t.TempDir(), Options{Coordinator: coordinator.Config{
		FlushSize:         1000, // a few samples per delta
		MaxPendingFlushes: 1,
		FlushInterval:     time.Hour,
	}})
	labels := Labels{"host": "a"}
	const n = 300
	c := st.Coordinator()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var readerErr, flushErr error
	wg.Go(func() { // flushes and checkpoints all the time
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Flush(ctx, coordinator.Durable); err != nil {
				flushErr = err
				return
			}
		}
	})
	wg.Go(func() { // successive views never lose samples
		var last int64
		for {
			select {
			case <-stop:
				return
			default:
			}
			a, err := st.Query(ctx, c.View(), "cpu", labels, 0, math.MaxInt64)
			if err != nil {
				readerErr = err
				return
			}
			if a.Count < last {
				readerErr = errors.New("count went back")
				return
			}
			last = a.Count
		}
	})

	var sum float64
	sawFrozen, sawSnapshot := false, false
	for i := range n {
		// Spread the samples over several buckets; values are integers so
		// sums are exact whatever the order of addition.
		s := Sample{"cpu", labels, int64(i) * 7_000, float64(i%10 + 1)}
		write(t, st, coordinator.Applied, s)
		sum += s.V
		v := c.View()
		sawFrozen = sawFrozen || len(v.Frozen) > 0
		sawSnapshot = sawSnapshot || v.Snapshot.Gen > 0
		got := query(t, st, v, "cpu", labels, 0, math.MaxInt64)
		want := Agg{Count: int64(i + 1), Sum: sum, Min: 1, Max: float64(min(i+1, 10)), LastT: s.T, Last: s.V}
		if got != want {
			t.Fatalf("after sample %d (view: %d frozen, gen %d): Query = %+v; want %+v",
				i, len(v.Frozen), v.Snapshot.Gen, got, want)
		}
	}
	close(stop)
	wg.Wait()
	if readerErr != nil || flushErr != nil {
		t.Fatalf("reader: %v, flusher: %v", readerErr, flushErr)
	}
	if !sawSnapshot {
		t.Errorf("no view had a snapshot with data: the test did not exercise flushes")
	}
	t.Logf("views with frozen deltas seen: %v; deltas written: %d", sawFrozen, c.Stats().FlushDelta.Count)
}

// TestSeriesIDs checks that a series keeps its ID whatever the label order,
// across freezes and across restarts, and that new series get new IDs.
func TestSeriesIDs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := openStore(t, dir, Options{Coordinator: quiet()})
	cases := []struct {
		s    Sample
		want SeriesID
	}{
		{Sample{"cpu", Labels{"host": "a", "dc": "eu"}, 0, 1}, 1},
		{Sample{"cpu", Labels{"dc": "eu", "host": "a"}, 0, 1}, 1},
		{Sample{"cpu", Labels{"host": "b", "dc": "eu"}, 0, 1}, 2},
		{Sample{"mem", Labels{"host": "a", "dc": "eu"}, 0, 1}, 3},
		{Sample{"mem", nil, 0, 1}, 4},
		{Sample{"mem", Labels{}, 0, 1}, 4},
	}
	check := func(stage string, st *Store, level coordinator.Durability) {
		t.Helper()
		for _, c := range cases {
			if got := write(t, st, level, c.s)[0]; got != c.want {
				t.Errorf("%s: Write(%v%v) = series %d; want %d", stage, c.s.Metric, c.s.Labels, got, c.want)
			}
		}
	}
	check("first delta", st, coordinator.Applied)
	check("next delta", st, coordinator.Written)
	if err := st.Close(ctx); err != nil {
		t.Fatal(err)
	}
	st = openStore(t, dir, Options{Coordinator: quiet()})
	check("after restart", st, coordinator.Applied)
	if got := write(t, st, coordinator.Applied, Sample{"disk", nil, 0, 1})[0]; got != 5 {
		t.Errorf("new series after restart = %d; want 5", got)
	}
	if err := st.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// The series table holds exactly the dictionary.
	db, err := openDB(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	series, _, _, err := loadState(ctx, db, 60_000)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`cpu{dc="eu",host="a"}`, `cpu{dc="eu",host="b"}`, `mem{dc="eu",host="a"}`, `mem{}`, `disk{}`}
	if len(series) != len(want) {
		t.Fatalf("series table has %d rows; want %d", len(series), len(want))
	}
	for i, s := range series {
		if s.ID != SeriesID(i+1) || s.Key() != want[i] {
			t.Errorf("series row %d = %d %s; want %d %s", i, s.ID, s.Key(), i+1, want[i])
		}
	}
}

// TestRejectedSamples checks that invalid samples are rejected with an
// ApplyError and change nothing: no series ID is used up, no aggregate.
func TestRejectedSamples(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, t.TempDir(), Options{Coordinator: quiet()})
	ch := st.Coordinator().Channel("default")
	for _, s := range []Sample{
		{"", nil, 0, 1},
		{"9cpu", nil, 0, 1},
		{"cpu", Labels{"": "x"}, 0, 1},
		{"cpu", Labels{"host-name": "x"}, 0, 1},
		{"cpu", nil, 0, math.NaN()},
		{"cpu", nil, 0, math.Inf(-1)},
	} {
		h, err := ch.Write(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.Wait(ctx, coordinator.Written)
		var ae *coordinator.ApplyError
		if !errors.As(err, &ae) || !errors.Is(err, errInvalidSample) {
			t.Errorf("Write(%+v) = %v; want an ApplyError wrapping %v", s, err, errInvalidSample)
		}
	}
	if n := st.Dict().Len(); n != 0 {
		t.Errorf("dictionary has %d series after rejected samples; want 0", n)
	}
	if got := write(t, st, coordinator.Written, Sample{"cpu", nil, 0, 4})[0]; got != 1 {
		t.Errorf("first valid series = %d; want 1", got)
	}
	want := Agg{Count: 1, Sum: 4, Min: 4, Max: 4, Last: 4}
	if got := query(t, st, st.Coordinator().View(), "cpu", nil, math.MinInt64, math.MaxInt64); got != want {
		t.Errorf("Query(cpu) = %+v; want %+v", got, want)
	}
}

// TestDurableMeansCheckpointed checks what FlushStorage promises: once a
// write is Durable, the main database file holds it without the WAL. It
// copies the file alone and reads the copy.
func TestDurableMeansCheckpointed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := openStore(t, dir, Options{Coordinator: quiet()})
	labels := Labels{"host": "a"}
	for i := range 50 {
		write(t, st, coordinator.Written, Sample{"cpu", labels, int64(i) * 1000, 2})
	}
	write(t, st, coordinator.Durable, Sample{"cpu", labels, 50_000, 2})

	data, err := os.ReadFile(filepath.Join(dir, "timeseries.db"))
	if err != nil {
		t.Fatal(err)
	}
	copyDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(copyDir, "timeseries.db"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	db, err := openDB(copyDir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, gen, _, err := loadState(ctx, db, 60_000)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Snapshot{DB: db, Gen: gen}.Range(ctx, 1, 0, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	want := Agg{Count: 51, Sum: 102, Min: 2, Max: 2, LastT: 50_000, Last: 2}
	if gen != 51 || got != want {
		t.Errorf("database file without its WAL: gen %d, Range = %+v; want gen 51, %+v", gen, got, want)
	}
}

// TestFlushDeltaRetry calls the flusher twice with the same delta, as the
// coordinator's retry policy may: the second call must not add rows.
func TestFlushDeltaRetry(t *testing.T) {
	ctx := context.Background()
	db, err := openDB(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d := NewDelta(NewDict(nil), 60_000)
	for _, v := range []float64{1, 2, 3} {
		if _, err := d.Apply(Sample{"cpu", nil, int64(v) * 1000, v}); err != nil {
			t.Fatal(err)
		}
	}
	fr, _, _ := d.Freeze()
	f := &Flusher{db: db}
	epochs := coordinator.EpochRange{Start: 1, End: 4}
	for try := 1; try <= 2; try++ {
		snap, err := f.FlushDelta(ctx, fr, epochs)
		if err != nil {
			t.Fatalf("FlushDelta try %d: %v", try, err)
		}
		got, err := snap.Range(ctx, 1, 0, 60_000)
		want := Agg{Count: 3, Sum: 6, Min: 1, Max: 3, LastT: 3000, Last: 3}
		if err != nil || got != want || snap.Gen != 3 {
			t.Errorf("after FlushDelta try %d: gen %d, Range = %+v, %v; want gen 3, %+v", try, snap.Gen, got, err, want)
		}
	}
	if err := f.FlushStorage(ctx); err != nil {
		t.Errorf("FlushStorage: %v", err)
	}
}

func TestBucketWidth(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir, Options{BucketWidth: 10 * time.Second, Coordinator: quiet()})
	write(t, st, coordinator.Written,
		Sample{"cpu", nil, 9_999, 1},
		Sample{"cpu", nil, 10_000, 2},
	)
	if err := st.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), dir, Options{BucketWidth: time.Minute}); err == nil {
		t.Fatalf("Open with another bucket width succeeded; want an error")
	}
	st = openStore(t, dir, Options{Coordinator: quiet()})
	if w := st.BucketWidth(); w != 10*time.Second {
		t.Errorf("BucketWidth() of reopened store = %v; want 10s", w)
	}
	want := Agg{Count: 1, Sum: 2, Min: 2, Max: 2, LastT: 10_000, Last: 2}
	if got := query(t, st, st.Coordinator().View(), "cpu", nil, 10_000, 20_000); got != want {
		t.Errorf("Query([10s, 20s)) = %+v; want %+v", got, want)
	}
}

func TestBucketOf(t *testing.T) {
	for _, c := range []struct{ t, w, want int64 }{
		{0, 60, 0}, {59, 60, 0}, {60, 60, 60}, {-1, 60, -60}, {-60, 60, -60}, {-61, 60, -120},
	} {
		if got := bucketOf(c.t, c.w); got != c.want {
			t.Errorf("bucketOf(%d, %d) = %d; want %d", c.t, c.w, got, c.want)
		}
	}
}
