package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestWorkloads runs every implementation of every workload for a few
// hundred writes; run checks that each write reached the coordinator's
// flusher, the log file or the database.
func TestWorkloads(t *testing.T) {
	const writers, perWriter = 4, 50
	for _, w := range workloads {
		for _, im := range impls[w] {
			t.Run(string(w)+"/"+im.name, func(t *testing.T) {
				c := cell{workload: w, writers: writers, perWriter: perWriter, dir: t.TempDir()}
				switch w {
				case channels:
					c.channels = 3
				case deltaSize:
					c.flushSize = 1 << 10 // several freezes in 200 writes
				}
				r, err := run(context.Background(), im.name, im.open, c)
				require.NoError(t, err, "run")
				assert.Equal(t, writers*perWriter, r.writes, "writes")
				assert.True(t, r.p50 > 0 && r.p99 >= r.p50, "p50, p99 = %v, %v; want 0 < p50 <= p99", r.p50, r.p99)
			})
		}
	}
}

func TestTable(t *testing.T) {
	rows := []result{
		{workload: durable, writers: 16, impl: "coordinator", writes: 2000, elapsed: time.Second, p50: 1500 * time.Microsecond, p99: 3 * time.Millisecond},
		{workload: durable, writers: 16, impl: "pebble", writes: 1000, elapsed: time.Second, p50: 900 * time.Nanosecond, p99: 2 * time.Millisecond},
		{workload: channels, writers: 4, cell: cell{workload: channels, channels: 16}, impl: "coordinator", writes: 3_000_000, elapsed: time.Second, p50: 70, p99: 900},
	}
	got := table(rows)
	for _, want := range []string{
		"| workload | writers | impl | writes/s | p50 | p99 | coordinator/peer |",
		"| durable | 16 | coordinator | 2.0k | 1.50ms | 3.00ms | — |",
		"| durable | 16 | pebble | 1.0k | 900ns | 2.00ms | 2.00× |",
		"| channels=16 | 4 | coordinator | 3.00M | 70ns | 900ns | — |",
	} {
		assert.Contains(t, got, want, "table(rows)")
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr bool
		check   func(config) bool
	}{
		{[]string{"-quick"}, false, func(c config) bool {
			return c.duration == 200*time.Millisecond && len(c.writers[durable]) == 2 && len(c.workloads) == 5 &&
				len(c.channels) == 2 && len(c.deltaSizes) == 2 && c.charts == ""
		}},
		{[]string{"-quick", "-durable-writers", "8"}, false, func(c config) bool {
			return len(c.writers[durable]) == 1 && c.writers[durable][0] == 8
		}},
		{[]string{"-workloads", "durable", "-duration", "2s"}, false, func(c config) bool {
			return len(c.workloads) == 1 && c.workloads[0] == durable && c.duration == 2*time.Second
		}},
		{[]string{"-channels", "1,8", "-delta-sizes", "64KiB,2MiB,4096", "-charts", "out"}, false, func(c config) bool {
			return len(c.channels) == 2 && c.channels[1] == 8 && c.charts == "out" &&
				len(c.deltaSizes) == 3 && c.deltaSizes[0] == 64<<10 && c.deltaSizes[1] == 2<<20 && c.deltaSizes[2] == 4096
		}},
		{[]string{"-applied-writers", "0"}, true, nil},
		{[]string{"-workloads", "nope"}, true, nil},
		{[]string{"-duration", "-1s"}, true, nil},
		{[]string{"-channels", "x"}, true, nil},
		{[]string{"-delta-sizes", "1TiB"}, true, nil},
		{[]string{"-delta-sizes", "0KiB"}, true, nil},
	}
	for _, tt := range tests {
		cfg, err := parseFlags(tt.args, io.Discard)
		if tt.wantErr {
			assert.Error(t, err, "parseFlags(%q)", tt.args)
			continue
		}
		if assert.NoError(t, err, "parseFlags(%q)", tt.args) {
			assert.True(t, tt.check(cfg), "parseFlags(%q) = %+v; not what the flags say", tt.args, cfg)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int]string{64 << 10: "64KiB", 1 << 20: "1MiB", 1536: "1536B", 3 << 30: "3GiB"} {
		assert.Equal(t, want, formatSize(n), "formatSize(%d)", n)
	}
}

// TestWriteCharts draws both charts from the rows of a short real run and
// checks that each is an SVG naming what it plots.
func TestWriteCharts(t *testing.T) {
	cfg, err := parseFlags([]string{"-quick", "-duration", "20ms", "-durable-writers", "1,2",
		"-workloads", "durable,channels,delta-size", "-dir", t.TempDir()}, io.Discard)
	require.NoError(t, err, "parseFlags")
	rows, err := runAll(context.Background(), cfg, io.Discard)
	require.NoError(t, err, "runAll")
	dir := filepath.Join(t.TempDir(), "charts")
	require.NoError(t, writeCharts(dir, rows, chartNote(cfg)), "writeCharts")
	for file, words := range map[string][]string{
		"writers.svg": {"<svg", "group-fsync-ideal", "bbolt", "pebble", "coordinator", "writes/s"},
		"cost.svg":    {"<svg", "Cost against channels", "Cost against delta size", "64KiB"},
	} {
		data, err := os.ReadFile(filepath.Join(dir, file))
		require.NoError(t, err, "reading %s", file)
		for _, w := range words {
			assert.True(t, strings.Contains(string(data), w), "%s does not contain %q", file, w)
		}
	}
}

// TestWriteChartsSkipsMissing checks that a run without the charts'
// workloads writes no chart.
func TestWriteChartsSkipsMissing(t *testing.T) {
	dir := t.TempDir()
	rows := []result{{workload: applied, writers: 1, impl: "coordinator", writes: 10, elapsed: time.Millisecond}}
	require.NoError(t, writeCharts(dir, rows, "note"))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "charts written without their workloads")
}
