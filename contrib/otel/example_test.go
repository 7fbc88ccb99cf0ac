package otel_test

import (
	"context"
	"fmt"

	"github.com/groupcommit/coordinator"
	coordotel "github.com/groupcommit/coordinator/contrib/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// counter is a Delta that counts the writes applied to it.
type counter struct{ n int }

func (d *counter) Apply(string) (struct{}, error)    { d.n++; return struct{}{}, nil }
func (d *counter) EstimateSize() int                 { return 16 * d.n }
func (d *counter) Freeze() (int, struct{}, struct{}) { return d.n, struct{}{}, struct{}{} }
func (d *counter) Reader() struct{}                  { return struct{}{} }

// discard is a Flusher that keeps nothing.
type discard struct{}

func (discard) FlushDelta(_ context.Context, n int, _ coordinator.EpochRange) (int, error) {
	return n, nil
}
func (discard) FlushStorage(context.Context) error { return nil }

func Example() {
	// An application sets up its SDK and exporters; a manual reader
	// stands in for them here.
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())
	opts := coordotel.Options{MeterProvider: provider}

	// The Observer goes into the Config; RegisterStats reads the
	// coordinator's Stats at every collection.
	obs, err := coordotel.NewObserver(opts)
	if err != nil {
		panic(err)
	}
	newCounter := func(struct{}) *counter { return &counter{} }
	c, err := coordinator.New(coordinator.Config{Observer: obs}, newCounter, struct{}{}, 0, discard{})
	if err != nil {
		panic(err)
	}
	reg, err := coordotel.RegisterStats(c, opts)
	if err != nil {
		panic(err)
	}
	defer reg.Unregister()
	c.Start()
	defer c.Stop(context.Background())

	ctx := context.Background()
	for _, w := range []string{"a", "b", "c"} {
		if _, err := c.Channel("default").Write(ctx, w); err != nil {
			panic(err)
		}
	}
	if _, err := c.Flush(ctx, coordinator.Durable); err != nil {
		panic(err)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		panic(err)
	}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		switch d := m.Data.(type) {
		case metricdata.Gauge[int64]:
			if m.Name == "coordinator.watermark" {
				for _, p := range d.DataPoints {
					l, _ := p.Attributes.Value(coordotel.KeyLevel)
					fmt.Printf("%s{level=%s} %d\n", m.Name, l.AsString(), p.Value)
				}
			}
		case metricdata.Histogram[int64]:
			if m.Name == "coordinator.flush.size" {
				for _, p := range d.DataPoints {
					r, _ := p.Attributes.Value(coordotel.KeyReason)
					fmt.Printf("%s{reason=%s} count=%d sum=%d%s\n", m.Name, r.AsString(), p.Count, p.Sum, m.Unit)
				}
			}
		}
	}
	// Unordered output:
	// coordinator.flush.size{reason=explicit} count=1 sum=48By
	// coordinator.watermark{level=applied} 3
	// coordinator.watermark{level=written} 3
	// coordinator.watermark{level=durable} 3
}
