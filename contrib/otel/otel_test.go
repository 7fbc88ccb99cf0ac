package otel_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/groupcommit/coordinator"
	coordotel "github.com/groupcommit/coordinator/contrib/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// TestStatsQueues fills the queues of a coordinator that is not started,
// so nothing is applied, and checks every per-channel instrument.
func TestStatsQueues(t *testing.T) {
	c, reader := newCoordinator(t, coordinator.Config{Channels: []string{"a", "b"}, QueueCapacity: 2}, &flusher{})
	a, b := c.Channel("a"), c.Channel("b")
	for i := range 2 {
		if _, err := a.TryWrite(10); err != nil {
			t.Fatalf("TryWrite #%d = %v; want nil", i+1, err)
		}
	}
	if _, err := a.TryWrite(10); !errors.Is(err, coordinator.ErrBackpressure) {
		t.Fatalf("TryWrite on a full queue = %v; want ErrBackpressure", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Write(ctx, 10); !errors.Is(err, context.Canceled) {
		t.Fatalf("Write(canceled ctx) on a full queue = %v; want context.Canceled", err)
	}
	b.Pause()
	if _, err := b.WriteBatch(context.Background(), []write{1, 2, 3}); err != nil {
		t.Fatalf("WriteBatch = %v; want nil", err)
	}

	tests := []struct {
		name string
		kv   []attribute.KeyValue
		want float64
	}{
		{"coordinator.queue.depth", []attribute.KeyValue{channel("a")}, 2},
		{"coordinator.queue.depth", []attribute.KeyValue{channel("b")}, 3},
		{"coordinator.queue.paused", []attribute.KeyValue{channel("a")}, 0},
		{"coordinator.queue.paused", []attribute.KeyValue{channel("b")}, 1},
		{"coordinator.queue.accepted", []attribute.KeyValue{channel("a")}, 2},
		{"coordinator.queue.accepted", []attribute.KeyValue{channel("b")}, 1},
		{"coordinator.queue.rejected", []attribute.KeyValue{channel("a"), reason("full")}, 1},
		{"coordinator.queue.rejected", []attribute.KeyValue{channel("a"), reason("canceled")}, 1},
		{"coordinator.queue.rejected", []attribute.KeyValue{channel("a"), reason("closed")}, 0},
		{"coordinator.queue.rejected", []attribute.KeyValue{channel("a"), reason("budget")}, 0},
		{"coordinator.queue.rejected", []attribute.KeyValue{channel("b"), reason("full")}, 0},
		{"coordinator.watermark", []attribute.KeyValue{level("applied")}, 0},
	}
	for _, tc := range tests {
		check(t, reader, tc.name, tc.want, tc.kv...)
	}

	// Stop applies and writes everything, paused channels included.
	if err := c.Stop(context.Background()); err != nil {
		t.Fatalf("Stop = %v; want nil", err)
	}
	if _, err := b.TryWrite(1); !errors.Is(err, coordinator.ErrClosed) {
		t.Fatalf("TryWrite after Stop = %v; want ErrClosed", err)
	}
	tests = []struct {
		name string
		kv   []attribute.KeyValue
		want float64
	}{
		{"coordinator.queue.depth", []attribute.KeyValue{channel("a")}, 0},
		{"coordinator.queue.depth", []attribute.KeyValue{channel("b")}, 0},
		{"coordinator.queue.rejected", []attribute.KeyValue{channel("b"), reason("closed")}, 1},
		{"coordinator.watermark", []attribute.KeyValue{level("applied")}, 5},
		{"coordinator.watermark", []attribute.KeyValue{level("written")}, 5},
		{"coordinator.watermark", []attribute.KeyValue{level("durable")}, 5},
		{"coordinator.flushes", []attribute.KeyValue{reason("shutdown")}, 1},
		{"coordinator.flushes", []attribute.KeyValue{reason("explicit")}, 0},
		{"coordinator.syncs", nil, 1},
		{"coordinator.failed", nil, 0},
		{"coordinator.apply.writes", []attribute.KeyValue{channel("a")}, 2},
		{"coordinator.apply.writes", []attribute.KeyValue{channel("b")}, 3},
		{"coordinator.apply.errors", []attribute.KeyValue{channel("a")}, 0},
		{"coordinator.apply.errors", []attribute.KeyValue{channel("b")}, 0},
	}
	for _, tc := range tests {
		check(t, reader, tc.name, tc.want, tc.kv...)
	}
}

func TestStatsBudget(t *testing.T) {
	c, reader := newCoordinator(t, coordinator.Config{MaxBytes: 10}, &flusher{})
	ch := c.Channel("default")
	if _, err := ch.TryWrite(6); err != nil {
		t.Fatalf("TryWrite(6) = %v; want nil", err)
	}
	if _, err := ch.TryWrite(6); !errors.Is(err, coordinator.ErrBackpressure) {
		t.Fatalf("TryWrite(6) beyond the budget = %v; want ErrBackpressure", err)
	}
	check(t, reader, "coordinator.queue.rejected", 1, channel("default"), reason("budget"))
	check(t, reader, "coordinator.queue.rejected", 0, channel("default"), reason("full"))
	check(t, reader, "coordinator.budget.usage", 6)
	check(t, reader, "coordinator.budget.limit", 10)
}

// TestFlushes runs writes, explicit flushes and syncs through a started
// coordinator and checks the observable instruments and the histograms.
func TestFlushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &flusher{}
		c, reader := newCoordinator(t, coordinator.Config{}, f)
		c.Start()
		ch := c.Channel("default")
		ctx := context.Background()
		writeN := func(n int) {
			t.Helper()
			for range n {
				if _, err := ch.Write(ctx, 100); err != nil {
					t.Fatalf("Write = %v; want nil", err)
				}
			}
		}
		writeN(5)
		if e, err := c.Flush(ctx, coordinator.Written); e != 5 || err != nil {
			t.Fatalf("Flush(Written) = %d, %v; want 5, nil", e, err)
		}
		writeN(3)
		if e, err := c.Flush(ctx, coordinator.Durable); e != 8 || err != nil {
			t.Fatalf("Flush(Durable) = %d, %v; want 8, nil", e, err)
		}
		writeN(2)
		synctest.Wait() // the coordinator has applied the last two writes

		for _, tc := range []struct {
			name string
			kv   []attribute.KeyValue
			want float64
		}{
			{"coordinator.flushes", []attribute.KeyValue{reason("explicit")}, 2},
			{"coordinator.flushes", []attribute.KeyValue{reason("size")}, 0},
			{"coordinator.flushes", []attribute.KeyValue{reason("wait")}, 0},
			{"coordinator.watermark", []attribute.KeyValue{level("applied")}, 10},
			{"coordinator.watermark", []attribute.KeyValue{level("written")}, 8},
			{"coordinator.watermark", []attribute.KeyValue{level("durable")}, 8},
			{"coordinator.syncs", nil, float64(f.syncs())},
			{"coordinator.queue.accepted", []attribute.KeyValue{channel("default")}, 10},
			{"coordinator.queue.depth", []attribute.KeyValue{channel("default")}, 0},
			{"coordinator.delta.size", nil, 200},
			{"coordinator.flush.pending", nil, 0},
			{"coordinator.sync.active", nil, 0},
			{"coordinator.flush.retries", nil, 0},
			{"coordinator.flush.slow_calls", nil, 0},
			{"coordinator.failed", nil, 0},
			{"coordinator.apply.writes", []attribute.KeyValue{channel("default")}, 10},
			{"coordinator.apply.errors", []attribute.KeyValue{channel("default")}, 0},
		} {
			check(t, reader, tc.name, tc.want, tc.kv...)
		}
		if f.syncs() < 1 {
			t.Errorf("FlushStorage calls = %d; want at least 1", f.syncs())
		}

		stats := c.Stats()
		// Every reason is reported, zero counts included, as Stats counts it.
		for r, n := range stats.Flushes.All() {
			check(t, reader, "coordinator.flushes", float64(n), reason(r.String()))
		}
		if stats.Apply.Count == 0 {
			t.Errorf("Stats().Apply.Count = 0; want batches")
		}
		for _, h := range []struct {
			name      string
			kv        []attribute.KeyValue
			wantCount uint64
			wantSum   float64 // checked for sizes only: durations are 0 in a bubble
		}{
			{"coordinator.apply.duration", []attribute.KeyValue{channel("default")}, stats.Apply.Count, 0},
			{"coordinator.freeze.duration", []attribute.KeyValue{reason("explicit")}, 2, 0},
			{"coordinator.flush.size", []attribute.KeyValue{reason("explicit")}, 2, 800},
			{"coordinator.flush.dispatch.duration", nil, 2, 0}, // one per frozen delta
			{"coordinator.flush.duration", []attribute.KeyValue{op("flush_delta")}, 2, 0},
			{"coordinator.flush.duration", []attribute.KeyValue{op("flush_storage")}, uint64(f.syncs()), 0},
		} {
			count, sum := histogram(t, reader, h.name, h.kv...)
			if count != h.wantCount || sum != h.wantSum {
				t.Errorf("%s{%v} count, sum = %d, %v; want %d, %v", h.name, h.kv, count, sum, h.wantCount, h.wantSum)
			}
		}

		// Without Config.MaxBytes there is no budget to report.
		for _, name := range []string{"coordinator.budget.usage", "coordinator.budget.limit"} {
			if n := points(t, reader, name); n != 0 {
				t.Errorf("%s has %d points without MaxBytes; want 0", name, n)
			}
		}

		if err := c.Stop(ctx); err != nil {
			t.Fatalf("Stop = %v; want nil", err)
		}
		check(t, reader, "coordinator.flushes", 1, reason("shutdown"))
		check(t, reader, "coordinator.watermark", 10, level("durable"))
		check(t, reader, "coordinator.delta.size", 0)
		if count, _ := histogram(t, reader, "coordinator.flush.dispatch.duration"); count != 3 {
			t.Errorf("coordinator.flush.dispatch.duration count after Stop = %d; want 3", count)
		}
	})
}

