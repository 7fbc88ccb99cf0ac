package coordinatortest_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/groupcommit/coordinator/coordinatortest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var long = flag.Bool("long", false, "run many more workloads")

// recorder is a TB that records failures and logs instead of failing the
// test.
type recorder struct {
	*testing.T
	failures, logs []string
}

func (r *recorder) Logf(format string, args ...any) {
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

// check runs the kit on h and returns its failure, nil if it passed.
func check(t *testing.T, h counterHarness, opts ...coordinatortest.Option) *coordinatortest.Failure {
	t.Helper()
	opts = append([]coordinatortest.Option{coordinatortest.Timeout(10 * time.Second), coordinatortest.ShrinkTime(10 * time.Second)}, opts...)
	var err error
	within(t, 2*time.Minute, "coordinatortest.Check", func() { err = coordinatortest.Check(h, opts...) })
	if err == nil {
		return nil
	}
	var f *coordinatortest.Failure
	require.ErrorAs(t, err, &f)
	return f
}

func TestCorrectStorePasses(t *testing.T) {
	n := 10
	if *long {
		n = 200
	}
	assert.Nil(t, check(t, newCounterHarness(mistakes{}), coordinatortest.Iterations(n)))
}

func TestModelFreeRunPasses(t *testing.T) {
	h := newCounterHarness(mistakes{})
	h.Init, h.Apply = nil, nil
	assert.Nil(t, check(t, h, coordinatortest.Iterations(4)))
}

func TestHarnessValidated(t *testing.T) {
	h := newCounterHarness(mistakes{})
	h.Read = nil
	assert.ErrorContains(t, coordinatortest.Check(h), "Harness needs Open, Write and Read")
	h = newCounterHarness(mistakes{})
	h.Apply = nil
	assert.ErrorContains(t, coordinatortest.Check(h), "both Init and Apply")
}

// TestOpenFailure checks that a store that cannot be opened is reported as
// such, before any operation.
func TestOpenFailure(t *testing.T) {
	h := newCounterHarness(mistakes{})
	h.Open = func(dir string) (*coordinatortest.Store[add, struct{}, counterCtx, *counterFrozen, *counterFrozen, *counterReader, *counterSnap], error) {
		return nil, errors.New("disk on fire")
	}
	f := check(t, h, coordinatortest.Seed(1))
	require.NotNil(t, f)
	assert.Equal(t, "Open", f.Contract)
	assert.Contains(t, f.Detail, "disk on fire")
	assert.Equal(t, "when opening the empty store", f.Op)
}

// TestRunReportsThroughTB checks that Run passes a failure to Fatalf once,
// as the full report, and logs a pass.
func TestRunReportsThroughTB(t *testing.T) {
	rec := &recorder{T: t}
	within(t, 2*time.Minute, "coordinatortest.Run", func() {
		coordinatortest.Run(rec, newCounterHarness(mistakes{negativeSize: true}), coordinatortest.Seed(1))
	})
	require.Len(t, rec.failures, 1)
	assert.True(t, strings.HasPrefix(rec.failures[0], "coordinatortest: EstimateSize: "), rec.failures[0])
	assert.Contains(t, rec.failures[0], "shortest failing workload found")

	rec = &recorder{T: t}
	within(t, 2*time.Minute, "coordinatortest.Run", func() {
		coordinatortest.Run(rec, newCounterHarness(mistakes{}), coordinatortest.Iterations(2))
	})
	assert.Empty(t, rec.failures)
}

// TestPlantedMistakes plants one mistake at a time in the counter store and
// checks that the kit names the contract it breaks. The seeds are fixed so
// that the workloads are the same on every run.
func TestPlantedMistakes(t *testing.T) {
	tests := []struct {
		name     string
		m        mistakes
		contract string
		detail   string
	}{
		{"retry-unsafe FlushDelta", mistakes{retryUnsafe: true}, "FlushDelta retry", "must be safe to call again"},
		{"frozen view aliases the next delta", mistakes{aliasFreeze: true}, "Freeze", "must not share state with the next delta"},
		{"context lost at Freeze", mistakes{lostContext: true}, "Freeze context", "Freeze must carry in that context"},
		{"storage not synced", mistakes{noSync: true}, "durability", "acknowledged Durable"},
		{"negative EstimateSize", mistakes{negativeSize: true}, "EstimateSize", "never negative"},
		{"EstimateSize that never grows", mistakes{flatSize: true}, "EstimateSize", "must grow with writes"},
		{"epochs not continued", mistakes{forgetEpoch: true}, "reopen", "Store.LastEpoch must be the last epoch it holds"},
		{"frozen data aliases the next delta", mistakes{aliasData: true}, "FlushDelta snapshot", "or the frozen data Freeze returned for it changed before FlushDelta wrote it"},
		{"snapshot that loses earlier deltas", mistakes{lastOnly: true}, "FlushDelta snapshot", "a snapshot holding every delta written so far"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := check(t, newCounterHarness(tt.m), coordinatortest.Seed(1), coordinatortest.Iterations(30))
			require.NotNil(t, f, "the kit did not catch the mistake")
			t.Logf("the kit's report:\n%v", f)
			report := f.Error()
			assert.Equal(t, tt.contract, f.Contract, "the report names another contract:\n%s", report)
			assert.True(t, strings.HasPrefix(report, "coordinatortest: "+tt.contract+": "), report)
			assert.Contains(t, f.Detail, tt.detail)
			assert.Contains(t, report, fmt.Sprintf("replay with -coordinatortest.seed=%#x", f.Seed))
			assert.Contains(t, report, "shortest failing workload found")
			assert.Regexp(t, `^(during operation \d+: |when opening the empty store|at the final Stop and reopen)`, f.Op)
		})
	}
}

