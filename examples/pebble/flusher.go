package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"maps"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/groupcommit/coordinator"
)

// metaKey is the store's own record in pebble: the last epoch and the
// last batch number written. Every batch rewrites it, so it is always
// exactly as new as the data beside it (a pebble batch is atomic, in the
// WAL and after a crash).
var metaKey = []byte(reservedPrefix + "coordinator/meta")

// meta is the value of metaKey.
type meta struct {
	Epoch uint64 // the last epoch written; 0 for none
	Batch uint64 // the number of the last batch written; 0 for none
}

func (m meta) encode() []byte {
	b := make([]byte, 0, 16)
	b = binary.BigEndian.AppendUint64(b, m.Epoch)
	return binary.BigEndian.AppendUint64(b, m.Batch)
}

func decodeMeta(b []byte) (meta, error) {
	if len(b) != 16 {
		return meta{}, fmt.Errorf("pebble example: meta record has %d bytes; want 16", len(b))
	}
	return meta{Epoch: binary.BigEndian.Uint64(b), Batch: binary.BigEndian.Uint64(b[8:])}, nil
}

// readMeta reads the meta record of db; a database without one is new.
func readMeta(db *pebble.DB) (meta, error) {
	v, closer, err := db.Get(metaKey)
	if errors.Is(err, pebble.ErrNotFound) {
		return meta{}, nil
	}
	if err != nil {
		return meta{}, err
	}
	defer closer.Close()
	return decodeMeta(v)
}

// Flusher writes each frozen delta to pebble as one batch and makes
// batches durable by syncing pebble's write-ahead log. It implements
// [coordinator.Flusher]; the coordinator calls it from one goroutine, and
// it must be the only writer of its database.
type Flusher struct {
	db    *pebble.DB
	snaps *snapshots
	// beforeCommit, if set, runs before each batch is committed; tests use
	// it to hold the flusher while they look at frozen deltas.
	beforeCommit func(*Frozen)

	// Owned by the flusher goroutine.
	written meta // what the last batch committed recorded
	// The flusher's references: last is the snapshot it returned last
	// (the one in the latest view), prev the one before.
	last, prev *Snapshot
}

// FlushDelta commits the delta as one pebble batch, together with the
// meta record naming its last epoch and its batch number, and returns a
// snapshot that includes it. The batch is committed with pebble.NoSync:
// it is in the memtable and in the WAL buffer, readable by everyone and
// surviving a process crash once pebble's log writer hands it to the
// kernel, but not fsynced — that is the coordinator's Written. A retry
// after a failed commit commits the same puts and deletes again, which
// changes nothing; a retry after a commit that succeeded (its result lost
// on the way) returns that commit's snapshot.
func (f *Flusher) FlushDelta(ctx context.Context, d *Frozen, epochs coordinator.EpochRange) (*Snapshot, error) {
	if d.batch == f.written.Batch && epochs.Last() == f.written.Epoch {
		return f.last, nil
	}
	if d.batch != f.written.Batch+1 {
		return nil, fmt.Errorf("pebble example: batch %d follows batch %d", d.batch, f.written.Batch)
	}
	m := meta{Epoch: epochs.Last(), Batch: d.batch}
	b := f.db.NewBatch()
	defer b.Close()
	// Sorted, so a batch's WAL record is the same whatever the map order.
	for _, k := range slices.Sorted(maps.Keys(d.entries)) {
		var err error
		if e := d.entries[k]; e.deleted {
			err = b.Delete([]byte(k), nil)
		} else {
			err = b.Set([]byte(k), e.value, nil)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := b.Set(metaKey, m.encode(), nil); err != nil {
		return nil, err
	}
	if f.beforeCommit != nil {
		f.beforeCommit(d)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return nil, err
	}
	f.written = m
	snap := f.snaps.take(m.Epoch, m.Batch)
	// prev left the latest view when the snapshot returned last time was
	// published, and has stayed readable through this whole flush: the
	// lifetime Snapshot promises to unpinned views. The batch is
	// committed, so a failure to close a snapshot must not fail the flush
	// (the coordinator would retry it); pebble's Snapshot.Close does not
	// fail anyway.
	if f.prev != nil {
		if err := f.prev.release(); err != nil {
			log.Printf("pebble example: closing the snapshot of batch %d: %v", f.prev.Batch, err)
		}
	}
	f.prev, f.last = f.last, snap
	return snap, nil
}

// FlushStorage makes every batch committed so far durable by fsyncing
// pebble's WAL: db.LogData(nil, pebble.Sync) commits a record that changes
// no key (it is not applied to the memtable) and waits until the WAL is
// synced through it. The WAL is one ordered log, so that sync covers every
// earlier NoSync batch; a WAL file that pebble rotated away from was
// synced when it was closed (DB.rotateWAL). One FlushStorage therefore
// costs one small append and one fsync, however many batches it covers —
// the group commit the coordinator's Durable waiters share.
//
// Rejected alternatives:
//   - An empty batch committed with pebble.Sync syncs nothing: pebble's
//     commit pipeline returns before touching the WAL when a batch is
//     empty (TestEmptySyncedBatchSyncsNothing shows it).
//   - db.Flush writes the memtable to an sstable and updates the MANIFEST:
//     durable too, but several fsyncs and a new L0 file each time.
//   - Committing each batch with pebble.Sync in FlushDelta: an fsync per
//     delta, and nothing left for FlushStorage to do; Written and Durable
//     would be the same thing.
func (f *Flusher) FlushStorage(ctx context.Context) error {
	return f.db.LogData(nil, pebble.Sync)
}