// TestSizeIntervalWait checks the size, interval and wait flush reasons.
func TestSizeIntervalWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, reader := newCoordinator(t, coordinator.Config{FlushSize: 250, FlushInterval: time.Minute}, &flusher{})
		c.Start()
		ch := c.Channel("default")
		ctx := context.Background()
		for range 3 {
			if _, err := ch.Write(ctx, 100); err != nil {
				t.Fatalf("Write = %v; want nil", err)
			}
		}
		synctest.Wait()
		check(t, reader, "coordinator.flushes", 1, reason("size"))
		if _, err := ch.Write(ctx, 100); err != nil {
			t.Fatalf("Write = %v; want nil", err)
		}
		time.Sleep(time.Minute) // let the flush interval pass
		synctest.Wait()
		check(t, reader, "coordinator.flushes", 1, reason("interval"))
		h, err := ch.Write(ctx, 100)
		if err != nil {
			t.Fatalf("Write = %v; want nil", err)
		}
		if _, err := h.Wait(ctx, coordinator.Written); err != nil {
			t.Fatalf("Wait(Written) = %v; want nil", err)
		}
		check(t, reader, "coordinator.flushes", 1, reason("wait"))
		check(t, reader, "coordinator.watermark", 5, level("written"))
		count, sum := histogram(t, reader, "coordinator.flush.size", reason("size"))
		if count != 1 || sum != 300 {
			t.Errorf("coordinator.flush.size{reason=size} count, sum = %d, %v; want 1, 300", count, sum)
		}
	})
}

