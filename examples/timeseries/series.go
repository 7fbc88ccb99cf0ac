package main

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Labels are the dimensions of a series, such as {"host": "a", "dc": "eu"}.
// Their order does not matter: a series is identified by its metric name
// and its labels sorted by name.
type Labels map[string]string

// Sample is one measurement, the write type of the coordinator.
type Sample struct {
	Metric string  // metric name, such as "cpu_seconds"
	Labels Labels  // may be nil
	T      int64   // time, in Unix milliseconds
	V      float64 // value; NaN and infinities are rejected
}

// SeriesID is the dense integer a series is stored under. IDs are given
// out from 1 in order of first appearance and never change.
type SeriesID uint64

// Series is a series as stored in the series table.
type Series struct {
	ID     SeriesID
	Metric string
	Labels string // canonical labels, see [CanonicalLabels]
}

// Key returns the series' identity, as [SeriesKey] computes it.
func (s Series) Key() string { return s.Metric + "{" + s.Labels + "}" }

// CanonicalLabels renders labels sorted by name as k1="v1",k2="v2", with
// values quoted like Go strings.
func CanonicalLabels(labels Labels) string {
	names := make([]string, 0, len(labels))
	for name := range labels {
		names = append(names, name)
	}
	slices.Sort(names)
	var b strings.Builder
	for i, name := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(labels[name]))
	}
	return b.String()
}

// SeriesKey returns the identity of a series: metric{k1="v1",k2="v2"}.
func SeriesKey(metric string, labels Labels) string {
	return metric + "{" + CanonicalLabels(labels) + "}"
}

// validName reports whether s is a metric or label name: a letter or an
// underscore, then letters, digits and underscores (and colons, if colon).
func validName(s string, colon bool) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z':
		case colon && r == ':':
		case i > 0 && '0' <= r && r <= '9':
		default:
			return false
		}
	}
	return true
}

// errInvalidSample is wrapped by every reason to reject a sample.
var errInvalidSample = errors.New("invalid sample")

func (s Sample) validate() error {
	if !validName(s.Metric, true) {
		return fmt.Errorf("%w: metric name %q", errInvalidSample, s.Metric)
	}
	for name := range s.Labels {
		if !validName(name, false) {
			return fmt.Errorf("%w: label name %q", errInvalidSample, name)
		}
	}
	if math.IsNaN(s.V) || math.IsInf(s.V, 0) {
		return fmt.Errorf("%w: value %v", errInvalidSample, s.V)
	}
	return nil
}

// Dict is the series dictionary: it maps series keys to IDs. It is the
// coordinator's context type C: every delta receives the same Dict from
// the one before it (through Freeze), so a series keeps its ID across
// freezes, and [Open] loads it from the series table so that it keeps it
// across restarts too.
//
// Only the delta's Apply adds entries (on the coordinator goroutine);
// readers look series up concurrently. A Dict is safe for concurrent use
// and must not be copied.
type Dict struct {
	mu   sync.RWMutex
	ids  map[string]SeriesID // protected by mu
	next SeriesID            // protected by mu: the next ID to give out
}

// NewDict returns a dictionary holding series, whose next ID is one more
// than the largest of theirs.
func NewDict(series []Series) *Dict {
	d := &Dict{ids: make(map[string]SeriesID, len(series)), next: 1}
	for _, s := range series {
		d.ids[s.Key()] = s.ID
		d.next = max(d.next, s.ID+1)
	}
	return d
}

// Lookup returns the ID of the series with the given key.
func (d *Dict) Lookup(key string) (SeriesID, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	id, ok := d.ids[key]
	return id, ok
}

// Len returns the number of series.
func (d *Dict) Len() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.ids)
}

// assign returns the ID of key, giving it the next one if it has none.
func (d *Dict) assign(key string) (id SeriesID, created bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if id, ok := d.ids[key]; ok {
		return id, false
	}
	id = d.next
	d.next++
	d.ids[key] = id
	return id, true
}
