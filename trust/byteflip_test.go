package trust_test

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"meshkit.dev/meshkit/trust"
)

// signatureRanges returns the byte ranges [start, end) of the signature fields (field 3)
// of an encoded envelope: what its signatures cover is everything else.
func signatureRanges(t *testing.T, b []byte) [][2]int {
	t.Helper()
	var out [][2]int
	for off := 0; off < len(b); {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			t.Fatal("fixture envelope does not parse")
		}
		m := protowire.ConsumeFieldValue(num, typ, b[off+n:])
		if m < 0 {
			t.Fatal("fixture envelope does not parse")
		}
		if num == 3 {
			out = append(out, [2]int{off, off + n + m})
		}
		off += n + m
	}
	return out
}

// TestEveryByteFlip changes every byte of a signed envelope to each of its 255 other
// values and verifies the result. With one signature, no change verifies. With two, the
// seed's and an unneeded one by a key the root does not know, exactly the changes inside
// the unneeded signature may verify (it is not counted either way); a change to what is
// signed, the payload type and payload, or to the needed signature never does.
func TestEveryByteFlip(t *testing.T) {
	f := newFixture(t)
	payload := encode(t, bundleMsg(1, 1, "shop"))
	for _, tc := range []struct {
		name    string
		signers []trust.Signer
	}{
		{"one signature", []trust.Signer{f.seed}},
		{"the seed's and an unneeded one", []trust.Signer{f.seed, f.stranger}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := trust.NewEnvelope(trust.PayloadBundle, payload)
			if err := trust.Sign(env, tc.signers...); err != nil {
				t.Fatal(err)
			}
			orig, err := trust.MarshalEnvelope(env)
			if err != nil {
				t.Fatal(err)
			}
			v := f.verifier(t, nil)
			if _, err := v.Verify(orig); err != nil {
				t.Fatalf("the unchanged envelope: %v", err)
			}
			sigs := signatureRanges(t, orig)
			var unneeded [2]int // the stranger's signature field, if any
			for _, r := range sigs {
				if bytes.Contains(orig[r[0]:r[1]], []byte(f.stranger.KeyID())) {
					unneeded = r
				}
			}
			verified, inUnneeded := 0, 0
			b := bytes.Clone(orig)
			for i := range b {
				for d := 1; d < 256; d++ {
					b[i] = orig[i] + byte(d)
					vb, err := v.Verify(b)
					if err != nil {
						continue
					}
					verified++
					if i < unneeded[0] || i >= unneeded[1] {
						t.Fatalf("byte %d changed to %#x verifies, outside the unneeded signature %v", i, b[i], unneeded)
					}
					if vb.PayloadType != trust.PayloadBundle || !bytes.Equal(vb.Payload, payload) {
						t.Fatalf("byte %d changed to %#x verifies with other content", i, b[i])
					}
					inUnneeded++
				}
				b[i] = orig[i]
			}
			if len(tc.signers) == 1 && verified != 0 {
				t.Fatalf("%d changes of a singly signed envelope verify", verified)
			}
			if len(tc.signers) == 2 && inUnneeded == 0 {
				t.Fatal("no change inside the unneeded signature verifies: the test no longer exercises it")
			}
			if len(tc.signers) == 2 {
				t.Logf("%d bytes × 255 values: %d verify, all inside the unneeded signature (bytes %d–%d)", len(orig), verified, unneeded[0], unneeded[1]-1)
			}
		})
	}
}
