package coordinator_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/groupcommit/coordinator"
)

// put is the write type of these examples.
type put struct{ key, value string }

// kvDelta is a minimal Delta: a map of the writes applied since the last
// freeze. Its context counts versions across deltas.
type kvDelta struct {
	version int // carried across deltas through the context
	mu      *sync.RWMutex
	data    map[string]string
	bytes   int
}

func newKVDelta(version int) *kvDelta {
	return &kvDelta{version: version, mu: new(sync.RWMutex), data: map[string]string{}}
}

func (d *kvDelta) Apply(p put) (int, error) {
	if p.key == "" {
		return 0, fmt.Errorf("empty key")
	}
	d.version++
	d.mu.Lock()
	d.data[p.key] = p.value
	d.mu.Unlock()
	d.bytes += len(p.key) + len(p.value)
	return d.version, nil // the write's result: the version it created
}

func (d *kvDelta) EstimateSize() int { return d.bytes }

func (d *kvDelta) Freeze() (map[string]string, map[string]string, int) {
	return d.data, d.data, d.version // data is immutable from now on
}

func (d *kvDelta) Reader() *kvReader { return &kvReader{mu: d.mu, data: d.data} }

// kvReader reads the live delta while writes are applied.
type kvReader struct {
	mu   *sync.RWMutex
	data map[string]string
}

func (r *kvReader) Get(key string) (string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, ok := r.data[key]
	return v, ok
}

// memStore is a Flusher that "persists" to memory; its snapshot is an
// immutable copy of everything written.
type memStore struct {
	mu    sync.Mutex
	data  map[string]string
	syncs int
}

func (s *memStore) FlushDelta(_ context.Context, frozen map[string]string, _ coordinator.EpochRange) (map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := maps.Clone(s.data)
	if next == nil {
		next = map[string]string{}
	}
	maps.Copy(next, frozen)
	s.data = next
	return next, nil
}

func (s *memStore) FlushStorage(context.Context) error {
	s.mu.Lock()
	s.syncs++ // a real store would fsync here
	s.mu.Unlock()
	return nil
}

// KV names the fully instantiated coordinator: write, apply result,
// frozen view, live view, snapshot.
type KV = coordinator.Coordinator[put, int, map[string]string, *kvReader, map[string]string]

// get reads a key through a view: live delta, then frozen deltas newest
// first, then the snapshot.
func get(v *coordinator.View[map[string]string, *kvReader, map[string]string], key string) (string, bool) {
	if val, ok := v.Current.Get(key); ok {
		return val, true
	}
	for _, f := range v.Frozen {
		if val, ok := f.View[key]; ok {
			return val, true
		}
	}
	val, ok := v.Snapshot[key]
	return val, ok
}

func newKV() (*KV, *memStore) {
	store := &memStore{}
	c, err := coordinator.New(coordinator.Config{}, newKVDelta, 0, map[string]string{}, store)
	if err != nil {
		panic(err)
	}
	return c, store
}

// Implement a Delta and a Flusher, write, and wait until the write is
// durable.
func Example() {
	ctx := context.Background()
	c, store := newKV()
	c.Start()

	h, err := c.Channel("default").Write(ctx, put{"greeting", "hello"})
	if err != nil {
		panic(err)
	}
	version, err := h.Wait(ctx, coordinator.Durable)
	epoch, _ := h.Epoch(ctx)
	fmt.Println("version:", version, "epoch:", epoch, "err:", err)
	fmt.Printf("watermarks: %+v\n", c.Watermarks())

	if err := c.Stop(ctx); err != nil {
		panic(err)
	}
	fmt.Println("stored:", store.data["greeting"])
	// Output:
	// version: 1 epoch: 1 err: <nil>
	// watermarks: {Applied:1 Written:1 Durable:1}
	// stored: hello
}