// TestPendingAndDispatch blocks the flusher so that frozen deltas pile up,
// then checks the pending count and the dispatch time.
func TestPendingAndDispatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		f := &flusher{onDelta: func(int) error { <-release; return nil }}
		c, reader := newCoordinator(t, coordinator.Config{MaxPendingFlushes: 1}, f)
		c.Start()
		ch := c.Channel("default")
		ctx := context.Background()
		flush := func() {
			t.Helper()
			if _, err := ch.Write(ctx, 1); err != nil {
				t.Fatalf("Write = %v; want nil", err)
			}
			if _, err := c.Flush(ctx, coordinator.Applied); err != nil {
				t.Fatalf("Flush(Applied) = %v; want nil", err)
			}
		}
		flush() // taken by the flusher, which blocks
		flush() // queued
		check(t, reader, "coordinator.flush.pending", 2)

		// A third frozen delta finds the flush queue full: the coordinator
		// waits to dispatch it until the flusher moves on.
		if _, err := ch.Write(ctx, 1); err != nil {
			t.Fatalf("Write = %v; want nil", err)
		}
		done := make(chan error, 1) // buffered: the goroutine never blocks sending
		go func() {
			_, err := c.Flush(ctx, coordinator.Applied)
			done <- err
		}()
		synctest.Wait()
		check(t, reader, "coordinator.flush.pending", 3)
		time.Sleep(time.Second) // the dispatch waits for one second
		close(release)
		if err := <-done; err != nil {
			t.Fatalf("Flush(Applied) = %v; want nil", err)
		}
		if err := c.WaitFor(ctx, coordinator.Written, 3); err != nil {
			t.Fatalf("WaitFor(Written, 3) = %v; want nil", err)
		}
		synctest.Wait()
		check(t, reader, "coordinator.flush.pending", 0)
		// Three frozen deltas, three measurements: two dispatched at once
		// and one after waiting a second.
		h := metricOf(t, reader, "coordinator.flush.dispatch.duration").Data.(metricdata.Histogram[float64])
		if len(h.DataPoints) != 1 {
			t.Fatalf("coordinator.flush.dispatch.duration has %d points; want 1", len(h.DataPoints))
		}
		p := h.DataPoints[0]
		if p.Count != 3 || p.Sum != 1 {
			t.Errorf("coordinator.flush.dispatch.duration count, sum = %d, %v; want 3, 1", p.Count, p.Sum)
		}
		if m, ok := p.Max.Value(); !ok || m != 1 {
			t.Errorf("coordinator.flush.dispatch.duration max = %v, %v; want 1, true", m, ok)
		}
		var cumulative uint64
		for i, n := range p.BucketCounts {
			cumulative += n
			want := uint64(2) // the two waits of 0 fall in every bucket
			if i == len(p.Bounds) || p.Bounds[i] >= 1 {
				want = 3
			}
			if cumulative != want {
				t.Errorf("coordinator.flush.dispatch.duration bucket %d: cumulative count %d; want %d", i, cumulative, want)
			}
		}
	})
}

