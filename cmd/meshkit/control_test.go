package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	capb "meshkit.dev/meshkit/proto/omnirelay/ca"
)

// devAgentView is what the control test reads of an agent's /status.
type devAgentView struct {
	PeerID         string            `json:"peer_id"`
	AdmittedPeers  []string          `json:"admitted_peers"`
	RootVersion    uint64            `json:"root_version"`
	ControlVersion uint64            `json:"control_version"`
	CertRefused    uint64            `json:"certificates_refused"`
	Rejected       map[string]uint64 `json:"rejected"`
	Held           []struct {
		Variant string `json:"variant"`
		Version uint64 `json:"version"`
	} `json:"held"`
	Serving struct {
		Version uint64 `json:"version"`
	} `json:"serving"`
	Identity *struct {
		Expires time.Time `json:"expires"`
	} `json:"identity"`
}

func agentView(t *testing.T, url string) devAgentView {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v devAgentView
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func waitFor(t *testing.T, what string, ok func() bool, last ...*string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			var seen string
			if len(last) > 0 {
				seen = *last[0]
			}
			t.Fatalf("timed out waiting for %s; last seen: %s", what, seen)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// omniRelay is a data-plane node's identity, got as OmniRelay gets it: a CSR to its
// agent's omnirelay.ca service, and the trust bundle from the same service.
type omniRelay struct {
	node   string
	client capb.CertificateAuthorityClient
	cert   atomic.Pointer[tls.Certificate]
}

func (o *omniRelay) renew(t *testing.T) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: o.node},
		DNSNames: []string{o.node + ".dev.svc"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := o.client.SubmitCsr(t.Context(), &capb.CsrRequest{NodeId: "dev:" + o.node, Csr: csr})
	if err != nil {
		t.Fatalf("%s: submit CSR: %v", o.node, err)
	}
	c := &tls.Certificate{Certificate: [][]byte{resp.GetCertificate()}, PrivateKey: key}
	chain, err := x509.ParseCertificates(resp.GetCertificateChain())
	if err != nil {
		t.Fatal(err)
	}
	for _, ic := range chain {
		c.Certificate = append(c.Certificate, ic.Raw)
	}
	o.cert.Store(c)
	leaf, _ := x509.ParseCertificate(resp.GetCertificate())
	return leaf
}

func (o *omniRelay) pool(ctx context.Context) (*x509.CertPool, error) {
	resp, err := o.client.TrustBundle(ctx, &capb.TrustBundleRequest{})
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(resp.GetTrustBundle()) {
		return nil, fmt.Errorf("empty trust bundle")
	}
	return p, nil
}

// handshake runs one mTLS handshake: server's leaf verified with client's trust bundle,
// and the other way round, each bundle fetched from its agent just before.
func handshake(ctx context.Context, server, client *omniRelay) error {
	sp, err := server.pool(ctx)
	if err != nil {
		return err
	}
	cp, err := client.pool(ctx)
	if err != nil {
		return err
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	srv := tls.Server(a, &tls.Config{Certificates: []tls.Certificate{*server.cert.Load()}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: sp, MinVersion: tls.VersionTLS13})
	cli := tls.Client(b, &tls.Config{Certificates: []tls.Certificate{*client.cert.Load()}, RootCAs: cp, ServerName: server.node + ".dev.svc", MinVersion: tls.VersionTLS13})
	errs := make(chan error, 1)
	go func() { errs <- srv.HandshakeContext(ctx) }()
	cerr := cli.HandshakeContext(ctx)
	serr := <-errs
	if cerr != nil {
		return fmt.Errorf("client: %w", cerr)
	}
	if serr != nil {
		return fmt.Errorf("server: %w", serr)
	}
	return nil
}

// TestDevRotatesEveryKeyAndRevokes runs a dev domain of two agents while two OmniRelay
// nodes keep handshaking mTLS with leaves from their agents, checked against the trust
// bundles their agents serve. Without restarting an agent, it rotates the seed key (a
// root v2 listing the old and the new key, then v3 without the old one) and the CA
// (prepare, activate after the overlap, leaves renewed from the new CA): every handshake
// succeeds, and the agents follow the root to v3 and keep taking new bundles. Then it
// revokes agent2: agent1 drops it from its mesh and the CA refuses it.
func TestDevRotatesEveryKeyAndRevokes(t *testing.T) {
	out := startDev(t, 2)
	seedAddr := regexp.MustCompile(`seed admin gRPC  (\S+)`).FindStringSubmatch(out.String())[1]
	data := strings.TrimSpace(regexp.MustCompile(`data  +(\S+)`).FindStringSubmatch(out.String())[1])
	var statusURLs []string
	for _, m := range regexp.MustCompile(`status http://(\S+)/status`).FindAllStringSubmatch(out.String(), -1) {
		statusURLs = append(statusURLs, "http://"+m[1]+"/status")
	}
	var relays []*omniRelay
	for i, m := range regexp.MustCompile(`OmniRelay watch (\S+)`).FindAllStringSubmatch(out.String(), -1) {
		conn, err := grpc.NewClient(m[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		relays = append(relays, &omniRelay{node: fmt.Sprintf("agent%d", i+1), client: capb.NewCertificateAuthorityClient(conn)})
	}
	views := func() []devAgentView {
		var vs []devAgentView
		for _, u := range statusURLs {
			vs = append(vs, agentView(t, u))
		}
		return vs
	}
	waitFor(t, "both agents enrolled, admitted by each other and holding control", func() bool {
		vs := views()
		return vs[0].Identity != nil && !vs[0].Identity.Expires.IsZero() && vs[1].Identity != nil && !vs[1].Identity.Expires.IsZero() &&
			slices.Contains(vs[0].AdmittedPeers, vs[1].PeerID) && vs[0].ControlVersion > 0 && vs[1].ControlVersion > 0 && vs[0].Serving.Version > 0
	})
	firstIssuer := string(relays[0].renew(t).AuthorityKeyId)
	relays[1].renew(t)

	ctx, cancel := context.WithCancel(t.Context())
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			if err := handshake(ctx, relays[0], relays[1]); err != nil {
				if ctx.Err() == nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
				continue
			}
			ok.Add(1)
		}
	})

	// The seed key: a new one made inside the seed, listed beside the old by root v2,
	// alone by v3; each root is signed by the root key (the previous root's and its own).
	trustDir := filepath.Join(data, "seed", "trust")
	next := filepath.Join(t.TempDir(), "next-seed.pub")
	mustCLI(t, "seed", "key", "create", "--out", next, "--seed", seedAddr)
	rootKey, caRole := filepath.Join(trustDir, "root.key"), filepath.Join(trustDir, caRoleKeyFile+".pub")
	v2, v3 := filepath.Join(t.TempDir(), "2.root.json"), filepath.Join(t.TempDir(), "3.root.json")
	mustCLI(t, "root", "rotate", "--prev", filepath.Join(trustDir, "root.json"), "--root-key", rootKey, "--sign-key", rootKey,
		"--seed-key", filepath.Join(trustDir, "seed.key.pub"), "--seed-key", next, "--ca-key", caRole, "--out", v2)
	mustCLI(t, "root", "publish", v2, "--seed", seedAddr)
	mustCLI(t, "root", "rotate", "--prev", v2, "--root-key", rootKey, "--sign-key", rootKey, "--seed-key", next, "--ca-key", caRole, "--out", v3)
	before := views()[0].Serving.Version
	var last string
	mustCLI(t, "root", "publish", v3, "--seed", seedAddr)
	waitFor(t, "both agents on root v3, serving a bundle signed by the new key", func() bool {
		vs := views()
		last = fmt.Sprintf("%+v", vs)
		return vs[0].RootVersion == 3 && vs[1].RootVersion == 3 && vs[0].Serving.Version > before && vs[1].Serving.Version > before
	}, &last)

	// The CA: the next one is in every agent's trust bundle before it signs.
	mustCLI(t, "ca", "rotate", "--step", "prepare", "--seed", seedAddr)
	if code, msg := cli(t, "ca", "rotate", "--step", "activate", "--seed", seedAddr); code == exitOK {
		t.Fatalf("the next CA was activated before the overlap: %s", msg)
	}
	// Activated by the operator, or by the seed itself once the overlap has passed.
	waitFor(t, "the next CA activated after the overlap", func() bool {
		code, msg := cli(t, "ca", "rotate", "--step", "activate", "--seed", seedAddr)
		var st struct {
			CA struct {
				Active string `json:"active"`
			} `json:"ca"`
		}
		_ = json.Unmarshal([]byte(mustCLI(t, "control", "status", "--seed", seedAddr)), &st)
		last = msg
		return code == exitOK || st.CA.Active != ""
	}, &last)
	newIssuer := string(relays[0].renew(t).AuthorityKeyId)
	relays[1].renew(t)
	if newIssuer == firstIssuer {
		t.Fatalf("renewed leaves are still issued by the first CA (key id %x)", firstIssuer)
	}
	time.Sleep(500 * time.Millisecond) // handshakes with the renewed leaves
	cancel()
	wg.Wait()
	if failed.Load() != 0 || ok.Load() < 10 {
		t.Fatalf("%d handshakes failed (first: %v), %d succeeded through the rotations", failed.Load(), firstErr.Load(), ok.Load())
	}
	t.Logf("%d handshakes, none failed, through a seed key rotation (root v1 → v3) and a CA rotation", ok.Load())

	// Revoking agent2: agent1 drops it from its mesh, and the CA refuses it.
	agent2 := views()[1].PeerID
	mustCLI(t, "revoke", "--node", "agent2", "--reason", "decommissioned", "--seed", seedAddr)
	waitFor(t, "agent1 dropping the revoked agent2", func() bool {
		return !slices.Contains(views()[0].AdmittedPeers, agent2)
	})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "agent2"}}, key)
	// The seed dropped agent2's connection too; once agent2 has dialled it again, the CA
	// answers, and refuses.
	var err error
	waitFor(t, "the CA answering the revoked agent2", func() bool {
		_, err = relays[1].client.SubmitCsr(t.Context(), &capb.CsrRequest{NodeId: "dev:agent2", Csr: csr})
		return status.Code(err) != codes.Unavailable
	})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("a CSR of the revoked agent2: %v, want PERMISSION_DENIED naming the revocation", err)
	}
	time.Sleep(time.Second) // agent2 reconnects: it must stay out
	if v := views()[0]; slices.Contains(v.AdmittedPeers, agent2) || v.CertRefused == 0 {
		t.Fatalf("the revoked agent2 was admitted again, or its refusal not counted (%d)", v.CertRefused)
	}
}
