package main

// The storage side of the example: the write type, the Delta (an in-memory
// table), the Flusher (immutable segment files), the snapshot (an immutable
// layered index) and recovery.
//
// # Segment format
//
// Every frozen delta becomes one immutable segment file in the store's
// directory, named after its sequence number: "00000000000000000001.seg"
// (20 decimal digits, starting at 1, with no gaps). All integers are
// little-endian.
//
//	header, 48 bytes:
//	   0  magic    [8]byte  "KVSEG\x00\x00\x01" (format version 1)
//	   8  seq      uint64   the segment's sequence number, as in its name
//	  16  first    uint64   the first store epoch it holds
//	  24  end      uint64   one past the last store epoch it holds
//	  32  count    uint32   number of records, at most end-first (0 when Apply
//	                        rejected every write of the delta)
//	  36  flags    uint32   0
//	  40  bodyLen  uint64   total length of the records that follow
//	records, count times, in strictly increasing key order:
//	   0  kind     uint8    1 = put, 2 = delete
//	   1  keyLen   uint32   1 to MaxKeyLen
//	   5  valueLen uint32   0 to MaxValueLen; always 0 for a delete
//	   9  key      [keyLen]byte
//	      value    [valueLen]byte
//	trailer, 4 bytes:
//	   0  crc      uint32   CRC-32C (Castagnoli) of the header and records
//
// A segment holds the last write of each key within its epoch range. Epochs
// continue across restarts: a segment's first epoch is the previous
// segment's end, and the first segment's is 1. [NewKV] starts the
// coordinator with [coordinator.Config.FirstEpoch] one past the last epoch
// [Open] recovered, so the coordinator's epochs are the store's and a
// segment records the range the coordinator gave its delta.
//
// # Crash safety
//
// [Flusher.FlushDelta] writes the segment to "<name>.tmp" and renames it
// into place, so a segment name never points at a partly written file while
// the machine stays up (a killed process leaves at most a temp file, which
// [Open] removes). [Flusher.FlushStorage] fsyncs every segment written since
// the last sync and then the directory, so every write the coordinator
// reports [coordinator.Durable] survives a power loss too. Before that fsync
// a power loss can leave a renamed segment empty or partial; its checksum
// then fails. [Open] keeps the longest valid prefix of segments (valid
// checksum and structure, sequence numbers and epochs continuing without a
// gap) and sets everything after it aside. Since a sync covers every segment
// written before it, nothing set aside was ever reported Durable, unless the
// disk itself corrupted synced data; the files are renamed to "<name>.torn"
// rather than deleted so that such a case can be inspected.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/groupcommit/coordinator"
)

// Limits on what a write may hold; [Delta.Apply] rejects larger ones.
const (
	MaxKeyLen   = 1 << 16
	MaxValueLen = 1 << 24
)

// KV is the coordinator of this store, fully instantiated: writes are [Op]s,
// applying one returns nothing, frozen and live deltas are read through
// [*Table]s and the storage snapshot is an [*Index].
type KV = coordinator.Coordinator[Op, struct{}, *Table, *Table, *Index]

// View is a consistent read view of the store; read it with [Get].
type View = coordinator.View[*Table, *Table, *Index]

// OpKind says what an [Op] does.
type OpKind uint8

// The kinds of [Op]; the values are those of the segment format.
const (
	OpPut    OpKind = 1
	OpDelete OpKind = 2
)

// Op is one write: put a value under a key, or delete a key. Build it with
// [Put] or [Delete]. An Op must not be modified after it is written.
type Op struct {
	Kind  OpKind
	Key   string
	Value []byte // nil for a delete
}

// Put returns a write that sets key to a copy of value.
func Put(key string, value []byte) Op {
	return Op{Kind: OpPut, Key: key, Value: bytes.Clone(value)}
}

// Delete returns a write that removes key.
func Delete(key string) Op { return Op{Kind: OpDelete, Key: key} }

