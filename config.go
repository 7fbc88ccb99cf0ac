// This file holds the configuration: Config, its defaults and its
// validation. It runs on the caller's goroutine, in New, and owns no
// state: the validated Config is read-only from then on.

package coordinator

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// SyncPolicy says when the coordinator calls [Flusher.FlushStorage] on its
// own. Independently of the policy, FlushStorage runs whenever a goroutine
// waits for [Durable] (or calls [Coordinator.Flush] with Durable) and once
// more at [Coordinator.Stop].
type SyncPolicy uint8

const (
	// SyncOnDemand syncs only when someone waits for Durable. Concurrent
	// requests coalesce: a request made while a sync is running is served
	// by the next one.
	SyncOnDemand SyncPolicy = iota
	// SyncAlways syncs after every batch of written deltas: the flusher
	// writes the deltas already queued (at most MaxPendingFlushes+1), then
	// syncs before it writes more.
	SyncAlways
)

// RetryPolicy bounds how the coordinator retries a failing flusher call
// before it gives up and fails. Panics are never retried.
type RetryPolicy struct {
	// Attempts is the total number of tries per call; 0 or 1 means no retry.
	Attempts int
	// Backoff is the wait before the first retry; it doubles each time up
	// to MaxBackoff. Defaults: 10ms and 1s.
	Backoff, MaxBackoff time.Duration
	// Retryable reports whether an error is worth retrying; nil means all.
	Retryable func(error) bool
}

// Config configures a [Coordinator]. The zero value is valid: zero fields
// take the documented defaults. [New] validates it.
type Config struct {
	// Channels names the input channels. Default: one channel, "default".
	Channels []string
	// QueueCapacity bounds each channel's queue, in slots (a write or a
	// batch), from acceptance until the slot is applied. Default 20,000.
	QueueCapacity int
	// FlushInterval freezes the live delta when this long passed since
	// the last freeze (or Start). Default 10s.
	FlushInterval time.Duration
	// FlushSize freezes the live delta once its EstimateSize reaches it.
	// Default 64 MiB.
	FlushSize int
	// FirstEpoch is the epoch of the first write. A store that reopens
	// persisted data sets it to one past the last epoch it recovered, so
	// epochs keep growing across restarts and can serve as durable
	// sequence numbers; the watermarks start at FirstEpoch-1. Default 1.
	FirstEpoch uint64
	// MaxPendingFlushes is how many frozen deltas may wait for the flusher
	// beside the one it is writing; when they are all taken, the
	// coordinator stops applying writes until one is written, and queues
	// fill up (backpressure). Default 2.
	MaxPendingFlushes int
	// MaxBytes, if positive, is a byte budget for writes that are queued,
	// in the live delta, or in frozen deltas not yet written; the write
	// type must implement [Sizer]. When it is exhausted, TryWrite fails
	// with ErrBackpressure, Write waits (in FIFO order), and the coordinator
	// freezes the live delta so the flusher can release its bytes. A single
	// write larger than the budget is admitted when nothing else is held.
	// Negative sizes are refused with ErrInvalidSize.
	// Default 0: no byte budget (memory is bounded by counts; see the
	// README's memory section).
	MaxBytes int64
	// Sync is the sync policy. Default SyncOnDemand.
	Sync SyncPolicy
	// DisableFlushOnWait stops waits for Written and Durable from
	// triggering a flush: deltas are then frozen only by size, interval,
	// Flush and Stop. Durable waits still trigger syncs.
	DisableFlushOnWait bool
	// Retry is the retry policy for flusher errors. Default: no retry.
	Retry RetryPolicy
	// SubscriberBuffer is how many views a [Subscriber] buffers before it
	// lags. Default 16.
	SubscriberBuffer int
	// SlowFlushThreshold reports (log, Stats, Observer) a flusher call still
	// running after this long. Default 30s; negative disables it.
	SlowFlushThreshold time.Duration
	// Observer, if set, receives events for metrics.
	Observer Observer
	// Logger, if set, receives flush failures, retries, slow flushes and
	// shutdown. Nil means silent.
	Logger *slog.Logger
}

