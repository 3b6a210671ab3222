package node_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"meshkit.dev/meshkit/internal/tuning"
	"meshkit.dev/meshkit/node"
)

// TestLKGSlotFilesOpenOrClosed: by default an agent keeps its last-known-good slot file
// open between writes; with LKGCloseFiles (a process hosting thousands of agents) it
// holds none open once the write is done.
func TestLKGSlotFilesOpenOrClosed(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("needs /proc/self/fd")
	}
	for _, closeFiles := range []bool{false, true} {
		d := newDomain(t, "prod")
		m := newMeshWith(t, d, 1, func(c *node.Config, tu *tuning.Replica) { tu.CloseFiles = closeFiles })
		m.seed.publish(t, m.seed.offer(t, d, 1, d.payload(t, 1, 3)))
		waitVersion(t, 1, m.agents...)
		lkg := filepath.Join(m.dirs[0], "lkg")
		written := func() bool {
			slots, _ := filepath.Glob(filepath.Join(lkg, "*"+".bundle"))
			for _, s := range slots {
				if st, err := os.Stat(s); err == nil && st.Size() > 0 {
					return true
				}
			}
			return false
		}
		if closeFiles {
			waitFor(t, "the slot written and no slot file open", func() bool { return written() && openUnder(t, lkg) == 0 })
		} else {
			waitFor(t, "the slot written and kept open", func() bool { return written() && openUnder(t, lkg) == 1 })
		}
	}
}

// openUnder counts this process's open files inside dir.
func openUnder(t *testing.T, dir string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.HasPrefix(target, dir+string(filepath.Separator)) {
			n++
		}
	}
	return n
}
