package coordinator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(watchedM{m}) }

// watchedM runs the tests with the hang watchdog (see hangWatch), which is
// stopped before goleak looks for leaked goroutines.
type watchedM struct{ m *testing.M }

func (w watchedM) Run() int {
	stop := hangs.start()
	defer stop()
	return w.m.Run()
}

// This file holds the test double used across the package's tests: a port
// of the reference's TestDelta, TestFlusher and in-memory storage.

type testWrite struct {
	key   string
	value uint64
	size  int
}

// testContext is carried from delta to delta, like an ID allocator.
type testContext struct {
	nextSeq uint64
	err     error // if set, Apply rejects every write with it
}

type seqValue struct{ seq, value uint64 }

// testReader sees writes as they are applied.
type testReader struct {
	mu   *sync.Mutex
	data map[string]uint64
}

func (r testReader) get(key string) (uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.data[key]
	return v, ok
}

func (r testReader) keys() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]bool, len(r.data))
	for k := range r.data {
		out[k] = true
	}
	return out
}

type testDelta struct {
	ctx       testContext
	writes    map[string]seqValue
	mu        *sync.Mutex
	keyValues map[string]uint64
	size      int
}

type frozenTestDelta struct {
	writes map[string]seqValue
}

func newTestDelta(ctx testContext) *testDelta {
	return &testDelta{ctx: ctx, writes: map[string]seqValue{}, mu: new(sync.Mutex), keyValues: map[string]uint64{}}
}

func (d *testDelta) Apply(w testWrite) (struct{}, error) {
	if d.ctx.err != nil {
		return struct{}{}, d.ctx.err
	}
	seq := d.ctx.nextSeq
	d.ctx.nextSeq++
	d.writes[w.key] = seqValue{seq, w.value}
	d.size += w.size
	d.mu.Lock()
	d.keyValues[w.key] = w.value
	d.mu.Unlock()
	return struct{}{}, nil
}

func (d *testDelta) EstimateSize() int { return d.size }

func (d *testDelta) Freeze() (frozenTestDelta, map[string]uint64, testContext) {
	d.mu.Lock()
	view := maps.Clone(d.keyValues)
	d.mu.Unlock()
	return frozenTestDelta{writes: d.writes}, view, d.ctx
}

func (d *testDelta) Reader() testReader { return testReader{mu: d.mu, data: d.keyValues} }

// memStorage is an in-memory key-value store with immutable snapshots.
type memStorage struct {
	mu   sync.Mutex
	rows map[string]seqValue
}

// memSnapshot is an immutable copy of the storage's rows.
type memSnapshot map[string]seqValue

func (s *memStorage) snapshot() memSnapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.rows)
}

func (s *memStorage) put(rows map[string]seqValue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rows == nil {
		s.rows = map[string]seqValue{}
	}
	maps.Copy(s.rows, rows)
}

type flushEvent struct {
	frozen frozenTestDelta
	epochs EpochRange
}

// testFlusher records every flushed delta. With flush control, its first
// call (FlushDelta or FlushStorage) closes started and then waits for
// unblock.
type testFlusher struct {
	storage *memStorage

	mu       sync.Mutex
	events   []flushEvent
	syncs    int
	started  chan struct{} // closed when the first call starts; nil without flush control
	unblock  chan struct{} // the first call waits for it; nil without flush control
	controls bool

	// Fault injection: if set, called before each operation; a non-nil
	// error fails the call. n counts calls of that kind from 1.
	failDelta   func(n int, epochs EpochRange) error
	failStorage func(n int) error
	deltaCalls  int
	storeCalls  int
}

func newTestFlusher() *testFlusher { return &testFlusher{storage: &memStorage{}} }

// newControlledFlusher returns a flusher whose first call blocks until
// unblock is closed; started is closed when that call begins.
func newControlledFlusher() (f *testFlusher, started <-chan struct{}, unblock chan<- struct{}) {
	f = newTestFlusher()
	f.started, f.unblock, f.controls = make(chan struct{}), make(chan struct{}), true
	return f, f.started, f.unblock
}

