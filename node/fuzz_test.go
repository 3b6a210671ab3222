package node_test

import (
	"context"
	"flag"
	"testing"

	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

	"meshkit.dev/meshkit/internal/fuzzcorpus"
	"meshkit.dev/meshkit/node"
	"meshkit.dev/meshkit/p2p"
	"meshkit.dev/meshkit/trust"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpora in testdata/fuzz")

// fuzzDomain is fixed so the committed corpus stays valid: its keys derive from constant seeds.
func fuzzDomain(t testing.TB) *domain {
	return newDomainFrom(t, "prod", 1)
}

// FuzzAgentValidate feeds arbitrary gossip to an agent holding v2. Whatever the input,
// the agent must not panic, must only accept what advances it to a verified bundle signed
// by the seed, and must keep serving v2 otherwise.
func FuzzAgentValidate(f *testing.F) {
	d := fuzzDomain(f)
	p1, p2, p3 := d.payload(f, 1, 3), d.payload(f, 2, 4), d.payload(f, 3, 5)
	for _, in := range corpusInputs(f, d, p1, p2, p3) {
		f.Add(in)
	}
	v2 := d.seal(f, trust.PayloadBundle, p2, d.seed)
	mn := mocknet.New()
	defer mn.Close()
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := mn.GenPeer()
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		a, err := node.New(context.Background(), node.Config{Root: d.root, DataDir: t.TempDir(), Host: h, Clock: d.clock})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if a.Replica().Validate(context.Background(), p2p.Message{Data: v2}) != p2p.Accept {
			t.Fatal("v2 refused")
		}
		verdict := a.Replica().Validate(context.Background(), p2p.Message{Data: data})
		cur, ok := a.Current()
		if !ok {
			t.Fatal("the agent lost its bundle")
		}
		switch {
		case verdict == p2p.Accept && cur.Version <= 2:
			t.Fatalf("accepted input left the agent at v%d", cur.Version)
		case verdict != p2p.Accept && cur.Version != 2:
			t.Fatalf("refused input (%s) moved the agent to v%d", verdict, cur.Version)
		}
	})
}

func corpusInputs(t testing.TB, d *domain, p1, p2, p3 []byte) [][]byte {
	return [][]byte{
		d.seal(t, trust.PayloadBundle, p3, d.seed),
		d.delta(t, p2, p3),
		d.announce(t, p3),
		d.seal(t, trust.PayloadBundle, p1, d.seed),
		d.seal(t, trust.PayloadBundle, p3, d.strange),
		[]byte("garbage"),
	}
}

func TestFuzzCorpus(t *testing.T) {
	d := fuzzDomain(t)
	p1, p2, p3 := d.payload(t, 1, 3), d.payload(t, 2, 4), d.payload(t, 3, 5)
	fuzzcorpus.Sync(t, map[string][][]byte{"FuzzAgentValidate": corpusInputs(t, d, p1, p2, p3)}, *updateCorpus)
}
