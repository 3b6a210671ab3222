package trust

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	trustv1 "meshkit.dev/meshkit/proto/meshkit/trust/v1"
)

func FuzzEnvelopeDecodersAgree(f *testing.F) {
	env := &trustv1.Envelope{PayloadType: PayloadBundle, Payload: []byte("payload"), Signatures: []*trustv1.Signature{{KeyId: "k1", Sig: []byte{1, 2}}, {KeyId: "k2"}}}
	good, _ := proto.Marshal(env)
	f.Add(good)
	f.Add(append(good, 0x0a, 0x01, 'x'))        // payload_type repeated: last wins
	f.Add(append(good, 0x08, 0x01))             // field 1 with varint wire type: unknown
	f.Add(append(good, 0x23, 0x08, 0x01, 0x24)) // a group
	f.Add([]byte{0x0a, 0x02, 0xff, 0xfe})       // invalid UTF-8
	f.Fuzz(func(t *testing.T, b []byte) {
		mine, errMine := decodeEnvelopeBinary(b)
		ref := &trustv1.Envelope{}
		errRef := proto.Unmarshal(b, ref)
		if (errMine == nil) != (errRef == nil) {
			t.Fatalf("decoders disagree: protowire err %v, proto.Unmarshal err %v", errMine, errRef)
		}
		if errMine != nil {
			return
		}
		if mine.GetPayloadType() != ref.GetPayloadType() || !bytes.Equal(mine.GetPayload(), ref.GetPayload()) || len(mine.GetSignatures()) != len(ref.GetSignatures()) {
			t.Fatalf("decoders disagree:\n%v\n%v", mine, ref)
		}
		for i := range mine.GetSignatures() {
			if !proto.Equal(mine.GetSignatures()[i], ref.GetSignatures()[i]) {
				t.Fatalf("signature %d differs", i)
			}
		}
	})
}

func TestDecodedPayloadAliasesInputWithCappedCapacity(t *testing.T) {
	env := &trustv1.Envelope{PayloadType: PayloadBundle, Payload: []byte("payload"), Signatures: []*trustv1.Signature{{KeyId: "k"}}}
	b, _ := proto.Marshal(env)
	got, err := decodeEnvelopeBinary(b)
	if err != nil {
		t.Fatal(err)
	}
	if cap(got.Payload) != len(got.Payload) {
		t.Fatalf("payload cap %d > len %d: an append would overwrite the input", cap(got.Payload), len(got.Payload))
	}
	_ = append(got.Payload, 'X')
	if again, _ := decodeEnvelopeBinary(b); !bytes.Equal(again.Payload, []byte("payload")) {
		t.Fatal("input was modified")
	}
}
