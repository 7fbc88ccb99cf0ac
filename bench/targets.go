package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/groupcommit/coordinator"
	bolt "go.etcd.io/bbolt"
)

const (
	keySize    = 8
	valueSize  = 100
	recordSize = keySize + valueSize
)

// value is the value of every write.
var value = make([]byte, valueSize)

// key returns the key of writer's i-th write: unique across writers.
func key(writer, i int) (k [keySize]byte) {
	binary.BigEndian.PutUint64(k[:], uint64(writer)<<40|uint64(i))
	return k
}

// target is one implementation under test, opened for one workload.
type target interface {
	// write performs writer's i-th write and waits as the workload asks:
	// not at all (applied), until applied (round-trip) or until durable.
	write(ctx context.Context, writer, i int) error
	// settle waits until the first n writes are applied; only the applied
	// workload's writes return before that.
	settle(ctx context.Context, n uint64) error
	// finish shuts the target down and checks that all n writes made it
	// (into the delta, the file, or the database).
	finish(ctx context.Context, n int) error
}

// opener opens a target for cell c in dir, a fresh empty directory.
type opener func(c cell, dir string) (target, error)

// impls lists the implementations that run each workload, coordinator
// first.
var impls = map[workload][]struct {
	name string
	open opener
}{
	applied:   {{"coordinator", openCoordinator}, {"pebble", openPebble}},
	roundTrip: {{"coordinator", openCoordinator}, {"pebble", openPebble}},
	durable: {
		{"coordinator", openCoordinator}, {"pebble", openPebble}, {"bbolt", openBolt},
		{groupFsyncIdeal, openGroupSyncer},
	},
	channels:  {{"coordinator", openCoordinator}},
	deltaSize: {{"coordinator", openCoordinator}},
}

// --- coordinator -----------------------------------------------------------

type write struct {
	key   [keySize]byte
	value []byte
}

type records = map[[keySize]byte][]byte

// delta is a minimal map-backed coordinator.Delta.
type delta struct {
	m    records
	size int
}

func newDelta(struct{}) *delta { return &delta{m: make(records)} }

func (d *delta) Apply(w write) (struct{}, error) {
	d.m[w.key] = w.value
	d.size += recordSize
	return struct{}{}, nil
}

func (d *delta) EstimateSize() int                     { return d.size }
func (d *delta) Freeze() (records, struct{}, struct{}) { return d.m, struct{}{}, struct{}{} }
func (d *delta) Reader() struct{}                      { return struct{}{} }

// flusher counts the records of each frozen delta and, with a file, appends
// them to it; FlushStorage fsyncs the file.
type flusher struct {
	f       *os.File // nil: count only
	buf     []byte
	records atomic.Int64
}

func (f *flusher) FlushDelta(_ context.Context, m records, _ coordinator.EpochRange) (struct{}, error) {
	f.records.Add(int64(len(m)))
	if f.f == nil {
		return struct{}{}, nil
	}
	buf := f.buf[:0]
	for k, v := range m {
		buf = append(buf, k[:]...)
		buf = append(buf, v...)
	}
	f.buf = buf
	_, err := f.f.Write(buf)
	return struct{}{}, err
}

func (f *flusher) FlushStorage(context.Context) error {
	if f.f == nil {
		return nil
	}
	return f.f.Sync()
}

type coordTarget struct {
	w   workload
	c   *coordinator.Coordinator[write, struct{}, struct{}, struct{}, struct{}]
	chs []*coordinator.Channel[write, struct{}]
	fl  *flusher
}

// openCoordinator opens the coordinator with the defaults, except for the
// cell's channel count (each writer spreads its writes over them
// round-robin) and flush size.
func openCoordinator(c cell, dir string) (target, error) {
	fl := &flusher{}
	if c.workload == durable {
		f, err := os.Create(filepath.Join(dir, "log"))
		if err != nil {
			return nil, err
		}
		fl.f = f
	}
	cfg := coordinator.Config{FlushSize: c.flushSize}
	for i := range c.channels {
		cfg.Channels = append(cfg.Channels, "c"+strconv.Itoa(i))
	}
	co, err := coordinator.New(cfg, newDelta, struct{}{}, struct{}{}, fl)
	if err != nil {
		return nil, err
	}
	co.Start()
	t := &coordTarget{w: c.workload, c: co, fl: fl}
	for _, name := range co.Channels() {
		t.chs = append(t.chs, co.Channel(name))
	}
	return t, nil
}

func (t *coordTarget) write(ctx context.Context, writer, i int) error {
	h, err := t.chs[i%len(t.chs)].Write(ctx, write{key: key(writer, i), value: value})
	if err != nil {
		return err
	}
	switch t.w {
	case roundTrip:
		_, err = h.Wait(ctx, coordinator.Applied)
	case durable:
		_, err = h.Wait(ctx, coordinator.Durable)
	}
	return err
}

func (t *coordTarget) settle(ctx context.Context, n uint64) error {
	return t.c.WaitFor(ctx, coordinator.Applied, n)
}

func (t *coordTarget) finish(ctx context.Context, n int) error {
	err := t.c.Stop(ctx)
	if t.fl.f != nil {
		if st, serr := t.fl.f.Stat(); serr != nil {
			err = errors.Join(err, serr)
		} else if want := int64(n) * recordSize; st.Size() != want {
			err = errors.Join(err, fmt.Errorf("coordinator: log holds %d bytes; want %d", st.Size(), want))
		}
		err = errors.Join(err, t.fl.f.Close())
	}
	if got := t.fl.records.Load(); got != int64(n) {
		err = errors.Join(err, fmt.Errorf("coordinator: flushed %d records; want %d", got, n))
	}
	return err
}

