package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/groupcommit/coordinator"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tableOf applies ops to a fresh delta and returns its table.
func tableOf(t testing.TB, ops ...Op) *Table {
	t.Helper()
	d := NewDelta(DeltaContext{Seq: 1})
	for _, op := range ops {
		if _, err := d.Apply(op); err != nil {
			t.Fatalf("Apply(%+v) = %v", op, err)
		}
	}
	return d.Reader()
}

// contents returns what a table holds, deletions as "<deleted>".
func contents(t *Table) map[string]string {
	m := make(map[string]string)
	t.mu.RLock()
	defer t.mu.RUnlock()
	for k, e := range t.m {
		if e.deleted {
			m[k] = "<deleted>"
		} else {
			m[k] = string(e.value)
		}
	}
	return m
}

func TestSegmentRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789"), 100_000)
	tests := []struct {
		name string
		ops  []Op
	}{
		{"one put", []Op{Put("a", []byte("1"))}},
		{"one delete", []Op{Delete("gone")}},
		{"empty value", []Op{Put("k", nil), Put("k2", []byte{})}},
		{"overwrites keep the last", []Op{Put("a", []byte("1")), Put("a", []byte("2")), Delete("b"), Put("b", []byte("3"))}},
		{"put then delete", []Op{Put("a", []byte("1")), Delete("a")}},
		{"binary and unicode", []Op{Put("\x00\xff", []byte{0, 1, 2}), Put("ключ", []byte("значение")), Put("z", big)}},
		{"many keys", func() []Op {
			var ops []Op
			for i := range 1000 {
				ops = append(ops, Put(fmt.Sprintf("k%04d", 999-i), []byte(strings.Repeat("v", i%13))))
			}
			return ops
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			table := tableOf(t, tt.ops...)
			epochs := coordinator.EpochRange{Start: 7, End: 7 + uint64(len(tt.ops))}
			data := encodeSegment(42, epochs, table)
			h, got, err := decodeSegment(data)
			if err != nil {
				t.Fatalf("decodeSegment(encodeSegment(...)) = %v", err)
			}
			if h.seq != 42 || h.epochs != epochs || int(h.count) != table.Len() {
				t.Errorf("header = %+v; want seq 42, epochs %v, count %d", h, epochs, table.Len())
			}
			want, gotC := contents(table), contents(got)
			if len(gotC) != len(want) {
				t.Fatalf("decoded %d keys; want %d", len(gotC), len(want))
			}
			for k, v := range want {
				if gotC[k] != v {
					t.Errorf("decoded[%q] = %.40q; want %.40q", k, gotC[k], v)
				}
			}
			if again := encodeSegment(42, epochs, got); !bytes.Equal(again, data) {
				t.Errorf("re-encoding the decoded segment changed it")
			}
		})
	}
}

func TestSegmentLayout(t *testing.T) {
	data := encodeSegment(3, coordinator.EpochRange{Start: 10, End: 12}, tableOf(t, Put("b", []byte("xy")), Delete("a")))
	// header 48 + "a" delete (9+1) + "b" put (9+1+2) + crc 4
	if len(data) != 48+10+12+4 {
		t.Fatalf("len = %d; want %d", len(data), 48+10+12+4)
	}
	if got := string(data[:8]); got != "KVSEG\x00\x00\x01" {
		t.Errorf("magic = %q", got)
	}
	if data[48] != byte(OpDelete) || data[48+9] != 'a' || data[58] != byte(OpPut) || string(data[67:70]) != "bxy" {
		t.Errorf("records not in key order with the documented layout: % x", data[48:70])
	}
}

func TestDecodeSegmentRejectsTruncation(t *testing.T) {
	data := encodeSegment(1, coordinator.EpochRange{Start: 1, End: 4},
		tableOf(t, Put("alpha", []byte("one")), Put("beta", []byte("two")), Delete("gamma")))
	for n := range len(data) {
		if _, _, err := decodeSegment(data[:n]); !errors.Is(err, errCorrupt) {
			t.Errorf("decodeSegment(first %d of %d bytes) = %v; want errCorrupt", n, len(data), err)
		}
	}
	if _, _, err := decodeSegment(append(slices.Clone(data), 0)); !errors.Is(err, errCorrupt) {
		t.Errorf("decodeSegment(with a trailing byte) = %v; want errCorrupt", err)
	}
}