// TestSlowAndRetry makes the first FlushDelta fail and the second one slow.
func TestSlowAndRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &flusher{onDelta: func(n int) error {
			if n == 1 {
				return errors.New("transient")
			}
			time.Sleep(3 * time.Second) // a slow write
			return nil
		}}
		cfg := coordinator.Config{
			SlowFlushThreshold: 2 * time.Second,
			Retry:              coordinator.RetryPolicy{Attempts: 2, Backoff: time.Second},
		}
		c, reader := newCoordinator(t, cfg, f)
		c.Start()
		if _, err := c.Channel("default").Write(context.Background(), 1); err != nil {
			t.Fatalf("Write = %v; want nil", err)
		}
		if _, err := c.Flush(context.Background(), coordinator.Written); err != nil {
			t.Fatalf("Flush(Written) = %v; want nil", err)
		}
		check(t, reader, "coordinator.flush.retries", 1)
		check(t, reader, "coordinator.flush.slow_calls", 1)
		count, sum := histogram(t, reader, "coordinator.flush.duration", op("flush_delta"))
		if count != 1 || sum != 4 { // 1s of backoff and 3s of writing
			t.Errorf("coordinator.flush.duration{op=flush_delta} count, sum = %d, %v; want 1, 4", count, sum)
		}
	})
}

