package seed

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
)

func testChain(n int) []*adminv1.AuditEntry {
	var out []*adminv1.AuditEntry
	var head *adminv1.AuditEntry
	for i := range n {
		head = chain(head, &adminv1.AuditEntry{Actor: "ci", Action: "apply", Subjects: []string{fmt.Sprint("Cluster shop/c-", i)}})
		out = append(out, head)
	}
	return out
}

// TestVerifyChainChecksEveryLink: each defect is refused on its own, with the others
// absent. An entry whose prev_hash was changed and its own hash recomputed over that is
// self-consistent: only the link check catches it.
func TestVerifyChainChecksEveryLink(t *testing.T) {
	if head, err := VerifyChain(testChain(5)); err != nil || head.GetSeq() != 5 {
		t.Fatalf("a valid chain: %v %v", head, err)
	}
	for _, tc := range []struct {
		name, want string
		edit       func(es []*adminv1.AuditEntry) []*adminv1.AuditEntry
	}{
		{"relinked", "entry 3 does not link to entry 2", func(es []*adminv1.AuditEntry) []*adminv1.AuditEntry {
			es[2].PrevHash = es[0].GetHash()
			es[2].Hash = entryHash(es[2])
			return es
		}},
		{"altered", "entry 2 was altered", func(es []*adminv1.AuditEntry) []*adminv1.AuditEntry {
			es[1].Actor = "someone-else"
			return es
		}},
		{"entry missing", "entry 3 has seq 4", func(es []*adminv1.AuditEntry) []*adminv1.AuditEntry {
			return append(es[:2], es[3:]...)
		}},
	} {
		_, err := VerifyChain(tc.edit(testChain(5)))
		if !errors.Is(err, ErrAuditChain) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// BenchmarkVerifyChain100k verifies a log of 100,000 entries, as a seed does at start.
func BenchmarkVerifyChain100k(b *testing.B) {
	es := testChain(100_000)
	for b.Loop() {
		if _, err := VerifyChain(es); err != nil {
			b.Fatal(err)
		}
	}
}
