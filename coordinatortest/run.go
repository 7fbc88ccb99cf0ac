package coordinatortest

// This file holds Run, Check and the failure they report, and the
// shrinking of a failing workload.

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"time"
)

// Run checks the Delta and Flusher that h opens against their contracts
// (see the package documentation), with random workloads. It reports the
// first broken contract through t.Fatalf, with the seed and the shortest
// failing workload it found, and logs the seeds it ran otherwise.
//
// Run must be called from the test's goroutine. It starts and stops
// coordinators, and a goroutine reading views while each one runs; nothing
// it starts outlives it unless a call into the store hangs past [Timeout].
func Run[W, R, C, F, FV, DV, S, M any](t TB, h Harness[W, R, C, F, FV, DV, S, M], opts ...Option) {
	t.Helper()
	o := buildOptions(opts)
	base, err := check(h, o)
	if err != nil {
		t.Fatalf("%v", err)
		return
	}
	if o.iterations == 1 {
		t.Logf("coordinatortest: the workload of %d operations of seed %#x passed", o.steps, base)
		return
	}
	t.Logf("coordinatortest: %d workloads of %d operations passed (seeds %#x to %#x)", o.iterations, o.steps, base, base+uint64(o.iterations)-1)
}

// Check is [Run] for callers without a [TB]: it returns a [*Failure]
// describing the first broken contract, or nil. It keeps the stores it
// opens in a temporary directory that it removes before returning.
func Check[W, R, C, F, FV, DV, S, M any](h Harness[W, R, C, F, FV, DV, S, M], opts ...Option) error {
	_, err := check(h, buildOptions(opts))
	return err
}

// check runs the workloads of o and returns the first seed it used.
func check[W, R, C, F, FV, DV, S, M any](h Harness[W, R, C, F, FV, DV, S, M], o options) (uint64, error) {
	if h.Open == nil || h.Write == nil || h.Read == nil {
		return 0, errors.New("coordinatortest: Harness needs Open, Write and Read")
	}
	if (h.Init == nil) != (h.Apply == nil) {
		return 0, errors.New("coordinatortest: Harness needs both Init and Apply, or neither")
	}
	base := o.seed
	if !o.seeded {
		base = rand.Uint64()
	}
	tmp, err := os.MkdirTemp("", "coordinatortest-")
	if err != nil {
		return base, fmt.Errorf("coordinatortest: %w", err)
	}
	defer os.RemoveAll(tmp)
	exec := func(wl workload[W]) *failure { return execute(h, o, tmp, wl) }
	for i := range o.iterations {
		seed := base + uint64(i)
		wl := generate(seed, o.steps, o.faults, h.Write)
		f := exec(wl)
		if f == nil {
			continue
		}
		small, sf := shrink(wl, f, exec, o.shrink)
		return base, newFailure(seed, len(wl.ops), small, sf)
	}
	return base, nil
}

// Failure is the error [Check] returns when a contract is broken. Its
// Error method returns the full report that [Run] prints.
type Failure struct {
	// Contract names the broken contract: "FlushDelta retry",
	// "FlushStorage retry", "FlushDelta snapshot", "FlushDelta ranges",
	// "Freeze", "Freeze context", "Reader", "EstimateSize", "durability",
	// "reopen", "Store.LastEpoch", "Open", "Store.Close", "Store.Crash",
	// "Read", "Flusher" (a flusher call failed for good), "panic",
	// "liveness" (a call did not return within the Timeout),
	// "coordinator" (anything else the coordinator reported) or "setup"
	// (the kit could not make a directory).
	Contract string
	// Detail says how it was broken.
	Detail string
	// Op is the operation during which it broke, as printed in Workload.
	Op string
	// Seed replays the workload (see [Seed]).
	Seed uint64
	// Workload is the shortest failing workload found, one operation a
	// line.
	Workload string

	report string
}

func (f *Failure) Error() string { return f.report }

func newFailure[W any](seed uint64, original int, wl workload[W], f *failure) *Failure {
	where := "when opening the empty store"
	switch {
	case f.op == atFinal:
		where = "at the final Stop and reopen"
	case f.op >= 0 && f.op < len(wl.ops):
		where = fmt.Sprintf("during operation %d: %v", f.op, wl.ops[f.op])
	}
	out := &Failure{Contract: f.contract, Detail: f.detail, Op: where, Seed: seed, Workload: wl.String()}
	out.report = fmt.Sprintf("coordinatortest: %s: %s\n%s\nseed %#x (replay with -coordinatortest.seed=%#x or coordinatortest.Seed(%#x))\nshortest failing workload found (%d of %d operations):\n%v",
		f.contract, f.detail, where, seed, seed, seed, len(wl.ops), original, out.Workload)
	return out
}

// shrink removes operations from a failing workload, then writes from its
// batches, for as long as it keeps failing the same contract, within
// budget.
func shrink[W any](wl workload[W], f *failure, exec func(workload[W]) *failure, budget time.Duration) (workload[W], *failure) {
	deadline := time.Now().Add(budget)
	try := func(cand workload[W]) bool {
		if time.Now().After(deadline) {
			return false
		}
		if cf := exec(cand); cf != nil && cf.contract == f.contract {
			wl, f = cand, cf
			return true
		}
		return false
	}
	for chunk := len(wl.ops) / 2; chunk >= 1; {
		removed := false
		for start := 0; start < len(wl.ops); start += chunk {
			cand := workload[W]{first: wl.first}
			cand.ops = append(cand.ops, wl.ops[:start]...)
			cand.ops = append(cand.ops, wl.ops[min(start+chunk, len(wl.ops)):]...)
			if try(cand) {
				removed = true
				start -= chunk
			}
		}
		if !removed {
			chunk /= 2
		}
	}
	for i := range wl.ops {
		for j := 0; j < len(wl.ops[i].ws) && len(wl.ops[i].ws) > 1; j++ {
			cand := workload[W]{first: wl.first, ops: slices.Clone(wl.ops)}
			cand.ops[i].ws = slices.Delete(slices.Clone(wl.ops[i].ws), j, j+1)
			if try(cand) {
				j--
			}
		}
	}
	return wl, f
}
