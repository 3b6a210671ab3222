package trust_test

import (
	"testing"

	"meshkit.dev/meshkit/trust"
)

// TestRichestVariant: the richest variant that fits, ties to the smallest key; nil
// capabilities fit everything, empty ones only what needs nothing.
func TestRichestVariant(t *testing.T) {
	variants := [][]string{{"core/v1"}, {"core/v1", "feature:ext-wasm"}, {"core/v1", "feature:ext-dsl"}, {"core/v1", "feature:ext-dsl", "feature:ext-wasm"}}
	need := func(i int) []string { return variants[i] }
	key := func(i int) string { return trust.VariantKey("", variants[i]) }
	for _, c := range []struct {
		have []string
		want int
	}{
		{nil, 3},
		{[]string{}, -1},
		{[]string{"core/v1"}, 0},
		{[]string{"core/v1", "feature:ext-wasm"}, 1},
		{[]string{"feature:ext-wasm", "core/v1", "feature:ext-dsl", "dsl/v1"}, 3},
		{[]string{"dsl/v1"}, -1},
	} {
		if got := trust.Richest(len(variants), need, key, c.have); got != c.want {
			t.Errorf("have %v: got %d, want %d", c.have, got, c.want)
		}
	}
	// Two variants needing as much: the smaller key wins, whatever the order.
	two := [][]string{{"core/v1", "feature:ext-wasm"}, {"core/v1", "feature:ext-dsl"}}
	if got := trust.Richest(2, func(i int) []string { return two[i] }, func(i int) string { return trust.VariantKey("", two[i]) }, nil); got != 1 {
		t.Errorf("tie: got %d, want the smaller key (1)", got)
	}
}
