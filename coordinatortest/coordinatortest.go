// Package coordinatortest checks a [coordinator.Delta] and a
// [coordinator.Flusher] against their contracts, by running them through the
// real coordinator, the way [testing/fstest.TestFS] checks a file system and
// golang.org/x/net/nettest.TestConn a connection.
//
// A coordinator can only be as correct as the two pieces of code it cannot
// see into. The mistakes this package looks for are the ones that pass a
// hand-written test and lose data in production: a FlushDelta that is not
// safe to retry (it appends, and Config.Retry retries after a write that
// reached storage), a Freeze whose frozen view still shares state with the
// next delta, a Reader that races Apply, a context that is not carried to
// the next delta, a snapshot that loses what an earlier flush wrote, an
// EstimateSize that goes negative or never grows, storage that is not
// durable after FlushStorage, and epochs that do not continue across a
// reopen.
//
// Describe your store with a [Harness]: how to open it in a directory (the
// pieces [coordinator.New] takes, as a [Store]), how to make a random write,
// how to read a [coordinator.View] into a plain Go value, and a reference
// model that applies a write to such a value. Then call [Run] from a test:
//
//	func TestStoreContracts(t *testing.T) {
//		coordinatortest.Run(t, coordinatortest.Harness[Op, struct{}, Ctx, *Frozen, *Table, *Table, *Index, map[string]string]{
//			Open:  openPieces,     // func(dir string) (*coordinatortest.Store[...], error)
//			Write: randomOp,       // func(*rand.Rand) Op
//			Init:  func() map[string]string { return map[string]string{} },
//			Apply: applyOp,        // func(map[string]string, Op) map[string]string
//			Read:  readView,       // func(*View) (map[string]string, error)
//		})
//	}
//
// Run generates random workloads from a seed: writes and batches on several
// channels, pauses and resumes, flushes at every [coordinator.Durability]
// level, waits, freezes with the flusher held back, injected flusher
// failures (before or after your FlushDelta or FlushStorage returned, and
// retried through [coordinator.RetryPolicy]), clean stops, crashes and
// reopens, with a goroutine reading views throughout. After every
// operation it checks that
//
//   - the view reads as the model over every applied write, layer by layer:
//     the snapshot alone holds exactly the written epochs, the frozen deltas
//     add theirs, the live delta the rest;
//   - a frozen delta reads the same for as long as it stays in the view,
//     however many writes the next delta takes;
//   - a reopened store holds the model over a prefix of the epochs that
//     includes every write acknowledged [coordinator.Durable] (all of them
//     after a clean stop), reports that prefix as [Store.LastEpoch], and
//     continues from it with [coordinator.Config.FirstEpoch];
//   - EstimateSize is never negative and a delta holding writes reports more
//     than an empty one;
//   - FlushDelta receives contiguous epoch ranges, each delta is created
//     from the context the previous Freeze returned, and a FlushDelta or
//     FlushStorage called again after a failure (even one that struck after
//     your call had returned) neither fails nor writes twice;
//   - a live delta that reads wrong only once a freeze has happened, over
//     older layers that read correctly, is reported as a context that
//     Freeze did not carry to the next delta.
//
// Run the tests with -race: the reading goroutine then turns a Reader that
// is not safe for concurrent use with Apply into a reported data race.
//
// # Failures
//
// A failure names the contract that was broken and the operation that broke
// it, prints the seed, and shows the shortest operation sequence the kit
// found that still fails (it shrinks the workload by removing operations).
// Replay it with the -coordinatortest.seed flag or the [Seed] option.
// [Check] returns the same report as a [*Failure], whose Contract field
// names the contract, for callers that have no [testing.TB]. Runs
// are reproducible in the operations they perform; the interleaving of the
// coordinator's goroutines is not, so a rare timing-dependent failure may
// need a few replays.
//
// Every blocking call the kit makes has a deadline ([Timeout]); one that
// does not return fails the test with a goroutine dump instead of hanging it.
package coordinatortest

import (
	"flag"
	"math/rand/v2"
	"time"

	"github.com/groupcommit/coordinator"
)

// TB is the part of [testing.TB] that [Run] uses; a *testing.T satisfies
// it. Run reports at most one failure, through Fatalf, as its last action.
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// Store is what [Harness.Open] returns: the arguments [coordinator.New]
// takes, for a store opened in a directory, plus what the kit needs to
// continue epochs and to release it. Build it with [NewStore], which infers
// the type parameters, then set the optional fields.
//
// A Store is used by one coordinator at a time and must not be copied
// after Run received it.
type Store[W, R, C, F, FV, DV, S any] struct {
	// NewDelta, Initial, Snapshot and Flusher are passed to
	// [coordinator.New] (the kit wraps NewDelta and Flusher to watch them).
	NewDelta func(C) coordinator.Delta[W, R, C, F, FV, DV]
	Initial  C
	Snapshot S
	Flusher  coordinator.Flusher[F, S]

	// LastEpoch is the last epoch the opened storage holds: 0 for an empty
	// directory. The kit starts the coordinator at LastEpoch+1
	// ([coordinator.Config.FirstEpoch]) and checks that the storage holds
	// exactly the writes of the epochs up to LastEpoch.
	LastEpoch uint64

	// Close, if set, releases the store after the coordinator stopped.
	Close func() error

	// Crash, if set, simulates a power loss after the coordinator was
	// aborted and stopped: it must drop whatever the Flusher wrote that
	// FlushStorage did not make durable, and release the store as Close
	// would. Without it, a crash keeps everything the Flusher wrote (as a
	// killed process does), and Close is called instead.
	Crash func() error
}

