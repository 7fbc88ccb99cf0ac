package main

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// ErrReleased is returned by [Get] when the view's pebble snapshot was
// released: the view is older than the two latest flushes and no [Reader]
// pins it. Take a new view, or pin views with [Store.Read].
var ErrReleased = errors.New("pebble example: view's snapshot released; take a newer view")

// ErrClosed is returned by reads after [Store.Close].
var ErrClosed = errors.New("pebble example: store closed")

// Snapshot is the coordinator's storage snapshot S: a pebble snapshot
// taken right after a delta's batch was committed, so it holds exactly the
// epochs up to Epoch. It is safe for concurrent use and must not be copied.
//
// # Lifetime
//
// A Snapshot is reference counted. The flusher holds one reference from
// the moment it creates the snapshot (after batch n) until batch n+2 is
// committed; batch n+1 replaced it in the latest view, so a view stays
// readable for at least one whole flush after it stopped being the latest.
// Each [Reader] holds one more reference until it is closed. The pebble
// snapshot is closed when the last reference goes; from then on [Get] on a
// view holding it returns [ErrReleased] instead of reading a closed
// snapshot (which would panic in pebble). A reference can be taken only
// while the count is above zero, so a released snapshot never comes back.
// [Store.Close] closes every snapshot left, pinned or not.
//
// Pebble keeps every version a snapshot may see, so an unclosed Reader
// holds back garbage collection in compactions: close Readers promptly.
type Snapshot struct {
	// Epoch is the last epoch the snapshot holds.
	Epoch uint64
	// Batch is the number of the last batch the snapshot holds.
	Batch uint64

	snap *pebble.Snapshot
	refs atomic.Int64 // 0 once released
	reg  *snapshots
}

// acquire takes a reference, unless the snapshot was already released.
func (s *Snapshot) acquire() bool {
	for {
		n := s.refs.Load()
		if n == 0 {
			return false
		}
		if s.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release drops a reference and closes the pebble snapshot with the last.
func (s *Snapshot) release() error {
	switch n := s.refs.Add(-1); {
	case n == 0:
		return s.reg.drop(s)
	case n < 0:
		panic("pebble example: snapshot released too many times")
	}
	return nil
}

// get reads key from the snapshot, holding a reference while it reads.
func (s *Snapshot) get(key string) ([]byte, bool, error) {
	s.reg.gate.RLock()
	defer s.reg.gate.RUnlock()
	if s.reg.closed {
		return nil, false, ErrClosed
	}
	if !s.acquire() {
		return nil, false, ErrReleased
	}
	v, closer, err := s.snap.Get([]byte(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, s.release()
	}
	if err != nil {
		return nil, false, errors.Join(err, s.release())
	}
	v = bytes.Clone(v) // pebble's buffer is valid only until closer.Close
	return v, true, errors.Join(closer.Close(), s.release())
}

// snapshots is the registry of a store's open pebble snapshots. It lets
// Close close what readers still pin without racing with their reads.
type snapshots struct {
	db *pebble.DB

	// gate is held for reading while a snapshot is acquired and read, and
	// for writing by closeAll, so no read runs on a snapshot being closed.
	gate   sync.RWMutex
	closed bool // protected by gate

	mu   sync.Mutex
	open map[*Snapshot]struct{} // protected by mu
}

func newSnapshots(db *pebble.DB) *snapshots {
	return &snapshots{db: db, open: map[*Snapshot]struct{}{}}
}

// take snapshots the database with one reference, for the flusher. The
// flusher is the only writer, so the snapshot holds exactly the batches it
// committed.
func (r *snapshots) take(epoch, batch uint64) *Snapshot {
	s := &Snapshot{Epoch: epoch, Batch: batch, snap: r.db.NewSnapshot(), reg: r}
	s.refs.Store(1)
	r.mu.Lock()
	r.open[s] = struct{}{}
	r.mu.Unlock()
	return s
}

// drop closes the pebble snapshot of s, unless closeAll already did.
func (r *snapshots) drop(s *Snapshot) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.open[s]; !ok {
		return nil
	}
	delete(r.open, s)
	return s.snap.Close()
}

// count returns the number of open pebble snapshots.
func (r *snapshots) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.open)
}

// acquireLatest pins the snapshot of the view latest returns. It retries
// when the flusher released that snapshot between the two steps, which
// takes two flushes, so it makes progress: the latest view's snapshot is
// always held by the flusher until closeAll, which cannot run meanwhile.
func (r *snapshots) acquireLatest(latest func() *View) (*View, error) {
	r.gate.RLock()
	defer r.gate.RUnlock()
	for !r.closed {
		if v := latest(); v.Snapshot.acquire() {
			return v, nil
		}
	}
	return nil, ErrClosed
}

// closeAll closes every snapshot left; later reads fail with ErrClosed.
// It waits for reads in progress.
func (r *snapshots) closeAll() error {
	r.gate.Lock()
	defer r.gate.Unlock()
	r.closed = true
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for s := range r.open {
		errs = append(errs, s.snap.Close())
	}
	clear(r.open)
	return errors.Join(errs...)
}
