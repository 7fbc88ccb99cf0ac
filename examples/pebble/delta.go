package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// Op is a write: it sets Key to Value, or deletes Key if Delete is set.
type Op struct {
	Key    string
	Value  []byte
	Delete bool
}

// Put returns the Op that sets key to value.
func Put(key string, value []byte) Op { return Op{Key: key, Value: value} }

// Delete returns the Op that deletes key.
func Delete(key string) Op { return Op{Key: key, Delete: true} }

// Limits on what Apply accepts.
const (
	MaxKeyLen   = 1024
	MaxValueLen = 1 << 20
)

// reservedPrefix starts every key the store keeps for itself in pebble
// (see metaKey). User keys may not start with it, so they can never
// overwrite the store's own records.
const reservedPrefix = "\x00"

// errInvalidOp is wrapped by every reason to reject an Op.
var errInvalidOp = errors.New("invalid op")

func validKey(key string) bool {
	return key != "" && len(key) <= MaxKeyLen && !strings.HasPrefix(key, reservedPrefix)
}

func (o Op) validate() error {
	switch {
	case !validKey(o.Key):
		return fmt.Errorf("%w: key %.20q is empty, longer than %d bytes or starts with %q",
			errInvalidOp, o.Key, MaxKeyLen, reservedPrefix)
	case len(o.Value) > MaxValueLen:
		return fmt.Errorf("%w: value length %d above %d", errInvalidOp, len(o.Value), MaxValueLen)
	case o.Delete && o.Value != nil:
		return fmt.Errorf("%w: delete with a value", errInvalidOp)
	}
	return nil
}

// entry is the latest state of a key in a delta.
type entry struct {
	value   []byte
	deleted bool // a tombstone: hides the key in older deltas and in pebble
}

// Delta is the live in-memory batch: the latest Op per key. It implements
// [coordinator.Delta]. Its context C is the batch number: deltas are
// numbered 1, 2, 3, ... across restarts (the number of the last batch
// written is stored in pebble beside the last epoch), and each Freeze
// hands number+1 to the next delta. The flusher checks that batches arrive
// with consecutive numbers.
//
// The coordinator calls Apply, EstimateSize and Freeze from one goroutine;
// readers go through [LiveReader], which is why entries are guarded.
type Delta struct {
	batch   uint64
	mu      sync.RWMutex
	entries map[string]entry // protected by mu (written by Apply, read by LiveReader)
	size    int              // owned by the coordinator goroutine
}

// NewDelta returns an empty delta that will be written as batch number
// batch.
func NewDelta(batch uint64) *Delta { return &Delta{batch: batch, entries: map[string]entry{}} }

const entryOverhead = 48 // bytes per entry, for EstimateSize

// Apply records op. It copies the value, so the caller may reuse it.
func (d *Delta) Apply(op Op) (struct{}, error) {
	if err := op.validate(); err != nil {
		return struct{}{}, err
	}
	e := entry{value: bytes.Clone(op.Value), deleted: op.Delete}
	d.mu.Lock()
	defer d.mu.Unlock()
	if old, ok := d.entries[op.Key]; ok {
		d.size -= len(old.value)
	} else {
		d.size += entryOverhead + len(op.Key)
	}
	d.size += len(e.value)
	d.entries[op.Key] = e
	return struct{}{}, nil
}

// EstimateSize returns an estimate of the delta's memory in bytes, close to
// the size of its pebble batch.
func (d *Delta) EstimateSize() int { return d.size }

// Freeze ends the delta. Its entries become an immutable [Frozen], which
// is both the data to flush and its read view; the next delta gets the
// next batch number.
func (d *Delta) Freeze() (*Frozen, *Frozen, uint64) {
	// Nothing writes entries after Freeze, so Frozen reads it unlocked;
	// the view that carries it is published after this returns.
	f := &Frozen{batch: d.batch, entries: d.entries}
	return f, f, d.batch + 1
}

// Reader returns a view of the live delta that sees ops as they are applied.
func (d *Delta) Reader() *LiveReader { return &LiveReader{d: d} }

// LiveReader reads a delta while it is being written. It is safe for
// concurrent use.
type LiveReader struct{ d *Delta }

// lookup returns the entry of key. A nil reader (the view of a failed
// coordinator) is empty.
func (r *LiveReader) lookup(key string) (entry, bool) {
	if r == nil {
		return entry{}, false
	}
	r.d.mu.RLock()
	defer r.d.mu.RUnlock()
	e, ok := r.d.entries[key]
	return e, ok
}

// Frozen is a frozen delta: an immutable set of entries that the flusher
// writes as one pebble batch. It is safe for concurrent use.
type Frozen struct {
	batch   uint64
	entries map[string]entry
}

// Batch returns the number of the pebble batch the delta is written as.
func (f *Frozen) Batch() uint64 { return f.batch }

// Len returns the number of entries, tombstones included.
func (f *Frozen) Len() int { return len(f.entries) }

func (f *Frozen) lookup(key string) (entry, bool) {
	e, ok := f.entries[key]
	return e, ok
}
