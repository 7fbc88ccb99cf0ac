package linearizability

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/anishathalye/porcupine"
)

// This file holds the sequential specification porcupine checks histories
// against: one register per key, whose value is that of the last put (0
// when the key was never written), and the code that runs the check.

type opKind uint8

const (
	// opInit sets a key to what the era recovered from the disk. Each era
	// starts with one per key, at a time before any other operation.
	opInit opKind = iota
	// opPut is Write (or WriteBatch) followed by Wait(Applied).
	opPut
	// opGet reads a key through a view (View or a subscriber).
	opGet
)

// input is an operation's input; via says where it came from.
type input struct {
	kind opKind
	key  string
	val  int64 // opInit, opPut
	via  string
}

// output is a get's result: the value read, 0 if the key was absent.
type output struct {
	val   int64
	epoch uint64
	src   string // where the reader found it
}

// partitionByKey splits a history into one per key: registers are
// independent, so the history is linearizable if and only if each key's is
// (porcupine's P-compositionality).
func partitionByKey(history []porcupine.Operation) [][]porcupine.Operation {
	index := map[string]int{}
	var parts [][]porcupine.Operation
	for _, op := range history {
		k := op.Input.(input).key
		i, ok := index[k]
		if !ok {
			i = len(parts)
			index[k] = i
			parts = append(parts, nil)
		}
		parts[i] = append(parts[i], op)
	}
	return parts
}

var registerModel = porcupine.Model{
	Partition: partitionByKey,
	Init:      func() any { return int64(0) },
	Step: func(state, in, out any) (bool, any) {
		i := in.(input)
		switch i.kind {
		case opInit, opPut:
			return true, i.val
		default:
			return out.(output).val == state.(int64), state
		}
	},
	DescribeOperation: func(in, out any) string {
		i := in.(input)
		switch i.kind {
		case opInit:
			return fmt.Sprintf("recovered %s=%d", i.key, i.val)
		case opPut:
			return fmt.Sprintf("put(%s, %d) via %s", i.key, i.val, i.via)
		default:
			o := out.(output)
			if o.val == 0 {
				return fmt.Sprintf("get(%s) via %s -> absent", i.key, i.via)
			}
			return fmt.Sprintf("get(%s) via %s -> %d (epoch %d, from %s)", i.key, i.via, o.val, o.epoch, o.src)
		}
	},
	DescribeState: func(state any) string { return fmt.Sprint(state) },
}

// checkResult is porcupine's verdict on one era.
type checkResult struct {
	result   porcupine.CheckResult
	ops      int
	duration time.Duration
	viz      string // the visualization file, when the history is not linearizable
	vizErr   error
}

// checkHistory runs porcupine on history. If it is not linearizable (or
// the check times out), it writes the visualization, annotated with notes,
// to vizPath() and reports the path.
func checkHistory(history []porcupine.Operation, notes []porcupine.Annotation, timeout time.Duration, vizPath func() (string, error)) checkResult {
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(registerModel, history, timeout)
	cr := checkResult{result: res, ops: len(history), duration: time.Since(start)}
	if res == porcupine.Ok {
		return cr
	}
	info.AddAnnotations(notes)
	cr.viz, cr.vizErr = vizPath()
	if cr.vizErr == nil {
		cr.vizErr = porcupine.VisualizePath(registerModel, info, cr.viz)
	}
	return cr
}

// vizFile returns where to write a visualization: the -lin.viz path if it
// is set, else a new file under dir (os.TempDir() if dir is empty, so that
// the file outlives the test).
func vizFile(flagPath, dir, name string) func() (string, error) {
	return func() (string, error) {
		if flagPath != "" {
			return flagPath, nil
		}
		f, err := os.CreateTemp(dir, name+"-*.html")
		if err != nil {
			return "", err
		}
		path := f.Name()
		if err := f.Close(); err != nil {
			return "", err
		}
		return filepath.Abs(path)
	}
}
