package main

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"slices"

	"github.com/groupcommit/coordinator"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// Object names in the bucket.
const (
	manifestKey   = "manifest.json"
	segmentPrefix = "segments/"
)

// segmentName names the segment object holding the sequence numbers
// [first, last]; zero padding makes names sort in sequence order.
func segmentName(first, last uint64) string {
	return fmt.Sprintf("%s%020d-%020d.seg", segmentPrefix, first, last)
}

// SegmentRef describes a segment object in the manifest.
type SegmentRef struct {
	Name    string `json:"name"`
	First   uint64 `json:"first"` // first sequence number it holds
	Last    uint64 `json:"last"`  // last sequence number it holds
	Entries int    `json:"entries"`
	Size    int64  `json:"size"`   // object size in bytes
	CRC32C  uint32 `json:"crc32c"` // checksum of the whole object
}

// Manifest is the manifest object: the only thing readers of the bucket
// trust. A segment not listed in it does not exist, whether or not its
// object does.
type Manifest struct {
	Last     uint64       `json:"last"` // last sequence number listed; 0 for none
	Segments []SegmentRef `json:"segments"`
}

// State is the storage snapshot of the coordinator: the segments written
// so far, oldest first, with their contents in memory. A state is
// immutable and safe for concurrent use; the zero value is empty.
//
// Sequence numbers are epochs continued across runs: a run's epoch e is
// sequence number Last+e of the state it recovered.
type State struct {
	Segments []SegmentRef
	segs     []*Segment // parallel to Segments
}

// Last returns the last sequence number in the state, 0 if none.
func (s *State) Last() uint64 {
	if len(s.Segments) == 0 {
		return 0
	}
	return s.Segments[len(s.Segments)-1].Last
}

// lookup finds the newest entry of key.
func (s *State) lookup(key string) (entry, bool) {
	for i := len(s.segs) - 1; i >= 0; i-- {
		if e, ok := s.segs[i].lookup(key); ok {
			return e, true
		}
	}
	return entry{}, false
}

// Get returns the value of key, and whether it exists.
func (s *State) Get(key string) ([]byte, bool) {
	e, ok := s.lookup(key)
	return e.value, ok && !e.deleted
}

// All returns every live key and its value.
func (s *State) All() map[string][]byte {
	m := map[string][]byte{}
	for _, seg := range s.segs {
		for _, k := range seg.keys {
			if e := seg.entries[k]; e.deleted {
				delete(m, k)
			} else {
				m[k] = e.value
			}
		}
	}
	return m
}

// with returns the state with one more segment.
func (s *State) with(ref SegmentRef, seg *Segment) *State {
	return &State{
		Segments: append(slices.Clip(s.Segments), ref),
		segs:     append(slices.Clip(s.segs), seg),
	}
}

// Flusher writes each frozen delta as an immutable segment object, and
// makes segments durable by writing the manifest that lists them. It
// implements [coordinator.Flusher]; the coordinator calls it from one
// goroutine.
type Flusher struct {
	bucket *blob.Bucket
	state  *State // every segment written, listed in the manifest or not
	listed uint64 // last sequence number in the manifest object
}

// FlushDelta writes the segment object for epochs. The segment is then
// Written: readers of this process see it through the returned state, but
// [Recover] will not until FlushStorage lists it in the manifest. A retry
// after a call that failed writes the same object again; a retry after a
// call that succeeded (its result lost on the way) returns the state that
// already holds the segment, so that the manifest never lists it twice.
func (f *Flusher) FlushDelta(ctx context.Context, seg *Segment, epochs coordinator.EpochRange) (*State, error) {
	first, last := epochs.Start, epochs.Last()
	if last <= f.state.Last() {
		return f.state, nil
	}
	data := seg.encode(first, last)
	ref := SegmentRef{
		Name:    segmentName(first, last),
		First:   first,
		Last:    last,
		Entries: seg.Len(),
		Size:    int64(len(data)),
		CRC32C:  crc32.Checksum(data, castagnoli),
	}
	opts := &blob.WriterOptions{ContentType: "application/octet-stream"}
	if err := f.bucket.WriteAll(ctx, ref.Name, data, opts); err != nil {
		return nil, fmt.Errorf("writing %s: %w", ref.Name, err)
	}
	f.state = f.state.with(ref, seg)
	return f.state, nil
}

// FlushStorage writes the manifest listing every segment written so far,
// after the segments themselves: an object store makes each object
// durable when its write completes, so once the manifest write completes
// everything it lists is durable and reachable. The manifest is replaced
// in one write (a PUT, or a rename for file://), so a reader sees the old
// list or the new one, never a mix.
func (f *Flusher) FlushStorage(ctx context.Context) error {
	if f.state.Last() == f.listed {
		return nil // nothing new since the last manifest
	}
	m := Manifest{Last: f.state.Last(), Segments: f.state.Segments}
	data, err := json.MarshalIndent(m, "", "\t")
	if err != nil {
		return err
	}
	opts := &blob.WriterOptions{ContentType: "application/json"}
	if err := f.bucket.WriteAll(ctx, manifestKey, data, opts); err != nil {
		return fmt.Errorf("writing %s: %w", manifestKey, err)
	}
	f.listed = m.Last
	return nil
}

