// Command bench compares the coordinator with the commit pipelines of
// pebble and bbolt on three workloads of 8-byte keys and 100-byte values,
// measures what the coordinator's cost per write does as channels and the
// delta size grow, prints one markdown table and, with -charts, draws SVG
// charts of it:
//
//   - applied: writers submit without waiting; the clock stops when every
//     write is applied. Coordinator: Channel.Write, then WaitFor(Applied).
//     pebble: Set with NoSync on an in-memory file system.
//   - round-trip: each write waits until it is applied before the next.
//     Coordinator: Write then Wait(Applied). pebble: the same Set.
//   - durable: each write waits until it is durable. Coordinator: a
//     flusher appending each frozen delta to a file and fsyncing it;
//     pebble: Set with Sync; bbolt: DB.Batch with its default batching;
//     group-fsync-ideal: one goroutine appends every queued write with one
//     write call and one fsync, applying nothing (the bound for any group
//     commit on this file system). All on a real directory (-dir, default
//     the system's temp directory).
//   - channels: the applied workload of the coordinator alone, 4 writers
//     spreading their writes round-robin over -channels channels.
//   - delta-size: the applied workload of the coordinator alone, 4 writers,
//     with each of -delta-sizes as Config.FlushSize.
//
// writes/s is the throughput of all writers together; p50 and p99 are the
// latencies of single calls; the last column is the coordinator's
// throughput divided by the peer's.
//
// -charts DIR writes DIR/writers.svg (durable writes/s against writers, one
// line per implementation) and DIR/cost.svg (ns per write against channels
// and against delta size) from the same run.
//
// Usage, from this directory (its module must be listed in the repository's
// go.work, or run with GOWORK=off):
//
//	go run .          # 1s per cell
//	go run . -quick   # a fast smoke run
//	go run . -duration 3s -durable-writers 1,64,1024 -workloads durable
//	go run . -duration 2s -durable-writers 1,4,16,64,256 -charts charts
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
	"time"

	"golang.org/x/sync/errgroup"
)

// workload names one of the three workloads.
type workload string

const (
	applied   workload = "applied"
	roundTrip workload = "round-trip"
	durable   workload = "durable"
	channels  workload = "channels"
	deltaSize workload = "delta-size"
)

var workloads = []workload{applied, roundTrip, durable, channels, deltaSize}

// scalingWriters is the number of writers of the channels and delta-size
// workloads, as in the module's BenchmarkScaling.
const scalingWriters = 4

// config is what the flags set.
type config struct {
	duration   time.Duration
	writers    map[workload][]int
	channels   []int // channel counts of the channels workload
	deltaSizes []int // flush sizes of the delta-size workload, in bytes
	workloads  []workload
	dir        string // parent of the durable workload's directories
	charts     string // directory for the SVG charts; "" for none
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "fast run: 200ms per cell and fewer writer counts")
	duration := fs.Duration("duration", time.Second, "how long each cell runs")
	appliedW := fs.String("applied-writers", "1,4,64", "writer counts of the applied workload")
	roundTripW := fs.String("round-trip-writers", "1,64", "writer counts of the round-trip workload")
	durableW := fs.String("durable-writers", "1,16,256", "writer counts of the durable workload")
	channelCounts := fs.String("channels", "1,4,16,64", "channel counts of the channels workload")
	sizes := fs.String("delta-sizes", "64KiB,1MiB,64MiB", "flush sizes of the delta-size workload")
	only := fs.String("workloads", "applied,round-trip,durable,channels,delta-size", "workloads to run")
	dir := fs.String("dir", os.TempDir(), "directory for the durable workload's files")
	charts := fs.String("charts", "", "directory to write writers.svg and cost.svg to (default: no charts)")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	cfg := config{duration: *duration, writers: map[workload][]int{}, dir: *dir, charts: *charts}
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
		if !set["channels"] {
			*channelCounts = "1,16"
		}
		if !set["delta-sizes"] {
			*sizes = "64KiB,64MiB"
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
	var err error
	if cfg.channels, err = parseCounts(*channelCounts); err != nil {
		return config{}, fmt.Errorf("-channels: %w", err)
	}
	if cfg.deltaSizes, err = parseSizes(*sizes); err != nil {
		return config{}, fmt.Errorf("-delta-sizes: %w", err)
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
			return nil, fmt.Errorf("bad count %q", f)
		}
		counts = append(counts, n)
	}
	return counts, nil
}

// sizeUnits are the suffixes parseSizes accepts, largest first.
var sizeUnits = []struct {
	suffix string
	bytes  int
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

// parseSizes parses a list of sizes such as "64KiB,1MiB,4096".
func parseSizes(s string) ([]int, error) {
	var sizes []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		num, unit := f, 1
		for _, u := range sizeUnits {
			if n, ok := strings.CutSuffix(f, u.suffix); ok {
				num, unit = n, u.bytes
				break
			}
		}
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad size %q", f)
		}
		sizes = append(sizes, n*unit)
	}
	return sizes, nil
}