func TestDecodeSegmentRejectsBitFlips(t *testing.T) {
	data := encodeSegment(1, coordinator.EpochRange{Start: 1, End: 4},
		tableOf(t, Put("alpha", []byte("one")), Put("beta", []byte("two")), Delete("gamma")))
	for i := range len(data) {
		for bit := range 8 {
			bad := slices.Clone(data)
			bad[i] ^= 1 << bit
			if _, _, err := decodeSegment(bad); !errors.Is(err, errCorrupt) {
				t.Errorf("decodeSegment(bit %d of byte %d flipped) = %v; want errCorrupt", bit, i, err)
			}
		}
	}
}

func TestApplyRejectsInvalidOps(t *testing.T) {
	tests := []struct {
		name string
		op   Op
	}{
		{"empty key", Put("", []byte("v"))},
		{"key too long", Put(strings.Repeat("k", MaxKeyLen+1), nil)},
		{"value too long", Put("k", make([]byte, MaxValueLen+1))},
		{"unknown kind", Op{Kind: 9, Key: "k"}},
		{"delete with value", Op{Kind: OpDelete, Key: "k", Value: []byte("v")}},
	}
	for _, tt := range tests {
		d := NewDelta(DeltaContext{Seq: 1})
		if _, err := d.Apply(Put("k", []byte("old"))); err != nil {
			t.Fatal(err)
		}
		size := d.EstimateSize()
		if _, err := d.Apply(tt.op); err == nil {
			t.Errorf("%s: Apply = nil; want an error", tt.name)
		}
		if v, _, _ := d.Reader().Find("k"); string(v) != "old" || d.Reader().Len() != 1 || d.EstimateSize() != size {
			t.Errorf("%s: rejected Apply changed the delta: k = %q, %d keys, size %d (was %d)",
				tt.name, v, d.Reader().Len(), d.EstimateSize(), size)
		}
	}
}

func TestPutCopiesValue(t *testing.T) {
	buf := []byte("abc")
	op := Put("k", buf)
	buf[0] = 'X'
	if string(op.Value) != "abc" {
		t.Errorf("Put kept the caller's buffer: value = %q", op.Value)
	}
}

func TestDeltaFreezeCarriesSequence(t *testing.T) {
	d := NewDelta(DeltaContext{Seq: 5})
	if _, err := d.Apply(Put("a", []byte("1"))); err != nil {
		t.Fatal(err)
	}
	if got, want := d.EstimateSize(), recordHeaderSize+2; got != want {
		t.Errorf("EstimateSize = %d; want %d", got, want)
	}
	fr, view, next := d.Freeze()
	if fr.Seq != 5 || next.Seq != 6 || view != fr.Table || view != d.Reader() {
		t.Errorf("Freeze = seq %d, next %d; want 5, 6 and the delta's table as view", fr.Seq, next.Seq)
	}
	d2 := NewDelta(next)
	fr2, _, next2 := d2.Freeze()
	if fr2.Seq != 6 || next2.Seq != 7 {
		t.Errorf("second Freeze = seq %d, next %d; want 6, 7", fr2.Seq, next2.Seq)
	}
}

// TestIndexMatchesModel builds indexes segment by segment from random
// writes and compares them with a plain map after every segment.
func TestIndexMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	model := map[string]string{}
	var x *Index
	for seg := range 300 {
		var ops []Op
		for range 1 + rng.IntN(1<<rng.IntN(8)) {
			k := fmt.Sprintf("k%d", rng.IntN(400))
			if rng.IntN(4) == 0 {
				ops = append(ops, Delete(k))
				delete(model, k)
			} else {
				v := fmt.Sprintf("v%d-%d", seg, rng.IntN(1000))
				ops = append(ops, Put(k, []byte(v)))
				model[k] = v
			}
		}
		prev := x
		prevLen := prev.Len()
		x = x.with(tableOf(t, ops...))
		if prev.Len() != prevLen {
			t.Fatalf("segment %d: adding a layer changed the previous index", seg)
		}
		for i := range 400 {
			k := fmt.Sprintf("k%d", i)
			got, ok := x.Get(k)
			want, wantOK := model[k]
			if ok != wantOK || string(got) != want {
				t.Fatalf("segment %d: Get(%q) = %q, %v; want %q, %v", seg, k, got, ok, want, wantOK)
			}
		}
		all := map[string]string{}
		for k, v := range x.All() {
			if _, dup := all[k]; dup {
				t.Fatalf("segment %d: All yielded %q twice", seg, k)
			}
			all[k] = string(v)
		}
		if len(all) != len(model) || x.Len() != len(model) {
			t.Fatalf("segment %d: All has %d keys, Len %d; want %d", seg, len(all), x.Len(), len(model))
		}
		if x.Layers() > 12 {
			t.Fatalf("segment %d: %d layers; want O(log n)", seg, x.Layers())
		}
	}
}

