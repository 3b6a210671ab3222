package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"

	"meshkit.dev/meshkit/internal/atomicfile"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	"meshkit.dev/meshkit/trust"
)

// revoke refuses a node, a certificate or a peer across the domain.
func (a *app) revoke(fs *pflag.FlagSet) func(args []string) error {
	node := fs.String("node", "", "revoke a node: its enrolment, its peer and every certificate naming it")
	serial := fs.String("serial", "", "revoke one certificate (a leaf or an intermediate) by serial, hex")
	peerID := fs.String("peer", "", "revoke a libp2p peer ID")
	reason := fs.String("reason", "", "why, for the audit log and the agents' logs")
	var c clientFlags
	c.register(fs, "text, json")
	return func(args []string) error {
		s, err := c.openNoArgs(args, "text", "json")
		if err != nil {
			return err
		}
		defer s.close()
		resp, err := s.Revoke(s.ctx, &adminv1.RevokeRequest{Node: *node, Serial: *serial, PeerId: *peerID, Reason: *reason})
		if err != nil {
			return rpcError(err)
		}
		if c.output == "json" {
			return a.printJSON(resp)
		}
		r := resp.GetRevocation()
		fmt.Fprintf(a.stdout, "revoked %s%s%s until %s; control v%d carries it to every agent\n", prefixed("node ", r.GetNode()), prefixed(" serial ", r.GetSerial()),
			prefixed(" peer ", r.GetPeerId()), r.GetUntil().AsTime().UTC().Format(time.RFC3339), resp.GetControlVersion())
		return nil
	}
}

func prefixed(p, v string) string {
	if v == "" {
		return ""
	}
	return p + v
}

// rootPublish hands the next root version to a running seed.
func (a *app) rootPublish(fs *pflag.FlagSet) func(args []string) error {
	var c clientFlags
	c.register(fs, "text, json")
	return func(args []string) error {
		if len(args) != 1 {
			return usagef("give the root file to publish: meshkit root publish 2.root.json")
		}
		b, err := readFile(args[0])
		if err != nil {
			return err
		}
		if _, err := trust.VerifyRoot(b); err != nil {
			return fmt.Errorf("%s: %w", args[0], err)
		}
		s, err := c.openNoArgs(nil, "text", "json")
		if err != nil {
			return err
		}
		defer s.close()
		resp, err := s.RotateRoot(s.ctx, &adminv1.RotateRootRequest{Root: b})
		if err != nil {
			return rpcError(err)
		}
		if c.output == "json" {
			return a.printJSON(resp)
		}
		fmt.Fprintf(a.stdout, "root v%d in force; the seed signs with %v; control v%d carries it to every agent\n", resp.GetVersion(), resp.GetSigningKeys(), resp.GetControlVersion())
		return nil
	}
}

// seedKeyCreate has a running seed make its next signing key, and writes the public key.
func (a *app) seedKeyCreate(fs *pflag.FlagSet) func(args []string) error {
	out := fs.String("out", "", "write the new key's public key file here (for meshkit root rotate --seed-key)")
	var c clientFlags
	c.register(fs, "text, json")
	return func(args []string) error {
		if err := required("out", *out); err != nil {
			return err
		}
		s, err := c.openNoArgs(args, "text", "json")
		if err != nil {
			return err
		}
		defer s.close()
		resp, err := s.PrepareSeedKey(s.ctx, &adminv1.PrepareSeedKeyRequest{})
		if err != nil {
			return rpcError(err)
		}
		if _, err := os.Stat(*out); err == nil {
			return fmt.Errorf("%s exists; not overwritten", *out)
		}
		if err := atomicfile.WriteFile(*out, resp.GetPublicKey(), 0o644); err != nil {
			return err
		}
		if c.output == "json" {
			return a.printJSON(resp)
		}
		fmt.Fprintf(a.stdout, "seed key %s made inside the seed; its public key is in %s: list it in the next root (meshkit root rotate --seed-key %s)\n", resp.GetKeyId()[:16], *out, *out)
		return nil
	}
}

// caRotate moves the CA's rotation on by one step.
func (a *app) caRotate(fs *pflag.FlagSet) func(args []string) error {
	step := fs.String("step", "", "prepare (make the next CA, published in the trust bundle), activate (it signs), or retire (drop CAs whose leaves expired)")
	var c clientFlags
	c.register(fs, "text, json")
	return func(args []string) error {
		if err := required("step", *step); err != nil {
			return err
		}
		s, err := c.openNoArgs(args, "text", "json")
		if err != nil {
			return err
		}
		defer s.close()
		resp, err := s.RotateCA(s.ctx, &adminv1.RotateCARequest{Step: *step})
		if err != nil {
			return rpcError(err)
		}
		if c.output == "json" {
			return a.printJSON(resp)
		}
		st := resp.GetState()
		fmt.Fprintf(a.stdout, "CA: active %s, next %s, %d retiring; control v%d\n", cmpOr(st.GetActive(), "first"), cmpOr(st.GetNext(), "none"), len(st.GetRetiring()), resp.GetControlVersion())
		return nil
	}
}

// controlStatus shows a seed's control stream.
func (a *app) controlStatus(fs *pflag.FlagSet) func(args []string) error {
	var c clientFlags
	c.register(fs, "text (the same JSON), json")
	return func(args []string) error {
		s, err := c.openNoArgs(args, "text", "json")
		if err != nil {
			return err
		}
		defer s.close()
		resp, err := s.ControlStatus(s.ctx, &adminv1.ControlStatusRequest{})
		if err != nil {
			return rpcError(err)
		}
		return a.printJSON(resp)
	}
}

// certIssue makes an operator's key here and has the seed's CA issue its client
// certificate, for the admin API's mTLS.
func (a *app) certIssue(fs *pflag.FlagSet) func(args []string) error {
	name := fs.String("name", "", "the operator (spiffe://TRUST-DOMAIN/operator/NAME; list that subject in the seed's --policy)")
	keyOut := fs.String("key-out", "", "write the new private key here (0600)")
	certOut := fs.String("cert-out", "", "write the certificate and its chain here (PEM)")
	bundleOut := fs.String("bundle-out", "", "write the domain's trust bundle here (PEM), for --tls-ca")
	var c clientFlags
	c.register(fs, "text, json")
	return func(args []string) error {
		if err := errors.Join(required("name", *name), required("key-out", *keyOut), required("cert-out", *certOut)); err != nil {
			return usagef("%v", err)
		}
		for _, p := range []string{*keyOut, *certOut} {
			if _, err := os.Stat(p); err == nil {
				return fmt.Errorf("%s exists; not overwritten", p)
			}
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: *name}}, key)
		if err != nil {
			return err
		}
		s, err := c.openNoArgs(args, "text", "json")
		if err != nil {
			return err
		}
		defer s.close()
		resp, err := s.IssueClientCertificate(s.ctx, &adminv1.IssueClientCertificateRequest{Name: *name, Csr: csr})
		if err != nil {
			return rpcError(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(*keyOut, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(*certOut, resp.GetCertificate(), 0o644); err != nil {
			return err
		}
		if *bundleOut != "" {
			if err := atomicfile.WriteFile(*bundleOut, resp.GetTrustBundle(), 0o644); err != nil {
				return err
			}
		}
		if c.output == "json" {
			return a.printJSON(resp)
		}
		fmt.Fprintf(a.stdout, "%s (serial %s) until %s: --tls-cert %s --tls-key %s\n", resp.GetSpiffeId(), resp.GetSerial(),
			resp.GetExpiresAt().AsTime().UTC().Format(time.RFC3339), *certOut, *keyOut)
		return nil
	}
}
