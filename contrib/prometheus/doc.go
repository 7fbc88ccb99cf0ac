// Package prometheus exports a [coordinator.Coordinator]'s metrics to
// Prometheus through github.com/prometheus/client_golang. It lives in a
// module of its own so that the coordinator itself does not depend on a
// metrics system.
//
// Two pieces cover everything the coordinator reports:
//
//   - A [Collector] reads [coordinator.Stats] at scrape time: queue depths,
//     enqueue outcomes, writes applied and rejected by Apply, the live
//     delta's size, the byte budget, pending flushes, whether a sync is
//     running, flush counts by reason, syncs, retries, slow flushes,
//     watermarks and the failure flag. It starts no goroutine and costs
//     nothing between scrapes. Every counter comes from here.
//   - An [Observer] is a [coordinator.Observer] that records durations and
//     sizes in histograms as events happen: apply batches by channel,
//     freezes and frozen delta sizes by reason, waits to dispatch frozen
//     deltas to the flusher, FlushDelta and FlushStorage calls by op. It
//     is also a [prometheus.Collector] for those histograms.
//
// Timings are exported only as the Observer's histograms; the Collector
// does not export the [coordinator.Timing] fields of Stats, whose counts
// and totals a histogram's _count and _sum carry. The dispatch wait is the
// histogram coordinator_flush_dispatch_wait_seconds, which replaces the
// Stats-based coordinator_flush_dispatch_seconds summary and
// coordinator_flush_dispatch_max_seconds gauge.
//
// The Observer must be in the [coordinator.Config] before
// [coordinator.New]; the Collector needs the coordinator, so it comes
// after:
//
//	obs := coordprom.NewObserver(coordprom.Options{})
//	cfg := coordinator.Config{Observer: obs}
//	c, err := coordinator.New(cfg, newDelta, initial, snapshot, flusher)
//	...
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(obs, coordprom.NewCollector(c, coordprom.Options{}))
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// Because its name clashes with client_golang's, import this package under
// another name, such as coordprom. Several coordinators can share a
// registry if each gets its own [Options.ConstLabels] (for example
// {"coordinator": "wal"}).
//
// Exported metrics, with the default namespace:
//
//	coordinator_queue_depth{channel}                  gauge      writes accepted, not yet applied
//	coordinator_queue_paused{channel}                 gauge      1 if the channel is paused
//	coordinator_queue_accepted_total{channel}         counter    queue slots accepted (a batch is one)
//	coordinator_queue_rejected_total{channel,reason}  counter    writes refused: full, budget, canceled, closed
//	coordinator_writes_applied_total{channel}         counter    writes applied, those Apply rejected included
//	coordinator_apply_errors_total{channel}           counter    writes Apply rejected
//	coordinator_delta_bytes                           gauge      the live delta's estimated size
//	coordinator_budget_bytes                          gauge      byte budget held (only with MaxBytes)
//	coordinator_budget_max_bytes                      gauge      Config.MaxBytes (only with MaxBytes)
//	coordinator_flush_pending                         gauge      frozen deltas queued for or in the flusher (not a sync)
//	coordinator_syncing                               gauge      1 while FlushStorage runs
//	coordinator_flushes_total{reason}                 counter    frozen deltas: size, interval, explicit, wait, shutdown, budget
//	coordinator_syncs_total                           counter    completed FlushStorage calls
//	coordinator_flush_retries_total                   counter    failed flusher calls that were retried
//	coordinator_slow_flushes_total                    counter    flusher calls slower than SlowFlushThreshold
//	coordinator_watermark_epoch{level}                gauge      applied, written, durable
//	coordinator_failed                                gauge      1 once the coordinator has failed
//	coordinator_apply_duration_seconds{channel}       histogram  (Observer) one batch applied in one turn
//	coordinator_freeze_duration_seconds{reason}       histogram  (Observer) Delta.Freeze and the next delta
//	coordinator_flush_size_bytes{reason}              histogram  (Observer) frozen delta size
//	coordinator_flush_dispatch_wait_seconds           histogram  (Observer) wait for room in the flush queue, one per frozen delta
//	coordinator_flush_duration_seconds{op}            histogram  (Observer) op: flush_delta, flush_storage
package prometheus