// writeSegments writes each group of ops as one segment through a
// coordinator on dir and stops it. It returns the recovery it started from.
func writeSegments(t *testing.T, dir string, groups ...[]Op) *Recovery {
	t.Helper()
	rec, err := Open(dir)
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	c, f, err := NewKV(coordinator.Config{}, rec)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	ctx := context.Background()
	for _, ops := range groups {
		for _, op := range ops {
			if _, err := c.Channel("default").Write(ctx, op); err != nil {
				t.Fatalf("Write(%+v) = %v", op, err)
			}
		}
		if _, err := c.Flush(ctx, coordinator.Durable); err != nil {
			t.Fatalf("Flush = %v", err)
		}
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return rec
}

func mustOpen(t *testing.T, dir string) *Recovery {
	t.Helper()
	rec, err := Open(dir)
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	return rec
}

func wantKeys(t *testing.T, x *Index, want map[string]string) {
	t.Helper()
	for k, v := range want {
		got, ok := x.Get(k)
		if v == "" && ok {
			t.Errorf("Get(%q) = %q; want absent", k, got)
		} else if v != "" && string(got) != v {
			t.Errorf("Get(%q) = %q, %v; want %q", k, got, ok, v)
		}
	}
}

func TestOpenEmptyAndMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	rec := mustOpen(t, dir)
	if rec.Segments != 0 || rec.NextSeq != 1 || rec.LastEpoch != 0 || rec.Index.Len() != 0 || len(rec.Discarded) != 0 {
		t.Errorf("Open(new dir) = %+v; want an empty store", rec)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Errorf("Open did not create %s: %v", dir, err)
	}
}

func TestReopenContinuesEpochsAndSegments(t *testing.T) {
	dir := t.TempDir()
	writeSegments(t, dir,
		[]Op{Put("a", []byte("1")), Put("b", []byte("1"))},
		[]Op{Put("a", []byte("2")), Delete("b"), Put("c", []byte("1"))})
	rec := mustOpen(t, dir)
	if rec.Segments != 2 || rec.NextSeq != 3 || rec.LastEpoch != 5 {
		t.Fatalf("Open = %d segments, next %d, last epoch %d; want 2, 3, 5", rec.Segments, rec.NextSeq, rec.LastEpoch)
	}
	wantKeys(t, rec.Index, map[string]string{"a": "2", "b": "", "c": "1"})

	writeSegments(t, dir, []Op{Put("b", []byte("3")), Delete("c")})
	rec = mustOpen(t, dir)
	if rec.Segments != 3 || rec.NextSeq != 4 || rec.LastEpoch != 7 {
		t.Fatalf("second Open = %d segments, next %d, last epoch %d; want 3, 4, 7", rec.Segments, rec.NextSeq, rec.LastEpoch)
	}
	wantKeys(t, rec.Index, map[string]string{"a": "2", "b": "3", "c": ""})
	data, err := os.ReadFile(filepath.Join(dir, segmentName(3)))
	if err != nil {
		t.Fatal(err)
	}
	if h, _, err := decodeSegment(data); err != nil || h.epochs != (coordinator.EpochRange{Start: 6, End: 8}) {
		t.Errorf("segment 3 = %+v, %v; want store epochs [6, 8)", h, err)
	}
}