func TestFailed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errDisk := errors.New("disk on fire")
		c, reader := newCoordinator(t, coordinator.Config{}, &flusher{onDelta: func(int) error { return errDisk }})
		c.Start()
		check(t, reader, "coordinator.failed", 0)
		if _, err := c.Channel("default").Write(context.Background(), 1); err != nil {
			t.Fatalf("Write = %v; want nil", err)
		}
		if _, err := c.Flush(context.Background(), coordinator.Written); !errors.Is(err, errDisk) {
			t.Fatalf("Flush(Written) = %v; want %v", err, errDisk)
		}
		check(t, reader, "coordinator.failed", 1)
		check(t, reader, "coordinator.watermark", 0, level("written"))
		if count, _ := histogram(t, reader, "coordinator.flush.duration", op("flush_delta")); count != 1 {
			t.Errorf("coordinator.flush.duration{op=flush_delta} count = %d; want 1", count)
		}
		if err := c.Stop(context.Background()); !errors.Is(err, errDisk) {
			t.Errorf("Stop = %v; want %v", err, errDisk)
		}
	})
}

// TestInstruments checks each instrument's kind and unit, and that
// Options.Attributes reach every measurement.
func TestInstruments(t *testing.T) {
	wal := attribute.String("coordinator", "wal")
	c, reader := newCoordinator(t, coordinator.Config{MaxBytes: 1 << 20}, &flusher{}, wal)
	c.Start()
	if _, err := c.Channel("default").Write(context.Background(), 1); err != nil {
		t.Fatalf("Write = %v; want nil", err)
	}
	if _, err := c.Flush(context.Background(), coordinator.Durable); err != nil {
		t.Fatalf("Flush(Durable) = %v; want nil", err)
	}
	const (
		counter = "counter"
		updown  = "updowncounter"
		gauge   = "gauge"
		hist    = "histogram"
	)
	want := map[string]struct{ kind, unit string }{
		"coordinator.queue.depth":             {updown, "{write}"},
		"coordinator.queue.paused":            {gauge, "1"},
		"coordinator.queue.accepted":          {counter, "{slot}"},
		"coordinator.queue.rejected":          {counter, "{write}"},
		"coordinator.apply.writes":            {counter, "{write}"},
		"coordinator.apply.errors":            {counter, "{write}"},
		"coordinator.delta.size":              {updown, "By"},
		"coordinator.budget.usage":            {updown, "By"},
		"coordinator.budget.limit":            {updown, "By"},
		"coordinator.flush.pending":           {updown, "{delta}"},
		"coordinator.sync.active":             {updown, "{sync}"},
		"coordinator.flushes":                 {counter, "{delta}"},
		"coordinator.syncs":                   {counter, "{sync}"},
		"coordinator.flush.retries":           {counter, "{call}"},
		"coordinator.flush.slow_calls":        {counter, "{call}"},
		"coordinator.watermark":               {gauge, "{epoch}"},
		"coordinator.failed":                  {gauge, "1"},
		"coordinator.apply.duration":          {hist, "s"},
		"coordinator.freeze.duration":         {hist, "s"},
		"coordinator.flush.size":              {hist, "By"},
		"coordinator.flush.dispatch.duration": {hist, "s"},
		"coordinator.flush.duration":          {hist, "s"},
	}
	got := collect(t, reader)
	if len(got) != len(want) {
		t.Errorf("collected %d metrics; want %d", len(got), len(want))
	}
	for name, w := range want {
		m, ok := got[name]
		if !ok {
			t.Errorf("no metric %s", name)
			continue
		}
		var kind string
		var sets []attribute.Set
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			kind = map[bool]string{true: counter, false: updown}[d.IsMonotonic]
			for _, p := range d.DataPoints {
				sets = append(sets, p.Attributes)
			}
		case metricdata.Sum[float64]:
			kind = map[bool]string{true: counter, false: updown}[d.IsMonotonic]
			for _, p := range d.DataPoints {
				sets = append(sets, p.Attributes)
			}
		case metricdata.Gauge[int64]:
			kind = gauge
			for _, p := range d.DataPoints {
				sets = append(sets, p.Attributes)
			}
		case metricdata.Gauge[float64]:
			kind = gauge
			for _, p := range d.DataPoints {
				sets = append(sets, p.Attributes)
			}
		case metricdata.Histogram[float64]:
			kind = hist
			for _, p := range d.DataPoints {
				sets = append(sets, p.Attributes)
			}
		case metricdata.Histogram[int64]:
			kind = hist
			for _, p := range d.DataPoints {
				sets = append(sets, p.Attributes)
			}
		}
		if kind != w.kind || m.Unit != w.unit {
			t.Errorf("%s is a %s in %q; want a %s in %q", name, kind, m.Unit, w.kind, w.unit)
		}
		if len(sets) == 0 {
			t.Errorf("%s has no data points", name)
		}
		for _, s := range sets {
			if v, ok := s.Value("coordinator"); !ok || v != wal.Value {
				t.Errorf("%s point %v lacks %v", name, s.Encoded(attribute.DefaultEncoder()), wal)
			}
		}
	}
	check(t, reader, "coordinator.flushes", 1, wal, reason("explicit"))
}

