package prometheus

import (
	"github.com/groupcommit/coordinator"
	"github.com/prometheus/client_golang/prometheus"
)

// Source is what a [Collector] reads: any instantiation of
// [coordinator.Coordinator] satisfies it, whatever its type parameters.
type Source interface {
	Stats() coordinator.Stats
}

// Options configures a [Collector] or an [Observer]. The zero value is
// valid: zero fields take the documented defaults. Give the Collector and
// the Observer of one coordinator the same Namespace and ConstLabels.
type Options struct {
	// Namespace prefixes every metric name. Default "coordinator".
	Namespace string
	// ConstLabels are added to every metric; use them to tell several
	// coordinators in one registry apart.
	ConstLabels prometheus.Labels
	// DurationBuckets are the Observer's duration histogram buckets, in
	// seconds. Default: 12 buckets from 10µs growing by 4x (to about 42s).
	DurationBuckets []float64
	// SizeBuckets are the Observer's flush size histogram buckets, in
	// bytes. Default: 12 buckets from 1 KiB growing by 4x (to 4 GiB).
	SizeBuckets []float64
}

func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = "coordinator"
	}
	if o.DurationBuckets == nil {
		o.DurationBuckets = prometheus.ExponentialBuckets(10e-6, 4, 12)
	}
	if o.SizeBuckets == nil {
		o.SizeBuckets = prometheus.ExponentialBuckets(1024, 4, 12)
	}
	return o
}

func (o Options) desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(o.Namespace, "", name), help, labels, o.ConstLabels)
}

// Label values of coordinator_queue_rejected_total{reason}.
const (
	RejectedFull     = "full"     // TryWrite found the queue full
	RejectedBudget   = "budget"   // TryWrite found the byte budget (Config.MaxBytes) exhausted
	RejectedCanceled = "canceled" // Write's context ended while it waited for room
	RejectedClosed   = "closed"   // the coordinator was stopping or failed
)

// Collector is a [prometheus.Collector] that reads a coordinator's
// [coordinator.Stats] at every scrape; it holds no state of its own and
// starts no goroutine. Create it with [NewCollector]. It is safe for
// concurrent use and must not be copied.
type Collector struct {
	src Source

	queueDepth, queuePaused, queueAccepted, queueRejected *prometheus.Desc
	writesApplied, applyErrors                            *prometheus.Desc
	deltaBytes, budgetBytes, budgetMax                    *prometheus.Desc
	flushPending, syncing                                 *prometheus.Desc
	flushes, syncs, retries, slowFlushes                  *prometheus.Desc
	watermark, failed                                     *prometheus.Desc
}

// NewCollector returns a Collector that reads src, usually a
// *coordinator.Coordinator. Register it with a [prometheus.Registerer].
func NewCollector(src Source, opts Options) *Collector {
	if src == nil {
		panic("coordinator/contrib/prometheus: NewCollector needs a source")
	}
	o := opts.withDefaults()
	return &Collector{
		src:           src,
		queueDepth:    o.desc("queue_depth", "Writes accepted by the channel and not yet applied.", "channel"),
		queuePaused:   o.desc("queue_paused", "1 if the channel is paused, else 0.", "channel"),
		queueAccepted: o.desc("queue_accepted_total", "Queue slots accepted by the channel; a batch takes one slot.", "channel"),
		queueRejected: o.desc("queue_rejected_total", "Writes the channel refused, by reason: full or budget (TryWrite), canceled (Write's context ended while waiting for room), closed (stopping or failed).", "channel", "reason"),
		writesApplied: o.desc("writes_applied_total", "Writes applied to the live delta, by channel; those Apply rejected included.", "channel"),
		applyErrors:   o.desc("apply_errors_total", "Writes Apply rejected (their handles report an ApplyError), by channel.", "channel"),
		deltaBytes:    o.desc("delta_bytes", "Estimated size of the live delta after the last applied batch."),
		budgetBytes:   o.desc("budget_bytes", "Bytes of the byte budget held by writes accepted and not yet written; exported only with Config.MaxBytes."),
		budgetMax:     o.desc("budget_max_bytes", "The byte budget, Config.MaxBytes; exported only when it is set."),
		flushPending:  o.desc("flush_pending", "Frozen deltas queued for or being processed by the flusher; a running FlushStorage is not counted (see syncing)."),
		syncing:       o.desc("syncing", "1 while FlushStorage is running, else 0."),
		flushes:       o.desc("flushes_total", "Deltas frozen and handed to the flusher, by reason.", "reason"),
		syncs:         o.desc("syncs_total", "Completed FlushStorage calls."),
		retries:       o.desc("flush_retries_total", "Flusher calls that failed and were retried."),
		slowFlushes:   o.desc("slow_flushes_total", "Flusher calls still running after the slow flush threshold."),
		watermark:     o.desc("watermark_epoch", "The last epoch that reached each durability level.", "level"),
		failed:        o.desc("failed", "1 once the coordinator has failed, else 0."),
	}
}

// Describe implements [prometheus.Collector].
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.queueDepth, c.queuePaused, c.queueAccepted, c.queueRejected,
		c.writesApplied, c.applyErrors,
		c.deltaBytes, c.budgetBytes, c.budgetMax, c.flushPending, c.syncing,
		c.flushes, c.syncs, c.retries, c.slowFlushes,
		c.watermark, c.failed,
	} {
		ch <- d
	}
}

// Collect implements [prometheus.Collector]. It takes one Stats snapshot
// per scrape.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, q := range s.Channels {
		gauge(c.queueDepth, float64(q.Depth), q.Name)
		gauge(c.queuePaused, boolValue(q.Paused), q.Name)
		counter(c.queueAccepted, q.Accepted, q.Name)
		counter(c.queueRejected, q.RejectedFull, q.Name, RejectedFull)
		counter(c.queueRejected, q.RejectedBudget, q.Name, RejectedBudget)
		counter(c.queueRejected, q.RejectedCanceled, q.Name, RejectedCanceled)
		counter(c.queueRejected, q.RejectedClosed, q.Name, RejectedClosed)
		counter(c.writesApplied, q.Applied, q.Name)
		counter(c.applyErrors, q.ApplyErrors, q.Name)
	}
	gauge(c.deltaBytes, float64(s.DeltaBytes))
	if s.BudgetMax > 0 { // a coordinator without MaxBytes has no budget
		gauge(c.budgetBytes, float64(s.BudgetBytes))
		gauge(c.budgetMax, float64(s.BudgetMax))
	}
	gauge(c.flushPending, float64(s.PendingFlushes))
	gauge(c.syncing, boolValue(s.Syncing))
	for r, n := range s.Flushes.All() {
		counter(c.flushes, n, r.String())
	}
	counter(c.syncs, s.Syncs)
	counter(c.retries, s.Retries)
	counter(c.slowFlushes, s.SlowFlushes)
	gauge(c.watermark, float64(s.Watermarks.Applied), "applied")
	gauge(c.watermark, float64(s.Watermarks.Written), "written")
	gauge(c.watermark, float64(s.Watermarks.Durable), "durable")
	gauge(c.failed, boolValue(s.Err != nil))
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
