package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"

	"github.com/groupcommit/coordinator"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// The schema. Aggregates are append-only: every flushed delta adds its own
// rows, tagged with its generation, and never changes older ones. That is
// what lets a reader holding a [Snapshot] query the table while later
// deltas are being written: it ignores rows with gen > Snapshot.Gen, so it
// sees exactly the deltas its snapshot covers, and the frozen deltas of its
// view cover the rest without counting anything twice.
const schema = `
CREATE TABLE IF NOT EXISTS meta (
	key   TEXT PRIMARY KEY,
	value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS series (
	id     INTEGER PRIMARY KEY,
	name   TEXT NOT NULL,
	labels TEXT NOT NULL,
	UNIQUE (name, labels)
);
CREATE TABLE IF NOT EXISTS deltas (
	gen         INTEGER PRIMARY KEY, -- generation: last epoch of the delta
	first_epoch INTEGER NOT NULL,
	last_epoch  INTEGER NOT NULL,
	new_series  INTEGER NOT NULL,
	rows        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS aggregates (
	series_id INTEGER NOT NULL REFERENCES series (id),
	bucket    INTEGER NOT NULL, -- bucket start, Unix milliseconds
	gen       INTEGER NOT NULL REFERENCES deltas (gen),
	count     INTEGER NOT NULL,
	sum       REAL NOT NULL,
	min       REAL NOT NULL,
	max       REAL NOT NULL,
	last_t    INTEGER NOT NULL,
	last      REAL NOT NULL,
	PRIMARY KEY (series_id, bucket, gen)
) WITHOUT ROWID;
`

// openDB opens (creating if needed) dir/timeseries.db.
//
// Durability: the database runs in WAL mode with synchronous=NORMAL, so a
// commit appends to the WAL without fsync. A committed delta is visible to
// every reader and survives the process crashing, but not the machine
// losing power: that is the coordinator's Written level. [Flusher.FlushStorage]
// then runs PRAGMA wal_checkpoint(FULL), which fsyncs the WAL, copies it
// into the database file and fsyncs that: the Durable level. One checkpoint
// covers every delta written since the last, so the coordinator's group
// commit decides how often the machine pays for fsync — on demand, when a
// writer waits for Durable — instead of every transaction paying for it as
// with synchronous=FULL (where FlushStorage would have nothing left to do).
func openDB(dir string) (*sql.DB, error) {
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(NORMAL)", "busy_timeout(10000)", "foreign_keys(ON)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	dsn := "file:" + filepath.Join(dir, "timeseries.db") + "?" + q.Encode()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("creating schema: %w", err)
	}
	return db, nil
}

// Snapshot is the storage snapshot the coordinator publishes in its views:
// the database and the generation of the last delta written. Everything
// with gen <= Gen is in it. It is a small value, safe to copy and to use
// concurrently.
type Snapshot struct {
	DB  *sql.DB
	Gen uint64
}

// Range returns the aggregate of series id over the buckets starting in
// [from, to), as of the snapshot.
func (s Snapshot) Range(ctx context.Context, id SeriesID, from, to int64) (Agg, error) {
	var (
		a      Agg
		lo, hi sql.NullFloat64
	)
	err := s.DB.QueryRowContext(ctx, `
		SELECT COALESCE(SUM(count), 0), COALESCE(SUM(sum), 0), MIN(min), MAX(max)
		FROM aggregates
		WHERE series_id = ? AND bucket >= ? AND bucket < ? AND gen <= ?`,
		id, from, to, s.Gen).Scan(&a.Count, &a.Sum, &lo, &hi)
	if err != nil || a.Count == 0 {
		return Agg{}, err
	}
	a.Min, a.Max = lo.Float64, hi.Float64
	err = s.DB.QueryRowContext(ctx, `
		SELECT last_t, last FROM aggregates
		WHERE series_id = ? AND bucket >= ? AND bucket < ? AND gen <= ?
		ORDER BY last_t DESC, gen DESC LIMIT 1`,
		id, from, to, s.Gen).Scan(&a.LastT, &a.Last)
	return a, err
}

