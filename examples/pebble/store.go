package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/groupcommit/coordinator"
)

// KV is the coordinator instantiated for the pebble store.
type KV = coordinator.Coordinator[Op, struct{}, *Frozen, *LiveReader, *Snapshot]

// View is a view of a [KV].
type View = coordinator.View[*Frozen, *LiveReader, *Snapshot]

// Store is a key-value store that puts the write coordinator in front of
// pebble: writers go through the coordinator's channels, each frozen delta
// becomes one pebble batch, and readers see the live delta, the frozen
// deltas and a pebble snapshot through a [View]. Create it with [Open],
// close it with [Store.Close]; it is safe for concurrent use and must not
// be copied. It must be the only writer of its database.
type Store struct {
	db      *pebble.DB
	c       *KV
	snaps   *snapshots
	resumed meta // what Open recovered

	closeMu  sync.Mutex
	closed   bool  // protected by closeMu
	closeErr error // protected by closeMu
}

// Open opens (or creates) the pebble database in dir and starts a
// coordinator in front of it. It reads the last epoch and batch number
// written from the database and sets cfg.FirstEpoch one past that epoch,
// so epochs keep growing across restarts; any FirstEpoch given is
// replaced. opts may be nil; its WAL must not be disabled, since
// durability is a WAL sync.
func Open(dir string, opts *pebble.Options, cfg coordinator.Config) (*Store, error) {
	return open(dir, opts, cfg, nil)
}

func open(dir string, opts *pebble.Options, cfg coordinator.Config, beforeCommit func(*Frozen)) (*Store, error) {
	opts = opts.Clone() // the caller's Options stay as they were
	if opts.DisableWAL {
		return nil, errors.New("pebble example: Options.DisableWAL is set; the store makes writes durable by syncing the WAL")
	}
	if opts.Logger == nil {
		opts.Logger = quietLogger{}
	}
	f, initial, err := openFlusher(dir, opts, beforeCommit)
	if err != nil {
		return nil, err
	}
	m := f.written
	cfg.FirstEpoch = m.Epoch + 1
	c, err := coordinator.New(cfg, NewDelta, m.Batch+1, initial, f)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("pebble example: %w", err), f.snaps.closeAll(), f.db.Close())
	}
	c.Start()
	return &Store{db: f.db, c: c, snaps: f.snaps, resumed: m}, nil
}

// openFlusher opens the database in dir and returns a Flusher that
// continues from what it holds (f.written: the last epoch and batch), and
// the snapshot to start from.
func openFlusher(dir string, opts *pebble.Options, beforeCommit func(*Frozen)) (*Flusher, *Snapshot, error) {
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, nil, err
	}
	m, err := readMeta(db)
	if err != nil {
		return nil, nil, errors.Join(err, db.Close())
	}
	snaps := newSnapshots(db)
	initial := snaps.take(m.Epoch, m.Batch)
	return &Flusher{db: db, snaps: snaps, beforeCommit: beforeCommit, written: m, last: initial}, initial, nil
}

// Coordinator returns the store's coordinator: write through its
// channels, wait on handles, flush.
func (s *Store) Coordinator() *KV { return s.c }

// Resumed returns the last epoch and batch number Open found in the
// database: 0, 0 for a new one.
func (s *Store) Resumed() (epoch, batch uint64) { return s.resumed.Epoch, s.resumed.Batch }

// Write writes op on the default channel and waits until it reaches level.
// It returns the op's epoch.
func (s *Store) Write(ctx context.Context, op Op, level coordinator.Durability) (uint64, error) {
	h, err := s.c.Channel("default").Write(ctx, op)
	if err != nil {
		return 0, err
	}
	if _, err := h.Wait(ctx, level); err != nil {
		return 0, err
	}
	return h.Epoch(ctx)
}

// Get returns the value of key as of view v, looking in the live delta,
// then the frozen deltas newest first, then v's pebble snapshot. It
// returns [ErrReleased] if the key is not in the deltas and v's snapshot
// was released (see [Snapshot] for when), and [ErrClosed] after the store
// was closed. Reserved keys are never found.
func Get(v *View, key string) ([]byte, bool, error) {
	if !validKey(key) {
		return nil, false, nil
	}
	if e, ok := v.Current.lookup(key); ok {
		return e.value, !e.deleted, nil
	}
	for _, fd := range v.Frozen {
		if e, ok := fd.View.lookup(key); ok {
			return e.value, !e.deleted, nil
		}
	}
	return v.Snapshot.get(key)
}

// Read returns a [Reader] on the latest view, whose pebble snapshot stays
// open until the Reader is closed.
func (s *Store) Read() (*Reader, error) {
	v, err := s.snaps.acquireLatest(s.c.View)
	if err != nil {
		return nil, err
	}
	return &Reader{v: v}, nil
}

// Reader reads one view with its pebble snapshot pinned. It is safe for
// concurrent use; Close it when done, before or after the store's Close.
type Reader struct {
	v    *View
	once sync.Once
}

// View returns the view the reader reads.
func (r *Reader) View() *View { return r.v }

// Get returns the value of key as of the reader's view (see [Get]).
func (r *Reader) Get(key string) ([]byte, bool, error) { return Get(r.v, key) }

// Close unpins the reader's snapshot. Later calls do nothing.
func (r *Reader) Close() error {
	var err error
	r.once.Do(func() { err = r.v.Snapshot.release() })
	return err
}

// OpenSnapshots returns the number of pebble snapshots the store holds
// open: at most two for the flusher, plus those pinned by Readers.
func (s *Store) OpenSnapshots() int { return s.snaps.count() }

// Close stops the coordinator, which writes every accepted op and syncs
// the WAL, then closes every snapshot left and the database. It returns
// the coordinator's error, if any, joined with pebble's. Readers still
// open get ErrClosed from then on.
//
// If ctx ends before the coordinator has stopped, Close returns ctx's
// error and leaves the database open, because the flusher may still be
// writing to it; call Close again to finish.
func (s *Store) Close(ctx context.Context) error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return s.closeErr
	}
	err := s.c.Stop(ctx)
	select {
	case <-s.c.Done():
	default:
		return err
	}
	s.closed = true
	// closeAll closes the flusher's snapshots with the rest: acquiring
	// them fails from now on, so nothing reads a closed snapshot.
	s.closeErr = errors.Join(err, s.snaps.closeAll(), s.db.Close())
	return s.closeErr
}

// quietLogger drops pebble's informational messages and logs its errors.
// A fatal error panics instead of exiting: in the flusher (pebble calls
// Fatalf when a commit fails) the coordinator turns the panic into a
// failure that every waiter sees.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}
func (quietLogger) Errorf(format string, args ...any) {
	log.Printf("pebble: "+format, args...)
}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("pebble: "+format, args...))
}
