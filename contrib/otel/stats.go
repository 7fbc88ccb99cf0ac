package otel

import (
	"context"
	"errors"

	"github.com/groupcommit/coordinator"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ScopeName is the instrumentation scope of the meter this package uses.
const ScopeName = "github.com/groupcommit/coordinator/contrib/otel"

// Attribute keys.
const (
	KeyChannel = attribute.Key("channel") // the input channel's name
	KeyReason  = attribute.Key("reason")  // why a write was rejected or a delta frozen
	KeyOp      = attribute.Key("op")      // flush_delta or flush_storage
	KeyLevel   = attribute.Key("level")   // applied, written or durable
)

// Values of [KeyReason] on coordinator.queue.rejected.
const (
	RejectedFull     = "full"     // TryWrite found the queue full
	RejectedBudget   = "budget"   // TryWrite found the byte budget (Config.MaxBytes) exhausted
	RejectedCanceled = "canceled" // Write's context ended while it waited for room
	RejectedClosed   = "closed"   // the coordinator was stopping or failed
)

// Values of [KeyOp] on coordinator.flush.duration.
const (
	OpFlushDelta   = "flush_delta"   // Flusher.FlushDelta, retries included
	OpFlushStorage = "flush_storage" // Flusher.FlushStorage, retries included
)

// Source is what [RegisterStats] reads: any instantiation of
// [coordinator.Coordinator] satisfies it, whatever its type parameters.
type Source interface {
	Stats() coordinator.Stats
}

// Options configures [RegisterStats] and [NewObserver]. The zero value is
// valid: zero fields take the documented defaults. Give the two the same
// options for one coordinator.
type Options struct {
	// MeterProvider provides the meter. Default: the global provider.
	MeterProvider metric.MeterProvider
	// Attributes are added to every measurement; use them to tell several
	// coordinators apart.
	Attributes []attribute.KeyValue
	// DurationBuckets are the explicit bucket boundaries advised for the
	// duration histograms, in seconds. Default: 12 boundaries from 10µs
	// growing by 4x (to about 42s).
	DurationBuckets []float64
	// SizeBuckets are the boundaries advised for coordinator.flush.size, in
	// bytes. Default: 12 boundaries from 1 KiB growing by 4x (to 4 GiB).
	SizeBuckets []float64
}

func (o Options) meter() metric.Meter {
	mp := o.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	return mp.Meter(ScopeName)
}

func exponential(start, factor float64, n int) []float64 {
	b := make([]float64, n)
	for i := range b {
		b[i] = start
		start *= factor
	}
	return b
}

func (o Options) withDefaults() Options {
	if o.DurationBuckets == nil {
		o.DurationBuckets = exponential(10e-6, 4, 12)
	}
	if o.SizeBuckets == nil {
		o.SizeBuckets = exponential(1024, 4, 12)
	}
	return o
}

// attrs returns the measurement option for o.Attributes plus kv.
// reasonAttrs returns the attribute set of each flush reason, indexed by
// [coordinator.FlushReason].
func (o Options) reasonAttrs() []metric.MeasurementOption {
	var sets []metric.MeasurementOption
	for r := range (coordinator.FlushCounts{}).All() {
		sets = append(sets, o.attrs(KeyReason.String(r.String())))
	}
	return sets
}

func (o Options) attrs(kv ...attribute.KeyValue) metric.MeasurementOption {
	all := make([]attribute.KeyValue, 0, len(o.Attributes)+len(kv))
	all = append(append(all, o.Attributes...), kv...)
	return metric.WithAttributeSet(attribute.NewSet(all...))
}

// RegisterStats creates the coordinator's observable instruments and
// registers a callback that reads src.Stats() once per collection. Call
// Unregister on the result when src is gone. It fails only if the meter
// refuses an instrument or the callback.
func RegisterStats(src Source, opts Options) (metric.Registration, error) {
	if src == nil {
		return nil, errors.New("coordinator/contrib/otel: RegisterStats needs a source")
	}
	o := opts.withDefaults()
	m := o.meter()
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	i64Counter := func(name, unit, desc string) metric.Int64ObservableCounter {
		c, err := m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		check(err)
		return c
	}
	i64UpDown := func(name, unit, desc string) metric.Int64ObservableUpDownCounter {
		c, err := m.Int64ObservableUpDownCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		check(err)
		return c
	}
	i64Gauge := func(name, unit, desc string) metric.Int64ObservableGauge {
		g, err := m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		check(err)
		return g
	}
	var (
		queueDepth    = i64UpDown("coordinator.queue.depth", "{write}", "Writes accepted by the channel and not yet applied.")
		queuePaused   = i64Gauge("coordinator.queue.paused", "1", "1 if the channel is paused, else 0.")
		queueAccepted = i64Counter("coordinator.queue.accepted", "{slot}", "Queue slots accepted by the channel; a batch takes one slot.")
		queueRejected = i64Counter("coordinator.queue.rejected", "{write}", "Writes the channel refused, by reason: full or budget (TryWrite), canceled (Write's context ended while waiting for room), closed (stopping or failed).")
		applyWrites   = i64Counter("coordinator.apply.writes", "{write}", "Writes applied to the live delta, by channel; those Apply rejected included.")
		applyErrors   = i64Counter("coordinator.apply.errors", "{write}", "Writes Apply rejected (their handles report an ApplyError), by channel.")
		deltaSize     = i64UpDown("coordinator.delta.size", "By", "Estimated size of the live delta after the last applied batch.")
		budgetUsage   = i64UpDown("coordinator.budget.usage", "By", "Bytes of the byte budget held by writes accepted and not yet written; reported only with Config.MaxBytes.")
		budgetLimit   = i64UpDown("coordinator.budget.limit", "By", "The byte budget, Config.MaxBytes; reported only when it is set.")
		flushPending  = i64UpDown("coordinator.flush.pending", "{delta}", "Frozen deltas queued for or being processed by the flusher; a running FlushStorage is not counted (see coordinator.sync.active).")
		syncActive    = i64UpDown("coordinator.sync.active", "{sync}", "FlushStorage calls running: 1 or 0.")
		flushes       = i64Counter("coordinator.flushes", "{delta}", "Deltas frozen and handed to the flusher, by reason.")
		syncs         = i64Counter("coordinator.syncs", "{sync}", "Completed FlushStorage calls.")
		retries       = i64Counter("coordinator.flush.retries", "{call}", "Flusher calls that failed and were retried.")
		slowCalls     = i64Counter("coordinator.flush.slow_calls", "{call}", "Flusher calls still running after the slow flush threshold.")
		watermark     = i64Gauge("coordinator.watermark", "{epoch}", "The last epoch that reached each durability level.")
		failed        = i64Gauge("coordinator.failed", "1", "1 once the coordinator has failed, else 0.")
	)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	// Attribute sets are built once. A coordinator's channels are fixed
	// at New; a channel that was not there at registration gets its sets
	// built at each collection. Nothing here is written after this point,
	// so callbacks may run concurrently (one per reader).
	var (
		none      = o.attrs()
		levels    = [3]metric.MeasurementOption{o.attrs(KeyLevel.String("applied")), o.attrs(KeyLevel.String("written")), o.attrs(KeyLevel.String("durable"))}
		reasons   = o.reasonAttrs()
		byChannel = map[string]*channelAttrs{}
	)
	for _, q := range src.Stats().Channels {
		byChannel[q.Name] = newChannelAttrs(o, q.Name)
	}
	callback := func(_ context.Context, obs metric.Observer) error {
		s := src.Stats()
		for _, q := range s.Channels {
			a := byChannel[q.Name]
			if a == nil {
				a = newChannelAttrs(o, q.Name)
			}
			obs.ObserveInt64(queueDepth, int64(q.Depth), a.channel)
			obs.ObserveInt64(queuePaused, boolValue(q.Paused), a.channel)
			obs.ObserveInt64(queueAccepted, int64(q.Accepted), a.channel)
			obs.ObserveInt64(queueRejected, int64(q.RejectedFull), a.full)
			obs.ObserveInt64(queueRejected, int64(q.RejectedBudget), a.budget)
			obs.ObserveInt64(queueRejected, int64(q.RejectedCanceled), a.canceled)
			obs.ObserveInt64(queueRejected, int64(q.RejectedClosed), a.closed)
			obs.ObserveInt64(applyWrites, int64(q.Applied), a.channel)
			obs.ObserveInt64(applyErrors, int64(q.ApplyErrors), a.channel)
		}
		obs.ObserveInt64(deltaSize, int64(s.DeltaBytes), none)
		if s.BudgetMax > 0 { // a coordinator without MaxBytes has no budget
			obs.ObserveInt64(budgetUsage, s.BudgetBytes, none)
			obs.ObserveInt64(budgetLimit, s.BudgetMax, none)
		}
		obs.ObserveInt64(flushPending, int64(s.PendingFlushes), none)
		obs.ObserveInt64(syncActive, boolValue(s.Syncing), none)
		for r, n := range s.Flushes.All() {
			obs.ObserveInt64(flushes, int64(n), reasons[r])
		}
		obs.ObserveInt64(syncs, int64(s.Syncs), none)
		obs.ObserveInt64(retries, int64(s.Retries), none)
		obs.ObserveInt64(slowCalls, int64(s.SlowFlushes), none)
		obs.ObserveInt64(watermark, int64(s.Watermarks.Applied), levels[0])
		obs.ObserveInt64(watermark, int64(s.Watermarks.Written), levels[1])
		obs.ObserveInt64(watermark, int64(s.Watermarks.Durable), levels[2])
		obs.ObserveInt64(failed, boolValue(s.Err != nil), none)
		return nil
	}
	return m.RegisterCallback(callback,
		queueDepth, queuePaused, queueAccepted, queueRejected, applyWrites, applyErrors,
		deltaSize, budgetUsage, budgetLimit, flushPending, syncActive,
		flushes, syncs, retries, slowCalls, watermark, failed)
}

// channelAttrs holds the attribute sets of one channel's measurements.
type channelAttrs struct {
	channel, full, budget, canceled, closed metric.MeasurementOption
}

func newChannelAttrs(o Options, name string) *channelAttrs {
	ch := KeyChannel.String(name)
	return &channelAttrs{
		channel:  o.attrs(ch),
		full:     o.attrs(ch, KeyReason.String(RejectedFull)),
		budget:   o.attrs(ch, KeyReason.String(RejectedBudget)),
		canceled: o.attrs(ch, KeyReason.String(RejectedCanceled)),
		closed:   o.attrs(ch, KeyReason.String(RejectedClosed)),
	}
}

func boolValue(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
