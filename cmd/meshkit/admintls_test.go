package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"meshkit.dev/meshkit/seed"
)

// TestAdminAPIMutualTLSWithTheDomainCA runs a production seed (a --policy file, no dev
// mode) serving its admin API with TLS from its own domain CA. An administrator, by
// bearer token over TLS verified against the CA's roots, has an operator's client
// certificate issued; the operator then calls the API by that certificate alone, within
// its principal's scope; once its serial is revoked, the seed refuses it.
func TestAdminAPIMutualTLSWithTheDomainCA(t *testing.T) {
	data, dir := t.TempDir(), t.TempDir()
	token := "an-admin-token-for-this-test"
	tokFile := filepath.Join(dir, "admin.token")
	policy := filepath.Join(dir, "policy.yaml")
	for p, body := range map[string]string{tokFile: token, policy: fmt.Sprintf(`principals:
  - name: admin
    tokenSHA256: %s
    scopes: [mesh.admin]
    tenants: ["*"]
  - name: alice
    subject: spiffe://dev/operator/alice
    scopes: [mesh.read]
    tenants: ["*"]
`, seed.HashToken(token))} {
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addr := startSeed(t, data, "--policy", policy, "--tls-from-ca", "--tls-name", "127.0.0.1")
	roots := filepath.Join(data, "ca", "roots.pem")
	admin := []string{"--seed", addr, "--tls-ca", roots, "--token-file", tokFile}
	key, cert, bundle := filepath.Join(dir, "alice.key"), filepath.Join(dir, "alice.pem"), filepath.Join(dir, "bundle.pem")
	out := mustCLI(t, append([]string{"cert", "issue", "--name", "alice", "--key-out", key, "--cert-out", cert, "--bundle-out", bundle, "-o", "json"}, admin...)...)
	var issued struct {
		Serial   string `json:"serial"`
		SpiffeID string `json:"spiffeId"`
	}
	if err := json.Unmarshal([]byte(out), &issued); err != nil || issued.SpiffeID != "spiffe://dev/operator/alice" {
		t.Fatalf("issued %s (%v)", out, err)
	}
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the operator's key file: %v %v", st, err)
	}
	alice := []string{"--seed", addr, "--tls-ca", bundle, "--tls-cert", cert, "--tls-key", key}
	mustCLI(t, append([]string{"control", "status"}, alice...)...)
	if code, msg := cli(t, append([]string{"revoke", "--peer", "12D3KooWGALcA16LaHeYuSNHTczfpAoVKvT5BvMtjkE2y9t8pzwW"}, alice...)...); code == exitOK || !strings.Contains(msg, "PermissionDenied") {
		t.Fatalf("a reader revoked: exit %d %s", code, msg)
	}
	if code, msg := cli(t, "control", "status", "--seed", addr, "--tls-ca", bundle); code == exitOK || !strings.Contains(msg, "Unauthenticated") {
		t.Fatalf("no certificate and no token: exit %d %s", code, msg)
	}
	// Bob, a second operator, is not revoked: what refuses alice below is her revocation.
	bkey, bcert := filepath.Join(dir, "bob.key"), filepath.Join(dir, "bob.pem")
	mustCLI(t, append([]string{"cert", "issue", "--name", "bob", "--key-out", bkey, "--cert-out", bcert}, admin...)...)
	bob := []string{"--seed", addr, "--tls-ca", bundle, "--tls-cert", bcert, "--tls-key", bkey}
	mustCLI(t, append([]string{"revoke", "--serial", issued.Serial, "--reason", "laptop lost"}, admin...)...)
	// The handshake itself refuses her: the client sees the alert ("bad certificate"), or
	// the connection closed under its first write.
	if code, msg := cli(t, append([]string{"control", "status"}, alice...)...); code == exitOK ||
		!(strings.Contains(msg, "bad certificate") || strings.Contains(msg, "broken pipe") || strings.Contains(msg, "connection reset")) {
		t.Fatalf("the revoked certificate: exit %d %s", code, msg)
	}
	// Bob's certificate names no principal of the policy: authenticated, then refused.
	if code, msg := cli(t, append([]string{"control", "status"}, bob...)...); code == exitOK || !strings.Contains(msg, "Unauthenticated") && !strings.Contains(msg, "PermissionDenied") {
		t.Fatalf("bob, who no principal names: exit %d %s", code, msg)
	}
	mustCLI(t, append([]string{"control", "status"}, admin...)...)
}
