package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/groupcommit/coordinator"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"go.uber.org/goleak"
	"gocloud.dev/blob"
	"gocloud.dev/blob/s3blob"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// backend opens handles to one fresh bucket: each call of the returned
// function is a new handle (a new client, for S3), as another process
// would have.
type backend struct {
	name  string
	start func(t *testing.T) (open func() *blob.Bucket)
}

var backends = []backend{
	{"file", startFile},
	{"s3", func(t *testing.T) func() *blob.Bucket { open, _ := startS3(t); return open }},
}

// startFile makes a file:// bucket in a temporary directory, opened by URL
// like the command does.
func startFile(t *testing.T) func() *blob.Bucket {
	url := "file://" + t.TempDir() + "?metadata=skip"
	return func() *blob.Bucket {
		b, err := blob.OpenBucket(context.Background(), url)
		if err != nil {
			t.Fatalf("OpenBucket(%s): %v", url, err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
}

const s3Bucket = "coordinator-test"

// startS3 starts an S3 server (gofakes3, in memory) on loopback and returns
// a function opening s3blob buckets on it through the AWS SDK, and one
// returning a raw S3 client.
func startS3(t *testing.T) (open func() *blob.Bucket, client func() *s3.Client) {
	mem := s3mem.New()
	srv := httptest.NewServer(gofakes3.New(mem).Server())
	t.Cleanup(srv.Close)
	if err := mem.CreateBucket(s3Bucket); err != nil {
		t.Fatal(err)
	}
	client = func() *s3.Client {
		return s3.New(s3.Options{
			Region:       "us-east-1",
			Credentials:  credentials.NewStaticCredentialsProvider("test-key", "test-secret", ""),
			BaseEndpoint: aws.String(srv.URL),
			UsePathStyle: true,
			HTTPClient:   srv.Client(), // closed with the server, so no connection outlives the test
		})
	}
	open = func() *blob.Bucket {
		b, err := s3blob.OpenBucket(context.Background(), client(), s3Bucket, nil)
		if err != nil {
			t.Fatalf("s3blob.OpenBucket: %v", err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	return open, client
}

func forEachBackend(t *testing.T, test func(t *testing.T, open func() *blob.Bucket)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { test(t, b.start(t)) })
	}
}

func openStore(t *testing.T, bucket *blob.Bucket, cfg coordinator.Config) *Store {
	t.Helper()
	st, err := Open(context.Background(), bucket, cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { st.Close(context.Background()) })
	return st
}

// write writes ops and waits until each reaches level.
func write(t *testing.T, st *Store, level coordinator.Durability, ops ...Op) {
	t.Helper()
	ctx := context.Background()
	for _, op := range ops {
		h, err := st.Coordinator().Channel("default").Write(ctx, op)
		if err != nil {
			t.Fatalf("Write(%q) = %v", op.Key, err)
		}
		if _, err := h.Wait(ctx, level); err != nil {
			t.Fatalf("Write(%q).Wait(%v) = %v", op.Key, level, err)
		}
	}
}

func recoverAll(t *testing.T, bucket *blob.Bucket) (*State, map[string]string) {
	t.Helper()
	st, err := Recover(context.Background(), bucket)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	return st, asStrings(st.All())
}

func asStrings(m map[string][]byte) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}

func diff(got, want map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[k]; !ok || g != want[k] {
			fmt.Fprintf(&b, "  %s = %q, %v; want %q\n", k, g, ok, want[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			fmt.Fprintf(&b, "  %s = %q; want absent\n", k, got[k])
		}
	}
	return b.String()
}

// TestDurableWritesRecover has concurrent writers put, overwrite and
// delete keys, each op waited for until Durable, then recovers the bucket
// through another handle while the store still runs, and again after it
// stopped: the recovered state must be exactly what the writers made.
func TestDurableWritesRecover(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func() *blob.Bucket) {
		ctx := context.Background()
		st := openStore(t, open(), coordinator.Config{})
		const writers, ops = 4, 60
		var (
			mu   sync.Mutex
			want = map[string]string{}
			wg   sync.WaitGroup
		)
		for w := range writers {
			wg.Go(func() {
				ch := st.Coordinator().Channel("default")
				for i := range ops {
					// Each writer owns 20 keys: it puts them, overwrites
					// them, and deletes some along the way.
					key := fmt.Sprintf("w%d/k%02d", w, i%20)
					op := Put(key, fmt.Appendf(nil, "w%d op%d", w, i))
					if i%7 == 6 {
						op = Delete(key)
					}
					h, err := ch.Write(ctx, op)
					if err == nil {
						_, err = h.Wait(ctx, coordinator.Durable)
					}
					if err != nil {
						t.Errorf("writer %d op %d: %v", w, i, err)
						return
					}
					mu.Lock()
					if op.Delete {
						delete(want, key)
					} else {
						want[key] = string(op.Value)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		for k, v := range want {
			if got, ok := st.Get(k); !ok || string(got) != v {
				t.Errorf("Get(%s) = %q, %v; want %q", k, got, ok, v)
			}
		}
		rec, got := recoverAll(t, open())
		if d := diff(got, want); d != "" {
			t.Errorf("Recover while running differs from the durable writes:\n%s", d)
		}
		if rec.Last() != writers*ops {
			t.Errorf("recovered through sequence number %d; want %d", rec.Last(), writers*ops)
		}
		segments := len(rec.Segments)

		if err := st.Close(ctx); err != nil {
			t.Fatal(err)
		}
		rec, got = recoverAll(t, open())
		if d := diff(got, want); d != "" {
			t.Errorf("Recover after Close differs:\n%s", d)
		}
		if rec.Last() != writers*ops {
			t.Errorf("after Close, recovered through sequence number %d; want %d", rec.Last(), writers*ops)
		}
		t.Logf("%d ops by %d durable writers: %d segments", writers*ops, writers, segments)
	})
}

// TestWrittenIsNotRecovered checks the split between Written and Durable:
// a written segment is visible to views but not to Recover until the
// manifest lists it.
func TestWrittenIsNotRecovered(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func() *blob.Bucket) {
		ctx := context.Background()
		st := openStore(t, open(), coordinator.Config{FlushInterval: time.Hour})
		write(t, st, coordinator.Durable, Put("a", []byte("1")))
		write(t, st, coordinator.Written, Put("b", []byte("2")), Delete("a"))

		v := st.Coordinator().View()
		if _, ok := Get(v, "a"); ok {
			t.Errorf("view: Get(a) found a deleted key")
		}
		if got, ok := Get(v, "b"); !ok || string(got) != "2" {
			t.Errorf("view: Get(b) = %q, %v; want 2", got, ok)
		}
		if v.Snapshot.Last() != 3 {
			t.Errorf("view snapshot through %d; want 3", v.Snapshot.Last())
		}

		other := open()
		rec, got := recoverAll(t, other)
		if d := diff(got, map[string]string{"a": "1"}); d != "" {
			t.Errorf("Recover of written, not durable, data:\n%s", d)
		}
		orphans, err := Orphans(ctx, other, rec)
		if err != nil {
			t.Fatal(err)
		}
		if len(orphans) != 2 {
			t.Errorf("Orphans = %v; want the 2 written segments", orphans)
		}

		if _, err := st.Coordinator().Flush(ctx, coordinator.Durable); err != nil {
			t.Fatal(err)
		}
		rec, got = recoverAll(t, other)
		if d := diff(got, map[string]string{"b": "2"}); d != "" {
			t.Errorf("Recover after Flush(Durable):\n%s", d)
		}
		if orphans, err := Orphans(ctx, other, rec); err != nil || len(orphans) != 0 {
			t.Errorf("Orphans after Flush(Durable) = %v, %v; want none", orphans, err)
		}
	})
}

// TestReopen checks that a reopened store continues from what it recovered:
// reads see the old data, and new segments continue the sequence numbers.
func TestReopen(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func() *blob.Bucket) {
		ctx := context.Background()
		st := openStore(t, open(), coordinator.Config{})
		write(t, st, coordinator.Written, Put("a", []byte("1")), Put("b", []byte("2")))
		if err := st.Close(ctx); err != nil {
			t.Fatal(err)
		}

		st = openStore(t, open(), coordinator.Config{})
		if got, ok := st.Get("a"); !ok || string(got) != "1" {
			t.Errorf("reopened: Get(a) = %q, %v; want 1", got, ok)
		}
		write(t, st, coordinator.Durable, Put("a", []byte("3")), Delete("b"), Put("c", nil))
		if err := st.Close(ctx); err != nil {
			t.Fatal(err)
		}

		rec, got := recoverAll(t, open())
		if d := diff(got, map[string]string{"a": "3", "c": ""}); d != "" {
			t.Errorf("Recover after two runs:\n%s", d)
		}
		var names []string
		next := uint64(1)
		for _, ref := range rec.Segments {
			if ref.First != next {
				t.Errorf("segment %s starts at %d; want %d", ref.Name, ref.First, next)
			}
			next = ref.Last + 1
			names = append(names, ref.Name)
		}
		if next != 6 || !slices.IsSorted(names) {
			t.Errorf("segments %v end at %d; want sorted names ending at 5", names, next-1)
		}
	})
}

// TestViewLayers reads one key through views taken at each stage: a newer
// layer hides an older one. A view's live reader keeps following its delta
// until that delta is frozen, so an old view sees writes applied to it
// after the view was taken, and none applied after the freeze.
func TestViewLayers(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, startFile(t)(), coordinator.Config{FlushInterval: time.Hour})
	c := st.Coordinator()
	check := func(stage string, v *View, value string, found bool) {
		t.Helper()
		if got, ok := Get(v, "k"); string(got) != value || ok != found {
			t.Errorf("%s: Get(k) = %q, %v; want %q, %v", stage, got, ok, value, found)
		}
	}
	write(t, st, coordinator.Written, Put("k", []byte("written")))
	vWritten := c.View()
	check("in a segment", vWritten, "written", true)
	write(t, st, coordinator.Applied, Put("k", []byte("frozen")))
	check("live over a segment", c.View(), "frozen", true)
	check("view taken before, same live delta", vWritten, "frozen", true)
	if _, err := c.Flush(ctx, coordinator.Applied); err != nil {
		t.Fatal(err)
	}
	vFrozen := c.View()
	check("frozen (or just written)", vFrozen, "frozen", true)
	write(t, st, coordinator.Applied, Delete("k"))
	check("live delete", c.View(), "", false)
	check("view taken before the delete, same live delta", vFrozen, "", false)
	check("view whose live delta was frozen before the delete", vWritten, "frozen", true)
	if _, err := c.Flush(ctx, coordinator.Written); err != nil {
		t.Fatal(err)
	}
	check("all written", c.View(), "", false)
}

// TestS3Objects looks at what the S3 server holds, with the AWS SDK
// directly: the manifest and the segment objects, whose bytes decode to
// the ops written.
func TestS3Objects(t *testing.T) {
	ctx := context.Background()
	open, client := startS3(t)
	st := openStore(t, open(), coordinator.Config{})
	write(t, st, coordinator.Durable, Put("x", []byte("1")), Put("y", []byte("2")))
	if err := st.Close(ctx); err != nil {
		t.Fatal(err)
	}

	cl := client()
	out, err := cl.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(s3Bucket)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	want := []string{manifestKey, segmentName(1, 1), segmentName(2, 2)}
	if !slices.Equal(keys, want) {
		t.Fatalf("S3 objects = %v; want %v", keys, want)
	}
	get, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s3Bucket), Key: aws.String(segmentName(2, 2))})
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(get.Body)
	get.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	seg, first, last, err := decodeSegment(data)
	if err != nil || first != 2 || last != 2 || seg.Len() != 1 || string(seg.entries["y"].value) != "2" {
		t.Errorf("segment [2, 2] from S3 decodes to %v [%d, %d] %v; want y=2 at 2", err, first, last, seg)
	}
}

