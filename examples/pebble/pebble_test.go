package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/groupcommit/coordinator"
	"go.uber.org/goleak"
)

// Every test closes its pebble databases (openStore registers Close as a
// cleanup), so pebble's goroutines are gone when goleak looks.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var ctx = context.Background()

// manual is a config under which only explicit Flush calls and Stop freeze
// deltas, so a test decides what is live, frozen and written.
var manual = coordinator.Config{DisableFlushOnWait: true}

func openStore(t *testing.T, dir string, opts *pebble.Options, cfg coordinator.Config) *Store {
	t.Helper()
	return openHooked(t, dir, opts, cfg, nil)
}

func openHooked(t *testing.T, dir string, opts *pebble.Options, cfg coordinator.Config, beforeCommit func(*Frozen)) *Store {
	t.Helper()
	st, err := open(dir, opts, cfg, beforeCommit)
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	t.Cleanup(func() {
		if err := st.Close(ctx); err != nil {
			t.Errorf("Close = %v", err)
		}
	})
	return st
}

func closeStore(t *testing.T, st *Store) {
	t.Helper()
	if err := st.Close(ctx); err != nil {
		t.Fatalf("Close = %v", err)
	}
}

// write writes op and waits until it reaches level; it returns the epoch.
func write(t *testing.T, st *Store, level coordinator.Durability, op Op) uint64 {
	t.Helper()
	e, err := st.Write(ctx, op, level)
	if err != nil {
		t.Fatalf("Write(%q, %v) = %v", op.Key, level, err)
	}
	return e
}

func flush(t *testing.T, st *Store, level coordinator.Durability) {
	t.Helper()
	if _, err := st.Coordinator().Flush(ctx, level); err != nil {
		t.Fatalf("Flush(%v) = %v", level, err)
	}
}

// expect checks Get(v, key); want nil means absent.
func expect(t *testing.T, v *View, key string, want []byte) {
	t.Helper()
	got, ok, err := Get(v, key)
	if err != nil || ok != (want != nil) || !bytes.Equal(got, want) {
		t.Errorf("Get(%q) = %q, %v, %v; want %q, %v, nil", key, got, ok, err, want, want != nil)
	}
}

// inPebble reads key from a snapshot directly, bypassing the deltas.
func inPebble(t *testing.T, s *Snapshot, key string) []byte {
	t.Helper()
	v, ok, err := s.get(key)
	if err != nil {
		t.Fatalf("snapshot at epoch %d: get(%q) = %v", s.Epoch, key, err)
	}
	if !ok {
		return nil
	}
	return v
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir, nil, coordinator.Config{})
	const writers, ops = 4, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range ops {
				op, k := opOf(w, i)
				if _, err := st.Write(ctx, op, coordinator.Durable); err != nil {
					t.Errorf("Write(%q) = %v", k, err)
					return
				}
				if err := check(st, k, op.Value); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if d := st.Coordinator().Watermarks().Durable; d != writers*ops {
		t.Fatalf("durable watermark = %d; want %d", d, writers*ops)
	}
	closeStore(t, st)

	st = openStore(t, dir, nil, coordinator.Config{})
	if e, _ := st.Resumed(); e != writers*ops {
		t.Errorf("Resumed() epoch = %d; want %d", e, writers*ops)
	}
	for w := range writers {
		for i := range ops {
			if err := check(st, key(w, i), want(w, i, ops)); err != nil {
				t.Error(err)
			}
		}
	}
}

