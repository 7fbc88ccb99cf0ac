package prometheus_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"

	"github.com/groupcommit/coordinator"
	coordprom "github.com/groupcommit/coordinator/contrib/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
	// The Observer goes into the Config; the Collector reads the
	// coordinator's Stats at every scrape.
	obs := coordprom.NewObserver(coordprom.Options{})
	newCounter := func(struct{}) *counter { return &counter{} }
	c, err := coordinator.New(coordinator.Config{Observer: obs}, newCounter, struct{}{}, 0, discard{})
	if err != nil {
		panic(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(obs, coordprom.NewCollector(c, coordprom.Options{}))
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

	// Serve /metrics, here to a recorder.
	handler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(line, `coordinator_flushes_total{reason="explicit"}`) ||
			strings.HasPrefix(line, "coordinator_watermark_epoch") ||
			strings.HasPrefix(line, "coordinator_writes_applied_total") ||
			strings.HasPrefix(line, "coordinator_flush_size_bytes_sum") {
			fmt.Println(line)
		}
	}
	// Output:
	// coordinator_flush_size_bytes_sum{reason="explicit"} 48
	// coordinator_flushes_total{reason="explicit"} 1
	// coordinator_watermark_epoch{level="applied"} 3
	// coordinator_watermark_epoch{level="durable"} 3
	// coordinator_watermark_epoch{level="written"} 3
	// coordinator_writes_applied_total{channel="default"} 3
}