func (op Op) validate() error {
	switch {
	case op.Kind != OpPut && op.Kind != OpDelete:
		return fmt.Errorf("kvstore: unknown op kind %d", op.Kind)
	case op.Key == "":
		return errors.New("kvstore: empty key")
	case len(op.Key) > MaxKeyLen:
		return fmt.Errorf("kvstore: key of %d bytes exceeds %d", len(op.Key), MaxKeyLen)
	case len(op.Value) > MaxValueLen:
		return fmt.Errorf("kvstore: value of %d bytes exceeds %d", len(op.Value), MaxValueLen)
	case op.Kind == OpDelete && len(op.Value) > 0:
		return errors.New("kvstore: delete with a value")
	}
	return nil
}

// entry is the latest state of a key in a table.
type entry struct {
	value   []byte
	deleted bool
}

// recordSize is the encoded size of a record, used as the delta's size.
func recordSize(key string, e entry) int { return recordHeaderSize + len(key) + len(e.value) }

// Table maps keys to their latest value or deletion. It is the live delta
// (written by the coordinator goroutine while readers read it), a frozen
// delta, or one layer of an [Index]; a table is never written again once
// frozen. A Table is safe for concurrent use; a nil *Table is empty. It must
// not be copied.
type Table struct {
	mu sync.RWMutex
	m  map[string]entry // protected by mu
}

func newTable(n int) *Table { return &Table{m: make(map[string]entry, n)} }

// set stores e under key and returns the entry it replaced, if any.
func (t *Table) set(key string, e entry) (old entry, existed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old, existed = t.m[key]
	t.m[key] = e
	return old, existed
}

// Find reports what the table holds for key: ok is false if the table does
// not mention it; otherwise deleted says whether its last write was a
// delete, and value is the value it put. The value must not be modified.
func (t *Table) Find(key string) (value []byte, deleted, ok bool) {
	if t == nil {
		return nil, false, false
	}
	t.mu.RLock()
	e, ok := t.m[key]
	t.mu.RUnlock()
	return e.value, e.deleted, ok
}

// Len returns the number of keys the table mentions, deletions included.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.m)
}

// sortedKeys returns the table's keys in increasing order.
func (t *Table) sortedKeys() []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	keys := make([]string, 0, len(t.m))
	for k := range t.m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// DeltaContext is what one delta hands to the next when it is frozen (the
// coordinator's context type C).
type DeltaContext struct {
	// Seq is the sequence number of the segment the delta will be written
	// to. Numbering segments at freeze time, on the coordinator goroutine,
	// gives every frozen delta its file name before the flusher sees it.
	Seq uint64
}

// Delta is the live delta: the writes applied since the last freeze. It
// implements [coordinator.Delta]; the coordinator creates it with
// [NewDelta] and calls it from one goroutine.
type Delta struct {
	seq  uint64
	t    *Table
	size int // sum of recordSize over t's entries
}

// NewDelta returns an empty delta continuing from ctx.
func NewDelta(ctx DeltaContext) *Delta { return &Delta{seq: ctx.Seq, t: newTable(0)} }

// Apply applies one write. It rejects invalid writes (see [Op] and the
// limits) without changing the delta.
func (d *Delta) Apply(op Op) (struct{}, error) {
	if err := op.validate(); err != nil {
		return struct{}{}, err
	}
	e := entry{value: op.Value, deleted: op.Kind == OpDelete}
	if old, existed := d.t.set(op.Key, e); existed {
		d.size -= recordSize(op.Key, old)
	}
	d.size += recordSize(op.Key, e)
	return struct{}{}, nil
}

// EstimateSize returns the size of the segment the delta would make, less
// the header and trailer.
func (d *Delta) EstimateSize() int { return d.size }

// Freeze ends the delta: its table becomes read-only and goes to the
// flusher with its segment number; the next delta takes the next number.
func (d *Delta) Freeze() (*Frozen, *Table, DeltaContext) {
	return &Frozen{Seq: d.seq, Table: d.t}, d.t, DeltaContext{Seq: d.seq + 1}
}

// Reader returns the delta's table; readers see writes as they are applied.
func (d *Delta) Reader() *Table { return d.t }

// Frozen is a frozen delta on its way to the flusher.
type Frozen struct {
	Seq   uint64 // the segment to write it to
	Table *Table // read-only from now on
}