// TestOpenTornLastSegment damages the last of three segments in every way a
// crash or a bad disk can, and checks recovery keeps the first two, sets
// the last aside, and that writing can continue.
func TestOpenTornLastSegment(t *testing.T) {
	damage := []struct {
		name string
		f    func([]byte) []byte
	}{
		{"empty", func([]byte) []byte { return nil }},
		{"header only", func(b []byte) []byte { return b[:headerSize] }},
		{"half", func(b []byte) []byte { return b[:len(b)/2] }},
		{"missing last byte", func(b []byte) []byte { return b[:len(b)-1] }},
		{"zeroed tail", func(b []byte) []byte {
			b = slices.Clone(b)
			clear(b[len(b)/2:])
			return b
		}},
		{"flipped bit", func(b []byte) []byte {
			b = slices.Clone(b)
			b[headerSize+3] ^= 0x10
			return b
		}},
		{"garbage", func(b []byte) []byte { return bytes.Repeat([]byte{0xA5}, len(b)) }},
	}
	for _, d := range damage {
		t.Run(d.name, func(t *testing.T) {
			dir := t.TempDir()
			writeSegments(t, dir,
				[]Op{Put("a", []byte("1"))},
				[]Op{Put("b", []byte("1"))},
				[]Op{Put("a", []byte("torn")), Put("c", []byte("torn"))})
			last := filepath.Join(dir, segmentName(3))
			data, err := os.ReadFile(last)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(last, d.f(data), 0o644); err != nil {
				t.Fatal(err)
			}
			rec := mustOpen(t, dir)
			if rec.Segments != 2 || rec.NextSeq != 3 || rec.LastEpoch != 2 {
				t.Errorf("Open = %d segments, next %d, last epoch %d; want 2, 3, 2", rec.Segments, rec.NextSeq, rec.LastEpoch)
			}
			if len(rec.Discarded) != 1 || rec.Discarded[0].File != segmentName(3) || !errors.Is(rec.Discarded[0].Reason, errCorrupt) {
				t.Errorf("Discarded = %v; want segment 3 as corrupt", rec.Discarded)
			}
			wantKeys(t, rec.Index, map[string]string{"a": "1", "b": "1", "c": ""})
			if _, err := os.Stat(last + tornSuffix); err != nil {
				t.Errorf("torn segment not set aside: %v", err)
			}

			writeSegments(t, dir, []Op{Put("c", []byte("2"))})
			rec = mustOpen(t, dir)
			if rec.Segments != 3 || len(rec.Discarded) != 0 || rec.LastEpoch != 3 {
				t.Errorf("Open after more writes = %d segments, %d discarded, last epoch %d; want 3, 0, 3",
					rec.Segments, len(rec.Discarded), rec.LastEpoch)
			}
			wantKeys(t, rec.Index, map[string]string{"a": "1", "b": "1", "c": "2"})
		})
	}
}

func TestOpenDiscardsEverythingAfterABadSegment(t *testing.T) {
	tests := []struct {
		name  string
		apply func(t *testing.T, dir string)
	}{
		{"corrupt middle segment", func(t *testing.T, dir string) {
			p := filepath.Join(dir, segmentName(2))
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			data[len(data)-1] ^= 1
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"missing middle segment", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, segmentName(2))); err != nil {
				t.Fatal(err)
			}
		}},
		{"segment under another's name", func(t *testing.T, dir string) {
			p2, p3 := filepath.Join(dir, segmentName(2)), filepath.Join(dir, segmentName(3))
			if err := os.Rename(p3, p2); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p3, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeSegments(t, dir,
				[]Op{Put("a", []byte("1"))},
				[]Op{Put("b", []byte("2"))},
				[]Op{Put("c", []byte("3"))},
				[]Op{Put("d", []byte("4"))})
			tt.apply(t, dir)
			rec := mustOpen(t, dir)
			if rec.Segments != 1 || rec.NextSeq != 2 || rec.LastEpoch != 1 {
				t.Errorf("Open = %d segments, next %d, last epoch %d; want 1, 2, 1", rec.Segments, rec.NextSeq, rec.LastEpoch)
			}
			wantKeys(t, rec.Index, map[string]string{"a": "1", "b": "", "c": "", "d": ""})
			if len(rec.Discarded) < 2 {
				t.Errorf("Discarded = %v; want every segment after the first", rec.Discarded)
			}
		})
	}
}

