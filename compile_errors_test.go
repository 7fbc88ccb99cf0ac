package coordinator

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newErrorsBase is what every program of TestNewCompileErrors shares: a
// Delta *Delta whose Freeze returns (Frozen, Frozen, int), and a Flusher
// *Store whose FlushDelta returns *Snap. Each case adds declarations and
// the call to New.
const newErrorsBase = `package main

import (
	"context"

	"github.com/groupcommit/coordinator"
)

type Put struct{ Key, Value string }

type Snap struct{}

type Frozen map[string]string

type Delta struct{ m map[string]string }

func (d *Delta) Apply(p Put) (struct{}, error) { d.m[p.Key] = p.Value; return struct{}{}, nil }
func (d *Delta) EstimateSize() int             { return len(d.m) }
func (d *Delta) Freeze() (Frozen, Frozen, int) { return Frozen(d.m), Frozen(d.m), 0 }
func (d *Delta) Reader() map[string]string     { return d.m }

type Store struct{}

func (s *Store) FlushDelta(ctx context.Context, f Frozen, e coordinator.EpochRange) (*Snap, error) {
	return &Snap{}, nil
}
func (s *Store) FlushStorage(ctx context.Context) error { return nil }
`

// TestNewCompileErrors compiles small programs that get New's arguments
// wrong in the common ways, and checks that the compiler says what the
// package documentation quotes under "When New does not compile", so the
// quotes stay exact when the compiler's wording changes.
func TestNewCompileErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	// The messages depend on the compiler: use the go command only if it is
	// the toolchain this test was built with.
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	version, err := exec.CommandContext(t.Context(), goCmd, "env", "GOVERSION").Output()
	if err != nil || strings.TrimSpace(string(version)) != runtime.Version() {
		t.Skipf("go command %s is %q, not this test's %s (%v)", goCmd, strings.TrimSpace(string(version)), runtime.Version(), err)
	}
	newDelta := "func NewDelta(version int) *Delta { return &Delta{m: map[string]string{}} }\n"
	call := func(args string) string {
		return "func main() {\n\tc, err := coordinator.New(coordinator.Config{}, " + args + ")\n\t_, _ = c, err\n}\n"
	}
	cases := []struct {
		name, src string
		want      string // "" for a program that compiles
	}{
		{"correct", newDelta + call("NewDelta, 0, &Snap{}, &Store{}"), ""},
		{"flusher-by-value", newDelta + call("NewDelta, 0, &Snap{}, Store{}"),
			"in call to coordinator.New, type Store of Store{} does not match inferred type coordinator.Flusher[F, *Snap] for coordinator.Flusher[F, S]"},
		{"snapshot-type", newDelta + call("NewDelta, 0, Snap{}, &Store{}"),
			"in call to coordinator.New, type *Store of &Store{} does not match inferred type coordinator.Flusher[Frozen, Snap] for coordinator.Flusher[F, S]"},
		{"delta-by-value", "func NewDelta(version int) Delta { return Delta{} }\n" + call("NewDelta, 0, &Snap{}, &Store{}"),
			"in call to coordinator.New, D (type Delta) does not satisfy coordinator.Delta[W, R, C, F, FV, DV] (method Apply has pointer receiver)"},
		{"frozen-type", newDelta + `
type MapStore struct{}

func (s *MapStore) FlushDelta(ctx context.Context, f map[string]string, e coordinator.EpochRange) (*Snap, error) {
	return &Snap{}, nil
}
func (s *MapStore) FlushStorage(ctx context.Context) error { return nil }
` + call("NewDelta, 0, &Snap{}, &MapStore{}"),
			"in call to coordinator.New, D (type *Delta) does not satisfy coordinator.Delta[W, R, C, F, FV, DV] (wrong type for method Freeze)\n" +
				"\t\thave Freeze() (Frozen, Frozen, int)\n\t\twant Freeze() (F, FV, C)"},
		{"context-type", newDelta + "var version int64\n\n" + call("NewDelta, version, &Snap{}, &Store{}"),
			"in call to coordinator.New, type int64 of version does not match inferred type int for C"},
		{"context-constant", newDelta + call(`NewDelta, "v1", &Snap{}, &Store{}`),
			`cannot use "v1" (untyped string constant) as int value in argument to coordinator.New`},
		{"no-context", "func NewDelta() *Delta { return &Delta{} }\n" + call("NewDelta, 0, &Snap{}, &Store{}"),
			"in call to coordinator.New, type func() *Delta of NewDelta does not match func(C) D (cannot infer D, W, R, C, F, FV, DV, and S)"},
		{"assertion", newDelta + "var _ coordinator.Flusher[Frozen, *Snap] = Store{}\n\n" + call("NewDelta, 0, &Snap{}, &Store{}"),
			"Store does not implement coordinator.Flusher[Frozen, *Snap] (method FlushDelta has pointer receiver)"},
	}

	root, err := os.Getwd() // the module's root: this package's directory
	require.NoError(t, err)
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	require.NoError(t, err)
	dir := t.TempDir()
	files := map[string]string{
		"go.mod": "module example.com/newerrors\n\ngo 1.25\n\nrequire github.com/groupcommit/coordinator v0.0.0\n\n" +
			"replace github.com/groupcommit/coordinator => " + root + "\n",
		"go.sum": string(sum),
	}
	for _, c := range cases {
		files[filepath.Join(c.name, "main.go")] = newErrorsBase + "\n" + c.src
	}
	for name, content := range files {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
	}
	// One go command for all programs: vet type-checks each package and
	// reports every failing one. Offline: everything needed is local.
	cmd := exec.CommandContext(t.Context(), goCmd, "vet", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "GOPROXY=off", "GOTOOLCHAIN=local")
	out, _ := cmd.CombinedOutput()

	doc := normalizeSpace(packageDoc(t, filepath.Join(root, "coordinator.go")))
	for _, c := range cases {
		got := errorsOf(string(out), c.name)
		if c.want == "" {
			assert.Empty(t, got, "the correct program does not compile")
			continue
		}
		assert.Contains(t, got, c.want, "%s: the compiler's message changed; update the package documentation", c.name)
		assert.True(t, strings.Contains(doc, normalizeSpace(c.want)),
			"%s: the package documentation does not quote the message %q", c.name, c.want)
	}
}

// errorsOf returns the go command's messages about the program in dir
// name, without their "name/main.go:line:col: " prefixes.
func errorsOf(out, name string) string {
	var b strings.Builder
	prefix := name + string(filepath.Separator) + "main.go:"
	inside := false
	for line := range strings.Lines(out) {
		rest, ok := strings.CutPrefix(strings.TrimPrefix(line, "vet: "), prefix)
		switch {
		case ok:
			inside = true
			// Drop "line:col: ".
			if _, after, found := strings.Cut(rest, ": "); found {
				line = after
			}
		case !strings.HasPrefix(line, "\t"): // not a continuation line
			inside = false
		}
		if inside {
			b.WriteString(line)
		}
	}
	return b.String()
}

// packageDoc returns the package comment of the Go file at path.
func packageDoc(t *testing.T, path string) string {
	src, err := os.ReadFile(path)
	require.NoError(t, err)
	head, _, ok := strings.Cut(string(src), "\npackage ")
	require.True(t, ok, "no package clause in %s", path)
	var b strings.Builder
	for line := range strings.Lines(head) {
		if text, ok := strings.CutPrefix(line, "//"); ok {
			b.WriteString(text)
		}
	}
	return b.String()
}

// normalizeSpace collapses every run of white space into one space.
func normalizeSpace(s string) string { return strings.Join(strings.Fields(s), " ") }
