package otel_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/groupcommit/coordinator"
	coordotel "github.com/groupcommit/coordinator/contrib/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// write is a payload of that many bytes.
type write int

func (w write) Size() int { return int(w) }

// bad is a write that delta.Apply rejects with errBad.
const bad write = 0

var errBad = errors.New("bad write")

// delta adds up the sizes of the writes applied to it.
type delta struct{ bytes int }

func newDelta(struct{}) *delta { return &delta{} }

func (d *delta) Apply(w write) (struct{}, error) {
	if w == bad {
		return struct{}{}, errBad
	}
	d.bytes += int(w)
	return struct{}{}, nil
}

func (d *delta) EstimateSize() int                 { return d.bytes }
func (d *delta) Freeze() (int, struct{}, struct{}) { return d.bytes, struct{}{}, struct{}{} }
func (d *delta) Reader() struct{}                  { return struct{}{} }

// flusher counts what it writes. Its hooks, if set, run at the start of
// each call; n counts calls of that kind from 1.
type flusher struct {
	mu         sync.Mutex
	written    int // bytes
	deltaCalls int
	syncCalls  int
	onDelta    func(n int) error
	onSync     func(n int) error
}

func (f *flusher) FlushDelta(_ context.Context, bytes int, _ coordinator.EpochRange) (int, error) {
	f.mu.Lock()
	f.deltaCalls++
	n, hook := f.deltaCalls, f.onDelta
	f.mu.Unlock()
	if hook != nil {
		if err := hook(n); err != nil {
			return 0, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.written += bytes
	return f.written, nil
}

func (f *flusher) FlushStorage(context.Context) error {
	f.mu.Lock()
	f.syncCalls++
	n, hook := f.syncCalls, f.onSync
	f.mu.Unlock()
	if hook != nil {
		return hook(n)
	}
	return nil
}

func (f *flusher) syncs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncCalls
}

type testCoordinator = coordinator.Coordinator[write, struct{}, struct{}, struct{}, int]

// newCoordinator returns an unstarted coordinator reporting to a meter
// provider with a manual reader. Everything is stopped when the test ends.
func newCoordinator(t *testing.T, cfg coordinator.Config, f *flusher, attrs ...attribute.KeyValue) (*testCoordinator, *sdkmetric.ManualReader) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = provider.Shutdown(context.Background()) })
	opts := coordotel.Options{MeterProvider: provider, Attributes: attrs}
	obs, err := coordotel.NewObserver(opts)
	if err != nil {
		t.Fatalf("NewObserver: %v", err)
	}
	cfg.Observer = obs
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = time.Hour // no flushes by interval unless asked
	}
	c, err := coordinator.New(cfg, newDelta, struct{}{}, 0, f)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	reg, err := coordotel.RegisterStats(c, opts)
	if err != nil {
		t.Fatalf("RegisterStats: %v", err)
	}
	t.Cleanup(func() { _ = reg.Unregister() })
	return c, reader
}

// collect reads every metric from reader.
func collect(t *testing.T, reader *sdkmetric.ManualReader) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != coordotel.ScopeName {
			t.Errorf("scope %q; want %q", sm.Scope.Name, coordotel.ScopeName)
		}
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// metricOf returns the named metric, failing the test if it was not
// collected.
func metricOf(t *testing.T, reader *sdkmetric.ManualReader, name string) metricdata.Metrics {
	t.Helper()
	m, ok := collect(t, reader)[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	return m
}

func pointOf[N int64 | float64](t *testing.T, name string, points []metricdata.DataPoint[N], set attribute.Set) float64 {
	t.Helper()
	for _, p := range points {
		if p.Attributes.Equals(&set) {
			return float64(p.Value)
		}
	}
	t.Fatalf("no point of %s with attributes %v", name, set.Encoded(attribute.DefaultEncoder()))
	return 0
}

// points returns how many data points the named metric has; 0 if it was
// not collected.
func points(t *testing.T, reader *sdkmetric.ManualReader, name string) int {
	t.Helper()
	m, ok := collect(t, reader)[name]
	if !ok {
		return 0
	}
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		return len(d.DataPoints)
	case metricdata.Sum[float64]:
		return len(d.DataPoints)
	case metricdata.Gauge[int64]:
		return len(d.DataPoints)
	case metricdata.Gauge[float64]:
		return len(d.DataPoints)
	case metricdata.Histogram[int64]:
		return len(d.DataPoints)
	case metricdata.Histogram[float64]:
		return len(d.DataPoints)
	}
	t.Fatalf("%s is a %T", name, m.Data)
	return 0
}

// value returns the value of the counter or gauge name{kv}.
func value(t *testing.T, reader *sdkmetric.ManualReader, name string, kv ...attribute.KeyValue) float64 {
	t.Helper()
	set := attribute.NewSet(kv...)
	switch d := metricOf(t, reader, name).Data.(type) {
	case metricdata.Sum[int64]:
		return pointOf(t, name, d.DataPoints, set)
	case metricdata.Sum[float64]:
		return pointOf(t, name, d.DataPoints, set)
	case metricdata.Gauge[int64]:
		return pointOf(t, name, d.DataPoints, set)
	case metricdata.Gauge[float64]:
		return pointOf(t, name, d.DataPoints, set)
	default:
		t.Fatalf("%s is a %T, neither a sum nor a gauge", name, d)
	}
	return 0
}

func histogramPoint[N int64 | float64](t *testing.T, name string, points []metricdata.HistogramDataPoint[N], set attribute.Set) (uint64, float64) {
	t.Helper()
	for _, p := range points {
		if p.Attributes.Equals(&set) {
			return p.Count, float64(p.Sum)
		}
	}
	t.Fatalf("no point of %s with attributes %v", name, set.Encoded(attribute.DefaultEncoder()))
	return 0, 0
}

// histogram returns the count and sum of the histogram name{kv}.
func histogram(t *testing.T, reader *sdkmetric.ManualReader, name string, kv ...attribute.KeyValue) (uint64, float64) {
	t.Helper()
	set := attribute.NewSet(kv...)
	switch d := metricOf(t, reader, name).Data.(type) {
	case metricdata.Histogram[float64]:
		return histogramPoint(t, name, d.DataPoints, set)
	case metricdata.Histogram[int64]:
		return histogramPoint(t, name, d.DataPoints, set)
	default:
		t.Fatalf("%s is a %T, not a histogram", name, d)
	}
	return 0, 0
}

// check compares a metric's value and reports a mismatch.
func check(t *testing.T, reader *sdkmetric.ManualReader, name string, want float64, kv ...attribute.KeyValue) {
	t.Helper()
	if got := value(t, reader, name, kv...); got != want {
		t.Errorf("%s%v = %v; want %v", name, kv, got, want)
	}
}

var (
	channel = coordotel.KeyChannel.String
	reason  = coordotel.KeyReason.String
	op      = coordotel.KeyOp.String
	level   = coordotel.KeyLevel.String
)