// TestGetLayers reads a hand-built view: live delta over frozen deltas
// (newest first) over the pebble snapshot, with tombstones at each level.
func TestGetLayers(t *testing.T) {
	st := openStore(t, t.TempDir(), nil, manual)
	for _, k := range []string{"s", "f1", "f2", "live", "gone-in-frozen", "gone-live"} {
		write(t, st, coordinator.Applied, Put(k, []byte("snapshot")))
	}
	flush(t, st, coordinator.Written)
	rd, err := st.Read()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()

	apply := func(d *Delta, ops ...Op) {
		for _, op := range ops {
			if _, err := d.Apply(op); err != nil {
				t.Fatalf("Apply(%+v) = %v", op, err)
			}
		}
	}
	older := NewDelta(10)
	apply(older, Put("f1", []byte("older")), Put("f2", []byte("older")), Put("only-frozen", []byte("older")))
	olderF, _, next := older.Freeze()
	newer := NewDelta(next)
	apply(newer, Put("f2", []byte("newer")), Delete("gone-in-frozen"))
	newerF, _, next := newer.Freeze()
	live := NewDelta(next)
	apply(live, Put("live", []byte("live")), Delete("gone-live"), Put("f1", []byte("live")))

	v := &View{
		Current:  live.Reader(),
		Frozen:   []coordinator.FrozenDelta[*Frozen]{{View: newerF}, {View: olderF}},
		Snapshot: rd.View().Snapshot,
	}
	tests := []struct {
		key  string
		want []byte
	}{
		{"s", []byte("snapshot")},
		{"f1", []byte("live")},
		{"f2", []byte("newer")},
		{"only-frozen", []byte("older")},
		{"live", []byte("live")},
		{"gone-in-frozen", nil},
		{"gone-live", nil},
		{"missing", nil},
		{reservedPrefix + "coordinator/meta", nil},
	}
	for _, tt := range tests {
		expect(t, v, tt.key, tt.want)
	}
}

// TestReadsBeforeAndAfterFlush follows writes through the real pipeline:
// live, frozen while the flusher is held, then written to pebble.
func TestReadsBeforeAndAfterFlush(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	hold := func(f *Frozen) {
		if f.Batch() == 2 {
			entered <- struct{}{}
			<-release
		}
	}
	st := openHooked(t, t.TempDir(), nil, manual, hold)
	t.Cleanup(unblock) // runs before the Close registered by openHooked
	c := st.Coordinator()

	write(t, st, coordinator.Applied, Put("a", []byte("1")))
	v := c.View()
	expect(t, v, "a", []byte("1"))
	if got := inPebble(t, v.Snapshot, "a"); got != nil || v.Snapshot.Epoch != 0 {
		t.Errorf("before any flush: pebble holds a = %q at epoch %d; want nothing at 0", got, v.Snapshot.Epoch)
	}

	flush(t, st, coordinator.Written) // batch 1
	v = c.View()
	expect(t, v, "a", []byte("1"))
	if got := inPebble(t, v.Snapshot, "a"); string(got) != "1" || v.Snapshot.Epoch != 1 || len(v.Frozen) != 0 {
		t.Errorf("after the flush: pebble holds a = %q at epoch %d with %d frozen; want 1 at 1 with 0",
			got, v.Snapshot.Epoch, len(v.Frozen))
	}

	// Batch 2 stays in the flusher, batch 3 waits behind it.
	write(t, st, coordinator.Applied, Put("b", []byte("1")))
	flush(t, st, coordinator.Applied)
	<-entered
	write(t, st, coordinator.Applied, Put("a", []byte("2")))
	flush(t, st, coordinator.Applied)
	v = c.View()
	if len(v.Frozen) != 2 || v.Frozen[0].View.Batch() != 3 || v.Frozen[1].View.Batch() != 2 {
		t.Fatalf("view holds %d frozen deltas; want batches 3 and 2", len(v.Frozen))
	}
	expect(t, v, "a", []byte("2"))
	expect(t, v, "b", []byte("1"))
	if got := inPebble(t, v.Snapshot, "b"); got != nil {
		t.Errorf("pebble holds b = %q while its batch is held; want nothing", got)
	}
	write(t, st, coordinator.Applied, Delete("a"))
	expect(t, c.View(), "a", nil)
	expect(t, v, "a", nil) // v.Current is the live delta: it sees the delete

	unblock()
	flush(t, st, coordinator.Written)
	v = c.View()
	if len(v.Frozen) != 0 || v.Snapshot.Epoch != 4 || v.Snapshot.Batch != 4 {
		t.Errorf("after the flushes: %d frozen, snapshot at epoch %d, batch %d; want 0, 4, 4",
			len(v.Frozen), v.Snapshot.Epoch, v.Snapshot.Batch)
	}
	expect(t, v, "a", nil)
	expect(t, v, "b", []byte("1"))
	if got := inPebble(t, v.Snapshot, "b"); string(got) != "1" {
		t.Errorf("pebble holds b = %q; want 1", got)
	}
}

