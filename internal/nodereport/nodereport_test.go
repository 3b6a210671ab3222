package nodereport

import (
	"strings"
	"testing"

	"meshkit.dev/meshkit/content"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
)

func validReport() *syncv1.NodeReport {
	return &syncv1.NodeReport{
		ServingEpoch: 1, ServingVersion: 7,
		Nacks: []*syncv1.VersionNacks{{Version: 7, Count: 3, LastError: "route shop/checkout: unknown cluster"}},
		Extensions: []*syncv1.ExtensionVerdict{{Artifact: content.Sum([]byte("module")).String(), Abi: "proxy-wasm/0.2.1", State: "rejected",
			Reasons: []string{"forbidden_import: imports env.exec_shell"}}},
	}
}

// TestReportBounds: a report within bounds is kept; each field out of bounds refuses the
// whole report with a message naming the field.
func TestReportBounds(t *testing.T) {
	if err := Check(validReport()); err != nil {
		t.Fatalf("a valid report: %v", err)
	}
	for _, tc := range []struct {
		field  string
		change func(r *syncv1.NodeReport)
	}{
		{"NACK entries", func(r *syncv1.NodeReport) {
			for i := range MaxNacks {
				r.Nacks = append(r.Nacks, &syncv1.VersionNacks{Version: uint64(i), Count: 1})
			}
		}},
		{"nacks[0].count", func(r *syncv1.NodeReport) { r.Nacks[0].Count = 1 << 40 }},
		{"nacks[0].count", func(r *syncv1.NodeReport) { r.Nacks[0].Count = 0 }},
		{"nacks[0].last_error", func(r *syncv1.NodeReport) { r.Nacks[0].LastError = "\x1b]0;pwned\x07 clear screen" }},
		{"nacks[0].last_error", func(r *syncv1.NodeReport) { r.Nacks[0].LastError = strings.Repeat("x", MaxText+1) }},
		{"nacks[0].last_error", func(r *syncv1.NodeReport) { r.Nacks[0].LastError = "\xff\xfe" }},
		{"extension verdicts", func(r *syncv1.NodeReport) {
			for range MaxExtensions {
				r.Extensions = append(r.Extensions, r.Extensions[0])
			}
		}},
		{"extensions[0].artifact", func(r *syncv1.NodeReport) { r.Extensions[0].Artifact = "not-a-cid" }},
		{"extensions[0].abi", func(r *syncv1.NodeReport) { r.Extensions[0].Abi = "proxy wasm\n" }},
		{"extensions[0].state", func(r *syncv1.NodeReport) { r.Extensions[0].State = "pwned" }},
		{"extensions[0]: 5 reasons", func(r *syncv1.NodeReport) { r.Extensions[0].Reasons = make([]string, MaxReasons+1) }},
		{"extensions[0].reasons[0]", func(r *syncv1.NodeReport) { r.Extensions[0].Reasons[0] = "\x1b[2J" }},
	} {
		r := validReport()
		tc.change(r)
		if err := Check(r); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s out of bounds: %v", tc.field, err)
		}
	}
}

// TestCleanFitsCheck: whatever an agent's data plane put into its report, the cleaned
// report passes Check, and plain text within bounds is left as it was.
func TestCleanFitsCheck(t *testing.T) {
	r := validReport()
	for i := range MaxNacks + 5 {
		r.Nacks = append(r.Nacks, &syncv1.VersionNacks{Version: uint64(i), Count: 1 << 40,
			LastError: strings.Repeat("é\x1b[2J\xff", 200)})
	}
	r.Extensions[0].Reasons = append(r.Extensions[0].Reasons, "\x07", "a", "b", "c", "d")
	Clean(r)
	if err := Check(r); err != nil {
		t.Fatalf("a cleaned report: %v", err)
	}
	if r.Nacks[0].LastError != "route shop/checkout: unknown cluster" || r.Extensions[0].Reasons[0] != "forbidden_import: imports env.exec_shell" {
		t.Fatalf("plain text changed: %q, %q", r.Nacks[0].LastError, r.Extensions[0].Reasons[0])
	}
	if got := r.Nacks[1].LastError; !strings.HasPrefix(got, "é?[2J?") || len(got) > MaxText {
		t.Fatalf("long text with control characters cleaned to %q", got)
	}
}

func FuzzCleanFitsCheck(f *testing.F) {
	f.Add("route x: unknown cluster", "forbidden_import", uint64(3))
	f.Add("\x1b]0;\x07\xff\xfe", strings.Repeat("x", 300), uint64(0))
	f.Fuzz(func(t *testing.T, lastError, reason string, count uint64) {
		r := validReport()
		r.Nacks[0].LastError, r.Nacks[0].Count = lastError, count
		r.Extensions[0].Reasons = []string{reason}
		Clean(r)
		if err := Check(r); err != nil {
			t.Fatalf("cleaned report refused: %v", err)
		}
	})
}

// TestCleanLeavesSharedSlicesAlone: the reasons of a report alias the agent's own status;
// cleaning the report must not write into them.
func TestCleanLeavesSharedSlicesAlone(t *testing.T) {
	shared := []string{"bad \x1b[31m reason", "b", "c", "d", "e"}
	r := validReport()
	r.Extensions[0].Reasons = shared
	Clean(r)
	if shared[0] != "bad \x1b[31m reason" {
		t.Fatalf("Clean wrote into the shared slice: %q", shared[0])
	}
	if r.Extensions[0].Reasons[0] != "bad ?[31m reason" || len(r.Extensions[0].Reasons) != MaxReasons {
		t.Fatalf("cleaned reasons %q", r.Extensions[0].Reasons)
	}
}
