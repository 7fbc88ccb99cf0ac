package coordinatortest_test

import (
	"context"
	"testing"
	"time"
)

// deadlineCtx returns a context that bounds a child process, so that a
// hanging child fails its test instead of hanging it.
func deadlineCtx(t *testing.T) (context.Context, context.CancelFunc) {
	t.Helper()
	return context.WithTimeout(context.Background(), 2*time.Minute)
}
