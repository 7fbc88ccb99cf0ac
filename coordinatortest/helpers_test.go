package coordinatortest_test

import (
	"runtime"
	"testing"
	"time"
)

// within runs f and fails the test with a goroutine dump if it does not
// return within d, so that no test can hang.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		buf := make([]byte, 1<<20)
		t.Fatalf("%s did not return within %v\n%s", what, d, buf[:runtime.Stack(buf, true)])
	}
}
