package prometheus_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/groupcommit/coordinator"
	coordprom "github.com/groupcommit/coordinator/contrib/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const queueHelp = `
# HELP coordinator_queue_accepted_total Queue slots accepted by the channel; a batch takes one slot.
# TYPE coordinator_queue_accepted_total counter
# HELP coordinator_queue_depth Writes accepted by the channel and not yet applied.
# TYPE coordinator_queue_depth gauge
# HELP coordinator_queue_paused 1 if the channel is paused, else 0.
# TYPE coordinator_queue_paused gauge
# HELP coordinator_queue_rejected_total Writes the channel refused, by reason: full or budget (TryWrite), canceled (Write's context ended while waiting for room), closed (stopping or failed).
# TYPE coordinator_queue_rejected_total counter
`

var queueMetrics = []string{
	"coordinator_queue_accepted_total", "coordinator_queue_depth",
	"coordinator_queue_paused", "coordinator_queue_rejected_total",
}

// TestCollectorQueues fills the queues of a coordinator that is not
// started, so nothing is applied, and checks every per-channel metric.
func TestCollectorQueues(t *testing.T) {
	c, err := coordinator.New(coordinator.Config{Channels: []string{"a", "b"}, QueueCapacity: 2},
		newDelta, struct{}{}, 0, &flusher{})
	if err != nil {
		t.Fatal(err)
	}
	collector := coordprom.NewCollector(c, coordprom.Options{})
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

	want := queueHelp + `
coordinator_queue_accepted_total{channel="a"} 2
coordinator_queue_accepted_total{channel="b"} 1
coordinator_queue_depth{channel="a"} 2
coordinator_queue_depth{channel="b"} 3
coordinator_queue_paused{channel="a"} 0
coordinator_queue_paused{channel="b"} 1
coordinator_queue_rejected_total{channel="a",reason="budget"} 0
coordinator_queue_rejected_total{channel="a",reason="canceled"} 1
coordinator_queue_rejected_total{channel="a",reason="closed"} 0
coordinator_queue_rejected_total{channel="a",reason="full"} 1
coordinator_queue_rejected_total{channel="b",reason="budget"} 0
coordinator_queue_rejected_total{channel="b",reason="canceled"} 0
coordinator_queue_rejected_total{channel="b",reason="closed"} 0
coordinator_queue_rejected_total{channel="b",reason="full"} 0
`
	if err := testutil.CollectAndCompare(collector, strings.NewReader(want), queueMetrics...); err != nil {
		t.Errorf("before Stop:\n%v", err)
	}

	// Stop applies and writes everything, paused channels included.
	if err := c.Stop(context.Background()); err != nil {
		t.Fatalf("Stop = %v; want nil", err)
	}
	if _, err := b.TryWrite(1); !errors.Is(err, coordinator.ErrClosed) {
		t.Fatalf("TryWrite after Stop = %v; want ErrClosed", err)
	}
	want = queueHelp + `
