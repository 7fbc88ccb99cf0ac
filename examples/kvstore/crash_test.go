package main

// The crash test: a child process (this test binary, running
// TestCrashChild) writes to a store and prints every write it saw become
// Durable; the parent kills it with SIGKILL at a random moment, recovers the
// directory with Open and checks that every acknowledged write survived and
// that nothing recovered is corrupt. Each directory goes through several
// crashes in a row, so recovery after recovery is exercised too.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/groupcommit/coordinator"
	"golang.org/x/sync/errgroup"
)

var (
	crashPoints = flag.Int("crash.points", 50, "number of crash points TestCrash runs")
	crashSeed   = flag.Uint64("crash.seed", 0, "seed of TestCrash's random choices (0: from the clock)")
)

const (
	crashEnvDir    = "KVSTORE_CRASH_DIR"    // the child's store directory
	crashEnvConfig = "KVSTORE_CRASH_CONFIG" // "writers,flushSize,syncAlways,point"
	crashRounds    = 5                      // crashes per directory
	crashKeys      = 8                      // keys each child writer overwrites
	crashBudget    = 20_000                 // writes per child writer if it is never killed
)

// crashValue is the value of version v of key: self-describing, so that a
// recovered value can be checked on its own.
func crashValue(key string, v uint64) []byte {
	h := crc32.ChecksumIEEE(fmt.Appendf(nil, "%s@%d", key, v))
	b := fmt.Appendf(nil, "%s@%d:", key, v)
	for i := range int(h % 100) {
		b = append(b, 'a'+byte((h>>(i%16)+uint32(i))%26))
	}
	return b
}

// parseCrashValue returns the version of a value of key, and whether the
// value is exactly what crashValue makes for it.
func parseCrashValue(key string, b []byte) (uint64, bool) {
	rest, ok := bytes.CutPrefix(b, []byte(key+"@"))
	if !ok {
		return 0, false
	}
	digits, _, ok := bytes.Cut(rest, []byte(":"))
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(string(digits), 10, 64)
	if err != nil || !bytes.Equal(b, crashValue(key, v)) {
		return 0, false
	}
	return v, true
}

// crashKey names key j of writer w. tempKey names the key that writer w of
// the child at crash point p puts and then deletes at its write n; no other
// child writes it.
func crashKey(w, j int) string   { return fmt.Sprintf("w%d-k%d", w, j) }
func tempKey(w, p, n int) string { return fmt.Sprintf("w%d-t%d-%d", w, p, n) }
func isTempKey(k string) bool    { return strings.Contains(k, "-t") }

