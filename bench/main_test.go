package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

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
				r, err := run(context.Background(), im.name, im.open,
					cell{workload: w, writers: writers, perWriter: perWriter, dir: t.TempDir()})
				if err != nil {
					t.Fatalf("run = %v; want nil", err)
				}
				if r.writes != writers*perWriter {
					t.Errorf("writes = %d; want %d", r.writes, writers*perWriter)
				}
				if r.p50 <= 0 || r.p99 < r.p50 {
					t.Errorf("p50, p99 = %v, %v; want 0 < p50 <= p99", r.p50, r.p99)
				}
			})
		}
	}
}

func TestTable(t *testing.T) {
	rows := []result{
		{workload: durable, writers: 16, impl: "coordinator", writes: 2000, elapsed: time.Second, p50: 1500 * time.Microsecond, p99: 3 * time.Millisecond},
		{workload: durable, writers: 16, impl: "pebble", writes: 1000, elapsed: time.Second, p50: 900 * time.Nanosecond, p99: 2 * time.Millisecond},
	}
	got := table(rows)
	for _, want := range []string{
		"| workload | writers | impl | writes/s | p50 | p99 | coordinator/peer |",
		"| durable | 16 | coordinator | 2.0k | 1.50ms | 3.00ms | — |",
		"| durable | 16 | pebble | 1.0k | 900ns | 2.00ms | 2.00× |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table(rows) = \n%s\nwant a line %q", got, want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr bool
		check   func(config) bool
	}{
		{[]string{"-quick"}, false, func(c config) bool {
			return c.duration == 200*time.Millisecond && len(c.writers[durable]) == 2 && len(c.workloads) == 3
		}},
		{[]string{"-quick", "-durable-writers", "8"}, false, func(c config) bool {
			return len(c.writers[durable]) == 1 && c.writers[durable][0] == 8
		}},
		{[]string{"-workloads", "durable", "-duration", "2s"}, false, func(c config) bool {
			return len(c.workloads) == 1 && c.workloads[0] == durable && c.duration == 2*time.Second
		}},
		{[]string{"-applied-writers", "0"}, true, nil},
		{[]string{"-workloads", "nope"}, true, nil},
		{[]string{"-duration", "-1s"}, true, nil},
	}
	for _, tt := range tests {
		cfg, err := parseFlags(tt.args, io.Discard)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseFlags(%q) error = %v; want error %v", tt.args, err, tt.wantErr)
			continue
		}
		if err == nil && !tt.check(cfg) {
			t.Errorf("parseFlags(%q) = %+v; not what the flags say", tt.args, cfg)
		}
	}
}