// formatSize renders a size with the largest unit that divides it.
func formatSize(n int) string {
	for _, u := range sizeUnits {
		if n%u.bytes == 0 && n >= u.bytes {
			return strconv.Itoa(n/u.bytes) + u.suffix
		}
	}
	return strconv.Itoa(n) + "B"
}

// cell says how long one implementation runs one workload.
type cell struct {
	workload workload
	writers  int
	// channels and flushSize configure the coordinator; 0 means the
	// defaults (one channel, Config's default FlushSize).
	channels  int
	flushSize int
	// Either every writer runs for duration, or, if perWriter > 0, makes
	// exactly perWriter writes.
	duration  time.Duration
	perWriter int
	dir       string
}

// setting names what the cell varies besides writers: "channels=16",
// "delta-size=64KiB", or "" for the peer workloads.
func (c cell) setting() string {
	switch c.workload {
	case channels:
		return fmt.Sprintf("channels=%d", c.channels)
	case deltaSize:
		return "delta-size=" + formatSize(c.flushSize)
	}
	return ""
}

// result is one row of the table.
type result struct {
	workload workload
	writers  int
	cell     cell
	impl     string
	writes   int
	elapsed  time.Duration
	p50, p99 time.Duration
}

func (r result) rate() float64 { return float64(r.writes) / r.elapsed.Seconds() }

// nsPerWrite is the elapsed time divided among all writes.
func (r result) nsPerWrite() float64 { return float64(r.elapsed.Nanoseconds()) / float64(r.writes) }

// label is the table's workload column: the workload and its setting.
func (r result) label() string {
	if s := r.cell.setting(); s != "" {
		return s
	}
	return string(r.workload)
}

// run opens the target, runs the cell's writers, waits for the workload's
// level, and shuts the target down, checking that every write made it.
func run(ctx context.Context, impl string, open opener, c cell) (result, error) {
	dir, err := os.MkdirTemp(c.dir, "coordinator-bench-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	t, err := open(c, dir)
	if err != nil {
		return result{}, fmt.Errorf("%s: open: %w", impl, err)
	}
	lat := make([][]time.Duration, c.writers)
	// The first writer to fail cancels the others' context, and Wait
	// returns its error.
	g, gctx := errgroup.WithContext(ctx)
	start := time.Now()
	deadline := start.Add(c.duration)
	for id := range c.writers {
		g.Go(func() error {
			for i := 0; c.perWriter == 0 || i < c.perWriter; i++ {
				t0 := time.Now()
				if c.perWriter == 0 && !t0.Before(deadline) {
					return nil
				}
				if err := t.write(gctx, id, i); err != nil {
					return fmt.Errorf("writer %d, write %d: %w", id, i, err)
				}
				lat[id] = append(lat[id], time.Since(t0))
			}
			return nil
		})
	}
	werr := g.Wait()
	n := 0
	for _, l := range lat {
		n += len(l)
	}
	err = t.settle(ctx, uint64(n))
	elapsed := time.Since(start)
	if werr != nil {
		err = werr
	}
	if ferr := t.finish(ctx, n); err == nil {
		err = ferr
	}
	if err != nil {
		return result{}, fmt.Errorf("%s %s writers=%d: %w", impl, c.workload, c.writers, err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	r := result{workload: c.workload, writers: c.writers, cell: c, impl: impl, writes: n, elapsed: elapsed}
	if len(all) > 0 {
		r.p50 = all[(len(all)-1)/2]
		r.p99 = all[(len(all)-1)*99/100]
	}
	return r, nil
}

// cells lists the cells of workload w that cfg asks for.
func (cfg config) cells(w workload) []cell {
	var cells []cell
	base := cell{workload: w, duration: cfg.duration, dir: cfg.dir}
	switch w {
	case channels:
		for _, n := range cfg.channels {
			c := base
			c.writers, c.channels = scalingWriters, n
			cells = append(cells, c)
		}
	case deltaSize:
		for _, s := range cfg.deltaSizes {
			c := base
			c.writers, c.flushSize = scalingWriters, s
			cells = append(cells, c)
		}
	default:
		for _, n := range cfg.writers[w] {
			c := base
			c.writers = n
			cells = append(cells, c)
		}
	}
	return cells
}

// runAll runs every configured cell, reporting progress to log.
func runAll(ctx context.Context, cfg config, log io.Writer) ([]result, error) {
	var rows []result
	for _, w := range cfg.workloads {
		for _, c := range cfg.cells(w) {
			for _, im := range impls[w] {
				fmt.Fprintf(log, "%s writers=%d %s %s...\n", w, c.writers, c.setting(), im.name)
				r, err := run(ctx, im.name, im.open, c)
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
			coord[fmt.Sprint(r.label(), r.writers)] = r.rate()
		}
	}
	for _, r := range rows {
		ratio := "—"
		if c, ok := coord[fmt.Sprint(r.label(), r.writers)]; ok && r.impl != "coordinator" && r.rate() > 0 {
			ratio = fmt.Sprintf("%.2f×", c/r.rate())
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s |\n",
			r.label(), r.writers, r.impl, rate(r.rate()), latency(r.p50), latency(r.p99), ratio)
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
	if err == nil && cfg.charts != "" {
		err = writeCharts(cfg.charts, rows, chartNote(cfg))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