// loadState reads what a new run starts from: every series, the last
// generation written, and the bucket width (stored on first use, so a
// database is never read with another width).
func loadState(ctx context.Context, db *sql.DB, width int64) (series []Series, gen uint64, storedWidth int64, err error) {
	_, err = db.ExecContext(ctx, `INSERT OR IGNORE INTO meta (key, value) VALUES ('bucket_width_ms', ?)`, width)
	if err != nil {
		return nil, 0, 0, err
	}
	if err := db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'bucket_width_ms'`).Scan(&storedWidth); err != nil {
		return nil, 0, 0, err
	}
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(gen), 0) FROM deltas`).Scan(&gen); err != nil {
		return nil, 0, 0, err
	}
	rows, err := db.QueryContext(ctx, `SELECT id, name, labels FROM series ORDER BY id`)
	if err != nil {
		return nil, 0, 0, err
	}
	defer rows.Close()
	for rows.Next() {
		var s Series
		if err := rows.Scan(&s.ID, &s.Metric, &s.Labels); err != nil {
			return nil, 0, 0, err
		}
		series = append(series, s)
	}
	return series, gen, storedWidth, rows.Err()
}

// Flusher writes frozen deltas into SQLite, one transaction per delta, and
// checkpoints the WAL to make them durable. It implements
// [coordinator.Flusher]; the coordinator calls it from one goroutine.
type Flusher struct {
	db *sql.DB
	// beforeFlush, if set, runs at the start of FlushDelta; tests use it
	// to hold a frozen delta in the view.
	beforeFlush func(ctx context.Context) error
}

// FlushDelta writes the delta's new series and its aggregates, and records
// the delta in the deltas table, in one transaction. A retry after a
// commit whose outcome was lost finds the delta recorded and writes
// nothing again.
func (f *Flusher) FlushDelta(ctx context.Context, fr *Frozen, epochs coordinator.EpochRange) (Snapshot, error) {
	if f.beforeFlush != nil {
		if err := f.beforeFlush(ctx); err != nil {
			return Snapshot{}, err
		}
	}
	gen := epochs.Last()
	snap := Snapshot{DB: f.db, Gen: gen}
	tx, err := f.db.BeginTx(ctx, nil)
	if err != nil {
		return Snapshot{}, err
	}
	defer tx.Rollback()
	var done bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM deltas WHERE gen = ?)`, gen).Scan(&done); err != nil {
		return Snapshot{}, err
	}
	if done {
		return snap, nil
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO deltas (gen, first_epoch, last_epoch, new_series, rows) VALUES (?, ?, ?, ?, ?)`,
		gen, epochs.Start, epochs.Last(), len(fr.Series), fr.Rows())
	if err != nil {
		return Snapshot{}, err
	}
	insSeries, err := tx.PrepareContext(ctx, `INSERT INTO series (id, name, labels) VALUES (?, ?, ?)`)
	if err != nil {
		return Snapshot{}, err
	}
	defer insSeries.Close()
	for _, s := range fr.Series {
		if _, err := insSeries.ExecContext(ctx, s.ID, s.Metric, s.Labels); err != nil {
			return Snapshot{}, fmt.Errorf("inserting series %d %s: %w", s.ID, s.Key(), err)
		}
	}
	insAgg, err := tx.PrepareContext(ctx, `INSERT INTO aggregates
		(series_id, bucket, gen, count, sum, min, max, last_t, last) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return Snapshot{}, err
	}
	defer insAgg.Close()
	for id, m := range fr.aggs {
		for start, a := range m {
			if _, err := insAgg.ExecContext(ctx, id, start, gen, a.Count, a.Sum, a.Min, a.Max, a.LastT, a.Last); err != nil {
				return Snapshot{}, fmt.Errorf("inserting aggregate: %w", err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return Snapshot{}, err
	}
	return snap, nil
}

// errCheckpointBusy reports a checkpoint that could not complete; the
// coordinator's retry policy may try again.
var errCheckpointBusy = errors.New("wal_checkpoint(FULL) could not complete: database busy")

// FlushStorage checkpoints the WAL into the database file with fsync (see
// [openDB] for why this, rather than synchronous=FULL).
func (f *Flusher) FlushStorage(ctx context.Context) error {
	var busy, logFrames, checkpointed int
	err := f.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(FULL)`).Scan(&busy, &logFrames, &checkpointed)
	if err != nil {
		return err
	}
	if busy != 0 || checkpointed != logFrames {
		return fmt.Errorf("%w (log %d frames, checkpointed %d)", errCheckpointBusy, logFrames, checkpointed)
	}
	return nil
}
