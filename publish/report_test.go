package publish

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"meshkit.dev/meshkit/content"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
)

func validReport() *syncv1.NodeReport {
	return &syncv1.NodeReport{
		ServingEpoch: 1, ServingVersion: 7,
		Nacks:      []*syncv1.VersionNacks{{Version: 7, Count: 3, LastError: "route shop/checkout: unknown cluster"}},
		Extensions: []*syncv1.ExtensionVerdict{{Artifact: content.Sum([]byte("module")).String(), Abi: "proxy-wasm/0.2.1", State: "admitted"}},
	}
}

// TestReportTableStaysBounded: peers beyond the table's size push the oldest reports out
// rather than being turned away, and an out-of-bounds report is not kept at all.
func TestReportTableStaysBounded(t *testing.T) {
	g := newSender(slog.New(slog.DiscardHandler), Options{})
	g.onReport("bad", &syncv1.NodeReport{Nacks: []*syncv1.VersionNacks{{Version: 1, Count: 1, LastError: "\x1b[31m"}}})
	if len(g.reports) != 0 {
		t.Fatal("an out-of-bounds report was kept")
	}
	g.onReport("honest", validReport())
	g.reports["honest"] = nodeReport{at: time.Now().Add(-time.Minute), r: validReport()} // the oldest
	for i := range maxReports + 10 {
		g.onReport(peer.ID(fmt.Sprint("sybil-", i)), validReport())
	}
	if len(g.reports) != maxReports {
		t.Fatalf("%d reports kept, the bound is %d", len(g.reports), maxReports)
	}
	if _, ok := g.reports["honest"]; ok {
		t.Fatal("the oldest report was not the one pushed out")
	}
	if _, ok := g.reports[peer.ID(fmt.Sprint("sybil-", maxReports+9))]; !ok {
		t.Fatal("the newest peer's report was turned away")
	}
}
