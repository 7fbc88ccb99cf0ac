package coordinator

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestChannels checks that Channels lists the configured names in order and
// hands out a copy, and that LookupChannel reports absence where Channel
// panics.
func TestChannels(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		configured []string
		want       []string
	}{
		{"default", nil, []string{"default"}},
		{"configured order", []string{"wal", "bulk", "admin"}, []string{"wal", "bulk", "admin"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig()
			cfg.Channels = tt.configured
			c := newTestCoordinator(t, cfg, testContext{}, newTestFlusher())

			names := c.Channels()
			require.Equal(t, tt.want, names, "Channels()")
			names[0] = "changed"
			assert.Equal(t, tt.want, c.Channels(), "Channels() after the caller modified its result")

			for _, name := range tt.want {
				ch, ok := c.LookupChannel(name)
				require.True(t, ok, "LookupChannel(%q) ok", name)
				assert.Same(t, c.Channel(name), ch, "LookupChannel(%q) and Channel(%q)", name, name)
			}
			ch, ok := c.LookupChannel("missing")
			assert.False(t, ok, "LookupChannel(%q) ok", "missing")
			assert.Nil(t, ch, "LookupChannel(%q)", "missing")
			assert.PanicsWithValue(t, `coordinator: unknown channel "missing"`, func() { c.Channel("missing") })
		})
	}
}

// TestChannelsConfigIsCopied checks that changing the caller's slice after
// New changes nothing.
func TestChannelsConfigIsCopied(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Channels = []string{"a", "b"}
	c := newTestCoordinator(t, cfg, testContext{}, newTestFlusher())
	cfg.Channels[0] = "z"
	assert.Equal(t, []string{"a", "b"}, c.Channels())
	_, ok := c.LookupChannel("z")
	assert.False(t, ok, "LookupChannel(%q) ok after the caller changed its Config", "z")
}
