// Package otel reports a [coordinator.Coordinator]'s metrics through the
// OpenTelemetry metrics API (go.opentelemetry.io/otel/metric). It lives in
// a module of its own so that the coordinator itself does not depend on
// OpenTelemetry. It uses only the API: the application chooses the SDK,
// readers and exporters.
//
// Two pieces cover everything the coordinator reports:
//
//   - [RegisterStats] creates observable instruments and one callback that
//     reads [coordinator.Stats] at every collection: queue depths, enqueue
//     outcomes, writes applied and rejected by Apply, the live delta's
//     size, the byte budget, pending flushes, whether a sync is running,
//     flush counts by reason, syncs, retries, slow flushes, watermarks and
//     the failure flag. Nothing runs between collections. Every counter
//     comes from here.
//   - An [Observer] is a [coordinator.Observer] that records histograms as
//     events happen: apply batches by channel, freezes and frozen delta
//     sizes by reason, waits to dispatch frozen deltas to the flusher,
//     FlushDelta and FlushStorage calls by op.
//
// Timings are reported only as the Observer's histograms; RegisterStats
// does not report the [coordinator.Timing] fields of Stats, whose counts
// and totals a histogram carries. The dispatch wait is the histogram
// coordinator.flush.dispatch.duration, which replaces the Stats-based
// coordinator.flush.dispatch.time counter and
// coordinator.flush.dispatch.max_duration gauge.
//
// The Observer must be in the [coordinator.Config] before
// [coordinator.New]; the callback needs the coordinator, so it comes after:
//
//	obs, err := coordotel.NewObserver(coordotel.Options{})
//	cfg := coordinator.Config{Observer: obs}
//	c, err := coordinator.New(cfg, newDelta, initial, snapshot, flusher)
//	reg, err := coordotel.RegisterStats(c, coordotel.Options{})
//	defer reg.Unregister()
//
// [Options.MeterProvider] defaults to the global one
// (go.opentelemetry.io/otel.GetMeterProvider). Because its name clashes
// with go.opentelemetry.io/otel, import this package under another name,
// such as coordotel. Several coordinators can report to one provider if
// each gets its own [Options.Attributes] (for example
// attribute.String("coordinator", "wal")).
//
// Instruments, named in the style of the OpenTelemetry semantic
// conventions:
//
//	coordinator.queue.depth{channel}            updowncounter  {write}  accepted, not yet applied
//	coordinator.queue.paused{channel}           gauge          1        1 if the channel is paused
//	coordinator.queue.accepted{channel}         counter        {slot}   queue slots accepted (a batch is one)
//	coordinator.queue.rejected{channel,reason}  counter        {write}  refused: full, budget, canceled, closed
//	coordinator.apply.writes{channel}           counter        {write}  applied, those Apply rejected included
//	coordinator.apply.errors{channel}           counter        {write}  rejected by Apply
//	coordinator.delta.size                      updowncounter  By       the live delta's estimated size
//	coordinator.budget.usage                    updowncounter  By       byte budget held (only with MaxBytes)
//	coordinator.budget.limit                    updowncounter  By       Config.MaxBytes (only with MaxBytes)
//	coordinator.flush.pending                   updowncounter  {delta}  frozen deltas queued for or in the flusher (not a sync)
//	coordinator.sync.active                     updowncounter  {sync}   1 while FlushStorage runs
//	coordinator.flushes{reason}                 counter        {delta}  size, interval, explicit, wait, shutdown, budget
//	coordinator.syncs                           counter        {sync}   completed FlushStorage calls
//	coordinator.flush.retries                   counter        {call}   failed flusher calls that were retried
//	coordinator.flush.slow_calls                counter        {call}   flusher calls slower than SlowFlushThreshold
//	coordinator.watermark{level}                gauge          {epoch}  applied, written, durable
//	coordinator.failed                          gauge          1        1 once the coordinator has failed
//	coordinator.apply.duration{channel}         histogram      s        (Observer) one batch applied in one turn
//	coordinator.freeze.duration{reason}         histogram      s        (Observer) Delta.Freeze and the next delta
//	coordinator.flush.size{reason}              histogram      By       (Observer) frozen delta size
//	coordinator.flush.dispatch.duration         histogram      s        (Observer) wait for room in the flush queue, one per frozen delta
//	coordinator.flush.duration{op}              histogram      s        (Observer) op: flush_delta, flush_storage
package otel