// TestSnapshotLifetime checks the rule of Snapshot: the flusher keeps a
// snapshot until the second flush after it, a Reader keeps it until it is
// closed, and a released snapshot is reported, not read.
func TestSnapshotLifetime(t *testing.T) {
	st := openStore(t, t.TempDir(), nil, manual)
	c := st.Coordinator()
	put := func(k, v string) {
		write(t, st, coordinator.Applied, Put(k, []byte(v)))
		flush(t, st, coordinator.Written)
	}
	openSnapshots := func(when string, want int) {
		t.Helper()
		if n := st.OpenSnapshots(); n != want {
			t.Errorf("%s: %d open snapshots; want %d", when, n, want)
		}
	}
	openSnapshots("after Open", 1)
	v0 := c.View() // the initial snapshot; "zzz" is in no delta, so Get reads it

	put("a", "1") // batch 1
	if _, _, err := Get(v0, "zzz"); err != nil {
		t.Errorf("one flush later: Get(initial view) = %v; want nil", err)
	}
	rd, err := st.Read()
	if err != nil {
		t.Fatal(err)
	}
	v1 := c.View() // unpinned, but shares rd's snapshot
	if v1.Snapshot != rd.View().Snapshot {
		t.Fatal("Read and View disagree on the latest snapshot")
	}

	put("b", "1") // batch 2: the flusher lets go of the initial snapshot
	if _, _, err := Get(v0, "zzz"); !errors.Is(err, ErrReleased) {
		t.Errorf("two flushes later: Get(initial view) = %v; want ErrReleased", err)
	}
	openSnapshots("after batch 2", 2)
	put("a", "2") // batch 3: the flusher lets go of snapshot 1, which rd pins
	for i := range 5 {
		put("c", fmt.Sprint(i))
	}
	openSnapshots("with one Reader", 3)
	expect(t, v1, "a", []byte("1")) // v1.Current is batch 2's delta, without a
	if got, ok, err := rd.Get("a"); err != nil || !ok || string(got) != "1" {
		t.Errorf("pinned Reader: Get(a) = %q, %v, %v; want 1, true, nil", got, ok, err)
	}

	if err := rd.Close(); err != nil {
		t.Fatalf("Reader.Close = %v", err)
	}
	if err := rd.Close(); err != nil {
		t.Fatalf("second Reader.Close = %v", err)
	}
	openSnapshots("after Reader.Close", 2)
	if _, _, err := Get(v1, "a"); !errors.Is(err, ErrReleased) {
		t.Errorf("Get(unpinned old view) = %v; want ErrReleased", err)
	}
	if _, _, err := rd.Get("a"); !errors.Is(err, ErrReleased) {
		t.Errorf("closed Reader: Get = %v; want ErrReleased", err)
	}
	expect(t, c.View(), "a", []byte("2"))
}