// TestUnregister checks that the stats callback stops reporting.
func TestUnregister(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())
	c, err := coordinator.New(coordinator.Config{}, newDelta, struct{}{}, 0, &flusher{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := coordotel.RegisterStats(c, coordotel.Options{MeterProvider: provider})
	if err != nil {
		t.Fatalf("RegisterStats = %v; want nil", err)
	}
	if _, ok := collect(t, reader)["coordinator.watermark"]; !ok {
		t.Fatalf("coordinator.watermark not collected while registered")
	}
	if err := reg.Unregister(); err != nil {
		t.Fatalf("Unregister = %v; want nil", err)
	}
	if m, ok := collect(t, reader)["coordinator.watermark"]; ok {
		if g := m.Data.(metricdata.Gauge[int64]); len(g.DataPoints) > 0 {
			t.Errorf("coordinator.watermark after Unregister has %d points; want 0", len(g.DataPoints))
		}
	}
	if err := c.Stop(context.Background()); err != nil {
		t.Fatalf("Stop = %v; want nil", err)
	}
}

// TestApplyErrors applies writes that Apply partly rejects and checks the
// per-channel applied and rejected counts.
func TestApplyErrors(t *testing.T) {
	c, reader := newCoordinator(t, coordinator.Config{Channels: []string{"a", "b"}}, &flusher{})
	a, b := c.Channel("a"), c.Channel("b")
	ctx := context.Background()
	var handles []*coordinator.WriteHandle[struct{}]
	for _, w := range []write{1, bad} {
		h, err := a.Write(ctx, w)
		if err != nil {
			t.Fatalf("Write(%v) = %v; want nil", w, err)
		}
		handles = append(handles, h)
	}
	batch, err := a.WriteBatch(ctx, []write{bad, 2, bad})
	if err != nil {
		t.Fatalf("WriteBatch = %v; want nil", err)
	}
	if _, err := b.Write(ctx, 3); err != nil {
		t.Fatalf("Write(3) = %v; want nil", err)
	}
	if err := c.Stop(ctx); err != nil { // applies and writes everything
		t.Fatalf("Stop = %v; want nil", err)
	}

	// The handles agree with the counters.
	rejected := 0
	for i, h := range handles {
		if _, err := h.Wait(ctx, coordinator.Applied); err != nil {
			var ae *coordinator.ApplyError
			if !errors.As(err, &ae) || !errors.Is(err, errBad) {
				t.Fatalf("handle %d: Wait = %v; want an ApplyError wrapping %v", i, err, errBad)
			}
			rejected++
		}
	}
	results, err := batch.Wait(ctx, coordinator.Applied)
	if err != nil {
		t.Fatalf("batch Wait = %v; want nil", err)
	}
	for _, r := range results {
		if r.Err != nil {
			rejected++
		}
	}
	if rejected != 3 {
		t.Fatalf("writes rejected according to the handles = %d; want 3", rejected)
	}

	for _, tc := range []struct {
		name string
		kv   []attribute.KeyValue
		want float64
	}{
		{"coordinator.apply.writes", []attribute.KeyValue{channel("a")}, 5},
		{"coordinator.apply.errors", []attribute.KeyValue{channel("a")}, 3},
		{"coordinator.queue.accepted", []attribute.KeyValue{channel("a")}, 3},
		{"coordinator.apply.writes", []attribute.KeyValue{channel("b")}, 1},
		{"coordinator.apply.errors", []attribute.KeyValue{channel("b")}, 0},
		{"coordinator.watermark", []attribute.KeyValue{level("durable")}, 6},
	} {
		check(t, reader, tc.name, tc.want, tc.kv...)
	}
}

// TestObserverLeavesCountsToStats checks that the Observer does not report
// the applied write count, which comes from RegisterStats.
func TestObserverLeavesCountsToStats(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())
	obs, err := coordotel.NewObserver(coordotel.Options{MeterProvider: provider})
	if err != nil {
		t.Fatalf("NewObserver = %v; want nil", err)
	}
	obs.Applied("a", 3, time.Millisecond)
	if n := points(t, reader, "coordinator.apply.writes"); n != 0 {
		t.Errorf("Observer reports %d coordinator.apply.writes points; want 0", n)
	}
	if n := points(t, reader, "coordinator.apply.duration"); n != 1 {
		t.Errorf("Observer reports %d coordinator.apply.duration points; want 1", n)
	}
}

