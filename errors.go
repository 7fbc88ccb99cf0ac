package coordinator

import (
	"errors"
	"fmt"
)

// Sentinel errors. Match them with [errors.Is]; the errors the coordinator
// returns often wrap one of these together with more detail.
var (
	// ErrClosed is returned by every operation after [Coordinator.Stop] has
	// begun, and by waits that can no longer be satisfied because the
	// coordinator stopped.
	ErrClosed = errors.New("coordinator: closed")

	// ErrBackpressure is returned by [Channel.TryWrite] when the channel's
	// queue (or the coordinator's byte budget) has no room.
	ErrBackpressure = errors.New("coordinator: backpressure: queue full")

	// ErrNotInitialized is returned by [Subscriber.Next] before
	// [Subscriber.Initialize] has been called, and again after a
	// [LagError] until it is called once more.
	ErrNotInitialized = errors.New("coordinator: subscriber not initialized")

	// ErrFailed is wrapped by every error that reports the coordinator has
	// failed: a flush that could not be completed, or a panic in user code.
	// Once failed, the coordinator accepts no more writes.
	ErrFailed = errors.New("coordinator: failed")

	// ErrGoexit is the [PanicError.Value] when user code (Apply, Freeze,
	// FlushDelta, FlushStorage, ...) called [runtime.Goexit], for instance
	// through t.FailNow in a test double. Goexit cannot be stopped; the
	// coordinator treats it like a panic and fails.
	ErrGoexit = errors.New("coordinator: runtime.Goexit called in user code")

	// ErrInvalidSize is returned by [Channel.TryWrite], [Channel.Write] and
	// [Channel.WriteBatch] when [Config.MaxBytes] is set and a write's
	// [Sizer.Size] is negative, or a batch's sizes add up past the int64
	// range. The write is not accepted.
	ErrInvalidSize = errors.New("coordinator: invalid write size")
)

// ApplyError is the error a write's handle reports when [Delta.Apply]
// rejected the write. The write was sequenced (it consumed Epoch) but
// changed nothing.
type ApplyError struct {
	Epoch uint64 // the epoch the rejected write was given
	Err   error  // the error Apply returned
}

// Error implements the error interface.
func (e *ApplyError) Error() string {
	return fmt.Sprintf("coordinator: apply failed at epoch %d: %v", e.Epoch, e.Err)
}

// Unwrap returns the error Apply returned.
func (e *ApplyError) Unwrap() error { return e.Err }

// FlushError reports that the [Flusher] could not complete an operation.
// After a FlushError the coordinator is failed: the writes in Epochs and
// every later one will never be written, and every waiter on them receives
// an error wrapping this one.
type FlushError struct {
	Op       string     // "FlushDelta" or "FlushStorage"
	Epochs   EpochRange // the epochs the operation covered
	Attempts int        // how many times the operation was tried
	Err      error      // the flusher's last error
}

// Error implements the error interface.
func (e *FlushError) Error() string {
	return fmt.Sprintf("coordinator: failed: %s of epochs %v failed after %d attempt(s): %v",
		e.Op, e.Epochs, e.Attempts, e.Err)
}

// Unwrap returns both the flusher's error and [ErrFailed], so that
// errors.Is(err, ErrFailed) and errors.Is(err, flusherErr) both hold.
func (e *FlushError) Unwrap() []error { return []error{e.Err, ErrFailed} }

// PanicError reports a panic recovered from user code (Apply, Freeze,
// FlushDelta or FlushStorage), or a call of [runtime.Goexit] there (Value
// is then [ErrGoexit]). The coordinator fails with it, because the state
// the panic interrupted cannot be trusted.
type PanicError struct {
	Op    string // the user method that panicked, e.g. "Apply"
	Value any    // the value passed to panic
	Stack []byte // the goroutine's stack at the panic
}

// Error implements the error interface.
func (e *PanicError) Error() string {
	return fmt.Sprintf("coordinator: failed: panic in %s: %v", e.Op, e.Value)
}

// Unwrap returns [ErrFailed], and the panic value when it is an error.
func (e *PanicError) Unwrap() []error {
	if err, ok := e.Value.(error); ok {
		return []error{ErrFailed, err}
	}
	return []error{ErrFailed}
}

// LagError is returned by [Subscriber.Next] when the subscriber fell so far
// behind that its buffer overflowed. Missed views were dropped; the
// subscriber must call [Subscriber.Initialize] again to get the current
// view before receiving more.
type LagError struct {
	Missed uint64 // number of views that were dropped
}

// Error implements the error interface.
func (e *LagError) Error() string {
	return fmt.Sprintf("coordinator: subscriber lagged: %d view(s) missed", e.Missed)
}

// epochError wraps a terminal error with the epoch a waiter was waiting for.
type epochError struct {
	level Durability
	epoch uint64
	err   error
}

func (e *epochError) Error() string {
	return fmt.Sprintf("coordinator: epoch %d will not become %v: %v", e.epoch, e.level, e.err)
}

func (e *epochError) Unwrap() error { return e.err }
