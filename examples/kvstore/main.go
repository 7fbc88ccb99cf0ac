// Kvstore is a small durable key-value store built on the coordinator: the
// first example to run end to end.
//
// Writes are [Op]s (Put or Delete of a string key). The live delta is an
// in-memory [Table]; each frozen delta is written as an immutable, checksummed
// segment file (see store.go for the format); FlushStorage fsyncs the new
// segments and the directory; the storage snapshot is an immutable layered
// [Index]; readers [Get] through a coordinator view. [Open] recovers a
// directory after a crash.
//
// The demo writes -keys keys from -writers goroutines (one key in ten is
// put and then deleted), waiting for each write to be Durable with at most
// -window writes in flight per writer, so concurrent writers share
// segments and fsyncs (group commit). It then reads every key back through
// a view, stops the coordinator, reopens the directory and checks every key
// again, and that the epochs continued those already in the directory
// ([coordinator.Config.FirstEpoch]). It exits with status 1 and a message on
// any mismatch.
//
//	go run ./examples/kvstore -writers 8 -keys 5000
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/groupcommit/coordinator"
	"golang.org/x/sync/errgroup"
)

// demoConfig is what the flags set.
type demoConfig struct {
	dir        string
	writers    int
	keys       int
	window     int // writes in flight per writer
	stats      bool
	statsEvery time.Duration
}

// demoReport is what a successful run measured.
type demoReport struct {
	keys, deleted int
	writes        uint64 // epochs assigned in this run
	firstEpoch    uint64 // the first of them: one past what Open recovered
	segments      uint64
	syncs         uint64
	bytes         uint64
	recovered     int // segments read back by the final Open
	elapsed       time.Duration
}

func (r demoReport) String() string {
	rate := float64(r.writes) / r.elapsed.Seconds()
	return fmt.Sprintf("kvstore: OK: %d keys (%d deleted), %d writes, %d segments (%d bytes; Open read back %d), "+
		"%d syncs, %.1f writes/sync, elapsed %v, %.0f writes/s, epochs %d-%d",
		r.keys, r.deleted, r.writes, r.segments, r.bytes, r.recovered,
		r.syncs, float64(r.writes)/float64(max(r.syncs, 1)), r.elapsed.Round(time.Millisecond), rate,
		r.firstEpoch, r.firstEpoch+r.writes-1)
}

func main() {
	os.Exit(realMain())
}

