package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestDemo(t *testing.T) {
	dir := t.TempDir()
	prevSegments := 0
	for round := 1; round <= 2; round++ { // the second round reopens the first's store
		var stderr bytes.Buffer
		cfg := demoConfig{dir: dir, writers: 4, keys: 300, window: 8, stats: true, statsEvery: 200 * time.Millisecond}
		r, err := run(context.Background(), cfg, &stderr)
		if err != nil {
			t.Fatalf("round %d: run = %v", round, err)
		}
		if r.keys != 300 || r.deleted != 30 || r.writes != 330 {
			t.Errorf("round %d: report %d keys, %d deleted, %d writes; want 300, 30, 330", round, r.keys, r.deleted, r.writes)
		}
		if r.segments == 0 || r.syncs == 0 || r.recovered != prevSegments+int(r.segments) {
			t.Errorf("round %d: report %d segments, %d syncs, %d reopened; want >0, >0, %d+segments",
				round, r.segments, r.syncs, r.recovered, prevSegments)
		}
		prevSegments = r.recovered
		if !strings.HasPrefix(r.String(), "kvstore: OK: 300 keys (30 deleted), 330 writes,") {
			t.Errorf("report = %q", r)
		}
		// The final progress line is always printed.
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		// Epochs continue across the reopen: the second round's are 331-660.
		end := fmt.Sprint(330 * round)
		if last := lines[len(lines)-1]; !strings.Contains(last, "applied="+end) || !strings.Contains(last, "durable="+end) {
			t.Errorf("round %d: last progress line = %q; want applied=%s and durable=%s", round, last, end, end)
		}
		if want := fmt.Sprintf("epochs %d-%s", 330*(round-1)+1, end); !strings.HasSuffix(r.String(), want) {
			t.Errorf("round %d: report = %q; want it to end with %q", round, r, want)
		}
	}
	rec := mustOpen(t, dir)
	if rec.LastEpoch != 660 || rec.Index.Len() != 270 {
		t.Errorf("after two rounds: last epoch %d, %d keys; want 660, 270", rec.LastEpoch, rec.Index.Len())
	}
}

func TestDemoWithoutStats(t *testing.T) {
	var stderr bytes.Buffer
	cfg := demoConfig{dir: t.TempDir(), writers: 1, keys: 20, window: 1}
	if _, err := run(context.Background(), cfg, &stderr); err != nil {
		t.Fatalf("run = %v", err)
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr = %q; want nothing with stats off", stderr.String())
	}
}

func TestDemoRejectsBadConfig(t *testing.T) {
	for _, cfg := range []demoConfig{
		{dir: t.TempDir(), writers: 0, keys: 1, window: 1},
		{dir: t.TempDir(), writers: 1, keys: 1, window: 0},
	} {
		if _, err := run(context.Background(), cfg, nil); err == nil {
			t.Errorf("run(%+v) = nil; want an error", cfg)
		}
	}
}

func TestVerifyReportsMismatches(t *testing.T) {
	good := func(k string) ([]byte, bool) {
		var i int
		if _, err := fmt.Sscanf(k, "key-%d", &i); err != nil {
			t.Fatal(err)
		}
		if deleted(i) {
			return nil, false
		}
		return value(i), true
	}
	if err := verify("test", 50, good); err != nil {
		t.Fatalf("verify(correct store) = %v", err)
	}
	tests := []struct {
		name string
		get  func(string) ([]byte, bool)
		want string
	}{
		{"missing", func(k string) ([]byte, bool) {
			if k == keyName(3) {
				return nil, false
			}
			return good(k)
		}, `Get("key-000003") missing`},
		{"wrong value", func(k string) ([]byte, bool) {
			if k == keyName(4) {
				return []byte("nope"), true
			}
			return good(k)
		}, `Get("key-000004") = "nope"`},
		{"deleted key present", func(k string) ([]byte, bool) {
			if k == keyName(9) {
				return []byte("zombie"), true
			}
			return good(k)
		}, "want deleted"},
	}
	for _, tt := range tests {
		err := verify("test", 50, tt.get)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: verify = %v; want an error containing %q", tt.name, err, tt.want)
		}
	}
}
