package coordinatortest

// This file holds what the driver checks after every operation: the model
// over the applied writes, the view read layer by layer, and what a reopened
// store recovered.

import (
	"cmp"
	"fmt"
	"maps"
	"reflect"
	"runtime"
	"slices"
	"strings"

	"github.com/groupcommit/coordinator"
)

// model returns the model over the epochs up to last.
func (r *runner[W, R, C, F, FV, DV, S, M]) model(last uint64) M {
	return r.modelRepeating(last, nil)
}

// modelRepeating returns the model over the epochs up to last, where the
// writes of each range in repeats are applied as many times as it says,
// the copies right after each other (a delta written again by a retry).
func (r *runner[W, R, C, F, FV, DV, S, M]) modelRepeating(last uint64, repeats map[coordinator.EpochRange]int) M {
	ends := map[uint64]coordinator.EpochRange{}
	for rg := range repeats {
		ends[rg.Last()] = rg
	}
	m := r.h.Init()
	apply := func(e uint64) {
		if rec, ok := r.hist[e]; ok && !rec.rejected {
			m = r.h.Apply(m, rec.w)
		}
	}
	for e := uint64(1); e <= last; e++ {
		apply(e)
		if rg, ok := ends[e]; ok {
			for range repeats[rg] - 1 {
				for x := rg.Start; x <= rg.Last(); x++ {
					apply(x)
				}
			}
		}
	}
	return m
}

func (r *runner[W, R, C, F, FV, DV, S, M]) equal(a, b M) bool {
	if r.h.Equal != nil {
		return r.h.Equal(a, b)
	}
	return reflect.DeepEqual(a, b)
}

// explain says what a wrong reading of the epochs up to last looks like:
// a delta written twice by a retry, or a shorter or longer prefix. It
// returns the contract to blame when it is retry safety.
func (r *runner[W, R, C, F, FV, DV, S, M]) explain(got M, last uint64, contract string) (string, string) {
	if rw := r.w.rewritten(); len(rw) > 0 && r.equal(got, r.modelRepeating(last, rw)) {
		return "FlushDelta retry", fmt.Sprintf("; it holds the writes of some epochs more than once: the user's FlushDelta returned success for epochs %s (the kit failed some of those calls after they had returned, as a lost acknowledgement would, so the coordinator called again) and each call wrote them again. FlushDelta must be safe to call again with the same delta", rangeCounts(rw))
	}
	for p := r.applied; ; p-- {
		if p != last && r.equal(got, r.model(p)) {
			return contract, fmt.Sprintf("; it holds exactly the writes of epochs through %d", p)
		}
		if p == 0 {
			return contract, ""
		}
	}
}

func rangeCounts(m map[coordinator.EpochRange]int) string {
	ranges := slices.SortedFunc(maps.Keys(m), func(a, b coordinator.EpochRange) int { return cmp.Compare(a.Start, b.Start) })
	parts := make([]string, len(ranges))
	for i, rg := range ranges {
		parts[i] = fmt.Sprintf("%v %d times", rg, m[rg])
	}
	return strings.Join(parts, ", ")
}

func short(v any) string {
	s := fmt.Sprintf("%+v", v)
	if len(s) > 600 {
		s = s[:600] + "…"
	}
	return s
}

// checkRecovered checks what an opened store holds, before any write.
func (r *runner[W, R, C, F, FV, DV, S, M]) checkRecovered(last uint64) *failure {
	if last > r.applied {
		return r.fail("Store.LastEpoch", "the reopened store reports LastEpoch %d, but only epochs through %d were ever applied", last, r.applied)
	}
	if r.h.Init != nil {
		got, err := r.h.Read(r.c.View())
		if err != nil {
			return r.fail("Read", "reading the reopened store: %v", err)
		}
		if want := r.model(last); !r.equal(got, want) {
			contract, why := r.explain(got, last, "reopen")
			if contract == "reopen" {
				why += " (a store continues its epochs: Store.LastEpoch must be the last epoch it holds, and Config.FirstEpoch starts the next coordinator after it)"
			}
			return r.fail(contract, "the reopened store, reporting LastEpoch %d, reads %s; want the model over epochs through %d: %s%s", last, short(got), last, short(want), why)
		}
	}
	switch {
	case last < r.durable:
		return r.fail("durability", "the reopened store holds epochs through %d, but epoch %d was acknowledged Durable: FlushStorage must make every delta written before it durable, and Open must recover every durable delta", last, r.durable)
	case r.clean && last != r.applied:
		return r.fail("durability", "the previous coordinator stopped cleanly, so every write through epoch %d was written and synced, but the reopened store reports LastEpoch %d", r.applied, last)
	}
	// Writes past what the store kept are gone; the next coordinator gives
	// their epochs to new writes.
	for e := range r.hist {
		if e > last {
			delete(r.hist, e)
		}
	}
	r.applied = last
	clear(r.frozen)
	return nil
}