// Index is the storage snapshot: an immutable map from key to value that
// covers every segment written. It is a stack of read-only tables, newest
// first; adding a segment pushes its table and merges the top two while
// the newer holds at least half as many keys as the older (like a binary
// counter), so an Index of n keys has O(log n) layers and each key is
// copied O(log n) times over its life. Deletions are dropped when merged
// into the bottom layer. An Index is never modified once built, so it is
// safe for concurrent use; a nil *Index is empty.
type Index struct {
	layers []*Table // newest first; neither the slice nor the tables change
}

// Get returns the value stored under key. The value must not be modified.
func (x *Index) Get(key string) ([]byte, bool) {
	if x == nil {
		return nil, false
	}
	for _, t := range x.layers {
		if v, deleted, ok := t.Find(key); ok {
			return v, !deleted
		}
	}
	return nil, false
}

// Layers returns the number of tables in the index.
func (x *Index) Layers() int {
	if x == nil {
		return 0
	}
	return len(x.layers)
}

// All yields every key present in the index with its value, in no
// particular order.
func (x *Index) All() iter.Seq2[string, []byte] {
	return func(yield func(string, []byte) bool) {
		if x == nil {
			return
		}
		seen := make(map[string]bool)
		for _, t := range x.layers {
			t.mu.RLock()
			entries := make(map[string]entry, len(t.m))
			for k, e := range t.m {
				entries[k] = e
			}
			t.mu.RUnlock()
			for k, e := range entries {
				if seen[k] {
					continue
				}
				seen[k] = true
				if !e.deleted && !yield(k, e.value) {
					return
				}
			}
		}
	}
}

// Len returns the number of keys present in the index.
func (x *Index) Len() int {
	n := 0
	for range x.All() {
		n++
	}
	return n
}

// with returns a new index with t (read-only from now on) on top of x.
func (x *Index) with(t *Table) *Index {
	var old []*Table
	if x != nil {
		old = x.layers
	}
	layers := make([]*Table, 0, len(old)+1)
	layers = append(layers, t)
	layers = append(layers, old...)
	for len(layers) >= 2 && 2*layers[0].Len() >= layers[1].Len() {
		merged := merge(layers[0], layers[1], len(layers) == 2)
		layers = append([]*Table{merged}, layers[2:]...)
	}
	return &Index{layers: layers}
}

// merge returns a new table holding newer on top of older; bottom drops
// deletions, which shadow nothing below the bottom layer.
func merge(newer, older *Table, bottom bool) *Table {
	newer.mu.RLock()
	defer newer.mu.RUnlock()
	older.mu.RLock()
	defer older.mu.RUnlock()
	m := make(map[string]entry, len(newer.m)+len(older.m))
	for _, src := range []map[string]entry{older.m, newer.m} {
		for k, e := range src {
			if bottom && e.deleted {
				delete(m, k)
				continue
			}
			m[k] = e
		}
	}
	return &Table{m: m}
}

// Get reads key through a view, newest data first: the live delta, the
// frozen deltas not yet written, then the storage snapshot. The value must
// not be modified.
func Get(v *View, key string) ([]byte, bool) {
	if val, deleted, ok := v.Current.Find(key); ok {
		return val, !deleted
	}
	for _, fd := range v.Frozen {
		if val, deleted, ok := fd.View.Find(key); ok {
			return val, !deleted
		}
	}
	return v.Snapshot.Get(key)
}

// Segment encoding.

const (
	headerSize       = 48
	trailerSize      = 4
	recordHeaderSize = 9
	segmentSuffix    = ".seg"
	tempSuffix       = ".tmp"
	tornSuffix       = ".torn"
)

var (
	segmentMagic = [8]byte{'K', 'V', 'S', 'E', 'G', 0, 0, 1}
	castagnoli   = crc32.MakeTable(crc32.Castagnoli)

	// errCorrupt marks a segment that fails verification.
	errCorrupt = errors.New("kvstore: corrupt segment")
)

// segmentHeader is the decoded header of a segment.
type segmentHeader struct {
	seq    uint64
	epochs coordinator.EpochRange
	count  uint32
}

