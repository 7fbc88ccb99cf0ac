package prometheus

import (
	"time"

	"github.com/groupcommit/coordinator"
	"github.com/prometheus/client_golang/prometheus"
)

// Label values of coordinator_flush_duration_seconds{op}.
const (
	OpFlushDelta   = "flush_delta"   // Flusher.FlushDelta, retries included
	OpFlushStorage = "flush_storage" // Flusher.FlushStorage, retries included
)

// Observer is a [coordinator.Observer] that records the coordinator's
// events in histograms, and the [prometheus.Collector] that exports them.
// Create it with [NewObserver] and put it in [coordinator.Config.Observer].
// It is safe for concurrent use, so several coordinators may share one
// (their samples are then merged); it must not be copied.
type Observer struct {
	// NopObserver keeps Observer an [coordinator.Observer] should the
	// interface grow.
	coordinator.NopObserver

	apply     *prometheus.HistogramVec // {channel}
	freeze    *prometheus.HistogramVec // {reason}
	flushSize *prometheus.HistogramVec // {reason}
	dispatch  prometheus.Histogram
	flush     *prometheus.HistogramVec // {op}

	flushDelta, flushStorage prometheus.Observer
}

// NewObserver returns an Observer. Register it with a
// [prometheus.Registerer] and set it as [coordinator.Config.Observer].
func NewObserver(opts Options) *Observer {
	o := opts.withDefaults()
	histogram := func(name, help string, buckets []float64, label string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: o.Namespace, Name: name, Help: help, ConstLabels: o.ConstLabels, Buckets: buckets,
		}, []string{label})
	}
	obs := &Observer{
		apply: histogram("apply_duration_seconds",
			"Time to apply one batch of writes taken from a channel in one turn.", o.DurationBuckets, "channel"),
		freeze: histogram("freeze_duration_seconds",
			"Time to freeze the live delta and create the next one, by flush reason.", o.DurationBuckets, "reason"),
		flushSize: histogram("flush_size_bytes",
			"Estimated size of each frozen delta, by flush reason.", o.SizeBuckets, "reason"),
		dispatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: o.Namespace, Name: "flush_dispatch_wait_seconds", ConstLabels: o.ConstLabels, Buckets: o.DurationBuckets,
			Help: "Time the coordinator waited for room in the flush queue to hand a frozen delta to the flusher (backpressure).",
		}),
		flush: histogram("flush_duration_seconds",
			"Time spent in a flusher call, retries included, by op (flush_delta, flush_storage).", o.DurationBuckets, "op"),
	}
	obs.flushDelta = obs.flush.WithLabelValues(OpFlushDelta)
	obs.flushStorage = obs.flush.WithLabelValues(OpFlushStorage)
	return obs
}

// Describe implements [prometheus.Collector].
func (o *Observer) Describe(ch chan<- *prometheus.Desc) {
	o.apply.Describe(ch)
	o.freeze.Describe(ch)
	o.flushSize.Describe(ch)
	o.dispatch.Describe(ch)
	o.flush.Describe(ch)
}

// Collect implements [prometheus.Collector].
func (o *Observer) Collect(ch chan<- prometheus.Metric) {
	o.apply.Collect(ch)
	o.freeze.Collect(ch)
	o.flushSize.Collect(ch)
	o.dispatch.Collect(ch)
	o.flush.Collect(ch)
}

// Applied implements [coordinator.Observer]. The number of writes is not
// recorded here: the [Collector] exports it from [coordinator.Stats] as
// coordinator_writes_applied_total.
func (o *Observer) Applied(channel string, _ int, d time.Duration) {
	o.apply.WithLabelValues(channel).Observe(d.Seconds())
}

// Frozen implements [coordinator.Observer].
func (o *Observer) Frozen(reason coordinator.FlushReason, _ coordinator.EpochRange, bytes int, d time.Duration) {
	r := reason.String()
	o.freeze.WithLabelValues(r).Observe(d.Seconds())
	o.flushSize.WithLabelValues(r).Observe(float64(bytes))
}

// Dispatched implements [coordinator.Observer].
func (o *Observer) Dispatched(_ coordinator.EpochRange, wait time.Duration) {
	o.dispatch.Observe(wait.Seconds())
}

// Flushed implements [coordinator.Observer].
func (o *Observer) Flushed(info coordinator.FlushInfo) { o.flushDelta.Observe(info.Duration.Seconds()) }

// Synced implements [coordinator.Observer].
func (o *Observer) Synced(info coordinator.SyncInfo) { o.flushStorage.Observe(info.Duration.Seconds()) }

var (
	_ coordinator.Observer = (*Observer)(nil)
	_ prometheus.Collector = (*Observer)(nil)
	_ prometheus.Collector = (*Collector)(nil)
)