// TestCorruption damages a durable bucket in several ways; Recover must
// refuse each.
func TestCorruption(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		damage  func(b *blob.Bucket) error
		corrupt bool // the error wraps ErrCorrupt (else: a read error)
	}{
		{"flipped segment byte", func(b *blob.Bucket) error {
			data, err := b.ReadAll(ctx, segmentName(2, 2))
			if err != nil {
				return err
			}
			data[len(segmentMagic)+3] ^= 1
			return b.WriteAll(ctx, segmentName(2, 2), data, nil)
		}, true},
		{"truncated segment", func(b *blob.Bucket) error {
			data, err := b.ReadAll(ctx, segmentName(1, 1))
			if err != nil {
				return err
			}
			return b.WriteAll(ctx, segmentName(1, 1), data[:len(data)-1], nil)
		}, true},
		{"missing segment", func(b *blob.Bucket) error { return b.Delete(ctx, segmentName(1, 1)) }, false},
		{"garbled manifest", func(b *blob.Bucket) error { return b.WriteAll(ctx, manifestKey, []byte("{"), nil) }, true},
		{"manifest with a gap", func(b *blob.Bucket) error {
			data := []byte(`{"last": 2, "segments": [{"name": "` + segmentName(2, 2) + `", "first": 2, "last": 2}]}`)
			return b.WriteAll(ctx, manifestKey, data, nil)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bucket := startFile(t)()
			st := openStore(t, bucket, coordinator.Config{})
			write(t, st, coordinator.Durable, Put("a", []byte("1")), Put("b", []byte("2")))
			if err := st.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := Recover(ctx, bucket); err != nil {
				t.Fatalf("Recover before damage: %v", err)
			}
			if err := tc.damage(bucket); err != nil {
				t.Fatal(err)
			}
			_, err := Recover(ctx, bucket)
			if err == nil || errors.Is(err, ErrCorrupt) != tc.corrupt {
				t.Errorf("Recover = %v; want an error (wrapping ErrCorrupt: %v)", err, tc.corrupt)
			}
		})
	}
}