// TestBudgetHeld holds the flusher and checks that the bytes of a frozen
// delta stay charged to the budget until it is written.
func TestBudgetHeld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		f := &flusher{onDelta: func(int) error { <-release; return nil }}
		c, reader := newCoordinator(t, coordinator.Config{MaxBytes: 100}, f)
		c.Start()
		ch := c.Channel("default")
		ctx := context.Background()
		for _, w := range []write{30, 12} {
			if _, err := ch.Write(ctx, w); err != nil {
				t.Fatalf("Write(%v) = %v; want nil", w, err)
			}
		}
		if _, err := c.Flush(ctx, coordinator.Applied); err != nil {
			t.Fatalf("Flush(Applied) = %v; want nil", err)
		}
		synctest.Wait() // the flusher holds the frozen delta
		check(t, reader, "coordinator.budget.limit", 100)
		check(t, reader, "coordinator.budget.usage", 42)
		check(t, reader, "coordinator.flush.pending", 1)

		// A write to the new live delta is charged too.
		if _, err := ch.Write(ctx, 5); err != nil {
			t.Fatalf("Write(5) = %v; want nil", err)
		}
		synctest.Wait()
		check(t, reader, "coordinator.budget.usage", 47)

		close(release)
		if err := c.WaitFor(ctx, coordinator.Written, 2); err != nil {
			t.Fatalf("WaitFor(Written, 2) = %v; want nil", err)
		}
		synctest.Wait()
		check(t, reader, "coordinator.budget.usage", 5) // the live delta's write

		if err := c.Stop(ctx); err != nil {
			t.Fatalf("Stop = %v; want nil", err)
		}
		check(t, reader, "coordinator.budget.usage", 0)
		check(t, reader, "coordinator.budget.limit", 100)
	})
}

// TestSyncActive holds FlushStorage and checks that a running sync is
// reported by coordinator.sync.active and not counted as a pending flush.
func TestSyncActive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		f := &flusher{onSync: func(int) error { <-release; return nil }}
		c, reader := newCoordinator(t, coordinator.Config{}, f)
		c.Start()
		ctx := context.Background()
		if _, err := c.Channel("default").Write(ctx, 1); err != nil {
			t.Fatalf("Write = %v; want nil", err)
		}
		check(t, reader, "coordinator.sync.active", 0)
		done := make(chan error, 1) // buffered: the goroutine never blocks sending
		go func() {
			_, err := c.Flush(ctx, coordinator.Durable)
			done <- err
		}()
		synctest.Wait() // FlushStorage is running
		check(t, reader, "coordinator.sync.active", 1)
		check(t, reader, "coordinator.flush.pending", 0)
		check(t, reader, "coordinator.watermark", 1, level("written"))
		check(t, reader, "coordinator.watermark", 0, level("durable"))
		check(t, reader, "coordinator.syncs", 0)

		close(release)
		if err := <-done; err != nil {
			t.Fatalf("Flush(Durable) = %v; want nil", err)
		}
		synctest.Wait()
		check(t, reader, "coordinator.sync.active", 0)
		check(t, reader, "coordinator.syncs", 1)
		check(t, reader, "coordinator.watermark", 1, level("durable"))
	})
}
