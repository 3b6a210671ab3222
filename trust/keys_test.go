package trust_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"meshkit.dev/meshkit/trust"
)

func TestKeyFilesRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "seed.key")
	k := mustKey(t)
	if err := trust.WriteKeyFiles(p, k); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{p: 0o600, p + ".pub": 0o644} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm() &^ 0o022; got != want&^0o022 {
			t.Errorf("%s mode %04o, want %04o", path, st.Mode().Perm(), want)
		}
	}
	priv, err := trust.LoadKeyFile(p)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := trust.LoadKeyFile(p + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if priv.Private == nil || pub.Private != nil {
		t.Fatal("private/public halves mixed up")
	}
	if priv.Public.ID != k.KeyID() || pub.Public.ID != k.KeyID() {
		t.Fatalf("ids %s %s, want %s", priv.Public.ID, pub.Public.ID, k.KeyID())
	}
	if id, _ := trust.KeyID(k.Public().Key); id != k.KeyID() || len(id) != 64 {
		t.Fatalf("KeyID = %s", id)
	}
	if err := trust.WriteKeyFiles(p, mustKey(t)); err == nil {
		t.Fatal("overwrote an existing key file")
	}
	if again, _ := trust.LoadKeyFile(p); again.Public.ID != k.KeyID() {
		t.Fatal("existing key was replaced")
	}
}

func TestLoadKeyFileRefusesLoosePermissions(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	if err := trust.WriteKeyFiles(p, mustKey(t)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := trust.LoadKeyFile(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("err = %v, want a permissions refusal", err)
	}
}

func TestParseKeyPEMRefusesMismatchedKeyID(t *testing.T) {
	k := mustKey(t)
	pemBytes, err := k.MarshalPrivatePEM()
	if err != nil {
		t.Fatal(err)
	}
	forged := bytes.Replace(pemBytes, []byte(k.KeyID()), []byte(strings.Repeat("0", 64)), 1)
	if _, err := trust.ParseKeyPEM(forged); err == nil || !strings.Contains(err.Error(), "Key-Id") {
		t.Fatalf("err = %v, want a Key-Id mismatch", err)
	}
	if _, err := trust.ParseKeyPEM([]byte("not pem")); err == nil {
		t.Fatal("non-PEM accepted")
	}
}

// TestPrivateKeyNeverPrints checks every formatting path a log line might take.
func TestPrivateKeyNeverPrints(t *testing.T) {
	k := mustKey(t)
	pemBytes, _ := k.MarshalPrivatePEM()
	kf, _ := trust.ParseKeyPEM(pemBytes)
	der, _ := pem.Decode(pemBytes)
	raw, err := x509.ParsePKCS8PrivateKey(der.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	seed := raw.(ed25519.PrivateKey).Seed()
	secrets := []string{
		base64.StdEncoding.EncodeToString(der.Bytes)[:24],
		hex.EncodeToString(seed)[:24],
		strings.Trim(fmt.Sprint(seed[:8]), "[]"), // how %v prints a []byte
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("loaded", "key", k, "file", kf)
	outputs := []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s", k, k, k, k), fmt.Sprintf("%+v", kf), logged.String()}
	for _, out := range outputs {
		for _, secret := range secrets {
			if strings.Contains(out, secret) {
				t.Fatalf("secret material in output %q", out)
			}
		}
		if !strings.Contains(out, k.KeyID()) {
			t.Errorf("output %q does not name the key id", out)
		}
	}
}

func TestEnvelopeJSONIsStable(t *testing.T) {
	f := newFixture(t)
	env := decodeEnv(t, f.rootBytes)
	first, err := trust.EnvelopeJSON(env)
	if err != nil {
		t.Fatal(err)
	}
	// protojson picks one or two spaces after ':' per binary; the file must not depend on that.
	var canonical bytes.Buffer
	if err := json.Indent(&canonical, bytes.TrimSpace(first), "", "  "); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.TrimSpace(first), canonical.Bytes()) || bytes.Contains(first, []byte(":  ")) {
		t.Fatalf("EnvelopeJSON is not in canonical indented form:\n%s", first)
	}
	back, err := trust.DecodeEnvelope(first, 0)
	if err != nil || !bytes.Equal(back.GetPayload(), env.GetPayload()) {
		t.Fatalf("JSON does not decode back: %v", err)
	}
}
