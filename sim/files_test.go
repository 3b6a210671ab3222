package sim

import "testing"

// TestCloseLKGFilesOnlyWhenTheLimitIsShort: agents keep their two slot files open, as a
// real agent does, unless two per agent would take more than half the process's limit.
func TestCloseLKGFilesOnlyWhenTheLimitIsShort(t *testing.T) {
	for _, c := range []struct {
		agents int
		limit  uint64
		want   bool
	}{
		{1000, 20000, false}, // wall-1k: 2,000 files
		{5000, 20000, false}, // exactly half
		{10000, 20000, true}, // virtual-10k on this machine
		{10000, 1 << 20, false},
		{10000, 0, false}, // unknown limit: as agents do
	} {
		if got := closeLKGFiles(c.agents, c.limit); got != c.want {
			t.Errorf("%d agents, limit %d: close %v, want %v", c.agents, c.limit, got, c.want)
		}
	}
	if openFileLimit() == 0 {
		t.Error("the open-file limit could not be read")
	}
}