// check reads the view layer by layer after an operation.
func (r *runner[W, R, C, F, FV, DV, S, M]) check() *failure {
	if m := r.c.Watermarks(); m.Applied != r.applied {
		return r.fail("coordinator", "the applied watermark is %d, but the last epoch the kit saw applied is %d", m.Applied, r.applied)
	}
	var (
		l   layers[FV, DV, S, M]
		err error
	)
	for range 100 {
		if l, err = r.readLayers(); err == nil {
			break
		}
		runtime.Gosched()
	}
	if err != nil {
		return r.fail("Read", "reading the view failed: %v", err)
	}
	v := l.v
	if v.Err != nil {
		return r.fail("coordinator", "the coordinator failed: %v%s", v.Err, r.retryHint())
	}
	if r.h.Init != nil {
		if want := r.model(v.Written); !r.equal(l.snap, want) {
			contract, why := r.explain(l.snap, v.Written, "FlushDelta snapshot")
			if contract == "FlushDelta snapshot" {
				why += ". The frozen views of those epochs did not change between Freeze and FlushDelta (the kit reads each at both moments); so either FlushDelta did not write the delta it was given, or the frozen data Freeze returned for it changed before FlushDelta wrote it (it must not share state with the next delta)"
			}
			return r.fail(contract, "the snapshot of epochs through %d (View.Written) reads %s; want %s%s. FlushDelta must return a snapshot holding every delta written so far, once each",
				v.Written, short(l.snap), short(want), why)
		}
	}
	for i := len(v.Frozen) - 1; i >= 0; i-- {
		fd := v.Frozen[i]
		key := frozenKey{fd.Epochs, v.Written}
		got := l.frozen[i]
		if before, ok := r.frozen[key]; ok && !r.equal(before, got) {
			return r.fail("Freeze", "the frozen view of epochs %v, over the same snapshot, read %s after an earlier operation, and %s once later writes (through epoch %d) were applied to the next delta: a frozen view must not share state with the next delta",
				fd.Epochs, short(before), short(got), r.applied)
		}
		r.frozen[key] = got
		if r.h.Init == nil {
			continue
		}
		if want := r.model(fd.Epochs.Last()); !r.equal(got, want) {
			r.w.recheckAll() // did it read correctly when frozen?
			return r.fail("Freeze", "the frozen view of epochs %v, over the snapshot, reads %s; want %s: Freeze must return a view of exactly the delta's writes",
				fd.Epochs, short(got), short(want))
		}
	}
	if r.h.Init == nil {
		return nil
	}
	if want := r.model(r.applied); !r.equal(l.full, want) {
		liveStart := v.Written + 1
		if len(v.Frozen) > 0 {
			liveStart = v.Frozen[0].Epochs.End
		}
		holding := "no writes yet"
		if liveStart <= r.applied {
			holding = fmt.Sprintf("epochs %d to %d", liveStart, r.applied)
		}
		if liveStart > r.first {
			return r.fail("Freeze context", "the view reads %s; want %s. Its older layers read correctly with an empty delta's reader as Current, but not with the live delta's, which holds %s and was created from the context the previous Freeze returned: Freeze must carry in that context whatever the next delta needs from the ones before it (IDs, dictionaries, sequence numbers)",
				short(l.full), short(want), holding)
		}
		return r.fail("Reader", "the view reads %s; want %s. Its older layers read correctly, so the live delta's Reader (the delta holds %s) does not show the writes applied to it",
			short(l.full), short(want), holding)
	}
	return nil
}

// layers is a view read whole and in parts.
type layers[FV, DV, S, M any] struct {
	v          *coordinator.View[FV, DV, S]
	full, snap M   // the whole view; its snapshot alone
	frozen     []M // frozen[i] reads Frozen[i:] over the snapshot
}

// readLayers reads the latest view whole, its snapshot alone, and its
// frozen deltas over its snapshot.
func (r *runner[W, R, C, F, FV, DV, S, M]) readLayers() (l layers[FV, DV, S, M], err error) {
	v := r.c.View()
	l.v = v
	if l.full, err = r.h.Read(v); err != nil {
		return l, err
	}
	base := coordinator.View[FV, DV, S]{Current: r.empty, Snapshot: v.Snapshot, LastWritten: v.LastWritten, Written: v.Written, Err: v.Err}
	if l.snap, err = r.h.Read(&base); err != nil {
		return l, err
	}
	l.frozen = make([]M, len(v.Frozen))
	for i := range v.Frozen {
		layer := base
		layer.Frozen = v.Frozen[i:]
		if l.frozen[i], err = r.h.Read(&layer); err != nil {
			return l, err
		}
	}
	return l, nil
}