// TestReadersRaceFlushes reads through pinned views while deltas are
// flushed, so snapshots are released concurrently with reads.
func TestReadersRaceFlushes(t *testing.T) {
	st := openStore(t, t.TempDir(), nil, coordinator.Config{})
	const n = 200
	var written atomic.Int64 // ops known to be Written
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			if _, err := st.Write(ctx, Put(key(0, i), value(0, i)), coordinator.Written); err != nil {
				t.Errorf("Write = %v", err)
				return
			}
			written.Store(int64(i + 1))
		}
	})
	for range 2 {
		wg.Go(func() {
			for done := int64(0); done < n; {
				done = written.Load()
				// Unpinned reads of the latest view may find its snapshot
				// released; pinned ones never do.
				if _, _, err := Get(st.Coordinator().View(), key(0, 0)); err != nil && !errors.Is(err, ErrReleased) {
					t.Errorf("Get = %v", err)
				}
				rd, err := st.Read()
				if err != nil {
					t.Errorf("Read = %v", err)
					return
				}
				for j := max(0, int(done)-10); j < int(done); j++ {
					if got, ok, err := rd.Get(key(0, j)); err != nil || !ok || !bytes.Equal(got, value(0, j)) {
						t.Errorf("Reader.Get(%q) = %q, %v, %v; want %q", key(0, j), got, ok, err, value(0, j))
					}
				}
				rd.Close()
			}
		})
	}
	wg.Wait()
	if c := st.Coordinator().Stats().FlushDelta.Count; c < 2 {
		t.Errorf("%d batches written; want several", c)
	}
	if n := st.OpenSnapshots(); n > 2 {
		t.Errorf("%d open snapshots with no Reader; want at most 2", n)
	}
}

func TestCloseWithOpenReader(t *testing.T) {
	st := openStore(t, t.TempDir(), nil, coordinator.Config{})
	write(t, st, coordinator.Written, Put("a", []byte("1")))
	rd, err := st.Read()
	if err != nil {
		t.Fatal(err)
	}
	closeStore(t, st)
	if _, _, err := rd.Get("a"); !errors.Is(err, ErrClosed) {
		t.Errorf("Reader.Get after Close = %v; want ErrClosed", err)
	}
	if _, err := st.Read(); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close = %v; want ErrClosed", err)
	}
	if err := rd.Close(); err != nil {
		t.Errorf("Reader.Close after Close = %v", err)
	}
	if err := st.Close(ctx); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

// TestReadDuringClose reads while the store closes: every read either
// succeeds or reports ErrClosed, and Close does not wait for Readers.
func TestReadDuringClose(t *testing.T) {
	st := openStore(t, t.TempDir(), nil, coordinator.Config{})
	write(t, st, coordinator.Written, Put("a", []byte("1")))
	var wg sync.WaitGroup
	started := make(chan struct{}, 2)
	for range 2 {
		wg.Go(func() {
			started <- struct{}{}
			for {
				rd, err := st.Read()
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Read = %v", err)
					return
				}
				got, _, err := rd.Get("a")
				if err != nil && !errors.Is(err, ErrClosed) || err == nil && string(got) != "1" {
					t.Errorf("Reader.Get(a) = %q, %v; want 1 or ErrClosed", got, err)
				}
				if err := rd.Close(); err != nil {
					t.Errorf("Reader.Close = %v", err)
				}
			}
		})
	}
	<-started
	<-started
	closeStore(t, st)
	wg.Wait()
}