func TestOpenRemovesTempFiles(t *testing.T) {
	dir := t.TempDir()
	writeSegments(t, dir, []Op{Put("a", []byte("1"))})
	tmp := filepath.Join(dir, segmentName(2)+tempSuffix)
	if err := os.WriteFile(tmp, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	rec := mustOpen(t, dir)
	if rec.TempFiles != 1 || rec.Segments != 1 || len(rec.Discarded) != 0 {
		t.Errorf("Open = %d temp files, %d segments, %d discarded; want 1, 1, 0", rec.TempFiles, rec.Segments, len(rec.Discarded))
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp file still there: %v", err)
	}
}

// gatedFlusher holds every FlushDelta until release is closed.
type gatedFlusher struct {
	*Flusher
	entered chan coordinator.EpochRange
	release chan struct{}
}

func (g *gatedFlusher) FlushDelta(ctx context.Context, fr *Frozen, epochs coordinator.EpochRange) (*Index, error) {
	g.entered <- epochs
	<-g.release
	return g.Flusher.FlushDelta(ctx, fr, epochs)
}

func TestReadThroughViews(t *testing.T) {
	dir := t.TempDir()
	writeSegments(t, dir, []Op{Put("stored", []byte("s")), Put("a", []byte("0"))})
	rec := mustOpen(t, dir)
	inner := &Flusher{dir: dir, index: rec.Index}
	g := &gatedFlusher{Flusher: inner, entered: make(chan coordinator.EpochRange, 8), release: make(chan struct{})}
	cfg := coordinator.Config{FirstEpoch: rec.LastEpoch + 1} // as NewKV sets it
	c, err := coordinator.New(cfg, NewDelta, DeltaContext{Seq: rec.NextSeq}, rec.Index, g)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	defer inner.Close()
	ctx := context.Background()
	ch := c.Channel("default")
	write := func(op Op) *coordinator.WriteHandle[struct{}] {
		t.Helper()
		h, err := ch.Write(ctx, op)
		if err != nil {
			t.Fatalf("Write(%+v) = %v", op, err)
		}
		if _, err := h.Wait(ctx, coordinator.Applied); err != nil {
			t.Fatalf("Wait(Applied) = %v", err)
		}
		return h
	}
	check := func(stage string, v *View, want map[string]string) {
		t.Helper()
		for k, w := range want {
			got, ok := Get(v, k)
			if w == "" && ok {
				t.Errorf("%s: Get(%q) = %q; want absent", stage, k, got)
			} else if w != "" && string(got) != w {
				t.Errorf("%s: Get(%q) = %q, %v; want %q", stage, k, got, ok, w)
			}
		}
	}

	// Live delta over the recovered snapshot.
	write(Put("a", []byte("1")))
	write(Put("b", []byte("1")))
	v1 := c.View()
	if len(v1.Frozen) != 0 || v1.Current.Len() != 2 {
		t.Fatalf("live view: %d frozen, %d live keys; want 0, 2", len(v1.Frozen), v1.Current.Len())
	}
	check("live", v1, map[string]string{"stored": "s", "a": "1", "b": "1", "c": ""})

	// Freeze; the flusher holds the delta, so it sits in View.Frozen.
	if _, err := c.Flush(ctx, coordinator.Applied); err != nil {
		t.Fatal(err)
	}
	if got := <-g.entered; got != (coordinator.EpochRange{Start: 3, End: 5}) {
		t.Errorf("FlushDelta epochs = %v; want [3, 5), after the 2 recovered", got)
	}
	write(Put("a", []byte("2")))
	write(Delete("b"))
	hc := write(Put("c", []byte("2")))
	v2 := c.View()
	if len(v2.Frozen) != 1 || v2.Written != 2 {
		t.Fatalf("frozen view: %d frozen, written %d; want 1, 2", len(v2.Frozen), v2.Written)
	}
	check("frozen", v2, map[string]string{"stored": "s", "a": "2", "b": "", "c": "2"})
	if val, _, ok := v2.Frozen[0].View.Find("b"); !ok || string(val) != "1" {
		t.Errorf("frozen delta: b = %q, %v; want 1", val, ok)
	}

	// Written: everything moves into the snapshot.
	close(g.release)
	if _, err := hc.Wait(ctx, coordinator.Durable); err != nil {
		t.Fatal(err)
	}
	v3 := c.View()
	if len(v3.Frozen) != 0 || v3.Written != 7 || v3.Current.Len() != 0 {
		t.Fatalf("written view: %d frozen, written %d, %d live keys; want 0, 7, 0", len(v3.Frozen), v3.Written, v3.Current.Len())
	}
	check("written", v3, map[string]string{"stored": "s", "a": "2", "b": "", "c": "2"})
	if v, ok := v3.Snapshot.Get("a"); !ok || string(v) != "2" {
		t.Errorf("snapshot: a = %q, %v; want 2", v, ok)
	}
	// Views are immutable: the old ones still show their moment.
	check("old live view", v1, map[string]string{"a": "1", "b": "1", "c": ""})
	check("old frozen view", v2, map[string]string{"a": "2", "b": "", "c": "2"})

	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	rec = mustOpen(t, dir)
	if rec.Segments != 3 || rec.LastEpoch != 7 {
		t.Errorf("reopen: %d segments, last epoch %d; want 3, 7", rec.Segments, rec.LastEpoch)
	}
	wantKeys(t, rec.Index, map[string]string{"stored": "s", "a": "2", "b": "", "c": "2"})
}

// TestFlusherSyncsAndRetries checks FlushStorage leaves nothing unsynced
// and that FlushDelta can be repeated for the same delta.
func TestFlusherSyncsAndRetries(t *testing.T) {
	dir := t.TempDir()
	rec := mustOpen(t, dir)
	f := &Flusher{dir: dir, index: rec.Index}
	ctx := context.Background()
	d := NewDelta(DeltaContext{Seq: 1})
	if _, err := d.Apply(Put("a", []byte("1"))); err != nil {
		t.Fatal(err)
	}
	fr, _, _ := d.Freeze()
	epochs := coordinator.EpochRange{Start: 1, End: 2}
	for i := range 2 {
		x, err := f.FlushDelta(ctx, fr, epochs)
		if err != nil {
			t.Fatalf("FlushDelta #%d = %v", i+1, err)
		}
		if v, ok := x.Get("a"); !ok || string(v) != "1" {
			t.Errorf("FlushDelta #%d index: a = %q, %v; want 1", i+1, v, ok)
		}
	}
	if err := f.FlushStorage(ctx); err != nil {
		t.Fatal(err)
	}
	if len(f.unsynced) != 0 || f.dirDirty || f.Syncs() != 1 || f.Segments() != 2 {
		t.Errorf("after FlushStorage: %d unsynced, dirDirty %v, %d syncs, %d segments; want 0, false, 1, 2",
			len(f.unsynced), f.dirDirty, f.Syncs(), f.Segments())
	}
	rec = mustOpen(t, dir)
	if rec.Segments != 1 || rec.LastEpoch != 1 || len(rec.Discarded) != 0 {
		t.Errorf("Open = %d segments, last epoch %d, %d discarded; want 1, 1, 0", rec.Segments, rec.LastEpoch, len(rec.Discarded))
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.FlushDelta(canceled, fr, epochs); !errors.Is(err, context.Canceled) {
		t.Errorf("FlushDelta(canceled ctx) = %v; want context.Canceled", err)
	}
}

// A delta whose writes Apply all rejected still takes its epochs, so it is
// written as a segment without records, and recovery must accept it: the
// segments after it continue from its epochs.
func TestSegmentWithoutRecordsRecovers(t *testing.T) {
	dir := t.TempDir()
	data := encodeSegment(1, coordinator.EpochRange{Start: 1, End: 3}, newTable(0))
	if _, _, err := decodeSegment(data); err != nil {
		t.Fatalf("decodeSegment(a segment without records) = %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, segmentName(1)), data, 0o644); err != nil {
		t.Fatal(err)
	}
	rec := mustOpen(t, dir)
	if rec.Segments != 1 || rec.LastEpoch != 2 || len(rec.Discarded) != 0 {
		t.Errorf("Open = %d segments, last epoch %d, discarded %v; want 1, 2, none", rec.Segments, rec.LastEpoch, rec.Discarded)
	}
}