// Recover rebuilds the state of a bucket from its manifest and the
// segments it lists, verifying each segment's size and checksums. Segment
// objects the manifest does not list are ignored (see [Orphans]). A bucket
// without a manifest is empty.
func Recover(ctx context.Context, bucket *blob.Bucket) (*State, error) {
	data, err := bucket.ReadAll(ctx, manifestKey)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return &State{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("objectstore: reading manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w manifest: %v", ErrCorrupt, err)
	}
	st := &State{}
	for _, ref := range m.Segments {
		if ref.First != st.Last()+1 || ref.Last < ref.First {
			return nil, fmt.Errorf("%w manifest: segment %s [%d, %d] does not follow %d",
				ErrCorrupt, ref.Name, ref.First, ref.Last, st.Last())
		}
		data, err := bucket.ReadAll(ctx, ref.Name)
		if err != nil {
			return nil, fmt.Errorf("objectstore: reading %s: %w", ref.Name, err)
		}
		if int64(len(data)) != ref.Size || crc32.Checksum(data, castagnoli) != ref.CRC32C {
			return nil, fmt.Errorf("%w %s: size %d, checksum %08x; manifest says %d, %08x",
				ErrCorrupt, ref.Name, len(data), crc32.Checksum(data, castagnoli), ref.Size, ref.CRC32C)
		}
		seg, first, last, err := decodeSegment(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ref.Name, err)
		}
		if first != ref.First || last != ref.Last || seg.Len() != ref.Entries {
			return nil, fmt.Errorf("%w %s: holds [%d, %d] with %d entries; manifest says [%d, %d] with %d",
				ErrCorrupt, ref.Name, first, last, seg.Len(), ref.First, ref.Last, ref.Entries)
		}
		st = st.with(ref, seg)
	}
	if st.Last() != m.Last {
		return nil, fmt.Errorf("%w manifest: last is %d, segments end at %d", ErrCorrupt, m.Last, st.Last())
	}
	return st, nil
}

// Orphans lists the segment objects in bucket that st does not hold:
// segments written but never listed in a manifest, left by a crash (or
// still waiting for FlushStorage). A new run overwrites them as it reuses
// their sequence numbers; a garbage collector may delete them.
func Orphans(ctx context.Context, bucket *blob.Bucket, st *State) ([]string, error) {
	listed := make(map[string]bool, len(st.Segments))
	for _, ref := range st.Segments {
		listed[ref.Name] = true
	}
	var orphans []string
	it := bucket.List(&blob.ListOptions{Prefix: segmentPrefix})
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("objectstore: listing segments: %w", err)
		}
		if !listed[obj.Key] {
			orphans = append(orphans, obj.Key)
		}
	}
	return orphans, nil
}

// KV is the coordinator instantiated for the object store.
type KV = coordinator.Coordinator[Op, struct{}, *Segment, *LiveReader, *State]

// View is a view of a [KV].
type View = coordinator.View[*Segment, *LiveReader, *State]

// Store is a key-value store whose data lives in a bucket as immutable
// segments plus a manifest. Create it with [Open], close it with
// [Store.Close]; it is safe for concurrent use. It assumes it is the only
// writer of its bucket.
type Store struct {
	c *KV
}

// Open recovers the state of bucket and starts a coordinator that
// continues from it: cfg.FirstEpoch is set to one past the last sequence
// number recovered. The caller keeps ownership of bucket and must keep it
// open until Close returns.
func Open(ctx context.Context, bucket *blob.Bucket, cfg coordinator.Config) (*Store, error) {
	st, err := Recover(ctx, bucket)
	if err != nil {
		return nil, err
	}
	f := &Flusher{bucket: bucket, state: st, listed: st.Last()}
	// Sequence numbers are epochs: continue them after the last one listed.
	cfg.FirstEpoch = st.Last() + 1
	c, err := coordinator.New(cfg, NewDelta, struct{}{}, st, f)
	if err != nil {
		return nil, fmt.Errorf("objectstore: %w", err)
	}
	c.Start()
	return &Store{c: c}, nil
}

// Coordinator returns the store's coordinator: write through its
// channels, take views, flush.
func (s *Store) Coordinator() *KV { return s.c }

// Get returns the value of key as of the latest view.
func (s *Store) Get(key string) ([]byte, bool) { return Get(s.c.View(), key) }

// Get returns the value of key as of view v, looking in the live delta,
// then the frozen deltas newest first, then the written segments.
func Get(v *View, key string) ([]byte, bool) {
	if e, ok := v.Current.lookup(key); ok {
		return e.value, !e.deleted
	}
	for _, fd := range v.Frozen {
		if e, ok := fd.View.lookup(key); ok {
			return e.value, !e.deleted
		}
	}
	return v.Snapshot.Get(key)
}

// Close stops the coordinator: it writes every accepted op as segments and
// a final manifest. See [coordinator.Coordinator.Stop].
func (s *Store) Close(ctx context.Context) error { return s.c.Stop(ctx) }
