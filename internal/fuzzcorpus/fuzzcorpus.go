// Package fuzzcorpus keeps the committed seed corpora of fuzz targets (testdata/fuzz/NAME)
// in step with the fixtures that produce them. Tests call Sync with -update-corpus to
// rewrite them, and always to check that every target still has one.
package fuzzcorpus

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Sync writes each target's inputs as seed-N files in Go's corpus format when update is
// set, then fails t if any target's directory under testdata/fuzz is empty or missing.
func Sync(t testing.TB, targets map[string][][]byte, update bool) {
	t.Helper()
	for name, inputs := range targets {
		dir := filepath.Join("testdata", "fuzz", name)
		if update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for i, in := range inputs {
				data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", in)
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		if entries, err := os.ReadDir(dir); err != nil || len(entries) == 0 {
			t.Errorf("%s has no seed corpus (rerun this test with -update-corpus): %v", dir, err)
		}
	}
}
