package prometheus_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/groupcommit/coordinator"
	coordprom "github.com/groupcommit/coordinator/contrib/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
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

// newCoordinator returns an unstarted coordinator whose metrics are
// registered in a fresh registry. It is stopped when the test ends.
func newCoordinator(t *testing.T, cfg coordinator.Config, f *flusher) (*testCoordinator, *prometheus.Registry) {
	t.Helper()
	obs := coordprom.NewObserver(coordprom.Options{})
	cfg.Observer = obs
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = time.Hour // no flushes by interval unless asked
	}
	c, err := coordinator.New(cfg, newDelta, struct{}{}, 0, f)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(obs, coordprom.NewCollector(c, coordprom.Options{}))
	return c, reg
}

// find gathers g and returns the metric name{labels}, failing the test if
// there is none.
func find(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			return m
		}
	}
	t.Fatalf("no metric %s%v", name, labels)
	return nil
}

// value returns the value of the counter or gauge name{labels}.
func value(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	m := find(t, g, name, labels)
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	}
	t.Fatalf("%s%v is neither a counter nor a gauge", name, labels)
	return 0
}

// histogram returns the sample count and sum of the histogram name{labels}.
func histogram(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) (uint64, float64) {
	t.Helper()
	h := find(t, g, name, labels).GetHistogram()
	if h == nil {
		t.Fatalf("%s%v is not a histogram", name, labels)
	}
	return h.GetSampleCount(), h.GetSampleSum()
}

type labels = map[string]string

// check compares a metric's value and reports a mismatch.
func check(t *testing.T, g prometheus.Gatherer, name string, l labels, want float64) {
	t.Helper()
	if got := value(t, g, name, l); got != want {
		t.Errorf("%s%v = %v; want %v", name, l, got, want)
	}
}
