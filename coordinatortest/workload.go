package coordinatortest

// This file holds workloads: the operations Run performs, how they are
// drawn from a seed, and how they print in a failure report.

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/groupcommit/coordinator"
)

type opKind uint8

const (
	opWrite      opKind = iota // Write one write on a channel
	opBatch                    // WriteBatch on a channel
	opPause                    // Channel.Pause
	opResume                   // Channel.Resume, then wait for its writes to apply
	opFlush                    // Coordinator.Flush at a level
	opWait                     // WaitFor the last applied epoch at a level
	opFreezeOver               // hold the flusher, freeze, write to the next delta, check, release
	opFault                    // the next flusher call fails once (retried)
	opFatal                    // FlushDelta fails on every attempt: the coordinator fails; reopen
	opRestart                  // Stop, Close, reopen
	opCrash                    // Abort, Stop, Crash (or Close), reopen
)

// faultKind says where an injected flusher failure strikes.
type faultKind uint8

const (
	faultBeforeDelta   faultKind = iota // FlushDelta fails before the Flusher is called
	faultAfterDelta                     // the Flusher's FlushDelta returned; its result is discarded
	faultBeforeStorage                  // FlushStorage fails before the Flusher is called
	faultAfterStorage                   // the Flusher's FlushStorage returned; its result is discarded
)

func (f faultKind) String() string {
	return [...]string{
		"FlushDelta fails before the Flusher is called",
		"FlushDelta fails after the Flusher's FlushDelta returned",
		"FlushStorage fails before the Flusher is called",
		"FlushStorage fails after the Flusher's FlushStorage returned",
	}[f]
}

// eraConfig is the configuration of one coordinator, from an open to the
// next stop.
type eraConfig struct {
	channels   int
	flushSize  int
	pending    int
	syncAlways bool
}

func (e eraConfig) String() string {
	sync := "SyncOnDemand"
	if e.syncAlways {
		sync = "SyncAlways"
	}
	return fmt.Sprintf("%d channels, FlushSize %d, MaxPendingFlushes %d, %s", e.channels, e.flushSize, e.pending, sync)
}

func (e eraConfig) config() coordinator.Config {
	names := make([]string, e.channels)
	for i := range names {
		names[i] = channelName(i)
	}
	cfg := coordinator.Config{
		Channels:          names,
		QueueCapacity:     queueCapacity,
		FlushInterval:     time.Hour, // freezes come from the workload, not the clock
		FlushSize:         e.flushSize,
		MaxPendingFlushes: e.pending,
		Retry:             coordinator.RetryPolicy{Attempts: retryAttempts, Backoff: time.Microsecond, MaxBackoff: time.Microsecond},
	}
	if e.syncAlways {
		cfg.Sync = coordinator.SyncAlways
	}
	return cfg
}

const (
	queueCapacity = 64
	// pausedLimit keeps writes to a paused channel well below its
	// capacity, so that the kit's Write never blocks on a full queue.
	pausedLimit   = queueCapacity / 2
	retryAttempts = 3
)

func channelName(i int) string { return fmt.Sprintf("c%d", i) }

// op is one operation of a workload.
type op[W any] struct {
	kind  opKind
	ch    int                    // opWrite, opBatch, opPause, opResume, opFreezeOver
	ws    []W                    // opWrite (one), opBatch, opFreezeOver
	level coordinator.Durability // opFlush, opWait
	fault faultKind              // opFault
	era   eraConfig              // opFatal, opRestart, opCrash: the configuration to reopen with
}

func (o op[W]) String() string {
	switch o.kind {
	case opWrite:
		return fmt.Sprintf("Write on %s: %+v", channelName(o.ch), o.ws[0])
	case opBatch:
		return fmt.Sprintf("WriteBatch on %s: %s", channelName(o.ch), writesString(o.ws))
	case opPause:
		return fmt.Sprintf("Pause %s", channelName(o.ch))
	case opResume:
		return fmt.Sprintf("Resume %s", channelName(o.ch))
	case opFlush:
		return fmt.Sprintf("Flush(%v)", o.level)
	case opWait:
		return fmt.Sprintf("WaitFor(%v) on the last applied epoch", o.level)
	case opFreezeOver:
		return fmt.Sprintf("hold the flusher, Flush(Applied), write %s on %s, release", writesString(o.ws), channelName(o.ch))
	case opFault:
		return fmt.Sprintf("inject once: %v", o.fault)
	case opFatal:
		return fmt.Sprintf("inject on every attempt: FlushDelta fails after the Flusher's FlushDelta returned; Flush(Written); reopen with %v", o.era)
	case opRestart:
		return fmt.Sprintf("Stop, Close, reopen with %v", o.era)
	case opCrash:
		return fmt.Sprintf("Abort, Stop, crash, reopen with %v", o.era)
	}
	return fmt.Sprintf("op(%d)", o.kind)
}

func writesString[W any](ws []W) string {
	parts := make([]string, len(ws))
	for i, w := range ws {
		parts[i] = fmt.Sprintf("%+v", w)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// workload is what a seed expands to.
type workload[W any] struct {
	first eraConfig
	ops   []op[W]
}

func (w workload[W]) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "     open with %v\n", w.first)
	for i, o := range w.ops {
		fmt.Fprintf(&b, "  %3d: %v\n", i, o)
	}
	return b.String()
}

func randomEra(r *rand.Rand) eraConfig {
	return eraConfig{
		channels:   1 + r.IntN(3),
		flushSize:  []int{1, 64, 512, 4096, 1 << 30}[r.IntN(5)],
		pending:    1 + r.IntN(3),
		syncAlways: r.IntN(4) == 0,
	}
}

// generate draws a workload of steps operations from seed.
func generate[W any](seed uint64, steps int, faults bool, write func(*rand.Rand) W) workload[W] {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	wl := workload[W]{first: randomEra(r)}
	writes := func(n int) []W {
		ws := make([]W, n)
		for i := range ws {
			ws[i] = write(r)
		}
		return ws
	}
	type weighted struct {
		kind   opKind
		weight int
	}
	table := []weighted{
		{opWrite, 30}, {opBatch, 10}, {opPause, 4}, {opResume, 5}, {opFlush, 8},
		{opWait, 8}, {opFreezeOver, 5}, {opRestart, 3}, {opCrash, 3},
	}
	if faults {
		table = append(table, weighted{opFault, 8}, weighted{opFatal, 1})
	}
	total := 0
	for _, e := range table {
		total += e.weight
	}
	levels := []coordinator.Durability{coordinator.Applied, coordinator.Written, coordinator.Durable}
	for range steps {
		n := r.IntN(total)
		var kind opKind
		for _, e := range table {
			if n < e.weight {
				kind = e.kind
				break
			}
			n -= e.weight
		}
		o := op[W]{kind: kind, ch: r.IntN(3)}
		switch kind {
		case opWrite:
			o.ws = writes(1)
		case opBatch:
			o.ws = writes(1 + r.IntN(6))
		case opFreezeOver:
			o.ws = writes(1 + r.IntN(4))
		case opFlush:
			o.level = levels[r.IntN(3)]
		case opWait:
			o.level = levels[1+r.IntN(2)]
		case opFault:
			o.fault = faultKind(r.IntN(4))
		case opFatal, opRestart, opCrash:
			o.era = randomEra(r)
		}
		wl.ops = append(wl.ops, o)
	}
	return wl
}
