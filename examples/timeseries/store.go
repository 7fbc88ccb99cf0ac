package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/groupcommit/coordinator"
)

// TS is the coordinator instantiated for time series: samples in, series
// IDs out, frozen deltas and live readers in views, SQLite snapshots.
type TS = coordinator.Coordinator[Sample, SeriesID, *Frozen, *LiveReader, Snapshot]

// View is a view of a [TS].
type View = coordinator.View[*Frozen, *LiveReader, Snapshot]

// Options configures [Open]. The zero value is valid.
type Options struct {
	// BucketWidth is the aggregation interval. Zero means the width the
	// database was created with, or one minute for a new database.
	BucketWidth time.Duration
	// Coordinator configures the coordinator. Open sets its FirstEpoch to
	// one past the last generation written.
	Coordinator coordinator.Config

	// beforeFlush is passed on to the Flusher (tests only).
	beforeFlush func(ctx context.Context) error
}

const defaultBucketWidth = time.Minute

// Store is a time-series store: a coordinator whose deltas aggregate
// samples in memory and whose flusher writes them to SQLite. Create it with
// [Open] and close it with [Store.Close]. It is safe for concurrent use.
type Store struct {
	c     *TS
	db    *sql.DB
	dict  *Dict
	width int64
}

// Open opens (or creates) the database in dir, loads the series
// dictionary and the last generation written, and starts a coordinator
// that continues from them.
func Open(ctx context.Context, dir string, opts Options) (*Store, error) {
	width := opts.BucketWidth.Milliseconds()
	if opts.BucketWidth < 0 || opts.BucketWidth > 0 && width == 0 {
		return nil, fmt.Errorf("timeseries: bucket width %v is not a positive number of milliseconds", opts.BucketWidth)
	}
	if width == 0 {
		width = defaultBucketWidth.Milliseconds()
	}
	db, err := openDB(dir)
	if err != nil {
		return nil, fmt.Errorf("timeseries: %w", err)
	}
	series, gen, stored, err := loadState(ctx, db, width)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("timeseries: loading state: %w", err)
	}
	if stored != width {
		if opts.BucketWidth != 0 {
			db.Close()
			return nil, fmt.Errorf("timeseries: database uses %v buckets, not %v",
				time.Duration(stored)*time.Millisecond, opts.BucketWidth)
		}
		width = stored
	}
	dict := NewDict(series)
	flusher := &Flusher{db: db, beforeFlush: opts.beforeFlush}
	newDelta := func(d *Dict) *Delta { return NewDelta(d, width) }
	// Epochs continue from the last generation written, so a generation
	// (a delta's last epoch) is never reused across restarts.
	cfg := opts.Coordinator
	cfg.FirstEpoch = gen + 1
	c, err := coordinator.New(cfg, newDelta, dict, Snapshot{DB: db, Gen: gen}, flusher)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("timeseries: %w", err)
	}
	c.Start()
	return &Store{c: c, db: db, dict: dict, width: width}, nil
}

// Coordinator returns the store's coordinator: write samples through its
// channels, take views, flush.
func (s *Store) Coordinator() *TS { return s.c }

// Dict returns the series dictionary.
func (s *Store) Dict() *Dict { return s.dict }

// BucketWidth returns the aggregation interval.
func (s *Store) BucketWidth() time.Duration { return time.Duration(s.width) * time.Millisecond }

// Query returns the aggregate of a series over the buckets whose start is
// in [from, to) (Unix milliseconds; align them to the bucket width to get
// exact time ranges), as of view v.
//
// It merges the three layers of the view, oldest first: the storage
// snapshot (bounded by its generation, so rows written after the view was
// taken are not counted), the frozen deltas not yet written, and the live
// delta. So it sees every sample applied before v was taken, exactly once,
// whether or not it has been flushed since. The view of a failed
// coordinator holds only what was written.
func (s *Store) Query(ctx context.Context, v *View, metric string, labels Labels, from, to int64) (Agg, error) {
	id, ok := s.dict.Lookup(SeriesKey(metric, labels))
	if !ok {
		return Agg{}, nil
	}
	a, err := v.Snapshot.Range(ctx, id, from, to)
	if err != nil {
		return Agg{}, fmt.Errorf("timeseries: query: %w", err)
	}
	for i := len(v.Frozen) - 1; i >= 0; i-- {
		a.Merge(v.Frozen[i].View.Range(id, from, to))
	}
	a.Merge(v.Current.Range(id, from, to))
	return a, nil
}

// Close stops the coordinator, which writes and checkpoints everything
// accepted, then closes the database. If ctx ends before the coordinator
// has stopped, Close returns ctx's error and leaves the database open;
// call Close again to finish.
func (s *Store) Close(ctx context.Context) error {
	stopErr := s.c.Stop(ctx)
	select {
	case <-s.c.Done():
	default:
		return stopErr // the flusher may still be using the database
	}
	return errors.Join(stopErr, s.db.Close())
}