// --- pebble ----------------------------------------------------------------

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

type pebbleTarget struct {
	db   *pebble.DB
	opts *pebble.WriteOptions
}

// openPebble opens pebble in memory with NoSync writes for the applied and
// round-trip workloads, and on dir with Sync writes for durable.
func openPebble(c cell, dir string) (target, error) {
	opts := &pebble.Options{Logger: quietLogger{}}
	wo := pebble.NoSync
	if c.workload == durable {
		wo = pebble.Sync
	} else {
		opts.FS = vfs.NewMem()
		dir = ""
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, err
	}
	return &pebbleTarget{db: db, opts: wo}, nil
}

func (t *pebbleTarget) write(_ context.Context, writer, i int) error {
	k := key(writer, i)
	return t.db.Set(k[:], value, t.opts)
}

// settle has nothing to wait for: Set returns once the write is applied.
func (t *pebbleTarget) settle(context.Context, uint64) error { return nil }

func (t *pebbleTarget) finish(_ context.Context, n int) error {
	it, err := t.db.NewIter(nil)
	if err != nil {
		return errors.Join(err, t.db.Close())
	}
	got := 0
	for it.First(); it.Valid(); it.Next() {
		got++
	}
	err = errors.Join(it.Close(), t.db.Close())
	if got != n {
		err = errors.Join(err, fmt.Errorf("pebble: holds %d keys; want %d", got, n))
	}
	return err
}

// --- bbolt -----------------------------------------------------------------

var boltBucket = []byte("kv")

type boltTarget struct{ db *bolt.DB }

// openBolt opens bbolt on dir with its default batch settings.
func openBolt(_ cell, dir string) (target, error) {
	db, err := bolt.Open(filepath.Join(dir, "bolt.db"), 0o600, nil)
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(boltBucket)
		return err
	})
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return &boltTarget{db: db}, nil
}

func (t *boltTarget) write(_ context.Context, writer, i int) error {
	k := key(writer, i)
	return t.db.Batch(func(tx *bolt.Tx) error {
		return tx.Bucket(boltBucket).Put(k[:], value)
	})
}

func (t *boltTarget) settle(context.Context, uint64) error { return nil }

func (t *boltTarget) finish(_ context.Context, n int) error {
	got := 0
	err := t.db.View(func(tx *bolt.Tx) error {
		got = tx.Bucket(boltBucket).Stats().KeyN
		return nil
	})
	err = errors.Join(err, t.db.Close())
	if got != n {
		err = errors.Join(err, fmt.Errorf("bbolt: holds %d keys; want %d", got, n))
	}
	return err
}

// --- the ideal group fsync -------------------------------------------------

// groupFsyncIdeal names the baseline that only does what group commit
// must: one goroutine takes every write queued, appends them all to the
// file with one write, fsyncs once and wakes their writers. It applies
// nothing and keeps no index, so it bounds what any durable pipeline on
// this file system can reach.
const groupFsyncIdeal = "group-fsync-ideal"

type groupAck struct {
	writer, i int
	ack       chan error // buffer of 1: the syncer never blocks on a writer
}

type groupSyncer struct {
	f    *os.File
	acks []chan error  // one per writer, reused for each of its writes
	wake chan struct{} // buffer of 1: a pending wake-up is enough
	quit chan struct{}
	done chan struct{}

	mu      sync.Mutex
	pending []groupAck // protected by mu
}

func openGroupSyncer(c cell, dir string) (target, error) {
	f, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		return nil, err
	}
	g := &groupSyncer{f: f, wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	for range c.writers {
		g.acks = append(g.acks, make(chan error, 1))
	}
	go g.run()
	return g, nil
}

// run is the syncer goroutine; it owns the file until quit is closed.
func (g *groupSyncer) run() {
	defer close(g.done)
	var batch []groupAck
	var buf []byte
	for {
		select {
		case <-g.wake:
		case <-g.quit:
			return
		}
		g.mu.Lock()
		batch, g.pending = g.pending, batch[:0]
		g.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		buf = buf[:0]
		for _, r := range batch {
			k := key(r.writer, r.i)
			buf = append(append(buf, k[:]...), value...)
		}
		_, err := g.f.Write(buf)
		if err == nil {
			err = g.f.Sync()
		}
		for _, r := range batch {
			r.ack <- err
		}
	}
}

func (g *groupSyncer) write(ctx context.Context, writer, i int) error {
	ack := g.acks[writer]
	g.mu.Lock()
	g.pending = append(g.pending, groupAck{writer: writer, i: i, ack: ack})
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
	select {
	case err := <-ack:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// settle has nothing to wait for: write returns once the write is durable.
func (g *groupSyncer) settle(context.Context, uint64) error { return nil }

func (g *groupSyncer) finish(_ context.Context, n int) error {
	close(g.quit)
	<-g.done
	var err error
	if st, serr := g.f.Stat(); serr != nil {
		err = serr
	} else if want := int64(n) * recordSize; st.Size() != want {
		err = fmt.Errorf("%s: log holds %d bytes; want %d", groupFsyncIdeal, st.Size(), want)
	}
	return errors.Join(err, g.f.Close())
}
