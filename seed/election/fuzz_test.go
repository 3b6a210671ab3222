package election

import (
	"encoding/json"
	"flag"
	"testing"

	"meshkit.dev/meshkit/internal/fuzzcorpus"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpora in testdata/fuzz")

func infoCorpus() [][]byte {
	full, _ := json.Marshal(Info{ID: "seed-1", Admin: "10.0.0.1:17400", HTTP: "10.0.0.1:17480", Resigning: true})
	return [][]byte{full, []byte(`{"id":"a"}`), []byte(`{"id":`), []byte(`[]`), {}}
}

func TestFuzzCorpus(t *testing.T) {
	fuzzcorpus.Sync(t, map[string][][]byte{"FuzzDecodeInfo": infoCorpus()}, *updateCorpus)
}

// FuzzDecodeInfo feeds arbitrary election values (any writer of the domain's etcd prefix
// can put one) through DecodeInfo and the tracker: no panic, nothing over the bound
// accepted, and an accepted value can lead and be reported.
func FuzzDecodeInfo(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := DecodeInfo(data)
		if err != nil {
			return
		}
		if len(data) > MaxInfoBytes {
			t.Fatalf("a value of %d bytes was accepted", len(data))
		}
		tr := NewTracker("prod", DefaultTTL)
		evs := tr.Put(Candidate{Key: "k", Rev: 1, Info: in}, in.Since)
		if tok, ok := tr.Leader(); !ok || tok.LeaderID != in.ID || len(evs) != 1 || evs[0].Kind != KindElected {
			t.Fatalf("an accepted value did not lead: %+v %v", tok, evs)
		}
		_ = ToProto(evs[0])
	})
}