func TestRejectedOps(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, startFile(t)(), coordinator.Config{})
	for _, op := range []Op{
		Put("", []byte("x")),
		Put(strings.Repeat("k", MaxKeyLen+1), nil),
		Put("k", make([]byte, MaxValueLen+1)),
		{Key: "k", Value: []byte("x"), Delete: true},
	} {
		h, err := st.Coordinator().Channel("default").Write(ctx, op)
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.Wait(ctx, coordinator.Written)
		var ae *coordinator.ApplyError
		if !errors.As(err, &ae) || !errors.Is(err, errInvalidOp) {
			t.Errorf("Write(key of %d bytes) = %v; want an ApplyError wrapping %v", len(op.Key), err, errInvalidOp)
		}
	}
	if _, ok := st.Get("k"); ok {
		t.Errorf("a rejected op changed the store")
	}
}

func TestSegmentRoundTrip(t *testing.T) {
	seg := newSegment(map[string]entry{
		"a":     {value: []byte("1")},
		"b":     {deleted: true},
		"empty": {value: []byte{}},
		"big":   {value: bytes.Repeat([]byte{0xff}, 300)},
	})
	data := seg.encode(7, 9)
	got, first, last, err := decodeSegment(data)
	if err != nil || first != 7 || last != 9 {
		t.Fatalf("decodeSegment(encode(7, 9)) = [%d, %d], %v", first, last, err)
	}
	if !slices.Equal(got.keys, seg.keys) {
		t.Errorf("keys = %v; want %v", got.keys, seg.keys)
	}
	for k, e := range seg.entries {
		if g := got.entries[k]; g.deleted != e.deleted || !bytes.Equal(g.value, e.value) {
			t.Errorf("entry %s = %+v; want %+v", k, g, e)
		}
	}
	for i := range data {
		bad := bytes.Clone(data)
		bad[i] ^= 0x10
		if _, _, _, err := decodeSegment(bad); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("decodeSegment with byte %d flipped = %v; want ErrCorrupt", i, err)
		}
	}
}

func FuzzDecodeSegment(f *testing.F) {
	f.Add(newSegment(map[string]entry{"a": {value: []byte("1")}, "b": {deleted: true}}).encode(1, 2))
	f.Add([]byte(segmentMagic))
	f.Fuzz(func(t *testing.T, data []byte) {
		seg, first, last, err := decodeSegment(data)
		if err != nil {
			return
		}
		// Whatever decodes must survive a round trip.
		seg2, first2, last2, err := decodeSegment(seg.encode(first, last))
		if err != nil || first2 != first || last2 != last || !slices.Equal(seg2.keys, seg.keys) {
			t.Fatalf("decode(encode(decode(%x))) = [%d, %d] %v, %v", data, first2, last2, seg2, err)
		}
		for k, e := range seg.entries {
			if g := seg2.entries[k]; g.deleted != e.deleted || !bytes.Equal(g.value, e.value) {
				t.Errorf("entry %q = %+v after a round trip; want %+v", k, g, e)
			}
		}
	})
}