// TestCrashChild is the child process of TestCrash; it is skipped unless
// TestCrash runs it.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnvDir)
	if dir == "" {
		t.Skip("child process of TestCrash")
	}
	var writers, flushSize, point int
	var always bool
	if _, err := fmt.Sscanf(os.Getenv(crashEnvConfig), "%d,%d,%t,%d", &writers, &flushSize, &always, &point); err != nil {
		t.Fatalf("bad %s: %v", crashEnvConfig, err)
	}
	rec, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := coordinator.Config{FlushSize: flushSize}
	if always {
		cfg.Sync = coordinator.SyncAlways
	}
	c, f, err := NewKV(cfg, rec)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	defer f.Close()

	var mu sync.Mutex // one ack line per write(2), never interleaved
	ack := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if _, err := fmt.Fprintf(os.Stdout, format, args...); err != nil {
			panic(err) // the parent is gone
		}
	}
	ctx := context.Background()
	ch := c.Channel("default")
	durable := func(op Op) error {
		h, err := ch.Write(ctx, op)
		if err != nil {
			return err
		}
		_, err = h.Wait(ctx, coordinator.Durable)
		return err
	}
	var g errgroup.Group
	for w := range writers {
		g.Go(func() error {
			// Continue each key's versions from what was recovered.
			next := make([]uint64, crashKeys)
			for j := range next {
				if b, ok := rec.Index.Get(crashKey(w, j)); ok {
					v, ok := parseCrashValue(crashKey(w, j), b)
					if !ok {
						return fmt.Errorf("recovered %s = %q: corrupt", crashKey(w, j), b)
					}
					next[j] = v
				}
			}
			for n := range crashBudget {
				if n%7 == 6 {
					k := tempKey(w, point, n)
					if err := durable(Put(k, crashValue(k, 1))); err != nil {
						return err
					}
					ack("ack put %s %s\n", k, crashValue(k, 1))
					if err := durable(Delete(k)); err != nil {
						return err
					}
					ack("ack del %s\n", k)
					continue
				}
				j := n % crashKeys
				k := crashKey(w, j)
				next[j]++
				v := crashValue(k, next[j])
				if err := durable(Put(k, v)); err != nil {
					return err
				}
				ack("ack put %s %s\n", k, v)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Error(err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// crashModel is what the parent knows about one directory across crashes.
type crashModel struct {
	acked     map[string]uint64 // highest version acknowledged Durable per key
	ackedDel  map[string]bool   // temp keys whose delete was acknowledged
	recovered map[string]uint64 // versions the last recovery returned
	lastEpoch uint64            // the last recovery's LastEpoch
}

// crashTotals sums up a TestCrash run.
type crashTotals struct {
	points, byAcks, byDelay, finished int
	acks                              int // ack lines received
	checked                           int // acknowledged writes checked after recoveries
	lost                              int // acknowledged writes missing
	keys                              int // recovered keys verified
	segments                          int
	tempFiles                         int // temp files left by a kill mid-FlushDelta
}

func TestCrash(t *testing.T) {
	if os.Getenv(crashEnvDir) != "" {
		t.Skip("running as a child")
	}
	seed := *crashSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -crash.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x6b7673746f7265))
	var tot crashTotals
	for tot.points < *crashPoints {
		dir := t.TempDir()
		m := &crashModel{acked: map[string]uint64{}, ackedDel: map[string]bool{}, recovered: map[string]uint64{}}
		for r := 0; r < crashRounds && tot.points < *crashPoints; r++ {
			crashPoint(t, rng, dir, m, &tot)
			if t.Failed() {
				t.Fatalf("stopping at crash point %d (seed %d)", tot.points, seed)
			}
		}
	}
	t.Logf("%d crash points (%d killed after N acks, %d after a delay, %d children finished first); "+
		"%d acknowledged writes, %d checks of acknowledged writes, %d lost; %d recovered keys verified; "+
		"%d temp files of interrupted flushes removed; last store %d segments",
		tot.points, tot.byAcks, tot.byDelay, tot.finished, tot.acks, tot.checked, tot.lost, tot.keys,
		tot.tempFiles, tot.segments)
	if tot.lost != 0 {
		t.Errorf("%d acknowledged writes lost", tot.lost)
	}
}

// crashPoint runs one child in dir, kills it at a random moment, recovers
// and checks the directory against m, and updates m.
func crashPoint(t *testing.T, rng *rand.Rand, dir string, m *crashModel, tot *crashTotals) {
	t.Helper()
	tot.points++
	writers := 1 + rng.IntN(8)
	flushSize := []int{128, 4 << 10, 64 << 10, 1 << 20}[rng.IntN(4)]
	always := rng.IntN(4) == 0
	byAcks := rng.IntN(3) != 0
	target := 1 + rng.IntN(400)
	delay := time.Duration(rng.IntN(150)) * time.Millisecond
	desc := fmt.Sprintf("point %d: %d writers, FlushSize %d, SyncAlways %v, ", tot.points, writers, flushSize, always)
	if byAcks {
		desc += fmt.Sprintf("kill after %d acks", target)
	} else {
		desc += fmt.Sprintf("kill after %v", delay)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnvDir+"="+dir,
		fmt.Sprintf("%s=%d,%d,%t,%d", crashEnvConfig, writers, flushSize, always, tot.points))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var killOnce sync.Once
	kill := func() { killOnce.Do(func() { cmd.Process.Signal(syscall.SIGKILL) }) }
	if !byAcks {
		timer := time.AfterFunc(delay, kill)
		defer timer.Stop()
	}

	// Read every complete line; one cut short by the kill is not an ack.
	acks, other := 0, []string(nil)
	br := bufio.NewReader(stdout)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if err != io.EOF {
				t.Errorf("%s: reading the child: %v", desc, err)
			}
			break
		}
		rest, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "ack ")
		if !ok {
			other = append(other, line)
			continue
		}
		if err := m.record(rest); err != nil {
			t.Fatalf("%s: bad ack line %q: %v", desc, line, err)
		}
		acks++
		if byAcks && acks == target {
			kill()
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		tot.finished++
	case errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL:
		if byAcks {
			tot.byAcks++
		} else {
			tot.byDelay++
		}
	default:
		t.Fatalf("%s: child failed: %v\nstdout:\n%s\nstderr:\n%s", desc, err, strings.Join(other, ""), stderr.String())
	}
	tot.acks += acks
	m.check(t, dir, desc, tot)
}

// record adds one ack line ("put KEY VALUE" or "del KEY") to the model.
func (m *crashModel) record(line string) error {
	f := strings.Fields(line)
	switch {
	case len(f) == 3 && f[0] == "put":
		v, ok := parseCrashValue(f[1], []byte(f[2]))
		if !ok {
			return errors.New("value does not match its key")
		}
		m.acked[f[1]] = max(m.acked[f[1]], v)
	case len(f) == 2 && f[0] == "del":
		m.ackedDel[f[1]] = true
	default:
		return errors.New("unknown ack")
	}
	return nil
}

// check recovers dir and compares it with the model.
func (m *crashModel) check(t *testing.T, dir, desc string, tot *crashTotals) {
	t.Helper()
	rec, err := Open(dir)
	if err != nil {
		t.Fatalf("%s: Open = %v", desc, err)
	}
	// A killed process loses no page cache, and segments are renamed into
	// place whole: there is nothing torn to set aside.
	for _, d := range rec.Discarded {
		t.Errorf("%s: recovery set aside %s: %v", desc, d.File, d.Reason)
	}
	if rec.LastEpoch < m.lastEpoch {
		t.Errorf("%s: recovered through epoch %d, before the previous recovery's %d", desc, rec.LastEpoch, m.lastEpoch)
	}
	m.lastEpoch = rec.LastEpoch
	tot.segments = rec.Segments
	tot.tempFiles += rec.TempFiles

	// Nothing recovered is corrupt.
	got := map[string]uint64{}
	for k, b := range rec.Index.All() {
		v, ok := parseCrashValue(k, b)
		if !ok || isTempKey(k) && v != 1 {
			t.Errorf("%s: recovered %s = %q: corrupt", desc, k, b)
		}
		got[k] = v
		tot.keys++
	}
	// Every acknowledged write is there: the version acknowledged last
	// or a later one. (A temp key's put may be followed by its delete,
	// acknowledged or not, so only its delete is checked.)
	for k, v := range m.acked {
		if isTempKey(k) {
			continue
		}
		tot.checked++
		if got[k] < v {
			tot.lost++
			t.Errorf("%s: acknowledged %s version %d; recovered version %d", desc, k, v, got[k])
		}
	}
	for k := range m.ackedDel {
		tot.checked++
		if _, ok := got[k]; ok {
			tot.lost++
			t.Errorf("%s: acknowledged delete of %s; recovered it", desc, k)
		}
	}
	// Recovery never goes back on what an earlier recovery returned.
	for k, v := range m.recovered {
		if got[k] < v && !isTempKey(k) {
			t.Errorf("%s: %s went back from version %d to %d", desc, k, v, got[k])
		}
	}
	m.recovered = got
}
