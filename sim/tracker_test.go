package sim

import (
	"testing"
	"time"
)

// TestTrackerCountsCrossingsOfTheCut: while a partition holds, an agent cut off from the
// seed that comes to hold a version published after the cut is counted as reached across
// it; versions published before the cut, agents on the seed's side, and anything after
// the heal are not.
func TestTrackerCountsCrossingsOfTheCut(t *testing.T) {
	tr := newTracker(4)
	tr.published(1) // during warm-up
	tr.reset(time.Now())
	tr.published(2)
	for a := range 4 {
		tr.hold(a, 2)
	}
	tr.cutOff([]int{2, 3})
	tr.published(3)
	tr.hold(0, 3) // the seed's side: fine
	tr.hold(2, 1) // cut off, older than the cut: fine (a regression, counted as such)
	tr.hold(2, 2) // cut off, published before the cut: fine
	if got := tr.result([]int{0, 1, 2, 3}, -1, 0).CrossedPartition; got != 0 {
		t.Fatalf("before any crossing: %d agents counted", got)
	}
	tr.hold(3, 3) // cut off, published after the cut: crossed
	tr.hold(3, 3)
	res := tr.result([]int{0, 1, 2, 3}, -1, 0)
	if res.CrossedPartition != 1 {
		t.Fatalf("one agent reached across the cut, counted %d", res.CrossedPartition)
	}
	if res.Regressions != 1 {
		t.Fatalf("regressions %d, want 1", res.Regressions)
	}
	tr.healed()
	tr.published(4)
	tr.hold(2, 4) // after the heal: fine
	if got := tr.result([]int{0, 1, 2, 3}, -1, 0).CrossedPartition; got != 1 {
		t.Fatalf("after the heal: %d agents counted, want still 1", got)
	}
}

// TestTrackerCutAfterResetUsesWarmupVersions: a partition right after the measurement
// starts (nothing published yet in the window) must not count agents that hold what was
// published during warm-up.
func TestTrackerCutAfterResetUsesWarmupVersions(t *testing.T) {
	tr := newTracker(2)
	tr.published(1)
	tr.published(2)
	tr.reset(time.Now())
	tr.cutOff([]int{1})
	tr.hold(1, 2)
	if got := tr.result([]int{0, 1}, -1, 0).CrossedPartition; got != 0 {
		t.Fatalf("warm-up version counted as crossing: %d", got)
	}
	tr.published(3)
	tr.hold(1, 3)
	if got := tr.result([]int{0, 1}, -1, 0).CrossedPartition; got != 1 {
		t.Fatalf("crossing not counted: %d", got)
	}
}