// encodeSegment returns the segment file holding t's entries.
func encodeSegment(seq uint64, epochs coordinator.EpochRange, t *Table) []byte {
	keys := t.sortedKeys()
	t.mu.RLock()
	defer t.mu.RUnlock()
	body := 0
	for _, k := range keys {
		body += recordSize(k, t.m[k])
	}
	buf := make([]byte, headerSize, headerSize+body+trailerSize)
	copy(buf, segmentMagic[:])
	le := binary.LittleEndian
	le.PutUint64(buf[8:], seq)
	le.PutUint64(buf[16:], epochs.Start)
	le.PutUint64(buf[24:], epochs.End)
	le.PutUint32(buf[32:], uint32(len(keys)))
	le.PutUint32(buf[36:], 0)
	le.PutUint64(buf[40:], uint64(body))
	for _, k := range keys {
		e := t.m[k]
		kind := OpPut
		if e.deleted {
			kind = OpDelete
		}
		buf = append(buf, byte(kind))
		buf = le.AppendUint32(buf, uint32(len(k)))
		buf = le.AppendUint32(buf, uint32(len(e.value)))
		buf = append(buf, k...)
		buf = append(buf, e.value...)
	}
	return le.AppendUint32(buf, crc32.Checksum(buf, castagnoli))
}

// decodeSegment verifies a segment file and returns its header and table.
// Every failure wraps errCorrupt.
func decodeSegment(data []byte) (segmentHeader, *Table, error) {
	corrupt := func(format string, args ...any) (segmentHeader, *Table, error) {
		return segmentHeader{}, nil, fmt.Errorf("%w: %s", errCorrupt, fmt.Sprintf(format, args...))
	}
	if len(data) < headerSize+trailerSize {
		return corrupt("%d bytes, shorter than header and trailer", len(data))
	}
	if !bytes.Equal(data[:8], segmentMagic[:]) {
		return corrupt("bad magic %q", data[:8])
	}
	le := binary.LittleEndian
	h := segmentHeader{
		seq:    le.Uint64(data[8:]),
		epochs: coordinator.EpochRange{Start: le.Uint64(data[16:]), End: le.Uint64(data[24:])},
		count:  le.Uint32(data[32:]),
	}
	flags, bodyLen := le.Uint32(data[36:]), le.Uint64(data[40:])
	if want := uint64(len(data) - headerSize - trailerSize); bodyLen != want {
		return corrupt("body length %d, file holds %d", bodyLen, want)
	}
	sumAt := len(data) - trailerSize
	if got, want := crc32.Checksum(data[:sumAt], castagnoli), le.Uint32(data[sumAt:]); got != want {
		return corrupt("checksum %#08x, want %#08x", got, want)
	}
	// The checksum matched; what follows catches encoder bugs and
	// collisions, not torn writes.
	if flags != 0 {
		return corrupt("unknown flags %#x", flags)
	}
	if h.epochs.Start == 0 || h.epochs.End <= h.epochs.Start {
		return corrupt("bad epoch range %v", h.epochs)
	}
	if uint64(h.count) > h.epochs.Len() {
		return corrupt("%d records for %d epochs", h.count, h.epochs.Len())
	}
	t := newTable(int(h.count))
	body := data[headerSize:sumAt]
	prev := ""
	for i := range h.count {
		if len(body) < recordHeaderSize {
			return corrupt("record %d: truncated header", i)
		}
		kind := OpKind(body[0])
		kl, vl := uint64(le.Uint32(body[1:])), uint64(le.Uint32(body[5:]))
		body = body[recordHeaderSize:]
		switch {
		case kind != OpPut && kind != OpDelete:
			return corrupt("record %d: unknown kind %d", i, kind)
		case kl == 0 || kl > MaxKeyLen || vl > MaxValueLen:
			return corrupt("record %d: key length %d, value length %d", i, kl, vl)
		case kind == OpDelete && vl != 0:
			return corrupt("record %d: delete with a value", i)
		case kl+vl > uint64(len(body)):
			return corrupt("record %d: %d bytes past the body", i, kl+vl-uint64(len(body)))
		}
		key := string(body[:kl])
		if i > 0 && key <= prev {
			return corrupt("record %d: key %q out of order", i, key)
		}
		e := entry{deleted: kind == OpDelete}
		if kind == OpPut {
			e.value = body[kl : kl+vl : kl+vl]
		}
		t.m[key] = e
		body = body[kl+vl:]
		prev = key
	}
	if len(body) != 0 {
		return corrupt("%d bytes after the last record", len(body))
	}
	return h, t, nil
}