func (f *testFlusher) gate(ctx context.Context) error {
	f.mu.Lock()
	if !f.controls {
		f.mu.Unlock()
		return nil
	}
	f.controls = false
	started, unblock := f.started, f.unblock
	f.mu.Unlock()
	close(started)
	select {
	case <-unblock:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *testFlusher) FlushDelta(ctx context.Context, frozen frozenTestDelta, epochs EpochRange) (memSnapshot, error) {
	if err := f.gate(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.deltaCalls++
	n, fail := f.deltaCalls, f.failDelta
	f.mu.Unlock()
	if fail != nil {
		if err := fail(n, epochs); err != nil {
			return nil, err
		}
	}
	f.storage.put(frozen.writes)
	f.mu.Lock()
	f.events = append(f.events, flushEvent{frozen, epochs})
	f.mu.Unlock()
	return f.storage.snapshot(), nil
}

func (f *testFlusher) FlushStorage(ctx context.Context) error {
	if err := f.gate(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	f.storeCalls++
	n, fail := f.storeCalls, f.failStorage
	f.mu.Unlock()
	if fail != nil {
		if err := fail(n); err != nil {
			return err
		}
	}
	f.mu.Lock()
	f.syncs++
	f.mu.Unlock()
	return nil
}

func (f *testFlusher) flushedEvents() []flushEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]flushEvent(nil), f.events...)
}

func (f *testFlusher) syncCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs
}

// testCoordinator is the fully instantiated coordinator of the tests.
type testCoordinator = Coordinator[testWrite, struct{}, map[string]uint64, testReader, memSnapshot]

// testConfig mirrors the reference's test_config: no timer or size flushes.
func testConfig() Config {
	return Config{
		QueueCapacity:      100,
		FlushInterval:      time.Hour,
		FlushSize:          1 << 62,
		DisableFlushOnWait: false,
	}
}

func newTestCoordinator(t testing.TB, cfg Config, ctx testContext, f *testFlusher) *testCoordinator {
	t.Helper()
	c, err := New(cfg, newTestDelta, ctx, f.storage.snapshot(), f)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	stopAtCleanup(t, c, testDeadline)
	return c
}

// stopAtCleanup stops c when the test ends. Stop is idempotent; this only
// makes sure nothing leaks when a test fails early (tests that check
// Stop's result call it themselves). A Stop that does not return within
// patience fails the test with a goroutine dump. Inside a synctest bubble
// patience is fake time: tests whose flusher sleeps pass a long one, which
// costs nothing.
func stopAtCleanup[W, R, FV, DV, S any](t testing.TB, c *Coordinator[W, R, FV, DV, S], patience time.Duration) {
	hangs.watch(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		if err := c.Stop(ctx); errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Stop at the end of the test did not return within %v; goroutines:\n%s", patience, goroutineDump())
		}
	})
}

func stop(t testing.TB, c *testCoordinator) {
	t.Helper()
	if err := c.Stop(deadlineCtx(t)); err != nil {
		t.Fatalf("Stop() = %v; want nil", err)
	}
}

// assertRows checks that snap holds exactly the expected (key, seq, value)
// rows.
func assertRows(t testing.TB, snap memSnapshot, want map[string]seqValue) {
	t.Helper()
	if len(snap) != len(want) {
		t.Fatalf("snapshot has %d rows %v; want %d rows %v", len(snap), snap, len(want), want)
	}
	for k, w := range want {
		got, ok := snap[k]
		if !ok || got != w {
			t.Fatalf("snapshot[%q] = %+v, %v; want %+v", k, got, ok, w)
		}
	}
}

func w(key string, value uint64, size int) testWrite { return testWrite{key, value, size} }

// testDeadline bounds every blocking call a test makes, far below go test's
// -timeout: a call that does not return by then fails its test with a
// goroutine dump instead of hanging the suite. Inside a synctest bubble the
// deadline is on the bubble's fake clock, so a deadlock there fails as soon
// as every goroutine is blocked.
const testDeadline = 10 * time.Second