func TestRestartContinuesEpochs(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir, nil, manual)
	for i := range 5 {
		if e := write(t, st, coordinator.Applied, Put(key(0, i), value(0, i))); e != uint64(i+1) {
			t.Fatalf("epoch of write %d = %d; want %d", i, e, i+1)
		}
		if i%2 == 1 {
			flush(t, st, coordinator.Written) // batches 1 and 2: epochs 1-2, 3-4
		}
	}
	if b := st.Coordinator().View().Snapshot.Batch; b != 2 {
		t.Fatalf("after two flushes: snapshot of batch %d; want 2", b)
	}
	closeStore(t, st) // writes batch 3: epoch 5
	batch := uint64(3)

	for round, first := range []uint64{6, 9} {
		st = openStore(t, dir, nil, coordinator.Config{})
		if e, b := st.Resumed(); e != first-1 || b != batch {
			t.Fatalf("round %d: Resumed() = %d, %d; want %d, %d", round, e, b, first-1, batch)
		}
		if w := st.Coordinator().Watermarks(); w.Durable != first-1 || st.Coordinator().View().Written != first-1 {
			t.Errorf("round %d: watermarks %+v, view written %d; want all at %d", round, w, st.Coordinator().View().Written, first-1)
		}
		for i := range 3 {
			if e := write(t, st, coordinator.Durable, Put("k", []byte("v"))); e != first+uint64(i) {
				t.Errorf("round %d: epoch of write %d = %d; want %d", round, i, e, first+uint64(i))
			}
			batch++ // each Durable wait of a lone writer flushes one batch
		}
		if s := st.Coordinator().View().Snapshot; s.Batch != batch || s.Epoch != first+2 {
			t.Errorf("round %d: snapshot at batch %d, epoch %d; want %d, %d", round, s.Batch, s.Epoch, batch, first+2)
		}
		closeStore(t, st)
	}
	st = openStore(t, dir, nil, coordinator.Config{})
	for i := range 5 {
		if err := check(st, key(0, i), value(0, i)); err != nil {
			t.Error(err)
		}
	}
}

func TestDeletes(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir, nil, coordinator.Config{})
	write(t, st, coordinator.Durable, Put("x", []byte("1")))
	write(t, st, coordinator.Durable, Put("y", []byte("1")))
	write(t, st, coordinator.Applied, Delete("x"))
	expect(t, st.Coordinator().View(), "x", nil) // a tombstone in a delta hides pebble's x
	write(t, st, coordinator.Written, Delete("x"))
	v := st.Coordinator().View()
	if got := inPebble(t, v.Snapshot, "x"); got != nil {
		t.Errorf("pebble still holds x = %q after the delete was written", got)
	}
	write(t, st, coordinator.Durable, Delete("never-written"))
	write(t, st, coordinator.Applied, Put("x", []byte("2")))
	write(t, st, coordinator.Applied, Delete("y"))
	closeStore(t, st)

	st = openStore(t, dir, nil, coordinator.Config{})
	v = st.Coordinator().View()
	expect(t, v, "x", []byte("2"))
	expect(t, v, "y", nil)
	expect(t, v, "never-written", nil)
}

func TestApplyRejects(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir, nil, coordinator.Config{})
	tests := []Op{
		Put("", []byte("v")),
		Put(reservedPrefix+"coordinator/meta", []byte("v")),
		Put(strings.Repeat("k", MaxKeyLen+1), nil),
		Put("k", make([]byte, MaxValueLen+1)),
		{Key: "k", Value: []byte("v"), Delete: true},
	}
	for i, op := range tests {
		_, err := st.Write(ctx, op, coordinator.Durable)
		var ae *coordinator.ApplyError
		if !errors.As(err, &ae) || !errors.Is(err, errInvalidOp) || ae.Epoch != uint64(i+1) {
			t.Errorf("Write(%.20q) = %v; want an ApplyError at epoch %d wrapping errInvalidOp", op.Key, err, i+1)
		}
	}
	write(t, st, coordinator.Durable, Put("k", []byte("v")))
	closeStore(t, st)
	// Rejected writes keep their epochs: the meta record counts them.
	st = openStore(t, dir, nil, coordinator.Config{})
	if e, _ := st.Resumed(); e != uint64(len(tests)+1) {
		t.Errorf("Resumed() epoch = %d; want %d", e, len(tests)+1)
	}
	expect(t, st.Coordinator().View(), "k", []byte("v"))
}