func segmentName(seq uint64) string { return fmt.Sprintf("%020d%s", seq, segmentSuffix) }

// parseSegmentName returns the sequence number of a segment file name.
func parseSegmentName(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, segmentSuffix)
	if !ok || len(digits) != 20 {
		return 0, false
	}
	seq, err := strconv.ParseUint(digits, 10, 64)
	return seq, err == nil && seq > 0
}

// Flusher writes frozen deltas as segment files and syncs them. It
// implements [coordinator.Flusher]; create it with [NewKV]. Its methods
// other than the counters and Close are called by the coordinator's flusher
// goroutine only.
type Flusher struct {
	dir string

	// Owned by the flusher goroutine.
	index    *Index
	unsynced []*os.File // segments renamed into place since the last sync
	dirDirty bool       // a rename since the last directory sync

	segments, syncs, bytes atomic.Uint64
}

// FlushDelta writes fr as segment fr.Seq and returns the index including
// it. The segment is written to a temp file and renamed into place; it is
// fsynced by the next FlushStorage. Calling it again after an error
// rewrites the same segment.
func (f *Flusher) FlushDelta(ctx context.Context, fr *Frozen, epochs coordinator.EpochRange) (*Index, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	data := encodeSegment(fr.Seq, epochs, fr.Table)
	final := filepath.Join(f.dir, segmentName(fr.Seq))
	tmp := final + tempSuffix
	file, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kvstore: create segment: %w", err)
	}
	if _, err := file.Write(data); err != nil {
		file.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("kvstore: write segment: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		file.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("kvstore: rename segment: %w", err)
	}
	// Keep the file open: FlushStorage fsyncs it.
	f.unsynced = append(f.unsynced, file)
	f.dirDirty = true
	f.index = f.index.with(fr.Table)
	f.segments.Add(1)
	f.bytes.Add(uint64(len(data)))
	return f.index, nil
}

// FlushStorage makes every segment written so far durable: it fsyncs the
// segment files written since the last call, then the directory that names
// them. After an error it can be called again and redoes what is left.
func (f *Flusher) FlushStorage(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, file := range f.unsynced {
		if err := file.Sync(); err != nil {
			return fmt.Errorf("kvstore: sync segment: %w", err)
		}
	}
	var closeErr error
	for _, file := range f.unsynced {
		closeErr = errors.Join(closeErr, file.Close())
	}
	clear(f.unsynced)
	f.unsynced = f.unsynced[:0]
	if closeErr != nil {
		return fmt.Errorf("kvstore: close segment: %w", closeErr)
	}
	if f.dirDirty {
		if err := syncDir(f.dir); err != nil {
			return err
		}
		f.dirDirty = false
	}
	f.syncs.Add(1)
	return nil
}

// Segments returns the number of segments written.
func (f *Flusher) Segments() uint64 { return f.segments.Load() }

// Syncs returns the number of completed FlushStorage calls.
func (f *Flusher) Syncs() uint64 { return f.syncs.Load() }

// Bytes returns the number of segment bytes written.
func (f *Flusher) Bytes() uint64 { return f.bytes.Load() }

// Close releases the files of segments left unsynced by a failed
// coordinator. Call it after [coordinator.Coordinator.Stop] returned.
func (f *Flusher) Close() error {
	var err error
	for _, file := range f.unsynced {
		err = errors.Join(err, file.Close())
	}
	f.unsynced = nil
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("kvstore: sync directory: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("kvstore: sync directory: %w", err)
	}
	return nil
}

// Recovery is the state of a store directory as [Open] found it.
type Recovery struct {
	Dir string
	// Index holds every recovered key.
	Index *Index
	// Segments is the number of valid segments read.
	Segments int
	// NextSeq is the sequence number of the next segment to write.
	NextSeq uint64
	// LastEpoch is the last store epoch recovered; the next write gets
	// LastEpoch+1.
	LastEpoch uint64
	// Discarded lists the segments set aside (renamed to "<name>.torn"):
	// the first invalid one and every one after it.
	Discarded []Discard
	// TempFiles is the number of leftover temp files removed.
	TempFiles int
}