// deadlineCtx returns a context that ends testDeadline from now (or when
// the test ends). A call given it cannot hang the test: it returns the
// context's error, which the test reports naming the call. The goroutines
// are dumped at the moment the deadline passes, while the call that hung
// is still blocked, and the dump is added to the output of a test that
// failed.
func deadlineCtx(t testing.TB) context.Context {
	t.Helper()
	hangs.watch(t)
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	dumped := make(chan string, 1) // buffer of 1: the callback never blocks
	stop := context.AfterFunc(ctx, func() {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			dumped <- goroutineDump()
		}
	})
	t.Cleanup(func() {
		if !stop() && errors.Is(ctx.Err(), context.DeadlineExceeded) && t.Failed() {
			t.Logf("a context hit the %v test deadline; goroutines when it expired:\n%s", testDeadline, <-dumped)
		}
		cancel()
	})
	return ctx
}

// hangGrace is how long past testDeadline a test that took a deadlineCtx
// may keep running before the watchdog ends the run.
const hangGrace = 5 * time.Second

// hangs watches the tests that took a deadlineCtx.
var hangs = &hangWatch{tests: map[testing.TB]time.Time{}}

// hangWatch ends the run, with a goroutine dump, when a test that took a
// deadlineCtx is still running testDeadline+hangGrace after it first did.
// A deadline makes a well-behaved call return, but not a call that ignores
// its context, nor a hang in the cancellation path itself, nor a receive
// from a goroutine that hung: nothing can interrupt those, so the watchdog
// makes them fail in seconds, naming the test, rather than at go test's
// -timeout. It runs outside every synctest bubble, on real time, so it
// also bounds tests on fake time: a bubble that runs that long is hung,
// whatever its clock says.
type hangWatch struct {
	mu    sync.Mutex
	tests map[testing.TB]time.Time // protected by mu; zero until the watchdog saw the test
}

// watch adds t, unless it is watched already, until it ends.
func (h *hangWatch) watch(t testing.TB) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.tests[t]; ok {
		return
	}
	h.tests[t] = time.Time{}
	t.Cleanup(func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.tests, t)
	})
}

// start starts the watchdog and returns a function that stops it.
func (h *hangWatch) start() (stop func()) {
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				h.check(now)
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// check stamps the tests it sees for the first time with now (the
// watchdog's clock is real; a test's may be fake) and panics if one has
// run too long since.
func (h *hangWatch) check(now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for t, seen := range h.tests {
		switch {
		case seen.IsZero():
			h.tests[t] = now
		case now.Sub(seen) > testDeadline+hangGrace:
			panic(fmt.Sprintf("%s still runs %v after it took a %v test deadline: a call ignored its deadline or waited without one; goroutines:\n%s",
				t.Name(), now.Sub(seen).Round(time.Second), testDeadline, goroutineDump()))
		}
	}
}

// goroutineDump returns the stacks of every goroutine.
func goroutineDump() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// await returns the value ch delivers, or fails t with a goroutine dump
// naming what did not happen within testDeadline.
func await[T any](t testing.TB, what string, ch <-chan T) T {
	t.Helper()
	return awaitFor(t, testDeadline, what, ch)
}

// awaitFor is await with deadline d.
func awaitFor[T any](t testing.TB, d time.Duration, what string, ch <-chan T) T {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("%s did not happen within %v; goroutines:\n%s", what, d, goroutineDump())
		panic("unreachable")
	}
}

// within runs f on another goroutine and fails t with a goroutine dump if it
// does not return within testDeadline; what names the call.
func within(t testing.TB, what string, f func()) {
	t.Helper()
	withinFor(t, testDeadline, what, f)
}

// withinFor is within with deadline d.
func withinFor(t testing.TB, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	awaitFor(t, d, what, done)
}

// failIfHung is deferred with a context from deadlineCtx: if the test body
// returns because that context ended, it adds a goroutine dump.
func failIfHung(t testing.TB, ctx context.Context) {
	t.Helper()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("a call hit the %v test deadline; goroutines:\n%s", testDeadline, goroutineDump())
	}
}
