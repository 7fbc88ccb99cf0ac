// Command objectstore is a key-value store whose storage is an object
// store bucket, built on the write coordinator: each frozen delta becomes
// an immutable segment object, and a small manifest object, written after
// the segments, lists the segments that exist. The same code runs on a
// local directory, S3, Google Cloud Storage or Azure Blob Storage: only
// the -bucket URL changes (file://, s3://, gs://, azblob://; credentials
// come from the usual environment of each cloud).
//
// Usage:
//
//	go run . [-bucket URL] [-writers N] [-ops N]
//
// Without -bucket the bucket is a temporary directory, removed on exit.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/groupcommit/coordinator"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob"
	_ "gocloud.dev/blob/fileblob"
	_ "gocloud.dev/blob/gcsblob"
	_ "gocloud.dev/blob/s3blob"
	"golang.org/x/sync/errgroup"
)

func main() {
	bucketURL := flag.String("bucket", "", "bucket URL: file:///dir, s3://name?region=..., gs://name, azblob://name (default: a temporary directory)")
	writers := flag.Int("writers", 8, "concurrent writers")
	ops := flag.Int("ops", 200, "ops per writer, each waited for until durable")
	flag.Parse()
	if err := run(*bucketURL, *writers, *ops); err != nil {
		log.Fatal(err)
	}
}

func run(bucketURL string, writers, ops int) error {
	ctx := context.Background()
	if bucketURL == "" {
		dir, err := os.MkdirTemp("", "objectstore-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		bucketURL = "file://" + dir + "?metadata=skip"
	}
	bucket, err := blob.OpenBucket(ctx, bucketURL)
	if err != nil {
		return err
	}
	defer bucket.Close()

	st, err := Open(ctx, bucket, coordinator.Config{})
	if err != nil {
		return err
	}
	defer st.Close(ctx)
	before := st.Coordinator().View().Snapshot
	fmt.Printf("bucket %s: recovered %d segments, %d keys, through sequence number %d\n",
		bucketURL, len(before.Segments), len(before.All()), before.Last())

	// Every writer puts its keys one by one and waits for each to be
	// durable; every tenth op deletes a key it put five ops earlier. The
	// coordinator groups the concurrent waits into few segments and fewer
	// manifest writes.
	runID := time.Now().UnixNano()
	start := time.Now()
	// The first writer to fail cancels the others' context; Wait returns
	// its error.
	g, gctx := errgroup.WithContext(ctx)
	for w := range writers {
		g.Go(func() error {
			ch := st.Coordinator().Channel("default")
			key := func(i int) string { return fmt.Sprintf("run%d/w%02d/k%04d", runID, w, i) }
			for i := range ops {
				op := Put(key(i), fmt.Appendf(nil, "value %d of writer %d", i, w))
				if i%10 == 9 {
					op = Delete(key(i - 5))
				}
				h, err := ch.Write(gctx, op)
				if err == nil {
					_, err = h.Wait(gctx, coordinator.Durable)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	s := st.Coordinator().Stats()
	fmt.Printf("%d ops durable in %v: %d segments written, %d manifest writes (FlushStorage calls)\n",
		writers*ops, time.Since(start).Round(time.Millisecond), s.FlushDelta.Count, s.Syncs)
	if err := st.Close(ctx); err != nil {
		return err
	}

	// Read the bucket back through a second handle, as another process
	// would after a crash: only what the manifest lists counts.
	other, err := blob.OpenBucket(ctx, bucketURL)
	if err != nil {
		return err
	}
	defer other.Close()
	var objects, bytes int64
	it := other.List(nil)
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		objects++
		bytes += obj.Size
	}
	rec, err := Recover(ctx, other)
	if err != nil {
		return err
	}
	orphans, err := Orphans(ctx, other, rec)
	if err != nil {
		return err
	}
	all := rec.All()
	live := len(all) - len(before.All())
	want := writers * (ops - 2*(ops/10)) // puts minus the keys deleted
	fmt.Printf("bucket holds %d objects, %d bytes; recovered %d segments through sequence number %d, %d orphans\n",
		objects, bytes, len(rec.Segments), rec.Last(), len(orphans))
	fmt.Printf("recovered %d live keys from this run; expected %d\n", live, want)
	if live != want {
		return fmt.Errorf("recovered %d keys; want %d", live, want)
	}
	return nil
}
