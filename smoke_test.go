package coordinator

import (
	"context"
	"testing"
)

func TestSmoke(t *testing.T) {
	f := newTestFlusher()
	c := newTestCoordinator(t, testConfig(), testContext{}, f)
	c.Start()
	ch := c.Channel("default")
	ctx := context.Background()
	var hs []*WriteHandle[struct{}]
	for i := range 100 {
		h, err := ch.Write(ctx, w("k", uint64(i), 1))
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	if _, err := hs[99].Wait(ctx, Durable); err != nil {
		t.Fatal(err)
	}
	e, _ := hs[99].Epoch(ctx)
	if e != 100 {
		t.Fatalf("epoch %d", e)
	}
	t.Logf("stats %+v events %d syncs %d", c.Watermarks(), len(f.flushedEvents()), f.syncCount())
	stop(t, c)
}
