// Command bench compares the coordinator with the commit pipelines of
// pebble and bbolt on three workloads of 8-byte keys and 100-byte values,
// and prints one markdown table:
//
//   - applied: writers submit without waiting; the clock stops when every
//     write is applied. Coordinator: Channel.Write, then WaitFor(Applied).
//     pebble: Set with NoSync on an in-memory file system.
//   - round-trip: each write waits until it is applied before the next.
//     Coordinator: Write then Wait(Applied). pebble: the same Set.
//   - durable: each write waits until it is durable. Coordinator: a
//     flusher appending each frozen delta to a file and fsyncing it;
//     pebble: Set with Sync; bbolt: DB.Batch with its default batching.
//     All on a real directory (-dir, default the system's temp directory).
//
// writes/s is the throughput of all writers together; p50 and p99 are the
// latencies of single calls; the last column is the coordinator's
// throughput divided by the peer's.
//
// Usage, from this directory (its module must be listed in the repository's
// go.work, or run with GOWORK=off):
//
//	go run .          # 1s per cell
//	go run . -quick   # a fast smoke run
//	go run . -duration 3s -durable-writers 1,64,1024 -workloads durable
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// workload names one of the three workloads.
type workload string

const (
	applied   workload = "applied"
	roundTrip workload = "round-trip"
	durable   workload = "durable"
)

var workloads = []workload{applied, roundTrip, durable}

// config is what the flags set.
type config struct {
	duration  time.Duration
	writers   map[workload][]int
	workloads []workload
	dir       string // parent of the durable workload's directories
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "fast run: 200ms per cell and fewer writer counts")
	duration := fs.Duration("duration", time.Second, "how long each cell runs")
	appliedW := fs.String("applied-writers", "1,4,64", "writer counts of the applied workload")
	roundTripW := fs.String("round-trip-writers", "1,64", "writer counts of the round-trip workload")
	durableW := fs.String("durable-writers", "1,16,256", "writer counts of the durable workload")
	only := fs.String("workloads", "applied,round-trip,durable", "workloads to run")
	dir := fs.String("dir", os.TempDir(), "directory for the durable workload's files")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	cfg := config{duration: *duration, writers: map[workload][]int{}, dir: *dir}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *quick {
		if !set["duration"] {
			cfg.duration = 200 * time.Millisecond
		}
		if !set["applied-writers"] {
			*appliedW = "1,4"
		}
		if !set["round-trip-writers"] {
			*roundTripW = "1,16"
		}
		if !set["durable-writers"] {
			*durableW = "1,16"
		}
	}
	if cfg.duration <= 0 {
		return config{}, fmt.Errorf("-duration %v must be positive", cfg.duration)
	}
	for w, s := range map[workload]string{applied: *appliedW, roundTrip: *roundTripW, durable: *durableW} {
		counts, err := parseCounts(s)
		if err != nil {
			return config{}, fmt.Errorf("-%s-writers: %w", w, err)
		}
		cfg.writers[w] = counts
	}
	for _, name := range strings.Split(*only, ",") {
		w := workload(strings.TrimSpace(name))
		if !slices.Contains(workloads, w) {
			return config{}, fmt.Errorf("-workloads: unknown workload %q (want %v)", w, workloads)
		}
		cfg.workloads = append(cfg.workloads, w)
	}
	return cfg, nil
}

func parseCounts(s string) ([]int, error) {
	var counts []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad writer count %q", f)
		}
		counts = append(counts, n)
	}
	return counts, nil
}

// cell says how long one implementation runs one workload.
type cell struct {
	workload workload
	writers  int
	// Either every writer runs for duration, or, if perWriter > 0, makes
	// exactly perWriter writes.
	duration  time.Duration
	perWriter int
	dir       string
}

// result is one row of the table.
type result struct {
	workload workload
	writers  int
	impl     string
	writes   int
	elapsed  time.Duration
	p50, p99 time.Duration
}

func (r result) rate() float64 { return float64(r.writes) / r.elapsed.Seconds() }

// run opens the target, runs the cell's writers, waits for the workload's
// level, and shuts the target down, checking that every write made it.
func run(ctx context.Context, impl string, open opener, c cell) (result, error) {
	dir, err := os.MkdirTemp(c.dir, "coordinator-bench-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	t, err := open(c.workload, dir)
	if err != nil {
		return result{}, fmt.Errorf("%s: open: %w", impl, err)
	}
	lat := make([][]time.Duration, c.writers)
	errs := make([]error, c.writers)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(c.duration)
	for id := range c.writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; c.perWriter == 0 || i < c.perWriter; i++ {
				t0 := time.Now()
				if c.perWriter == 0 && !t0.Before(deadline) {
					return
				}
				if err := t.write(ctx, id, i); err != nil {
					errs[id] = err
					return
				}
				lat[id] = append(lat[id], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	n := 0
	for _, l := range lat {
		n += len(l)
	}
	err = t.settle(ctx, uint64(n))
	elapsed := time.Since(start)
	for _, e := range errs {
		if err == nil {
			err = e
		}
	}
	if ferr := t.finish(ctx, n); err == nil {
		err = ferr
	}
	if err != nil {
		return result{}, fmt.Errorf("%s %s writers=%d: %w", impl, c.workload, c.writers, err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	r := result{workload: c.workload, writers: c.writers, impl: impl, writes: n, elapsed: elapsed}
	if len(all) > 0 {
		r.p50 = all[(len(all)-1)/2]
		r.p99 = all[(len(all)-1)*99/100]
	}
	return r, nil
}

// runAll runs every configured cell, reporting progress to log.
func runAll(ctx context.Context, cfg config, log io.Writer) ([]result, error) {
	var rows []result
	for _, w := range cfg.workloads {
		for _, n := range cfg.writers[w] {
			for _, im := range impls[w] {
				fmt.Fprintf(log, "%s writers=%d %s...\n", w, n, im.name)
				r, err := run(ctx, im.name, im.open, cell{workload: w, writers: n, duration: cfg.duration, dir: cfg.dir})
				if err != nil {
					return rows, err
				}
				rows = append(rows, r)
			}
		}
	}
	return rows, nil
}

// table renders rows as markdown. The last column divides the
// coordinator's throughput by each peer's on the same workload and writers.
func table(rows []result) string {
	var b strings.Builder
	b.WriteString("| workload | writers | impl | writes/s | p50 | p99 | coordinator/peer |\n")
	b.WriteString("|---|---:|---|---:|---:|---:|---:|\n")
	coord := map[string]float64{}
	for _, r := range rows {
		if r.impl == "coordinator" {
			coord[fmt.Sprint(r.workload, r.writers)] = r.rate()
		}
	}
	for _, r := range rows {
		ratio := "—"
		if c, ok := coord[fmt.Sprint(r.workload, r.writers)]; ok && r.impl != "coordinator" && r.rate() > 0 {
			ratio = fmt.Sprintf("%.2f×", c/r.rate())
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s |\n",
			r.workload, r.writers, r.impl, rate(r.rate()), latency(r.p50), latency(r.p99), ratio)
	}
	return b.String()
}

func rate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func latency(d time.Duration) string {
	switch {
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	case d >= time.Microsecond:
		return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond))
	}
	return fmt.Sprintf("%dns", d.Nanoseconds())
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		os.Exit(2)
	}
	rows, err := runAll(context.Background(), cfg, os.Stderr)
	fmt.Print(table(rows))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
