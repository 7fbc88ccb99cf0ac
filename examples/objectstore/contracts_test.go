package main

import (
	"context"
	"flag"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/groupcommit/coordinator"
	"github.com/groupcommit/coordinator/coordinatortest"
	"gocloud.dev/blob"
	"gocloud.dev/blob/s3blob"
)

var long = flag.Bool("long", false, "run the contract checks with many more workloads")

// keySpace is the set of keys the contract checks write: small, so that
// writes overwrite and delete each other.
var keySpace = []string{"a", "b", "c", "d", "e", "f"}

// TestContracts runs the store's Delta and Flusher through coordinatortest
// on each backend: random workloads with flushes, injected flusher
// failures, crashes and reopens (each through a new bucket handle, as
// another process would open it), checked against a map.
func TestContracts(t *testing.T) {
	iterations := 4
	if *long {
		iterations = 60
	}
	t.Run("file", func(t *testing.T) {
		runContracts(t, func(dir string) (*blob.Bucket, error) {
			return blob.OpenBucket(context.Background(), "file://"+dir+"?metadata=skip")
		}, iterations)
	})
	t.Run("s3", func(t *testing.T) {
		_, client := startS3(t)
		runContracts(t, func(dir string) (*blob.Bucket, error) {
			b, err := s3blob.OpenBucket(context.Background(), client(), s3Bucket, nil)
			if err != nil {
				return nil, err
			}
			// One server for every workload: each keeps its store under
			// its own prefix.
			return blob.PrefixedBucket(b, filepath.Base(dir)+"/"), nil
		}, iterations)
	})
}

func runContracts(t *testing.T, bucketFor func(dir string) (*blob.Bucket, error), iterations int) {
	coordinatortest.Run(t, coordinatortest.Harness[Op, struct{}, struct{}, *Segment, *Segment, *LiveReader, *State, map[string]string]{
		Open: func(dir string) (*coordinatortest.Store[Op, struct{}, struct{}, *Segment, *Segment, *LiveReader, *State], error) {
			bucket, err := bucketFor(dir)
			if err != nil {
				return nil, err
			}
			st, err := Recover(context.Background(), bucket)
			if err != nil {
				bucket.Close()
				return nil, err
			}
			// Coordinator epochs are the store's sequence numbers: the
			// coordinator continues them from st.Last() with FirstEpoch.
			f := &Flusher{bucket: bucket, state: st, listed: st.Last()}
			store := coordinatortest.NewStore(NewDelta, struct{}{}, st, f, st.Last())
			store.Close = bucket.Close
			return store, nil
		},
		Write: func(r *rand.Rand) Op {
			key := keySpace[r.IntN(len(keySpace))]
			switch n := r.IntN(10); {
			case n == 0:
				return Op{} // an empty key: rejected
			case n < 3:
				return Delete(key)
			default:
				return Put(key, []byte{byte('a' + r.IntN(26))})
			}
		},
		Init: func() map[string]string { return map[string]string{} },
		Apply: func(m map[string]string, op Op) map[string]string {
			if op.Delete {
				delete(m, op.Key)
			} else {
				m[op.Key] = string(op.Value)
			}
			return m
		},
		Read: func(v *coordinator.View[*Segment, *LiveReader, *State]) (map[string]string, error) {
			m := map[string]string{}
			for _, k := range keySpace {
				if val, ok := Get(v, k); ok {
					m[k] = string(val)
				}
			}
			return m, nil
		},
	}, coordinatortest.Iterations(iterations))
}

// TestFlushDeltaAgainAfterSuccess calls FlushDelta a second time with the
// same delta, as the coordinator does when the first call's success is
// lost, and checks that the manifest lists the segment once.
func TestFlushDeltaAgainAfterSuccess(t *testing.T) {
	ctx := context.Background()
	bucket, err := blob.OpenBucket(ctx, "file://"+t.TempDir()+"?metadata=skip")
	if err != nil {
		t.Fatal(err)
	}
	defer bucket.Close()
	f := &Flusher{bucket: bucket, state: &State{}}
	d := NewDelta(struct{}{})
	if _, err := d.Apply(Put("k", []byte("v"))); err != nil {
		t.Fatal(err)
	}
	seg, _, _ := d.Freeze()
	for range 2 {
		if _, err := f.FlushDelta(ctx, seg, coordinator.EpochRange{Start: 1, End: 2}); err != nil {
			t.Fatalf("FlushDelta = %v", err)
		}
	}
	if err := f.FlushStorage(ctx); err != nil {
		t.Fatalf("FlushStorage = %v", err)
	}
	st, err := Recover(ctx, bucket)
	if err != nil {
		t.Fatalf("Recover after a repeated FlushDelta = %v", err)
	}
	if len(st.Segments) != 1 || st.Last() != 1 {
		t.Errorf("Recover = %d segments through %d; want 1 through 1", len(st.Segments), st.Last())
	}
}
