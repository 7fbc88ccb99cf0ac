package otel

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/groupcommit/coordinator"
	"go.opentelemetry.io/otel/metric"
)

// Observer is a [coordinator.Observer] that records the coordinator's
// events in OpenTelemetry histograms. Create it with [NewObserver] and put
// it in [coordinator.Config.Observer]. It is safe for concurrent use, so
// several coordinators may share one (their measurements are then merged);
// it must not be copied.
type Observer struct {
	// NopObserver keeps Observer a [coordinator.Observer] should the
	// interface grow.
	coordinator.NopObserver

	opts      Options
	apply     metric.Float64Histogram // {channel}
	freeze    metric.Float64Histogram // {reason}
	flushSize metric.Int64Histogram   // {reason}
	dispatch  metric.Float64Histogram
	flush     metric.Float64Histogram // {op}

	none                     metric.MeasurementOption   // Options.Attributes only
	reasons                  []metric.MeasurementOption // by FlushReason
	flushDelta, flushStorage metric.MeasurementOption
	channels                 sync.Map // channel name → metric.MeasurementOption
}

// NewObserver creates the histograms and returns an Observer recording to
// them. It fails only if the meter refuses an instrument.
func NewObserver(opts Options) (*Observer, error) {
	o := opts.withDefaults()
	m := o.meter()
	var errs []error
	durations := func(name, desc string) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(o.DurationBuckets...))
		if err != nil {
			errs = append(errs, err)
		}
		return h
	}
	obs := &Observer{
		opts:   o,
		apply:  durations("coordinator.apply.duration", "Time to apply one batch of writes taken from a channel in one turn."),
		freeze: durations("coordinator.freeze.duration", "Time to freeze the live delta and create the next one, by flush reason."),
		dispatch: durations("coordinator.flush.dispatch.duration",
			"Time the coordinator waited for room in the flush queue to hand a frozen delta to the flusher (backpressure)."),
		flush: durations("coordinator.flush.duration", "Time spent in a flusher call, retries included, by op (flush_delta, flush_storage)."),
	}
	var err error
	obs.flushSize, err = m.Int64Histogram("coordinator.flush.size", metric.WithUnit("By"),
		metric.WithDescription("Estimated size of each frozen delta, by flush reason."),
		metric.WithExplicitBucketBoundaries(o.SizeBuckets...))
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	obs.none = o.attrs()
	obs.reasons = o.reasonAttrs()
	obs.flushDelta = o.attrs(KeyOp.String(OpFlushDelta))
	obs.flushStorage = o.attrs(KeyOp.String(OpFlushStorage))
	return obs, nil
}

func (o *Observer) channel(name string) metric.MeasurementOption {
	if a, ok := o.channels.Load(name); ok {
		return a.(metric.MeasurementOption)
	}
	a, _ := o.channels.LoadOrStore(name, o.opts.attrs(KeyChannel.String(name)))
	return a.(metric.MeasurementOption)
}

func (o *Observer) reason(r coordinator.FlushReason) metric.MeasurementOption {
	if int(r) < len(o.reasons) {
		return o.reasons[r]
	}
	return o.opts.attrs(KeyReason.String(r.String()))
}

// Applied implements [coordinator.Observer]. The number of writes is not
// recorded here: [RegisterStats] reports it from [coordinator.Stats] as
// coordinator.apply.writes.
func (o *Observer) Applied(channel string, _ int, d time.Duration) {
	o.apply.Record(context.Background(), d.Seconds(), o.channel(channel))
}

// Frozen implements [coordinator.Observer].
func (o *Observer) Frozen(reason coordinator.FlushReason, _ coordinator.EpochRange, bytes int, d time.Duration) {
	a := o.reason(reason)
	o.freeze.Record(context.Background(), d.Seconds(), a)
	o.flushSize.Record(context.Background(), int64(bytes), a)
}

// Dispatched implements [coordinator.Observer].
func (o *Observer) Dispatched(_ coordinator.EpochRange, wait time.Duration) {
	o.dispatch.Record(context.Background(), wait.Seconds(), o.none)
}

// Flushed implements [coordinator.Observer].
func (o *Observer) Flushed(info coordinator.FlushInfo) {
	o.flush.Record(context.Background(), info.Duration.Seconds(), o.flushDelta)
}

// Synced implements [coordinator.Observer].
func (o *Observer) Synced(info coordinator.SyncInfo) {
	o.flush.Record(context.Background(), info.Duration.Seconds(), o.flushStorage)
}

var _ coordinator.Observer = (*Observer)(nil)
