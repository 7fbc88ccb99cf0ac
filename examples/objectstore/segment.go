package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
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

// errInvalidOp is wrapped by every reason to reject an Op.
var errInvalidOp = errors.New("invalid op")

func (o Op) validate() error {
	switch {
	case o.Key == "" || len(o.Key) > MaxKeyLen:
		return fmt.Errorf("%w: key length %d not in [1, %d]", errInvalidOp, len(o.Key), MaxKeyLen)
	case len(o.Value) > MaxValueLen:
		return fmt.Errorf("%w: value length %d above %d", errInvalidOp, len(o.Value), MaxValueLen)
	case o.Delete && o.Value != nil:
		return fmt.Errorf("%w: delete with a value", errInvalidOp)
	}
	return nil
}

// entry is the latest state of a key in a delta or segment.
type entry struct {
	value   []byte
	deleted bool // a tombstone: hides the key in older segments
}

// Delta is the live in-memory batch: the latest Op per key. It implements
// [coordinator.Delta] with no context to carry (C is struct{}).
//
// The coordinator calls Apply, EstimateSize and Freeze from one goroutine;
// readers go through [LiveReader], which is why entries are guarded.
type Delta struct {
	mu      sync.RWMutex
	entries map[string]entry // protected by mu (written by Apply, read by LiveReader)
	size    int
}

// NewDelta returns an empty delta.
func NewDelta(struct{}) *Delta { return &Delta{entries: map[string]entry{}} }

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
// the size of its segment object.
func (d *Delta) EstimateSize() int { return d.size }

// Freeze ends the delta. Its entries become an immutable [Segment], which
// is both the data to flush and its read view.
func (d *Delta) Freeze() (*Segment, *Segment, struct{}) {
	s := newSegment(d.entries)
	return s, s, struct{}{}
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

// Segment is an immutable set of entries: a frozen delta, and the contents
// of one segment object. It is safe for concurrent use.
type Segment struct {
	keys    []string // sorted
	entries map[string]entry
}

func newSegment(entries map[string]entry) *Segment {
	keys := make([]string, 0, len(entries))
	for k := range entries {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return &Segment{keys: keys, entries: entries}
}

// Len returns the number of entries, tombstones included.
func (s *Segment) Len() int { return len(s.keys) }

func (s *Segment) lookup(key string) (entry, bool) {
	e, ok := s.entries[key]
	return e, ok
}

// The segment object format, all integers unsigned varints:
//
//	magic "cosg0001"
//	first, last        the sequence numbers of the epochs it holds
//	count
//	count × (key length, key, kind 0=put|1=delete, [value length, value])
//	CRC-32C of all the above, 4 bytes big-endian
const segmentMagic = "cosg0001"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encode returns the segment object for the epochs [first, last].
func (s *Segment) encode(first, last uint64) []byte {
	n := len(segmentMagic) + 3*binary.MaxVarintLen64 + 4
	for _, k := range s.keys {
		n += 2*binary.MaxVarintLen64 + 1 + len(k) + len(s.entries[k].value)
	}
	b := make([]byte, 0, n)
	b = append(b, segmentMagic...)
	b = binary.AppendUvarint(b, first)
	b = binary.AppendUvarint(b, last)
	b = binary.AppendUvarint(b, uint64(len(s.keys)))
	for _, k := range s.keys {
		e := s.entries[k]
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		if e.deleted {
			b = append(b, 1)
			continue
		}
		b = append(b, 0)
		b = binary.AppendUvarint(b, uint64(len(e.value)))
		b = append(b, e.value...)
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// ErrCorrupt is wrapped by every error about a damaged segment or manifest.
var ErrCorrupt = errors.New("objectstore: corrupt")

// decodeSegment parses and verifies a segment object.
func decodeSegment(data []byte) (s *Segment, first, last uint64, err error) {
	fail := func(what string) (*Segment, uint64, uint64, error) {
		return nil, 0, 0, fmt.Errorf("%w segment: %s", ErrCorrupt, what)
	}
	if len(data) < len(segmentMagic)+4 || string(data[:len(segmentMagic)]) != segmentMagic {
		return fail("bad magic")
	}
	body, sum := data[:len(data)-4], binary.BigEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return fail("checksum mismatch")
	}
	r := body[len(segmentMagic):]
	uvarint := func() (uint64, bool) {
		v, n := binary.Uvarint(r)
		if n <= 0 {
			return 0, false
		}
		r = r[n:]
		return v, true
	}
	bytesOf := func() ([]byte, bool) {
		n, ok := uvarint()
		if !ok || n > uint64(len(r)) {
			return nil, false
		}
		b := r[:n:n]
		r = r[n:]
		return b, true
	}
	var count uint64
	var ok1, ok2, ok3 bool
	first, ok1 = uvarint()
	last, ok2 = uvarint()
	count, ok3 = uvarint()
	if !ok1 || !ok2 || !ok3 || first == 0 || last < first || count > uint64(len(r)) {
		return fail("bad header")
	}
	s = &Segment{keys: make([]string, 0, count), entries: make(map[string]entry, count)}
	for range count {
		k, ok := bytesOf()
		if !ok || len(r) == 0 {
			return fail("truncated entry")
		}
		key := string(k)
		if n := len(s.keys); n > 0 && s.keys[n-1] >= key {
			return fail("keys out of order")
		}
		kind := r[0]
		r = r[1:]
		var e entry
		switch kind {
		case 0:
			v, ok := bytesOf()
			if !ok {
				return fail("truncated value")
			}
			e.value = bytes.Clone(v)
		case 1:
			e.deleted = true
		default:
			return fail("bad entry kind")
		}
		s.keys = append(s.keys, key)
		s.entries[key] = e
	}
	if len(r) != 0 {
		return fail("trailing bytes")
	}
	return s, first, last, nil
}