func realMain() int {
	var cfg demoConfig
	flag.StringVar(&cfg.dir, "dir", "", "store directory (default: a temp dir, removed at exit)")
	flag.IntVar(&cfg.writers, "writers", 8, "writer goroutines")
	flag.IntVar(&cfg.keys, "keys", 5000, "keys to write")
	flag.IntVar(&cfg.window, "window", 32, "writes in flight per writer")
	flag.BoolVar(&cfg.stats, "stats", true, "print live progress to stderr every 200ms")
	flag.Parse()
	cfg.statsEvery = 200 * time.Millisecond
	if cfg.dir == "" {
		dir, err := os.MkdirTemp("", "kvstore-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "kvstore:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		cfg.dir = dir
	}
	r, err := run(context.Background(), cfg, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvstore: FAILED:", err)
		return 1
	}
	fmt.Println(r)
	return 0
}

// keyName and value define the data the demo writes and expects.
func keyName(i int) string { return fmt.Sprintf("key-%06d", i) }

func value(i int) []byte {
	v := fmt.Appendf(nil, "value-%06d-", i)
	for j := range 8 + i%57 {
		v = append(v, 'a'+byte((i+j)%26))
	}
	return v
}

// deleted reports whether the demo deletes key i after putting it.
func deleted(i int) bool { return i%10 == 9 }

// run is the demo: write, wait, read through a view, stop, reopen, verify.
func run(ctx context.Context, cfg demoConfig, stderr io.Writer) (demoReport, error) {
	if cfg.writers < 1 || cfg.keys < 0 || cfg.window < 1 {
		return demoReport{}, fmt.Errorf("bad configuration: %d writers, %d keys, window %d", cfg.writers, cfg.keys, cfg.window)
	}
	start := time.Now()
	rec, err := Open(cfg.dir)
	if err != nil {
		return demoReport{}, err
	}
	c, f, err := NewKV(coordinator.Config{FlushSize: 256 << 10}, rec)
	if err != nil {
		return demoReport{}, err
	}
	defer f.Close()
	c.Start()
	stopped := false
	defer func() {
		if !stopped {
			c.Stop(context.Background())
		}
	}()
	stopStats := func() {}
	if cfg.stats {
		stopStats = startStats(c, stderr, cfg.statsEvery)
	}
	defer stopStats()

	if err := write(ctx, c, cfg); err != nil {
		return demoReport{}, err
	}
	// Each writer waited for its own writes; Durable covers them all. The
	// coordinator numbered them from rec.LastEpoch+1 (Config.FirstEpoch,
	// set by NewKV), so epochs continue those of earlier runs.
	r := demoReport{keys: cfg.keys, firstEpoch: rec.LastEpoch + 1, writes: c.Watermarks().Applied - rec.LastEpoch}
	if wm := c.Watermarks(); wm.Durable != wm.Applied {
		return r, fmt.Errorf("after all writes were acknowledged: watermarks %+v, want Durable = Applied", wm)
	}
	if err := verify("view", cfg.keys, func(k string) ([]byte, bool) { return Get(c.View(), k) }); err != nil {
		return r, err
	}
	stopped = true
	if err := c.Stop(ctx); err != nil {
		return r, fmt.Errorf("stop: %w", err)
	}
	stopStats()
	r.segments, r.syncs, r.bytes = f.Segments(), f.Syncs(), f.Bytes()

	again, err := Open(cfg.dir)
	if err != nil {
		return r, fmt.Errorf("reopen: %w", err)
	}
	if len(again.Discarded) > 0 {
		return r, fmt.Errorf("reopen set aside %d segment(s), first %s: %v",
			len(again.Discarded), again.Discarded[0].File, again.Discarded[0].Reason)
	}
	if want := rec.LastEpoch + r.writes; again.LastEpoch != want {
		return r, fmt.Errorf("reopen recovered through epoch %d, want %d", again.LastEpoch, want)
	}
	if err := verify("reopened store", cfg.keys, again.Index.Get); err != nil {
		return r, err
	}
	r.recovered = again.Segments
	for i := range cfg.keys {
		if deleted(i) {
			r.deleted++
		}
	}
	r.elapsed = time.Since(start)
	return r, nil
}

// write runs the writers and returns the first error; that error cancels
// the other writers' context.
func write(ctx context.Context, c *KV, cfg demoConfig) error {
	g, ctx := errgroup.WithContext(ctx)
	ch := c.Channel("default")
	for w := range cfg.writers {
		g.Go(func() error {
			// window holds the handles in flight, oldest first.
			var window []*coordinator.WriteHandle[struct{}]
			settle := func(n int) error {
				for len(window) > n {
					if _, err := window[0].Wait(ctx, coordinator.Durable); err != nil {
						return err
					}
					window = window[1:]
				}
				return nil
			}
			submit := func(op Op) error {
				h, err := ch.Write(ctx, op)
				if err != nil {
					return err
				}
				window = append(window, h)
				return settle(cfg.window - 1)
			}
			for i := w; i < cfg.keys; i += cfg.writers {
				err := submit(Put(keyName(i), value(i)))
				if err == nil && deleted(i) {
					err = submit(Delete(keyName(i)))
				}
				if err != nil {
					return fmt.Errorf("writer %d, key %d: %w", w, i, err)
				}
			}
			if err := settle(0); err != nil {
				return fmt.Errorf("writer %d: %w", w, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// verify checks every key against get.
func verify(what string, keys int, get func(string) ([]byte, bool)) error {
	for i := range keys {
		k := keyName(i)
		got, ok := get(k)
		switch {
		case deleted(i) && ok:
			return fmt.Errorf("%s: Get(%q) = %q, true; want deleted", what, k, got)
		case !deleted(i) && !ok:
			return fmt.Errorf("%s: Get(%q) missing; want %q", what, k, value(i))
		case !deleted(i) && string(got) != string(value(i)):
			return fmt.Errorf("%s: Get(%q) = %q; want %q", what, k, got, value(i))
		}
	}
	return nil
}

// startStats prints a progress line to w every interval until the returned
// function is called; that prints a last line and waits for the goroutine.
// On a terminal each line overwrites the previous one.
func startStats(c *KV, w io.Writer, every time.Duration) (stop func()) {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil {
			tty = fi.Mode()&os.ModeCharDevice != 0
		}
	}
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(every)
		defer t.Stop()
		last, lastAt := c.Watermarks().Applied, time.Now()
		line := func(final bool) {
			s := c.Stats()
			now := time.Now()
			rate := float64(s.Watermarks.Applied-last) / now.Sub(lastAt).Seconds()
			last, lastAt = s.Watermarks.Applied, now
			depth := 0
			for _, ch := range s.Channels {
				depth += ch.Depth
			}
			text := fmt.Sprintf("writes/s=%-8.0f applied=%-7d written=%-7d durable=%-7d queue=%-5d pending=%d syncs=%d",
				rate, s.Watermarks.Applied, s.Watermarks.Written, s.Watermarks.Durable, depth, s.PendingFlushes, s.Syncs)
			switch {
			case tty && final:
				fmt.Fprintf(w, "\r\033[K%s\n", text)
			case tty:
				fmt.Fprintf(w, "\r\033[K%s", text)
			default:
				fmt.Fprintln(w, text)
			}
		}
		for {
			select {
			case <-t.C:
				line(false)
			case <-done:
				line(true)
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		<-exited
	}
}