const (
	defaultChannel     = "default"
	defaultQueueCap    = 20_000
	defaultInterval    = 10 * time.Second
	defaultFlushSize   = 64 << 20
	defaultPending     = 2
	defaultSubBuffer   = 16
	defaultSlowFlush   = 30 * time.Second
	defaultBackoff     = 10 * time.Millisecond
	defaultMaxBackoff  = time.Second
	maxWritesPerTurn   = 4096 // queue slots applied per channel per turn
	maxConfiguredQueue = 1 << 30
	stopAttention      = 1 << 24 // added to pipeline.attn by Stop
)

func (cfg Config) withDefaults() (Config, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(cfg.Channels) == 0 {
		cfg.Channels = []string{defaultChannel}
	}
	seen := make(map[string]bool, len(cfg.Channels))
	for _, name := range cfg.Channels {
		if name == "" {
			bad("empty channel name")
		} else if seen[name] {
			bad("duplicate channel name %q", name)
		}
		seen[name] = true
	}
	cfg.Channels = append([]string(nil), cfg.Channels...)
	switch {
	case cfg.QueueCapacity < 0 || cfg.QueueCapacity > maxConfiguredQueue:
		bad("QueueCapacity %d out of range [0, %d]", cfg.QueueCapacity, maxConfiguredQueue)
	case cfg.QueueCapacity == 0:
		cfg.QueueCapacity = defaultQueueCap
	}
	switch {
	case cfg.FlushInterval < 0:
		bad("FlushInterval %v is negative", cfg.FlushInterval)
	case cfg.FlushInterval == 0:
		cfg.FlushInterval = defaultInterval
	}
	switch {
	case cfg.FlushSize < 0:
		bad("FlushSize %d is negative", cfg.FlushSize)
	case cfg.FlushSize == 0:
		cfg.FlushSize = defaultFlushSize
	}
	switch {
	case cfg.MaxPendingFlushes < 0:
		bad("MaxPendingFlushes %d is negative", cfg.MaxPendingFlushes)
	case cfg.MaxPendingFlushes == 0:
		cfg.MaxPendingFlushes = defaultPending
	}
	if cfg.FirstEpoch == 0 {
		cfg.FirstEpoch = 1
	}
	if cfg.FirstEpoch > 1<<62 {
		bad("FirstEpoch %d is too large", cfg.FirstEpoch)
	}
	if cfg.MaxBytes < 0 {
		bad("MaxBytes %d is negative", cfg.MaxBytes)
	}
	if cfg.Sync > SyncAlways {
		bad("unknown SyncPolicy %d", cfg.Sync)
	}
	switch {
	case cfg.SubscriberBuffer < 0:
		bad("SubscriberBuffer %d is negative", cfg.SubscriberBuffer)
	case cfg.SubscriberBuffer == 0:
		cfg.SubscriberBuffer = defaultSubBuffer
	}
	if cfg.SlowFlushThreshold == 0 {
		cfg.SlowFlushThreshold = defaultSlowFlush
	}
	r := &cfg.Retry
	if r.Attempts < 0 || r.Backoff < 0 || r.MaxBackoff < 0 {
		bad("Retry has a negative field: %+v", *r)
	}
	if r.Attempts == 0 {
		r.Attempts = 1
	}
	if r.Backoff == 0 {
		r.Backoff = defaultBackoff
	}
	if r.MaxBackoff == 0 {
		r.MaxBackoff = max(defaultMaxBackoff, r.Backoff)
	}
	if r.MaxBackoff < r.Backoff {
		bad("Retry.MaxBackoff %v is below Retry.Backoff %v", r.MaxBackoff, r.Backoff)
	}
	if cfg.Observer == nil {
		cfg.Observer = NopObserver{}
	}
	if len(errs) > 0 {
		return cfg, fmt.Errorf("coordinator: invalid config: %w", errors.Join(errs...))
	}
	return cfg, nil
}
