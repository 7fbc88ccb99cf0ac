package coordinatortest

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestSameContext(t *testing.T) {
	type withFunc struct{ f func() }
	type withAny struct{ v any }
	m := map[string]int{"a": 1}
	tests := []struct {
		name string
		a, b any
		want bool
	}{
		{"equal ints", 3, 3, true},
		{"different ints", 3, 4, false},
		{"same pointer", &m, &m, true},
		{"different pointers to equal maps", &map[string]int{}, &map[string]int{}, false},
		{"equal maps", map[string]int{"a": 1}, map[string]int{"a": 1}, true},
		{"different maps", map[string]int{"a": 1}, map[string]int{"a": 2}, false},
		{"funcs cannot be compared", withFunc{func() {}}, withFunc{func() {}}, true},
		{"an interface holding a slice", withAny{[]int{1}}, withAny{[]int{2}}, true},
		{"nil", nil, nil, true},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, sameContext(tt.a, tt.b), "sameContext(%s)", tt.name)
	}
}