coordinator_queue_accepted_total{channel="a"} 2
coordinator_queue_accepted_total{channel="b"} 1
coordinator_queue_depth{channel="a"} 0
coordinator_queue_depth{channel="b"} 0
coordinator_queue_paused{channel="a"} 0
coordinator_queue_paused{channel="b"} 1
coordinator_queue_rejected_total{channel="a",reason="budget"} 0
coordinator_queue_rejected_total{channel="a",reason="canceled"} 1
coordinator_queue_rejected_total{channel="a",reason="closed"} 0
coordinator_queue_rejected_total{channel="a",reason="full"} 1
coordinator_queue_rejected_total{channel="b",reason="budget"} 0
coordinator_queue_rejected_total{channel="b",reason="canceled"} 0
coordinator_queue_rejected_total{channel="b",reason="closed"} 1
coordinator_queue_rejected_total{channel="b",reason="full"} 0
# HELP coordinator_watermark_epoch The last epoch that reached each durability level.
# TYPE coordinator_watermark_epoch gauge
coordinator_watermark_epoch{level="applied"} 5
coordinator_watermark_epoch{level="durable"} 5
coordinator_watermark_epoch{level="written"} 5
# HELP coordinator_flushes_total Deltas frozen and handed to the flusher, by reason.
# TYPE coordinator_flushes_total counter
coordinator_flushes_total{reason="budget"} 0
coordinator_flushes_total{reason="explicit"} 0
coordinator_flushes_total{reason="interval"} 0
coordinator_flushes_total{reason="shutdown"} 1
coordinator_flushes_total{reason="size"} 0
coordinator_flushes_total{reason="wait"} 0
# HELP coordinator_syncs_total Completed FlushStorage calls.
# TYPE coordinator_syncs_total counter
coordinator_syncs_total 1
# HELP coordinator_failed 1 once the coordinator has failed, else 0.
# TYPE coordinator_failed gauge
coordinator_failed 0
`
	names := append(queueMetrics, "coordinator_watermark_epoch", "coordinator_flushes_total",
		"coordinator_syncs_total", "coordinator_failed")
	if err := testutil.CollectAndCompare(collector, strings.NewReader(want), names...); err != nil {
		t.Errorf("after Stop:\n%v", err)
	}
}

func TestCollectorBudget(t *testing.T) {
	c, reg := newCoordinator(t, coordinator.Config{MaxBytes: 10}, &flusher{})
	ch := c.Channel("default")
	if _, err := ch.TryWrite(6); err != nil {
		t.Fatalf("TryWrite(6) = %v; want nil", err)
	}
	if _, err := ch.TryWrite(6); !errors.Is(err, coordinator.ErrBackpressure) {
		t.Fatalf("TryWrite(6) beyond the budget = %v; want ErrBackpressure", err)
	}
	check(t, reg, "coordinator_queue_rejected_total", labels{"channel": "default", "reason": "budget"}, 1)
	check(t, reg, "coordinator_queue_rejected_total", labels{"channel": "default", "reason": "full"}, 0)
	check(t, reg, "coordinator_queue_depth", labels{"channel": "default"}, 1)
	check(t, reg, "coordinator_budget_bytes", nil, 6)
	check(t, reg, "coordinator_budget_max_bytes", nil, 10)
}

// TestMetricsFlushes runs writes, explicit flushes and syncs through a
// started coordinator and checks the collector and the observer.
func TestMetricsFlushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &flusher{}
		c, reg := newCoordinator(t, coordinator.Config{}, f)
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
			name   string
			labels labels
			want   float64
		}{
			{"coordinator_flushes_total", labels{"reason": "explicit"}, 2},
			{"coordinator_flushes_total", labels{"reason": "size"}, 0},
			{"coordinator_flushes_total", labels{"reason": "wait"}, 0},
			{"coordinator_flushes_total", labels{"reason": "shutdown"}, 0},
			{"coordinator_watermark_epoch", labels{"level": "applied"}, 10},
			{"coordinator_watermark_epoch", labels{"level": "written"}, 8},
			{"coordinator_watermark_epoch", labels{"level": "durable"}, 8},
			{"coordinator_syncs_total", nil, float64(f.syncs())},
			{"coordinator_queue_accepted_total", labels{"channel": "default"}, 10},
			{"coordinator_queue_depth", labels{"channel": "default"}, 0},
			{"coordinator_delta_bytes", nil, 200},
			{"coordinator_flush_pending", nil, 0},
			{"coordinator_syncing", nil, 0},
			{"coordinator_flush_retries_total", nil, 0},
			{"coordinator_slow_flushes_total", nil, 0},
			{"coordinator_failed", nil, 0},
			{"coordinator_writes_applied_total", labels{"channel": "default"}, 10},
			{"coordinator_apply_errors_total", labels{"channel": "default"}, 0},
		} {
			check(t, reg, tc.name, tc.labels, tc.want)
		}
		if f.syncs() < 1 {
			t.Errorf("FlushStorage calls = %d; want at least 1", f.syncs())
		}

		stats := c.Stats()
		// Every reason is exported, zero counts included, as Stats counts it.
		for r, n := range stats.Flushes.All() {
			check(t, reg, "coordinator_flushes_total", labels{"reason": r.String()}, float64(n))
		}
		histograms := []struct {
			name      string
			labels    labels
			wantCount uint64
			wantSum   float64 // checked for sizes only: durations are 0 in a bubble
		}{
			{"coordinator_apply_duration_seconds", labels{"channel": "default"}, stats.Apply.Count, 0},
			{"coordinator_freeze_duration_seconds", labels{"reason": "explicit"}, 2, 0},
			{"coordinator_flush_size_bytes", labels{"reason": "explicit"}, 2, 800},
			{"coordinator_flush_dispatch_wait_seconds", nil, 2, 0}, // one per frozen delta
			{"coordinator_flush_duration_seconds", labels{"op": "flush_delta"}, 2, 0},
			{"coordinator_flush_duration_seconds", labels{"op": "flush_storage"}, uint64(f.syncs()), 0},
		}
		for _, h := range histograms {
			count, sum := histogram(t, reg, h.name, h.labels)
			if count != h.wantCount || sum != h.wantSum {
				t.Errorf("%s%v count, sum = %d, %v; want %d, %v", h.name, h.labels, count, sum, h.wantCount, h.wantSum)
			}
		}
		if stats.Apply.Count == 0 {
			t.Errorf("Stats().Apply.Count = 0; want batches")
		}
		// Without Config.MaxBytes there is no budget to report.
		for _, name := range []string{"coordinator_budget_bytes", "coordinator_budget_max_bytes"} {
			if n, err := testutil.GatherAndCount(reg, name); n != 0 || err != nil {
				t.Errorf("GatherAndCount(%s) = %d, %v; want 0, nil", name, n, err)
			}
		}

		if err := c.Stop(ctx); err != nil {
			t.Fatalf("Stop = %v; want nil", err)
		}
		check(t, reg, "coordinator_flushes_total", labels{"reason": "shutdown"}, 1)
		check(t, reg, "coordinator_watermark_epoch", labels{"level": "durable"}, 10)
		check(t, reg, "coordinator_delta_bytes", nil, 0)
		if count, _ := histogram(t, reg, "coordinator_flush_dispatch_wait_seconds", nil); count != 3 {
			t.Errorf("flush_dispatch_wait_seconds count after Stop = %d; want 3", count)
		}
	})
}

// TestMetricsSizeAndInterval checks the size and interval flush reasons.
func TestMetricsSizeAndInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &flusher{}
		c, reg := newCoordinator(t, coordinator.Config{FlushSize: 250, FlushInterval: time.Minute}, f)
		c.Start()
		ch := c.Channel("default")
		for range 3 {
			if _, err := ch.Write(context.Background(), 100); err != nil {
				t.Fatalf("Write = %v; want nil", err)
			}
		}
		synctest.Wait()
		check(t, reg, "coordinator_flushes_total", labels{"reason": "size"}, 1)
		check(t, reg, "coordinator_watermark_epoch", labels{"level": "written"}, 3)
		if _, err := ch.Write(context.Background(), 100); err != nil {
			t.Fatalf("Write = %v; want nil", err)
		}
		time.Sleep(time.Minute) // let the flush interval pass
		synctest.Wait()
		check(t, reg, "coordinator_flushes_total", labels{"reason": "interval"}, 1)
		check(t, reg, "coordinator_watermark_epoch", labels{"level": "written"}, 4)
		count, sum := histogram(t, reg, "coordinator_flush_size_bytes", labels{"reason": "size"})
		if count != 1 || sum != 300 {
			t.Errorf("flush_size_bytes{reason=size} count, sum = %d, %v; want 1, 300", count, sum)
		}
	})
}

// TestMetricsWait checks the wait flush reason.
func TestMetricsWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, reg := newCoordinator(t, coordinator.Config{}, &flusher{})
		c.Start()
		h, err := c.Channel("default").Write(context.Background(), 1)
		if err != nil {
			t.Fatalf("Write = %v; want nil", err)
		}
		if _, err := h.Wait(context.Background(), coordinator.Written); err != nil {
			t.Fatalf("Wait(Written) = %v; want nil", err)
		}
		check(t, reg, "coordinator_flushes_total", labels{"reason": "wait"}, 1)
	})
}

// TestMetricsPendingAndDispatch blocks the flusher so that frozen deltas
// pile up, then checks the pending gauge and the dispatch latency.
func TestMetricsPendingAndDispatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		f := &flusher{onDelta: func(int) error { <-release; return nil }}
		c, reg := newCoordinator(t, coordinator.Config{MaxPendingFlushes: 1}, f)
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
		check(t, reg, "coordinator_flush_pending", nil, 2)

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
		check(t, reg, "coordinator_flush_pending", nil, 3)
		time.Sleep(time.Second) // the dispatch waits for one second
		close(release)
		if err := <-done; err != nil {
			t.Fatalf("Flush(Applied) = %v; want nil", err)
		}
		if err := c.WaitFor(ctx, coordinator.Written, 3); err != nil {
			t.Fatalf("WaitFor(Written, 3) = %v; want nil", err)
		}
		synctest.Wait()
		check(t, reg, "coordinator_flush_pending", nil, 0)
		// Three frozen deltas, three samples: two dispatched at once and
		// one after waiting a second.
		h := find(t, reg, "coordinator_flush_dispatch_wait_seconds", nil).GetHistogram()
		if h.GetSampleCount() != 3 || h.GetSampleSum() != 1 {
			t.Errorf("flush_dispatch_wait_seconds count, sum = %d, %v; want 3, 1", h.GetSampleCount(), h.GetSampleSum())
		}
		for _, b := range h.GetBucket() {
			want := uint64(2) // the two waits of 0 fall in every bucket
			if b.GetUpperBound() >= 1 {
				want = 3
			}
			if b.GetCumulativeCount() != want {
				t.Errorf("flush_dispatch_wait_seconds bucket le=%v = %d; want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
			}
		}
	})
}

// TestMetricsSlowAndRetry makes the first FlushDelta fail and the second
// one slow.
func TestMetricsSlowAndRetry(t *testing.T) {
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
		c, reg := newCoordinator(t, cfg, f)
		c.Start()
		if _, err := c.Channel("default").Write(context.Background(), 1); err != nil {
			t.Fatalf("Write = %v; want nil", err)
		}
		if _, err := c.Flush(context.Background(), coordinator.Written); err != nil {
			t.Fatalf("Flush(Written) = %v; want nil", err)
		}
		check(t, reg, "coordinator_flush_retries_total", nil, 1)
		check(t, reg, "coordinator_slow_flushes_total", nil, 1)
		count, sum := histogram(t, reg, "coordinator_flush_duration_seconds", labels{"op": "flush_delta"})
		if count != 1 || sum != 4 { // 1s of backoff and 3s of writing
			t.Errorf("flush_duration_seconds{op=flush_delta} count, sum = %d, %v; want 1, 4", count, sum)
		}
	})
}

func TestMetricsFailed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errDisk := errors.New("disk on fire")
		f := &flusher{onDelta: func(int) error { return errDisk }}
		c, reg := newCoordinator(t, coordinator.Config{}, f)
		c.Start()
		check(t, reg, "coordinator_failed", nil, 0)
		if _, err := c.Channel("default").Write(context.Background(), 1); err != nil {
			t.Fatalf("Write = %v; want nil", err)
		}
		if _, err := c.Flush(context.Background(), coordinator.Written); !errors.Is(err, errDisk) {
			t.Fatalf("Flush(Written) = %v; want %v", err, errDisk)
		}
		check(t, reg, "coordinator_failed", nil, 1)
		check(t, reg, "coordinator_watermark_epoch", labels{"level": "written"}, 0)
		// The failed call is observed too.
		if count, _ := histogram(t, reg, "coordinator_flush_duration_seconds", labels{"op": "flush_delta"}); count != 1 {
			t.Errorf("flush_duration_seconds{op=flush_delta} count = %d; want 1", count)
		}
		if err := c.Stop(context.Background()); !errors.Is(err, errDisk) {
			t.Errorf("Stop = %v; want %v", err, errDisk)
		}
	})
}

// TestScrape serves the registry over HTTP, as a Prometheus server would
// scrape it.
func TestScrape(t *testing.T) {
	c, reg := newCoordinator(t, coordinator.Config{Channels: []string{"wal"}}, &flusher{})
	c.Start()
	ctx := context.Background()
	for range 2 {
		if _, err := c.Channel("wal").Write(ctx, 7); err != nil {
			t.Fatalf("Write = %v; want nil", err)
		}
		if _, err := c.Flush(ctx, coordinator.Durable); err != nil {
			t.Fatalf("Flush(Durable) = %v; want nil", err)
		}
	}
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	want := `
# HELP coordinator_flushes_total Deltas frozen and handed to the flusher, by reason.
# TYPE coordinator_flushes_total counter
coordinator_flushes_total{reason="budget"} 0
coordinator_flushes_total{reason="explicit"} 2
coordinator_flushes_total{reason="interval"} 0
coordinator_flushes_total{reason="shutdown"} 0
coordinator_flushes_total{reason="size"} 0
coordinator_flushes_total{reason="wait"} 0
# HELP coordinator_watermark_epoch The last epoch that reached each durability level.
# TYPE coordinator_watermark_epoch gauge
coordinator_watermark_epoch{level="applied"} 2
coordinator_watermark_epoch{level="durable"} 2
coordinator_watermark_epoch{level="written"} 2
# HELP coordinator_writes_applied_total Writes applied to the live delta, by channel; those Apply rejected included.
# TYPE coordinator_writes_applied_total counter
coordinator_writes_applied_total{channel="wal"} 2
`
	if err := testutil.ScrapeAndCompare(srv.URL, strings.NewReader(want),
		"coordinator_flushes_total", "coordinator_watermark_epoch", "coordinator_writes_applied_total"); err != nil {
		t.Error(err)
	}

	// Every metric is in the exposition, with its type.
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"# TYPE coordinator_queue_depth gauge",
		"# TYPE coordinator_queue_paused gauge",
		"# TYPE coordinator_queue_accepted_total counter",
		"# TYPE coordinator_queue_rejected_total counter",
		"# TYPE coordinator_writes_applied_total counter",
		"# TYPE coordinator_apply_errors_total counter",
		"# TYPE coordinator_delta_bytes gauge",
		"# TYPE coordinator_flush_pending gauge",
		"# TYPE coordinator_syncing gauge",
		"# TYPE coordinator_flushes_total counter",
		"# TYPE coordinator_syncs_total counter",
		"# TYPE coordinator_flush_retries_total counter",
		"# TYPE coordinator_slow_flushes_total counter",
		"# TYPE coordinator_watermark_epoch gauge",
		"# TYPE coordinator_failed gauge",
		"# TYPE coordinator_apply_duration_seconds histogram",
		"# TYPE coordinator_freeze_duration_seconds histogram",
		"# TYPE coordinator_flush_size_bytes histogram",
		"# TYPE coordinator_flush_dispatch_wait_seconds histogram",
		"# TYPE coordinator_flush_duration_seconds histogram",
	} {
		if !strings.Contains(string(body), line+"\n") {
			t.Errorf("exposition lacks %q", line)
		}
	}
}

// TestOptions checks the namespace and constant labels, which let two
// coordinators share a registry.
func TestOptions(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	for _, name := range []string{"wal", "index"} {
		opts := coordprom.Options{Namespace: "db", ConstLabels: prometheus.Labels{"coordinator": name}}
		obs := coordprom.NewObserver(opts)
		c, err := coordinator.New(coordinator.Config{Observer: obs}, newDelta, struct{}{}, 0, &flusher{})
		if err != nil {
			t.Fatal(err)
		}
		reg.MustRegister(obs, coordprom.NewCollector(c, opts))
		c.Start()
		n := map[string]int{"wal": 3, "index": 1}[name]
		for range n {
			if _, err := c.Channel("default").Write(context.Background(), 1); err != nil {
				t.Fatalf("Write = %v; want nil", err)
			}
		}
		if err := c.Stop(context.Background()); err != nil {
			t.Fatalf("Stop = %v; want nil", err)
		}
	}
	check(t, reg, "db_watermark_epoch", labels{"coordinator": "wal", "level": "durable"}, 3)
	check(t, reg, "db_watermark_epoch", labels{"coordinator": "index", "level": "durable"}, 1)
	check(t, reg, "db_writes_applied_total", labels{"coordinator": "wal", "channel": "default"}, 3)
	if n, err := testutil.GatherAndCount(reg, "coordinator_failed"); n != 0 || err != nil {
		t.Errorf("GatherAndCount(coordinator_failed) = %d, %v; want 0, nil", n, err)
	}
}

// TestCollectorApplyErrors applies writes that Apply partly rejects and
// checks the per-channel applied and rejected counts.
func TestCollectorApplyErrors(t *testing.T) {
	c, reg := newCoordinator(t, coordinator.Config{Channels: []string{"a", "b"}}, &flusher{})
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
		name   string
		labels labels
		want   float64
	}{
		{"coordinator_writes_applied_total", labels{"channel": "a"}, 5},
		{"coordinator_apply_errors_total", labels{"channel": "a"}, 3},
		{"coordinator_queue_accepted_total", labels{"channel": "a"}, 3},
		{"coordinator_writes_applied_total", labels{"channel": "b"}, 1},
		{"coordinator_apply_errors_total", labels{"channel": "b"}, 0},
		{"coordinator_watermark_epoch", labels{"level": "durable"}, 6},
	} {
		check(t, reg, tc.name, tc.labels, tc.want)
	}
}

// TestObserverLeavesCountsToCollector checks that the Observer does not
// export the applied write count, which comes from the Collector.
func TestObserverLeavesCountsToCollector(t *testing.T) {
	obs := coordprom.NewObserver(coordprom.Options{})
	obs.Applied("a", 3, time.Millisecond)
	if n := testutil.CollectAndCount(obs, "coordinator_writes_applied_total"); n != 0 {
		t.Errorf("Observer exports %d coordinator_writes_applied_total series; want 0", n)
	}
	if n := testutil.CollectAndCount(obs, "coordinator_apply_duration_seconds"); n != 1 {
		t.Errorf("Observer exports %d coordinator_apply_duration_seconds series; want 1", n)
	}
}

// TestCollectorBudgetHeld holds the flusher and checks that the bytes of a
// frozen delta stay charged to the budget until it is written.
func TestCollectorBudgetHeld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		f := &flusher{onDelta: func(int) error { <-release; return nil }}
		c, reg := newCoordinator(t, coordinator.Config{MaxBytes: 100}, f)
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
		check(t, reg, "coordinator_budget_max_bytes", nil, 100)
		check(t, reg, "coordinator_budget_bytes", nil, 42)
		check(t, reg, "coordinator_flush_pending", nil, 1)

		// A write to the new live delta is charged too.
		if _, err := ch.Write(ctx, 5); err != nil {
			t.Fatalf("Write(5) = %v; want nil", err)
		}
		synctest.Wait()
		check(t, reg, "coordinator_budget_bytes", nil, 47)

		close(release)
		if err := c.WaitFor(ctx, coordinator.Written, 2); err != nil {
			t.Fatalf("WaitFor(Written, 2) = %v; want nil", err)
		}
		synctest.Wait()
		check(t, reg, "coordinator_budget_bytes", nil, 5) // the live delta's write

		if err := c.Stop(ctx); err != nil {
			t.Fatalf("Stop = %v; want nil", err)
		}
		check(t, reg, "coordinator_budget_bytes", nil, 0)
		check(t, reg, "coordinator_budget_max_bytes", nil, 100)
	})
}

// TestCollectorSyncing holds FlushStorage and checks that a running sync
// is reported by syncing and not counted as a pending flush.
func TestCollectorSyncing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		f := &flusher{onSync: func(int) error { <-release; return nil }}
		c, reg := newCoordinator(t, coordinator.Config{}, f)
		c.Start()
		ctx := context.Background()
		if _, err := c.Channel("default").Write(ctx, 1); err != nil {
			t.Fatalf("Write = %v; want nil", err)
		}
		check(t, reg, "coordinator_syncing", nil, 0)
		done := make(chan error, 1) // buffered: the goroutine never blocks sending
		go func() {
			_, err := c.Flush(ctx, coordinator.Durable)
			done <- err
		}()
		synctest.Wait() // FlushStorage is running
		check(t, reg, "coordinator_syncing", nil, 1)
		check(t, reg, "coordinator_flush_pending", nil, 0)
		check(t, reg, "coordinator_watermark_epoch", labels{"level": "written"}, 1)
		check(t, reg, "coordinator_watermark_epoch", labels{"level": "durable"}, 0)
		check(t, reg, "coordinator_syncs_total", nil, 0)

		close(release)
		if err := <-done; err != nil {
			t.Fatalf("Flush(Durable) = %v; want nil", err)
		}
		synctest.Wait()
		check(t, reg, "coordinator_syncing", nil, 0)
		check(t, reg, "coordinator_syncs_total", nil, 1)
		check(t, reg, "coordinator_watermark_epoch", labels{"level": "durable"}, 1)
	})
}