// TestCrash simulates a machine crash on pebble's in-memory file system:
// what was Durable survives, what was only Written does not, and the
// reopened store reuses the lost epochs.
func TestCrash(t *testing.T) {
	fs := vfs.NewCrashableMem()
	st := openStore(t, "db", &pebble.Options{FS: fs}, coordinator.Config{})
	durable := write(t, st, coordinator.Durable, Put("a", []byte("durable")))
	write(t, st, coordinator.Written, Put("b", []byte("written")))
	crashed := fs.CrashClone(vfs.CrashCloneCfg{}) // exactly what was synced
	closeStore(t, st)

	st = openStore(t, "db", &pebble.Options{FS: crashed}, coordinator.Config{})
	if e, _ := st.Resumed(); e != durable {
		t.Errorf("after the crash: Resumed() epoch = %d; want %d", e, durable)
	}
	v := st.Coordinator().View()
	expect(t, v, "a", []byte("durable"))
	expect(t, v, "b", nil)
	if e := write(t, st, coordinator.Durable, Put("c", nil)); e != durable+1 {
		t.Errorf("first write after the crash has epoch %d; want %d", e, durable+1)
	}
}

// TestEmptySyncedBatchSyncsNothing shows why FlushStorage uses LogData: an
// empty batch committed with pebble.Sync does not sync the WAL.
func TestEmptySyncedBatchSyncsNothing(t *testing.T) {
	fs := vfs.NewCrashableMem()
	db, err := pebble.Open("db", &pebble.Options{FS: fs, Logger: quietLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	survives := func(step string) bool {
		crashed, err := pebble.Open("db", &pebble.Options{FS: fs.CrashClone(vfs.CrashCloneCfg{}), Logger: quietLogger{}})
		if err != nil {
			t.Fatalf("%s: reopening the crash clone: %v", step, err)
		}
		defer crashed.Close()
		_, closer, err := crashed.Get([]byte("k"))
		if err == nil {
			closer.Close()
		}
		return err == nil
	}
	if err := db.Set([]byte("k"), []byte("v"), pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if survives("NoSync") {
		t.Fatal("a NoSync write survived a crash; the test cannot tell syncs apart")
	}
	b := db.NewBatch()
	if err := db.Apply(b, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if survives("empty synced batch") {
		t.Error("an empty synced batch synced the WAL; FlushStorage's comment is out of date")
	}
	if err := db.LogData(nil, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if !survives("LogData") {
		t.Error("LogData(nil, Sync) did not sync the WAL")
	}
}

func TestOpenRejectsDisabledWAL(t *testing.T) {
	opts := &pebble.Options{FS: vfs.NewMem(), DisableWAL: true}
	if st, err := Open("db", opts, coordinator.Config{}); err == nil {
		st.Close(ctx)
		t.Fatal("Open with DisableWAL = nil; want an error")
	}
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	var last uint64
	for round := range 2 { // the second round reopens the first's database
		r, err := run(ctx, dir, 3, 40)
		if err != nil {
			t.Fatalf("round %d: run = %v", round, err)
		}
		// Per writer, ops 9, 19, 29, 39 delete keys 4, 14, 24, 34 and keys
		// 9, 19, 29, 39 are never written.
		if r.ops != 120 || r.present != 96 || r.gone != 24 {
			t.Errorf("round %d: %d ops, %d present, %d gone; want 120, 96, 24", round, r.ops, r.present, r.gone)
		}
		// The first round ends with the write made after reopening.
		if r.resumed != last || r.last != last+120 || r.next != r.last+1 {
			t.Errorf("round %d: epochs resumed %d, last %d, next %d; want %d, %d, %d",
				round, r.resumed, r.last, r.next, last, last+120, last+121)
		}
		last = r.next
		if !strings.HasPrefix(r.String(), "pebble: OK: 120 ops from 3 writers durable in ") {
			t.Errorf("report = %q", r)
		}
	}
	if _, err := run(ctx, t.TempDir(), 0, 1); err == nil {
		t.Error("run with 0 writers = nil; want an error")
	}
}
