package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestShellRoundTrip builds the real binary and runs scripts/roundtrip.sh with it, as a
// person would from the shell.
func TestShellRoundTrip(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not available")
	}
	bin := filepath.Join(t.TempDir(), "meshkit")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command("bash", "../../scripts/roundtrip.sh", bin)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("roundtrip.sh: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "round trip OK") {
		t.Fatalf("roundtrip.sh output:\n%s", out)
	}
}
