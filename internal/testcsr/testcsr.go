// Package testcsr makes certificate signing requests with `openssl req`, the way
// operators and OmniRelay's tooling make them, for tests of the CA. It is used by tests
// only.
package testcsr

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Key specs for OpenSSL's genpkey.
const (
	RSA2048 = "-algorithm RSA -pkeyopt rsa_keygen_bits:2048"
	RSA1024 = "-algorithm RSA -pkeyopt rsa_keygen_bits:1024"
	P256    = "-algorithm EC -pkeyopt ec_paramgen_curve:P-256"
	P384    = "-algorithm EC -pkeyopt ec_paramgen_curve:P-384"
	Ed25519 = "-algorithm ED25519"
)

// Run runs openssl in dir, failing t on error.
func Run(t testing.TB, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// Make returns a DER CSR made by `openssl req` with a new key (a genpkey spec), the
// subject subj ("/CN=..."), and the subjectAltName value sans ("" for none). Without
// openssl on the PATH the test is skipped, unless MESHKIT_REQUIRE_OPENSSL is set (.ci/run
// installs openssl and sets it).
func Make(t testing.TB, key, subj, sans string) []byte {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("MESHKIT_REQUIRE_OPENSSL") != "" {
			t.Fatal("openssl is not installed and MESHKIT_REQUIRE_OPENSSL is set")
		}
		t.Skip("openssl is not installed")
	}
	dir := t.TempDir()
	Run(t, dir, append([]string{"genpkey", "-out", "key.pem"}, strings.Fields(key)...)...)
	args := []string{"req", "-new", "-key", "key.pem", "-subj", subj, "-outform", "DER", "-out", "csr.der"}
	if sans != "" {
		args = append(args, "-addext", "subjectAltName="+sans)
	}
	Run(t, dir, args...)
	b, err := os.ReadFile(filepath.Join(dir, "csr.der"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