// Discard is a segment file that recovery set aside, and why.
type Discard struct {
	File   string
	Reason error
}

// Open recovers the store in dir, creating the directory if needed. It
// reads the segments in sequence order and verifies each; it keeps the
// longest valid prefix (see the package's crash-safety notes), sets the
// rest aside, removes leftover temp files, and returns the recovered state.
// An I/O error fails Open; a corrupt segment does not. Only one process may
// use a directory at a time.
func Open(dir string) (*Recovery, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("kvstore: open: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("kvstore: open: %w", err)
	}
	rec := &Recovery{Dir: dir, NextSeq: 1}
	changed := false
	var seqs []uint64
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, segmentSuffix+tempSuffix) {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, fmt.Errorf("kvstore: open: %w", err)
			}
			rec.TempFiles++
			changed = true
		} else if seq, ok := parseSegmentName(name); ok && e.Type().IsRegular() {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	for _, seq := range seqs {
		name := segmentName(seq)
		var reason error
		if len(rec.Discarded) > 0 {
			reason = fmt.Errorf("follows discarded segment %s", rec.Discarded[0].File)
		} else if seq != rec.NextSeq {
			reason = fmt.Errorf("sequence gap: want segment %d", rec.NextSeq)
		} else {
			data, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				return nil, fmt.Errorf("kvstore: open: %w", err)
			}
			h, t, err := decodeSegment(data)
			switch {
			case err != nil:
				reason = err
			case h.seq != seq:
				reason = fmt.Errorf("%w: header names segment %d", errCorrupt, h.seq)
			case h.epochs.Start != rec.LastEpoch+1:
				reason = fmt.Errorf("%w: epochs %v do not follow epoch %d", errCorrupt, h.epochs, rec.LastEpoch)
			default:
				rec.Index = rec.Index.with(t)
				rec.Segments++
				rec.NextSeq = seq + 1
				rec.LastEpoch = h.epochs.Last()
				continue
			}
		}
		rec.Discarded = append(rec.Discarded, Discard{File: name, Reason: reason})
	}
	for _, d := range rec.Discarded {
		p := filepath.Join(dir, d.File)
		if err := os.Rename(p, p+tornSuffix); err != nil {
			return nil, fmt.Errorf("kvstore: open: set aside %s: %w", d.File, err)
		}
		changed = true
	}
	if changed {
		if err := syncDir(dir); err != nil {
			return nil, err
		}
	}
	return rec, nil
}

// NewKV creates the coordinator of the store recovered in rec, and its
// flusher. It sets cfg.FirstEpoch to rec.LastEpoch+1, so epochs continue
// where the recovered segments end. Start it with
// [coordinator.Coordinator.Start]; after Stop, Close the flusher.
//
// After the coordinator failed, recover the same way: Stop it, Close the
// flusher, Open the directory again and call NewKV with the new Recovery.
// Open reads back exactly what the segments hold, so the coordinator's
// in-memory state, which the failure left unknown, is never trusted.
func NewKV(cfg coordinator.Config, rec *Recovery) (*KV, *Flusher, error) {
	return newKV(cfg, rec, nil)
}

// newKV is NewKV with the flusher the coordinator calls wrapped by wrap,
// if wrap is not nil; tests inject storage failures there.
func newKV(cfg coordinator.Config, rec *Recovery, wrap func(*Flusher) coordinator.Flusher[*Frozen, *Index]) (*KV, *Flusher, error) {
	f := &Flusher{dir: rec.Dir, index: rec.Index}
	var fl coordinator.Flusher[*Frozen, *Index] = f
	if wrap != nil {
		fl = wrap(f)
	}
	cfg.FirstEpoch = rec.LastEpoch + 1
	c, err := coordinator.New(cfg, NewDelta, DeltaContext{Seq: rec.NextSeq}, rec.Index, fl)
	if err != nil {
		return nil, nil, err
	}
	return c, f, nil
}