// Readers take a View without blocking writers; it shows applied writes
// at once, and after a flush the same data from the snapshot.
func ExampleCoordinator_View() {
	ctx := context.Background()
	c, _ := newKV()
	c.Start()
	defer c.Stop(ctx)

	h, _ := c.Channel("default").Write(ctx, put{"a", "1"})
	h.Wait(ctx, coordinator.Applied)
	v := c.View()
	val, _ := get(v, "a")
	fmt.Println("applied:", val, "in live delta:", len(v.Current.data) == 1)

	c.Flush(ctx, coordinator.Written)
	v = c.View()
	val, _ = get(v, "a")
	fmt.Println("written:", val, "snapshot covers epoch", v.Written, "frozen:", len(v.Frozen))
	// Output:
	// applied: 1 in live delta: true
	// written: 1 snapshot covers epoch 1 frozen: 0
}

// Many writers wait for durability at once; their syncs are grouped.
func ExampleWriteHandle_Wait() {
	ctx := context.Background()
	c, store := newKV()
	c.Start()

	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			h, err := c.Channel("default").Write(ctx, put{fmt.Sprint("k", i), "v"})
			if err == nil {
				_, err = h.Wait(ctx, coordinator.Durable)
			}
			if err != nil {
				fmt.Println(err)
			}
		})
	}
	wg.Wait()
	fmt.Println("durable:", c.Watermarks().Durable)
	c.Stop(ctx)
	fmt.Println("keys:", len(store.data), "at most one sync per write:", store.syncs <= 8+1)
	// Output:
	// durable: 8
	// keys: 8 at most one sync per write: true
}

// An apply error reaches only the write that caused it, with its epoch.
func ExampleApplyError() {
	ctx := context.Background()
	c, _ := newKV()
	c.Start()
	defer c.Stop(ctx)

	h, _ := c.Channel("default").Write(ctx, put{"", "no key"})
	_, err := h.Wait(ctx, coordinator.Written)
	fmt.Println(err)
	// Output:
	// coordinator: apply failed at epoch 1: empty key
}

// A subscriber sees one view when a delta is frozen and one when it is
// written.
func ExampleSubscriber() {
	ctx := context.Background()
	c, _ := newKV()
	sub := c.Subscribe()
	defer sub.Close()
	c.Start()
	defer c.Stop(ctx)

	first := sub.Initialize()
	fmt.Println("initial frozen deltas:", len(first.Frozen))

	c.Channel("default").Write(ctx, put{"a", "1"})
	c.Flush(ctx, coordinator.Applied)
	for range 2 {
		v, err := sub.Next(ctx)
		if err != nil {
			panic(err)
		}
		fmt.Println("frozen:", len(v.Frozen), "written through epoch:", v.Written)
		sub.Advance(coordinator.Written, v.Written)
	}
	fmt.Printf("subscriber watermarks: %+v\n", sub.Watermarks())
	// Output:
	// initial frozen deltas: 0
	// frozen: 1 written through epoch: 0
	// frozen: 0 written through epoch: 1
	// subscriber watermarks: {Applied:1 Written:1 Durable:0}
}

// Pausing a channel holds its writes in its queue while other channels
// flow.
func ExampleChannel_Pause() {
	ctx := context.Background()
	store := &memStore{}
	c, _ := coordinator.New(coordinator.Config{Channels: []string{"bulk", "interactive"}},
		newKVDelta, 0, map[string]string{}, store)
	bulk, interactive := c.Channel("bulk"), c.Channel("interactive")
	bulk.Pause()
	c.Start()

	hb, _ := bulk.Write(ctx, put{"bulk", "x"})
	hi, _ := interactive.Write(ctx, put{"click", "y"})
	hi.Wait(ctx, coordinator.Applied)
	fmt.Println("bulk applied while paused:", hb.Applied(), "queued:", bulk.Len())

	bulk.Resume()
	hb.Wait(ctx, coordinator.Applied)
	fmt.Println("bulk applied after resume:", hb.Applied())
	c.Stop(ctx)
	fmt.Println(slices.Sorted(maps.Keys(store.data)))
	// Output:
	// bulk applied while paused: false queued: 1
	// bulk applied after resume: true
	// [bulk click]
}