// TestSeedFlag checks that -coordinatortest.seed replays the one workload
// of its seed, even when the test asks for more.
func TestSeedFlag(t *testing.T) {
	require.NoError(t, flag.Set("coordinatortest.seed", "0x7"))
	defer flag.Set("coordinatortest.seed", "0")
	rec := &recorder{T: t}
	within(t, 2*time.Minute, "coordinatortest.Run", func() {
		coordinatortest.Run(rec, newCounterHarness(mistakes{}), coordinatortest.Iterations(50))
	})
	assert.Empty(t, rec.failures)
	assert.Equal(t, []string{"coordinatortest: the workload of 40 operations of seed 0x7 passed"}, rec.logs)

	f := check(t, newCounterHarness(mistakes{negativeSize: true}), coordinatortest.Seed(99))
	require.NotNil(t, f)
	assert.Equal(t, uint64(7), f.Seed, "the flag overrides Seed")
}

// TestNoFaults checks that the retry-safety checks come from the injected
// failures: without them, a FlushDelta that appends again on retry is never
// retried, and passes.
func TestNoFaults(t *testing.T) {
	h := newCounterHarness(mistakes{retryUnsafe: true})
	assert.Nil(t, check(t, h, coordinatortest.Seed(1), coordinatortest.Iterations(30), coordinatortest.NoFaults()))
	assert.NotNil(t, check(t, h, coordinatortest.Seed(1), coordinatortest.Iterations(30)))
}

// TestHangingFlusher checks that a FlushDelta that never returns (until
// its context is canceled) fails the run, with a goroutine dump, instead of
// hanging it. The bubble's clock runs the kit's deadlines in no real time.
func TestHangingFlusher(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := check(t, newCounterHarness(mistakes{hangFlush: true}), coordinatortest.Seed(1),
			coordinatortest.Timeout(10*time.Second), coordinatortest.ShrinkTime(time.Minute))
		require.NotNil(t, f)
		assert.Equal(t, "liveness", f.Contract, f.Error())
		assert.Contains(t, f.Detail, "did not return within 10s")
		assert.Contains(t, f.Detail, "goroutine ", "no goroutine dump")
	})
}

// TestShrinking checks that a failure is reported with a workload much
// shorter than the one that found it, and that the printed seed replays it.
func TestShrinking(t *testing.T) {
	h := newCounterHarness(mistakes{negativeSize: true})
	f := check(t, h, coordinatortest.Steps(60))
	require.NotNil(t, f)
	report := f.Error()
	var shown, total int
	_, err := fmt.Sscanf(report[strings.Index(report, "shortest failing workload found"):], "shortest failing workload found (%d of %d operations)", &shown, &total)
	require.NoError(t, err, report)
	assert.Equal(t, 60, total)
	assert.LessOrEqual(t, shown, 2, "a negative size shows after one write:\n%s", report)

	replay := check(t, h, coordinatortest.Seed(f.Seed), coordinatortest.Steps(60))
	require.NotNil(t, replay)
	assert.Equal(t, f.Seed, replay.Seed)
	assert.Equal(t, "EstimateSize", replay.Contract)
}

// TestShrinkingBatches checks that shrinking also removes the writes of a
// batch that the failure does not need: only the write of key "f" makes
// EstimateSize negative, so one write must be left.
func TestShrinkingBatches(t *testing.T) {
	f := check(t, newCounterHarness(mistakes{negativeKey: "f"}), coordinatortest.Seed(1), coordinatortest.Iterations(30))
	require.NotNil(t, f)
	require.Equal(t, "EstimateSize", f.Contract, f.Error())
	assert.Equal(t, 1, strings.Count(f.Workload, "{Key:"), "more writes than the failure needs:\n%s", f.Workload)
	assert.Contains(t, f.Workload, "{Key:f ")
}

// TestRacyReader runs the kit on a store whose live reader skips the
// delta's lock, in a child process built with the race detector, and
// checks that the race is reported with the kit's reading goroutine in it.
func TestRacyReader(t *testing.T) {
	if os.Getenv("COORDINATORTEST_RACY_CHILD") == "1" {
		coordinatortest.Run(t, newCounterHarness(mistakes{racyReader: true}), coordinatortest.Seed(1), coordinatortest.Iterations(20))
		return
	}
	if !raceEnabled {
		t.Skip("needs -race")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestRacyReader$", "-test.count=1")
	cmd.Env = append(os.Environ(), "COORDINATORTEST_RACY_CHILD=1")
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "the child passed:\n%s", out)
	require.NoError(t, ctx.Err(), "the child did not finish in time")
	text := string(out)
	assert.True(t, strings.Contains(text, "DATA RACE") || strings.Contains(text, "concurrent map read and map write"), "no race reported:\n%s", text)
	assert.Contains(t, text, "readLoop", "the race does not involve the kit's reading goroutine:\n%s", text)
}
