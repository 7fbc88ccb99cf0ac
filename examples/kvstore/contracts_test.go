package main

import (
	"flag"
	"math/rand/v2"
	"testing"

	"github.com/groupcommit/coordinator"
	"github.com/groupcommit/coordinator/coordinatortest"
)

var long = flag.Bool("long", false, "run the contract checks with many more workloads")

// kitIterations is the number of coordinatortest workloads to run.
func kitIterations() int {
	if *long {
		return 100
	}
	return 6
}

// keySpace is the set of keys the contract checks write: small, so that
// writes overwrite and delete each other.
var keySpace = []string{"a", "b", "c", "d", "e", "f", "g", "h"}

// TestContracts runs the store's Delta and Flusher through coordinatortest:
// random workloads with flushes, injected flusher failures, crashes and
// reopens, checked against a map.
func TestContracts(t *testing.T) {
	coordinatortest.Run(t, coordinatortest.Harness[Op, struct{}, DeltaContext, *Frozen, *Table, *Table, *Index, map[string]string]{
		Open: func(dir string) (*coordinatortest.Store[Op, struct{}, DeltaContext, *Frozen, *Table, *Table, *Index], error) {
			rec, err := Open(dir)
			if err != nil {
				return nil, err
			}
			// Coordinator epochs are the store's epochs: the coordinator
			// continues them from rec.LastEpoch with Config.FirstEpoch.
			f := &Flusher{dir: rec.Dir, index: rec.Index}
			st := coordinatortest.NewStore(NewDelta, DeltaContext{Seq: rec.NextSeq}, rec.Index, f, rec.LastEpoch)
			st.Close = f.Close
			return st, nil
		},
		Write: func(r *rand.Rand) Op {
			key := keySpace[r.IntN(len(keySpace))]
			switch n := r.IntN(10); {
			case n == 0:
				return Op{Kind: OpPut} // an empty key: rejected
			case n < 3:
				return Delete(key)
			default:
				return Put(key, []byte{byte('a' + r.IntN(26))})
			}
		},
		Init: func() map[string]string { return map[string]string{} },
		Apply: func(m map[string]string, op Op) map[string]string {
			if op.Kind == OpDelete {
				delete(m, op.Key)
			} else {
				m[op.Key] = string(op.Value)
			}
			return m
		},
		Read: func(v *coordinator.View[*Table, *Table, *Index]) (map[string]string, error) {
			m := map[string]string{}
			for _, k := range keySpace {
				if val, ok := Get(v, k); ok {
					m[k] = string(val)
				}
			}
			return m, nil
		},
	}, coordinatortest.Iterations(kitIterations()))
}
