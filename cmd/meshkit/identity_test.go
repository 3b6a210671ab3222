package main

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"meshkit.dev/meshkit/ca"
	"meshkit.dev/meshkit/internal/testcsr"
	capb "meshkit.dev/meshkit/proto/omnirelay/ca"
)

// TestOmniRelayCSRThroughDev: an OmniRelay-style client, generated from omnirelay.ca,
// submits an RSA-2048 CSR made by `openssl req` to an agent of `meshkit dev`, which dev
// enrolled itself, and gets a chain that `openssl verify` accepts against the trust
// bundle it was given. A CSR for another node is refused with INVALID_ARGUMENT.
func TestOmniRelayCSRThroughDev(t *testing.T) {
	ctx := t.Context()
	out := startDev(t, 1, "--no-examples")
	deadline := time.Now().Add(30 * time.Second)
	addr := regexp.MustCompile(`OmniRelay watch (\S+)`).FindStringSubmatch(out.String())[1]
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := capb.NewCertificateAuthorityClient(conn)

	// The agent enrols in the background: until then it says UNAVAILABLE.
	var bundle []byte
	for bundle == nil {
		resp, err := client.TrustBundle(ctx, &capb.TrustBundleRequest{})
		switch {
		case err == nil:
			bundle = resp.GetTrustBundle()
		case status.Code(err) != codes.Unavailable || time.Now().After(deadline):
			t.Fatalf("trust bundle: %v\n%s", err, out.String())
		default:
			time.Sleep(20 * time.Millisecond)
		}
	}
	csr := testcsr.Make(t, testcsr.RSA2048, "/CN=agent1", "DNS:agent1.dev.svc")
	cert, err := client.SubmitCsr(ctx, &capb.CsrRequest{NodeId: "dev:agent1", Csr: csr})
	if err != nil {
		t.Fatalf("submit: %v\n%s", err, out.String())
	}
	issued, err := time.Parse(time.RFC3339, cert.GetIssuedAt())
	if err != nil {
		t.Fatal(err)
	}
	renew, _ := time.Parse(time.RFC3339, cert.GetRenewAfter())
	expires, _ := time.Parse(time.RFC3339, cert.GetExpiresAt())
	if expires.Sub(issued) != 12*time.Hour || renew.Sub(issued) != 12*time.Hour*8/10 {
		t.Fatalf("issued %s, renew after %s, expires %s: want 12 h, renewal at 80%%", issued, renew, expires)
	}
	if string(cert.GetTrustBundle()) != string(bundle) {
		t.Fatal("the trust bundle with the certificate is not the one TrustBundle serves")
	}
	dir := t.TempDir()
	chain, err := x509.ParseCertificates(cert.GetCertificateChain())
	if err != nil || len(chain) == 0 {
		t.Fatalf("chain: %v", err)
	}
	var untrusted []byte
	for _, c := range chain {
		untrusted = append(untrusted, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	for name, b := range map[string][]byte{"bundle.pem": bundle, "chain.pem": untrusted,
		"leaf.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.GetCertificate()})} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	testcsr.Run(t, dir, "verify", "-CAfile", "bundle.pem", "-untrusted", "chain.pem", "leaf.pem")

	// The agent holds a leaf of its own, renewed at about half its life.
	statusURL := "http://" + regexp.MustCompile(`status http://(\S+)/status`).FindStringSubmatch(out.String())[1] + "/status"
	var st struct {
		Identity *struct {
			SPIFFEID string    `json:"spiffe_id"`
			Expires  time.Time `json:"expires"`
			RenewAt  time.Time `json:"renew_at"`
			Warning  string    `json:"warning"`
		} `json:"identity"`
	}
	for st.Identity == nil || st.Identity.Expires.IsZero() {
		if time.Now().After(deadline) {
			t.Fatalf("the agent has no certificate of its own: %+v", st.Identity)
		}
		time.Sleep(20 * time.Millisecond)
		resp, err := http.Get(statusURL)
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if life, renew := time.Until(st.Identity.Expires), time.Until(st.Identity.RenewAt); st.Identity.SPIFFEID != "spiffe://dev/node/agent1" ||
		life < 11*time.Hour || renew < life*3/10 || renew > life*2/3 || st.Identity.Warning != "" {
		t.Fatalf("agent identity %+v: want its node's SPIFFE ID, 12 h, renewal between 35%% and 65%% of its life", st.Identity)
	}

	other := testcsr.Make(t, testcsr.P256, "/CN=agent2", "")
	if _, err := client.SubmitCsr(ctx, &capb.CsrRequest{NodeId: "agent2", Csr: other}); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(status.Convert(err).Message(), "not the caller's node") {
		t.Fatalf("a CSR for another node: %v, want INVALID_ARGUMENT", err)
	}
}

// TestCAStatusWarnsBeforeExpiry: `meshkit ca status` lists the CA's certificates with
// their expiry and exits 1 once one falls inside the warning window.
func TestCAStatusWarnsBeforeExpiry(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	if _, err := openCA(dir, "prod"); err != nil {
		t.Fatal(err)
	}
	out := mustCLI(t, "ca", "status", "--ca-dir", dir)
	if !strings.Contains(out, "issuing CA") || !strings.Contains(out, "trust bundle root") || strings.Contains(out, "WARNING") {
		t.Fatalf("status of a new CA:\n%s", out)
	}
	code, out := cli(t, "ca", "status", "--ca-dir", dir, "--warn", fmt.Sprint(6*365*24*time.Hour))
	if code != exitFail || !strings.Contains(out, "WARNING") {
		t.Fatalf("a CA inside the warning window: exit %d\n%s", code, out)
	}
	if code, _ := cli(t, "ca", "status", "--ca-dir", filepath.Join(t.TempDir(), "none")); code == exitOK {
		t.Fatal("status of a missing CA directory succeeded")
	}
	// A generation the seed made rotating its CA is listed too.
	if _, err := (ca.Dir{Path: dir, TrustDomain: spiffeid.RequireTrustDomainFromString("prod")}).Create("gen-2", time.Now()); err != nil {
		t.Fatal(err)
	}
	if out := mustCLI(t, "ca", "status", "--ca-dir", dir); !strings.Contains(out, "issuing CA (gen-2)") {
		t.Fatalf("status without the second generation:\n%s", out)
	}
}