// NewStore returns a [Store] holding the arguments of [coordinator.New]
// and lastEpoch. Like New, it infers every type parameter from them.
func NewStore[D coordinator.Delta[W, R, C, F, FV, DV], W, R, C, F, FV, DV, S any](
	newDelta func(C) D, initial C, snapshot S, flusher coordinator.Flusher[F, S], lastEpoch uint64,
) *Store[W, R, C, F, FV, DV, S] {
	return &Store[W, R, C, F, FV, DV, S]{
		NewDelta:  func(c C) coordinator.Delta[W, R, C, F, FV, DV] { return newDelta(c) },
		Initial:   initial,
		Snapshot:  snapshot,
		Flusher:   flusher,
		LastEpoch: lastEpoch,
	}
}

// Harness describes a store to [Run]: how to open it and the reference
// model of its data. The type parameters are those of [coordinator.New]
// (W write, R apply result, C delta context, F frozen delta, FV frozen view,
// DV live view, S snapshot) and M, the model: a plain Go value holding what
// the store holds, such as a map from key to value.
//
// Open, Write and Read are required. Init and Apply make up the model;
// without them Run checks only the contracts that need no model (stable
// frozen views, EstimateSize, contiguous ranges, retry errors, durable
// epochs and the data race check).
//
// The functions are called from one goroutine at a time, except Read: the
// kit also calls it from a goroutine of its own while writes are applied,
// and from the coordinator's goroutines (to read a frozen view when Freeze
// returns it, and again when FlushDelta receives its delta), so it must be
// safe for concurrent use, as any reader of views is.
type Harness[W, R, C, F, FV, DV, S, M any] struct {
	// Open opens the store kept in dir, which is empty the first time and
	// holds what the previous store left there afterwards: the kit stops
	// (or crashes) a store and opens dir again to check what survived.
	Open func(dir string) (*Store[W, R, C, F, FV, DV, S], error)

	// Write returns a random write. Writes that Apply rejects are allowed:
	// they consume an epoch and change nothing, and the model skips them.
	// Draw keys from a small set so that writes overwrite each other.
	Write func(r *rand.Rand) W

	// Init returns an empty model value.
	Init func() M
	// Apply returns m with w applied. It may modify and return m. It is
	// only given writes that the Delta accepted.
	Apply func(m M, w W) M

	// Read reads everything a view holds, combining its layers as your
	// readers do (Current, then Frozen newest first, then Snapshot). The
	// kit also gives it views it builds from one layer or a few: an empty
	// delta's reader as Current, with or without the Frozen deltas, over a
	// real Snapshot. An error (say, the view's snapshot was released) makes
	// the kit take a newer view and try again.
	Read func(v *coordinator.View[FV, DV, S]) (M, error)

	// Equal reports whether two model values are equal. Default:
	// [reflect.DeepEqual].
	Equal func(a, b M) bool
}

// Option changes how [Run] runs.
type Option func(*options)

type options struct {
	seed       uint64
	seeded     bool
	iterations int
	iterSet    bool
	steps      int
	timeout    time.Duration
	faults     bool
	shrink     time.Duration
}

// Seed replays the workload of one seed, as printed by a failure, instead
// of drawing new seeds. With [Iterations] as well, Run executes the
// workloads of seed, seed+1, and so on. The -coordinatortest.seed flag
// overrides both: it replays the one workload of its seed.
func Seed(seed uint64) Option { return func(o *options) { o.seed, o.seeded = seed, true } }

// Iterations sets how many random workloads Run executes (default 8; with
// Seed alone, 1). Feed it from a flag, such as -long, for longer runs.
func Iterations(n int) Option { return func(o *options) { o.iterations, o.iterSet = max(n, 1), true } }

// Steps sets how many operations each workload has (default 40).
func Steps(n int) Option { return func(o *options) { o.steps = n } }

// Timeout bounds every blocking call the kit makes (default 20s). A call
// that does not return in time fails the run with a goroutine dump.
func Timeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// NoFaults turns off the injected flusher failures, for a Flusher that is
// not meant to be retried.
func NoFaults() Option { return func(o *options) { o.faults = false } }

// ShrinkTime bounds the time spent shrinking a failing workload (default
// 30s; 0 or less turns shrinking off).
func ShrinkTime(d time.Duration) Option { return func(o *options) { o.shrink = d } }

var seedFlag = flag.Uint64("coordinatortest.seed", 0, "replay the coordinatortest workload of this seed (0: draw new seeds)")

func buildOptions(opts []Option) options {
	o := options{iterations: 8, steps: 40, timeout: 20 * time.Second, faults: true, shrink: 30 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	if *seedFlag != 0 {
		// The flag replays one workload, whatever the test asks for.
		o.seed, o.seeded, o.iterations, o.iterSet = *seedFlag, true, 1, true
	}
	if o.seeded && !o.iterSet {
		o.iterations = 1
	}
	return o
}
